//! The in-memory index shared by the embedded backends: the latest value of every key, a bounded
//! history of recent events (for watches and reads at older revisions) and the write planner that
//! turns a batch of operations into the changes to persist.
//!
//! Writers are serialized by their backend; readers take a read lock and never wait for a commit,
//! because changes become visible only after the backend has made them durable.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::{Event, EventKind, KeyValue, ListOptions, ListResult, Revision, StorageError};

/// How many events the history keeps before compacting automatically.
pub(crate) const DEFAULT_HISTORY: usize = 100_000;
/// How many bytes of values the history may hold: a burst of large objects (pods with their
/// statuses and managed fields) must not keep every old version in memory.
pub(crate) const HISTORY_BYTES: usize = 16 << 20;
/// The history always keeps at least this many events, whatever their size.
const HISTORY_MIN: usize = 1_000;

/// One requested write.
#[derive(Debug)]
pub(crate) enum Op {
    Create { key: String, value: Bytes },
    Update { key: String, value: Bytes, expected: Revision },
    Delete { key: String, expected: Option<Revision> },
}

/// The latest state plus recent history.
#[derive(Debug)]
pub(crate) struct Index {
    pub(crate) data: BTreeMap<String, KeyValue>,
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Bytes of the values in `history`.
    history_bytes: usize,
}

/// The shared handle: index behind a lock plus a channel announcing each new revision.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    pub(crate) index: Arc<RwLock<Index>>,
    notify: watch::Sender<Revision>,
}

impl Shared {
    /// Starts from loaded data at `revision`; nothing older than `revision` can be watched.
    pub(crate) fn new(data: BTreeMap<String, KeyValue>, revision: Revision) -> Self {
        let (notify, _) = watch::channel(revision);
        Shared {
            index: Arc::new(RwLock::new(Index {
                data,
                revision,
                compacted: revision,
                history: VecDeque::new(),
                history_limit: DEFAULT_HISTORY,
                history_bytes: 0,
            })),
            notify,
        }
    }

    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn current_revision(&self) -> Revision {
        self.read().revision
    }

    /// Decides the outcome of each operation against the latest state, in order, as if they ran
    /// one after another, without changing anything yet.
    pub(crate) fn plan(&self, ops: &[Op]) -> Plan {
        let index = self.read();
        let mut overlay: HashMap<&str, Option<KeyValue>> = HashMap::new();
        let mut revision = index.revision;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        for op in ops {
            let key = match op {
                Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
            };
            let current = match overlay.get(key.as_str()) {
                Some(value) => value.clone(),
                None => index.data.get(key).cloned(),
            };
            let outcome = match (op, current) {
                (Op::Create { .. }, Some(_)) => Err(StorageError::AlreadyExists { key: key.clone() }),
                (Op::Create { value, .. }, None) => {
                    revision += 1;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: revision,
                        mod_revision: revision,
                    };
                    Ok(put(&mut events, &mut overlay, key, kv, None))
                }
                (Op::Update { .. } | Op::Delete { .. }, None) => Err(StorageError::NotFound { key: key.clone() }),
                (Op::Update { expected, .. }, Some(prev)) if prev.mod_revision != *expected => {
                    Err(StorageError::Conflict { key: key.clone(), expected: *expected, actual: prev.mod_revision })
                }
                (Op::Update { value, .. }, Some(prev)) => {
                    revision += 1;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.create_revision,
                        mod_revision: revision,
                    };
                    Ok(put(&mut events, &mut overlay, key, kv, Some(prev)))
                }
                (Op::Delete { expected: Some(expected), .. }, Some(prev)) if prev.mod_revision != *expected => {
                    Err(StorageError::Conflict { key: key.clone(), expected: *expected, actual: prev.mod_revision })
                }
                (Op::Delete { .. }, Some(prev)) => {
                    revision += 1;
                    let kv = KeyValue { mod_revision: revision, ..prev.clone() };
                    overlay.insert(key, None);
                    events.push(Event { kind: EventKind::Delete, kv: kv.clone(), prev: Some(prev) });
                    Ok(kv)
                }
            };
            outcomes.push(outcome);
        }
        Plan { outcomes, events, revision }
    }

    /// Makes a planned (and, for durable backends, committed) batch visible and wakes watchers.
    pub(crate) fn publish(&self, plan_events: Vec<Event>, revision: Revision) {
        if plan_events.is_empty() {
            return;
        }
        {
            let mut index = self.write();
            for event in plan_events {
                match event.kind {
                    EventKind::Put => {
                        index.data.insert(event.kv.key.clone(), event.kv.clone());
                    }
                    EventKind::Delete => {
                        index.data.remove(&event.kv.key);
                    }
                }
                index.history_bytes += event.kv.value.len();
                index.history.push_back(event);
            }
            index.revision = revision;
            while index.history.len() > index.history_limit
                || (index.history_bytes > HISTORY_BYTES && index.history.len() > HISTORY_MIN)
            {
                if let Some(old) = index.history.pop_front() {
                    index.history_bytes -= old.kv.value.len();
                    index.compacted = old.revision();
                }
            }
        }
        self.notify.send_replace(revision);
    }

    /// Moves the revision on without changes under any watched key (etcd writes elsewhere).
    pub(crate) fn advance(&self, revision: Revision) {
        {
            let mut index = self.write();
            if revision <= index.revision {
                return;
            }
            index.revision = revision;
        }
        self.notify.send_replace(revision);
    }

    /// Waits until the revision is at least `revision`.
    pub(crate) async fn wait_for(&self, revision: Revision) -> Result<(), StorageError> {
        let mut changes = self.notify.subscribe();
        changes.wait_for(|current| *current >= revision).await.map(|_| ()).map_err(|_| StorageError::Closed)
    }

    /// Replaces everything with `data` at `revision` (after history was lost): older
    /// revisions can no longer be watched or listed, so watchers relist.
    pub(crate) fn reset(&self, data: BTreeMap<String, KeyValue>, revision: Revision) {
        {
            let mut index = self.write();
            index.data = data;
            index.history.clear();
            index.history_bytes = 0;
            index.revision = index.revision.max(revision);
            index.compacted = index.revision;
        }
        self.notify.send_replace(revision);
    }

    pub(crate) fn compact(&self, revision: Revision) {
        let mut index = self.write();
        let revision = revision.min(index.revision);
        while index.history.front().is_some_and(|event| event.revision() <= revision) {
            if let Some(old) = index.history.pop_front() {
                index.history_bytes -= old.kv.value.len();
            }
        }
        index.compacted = index.compacted.max(revision);
    }

    pub(crate) fn get(&self, key: &str) -> Option<KeyValue> {
        self.read().data.get(key).cloned()
    }

    pub(crate) fn count(&self, prefix: &str) -> usize {
        let index = self.read();
        index.data.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).count()
    }

    pub(crate) fn list(&self, options: &ListOptions) -> Result<ListResult, StorageError> {
        let index = self.read();
        let at = options.revision.unwrap_or(index.revision);
        if at > index.revision {
            return Err(StorageError::FutureRevision { requested: at, current: index.revision });
        }
        let start = match &options.start_after {
            Some(after) if after.as_str() >= options.prefix.as_str() => std::ops::Bound::Excluded(after.clone()),
            _ => std::ops::Bound::Included(options.prefix.clone()),
        };
        let in_prefix = |key: &String| key.starts_with(&options.prefix);
        let limit = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        if at == index.revision {
            let mut items = Vec::new();
            let mut remaining = 0;
            for (key, kv) in index.data.range((start, std::ops::Bound::Unbounded)) {
                if !in_prefix(key) {
                    break;
                }
                if items.len() < limit {
                    items.push(kv.clone());
                } else {
                    remaining += 1;
                }
            }
            return Ok(ListResult { items, revision: at, remaining });
        }
        if at < index.compacted {
            return Err(StorageError::Compacted { requested: at, compacted: index.compacted });
        }
        // Reconstruct the state at `at`: for every key changed after `at`, its value at `at` is
        // the `prev` of the first later event; every other key is unchanged since then.
        let first_later = index.history.partition_point(|event| event.revision() <= at);
        let mut rewound: BTreeMap<&str, Option<&KeyValue>> = BTreeMap::new();
        for event in index.history.range(first_later..) {
            if in_prefix(&event.kv.key) {
                rewound.entry(event.kv.key.as_str()).or_insert(event.prev.as_ref());
            }
        }
        let mut merged: BTreeMap<&str, &KeyValue> = BTreeMap::new();
        for (key, kv) in index.data.range((start.clone(), std::ops::Bound::Unbounded)) {
            if !in_prefix(key) {
                break;
            }
            if !rewound.contains_key(key.as_str()) {
                merged.insert(key, kv);
            }
        }
        let after_start = |key: &str| match &start {
            std::ops::Bound::Excluded(after) => key > after.as_str(),
            _ => true,
        };
        for (key, prev) in rewound {
            if let Some(prev) = prev
                && after_start(key)
            {
                merged.insert(key, prev);
            }
        }
        let total = merged.len();
        let items: Vec<KeyValue> = merged.into_values().take(limit).cloned().collect();
        let remaining = total - items.len();
        Ok(ListResult { items, revision: at, remaining })
    }

    pub(crate) fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StorageError> {
        let index = self.read();
        if after < index.compacted {
            return Err(StorageError::Compacted { requested: after, compacted: index.compacted });
        }
        Ok(Watcher {
            shared: self.clone(),
            prefix: prefix.to_string(),
            cursor: after,
            changes: self.notify.subscribe(),
        })
    }
}

fn put<'a>(
    events: &mut Vec<Event>,
    overlay: &mut HashMap<&'a str, Option<KeyValue>>,
    key: &'a str,
    kv: KeyValue,
    prev: Option<KeyValue>,
) -> KeyValue {
    overlay.insert(key, Some(kv.clone()));
    events.push(Event { kind: EventKind::Put, kv: kv.clone(), prev });
    kv
}

/// The planned outcome of a batch: one result per operation, the events of the successful ones
/// and the revision after the last of them.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) outcomes: Vec<Result<KeyValue, StorageError>>,
    pub(crate) events: Vec<Event>,
    pub(crate) revision: Revision,
}

/// A stream of changes under one prefix, starting after a revision.
#[derive(Debug)]
pub struct Watcher {
    shared: Shared,
    prefix: String,
    cursor: Revision,
    changes: watch::Receiver<Revision>,
}

impl Watcher {
    /// The revision of the last event delivered (or the starting revision).
    pub fn revision(&self) -> Revision {
        self.cursor
    }

    /// Waits for the next changes. Fails with [`StorageError::Compacted`] when the watcher fell
    /// so far behind that history no longer holds the events it has not seen.
    pub async fn next_batch(&mut self) -> Result<Vec<Event>, StorageError> {
        loop {
            let batch = self.next_progress().await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Waits until the store moves past [`Watcher::revision`], then returns the changes under
    /// the prefix up to the new revision (possibly none): the watcher's revision then says that
    /// everything up to it has been seen, whatever the keys written.
    pub async fn next_progress(&mut self) -> Result<Vec<Event>, StorageError> {
        loop {
            self.changes.borrow_and_update();
            {
                let index = self.shared.read();
                if self.cursor < index.compacted {
                    return Err(StorageError::Compacted { requested: self.cursor, compacted: index.compacted });
                }
                if index.revision > self.cursor {
                    let first = index.history.partition_point(|e| e.revision() <= self.cursor);
                    let batch: Vec<Event> =
                        index.history.range(first..).filter(|e| e.kv.key.starts_with(&self.prefix)).cloned().collect();
                    self.cursor = index.revision;
                    return Ok(batch);
                }
            }
            if self.changes.changed().await.is_err() {
                return Err(StorageError::Closed);
            }
        }
    }
}
