//! The disruption controller's decisions (kube-controller-manager's `disruption` controller):
//! a PodDisruptionBudget's status from the pods its selector matches: how many are healthy, how
//! many must stay healthy, and so how many may be disrupted (evicted) now.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// How long an eviction the budget allowed may take before the pod counts as healthy again.
const DISRUPTION_TIMEOUT_SECONDS: i64 = 120;

/// Whether the budget's selector matches `pod` (an empty selector matches every pod of the
/// namespace; a budget without one matches none).
pub fn selects(pdb: &Value, pod: &Value) -> bool {
    let Some(selector) = pdb.pointer("/spec/selector").filter(|s| s.is_object()) else { return false };
    crate::aggregation::selects(selector, &crate::workloads::labels_of(pod))
}

/// Whether a pod is Ready.
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// `value` of an int-or-percent against `total`, percentages rounded up.
fn scaled(value: &Value, total: i64) -> Result<i64, String> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("invalid value {value}")),
        Value::String(s) => match s.strip_suffix('%') {
            Some(percent) => {
                let p: i64 =
                    percent.parse().map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}"))?;
                Ok((p * total + 99) / 100)
            }
            None => s.parse().map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}")),
        },
        _ => Err(format!("invalid value {value}")),
    }
}

/// The new status of `pdb` over the pods it matches (`pods`, its namespace's, as JSON).
/// `scale_of(pod)` is the pod's controller (uid, desired replicas), needed when the budget
/// says `maxUnavailable` or a percentage; `Err` is why the count failed (upstream then allows
/// no disruption). `now` is Unix seconds.
pub fn status(pdb: &Value, pods: &[&Value], scale_of: &dyn Fn(&Value) -> Option<(String, i64)>, now: i64) -> Value {
    let generation = pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1));
    let matching: Vec<&Value> = pods.iter().copied().filter(|p| selects(pdb, p)).collect();
    let current_disrupted =
        pdb.pointer("/status/disruptedPods").and_then(Value::as_object).cloned().unwrap_or_default();
    // Evictions still in flight: the pod exists, is not being deleted yet, and was allowed
    // less than two minutes ago.
    let mut disrupted = serde_json::Map::new();
    for (name, at) in &current_disrupted {
        let pod = matching.iter().find(|p| p.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
        let Some(pod) = pod else { continue };
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let recent = at
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t.as_second() + DISRUPTION_TIMEOUT_SECONDS > now);
        if recent {
            disrupted.insert(name.clone(), at.clone());
        }
    }
    let healthy = matching
        .iter()
        .filter(|p| {
            let name = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            p.pointer("/metadata/deletionTimestamp").is_none() && !disrupted.contains_key(name) && is_ready(p)
        })
        .count() as i64;
    let counted = (|| -> Result<(i64, i64), String> {
        let spec = &pdb["spec"];
        if let Some(min) = spec.get("minAvailable").filter(|v| v.is_number())
            && spec.get("maxUnavailable").is_none()
        {
            return Ok((matching.len() as i64, min.as_i64().unwrap_or(0)));
        }
        // Percentages and maxUnavailable count against what the pods' controllers want.
        let mut controllers = BTreeMap::new();
        for pod in &matching {
            let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let (uid, replicas) = scale_of(pod).ok_or_else(|| format!("found no controllers for pod {name:?}"))?;
            controllers.insert(uid, replicas);
        }
        let expected: i64 = controllers.values().sum();
        if let Some(max) = spec.get("maxUnavailable") {
            let max = scaled(max, expected)?;
            return Ok((expected, (expected - max).max(0)));
        }
        let min = spec.get("minAvailable").cloned().unwrap_or(json!(0));
        Ok((expected, scaled(&min, expected)?))
    })();
    let previous = pdb.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let condition = |allowed: bool, reason: &str, message: &str| {
        let status = if allowed { "True" } else { "False" };
        let kept = previous.iter().find(|c| {
            c.get("type").and_then(Value::as_str) == Some("DisruptionAllowed")
                && c.get("status").and_then(Value::as_str) == Some(status)
        });
        let since = kept.and_then(|c| c.get("lastTransitionTime").cloned()).unwrap_or_else(|| {
            json!(jiff::Timestamp::from_second(now).unwrap_or_default().strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        });
        json!([{"type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
                "observedGeneration": generation, "lastTransitionTime": since}])
    };
    let mut out = json!({"observedGeneration": generation, "currentHealthy": healthy});
    match counted {
        Ok((expected, desired)) => {
            let allowed = if expected <= 0 { 0 } else { (healthy - desired).max(0) };
            out["desiredHealthy"] = json!(desired);
            out["expectedPods"] = json!(expected);
            out["disruptionsAllowed"] = json!(allowed);
            out["conditions"] = if allowed > 0 {
                condition(true, "SufficientPods", "")
            } else {
                condition(false, "InsufficientPods", "")
            };
        }
        Err(reason) => {
            out["desiredHealthy"] = json!(0);
            out["expectedPods"] = json!(0);
            out["disruptionsAllowed"] = json!(0);
            out["conditions"] = condition(false, "SyncFailed", &reason);
        }
    }
    if !disrupted.is_empty() {
        out["disruptedPods"] = Value::Object(disrupted);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, owner: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": "web"},
                "ownerReferences": [{"uid": owner, "controller": true, "kind": "ReplicaSet", "name": owner}]},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(spec: Value) -> Value {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "b", "generation": 2}, "spec": spec})
    }

    #[test]
    fn min_available_counts_ready_pods() {
        let pods = [pod("a", true, "rs"), pod("b", true, "rs"), pod("c", false, "rs")];
        let refs: Vec<&Value> = pods.iter().collect();
        let s = status(&pdb(json!({"minAvailable": 1})), &refs, &|_| None, 0);
        assert_eq!(
            (s["currentHealthy"].clone(), s["desiredHealthy"].clone(), s["expectedPods"].clone()),
            (json!(2), json!(1), json!(3))
        );
        assert_eq!(s["disruptionsAllowed"], 1);
        assert_eq!(s["observedGeneration"], 2);
        assert_eq!(s["conditions"][0]["reason"], "SufficientPods");
    }

    #[test]
    fn percentages_and_max_unavailable_count_against_the_controllers_scale() {
        let pods = [pod("a", true, "rs"), pod("b", true, "rs")];
        let refs: Vec<&Value> = pods.iter().collect();
        let scale = |_: &Value| Some(("rs".to_string(), 4));
        let s = status(&pdb(json!({"maxUnavailable": "50%"})), &refs, &scale, 0);
        assert_eq!(
            (s["expectedPods"].clone(), s["desiredHealthy"].clone(), s["disruptionsAllowed"].clone()),
            (json!(4), json!(2), json!(0))
        );
        let s = status(&pdb(json!({"minAvailable": "1%"})), &refs, &scale, 0);
        assert_eq!((s["desiredHealthy"].clone(), s["disruptionsAllowed"].clone()), (json!(1), json!(1)));
        let s = status(&pdb(json!({"maxUnavailable": 1})), &refs, &|_| None, 0);
        assert_eq!(s["conditions"][0]["reason"], "SyncFailed");
        assert_eq!(s["disruptionsAllowed"], 0);
    }

    #[test]
    fn recent_evictions_do_not_count_as_healthy() {
        let pods = [pod("a", true, "rs"), pod("b", true, "rs")];
        let refs: Vec<&Value> = pods.iter().collect();
        let mut budget = pdb(json!({"minAvailable": 1}));
        budget["status"] = json!({"disruptedPods": {"a": "2026-01-01T00:00:00Z", "gone": "2026-01-01T00:00:00Z"}});
        let at = "2026-01-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second();
        let s = status(&budget, &refs, &|_| None, at + 10);
        assert_eq!(s["currentHealthy"], 1);
        assert_eq!(s["disruptedPods"], json!({"a": "2026-01-01T00:00:00Z"}));
        let s = status(&budget, &refs, &|_| None, at + 200);
        assert_eq!(s["currentHealthy"], 2);
        assert!(s.get("disruptedPods").is_none());
    }
}
