//! Service links (sync-behavior.md §4.8) kept per virtual namespace as services change, so a pod
//! create does not convert every service of its namespace again: the services' watch updates
//! one service's variables at a time, and a pod reads the namespace's list (small namespaces) or
//! the names of the host config maps holding it (large ones, written at most every two seconds).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use serde_json::Value;

use crate::lock;

/// The variables of one namespace's services, by service.
#[derive(Default)]
struct Namespace {
    /// Bumped by every change.
    generation: u64,
    by_service: BTreeMap<String, Vec<(String, String)>>,
    count: usize,
    /// The config maps last written: the generation they hold, their names, when.
    written: Option<(u64, Vec<String>, Instant)>,
    /// A rewrite of the config maps is under way in the background.
    rewriting: bool,
}

/// Service links by virtual namespace.
#[derive(Clone, Default)]
pub(crate) struct LinkIndex(Arc<Mutex<HashMap<String, Namespace>>>);

/// What a new pod of a namespace gets.
pub(crate) enum Links {
    /// Few enough to write into each container.
    Inline(Vec<(String, String)>),
    /// Read from these host config maps (already written).
    ConfigMaps(Vec<String>),
    /// The config maps must be (re)written with these variables first, as of `generation`.
    Write(Rewrite),
    /// Read from these host config maps (already written, but older than the services): the pod
    /// need not wait for the rewrite, which the caller starts in the background (its creation
    /// would otherwise wait for a few hundred KiB written to the host, every two seconds).
    Stale(Vec<String>, Rewrite),
}

/// A (re)write of a namespace's link config maps: the variables as of `generation`, and the
/// names written before (those no longer needed go).
pub(crate) struct Rewrite {
    pub generation: u64,
    pub variables: Vec<(String, String)>,
    pub before: Vec<String>,
}

/// A burst of service changes rewrites a namespace's link config maps at most this often.
const REWRITE_EVERY: Duration = Duration::from_secs(2);

impl LinkIndex {
    /// Records a change of `service` (deleted or not).
    pub(crate) fn update(&self, service: &Service, deleted: bool) {
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let variables = if deleted || crate::controlled(service) || name == "kubernetes" {
            Vec::new()
        } else {
            let spec = service.spec.as_ref();
            let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or_default();
            if ip.is_empty() || ip == "None" {
                Vec::new()
            } else {
                let ports: Vec<Value> =
                    spec.and_then(|s| s.ports.as_ref()).into_iter().flatten().map(crate::to_value).collect();
                vkube_translate::pods::service_link_variables(&name, ip, &ports)
            }
        };
        let mut index = lock(&self.0);
        let entry = index.entry(namespace).or_default();
        if entry.by_service.get(&name).is_some_and(|old| *old == variables) {
            return;
        }
        entry.generation += 1;
        let old = if variables.is_empty() {
            entry.by_service.remove(&name)
        } else {
            entry.by_service.insert(name, variables.clone())
        };
        entry.count = entry.count - old.map(|o| o.len()).unwrap_or(0) + variables.len();
    }

    fn flatten(namespace: &Namespace) -> Vec<(String, String)> {
        let sorted: BTreeMap<&String, &String> = namespace.by_service.values().flatten().map(|(k, v)| (k, v)).collect();
        sorted.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// What a new pod of `namespace` gets.
    pub(crate) fn for_pod(&self, namespace: &str) -> Links {
        let mut index = lock(&self.0);
        let Some(entry) = index.get_mut(namespace) else { return Links::Inline(Vec::new()) };
        let before = entry.written.as_ref().map(|(_, names, _)| names.clone()).unwrap_or_default();
        if entry.count <= vkube_translate::pods::INLINE_SERVICE_LINKS {
            if before.is_empty() {
                return Links::Inline(Self::flatten(entry));
            }
            // Back under the limit: the maps go (written as none).
            return Links::Write(Rewrite { generation: entry.generation, variables: Vec::new(), before });
        }
        let rewrite = Rewrite { generation: entry.generation, variables: Vec::new(), before: before.clone() };
        match &entry.written {
            Some((generation, names, _)) if *generation == entry.generation => Links::ConfigMaps(names.clone()),
            Some((_, names, at)) if !names.is_empty() && (entry.rewriting || at.elapsed() < REWRITE_EVERY) => {
                Links::ConfigMaps(names.clone())
            }
            Some((_, names, _)) if !names.is_empty() => {
                entry.rewriting = true;
                Links::Stale(names.clone(), Rewrite { variables: Self::flatten(entry), ..rewrite })
            }
            _ => Links::Write(Rewrite { variables: Self::flatten(entry), ..rewrite }),
        }
    }

    /// Records that `namespace`'s config maps now hold generation `generation` as `names`.
    pub(crate) fn written(&self, namespace: &str, generation: u64, names: Vec<String>) {
        if let Some(entry) = lock(&self.0).get_mut(namespace) {
            entry.written = Some((generation, names, Instant::now()));
            entry.rewriting = false;
        }
    }

    /// Records that a background rewrite of `namespace`'s config maps failed: the next pod of the
    /// namespace tries again.
    pub(crate) fn rewrite_failed(&self, namespace: &str) {
        if let Some(entry) = lock(&self.0).get_mut(namespace) {
            entry.rewriting = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, ip: &str) -> Service {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "ports": [{"port": 80, "protocol": "TCP"}]}}))
        .unwrap()
    }

    #[test]
    fn links_follow_service_changes_one_service_at_a_time() {
        let index = LinkIndex::default();
        index.update(&service("shop", "web", "10.0.0.1"), false);
        index.update(&service("shop", "headless", "None"), false);
        let Links::Inline(links) = index.for_pod("shop") else { panic!("few links are inline") };
        assert!(links.contains(&("WEB_SERVICE_HOST".into(), "10.0.0.1".into())));
        assert!(!links.iter().any(|(k, _)| k.starts_with("HEADLESS")));
        index.update(&service("shop", "web", "10.0.0.1"), true);
        let Links::Inline(links) = index.for_pod("shop") else { panic!() };
        assert!(links.is_empty());

        for i in 0..60 {
            index.update(&service("big", &format!("svc-{i}"), &format!("10.0.1.{i}")), false);
        }
        let Links::Write(Rewrite { generation, variables, before }) = index.for_pod("big") else {
            panic!("too many: maps")
        };
        assert_eq!(variables.len(), 60 * 7);
        assert!(before.is_empty());
        index.written("big", generation, vec!["m0".into()]);
        assert!(matches!(index.for_pod("big"), Links::ConfigMaps(names) if names == ["m0"]));
        // A change moments after a write waits for the next rewrite.
        index.update(&service("big", "svc-60", "10.0.1.60"), false);
        assert!(matches!(index.for_pod("big"), Links::ConfigMaps(_)));
        // Once that is due, one pod starts it in the background and goes on with the maps as they
        // are; the pods after it do not start another until it is done (or failed).
        lock(&index.0).get_mut("big").unwrap().written.as_mut().unwrap().2 -= REWRITE_EVERY;
        let Links::Stale(names, rewrite) = index.for_pod("big") else { panic!("a stale map is read, not waited for") };
        assert_eq!(
            (names, rewrite.variables.len(), rewrite.before),
            (vec!["m0".to_string()], 61 * 7, vec!["m0".into()])
        );
        assert!(matches!(index.for_pod("big"), Links::ConfigMaps(_)));
        index.rewrite_failed("big");
        let Links::Stale(_, rewrite) = index.for_pod("big") else { panic!("a failed rewrite is tried again") };
        index.written("big", rewrite.generation, vec!["m0".into(), "m1".into()]);
        assert!(matches!(index.for_pod("big"), Links::ConfigMaps(names) if names.len() == 2));
    }
}
