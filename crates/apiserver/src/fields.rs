//! managedFields: who owns which field (the `FieldsV1` trees), recording `Update` writes, and
//! server-side apply (merge, conflicts, removal of fields a manager stopped applying).

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Cause, Subject};
use crate::patch::{ListStrategy, list_strategy};

/// Metadata fields the server owns; never tracked as anybody's.
const SERVER_META: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "name",
    "namespace",
];

/// How lists merge: built-in kinds by the strategic-merge table (with server-side apply's own
/// list-map keys where they differ), custom resources by their schema's `x-kubernetes-list-type`.
#[derive(Clone, Copy, Debug)]
pub struct ListRules<'a> {
    /// Built-in kind (merge-key table applies).
    pub builtin: bool,
    /// A custom resource's `openAPIV3Schema` (its list types and list-map keys apply).
    pub schema: Option<&'a Value>,
    /// The kind's shape: which objects are maps (their node is a member, `.`) and which structs.
    pub shape: Option<&'a crate::openapi::Shape>,
    /// Field sets of updates (not of applies) hold the map nodes they create (`.`).
    pub map_members: bool,
}

impl<'a> ListRules<'a> {
    /// Rules of a built-in kind.
    pub const BUILTIN: ListRules<'static> = ListRules { builtin: true, schema: None, shape: None, map_members: false };

    /// Whether the object at `path` is a map (its own node is then a member of a field set, as
    /// upstream's `.` entries show) rather than a struct.
    fn is_map(&self, path: &[String]) -> bool {
        if !self.map_members {
            return false;
        }
        let names: Vec<&str> = path.iter().filter(|s| !s.starts_with('[')).map(String::as_str).collect();
        match names.as_slice() {
            ["metadata", "labels" | "annotations"] => true,
            ["metadata", ..] => false,
            _ => self.shape.is_some_and(|shape| shape.is_map(&names)),
        }
    }

    /// How the list at `path` merges (`[key=value]` segments of item paths are skipped).
    fn merge(&self, path: &[String]) -> Merge {
        let names: Vec<&str> = path.iter().filter(|s| !s.starts_with('[')).map(String::as_str).collect();
        if names.first() == Some(&"metadata") || self.builtin {
            return match list_strategy(&names) {
                // Server-side apply keys ports by number and protocol (upstream's list-map keys),
                // where strategic merge patch uses the number alone.
                ListStrategy::MergeByKey("containerPort") => {
                    Merge::Keys(vec!["containerPort".into(), "protocol".into()])
                }
                ListStrategy::MergeByKey("port") if names == ["spec", "ports"] => {
                    Merge::Keys(vec!["port".into(), "protocol".into()])
                }
                ListStrategy::MergeByKey(key) => Merge::Keys(vec![key.to_string()]),
                ListStrategy::MergePrimitives => Merge::Set,
                ListStrategy::Replace => Merge::Atomic,
            };
        }
        let Some(list) = self.schema.and_then(|schema| schema_at(schema, &names)) else {
            return Merge::Atomic;
        };
        match list.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => Merge::Set,
            Some("map") => {
                let keys: Vec<String> = list
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect();
                if keys.is_empty() { Merge::Atomic } else { Merge::Keys(keys) }
            }
            _ => Merge::Atomic,
        }
    }
}

/// How a list merges under server-side apply.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Merge {
    /// Items are maps identified by these fields (`x-kubernetes-list-type: map`).
    Keys(Vec<String>),
    /// Items are scalars, each owned on its own (`set`).
    Set,
    /// The list is one value (`atomic`, the default).
    Atomic,
}

/// The schema of the field at `names` (object fields; lists are stepped through to their items).
fn schema_at<'a>(schema: &'a Value, names: &[&str]) -> Option<&'a Value> {
    let mut here = schema;
    for name in names {
        if here.get("type").and_then(Value::as_str) == Some("array") {
            here = here.get("items")?;
        }
        here = here
            .get("properties")
            .and_then(|p| p.get(*name))
            .or_else(|| here.get("additionalProperties").filter(|a| a.is_object()))?;
    }
    Some(here)
}

/// The value of key field `key` of a list item: as set, or its server default (`protocol`
/// defaults to TCP, which is how upstream keys ports whose manifest omits it).
fn key_value<'v>(item: &'v Value, key: &str) -> Option<&'v Value> {
    static TCP: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!("TCP"));
    match item.get(key) {
        Some(value) if !value.is_null() => Some(value),
        _ if key == "protocol" => Some(&TCP),
        _ => None,
    }
}

/// The identity of a list item under `keys` (None when a key field is missing).
fn item_key(item: &Value, keys: &[String]) -> Option<Map<String, Value>> {
    keys.iter().map(|k| key_value(item, k).map(|v| (k.clone(), v.clone()))).collect()
}

/// Whether `item` is the one `key` identifies.
fn has_key(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| key_value(item, k) == Some(v))
}

/// `[name="c"]` / `[containerPort=53,protocol="UDP"]`, as upstream prints item paths.
fn key_segment(key: &Map<String, Value>) -> String {
    let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("[{}]", parts.join(","))
}

/// The `FieldsV1` tree of every field set in `value`.
pub fn field_set(value: &Value, rules: ListRules<'_>) -> Map<String, Value> {
    let mut path = Vec::new();
    match value {
        Value::Object(map) => object_set(map, rules, &mut path),
        _ => Map::new(),
    }
}

fn object_set(map: &Map<String, Value>, rules: ListRules<'_>, path: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        if path.is_empty() && (key == "apiVersion" || key == "kind") {
            continue;
        }
        if path.len() == 1 && path[0] == "metadata" && SERVER_META.contains(&key.as_str()) {
            continue;
        }
        if value.is_null() {
            continue;
        }
        path.push(key.clone());
        let mut child = value_set(value, rules, path);
        let is_map = value.is_object() && rules.is_map(path);
        path.pop();
        if child.is_empty()
            && value.as_object().is_some_and(|m| !m.is_empty() || (path.is_empty() && key == "metadata"))
        {
            // Only server-owned fields below (e.g. metadata with just a name).
            continue;
        }
        if is_map {
            child.insert(".".into(), json!({}));
        }
        out.insert(format!("f:{key}"), Value::Object(child));
    }
    out
}

fn value_set(value: &Value, rules: ListRules<'_>, path: &mut Vec<String>) -> Map<String, Value> {
    match value {
        Value::Object(map) => object_set(map, rules, path),
        Value::Array(items) => match rules.merge(path) {
            Merge::Keys(keys) => {
                let mut out = Map::new();
                for item in items {
                    let Some(item_map) = item.as_object() else {
                        continue;
                    };
                    let Some(key) = item_key(item, &keys) else { continue };
                    let mut child = object_set(item_map, rules, path);
                    child.insert(".".into(), json!({}));
                    out.insert(format!("k:{}", Value::Object(key)), Value::Object(child));
                }
                out
            }
            Merge::Set => items.iter().map(|v| (format!("v:{v}"), json!({}))).collect(),
            Merge::Atomic => Map::new(),
        },
        _ => Map::new(),
    }
}

/// The fields whose values differ between `old` and `new` (set or changed in `new`).
pub fn changed_set(old: &Value, new: &Value, rules: ListRules<'_>) -> Map<String, Value> {
    let mut path = Vec::new();
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => changed_objects(o, n, rules, &mut path),
        (_, new) => field_set(new, rules),
    }
}

fn changed_objects(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    rules: ListRules<'_>,
    path: &mut Vec<String>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in new {
        if path.is_empty() && (key == "apiVersion" || key == "kind") {
            continue;
        }
        if path.len() == 1 && path[0] == "metadata" && SERVER_META.contains(&key.as_str()) {
            continue;
        }
        if value.is_null() || old.get(key) == Some(value) {
            continue;
        }
        path.push(key.clone());
        let child = match (old.get(key), value) {
            (Some(Value::Object(o)), Value::Object(n)) => {
                let child = changed_objects(o, n, rules, path);
                if child.is_empty() {
                    // Only server-owned fields differ below here.
                    path.pop();
                    continue;
                }
                child
            }
            _ => {
                let mut child = value_set(value, rules, path);
                if child.is_empty() && value.as_object().is_some_and(|m| !m.is_empty()) {
                    // Only server-owned fields below (e.g. a created object's metadata).
                    path.pop();
                    continue;
                }
                if value.is_object() && rules.is_map(path) {
                    // A map that was not there before is itself a member.
                    child.insert(".".into(), json!({}));
                }
                child
            }
        };
        path.pop();
        out.insert(format!("f:{key}"), Value::Object(child));
    }
    out
}

/// `a ∪ b`.
pub fn union(a: &mut Map<String, Value>, b: &Map<String, Value>) {
    for (key, child) in b {
        match (a.get_mut(key), child) {
            (Some(Value::Object(existing)), Value::Object(c)) => union(existing, c),
            (None, c) => {
                a.insert(key.clone(), c.clone());
            }
            _ => {}
        }
    }
}

/// `a ∖ b`: removes from `a` every leaf `b` has (a leaf of `b` removes the whole subtree).
pub fn subtract(a: &mut Map<String, Value>, b: &Map<String, Value>) {
    let keys: Vec<String> = a.keys().cloned().collect();
    for key in keys {
        let Some(Value::Object(bc)) = b.get(&key) else {
            continue;
        };
        if bc.is_empty() || bc.keys().all(|k| k == ".") {
            a.remove(&key);
            continue;
        }
        if let Some(Value::Object(ac)) = a.get_mut(&key) {
            let was_leaf = ac.is_empty();
            subtract(ac, bc);
            if !was_leaf && ac.keys().all(|k| k == ".") {
                a.remove(&key);
            }
        }
    }
}

/// The set difference `a ∖ b` of two field sets, member by member: a node of `b` that is a leaf
/// (the field itself) removes only the same member of `a`, not what `a` owns below it.
pub fn difference(a: &mut Map<String, Value>, b: &Map<String, Value>) {
    let keys: Vec<String> = a.keys().cloned().collect();
    for key in keys {
        let Some(Value::Object(theirs)) = b.get(&key) else {
            continue;
        };
        let Some(Value::Object(mine)) = a.get_mut(&key) else {
            continue;
        };
        if mine.keys().all(|k| k == ".") {
            // The field itself (a leaf, or an item marker only) is in both.
            a.remove(&key);
            continue;
        }
        if theirs.contains_key(".") {
            mine.remove(".");
        }
        difference(mine, theirs);
        if mine.is_empty() {
            a.remove(&key);
        }
    }
}

/// One managedFields entry, as stored.
fn entry(manager: &str, operation: &str, api_version: &str, subresource: &str, fields: Map<String, Value>) -> Value {
    let mut e = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": crate::registry::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if !subresource.is_empty() {
        e["subresource"] = json!(subresource);
    }
    e
}

fn entry_fields(e: &Value) -> Map<String, Value> {
    e.get("fieldsV1").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn same_slot(e: &Value, manager: &str, operation: &str, subresource: &str) -> bool {
    e.get("manager").and_then(Value::as_str) == Some(manager)
        && e.get("operation").and_then(Value::as_str) == Some(operation)
        && e.get("subresource").and_then(Value::as_str).unwrap_or("") == subresource
}

fn managed_entries(object: &Value) -> Vec<Value> {
    object.pointer("/metadata/managedFields").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn store_entries(object: &mut Value, entries: Vec<Value>) {
    let entries: Vec<Value> = entries
        .into_iter()
        .filter(|e| e.get("fieldsV1").and_then(Value::as_object).is_some_and(|f| !f.is_empty()))
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Records a non-apply write by `manager`: it takes ownership of every field it changed.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    rules: ListRules<'_>,
) {
    let rules = ListRules { map_members: true, ..rules };
    let empty = json!({});
    let mut compare_new = new.clone();
    let mut compare_old = old.cloned().unwrap_or(json!({}));
    if subresource != "status" {
        for v in [&mut compare_new, &mut compare_old] {
            if let Some(m) = v.as_object_mut() {
                m.remove("status");
            }
        }
    }
    let changed = changed_set(if old.is_some() { &compare_old } else { &empty }, &compare_new, rules);
    // A client that rewrites managedFields itself (kubectl's csaupgrade) keeps what it wrote.
    let client_entries = new.pointer("/metadata/managedFields").cloned();
    let old_entries = old.map(managed_entries).unwrap_or_default();
    if old.is_some() && client_entries.as_ref() != old.and_then(|o| o.pointer("/metadata/managedFields")) {
        return;
    }
    if changed.is_empty() {
        store_entries(new, old_entries);
        return;
    }
    let mut entries = Vec::new();
    let mut mine = Map::new();
    for e in old_entries {
        if same_slot(&e, manager, "Update", subresource) {
            mine = entry_fields(&e);
            continue;
        }
        let mut fields = entry_fields(&e);
        subtract(&mut fields, &changed);
        let mut e = e;
        e["fieldsV1"] = Value::Object(fields);
        entries.push(e);
    }
    union(&mut mine, &changed);
    entries.push(entry(manager, "Update", api_version, subresource, mine));
    store_entries(new, entries);
}

/// Server-side apply of `applied` by `manager` onto `live` (None = create). Returns the new object.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    subresource: &str,
    rules: ListRules<'_>,
    subject: Subject,
) -> Result<Value, ApiError> {
    let new_set = field_set(applied, rules);
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let entries = live.map(managed_entries).unwrap_or_default();
    let mut old_mine = Map::new();
    let mut others = Map::new();
    for e in &entries {
        if same_slot(e, manager, "Apply", subresource) {
            old_mine = entry_fields(e);
        } else {
            union(&mut others, &entry_fields(e));
        }
    }
    if !force && live.is_some() {
        let mut conflicts = Vec::new();
        for e in &entries {
            if same_slot(e, manager, "Apply", subresource) {
                continue;
            }
            let theirs = entry_fields(e);
            let mut path = Vec::new();
            find_conflicts(applied, &result, &theirs, rules, &mut path, &mut |field| {
                let who = e.get("manager").and_then(Value::as_str).unwrap_or("unknown");
                let version = e.get("apiVersion").and_then(Value::as_str).unwrap_or(api_version);
                // Upstream names the API version of Update managers only.
                let message = if e.get("operation").and_then(Value::as_str) == Some("Apply") {
                    format!("conflict with \"{who}\"")
                } else {
                    format!("conflict with \"{who}\" using {version}")
                };
                conflicts.push(Cause { reason: "FieldManagerConflict", message, field });
            });
        }
        if !conflicts.is_empty() {
            // Grouped by manager, as upstream words them.
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for conflict in &conflicts {
                match groups.iter_mut().find(|(m, _)| *m == conflict.message) {
                    Some((_, fields)) => fields.push(conflict.field.clone()),
                    None => groups.push((conflict.message.clone(), vec![conflict.field.clone()])),
                }
            }
            let lines: Vec<String> = groups
                .iter()
                .map(|(who, fields)| match fields.as_slice() {
                    [only] => format!("{who}: {only}"),
                    many => format!(
                        "{}:\n{}",
                        who.replacen("conflict with", "conflicts with", 1),
                        many.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n")
                    ),
                })
                .collect();
            let noun = if conflicts.len() == 1 { "conflict" } else { "conflicts" };
            let message = format!("Apply failed with {} {noun}: {}", conflicts.len(), lines.join("\n"));
            return Err(ApiError::Conflict { message, subject, causes: conflicts });
        }
    }
    let mut path = Vec::new();
    merge_applied(&mut result, applied, rules, &mut path);
    let mut removed = old_mine.clone();
    difference(&mut removed, &new_set);
    remove_fields(&mut result, &removed, &others);
    let mut new_entries = Vec::new();
    for e in entries {
        if same_slot(&e, manager, "Apply", subresource) {
            continue;
        }
        let mut e = e;
        if force {
            let mut fields = entry_fields(&e);
            subtract(&mut fields, &new_set);
            e["fieldsV1"] = Value::Object(fields);
        }
        new_entries.push(e);
    }
    new_entries.push(entry(manager, "Apply", api_version, subresource, new_set));
    store_entries(&mut result, new_entries);
    Ok(result)
}

fn find_conflicts(
    applied: &Value,
    live: &Value,
    theirs: &Map<String, Value>,
    rules: ListRules<'_>,
    path: &mut Vec<String>,
    report: &mut dyn FnMut(String),
) {
    let Value::Object(applied) = applied else {
        return;
    };
    for (key, value) in applied {
        if path.is_empty() && (key == "apiVersion" || key == "kind") {
            continue;
        }
        let Some(Value::Object(their_child)) = theirs.get(&format!("f:{key}")) else {
            continue;
        };
        let live_value = live.get(key).unwrap_or(&Value::Null);
        if live_value == value || value.as_object().is_some_and(|m| m.is_empty()) {
            continue;
        }
        path.push(key.clone());
        match value {
            Value::Object(_) if !their_child.is_empty() => {
                find_conflicts(value, live_value, their_child, rules, path, report)
            }
            Value::Array(items) => match rules.merge(path) {
                Merge::Keys(keys) => {
                    for item in items {
                        let Some(key) = item_key(item, &keys) else {
                            continue;
                        };
                        let Some(Value::Object(their_item)) =
                            their_child.get(&format!("k:{}", Value::Object(key.clone())))
                        else {
                            continue;
                        };
                        let live_item = live_value
                            .as_array()
                            .and_then(|l| l.iter().find(|i| has_key(i, &key)))
                            .unwrap_or(&Value::Null);
                        if live_item != item {
                            path.push(key_segment(&key));
                            find_conflicts(item, live_item, their_item, rules, path, report);
                            path.pop();
                        }
                    }
                }
                Merge::Set => {}
                Merge::Atomic => report(field_path(path)),
            },
            _ => report(field_path(path)),
        }
        path.pop();
    }
}

/// `.spec.containers[name="c"].image`, as the real server prints conflict paths.
fn field_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !segment.starts_with('[') {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

fn merge_applied(target: &mut Value, applied: &Value, rules: ListRules<'_>, path: &mut Vec<String>) {
    let Value::Object(applied) = applied else {
        *target = applied.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target_map = target.as_object_mut().expect("made a map");
    for (key, value) in applied {
        if value.is_null() {
            continue;
        }
        path.push(key.clone());
        match value {
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert_with(|| json!({}));
                merge_applied(slot, value, rules, path);
            }
            Value::Array(items) => match rules.merge(path) {
                Merge::Keys(keys) => {
                    let slot = target_map.entry(key.clone()).or_insert_with(|| json!([]));
                    if !slot.is_array() {
                        *slot = json!([]);
                    }
                    let list = slot.as_array_mut().expect("made a list");
                    for item in items {
                        let existing = item_key(item, &keys).and_then(|k| list.iter_mut().find(|l| has_key(l, &k)));
                        match existing {
                            Some(existing) => merge_applied(existing, item, rules, path),
                            None => list.push(item.clone()),
                        }
                    }
                }
                Merge::Set => {
                    let slot = target_map.entry(key.clone()).or_insert_with(|| json!([]));
                    if !slot.is_array() {
                        *slot = json!([]);
                    }
                    let list = slot.as_array_mut().expect("made a list");
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                }
                Merge::Atomic => {
                    target_map.insert(key.clone(), value.clone());
                }
            },
            other => {
                target_map.insert(key.clone(), other.clone());
            }
        }
        path.pop();
    }
}

fn remove_fields(object: &mut Value, removed: &Map<String, Value>, others: &Map<String, Value>) {
    let empty = Map::new();
    for (key, child) in removed {
        let child = child.as_object().unwrap_or(&empty);
        let other = others.get(key).and_then(Value::as_object);
        let is_leaf = child.keys().all(|k| k == ".");
        if let Some(name) = key.strip_prefix("f:") {
            let Some(map) = object.as_object_mut() else {
                continue;
            };
            if is_leaf {
                if other.is_none() {
                    map.remove(name);
                }
            } else if let Some(sub) = map.get_mut(name) {
                remove_fields(sub, child, other.unwrap_or(&empty));
                let now_empty =
                    sub.as_object().is_some_and(|m| m.is_empty()) || sub.as_array().is_some_and(|a| a.is_empty());
                if now_empty && other.is_none() {
                    map.remove(name);
                }
            }
        } else if let Some(keys) = key.strip_prefix("k:") {
            let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(keys) else {
                continue;
            };
            let Some(list) = object.as_array_mut() else {
                continue;
            };
            let position = list.iter().position(|item| has_key(item, &keys));
            if let Some(i) = position {
                if other.is_none() {
                    list.remove(i);
                } else {
                    remove_fields(&mut list[i], child, other.unwrap_or(&empty));
                }
            }
        } else if let Some(value) = key.strip_prefix("v:") {
            let Ok(value) = serde_json::from_str::<Value>(value) else {
                continue;
            };
            if other.is_none()
                && let Some(list) = object.as_array_mut()
            {
                list.retain(|v| v != &value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILTIN: ListRules<'static> = ListRules::BUILTIN;

    fn subject() -> Subject {
        Subject { group: String::new(), kind: "configmaps".into(), name: "cm".into() }
    }

    #[test]
    fn field_sets_key_list_items() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let set = field_set(&pod, BUILTIN);
        assert_eq!(
            Value::Object(set),
            json!({"f:metadata": {"f:labels": {"f:a": {}}},
                   "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}})
        );
    }

    #[test]
    fn apply_removes_fields_the_manager_dropped_but_keeps_others() {
        let first =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}});
        let live = apply(None, &first, "mgr", false, "v1", "", BUILTIN, subject()).unwrap();
        assert_eq!(live["data"], json!({"a": "1", "b": "2"}));
        // Someone else sets c with an update.
        let mut edited = live.clone();
        edited["data"]["c"] = json!("3");
        record_update(Some(&live), &mut edited, "kubectl-edit", "v1", "", BUILTIN);
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}});
        let live = apply(Some(&edited), &second, "mgr", false, "v1", "", BUILTIN, subject()).unwrap();
        assert_eq!(live["data"], json!({"a": "1", "c": "3"}));
        let managers: Vec<&str> = live["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["kubectl-edit", "mgr"]);
    }

    #[test]
    fn apply_conflicts_with_another_owner_unless_forced() {
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}});
        let live = apply(None, &base, "one", false, "v1", "", BUILTIN, subject()).unwrap();
        let change = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "2"}});
        let error = apply(Some(&live), &change, "two", false, "v1", "", BUILTIN, subject()).unwrap_err();
        assert_eq!(error.code(), 409);
        assert_eq!(error.to_string(), "Apply failed with 1 conflict: conflict with \"one\": .data.a");
        let forced = apply(Some(&live), &change, "two", true, "v1", "", BUILTIN, subject()).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        let entries = forced["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "ownership moved to the forcing manager: {entries:?}");
        // The same value is not a conflict: both own it.
        let same = apply(Some(&live), &base, "three", false, "v1", "", BUILTIN, subject()).unwrap();
        assert_eq!(same["metadata"]["managedFields"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn apply_merges_containers_by_name() {
        let live = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
        let applied = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "b", "image": "2"}]}});
        let out = apply(Some(&live), &applied, "m", true, "v1", "", BUILTIN, subject()).unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]));
    }
}
