//! Virtual nodes (sync-behavior.md §4.9): synthetic fake nodes by default, host nodes with
//! `sync.fromHost.nodes`, tenant edits copied back with `syncBackChanges`; on both hosts.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[macro_use]
mod common;
use common::{Clusters, eventually, object, syncer_config};

const HNS: &str = "vcluster-vc";

/// Creates virtual pod `name` (with `extra` merged into it) and returns the host node it runs on.
async fn run_pod(vc: &kube::Client, host: &kube::Client, name: &str, extra: serde_json::Value) -> String {
    let pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    let mut pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    for part in ["metadata", "spec"] {
        for (key, value) in extra.get(part).and_then(|v| v.as_object()).into_iter().flatten() {
            pod[part][key] = value.clone();
        }
    }
    pods.create(&PostParams::default(), &object(pod)).await.unwrap();
    let h_pods: Api<Pod> = Api::namespaced(host.clone(), HNS);
    let host_name = format!("{name}-x-default-x-vc");
    eventually("the host pod scheduled", || {
        let (h_pods, host_name) = (h_pods.clone(), host_name.clone());
        async move { h_pods.get(&host_name).await.ok()?.spec?.node_name }
    })
    .await
}

async fn node_names(api: &Api<Node>) -> Vec<String> {
    let mut names: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.iter().map(|n| n.name_any()).collect();
    names.sort();
    names
}

on_both_hosts! {
async fn fake_nodes_show_nothing_of_the_host_and_daemon_sets_do_not_keep_them() {
    let clusters = Clusters::start(syncer_config()).await;
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_nodes: Api<Node> = Api::all(vc.clone());
    let node = run_pod(&vc, &host, "web", json!({})).await;
    let fake = eventually("the fake node", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move { v_nodes.get(&node).await.ok() }
    })
    .await;
    let labels = fake.labels();
    assert_eq!(labels["vcluster.loft.sh/fake-node"], "true");
    assert_eq!(labels["kubernetes.io/hostname"], format!("fake-{node}"), "not the host's hostname");
    assert!(!labels.contains_key("node.kubernetes.io/instance-type"), "no host labels: {labels:?}");
    let status = fake.status.unwrap();
    assert_eq!(status.capacity.unwrap()["cpu"].0, "16", "fixed capacity, not the host's");
    let addresses = status.addresses.unwrap();
    assert_eq!(addresses.len(), 1);
    assert_eq!(addresses[0].address, format!("{node}.nodes.vcluster.com"));
    assert_eq!(status.node_info.unwrap().os_image, "Fake Kubernetes Image");
    assert_eq!(node_names(&v_nodes).await, vec![node.clone()], "only the node a pod runs on");

    // A DaemonSet's pod on the same node does not keep it once the other pod goes.
    let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
        "name": "agent", "uid": "6c1a2b4e-0000-4000-8000-000000000001"}]},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}}});
    assert_eq!(run_pod(&vc, &host, "agent", owner).await, node);
    let v_pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    v_pods.delete("web", &DeleteParams::default().grace_period(0)).await.unwrap();
    eventually("the node gone with its last non-DaemonSet pod", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move { v_nodes.get_opt(&node).await.ok()?.is_none().then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn real_nodes_follow_the_host() {
    let mut config = syncer_config();
    config.nodes.real = true;
    config.nodes.clear_image_status = true;
    let clusters = Clusters::start(config).await;
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_nodes: Api<Node> = Api::all(vc.clone());
    let h_nodes: Api<Node> = Api::all(host.clone());
    assert!(node_names(&v_nodes).await.is_empty(), "only needed nodes, and none is yet");
    let node = run_pod(&vc, &host, "web", json!({})).await;
    let synced = eventually("the host node in the virtual cluster", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move { v_nodes.get(&node).await.ok() }
    })
    .await;
    let host_node = h_nodes.get(&node).await.unwrap();
    assert_eq!(synced.labels()["kubernetes.io/hostname"], node, "the host's labels");
    assert_eq!(synced.labels()["vcluster.loft.sh/managed-by"], "vc");
    assert!(!synced.labels().contains_key("vcluster.loft.sh/fake-node"));
    assert_eq!(
        synced.status.as_ref().unwrap().capacity,
        host_node.status.as_ref().unwrap().capacity,
        "the host's capacity"
    );

    // The host labels, taints and reports images: the virtual node follows (images cleared).
    let pp = PatchParams::default();
    h_nodes
        .patch(&node, &pp, &Patch::Merge(json!({"metadata": {"labels": {"zone": "eu-1"}},
            "spec": {"taints": [{"key": "maintenance", "value": "soon", "effect": "PreferNoSchedule"}]}})))
        .await
        .unwrap();
    h_nodes
        .patch_status(&node, &pp, &Patch::Merge(json!({"status": {"images": [{"names": ["nginx:1"], "sizeBytes": 10}]}})))
        .await
        .unwrap();
    // The tenant's own label stays.
    v_nodes.patch(&node, &pp, &Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}}}))).await.unwrap();
    let followed = eventually("the host's label and taint in the virtual cluster", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move {
            let n = v_nodes.get(&node).await.ok()?;
            let taints = n.spec.clone()?.taints.unwrap_or_default();
            (n.labels().get("zone").map(String::as_str) == Some("eu-1") && taints.iter().any(|t| t.key == "maintenance"))
                .then_some(n)
        }
    })
    .await;
    assert_eq!(followed.labels()["team"], "blue", "the tenant's label stays");
    assert!(followed.annotations()["vcluster.loft.sh/original-taints"].contains("maintenance"));
    assert_eq!(followed.status.unwrap().images, Some(vec![]), "clearImageStatus");
    assert!(h_nodes.get(&node).await.unwrap().labels().get("team").is_none(), "no sync back unless asked");

    // The host drops its label: so does the virtual node; the pod goes: so does the node.
    h_nodes.patch(&node, &pp, &Patch::Merge(json!({"metadata": {"labels": {"zone": null}}}))).await.unwrap();
    eventually("the dropped label gone", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move { (!v_nodes.get(&node).await.ok()?.labels().contains_key("zone")).then_some(()) }
    })
    .await;
    Api::<Pod>::namespaced(vc.clone(), "default").delete("web", &DeleteParams::default().grace_period(0)).await.unwrap();
    eventually("the node gone with its pod", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move { v_nodes.get_opt(&node).await.ok()?.is_none().then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn selected_nodes_are_shown_and_tenant_edits_reach_the_host() {
    let mut config = syncer_config();
    config.nodes.real = true;
    config.nodes.sync_back = true;
    config.nodes.labels = [("pool".to_string(), "tenant".to_string())].into();
    let chosen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let remember = chosen.clone();
    let clusters = Clusters::start_after(config, |host| async move {
        let h_nodes: Api<Node> = Api::all(host);
        let first = eventually("the simulated nodes", || {
            let h_nodes = h_nodes.clone();
            async move { node_names(&h_nodes).await.first().cloned() }
        })
        .await;
        let label = json!({"metadata": {"labels": {"pool": "tenant"}}});
        h_nodes.patch(&first, &PatchParams::default(), &Patch::Merge(label)).await.unwrap();
        *remember.lock().unwrap() = first;
    })
    .await;
    let node = chosen.lock().unwrap().clone();
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_nodes: Api<Node> = Api::all(vc.clone());
    let h_nodes: Api<Node> = Api::all(host.clone());
    eventually("exactly the labelled node, without any pod", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move { (node_names(&v_nodes).await == vec![node]).then_some(()) }
    })
    .await;
    // Pods are pinned to it.
    assert_eq!(run_pod(&vc, &host, "web", json!({})).await, node);

    // The tenant labels, taints and cordons the node: the host node gets the same.
    let pp = PatchParams::default();
    v_nodes
        .patch(&node, &pp, &Patch::Merge(json!({"metadata": {"labels": {"team": "blue"}},
            "spec": {"unschedulable": true, "taints": [{"key": "gpu", "effect": "NoSchedule"}]}})))
        .await
        .unwrap();
    let host_node = eventually("the tenant's edit on the host node", || {
        let (h_nodes, node) = (h_nodes.clone(), node.clone());
        async move {
            let n = h_nodes.get(&node).await.ok()?;
            (n.labels().get("team").map(String::as_str) == Some("blue")).then_some(n)
        }
    })
    .await;
    let spec = host_node.spec.unwrap();
    assert_eq!(spec.unschedulable, Some(true));
    assert!(spec.taints.unwrap_or_default().iter().any(|t| t.key == "gpu" && t.effect == "NoSchedule"));
    eventually("the label managed by the host now, and still on the virtual node", || {
        let (v_nodes, node) = (v_nodes.clone(), node.clone());
        async move {
            let n = v_nodes.get(&node).await.ok()?;
            n.annotations().get("vcluster.loft.sh/managed-labels")?.lines().any(|l| l == "team").then_some(())
        }
    })
    .await;

    // The node stops matching on the host: the virtual cluster stops showing it.
    h_nodes.patch(&node, &pp, &Patch::Merge(json!({"metadata": {"labels": {"pool": null}}}))).await.unwrap();
    eventually("the node no longer shown", || {
        let v_nodes = v_nodes.clone();
        async move { node_names(&v_nodes).await.is_empty().then_some(()) }
    })
    .await;
}
}
