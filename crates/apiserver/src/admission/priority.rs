//! Priority, as upstream's admission plugin: a new pod gets the `priority` and
//! `preemptionPolicy` of its PriorityClass (or of the global default class; none: 0 and
//! `PreemptLowerPriority`), and may not state others; at most one class is the global default.
//! The system classes are created at start and cannot be deleted; their names and values are
//! checked by validation ([`validate`]). Messages are kube-apiserver's (checked against 1.33).

use serde_json::{Value, json};

use crate::auth::forbidden_error;
use crate::catalog::ResourceType;
use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::Registry;

/// The classes every cluster has: name, value, description.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The highest value a user's class may have.
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

fn is_class(rt: &ResourceType) -> bool {
    rt.group == "scheduling.k8s.io" && rt.kind == "PriorityClass"
}

/// The system classes as objects, for the bootstrap.
pub fn system_classes() -> impl Iterator<Item = Value> {
    SYSTEM_CLASSES.into_iter().map(|(name, value, description)| {
        json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        })
    })
}

/// Validation of a class (upstream's `ValidatePriorityClass`): the `system-` prefix is reserved
/// for the system classes with their values; user classes stay at or below 1e9.
pub fn validate(rt: &ResourceType, object: &Value, causes: &mut Vec<Cause>) {
    if !is_class(rt) {
        return;
    }
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let value = object.get("value").and_then(Value::as_i64).unwrap_or(0);
    let global = object.get("globalDefault").and_then(Value::as_bool).unwrap_or(false);
    if name.starts_with("system-") {
        let known = match SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) {
            None => Err(format!("{name} is not a known system priority class")),
            Some((_, expected, _)) if *expected != value => {
                Err(format!("value of {name} PriorityClass must be {expected}"))
            }
            Some(_) if global => Err(format!("globalDefault of {name} PriorityClass must be false")),
            Some(_) => Ok(()),
        };
        if let Err(error) = known {
            causes.push(Cause::forbidden(
                "metadata.name",
                &format!("priority class names with 'system-' prefix are reserved for system use only. error: {error}"),
            ));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        causes.push(Cause::forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
}

/// Refuses the delete of a system class.
pub fn check_delete(rt: &ResourceType, name: &str) -> ApiResult<()> {
    if is_class(rt) && SYSTEM_CLASSES.iter().any(|(n, _, _)| *n == name) {
        return Err(forbidden_error(
            &rt.group,
            &rt.plural,
            name,
            "this is a system priority class and cannot be deleted",
        ));
    }
    Ok(())
}

async fn classes(registry: &Registry) -> ApiResult<Vec<Value>> {
    let snapshot = registry.catalog.snapshot();
    let Some(rt) = snapshot.get("scheduling.k8s.io", "v1", "priorityclasses") else { return Ok(Vec::new()) };
    registry.list_recent(&rt, None).await
}

fn name_of(object: &Value) -> &str {
    let meta = |field: &str| object.pointer(&format!("/metadata/{field}")).and_then(Value::as_str);
    meta("name").filter(|n| !n.is_empty()).or_else(|| meta("generateName")).unwrap_or_default()
}

/// The global default class: the one with the lowest value when (by a race) there are several.
fn global_default(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| c.get("globalDefault").and_then(Value::as_bool).unwrap_or(false))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
}

/// Mutating admission of a pod (create: priority from the class; update: what the pod had is
/// kept) or of a class (create or update: at most one global default).
pub async fn admit(registry: &Registry, rt: &ResourceType, old: Option<&Value>, new: &mut Value) -> ApiResult<()> {
    if is_class(rt) {
        if !new.get("globalDefault").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(());
        }
        let classes = classes(registry).await?;
        let name = name_of(new).to_string();
        if let Some(default) = global_default(&classes) {
            let default_name = default.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            if old.is_none() || default_name != name {
                let message =
                    format!("PriorityClass {default_name} is already marked as default. Only one default can exist");
                return Err(forbidden_error(&rt.group, &rt.plural, &name, &message));
            }
        }
        return Ok(());
    }
    if !(rt.group.is_empty() && rt.kind == "Pod") {
        return Ok(());
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    if let Some(old) = old {
        // Set at creation; an update that leaves them out keeps them.
        for field in ["priority", "preemptionPolicy"] {
            if let Some(before) = old.pointer(&format!("/spec/{field}")).filter(|v| !v.is_null()) {
                spec.entry(field).or_insert_with(|| before.clone());
            }
        }
        return Ok(());
    }
    let class_name = spec.get("priorityClassName").and_then(Value::as_str).unwrap_or_default().to_string();
    let classes = classes(registry).await?;
    let (class, priority, policy) = if class_name.is_empty() {
        match global_default(&classes) {
            Some(default) => (
                default.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
                default.get("value").and_then(Value::as_i64).unwrap_or(0),
                default.get("preemptionPolicy").and_then(Value::as_str).map(String::from),
            ),
            None => (String::new(), 0, Some("PreemptLowerPriority".to_string())),
        }
    } else {
        let found = classes.iter().find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(&class_name));
        let Some(found) = found else {
            let message = format!("no PriorityClass with name {class_name} was found");
            let name = name_of(new).to_string();
            return Err(forbidden_error(&rt.group, &rt.plural, &name, &message));
        };
        (
            class_name.clone(),
            found.get("value").and_then(Value::as_i64).unwrap_or(0),
            found.get("preemptionPolicy").and_then(Value::as_str).map(String::from),
        )
    };
    let refuse = |message: String| -> ApiError { forbidden_error(&rt.group, &rt.plural, name_of(new), &message) };
    let spec = new.get("spec").and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(given) = spec.get("priority").and_then(Value::as_i64)
        && given != priority
    {
        return Err(refuse(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(policy) = &policy
        && let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str)
        && given != policy
    {
        return Err(refuse(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    let spec = new["spec"].as_object_mut().expect("checked above");
    if !class.is_empty() {
        spec.insert("priorityClassName".into(), json!(class));
    }
    spec.insert("priority".into(), json!(priority));
    if let Some(policy) = policy {
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}
