//! Job decisions: how many pods to start, and the job's status and conditions.

use serde_json::{Value, json};

fn int(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

/// What a job needs now.
#[derive(Debug, PartialEq)]
pub struct JobPlan {
    /// Pods to start.
    pub create: usize,
    /// The status to write.
    pub status: Value,
    /// The job is finished (complete or failed): no more pods.
    pub finished: bool,
}

/// Plans job `job` given the pods it controls.
pub fn plan(job: &Value, pods: &[&Value], now: &str) -> JobPlan {
    let completions = job.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1).max(0);
    let parallelism = job.pointer("/spec/parallelism").and_then(Value::as_i64).unwrap_or(1).max(0);
    let backoff_limit = job.pointer("/spec/backoffLimit").and_then(Value::as_i64).unwrap_or(6);
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i64;
    let active = pods
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && p.pointer("/metadata/deletionTimestamp").is_none())
        .count() as i64;
    let ready = pods.iter().filter(|p| crate::workloads::is_ready(p) && phase(p) == "Running").count() as i64;
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let complete = succeeded >= completions;
    let failed_out = failed > backoff_limit;
    let mut status = json!({"active": active, "succeeded": succeeded, "failed": failed, "ready": ready, "terminating": 0,
        "uncountedTerminatedPods": {}});
    status["startTime"] = job.pointer("/status/startTime").cloned().unwrap_or(json!(now));
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now});
    let finished = complete || failed_out;
    if complete {
        status["completionTime"] = job.pointer("/status/completionTime").cloned().unwrap_or(json!(now));
        status["conditions"] = json!([
            condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
            condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
        ]);
    } else if failed_out {
        status["conditions"] = json!([
            condition("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
        ]);
    } else if let Some(existing) = job.pointer("/status/conditions") {
        status["conditions"] = existing.clone();
    }
    let create = if finished || suspended {
        0
    } else {
        let remaining = (completions - succeeded - active).max(0);
        (parallelism - active).max(0).min(remaining) as usize
    };
    if create > 0 || active > 0 {
        status["active"] = json!(active + create as i64);
    }
    let _ = int(job, "/metadata/generation");
    JobPlan { create, status, finished }
}

/// A pod for job `job`.
pub fn pod_for(job: &Value) -> Value {
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    let name = job.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    metadata["generateName"] = json!(format!("{name}-"));
    metadata["namespace"] = job.pointer("/metadata/namespace").cloned().unwrap_or(json!("default"));
    metadata["labels"]["batch.kubernetes.io/job-name"] = json!(name);
    metadata["labels"]["job-name"] = json!(name);
    metadata["ownerReferences"] = json!([crate::workloads::owner_reference(job, "batch/v1", "Job")]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

/// The selector and labels a job gets when it is created without one (`manualSelector` unset).
pub fn generated_selector(job: &Value) -> Option<Value> {
    if job.pointer("/spec/selector").is_some() {
        return None;
    }
    let uid = job.pointer("/metadata/uid").and_then(Value::as_str)?;
    Some(json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str) -> Value {
        json!({"status": {"phase": phase}})
    }

    #[test]
    fn runs_up_to_parallelism_until_completions() {
        let job = json!({"spec": {"completions": 3, "parallelism": 2}});
        assert_eq!(plan(&job, &[], "t").create, 2);
        let (a, b) = (pod("Succeeded"), pod("Running"));
        let p = plan(&job, &[&a, &b], "t");
        assert_eq!(p.create, 1);
        assert!(!p.finished);
        let (c, d, e) = (pod("Succeeded"), pod("Succeeded"), pod("Succeeded"));
        let done = plan(&job, &[&c, &d, &e], "now");
        assert!(done.finished);
        assert_eq!(done.create, 0);
        assert_eq!(done.status["conditions"][1]["type"], "Complete");
        assert_eq!(done.status["succeeded"], 3);
    }

    #[test]
    fn fails_after_the_backoff_limit() {
        let job = json!({"spec": {"completions": 1, "backoffLimit": 1}});
        let (a, b) = (pod("Failed"), pod("Failed"));
        let p = plan(&job, &[&a, &b], "t");
        assert!(p.finished);
        assert_eq!(p.status["conditions"][1]["type"], "Failed");
    }
}
