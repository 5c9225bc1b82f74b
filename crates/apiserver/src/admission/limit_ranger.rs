//! LimitRanger: a created pod gets its namespace's LimitRange defaults (mutating), and pods and
//! claims outside a LimitRange's min, max or ratio are refused (`403 Forbidden`, upstream's
//! messages). Decisions are `vkube_quota::limits`'.

use serde_json::Value;

use crate::auth::forbidden_error;
use crate::catalog::ResourceType;
use crate::error::ApiResult;
use crate::registry::Registry;

fn applies(rt: &ResourceType) -> bool {
    rt.group.is_empty() && matches!(rt.plural.as_str(), "pods" | "persistentvolumeclaims")
}

async fn ranges(registry: &Registry, object: &Value) -> ApiResult<Vec<Value>> {
    let Some(namespace) = object.pointer("/metadata/namespace").and_then(Value::as_str) else { return Ok(Vec::new()) };
    let snapshot = registry.catalog.snapshot();
    let Some(rt) = snapshot.get("", "v1", "limitranges") else { return Ok(Vec::new()) };
    registry.list_recent(&rt, Some(namespace)).await
}

/// Sets the namespace's default requests and limits on a new pod's containers.
pub async fn mutate(registry: &Registry, rt: &ResourceType, new: &mut Value) -> ApiResult<()> {
    if !applies(rt) || rt.plural != "pods" {
        return Ok(());
    }
    let ranges = ranges(registry, new).await?;
    if !ranges.is_empty() {
        vkube_quota::limits::apply_defaults(new, &ranges);
        // The QoS class follows what the defaults set (upstream computes it after admission).
        let qos = crate::strategy::qos_class(new.get("spec").unwrap_or(&Value::Null));
        crate::strategy::ensure_object(new, "status").insert("qosClass".into(), qos.into());
    }
    Ok(())
}

/// Refuses a new pod or claim outside its namespace's limits.
pub async fn validate(registry: &Registry, rt: &ResourceType, new: &Value) -> ApiResult<()> {
    if !applies(rt) {
        return Ok(());
    }
    let ranges = ranges(registry, new).await?;
    let violations = vkube_quota::limits::violations(&rt.plural, new, &ranges);
    if violations.is_empty() {
        return Ok(());
    }
    let name = new.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("Unknown");
    Err(forbidden_error(&rt.group, &rt.plural, name, &vkube_quota::limits::message(&violations)))
}
