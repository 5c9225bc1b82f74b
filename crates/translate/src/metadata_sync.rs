//! Labels and annotations after creation (sync-behavior.md §2.7): a change on either side of a
//! synced pod, service, config map, secret or claim reaches the other side.
//!
//! Both sides are compared in the virtual key space (reserved label keys mapped back, bookkeeping
//! and per-kind excluded keys left out) against what they last agreed on. Per key, a value the
//! virtual side changed wins; otherwise a value the host side changed is taken; keys nobody
//! changed are left alone, so host-only additions (cloud controllers' annotations) come back to
//! the virtual object and stay. Without a last agreement (after a restart) nothing is removed:
//! the virtual values win and host-only keys are taken.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::Context;
use crate::labels::{host_key, is_translated_key, virtual_labels};
use crate::metadata::BOOKKEEPING;

/// Keys to values.
pub type Pairs = BTreeMap<String, String>;

/// The labels and annotations of one object that sync, in the virtual key space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub labels: Pairs,
    pub annotations: Pairs,
}

/// Annotations that never sync for a kind (§2.8), besides the bookkeeping ones: exact keys and
/// key prefixes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Excluded {
    pub keys: &'static [&'static str],
    pub prefixes: &'static [&'static str],
}

impl Excluded {
    fn contains(&self, key: &str) -> bool {
        BOOKKEEPING.contains(&key) || self.keys.contains(&key) || self.prefixes.iter().any(|p| key.starts_with(p))
    }
}

/// What syncs of a virtual object's metadata.
pub fn of_virtual(context: &Context, labels: &Pairs, annotations: &Pairs, excluded: Excluded) -> Metadata {
    Metadata {
        labels: labels.iter().filter(|(k, _)| is_translated_key(context, k).is_none()).map(clone).collect(),
        annotations: annotations.iter().filter(|(k, _)| !excluded.contains(k)).map(clone).collect(),
    }
}

/// What syncs of a host object's metadata, as the virtual object would carry it.
pub fn of_host(context: &Context, labels: &Pairs, annotations: &Pairs, excluded: Excluded) -> Metadata {
    Metadata {
        labels: virtual_labels(context, labels, None),
        annotations: annotations.iter().filter(|(k, _)| !excluded.contains(k)).map(clone).collect(),
    }
}

fn clone((k, v): (&String, &String)) -> (String, String) {
    (k.clone(), v.clone())
}

/// The writes that bring both sides to the merged metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// A merge patch of the host object (`{"metadata": {"labels": ..., "annotations": ...}}`,
    /// host keys, `null` removes), when the host must change.
    pub host_patch: Option<Value>,
    /// The same for the virtual object.
    pub virtual_patch: Option<Value>,
    /// What both sides carry once the patches are written (the next `last`).
    pub agreed: Metadata,
}

/// Merges one map: per key, a virtual change wins, else a host change; `None` base means no
/// agreement is known (nothing is removed then).
fn merge(base: Option<&Pairs>, virtual_now: &Pairs, host_now: &Pairs) -> Pairs {
    let keys: BTreeSet<&String> =
        virtual_now.keys().chain(host_now.keys()).chain(base.into_iter().flat_map(|b| b.keys())).collect();
    let mut out = Pairs::new();
    for key in keys {
        let (v, h) = (virtual_now.get(key), host_now.get(key));
        let merged = match base {
            _ if v == h => v,
            Some(base) if v != base.get(key) => v,
            Some(_) => h,
            None => v.or(h),
        };
        if let Some(value) = merged {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

/// The merge patch that turns `from` into `to` (keys mapped by `key`).
fn patch(from: &Pairs, to: &Pairs, key: impl Fn(&str) -> String) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, value) in to {
        if from.get(k) != Some(value) {
            out.insert(key(k), json!(value));
        }
    }
    for k in from.keys().filter(|k| !to.contains_key(*k)) {
        out.insert(key(k), Value::Null);
    }
    out
}

fn metadata_patch(labels: Map<String, Value>, annotations: Map<String, Value>) -> Option<Value> {
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut metadata = Map::new();
    if !labels.is_empty() {
        metadata.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    Some(json!({"metadata": metadata}))
}

/// Decides the writes for one synced pair.
pub fn decide(context: &Context, last: Option<&Metadata>, virtual_now: &Metadata, host_now: &Metadata) -> Decision {
    let agreed = Metadata {
        labels: merge(last.map(|l| &l.labels), &virtual_now.labels, &host_now.labels),
        annotations: merge(last.map(|l| &l.annotations), &virtual_now.annotations, &host_now.annotations),
    };
    let same = |k: &str| k.to_string();
    Decision {
        host_patch: metadata_patch(
            patch(&host_now.labels, &agreed.labels, |k| host_key(context, k)),
            patch(&host_now.annotations, &agreed.annotations, same),
        ),
        virtual_patch: metadata_patch(
            patch(&virtual_now.labels, &agreed.labels, same),
            patch(&virtual_now.annotations, &agreed.annotations, same),
        ),
        agreed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc() -> Context {
        Context::new("vc", "vcluster-vc")
    }

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Metadata {
        Metadata { labels: pairs(labels), annotations: pairs(annotations) }
    }

    #[test]
    fn a_virtual_change_goes_to_the_host_with_removals_and_translated_keys() {
        let last = meta(&[("app", "web"), ("old", "1")], &[("a", "1")]);
        let virtual_now = meta(&[("app", "web"), ("tier", "front"), ("release", "r2")], &[("a", "2")]);
        let host_now = meta(&[("app", "web"), ("old", "1")], &[("a", "1"), ("cloud", "x")]);
        let decision = decide(&vc(), Some(&last), &virtual_now, &host_now);
        let release = crate::labels::translated_key(&vc(), "release");
        assert_eq!(
            decision.host_patch.unwrap(),
            json!({"metadata": {"labels": {"tier": "front", "old": null, release: "r2"}, "annotations": {"a": "2"}}})
        );
        // The host's own annotation comes back to the virtual object.
        assert_eq!(decision.virtual_patch.unwrap(), json!({"metadata": {"annotations": {"cloud": "x"}}}));
        assert_eq!(decision.agreed.annotations, pairs(&[("a", "2"), ("cloud", "x")]));
    }

    #[test]
    fn a_host_change_comes_back_and_the_virtual_side_wins_a_conflict() {
        let last = meta(&[("app", "web")], &[("a", "1"), ("b", "1")]);
        let virtual_now = meta(&[("app", "web")], &[("a", "virtual"), ("b", "1")]);
        let host_now = meta(&[], &[("a", "host"), ("b", "2")]);
        let decision = decide(&vc(), Some(&last), &virtual_now, &host_now);
        assert_eq!(
            decision.virtual_patch.unwrap(),
            json!({"metadata": {"labels": {"app": null}, "annotations": {"b": "2"}}}),
            "the host removed a label and changed b"
        );
        assert_eq!(decision.host_patch.unwrap(), json!({"metadata": {"annotations": {"a": "virtual"}}}));
    }

    #[test]
    fn without_an_agreement_nothing_is_removed() {
        let virtual_now = meta(&[("app", "web")], &[]);
        let host_now = meta(&[("app", "old"), ("host-only", "1")], &[]);
        let decision = decide(&vc(), None, &virtual_now, &host_now);
        assert_eq!(decision.host_patch.unwrap(), json!({"metadata": {"labels": {"app": "web"}}}));
        assert_eq!(decision.virtual_patch.unwrap(), json!({"metadata": {"labels": {"host-only": "1"}}}));
        let in_step = decide(&vc(), Some(&decision.agreed), &decision.agreed, &decision.agreed);
        assert_eq!((in_step.host_patch, in_step.virtual_patch), (None, None));
    }

    #[test]
    fn bookkeeping_and_excluded_keys_never_count() {
        let excluded = Excluded { keys: &["field.cattle.io/publicEndpoints"], prefixes: &["vcluster.loft.sh/token-"] };
        let host = of_host(
            &vc(),
            &pairs(&[("vcluster.loft.sh/managed-by", "vc"), ("vcluster.loft.sh/namespace", "default"), ("app", "web")]),
            &pairs(&[
                ("vcluster.loft.sh/object-name", "web"),
                ("field.cattle.io/publicEndpoints", "[]"),
                ("vcluster.loft.sh/token-abc", "t"),
                ("kept", "1"),
            ]),
            excluded,
        );
        assert_eq!(host, meta(&[("app", "web")], &[("kept", "1")]));
    }
}
