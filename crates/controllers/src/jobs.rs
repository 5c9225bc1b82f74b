//! Job decisions (kube-controller-manager's job controller): which pods to start (one per
//! completion index in `Indexed` mode), which to stop, and the job's status and conditions,
//! with `backoffLimit`, `backoffLimitPerIndex`/`maxFailedIndexes`, `podFailurePolicy` and
//! `successPolicy`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// The label and annotation carrying a pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("")
}

fn name_of(pod: &Value) -> &str {
    pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
}

/// A pod's completion index (label, else annotation).
pub fn index_of(pod: &Value) -> Option<i64> {
    let key = INDEX_KEY.replace('/', "~1");
    pod.pointer(&format!("/metadata/labels/{key}"))
        .or_else(|| pod.pointer(&format!("/metadata/annotations/{key}")))
        .and_then(Value::as_str)
        .and_then(|i| i.parse().ok())
}

/// What a job needs now.
#[derive(Debug, PartialEq)]
pub struct JobPlan {
    /// Pods to start: `Some(index)` each in Indexed mode, `None` each otherwise.
    pub create: Vec<Option<i64>>,
    /// Pods to delete (names): active pods of a job that finished or met its success policy.
    pub delete: Vec<String>,
    /// The status to write.
    pub status: Value,
    /// The job is finished (complete or failed): no more pods.
    pub finished: bool,
}

/// `0-2,4` from a set of indexes, as upstream compresses them.
pub fn compress(indexes: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    out.join(",")
}

/// The indexes `0-2,4` names.
pub fn parse_indexes(text: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i64>().ok()),
        }
    }
    out
}

/// What a pod failure policy decides about a failed pod: the rule's index and action.
fn failure_rule<'a>(job: &'a Value, pod: &Value) -> Option<(usize, &'a str, String)> {
    let rules = job.pointer("/spec/podFailurePolicy/rules").and_then(Value::as_array)?;
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let action = rule["action"].as_str().unwrap_or_default();
        if let Some(codes) = rule.get("onExitCodes").filter(|c| c.is_object()) {
            let container = codes["containerName"].as_str();
            let values: Vec<i64> = codes["values"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
            let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array).into_iter().flatten();
            for status in statuses {
                let name = status["name"].as_str().unwrap_or_default();
                if container.is_some_and(|c| c != name) {
                    continue;
                }
                let Some(code) = status.pointer("/state/terminated/exitCode").and_then(Value::as_i64) else { continue };
                if code == 0 {
                    continue;
                }
                let hit = match codes["operator"].as_str() {
                    Some("In") => values.contains(&code),
                    Some("NotIn") => !values.contains(&code),
                    _ => false,
                };
                if hit {
                    let message = format!(
                        "Container {name} for pod {namespace}/{} failed with exit code {code} matching {action} rule at index {i}",
                        name_of(pod)
                    );
                    return Some((i, action, message));
                }
            }
        }
        for pattern in rule["onPodConditions"].as_array().into_iter().flatten() {
            let kind = pattern["type"].as_str().unwrap_or_default();
            let wanted = pattern["status"].as_str().unwrap_or("True");
            let hit = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"].as_str() == Some(kind) && c["status"].as_str() == Some(wanted));
            if hit {
                let message = format!(
                    "Pod {namespace}/{} has condition {kind} matching {action} rule at index {i}",
                    name_of(pod)
                );
                return Some((i, action, message));
            }
        }
    }
    None
}

/// Plans job `job` given the pods it controls.
pub fn plan(job: &Value, pods: &[&Value], now: &str) -> JobPlan {
    let spec = &job["spec"];
    let indexed = spec["completionMode"].as_str() == Some("Indexed");
    let completions = spec["completions"].as_i64().unwrap_or(1).max(0);
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let per_index_limit = spec["backoffLimitPerIndex"].as_i64().filter(|_| indexed);
    let suspended = spec["suspend"].as_bool() == Some(true);
    let deleting = |p: &&&Value| p.pointer("/metadata/deletionTimestamp").is_some();
    let active_pods: Vec<&&Value> =
        pods.iter().filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && !deleting(p)).collect();
    let terminating = pods.iter().filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && deleting(p)).count() as i64;
    let ready = active_pods.iter().filter(|p| crate::workloads::is_ready(p) && phase(p) == "Running").count() as i64;
    let valid = |p: &Value| !indexed || index_of(p).is_some_and(|i| (0..completions).contains(&i));

    // Succeeded: pods (NonIndexed) or distinct indexes (Indexed).
    let succeeded_indexes: BTreeSet<i64> =
        pods.iter().filter(|p| phase(p) == "Succeeded" && valid(p)).filter_map(|p| index_of(p)).collect();
    let succeeded_pods = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
    let succeeded = if indexed { succeeded_indexes.len() as i64 } else { succeeded_pods };

    // Failures, as the pod failure policy counts them.
    let mut failed = 0i64;
    let mut fail_job: Option<String> = None;
    let mut failed_indexes: BTreeSet<i64> =
        job.pointer("/status/failedIndexes").and_then(Value::as_str).map(parse_indexes).unwrap_or_default();
    let mut failures_per_index: BTreeMap<i64, i64> = BTreeMap::new();
    for pod in pods.iter().filter(|p| phase(p) == "Failed") {
        failed += 1;
        match failure_rule(job, pod) {
            Some((_, "Ignore", _)) => {
                failed -= 1;
                continue;
            }
            Some((_, "FailJob", message)) => {
                fail_job.get_or_insert(message);
            }
            Some((_, "FailIndex", _)) => {
                if let Some(i) = index_of(pod) {
                    failed_indexes.insert(i);
                }
            }
            _ => {}
        }
        if let Some(i) = index_of(pod) {
            *failures_per_index.entry(i).or_default() += 1;
        }
    }
    if let Some(limit) = per_index_limit {
        for (index, count) in &failures_per_index {
            if *count > limit && !succeeded_indexes.contains(index) {
                failed_indexes.insert(*index);
            }
        }
    }

    let active = active_pods.len() as i64;
    let mut status = json!({"active": active, "succeeded": succeeded_pods, "failed": failed, "ready": ready,
        "terminating": terminating, "uncountedTerminatedPods": {}});
    status["startTime"] = job.pointer("/status/startTime").cloned().unwrap_or(json!(now));
    if indexed {
        status["completedIndexes"] = json!(compress(&succeeded_indexes));
        if per_index_limit.is_some() {
            status["failedIndexes"] = json!(compress(&failed_indexes));
        }
    }
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now});
    let existing: Vec<Value> = job.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let had = |kind: &str| existing.iter().find(|c| c["type"] == kind && c["status"] == "True").cloned();

    // Success policy: the first rule whose indexes and count are met.
    let success_rule = spec.pointer("/successPolicy/rules").and_then(Value::as_array).and_then(|rules| {
        rules.iter().position(|rule| {
            let count = rule["succeededCount"].as_i64();
            match rule["succeededIndexes"].as_str().map(parse_indexes) {
                Some(set) => {
                    let hit = set.intersection(&succeeded_indexes).count() as i64;
                    hit >= count.unwrap_or(set.len() as i64)
                }
                None => count.is_some_and(|c| succeeded >= c),
            }
        })
    });

    let max_failed = spec["maxFailedIndexes"].as_i64().filter(|_| per_index_limit.is_some());
    let all_indexes_done = indexed
        && (succeeded_indexes.len() + failed_indexes.iter().filter(|i| !succeeded_indexes.contains(i)).count()) as i64
            >= completions;
    let failure: Option<(&str, String)> = if let Some(message) = fail_job {
        Some(("PodFailurePolicy", message))
    } else if max_failed.is_some_and(|m| failed_indexes.len() as i64 > m) {
        Some(("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes".into()))
    } else if per_index_limit.is_some() && all_indexes_done && !failed_indexes.is_empty() {
        Some(("FailedIndexes", "Job has failed indexes".into()))
    } else if per_index_limit.is_none() && failed > backoff_limit {
        Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit".into()))
    } else {
        None
    };
    let already_failed = had("Failed").or_else(|| had("FailureTarget"));
    let already_succeeded = had("SuccessCriteriaMet");
    let mut delete = Vec::new();
    let finished;
    if let Some(previous) = already_failed.filter(|_| had("Complete").is_none()) {
        // Once failed, stays failed; active pods are stopped, then `Failed` is added.
        let reason = previous["reason"].as_str().unwrap_or_default().to_string();
        let message = previous["message"].as_str().unwrap_or_default().to_string();
        delete = active_pods.iter().map(|p| name_of(p).to_string()).collect();
        let mut conditions = vec![
            existing
                .iter()
                .find(|c| c["type"] == "FailureTarget")
                .cloned()
                .unwrap_or_else(|| condition("FailureTarget", &reason, &message)),
        ];
        if active == 0 {
            conditions.push(had("Failed").unwrap_or_else(|| condition("Failed", &reason, &message)));
        }
        status["conditions"] = json!(conditions);
        finished = true;
    } else if let Some((reason, message)) = failure.filter(|_| already_succeeded.is_none()) {
        delete = active_pods.iter().map(|p| name_of(p).to_string()).collect();
        let mut conditions = vec![condition("FailureTarget", reason, &message)];
        if active == 0 {
            conditions.push(condition("Failed", reason, &message));
        }
        status["conditions"] = json!(conditions);
        finished = true;
    } else if let Some(rule) = match &already_succeeded {
        Some(met) => (met["reason"] != "CompletionsReached").then_some(success_rule.unwrap_or(0)),
        None => success_rule,
    } {
        let message = format!("Matched rules at index {rule}");
        delete = active_pods.iter().map(|p| name_of(p).to_string()).collect();
        let met =
            had("SuccessCriteriaMet").unwrap_or_else(|| condition("SuccessCriteriaMet", "SuccessPolicy", &message));
        let mut conditions = vec![met.clone()];
        if active == 0 {
            conditions.push(had("Complete").unwrap_or_else(|| {
                condition("Complete", "SuccessPolicy", met["message"].as_str().unwrap_or_default())
            }));
        }
        status["conditions"] = json!(conditions);
        finished = true;
    } else if succeeded >= completions && already_succeeded.is_none()
        || already_succeeded.as_ref().is_some_and(|c| c["reason"] == "CompletionsReached")
    {
        let message = "Reached expected number of succeeded pods";
        status["conditions"] = json!([
            had("SuccessCriteriaMet").unwrap_or_else(|| condition("SuccessCriteriaMet", "CompletionsReached", message)),
            had("Complete").unwrap_or_else(|| condition("Complete", "CompletionsReached", message)),
        ]);
        finished = true;
    } else {
        if !existing.is_empty() {
            status["conditions"] = json!(existing);
        }
        finished = false;
    }
    if finished && status["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Complete")) {
        status["completionTime"] = job.pointer("/status/completionTime").cloned().unwrap_or(json!(now));
    }

    let mut create = Vec::new();
    if !finished && !suspended {
        let room = (parallelism - active).max(0);
        if indexed {
            let busy: BTreeSet<i64> = active_pods.iter().filter_map(|p| index_of(p)).collect();
            create = (0..completions)
                .filter(|i| !succeeded_indexes.contains(i) && !busy.contains(i) && !failed_indexes.contains(i))
                .take(room as usize)
                .map(Some)
                .collect();
        } else {
            let remaining = (completions - succeeded - active).max(0);
            create = vec![None; room.min(remaining) as usize];
        }
    }
    if !create.is_empty() {
        status["active"] = json!(active + create.len() as i64);
    }
    JobPlan { create, delete, status, finished }
}

/// A pod for job `job` (with its completion index in Indexed mode).
pub fn pod_for(job: &Value, index: Option<i64>) -> Value {
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = crate::workloads::template_metadata(&template);
    let name = job.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    metadata["namespace"] = job.pointer("/metadata/namespace").cloned().unwrap_or(json!("default"));
    metadata["labels"]["batch.kubernetes.io/job-name"] = json!(name);
    metadata["labels"]["job-name"] = json!(name);
    metadata["ownerReferences"] = json!([crate::workloads::owner_reference(job, "batch/v1", "Job")]);
    match index {
        Some(index) => {
            metadata["generateName"] = json!(format!("{name}-{index}-"));
            metadata["labels"][INDEX_KEY] = json!(index.to_string());
            metadata["annotations"][INDEX_KEY] = json!(index.to_string());
            spec["hostname"] = json!(format!("{name}-{index}"));
            let env = json!({"name": "JOB_COMPLETION_INDEX",
                "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.labels['{INDEX_KEY}']")}}});
            for list in ["containers", "initContainers"] {
                for container in spec[list].as_array_mut().into_iter().flatten() {
                    let vars = container.as_object_mut().map(|c| c.entry("env").or_insert_with(|| json!([])));
                    if let Some(vars) = vars.and_then(Value::as_array_mut)
                        && !vars.iter().any(|v| v["name"] == "JOB_COMPLETION_INDEX")
                    {
                        vars.push(env.clone());
                    }
                }
            }
        }
        None => metadata["generateName"] = json!(format!("{name}-")),
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
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
        json!({"metadata": {"name": format!("p-{phase}")}, "status": {"phase": phase}})
    }

    fn indexed(index: i64, phase: &str) -> Value {
        json!({"metadata": {"name": format!("p{index}-{phase}"), "labels": {INDEX_KEY: index.to_string()}}, "status": {"phase": phase}})
    }

    #[test]
    fn runs_up_to_parallelism_until_completions() {
        let job = json!({"spec": {"completions": 3, "parallelism": 2}});
        assert_eq!(plan(&job, &[], "t").create.len(), 2);
        let (a, b) = (pod("Succeeded"), pod("Running"));
        let p = plan(&job, &[&a, &b], "t");
        assert_eq!(p.create.len(), 1);
        assert!(!p.finished);
        let (c, d, e) = (pod("Succeeded"), pod("Succeeded"), pod("Succeeded"));
        let done = plan(&job, &[&c, &d, &e], "now");
        assert!(done.finished);
        assert!(done.create.is_empty());
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
        assert_eq!(p.status["conditions"][1]["reason"], "BackoffLimitExceeded");
    }

    #[test]
    fn indexed_jobs_start_the_lowest_missing_indexes_and_report_completed_ones() {
        let job = json!({"metadata": {"name": "j"}, "spec": {"completionMode": "Indexed", "completions": 5, "parallelism": 2}});
        let (a, b) = (indexed(0, "Succeeded"), indexed(2, "Running"));
        let p = plan(&job, &[&a, &b], "t");
        assert_eq!(p.create, vec![Some(1)]);
        assert_eq!(p.status["completedIndexes"], "0");
        let done: Vec<Value> = (0..5).map(|i| indexed(i, "Succeeded")).collect();
        let refs: Vec<&Value> = done.iter().collect();
        let p = plan(&job, &refs, "t");
        assert_eq!(p.status["completedIndexes"], "0-4");
        assert!(p.finished);
        let pod = pod_for(&job, Some(3));
        assert_eq!(pod["spec"]["hostname"], "j-3");
        assert_eq!(pod["metadata"]["labels"][INDEX_KEY], "3");
        assert_eq!(compress(&parse_indexes("0,1,2,4,6-7")), "0-2,4,6-7");
    }

    #[test]
    fn per_index_backoff_and_max_failed_indexes() {
        let job = json!({"spec": {"completionMode": "Indexed", "completions": 4, "parallelism": 4,
            "backoffLimitPerIndex": 0, "maxFailedIndexes": 1}});
        let (a, b) = (indexed(1, "Failed"), indexed(0, "Running"));
        let p = plan(&job, &[&a, &b], "t");
        assert_eq!(p.status["failedIndexes"], "1");
        assert_eq!(p.create, vec![Some(2), Some(3)], "a failed index is not retried");
        let c = indexed(3, "Failed");
        let p = plan(&job, &[&a, &b, &c], "t");
        assert_eq!(p.status["conditions"][0]["reason"], "MaxFailedIndexesExceeded");
        assert_eq!(p.delete, vec!["p0-Running"], "active pods of a failed job are stopped");
    }

    #[test]
    fn success_policy_completes_before_every_index_succeeds() {
        let job = json!({"spec": {"completionMode": "Indexed", "completions": 3, "parallelism": 3,
            "successPolicy": {"rules": [{"succeededCount": 1}]}}});
        let (a, b) = (indexed(0, "Succeeded"), indexed(1, "Running"));
        let p = plan(&job, &[&a, &b], "t");
        assert_eq!(p.status["conditions"][0]["reason"], "SuccessPolicy");
        assert_eq!(p.delete, vec!["p1-Running"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_success_policy_met_by_the_last_completion_is_the_reason() {
        // Upstream evaluates the policy before counting completions.
        let job = json!({"spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2,
            "successPolicy": {"rules": [{"succeededCount": 2}]}}});
        let (a, b) = (indexed(0, "Succeeded"), indexed(1, "Succeeded"));
        let p = plan(&job, &[&a, &b], "t");
        let reasons: Vec<&Value> = p.status["conditions"].as_array().unwrap().iter().map(|c| &c["reason"]).collect();
        assert_eq!(reasons, ["SuccessPolicy", "SuccessPolicy"]);
        assert_eq!(p.status["conditions"][1]["type"], "Complete");
    }

    #[test]
    fn pod_failure_policy_ignores_fails_the_job_or_counts() {
        let job = json!({"spec": {"completions": 1, "backoffLimit": 0, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}}});
        let disrupted = json!({"metadata": {"name": "d", "namespace": "n"}, "status": {"phase": "Failed",
            "conditions": [{"type": "DisruptionTarget", "status": "True"}]}});
        let p = plan(&job, &[&disrupted], "t");
        assert!(!p.finished, "an ignored failure does not count");
        assert_eq!(p.status["failed"], 0);
        let exited = json!({"metadata": {"name": "e", "namespace": "n"}, "status": {"phase": "Failed",
            "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 42}}}]}});
        let p = plan(&job, &[&exited], "t");
        assert_eq!(p.status["conditions"][0]["reason"], "PodFailurePolicy");
        assert_eq!(
            p.status["conditions"][0]["message"],
            "Container c for pod n/e failed with exit code 42 matching FailJob rule at index 1"
        );
    }
}
