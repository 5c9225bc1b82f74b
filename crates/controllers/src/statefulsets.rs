//! StatefulSet decisions: stable pod names and claims, ordered start, highest-first scale-down and
//! rolling updates.

use serde_json::{Value, json};

use crate::workloads::{is_active, is_ready, owner_reference, template_hash};

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The ordinal of a pod named `<set>-<n>`.
pub fn ordinal(set: &str, pod: &str) -> Option<usize> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The revision of the set's current template.
pub fn revision(set: &Value) -> String {
    format!("{}-{}", text(set, "/metadata/name"), template_hash(set.pointer("/spec/template").unwrap_or(&Value::Null)))
}

/// The claim of volume claim template `template` for ordinal `n`.
pub fn claim_name(template: &Value, set: &str, n: usize) -> String {
    format!("{}-{set}-{n}", text(template, "/metadata/name"))
}

/// The claims for ordinal `n`.
pub fn claims_for(set: &Value, n: usize) -> Vec<Value> {
    let name = text(set, "/metadata/name");
    set.pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|template| {
            let mut labels = set.pointer("/spec/selector/matchLabels").cloned().unwrap_or(json!({}));
            if let Some(map) = labels.as_object_mut()
                && let Some(extra) = template.pointer("/metadata/labels").and_then(Value::as_object)
            {
                map.extend(extra.clone());
            }
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim_name(template, name, n), "namespace": text(set, "/metadata/namespace"), "labels": labels},
                "spec": template.get("spec").cloned().unwrap_or(json!({}))})
        })
        .collect()
}

/// The pod for ordinal `n`.
pub fn pod_for(set: &Value, n: usize) -> Value {
    let name = text(set, "/metadata/name");
    let pod_name = format!("{name}-{n}");
    let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    metadata["name"] = json!(pod_name);
    metadata["namespace"] = json!(text(set, "/metadata/namespace"));
    metadata["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    metadata["labels"]["apps.kubernetes.io/pod-index"] = json!(n.to_string());
    metadata["labels"]["controller-revision-hash"] = json!(revision(set));
    metadata["ownerReferences"] = json!([owner_reference(set, "apps/v1", "StatefulSet")]);
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(pod_name);
    if !text(set, "/spec/serviceName").is_empty() {
        spec["subdomain"] = json!(text(set, "/spec/serviceName"));
    }
    for claim in set.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten() {
        let volume = json!({"name": text(claim, "/metadata/name"), "persistentVolumeClaim": {"claimName": claim_name(claim, name, n)}});
        let volumes = spec.as_object_mut().map(|m| m.entry("volumes").or_insert(json!([])));
        if let Some(Value::Array(list)) = volumes
            && !list.iter().any(|v| v.get("name") == volume.get("name"))
        {
            list.push(volume);
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// One step for a stateful set.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the claims (if missing) and pod of this ordinal.
    Create(usize),
    /// Delete this pod (scale-down or an outdated revision).
    Delete(String),
    /// Nothing to do now.
    Wait,
}

/// The next step, given the pods the set controls (`pods` as JSON).
pub fn next_step(set: &Value, pods: &[&Value]) -> Step {
    let name = text(set, "/metadata/name");
    let replicas = set.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).max(0) as usize;
    let parallel = text(set, "/spec/podManagementPolicy") == "Parallel";
    let current = revision(set);
    let by_ordinal = |n: usize| pods.iter().copied().find(|p| ordinal(name, text(p, "/metadata/name")) == Some(n));
    // Scale down, highest ordinal first.
    let mut extra: Vec<(usize, &Value)> = pods
        .iter()
        .filter_map(|p| ordinal(name, text(p, "/metadata/name")).map(|n| (n, *p)))
        .filter(|(n, p)| *n >= replicas && is_active(p))
        .collect();
    extra.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    if let Some((_, pod)) = extra.first() {
        return Step::Delete(text(pod, "/metadata/name").to_string());
    }
    for n in 0..replicas {
        match by_ordinal(n) {
            None => return Step::Create(n),
            Some(pod) if !is_active(pod) => {
                if pod.pointer("/metadata/deletionTimestamp").is_none() {
                    return Step::Delete(text(pod, "/metadata/name").to_string());
                }
                return Step::Wait;
            }
            Some(pod) if !parallel && !is_ready(pod) => return Step::Wait,
            Some(_) => {}
        }
    }
    // Rolling update: replace outdated pods from the highest ordinal down, one at a time.
    let rolling = text(set, "/spec/updateStrategy/type") != "OnDelete";
    if rolling {
        let partition =
            set.pointer("/spec/updateStrategy/rollingUpdate/partition").and_then(Value::as_i64).unwrap_or(0).max(0)
                as usize;
        for n in (partition..replicas).rev() {
            if let Some(pod) = by_ordinal(n)
                && text(pod, "/metadata/labels/controller-revision-hash") != current
            {
                return Step::Delete(text(pod, "/metadata/name").to_string());
            }
        }
    }
    Step::Wait
}

/// The set's status from its pods.
pub fn status(set: &Value, pods: &[&Value]) -> Value {
    let current = revision(set);
    let active: Vec<&&Value> = pods.iter().filter(|p| is_active(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let updated = active.iter().filter(|p| text(p, "/metadata/labels/controller-revision-hash") == current).count();
    json!({
        "observedGeneration": set.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": active.len(), "readyReplicas": ready, "currentReplicas": updated, "updatedReplicas": updated,
        "availableReplicas": ready, "currentRevision": current, "updateRevision": current, "collisionCount": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(replicas: i64) -> Value {
        json!({"metadata": {"name": "web", "namespace": "d", "uid": "u", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}})
    }

    fn running(set: &Value, n: usize, ready: bool) -> Value {
        let mut pod = pod_for(set, n);
        pod["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]});
        pod
    }

    #[test]
    fn ordered_start_waits_for_readiness() {
        let s = set(2);
        assert_eq!(next_step(&s, &[]), Step::Create(0));
        let starting = running(&s, 0, false);
        assert_eq!(next_step(&s, &[&starting]), Step::Wait);
        let ready = running(&s, 0, true);
        assert_eq!(next_step(&s, &[&ready]), Step::Create(1));
    }

    #[test]
    fn pods_have_stable_identity_and_claims() {
        let s = set(1);
        let pod = pod_for(&s, 0);
        assert_eq!(pod["metadata"]["name"], "web-0");
        assert_eq!(pod["spec"]["hostname"], "web-0");
        assert_eq!(pod["spec"]["subdomain"], "web");
        assert_eq!(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-web-0");
        assert_eq!(claims_for(&s, 0)[0]["metadata"]["name"], "data-web-0");
    }

    #[test]
    fn scale_down_and_rolling_update() {
        let s = set(1);
        let (a, b) = (running(&s, 0, true), running(&s, 1, true));
        assert_eq!(next_step(&s, &[&a, &b]), Step::Delete("web-1".into()));
        let mut changed = s.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i2");
        assert_eq!(next_step(&changed, &[&a]), Step::Delete("web-0".into()));
        assert_eq!(status(&s, &[&a])["readyReplicas"], 1);
    }
}
