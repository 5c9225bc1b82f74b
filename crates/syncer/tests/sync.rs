//! Host (API server + simulator) + virtual API server + syncer, in-process, through kube-rs.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vkube_syncer::run;

mod common;
use common::{Clusters, eventually, object, syncer_config};

on_both_hosts! {
async fn pods_and_their_references_sync_both_ways() {
    let clusters = Clusters::start(syncer_config()).await;
    let (host, vc) = (clusters.host.clone(), clusters.vc.clone());

    let pp = PostParams::default();
    let v_maps: Api<ConfigMap> = Api::namespaced(vc.clone(), "default");
    let v_secrets: Api<Secret> = Api::namespaced(vc.clone(), "default");
    v_maps.create(&pp, &object(json!({"metadata": {"name": "files"}, "data": {"app.conf": "x=1"}}))).await.unwrap();
    v_maps.create(&pp, &object(json!({"metadata": {"name": "other"}, "data": {"k": "v"}}))).await.unwrap();
    v_secrets
        .create(&pp, &object(json!({"metadata": {"name": "db"}, "stringData": {"password": "hunter2"}})))
        .await
        .unwrap();
    v_secrets.create(&pp, &object(json!({"metadata": {"name": "registry"}, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}))).await.unwrap();
    v_secrets.create(&pp, &object(json!({"metadata": {"name": "unused"}, "stringData": {"x": "y"}}))).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "c", "image": "nginx:1.27",
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}],
            "imagePullSecrets": [{"name": "registry"}],
            "volumes": [{"name": "files", "configMap": {"name": "files"}}]}})),
        )
        .await
        .unwrap();

    // The virtual pod runs, with the host's IP and node.
    let running = eventually("virtual pod running", || {
        let v_pods = v_pods.clone();
        async move {
            let pod = v_pods.get("web").await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
        }
    })
    .await;
    let ip = running.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(ip.starts_with("10.244."));
    let node = eventually("virtual pod bound", || {
        let v_pods = v_pods.clone();
        async move { v_pods.get("web").await.ok()?.spec?.node_name }
    })
    .await;
    let v_nodes: Api<Node> = Api::all(vc.clone());
    assert!(v_nodes.get(&node).await.is_ok(), "a virtual node stands for {node}");

    // Only what the pod references reached the host.
    let h_maps: Api<ConfigMap> = Api::namespaced(host.clone(), "vcluster-vc");
    let h_secrets: Api<Secret> = Api::namespaced(host.clone(), "vcluster-vc");
    let h_pods: Api<Pod> = Api::namespaced(host.clone(), "vcluster-vc");
    let names = |list: Vec<String>| -> Vec<String> { list.into_iter().filter(|n| n.contains("-x-")).collect() };
    let maps = names(
        h_maps
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect(),
    );
    assert_eq!(maps, ["files-x-default-x-vc"]);
    let secrets = names(
        h_secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect(),
    );
    assert_eq!(secrets, ["db-x-default-x-vc", "registry-x-default-x-vc"]);
    let host_pod = h_pods.get("web-x-default-x-vc").await.unwrap();
    assert_eq!(host_pod.spec.as_ref().unwrap().image_pull_secrets.as_ref().unwrap()[0].name, "registry-x-default-x-vc");

    // Host config map data edited → the virtual config map follows.
    h_maps
        .patch("files-x-default-x-vc", &PatchParams::default(), &Patch::Merge(json!({"data": {"app.conf": "x=2"}})))
        .await
        .unwrap();
    eventually("the host edit in the virtual config map", || {
        let v_maps = v_maps.clone();
        async move { (v_maps.get("files").await.ok()?.data?.get("app.conf")? == "x=2").then_some(()) }
    })
    .await;
    // Host pod image edited → reverted to the virtual one.
    h_pods
        .patch(
            "web-x-default-x-vc",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "image": "evil:1"}]}})),
        )
        .await
        .unwrap();
    eventually("the image to be reverted", || {
        let h_pods = h_pods.clone();
        async move {
            (h_pods.get("web-x-default-x-vc").await.ok()?.spec?.containers[0].image.as_deref() == Some("nginx:1.27"))
                .then_some(())
        }
    })
    .await;

    // Restarting the syncer duplicates nothing.
    clusters.syncer.abort();
    let mut config = syncer_config();
    config.mappings = Some(vkube_syncer::MappingStorage(clusters.virtual_server.state.registry.store.clone()));
    let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
    let syncer = tokio::spawn(run(vc.clone(), clusters.syncer_host.clone(), config, ready));
    ready_rx.wait_for(|r| *r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h_pods.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // Deleting the virtual pod removes it and its references from the host.
    v_pods.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("host pod, config map and secrets gone", || {
        let (h_pods, h_maps, h_secrets) = (h_pods.clone(), h_maps.clone(), h_secrets.clone());
        async move {
            let pods = h_pods.list(&ListParams::default()).await.ok()?.items.len();
            let maps = h_maps
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .filter(|c| c.metadata.name.as_deref().unwrap_or("").contains("-x-"))
                .count();
            let secrets = h_secrets
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .filter(|c| c.metadata.name.as_deref().unwrap_or("").contains("-x-"))
                .count();
            (pods == 0 && maps == 0 && secrets == 0).then_some(())
        }
    })
    .await;
    eventually("virtual pod gone", || {
        let v_pods = v_pods.clone();
        async move { matches!(v_pods.get("web").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;

    // A host pod deleted by someone else takes its virtual pod with it.
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "solo"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})),
        )
        .await
        .unwrap();
    eventually("solo running", || {
        let v_pods = v_pods.clone();
        async move { (v_pods.get("solo").await.ok()?.status?.phase.as_deref() == Some("Running")).then_some(()) }
    })
    .await;
    h_pods
        .delete("solo-x-default-x-vc", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    eventually("virtual solo deleted", || {
        let v_pods = v_pods.clone();
        async move { matches!(v_pods.get("solo").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;
    syncer.abort();
}
}
