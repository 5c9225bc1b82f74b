//! The mapping store (sync-behavior.md §6): every virtual ↔ host name pair the syncer made, with
//! the objects each owner references, kept in memory and persisted in the virtual cluster's own
//! store under `/vcluster/mappings/…` (the reference's keys and JSON shape).
//!
//! What it is used for:
//! - reverse mapping of host objects that lost their bookkeeping annotations (someone edited
//!   them away): the host name still leads back to its virtual object;
//! - refusing a second virtual object whose name translates to a host name already mapped to
//!   another one, before anything is written;
//! - `vkube mappings` lists what is stored.
//!
//! Writes are behind the syncer's own work: a changed mapping is marked dirty and a background
//! task saves dirty mappings in batches (one store commit for many). The bookkeeping annotations
//! on host objects stay the primary record, so a mapping lost to a crash between a host write
//! and its save is recorded again by the reconcile that follows the restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use vkube_store::{ListOptions, Storage, StorageError};

/// Key prefix of every mapping in the virtual cluster's store.
pub const PREFIX: &str = "/vcluster/mappings/";

/// A namespace and name (empty namespace for cluster-scoped objects).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectName {
    /// The namespace.
    #[serde(rename = "Namespace", default)]
    pub namespace: String,
    /// The name.
    #[serde(rename = "Name")]
    pub name: String,
}

impl ObjectName {
    /// `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectName { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One virtual ↔ host pair of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NameMapping {
    /// API group ("" for the core group).
    #[serde(rename = "Group", default)]
    pub group: String,
    /// API version.
    #[serde(rename = "Version")]
    pub version: String,
    /// Kind.
    #[serde(rename = "Kind")]
    pub kind: String,
    /// The virtual object.
    #[serde(rename = "VirtualName")]
    pub virtual_name: ObjectName,
    /// The host object.
    #[serde(rename = "HostName")]
    pub host_name: ObjectName,
}

impl NameMapping {
    /// A pair of a core (`v1`) kind.
    pub fn core(kind: &str, virtual_name: ObjectName, host_name: ObjectName) -> Self {
        NameMapping { group: String::new(), version: "v1".into(), kind: kind.into(), virtual_name, host_name }
    }

    fn group_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The store key of this pair as an owner.
    pub fn key(&self) -> String {
        let name = &self.virtual_name;
        let kind = self.kind.to_lowercase();
        if name.namespace.is_empty() {
            format!("{PREFIX}{}/{kind}/{}", self.group_version(), name.name)
        } else {
            format!("{PREFIX}{}/{kind}/{}/{}", self.group_version(), name.namespace, name.name)
        }
    }
}

/// An owner pair with the pairs of the objects it references.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// The owner's own pair.
    #[serde(flatten)]
    pub pair: NameMapping,
    /// Which syncer process wrote it.
    #[serde(default)]
    pub sender: String,
    /// Pairs of other objects this owner uses.
    #[serde(default)]
    pub references: Vec<NameMapping>,
}

impl std::fmt::Display for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.pair.kind, self.pair.virtual_name, self.pair.host_name)?;
        for reference in &self.references {
            write!(f, "\n  uses {} {} -> {}", reference.kind, reference.virtual_name, reference.host_name)?;
        }
        Ok(())
    }
}

/// Why a pair cannot be recorded: its host name already stands for another virtual object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("there is already another name mapping: {kind} {host} -> {existing} (wanted {wanted})")]
pub struct Conflict {
    /// The kind.
    pub kind: String,
    /// The contested host name.
    pub host: ObjectName,
    /// The virtual object it stands for now.
    pub existing: ObjectName,
    /// The virtual object that wanted it.
    pub wanted: ObjectName,
}

/// (kind, virtual namespace, virtual name).
type OwnerKey = (String, String, String);
/// (kind, host namespace, host name).
type HostKey = (String, String, String);

#[derive(Default)]
struct State {
    owners: HashMap<OwnerKey, Mapping>,
    /// Every pair (owners' own and their references) by host side, with how many owners list it.
    by_host: HashMap<HostKey, (ObjectName, usize)>,
}

impl State {
    fn pairs(mapping: &Mapping) -> impl Iterator<Item = &NameMapping> {
        std::iter::once(&mapping.pair).chain(mapping.references.iter())
    }

    fn host_key(pair: &NameMapping) -> HostKey {
        (pair.kind.clone(), pair.host_name.namespace.clone(), pair.host_name.name.clone())
    }

    fn conflicts(&self, pair: &NameMapping) -> Option<Conflict> {
        let (existing, _) = self.by_host.get(&Self::host_key(pair))?;
        (*existing != pair.virtual_name).then(|| Conflict {
            kind: pair.kind.clone(),
            host: pair.host_name.clone(),
            existing: existing.clone(),
            wanted: pair.virtual_name.clone(),
        })
    }

    /// The distinct host keys of a mapping's pairs, each with its virtual side.
    fn host_keys(mapping: &Mapping) -> Vec<(HostKey, &ObjectName)> {
        let mut seen = BTreeSet::new();
        Self::pairs(mapping)
            .filter_map(|pair| {
                let key = Self::host_key(pair);
                seen.insert(key.clone()).then_some((key, &pair.virtual_name))
            })
            .collect()
    }

    fn index(&mut self, mapping: &Mapping) {
        for (key, virtual_name) in Self::host_keys(mapping) {
            self.by_host.entry(key).or_insert_with(|| (virtual_name.clone(), 0)).1 += 1;
        }
    }

    fn unindex(&mut self, mapping: &Mapping) {
        for (key, _) in Self::host_keys(mapping) {
            if let Some(entry) = self.by_host.get_mut(&key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.by_host.remove(&key);
                }
            }
        }
    }
}

/// The mapping store of one syncer.
pub struct Mappings {
    state: Mutex<State>,
    storage: Option<Arc<dyn Storage>>,
    /// Store keys to save, with the owner whose mapping goes there (gone: delete the key).
    dirty: Mutex<std::collections::BTreeMap<String, OwnerKey>>,
    wake: Notify,
    sender: String,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn owner_key(kind: &str, virtual_name: &ObjectName) -> OwnerKey {
    (kind.to_string(), virtual_name.namespace.clone(), virtual_name.name.clone())
}

/// Reads every stored mapping (skipping values that do not parse).
pub async fn stored(storage: &dyn Storage) -> Result<Vec<Mapping>, StorageError> {
    let list = storage.list(ListOptions { prefix: PREFIX.into(), ..Default::default() }).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|kv| match serde_json::from_slice::<Mapping>(&kv.value) {
            Ok(mapping) => Some(mapping),
            Err(error) => {
                tracing::warn!(key = %kv.key, %error, "ignoring an unreadable mapping");
                None
            }
        })
        .collect())
}

impl Mappings {
    /// A store that keeps nothing across restarts.
    pub fn in_memory() -> Self {
        Self::with(None)
    }

    fn with(storage: Option<Arc<dyn Storage>>) -> Self {
        let sender = format!("vkube-syncer-{}-{}", std::process::id(), rand::random::<u64>());
        Mappings { state: Mutex::default(), storage, dirty: Mutex::default(), wake: Notify::new(), sender }
    }

    /// Loads what `storage` holds (mappings whose host side is not in `host_namespace` are
    /// dropped, as the reference does).
    pub async fn load(storage: Arc<dyn Storage>, host_namespace: &str) -> Result<Self, StorageError> {
        let mappings = Self::with(Some(storage.clone()));
        let loaded = stored(storage.as_ref()).await?;
        {
            let mut state = lock(&mappings.state);
            for mapping in loaded {
                let namespace = &mapping.pair.host_name.namespace;
                if !namespace.is_empty() && namespace != host_namespace {
                    continue;
                }
                state.index(&mapping);
                state.owners.insert(owner_key(&mapping.pair.kind, &mapping.pair.virtual_name), mapping);
            }
        }
        Ok(mappings)
    }

    /// How many owner mappings are held.
    pub fn len(&self) -> usize {
        lock(&self.state).owners.len()
    }

    /// Whether no mapping is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `pair` as an owner using `references`. Fails without changing anything when the
    /// owner's host name already stands for another virtual object; a reference that conflicts
    /// is left out (the referencing object's own sync reports the collision).
    pub fn record(&self, pair: NameMapping, references: Vec<NameMapping>) -> Result<(), Box<Conflict>> {
        let mut state = lock(&self.state);
        let key = owner_key(&pair.kind, &pair.virtual_name);
        let old = state.owners.remove(&key);
        if let Some(old) = &old {
            state.unindex(old);
        }
        if let Some(conflict) = state.conflicts(&pair) {
            if let Some(old) = old {
                state.index(&old);
                state.owners.insert(key, old);
            }
            return Err(Box::new(conflict));
        }
        let mut kept: Vec<NameMapping> =
            references.into_iter().filter(|r| *r != pair && state.conflicts(r).is_none()).collect();
        kept.sort();
        kept.dedup();
        let mapping = Mapping { pair, sender: self.sender.clone(), references: kept };
        state.index(&mapping);
        let changed = old.as_ref().is_none_or(|o| o.pair != mapping.pair || o.references != mapping.references);
        let store_key = mapping.pair.key();
        state.owners.insert(key.clone(), mapping);
        drop(state);
        if changed {
            self.mark(store_key, key);
        }
        Ok(())
    }

    /// Forgets the owner mapping of virtual object `virtual_name` of `kind`.
    pub fn remove(&self, kind: &str, virtual_name: &ObjectName) {
        let mut state = lock(&self.state);
        let key = owner_key(kind, virtual_name);
        let Some(old) = state.owners.remove(&key) else { return };
        state.unindex(&old);
        drop(state);
        self.mark(old.pair.key(), key);
    }

    /// The virtual object host object `host` of `kind` stands for, if known.
    pub fn virtual_of(&self, kind: &str, host: &ObjectName) -> Option<ObjectName> {
        let key = (kind.to_string(), host.namespace.clone(), host.name.clone());
        lock(&self.state).by_host.get(&key).map(|(v, _)| v.clone())
    }

    /// Whether virtual object `virtual_name` of `kind` has an owner mapping.
    pub fn contains(&self, kind: &str, virtual_name: &ObjectName) -> bool {
        lock(&self.state).owners.contains_key(&owner_key(kind, virtual_name))
    }

    /// The owner pair recorded for virtual object `virtual_name` of `kind`.
    pub fn get(&self, kind: &str, virtual_name: &ObjectName) -> Option<Mapping> {
        lock(&self.state).owners.get(&owner_key(kind, virtual_name)).cloned()
    }

    /// Every owner pair.
    pub fn owners(&self) -> Vec<NameMapping> {
        lock(&self.state).owners.values().map(|m| m.pair.clone()).collect()
    }

    fn mark(&self, store_key: String, owner: OwnerKey) {
        if self.storage.is_none() {
            return;
        }
        lock(&self.dirty).insert(store_key, owner);
        self.wake.notify_one();
    }

    /// Saves dirty mappings until dropped: each round writes everything marked since the last
    /// one concurrently, so the store commits them together.
    pub async fn persist(self: Arc<Self>) {
        let Some(storage) = self.storage.clone() else { return };
        loop {
            self.wake.notified().await;
            // Let a burst of reconciles mark their mappings before writing.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let keys = std::mem::take(&mut *lock(&self.dirty));
            let writes = keys.into_iter().map(|(key, owner)| {
                let storage = storage.clone();
                let value = self.value_of(&owner);
                async move {
                    if let Err(error) = write(storage.as_ref(), &key, value).await {
                        tracing::warn!(%key, %error, "saving a mapping failed; it is recorded again on the next sync");
                    }
                }
            });
            futures::future::join_all(writes).await;
        }
    }

    fn value_of(&self, owner: &OwnerKey) -> Option<Bytes> {
        let state = lock(&self.state);
        state.owners.get(owner).and_then(|m| serde_json::to_vec(m).ok()).map(Bytes::from)
    }
}

/// Puts `value` at `key` (or deletes the key when `value` is None).
async fn write(storage: &dyn Storage, key: &str, value: Option<Bytes>) -> Result<(), StorageError> {
    let current = storage.get(key).await?;
    match (value, current) {
        (None, None) => Ok(()),
        (None, Some(current)) => storage.delete(key, Some(current.mod_revision)).await.map(|_| ()),
        (Some(value), None) => storage.create(key, value).await.map(|_| ()),
        (Some(value), Some(current)) if current.value == value => Ok(()),
        (Some(value), Some(current)) => storage.update(key, value, current.mod_revision).await.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, host: &str) -> NameMapping {
        NameMapping::core("Pod", ObjectName::new(namespace, name), ObjectName::new("vcluster-vc", host))
    }

    fn secret(namespace: &str, name: &str, host: &str) -> NameMapping {
        NameMapping::core("Secret", ObjectName::new(namespace, name), ObjectName::new("vcluster-vc", host))
    }

    #[test]
    fn keys_follow_the_reference_layout() {
        assert_eq!(pod("default", "web", "web-x-default-x-vc").key(), "/vcluster/mappings/v1/pod/default/web");
        let node = NameMapping::core("Node", ObjectName::new("", "worker-1"), ObjectName::new("", "worker-1"));
        assert_eq!(node.key(), "/vcluster/mappings/v1/node/worker-1");
        let ingress = NameMapping {
            group: "networking.k8s.io".into(),
            version: "v1".into(),
            kind: "Ingress".into(),
            virtual_name: ObjectName::new("default", "web"),
            host_name: ObjectName::new("vcluster-vc", "web-x-default-x-vc"),
        };
        assert_eq!(ingress.key(), "/vcluster/mappings/networking.k8s.io/v1/ingress/default/web");
    }

    #[test]
    fn the_stored_json_has_the_reference_member_names() {
        let mapping = Mapping {
            pair: pod("default", "web", "web-x-default-x-vc"),
            sender: "s".into(),
            references: vec![secret("default", "db", "db-x-default-x-vc")],
        };
        let json = serde_json::to_value(&mapping).unwrap();
        assert_eq!(json["Kind"], "Pod");
        assert_eq!(json["VirtualName"]["Name"], "web");
        assert_eq!(json["HostName"]["Namespace"], "vcluster-vc");
        assert_eq!(json["references"][0]["HostName"]["Name"], "db-x-default-x-vc");
        assert_eq!(serde_json::from_value::<Mapping>(json).unwrap(), mapping);
    }

    #[test]
    fn a_host_name_maps_back_and_a_second_owner_is_refused() {
        let store = Mappings::in_memory();
        store.record(pod("c", "a-x-b", "a-x-b-x-c-x-vc"), vec![]).unwrap();
        let host = ObjectName::new("vcluster-vc", "a-x-b-x-c-x-vc");
        assert_eq!(store.virtual_of("Pod", &host), Some(ObjectName::new("c", "a-x-b")));
        let conflict = store.record(pod("b-x-c", "a", "a-x-b-x-c-x-vc"), vec![]).unwrap_err();
        assert_eq!(conflict.existing, ObjectName::new("c", "a-x-b"));
        assert!(store.get("Pod", &ObjectName::new("b-x-c", "a")).is_none(), "nothing recorded");
        store.remove("Pod", &ObjectName::new("c", "a-x-b"));
        assert!(store.virtual_of("Pod", &host).is_none());
        store.record(pod("b-x-c", "a", "a-x-b-x-c-x-vc"), vec![]).unwrap();
    }

    #[test]
    fn references_are_counted_per_owner() {
        let store = Mappings::in_memory();
        let db = secret("d", "db", "db-x-d-x-vc");
        store.record(pod("d", "a", "a-x-d-x-vc"), vec![db.clone()]).unwrap();
        store.record(pod("d", "b", "b-x-d-x-vc"), vec![db.clone()]).unwrap();
        let host = ObjectName::new("vcluster-vc", "db-x-d-x-vc");
        store.remove("Pod", &ObjectName::new("d", "a"));
        assert_eq!(store.virtual_of("Secret", &host), Some(ObjectName::new("d", "db")), "b still uses it");
        store.record(pod("d", "b", "b-x-d-x-vc"), vec![]).unwrap();
        assert!(store.virtual_of("Secret", &host).is_none(), "nobody uses it");
    }

    #[tokio::test]
    async fn mappings_survive_a_reload_and_removed_ones_are_deleted() {
        let storage: Arc<dyn Storage> = Arc::new(vkube_store::MemoryStorage::new());
        let store = Arc::new(Mappings::load(storage.clone(), "vcluster-vc").await.unwrap());
        let persist = tokio::spawn(store.clone().persist());
        store.record(pod("d", "a", "a-x-d-x-vc"), vec![secret("d", "db", "db-x-d-x-vc")]).unwrap();
        store.record(pod("d", "b", "b-x-d-x-vc"), vec![]).unwrap();
        let elsewhere =
            NameMapping::core("Pod", ObjectName::new("d", "c"), ObjectName::new("other-namespace", "c-x-d-x-vc"));
        store.record(elsewhere, vec![]).unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while stored(storage.as_ref()).await.unwrap().len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "mappings were not saved");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        store.remove("Pod", &ObjectName::new("d", "b"));
        while stored(storage.as_ref()).await.unwrap().len() > 2 {
            assert!(tokio::time::Instant::now() < deadline, "a removed mapping was not deleted");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        persist.abort();
        let reloaded = Mappings::load(storage, "vcluster-vc").await.unwrap();
        assert_eq!(reloaded.len(), 1, "the mapping outside the host namespace is dropped");
        let a = reloaded.get("Pod", &ObjectName::new("d", "a")).unwrap();
        assert_eq!(a.references, vec![secret("d", "db", "db-x-d-x-vc")]);
        assert_eq!(
            reloaded.virtual_of("Secret", &ObjectName::new("vcluster-vc", "db-x-d-x-vc")),
            Some(ObjectName::new("d", "db"))
        );
    }
}
