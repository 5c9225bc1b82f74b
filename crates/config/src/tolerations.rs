//! `sync.toHost.pods.enforceTolerations`: `*`, `key`, `key=value`, `key:Effect`,
//! `key=value:Effect`, turned into Kubernetes tolerations.

use serde_json::{Value, json};

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Parses one entry into a toleration object, or says why it is not one.
pub fn parse(spec: &str) -> Result<Value, String> {
    let invalid = |why: &str| format!("{spec:?} is not a valid toleration ({why})");
    if spec == "*" {
        return Ok(json!({"operator": "Exists"}));
    }
    if spec.matches(':').count() > 1 || spec.matches('=').count() > 1 {
        return Err(invalid("use key[=value][:effect] with at most one '=' and one ':'"));
    }
    let (rest, effect) = match spec.split_once(':') {
        Some((rest, effect)) => {
            if !EFFECTS.contains(&effect) {
                return Err(invalid("effect must be NoSchedule, PreferNoSchedule or NoExecute"));
            }
            (rest, Some(effect))
        }
        None => (spec, None),
    };
    let (key, value) = match rest.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (rest, None),
    };
    if key.is_empty() {
        return Err(invalid("the key is empty"));
    }
    if !valid_key(key) {
        return Err(invalid("the key must be a label key such as example.com/dedicated"));
    }
    if let Some(value) = value
        && !valid_value(value)
    {
        return Err(invalid("the value must be a label value: up to 63 alphanumerics, '-', '_' or '.'"));
    }
    let mut toleration = json!({"key": key});
    match (value, effect) {
        (Some(value), Some(effect)) => {
            toleration["operator"] = json!("Equal");
            toleration["value"] = json!(value);
            toleration["effect"] = json!(effect);
        }
        (Some(value), None) => toleration["value"] = json!(value),
        (None, Some(effect)) => {
            toleration["operator"] = json!("Exists");
            toleration["effect"] = json!(effect);
        }
        (None, None) => {}
    }
    Ok(toleration)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A label key: `[prefix/]name`.
pub fn valid_key(key: &str) -> bool {
    match key.rsplit_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| {
                    !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
                && valid_name(name)
        }
        None => valid_name(key),
    }
}

/// A label value (may be empty).
pub fn valid_value(value: &str) -> bool {
    value.is_empty() || valid_name(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("*").unwrap(), json!({"operator": "Exists"}));
        assert_eq!(parse("dedicated").unwrap(), json!({"key": "dedicated"}));
        assert_eq!(parse("dedicated=team-a").unwrap(), json!({"key": "dedicated", "value": "team-a"}));
        assert_eq!(
            parse("gpu:NoSchedule").unwrap(),
            json!({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"})
        );
        assert_eq!(
            parse("example.com/pool=blue:NoExecute").unwrap(),
            json!({"key": "example.com/pool", "operator": "Equal", "value": "blue", "effect": "NoExecute"})
        );
    }

    #[test]
    fn errors_explain_the_fix() {
        assert_eq!(
            parse("foo=bar:Nosched").unwrap_err(),
            "\"foo=bar:Nosched\" is not a valid toleration (effect must be NoSchedule, PreferNoSchedule or NoExecute)"
        );
        assert!(parse("a=b=c").is_err());
        assert!(parse("a:NoSchedule:NoExecute").is_err());
        assert!(parse("=x").is_err());
        assert!(parse("key=bad value").is_err());
    }
}
