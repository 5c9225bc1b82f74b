//! Two API servers on one etcd (the replicas of a highly available virtual cluster): what is
//! written through one takes effect in the other — custom resource types are served, and a
//! namespace another replica began deleting (and then died) is finalized.

mod common;

use std::time::Duration;

use common::{TestServer, await_condition};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;
use vkube_store::Storage as _;
use vkube_store::testing::Etcd;

async fn replica(etcd: &Etcd) -> TestServer {
    let url = etcd.url.clone();
    TestServer::start_with(move |config| {
        config.etcd =
            Some(vkube_store::EtcdConfig { endpoints: vec![url], prefix: "/vkube/".into(), ..Default::default() });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_writes_takes_effect_in_the_other() {
    let etcd = tokio::task::block_in_place(Etcd::start);
    let raw = etcd.store("/vkube/").await;
    let (a, b) = (replica(&etcd).await, replica(&etcd).await);
    let (a_client, b_client) = (a.client().await, b.client().await);

    // A CRD created through A is served by B.
    let crds: Api<DynamicObject> = Api::all_with(
        a_client.clone(),
        &ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        )),
    );
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    });
    crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap()).await.unwrap();
    let widgets = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let b_widgets: Api<DynamicObject> = Api::namespaced_with(b_client.clone(), "default", &widgets);
    await_condition(Duration::from_secs(10), "B to serve the CRD created through A", || {
        let b_widgets = b_widgets.clone();
        async move { b_widgets.list(&ListParams::default()).await.ok() }
    })
    .await;
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "size": 3});
    b_widgets.create(&PostParams::default(), &serde_json::from_value(widget).unwrap()).await.unwrap();

    // A namespace with content, marked for deletion by a replica that died before finalizing
    // it (written straight to the store: no live replica was asked to delete it).
    let namespaces: Api<Namespace> = Api::all(a_client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap())
        .await
        .unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(a_client.clone(), "doomed");
    maps.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "settings"}})).unwrap())
        .await
        .unwrap();
    let listed = raw.list(vkube_store::ListOptions { prefix: "/".into(), ..Default::default() }).await.unwrap();
    let stored = listed.items.iter().find(|kv| kv.key.ends_with("namespaces/doomed")).expect("the namespace's key");
    let mut terminating: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    terminating["metadata"]["deletionTimestamp"] = json!("2026-12-03T00:00:00Z");
    terminating["status"] = json!({"phase": "Terminating"});
    raw.update(&stored.key, serde_json::to_vec(&terminating).unwrap().into(), stored.mod_revision).await.unwrap();
    let b_namespaces: Api<Namespace> = Api::all(b_client.clone());
    await_condition(Duration::from_secs(20), "the abandoned namespace to be finalized", || {
        let b_namespaces = b_namespaces.clone();
        async move { matches!(b_namespaces.get_opt("doomed").await, Ok(None)).then_some(()) }
    })
    .await;
    let b_maps: Api<ConfigMap> = Api::namespaced(b_client, "doomed");
    assert!(b_maps.get_opt("settings").await.unwrap().is_none(), "its content went with it");
}
