//! Label translation (sync-behavior.md 2.2–2.5): labels are copied verbatim except four reserved
//! keys, which are hashed; virtual namespace labels are projected onto host pods; selectors get the
//! same key translation.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::Context;
use crate::names::{hash_prefix, marker, safe_concat_name};

/// `vcluster.loft.sh/managed-by`: marks host objects of a virtual cluster.
pub const MANAGED_BY: &str = "vcluster.loft.sh/managed-by";
/// `vcluster.loft.sh/namespace`: the virtual namespace of a host object.
pub const NAMESPACE: &str = "vcluster.loft.sh/namespace";
/// `vcluster.loft.sh/controlled-by`: objects claimed by something else; syncers skip them.
pub const CONTROLLED_BY: &str = "vcluster.loft.sh/controlled-by";
/// Prefix of projected namespace labels on host pods.
pub const NS_LABEL_PREFIX: &str = "vcluster.loft.sh/ns-label";

/// The label keys that are hashed on the host.
pub const RESERVED: &[&str] = &["release", NAMESPACE, MANAGED_BY, CONTROLLED_BY];

/// The host key of reserved label `key`: `vcluster.loft.sh/label-VC-x-HASH10`.
pub fn translated_key(context: &Context, key: &str) -> String {
    safe_concat_name(&["vcluster.loft.sh/label", &context.name, "x", &hash_prefix(key, 10)])
}

/// The host key of a label of the virtual namespace, projected onto host pods.
pub fn namespace_label_key(context: &Context, key: &str) -> String {
    safe_concat_name(&[NS_LABEL_PREFIX, &context.name, "x", &hash_prefix(key, 10)])
}

/// The host key of virtual label `key` (translated if reserved, else unchanged).
pub fn host_key(context: &Context, key: &str) -> String {
    if RESERVED.contains(&key) { translated_key(context, key) } else { key.to_string() }
}

pub(crate) fn is_translated_key(context: &Context, key: &str) -> Option<&'static str> {
    RESERVED.iter().copied().find(|reserved| translated_key(context, reserved) == key)
}

/// Labels of the host object for virtual labels `virtual`: reserved keys translated, plus the
/// marker and (for namespaced objects) the virtual namespace; an existing `controlled-by` on the
/// host is kept.
pub fn host_labels(
    context: &Context,
    virtual_labels: &BTreeMap<String, String>,
    existing_host: Option<&BTreeMap<String, String>>,
    virtual_namespace: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in virtual_labels {
        if is_translated_key(context, key).is_some() {
            continue;
        }
        out.insert(host_key(context, key), value.clone());
    }
    out.insert(MANAGED_BY.to_string(), marker(context, virtual_namespace.is_some()));
    if let Some(namespace) = virtual_namespace {
        out.insert(NAMESPACE.to_string(), namespace.to_string());
    }
    if let Some(controlled) = existing_host.and_then(|h| h.get(CONTROLLED_BY)).filter(|v| !v.is_empty()) {
        out.insert(CONTROLLED_BY.to_string(), controlled.clone());
    }
    out
}

/// Virtual labels for host labels `host`: bookkeeping dropped, translated keys mapped back, raw
/// reserved keys from the host ignored (the virtual object's own values are kept).
pub fn virtual_labels(
    context: &Context,
    host: &BTreeMap<String, String>,
    existing_virtual: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in host {
        if key.starts_with(NS_LABEL_PREFIX) || RESERVED.contains(&key.as_str()) {
            continue;
        }
        match is_translated_key(context, key) {
            Some(reserved) => {
                out.insert(reserved.to_string(), value.clone());
            }
            None => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if let Some(existing) = existing_virtual {
        for reserved in [MANAGED_BY, NAMESPACE, CONTROLLED_BY] {
            if let Some(value) = existing.get(reserved) {
                out.insert(reserved.to_string(), value.clone());
            }
        }
    }
    out
}

/// The labels projected onto a host pod from its virtual namespace's labels.
pub fn namespace_labels(context: &Context, namespace_labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    namespace_labels.iter().map(|(k, v)| (namespace_label_key(context, k), v.clone())).collect()
}

/// A Service-style selector map for the host: translated keys plus the marker and namespace, so it
/// only selects pods of this virtual namespace of this virtual cluster. None stays None.
pub fn host_selector_map(
    context: &Context,
    selector: Option<&Map<String, Value>>,
    namespace: &str,
) -> Option<Map<String, Value>> {
    let selector = selector?;
    let mut out: Map<String, Value> = selector.iter().map(|(k, v)| (host_key(context, k), v.clone())).collect();
    out.insert(MANAGED_BY.into(), json!(context.name));
    out.insert(NAMESPACE.into(), json!(namespace));
    Some(out)
}

/// Whether `labels` satisfy a `LabelSelector` (`matchLabels`/`matchExpressions`, JSON); an
/// empty selector matches everything.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let labels_ok = match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| v.as_str().is_some_and(|v| labels.get(k).map(String::as_str) == Some(v)));
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    labels_ok
        && expressions.into_iter().flatten().all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> =
                e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let value = labels.get(key).map(String::as_str);
            match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// A `LabelSelector` (`matchLabels`/`matchExpressions`) with every key translated.
pub fn host_label_selector(context: &Context, selector: &Value) -> Value {
    let mut out = selector.clone();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        out["matchLabels"] = Value::Object(labels.iter().map(|(k, v)| (host_key(context, k), v.clone())).collect());
    }
    if let Some(expressions) = out.get_mut("matchExpressions").and_then(Value::as_array_mut) {
        for expression in expressions {
            if let Some(key) = expression.get("key").and_then(Value::as_str).map(String::from) {
                expression["key"] = json!(host_key(context, &key));
            }
        }
    }
    out
}

/// A pod (anti-)affinity term as the host must read it (§4.6): every pod lives in the one host
/// namespace, so the term keeps only `labelSelector` (translated, pinned to this virtual cluster)
/// and `topologyKey`, with its namespace scope folded into the selector — the pod's own
/// namespace by default, `namespaces` as an `In` expression, a `namespaceSelector` through the
/// projected namespace labels. Returns the term and whether it used both `namespaces` and a
/// non-empty `namespaceSelector` (unsupported: the selector is ignored).
pub fn host_affinity_term(context: &Context, term: &Value, pod_namespace: &str) -> (Value, bool) {
    let mut out = serde_json::Map::new();
    if let Some(key) = term.get("topologyKey") {
        out.insert("topologyKey".into(), key.clone());
    }
    let Some(selector) = term.get("labelSelector").filter(|s| !s.is_null()) else {
        return (Value::Object(out), false);
    };
    let mut host = host_label_selector(context, selector);
    let namespaces: Vec<Value> = term.get("namespaces").and_then(Value::as_array).cloned().unwrap_or_default();
    let namespace_selector = term.get("namespaceSelector").filter(|s| !s.is_null());
    let selector_is_empty = |s: &Value| {
        s.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty())
            && s.get("matchExpressions").and_then(Value::as_array).is_none_or(|e| e.is_empty())
    };
    let mut both = false;
    let mut expressions = host.get("matchExpressions").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut labels = host.get("matchLabels").and_then(Value::as_object).cloned().unwrap_or_default();
    if !namespaces.is_empty() {
        match namespace_selector {
            Some(s) if selector_is_empty(s) => {} // `{}`: every namespace.
            other => {
                both = other.is_some();
                expressions.push(json!({"key": NAMESPACE, "operator": "In", "values": namespaces}));
            }
        }
    } else if let Some(namespace_selector) = namespace_selector {
        for (key, value) in namespace_selector.get("matchLabels").and_then(Value::as_object).into_iter().flatten() {
            labels.insert(namespace_label_key(context, key), value.clone());
        }
        for expression in namespace_selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let mut expression = expression.clone();
            if let Some(key) = expression.get("key").and_then(Value::as_str).map(String::from) {
                expression["key"] = json!(namespace_label_key(context, &key));
            }
            expressions.push(expression);
        }
    } else {
        labels.insert(NAMESPACE.into(), json!(pod_namespace));
    }
    labels.insert(MANAGED_BY.into(), json!(context.name));
    host["matchLabels"] = Value::Object(labels);
    if expressions.is_empty() {
        if let Some(map) = host.as_object_mut() {
            map.remove("matchExpressions");
        }
    } else {
        host["matchExpressions"] = Value::Array(expressions);
    }
    out.insert("labelSelector".into(), host);
    (Value::Object(out), both)
}

/// Whether some (anti-)affinity term of `pod` names both `namespaces` and a non-empty
/// `namespaceSelector` (the selector is then ignored on the host, §4.6).
pub fn affinity_uses_both_namespace_forms(pod: &Value) -> bool {
    let mut terms = Vec::new();
    for kind in ["podAffinity", "podAntiAffinity"] {
        let base = format!("/spec/affinity/{kind}");
        terms.extend(
            pod.pointer(&format!("{base}/requiredDuringSchedulingIgnoredDuringExecution"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
        for weighted in pod
            .pointer(&format!("{base}/preferredDuringSchedulingIgnoredDuringExecution"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            terms.extend(weighted.get("podAffinityTerm").cloned());
        }
    }
    terms.iter().any(|term| host_affinity_term(&Context::new("", ""), term, "").1)
}

/// A topology spread constraint's selector pinned to this virtual cluster and the pod's
/// namespace (§4.6), its keys translated.
pub fn host_spread_selector(context: &Context, selector: &Value, pod_namespace: &str) -> Value {
    let mut host = host_label_selector(context, selector);
    let mut labels = host.get("matchLabels").and_then(Value::as_object).cloned().unwrap_or_default();
    labels.insert(MANAGED_BY.into(), json!(context.name));
    labels.insert(NAMESPACE.into(), json!(pod_namespace));
    host["matchLabels"] = Value::Object(labels);
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_terms_are_pinned_to_the_virtual_cluster_and_namespace() {
        let vc = vc();
        let term = json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"});
        let (host, both) = host_affinity_term(&vc, &term, "shop");
        assert!(!both);
        assert_eq!(
            host,
            json!({"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "db", NAMESPACE: "shop", MANAGED_BY: "my-vc"}}})
        );
        let listed =
            json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone", "namespaces": ["a", "b"]});
        let (host, _) = host_affinity_term(&vc, &listed, "shop");
        assert_eq!(
            host["labelSelector"]["matchExpressions"],
            json!([{"key": NAMESPACE, "operator": "In", "values": ["a", "b"]}])
        );
        assert!(host["labelSelector"]["matchLabels"].get(NAMESPACE).is_none());
        let by_labels =
            json!({"labelSelector": {}, "topologyKey": "zone", "namespaceSelector": {"matchLabels": {"team": "x"}}});
        let (host, _) = host_affinity_term(&vc, &by_labels, "shop");
        assert_eq!(host["labelSelector"]["matchLabels"][namespace_label_key(&vc, "team")], "x");
        let both = json!({"labelSelector": {}, "topologyKey": "zone", "namespaces": ["a"], "namespaceSelector": {"matchLabels": {"t": "x"}}});
        assert!(host_affinity_term(&vc, &both, "shop").1);
        let nil = json!({"topologyKey": "zone", "namespaces": ["a"]});
        assert_eq!(host_affinity_term(&vc, &nil, "shop").0, json!({"topologyKey": "zone"}));
    }

    fn vc() -> Context {
        Context::new("my-vc", "vcluster-my-vc")
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reserved_keys_hash_like_the_reference() {
        assert_eq!(translated_key(&vc(), "release"), "vcluster.loft.sh/label-my-vc-x-a4d451ec23");
        assert_eq!(translated_key(&vc(), NAMESPACE), "vcluster.loft.sh/label-my-vc-x-101dcd4e86");
        assert_eq!(translated_key(&vc(), MANAGED_BY), "vcluster.loft.sh/label-my-vc-x-e5f1b28ab2");
        assert_eq!(translated_key(&vc(), CONTROLLED_BY), "vcluster.loft.sh/label-my-vc-x-2080cec00f");
        let labels = map(&[("expose", "yes"), ("tier", "gold")]);
        let selector = serde_json::json!({"matchLabels": {"expose": "yes"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]},
                                 {"key": "legacy", "operator": "DoesNotExist"}]});
        assert!(selector_matches(&selector, &labels));
        assert!(!selector_matches(&selector, &map(&[("expose", "yes"), ("tier", "bronze")])));
        assert!(!selector_matches(&selector, &map(&[("tier", "gold")])));
        assert!(selector_matches(&serde_json::json!({}), &map(&[])), "empty selects all");
        assert_eq!(
            translated_key(&Context::new("suffix", "x"), "release"),
            "vcluster.loft.sh/label-suffix-x-a4d451ec23"
        );
        assert_eq!(
            namespace_label_key(&vc(), "kubernetes.io/metadata.name"),
            "vcluster.loft.sh/ns-label-my-vc-x-cf1227b7b2"
        );
        assert_eq!(namespace_label_key(&vc(), "team"), "vcluster.loft.sh/ns-label-my-vc-x-ca8b22d0db");
    }

    #[test]
    fn pod_labels_worked_example() {
        let host = host_labels(&vc(), &map(&[("app", "nginx"), ("release", "stable")]), None, Some("default"));
        let mut expected = map(&[
            ("app", "nginx"),
            ("vcluster.loft.sh/label-my-vc-x-a4d451ec23", "stable"),
            ("vcluster.loft.sh/managed-by", "my-vc"),
            ("vcluster.loft.sh/namespace", "default"),
        ]);
        assert_eq!(host, expected);
        let mut with_ns = host.clone();
        with_ns.extend(namespace_labels(&vc(), &map(&[("kubernetes.io/metadata.name", "default")])));
        expected.insert("vcluster.loft.sh/ns-label-my-vc-x-cf1227b7b2".into(), "default".into());
        assert_eq!(with_ns, expected);
        // And back: bookkeeping and projections are dropped, the reserved key returns.
        assert_eq!(virtual_labels(&vc(), &with_ns, None), map(&[("app", "nginx"), ("release", "stable")]));
    }

    #[test]
    fn host_owned_reserved_keys_do_not_leak_back() {
        let host = map(&[("release", "host-value"), ("app", "x"), (CONTROLLED_BY, "plugin")]);
        let existing = map(&[("release", "mine")]);
        assert_eq!(virtual_labels(&vc(), &host, Some(&existing)), map(&[("app", "x")]));
        let kept = host_labels(&vc(), &map(&[("a", "b")]), Some(&map(&[(CONTROLLED_BY, "plugin")])), Some("ns"));
        assert_eq!(kept.get(CONTROLLED_BY).map(String::as_str), Some("plugin"));
    }

    #[test]
    fn service_selectors_pin_namespace_and_cluster() {
        let selector = json!({"app": "web", "release": "v1"});
        let host = host_selector_map(&vc(), selector.as_object(), "team").unwrap();
        assert_eq!(
            Value::Object(host),
            json!({"app": "web", "vcluster.loft.sh/label-my-vc-x-a4d451ec23": "v1", MANAGED_BY: "my-vc", NAMESPACE: "team"})
        );
        assert!(host_selector_map(&vc(), None, "team").is_none());
        let selector =
            json!({"matchLabels": {"release": "a"}, "matchExpressions": [{"key": "release", "operator": "Exists"}]});
        let translated = host_label_selector(&vc(), &selector);
        assert_eq!(translated["matchExpressions"][0]["key"], "vcluster.loft.sh/label-my-vc-x-a4d451ec23");
    }
}
