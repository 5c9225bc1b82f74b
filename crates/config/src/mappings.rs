//! `mappings.byName` of objects copied from the host (sync-behavior.md §5.5, §8.4, §11.3): which
//! host objects (by namespace and name) appear in the virtual cluster, and where. Pure: parsing,
//! the reference's validation messages, and resolution both ways.

use std::collections::BTreeMap;

/// The left side of a mapping: which host objects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// `"ns/name"`.
    Exact { namespace: String, name: String },
    /// `"ns/*"`: every object of a host namespace.
    Namespace(String),
    /// `"/name"`: an object of the virtual cluster's host namespace.
    Own(String),
    /// `""`: every object of the virtual cluster's host namespace.
    AllOwn,
}

/// The right side: where in the virtual cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    namespace: String,
    /// None: the host object's own name (`ns/*`, or a plain `ns` for the `""` key).
    name: Option<String>,
}

/// Parsed `mappings.byName`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByName {
    entries: Vec<(Source, Target)>,
    /// As written.
    written: BTreeMap<String, String>,
}

/// A DNS-1123 label (namespace names).
pub(crate) fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(dns_label)
}

impl ByName {
    /// Parses `by_name` (`hostKey → virtualValue`); Err lists every problem, each a message to
    /// report under the mappings' path (`what` names them, e.g. `sync.fromHost.configMaps.mappings`).
    pub fn parse(what: &str, by_name: &BTreeMap<String, String>) -> Result<ByName, Vec<String>> {
        let mut problems = Vec::new();
        if by_name.is_empty() {
            problems.push(format!(
                "config.{what} are empty: list the host objects to copy under byName (e.g. \"my-namespace/my-object\": \"default/my-object\")"
            ));
        }
        let mut entries = Vec::new();
        for (key, value) in by_name {
            match parse_entry(what, key, value) {
                Ok(entry) => entries.push(entry),
                Err(message) => problems.push(message),
            }
        }
        if problems.is_empty() { Ok(ByName { entries, written: by_name.clone() }) } else { Err(problems) }
    }

    /// The mappings as written (`hostKey → virtualValue`).
    pub fn written(&self) -> &BTreeMap<String, String> {
        &self.written
    }

    /// Where host object `namespace/name` appears in the virtual cluster, if it does
    /// (`host_namespace`: the virtual cluster's own host namespace). First match wins: an exact
    /// key, then `ns/*`, then (in the own host namespace) `/name`, then `""`.
    pub fn to_virtual(&self, host_namespace: &str, namespace: &str, name: &str) -> Option<(String, String)> {
        let target = |t: &Target| (t.namespace.clone(), t.name.clone().unwrap_or_else(|| name.to_string()));
        let find =
            |matches: &dyn Fn(&Source) -> bool| self.entries.iter().find(|(s, _)| matches(s)).map(|(_, t)| target(t));
        find(&|s| matches!(s, Source::Exact { namespace: n, name: m } if n == namespace && m == name))
            .or_else(|| find(&|s| matches!(s, Source::Namespace(n) if n == namespace)))
            .or_else(|| {
                (namespace == host_namespace).then(|| find(&|s| matches!(s, Source::Own(m) if m == name))).flatten()
            })
            .or_else(|| (namespace == host_namespace).then(|| find(&|s| *s == Source::AllOwn)).flatten())
    }

    /// The host object that virtual object `namespace/name` would be the copy of, if any.
    pub fn to_host(&self, host_namespace: &str, namespace: &str, name: &str) -> Option<(String, String)> {
        let host = |source: &Source| match source {
            Source::Exact { namespace, name } => (namespace.clone(), name.clone()),
            Source::Own(own) => (host_namespace.to_string(), own.clone()),
            Source::Namespace(source) => (source.clone(), name.to_string()),
            Source::AllOwn => (host_namespace.to_string(), name.to_string()),
        };
        // Exact targets first, then whole namespaces; each candidate must map back to this object.
        let mut candidates: Vec<&(Source, Target)> =
            self.entries.iter().filter(|(_, t)| t.namespace == namespace).collect();
        candidates.sort_by_key(|(_, t)| t.name.is_none());
        candidates.into_iter().map(|(s, _)| host(s)).find(|(hn, hname)| {
            self.to_virtual(host_namespace, hn, hname).is_some_and(|(vn, vname)| vn == namespace && vname == name)
        })
    }

    /// The host namespaces objects are copied from.
    pub fn host_namespaces(&self, host_namespace: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .entries
            .iter()
            .map(|(s, _)| match s {
                Source::Exact { namespace, .. } | Source::Namespace(namespace) => namespace.clone(),
                Source::Own(_) | Source::AllOwn => host_namespace.to_string(),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The virtual namespaces copies land in.
    pub fn virtual_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self.entries.iter().map(|(_, t)| t.namespace.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The host object names a namespace's Role may be limited to (`get` by name), or None when a
    /// key takes whole namespaces.
    pub fn host_names(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (source, _) in &self.entries {
            match source {
                Source::Exact { name, .. } | Source::Own(name) => out.push(name.clone()),
                Source::Namespace(_) | Source::AllOwn => return None,
            }
        }
        out.sort();
        out.dedup();
        Some(out)
    }
}

fn parse_entry(what: &str, key: &str, value: &str) -> Result<(Source, Target), String> {
    if key.matches('/').count() > 1 || value.matches('/').count() > 1 {
        return Err(format!(
            "config.{what} has key:value pair in invalid format: {key}:{value} (expected NAMESPACE/NAME: NAMESPACE/NAME)"
        ));
    }
    let namespace_ok = |ns: &str, side: &str| {
        if dns_label(ns) {
            Ok(())
        } else {
            Err(format!(
                "config.{what}: parsed {side} namespace {ns:?} (from {key:?}: {value:?}) is not a valid namespace name"
            ))
        }
    };
    let name_ok = |name: &str| {
        if name == "*" || dns_subdomain(name) {
            Ok(())
        } else {
            Err(format!("config.{what}: parsed object name {name:?} (from {key:?}: {value:?}) is not a valid name"))
        }
    };
    let source = if key.is_empty() {
        Source::AllOwn
    } else {
        let Some((namespace, name)) = key.split_once('/') else {
            return Err(format!(
                "config.{what} has key in invalid format: {key} (expected NAMESPACE_NAME/NAME, NAMESPACE_NAME/*, /NAME or \"\")"
            ));
        };
        name_ok(name)?;
        if name.is_empty() {
            return Err(format!(
                "config.{what}: parsed object name \"\" (from {key:?}: {value:?}) is not a valid name"
            ));
        }
        if namespace.is_empty() {
            if name == "*" {
                return Err(format!(
                    "config.{what} has key in invalid format: {key} (use \"\" for every object of the host namespace)"
                ));
            }
            Source::Own(name.to_string())
        } else {
            namespace_ok(namespace, "host")?;
            if name == "*" {
                Source::Namespace(namespace.to_string())
            } else {
                Source::Exact { namespace: namespace.to_string(), name: name.to_string() }
            }
        }
    };
    let target = match value.split_once('/') {
        None if source == Source::AllOwn => {
            namespace_ok(value, "virtual")?;
            Target { namespace: value.to_string(), name: None }
        }
        None => {
            return Err(format!(
                "config.{what} has value in invalid format: {value} (expected NAMESPACE_NAME/NAME or NAMESPACE_NAME/*)"
            ));
        }
        Some((namespace, name)) => {
            namespace_ok(namespace, "virtual")?;
            name_ok(name)?;
            if name.is_empty() {
                return Err(format!(
                    "config.{what}: parsed object name \"\" (from {key:?}: {value:?}) is not a valid name"
                ));
            }
            Target { namespace: namespace.to_string(), name: (name != "*").then(|| name.to_string()) }
        }
    };
    let whole = matches!(source, Source::Namespace(_) | Source::AllOwn);
    if whole && target.name.is_some() {
        return Err(format!(
            "config.{what} has key that matches all objects in the namespace {key:?} but value does not: {value} (expected NAMESPACE_NAME/*)"
        ));
    }
    Ok((source, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_name(pairs: &[(&str, &str)]) -> Result<ByName, Vec<String>> {
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ByName::parse("sync.fromHost.configMaps.mappings", &map)
    }

    fn pair(ns: &str, name: &str) -> Option<(String, String)> {
        Some((ns.into(), name.into()))
    }

    #[test]
    fn host_objects_resolve_first_match_wins_and_back() {
        let m = by_name(&[
            ("shared/registry", "default/pull-secret"),
            ("shared/*", "imported/*"),
            ("/tls", "web/cert"),
            ("", "mine"),
            ("other/keep", "apps/*"),
        ])
        .unwrap();
        let hns = "vcluster-vc1";
        assert_eq!(m.to_virtual(hns, "shared", "registry"), pair("default", "pull-secret"), "exact before ns/*");
        assert_eq!(m.to_virtual(hns, "shared", "ca"), pair("imported", "ca"));
        assert_eq!(m.to_virtual(hns, hns, "tls"), pair("web", "cert"), "/name before \"\"");
        assert_eq!(m.to_virtual(hns, hns, "settings"), pair("mine", "settings"));
        assert_eq!(m.to_virtual(hns, "other", "keep"), pair("apps", "keep"), "value name * keeps the host name");
        assert_eq!(m.to_virtual(hns, "other", "drop"), None);
        assert_eq!(m.to_virtual("elsewhere", "kube-system", "tls"), None);

        assert_eq!(m.to_host(hns, "default", "pull-secret"), pair("shared", "registry"));
        assert_eq!(m.to_host(hns, "imported", "ca"), pair("shared", "ca"));
        assert_eq!(m.to_host(hns, "web", "cert"), pair(hns, "tls"));
        assert_eq!(m.to_host(hns, "mine", "settings"), pair(hns, "settings"));
        assert_eq!(m.to_host(hns, "apps", "keep"), pair("other", "keep"));
        assert_eq!(m.to_host(hns, "apps", "drop"), None);
        assert_eq!(m.to_host(hns, "default", "other"), None);
        assert_eq!(m.host_namespaces(hns), vec!["other", "shared", hns]);
        assert_eq!(m.virtual_namespaces(), vec!["apps", "default", "imported", "mine", "web"]);
        assert_eq!(m.host_names(), None, "whole namespaces are read");
        assert_eq!(by_name(&[("a/x", "b/y"), ("/z", "b/z")]).unwrap().host_names(), Some(vec!["x".into(), "z".into()]));
    }

    #[test]
    fn invalid_mappings_are_named() {
        let what = "config.sync.fromHost.configMaps.mappings";
        assert_eq!(by_name(&[]).unwrap_err()[0].split(':').next().unwrap(), format!("{what} are empty"));
        for ((key, value), expected) in [
            (("noslash", "a/b"), "has key in invalid format: noslash"),
            (("a/b", "noslash"), "has value in invalid format: noslash"),
            (("a/*", "b/c"), "has key that matches all objects in the namespace \"a/*\" but value does not: b/c"),
            (("a/b/c", "d/e"), "has key:value pair in invalid format: a/b/c:d/e"),
            (("Bad_NS/x", "d/e"), "parsed host namespace \"Bad_NS\""),
            (("a/x", "d/Bad_Name"), "parsed object name \"Bad_Name\""),
            (("", "d/x"), "has key that matches all objects"),
        ] {
            let problems = by_name(&[(key, value)]).unwrap_err();
            assert!(problems[0].contains(expected), "{key}:{value} → {problems:?}");
        }
    }
}
