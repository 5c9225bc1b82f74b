//! The `pods/eviction` subresource: a pod is deleted only if the PodDisruptionBudget covering
//! it allows one more disruption, which is then taken from the budget's status (as
//! kube-apiserver's eviction REST does); otherwise `429 TooManyRequests` with a
//! `DisruptionBudget` cause.

use serde_json::{Value, json};

use crate::catalog::ResourceType;
use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::{DeleteOptions, ListParams, Registry, WriteOptions};
use crate::selector::LabelSelector;

/// What the budget says about evicting the pod.
#[derive(Debug)]
pub enum Decision {
    /// Delete without touching the budget.
    Delete,
    /// Take one disruption from the budget, then delete.
    Charge,
    /// Refused.
    Refuse(ApiError),
}

fn too_many(message: String) -> ApiError {
    ApiError::TooManyRequests {
        message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
        causes: vec![Cause { reason: "DisruptionBudget", field: String::new(), message }],
    }
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

/// Whether a pod may go whatever its budget says: finished, not started, or already going.
pub fn ignores_budgets(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed" | "Pending"))
        || pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// The decision for evicting `pod` under `pdb`.
pub fn decide(pdb: &Value, pod: &Value) -> Decision {
    let int = |path: &str| pdb.pointer(path).and_then(Value::as_i64).unwrap_or(0);
    let name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if !is_ready(pod) {
        let policy = pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str);
        let budget_holds =
            int("/status/currentHealthy") >= int("/status/desiredHealthy") && int("/status/desiredHealthy") > 0;
        if policy == Some("AlwaysAllow") || budget_holds {
            return Decision::Delete;
        }
    }
    if int("/status/observedGeneration") < pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1) {
        return Decision::Refuse(too_many(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    let allowed = int("/status/disruptionsAllowed");
    if allowed < 0 {
        return Decision::Refuse(crate::auth::forbidden_error(
            "policy",
            "poddisruptionbudgets",
            name,
            "pdb disruptions allowed is negative",
        ));
    }
    if pdb.pointer("/status/disruptedPods").and_then(Value::as_object).is_some_and(|m| m.len() > 2000) {
        return Decision::Refuse(crate::auth::forbidden_error(
            "policy",
            "poddisruptionbudgets",
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Decision::Refuse(too_many(format!(
            "The disruption budget {name} needs {} healthy pods and has {} currently",
            int("/status/desiredHealthy"),
            int("/status/currentHealthy")
        )));
    }
    Decision::Charge
}

/// Evicts `namespace/name` (`pods` is the pods' resource type).
pub async fn evict(
    registry: &Registry,
    pods: &ResourceType,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<()> {
    let snapshot = registry.catalog.snapshot();
    let budgets_rt = snapshot.get("policy", "v1", "poddisruptionbudgets");
    for _ in 0..10 {
        let pod = registry.get(pods, Some(namespace), name).await?;
        let Some(budgets_rt) = budgets_rt.as_ref().filter(|_| !ignores_budgets(&pod)) else {
            return delete(registry, pods, namespace, name, options, dry_run).await;
        };
        let labels = crate::registry::labels_of(&pod);
        let list = registry.list(budgets_rt, Some(namespace), &ListParams::default()).await?;
        let covering: Vec<Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| {
                b.pointer("/spec/selector")
                    .is_some_and(|s| s.is_object() && LabelSelector::from_object(s).matches(&labels))
            })
            .cloned()
            .collect();
        let pdb = match covering.as_slice() {
            [] => return delete(registry, pods, namespace, name, options, dry_run).await,
            [one] => one.clone(),
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .into(),
                ));
            }
        };
        match decide(&pdb, &pod) {
            Decision::Refuse(error) => return Err(error),
            Decision::Delete => return delete(registry, pods, namespace, name, options, dry_run).await,
            Decision::Charge if dry_run => return Ok(()),
            Decision::Charge => {
                let mut charged = pdb.clone();
                let allowed = pdb.pointer("/status/disruptionsAllowed").and_then(Value::as_i64).unwrap_or(0) - 1;
                charged["status"]["disruptionsAllowed"] = json!(allowed);
                if allowed == 0
                    && let Some(conditions) = charged.pointer_mut("/status/conditions").and_then(Value::as_array_mut)
                {
                    for c in conditions.iter_mut().filter(|c| c["type"] == "DisruptionAllowed") {
                        c["status"] = json!("False");
                        c["reason"] = json!("InsufficientPods");
                        c["lastTransitionTime"] = json!(crate::registry::now());
                    }
                }
                if !charged["status"]["disruptedPods"].is_object() {
                    charged["status"]["disruptedPods"] = json!({});
                }
                charged["status"]["disruptedPods"][name] = json!(crate::registry::now());
                let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default().to_string();
                match registry
                    .update(budgets_rt, Some(namespace), &pdb_name, charged, "status", &WriteOptions::default())
                    .await
                {
                    Ok(_) => return delete(registry, pods, namespace, name, options, dry_run).await,
                    Err(ApiError::Conflict { .. }) => continue,
                    Err(other) => return Err(other),
                }
            }
        }
    }
    Err(ApiError::stale("policy", "poddisruptionbudgets", name))
}

async fn delete(
    registry: &Registry,
    pods: &ResourceType,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<()> {
    let mut options = options.clone();
    options.dry_run = options.dry_run || dry_run;
    if !options.dry_run {
        mark_disruption(registry, pods, namespace, name).await?;
    }
    registry.delete(pods, Some(namespace), name, &options).await.map(|_| ())
}

/// Adds the `DisruptionTarget` condition to a running pod about to be evicted (what jobs' pod
/// failure policies match on), as upstream does before it deletes.
async fn mark_disruption(registry: &Registry, pods: &ResourceType, namespace: &str, name: &str) -> ApiResult<()> {
    for _ in 0..5 {
        let mut pod = registry.get(pods, Some(namespace), name).await?;
        if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
            || pod.pointer("/metadata/deletionTimestamp").is_some()
        {
            return Ok(());
        }
        let status = crate::strategy::ensure_object(&mut pod, "status");
        let conditions = status.entry("conditions").or_insert_with(|| json!([]));
        let Some(list) = conditions.as_array_mut() else { return Ok(()) };
        list.retain(|c| c["type"] != "DisruptionTarget");
        list.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting", "lastTransitionTime": crate::registry::now()}));
        match registry.update(pods, Some(namespace), name, pod, "status", &WriteOptions::default()).await {
            Ok(_) => return Ok(()),
            Err(ApiError::Conflict { .. }) => continue,
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: bool) -> Value {
        json!({"metadata": {"name": "p"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(allowed: i64, observed: i64) -> Value {
        json!({"metadata": {"name": "b", "generation": 2}, "spec": {},
               "status": {"observedGeneration": observed, "disruptionsAllowed": allowed, "desiredHealthy": 3, "currentHealthy": 3}})
    }

    #[test]
    fn a_budget_without_room_refuses_with_a_disruption_budget_cause() {
        let Decision::Refuse(error) = decide(&pdb(0, 2), &pod(true)) else { panic!() };
        assert_eq!(error.code(), 429);
        let status = error.status();
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            status["details"]["causes"][0]["message"],
            "The disruption budget b needs 3 healthy pods and has 3 currently"
        );
    }

    #[test]
    fn an_unprocessed_budget_refuses_and_one_with_room_is_charged() {
        let Decision::Refuse(error) = decide(&pdb(1, 1), &pod(true)) else { panic!() };
        assert!(error.status()["details"]["causes"][0]["message"].as_str().unwrap().contains("still being processed"));
        assert!(matches!(decide(&pdb(1, 2), &pod(true)), Decision::Charge));
        // An unready pod goes without a charge while the budget holds.
        assert!(matches!(decide(&pdb(0, 2), &pod(false)), Decision::Delete));
    }
}
