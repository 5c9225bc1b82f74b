// kube-rs 5 against the API server: the client, runtime and discovery paths operators use.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestServer, await_condition};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

fn configmap(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "test"}},
        "data": data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn create_get_list_replace_delete() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api.create(&PostParams::default(), &configmap("one", &[("a", "1")])).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some());
    let fetched = api.get("one").await.unwrap();
    assert_eq!(fetched.data.unwrap()["a"], "1");
    let list = api.list(&ListParams::default().labels("app=test")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let none = api.list(&ListParams::default().labels("app=other")).await.unwrap();
    assert!(none.items.is_empty());
    let by_name = api.list(&ListParams::default().fields("metadata.name=one")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);

    let mut changed = created.clone();
    changed.data = Some([("a".to_string(), "2".to_string())].into());
    let replaced = api.replace("one", &PostParams::default(), &changed).await.unwrap();
    assert_eq!(replaced.data.unwrap()["a"], "2");
    // The first copy now carries a stale resourceVersion.
    let stale = api.replace("one", &PostParams::default(), &changed).await.unwrap_err();
    assert!(matches!(&stale, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"), "{stale:?}");
    let duplicate = api.create(&PostParams::default(), &configmap("one", &[])).await.unwrap_err();
    assert!(matches!(&duplicate, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"), "{duplicate:?}");

    api.delete("one", &DeleteParams::default()).await.unwrap();
    let missing = api.get("one").await.unwrap_err();
    assert!(matches!(&missing, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"), "{missing:?}");
}

#[tokio::test]
async fn paginated_lists_are_consistent() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for i in 0..25 {
        api.create(&PostParams::default(), &configmap(&format!("cm-{i:02}"), &[])).await.unwrap();
    }
    let first = api.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    let token = first.metadata.continue_.clone().expect("more pages");
    // Writes after the first page do not show up in later pages.
    api.create(&PostParams::default(), &configmap("cm-99", &[])).await.unwrap();
    let mut names: Vec<String> = first.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    let mut next = Some(token);
    while let Some(token) = next {
        let page = api.list(&ListParams::default().limit(10).continue_token(&token)).await.unwrap();
        assert_eq!(page.metadata.resource_version, first.metadata.resource_version);
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        next = page.metadata.continue_.filter(|t| !t.is_empty());
    }
    assert_eq!(names.len(), 25);
    assert!(!names.contains(&"cm-99".to_string()));
}

#[tokio::test]
async fn server_side_apply_creates_merges_and_detects_conflicts() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1", "b": "2"}});
    let created = api.patch("ssa", &PatchParams::apply("alpha"), &Patch::Apply(&body)).await.unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    let managers: Vec<String> =
        created.metadata.managed_fields.unwrap().iter().map(|m| m.manager.clone().unwrap()).collect();
    assert_eq!(managers, ["alpha"]);
    // Dropping b removes it; a second manager's field survives.
    api.patch(
        "ssa",
        &PatchParams::apply("beta"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"c": "3"}})),
    )
    .await
    .unwrap();
    let applied = api
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}})),
        )
        .await
        .unwrap();
    let data = applied.data.unwrap();
    assert_eq!(data.keys().cloned().collect::<Vec<_>>(), ["a", "c"]);
    let conflict = api
        .patch(
            "ssa",
            &PatchParams::apply("beta"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "9"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, kube::Error::Api(s) if s.code == 409 && s.message.contains("conflict with \"alpha\"")),
        "{conflict:?}"
    );
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "9"}})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["a"], "9");
}

#[tokio::test]
async fn watcher_and_reflector_follow_changes() {
    let server = TestServer::start_with(|c| c.bookmark_interval = Duration::from_millis(200)).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default().labels("app=test"))).applied_objects();
    let handle = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    api.create(&PostParams::default(), &configmap("w1", &[("k", "v")])).await.unwrap();
    api.create(&PostParams::default(), &configmap("w2", &[])).await.unwrap();
    await_condition(Duration::from_secs(5), "two objects in the reflector", || {
        let n = reader.state().len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    api.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "changed"}}))).await.unwrap();
    await_condition(Duration::from_secs(5), "the patch in the reflector", || {
        let value = reader
            .state()
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("w1"))
            .and_then(|c| c.data.clone())
            .map(|d| d["k"].clone());
        async move { (value.as_deref() == Some("changed")).then_some(()) }
    })
    .await;
    // A label change out of the selector is a deletion for this watcher.
    api.patch("w2", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})))
        .await
        .unwrap();
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    await_condition(Duration::from_secs(5), "both gone from the reflector", || {
        let n = reader.state().len();
        async move { (n == 0).then_some(()) }
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn streaming_list_watch_ends_initial_events_with_a_bookmark() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &configmap("s1", &[])).await.unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen_init_done = false;
    let mut names = Vec::new();
    while let Ok(Ok(Some(event))) = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
        match event {
            watcher::Event::InitApply(cm) => names.push(cm.metadata.name.unwrap()),
            watcher::Event::InitDone => {
                seen_init_done = true;
                break;
            }
            _ => {}
        }
    }
    assert!(seen_init_done);
    assert_eq!(names, ["s1"]);
}

#[tokio::test]
async fn metadata_watcher_gets_partial_objects() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &configmap("m1", &[("big", "data")])).await.unwrap();
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].types.as_ref().unwrap().kind, "PartialObjectMetadata");
    let metadata: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(server.client().await, "default");
    let mut stream = watcher(metadata, watcher::Config::default()).applied_objects().boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m1"));
}

#[tokio::test]
async fn discovery_finds_builtins_and_crds() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 3}, "color": {"type": "string"}}},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}}]}}))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = kube::runtime::wait::await_condition(
        crds.clone(),
        "widgets.example.com",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(5), established).await.unwrap().unwrap();

    // The CRD's schema is published in OpenAPI v2 (as kube-apiserver's CRD publisher does).
    let request = http::Request::get("/openapi/v2").body(Vec::new()).unwrap();
    let swagger: serde_json::Value = client.request(request).await.unwrap();
    let definition = &swagger["definitions"]["com.example.v1.Widget"];
    assert_eq!(definition["properties"]["spec"]["properties"]["size"]["type"], "integer");
    assert_eq!(definition["x-kubernetes-group-version-kind"][0]["kind"], "Widget");
    assert_eq!(
        definition["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(swagger["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"].is_object());

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (resource, caps) =
        discovery.resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget")).expect("Widget discovered");
    assert_eq!(resource.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(discovery.resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")).is_some());

    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget")),
    );
    let mut widget = DynamicObject::new("w", &resource);
    widget.data = json!({"spec": {"color": "red"}, "status": {"ready": true}});
    let created = widgets.create(&PostParams::default(), &widget).await.unwrap();
    assert_eq!(created.data["spec"]["size"], 3, "schema default applied");
    assert!(created.data.get("status").is_none(), "status is dropped on create with the subresource");
    let invalid = DynamicObject::new("bad", &resource).data(json!({"spec": {"size": "many"}}));
    let error = widgets.create(&PostParams::default(), &invalid).await.unwrap_err();
    assert!(matches!(&error, kube::Error::Api(s) if s.code == 422), "{error:?}");
    let status = widgets
        .patch_status("w", &PatchParams::default(), &Patch::Merge(json!({"status": {"ready": true}})))
        .await
        .unwrap();
    assert_eq!(status.data["status"]["ready"], true);
    assert_eq!(status.metadata.generation, Some(1), "status writes do not bump generation");
    let strategic =
        widgets.patch("w", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"size": 4}}))).await.unwrap_err();
    assert!(matches!(&strategic, kube::Error::Api(s) if s.code == 415), "{strategic:?}");

    // Deleting the CRD removes the type and its objects.
    crds.delete("widgets.example.com", &DeleteParams::default()).await.unwrap();
    await_condition(Duration::from_secs(5), "widgets to stop being served", || {
        let widgets = widgets.clone();
        async move { widgets.list(&ListParams::default()).await.is_err().then_some(()) }
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed: {0}")]
struct ReconcileError(String);

#[tokio::test]
async fn controller_with_finalizer_helper() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let applied = Arc::new(AtomicUsize::new(0));
    let cleaned = Arc::new(AtomicUsize::new(0));
    let context = Arc::new((api.clone(), applied.clone(), cleaned.clone()));
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(
            |cm: Arc<ConfigMap>, ctx: Arc<(Api<ConfigMap>, Arc<AtomicUsize>, Arc<AtomicUsize>)>| async move {
                let (api, applied, cleaned) = (&ctx.0, ctx.1.clone(), ctx.2.clone());
                finalizer(api, "vkube.test/cleanup", cm, |event| async move {
                    match event {
                        Finalizer::Apply(_) => applied.fetch_add(1, Ordering::SeqCst),
                        Finalizer::Cleanup(_) => cleaned.fetch_add(1, Ordering::SeqCst),
                    };
                    Ok::<_, ReconcileError>(Action::await_change())
                })
                .await
                .map_err(|e| ReconcileError(e.to_string()))
            },
            |_, _, _| Action::requeue(Duration::from_millis(100)),
            context,
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    api.create(&PostParams::default(), &configmap("guarded", &[])).await.unwrap();
    await_condition(Duration::from_secs(10), "the finalizer to be added", || {
        let api = api.clone();
        async move {
            let cm = api.get("guarded").await.ok()?;
            cm.metadata.finalizers.filter(|f| f.contains(&"vkube.test/cleanup".to_string())).map(|_| ())
        }
    })
    .await;
    api.delete("guarded", &DeleteParams::default()).await.unwrap();
    await_condition(Duration::from_secs(10), "the object to be gone after cleanup", || {
        let api = api.clone();
        async move { matches!(api.get("guarded").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;
    assert!(applied.load(Ordering::SeqCst) >= 1);
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    handle.abort();
}

#[tokio::test]
async fn namespaces_lifecycle_blocks_creates_and_cleans_up() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    for expected in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&expected.to_string()), "{expected} bootstrapped");
    }
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let error = missing.create(&PostParams::default(), &configmap("x", &[])).await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 404 && s.message == "namespaces \"nowhere\" not found"),
        "{error:?}"
    );

    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap())
        .await
        .unwrap();
    let team: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    team.create(&PostParams::default(), &configmap("inside", &[])).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    namespaces.delete("team", &DeleteParams::default()).await.unwrap();
    await_condition(Duration::from_secs(10), "namespace removal", || {
        let namespaces = namespaces.clone();
        async move { matches!(namespaces.get("team").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;
    assert!(team.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn scale_subresource_and_generation() {
    let server = TestServer::start().await;
    let api: Api<Deployment> = Api::namespaced(server.client().await, "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}))
    .unwrap();
    let created = api.create(&PostParams::default(), &deployment).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.as_ref().unwrap().replicas, Some(1), "defaulted");
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    let scaled =
        api.patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}}))).await.unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(4));
    let after = api.get("web").await.unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(4));
    assert_eq!(after.metadata.generation, Some(2));
    let labelled = api
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2), "metadata-only change keeps generation");
}

/// A watch without selectors sends each object as it is stored (not parsed and encoded again for
/// every watcher): its events are those a watch whose selector matches everything sends, one
/// line each, with each change's resourceVersion, kind and apiVersion.
#[tokio::test]
async fn unfiltered_watches_send_what_filtered_ones_send() {
    let server = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let before = api.create(&PostParams::default(), &configmap("before", &[])).await.unwrap();
    let start = before.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &configmap("one", &[("a", "1")])).await.unwrap();
    let patched =
        api.patch("one", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "line\nbreak"}}))).await.unwrap();
    api.delete("one", &DeleteParams::default()).await.unwrap();
    let http = server.http();
    let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={start}&timeoutSeconds=1");
    let (all, selected) = (http.get(&path).await, http.get(&format!("{path}&labelSelector=app%3Dtest")).await);
    let events = |body: &[u8]| -> Vec<serde_json::Value> {
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    };
    let (all, selected) = (events(&all.body), events(&selected.body));
    let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(all, selected);
    let modified = &all[1]["object"];
    assert_eq!((modified["kind"].as_str(), modified["apiVersion"].as_str()), (Some("ConfigMap"), Some("v1")));
    assert_eq!(modified["metadata"]["resourceVersion"].as_str(), patched.metadata.resource_version.as_deref());
    assert_eq!(modified["data"]["a"], "line\nbreak");
}

/// A service asking for a cluster IP another service holds is refused as upstream refuses it; one
/// asking for none gets a free one.
#[tokio::test]
async fn a_cluster_ip_in_use_is_refused() {
    let server = TestServer::start().await;
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(server.client().await, "default");
    let service = |name: &str, ip: &str| {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"clusterIP": ip, "type": "NodePort", "ports": [{"port": 80}]}}))
        .unwrap()
    };
    let first = api.create(&PostParams::default(), &service("first", "10.96.7.7")).await.unwrap();
    let spec = first.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.7.7"));
    let error = api.create(&PostParams::default(), &service("second", "10.96.7.7")).await.unwrap_err();
    assert!(
        // kube-apiserver 1.33's words.
        matches!(&error, kube::Error::Api(s) if s.code == 422 && s.message == r#"Service "second" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.7.7"}: failed to allocate IP 10.96.7.7: provided IP is already allocated"#),
        "{error:?}"
    );
    let third = api.create(&PostParams::default(), &service("third", "")).await.unwrap().spec.unwrap();
    assert!(third.cluster_ip.as_deref().is_some_and(|ip| ip != "10.96.7.7" && ip.starts_with("10.")));
    let ports = |spec: &k8s_openapi::api::core::v1::ServiceSpec| spec.ports.as_ref().unwrap()[0].node_port;
    assert!(ports(&third).is_some() && ports(&third) != ports(&spec), "each gets its own node port");
}

#[tokio::test]
async fn too_old_watches_get_an_in_stream_410_and_collections_delete() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &configmap(&format!("old-{i}"), &[])).await.unwrap();
    }
    let registry = &server.server.as_ref().unwrap().state.registry;
    registry.store.compact(registry.store.current_revision()).await.unwrap();
    let http = server.http();
    let reply = http.get("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2&timeoutSeconds=5").await;
    assert_eq!(reply.status, 200, "a too-old watch is a 200 with an ERROR event, not an HTTP 410");
    let event: serde_json::Value = serde_json::from_slice(reply.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");

    let deleted =
        api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=test")).await.unwrap();
    assert_eq!(deleted.left().map(|l| l.items.len()), Some(3));
    assert!(api.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_terminating_namespace_refuses_new_content_with_403() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "closing"}})).unwrap())
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "closing");
    let mut held = configmap("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    namespaces.delete("closing", &DeleteParams::default()).await.unwrap();
    let error = api.create(&PostParams::default(), &configmap("late", &[])).await.unwrap_err();
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 403 && s.message.contains("because it is being terminated")),
        "{error:?}"
    );
    // Releasing the finalizer lets the namespace finish.
    api.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    await_condition(Duration::from_secs(10), "the namespace to go", || {
        let namespaces = namespaces.clone();
        async move { matches!(namespaces.get("closing").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;
}

/// Custom resources are deleted like every other kind (a `Status`), objects written at another
/// version are pruned against the storage version's schema, and deleting a CRD goes through
/// `Terminating`: each instance is deleted (watchers see DELETED), creates are refused, then the
/// definition goes.
#[tokio::test]
async fn custom_resource_deletion_and_crd_cleanup() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let schema = |fields: serde_json::Value| json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": fields}}}});
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": schema(json!({"size": {"type": "integer"}}))},
                {"name": "v2", "served": true, "storage": false,
                 "schema": schema(json!({"size": {"type": "integer"}, "color": {"type": "string"}}))}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let api_at = |version: &str| -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("example.com", version, "Gadget");
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk_with_plural(&gvk, "gadgets"))
    };
    let (v1, v2) = (api_at("v1"), api_at("v2"));
    let gadget = |name: &str| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "example.com/v2", "kind": "Gadget", "metadata": {"name": name},
            "spec": {"size": 3, "color": "red"}}))
        .unwrap()
    };
    await_condition(Duration::from_secs(5), "the gadget type", || {
        let v2 = v2.clone();
        async move { v2.list(&ListParams::default()).await.ok() }
    })
    .await;
    // Written at v2, stored at v1: the field v1 does not know is gone.
    let written = v2.create(&PostParams::default(), &gadget("a")).await.unwrap();
    assert_eq!(written.data["spec"], json!({"size": 3}));
    v2.create(&PostParams::default(), &gadget("b")).await.unwrap();
    v2.create(&PostParams::default(), &gadget("c")).await.unwrap();

    // A custom resource's delete answers a Status, as every kind without a finalizer does.
    let deleted = v1.delete("c", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status, not the object");
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));

    // The CRD: instances go first (a watcher sees each), then the definition.
    let mut events = watcher(v1.clone(), watcher::Config::default()).boxed();
    while !matches!(events.try_next().await.unwrap(), Some(watcher::Event::InitDone)) {}
    let holder = json!({"metadata": {"finalizers": ["example.com/hold"]}});
    v1.patch("a", &PatchParams::default(), &Patch::Merge(holder)).await.unwrap();
    crds.delete("gadgets.example.com", &DeleteParams::default()).await.unwrap();
    let terminating = crds.get("gadgets.example.com").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.finalizers.unwrap(), ["customresourcecleanup.apiextensions.k8s.io"]);
    let refused = v1.create(&PostParams::default(), &gadget("d")).await.unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 405 && s.message == "create not allowed while custom resource definition is terminating"),
        "{refused:?}"
    );
    let mut gone = Vec::new();
    while gone.is_empty() {
        if let Some(watcher::Event::Delete(object)) = events.try_next().await.unwrap() {
            gone.push(object.metadata.name.unwrap());
        }
    }
    assert_eq!(gone, ["b"], "b goes; a waits for its finalizer");
    assert!(crds.get("gadgets.example.com").await.is_ok(), "the definition waits for its objects");
    v1.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    await_condition(Duration::from_secs(10), "the CRD gone", || {
        let crds = crds.clone();
        async move { crds.get_opt("gadgets.example.com").await.unwrap().is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn limit_ranges_default_and_bound_container_resources() {
    use k8s_openapi::api::core::v1::LimitRange;
    let server = TestServer::start().await;
    let client = server.client().await;
    let ranges: Api<LimitRange> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let range = json!({"metadata": {"name": "limits"}, "spec": {"limits": [{"type": "Container",
        "min": {"cpu": "50m", "memory": "100Mi"}, "max": {"cpu": "500m", "memory": "500Mi"},
        "default": {"cpu": "500m", "memory": "500Mi"}, "defaultRequest": {"cpu": "100m", "memory": "200Mi"}}]}});
    ranges.create(&PostParams::default(), &serde_json::from_value(range).unwrap()).await.unwrap();
    let pod = |name: &str, resources: serde_json::Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": resources}]}}))
        .unwrap()
    };
    let created = pods.create(&PostParams::default(), &pod("bare", json!({}))).await.unwrap();
    let resources = serde_json::to_value(&created.spec.unwrap().containers[0].resources).unwrap();
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": "500m", "memory": "500Mi"}})
    );
    assert_eq!(created.status.unwrap().qos_class.as_deref(), Some("Burstable"));
    assert!(
        created.metadata.annotations.unwrap()["kubernetes.io/limit-ranger"].starts_with("LimitRanger plugin set: ")
    );
    // A limit without a request is the request (pod defaulting), before the range's defaults.
    let created = pods
        .create(
            &PostParams::default(),
            &pod("partial", json!({"requests": {"memory": "150Mi"}, "limits": {"cpu": "300m"}})),
        )
        .await
        .unwrap();
    let resources = serde_json::to_value(&created.spec.unwrap().containers[0].resources).unwrap();
    assert_eq!(
        resources,
        json!({"requests": {"cpu": "300m", "memory": "150Mi"}, "limits": {"cpu": "300m", "memory": "500Mi"}})
    );
    let refused = pods
        .create(&PostParams::default(), &pod("small", json!({"requests": {"cpu": "10m", "memory": "50Mi"}})))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = refused else { panic!("expected a Status") };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"small\" is forbidden: [minimum cpu usage per Container is 50m, but request is 10m, \
         minimum memory usage per Container is 100Mi, but request is 50Mi]"
    );
    assert!(matches!(pods.get("small").await, Err(kube::Error::Api(s)) if s.code == 404));
}

#[tokio::test]
async fn horizontal_pod_autoscalers_are_served_at_v1_and_v2_from_one_store() {
    use k8s_openapi::api::autoscaling::{v1, v2};
    let server = TestServer::start().await;
    let client = server.client().await;
    let old: Api<v1::HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let new: Api<v2::HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}});
    old.create(&PostParams::default(), &serde_json::from_value(hpa).unwrap()).await.unwrap();
    let seen = new.get("web").await.unwrap();
    let spec = serde_json::to_value(seen.spec.unwrap()).unwrap();
    assert_eq!(spec["metrics"][0]["resource"]["target"]["averageUtilization"], 60);
    assert_eq!(spec["minReplicas"], 1);
    // A v2 object with a metric v1 cannot say keeps it through a v1 update.
    new.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"metrics": [
        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]}})))
        .await
        .unwrap();
    let mut as_v1 = old.get("web").await.unwrap();
    as_v1.spec.as_mut().unwrap().max_replicas = 7;
    old.replace("web", &PostParams::default(), &as_v1).await.unwrap();
    let spec = serde_json::to_value(new.get("web").await.unwrap().spec.unwrap()).unwrap();
    assert_eq!(spec["maxReplicas"], 7);
    assert_eq!(spec["metrics"][0]["resource"]["name"], "memory");
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let versions: Vec<String> =
        discovery.groups().find(|g| g.name() == "autoscaling").unwrap().versions().map(String::from).collect();
    assert_eq!(versions, ["v2", "v1"]);
}

#[tokio::test]
async fn validating_admission_policies_refuse_what_their_expressions_reject() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
    };
    let server = TestServer::start().await;
    let client = server.client().await;
    let pp = PostParams::default();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let policy = json!({"metadata": {"name": "replicas"}, "spec": {
        "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"], "operations": ["CREATE", "UPDATE"]}]},
        "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
        "validations": [{"expression": "variables.replicas > 1", "messageExpression": "'wants replicas > 1, got ' + string(variables.replicas)"}]}});
    policies.create(&pp, &serde_json::from_value(policy).unwrap()).await.unwrap();
    let binding = json!({"metadata": {"name": "replicas-binding"}, "spec": {"policyName": "replicas", "validationActions": ["Deny"]}});
    bindings.create(&pp, &serde_json::from_value(binding).unwrap()).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = |name: &str, replicas: i32| -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": name}},
            "template": {"metadata": {"labels": {"a": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
        .unwrap()
    };
    let refused = await_condition(Duration::from_secs(5), "the policy to apply", || {
        let deployments = deployments.clone();
        let single = deployment("single", 1);
        async move {
            match deployments.create(&PostParams::default(), &single).await {
                Err(kube::Error::Api(status)) => Some(status),
                Ok(_) => {
                    let _ = deployments.delete("single", &DeleteParams::default()).await;
                    None
                }
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await;
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        refused.message,
        "deployments.apps \"single\" is forbidden: ValidatingAdmissionPolicy 'replicas' with binding 'replicas-binding' denied request: wants replicas > 1, got 1"
    );
    deployments.create(&pp, &deployment("pair", 2)).await.unwrap();

    // Expressions that do not compile are refused when written.
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let config = json!({"metadata": {"name": "bad"}, "webhooks": [{"name": "w.example.com", "sideEffects": "None",
        "admissionReviewVersions": ["v1"], "clientConfig": {"url": "https://example.com"},
        "matchConditions": [{"name": "bad", "expression": "... [] bad expression"}]}]});
    let error = webhooks.create(&pp, &serde_json::from_value(config).unwrap()).await.unwrap_err();
    let kube::Error::Api(status) = error else { panic!("expected a Status") };
    assert_eq!(status.code, 422);
    assert!(status.message.contains("compilation failed"), "{}", status.message);
}

#[tokio::test]
async fn status_writes_carry_metadata_for_most_kinds_but_not_pods() {
    use k8s_openapi::api::batch::v1::CronJob;
    let server = TestServer::start().await;
    let client = server.client().await;
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), "default");
    let cron_job = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    cron_jobs.create(&PostParams::default(), &serde_json::from_value(cron_job).unwrap()).await.unwrap();
    let patch = json!({"metadata": {"annotations": {"patchedstatus": "true"}}, "status": {"lastScheduleTime": "2026-12-03T00:00:00Z"}});
    let patched = cron_jobs.patch_status("c", &PatchParams::default(), &Patch::Merge(patch.clone())).await.unwrap();
    assert_eq!(patched.metadata.annotations.unwrap()["patchedstatus"], "true");
    assert!(patched.status.unwrap().last_schedule_time.is_some());

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    pods.create(&PostParams::default(), &serde_json::from_value(pod).unwrap()).await.unwrap();
    let patch = json!({"metadata": {"annotations": {"patchedstatus": "true"}}, "status": {"phase": "Running"}});
    let patched = pods.patch_status("p", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    assert!(
        !patched.metadata.annotations.unwrap_or_default().contains_key("patchedstatus"),
        "pods keep metadata out of status writes"
    );
    assert_eq!(patched.status.unwrap().phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn a_default_added_to_a_crd_shows_on_objects_stored_before_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = |schema: serde_json::Value| -> CustomResourceDefinition {
        serde_json::from_value(
            json!({"metadata": {"name": "gadgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]}}),
        )
        .unwrap()
    };
    let before = json!({"type": "object", "properties": {"a": {"type": "string", "default": "A"}}});
    crds.create(&PostParams::default(), &crd(before)).await.unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Gadget"));
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let created = await_condition(Duration::from_secs(5), "the CRD served", || {
        let gadgets = gadgets.clone();
        let object = DynamicObject::new("g", &resource);
        async move { gadgets.create(&PostParams::default(), &object).await.ok() }
    })
    .await;
    assert_eq!(created.data["a"], "A");
    let mut updated = crds.get("gadgets.example.com").await.unwrap();
    updated.spec.versions[0].schema = serde_json::from_value(json!({"openAPIV3Schema":
        {"type": "object", "properties": {"a": {"type": "string", "default": "A"}, "b": {"type": "string", "default": "B"}}}}))
    .unwrap();
    crds.replace("gadgets.example.com", &PostParams::default(), &updated).await.unwrap();
    await_condition(Duration::from_secs(5), "b defaulted on read", || {
        let gadgets = gadgets.clone();
        async move { (gadgets.get("g").await.ok()?.data["b"] == "B").then_some(()) }
    })
    .await;
    let listed = gadgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].data["b"], "B");
}

#[tokio::test]
async fn a_pods_automount_choice_wins_over_its_service_accounts() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let server = TestServer::start().await;
    let client = server.client().await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let account = json!({"metadata": {"name": "nomount"}, "automountServiceAccountToken": false});
    accounts.create(&PostParams::default(), &serde_json::from_value(account).unwrap()).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, automount: Option<bool>| -> Pod {
        let mut spec = json!({"serviceAccountName": "nomount", "containers": [{"name": "c", "image": "busybox"}]});
        if let Some(choice) = automount {
            spec["automountServiceAccountToken"] = json!(choice);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    let mounted =
        |pod: &Pod| pod.spec.as_ref().unwrap().volumes.iter().flatten().any(|v| v.name.starts_with("kube-api-access-"));
    let by_account = pods.create(&PostParams::default(), &pod("by-account", None)).await.unwrap();
    assert!(!mounted(&by_account), "the account opts out");
    let by_pod = pods.create(&PostParams::default(), &pod("by-pod", Some(true))).await.unwrap();
    assert!(mounted(&by_pod), "the pod opts back in");
}

#[tokio::test]
async fn pods_get_the_priority_of_their_class_as_from_kube_apiserver() {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let server = TestServer::start().await;
    let client = server.client().await;
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let critical = classes.get("system-node-critical").await.unwrap();
    assert_eq!(critical.value, 2_000_001_000, "the system classes exist from the start");
    assert_eq!(classes.get("system-cluster-critical").await.unwrap().value, 2_000_000_000);
    let forbidden = |error: kube::Error| match error {
        kube::Error::Api(status) if status.code == 403 || status.code == 422 => status.message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let refused = classes.delete("system-node-critical", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(
        forbidden(refused),
        "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted"
    );
    let class = |name: &str, value: i64, extra: serde_json::Value| -> PriorityClass {
        let mut object = json!({"metadata": {"name": name}, "value": value});
        object.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(object).unwrap()
    };
    let refused = classes.create(&PostParams::default(), &class("system-foo", 4, json!({}))).await.unwrap_err();
    assert!(forbidden(refused).ends_with("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-foo is not a known system priority class"));
    let refused = classes.create(&PostParams::default(), &class("big", 1_000_000_001, json!({}))).await.unwrap_err();
    assert!(
        forbidden(refused)
            .ends_with("value: Forbidden: maximum allowed value of a user defined priority is 1000000000")
    );
    classes.create(&PostParams::default(), &class("hi", 1000, json!({"preemptionPolicy": "Never"}))).await.unwrap();
    classes.create(&PostParams::default(), &class("d1", 7, json!({"globalDefault": true}))).await.unwrap();
    let refused =
        classes.create(&PostParams::default(), &class("d2", 8, json!({"globalDefault": true}))).await.unwrap_err();
    assert_eq!(
        forbidden(refused),
        "priorityclasses.scheduling.k8s.io \"d2\" is forbidden: PriorityClass d1 is already marked as default. Only one default can exist"
    );

    let pod = |spec: serde_json::Value| -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
        serde_json::from_value(json!({"metadata": {"generateName": "p-"}, "spec": spec})).unwrap()
    };
    let priority = |pod: Pod| {
        let spec = pod.spec.unwrap();
        (spec.priority_class_name, spec.priority, spec.preemption_policy)
    };
    let of_class = pods.create(&PostParams::default(), &pod(json!({"priorityClassName": "hi"}))).await.unwrap();
    assert_eq!(priority(of_class), (Some("hi".into()), Some(1000), Some("Never".into())));
    let by_default = pods.create(&PostParams::default(), &pod(json!({}))).await.unwrap();
    assert_eq!(priority(by_default), (Some("d1".into()), Some(7), Some("PreemptLowerPriority".into())));
    let refused = pods.create(&PostParams::default(), &pod(json!({"priorityClassName": "nope"}))).await.unwrap_err();
    assert_eq!(forbidden(refused), "pods \"p-\" is forbidden: no PriorityClass with name nope was found");
    let refused =
        pods.create(&PostParams::default(), &pod(json!({"priorityClassName": "hi", "priority": 5}))).await.unwrap_err();
    assert_eq!(
        forbidden(refused),
        "pods \"p-\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"
    );
    let refused = pods
        .create(
            &PostParams::default(),
            &pod(json!({"priorityClassName": "hi", "preemptionPolicy": "PreemptLowerPriority"})),
        )
        .await
        .unwrap_err();
    assert!(forbidden(refused).contains("the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; priority admission controller computed Never"));
    classes.delete("d1", &DeleteParams::default()).await.unwrap();
    let plain = pods.create(&PostParams::default(), &pod(json!({}))).await.unwrap();
    assert_eq!(priority(plain), (None, Some(0), Some("PreemptLowerPriority".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_patches_without_a_resource_version_survive_concurrent_writes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    deployments.create(&PostParams::default(), &serde_json::from_value(deployment).unwrap()).await.unwrap();
    // A controller writing the status all the time, as the deployment controller does.
    let writer = deployments.clone();
    let busy = tokio::spawn(async move {
        for i in 0..400 {
            let status = Patch::Merge(json!({"status": {"observedGeneration": i}}));
            writer.patch_status("web", &PatchParams::default(), &status).await.unwrap();
        }
    });
    for replicas in 2..40 {
        let patch = Patch::Strategic(json!({"spec": {"replicas": replicas}}));
        let scale = deployments.patch_scale("web", &PatchParams::default(), &patch).await;
        let scale = scale.unwrap_or_else(|e| panic!("an unconditional scale patch failed: {e:?}"));
        assert_eq!(scale.spec.unwrap().replicas, Some(replicas));
    }
    busy.await.unwrap();
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(39));
}
