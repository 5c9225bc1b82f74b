//! CronJob decisions: which scheduled run is due, what the concurrency policy does with running
//! jobs, which finished jobs fall out of the history limits, and the status to report.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

/// Annotation on a job with the time it was scheduled for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed runs than this are not counted one by one.
const MISSED_CAP: usize = 100;

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn time(value: &Value, pointer: &str) -> Option<Timestamp> {
    value.pointer(pointer).and_then(Value::as_str).and_then(|t| t.parse().ok())
}

/// Whether a job has finished, and whether it succeeded.
pub fn finished(job: &Value) -> Option<bool> {
    job.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().find_map(|c| {
        let done = c.get("status").and_then(Value::as_str) == Some("True");
        match c.get("type").and_then(Value::as_str) {
            Some("Complete") if done => Some(true),
            Some("Failed") if done => Some(false),
            _ => None,
        }
    })
}

/// What a cron job needs now.
#[derive(Debug, Default, PartialEq)]
pub struct CronPlan {
    /// The job to create (with its name), if a run is due.
    pub create: Option<Value>,
    /// Jobs to delete: replaced running jobs and finished jobs beyond the history limits.
    pub delete: Vec<String>,
    /// The status to write.
    pub status: Value,
    /// When to look again (the next scheduled time).
    pub next: Option<Timestamp>,
    /// A problem to report as a Warning event (reason, message).
    pub warning: Option<(String, String)>,
}

/// The job for run `scheduled` of `cron_job`: named after the scheduled minute like the
/// reference controller (seconds for sub-minute `@every` schedules, which would collide).
pub fn job_for(cron_job: &Value, scheduled: Timestamp, sub_minute: bool) -> Value {
    let name = text(cron_job, "/metadata/name");
    let suffix = if sub_minute { scheduled.as_second() } else { scheduled.as_second() / 60 };
    let template = cron_job.pointer("/spec/jobTemplate").cloned().unwrap_or(json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    metadata["name"] = json!(format!("{name}-{suffix}"));
    metadata["namespace"] = json!(text(cron_job, "/metadata/namespace"));
    metadata["annotations"][SCHEDULED_AT] = json!(scheduled.to_string());
    metadata["ownerReferences"] = json!([crate::workloads::owner_reference(cron_job, "batch/v1", "CronJob")]);
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

fn reference(job: &Value) -> Value {
    json!({"kind": "Job", "apiVersion": "batch/v1", "namespace": text(job, "/metadata/namespace"),
           "name": text(job, "/metadata/name"), "uid": text(job, "/metadata/uid")})
}

/// Plans `cron_job` at `now` given the jobs it controls.
pub fn plan(cron_job: &Value, jobs: &[&Value], now: Timestamp) -> CronPlan {
    let mut plan = CronPlan::default();
    let schedule = match vkube_cron::parse(text(cron_job, "/spec/schedule")) {
        Ok(schedule) => schedule,
        Err(error) => {
            plan.warning = Some(("UnparseableSchedule".into(), format!("unparseable schedule: {error}")));
            plan.status = cron_job.get("status").cloned().unwrap_or(json!({}));
            return plan;
        }
    };
    let zone = match cron_job.pointer("/spec/timeZone").and_then(Value::as_str) {
        None => TimeZone::UTC,
        Some(name) => match TimeZone::get(name) {
            Ok(zone) => zone,
            Err(_) => {
                plan.warning = Some(("UnknownTimeZone".into(), format!("invalid timeZone: {name}")));
                plan.status = cron_job.get("status").cloned().unwrap_or(json!({}));
                return plan;
            }
        },
    };
    let active: Vec<&Value> = jobs.iter().copied().filter(|j| finished(j).is_none()).collect();
    let since = time(cron_job, "/status/lastScheduleTime")
        .or_else(|| time(cron_job, "/metadata/creationTimestamp"))
        .unwrap_or(now);
    let (due, missed) = schedule.most_recent(since, now, &zone, MISSED_CAP);
    if missed >= MISSED_CAP {
        plan.warning = Some((
            "TooManyMissedTimes".into(),
            format!("too many missed start times ({missed}+); starting the latest"),
        ));
    }
    let suspended = cron_job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let mut last_scheduled = cron_job.pointer("/status/lastScheduleTime").cloned();
    let mut still_active: Vec<&Value> = active.clone();
    if let (Some(due), false) = (due, suspended) {
        let deadline = cron_job.pointer("/spec/startingDeadlineSeconds").and_then(Value::as_i64);
        let too_late = deadline.is_some_and(|d| now.as_second() - due.as_second() > d);
        let policy = cron_job.pointer("/spec/concurrencyPolicy").and_then(Value::as_str).unwrap_or("Allow");
        if too_late {
            plan.warning = Some(("MissSchedule".into(), format!("missed scheduled time to start a job: {due}")));
        } else if policy == "Forbid" && !active.is_empty() {
            // Wait for the running job; the run is tried again while it is due.
        } else {
            if policy == "Replace" {
                plan.delete.extend(active.iter().map(|j| text(j, "/metadata/name").to_string()));
                still_active.clear();
            }
            let sub_minute = matches!(schedule, vkube_cron::Schedule::Every(s) if s % 60 != 0);
            plan.create = Some(job_for(cron_job, due, sub_minute));
            last_scheduled = Some(json!(due.to_string()));
        }
    }
    // History: keep the newest finished jobs within the limits.
    let limit = |pointer: &str, default: i64| {
        cron_job.pointer(pointer).and_then(Value::as_i64).unwrap_or(default).max(0) as usize
    };
    for (succeeded, keep) in
        [(true, limit("/spec/successfulJobsHistoryLimit", 3)), (false, limit("/spec/failedJobsHistoryLimit", 1))]
    {
        let mut done: Vec<&Value> = jobs.iter().copied().filter(|j| finished(j) == Some(succeeded)).collect();
        done.sort_by_key(|j| std::cmp::Reverse(text(j, "/metadata/creationTimestamp").to_string()));
        plan.delete.extend(done.iter().skip(keep).map(|j| text(j, "/metadata/name").to_string()));
    }
    let last_success = jobs
        .iter()
        .filter(|j| finished(j) == Some(true))
        .filter_map(|j| j.pointer("/status/completionTime").and_then(Value::as_str))
        .max()
        .map(|t| json!(t))
        .or_else(|| cron_job.pointer("/status/lastSuccessfulTime").cloned());
    let mut status = json!({});
    let mut refs: Vec<Value> = still_active.iter().map(|j| reference(j)).collect();
    refs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    if !refs.is_empty() {
        status["active"] = json!(refs);
    }
    if let Some(last) = last_scheduled {
        status["lastScheduleTime"] = last;
    }
    if let Some(success) = last_success {
        status["lastSuccessfulTime"] = success;
    }
    plan.status = status;
    plan.next = schedule.next_after(now, &zone);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(extra: Value) -> Value {
        let mut cron = json!({
            "metadata": {"name": "tick", "namespace": "default", "uid": "cj", "creationTimestamp": "2026-11-30T10:00:30Z"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}], "restartPolicy": "Never"}}}}},
        });
        if let (Some(target), Some(extra)) = (cron.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if k == "spec" {
                    for (sk, sv) in v.as_object().unwrap() {
                        target["spec"][sk] = sv.clone();
                    }
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        cron
    }

    fn job(name: &str, created: &str, state: Option<bool>) -> Value {
        let conditions = match state {
            Some(true) => json!([{"type": "Complete", "status": "True"}]),
            Some(false) => json!([{"type": "Failed", "status": "True"}]),
            None => json!([]),
        };
        json!({"metadata": {"name": name, "namespace": "default", "uid": name, "creationTimestamp": created},
               "status": {"conditions": conditions, "completionTime": created}})
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_due_run_creates_a_job_named_after_its_minute() {
        let plan = plan(&cron(json!({})), &[], at("2026-11-30T10:01:05Z"));
        let job = plan.create.unwrap();
        let minute = at("2026-11-30T10:01:00Z").as_second() / 60;
        assert_eq!(job["metadata"]["name"], format!("tick-{minute}"));
        assert_eq!(job["metadata"]["annotations"][SCHEDULED_AT], "2026-11-30T10:01:00Z");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(plan.status["lastScheduleTime"], "2026-11-30T10:01:00Z");
        assert_eq!(plan.next.unwrap().to_string(), "2026-11-30T10:02:00Z");
    }

    #[test]
    fn nothing_is_due_before_the_first_time() {
        let plan = plan(&cron(json!({})), &[], at("2026-11-30T10:00:50Z"));
        assert!(plan.create.is_none());
        assert!(plan.status.get("lastScheduleTime").is_none());
    }

    #[test]
    fn concurrency_policies() {
        let running = job("tick-1", "2026-11-30T10:01:00Z", None);
        let forbid = cron(
            json!({"spec": {"concurrencyPolicy": "Forbid"}, "status": {"lastScheduleTime": "2026-11-30T10:01:00Z"}}),
        );
        let plan_forbid = plan(&forbid, &[&running], at("2026-11-30T10:02:01Z"));
        assert!(plan_forbid.create.is_none(), "Forbid waits");
        assert_eq!(plan_forbid.status["active"][0]["name"], "tick-1");
        let replace = cron(
            json!({"spec": {"concurrencyPolicy": "Replace"}, "status": {"lastScheduleTime": "2026-11-30T10:01:00Z"}}),
        );
        let plan_replace = plan(&replace, &[&running], at("2026-11-30T10:02:01Z"));
        assert!(plan_replace.create.is_some());
        assert_eq!(plan_replace.delete, vec!["tick-1".to_string()]);
        let allow = cron(json!({"status": {"lastScheduleTime": "2026-11-30T10:01:00Z"}}));
        let plan_allow = plan(&allow, &[&running], at("2026-11-30T10:02:01Z"));
        assert!(plan_allow.create.is_some() && plan_allow.delete.is_empty());
    }

    #[test]
    fn suspended_late_and_invalid_schedules_start_nothing() {
        assert!(plan(&cron(json!({"spec": {"suspend": true}})), &[], at("2026-11-30T10:05:00Z")).create.is_none());
        let late = plan(&cron(json!({"spec": {"startingDeadlineSeconds": 10}})), &[], at("2026-11-30T10:01:30Z"));
        assert!(late.create.is_none());
        assert_eq!(late.warning.unwrap().0, "MissSchedule");
        let bad = plan(&cron(json!({"spec": {"schedule": "every minute"}})), &[], at("2026-11-30T10:05:00Z"));
        assert_eq!(bad.warning.unwrap().0, "UnparseableSchedule");
    }

    #[test]
    fn history_limits_keep_the_newest_finished_jobs() {
        let jobs: Vec<Value> = (0..5)
            .map(|i| job(&format!("ok-{i}"), &format!("2026-11-30T10:0{i}:00Z"), Some(true)))
            .chain((0..3).map(|i| job(&format!("bad-{i}"), &format!("2026-11-30T10:0{i}:30Z"), Some(false))))
            .collect();
        let refs: Vec<&Value> = jobs.iter().collect();
        let cron_job = cron(json!({"status": {"lastScheduleTime": "2026-11-30T10:05:00Z"}}));
        let mut deleted = plan(&cron_job, &refs, at("2026-11-30T10:05:30Z")).delete;
        deleted.sort();
        assert_eq!(deleted, ["bad-0", "bad-1", "ok-0", "ok-1"]);
    }
}
