//! The syncer runtime: watches the virtual cluster and the host namespace and makes the host
//! follow (pods, and the config maps and secrets they reference), bringing pod status back and
//! propagating deletion both ways. Decisions come from `vkube_translate`; this crate only
//! observes and writes, through `kube::Client`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, Node, Pod, Secret, Service, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use vkube_translate::Context;
use vkube_translate::labels::MANAGED_BY;
use vkube_translate::metadata::{OBJECT_NAME, OBJECT_NAMESPACE, OBJECT_UID};
use vkube_translate::names::host_name;
use vkube_translate::pods::{PodSettings, config_map_host_name, host_copy, host_pod, references};
use vkube_translate::services::{host_service, with_host_addresses};

/// How many objects reconcile at once.
const CONCURRENCY: usize = 32;

/// Field manager of the syncer's writes.
pub const MANAGER: &str = "vkube-syncer";
/// Annotation on a host service created ahead of its virtual service (protects it for a while).
pub const BLOCK_DELETION: &str = "vcluster.loft.sh/block-deletion";
/// How long a host service with [`BLOCK_DELETION`] waits for its virtual service.
const BLOCK_DELETION_WINDOW: Duration = Duration::from_secs(120);

/// Label on virtual nodes that stand for host nodes running synced pods.
pub const FAKE_NODE: &str = "vcluster.loft.sh/fake-node";

/// What the syncer needs to know.
#[derive(Clone, Debug)]
pub struct SyncerConfig {
    /// Virtual cluster name and host namespace.
    pub context: Context,
    /// Pod translation settings.
    pub pods: PodSettings,
    /// Sync every config map, not only referenced ones.
    pub all_config_maps: bool,
    /// Sync every secret, not only referenced ones.
    pub all_secrets: bool,
}

/// Why the syncer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncerError {
    /// The host namespace or workload service account could not be prepared.
    #[error("cannot prepare host namespace {namespace}")]
    HostNamespace {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Aborts the tasks it holds when dropped, so stopping the syncer stops all of its watches.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A unit of work.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Work {
    /// Reconcile the virtual pod `namespace/name`.
    Pod(String, String),
    /// Recompute which config maps and secrets the host needs.
    References,
    /// Recompute fake nodes.
    Nodes,
    /// Reconcile the virtual service `namespace/name`.
    Service(String, String),
    /// Mirror the host event with this name.
    Event(String),
}

struct Syncer {
    config: SyncerConfig,
    virtual_client: Client,
    host_client: Client,
    virtual_pods: Store<Pod>,
    host_pods: Store<Pod>,
    namespaces: Store<Namespace>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    host_config_maps: Store<ConfigMap>,
    host_secrets: Store<Secret>,
    services: Store<Service>,
    host_services: Store<Service>,
    host_events: Store<CoreEvent>,
    /// Host services seen in this run: one that disappears was deleted on the host.
    seen_host_services: Arc<Mutex<BTreeSet<String>>>,
    /// Virtual nodes known to exist (saves a lookup per pod binding).
    known_nodes: Mutex<BTreeSet<String>>,
    /// Data last written to both sides, per host config map or secret name (for bidirectional data).
    last_synced: Mutex<HashMap<String, Value>>,
    queue: mpsc::UnboundedSender<Work>,
}

fn to_value<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn ignore_not_found(result: Result<impl Sized, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

impl Syncer {
    fn host_pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.host_client.clone(), &self.config.context.host_namespace)
    }

    fn find_virtual_pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.virtual_pods
            .state()
            .into_iter()
            .find(|p| p.namespace().as_deref() == Some(namespace) && p.name_any() == name)
    }

    fn find_host_pod(&self, host: &str) -> Option<Arc<Pod>> {
        self.host_pods.state().into_iter().find(|p| p.name_any() == host)
    }

    async fn reconcile_pod(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let context = &self.config.context;
        let host = host_name(context, name, namespace);
        let virtual_pod = self.find_virtual_pod(namespace, name);
        let host_pod_now = self.find_host_pod(&host);
        let virtual_api: Api<Pod> = Api::namespaced(self.virtual_client.clone(), namespace);
        let host_api = self.host_pods_api();
        match (virtual_pod, host_pod_now) {
            (None, None) => Ok(()),
            (None, Some(host_pod)) => {
                if host_pod.metadata.deletion_timestamp.is_none() {
                    tracing::info!(%namespace, %name, "virtual pod deleted; deleting host pod");
                    ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)?;
                }
                Ok(())
            }
            (Some(virtual_pod), None) => {
                let ran_before = virtual_pod.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some();
                if ran_before || virtual_pod.metadata.deletion_timestamp.is_some() {
                    tracing::info!(%namespace, %name, "host pod is gone; deleting virtual pod");
                    let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                    return ignore_not_found(virtual_api.delete(name, &params).await);
                }
                let value = to_value(virtual_pod.as_ref());
                self.sync_references(namespace, &value).await?;
                let labels = self.namespace_labels(namespace);
                let desired = host_pod(context, &value, &labels, &self.config.pods);
                let object: Pod = serde_json::from_value(desired).map_err(kube::Error::SerdeError)?;
                match host_api
                    .create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &object)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
                    Err(error) => Err(error),
                }
            }
            (Some(virtual_pod), Some(host_pod)) => {
                let virtual_uid = virtual_pod.uid().unwrap_or_default();
                if host_pod.annotations().get(OBJECT_UID).is_some_and(|uid| *uid != virtual_uid) {
                    tracing::info!(%namespace, %name, "virtual pod was re-created; replacing host pod");
                    return ignore_not_found(
                        host_api
                            .delete(&host, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
                            .await,
                    );
                }
                if virtual_pod.metadata.deletion_timestamp.is_some() {
                    if host_pod.metadata.deletion_timestamp.is_none() {
                        let grace = virtual_pod.metadata.deletion_grace_period_seconds.map(|g| g.max(0) as u32);
                        ignore_not_found(
                            host_api
                                .delete(&host, &DeleteParams { grace_period_seconds: grace, ..Default::default() })
                                .await,
                        )?;
                    }
                    return Ok(());
                }
                self.bring_status_back(&virtual_api, &virtual_pod, &host_pod).await?;
                self.force_images(&host_api, &virtual_pod, &host_pod).await
            }
        }
    }

    async fn bring_status_back(
        &self,
        virtual_api: &Api<Pod>,
        virtual_pod: &Pod,
        host_pod: &Pod,
    ) -> Result<(), kube::Error> {
        let name = virtual_pod.name_any();
        let host_node = host_pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let virtual_node = virtual_pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if let Some(node) = host_node.filter(|_| virtual_node.is_none()) {
            self.ensure_virtual_node(&node).await?;
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
            match virtual_api
                .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        let host_status = to_value(&host_pod.status);
        if host_status.is_null() || to_value(&virtual_pod.status) == host_status {
            return Ok(());
        }
        match virtual_api
            .patch_status(&name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": host_status})))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Container images follow the virtual pod: a change made on the host is reverted.
    async fn force_images(&self, host_api: &Api<Pod>, virtual_pod: &Pod, host_pod: &Pod) -> Result<(), kube::Error> {
        let desired = host_pod_images(&self.config, virtual_pod);
        let actual = host_pod
            .spec
            .as_ref()
            .map(|s| {
                s.containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if desired == actual || host_pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let containers: Vec<Value> =
            desired.iter().map(|(name, image)| json!({"name": name, "image": image})).collect();
        let patch = json!({"spec": {"containers": containers}});
        ignore_not_found(
            host_api.patch(&host_pod.name_any(), &PatchParams::apply(MANAGER), &Patch::Strategic(patch)).await,
        )
    }

    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .state()
            .into_iter()
            .find(|n| n.name_any() == namespace)
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }

    async fn ensure_virtual_node(&self, name: &str) -> Result<(), kube::Error> {
        if self.known_nodes.lock().unwrap_or_else(|p| p.into_inner()).contains(name) {
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(self.virtual_client.clone());
        if nodes.get_opt(name).await?.is_some() {
            return Ok(());
        }
        let host_nodes: Api<Node> = Api::all(self.host_client.clone());
        let host_node = host_nodes.get_opt(name).await.ok().flatten();
        let mut value = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {FAKE_NODE: "true", "kubernetes.io/hostname": name}}});
        if let Some(host_node) = host_node {
            let host_value = to_value(&host_node);
            value["status"] = host_value.get("status").cloned().unwrap_or(json!({}));
            if let Some(labels) = host_value.pointer("/metadata/labels").and_then(Value::as_object) {
                for (k, v) in labels {
                    value["metadata"]["labels"][k] = v.clone();
                }
            }
        }
        let node: Node = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
        self.known_nodes.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string());
        Ok(())
    }

    /// Virtual nodes exist exactly while a synced pod runs on their host node.
    async fn reconcile_nodes(&self) -> Result<(), kube::Error> {
        let used: BTreeSet<String> =
            self.host_pods.state().iter().filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())).collect();
        let nodes: Api<Node> = Api::all(self.virtual_client.clone());
        for node in nodes.list(&ListParams::default().labels(&format!("{FAKE_NODE}=true"))).await?.items {
            let name = node.name_any();
            if !used.contains(&name) {
                self.known_nodes.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                ignore_not_found(nodes.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        Ok(())
    }

    /// Copies the config maps and secrets `pod` references to the host before the pod.
    async fn sync_references(&self, namespace: &str, pod: &Value) -> Result<(), kube::Error> {
        let refs = references(pod);
        for name in &refs.config_maps {
            self.sync_config_map(namespace, name).await?;
        }
        for name in &refs.secrets {
            self.sync_secret(namespace, name).await?;
        }
        Ok(())
    }

    async fn sync_config_map(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let host = config_map_host_name(&self.config.context, name, namespace);
        let source = self
            .config_maps
            .state()
            .into_iter()
            .find(|c| c.namespace().as_deref() == Some(namespace) && c.name_any() == name);
        let Some(source) = source else { return Ok(()) };
        let current = self.host_config_maps.state().into_iter().find(|c| c.name_any() == host);
        let virtual_api: Api<ConfigMap> = Api::namespaced(self.virtual_client.clone(), namespace);
        let host_api: Api<ConfigMap> = Api::namespaced(self.host_client.clone(), &self.config.context.host_namespace);
        self.sync_data(
            "ConfigMap",
            &host,
            source.as_ref(),
            current.as_deref(),
            &virtual_api,
            &host_api,
            &["data", "binaryData"],
        )
        .await
    }

    async fn sync_secret(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let host = host_name(&self.config.context, name, namespace);
        let source = self
            .secrets
            .state()
            .into_iter()
            .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == name);
        let Some(source) = source else { return Ok(()) };
        let current = self.host_secrets.state().into_iter().find(|s| s.name_any() == host);
        let virtual_api: Api<Secret> = Api::namespaced(self.virtual_client.clone(), namespace);
        let host_api: Api<Secret> = Api::namespaced(self.host_client.clone(), &self.config.context.host_namespace);
        self.sync_data("Secret", &host, source.as_ref(), current.as_deref(), &virtual_api, &host_api, &["data"]).await
    }

    /// Data of config maps and secrets syncs both ways: a change on one side since the last sync
    /// is copied to the other; when both changed, the virtual side wins.
    #[allow(clippy::too_many_arguments)]
    async fn sync_data<K>(
        &self,
        kind: &str,
        host: &str,
        source: &K,
        current: Option<&K>,
        virtual_api: &Api<K>,
        host_api: &Api<K>,
        fields: &[&str],
    ) -> Result<(), kube::Error>
    where
        K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    {
        let virtual_value = to_value(source);
        let pick = |value: &Value| -> Value {
            fields
                .iter()
                .map(|f| (f.to_string(), value.get(*f).cloned().unwrap_or(Value::Null)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let virtual_data = pick(&virtual_value);
        let Some(current) = current else {
            let copy = host_copy(&self.config.context, &virtual_value, kind, host);
            let object: K = serde_json::from_value(copy).map_err(kube::Error::SerdeError)?;
            match host_api
                .create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &object)
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(error) => return Err(error),
            }
            self.last_synced.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), virtual_data);
            return Ok(());
        };
        let host_data = pick(&to_value(current));
        let last = self.last_synced.lock().unwrap_or_else(|p| p.into_inner()).get(host).cloned();
        if host_data == virtual_data {
            self.last_synced.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), virtual_data);
            return Ok(());
        }
        let host_changed_only = last.as_ref().is_some_and(|last| *last == virtual_data && *last != host_data);
        let patch = Patch::Merge(if host_changed_only { host_data.clone() } else { virtual_data.clone() });
        if host_changed_only {
            ignore_not_found(virtual_api.patch(&source.name_any(), &PatchParams::apply(MANAGER), &patch).await)?;
            self.last_synced.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), host_data);
        } else {
            ignore_not_found(host_api.patch(host, &PatchParams::apply(MANAGER), &patch).await)?;
            self.last_synced.lock().unwrap_or_else(|p| p.into_inner()).insert(host.to_string(), virtual_data);
        }
        Ok(())
    }

    async fn reconcile_service(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let context = &self.config.context;
        let host = host_name(context, name, namespace);
        let virtual_service = self
            .services
            .state()
            .into_iter()
            .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == name);
        let host_service_now = self.host_services.state().into_iter().find(|s| s.name_any() == host);
        let host_api: Api<Service> = Api::namespaced(self.host_client.clone(), &context.host_namespace);
        let virtual_api: Api<Service> = Api::namespaced(self.virtual_client.clone(), namespace);
        match (virtual_service, host_service_now) {
            (None, None) => Ok(()),
            (None, Some(host_service_obj)) => {
                let blocked = host_service_obj.annotations().get(BLOCK_DELETION).is_some_and(|v| v == "true");
                let age = host_service_obj
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| jiff_age(&t.0))
                    .unwrap_or(Duration::ZERO);
                if blocked && age < BLOCK_DELETION_WINDOW {
                    let queue = self.queue.clone();
                    let item = Work::Service(namespace.to_string(), name.to_string());
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        let _ = queue.send(item);
                    });
                    return Ok(());
                }
                ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)
            }
            (Some(_), None) if self.seen_host_services.lock().unwrap_or_else(|p| p.into_inner()).contains(&host) => {
                tracing::info!(%namespace, %name, "host service deleted; deleting the virtual service");
                ignore_not_found(virtual_api.delete(name, &DeleteParams::default()).await)
            }
            (Some(virtual_service), None) => {
                // Created before the syncer ran (or without the API hook): give it a host copy.
                allocate_on_host(&self.host_client, context, to_value(virtual_service.as_ref())).await.map(|_| ())
            }
            (Some(virtual_service), Some(host_service_obj)) => {
                let virtual_value = to_value(virtual_service.as_ref());
                let host_value = to_value(host_service_obj.as_ref());
                let desired = host_service(context, &virtual_value);
                if host_service_obj.annotations().contains_key(BLOCK_DELETION) {
                    let unblock = json!({"metadata": {"annotations": {BLOCK_DELETION: null}}});
                    ignore_not_found(
                        host_api.patch(&host, &PatchParams::apply(MANAGER), &Patch::Merge(unblock)).await,
                    )?;
                }
                let mut patch = serde_json::Map::new();
                for field in
                    ["type", "selector", "externalName", "externalIPs", "sessionAffinity", "publishNotReadyAddresses"]
                {
                    let want = desired["spec"].get(field).cloned().unwrap_or(Value::Null);
                    let have = host_value["spec"].get(field).cloned().unwrap_or(Value::Null);
                    if want != have && !(field == "type" && want.is_null()) {
                        patch.insert(field.into(), want);
                    }
                }
                let ports = |v: &Value| -> Vec<(Value, Value, Value)> {
                    v.pointer("/spec/ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            (
                                p.get("port").cloned().unwrap_or(Value::Null),
                                p.get("targetPort").cloned().unwrap_or(Value::Null),
                                p.get("protocol").cloned().unwrap_or(json!("TCP")),
                            )
                        })
                        .collect()
                };
                if ports(&desired) != ports(&host_value) {
                    patch.insert("ports".into(), desired["spec"]["ports"].clone());
                }
                if !patch.is_empty() {
                    ignore_not_found(
                        host_api
                            .patch(&host, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"spec": patch})))
                            .await,
                    )?;
                }
                let host_status = host_value.get("status").cloned().unwrap_or(Value::Null);
                if !host_status.is_null() && virtual_value.get("status") != Some(&host_status) {
                    ignore_not_found(
                        virtual_api
                            .patch_status(
                                name,
                                &PatchParams::apply(MANAGER),
                                &Patch::Merge(json!({"status": host_status})),
                            )
                            .await,
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Mirrors a host event about a synced object into the virtual cluster.
    async fn reconcile_event(&self, host_event_name: &str) -> Result<(), kube::Error> {
        let Some(event) = self.host_events.state().into_iter().find(|e| e.name_any() == host_event_name) else {
            return Ok(());
        };
        let kind = event.involved_object.kind.clone().unwrap_or_default();
        let host_object = event.involved_object.name.clone().unwrap_or_default();
        if !vkube_translate::events::KINDS.contains(&kind.as_str()) {
            return Ok(());
        }
        let annotations = match kind.as_str() {
            "Pod" => self.find_host_pod(&host_object).map(|o| o.annotations().clone()),
            "Service" => self
                .host_services
                .state()
                .into_iter()
                .find(|o| o.name_any() == host_object)
                .map(|o| o.annotations().clone()),
            "ConfigMap" => self
                .host_config_maps
                .state()
                .into_iter()
                .find(|o| o.name_any() == host_object)
                .map(|o| o.annotations().clone()),
            _ => self
                .host_secrets
                .state()
                .into_iter()
                .find(|o| o.name_any() == host_object)
                .map(|o| o.annotations().clone()),
        };
        let Some(annotations) = annotations else { return Ok(()) };
        let (Some(namespace), Some(name)) = (annotations.get(OBJECT_NAMESPACE), annotations.get(OBJECT_NAME)) else {
            return Ok(());
        };
        let uid = match kind.as_str() {
            "Pod" => self.find_virtual_pod(namespace, name).and_then(|p| p.uid()),
            "Service" => self
                .services
                .state()
                .into_iter()
                .find(|s| s.namespace().as_deref() == Some(namespace.as_str()) && s.name_any() == *name)
                .and_then(|s| s.uid()),
            "ConfigMap" => self
                .config_maps
                .state()
                .into_iter()
                .find(|s| s.namespace().as_deref() == Some(namespace.as_str()) && s.name_any() == *name)
                .and_then(|s| s.uid()),
            _ => self
                .secrets
                .state()
                .into_iter()
                .find(|s| s.namespace().as_deref() == Some(namespace.as_str()) && s.name_any() == *name)
                .and_then(|s| s.uid()),
        };
        let Some(uid) = uid else { return Ok(()) };
        let object = vkube_translate::events::VirtualObject { namespace, name, uid: &uid };
        let mirrored = vkube_translate::events::virtual_event(
            &to_value(event.as_ref()),
            &self.config.context.host_namespace,
            &host_object,
            &object,
        );
        let event_name = mirrored["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let api: Api<CoreEvent> = Api::namespaced(self.virtual_client.clone(), namespace);
        let object: CoreEvent = serde_json::from_value(mirrored.clone()).map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let update = json!({"count": mirrored["count"], "lastTimestamp": mirrored["lastTimestamp"], "message": mirrored["message"], "series": mirrored.get("series")});
                ignore_not_found(api.patch(&event_name, &PatchParams::apply(MANAGER), &Patch::Merge(update)).await)
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 403 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Keeps on the host exactly the config maps and secrets some virtual pod references (or all,
    /// when configured); syncs their data.
    async fn reconcile_references(&self) -> Result<(), kube::Error> {
        let mut config_maps: BTreeSet<(String, String)> = BTreeSet::new();
        let mut secrets: BTreeSet<(String, String)> = BTreeSet::new();
        for pod in self.virtual_pods.state() {
            let namespace = pod.namespace().unwrap_or_default();
            let refs = references(&to_value(pod.as_ref()));
            config_maps.extend(refs.config_maps.into_iter().map(|n| (namespace.clone(), n)));
            secrets.extend(refs.secrets.into_iter().map(|n| (namespace.clone(), n)));
        }
        if self.config.all_config_maps {
            config_maps
                .extend(self.config_maps.state().iter().map(|c| (c.namespace().unwrap_or_default(), c.name_any())));
        }
        if self.config.all_secrets {
            secrets.extend(self.secrets.state().iter().map(|s| (s.namespace().unwrap_or_default(), s.name_any())));
        }
        let context = &self.config.context;
        let wanted_maps: BTreeSet<String> =
            config_maps.iter().map(|(ns, n)| config_map_host_name(context, n, ns)).collect();
        let wanted_secrets: BTreeSet<String> = secrets.iter().map(|(ns, n)| host_name(context, n, ns)).collect();
        for (namespace, name) in &config_maps {
            self.sync_config_map(namespace, name).await?;
        }
        for (namespace, name) in &secrets {
            self.sync_secret(namespace, name).await?;
        }
        let host_maps: Api<ConfigMap> = Api::namespaced(self.host_client.clone(), &context.host_namespace);
        for map in self.host_config_maps.state() {
            let name = map.name_any();
            if !wanted_maps.contains(&name) {
                tracing::info!(%name, "config map no longer referenced; deleting the host copy");
                ignore_not_found(host_maps.delete(&name, &DeleteParams::default()).await)?;
                self.last_synced.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            }
        }
        let host_secrets: Api<Secret> = Api::namespaced(self.host_client.clone(), &context.host_namespace);
        for secret in self.host_secrets.state() {
            let name = secret.name_any();
            if !wanted_secrets.contains(&name) {
                tracing::info!(%name, "secret no longer referenced; deleting the host copy");
                ignore_not_found(host_secrets.delete(&name, &DeleteParams::default()).await)?;
                self.last_synced.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            }
        }
        Ok(())
    }
}

/// Creates the host service for a virtual service that is being created and returns the virtual
/// service with the host's addresses (what the reference's API interceptor does). An existing host
/// service of the same virtual object is reused, so retries and restarts allocate nothing twice.
pub async fn allocate_on_host(host: &Client, context: &Context, service: Value) -> Result<Value, kube::Error> {
    let mut desired = host_service(context, &service);
    // The virtual service is stored only after this returns: until the syncer has seen it, the
    // host service must not be taken for an orphan.
    desired["metadata"]["annotations"][BLOCK_DELETION] = json!("true");
    let api: Api<Service> = Api::namespaced(host.clone(), &context.host_namespace);
    let object: Service = serde_json::from_value(desired.clone()).map_err(kube::Error::SerdeError)?;
    let created =
        match api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &object).await {
            Ok(created) => created,
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let name = desired["metadata"]["name"].as_str().unwrap_or_default();
                api.get(name).await?
            }
            Err(error) => return Err(error),
        };
    Ok(with_host_addresses(&service, &to_value(&created)))
}

/// Deletes the host service made by [`allocate_on_host`] when the virtual create failed.
pub async fn release_on_host(host: &Client, context: &Context, service: &Value) {
    let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = service.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let api: Api<Service> = Api::namespaced(host.clone(), &context.host_namespace);
    let _ = api.delete(&host_name(context, name, namespace), &DeleteParams::default()).await;
}

fn host_pod_images(config: &SyncerConfig, pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| {
                    let image = c.image.clone().unwrap_or_default();
                    let image = config.pods.translate_image.get(&image).cloned().unwrap_or(image);
                    (c.name.clone(), image)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn jiff_age(timestamp: &k8s_openapi::jiff::Timestamp) -> Duration {
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(*timestamp);
    Duration::from_secs(elapsed.as_secs().max(0) as u64)
}

fn managed_services(config: &SyncerConfig) -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY}={}", config.context.name))
}

/// Starts a reflector for `api` and returns its store; `on_change` is called for every change.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    on_change: impl Fn(&K, bool) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    let handle = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(object) | Event::InitApply(object)) => on_change(&object, false),
                Ok(Event::Delete(object)) => on_change(&object, true),
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "watch error; retrying"),
            }
        }
    });
    (reader, handle)
}

/// Prepares the host namespace, starts watching both sides and syncs until the future is
/// dropped. `ready` turns true once every cache has its initial list.
pub async fn run(
    virtual_client: Client,
    host_client: Client,
    config: SyncerConfig,
    ready: watch::Sender<bool>,
) -> Result<(), SyncerError> {
    let namespace = config.context.host_namespace.clone();
    let prepare = |source| SyncerError::HostNamespace { namespace: namespace.clone(), source };
    let namespaces: Api<Namespace> = Api::all(host_client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))
        .map_err(|e| prepare(kube::Error::SerdeError(e)))?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(prepare(error)),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(host_client.clone(), &namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": format!("vc-workload-{}", config.context.name)}}))
            .map_err(|e| prepare(kube::Error::SerdeError(e)))?;
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(prepare(error)),
    }

    let (queue, mut work) = mpsc::unbounded_channel::<Work>();
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={}", config.context.name));
    let q = queue.clone();
    let (virtual_pods, virtual_pods_task) =
        reflect(Api::<Pod>::all(virtual_client.clone()), watcher::Config::default(), move |pod, _| {
            let _ = q.send(Work::Pod(pod.namespace().unwrap_or_default(), pod.name_any()));
            let _ = q.send(Work::References);
        });
    let q = queue.clone();
    let (host_pods, host_pods_task) =
        reflect(Api::<Pod>::namespaced(host_client.clone(), &namespace), managed.clone(), move |pod, _| {
            let annotations = pod.annotations();
            if let (Some(ns), Some(name)) = (annotations.get(OBJECT_NAMESPACE), annotations.get(OBJECT_NAME)) {
                let _ = q.send(Work::Pod(ns.clone(), name.clone()));
            }
            let _ = q.send(Work::Nodes);
        });
    let (namespaces_store, namespaces_store_task) =
        reflect(Api::<Namespace>::all(virtual_client.clone()), watcher::Config::default(), |_, _| {});
    let q = queue.clone();
    let (config_maps, config_maps_task) =
        reflect(Api::<ConfigMap>::all(virtual_client.clone()), watcher::Config::default(), move |_, _| {
            let _ = q.send(Work::References);
        });
    let q = queue.clone();
    let (secrets, secrets_task) =
        reflect(Api::<Secret>::all(virtual_client.clone()), watcher::Config::default(), move |_, _| {
            let _ = q.send(Work::References);
        });
    let q = queue.clone();
    let (host_config_maps, host_config_maps_task) =
        reflect(Api::<ConfigMap>::namespaced(host_client.clone(), &namespace), managed.clone(), move |_, _| {
            let _ = q.send(Work::References);
        });
    let q = queue.clone();
    let (host_secrets, host_secrets_task) =
        reflect(Api::<Secret>::namespaced(host_client.clone(), &namespace), managed, move |_, _| {
            let _ = q.send(Work::References);
        });
    let q = queue.clone();
    let (services, services_task) =
        reflect(Api::<Service>::all(virtual_client.clone()), watcher::Config::default(), move |service, _| {
            let _ = q.send(Work::Service(service.namespace().unwrap_or_default(), service.name_any()));
        });
    let q = queue.clone();
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let seen_writer = seen.clone();
    let (host_services, host_services_task) = reflect(
        Api::<Service>::namespaced(host_client.clone(), &namespace),
        managed_services(&config),
        move |service, deleted| {
            if !deleted {
                seen_writer.lock().unwrap_or_else(|p| p.into_inner()).insert(service.name_any());
            }
            let annotations = service.annotations();
            if let (Some(ns), Some(name)) = (annotations.get(OBJECT_NAMESPACE), annotations.get(OBJECT_NAME)) {
                let _ = q.send(Work::Service(ns.clone(), name.clone()));
            }
        },
    );
    let q = queue.clone();
    let (host_events, host_events_task) = reflect(
        Api::<CoreEvent>::namespaced(host_client.clone(), &namespace),
        watcher::Config::default(),
        move |event, deleted| {
            if !deleted {
                let _ = q.send(Work::Event(event.name_any()));
            }
        },
    );
    let _tasks = Tasks(vec![
        host_events_task,
        services_task,
        host_services_task,
        virtual_pods_task,
        host_pods_task,
        namespaces_store_task,
        config_maps_task,
        secrets_task,
        host_config_maps_task,
        host_secrets_task,
    ]);
    for store in [&virtual_pods, &host_pods] {
        let _ = store.wait_until_ready().await;
    }
    let _ = namespaces_store.wait_until_ready().await;
    for store in [&config_maps, &host_config_maps] {
        let _ = store.wait_until_ready().await;
    }
    for store in [&secrets, &host_secrets] {
        let _ = store.wait_until_ready().await;
    }
    for store in [&services, &host_services] {
        let _ = store.wait_until_ready().await;
    }
    let _ = host_events.wait_until_ready().await;
    let syncer = Arc::new(Syncer {
        config,
        virtual_client,
        host_client,
        virtual_pods,
        host_pods,
        namespaces: namespaces_store,
        config_maps,
        secrets,
        host_config_maps,
        host_secrets,
        services,
        host_services,
        host_events,
        seen_host_services: seen,
        last_synced: Mutex::new(HashMap::new()),
        known_nodes: Mutex::new(BTreeSet::new()),
        queue: queue.clone(),
    });
    // A full pass over everything that existed before this start: no duplicates, no orphans.
    for pod in syncer.virtual_pods.state() {
        let _ = queue.send(Work::Pod(pod.namespace().unwrap_or_default(), pod.name_any()));
    }
    for pod in syncer.host_pods.state() {
        if let (Some(ns), Some(name)) = (pod.annotations().get(OBJECT_NAMESPACE), pod.annotations().get(OBJECT_NAME)) {
            let _ = queue.send(Work::Pod(ns.clone(), name.clone()));
        }
    }
    for service in syncer.services.state() {
        let _ = queue.send(Work::Service(service.namespace().unwrap_or_default(), service.name_any()));
    }
    for service in syncer.host_services.state() {
        if let (Some(ns), Some(name)) =
            (service.annotations().get(OBJECT_NAMESPACE), service.annotations().get(OBJECT_NAME))
        {
            let _ = queue.send(Work::Service(ns.clone(), name.clone()));
        }
    }
    let _ = queue.send(Work::References);
    let _ = queue.send(Work::Nodes);
    let _ = ready.send(true);
    while let Some(first) = work.recv().await {
        let mut batch = BTreeSet::from([first]);
        while let Ok(more) = work.try_recv() {
            batch.insert(more);
        }
        // Keys in a batch are distinct, so they reconcile concurrently without racing each other;
        // the shared passes (references, nodes) run after the per-object work of the batch.
        let (shared_passes, objects): (Vec<Work>, Vec<Work>) =
            batch.into_iter().partition(|item| matches!(item, Work::References | Work::Nodes));
        let work_on = |item: Work| {
            let syncer = syncer.clone();
            async move {
                let result = match &item {
                    Work::Pod(namespace, name) => syncer.reconcile_pod(namespace, name).await,
                    Work::References => syncer.reconcile_references().await,
                    Work::Nodes => syncer.reconcile_nodes().await,
                    Work::Service(namespace, name) => syncer.reconcile_service(namespace, name).await,
                    Work::Event(name) => syncer.reconcile_event(name).await,
                };
                if let Err(error) = result {
                    tracing::warn!(?item, %error, "sync failed; retrying");
                    let queue = syncer.queue.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = queue.send(item);
                    });
                }
            }
        };
        futures::stream::iter(objects).for_each_concurrent(CONCURRENCY, work_on).await;
        futures::stream::iter(shared_passes).for_each_concurrent(1, work_on).await;
    }
    Ok(())
}
