//! Resource usage of simulated pods and nodes (what metrics-server would report from real
//! kubelets): each container uses a stable share (40-80 %) of what it requests (1m CPU and 8Mi
//! memory when it requests nothing), a node what its running pods use plus 100m and 256Mi for the
//! system. Stable, so `kubectl top` shows the same numbers twice in a row.

use serde_json::{Value, json};

/// CPU in millicores from a quantity (`250m`, `0.5`, `2`).
pub fn millicores(quantity: &str) -> u64 {
    match quantity.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => quantity.parse::<f64>().map(|c| (c * 1000.0).round() as u64).unwrap_or(0),
    }
}

/// Memory in bytes from a quantity (`64Mi`, `1Gi`, `500M`, `1048576`).
pub fn bytes(quantity: &str) -> u64 {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<f64>().map(|n| (n * factor as f64) as u64).unwrap_or(0);
        }
    }
    quantity.parse::<f64>().map(|n| n as u64).unwrap_or(0)
}

/// A stable share between 0.4 and 0.8 for `seed`.
fn share(seed: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    0.4 + (hash % 1000) as f64 / 1000.0 * 0.4
}

fn field<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// (millicores, bytes) each container of a running pod uses.
fn container_usage(pod: &Value) -> Vec<(String, u64, u64)> {
    let uid = field(pod, "/metadata/uid");
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let name = field(c, "/name").to_string();
            let cpu = millicores(field(c, "/resources/requests/cpu")).max(1);
            let memory = bytes(field(c, "/resources/requests/memory")).max(8 << 20);
            let share = share(&format!("{uid}/{name}"));
            (name, ((cpu as f64 * share).round() as u64).max(1), (memory as f64 * share) as u64)
        })
        .collect()
}

fn running(pod: &Value) -> bool {
    field(pod, "/status/phase") == "Running"
}

/// The `PodMetrics` of a running pod (None for any other).
pub fn pod_metrics(pod: &Value, now: &str) -> Option<Value> {
    if !running(pod) {
        return None;
    }
    let containers: Vec<Value> = container_usage(pod)
        .into_iter()
        .map(|(name, cpu, memory)| json!({"name": name, "usage": {"cpu": format!("{cpu}m"), "memory": format!("{}Ki", memory / 1024)}}))
        .collect();
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {
            "name": field(pod, "/metadata/name"),
            "namespace": field(pod, "/metadata/namespace"),
            "labels": pod.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
            "creationTimestamp": now,
        },
        "timestamp": now,
        "window": "30s",
        "containers": containers,
    }))
}

/// The `NodeMetrics` of node `name`, given every pod.
pub fn node_metrics(name: &str, labels: &Value, pods: &[Value], now: &str) -> Value {
    let (mut cpu, mut memory) = (100u64, 256u64 << 20);
    for pod in pods.iter().filter(|p| running(p) && field(p, "/spec/nodeName") == name) {
        for (_, c, m) in container_usage(pod) {
            cpu += c;
            memory += m;
        }
    }
    json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "labels": labels, "creationTimestamp": now},
        "timestamp": now,
        "window": "30s",
        "usage": {"cpu": format!("{cpu}m"), "memory": format!("{}Ki", memory / 1024)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!((millicores("250m"), millicores("0.5"), millicores("2")), (250, 500, 2000));
        assert_eq!((bytes("64Mi"), bytes("1Gi"), bytes("500M"), bytes("1024")), (64 << 20, 1 << 30, 500_000_000, 1024));
    }

    #[test]
    fn usage_is_a_stable_share_of_requests() {
        let pod = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}, "status": {"phase": "Running"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}}]}});
        let metrics = pod_metrics(&pod, "2026-01-01T00:00:00Z").unwrap();
        let cpu = millicores(metrics["containers"][0]["usage"]["cpu"].as_str().unwrap());
        assert!((200..=400).contains(&cpu), "{cpu}");
        assert_eq!(metrics, pod_metrics(&pod, "2026-01-01T00:00:00Z").unwrap(), "stable");
        let node = node_metrics("n1", &json!({}), std::slice::from_ref(&pod), "t");
        assert_eq!(millicores(node["usage"]["cpu"].as_str().unwrap()), 100 + cpu, "the system's share plus the pod's");
        let pending = json!({"status": {"phase": "Pending"}});
        assert!(pod_metrics(&pending, "t").is_none());
    }
}
