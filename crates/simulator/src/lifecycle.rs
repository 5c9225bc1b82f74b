//! The simulator's decisions as pure functions on observed objects: where a pod goes, what a
//! running or finished pod's status looks like, what endpoints a service has.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A simulated node as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints (`{key, value, effect}`).
    pub taints: Vec<Value>,
    /// Pods already bound to it.
    pub pods: usize,
    /// Pod capacity.
    pub capacity: usize,
    /// Ready and schedulable.
    pub schedulable: bool,
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Whether `toleration` tolerates `taint`.
fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = str_of(toleration, "/effect");
    if !effect.is_empty() && effect != str_of(taint, "/effect") {
        return false;
    }
    let key = str_of(toleration, "/key");
    match str_of(toleration, "/operator") {
        "Exists" => key.is_empty() || key == str_of(taint, "/key"),
        _ => key == str_of(taint, "/key") && str_of(toleration, "/value") == str_of(taint, "/value"),
    }
}

fn expression_matches(expression: &Value, labels: &BTreeMap<String, String>) -> bool {
    let key = str_of(expression, "/key");
    let values: Vec<&str> =
        expression.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let actual = labels.get(key).map(String::as_str);
    match str_of(expression, "/operator") {
        "In" => actual.is_some_and(|a| values.contains(&a)),
        "NotIn" => actual.is_none_or(|a| !values.contains(&a)),
        "Exists" => actual.is_some(),
        "DoesNotExist" => actual.is_none(),
        "Gt" | "Lt" => {
            let (Some(a), Some(v)) =
                (actual.and_then(|a| a.parse::<i64>().ok()), values.first().and_then(|v| v.parse::<i64>().ok()))
            else {
                return false;
            };
            if str_of(expression, "/operator") == "Gt" { a > v } else { a < v }
        }
        _ => false,
    }
}

/// Whether `pod` may run on `node`: node selector, required node affinity, taints, capacity.
pub fn fits(pod: &Value, node: &NodeView) -> bool {
    if !node.schedulable || node.pods >= node.capacity {
        return false;
    }
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && !selector.iter().all(|(k, v)| node.labels.get(k).map(String::as_str) == v.as_str())
    {
        return false;
    }
    if let Some(terms) = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let any_term = terms.iter().any(|term| {
            term.get("matchExpressions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .all(|e| expression_matches(e, &node.labels))
                && term.get("matchFields").and_then(Value::as_array).into_iter().flatten().all(|f| {
                    str_of(f, "/key") != "metadata.name"
                        || expression_matches(
                            &json!({"key": "name", "operator": f["operator"], "values": f["values"]}),
                            &[("name".to_string(), node.name.clone())].into(),
                        )
                })
        });
        if !any_term {
            return false;
        }
    }
    let tolerations: Vec<&Value> =
        pod.pointer("/spec/tolerations").and_then(Value::as_array).into_iter().flatten().collect();
    node.taints
        .iter()
        .filter(|t| matches!(str_of(t, "/effect"), "NoSchedule" | "NoExecute"))
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// The node for `pod`: among those it fits, the one with the fewest pods (ties by name).
pub fn schedule<'a>(pod: &Value, nodes: &'a [NodeView]) -> Option<&'a NodeView> {
    nodes.iter().filter(|n| fits(pod, n)).min_by(|a, b| a.pods.cmp(&b.pods).then_with(|| a.name.cmp(&b.name)))
}

fn condition(kind: &str, status: &str, now: &str) -> Value {
    json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now})
}

fn container_statuses(pod: &Value, field: &str, state: &Value, ready: bool, started: bool) -> Vec<Value> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let name = str_of(c, "/name");
            let image = str_of(c, "/image");
            json!({
                "name": name,
                "image": image,
                "imageID": format!("sim://{image}"),
                "containerID": format!("sim://{}-{name}", str_of(pod, "/metadata/uid")),
                "ready": ready,
                "started": started,
                "restartCount": 0,
                "state": state,
                "lastState": {},
            })
        })
        .collect()
}

/// The status of a pod the simulated kubelet has started on `node_ip` with `pod_ip`.
pub fn running_status(pod: &Value, node_ip: &str, pod_ip: &str, now: &str) -> Value {
    let running = json!({"running": {"startedAt": now}});
    let init_done = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}});
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers", "True", now),
            condition("Initialized", "True", now),
            condition("Ready", "True", now),
            condition("ContainersReady", "True", now),
            condition("PodScheduled", "True", now),
        ],
        "hostIP": node_ip,
        "hostIPs": [{"ip": node_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "containerStatuses": container_statuses(pod, "containers", &running, true, true),
        "qosClass": pod.pointer("/status/qosClass").cloned().unwrap_or(json!("BestEffort")),
    });
    let init = container_statuses(pod, "initContainers", &init_done, true, false);
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    status
}

/// The ephemeral container statuses of a running pod when some container has none yet (every
/// one running; those already started keep their status).
pub fn ephemeral_statuses(pod: &Value, now: &str) -> Option<Value> {
    let running = json!({"running": {"startedAt": now}});
    let existing: Vec<Value> =
        pod.pointer("/status/ephemeralContainerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let wanted = container_statuses(pod, "ephemeralContainers", &running, false, true);
    if wanted.iter().all(|w| existing.iter().any(|e| e.get("name") == w.get("name"))) {
        return None;
    }
    let merged: Vec<Value> = wanted
        .into_iter()
        .map(|w| existing.iter().find(|e| e.get("name") == w.get("name")).cloned().unwrap_or(w))
        .collect();
    Some(json!(merged))
}

/// A container's command and arguments, as one argument list.
fn command_line(container: &Value) -> Vec<String> {
    ["command", "args"]
        .iter()
        .flat_map(|key| container.get(*key).and_then(Value::as_array).into_iter().flatten())
        .filter_map(|w| w.as_str().map(String::from))
        .collect()
}

/// How long one container runs: its script's run time when the script is simple enough to
/// simulate ([`crate::script`]), else the longest `sleep N` its command names.
fn container_run_time(container: &Value) -> Option<Option<std::time::Duration>> {
    let words = command_line(container);
    if let Some(script) = crate::script::run(&words) {
        return Some(script.ends);
    }
    let text = words.join(" ");
    let words: Vec<&str> = text.split(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|').collect();
    let mut longest: Option<Option<std::time::Duration>> = None;
    for pair in words.windows(2).filter(|w| w[0] == "sleep") {
        let run = match pair[1] {
            "infinity" | "inf" => None,
            n => match n.trim_end_matches('s').parse::<f64>() {
                Ok(seconds) => Some(std::time::Duration::from_secs_f64(seconds.max(0.0))),
                Err(_) => continue,
            },
        };
        longest = Some(longer(longest, run));
    }
    longest
}

fn longer(a: Option<Option<std::time::Duration>>, b: Option<std::time::Duration>) -> Option<std::time::Duration> {
    match (a, b) {
        (Some(None), _) | (_, None) => None,
        (Some(Some(a)), Some(b)) => Some(a.max(b)),
        (None, Some(b)) => Some(b),
    }
}

/// How long a pod's containers run, read from what they run (the longest of them).
/// `Some(None)`: one never ends (`sleep infinity`, `while true`); `None`: nothing to go by.
pub fn command_run_time(pod: &Value) -> Option<Option<std::time::Duration>> {
    let mut longest: Option<Option<std::time::Duration>> = None;
    for container in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        if let Some(run) = container_run_time(container) {
            longest = Some(longer(longest, run));
        }
    }
    longest
}

/// The exit code a pod's simulated scripts end with (the first that fails), if any is simulated.
pub fn command_exit_code(pod: &Value) -> Option<i64> {
    let codes: Vec<i64> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| crate::script::run(&command_line(c)))
        .map(|s| s.exit_code)
        .collect();
    codes.iter().copied().find(|c| *c != 0).or(codes.first().copied())
}

/// The status of a pod whose containers all exited with `exit_code`.
pub fn finished_status(pod: &Value, exit_code: i64, now: &str) -> Value {
    let mut status = pod.get("status").cloned().unwrap_or(json!({}));
    let succeeded = exit_code == 0;
    let reason = if succeeded { "Completed" } else { "Error" };
    let started = pod.pointer("/status/startTime").cloned().unwrap_or(json!(now));
    let terminated =
        json!({"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": now}});
    status["phase"] = json!(if succeeded { "Succeeded" } else { "Failed" });
    status["containerStatuses"] = json!(container_statuses(pod, "containers", &terminated, false, false));
    status["conditions"] = json!([
        condition("PodReadyToStartContainers", "False", now),
        condition("Initialized", "True", now),
        {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastProbeTime": null, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastProbeTime": null, "lastTransitionTime": now},
        condition("PodScheduled", "True", now),
    ]);
    status
}

/// The status of a pod no node can take.
pub fn unschedulable_status(pod: &Value, nodes: usize, now: &str) -> Value {
    let mut status = pod.get("status").cloned().unwrap_or(json!({"phase": "Pending"}));
    status["phase"] = json!("Pending");
    status["conditions"] = json!([{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastProbeTime": null, "lastTransitionTime": now,
        "message": format!("0/{nodes} nodes are available: no node matches the pod's node selector, affinity, tolerations or capacity."),
    }]);
    status
}

/// Whether a pod is ready (for endpoints).
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| str_of(c, "/type") == "Ready" && str_of(c, "/status") == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, pods: usize, labels: &[(&str, &str)], taints: Vec<Value>) -> NodeView {
        NodeView {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            taints,
            pods,
            capacity: 110,
            schedulable: true,
        }
    }

    #[test]
    fn sleeping_commands_set_how_long_a_pod_runs() {
        let pod = |command: Value| json!({"spec": {"containers": [{"name": "c", "command": command}]}});
        let secs = std::time::Duration::from_secs;
        assert_eq!(command_run_time(&pod(json!(["sh", "-c", "sleep 30"]))), Some(Some(secs(30))));
        assert_eq!(command_run_time(&pod(json!(["sh", "-c", "echo a; sleep 2; sleep 5s"]))), Some(Some(secs(7))));
        let looped = pod(json!(["sh", "-c", "for i in $(seq 1 5); do echo $i; sleep 0.5; done; exit 2"]));
        assert_eq!(command_run_time(&looped), Some(Some(std::time::Duration::from_millis(2500))));
        assert_eq!(command_exit_code(&looped), Some(2));
        assert_eq!(command_run_time(&pod(json!(["sh", "-c", "run-server --port 80; sleep 3"]))), Some(Some(secs(3))));
        assert_eq!(command_run_time(&pod(json!(["sleep", "infinity"]))), Some(None));
        assert_eq!(command_run_time(&pod(json!(["nginx"]))), None);
    }

    #[test]
    fn scheduling_honours_selectors_taints_and_load() {
        let nodes = vec![
            node("a", 5, &[("zone", "1")], vec![]),
            node("b", 1, &[("zone", "2")], vec![]),
            node("c", 0, &[("zone", "2")], vec![json!({"key": "gpu", "value": "yes", "effect": "NoSchedule"})]),
        ];
        let plain = json!({"spec": {}});
        assert_eq!(schedule(&plain, &nodes).unwrap().name, "b", "least loaded untainted node");
        let zone1 = json!({"spec": {"nodeSelector": {"zone": "1"}}});
        assert_eq!(schedule(&zone1, &nodes).unwrap().name, "a");
        let tolerant = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}});
        assert_eq!(schedule(&tolerant, &nodes).unwrap().name, "c");
        let affinity = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["2"]}]}]}}}}});
        assert_eq!(schedule(&affinity, &nodes).unwrap().name, "a");
        let impossible = json!({"spec": {"nodeSelector": {"zone": "9"}}});
        assert!(schedule(&impossible, &nodes).is_none());
    }

    #[test]
    fn running_status_is_schema_complete() {
        let pod = json!({"metadata": {"uid": "u1"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let status = running_status(&pod, "10.0.0.1", "10.244.0.5", "2026-01-01T00:00:00Z");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.244.0.5");
        let c = &status["containerStatuses"][0];
        for field in ["name", "image", "imageID", "containerID", "ready", "restartCount", "state"] {
            assert!(c.get(field).is_some(), "{field}");
        }
        assert!(is_ready(&json!({"status": status})));
        let done = finished_status(
            &json!({"metadata": {"uid": "u1"}, "spec": pod["spec"], "status": status}),
            0,
            "2026-01-01T00:00:05Z",
        );
        assert_eq!(done["phase"], "Succeeded");
        assert_eq!(done["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    }
}
