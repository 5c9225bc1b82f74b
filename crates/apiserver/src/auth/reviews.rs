//! Reviews answered, never stored: access reviews (`kubectl auth can-i`) and rules reviews
//! (`kubectl auth can-i --list`) from the same authorizer that decides requests, `auth whoami`,
//! and token reviews.

use serde_json::{Map, Value, json};

use super::rbac::Rule;
use super::{Attributes, Identity, MASTERS, decide};
use crate::catalog::ResourceType;
use crate::error::{ApiError, ApiResult, Cause};
use crate::http::AppState;

/// The answer to a review of kind `rt.kind` created by `identity` in `namespace` (the URL's).
pub async fn review(
    state: &AppState,
    rt: &ResourceType,
    namespace: Option<&str>,
    mut object: Value,
    identity: &Identity,
) -> ApiResult<Value> {
    if !object.is_object() {
        return Err(ApiError::BadRequest("the body of a review must be an object".into()));
    }
    object["apiVersion"] = json!(rt.api_version());
    object["kind"] = json!(rt.kind);
    match rt.kind.as_str() {
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            validate_access_review(rt, namespace, &object)?;
            let subject = match rt.kind.as_str() {
                "SelfSubjectAccessReview" => identity.clone(),
                _ => subject_of(&object["spec"]),
            };
            let attributes = attributes_of(&object["spec"]);
            let decision = decide(&state.rbac, &subject, &attributes);
            let mut status = Map::new();
            status.insert("allowed".into(), json!(decision.allowed));
            if !decision.reason.is_empty() {
                status.insert("reason".into(), json!(decision.reason));
            }
            object["status"] = Value::Object(status);
            reset_metadata(&mut object, rt.kind == "LocalSubjectAccessReview");
            Ok(object)
        }
        "SelfSubjectRulesReview" => {
            let namespace = object.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or_default();
            if namespace.is_empty() {
                return Err(ApiError::BadRequest("no namespace on request".into()));
            }
            Ok(json!({
                "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"creationTimestamp": null},
                "spec": {}, "status": rules_status(state, identity, namespace),
            }))
        }
        "SelfSubjectReview" => {
            object["status"] = json!({"userInfo": user_info(identity)});
            object["metadata"] = json!({"creationTimestamp": crate::registry::now()});
            Ok(object)
        }
        "TokenReview" => {
            let token = object.pointer("/spec/token").and_then(Value::as_str).unwrap_or_default().to_string();
            object["status"] = match super::authenticate::token_identity(state, &token).await {
                Some(user) => {
                    let user = user.authenticated();
                    let audiences =
                        object.pointer("/spec/audiences").cloned().unwrap_or(json!([crate::tokens::ISSUER]));
                    json!({"authenticated": true, "user": user_info(&user), "audiences": audiences})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token", "user": {}}),
            };
            reset_metadata(&mut object, false);
            Ok(object)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// `UserInfo`: username, uid and extra when known, groups.
fn user_info(identity: &Identity) -> Value {
    let mut user = Map::new();
    user.insert("username".into(), json!(identity.user));
    if !identity.uid.is_empty() {
        user.insert("uid".into(), json!(identity.uid));
    }
    user.insert("groups".into(), json!(identity.groups));
    if !identity.extra.is_empty() {
        user.insert("extra".into(), json!(identity.extra));
    }
    Value::Object(user)
}

fn reset_metadata(object: &mut Value, keep_namespace: bool) {
    let namespace = object.pointer("/metadata/namespace").cloned();
    let mut meta = Map::new();
    meta.insert("creationTimestamp".into(), Value::Null);
    if keep_namespace && let Some(ns) = namespace {
        meta.insert("namespace".into(), ns);
    }
    object["metadata"] = Value::Object(meta);
}

/// The user a (Local)SubjectAccessReview asks about: exactly as given, no groups added.
fn subject_of(spec: &Value) -> Identity {
    let text = |key: &str| spec.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let groups = spec.get("groups").and_then(Value::as_array).into_iter().flatten();
    let mut identity = Identity::new(text("user"), groups.filter_map(Value::as_str).map(String::from).collect());
    identity.uid = text("uid");
    if let Some(extra) = spec.get("extra").and_then(Value::as_object) {
        for (key, values) in extra {
            let values = values.as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from);
            identity.extra.insert(key.clone(), values.collect());
        }
    }
    identity
}

fn attributes_of(spec: &Value) -> Attributes {
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    match spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Some(r) => Attributes {
            verb: text(r, "verb"),
            resource_request: true,
            group: text(r, "group"),
            version: Some(text(r, "version")).filter(|v| !v.is_empty()).unwrap_or_else(|| "*".into()),
            resource: text(r, "resource"),
            subresource: text(r, "subresource"),
            namespace: text(r, "namespace"),
            name: text(r, "name"),
            path: String::new(),
        },
        None => {
            let n = spec.get("nonResourceAttributes").cloned().unwrap_or(Value::Null);
            Attributes::non_resource(&text(&n, "verb"), &text(&n, "path"))
        }
    }
}

fn validate_access_review(rt: &ResourceType, namespace: Option<&str>, object: &Value) -> ApiResult<()> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
    let mut causes = Vec::new();
    if resource.is_some() && non_resource.is_some() {
        causes.push(Cause::invalid(
            "spec.nonResourceAttributes",
            &non_resource.map(Value::to_string).unwrap_or_default(),
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if resource.is_none() && non_resource.is_none() {
        causes.push(Cause::invalid(
            "spec.resourceAttributes",
            "null",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    if rt.kind != "SelfSubjectAccessReview" {
        let user = spec.get("user").and_then(Value::as_str).unwrap_or_default();
        let groups = spec.get("groups").and_then(Value::as_array).is_some_and(|g| !g.is_empty());
        if user.is_empty() && !groups {
            causes.push(Cause::invalid("spec.user", "", "at least one of user or group must be specified"));
        }
    }
    let mut meta = object.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    meta.remove("managedFields");
    meta.remove("creationTimestamp");
    if rt.kind == "LocalSubjectAccessReview" {
        let meta_namespace = meta.remove("namespace");
        let meta_namespace = meta_namespace.as_ref().and_then(Value::as_str).unwrap_or_default();
        if namespace.is_some_and(|ns| !meta_namespace.is_empty() && ns != meta_namespace) {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        let wanted = namespace.unwrap_or(meta_namespace);
        if let Some(resource) = resource {
            let given = resource.get("namespace").and_then(Value::as_str).unwrap_or_default();
            if given != wanted {
                causes.push(Cause::invalid(
                    "spec.resourceAttributes.namespace",
                    given,
                    "must match metadata.namespace",
                ));
            }
        }
        if non_resource.is_some() {
            causes.push(Cause::invalid(
                "spec.nonResourceAttributes",
                &non_resource.map(Value::to_string).unwrap_or_default(),
                "disallowed on this kind of request",
            ));
        }
        if !meta.is_empty() {
            causes.push(Cause::invalid("metadata", "", "must be empty except for namespace"));
        }
    } else if !meta.is_empty() {
        causes.push(Cause::invalid("metadata", "", "must be empty"));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid { group: rt.group.clone(), kind: rt.kind.clone(), name: String::new(), causes })
    }
}

/// `SubjectRulesReviewStatus`: for `system:masters` everything first (the privileged-group
/// authorizer), then every RBAC rule that applies in `namespace`.
fn rules_status(state: &AppState, identity: &Identity, namespace: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    if identity.in_group(MASTERS) {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    let (rules, errors) = state.rbac.rules_for(identity, namespace);
    for rule in rules {
        if !rule.resources.is_empty() {
            resource_rules.push(Rule { non_resource_urls: Vec::new(), ..rule.clone() }.to_value());
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource_rules.push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }
    let mut status = Map::new();
    status.insert("resourceRules".into(), Value::Array(resource_rules));
    status.insert("nonResourceRules".into(), Value::Array(non_resource_rules));
    status.insert("incomplete".into(), json!(false));
    if !errors.is_empty() {
        status.insert("evaluationError".into(), json!(super::rbac::aggregate(&errors)));
    }
    Value::Object(status)
}
