//! The garbage collector, as upstream's: every object of every kind that can be listed, watched
//! and deleted is a node of one graph (metadata only), and an object whose owners are all gone is
//! deleted; an owner deleted with `propagationPolicy: Foreground` waits (finalizer
//! `foregroundDeletion`) until its dependents that block owner deletion are gone, and one deleted
//! with `Orphan` (finalizer `orphan`) first has its dependents' references to it removed.
//!
//! The decisions ([`Graph::decide`]) are pure; [`run`] feeds the graph from metadata watches of
//! every discovered resource (rediscovered when CRDs change) and carries the actions out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions};
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::mpsc;

/// How often discovery is run again to find new kinds, besides whenever a CRD changes.
const REDISCOVERY: Duration = Duration::from_secs(30);

/// What an object is, as far as the collector needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Group/version/kind/plural of its type.
    pub resource: Resource,
    /// Its namespace (empty when cluster-scoped).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its owners.
    pub owners: Vec<OwnerReference>,
    /// Being deleted (`deletionTimestamp` set).
    pub deleting: bool,
    /// Its finalizers.
    pub finalizers: Vec<String>,
}

/// A served type, enough to address its objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

impl Resource {
    fn api_resource(&self) -> ApiResource {
        let api_version =
            if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) };
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version,
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// What the collector does to one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Delete the object (only if its uid is still `uid`), with this propagation policy.
    Delete { target: Target, foreground: bool },
    /// Remove the owner reference with uid `owner` from the object.
    RemoveOwner { target: Target, owner: String },
    /// Remove `finalizer` from the object.
    RemoveFinalizer { target: Target, finalizer: String },
    /// Make the object's owner references non-blocking (breaks a foreground-deletion cycle).
    UnblockOwners { target: Target },
}

/// The object an action is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Its type.
    pub resource: Resource,
    /// Namespace ("" when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid (a precondition of deletes).
    pub uid: String,
}

impl Node {
    fn target(&self) -> Target {
        Target {
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// Every object by uid, with who depends on whom.
#[derive(Default, Debug)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

/// How an owner stands, for one of its dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// Exists and keeps its dependents.
    Solid,
    /// Being deleted in the foreground: waits for its dependents.
    WaitingForDependents,
    /// Gone (or never existed).
    Absent,
}

impl Graph {
    /// Records an object as it is now; returns the uids whose decisions may have changed.
    pub fn upsert(&mut self, node: Node) -> Vec<String> {
        let uid = node.uid.clone();
        let mut touched = vec![uid.clone()];
        if let Some(old) = self.nodes.get(&uid) {
            for owner in &old.owners {
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(&uid);
                }
                touched.push(owner.uid.clone());
            }
        }
        for owner in &node.owners {
            self.dependents.entry(owner.uid.clone()).or_default().insert(uid.clone());
            touched.push(owner.uid.clone());
        }
        // Its dependents see a changed owner (e.g. one now deleting in the foreground).
        touched.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
        self.nodes.insert(uid, node);
        touched
    }

    /// Forgets an object that is gone; returns the uids whose decisions may have changed.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut touched = Vec::new();
        if let Some(old) = self.nodes.remove(uid) {
            for owner in &old.owners {
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(uid);
                }
                touched.push(owner.uid.clone());
            }
        }
        touched.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        touched
    }

    /// The uids of every object of `resource`.
    pub fn uids_of(&self, resource: &Resource) -> Vec<String> {
        self.nodes.values().filter(|n| &n.resource == resource).map(|n| n.uid.clone()).collect()
    }

    fn owner_state(&self, dependent: &Node, owner: &OwnerReference) -> Owner {
        match self.nodes.get(&owner.uid) {
            // A namespaced owner must be in its dependent's namespace.
            Some(found) if found.namespace.is_empty() || found.namespace == dependent.namespace => {
                if found.deleting && found.has_finalizer("foregroundDeletion") {
                    Owner::WaitingForDependents
                } else {
                    Owner::Solid
                }
            }
            _ => Owner::Absent,
        }
    }

    /// What to do about object `uid` now. Owners missing from the graph are taken as gone;
    /// the caller confirms that with the API before deleting (the graph may lag).
    pub fn decide(&self, uid: &str) -> Vec<Action> {
        let Some(node) = self.nodes.get(uid) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        let dependents: Vec<&Node> =
            self.dependents.get(uid).into_iter().flatten().filter_map(|d| self.nodes.get(d)).collect();
        if node.deleting && node.has_finalizer("orphan") {
            for dependent in &dependents {
                actions.push(Action::RemoveOwner { target: dependent.target(), owner: uid.to_string() });
            }
            if dependents.is_empty() {
                actions.push(Action::RemoveFinalizer { target: node.target(), finalizer: "orphan".into() });
            }
            return actions;
        }
        // Upstream's cycle breaker: an object an owner waits on, whose own dependents are
        // waiting on theirs, stops blocking its owners (a ring of foreground deletions would
        // otherwise wait forever).
        let owner_waits = node
            .owners
            .iter()
            .any(|o| o.block_owner_deletion == Some(true) && self.owner_state(node, o) == Owner::WaitingForDependents);
        let dependent_waits = dependents.iter().any(|d| d.deleting && d.has_finalizer("foregroundDeletion"));
        if owner_waits && dependent_waits {
            actions.push(Action::UnblockOwners { target: node.target() });
        }
        if node.deleting && node.has_finalizer("foregroundDeletion") {
            let mut blocking = false;
            for dependent in &dependents {
                let reference = dependent.owners.iter().find(|o| o.uid == uid);
                blocking |= reference.is_some_and(|o| o.block_owner_deletion == Some(true));
                if dependent.deleting {
                    continue;
                }
                // A dependent that another owner keeps only loses its reference to this one.
                let kept =
                    dependent.owners.iter().any(|o| o.uid != uid && self.owner_state(dependent, o) == Owner::Solid);
                actions.push(if kept {
                    Action::RemoveOwner { target: dependent.target(), owner: uid.to_string() }
                } else {
                    Action::Delete { target: dependent.target(), foreground: true }
                });
            }
            if !blocking {
                actions.push(Action::RemoveFinalizer { target: node.target(), finalizer: "foregroundDeletion".into() });
            }
            return actions;
        }
        if node.deleting || node.owners.is_empty() {
            return actions;
        }
        let states: Vec<Owner> = node.owners.iter().map(|o| self.owner_state(node, o)).collect();
        if states.contains(&Owner::Solid) {
            return actions;
        }
        // No owner keeps it: it goes; in the foreground when an owner waits on it.
        let waiting = node
            .owners
            .iter()
            .zip(&states)
            .any(|(o, s)| *s == Owner::WaitingForDependents && o.block_owner_deletion == Some(true));
        actions.push(Action::Delete { target: node.target(), foreground: waiting });
        actions
    }

    /// The objects with an owner the graph does not know.
    pub fn with_unknown_owners(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.owners.iter().any(|o| !self.nodes.contains_key(&o.uid)))
            .map(|n| n.uid.clone())
            .collect()
    }

    /// The owners of `uid` the graph does not know (to be confirmed absent with the API).
    pub fn unknown_owners(&self, uid: &str) -> Vec<OwnerReference> {
        let Some(node) = self.nodes.get(uid) else { return Vec::new() };
        node.owners.iter().filter(|o| !self.nodes.contains_key(&o.uid)).cloned().collect()
    }
}

fn node_of(resource: &Resource, meta: &ObjectMeta) -> Option<Node> {
    Some(Node {
        resource: resource.clone(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    })
}

/// The collector's shared state: the graph and the types it watches.
struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    /// Types by (group, kind), to resolve owner references.
    kinds: Mutex<HashMap<(String, String), Resource>>,
    queue: mpsc::UnboundedSender<String>,
}

fn group_of(api_version: &str) -> String {
    api_version.rsplit_once('/').map(|(g, _)| g.to_string()).unwrap_or_default()
}

impl Collector {
    fn enqueue(&self, uids: Vec<String>) {
        for uid in uids {
            let _ = self.queue.send(uid);
        }
    }

    fn api(&self, resource: &Resource, namespace: &str) -> Api<DynamicObject> {
        let ar = resource.api_resource();
        if resource.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        }
    }

    /// Whether the owner is really gone: not found by name where it would be, or found with
    /// another uid (what upstream checks before deleting on its graph's word).
    async fn confirmed_absent(&self, dependent_namespace: &str, owner: &OwnerReference) -> Result<bool, kube::Error> {
        let resource = self.kinds.lock().unwrap().get(&(group_of(&owner.api_version), owner.kind.clone())).cloned();
        let Some(resource) = resource else {
            // A kind not (yet) discovered: as upstream, nothing is deleted on its account; the
            // next discovery watches it and looks at this dependent again.
            return Ok(false);
        };
        match self.api(&resource, dependent_namespace).get_metadata_opt(&owner.name).await? {
            Some(found) => Ok(found.metadata.uid.as_deref() != Some(owner.uid.as_str())),
            None => Ok(true),
        }
    }

    fn node(&self, uid: &str) -> Option<Node> {
        self.graph.lock().unwrap().nodes.get(uid).cloned()
    }

    /// Merge-patches `metadata` of `target` (gone already: nothing to do).
    async fn patch_metadata(&self, target: &Target, metadata: serde_json::Value) -> Result<(), kube::Error> {
        let patch = Patch::Merge(json!({"metadata": metadata}));
        let api = self.api(&target.resource, &target.namespace);
        crate::ignore_not_found(api.patch(&target.name, &PatchParams::default(), &patch).await)
    }

    async fn process(&self, uid: &str) -> Result<(), kube::Error> {
        let (actions, unknown, namespace) = {
            let graph = self.graph.lock().unwrap();
            let namespace = graph.nodes.get(uid).map(|n| n.namespace.clone()).unwrap_or_default();
            (graph.decide(uid), graph.unknown_owners(uid), namespace)
        };
        for action in actions {
            match action {
                Action::Delete { target, foreground } => {
                    // Owners the graph does not know yet may be real (created a moment ago).
                    if target.uid == uid {
                        for owner in &unknown {
                            if !self.confirmed_absent(&namespace, owner).await? {
                                return Ok(());
                            }
                        }
                    }
                    let params = DeleteParams {
                        propagation_policy: Some(if foreground {
                            kube::api::PropagationPolicy::Foreground
                        } else {
                            kube::api::PropagationPolicy::Background
                        }),
                        preconditions: Some(Preconditions { uid: Some(target.uid.clone()), resource_version: None }),
                        ..DeleteParams::default()
                    };
                    tracing::debug!(kind = %target.resource.kind, namespace = %target.namespace, name = %target.name, foreground, "collecting");
                    crate::ignore_not_found(
                        self.api(&target.resource, &target.namespace).delete(&target.name, &params).await,
                    )?;
                }
                Action::RemoveOwner { target, owner } => {
                    let remaining: Vec<OwnerReference> = self
                        .node(&target.uid)
                        .map(|n| n.owners)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|o| o.uid != owner)
                        .collect();
                    self.patch_metadata(&target, json!({"ownerReferences": remaining})).await?;
                }
                Action::UnblockOwners { target } => {
                    let unblocked: Vec<OwnerReference> = self
                        .node(&target.uid)
                        .map(|n| n.owners)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|mut o| {
                            o.block_owner_deletion = Some(false);
                            o
                        })
                        .collect();
                    self.patch_metadata(&target, json!({"ownerReferences": unblocked})).await?;
                }
                Action::RemoveFinalizer { target, finalizer } => {
                    let remaining: Vec<String> = self
                        .node(&target.uid)
                        .map(|n| n.finalizers)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|f| *f != finalizer)
                        .collect();
                    self.patch_metadata(&target, json!({"finalizers": remaining})).await?;
                }
            }
        }
        Ok(())
    }
}

/// Watches the metadata of every object of `resource` into the graph.
async fn watch(collector: Arc<Collector>, resource: Resource) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(collector.client.clone(), &resource.api_resource());
    let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
    let mut relisted: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        let Ok(event) = event else {
            // The watcher retries by itself; a kind that went away ends with its discovery.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let touched = {
            let mut graph = collector.graph.lock().unwrap();
            match event {
                Event::Init => {
                    relisted = Some(HashSet::new());
                    Vec::new()
                }
                Event::InitApply(object) | Event::Apply(object) => match node_of(&resource, &object.metadata) {
                    Some(node) => {
                        if let Some(seen) = relisted.as_mut() {
                            seen.insert(node.uid.clone());
                        }
                        graph.upsert(node)
                    }
                    None => Vec::new(),
                },
                Event::Delete(object) => {
                    object.metadata.uid.as_deref().map(|uid| graph.remove(uid)).unwrap_or_default()
                }
                Event::InitDone => {
                    // Objects deleted while the watch was down were not in the new list.
                    let seen = relisted.take().unwrap_or_default();
                    let gone: Vec<String> =
                        graph.uids_of(&resource).into_iter().filter(|uid| !seen.contains(uid)).collect();
                    let mut touched: Vec<String> = gone.iter().flat_map(|uid| graph.remove(uid)).collect();
                    touched.extend(seen);
                    touched
                }
            }
        };
        collector.enqueue(touched);
    }
}

/// The types the collector watches: every served resource that can be listed, watched and
/// deleted, at its preferred version (subresources and review-style kinds excluded).
fn collectable(discovery: &Discovery) -> Vec<Resource> {
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !(caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::WATCH)
                && caps.supports_operation(verbs::DELETE))
            {
                continue;
            }
            // Events never own anything and are many.
            if ar.kind == "Event" {
                continue;
            }
            out.push(Resource {
                group: ar.group,
                version: ar.version,
                kind: ar.kind,
                plural: ar.plural,
                namespaced: caps.scope == Scope::Namespaced,
            });
        }
    }
    out
}

/// Runs the garbage collector until the future is dropped.
pub async fn run(client: Client) {
    let (queue, mut work) = mpsc::unbounded_channel::<String>();
    let collector = Arc::new(Collector {
        client: client.clone(),
        graph: Mutex::default(),
        kinds: Mutex::default(),
        queue: queue.clone(),
    });
    let watching: Arc<Mutex<HashMap<Resource, tokio::task::JoinHandle<()>>>> = Arc::default();
    // A CRD created or deleted is a reason to look again at once.
    let changed = Arc::new(tokio::sync::Notify::new());
    let definitions = {
        let changed = changed.clone();
        let api: Api<
            PartialObjectMeta<
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
            >,
        > = Api::all(client.clone());
        tokio::spawn(async move {
            // Backoff: an error the watcher hits at once (the server gone, the runtime stopping)
            // would otherwise come back without yielding, and spin this task forever.
            let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                if matches!(event, Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone)) {
                    changed.notify_one();
                }
            }
        })
    };
    let discoverer = {
        let (collector, watching) = (collector.clone(), watching.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(discovery) = Discovery::new(collector.client.clone()).run().await {
                    let found = collectable(&discovery);
                    let mut watching = watching.lock().unwrap();
                    let mut kinds = collector.kinds.lock().unwrap();
                    kinds.clear();
                    for resource in &found {
                        kinds.insert((resource.group.clone(), resource.kind.clone()), resource.clone());
                        if !watching.contains_key(resource) {
                            let task = tokio::spawn(watch(collector.clone(), resource.clone()));
                            watching.insert(resource.clone(), task);
                        }
                    }
                    // Kinds no longer served (a CRD deleted): their objects are gone with them.
                    let stale: Vec<Resource> = watching.keys().filter(|r| !found.contains(r)).cloned().collect();
                    for resource in stale {
                        if let Some(task) = watching.remove(&resource) {
                            task.abort();
                        }
                        let mut graph = collector.graph.lock().unwrap();
                        let touched: Vec<String> =
                            graph.uids_of(&resource).iter().flat_map(|uid| graph.remove(uid)).collect();
                        drop(graph);
                        collector.enqueue(touched);
                    }
                    drop((watching, kinds));
                    // Dependents of owners of a kind that was not known before get a new look.
                    let unknown = collector.graph.lock().unwrap().with_unknown_owners();
                    collector.enqueue(unknown);
                }
                let _ = tokio::time::timeout(REDISCOVERY, changed.notified()).await;
            }
        })
    };
    let _tasks = crate::Tasks(vec![definitions, discoverer]);
    let _watches = WatchTasks(watching);
    while let Some(first) = work.recv().await {
        let mut batch = HashSet::from([first]);
        while let Ok(more) = work.try_recv() {
            batch.insert(more);
        }
        for uid in batch {
            if let Err(error) = collector.process(&uid).await {
                tracing::debug!(%uid, %error, "garbage collection failed; retrying");
                let queue = queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = queue.send(uid);
                });
            }
        }
    }
}

/// Aborts the per-kind watches when the collector stops.
struct WatchTasks(Arc<Mutex<HashMap<Resource, tokio::task::JoinHandle<()>>>>);

impl Drop for WatchTasks {
    fn drop(&mut self) {
        for task in self.0.lock().unwrap().values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(kind: &str) -> Resource {
        Resource {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()),
            namespaced: true,
        }
    }

    fn owner(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: uid.into(),
            uid: uid.into(),
            block_owner_deletion: block.then_some(true),
            controller: None,
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: resource("ConfigMap"),
            namespace: "default".into(),
            name: uid.into(),
            uid: uid.into(),
            owners,
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn deletes(actions: &[Action]) -> Vec<(&str, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { target, foreground } => Some((target.name.as_str(), *foreground)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_dependent_goes_when_all_its_owners_are_gone() {
        let mut graph = Graph::default();
        graph.upsert(node("owner-a", vec![]));
        graph.upsert(node("child", vec![owner("owner-a", false), owner("owner-b", false)]));
        assert!(graph.decide("child").is_empty(), "owner-a still keeps it");
        graph.remove("owner-a");
        assert_eq!(deletes(&graph.decide("child")), [("child", false)]);
        assert!(graph.decide("owner-a").is_empty());
    }

    #[test]
    fn orphaning_removes_references_then_the_finalizer() {
        let mut graph = Graph::default();
        let mut parent = node("parent", vec![]);
        parent.deleting = true;
        parent.finalizers = vec!["orphan".into()];
        graph.upsert(parent);
        graph.upsert(node("child", vec![owner("parent", true)]));
        assert_eq!(
            graph.decide("parent"),
            [Action::RemoveOwner { target: graph.nodes["child"].target(), owner: "parent".into() }]
        );
        graph.upsert(node("child", vec![]));
        assert_eq!(
            graph.decide("parent"),
            [Action::RemoveFinalizer { target: graph.nodes["parent"].target(), finalizer: "orphan".into() }]
        );
    }

    #[test]
    fn foreground_deletion_waits_for_blocking_dependents_only() {
        let mut graph = Graph::default();
        let mut parent = node("parent", vec![]);
        parent.deleting = true;
        parent.finalizers = vec!["foregroundDeletion".into()];
        graph.upsert(parent);
        graph.upsert(node("blocking", vec![owner("parent", true)]));
        graph.upsert(node("loose", vec![owner("parent", false)]));
        let actions = graph.decide("parent");
        let mut deleted = deletes(&actions);
        deleted.sort();
        assert_eq!(deleted, [("blocking", true), ("loose", true)]);
        assert!(!actions.iter().any(|a| matches!(a, Action::RemoveFinalizer { .. })), "blocked");
        // The dependents' own decision: deleted in the foreground while their owner waits.
        assert_eq!(deletes(&graph.decide("blocking")), [("blocking", true)]);
        graph.remove("blocking");
        let actions = graph.decide("parent");
        assert!(actions.iter().any(|a| matches!(a, Action::RemoveFinalizer { .. })), "{actions:?}");
    }

    #[test]
    fn a_ring_of_foreground_deletions_is_broken() {
        // pod1 <- pod2 <- pod3 <- pod1 (each owned by the previous one, blocking), all deleting
        // in the foreground: each waits on the next.
        let mut graph = Graph::default();
        for (name, owner_name) in [("pod1", "pod3"), ("pod2", "pod1"), ("pod3", "pod2")] {
            let mut n = node(name, vec![owner(owner_name, true)]);
            n.deleting = true;
            n.finalizers = vec!["foregroundDeletion".into()];
            graph.upsert(n);
        }
        let actions = graph.decide("pod1");
        assert!(actions.contains(&Action::UnblockOwners { target: graph.nodes["pod1"].target() }), "{actions:?}");
        // Once pod1 no longer blocks pod3, pod3 may finish.
        let mut pod1 = graph.nodes["pod1"].clone();
        pod1.owners[0].block_owner_deletion = Some(false);
        graph.upsert(pod1);
        assert!(graph.decide("pod3").iter().any(|a| matches!(a, Action::RemoveFinalizer { .. })));
    }

    #[test]
    fn a_second_owner_keeps_a_dependent_of_a_foreground_deletion() {
        let mut graph = Graph::default();
        let mut parent = node("parent", vec![]);
        parent.deleting = true;
        parent.finalizers = vec!["foregroundDeletion".into()];
        graph.upsert(parent);
        graph.upsert(node("other", vec![]));
        graph.upsert(node("child", vec![owner("parent", true), owner("other", false)]));
        assert_eq!(
            graph.decide("parent"),
            [Action::RemoveOwner { target: graph.nodes["child"].target(), owner: "parent".into() }]
        );
        assert!(graph.decide("child").is_empty(), "other keeps it");
    }

    #[test]
    fn an_owner_in_another_namespace_does_not_count() {
        let mut graph = Graph::default();
        let mut elsewhere = node("owner", vec![]);
        elsewhere.namespace = "other".into();
        graph.upsert(elsewhere);
        graph.upsert(node("child", vec![owner("owner", false)]));
        assert_eq!(deletes(&graph.decide("child")), [("child", false)]);
    }
}
