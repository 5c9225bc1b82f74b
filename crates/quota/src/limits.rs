//! LimitRange, as kube-apiserver's LimitRanger admission applies it: a pod's containers get the
//! default requests and limits of the namespace's `Container` limits (and an annotation saying
//! which), then pods and claims are checked against min, max and maxLimitRequestRatio, with
//! upstream's messages.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::{Quantity, ResourceList, resource_list};

/// The annotation listing what the defaults set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|r| r.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten())
        .filter(move |item| item.get("type").and_then(Value::as_str) == Some(kind))
}

/// Sets the `Container` defaults of `ranges` on every container of `pod` that lacks them.
pub fn apply_defaults(pod: &mut Value, ranges: &[Value]) {
    let mut notes = Vec::new();
    for item in items(ranges, "Container") {
        let limits = resource_list(item.get("default"));
        let requests = resource_list(item.get("defaultRequest"));
        if limits.is_empty() && requests.is_empty() {
            continue;
        }
        for (list, prefix) in [("containers", "container"), ("initContainers", "init container")] {
            let Some(containers) = pod.pointer_mut(&format!("/spec/{list}")).and_then(Value::as_array_mut) else {
                continue;
            };
            for container in containers {
                let name = container["name"].as_str().unwrap_or_default().to_string();
                let resources = ensure_object(container, "resources");
                let set_limits = merge(resources, "limits", &limits);
                let set_requests = merge(resources, "requests", &requests);
                if !set_requests.is_empty() {
                    notes.push(format!("{} request for {prefix} {name}", set_requests.join(", ")));
                }
                if !set_limits.is_empty() {
                    notes.push(format!("{} limit for {prefix} {name}", set_limits.join(", ")));
                }
            }
        }
    }
    if !notes.is_empty() {
        let annotations = ensure_object(ensure_object_value(pod, "metadata"), "annotations");
        annotations.insert(ANNOTATION.into(), json!(format!("LimitRanger plugin set: {}", notes.join("; "))));
    }
}

fn ensure_object_value<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    if !value[key].is_object() {
        value[key] = json!({});
    }
    &mut value[key]
}

fn ensure_object<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    ensure_object_value(value, key).as_object_mut().expect("made an object")
}

/// Adds the entries of `defaults` missing from `resources[field]`; returns their names, sorted.
fn merge(resources: &mut Map<String, Value>, field: &str, defaults: &ResourceList) -> Vec<String> {
    if defaults.is_empty() {
        return Vec::new();
    }
    let have = resources.entry(field).or_insert_with(|| json!({}));
    if !have.is_object() {
        *have = json!({});
    }
    let map = have.as_object_mut().expect("made an object");
    let mut set = Vec::new();
    for (name, q) in defaults {
        if !map.contains_key(name) {
            map.insert(name.clone(), json!(q.to_string()));
            set.push(name.clone());
        }
    }
    if map.is_empty() {
        resources.remove(field);
    }
    set
}

fn min_constraint(
    kind: &str,
    name: &str,
    min: Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(request) = requests.get(name) else {
        return Some(format!("minimum {name} usage per {kind} is {min}.  No request is specified"));
    };
    if *request < min {
        return Some(format!("minimum {name} usage per {kind} is {min}, but request is {request}"));
    }
    match limits.get(name) {
        Some(limit) if *limit < min => Some(format!("minimum {name} usage per {kind} is {min}, but limit is {limit}")),
        _ => None,
    }
}

fn max_constraint(
    kind: &str,
    name: &str,
    max: Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(limit) = limits.get(name) else {
        return Some(format!("maximum {name} usage per {kind} is {max}.  No limit is specified"));
    };
    if *limit > max {
        return Some(format!("maximum {name} usage per {kind} is {max}, but limit is {limit}"));
    }
    match requests.get(name) {
        Some(request) if *request > max => {
            Some(format!("maximum {name} usage per {kind} is {max}, but request is {request}"))
        }
        _ => None,
    }
}

fn ratio_constraint(
    kind: &str,
    name: &str,
    ratio: Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let request = requests.get(name).filter(|q| !q.is_zero());
    let Some(request) = request else {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
        ));
    };
    let limit = limits.get(name).filter(|q| !q.is_zero());
    let Some(limit) = limit else {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
        ));
    };
    let observed = limit.as_f64() / request.as_f64();
    (observed > ratio.as_f64()).then(|| {
        format!("{name} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}")
    })
}

fn check(kind: &str, item: &Value, requests: &ResourceList, limits: &ResourceList, out: &mut Vec<String>) {
    for (name, min) in resource_list(item.get("min")) {
        out.extend(min_constraint(kind, &name, min, requests, limits));
    }
    for (name, max) in resource_list(item.get("max")) {
        out.extend(max_constraint(kind, &name, max, requests, limits));
    }
    for (name, ratio) in resource_list(item.get("maxLimitRequestRatio")) {
        out.extend(ratio_constraint(kind, &name, ratio, requests, limits));
    }
}

/// What `object` (a pod or a claim, by `plural`) violates of `ranges`, in upstream's words.
pub fn violations(plural: &str, object: &Value, ranges: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    match plural {
        "pods" => {
            let spec = &object["spec"];
            let containers: Vec<&Value> = spec["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(spec["containers"].as_array().into_iter().flatten())
                .collect();
            for item in items(ranges, "Container") {
                for container in &containers {
                    let requests = resource_list(container.pointer("/resources/requests"));
                    let limits = resource_list(container.pointer("/resources/limits"));
                    check("Container", item, &requests, &limits, &mut out);
                }
            }
            for item in items(ranges, "Pod") {
                let requests = crate::pod_resources(object, "requests");
                let limits = crate::pod_resources(object, "limits");
                check("Pod", item, &requests, &limits, &mut out);
            }
        }
        "persistentvolumeclaims" => {
            let requests = resource_list(object.pointer("/spec/resources/requests"));
            for item in items(ranges, "PersistentVolumeClaim") {
                for (name, min) in resource_list(item.get("min")) {
                    out.extend(min_constraint("PersistentVolumeClaim", &name, min, &requests, &ResourceList::new()));
                }
                for (name, max) in resource_list(item.get("max")) {
                    out.extend(max_constraint("PersistentVolumeClaim", &name, max, &ResourceList::new(), &requests));
                }
            }
        }
        _ => {}
    }
    let mut seen = BTreeSet::new();
    out.retain(|m| seen.insert(m.clone()));
    out
}

/// The message of a refusal: one violation as it is, several as upstream aggregates them.
pub fn message(violations: &[String]) -> String {
    if violations.len() == 1 { violations[0].clone() } else { format!("[{}]", violations.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Value {
        json!({"spec": {"limits": [{"type": "Container",
            "min": {"cpu": "50m", "memory": "100Mi"}, "max": {"cpu": "500m", "memory": "500Mi"},
            "default": {"cpu": "500m", "memory": "500Mi"}, "defaultRequest": {"cpu": "100m", "memory": "200Mi"}}]}})
    }

    #[test]
    fn defaults_fill_what_containers_leave_out_and_say_so() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"memory": "150Mi", "cpu": "300m"}, "limits": {"cpu": "300m"}}},
        ]}});
        apply_defaults(&mut pod, &[range()]);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "100m", "memory": "200Mi"}, "limits": {"cpu": "500m", "memory": "500Mi"}})
        );
        assert_eq!(
            pod["spec"]["containers"][1]["resources"],
            json!({"requests": {"cpu": "300m", "memory": "150Mi"}, "limits": {"cpu": "300m", "memory": "500Mi"}})
        );
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; memory limit for container b"
        );
    }

    #[test]
    fn min_and_max_are_enforced_with_upstreams_words() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "10m", "memory": "50Mi"}}}]}});
        apply_defaults(&mut pod, &[range()]);
        assert_eq!(
            message(&violations("pods", &pod, &[range()])),
            "[minimum cpu usage per Container is 50m, but request is 10m, minimum memory usage per Container is 100Mi, but request is 50Mi]"
        );
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "600m", "memory": "200Mi"}}}]}});
        let found = violations("pods", &pod, &[range()]);
        assert!(found.contains(&"maximum cpu usage per Container is 500m, but limit is 600m".to_string()), "{found:?}");
        assert!(
            found.contains(&"minimum memory usage per Container is 100Mi.  No request is specified".to_string()),
            "{found:?}"
        );
    }

    #[test]
    fn limit_to_request_ratio() {
        let range = json!({"spec": {"limits": [{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]}});
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "300m"}}}]}});
        assert_eq!(
            violations("pods", &pod, &[range]),
            vec!["cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000"]
        );
    }
}
