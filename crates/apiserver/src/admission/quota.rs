//! ResourceQuota admission: a write that would take a namespace past one of its quotas is
//! refused (`403 Forbidden`, kube-apiserver's message), and an admitted one is charged to the
//! quotas' `status.used` before it is stored, so the next write sees it even before the quota
//! controller recounts. Decisions are `vkube_quota::admit`'s.

use serde_json::Value;
use vkube_quota::Operation;

use crate::auth::forbidden_error;
use crate::catalog::ResourceType;
use crate::error::{ApiError, ApiResult};
use crate::registry::{ListParams, Registry, WriteOptions};

/// Kinds quota never counts (upstream's ignored resources).
fn ignored(rt: &ResourceType) -> bool {
    rt.review || matches!((rt.group.as_str(), rt.plural.as_str()), ("", "events") | ("events.k8s.io", "events"))
}

/// Checks and charges a write of `new` (over `old`, for an update) against its namespace's quotas.
pub async fn admit(
    registry: &Registry,
    rt: &ResourceType,
    old: Option<&Value>,
    new: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    if !rt.namespaced || ignored(rt) {
        return Ok(());
    }
    let operation = if old.is_some() { Operation::Update } else { Operation::Create };
    let charged_on_update = rt.group.is_empty() && matches!(rt.plural.as_str(), "services" | "persistentvolumeclaims");
    if operation == Operation::Update && !charged_on_update {
        return Ok(());
    }
    let Some(namespace) = new.pointer("/metadata/namespace").and_then(Value::as_str) else { return Ok(()) };
    let snapshot = registry.catalog.snapshot();
    let Some(quotas_rt) = snapshot.get("", "v1", "resourcequotas") else { return Ok(()) };
    let now = jiff::Timestamp::now().as_second();
    // Charging races other writers' charges: a conflict re-reads the quotas and decides again.
    for attempt in 0..10 {
        // The first look is at the quotas as this server last saw them (upstream's informer);
        // after a conflict, at the latest.
        let quotas: Vec<Value> = if attempt == 0 {
            registry.list_recent(&quotas_rt, Some(namespace)).await?
        } else {
            let list = registry.list(&quotas_rt, Some(namespace), &ListParams::default()).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        };
        if quotas.is_empty() {
            return Ok(());
        }
        let name = new
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .or_else(|| new.pointer("/metadata/generateName").and_then(Value::as_str))
            .unwrap_or("Unknown");
        let charges = vkube_quota::admit(&quotas, &rt.group, &rt.plural, operation, new, old, now)
            .map_err(|reason| forbidden_error(&rt.group, &rt.plural, name, &reason))?;
        if dry_run || charges.is_empty() {
            return Ok(());
        }
        let mut conflict = false;
        for (index, used) in charges {
            let mut quota = quotas[index].clone();
            quota["status"]["used"] = vkube_quota::to_json(&used);
            let quota_name = quota["metadata"]["name"].as_str().unwrap_or_default().to_string();
            match registry
                .update(&quotas_rt, Some(namespace), &quota_name, quota, "status", &WriteOptions::default())
                .await
            {
                Ok(_) => {}
                Err(ApiError::Conflict { .. }) => {
                    conflict = true;
                    break;
                }
                Err(other) => return Err(other),
            }
        }
        if !conflict {
            return Ok(());
        }
    }
    Err(ApiError::stale("", "resourcequotas", namespace))
}
