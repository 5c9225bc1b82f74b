//! DaemonSet decisions: one pod per eligible node, pinned to it.

use serde_json::{Value, json};

use crate::workloads::{is_active, is_ready, owner_reference, template_hash};

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Whether the set's pods may run on `node` (node selector and NoSchedule taints).
pub fn eligible(set: &Value, node: &Value) -> bool {
    if node.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    let selector_ok = set
        .pointer("/spec/template/spec/nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)));
    let tolerations: Vec<&Value> =
        set.pointer("/spec/template/spec/tolerations").and_then(Value::as_array).into_iter().flatten().collect();
    let taints_ok = node.pointer("/spec/taints").and_then(Value::as_array).into_iter().flatten().all(|taint| {
        !matches!(text(taint, "/effect"), "NoSchedule" | "NoExecute")
            || tolerations.iter().any(|t| {
                (text(t, "/operator") == "Exists"
                    && (text(t, "/key").is_empty() || text(t, "/key") == text(taint, "/key")))
                    || (text(t, "/key") == text(taint, "/key") && text(t, "/value") == text(taint, "/value"))
            })
    });
    selector_ok && taints_ok
}

/// The pod of the set for `node`.
pub fn pod_for(set: &Value, node: &str) -> Value {
    let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = crate::workloads::template_metadata(&template);
    metadata["generateName"] = json!(format!("{}-", text(set, "/metadata/name")));
    metadata["namespace"] = json!(text(set, "/metadata/namespace"));
    metadata["labels"]["controller-revision-hash"] = json!(template_hash(&template));
    metadata["ownerReferences"] = json!([owner_reference(set, "apps/v1", "DaemonSet")]);
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    spec["nodeName"] = json!(node);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// Nodes that need a pod, and pods to delete (on ineligible or missing nodes, duplicates,
/// outdated templates).
pub fn plan(set: &Value, nodes: &[&Value], pods: &[&Value]) -> (Vec<String>, Vec<String>) {
    let hash = template_hash(set.pointer("/spec/template").unwrap_or(&Value::Null));
    let eligible_nodes: Vec<&str> =
        nodes.iter().filter(|n| eligible(set, n)).map(|n| text(n, "/metadata/name")).collect();
    let mut create = Vec::new();
    let mut delete = Vec::new();
    for node in &eligible_nodes {
        let mut on_node: Vec<&&Value> =
            pods.iter().filter(|p| is_active(p) && text(p, "/spec/nodeName") == *node).collect();
        on_node.sort_by_key(|p| text(p, "/metadata/creationTimestamp").to_string());
        match on_node.split_first() {
            None => create.push(node.to_string()),
            Some((first, rest)) => {
                delete.extend(rest.iter().map(|p| text(p, "/metadata/name").to_string()));
                if text(first, "/metadata/labels/controller-revision-hash") != hash {
                    delete.push(text(first, "/metadata/name").to_string());
                }
            }
        }
    }
    for pod in pods.iter().filter(|p| is_active(p)) {
        if !eligible_nodes.contains(&text(pod, "/spec/nodeName")) {
            delete.push(text(pod, "/metadata/name").to_string());
        }
    }
    (create, delete)
}

/// The set's status.
pub fn status(set: &Value, nodes: &[&Value], pods: &[&Value]) -> Value {
    let hash = template_hash(set.pointer("/spec/template").unwrap_or(&Value::Null));
    let desired = nodes.iter().filter(|n| eligible(set, n)).count();
    let active: Vec<&&Value> = pods.iter().filter(|p| is_active(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let updated = active.iter().filter(|p| text(p, "/metadata/labels/controller-revision-hash") == hash).count();
    json!({"desiredNumberScheduled": desired, "currentNumberScheduled": active.len(), "numberReady": ready,
           "numberAvailable": ready, "numberUnavailable": desired.saturating_sub(ready), "updatedNumberScheduled": updated,
           "numberMisscheduled": 0, "observedGeneration": set.pointer("/metadata/generation").cloned().unwrap_or(json!(1))})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pod_per_eligible_node() {
        let set = json!({"metadata": {"name": "agent", "namespace": "d", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let a = json!({"metadata": {"name": "a"}});
        let b = json!({"metadata": {"name": "b"}, "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}});
        let (create, delete) = plan(&set, &[&a, &b], &[]);
        assert_eq!(create, ["a"]);
        assert!(delete.is_empty());
        let mut pod = pod_for(&set, "a");
        pod["metadata"]["name"] = json!("agent-x");
        assert_eq!(pod["spec"]["nodeName"], "a");
        let (create, delete) = plan(&set, &[&a], &[&pod]);
        assert!(create.is_empty() && delete.is_empty());
        let (_, delete) = plan(&set, &[], &[&pod]);
        assert_eq!(delete, ["agent-x"], "the node went away");
    }
}
