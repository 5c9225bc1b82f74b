//! Escalation prevention, as kube-apiserver's RBAC storage enforces it: a Role or ClusterRole
//! may be written only by someone who holds every permission it grants (or may `escalate`), and
//! a binding only by someone who holds every permission of the role it binds (or may `bind`
//! that role). `system:masters` is exempt.

use std::collections::BTreeSet;

use serde_json::Value;

use super::rbac::{Rule, aggregate};
use super::{Attributes, Identity, MASTERS, Rbac, decide, forbidden_error};
use crate::catalog::ResourceType;
use crate::error::{ApiError, ApiResult};
use crate::registry::Registry;

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// Checks a write of `new` (replacing `old`, if an update) of an RBAC object by `identity`.
pub async fn check(
    rbac: &Rbac,
    registry: &Registry,
    identity: &Identity,
    rt: &ResourceType,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    if rt.group != GROUP || identity.in_group(MASTERS) {
        return Ok(());
    }
    let name = new.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = new.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    if let Some(old) = old
        && only_garbage_collection_fields_changed(old, new)
    {
        return Ok(());
    }
    let refuse = |message: String| forbidden_error(GROUP, &rt.plural, name, &message);
    match rt.plural.as_str() {
        "roles" | "clusterroles" => {
            let escalate = Attributes::resource("escalate", GROUP, &rt.plural, "", namespace, name);
            if decide(rbac, identity, &escalate).allowed {
                return Ok(());
            }
            confirm_no_escalation(rbac, identity, namespace, &Rule::list_from(new)).map_err(refuse)?;
            let aggregates = |o: &Value| {
                o.pointer("/aggregationRule/clusterRoleSelectors")
                    .and_then(Value::as_array)
                    .is_some_and(|s| !s.is_empty())
            };
            if aggregates(new) || old.is_some_and(aggregates) {
                let full = [
                    Rule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Rule::default()
                    },
                    Rule { verbs: vec!["*".into()], non_resource_urls: vec!["*".into()], ..Rule::default() },
                ];
                confirm_no_escalation(rbac, identity, namespace, &full)
                    .map_err(|_| refuse("must have cluster-admin privileges to use the aggregationRule".into()))?;
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_kind = new.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default();
            let role_name = new.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default();
            let role_group = new.pointer("/roleRef/apiGroup").and_then(Value::as_str).unwrap_or_default();
            let resource = match role_kind {
                "ClusterRole" => "clusterroles",
                "Role" => "roles",
                other => return Err(ApiError::BadRequest(format!("unsupported role reference kind: \"{other}\""))),
            };
            let bind = Attributes::resource("bind", role_group, resource, "", namespace, role_name);
            if decide(rbac, identity, &bind).allowed {
                return Ok(());
            }
            // The role is read from the store (not the index), so a role created just before
            // the binding counts; a missing one is NotFound named after the binding's resource,
            // as upstream's storage reports it.
            let snapshot = registry.catalog.snapshot();
            let role_type = snapshot.get(GROUP, "v1", resource).ok_or_else(ApiError::no_route)?;
            let role_namespace = (resource == "roles").then_some(namespace);
            let role = match registry.get(&role_type, role_namespace, role_name).await {
                Ok(role) => role,
                Err(ApiError::NotFound { .. }) => return Err(ApiError::not_found(GROUP, &rt.plural, role_name)),
                Err(other) => return Err(other),
            };
            confirm_no_escalation(rbac, identity, namespace, &Rule::list_from(&role)).map_err(refuse)
        }
        _ => Ok(()),
    }
}

/// Upstream's `IsOnlyMutatingGCFields`: an update that changes nothing but owner references and
/// finalizers is allowed to anyone who may update.
fn only_garbage_collection_fields_changed(old: &Value, new: &Value) -> bool {
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in ["ownerReferences", "finalizers", "resourceVersion", "managedFields", "generation"] {
                meta.remove(field);
            }
        }
        o
    };
    strip(old) == strip(new)
}

/// `ConfirmNoEscalation`: Ok when the rules `identity` holds in `namespace` cover `rules`,
/// else upstream's message listing what is missing.
pub fn confirm_no_escalation(rbac: &Rbac, identity: &Identity, namespace: &str, rules: &[Rule]) -> Result<(), String> {
    let (owned, errors) = rbac.rules_for(identity, namespace);
    let missing = uncovered(&owned, rules);
    if missing.is_empty() {
        return Ok(());
    }
    let descriptions: BTreeSet<String> = compact(missing).iter().map(Rule::compact_string).collect();
    let groups: Vec<String> = identity.groups.iter().map(|g| serde_json::to_string(g).unwrap_or_default()).collect();
    let mut message = format!(
        "user \"{}\" (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        identity.user,
        groups.join(" "),
        descriptions.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", aggregate(&errors)));
    }
    Err(message)
}

/// `validation.Covers`: the single-verb, single-resource pieces of `wanted` no owned rule covers.
pub fn uncovered(owned: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    let mut missing = Vec::new();
    for rule in wanted {
        for piece in breakdown(rule) {
            if !owned.iter().any(|owner| covers(owner, &piece)) {
                missing.push(piece);
            }
        }
    }
    missing
}

fn one(s: &str) -> Vec<String> {
    vec![s.to_string()]
}

fn breakdown(rule: &Rule) -> Vec<Rule> {
    let mut pieces = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let base =
                    Rule { api_groups: one(group), resources: one(resource), verbs: one(verb), ..Rule::default() };
                if rule.resource_names.is_empty() {
                    pieces.push(base);
                } else {
                    for name in &rule.resource_names {
                        pieces.push(Rule { resource_names: one(name), ..base.clone() });
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            pieces.push(Rule { non_resource_urls: one(url), verbs: one(verb), ..Rule::default() });
        }
    }
    pieces
}

fn has(set: &[String], wanted: &str) -> bool {
    set.iter().any(|s| s == wanted)
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

fn covers(owner: &Rule, piece: &Rule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &piece.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &piece.api_groups);
    let resources = has(&owner.resources, "*")
        || piece.resources.iter().all(|r| {
            has(&owner.resources, r)
                || r.split_once('/').is_some_and(|(_, sub)| has(&owner.resources, &format!("*/{sub}")))
        });
    let urls = piece.non_resource_urls.iter().all(|path| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| o == path || (o.ends_with('*') && path.starts_with(o.trim_end_matches('*'))))
    });
    let names = if piece.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &piece.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// `CompactRules`: pieces on one group, resource and (at most one) name merge their verbs.
fn compact(rules: Vec<Rule>) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    let mut simple: Vec<Rule> = Vec::new();
    for rule in rules {
        let is_simple = rule.resource_names.len() <= 1
            && rule.non_resource_urls.is_empty()
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1;
        if !is_simple {
            out.push(rule);
            continue;
        }
        match simple.iter_mut().find(|s| {
            s.api_groups == rule.api_groups && s.resources == rule.resources && s.resource_names == rule.resource_names
        }) {
            Some(existing) => existing.verbs.extend(rule.verbs),
            None => simple.push(rule),
        }
    }
    out.extend(simple);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_permissions_are_listed_as_upstream_does() {
        let rbac = Rbac::default();
        let prefix = crate::auth::rbac::PREFIX;
        rbac.apply(
            &format!("{prefix}clusterroles/pods"),
            Some(&json!({"rules": [{"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}]})),
        );
        rbac.apply(
            &format!("{prefix}rolebindings/team-a/b"),
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "pods"}, "subjects": [{"kind": "User", "name": "alice"}]})),
        );
        let alice = Identity::new("alice", vec!["system:authenticated".into()]);
        let wanted = [
            Rule::from_value(&json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["nodes", "pods"]})),
            Rule::from_value(
                &json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["a", "b"]}),
            ),
        ];
        let message = confirm_no_escalation(&rbac, &alice, "team-a", &wanted).unwrap_err();
        assert_eq!(
            message,
            "user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n\
             {APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}\n\
             {APIGroups:[\"apps\"], Resources:[\"deployments\"], ResourceNames:[\"a\"], Verbs:[\"get\"]}\n\
             {APIGroups:[\"apps\"], Resources:[\"deployments\"], ResourceNames:[\"b\"], Verbs:[\"get\"]}"
        );
        assert!(confirm_no_escalation(&rbac, &alice, "team-a", &wanted[..1][..]).is_err());
        let pods_only = [Rule::from_value(
            &json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]}),
        )];
        assert!(confirm_no_escalation(&rbac, &alice, "team-a", &pods_only).is_ok());
        assert!(confirm_no_escalation(&rbac, &alice, "team-b", &pods_only).is_err());
    }
}
