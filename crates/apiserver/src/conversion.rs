//! Conversions between versions of one built-in kind that share storage: HorizontalPodAutoscaler
//! is stored as `autoscaling/v2` and served as `v1` too. What v1 cannot say (metrics other than
//! CPU utilization, behavior, conditions, current metrics) travels in the annotations upstream
//! uses for it, so a v1 read-modify-write keeps it.

use serde_json::{Map, Value, json};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource"
        && metric.pointer("/resource/name") == Some(&json!("cpu"))
        && metric.pointer("/resource/target/type") == Some(&json!("Utilization"))
}

fn annotations(object: &mut Value) -> &mut Map<String, Value> {
    let meta = crate::strategy::ensure_object(object, "metadata");
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations.as_object_mut().expect("made an object")
}

/// A stored (v2) HorizontalPodAutoscaler as `autoscaling/v1` shows it.
pub fn hpa_v2_to_v1(v2: &Value) -> Value {
    let mut v1 = v2.clone();
    let spec = v2.get("spec").cloned().unwrap_or(json!({}));
    let metrics: Vec<Value> = spec["metrics"].as_array().cloned().unwrap_or_default();
    let mut out_spec = json!({});
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(key) {
            out_spec[key] = v.clone();
        }
    }
    if let Some(cpu) = metrics.iter().find(|m| is_cpu_utilization(m)) {
        out_spec["targetCPUUtilizationPercentage"] =
            cpu.pointer("/resource/target/averageUtilization").cloned().unwrap_or(Value::Null);
    }
    let others: Vec<Value> = metrics.iter().filter(|m| !is_cpu_utilization(m)).cloned().collect();
    v1["spec"] = out_spec;
    if !others.is_empty() {
        annotations(&mut v1).insert(METRICS.into(), json!(serde_json::to_string(&others).unwrap_or_default()));
    }
    if let Some(behavior) = spec.get("behavior").filter(|b| !b.is_null()) {
        annotations(&mut v1).insert(BEHAVIOR.into(), json!(behavior.to_string()));
    }
    if let Some(status) = v2.get("status").filter(|s| s.is_object()) {
        let mut out = json!({});
        for key in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            if let Some(v) = status.get(key) {
                out[key] = v.clone();
            }
        }
        let current: Vec<Value> = status["currentMetrics"].as_array().cloned().unwrap_or_default();
        let cpu =
            current.iter().find(|m| m["type"] == "Resource" && m.pointer("/resource/name") == Some(&json!("cpu")));
        if let Some(u) = cpu.and_then(|c| c.pointer("/resource/current/averageUtilization")) {
            out["currentCPUUtilizationPercentage"] = u.clone();
        }
        if !current.is_empty() {
            annotations(&mut v1)
                .insert(CURRENT_METRICS.into(), json!(serde_json::to_string(&current).unwrap_or_default()));
        }
        if let Some(conditions) = status.get("conditions").filter(|c| c.as_array().is_some_and(|c| !c.is_empty())) {
            annotations(&mut v1).insert(CONDITIONS.into(), json!(conditions.to_string()));
        }
        v1["status"] = out;
    }
    v1
}

/// An `autoscaling/v1` HorizontalPodAutoscaler as it is stored (v2).
pub fn hpa_v1_to_v2(v1: &Value) -> Value {
    let mut v2 = v1.clone();
    let mut taken = |key: &str| -> Option<Value> {
        let value = annotations(&mut v2).remove(key)?;
        serde_json::from_str(value.as_str()?).ok()
    };
    let others = taken(METRICS);
    let behavior = taken(BEHAVIOR);
    let current = taken(CURRENT_METRICS);
    let conditions = taken(CONDITIONS);
    if v2.pointer("/metadata/annotations").and_then(Value::as_object).is_some_and(Map::is_empty) {
        v2["metadata"].as_object_mut().map(|m| m.remove("annotations"));
    }
    let spec = v1.get("spec").cloned().unwrap_or(json!({}));
    let mut out_spec = json!({});
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(key) {
            out_spec[key] = v.clone();
        }
    }
    let mut metrics = Vec::new();
    if let Some(cpu) = spec.get("targetCPUUtilizationPercentage").filter(|v| !v.is_null()) {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}));
    }
    metrics.extend(others.and_then(|o| o.as_array().cloned()).unwrap_or_default());
    if !metrics.is_empty() {
        out_spec["metrics"] = json!(metrics);
    }
    if let Some(behavior) = behavior {
        out_spec["behavior"] = behavior;
    }
    v2["spec"] = out_spec;
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut out = json!({});
        for key in ["observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"] {
            if let Some(v) = status.get(key) {
                out[key] = v.clone();
            }
        }
        let mut current_metrics = current.and_then(|c| c.as_array().cloned()).unwrap_or_default();
        if current_metrics.is_empty()
            && let Some(u) = status.get("currentCPUUtilizationPercentage").filter(|v| !v.is_null())
        {
            current_metrics
                .push(json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": u}}}));
        }
        if !current_metrics.is_empty() {
            out["currentMetrics"] = json!(current_metrics);
        }
        if let Some(conditions) = conditions {
            out["conditions"] = conditions;
        }
        v2["status"] = out;
    }
    v2
}

/// autoscaling/v2 defaults: one replica at least, and CPU at 80 % when no metric is given.
pub fn default_hpa_v2(object: &mut Value) {
    let spec = crate::strategy::ensure_object(object, "spec");
    spec.entry("minReplicas").or_insert(json!(1));
    let metrics = spec.entry("metrics").or_insert_with(|| json!([]));
    if metrics.as_array().is_none_or(Vec::is_empty) {
        *metrics = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_utilization_round_trips_and_other_metrics_ride_in_annotations() {
        let v2 = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]}});
        let v1 = hpa_v2_to_v1(&v2);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(v1["spec"].get("metrics").is_none());
        assert!(v1["metadata"]["annotations"][METRICS].as_str().unwrap().contains("memory"));
        assert_eq!(hpa_v1_to_v2(&v1), v2, "v1 and back loses nothing");
    }

    #[test]
    fn v2_defaults_cpu_at_80_percent() {
        let mut hpa = json!({"spec": {"maxReplicas": 3}});
        default_hpa_v2(&mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
    }
}
