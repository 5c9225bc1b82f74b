//! Bookkeeping annotations on host objects (sync-behavior.md 2.1 and 2.6) and the reverse mapping
//! of a host object to its virtual object by them.

use std::collections::{BTreeMap, BTreeSet};

use crate::Context;
use crate::labels::MANAGED_BY;
use crate::names::marker;

/// `vcluster.loft.sh/object-name`
pub const OBJECT_NAME: &str = "vcluster.loft.sh/object-name";
/// `vcluster.loft.sh/object-namespace`
pub const OBJECT_NAMESPACE: &str = "vcluster.loft.sh/object-namespace";
/// `vcluster.loft.sh/object-uid`
pub const OBJECT_UID: &str = "vcluster.loft.sh/object-uid";
/// `vcluster.loft.sh/object-kind`
pub const OBJECT_KIND: &str = "vcluster.loft.sh/object-kind";
/// `vcluster.loft.sh/object-host-name`
pub const OBJECT_HOST_NAME: &str = "vcluster.loft.sh/object-host-name";
/// `vcluster.loft.sh/object-host-namespace`
pub const OBJECT_HOST_NAMESPACE: &str = "vcluster.loft.sh/object-host-namespace";
/// `vcluster.loft.sh/managed-annotations`
pub const MANAGED_ANNOTATIONS: &str = "vcluster.loft.sh/managed-annotations";
/// `vcluster.loft.sh/managed-labels`
pub const MANAGED_LABELS: &str = "vcluster.loft.sh/managed-labels";

/// The eight bookkeeping keys: never copied host → virtual, never diffed.
pub const BOOKKEEPING: &[&str] = &[
    OBJECT_NAME,
    OBJECT_NAMESPACE,
    OBJECT_UID,
    OBJECT_KIND,
    OBJECT_HOST_NAME,
    OBJECT_HOST_NAMESPACE,
    MANAGED_ANNOTATIONS,
    MANAGED_LABELS,
];

/// Go's `GroupVersionKind.String()`: `apps/v1, Kind=Deployment`, `/v1, Kind=Pod`.
pub fn kind_string(group: &str, version: &str, kind: &str) -> String {
    format!("{group}/{version}, Kind={kind}")
}

/// What identifies the virtual object and the host copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity<'a> {
    /// Virtual name.
    pub name: &'a str,
    /// Virtual namespace (None for cluster-scoped objects).
    pub namespace: Option<&'a str>,
    /// Virtual uid.
    pub uid: &'a str,
    /// `kind_string` of the kind.
    pub kind: &'a str,
    /// The host object's name.
    pub host_name: &'a str,
    /// The host object's namespace (None for cluster-scoped objects).
    pub host_namespace: Option<&'a str>,
}

/// Host annotations for a virtual object: its annotations (except `excluded`) merged over the
/// current host annotations with the managed-set rules, plus the bookkeeping annotations.
pub fn host_annotations(
    virtual_annotations: &BTreeMap<String, String>,
    current_host: &BTreeMap<String, String>,
    excluded: &[&str],
    identity: &Identity<'_>,
) -> BTreeMap<String, String> {
    let is_excluded = |key: &str| BOOKKEEPING.contains(&key) || excluded.contains(&key);
    let previously_managed: BTreeSet<&str> = current_host
        .get(MANAGED_ANNOTATIONS)
        .map(|v| v.split('\n').filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut managed = BTreeSet::new();
    for (key, value) in virtual_annotations {
        if is_excluded(key) {
            continue;
        }
        out.insert(key.clone(), value.clone());
        managed.insert(key.clone());
    }
    for (key, value) in current_host {
        if out.contains_key(key) {
            continue;
        }
        let keep = is_excluded(key) || (!managed.contains(key) && !previously_managed.contains(key.as_str()));
        if keep && !BOOKKEEPING.contains(&key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    if !managed.is_empty() {
        out.insert(MANAGED_ANNOTATIONS.into(), managed.into_iter().collect::<Vec<_>>().join("\n"));
    }
    out.insert(OBJECT_NAME.into(), identity.name.into());
    out.insert(OBJECT_UID.into(), identity.uid.into());
    out.insert(OBJECT_KIND.into(), identity.kind.into());
    out.insert(OBJECT_HOST_NAME.into(), identity.host_name.into());
    if let Some(namespace) = identity.namespace {
        out.insert(OBJECT_NAMESPACE.into(), namespace.into());
    }
    if let Some(namespace) = identity.host_namespace {
        out.insert(OBJECT_HOST_NAMESPACE.into(), namespace.into());
    }
    out
}

/// Virtual annotations from a host object's: bookkeeping and `excluded` keys are not copied
/// (excluded keys keep the virtual object's value).
pub fn virtual_annotations(
    host: &BTreeMap<String, String>,
    existing_virtual: Option<&BTreeMap<String, String>>,
    excluded: &[&str],
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = host
        .iter()
        .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()) && !excluded.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(existing) = existing_virtual {
        for key in excluded {
            if let Some(value) = existing.get(*key) {
                out.insert(key.to_string(), value.clone());
            }
        }
    }
    out
}

/// The virtual (namespace, name) a host object belongs to, read from its bookkeeping, or None
/// when it is not this virtual cluster's or was copied/renamed (sync-behavior.md 1.9 step 3).
pub fn virtual_identity(
    context: &Context,
    kind: &str,
    host_name: &str,
    host_namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<(Option<String>, String)> {
    let name = annotations.get(OBJECT_NAME).filter(|n| !n.is_empty())?;
    if let Some(owner) = labels.get(MANAGED_BY)
        && *owner != marker(context, host_namespace.is_some())
    {
        return None;
    }
    if annotations.get(OBJECT_KIND).is_some_and(|k| k != kind) {
        return None;
    }
    if annotations.get(OBJECT_HOST_NAME).is_some_and(|n| n != host_name) {
        return None;
    }
    if let (Some(recorded), Some(actual)) = (annotations.get(OBJECT_HOST_NAMESPACE), host_namespace)
        && recorded != actual
    {
        return None;
    }
    Some((annotations.get(OBJECT_NAMESPACE).cloned(), name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn identity() -> Identity<'static> {
        Identity {
            name: "web",
            namespace: Some("default"),
            uid: "0d5c6f0e",
            kind: "networking.k8s.io/v1, Kind=Ingress",
            host_name: "web-x-default-x-my-vc",
            host_namespace: Some("vcluster-my-vc"),
        }
    }

    #[test]
    fn bookkeeping_matches_the_worked_example() {
        let host = host_annotations(&BTreeMap::new(), &BTreeMap::new(), &[], &identity());
        assert_eq!(
            host,
            map(&[
                (OBJECT_NAME, "web"),
                (OBJECT_NAMESPACE, "default"),
                (OBJECT_UID, "0d5c6f0e"),
                (OBJECT_KIND, "networking.k8s.io/v1, Kind=Ingress"),
                (OBJECT_HOST_NAME, "web-x-default-x-my-vc"),
                (OBJECT_HOST_NAMESPACE, "vcluster-my-vc"),
            ])
        );
        assert_eq!(kind_string("", "v1", "Pod"), "/v1, Kind=Pod");
    }

    #[test]
    fn managed_set_adds_removes_and_keeps_host_additions() {
        let first = host_annotations(&map(&[("test", "test")]), &BTreeMap::new(), &[], &identity());
        assert_eq!(first.get(MANAGED_ANNOTATIONS).map(String::as_str), Some("test"));
        // Someone adds `other` on the host; the virtual object drops `test` and gains `new`.
        let mut host = first.clone();
        host.insert("other".into(), "host".into());
        let second = host_annotations(&map(&[("new", "1")]), &host, &[], &identity());
        assert!(second.contains_key("other"), "host additions stay");
        assert!(!second.contains_key("test"), "previously managed and gone from virtual: removed");
        assert_eq!(second.get(MANAGED_ANNOTATIONS).map(String::as_str), Some("new"));
        // Excluded keys keep the host's value.
        let excluded = host_annotations(&map(&[("x", "virtual")]), &map(&[("x", "host")]), &["x"], &identity());
        assert_eq!(excluded.get("x").map(String::as_str), Some("host"));
    }

    #[test]
    fn reverse_identity_rejects_foreign_and_copied_objects() {
        let vc = Context::new("my-vc", "vcluster-my-vc");
        let annotations = host_annotations(&BTreeMap::new(), &BTreeMap::new(), &[], &identity());
        let labels = map(&[(MANAGED_BY, "my-vc")]);
        let kind = "networking.k8s.io/v1, Kind=Ingress";
        assert_eq!(
            virtual_identity(&vc, kind, "web-x-default-x-my-vc", Some("vcluster-my-vc"), &labels, &annotations),
            Some((Some("default".into()), "web".into()))
        );
        assert_eq!(virtual_identity(&vc, kind, "a-copy", Some("vcluster-my-vc"), &labels, &annotations), None);
        assert_eq!(
            virtual_identity(
                &vc,
                kind,
                "web-x-default-x-my-vc",
                Some("vcluster-my-vc"),
                &map(&[(MANAGED_BY, "other")]),
                &annotations
            ),
            None
        );
        assert_eq!(
            virtual_identity(
                &vc,
                "/v1, Kind=Service",
                "web-x-default-x-my-vc",
                Some("vcluster-my-vc"),
                &labels,
                &annotations
            ),
            None
        );
        assert_eq!(virtual_annotations(&annotations, None, &[]), BTreeMap::new());
    }
}
