//! Defaults and validation of the admission configuration objects (webhook configurations,
//! ValidatingAdmissionPolicies and their bindings), as kube-apiserver applies them; CEL
//! expressions that do not compile are refused (`compilation failed: ...`).

use serde_json::{Value, json};

use crate::error::Cause;

fn each<'a>(value: &'a Value, pointer: &str) -> impl Iterator<Item = (usize, &'a Value)> + 'a {
    value.pointer(pointer).and_then(Value::as_array).into_iter().flatten().enumerate()
}

fn check_expression(value: &Value, field: String, causes: &mut Vec<Cause>) {
    let Some(source) = value.as_str() else { return };
    if let Err(error) = crate::cel::compile(source) {
        causes.push(Cause::invalid(field, source, &error));
    }
}

/// Fills in what upstream defaults for `kind`.
pub fn default(kind: &str, object: &mut Value) {
    match kind {
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            let mutating = kind.starts_with("Mutating");
            for webhook in object.pointer_mut("/webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
                let Some(map) = webhook.as_object_mut() else { continue };
                map.entry("failurePolicy").or_insert(json!("Fail"));
                map.entry("matchPolicy").or_insert(json!("Equivalent"));
                map.entry("namespaceSelector").or_insert(json!({}));
                map.entry("objectSelector").or_insert(json!({}));
                map.entry("timeoutSeconds").or_insert(json!(10));
                if mutating {
                    map.entry("reinvocationPolicy").or_insert(json!("Never"));
                }
                if let Some(service) =
                    map.get_mut("clientConfig").and_then(|c| c.get_mut("service")).and_then(Value::as_object_mut)
                {
                    service.entry("port").or_insert(json!(443));
                }
                for rule in map.get_mut("rules").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(rule) = rule.as_object_mut() {
                        rule.entry("scope").or_insert(json!("*"));
                    }
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else { return };
            spec.entry("failurePolicy").or_insert(json!("Fail"));
            if let Some(constraints) = spec.get_mut("matchConstraints").and_then(Value::as_object_mut) {
                constraints.entry("matchPolicy").or_insert(json!("Equivalent"));
                constraints.entry("namespaceSelector").or_insert(json!({}));
                constraints.entry("objectSelector").or_insert(json!({}));
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            if let Some(resources) = object.pointer_mut("/spec/matchResources").and_then(Value::as_object_mut) {
                resources.entry("matchPolicy").or_insert(json!("Equivalent"));
                resources.entry("namespaceSelector").or_insert(json!({}));
                resources.entry("objectSelector").or_insert(json!({}));
            }
        }
        _ => {}
    }
}

/// Field causes for what is wrong with `object` of `kind`.
pub fn validate(kind: &str, object: &Value, causes: &mut Vec<Cause>) {
    match kind {
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            for (i, webhook) in each(object, "/webhooks") {
                let at = format!("webhooks[{i}]");
                if webhook["name"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{at}.name"), ""));
                }
                match webhook["sideEffects"].as_str() {
                    Some("None" | "NoneOnDryRun") => {}
                    Some(other) => {
                        causes.push(Cause::not_supported(format!("{at}.sideEffects"), other, &["None", "NoneOnDryRun"]))
                    }
                    None => causes
                        .push(Cause::required(format!("{at}.sideEffects"), "must specify one of None, NoneOnDryRun")),
                }
                if webhook["admissionReviewVersions"].as_array().is_none_or(Vec::is_empty) {
                    causes.push(Cause::required(
                        format!("{at}.admissionReviewVersions"),
                        "must specify one of v1, v1beta1",
                    ));
                }
                let config = &webhook["clientConfig"];
                if config["url"].is_null() == config["service"].is_null() {
                    causes.push(Cause::required(
                        format!("{at}.clientConfig"),
                        "exactly one of url or service is required",
                    ));
                }
                for (j, condition) in each(webhook, "/matchConditions") {
                    check_expression(&condition["expression"], format!("{at}.matchConditions[{j}].expression"), causes);
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            let spec = &object["spec"];
            for (i, validation) in each(spec, "/validations") {
                check_expression(&validation["expression"], format!("spec.validations[{i}].expression"), causes);
                check_expression(
                    &validation["messageExpression"],
                    format!("spec.validations[{i}].messageExpression"),
                    causes,
                );
            }
            for (i, variable) in each(spec, "/variables") {
                check_expression(&variable["expression"], format!("spec.variables[{i}].expression"), causes);
            }
            for (i, condition) in each(spec, "/matchConditions") {
                check_expression(&condition["expression"], format!("spec.matchConditions[{i}].expression"), causes);
            }
            for (i, annotation) in each(spec, "/auditAnnotations") {
                check_expression(
                    &annotation["valueExpression"],
                    format!("spec.auditAnnotations[{i}].valueExpression"),
                    causes,
                );
            }
            if spec["validations"].as_array().is_none_or(Vec::is_empty)
                && spec["auditAnnotations"].as_array().is_none_or(Vec::is_empty)
            {
                causes.push(Cause::required(
                    "spec.validations",
                    "validations or auditAnnotations must contain at least one item",
                ));
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            if object.pointer("/spec/policyName").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause::required("spec.policyName", ""));
            }
            let actions = object.pointer("/spec/validationActions").and_then(Value::as_array);
            if actions.is_none_or(Vec::is_empty) {
                causes.push(Cause::required("spec.validationActions", "at least one validation action is required"));
            }
            for (i, action) in actions.into_iter().flatten().enumerate() {
                let action = action.as_str().unwrap_or_default();
                if !matches!(action, "Deny" | "Warn" | "Audit") {
                    causes.push(Cause::not_supported(
                        format!("spec.validationActions[{i}]"),
                        action,
                        &["Audit", "Deny", "Warn"],
                    ));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_match_conditions_are_refused() {
        let config = json!({"webhooks": [{"name": "w.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": "https://example.com"},
            "matchConditions": [{"name": "bad", "expression": "... [] bad expression"}]}]});
        let mut causes = Vec::new();
        validate("ValidatingWebhookConfiguration", &config, &mut causes);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "webhooks[0].matchConditions[0].expression");
        assert!(causes[0].message.contains("compilation failed"), "{}", causes[0].message);
    }

    #[test]
    fn webhooks_get_upstreams_defaults() {
        let mut config = json!({"webhooks": [{"name": "w", "clientConfig": {"service": {"namespace": "n", "name": "s"}}, "rules": [{}]}]});
        default("MutatingWebhookConfiguration", &mut config);
        let webhook = &config["webhooks"][0];
        assert_eq!((webhook["failurePolicy"].clone(), webhook["timeoutSeconds"].clone()), (json!("Fail"), json!(10)));
        assert_eq!(webhook["clientConfig"]["service"]["port"], 443);
        assert_eq!(webhook["rules"][0]["scope"], "*");
        assert_eq!(webhook["reinvocationPolicy"], "Never");
    }
}
