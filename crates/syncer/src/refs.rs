//! Indexes the syncer keeps up to date from watch events, so that a reconcile never scans a
//! cache: which virtual objects use each host config map or secret, and which host nodes run
//! synced pods.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Config maps and secrets are the two kinds pods reference by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum DataKind {
    ConfigMap,
    Secret,
}

impl DataKind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            DataKind::ConfigMap => "ConfigMap",
            DataKind::Secret => "Secret",
        }
    }
}

/// One use of a host copy: the virtual object (namespace, name) that `host` stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Use {
    pub kind: DataKind,
    pub host: String,
    pub namespace: String,
    pub name: String,
}

/// Who needs which host config map or secret. A user is a pod (`pod/NS/NAME`) or, with
/// `all: true`, the virtual object itself (`all/NS/NAME`).
#[derive(Default, Debug)]
pub(crate) struct RefIndex {
    by_user: HashMap<String, BTreeSet<Use>>,
    users: HashMap<(DataKind, String), BTreeMap<(String, String), usize>>,
}

impl RefIndex {
    /// Whether `user` uses anything now.
    pub(crate) fn has(&self, user: &str) -> bool {
        self.by_user.contains_key(user)
    }

    /// Records what `user` uses now; returns the host copies whose set of users changed.
    pub(crate) fn set(&mut self, user: &str, uses: BTreeSet<Use>) -> Vec<(DataKind, String)> {
        let old = self.by_user.remove(user).unwrap_or_default();
        let mut changed = Vec::new();
        for gone in old.difference(&uses) {
            let key = (gone.kind, gone.host.clone());
            if let Some(sources) = self.users.get_mut(&key) {
                let source = (gone.namespace.clone(), gone.name.clone());
                if let Some(count) = sources.get_mut(&source) {
                    *count -= 1;
                    if *count == 0 {
                        sources.remove(&source);
                    }
                }
                if sources.is_empty() {
                    self.users.remove(&key);
                }
            }
            changed.push(key);
        }
        for new in uses.difference(&old) {
            let key = (new.kind, new.host.clone());
            *self
                .users
                .entry(key.clone())
                .or_default()
                .entry((new.namespace.clone(), new.name.clone()))
                .or_default() += 1;
            changed.push(key);
        }
        if !uses.is_empty() {
            self.by_user.insert(user.to_string(), uses);
        }
        changed.sort();
        changed.dedup();
        changed
    }

    /// What `user` uses now.
    pub(crate) fn uses_of(&self, user: &str) -> BTreeSet<Use> {
        self.by_user.get(user).cloned().unwrap_or_default()
    }

    /// The virtual objects (namespace, name) some user needs under host name `host`.
    pub(crate) fn sources(&self, kind: DataKind, host: &str) -> Vec<(String, String)> {
        self.users.get(&(kind, host.to_string())).map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }
}

/// How many synced pods run on each host node.
#[derive(Default, Debug)]
pub(crate) struct NodeIndex {
    by_pod: HashMap<String, String>,
    counts: HashMap<String, usize>,
}

impl NodeIndex {
    /// Records the node of host pod `pod` (None when it is gone, unscheduled or does not count);
    /// returns the nodes that gained their first pod or lost their last.
    pub(crate) fn set(&mut self, pod: &str, node: Option<String>) -> Vec<String> {
        if self.by_pod.get(pod) == node.as_ref() {
            return Vec::new();
        }
        let mut changed = Vec::new();
        if let Some(old) = self.by_pod.remove(pod)
            && let Some(count) = self.counts.get_mut(&old)
        {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&old);
                changed.push(old);
            }
        }
        if let Some(node) = node {
            let count = self.counts.entry(node.clone()).or_default();
            *count += 1;
            if *count == 1 {
                changed.push(node.clone());
            }
            self.by_pod.insert(pod.to_string(), node);
        }
        changed
    }

    /// Whether a synced pod runs on `node`.
    pub(crate) fn used(&self, node: &str) -> bool {
        self.counts.contains_key(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_of(kind: DataKind, host: &str, namespace: &str, name: &str) -> Use {
        Use { kind, host: host.into(), namespace: namespace.into(), name: name.into() }
    }

    #[test]
    fn a_copy_is_needed_while_any_user_needs_it() {
        let mut index = RefIndex::default();
        let files = use_of(DataKind::ConfigMap, "files-x-d-x-vc", "d", "files");
        let db = use_of(DataKind::Secret, "db-x-d-x-vc", "d", "db");
        let changed = index.set("pod/d/a", [files.clone(), db.clone()].into());
        assert_eq!(changed.len(), 2);
        assert_eq!(index.set("pod/d/b", [files.clone()].into()), vec![(DataKind::ConfigMap, "files-x-d-x-vc".into())]);
        assert_eq!(index.set("pod/d/b", [files.clone()].into()), vec![], "no change, no work");
        index.set("pod/d/a", BTreeSet::new());
        assert_eq!(index.sources(DataKind::ConfigMap, "files-x-d-x-vc"), vec![("d".into(), "files".into())]);
        assert!(index.sources(DataKind::Secret, "db-x-d-x-vc").is_empty());
        index.set("pod/d/b", BTreeSet::new());
        assert!(index.sources(DataKind::ConfigMap, "files-x-d-x-vc").is_empty());
        assert!(index.users.is_empty() && index.by_user.is_empty(), "nothing left behind");
    }

    #[test]
    fn two_virtual_objects_can_claim_one_host_name() {
        let mut index = RefIndex::default();
        index.set("pod/c/p", [use_of(DataKind::Secret, "a-x-b-x-c-x-vc", "c", "a-x-b")].into());
        index.set("pod/b-x-c/p", [use_of(DataKind::Secret, "a-x-b-x-c-x-vc", "b-x-c", "a")].into());
        assert_eq!(index.sources(DataKind::Secret, "a-x-b-x-c-x-vc").len(), 2);
    }

    #[test]
    fn nodes_are_needed_from_their_first_pod_to_their_last() {
        let mut nodes = NodeIndex::default();
        assert_eq!(nodes.set("p1", Some("n1".into())), ["n1"], "the first pod makes a node needed");
        assert!(nodes.set("p2", Some("n1".into())).is_empty());
        assert!(nodes.set("p1", None).is_empty());
        assert!(nodes.used("n1"));
        assert_eq!(nodes.set("p2", Some("n2".into())), ["n1", "n2"], "moving empties one, fills the other");
        assert!(!nodes.used("n1"));
        assert!(nodes.set("gone", None).is_empty());
    }
}
