//! Fake nodes: a virtual node exists while a synced pod runs on the host node of that name; it
//! carries the host node's labels and status.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};

use crate::{FAKE_NODE, Syncer, ensure, ignore_not_found, lock, to_value};

impl Syncer {
    pub(crate) async fn ensure_virtual_node(&self, name: &str) -> Result<(), kube::Error> {
        if lock(&self.known_nodes).contains(name) {
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(self.virtual_client.clone());
        if nodes.get_opt(name).await?.is_some() {
            lock(&self.known_nodes).insert(name.to_string());
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
        ensure(&nodes, value).await?;
        lock(&self.known_nodes).insert(name.to_string());
        // The node's CSI information follows it in.
        self.queue.send(crate::Work::Mirror(crate::extra::MirrorKind::CsiNode, name.to_string()));
        Ok(())
    }

    /// Virtual nodes exist exactly while a synced pod runs on their host node.
    pub(crate) async fn reconcile_nodes(&self) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(self.virtual_client.clone());
        for node in nodes.list(&ListParams::default().labels(&format!("{FAKE_NODE}=true"))).await?.items {
            let name = node.name_any();
            if !lock(&self.nodes).used(&name) {
                lock(&self.known_nodes).remove(&name);
                ignore_not_found(nodes.delete(&name, &DeleteParams::default()).await)?;
                self.queue.send(crate::Work::Mirror(crate::extra::MirrorKind::CsiNode, name.clone()));
            }
        }
        Ok(())
    }
}
