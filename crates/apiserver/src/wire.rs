//! JSON as kube-apiserver writes it: object keys in the order of the Go structs for the parts
//! clients and people read first (`kind`, `apiVersion`, `metadata`, then the body, `spec` before
//! `status`; `metadata` fields in `ObjectMeta` order; `Status` bodies in `metav1.Status` order),
//! and a newline after each document (Go's `json.Encoder`).
//!
//! Objects are `serde_json::Value`s whose maps sort their keys; [`Ordered`] only changes the order
//! in which they are written, so nothing else has to know.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

/// `ObjectMeta` and `ListMeta` fields in Go struct order.
const METADATA: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "continue",
    "remainingItemCount",
];

/// The top-level fields of a typed object in Go struct order (the first of each kind's fields
/// that people read; anything not listed follows in name order).
const OBJECT: &[&str] = &[
    "kind",
    "apiVersion",
    "metadata",
    "immutable",
    "data",
    "binaryData",
    "stringData",
    "type",
    "spec",
    "status",
    "items",
];

/// `metav1.Status` in Go struct order.
const STATUS: &[&str] = &["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"];

/// `metav1.StatusDetails` in Go struct order.
const DETAILS: &[&str] = &["name", "group", "kind", "uid", "causes", "retryAfterSeconds"];

/// `metav1.StatusCause` in Go struct order.
const CAUSE: &[&str] = &["reason", "message", "field"];

/// `metav1.ManagedFieldsEntry` in Go struct order.
const MANAGED: &[&str] = &["manager", "operation", "apiVersion", "time", "fieldsType", "fieldsV1", "subresource"];

/// `metav1.OwnerReference` in Go struct order.
const OWNER: &[&str] = &["apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion"];

/// A watch event (`type`, then `object`).
const EVENT: &[&str] = &["type", "object"];

/// What a map is, which decides the order of its keys.
#[derive(Clone, Copy)]
enum Shape {
    /// A Kubernetes object or list (has `kind` or `apiVersion`), or a document's root.
    Object,
    /// The `metadata` of an object.
    Metadata,
    /// The `details` of a `Status`.
    Details,
    /// One of the `causes` of a `Status`.
    Cause,
    /// One of `metadata.managedFields`.
    Managed,
    /// One of `metadata.ownerReferences`.
    Owner,
    /// Anything else: keys in name order.
    Plain,
}

/// Serializes a value the way kube-apiserver orders it.
pub struct Ordered<'a>(pub &'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        In(self.0, Shape::Object).serialize(serializer)
    }
}

struct In<'a>(&'a Value, Shape);

fn rank(order: &[&str], key: &str) -> usize {
    order.iter().position(|k| *k == key).unwrap_or(order.len())
}

fn keys<'a>(map: &'a Map<String, Value>, order: &[&str]) -> Vec<&'a String> {
    let mut keys: Vec<&String> = map.keys().collect();
    // Map keys are already in name order; a stable sort by rank keeps that among the unlisted.
    keys.sort_by_key(|k| rank(order, k));
    keys
}

impl Serialize for In<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let is_object = matches!(self.1, Shape::Object)
                    || matches!(self.1, Shape::Plain)
                        && (map.get("apiVersion").is_some_and(Value::is_string)
                            || map.get("kind").is_some_and(Value::is_string));
                let order = match self.1 {
                    Shape::Metadata => METADATA,
                    Shape::Details => DETAILS,
                    Shape::Cause => CAUSE,
                    Shape::Managed => MANAGED,
                    Shape::Owner => OWNER,
                    _ if is_object && map.get("kind").and_then(Value::as_str) == Some("Status") => STATUS,
                    _ if is_object && map.contains_key("type") && map.contains_key("object") && map.len() == 2 => EVENT,
                    _ if is_object => OBJECT,
                    _ => &[],
                };
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for key in keys(map, order) {
                    let child = &map[key];
                    let shape = match key.as_str() {
                        "metadata" if is_object => Shape::Metadata,
                        "object" if order.as_ptr() == EVENT.as_ptr() => Shape::Object,
                        "details" if order.as_ptr() == STATUS.as_ptr() => Shape::Details,
                        "causes" if order.as_ptr() == DETAILS.as_ptr() => Shape::Cause,
                        "managedFields" if order.as_ptr() == METADATA.as_ptr() => Shape::Managed,
                        "ownerReferences" if order.as_ptr() == METADATA.as_ptr() => Shape::Owner,
                        _ => Shape::Plain,
                    };
                    out.serialize_entry(key, &In(child, shape))?;
                }
                out.end()
            }
            Value::Array(items) => {
                // The items of a list keep the shape their list gives them (`causes`).
                let shape = match self.1 {
                    Shape::Cause | Shape::Managed | Shape::Owner => self.1,
                    _ => Shape::Plain,
                };
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&In(item, shape))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// `value` as kube-apiserver writes a response body: ordered keys and a trailing newline.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = to_vec_compact(value);
    out.push(b'\n');
    out
}

/// `value` with ordered keys and no trailing newline (a part of a larger document).
pub fn to_vec_compact(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing a Value to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &Ordered(value));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys_of(text: &[u8]) -> String {
        String::from_utf8(text.to_vec()).unwrap()
    }

    #[test]
    fn objects_lead_with_type_and_metadata_and_end_with_a_newline() {
        let pod = json!({"status": {"phase": "Running"}, "spec": {"b": 1, "a": 2}, "metadata": {"uid": "u", "namespace": "d", "name": "p", "labels": {"z": "1", "a": "2"}}, "kind": "Pod", "apiVersion": "v1"});
        assert_eq!(
            keys_of(&to_vec(&pod)),
            "{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"p\",\"namespace\":\"d\",\"uid\":\"u\",\"labels\":{\"a\":\"2\",\"z\":\"1\"}},\"spec\":{\"a\":2,\"b\":1},\"status\":{\"phase\":\"Running\"}}\n"
        );
    }

    #[test]
    fn status_bodies_follow_metav1_status() {
        let status = json!({"code": 422, "details": {"name": "x", "kind": "pods", "causes": [{"field": "f", "message": "m", "reason": "FieldValueInvalid"}]}, "reason": "Invalid", "message": "m", "status": "Failure", "metadata": {}, "apiVersion": "v1", "kind": "Status"});
        assert_eq!(
            keys_of(&to_vec_compact(&status)),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"m","reason":"Invalid","details":{"name":"x","kind":"pods","causes":[{"reason":"FieldValueInvalid","message":"m","field":"f"}]},"code":422}"#
        );
    }

    #[test]
    fn lists_and_watch_events_order_their_items() {
        let list = json!({"items": [{"metadata": {"name": "a"}, "apiVersion": "v1", "kind": "ConfigMap", "data": {}}], "metadata": {"resourceVersion": "5"}, "kind": "ConfigMapList", "apiVersion": "v1"});
        assert_eq!(
            keys_of(&to_vec_compact(&list)),
            r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a"},"data":{}}]}"#
        );
        let event = json!({"type": "ADDED", "object": {"metadata": {"name": "a"}, "kind": "ConfigMap"}});
        assert_eq!(
            keys_of(&to_vec_compact(&event)),
            r#"{"type":"ADDED","object":{"kind":"ConfigMap","metadata":{"name":"a"}}}"#
        );
    }
}
