//! Virtual nodes (sync-behavior.md §4.9). By default a synthetic ("fake") node stands for each
//! host node that runs a synced pod other than a DaemonSet's. With `sync.fromHost.nodes.enabled`
//! the host nodes themselves are shown (the needed ones, every one, or those matching the
//! selector labels), following the host; with `syncBackChanges` a tenant's label, taint and
//! cordon edits, and the resources it advertises in the node's status, go to the host node.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};
use vkube_translate::labels::MANAGED_BY;
use vkube_translate::nodes::{
    FAKE_NODE, NodeSettings, back_to_host, fake_addresses, fake_node, real_node, status_back_to_host,
};

use crate::{MANAGER, Syncer, cached, controlled, forcing_patch, ignore_not_found, lock, to_value};

/// The node caches and settings.
pub(crate) struct NodeSync {
    pub(crate) settings: NodeSettings,
    /// Host nodes (only with `sync.fromHost.nodes.enabled`: fake nodes need nothing of the host).
    pub(crate) host_nodes: Option<Store<Node>>,
    pub(crate) virtual_nodes: Store<Node>,
    /// Each synced node as the syncer last wrote it: what a tenant's edit is told apart from.
    written: Mutex<HashMap<String, Value>>,
}

impl NodeSync {
    pub(crate) fn new(settings: NodeSettings, host_nodes: Option<Store<Node>>, virtual_nodes: Store<Node>) -> Self {
        NodeSync { settings, host_nodes, virtual_nodes, written: Mutex::default() }
    }

    /// Whether the syncer made virtual node `node` (it removes only those).
    fn ours(&self, node: &Node) -> bool {
        node.labels().contains_key(FAKE_NODE) || node.labels().get(MANAGED_BY) == Some(&self.settings.vcluster)
    }
}

/// The labels, annotations and spec of a node: what a plain update writes.
fn main_part(node: &Value) -> Value {
    json!({
        "metadata": {
            "labels": node.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
            "annotations": node.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
        },
        "spec": node.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

impl Syncer {
    /// Makes sure virtual node `name` exists before a pod is bound to it.
    pub(crate) async fn ensure_virtual_node(&self, name: &str) -> Result<(), kube::Error> {
        if cached(&self.node_sync.virtual_nodes, None, name).is_some() {
            return Ok(());
        }
        self.reconcile_node(name).await
    }

    /// Brings virtual node `name` in line with the host and the pods that run on it.
    pub(crate) async fn reconcile_node(&self, name: &str) -> Result<(), kube::Error> {
        let sync = &self.node_sync;
        let api: Api<Node> = Api::all(self.virtual_client.clone());
        let current = cached(&sync.virtual_nodes, None, name);
        if current.as_deref().is_some_and(controlled) {
            return Ok(());
        }
        let needed = lock(&self.nodes).used(name);
        let host = sync.host_nodes.as_ref().and_then(|store| cached(store, None, name));
        let selected = match &host {
            Some(host) => sync.settings.selects(host.labels(), needed),
            None => !sync.settings.real && needed,
        };
        if !selected {
            if let Some(current) = current.as_deref().filter(|c| sync.ours(c)) {
                tracing::info!(node = %name, "no longer shown in the virtual cluster; deleting it");
                ignore_not_found(api.delete(&current.name_any(), &DeleteParams::default()).await)?;
            }
            lock(&sync.written).remove(name);
            self.queue.send(crate::Work::Mirror(crate::extra::MirrorKind::CsiNode, name.to_string()));
            return Ok(());
        }
        let current_value = current.as_deref().map(to_value);
        let desired = match &host {
            None => {
                let Some(current) = &current_value else {
                    let node =
                        fake_node(name, &sync.settings, std::env::consts::ARCH.replace("x86_64", "amd64").as_str());
                    crate::ensure(&api, node).await?;
                    self.queue.send(crate::Work::Mirror(crate::extra::MirrorKind::CsiNode, name.to_string()));
                    return Ok(());
                };
                // A fake node's addresses are reset; the rest is the tenant's to change.
                let addresses = fake_addresses(name);
                if current.pointer("/status/addresses") != Some(&addresses) {
                    let patch = Patch::Merge(json!({"status": {"addresses": addresses}}));
                    ignore_not_found(api.patch_status(name, &PatchParams::default(), &patch).await)?;
                }
                return Ok(());
            }
            Some(host) => {
                let host_value = to_value(host.as_ref());
                if sync.settings.sync_back
                    && let Some(current) = &current_value
                {
                    let written = lock(&sync.written).get(name).cloned();
                    let main = written.as_ref().and_then(|w| back_to_host(w, current, &host_value));
                    let status = written.as_ref().and_then(|w| status_back_to_host(w, current));
                    if main.is_some() || status.is_some() {
                        // The host node's watch event brings the result back here.
                        tracing::info!(node = %name, "copying the tenant's node edit to the host");
                        let host_api: Api<Node> = Api::all(self.host_client.clone());
                        if let Some(patch) = main {
                            host_api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
                        }
                        if let Some(patch) = status {
                            host_api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
                        }
                        lock(&sync.written).insert(name.to_string(), current.clone());
                        return Ok(());
                    }
                }
                real_node(&host_value, current_value.as_ref(), &sync.settings)
            }
        };
        match current_value {
            None => {
                crate::ensure(&api, desired.clone()).await?;
                self.queue.send(crate::Work::Mirror(crate::extra::MirrorKind::CsiNode, name.to_string()));
            }
            Some(current) => {
                let (now, wanted) = (main_part(&current), main_part(&desired));
                if now != wanted {
                    let mut patch = forcing_patch(&now, &wanted);
                    patch["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                    match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
                        Ok(_) => {}
                        // Someone wrote it meanwhile: its watch event brings it here again.
                        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
                        Err(error) => return ignore_not_found(Err::<(), _>(error)),
                    }
                }
                let empty = json!({});
                let status = current.get("status").unwrap_or(&empty);
                let wanted_status = desired.get("status").unwrap_or(&empty);
                if status != wanted_status {
                    let patch = Patch::Merge(json!({"status": forcing_patch(status, wanted_status)}));
                    ignore_not_found(api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await)?;
                }
            }
        }
        lock(&sync.written).insert(name.to_string(), desired);
        Ok(())
    }
}
