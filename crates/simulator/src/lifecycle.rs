//! The simulator's decisions as pure functions on observed objects: what a running or finished
//! pod's status looks like, what endpoints a service has (where a pod goes: [`crate::scheduler`]).

use serde_json::{Value, json};

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
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
pub fn unschedulable_status(pod: &Value, message: &str, now: &str) -> Value {
    let mut status = pod.get("status").cloned().unwrap_or(json!({"phase": "Pending"}));
    status["phase"] = json!("Pending");
    status["conditions"] = json!([{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastProbeTime": null, "lastTransitionTime": now,
        "message": message,
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
