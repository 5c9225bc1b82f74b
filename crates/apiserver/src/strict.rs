//! Strict decoding: fields a request body gives twice. JSON bodies are walked once more to name
//! each repeated field by its path (`spec.replicas`, `spec.containers[0].name`), which the
//! `fieldValidation` of the write then turns into an error or a warning (last value wins, as
//! with upstream's decoder). YAML bodies report the line of the repeated key.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The paths of the fields a JSON document repeats, in document order.
pub fn duplicate_json_fields(text: &str) -> Vec<String> {
    let found = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let _ = Walker { path: String::new(), found: &found }.deserialize(&mut deserializer);
    found.into_inner()
}

struct Walker<'a> {
    path: String,
    found: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) {
                self.found.borrow_mut().push(path.clone());
            }
            map.next_value_seed(Walker { path, found: self.found })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq.next_element_seed(Walker { path: format!("{}[{index}]", self.path), found: self.found })?.is_some() {
            index += 1;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(IgnoredAnyWalker)
    }
}

struct IgnoredAnyWalker;

impl<'de> Visitor<'de> for IgnoredAnyWalker {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// A YAML document parsed last-key-wins, and the upstream wording of its first repeated key
/// (`line 9: key "foo" already set in map`), if any.
pub fn yaml_with_duplicates(text: &str) -> Result<(serde_json::Value, Option<String>), serde_saphyr::Error> {
    match serde_saphyr::from_str::<serde_json::Value>(text) {
        Ok(value) => Ok((value, None)),
        Err(error) => {
            let Some(detail) = duplicate_key(&error) else { return Err(error) };
            let options = serde_saphyr::options! { duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins };
            let value = serde_saphyr::from_str_with_options(text, options)?;
            Ok((value, Some(detail)))
        }
    }
}

fn duplicate_key(error: &serde_saphyr::Error) -> Option<String> {
    match error {
        serde_saphyr::Error::DuplicateMappingKey { key, location, .. } => {
            Some(format!("line {}: key {:?} already set in map", location.line(), key.clone().unwrap_or_default()))
        }
        serde_saphyr::Error::WithSnippet { error, .. } | serde_saphyr::Error::AliasError { error, .. } => {
            duplicate_key(error)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_json_fields_are_named_by_path() {
        let text = r#"{"spec": {"unknownField": "foo", "replicas": 2, "replicas": 3,
            "template": {"spec": {"containers": [{"name": "a", "name": "b"}]}}}, "kind": "x"}"#;
        assert_eq!(duplicate_json_fields(text), vec!["spec.replicas", "spec.template.spec.containers[0].name"]);
        assert!(duplicate_json_fields(r#"{"a": 1, "b": {"a": 2}}"#).is_empty());
    }

    #[test]
    fn repeated_yaml_keys_name_their_line_and_the_last_wins() {
        let text = "\napiVersion: v1\nkind: X\nmetadata:\n  name: n\nspec:\n  unknown: uk1\n  foo: foo1\n  foo: foo2\n";
        let (value, duplicate) = yaml_with_duplicates(text).unwrap();
        assert_eq!(duplicate.as_deref(), Some(r#"line 9: key "foo" already set in map"#));
        assert_eq!(value["spec"]["foo"], "foo2");
    }
}
