//! Name, label and annotation validation as Kubernetes does it, with the upstream wording.

use serde_json::Value;

use crate::error::Cause;
use crate::selector::{validate_label_key, validate_label_value};

const SUBDOMAIN_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const LABEL_REGEX: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1035_REGEX: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (most object names).
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{SUBDOMAIN_REGEX}')"
        ))
    }
}

/// A DNS-1123 label (namespaces).
pub fn dns1123_label(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if is_label(name) {
        Ok(())
    } else {
        Err(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{LABEL_REGEX}')"
        ))
    }
}

/// A DNS-1035 label (services).
pub fn dns1035_label(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if is_label(name) && name.as_bytes()[0].is_ascii_lowercase() {
        Ok(())
    } else {
        Err(format!(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_REGEX}')"
        ))
    }
}

/// A path segment name (RBAC objects).
pub fn path_segment(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!("may not be '{name}'"));
    }
    if name.contains('/') || name.contains('%') {
        return Err("may not contain '/' or '%'".into());
    }
    Ok(())
}

/// Which rule a kind's names follow.
pub fn name_rule(group: &str, kind: &str) -> fn(&str) -> Result<(), String> {
    match (group, kind) {
        ("", "Namespace") => dns1123_label,
        ("", "Service") => dns1035_label,
        ("apps", "StatefulSet") => dns1123_label,
        ("rbac.authorization.k8s.io", _) => path_segment,
        // `v1.` names the core group version.
        ("apiregistration.k8s.io", _) => path_segment,
        ("policy", "PodDisruptionBudget") => path_segment,
        _ => dns1123_subdomain,
    }
}

/// Validates the metadata a client controls: name (when set), labels and annotations.
pub fn object_meta(meta: &Value, name_ok: fn(&str) -> Result<(), String>, causes: &mut Vec<Cause>) {
    if let Some(name) = meta.get("name").and_then(Value::as_str)
        && !name.is_empty()
        && let Err(detail) = name_ok(name)
    {
        causes.push(Cause::invalid("metadata.name", name, &detail));
    }
    if let Some(labels) = meta.get("labels") {
        match labels.as_object() {
            Some(map) => {
                for (key, value) in map {
                    if let Err(detail) = validate_label_key(key) {
                        causes.push(Cause::invalid("metadata.labels", key, &detail));
                    }
                    match value.as_str() {
                        Some(v) => {
                            if let Err(detail) = validate_label_value(v) {
                                causes.push(Cause::invalid(format!("metadata.labels.{key}"), v, &detail));
                            }
                        }
                        None if value.is_null() => {}
                        None => causes.push(Cause::invalid(
                            format!("metadata.labels.{key}"),
                            &value.to_string(),
                            "must be a string",
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => causes.push(Cause::invalid("metadata.labels", &labels.to_string(), "must be an object")),
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (key, value) in annotations {
            total += key.len() + value.as_str().map(str::len).unwrap_or(0);
            if let Err(detail) = validate_label_key(&key.to_lowercase()) {
                causes.push(Cause::invalid("metadata.annotations", key, &detail));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause::too_long("metadata.annotations", 256 * 1024));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn name_rules() {
        assert!(dns1123_subdomain("example.com").is_ok());
        assert!(dns1123_subdomain("Bad_Name").unwrap_err().contains("RFC 1123 subdomain"));
        assert!(dns1123_subdomain(&"a".repeat(254)).is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1123_label(&"a".repeat(63)).is_ok());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1035_label("1abc").is_err());
        assert!(dns1035_label("abc-1").is_ok());
        assert!(path_segment("system:controller:x").is_ok());
        assert!(path_segment("a/b").is_err());
    }

    #[test]
    fn metadata_causes_name_the_field() {
        let mut causes = Vec::new();
        let meta = json!({"name": "Bad_Name", "labels": {"ok": "v", "bad key": "x", "k": "-bad-"}});
        object_meta(&meta, dns1123_subdomain, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "metadata.labels", "metadata.labels.k"]);
        assert!(causes[0].message.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
    }
}

/// Where Go's `base64.StdEncoding` (what decoding a JSON string into a `[]byte` field uses)
/// stops on `text`: the byte offset its `illegal base64 data at input byte N` names, or `None`
/// when it decodes. Newlines are skipped and the last quantum's spare bits are not checked, as
/// Go's non-strict decoder does.
pub fn go_base64_error(text: &str) -> Option<usize> {
    let src = text.as_bytes();
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    let newline = |b: u8| b == b'\n' || b == b'\r';
    let mut si = 0;
    while si < src.len() {
        // One quantum of four characters (Go's decodeQuantum).
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                return (j > 0).then(|| si - j);
            }
            let byte = src[si];
            si += 1;
            if alphabet(byte) {
                j += 1;
                continue;
            }
            if newline(byte) {
                continue;
            }
            if byte != b'=' || j < 2 {
                return Some(si - 1);
            }
            if j == 2 {
                // "==" is expected; the first "=" is consumed.
                while si < src.len() && newline(src[si]) {
                    si += 1;
                }
                if si == src.len() {
                    return Some(src.len());
                }
                if src[si] != b'=' {
                    return Some(si - 1);
                }
                si += 1;
            }
            while si < src.len() && newline(src[si]) {
                si += 1;
            }
            // Anything after the padding is trailing garbage.
            return (si < src.len()).then_some(si);
        }
    }
    None
}

#[cfg(test)]
mod base64_tests {
    use super::go_base64_error;

    /// Offsets as kube-apiserver 1.33 reports them (`illegal base64 data at input byte N`).
    #[test]
    fn base64_errors_are_where_go_reports_them() {
        for good in ["", "YQ==", "YWJj", "YWJj\nZA==", "YQ=\n=", "YWI=", "QUJD\r\nREVG"] {
            assert_eq!(go_base64_error(good), None, "{good:?}");
        }
        let joined = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=".repeat(2);
        for (bad, at) in [
            ("!!", 0),
            ("YQ", 0),
            ("YWJ", 0),
            ("a", 0),
            (joined.as_str(), 36),
            ("YQ=", 3),
            ("YQ=x", 2),
            ("Y===", 1),
            ("YWJjZA==Z", 8),
        ] {
            assert_eq!(go_base64_error(bad), Some(at), "{bad:?}");
        }
    }
}
