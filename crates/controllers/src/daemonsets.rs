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
/// outdated templates, and pods that ended: a failed or succeeded daemon pod is deleted and its
/// node gets a new one, as upstream's controller revives failed daemon pods).
pub fn plan(set: &Value, nodes: &[&Value], pods: &[&Value]) -> (Vec<String>, Vec<String>) {
    let hash = template_hash(set.pointer("/spec/template").unwrap_or(&Value::Null));
    let eligible_nodes: Vec<&str> =
        nodes.iter().filter(|n| eligible(set, n)).map(|n| text(n, "/metadata/name")).collect();
    let mut create = Vec::new();
    let mut delete: Vec<String> = pods
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none() && !is_active(p))
        .map(|p| text(p, "/metadata/name").to_string())
        .collect();
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

/// The ControllerRevision data of the set's current template (upstream's getPatch: the
/// template, replacing whatever a rollback applies it over).
///
/// Clients compare it byte for byte with what Go makes of the set they read (`daemon.Match`:
/// the typed template marshalled through a map, so keys sorted), so it is in Go's form: struct
/// fields Go always writes are there (`metadata.creationTimestamp: null`, each container's
/// `resources: {}`).
pub fn revision_data(set: &Value) -> Value {
    let mut template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    if let Some(template) = template.as_object_mut() {
        let metadata = template.entry("metadata").or_insert_with(|| json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.entry("creationTimestamp").or_insert(Value::Null);
        }
        for kind in ["initContainers", "containers", "ephemeralContainers"] {
            let containers = template.get_mut("spec").and_then(|s| s.get_mut(kind)).and_then(Value::as_array_mut);
            for container in containers.into_iter().flatten().filter_map(Value::as_object_mut) {
                container.entry("resources").or_insert_with(|| json!({}));
            }
        }
    }
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// What the set's history needs: a revision for the current template, an existing one moved to
/// the newest revision number, and old ones beyond `revisionHistoryLimit` removed.
#[derive(Debug, Default, PartialEq)]
pub struct HistoryPlan {
    /// A ControllerRevision to create.
    pub create: Option<Value>,
    /// A revision (by name) whose `revision` becomes the given number.
    pub renumber: Option<(String, i64)>,
    /// Revisions to delete (oldest first).
    pub delete: Vec<String>,
}

/// The history step for `set`, given the revisions it controls (upstream's constructHistory
/// and cleanupHistory).
pub fn history(set: &Value, revisions: &[&Value]) -> HistoryPlan {
    let data = revision_data(set);
    let number = |r: &Value| r.get("revision").and_then(Value::as_i64).unwrap_or(0);
    let newest = revisions.iter().map(|r| number(r)).max().unwrap_or(0);
    let current = revisions.iter().find(|r| r.get("data") == Some(&data));
    let mut plan = HistoryPlan::default();
    match current {
        Some(current) if number(current) < newest => {
            plan.renumber = Some((text(current, "/metadata/name").to_string(), newest + 1));
        }
        Some(_) => {}
        None => {
            let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
            // A name another template's revision holds (a hash collision, or a revision someone
            // else made) moves on to the next collision count.
            let taken: Vec<&str> = revisions.iter().map(|r| text(r, "/metadata/name")).collect();
            let name_of = |collision: u32| {
                let hash = if collision == 0 {
                    template_hash(&template)
                } else {
                    template_hash(&json!([template, collision]))
                };
                (format!("{}-{hash}", text(set, "/metadata/name")), hash)
            };
            let (name, hash) = (0..).map(name_of).find(|(name, _)| !taken.contains(&name.as_str())).expect("unbounded");
            let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
            labels["controller-revision-hash"] = json!(hash);
            let mut metadata = json!({"name": name, "namespace": text(set, "/metadata/namespace"), "labels": labels,
                "ownerReferences": [owner_reference(set, "apps/v1", "DaemonSet")]});
            if let Some(annotations) = set.pointer("/metadata/annotations").filter(|a| a.is_object()) {
                metadata["annotations"] = annotations.clone();
            }
            plan.create = Some(json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": metadata,
                "data": data, "revision": newest + 1}));
        }
    }
    let limit = set.pointer("/spec/revisionHistoryLimit").and_then(Value::as_i64).unwrap_or(10).max(0) as usize;
    let mut old: Vec<&&Value> = revisions.iter().filter(|r| r.get("data") != Some(&data)).collect();
    old.sort_by_key(|r| number(r));
    let excess = old.len().saturating_sub(limit);
    plan.delete = old.iter().take(excess).map(|r| text(r, "/metadata/name").to_string()).collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_one_revision_per_template_numbered_after_the_newest() {
        let set = json!({"metadata": {"name": "ds", "namespace": "n", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let first = history(&set, &[]).create.unwrap();
        assert_eq!(first["revision"], 1);
        // In the form Go gives the template (what clients compare it with, byte for byte).
        assert_eq!(
            serde_json::to_string(&first["data"]).unwrap(),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"a"}},"spec":{"containers":[{"name":"c","resources":{}}]}}}}"#
        );
        assert_eq!(first["metadata"]["labels"]["app"], "a");
        assert!(first["metadata"]["name"].as_str().unwrap().starts_with("ds-"));
        assert_eq!(history(&set, &[&first]), HistoryPlan::default(), "nothing to do");
        // Someone made revision 2 under the name the new template would take, with other data.
        let mut changed = set.clone();
        changed["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(1);
        let squatter = json!({"metadata": {"name": history(&changed, &[]).create.unwrap()["metadata"]["name"]},
            "data": {"other": true}, "revision": 2});
        let next = history(&changed, &[&first, &squatter]).create.unwrap();
        assert_eq!(next["revision"], 3);
        assert_ne!(next["metadata"]["name"], squatter["metadata"]["name"]);
        // Back to the first template: its revision becomes the newest.
        let second = json!({"metadata": {"name": "ds-2"}, "data": revision_data(&changed), "revision": 4});
        assert_eq!(
            history(&set, &[&first, &second]).renumber,
            Some((first["metadata"]["name"].as_str().unwrap().into(), 5))
        );
        let mut limited = set.clone();
        limited["spec"]["revisionHistoryLimit"] = json!(0);
        assert_eq!(history(&limited, &[&first, &second]).delete, vec!["ds-2".to_string()]);
    }

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
        // A daemon pod that failed is deleted, and its node gets a new one.
        pod["status"] = json!({"phase": "Failed"});
        let (create, delete) = plan(&set, &[&a], &[&pod]);
        assert_eq!((create, delete), (vec!["a".to_string()], vec!["agent-x".to_string()]));
    }
}
