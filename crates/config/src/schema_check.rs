//! The first validation pass: the document against the generated JSON Schema, collecting every
//! unknown key (with a suggestion), every reference key vkube does not implement, and every
//! wrong type, each with its field path.

use serde_json::Value;

use crate::Problem;

/// Keys the reference `vcluster.yaml` has that vkube does not implement (yet), by parent path,
/// with what to do instead.
const NOT_IMPLEMENTED: &[(&str, &str, &str)] = &[
    ("networking", "resolveDNS", "vkube's DNS server does not resolve host names yet"),
    ("networking", "advanced", "vkube's cluster domain and kubelet proxying are fixed"),
    ("policies", "resourceQuota", "vkube does not create a host resource quota yet"),
    ("policies", "limitRange", "vkube does not create a host limit range yet"),
    ("policies", "networkPolicy", "vkube does not create host network policies yet"),
    ("policies", "centralAdmission", "vkube has no admission webhooks of its own yet"),
    ("", "rbac", "vkube derives the host RBAC from the sync settings (see `vkube config rbac`)"),
    ("", "experimental", "vkube has no experimental settings"),
    ("", "integrations", "vkube has no integrations yet"),
    ("", "exportKubeConfig", "vkube writes its kubeconfig to the data directory"),
    ("", "deploy", "vkube deploys nothing into the virtual cluster yet"),
    ("", "telemetry", "vkube sends no telemetry"),
    ("", "plugins", "vkube has no plugins"),
    ("", "plugin", "vkube has no plugins"),
    ("", "privateNodes", "vkube does not support private nodes yet"),
    ("", "pro", "every vkube feature is available without a license"),
    ("", "sleepMode", "vkube does not implement sleep mode yet"),
    ("", "external", "vkube has no external platform settings"),
    ("", "logging", "set VKUBE_LOG instead"),
    ("controlPlane", "distro", "vkube runs its own control plane; there is no distro to choose"),
    ("controlPlane.statefulSet", "*", "vkube runs as processes, not a StatefulSet; only highAvailability applies"),
    ("controlPlane", "service", "vkube does not create a control-plane service yet"),
    ("controlPlane", "ingress", "vkube does not create a control-plane ingress yet"),
    ("controlPlane", "coredns", "vkube's DNS server is not configurable yet"),
    ("controlPlane.advanced", "serviceAccount", "vkube's control plane runs as a process, without a service account"),
    ("controlPlane.advanced", "headlessService", "vkube creates no headless control-plane service"),
    ("controlPlane.advanced", "konnectivity", "vkube needs no konnectivity"),
    ("controlPlane.advanced", "registry", "vkube runs no embedded registry"),
    ("controlPlane.advanced", "cloudControllerManager", "vkube runs no cloud controller manager"),
    ("controlPlane.advanced", "globalMetadata", "vkube does not label its own deployment objects"),
    ("controlPlane.advanced", "podDisruptionBudget", "vkube runs as a process, not a pod"),
    ("controlPlane", "hostPathMapper", "vkube does not map host paths yet"),
    ("controlPlane", "serviceMonitor", "vkube does not create service monitors"),
    (
        "controlPlane.backingStore.etcd",
        "embedded",
        "use controlPlane.backingStore.etcd.external or the embedded database",
    ),
    ("controlPlane.backingStore.etcd", "deploy", "use controlPlane.backingStore.etcd.external with your own etcd"),
    ("controlPlane.backingStore.database", "external", "use the embedded database or an external etcd"),
    ("sync.toHost", "namespaces", "namespace sync is not implemented yet"),
    ("sync.toHost", "resourceClaims", "dynamic resource allocation is not synced yet"),
    ("sync.toHost", "resourceClaimTemplates", "dynamic resource allocation is not synced yet"),
    ("sync.toHost", "gatewayApi", "Gateway API resources are not synced yet"),
    ("sync.toHost", "volumeSnapshotContents", "volume snapshot contents are not synced yet"),
    ("sync.toHost.pods", "hybridScheduling", "hybrid scheduling is not implemented yet"),
    ("sync.fromHost", "deviceClasses", "dynamic resource allocation is not synced yet"),
    ("sync.fromHost", "gatewayClasses", "Gateway API resources are not synced yet"),
    ("sync.fromHost", "gateways", "Gateway API resources are not synced yet"),
    ("sync.fromHost", "volumeSnapshotClasses", "volume snapshot classes are not synced yet"),
];

/// Checks `value` against `schema`, returning every problem and the document without the values
/// the problems are about (so the later passes can still check everything else).
pub(crate) fn check(schema: &Value, value: &Value) -> (Vec<Problem>, Value) {
    let mut found = Vec::new();
    walk(schema, schema, value, &mut Vec::new(), &mut found);
    let mut pruned = value.clone();
    for (path, _) in &found {
        remove(&mut pruned, path);
    }
    (found.into_iter().map(|(_, problem)| problem).collect(), pruned)
}

/// Removes the value at `path` (keys and `[i]` indexes); list items are set to null rather than
/// removed so the other indexes still name the same items.
fn remove(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        *value = Value::Object(Default::default());
        return;
    };
    let mut here = value;
    for segment in parents {
        let next = match segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(index) => index.parse::<usize>().ok().and_then(|i| here.get_mut(i)),
            None => here.get_mut(segment.as_str()),
        };
        match next {
            Some(next) => here = next,
            None => return,
        }
    }
    match last.strip_prefix('[').and_then(|s| s.strip_suffix(']')).and_then(|i| i.parse::<usize>().ok()) {
        Some(index) => {
            if let Some(item) = here.get_mut(index) {
                *item = Value::Null;
            }
        }
        None => {
            if let Some(map) = here.as_object_mut() {
                map.remove(last.as_str());
            }
        }
    }
}

/// Formats a path of keys and indexes as `a.b[2]["x.y"]`.
pub(crate) fn format_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if segment.starts_with('[') {
            out.push_str(segment);
        } else if segment.contains(['.', '/', ' ']) || segment.is_empty() {
            out.push_str(&format!("[{segment:?}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    for _ in 0..16 {
        match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
            Some(name) => match root.pointer(&format!("/$defs/{name}")) {
                Some(target) => schema = target,
                None => return schema,
            },
            None => return schema,
        }
    }
    schema
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

fn matches_type(expected: &str, value: &Value) -> bool {
    match expected {
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

type Found = Vec<(Vec<String>, Problem)>;

fn walk(root: &Value, schema: &Value, value: &Value, path: &mut Vec<String>, problems: &mut Found) {
    let schema = resolve(root, schema);
    if let Some(alternatives) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        let fits = alternatives.iter().any(|alternative| {
            let mut scratch = Vec::new();
            walk(root, alternative, value, &mut path.clone(), &mut scratch);
            scratch.is_empty()
        });
        if !fits {
            let allowed = describe_alternatives(root, alternatives);
            problems.push((
                path.clone(),
                Problem::new(format_path(path), format!("{} is not allowed here (expected {allowed})", shown(value))),
            ));
        }
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            let list: Vec<String> = options.iter().map(shown).collect();
            let message = format!("{} is not one of {}", shown(value), list.join(", "));
            problems.push((path.clone(), Problem::new(format_path(path), message)));
        }
        return;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| matches_type(t, value)) {
        let expected: Vec<String> = types.iter().filter(|t| **t != "null").map(|t| article(t)).collect();
        let message = format!("expected {}, got {} ({})", expected.join(" or "), type_name(value), shown(value));
        problems.push((path.clone(), Problem::new(format_path(path), message)));
        return;
    }
    if let Some(n) = value.as_i64() {
        let min = schema.get("minimum").and_then(Value::as_i64);
        let max = schema.get("maximum").and_then(Value::as_i64);
        if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
            let message = format!("{n} is out of range ({} to {})", min.unwrap_or(i64::MIN), max.unwrap_or(i64::MAX));
            problems.push((path.clone(), Problem::new(format_path(path), message)));
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                path.push(key.clone());
                match properties.and_then(|p| p.get(key)) {
                    Some(child_schema) => walk(root, child_schema, child, path, problems),
                    None => match additional {
                        Some(Value::Bool(false)) | None if properties.is_some() => {
                            let parent = format_path(&path[..path.len() - 1]);
                            problems.push((path.clone(), unknown_key(&parent, key, properties, path)));
                        }
                        Some(child_schema @ Value::Object(_)) => walk(root, child_schema, child, path, problems),
                        _ => {}
                    },
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    walk(root, item_schema, item, path, problems);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn article(kind: &str) -> String {
    match kind {
        "boolean" => "a boolean (true or false)".into(),
        "string" => "a string".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "array" => "a list".into(),
        "object" => "a map".into(),
        other => other.into(),
    }
}

fn describe_alternatives(root: &Value, alternatives: &[Value]) -> String {
    let mut parts = Vec::new();
    for alternative in alternatives {
        let alternative = resolve(root, alternative);
        if let Some(options) = alternative.get("enum").and_then(Value::as_array) {
            parts.push(options.iter().map(shown).collect::<Vec<_>>().join(", "));
        } else if let Some(kind) = alternative.get("type").and_then(Value::as_str) {
            parts.push(article(kind));
        }
    }
    parts.join(" or ")
}

fn unknown_key(
    parent: &str,
    key: &str,
    properties: Option<&serde_json::Map<String, Value>>,
    path: &[String],
) -> Problem {
    let here = format_path(path);
    if let Some((_, _, why)) = NOT_IMPLEMENTED.iter().find(|(p, k, _)| *p == parent && (*k == key || *k == "*")) {
        return Problem::new(
            here,
            format!("the reference option {key:?} is not implemented by vkube ({why}); remove it"),
        );
    }
    if key == "patches" && properties.is_some_and(|p| p.contains_key("translate")) {
        return Problem::new(
            here,
            "vkube reads these rules from \"translate\" (the name the reference documentation uses); rename the key",
        );
    }
    let mut message = format!("unknown key {key:?}");
    if let Some(suggestion) = properties.and_then(|p| closest(key, p.keys())) {
        message.push_str(&format!("; did you mean {suggestion:?}?"));
    } else if let Some(p) = properties {
        let known: Vec<&str> = p.keys().map(String::as_str).collect();
        message.push_str(&format!(" (allowed here: {})", known.join(", ")));
    }
    Problem::new(here, message)
}

/// The known key closest to `key`, if it is close enough to be a typo.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let lower = key.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        let distance =
            if candidate.to_lowercase() == lower { 0 } else { levenshtein(&lower, &candidate.to_lowercase()) };
        let limit = (candidate.len() / 3).clamp(1, 3);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current.push((previous[j] + cost).min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_case() {
        let known: Vec<String> = ["configMaps", "secrets", "pods", "enabled"].iter().map(|s| s.to_string()).collect();
        assert_eq!(closest("configmaps", known.iter()), Some("configMaps"));
        assert_eq!(closest("enabeld", known.iter()), Some("enabled"));
        assert_eq!(closest("podz", known.iter()), Some("pods"));
        assert_eq!(closest("something", known.iter()), None);
    }

    #[test]
    fn paths_quote_keys_with_dots() {
        let path: Vec<String> = ["sync", "toHost", "customResources", "widgets.example.com", "enabled"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(format_path(&path), "sync.toHost.customResources[\"widgets.example.com\"].enabled");
        let path: Vec<String> = ["a", "[1]", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(format_path(&path), "a[1].b");
    }
}
