//! Decisions of the deployment and replica set controllers as pure functions on JSON objects.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Whether `object` is controlled by the owner with `uid`.
pub fn controlled_by(object: &Value, uid: &str) -> bool {
    object.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten().any(|o| {
        o.get("uid").and_then(Value::as_str) == Some(uid) && o.get("controller").and_then(Value::as_bool) == Some(true)
    })
}

/// The controller owner's uid of `object`, if any.
pub fn controller_uid(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|o| o.get("uid").and_then(Value::as_str).map(String::from))
}

/// An owner reference marking `owner` (of `api_version`/`kind`) as the controller.
pub fn owner_reference(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": text(owner, "/metadata/name"), "uid": text(owner, "/metadata/uid"),
           "controller": true, "blockOwnerDeletion": true})
}

/// The label selector of a workload: `spec.selector` as a `LabelSelector`, or a replication
/// controller's plain map (which defaults to the template's labels).
pub fn selector_of(owner: &Value) -> Option<Value> {
    let selector = owner.pointer("/spec/selector")?;
    if selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some() {
        return Some(selector.clone());
    }
    let map = selector.as_object().filter(|m| !m.is_empty())?;
    Some(json!({"matchLabels": map}))
}

/// The labels of an object (values that are not strings left out).
pub fn labels_of(object: &Value) -> std::collections::BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

/// The pods a workload takes over and gives up (upstream's ControllerRefManager): active pods
/// without a controller whose labels its selector matches are adopted; pods it controls that
/// no longer match are released. An owner being deleted adopts nothing.
pub fn claim<'a>(owner: &Value, pods: &[&'a Value]) -> (Vec<&'a Value>, Vec<&'a Value>) {
    let uid = text(owner, "/metadata/uid");
    let Some(selector) = selector_of(owner) else { return (Vec::new(), Vec::new()) };
    let matches = |pod: &Value| crate::aggregation::selects(&selector, &labels_of(pod));
    let deleting = owner.pointer("/metadata/deletionTimestamp").is_some();
    let mut adopt = Vec::new();
    let mut release = Vec::new();
    for pod in pods {
        match controller_uid(pod) {
            None if !deleting && is_active(pod) && matches(pod) => adopt.push(*pod),
            Some(owner_uid) if owner_uid == uid && !matches(pod) => release.push(*pod),
            _ => {}
        }
    }
    (adopt, release)
}

/// Whether a pod counts: not terminating and not finished.
pub fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(text(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// Whether a pod is ready.
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// A new pod for replica set `rs`.
pub fn pod_for(rs: &Value) -> Value {
    pod_for_owner(rs, "apps/v1", "ReplicaSet")
}

/// The metadata a pod made from `template` starts with: the template's labels, annotations and
/// finalizers only (upstream's GetPodFromTemplate; a `name` in the template is not the pod's,
/// or the second replica could never be created).
pub fn template_metadata(template: &Value) -> Value {
    let mut metadata = serde_json::Map::new();
    for field in ["labels", "annotations", "finalizers"] {
        if let Some(value) = template.pointer(&format!("/metadata/{field}")).filter(|v| !v.is_null()) {
            metadata.insert(field.into(), value.clone());
        }
    }
    Value::Object(metadata)
}

/// A new pod from the template of `owner` (a replica set or replication controller).
pub fn pod_for_owner(owner: &Value, api_version: &str, kind: &str) -> Value {
    let rs = owner;
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = template_metadata(&template);
    metadata["generateName"] = json!(format!("{}-", text(rs, "/metadata/name")));
    metadata["namespace"] = json!(text(rs, "/metadata/namespace"));
    metadata["ownerReferences"] = json!([owner_reference(rs, api_version, kind)]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

/// What a replica set needs: pods to create (count) and pods to delete (names).
#[derive(Debug, PartialEq, Eq)]
pub struct ReplicaPlan {
    /// How many pods to create.
    pub create: usize,
    /// Which pods to delete (not ready first, then newest).
    pub delete: Vec<String>,
    /// The status to report.
    pub status: Value,
    /// Seconds until a ready pod becomes available (`minReadySeconds`): look again then.
    pub recheck_after: Option<u64>,
}

/// Seconds since `pod` became Ready (None: not ready, or no transition time).
fn ready_for(pod: &Value, now: i64) -> Option<i64> {
    let condition = pod.pointer("/status/conditions").and_then(Value::as_array)?.iter().find(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })?;
    let since = condition.get("lastTransitionTime").and_then(Value::as_str)?.parse::<jiff::Timestamp>().ok()?;
    Some(now - since.as_second())
}

/// Plans replica set `rs` given the active pods it controls. A ready pod is available once it
/// has been ready for the owner's `minReadySeconds` (`now`: Unix seconds).
pub fn plan_replicas(rs: &Value, pods: &[&Value], now: i64) -> ReplicaPlan {
    let wanted = rs.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0) as usize;
    let mut active: Vec<&Value> = pods.iter().copied().filter(|p| is_active(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let mut delete = Vec::new();
    let create = wanted.saturating_sub(active.len());
    if active.len() > wanted {
        active.sort_by(|a, b| {
            is_ready(a)
                .cmp(&is_ready(b))
                .then_with(|| text(b, "/metadata/creationTimestamp").cmp(text(a, "/metadata/creationTimestamp")))
        });
        delete = active.iter().take(active.len() - wanted).map(|p| text(p, "/metadata/name").to_string()).collect();
    }
    let min_ready = int(rs, "/spec/minReadySeconds");
    let mut available = 0;
    let mut recheck_after: Option<u64> = None;
    for pod in active.iter().filter(|p| is_ready(p)) {
        // No transition time: ready since an unknown moment, taken as long enough.
        let since = ready_for(pod, now).unwrap_or(i64::MAX);
        if min_ready <= 0 || since >= min_ready {
            available += 1;
        } else {
            let wait = (min_ready - since).max(1) as u64;
            recheck_after = Some(recheck_after.map_or(wait, |w| w.min(wait)));
        }
    }
    let status = json!({
        "replicas": active.len(), "fullyLabeledReplicas": active.len(), "readyReplicas": ready, "availableReplicas": available,
        "observedGeneration": int(rs, "/metadata/generation"),
    });
    ReplicaPlan { create, delete, status, recheck_after }
}

/// The pod-template-hash of a deployment's template (10 hex characters of its SHA-256).
pub fn template_hash(template: &Value) -> String {
    let mut template = template.clone();
    if let Some(labels) = template.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove("pod-template-hash");
    }
    Sha256::digest(template.to_string().as_bytes()).iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The replica set a deployment wants for its current template.
pub fn replica_set_for(deployment: &Value, hash: &str, revision: i64) -> Value {
    let name = text(deployment, "/metadata/name");
    let mut template = deployment.pointer("/spec/template").cloned().unwrap_or(json!({}));
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let mut selector = deployment.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let labels = template["metadata"]["labels"].clone();
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{name}-{hash}"), "namespace": text(deployment, "/metadata/namespace"), "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string(),
                "deployment.kubernetes.io/desired-replicas": int(deployment, "/spec/replicas").to_string()},
            "ownerReferences": [owner_reference(deployment, "apps/v1", "Deployment")]},
        "spec": {"replicas": deployment.pointer("/spec/replicas").cloned().unwrap_or(json!(1)), "selector": selector, "template": template,
            "minReadySeconds": deployment.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0))},
    })
}

/// The revision annotation of a replica set.
pub fn revision(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The status of a deployment from its replica sets (`current` is the one for its template).
pub fn deployment_status(deployment: &Value, current: Option<&Value>, all: &[&Value], now: &str) -> Value {
    let sum = |pointer: &str| all.iter().map(|rs| int(rs, pointer)).sum::<i64>();
    let wanted = int(deployment, "/spec/replicas");
    let updated = current.map(|rs| int(rs, "/status/replicas")).unwrap_or(0);
    let available = sum("/status/availableReplicas");
    let replicas = sum("/status/replicas");
    let complete = updated == wanted
        && replicas == wanted
        && available == wanted
        && current.is_some_and(|rs| int(rs, "/status/observedGeneration") >= int(rs, "/metadata/generation"));
    let rs_name = current.map(|rs| text(rs, "/metadata/name").to_string()).unwrap_or_default();
    let progressing_reason = if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" };
    let progressing_message = if complete {
        format!("ReplicaSet \"{rs_name}\" has successfully progressed.")
    } else {
        format!("ReplicaSet \"{rs_name}\" is progressing.")
    };
    let available_status = if available >= wanted { "True" } else { "False" };
    json!({
        "observedGeneration": int(deployment, "/metadata/generation"),
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": sum("/status/readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": [
            {"type": "Available", "status": available_status,
             "reason": if available_status == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if available_status == "True" { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
             "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": progressing_reason, "message": progressing_message,
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, created: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    #[test]
    fn replica_sets_scale_up_and_down() {
        let rs = json!({"metadata": {"name": "web-1", "generation": 2}, "spec": {"replicas": 3}});
        let a = pod("a", true, "2026-01-01T00:00:00Z");
        let b = pod("b", false, "2026-01-01T00:00:01Z");
        let plan = plan_replicas(&rs, &[&a, &b], 0);
        assert_eq!(plan.create, 1);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status["readyReplicas"], 1);
        assert_eq!(plan.status["observedGeneration"], 2);
        let one = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 1}});
        let c = pod("c", true, "2026-01-01T00:00:02Z");
        assert_eq!(plan_replicas(&one, &[&a, &b, &c], 0).delete, ["b", "c"], "not ready first, then newest");
    }

    #[test]
    fn new_pods_are_owned_and_labelled() {
        let rs = json!({"metadata": {"name": "web-abc", "namespace": "d", "uid": "u1"},
            "spec": {"template": {"metadata": {"name": "fixed", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let pod = pod_for(&rs);
        assert_eq!(pod["metadata"]["generateName"], "web-abc-");
        assert!(pod["metadata"].get("name").is_none(), "a template's name is not the pod's");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert!(controlled_by(&pod, "u1"));
    }

    #[test]
    fn pods_are_available_once_ready_for_min_ready_seconds() {
        let rs = json!({"spec": {"replicas": 1, "minReadySeconds": 10}});
        let since = "2026-01-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second();
        let pod = json!({"metadata": {"name": "p"}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let early = plan_replicas(&rs, &[&pod], since + 4);
        assert_eq!(
            (early.status["readyReplicas"].clone(), early.status["availableReplicas"].clone()),
            (json!(1), json!(0))
        );
        assert_eq!(early.recheck_after, Some(6));
        let later = plan_replicas(&rs, &[&pod], since + 10);
        assert_eq!(later.status["availableReplicas"], 1);
        assert_eq!(later.recheck_after, None);
    }

    #[test]
    fn template_changes_change_the_hash() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "nginx:1"}]}});
        let b = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "nginx:2"}]}});
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
        let deployment = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": a}});
        let rs = replica_set_for(&deployment, &template_hash(&a), 3);
        assert_eq!(rs["metadata"]["name"], format!("web-{}", template_hash(&a)));
        assert_eq!(rs["spec"]["selector"]["matchLabels"]["pod-template-hash"], template_hash(&a));
        assert_eq!(revision(&rs), 3);
    }
}
