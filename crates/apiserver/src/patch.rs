//! The three classic patch types: JSON patch (RFC 6902, with Go's `test`-null quirk), JSON merge
//! patch (RFC 7386) and strategic merge patch for built-in kinds, driven by our own merge-key table.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// Applies an RFC 6902 patch the way kube-apiserver (evanphx/json-patch) does: a `test` of
/// `null` succeeds when the path is missing. Failures are 422s carrying the patch error.
pub fn json_patch(document: &mut Value, patch: &Value) -> ApiResult<()> {
    let operations: Vec<json_patch::PatchOperation> =
        serde_json::from_value(patch.clone()).map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
    let mut working = document.clone();
    for operation in &operations {
        if let json_patch::PatchOperation::Test(test) = operation
            && test.value.is_null()
        {
            match working.pointer(test.path.as_str()) {
                None | Some(Value::Null) => continue,
                Some(_) => {
                    return Err(patch_failed(format!("testing value {} failed: test failed", test.path.as_str())));
                }
            }
        }
        json_patch::patch(&mut working, std::slice::from_ref(operation)).map_err(|e| patch_failed(e.to_string()))?;
    }
    *document = working;
    Ok(())
}

fn patch_failed(message: String) -> ApiError {
    // Upstream answers a failed JSON patch with this sentence alone (and empty details).
    tracing::debug!(%message, "JSON patch failed");
    ApiError::InvalidOptions { message: PATCH_FAILED.into(), causes: Vec::new() }
}

/// The message of a JSON patch that could not be applied.
pub const PATCH_FAILED: &str = "the server rejected our request due to an error in our request";

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(document: &mut Value, patch: &Value) -> ApiResult<()> {
    if !patch.is_object() {
        return Err(ApiError::BadRequest("a merge patch must be a JSON object".into()));
    }
    json_patch::merge(document, patch);
    Ok(())
}

/// How a list field merges in a strategic merge patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// Items are objects merged by this key.
    MergeByKey(&'static str),
    /// Items are primitives; the patch's values are added (union).
    MergePrimitives,
    /// The patch's list replaces the original.
    Replace,
}

/// The merge strategy of the list at `path` (field names from the object root, list indexes
/// omitted), as the `patchStrategy`/`patchMergeKey` tags of k8s.io/api declare them.
pub fn list_strategy(path: &[&str]) -> ListStrategy {
    let Some(last) = path.last() else {
        return ListStrategy::Replace;
    };
    let parent = if path.len() >= 2 { path[path.len() - 2] } else { "" };
    match *last {
        "containers" | "initContainers" | "ephemeralContainers" => ListStrategy::MergeByKey("name"),
        "volumes" if parent == "spec" => ListStrategy::MergeByKey("name"),
        "env" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "ports" if matches!(parent, "containers" | "initContainers" | "ephemeralContainers") => {
            ListStrategy::MergeByKey("containerPort")
        }
        "ports" if path == ["spec", "ports"] => ListStrategy::MergeByKey("port"),
        "imagePullSecrets" => ListStrategy::MergeByKey("name"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "finalizers" if parent == "metadata" => ListStrategy::MergePrimitives,
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "conditions" => ListStrategy::MergeByKey("type"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "resourceClaims" if parent == "spec" => ListStrategy::MergeByKey("name"),
        "schedulingGates" => ListStrategy::MergeByKey("name"),
        "addresses" if parent == "status" => ListStrategy::MergeByKey("type"),
        "secrets" if path.len() == 1 => ListStrategy::MergeByKey("name"),
        "podCIDRs" => ListStrategy::MergePrimitives,
        _ => ListStrategy::Replace,
    }
}

/// Applies a strategic merge patch to a built-in object.
pub fn strategic_merge_patch(document: &mut Value, patch: &Value) -> ApiResult<()> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::BadRequest("a strategic merge patch must be a JSON object".into()));
    };
    let original = match document {
        Value::Object(map) => std::mem::take(map),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    match merge_map(original, patch, &mut path)? {
        Some(merged) => *document = Value::Object(merged),
        None => *document = Value::Object(Map::new()),
    }
    Ok(())
}

fn smp_error(message: String) -> ApiError {
    ApiError::BadRequest(format!("unable to apply strategic merge patch: {message}"))
}

/// Merges `patch` into `original`. Returns `None` when the patch deletes the whole map.
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
) -> ApiResult<Option<Map<String, Value>>> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Ok(Some(strip_directives_map(patch))),
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => return Err(smp_error(format!("unknown patch type: {other}"))),
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove: Vec<Value> = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
        }
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        path.push(key.clone());
        let merged = match (original.remove(key), value) {
            (Some(Value::Object(orig)), Value::Object(p)) => merge_map(orig, p, path)?.map(Value::Object),
            (Some(Value::Array(orig)), Value::Array(p)) => Some(Value::Array(merge_list(orig, p, path)?)),
            (_, Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    None
                } else {
                    Some(Value::Object(strip_directives_map(p)))
                }
            }
            (_, Value::Array(p)) => Some(Value::Array(merge_list(Vec::new(), p, path)?)),
            (_, other) => Some(other.clone()),
        };
        path.pop();
        if let Some(merged) = merged {
            original.insert(key.clone(), merged);
        }
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            path.push(field.to_string());
            let strategy = list_strategy(&path.iter().map(String::as_str).collect::<Vec<_>>());
            path.pop();
            if let (Some(Value::Array(list)), Some(order)) = (original.get_mut(field), value.as_array()) {
                reorder(list, order, strategy);
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Some(original))
}

fn merge_list(original: Vec<Value>, patch: &[Value], path: &mut Vec<String>) -> ApiResult<Vec<Value>> {
    let replace_marker = patch.iter().any(|item| {
        item.as_object().is_some_and(|m| m.len() == 1 && m.get("$patch").and_then(Value::as_str) == Some("replace"))
    });
    let strategy = list_strategy(&path.iter().map(String::as_str).collect::<Vec<_>>());
    if replace_marker {
        return Ok(patch.iter().filter(|item| item.get("$patch").is_none()).map(strip_directives).collect());
    }
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().map(strip_directives).collect()),
        ListStrategy::MergePrimitives => {
            let mut result = original;
            for item in patch {
                if !result.contains(item) {
                    result.push(item.clone());
                }
            }
            Ok(result)
        }
        ListStrategy::MergeByKey(key) => {
            let original_keys: Vec<Value> = original.iter().filter_map(|o| o.get(key).cloned()).collect();
            let mut result = original;
            for item in patch {
                let Some(item_map) = item.as_object() else {
                    return Err(smp_error(format!("list items at {} must be objects", path.join("."))));
                };
                let Some(key_value) = item_map.get(key) else {
                    if item_map.get("$patch").is_some() {
                        continue;
                    }
                    return Err(smp_error(format!("map: {item} does not contain declared merge key: {key}")));
                };
                let position = result.iter().position(|o| o.get(key) == Some(key_value));
                let delete = item_map.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        result.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let orig = match result[i].take() {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        match merge_map(orig, item_map, path)? {
                            Some(merged) => result[i] = Value::Object(merged),
                            None => {
                                result.remove(i);
                            }
                        }
                    }
                    (None, false) => result.push(Value::Object(strip_directives_map(item_map))),
                }
            }
            Ok(upstream_order(result, patch, key, &original_keys))
        }
    }
}

/// The order upstream's strategic merge gives a merged list (`normalizeElementOrder`): the
/// patch's items in patch order, and the items only the server had slotted in before a patch
/// item when the server's order (`original_keys`) puts them first; an item new to the server
/// goes before the server-only items still waiting.
fn upstream_order(merged: Vec<Value>, patch: &[Value], key: &str, original_keys: &[Value]) -> Vec<Value> {
    let rank = |item: &Value| item.get(key).and_then(|k| original_keys.iter().position(|o| o == k));
    let in_patch = |item: &Value| patch.iter().any(|p| p.get(key).is_some() && p.get(key) == item.get(key));
    let mut patch_items: Vec<Value> = Vec::new();
    for p in patch {
        if let Some(found) = merged.iter().find(|m| p.get(key).is_some() && m.get(key) == p.get(key))
            && !patch_items.iter().any(|q| q.get(key) == found.get(key))
        {
            patch_items.push(found.clone());
        }
    }
    let server_only: Vec<Value> = merged.iter().filter(|m| !in_patch(m)).cloned().collect();
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(merged.len());
    while i < server_only.len() || j < patch_items.len() {
        let take_server = if j >= patch_items.len() {
            true
        } else if i >= server_only.len() {
            false
        } else {
            matches!((rank(&server_only[i]), rank(&patch_items[j])), (Some(l), Some(r)) if l < r)
        };
        if take_server {
            out.push(server_only[i].clone());
            i += 1;
        } else {
            out.push(patch_items[j].clone());
            j += 1;
        }
    }
    out
}

fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let rank = |item: &Value| -> usize {
        let found = match strategy {
            ListStrategy::MergeByKey(key) => {
                order.iter().position(|o| o.get(key).is_some() && o.get(key) == item.get(key))
            }
            _ => order.iter().position(|o| o == item),
        };
        found.unwrap_or(usize::MAX)
    };
    let mut ranked: Vec<(usize, usize, Value)> = list.drain(..).enumerate().map(|(i, v)| (rank(&v), i, v)).collect();
    ranked.sort_by_key(|(r, i, _)| (*r, *i));
    list.extend(ranked.into_iter().map(|(_, _, v)| v));
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_directives_map(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn strip_directives_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merged_lists_are_ordered_as_upstream_orders_them() {
        // Each case checked against kube-apiserver 1.33 (a Deployment's containers).
        let names = |list: &[&str]| -> Value {
            json!(list.iter().map(|n| json!({"name": n, "image": "img"})).collect::<Vec<_>>())
        };
        for (original, patch, expected) in [
            (vec!["a", "b"], vec!["c"], vec!["c", "a", "b"]),
            (vec!["a", "b", "c"], vec!["c"], vec!["a", "b", "c"]),
            (vec!["a", "b"], vec!["b", "new"], vec!["a", "b", "new"]),
            (vec!["a", "b"], vec!["new", "a"], vec!["new", "a", "b"]),
            (vec!["a", "b", "c"], vec!["c", "a"], vec!["b", "c", "a"]),
        ] {
            let mut doc = json!({"spec": {"template": {"spec": {"containers": names(&original)}}}});
            let patch = json!({"spec": {"template": {"spec": {"containers": names(&patch)}}}});
            strategic_merge_patch(&mut doc, &patch).unwrap();
            let got: Vec<&str> = doc["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(got, expected, "{original:?} + {patch}");
        }
    }

    #[test]
    fn json_patch_test_null_on_missing_path_succeeds() {
        let mut doc = json!({"metadata": {"name": "a"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}
        ]);
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["x"]));
        let again = json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]);
        assert_eq!(json_patch(&mut doc, &again).unwrap_err().code(), 422);
    }

    #[test]
    fn json_patch_failure_leaves_document_alone() {
        let mut doc = json!({"a": 1});
        let patch = json!([{"op": "replace", "path": "/a", "value": 2}, {"op": "remove", "path": "/nope"}]);
        assert!(json_patch(&mut doc, &patch).is_err());
        assert_eq!(doc, json!({"a": 1}));
    }

    #[test]
    fn smp_merges_containers_by_name_and_orders_them() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]}]}});
        strategic_merge_patch(&mut pod, &patch).unwrap();
        let containers = pod["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers[0]["name"], "b");
        assert_eq!(containers[1]["image"], "a:2");
        assert_eq!(containers[1]["env"].as_array().unwrap().len(), 2);
        assert!(pod.to_string().find('$').is_none(), "no directive is stored: {pod}");
    }

    #[test]
    fn smp_directives_delete_replace_and_retain() {
        let mut obj = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}],
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                     "tolerations": [{"key": "k1"}]}});
        let patch = json!({
            "metadata": {"finalizers": ["b"], "labels": {"x": null}, "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"containers": [{"name": "b", "$patch": "delete"}],
                     "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                     "tolerations": [{"key": "k2"}]}});
        strategic_merge_patch(&mut obj, &patch).unwrap();
        assert_eq!(obj["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(obj["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(obj["spec"]["containers"], json!([{"name": "a", "image": "i"}]));
        assert_eq!(obj["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(obj["spec"]["tolerations"], json!([{"key": "k2"}]));
    }

    #[test]
    fn service_and_container_ports_use_their_own_keys() {
        assert_eq!(list_strategy(&["spec", "ports"]), ListStrategy::MergeByKey("port"));
        assert_eq!(
            list_strategy(&["spec", "template", "spec", "containers", "ports"]),
            ListStrategy::MergeByKey("containerPort")
        );
        assert_eq!(list_strategy(&["subsets", "ports"]), ListStrategy::Replace);
    }
}
