//! Label and field selectors: parsing the query-string syntax and matching objects.

use std::collections::BTreeMap;

use crate::error::{ApiError, ApiResult};

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `k=v`, `k==v`
    Equals(String, String),
    /// `k!=v` (also matches objects without `k`)
    NotEquals(String, String),
    /// `k in (a,b)`
    In(String, Vec<String>),
    /// `k notin (a,b)` (also matches objects without `k`)
    NotIn(String, Vec<String>),
    /// `k`
    Exists(String),
    /// `!k`
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses `labelSelector` syntax; errors are 400s naming the problem.
    pub fn parse(input: &str) -> ApiResult<Self> {
        let mut requirements = Vec::new();
        let chars: Vec<char> = input.chars().collect();
        let mut i = 0;
        let bad = |msg: String| ApiError::BadRequest(format!("unable to parse requirement: {msg}"));
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        loop {
            skip_ws(&mut i);
            if i >= chars.len() {
                break;
            }
            let negated = chars[i] == '!';
            if negated {
                i += 1;
                skip_ws(&mut i);
            }
            let start = i;
            while i < chars.len() && !matches!(chars[i], '=' | '!' | ',' | ' ' | '(' | ')') {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            if key.is_empty() {
                return Err(bad(format!("found '{}', expected: identifier", chars.get(i).unwrap_or(&' '))));
            }
            validate_label_key(&key).map_err(|m| bad(format!("invalid label key {key:?}: {m}")))?;
            skip_ws(&mut i);
            if negated {
                requirements.push(LabelRequirement::DoesNotExist(key));
            } else if i >= chars.len() || chars[i] == ',' {
                requirements.push(LabelRequirement::Exists(key));
            } else if chars[i] == '=' || chars[i] == '!' {
                let not = chars[i] == '!';
                i += 1;
                if i < chars.len() && chars[i] == '=' {
                    i += 1;
                } else if not {
                    return Err(bad("expected '=' after '!'".into()));
                }
                skip_ws(&mut i);
                let start = i;
                while i < chars.len() && chars[i] != ',' && !chars[i].is_whitespace() {
                    i += 1;
                }
                let value: String = chars[start..i].iter().collect();
                validate_label_value(&value).map_err(|m| bad(format!("invalid label value {value:?}: {m}")))?;
                requirements.push(if not {
                    LabelRequirement::NotEquals(key, value)
                } else {
                    LabelRequirement::Equals(key, value)
                });
            } else {
                let start = i;
                while i < chars.len() && chars[i].is_alphabetic() {
                    i += 1;
                }
                let op: String = chars[start..i].iter().collect();
                skip_ws(&mut i);
                if i >= chars.len() || chars[i] != '(' {
                    return Err(bad(format!("found '{op}', expected: in, notin, =, ==, !=")));
                }
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(bad("found '', expected: ')'".into()));
                }
                let values: Vec<String> = chars[start..i]
                    .iter()
                    .collect::<String>()
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                i += 1;
                requirements.push(match op.as_str() {
                    "in" => LabelRequirement::In(key, values),
                    "notin" => LabelRequirement::NotIn(key, values),
                    other => {
                        return Err(bad(format!("found '{other}', expected: in, notin, =, ==, !=")));
                    }
                });
            }
            skip_ws(&mut i);
            if i < chars.len() {
                if chars[i] != ',' {
                    return Err(bad(format!("found '{}', expected: ','", chars[i])));
                }
                i += 1;
            }
        }
        Ok(LabelSelector(requirements))
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`); an unknown operator
    /// makes a selector that matches nothing.
    pub fn from_object(selector: &serde_json::Value) -> Self {
        let mut requirements = Vec::new();
        for (key, value) in selector.get("matchLabels").and_then(serde_json::Value::as_object).into_iter().flatten() {
            requirements.push(LabelRequirement::Equals(key.clone(), value.as_str().unwrap_or_default().to_string()));
        }
        for expression in selector.get("matchExpressions").and_then(serde_json::Value::as_array).into_iter().flatten() {
            let key = expression["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            requirements.push(match expression["operator"].as_str().unwrap_or_default() {
                "In" => LabelRequirement::In(key, values),
                "NotIn" => LabelRequirement::NotIn(key, values),
                "Exists" => LabelRequirement::Exists(key),
                "DoesNotExist" => LabelRequirement::DoesNotExist(key),
                _ => LabelRequirement::In(key, Vec::new()),
            });
        }
        LabelSelector(requirements)
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One field requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field path, e.g. `metadata.name`.
    pub field: String,
    /// The value compared against.
    pub value: String,
    /// `!=` rather than `=`.
    pub negated: bool,
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses `fieldSelector` syntax (`a=b,c!=d`, `\` escapes).
    pub fn parse(input: &str) -> ApiResult<Self> {
        let mut requirements = Vec::new();
        for term in split_unescaped(input, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (field, value, negated) = if let Some((f, v)) = split_once_unescaped(&term, "!=") {
                (f, v, true)
            } else if let Some((f, v)) = split_once_unescaped(&term, "==") {
                (f, v, false)
            } else if let Some((f, v)) = split_once_unescaped(&term, "=") {
                (f, v, false)
            } else {
                return Err(ApiError::BadRequest(format!("invalid selector: '{term}'; can't understand '{term}'")));
            };
            requirements.push(FieldRequirement { field: field.trim().to_string(), value: unescape(&value), negated });
        }
        Ok(FieldSelector(requirements))
    }

    /// Whether the object's field values satisfy every requirement. `fields` gives the value of
    /// a supported field, or `None` when the field is not supported for this kind.
    pub fn matches(&self, fields: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| {
            let actual = fields(&r.field).unwrap_or_default();
            (actual == r.value) != r.negated
        })
    }

    /// The value required for `metadata.name`, if the selector pins one.
    pub fn pinned_name(&self) -> Option<&str> {
        self.0.iter().find(|r| r.field == "metadata.name" && !r.negated).map(|r| r.value.as_str())
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn split_unescaped(input: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            parts.last_mut().unwrap().push('\\');
            parts.last_mut().unwrap().push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == separator {
            parts.push(String::new());
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    parts
}

fn split_once_unescaped(input: &str, operator: &str) -> Option<(String, String)> {
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if input[i..].starts_with(operator) {
            return Some((input[..i].to_string(), input[i + operator.len()..].to_string()));
        }
        i += 1;
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks a label (or annotation) key: `[prefix/]name`.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        if let Err(e) = crate::validation::dns1123_subdomain(prefix) {
            return Err(format!("prefix part {e}"));
        }
    }
    qualified_name_part(name)
}

fn qualified_name_part(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    let ok_inner = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let first = name.chars().next().unwrap();
    let last = name.chars().last().unwrap();
    if !ok_inner || !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    Ok(())
}

/// Checks a label value.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok_inner = value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let first = value.chars().next().unwrap();
    let last = value.chars().last().unwrap();
    if !ok_inner || !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_forms() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("example.com/x", "1")]);
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app=web, example.com/x=1", true),
            ("", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(parsed.matches(&l), expected, "{selector}");
        }
    }

    #[test]
    fn bad_label_selectors_are_rejected() {
        for selector in ["app in web", "a=b=c=", "app notin (x", "x y", "-bad=1"] {
            let error = LabelSelector::parse(selector).expect_err(selector);
            assert_eq!(error.code(), 400, "{selector}");
        }
    }

    #[test]
    fn field_selectors_with_escapes() {
        let s = FieldSelector::parse("metadata.name=a\\,b,status.phase!=Running").unwrap();
        assert_eq!(s.pinned_name(), Some("a,b"));
        let fields = |f: &str| match f {
            "metadata.name" => Some("a,b".to_string()),
            "status.phase" => Some("Pending".to_string()),
            _ => None,
        };
        assert!(s.matches(fields));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
