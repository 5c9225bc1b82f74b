//! Upstream's cluster-role aggregation controller: a ClusterRole with an `aggregationRule` gets
//! the rules of every ClusterRole its selectors match (by name order, duplicates dropped), kept
//! current as roles come, change and go. This is how `admin`, `edit` and `view` pick up the
//! rules of a CRD's `aggregate-to-*` roles.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The field manager of the controller's writes.
pub const MANAGER: &str = "clusterrole-aggregation-controller";

/// Whether `labels` satisfy a `LabelSelector` (matchLabels and matchExpressions).
pub fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    for (key, value) in match_labels.into_iter().flatten() {
        if labels.get(key).map(String::as_str) != value.as_str() {
            return false;
        }
    }
    for expression in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let present = labels.get(key);
        let ok = match expression.get("operator").and_then(Value::as_str).unwrap_or_default() {
            "In" => present.is_some_and(|v| values.contains(&v.as_str())),
            "NotIn" => present.is_none_or(|v| !values.contains(&v.as_str())),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The rules an aggregated role should have: those of every other role (by name) any selector of
/// `aggregator` matches, each rule once. None when `aggregator` does not aggregate.
pub fn aggregated_rules(aggregator: &Value, roles: &BTreeMap<String, Value>) -> Option<Vec<Value>> {
    let selectors = aggregator.pointer("/aggregationRule/clusterRoleSelectors")?.as_array()?;
    let own_name = aggregator.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    // Upstream's order: selector by selector, matching roles by name, each rule once.
    let mut rules: Vec<Value> = Vec::new();
    for selector in selectors {
        for (name, role) in roles {
            if name == own_name {
                continue;
            }
            let labels: BTreeMap<String, String> = role
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
            if !selects(selector, &labels) {
                continue;
            }
            for rule in role.get("rules").and_then(Value::as_array).into_iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

/// Runs the controller until dropped.
pub async fn run(client: Client) {
    let api = Api::<ClusterRole>::all(client);
    let (changed, mut changes) = mpsc::unbounded_channel::<()>();
    let (roles, task) = crate::reflect(api.clone(), move |_: &ClusterRole| {
        let _ = changed.send(());
    });
    let _tasks = crate::Tasks(vec![task]);
    let _ = roles.wait_until_ready().await;
    loop {
        // Everything is recomputed on any change: aggregated roles are few and cheap.
        let all: BTreeMap<String, Value> = roles
            .state()
            .iter()
            .filter_map(|role| Some((role.name_any(), serde_json::to_value(role.as_ref()).ok()?)))
            .collect();
        let mut failed = false;
        for (name, role) in &all {
            let Some(wanted) = aggregated_rules(role, &all) else { continue };
            let current = role.get("rules").and_then(Value::as_array).cloned().unwrap_or_default();
            if current == wanted {
                continue;
            }
            let patch = json!({"rules": wanted});
            if let Err(error) = api
                .patch(
                    name,
                    &PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() },
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(%name, %error, "could not aggregate a cluster role; retrying");
                failed = true;
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(500)).await;
            while changes.try_recv().is_ok() {}
            continue;
        }
        if changes.recv().await.is_none() {
            return;
        }
        // Let a burst of changes settle into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while changes.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_roles_collect_the_rules_of_matching_roles() {
        let role = |name: &str, labels: Value, rules: Value| json!({"metadata": {"name": name, "labels": labels}, "rules": rules});
        let read = json!({"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]});
        let write = json!({"verbs": ["create"], "apiGroups": ["example.com"], "resources": ["widgets"]});
        let mut roles = BTreeMap::new();
        roles.insert(
            "a-widgets".into(),
            role("a-widgets", json!({"rbac.example.com/aggregate-to-view": "true"}), json!([read])),
        );
        roles.insert(
            "b-dup".into(),
            role("b-dup", json!({"rbac.example.com/aggregate-to-view": "true"}), json!([read, write])),
        );
        roles.insert("c-other".into(), role("c-other", json!({"x": "y"}), json!([write])));
        let view = json!({
            "metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.example.com/aggregate-to-view": "true"}}]},
        });
        assert_eq!(aggregated_rules(&view, &roles), Some(vec![read.clone(), write.clone()]));
        let expression = json!({
            "metadata": {"name": "all-but"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["y"]}]}]},
        });
        assert_eq!(aggregated_rules(&expression, &roles), Some(vec![read, write]));
        assert_eq!(aggregated_rules(&json!({"metadata": {"name": "plain"}}), &roles), None);
    }
}
