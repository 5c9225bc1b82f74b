//! Built-in kinds decoded as kube-apiserver decodes them: into Go structs, where a value of the
//! wrong JSON type is an error (400, `Deployment in version "v1" cannot be handled as a
//! Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of
//! type int32`) rather than something stored that typed clients then cannot read.
//!
//! The Go types come from `go_types.json`, generated from k8s.io/api by `tools/gen_go_types`
//! (reflection over the real structs, so `v1.Protocol` and `[]v1.Container` read as Go prints
//! them). The walk is a serde `DeserializeSeed`, so it runs over a request's JSON text in
//! document order (Go reports the first bad value it meets) or over an already decoded value.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::catalog::ResourceType;

const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const RFC3339: &str = "2006-01-02T15:04:05Z07:00";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Struct,
    Slice,
    Map,
    Bytes,
    String,
    Bool,
    Int(u32),
    Uint(u32),
    Float,
    Quantity,
    IntOrString,
    Time,
    Any,
}

struct Type {
    /// As Go prints it: `v1.DeploymentSpec`, `[]v1.Container`, `int32`.
    go: String,
    kind: Kind,
    fields: HashMap<String, usize>,
    elem: usize,
}

struct Table {
    types: Vec<Type>,
    kinds: HashMap<String, usize>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let raw: Value = serde_json::from_str(include_str!("go_types.json")).expect("generated table is JSON");
    let entries = raw["types"].as_object().expect("types");
    let index: HashMap<&str, usize> = entries.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    let at = |id: &Value| id.as_str().and_then(|id| index.get(id).copied()).unwrap_or(usize::MAX);
    let types = entries
        .values()
        .map(|entry| {
            let kind = match entry["kind"].as_str().unwrap_or_default() {
                "struct" => Kind::Struct,
                "slice" => Kind::Slice,
                "map" => Kind::Map,
                "bytes" => Kind::Bytes,
                "string" => Kind::String,
                "bool" => Kind::Bool,
                "float" => Kind::Float,
                "quantity" => Kind::Quantity,
                "intorstring" => Kind::IntOrString,
                "time" => Kind::Time,
                other => match (other.strip_prefix("int"), other.strip_prefix("uint")) {
                    (Some(bits), _) => bits.parse().map(Kind::Int).unwrap_or(Kind::Any),
                    (_, Some(bits)) => bits.parse().map(Kind::Uint).unwrap_or(Kind::Any),
                    _ => Kind::Any,
                },
            };
            let fields = entry["fields"]
                .as_object()
                .map(|fields| fields.iter().map(|(name, id)| (name.clone(), at(id))).collect())
                .unwrap_or_default();
            Type { go: entry["go"].as_str().unwrap_or_default().to_string(), kind, fields, elem: at(&entry["elem"]) }
        })
        .collect();
    let kinds = raw["kinds"]
        .as_object()
        .expect("kinds")
        .iter()
        .map(|(kind, id)| (kind.clone(), at(id)))
        .filter(|(_, at)| *at != usize::MAX)
        .collect();
    Table { types, kinds }
});

fn root_of(rt: &ResourceType) -> Option<usize> {
    if rt.custom.is_some() {
        return None;
    }
    let key = if rt.group.is_empty() {
        format!("{}/{}", rt.version, rt.kind)
    } else {
        format!("{}/{}/{}", rt.group, rt.version, rt.kind)
    };
    TABLE.kinds.get(&key).copied()
}

/// Why Go's decoder would refuse `object` as a `rt` (the first bad value in the order the
/// walk meets them), or `None`. `text`, the request's JSON, gives that order as the client
/// wrote it; without it the decoded object's (sorted) order is used.
pub fn refusal(rt: &ResourceType, object: &Value, text: Option<&str>) -> Option<String> {
    let root = root_of(rt)?;
    let walk = Walk { found: RefCell::new(None) };
    let seed = || Seed { walk: &walk, ty: root, strukt: "", path: String::new() };
    let _ = match text {
        Some(text) => seed().deserialize(&mut serde_json::Deserializer::from_str(text)).map_err(|_| ()),
        None => seed().deserialize(object).map_err(|_| ()),
    };
    walk.found.into_inner()
}

/// Drops the struct fields of `object` that are `null`, as decoding into Go structs and encoding
/// again drops them (`"replicas": null` is stored as no `replicas`, then defaulted to 1).
pub fn drop_nulls(rt: &ResourceType, object: &mut Value) {
    if let Some(root) = root_of(rt) {
        drop_nulls_at(root, object, 0);
    }
}

fn drop_nulls_at(ty: usize, value: &mut Value, depth: usize) {
    let Some(ty) = TABLE.types.get(ty) else { return };
    if depth > 64 {
        return;
    }
    match (ty.kind, value) {
        (Kind::Struct, Value::Object(map)) => {
            map.retain(|key, child| !(child.is_null() && ty.fields.contains_key(key)));
            for (key, child) in map.iter_mut() {
                if let Some(&field) = ty.fields.get(key) {
                    drop_nulls_at(field, child, depth + 1);
                }
            }
        }
        (Kind::Slice, Value::Array(items)) => items.iter_mut().for_each(|item| drop_nulls_at(ty.elem, item, depth + 1)),
        (Kind::Map, Value::Object(map)) => map.values_mut().for_each(|item| drop_nulls_at(ty.elem, item, depth + 1)),
        _ => {}
    }
}

/// Why upstream's converter from unstructured objects (what a strategic merge patch's result goes
/// through) refuses `object` as a `rt`: `unrecognized type: int32`, `cannot convert int64 to
/// string`, `cannot restore struct from: string` ... or `None`.
pub fn conversion_refusal(rt: &ResourceType, object: &Value) -> Option<String> {
    convert(root_of(rt)?, object, 0).err()
}

/// The source kind as Go's reflection names a decoded JSON value (integers are `int64`).
fn source_kind(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "map",
        Value::Array(_) => "slice",
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::Null => "invalid",
    }
}

/// The reflect kind of a scalar Go type (`v1.Protocol` is a `string`).
fn reflect_kind(ty: &Type) -> String {
    match ty.kind {
        Kind::String => "string".into(),
        Kind::Bool => "bool".into(),
        Kind::Int(bits) => format!("int{bits}"),
        Kind::Uint(bits) => format!("uint{bits}"),
        Kind::Float => "float64".into(),
        _ => ty.go.clone(),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Null => "null",
    }
}

fn convert(at: usize, value: &Value, depth: usize) -> Result<(), String> {
    let Some(ty) = TABLE.types.get(at) else { return Ok(()) };
    if value.is_null() || depth > 64 {
        return Ok(());
    }
    let numeric = |kind: Kind| matches!(kind, Kind::Int(_) | Kind::Uint(_) | Kind::Float);
    match (ty.kind, value) {
        (Kind::Any, _) => Ok(()),
        (Kind::Struct, Value::Object(map)) => {
            for (key, child) in map {
                if let Some(&field) = ty.fields.get(key) {
                    convert(field, child, depth + 1)?;
                }
            }
            Ok(())
        }
        (Kind::Struct, other) => Err(format!("cannot restore struct from: {}", source_kind(other))),
        (Kind::Slice, Value::Array(items)) => items.iter().try_for_each(|item| convert(ty.elem, item, depth + 1)),
        (Kind::Slice | Kind::Bytes, other @ (Value::Object(_) | Value::Number(_) | Value::Bool(_))) => {
            Err(format!("cannot restore slice from {}", source_kind(other)))
        }
        (Kind::Slice, other) => Err(format!("cannot restore slice from {}", source_kind(other))),
        (Kind::Bytes, Value::String(text)) => match crate::validation::go_base64_error(text) {
            Some(at) => Err(format!("illegal base64 data at input byte {at}")),
            None => Ok(()),
        },
        (Kind::Bytes, Value::Array(_)) => Ok(()),
        (Kind::Map, Value::Object(map)) => map.values().try_for_each(|item| convert(ty.elem, item, depth + 1)),
        (Kind::Map, other) => Err(format!("cannot restore map from {}", source_kind(other))),
        // The types that decode themselves get the value as JSON.
        (Kind::Quantity, Value::String(text)) => {
            vkube_quota::Quantity::parse(text).map(|_| ()).map_err(|_| QUANTITY_FORMAT.to_string())
        }
        (Kind::Quantity, Value::Number(n)) => {
            vkube_quota::Quantity::parse(&n.to_string()).map(|_| ()).map_err(|_| QUANTITY_FORMAT.to_string())
        }
        (Kind::Quantity, _) => Err(QUANTITY_FORMAT.to_string()),
        (Kind::IntOrString, Value::String(_)) => Ok(()),
        (Kind::IntOrString, Value::Number(n)) if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => Ok(()),
        (Kind::IntOrString, Value::Number(n)) => {
            Err(format!("json: cannot unmarshal number {n} into Go value of type int32"))
        }
        (Kind::IntOrString, other) => {
            Err(format!("json: cannot unmarshal {} into Go value of type int32", json_kind(other)))
        }
        (Kind::Time, Value::String(text)) => match time_error(text) {
            Some(problem) => Err(format!("parsing time {text:?} as {RFC3339:?}: {problem}")),
            None => Ok(()),
        },
        (Kind::Time, other) => Err(format!("json: cannot unmarshal {} into Go value of type string", json_kind(other))),
        // Scalars: what Go's reflection assigns or converts between JSON's four groups.
        (Kind::String, Value::String(_)) | (Kind::Bool, Value::Bool(_)) => Ok(()),
        (kind, Value::Number(n)) if numeric(kind) => {
            let whole = n.as_i64().is_some() || n.as_u64().is_some() || n.as_f64().is_some_and(|f| f == f.trunc());
            if whole || kind == Kind::Float { Ok(()) } else { Err(format!("cannot convert float64 to {}", ty.go)) }
        }
        (Kind::String, number @ Value::Number(_)) => {
            Err(format!("cannot convert {} to {}", source_kind(number), ty.go))
        }
        _ => Err(format!("unrecognized type: {}", reflect_kind(ty))),
    }
}

/// `value` as Go's `%v` prints the decoded JSON (`map[spec:map[replicas:three]]`).
pub fn go_print(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.abs() < 1e21 && f.abs() >= 1e-4 || f == 0.0 => f.to_string(),
            (_, _, Some(f)) => format!("{f:e}").replace('e', "e+").replace("e+-", "e-"),
            _ => n.to_string(),
        },
        Value::Array(items) => format!("[{}]", items.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(map) => {
            format!("map[{}]", map.iter().map(|(k, v)| format!("{k}:{}", go_print(v))).collect::<Vec<_>>().join(" "))
        }
    }
}

struct Walk {
    found: RefCell<Option<String>>,
}

/// One value to check: of type `ty`, at `path` (JSON field names from the root, as Go's
/// error context keeps them: no list indexes, no map keys) in a field of struct `strukt`.
struct Seed<'w> {
    walk: &'w Walk,
    ty: usize,
    strukt: &'w str,
    path: String,
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stop")
    }
}

impl<'w> Seed<'w> {
    fn ty(&self) -> &'static Type {
        &TABLE.types[self.ty]
    }

    fn refuse<E: de::Error>(&self, message: String) -> Result<(), E> {
        self.walk.found.borrow_mut().get_or_insert(message);
        Err(E::custom(Stop))
    }

    /// Go's `UnmarshalTypeError` for a `what` (`string`, `number 3.5`) where `go` was wanted.
    fn mismatch<E: de::Error>(&self, what: &str, go: &str) -> Result<(), E> {
        if self.strukt.is_empty() {
            return self.refuse(format!("json: cannot unmarshal {what} into Go value of type {go}"));
        }
        self.refuse(format!(
            "json: cannot unmarshal {what} into Go struct field {}.{} of type {go}",
            self.strukt, self.path
        ))
    }

    fn wrong<E: de::Error>(&self, what: &str) -> Result<(), E> {
        match self.ty().kind {
            Kind::Quantity => self.refuse(QUANTITY_FORMAT.to_string()),
            // Both decode themselves through a string (or, for int-or-string, an int32).
            Kind::Time => self.mismatch(what, "string"),
            Kind::IntOrString => self.mismatch(what, "int32"),
            Kind::Bytes => self.mismatch(what, "[]uint8"),
            _ => self.mismatch(what, &self.ty().go),
        }
    }

    /// A number, written as `literal`: fine for numeric kinds that can hold it.
    fn number<E: de::Error>(&self, literal: &str, integer: Option<i128>) -> Result<(), E> {
        let fits = |bits: u32, signed: bool| match integer {
            Some(n) if signed => n >= -(1i128 << (bits - 1)) && n < (1i128 << (bits - 1)),
            Some(n) => n >= 0 && n < (1i128 << bits),
            None => false,
        };
        match self.ty().kind {
            Kind::Float | Kind::Any => Ok(()),
            Kind::Int(bits) if fits(bits, true) => Ok(()),
            Kind::Uint(bits) if fits(bits, false) => Ok(()),
            Kind::Int(_) | Kind::Uint(_) => self.mismatch(&format!("number {literal}"), &self.ty().go),
            Kind::IntOrString if fits(32, true) => Ok(()),
            Kind::IntOrString => self.mismatch(&format!("number {literal}"), "int32"),
            Kind::Quantity => match vkube_quota::Quantity::parse(literal) {
                Ok(_) => Ok(()),
                Err(_) => self.refuse(QUANTITY_FORMAT.to_string()),
            },
            _ => self.wrong("number"),
        }
    }
}

impl<'de, 'w> DeserializeSeed<'de> for Seed<'w> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.ty().kind == Kind::Any {
            return deserializer.deserialize_ignored_any(IgnoredAny).map(|_| ());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'w> Visitor<'de> for Seed<'w> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value of Go type {}", self.ty().go)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // null leaves the zero value, whatever the type.
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        match self.ty().kind {
            Kind::Bool => Ok(()),
            _ => self.wrong("bool"),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(&v.to_string(), Some(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(&v.to_string(), Some(i128::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As the JSON wrote it (`3.0`, not `3`): Go quotes the literal.
        let literal = serde_json::Number::from_f64(v).map(|n| n.to_string()).unwrap_or_else(|| v.to_string());
        self.number(&literal, None)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.ty().kind {
            Kind::String | Kind::IntOrString => Ok(()),
            Kind::Bytes => match crate::validation::go_base64_error(v) {
                Some(at) => self.refuse(format!("illegal base64 data at input byte {at}")),
                None => Ok(()),
            },
            Kind::Quantity => match vkube_quota::Quantity::parse(v) {
                Ok(_) => Ok(()),
                Err(_) => self.refuse(QUANTITY_FORMAT.to_string()),
            },
            Kind::Time => match time_error(v) {
                Some(problem) => self.refuse(format!("parsing time {v:?} as {RFC3339:?}: {problem}")),
                None => Ok(()),
            },
            _ => self.wrong("string"),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.ty().kind != Kind::Slice {
            self.wrong::<A::Error>("array")?;
        }
        let elem = self.ty().elem;
        while seq
            .next_element_seed(Seed { walk: self.walk, ty: elem, strukt: self.strukt, path: self.path.clone() })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ty = self.ty();
        match ty.kind {
            Kind::Struct => {
                let strukt = ty.go.rsplit('.').next().unwrap_or(&ty.go);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match ty.fields.get(key.as_ref()) {
                        Some(&field) => {
                            let path =
                                if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) };
                            map.next_value_seed(Seed { walk: self.walk, ty: field, strukt, path })?;
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(())
            }
            Kind::Map => {
                while map.next_key::<IgnoredAny>()?.is_some() {
                    map.next_value_seed(Seed {
                        walk: self.walk,
                        ty: ty.elem,
                        strukt: self.strukt,
                        path: self.path.clone(),
                    })?;
                }
                Ok(())
            }
            _ => self.wrong("object"),
        }
    }
}

/// Why Go's `time.Parse(time.RFC3339, text)` fails, worded as Go words it, or `None`.
fn time_error(text: &str) -> Option<String> {
    // (layout element, digits it takes, the largest value it allows)
    const ELEMENTS: [(&str, usize, u32, &str); 6] = [
        ("2006", 4, 9999, "year"),
        ("01", 2, 12, "month"),
        ("02", 2, 31, "day"),
        ("15", 2, 23, "hour"),
        ("04", 2, 59, "minute"),
        ("05", 2, 59, "second"),
    ];
    const SEPARATORS: [&str; 6] = ["-", "-", "T", ":", ":", ""];
    let mut rest = text;
    for (i, (element, digits, max, name)) in ELEMENTS.iter().enumerate() {
        let value = rest.get(..*digits).filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
        let Some(value) = value else {
            return Some(format!("cannot parse {rest:?} as {element:?}"));
        };
        let number: u32 = value.parse().unwrap_or_default();
        if (i > 0 && i < 3 && number == 0) || number > *max {
            return Some(format!("{name} out of range"));
        }
        rest = &rest[*digits..];
        let separator = SEPARATORS[i];
        match rest.strip_prefix(separator) {
            Some(after) => rest = after,
            None => {
                let layout = &RFC3339[RFC3339.find(element).unwrap_or(0) + element.len()..];
                return Some(format!(
                    "cannot parse {rest:?} as {:?}",
                    &layout[..layout.find(|c: char| c.is_ascii_digit()).unwrap_or(layout.len())]
                ));
            }
        }
    }
    if let Some(fraction) = rest.strip_prefix(['.', ',']) {
        let end = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        rest = &fraction[end..];
    }
    let zone_ok = rest == "Z"
        || (rest.len() == 6
            && rest.starts_with(['+', '-'])
            && rest.as_bytes()[3] == b':'
            && rest[1..3].bytes().chain(rest[4..].bytes()).all(|b| b.is_ascii_digit()));
    if zone_ok {
        return None;
    }
    if rest.is_empty() || !rest.starts_with(['Z', '+', '-']) {
        return Some(format!("cannot parse {rest:?} as \"Z07:00\""));
    }
    Some(format!("extra text: {rest:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_refused_as_go_words_it() {
        assert_eq!(time_error("2026-12-03T22:29:46Z"), None);
        assert_eq!(time_error("2026-12-03T22:29:46.123456+01:00"), None);
        assert_eq!(time_error("yesterday").as_deref(), Some("cannot parse \"yesterday\" as \"2006\""));
        assert_eq!(time_error("2026-13-03T22:29:46Z").as_deref(), Some("month out of range"));
        assert_eq!(time_error("2026-12-03 22:29:46Z").as_deref(), Some("cannot parse \" 22:29:46Z\" as \"T\""));
        assert_eq!(time_error("2026-12-03T22:29:46").as_deref(), Some("cannot parse \"\" as \"Z07:00\""));
    }
}
