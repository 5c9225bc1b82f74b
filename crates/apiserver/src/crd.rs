//! CustomResourceDefinitions: validation, the status the server sets (names accepted,
//! Established at once), the resource types an Established CRD serves, and the structural-schema
//! subset applied to custom resources (defaults, types, required fields, enums).

use serde_json::{Value, json};

use crate::catalog::{ALL_VERBS, CustomInfo, PrinterColumn, ResourceType, ScalePaths};
use crate::error::Cause;

/// Validates a CRD's spec.
pub fn validate(crd: &Value, causes: &mut Vec<Cause>) {
    let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
    let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or_default();
    let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str).unwrap_or_default();
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if group.is_empty() {
        causes.push(Cause::required("spec.group", ""));
    } else if !group.contains('.') {
        causes.push(Cause::invalid("spec.group", group, "should be a domain with at least one dot"));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
    }
    match crd.pointer("/spec/scope").and_then(Value::as_str) {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => causes.push(Cause::not_supported("spec.scope", other, &["Cluster", "Namespaced"])),
        None => causes.push(Cause::required("spec.scope", "")),
    }
    let versions = crd.pointer("/spec/versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions", "must have exactly one version marked as storage version"));
    }
    // Schemas: upstream reports them under spec.validation when every version has the same one.
    let schemas: Vec<&Value> = versions.iter().filter_map(|v| v.pointer("/schema/openAPIV3Schema")).collect();
    let shared = schemas.len() == versions.len() && schemas.windows(2).all(|w| w[0] == w[1]);
    for (i, version) in versions.iter().enumerate() {
        if let Some(schema) = version.pointer("/schema/openAPIV3Schema") {
            if shared && i > 0 {
                break;
            }
            let root = if shared {
                "spec.validation.openAPIV3Schema".to_string()
            } else {
                format!("spec.versions[{i}].schema.openAPIV3Schema")
            };
            validate_schema(schema, &root, causes);
        }
    }
    let storage = versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if !versions.is_empty() && storage != 1 {
        causes.push(Cause::invalid_number(
            "spec.versions",
            storage as i64,
            "must have exactly one version marked as storage version",
        ));
    }
}

/// Structural rules of a version's schema that upstream enforces at CRD admission: every key of a
/// `map` list must be required or have a default (items could not be identified otherwise).
fn validate_schema(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map")
        && let Some(items) = schema.get("items")
    {
        let required: Vec<&str> =
            items.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        for key in schema.get("x-kubernetes-list-map-keys").and_then(Value::as_array).into_iter().flatten() {
            let Some(key) = key.as_str() else { continue };
            let has_default = items.pointer(&format!("/properties/{key}/default")).is_some();
            if !required.contains(&key) && !has_default {
                causes.push(Cause::required(
                    format!("{path}.items.properties[{key}].default"),
                    "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                ));
            }
        }
    }
    for (name, child) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        validate_schema(child, &format!("{path}.properties[{name}]"), causes);
    }
    if let Some(items) = schema.get("items") {
        validate_schema(items, &format!("{path}.items"), causes);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        validate_schema(additional, &format!("{path}.additionalProperties"), causes);
    }
}

/// The finalizer that holds a deleted CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Sets condition `kind` to True on a CRD's status (keeping the others).
pub fn set_condition(crd: &mut Value, kind: &str, reason: &str, message: &str) {
    let status = crate::strategy::ensure_object(crd, "status");
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made a list");
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    list.push(json!({"type": kind, "status": "True", "reason": reason, "message": message,
        "lastTransitionTime": crate::registry::now()}));
}

/// Sets the status a CRD gets once the server accepted it (names accepted, Established).
pub fn prepare(crd: &mut Value) {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or_default().to_lowercase();
        accepted["singular"] = json!(kind);
    }
    if accepted.get("listKind").is_none() {
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or_default();
        accepted["listKind"] = json!(format!("{kind}List"));
    }
    crd["spec"]["names"] = accepted.clone();
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let now = crate::registry::now();
    let existing = crd.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let time_of = |kind: &str| {
        existing
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or(json!(now))
    };
    let mut stored_versions =
        crd.pointer("/status/storedVersions").and_then(Value::as_array).cloned().unwrap_or_default();
    for v in storage {
        if !stored_versions.contains(&v) {
            stored_versions.push(v);
        }
    }
    // The server's two conditions are set in place; any other condition (a client's, through
    // `status`) is kept, as upstream keeps it.
    let computed = [
        json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": time_of("NamesAccepted")}),
        json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": time_of("Established")}),
    ];
    let mut conditions = existing;
    for condition in computed {
        match conditions.iter_mut().find(|c| c.get("type") == condition.get("type")) {
            Some(slot) => *slot = condition,
            None => conditions.push(condition),
        }
    }
    crd["status"] = json!({
        "acceptedNames": accepted,
        "storedVersions": stored_versions,
        "conditions": conditions,
    });
}

/// The resource types a CRD serves (one per served version); while it is being deleted they are
/// still served (marked terminating) so its objects can be listed, watched and deleted.
pub fn resource_types(crd: &Value) -> Vec<ResourceType> {
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
    let storage_version = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .unwrap_or_default()
        .to_string();
    let text = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    let group = text("/spec/group");
    let kind = text("/spec/names/kind");
    let mut out = Vec::new();
    for version in crd.pointer("/spec/versions").and_then(Value::as_array).into_iter().flatten() {
        if version.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let scale = version.pointer("/subresources/scale").map(|s| ScalePaths {
            spec_replicas: s.get("specReplicasPath").and_then(Value::as_str).unwrap_or(".spec.replicas").into(),
            status_replicas: s.get("statusReplicasPath").and_then(Value::as_str).unwrap_or(".status.replicas").into(),
            label_selector: s.get("labelSelectorPath").and_then(Value::as_str).map(String::from),
        });
        let printer_columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c.get("name").and_then(Value::as_str).unwrap_or_default().into(),
                column_type: c.get("type").and_then(Value::as_str).unwrap_or("string").into(),
                format: c.get("format").and_then(Value::as_str).unwrap_or_default().into(),
                description: c.get("description").and_then(Value::as_str).unwrap_or_default().into(),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                json_path: c.get("jsonPath").and_then(Value::as_str).unwrap_or_default().into(),
            })
            .collect();
        let singular = text("/spec/names/singular");
        out.push(ResourceType {
            group: group.clone(),
            version: version.get("name").and_then(Value::as_str).unwrap_or_default().into(),
            plural: text("/spec/names/plural"),
            singular: if singular.is_empty() { kind.to_lowercase() } else { singular },
            kind: kind.clone(),
            list_kind: {
                let list = text("/spec/names/listKind");
                if list.is_empty() { format!("{kind}List") } else { list }
            },
            namespaced: text("/spec/scope") != "Cluster",
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            has_status: version.pointer("/subresources/status").is_some(),
            scale,
            generation: true,
            verbs: ALL_VERBS.to_vec(),
            extra: Vec::new(),
            review: false,
            custom: Some(CustomInfo {
                schema: version.pointer("/schema/openAPIV3Schema").cloned(),
                printer_columns,
                crd_name: text("/metadata/name"),
                storage_version: storage_version.clone(),
                terminating,
                conversion_webhook: (text("/spec/conversion/strategy") == "Webhook")
                    .then(|| crd.pointer("/spec/conversion/webhook").cloned())
                    .flatten(),
            }),
            storage: None,
        });
    }
    out
}

/// Whether a schema sets a default anywhere.
pub fn has_defaults(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => map.contains_key("default") || map.values().any(has_defaults),
        Value::Array(items) => items.iter().any(has_defaults),
        _ => false,
    }
}

/// Fills in `default:` values from the schema where the object has no value.
pub fn apply_defaults(object: &mut Value, schema: &Value) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        if let (Some(items), Some(list)) = (schema.get("items"), object.as_array_mut()) {
            for item in list {
                apply_defaults(item, items);
            }
        }
        return;
    };
    let Some(map) = object.as_object_mut() else {
        return;
    };
    for (name, property) in properties {
        if name == "metadata" || name == "apiVersion" || name == "kind" {
            continue;
        }
        if !map.contains_key(name)
            && let Some(default) = property.get("default")
        {
            map.insert(name.clone(), default.clone());
        }
        if let Some(child) = map.get_mut(name) {
            apply_defaults(child, property);
        }
    }
}

/// Checks types, required fields and enums of the structural schema.
pub fn validate_against_schema(object: &Value, schema: &Value, causes: &mut Vec<Cause>) {
    check(object, schema, "", causes);
}

/// Checks one value as kube-openapi's schema validator does, in its order: type, string
/// (maxLength, minLength, pattern), number (multipleOf, maximum, minimum), array (items, then
/// minItems, maxItems, uniqueItems), enum, object (min/maxProperties, properties in name order,
/// then required). Causes are worded as apiextensions-apiserver converts them.
fn check(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() {
        // Null values are dropped by pruning upstream; accept them.
        return;
    }
    let field = |name: &str| {
        if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
    };
    let shown_path = if path.is_empty() { "<root>".to_string() } else { path.to_string() };
    // "Invalid value: V: <path> in body <detail>" with V as Go's field errors print it.
    let invalid = |causes: &mut Vec<Cause>, detail: String| {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: path.to_string(),
            message: format!("Invalid value: {}: {shown_path} in body {detail}", go_value(value)),
        });
    };
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let ok = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string() || int_or_string,
            "integer" => value.is_i64() || value.is_u64() || (value.is_string() && int_or_string),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            // Upstream reports the JSON type it found as the value.
            let found = json_type(value);
            causes.push(Cause {
                reason: "FieldValueTypeInvalid",
                field: shown_path.clone(),
                message: format!(
                    "Invalid value: \"{found}\": {shown_path} in body must be of type {expected}: \"{found}\""
                ),
            });
            return;
        }
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            causes.push(Cause::too_long(path.to_string(), max as usize));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            invalid(causes, format!("should be at least {min} chars long"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && let Ok(re) = regex::Regex::new(pattern)
            && !re.is_match(text)
        {
            invalid(causes, format!("should match '{pattern}'"));
        }
    }
    if let Some(number) = value.as_f64().filter(|_| value.is_number()) {
        if let Some(factor) = schema.get("multipleOf").and_then(Value::as_f64)
            && factor > 0.0
            && (number / factor).fract() != 0.0
        {
            invalid(causes, format!("should be a multiple of {}", go_number(factor)));
        }
        let exclusive = |key: &str| schema.get(key).and_then(Value::as_bool) == Some(true);
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if exclusive("exclusiveMaximum") && number >= max {
                invalid(causes, format!("should be less than {}", go_number(max)));
            } else if number > max {
                invalid(causes, format!("should be less than or equal to {}", go_number(max)));
            }
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if exclusive("exclusiveMinimum") && number <= min {
                invalid(causes, format!("should be greater than {}", go_number(min)));
            } else if number < min {
                invalid(causes, format!("should be greater than or equal to {}", go_number(min)));
            }
        }
    }
    if let Some(list) = value.as_array() {
        if let Some(items) = schema.get("items") {
            for (i, item) in list.iter().enumerate() {
                check(item, items, &format!("{path}[{i}]"), causes);
            }
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (list.len() as u64) < min
        {
            invalid(causes, format!("should have at least {min} items"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && list.len() as u64 > max
        {
            causes.push(Cause {
                reason: "FieldValueTooMany",
                field: path.to_string(),
                message: format!("Too many: {}: must have at most {max} items", list.len()),
            });
        }
        if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true)
            && list.iter().enumerate().any(|(i, a)| list[..i].contains(a))
        {
            invalid(causes, "shouldn't contain duplicates".into());
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let list: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.to_string(),
            message: format!("Unsupported value: {value}: supported values: {}", list.join(", ")),
        });
    }
    if let Some(map) = value.as_object() {
        let count = map.len() as u64;
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
            && count < min
        {
            invalid(causes, format!("should have at least {min} properties"));
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && count > max
        {
            causes.push(Cause {
                reason: "FieldValueTooMany",
                field: path.to_string(),
                message: format!("Too many: {count}: must have at most {max} items"),
            });
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            let mut names: Vec<&String> = map.keys().collect();
            names.sort();
            for name in names {
                if path.is_empty() && (name == "metadata" || name == "apiVersion" || name == "kind") {
                    continue;
                }
                if let Some(child_schema) = properties.get(name) {
                    check(&map[name], child_schema, &field(name), causes);
                }
            }
        } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            for (name, child) in map {
                check(child, additional, &field(name), causes);
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    causes.push(Cause::required(field(name), ""));
                }
            }
        }
    }
}

/// A number as Go's `%v` prints a float64 bound (`10`, `1.5`).
fn go_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// A value as Kubernetes field errors print it: strings quoted, numbers and booleans bare.
fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
          "metadata": {"name": "widgets.example.com"},
          "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
              "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
              "additionalPrinterColumns": [{"name": "Color", "type": "string", "jsonPath": ".spec.color"}],
              "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["color"], "properties": {
                  "color": {"type": "string", "enum": ["red", "blue"]},
                  "replicas": {"type": "integer", "default": 1}}}}}}}]}})
    }

    #[test]
    fn established_crd_serves_its_versions() {
        let mut crd = widget_crd();
        let mut causes = Vec::new();
        validate(&crd, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        prepare(&mut crd);
        assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
        assert_eq!(crd["status"]["acceptedNames"]["listKind"], "WidgetList");
        let types = resource_types(&crd);
        assert_eq!(types.len(), 1);
        let t = &types[0];
        assert_eq!(
            (t.group.as_str(), t.version.as_str(), t.plural.as_str(), t.singular.as_str()),
            ("example.com", "v1", "widgets", "widget")
        );
        assert!(t.has_status && t.scale.is_some() && t.namespaced);
        assert_eq!(t.custom.as_ref().unwrap().printer_columns[0].json_path, ".spec.color");
    }

    #[test]
    fn conditions_written_through_status_are_kept() {
        let mut crd = widget_crd();
        prepare(&mut crd);
        crd["status"]["conditions"].as_array_mut().unwrap().push(json!({"message": "updated"}));
        prepare(&mut crd);
        let conditions = crd["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 3);
        assert_eq!(conditions[2], json!({"message": "updated"}));
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let mut crd = widget_crd();
        crd["metadata"]["name"] = json!("wrong.example.com");
        let mut causes = Vec::new();
        validate(&crd, &mut causes);
        assert_eq!(causes[0].field, "metadata.name");
    }

    #[test]
    fn schema_defaults_and_validation() {
        let crd = widget_crd();
        let schema = crd.pointer("/spec/versions/0/schema/openAPIV3Schema").unwrap();
        let mut object = json!({"spec": {"color": "red"}});
        apply_defaults(&mut object, schema);
        assert_eq!(object["spec"]["replicas"], 1);
        let mut causes = Vec::new();
        validate_against_schema(&json!({"spec": {"color": "green", "replicas": "x"}}), schema, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.color", "spec.replicas"]);
        let mut causes = Vec::new();
        validate_against_schema(&json!({"spec": {}}), schema, &mut causes);
        assert_eq!(causes[0].field, "spec.color");
        assert_eq!(causes[0].reason, "FieldValueRequired");
    }
}
