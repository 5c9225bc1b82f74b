//! The non-durable backend: the shared index alone, for tests and throwaway clusters.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::state::{Op, Shared};
use crate::{KeyValue, ListOptions, ListResult, Revision, Storage, StorageError, Watcher};

/// A store that keeps everything in memory and loses it when dropped.
#[derive(Debug)]
pub struct MemoryStorage {
    shared: Shared,
    /// Serializes writers so that planning and publishing happen as one step.
    writer: Mutex<()>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty store at revision 1.
    pub fn new() -> Self {
        MemoryStorage { shared: Shared::new(BTreeMap::new(), 1), writer: Mutex::new(()) }
    }

    fn apply(&self, op: Op) -> Result<KeyValue, StorageError> {
        let _guard = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut plan = self.shared.plan(std::slice::from_ref(&op));
        self.shared.publish(plan.events, plan.revision);
        plan.outcomes.pop().unwrap_or(Err(StorageError::Closed))
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn current_revision(&self) -> Revision {
        self.shared.current_revision()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        Ok(self.shared.get(key))
    }

    async fn list(&self, options: ListOptions) -> Result<ListResult, StorageError> {
        self.shared.list(&options)
    }

    async fn count(&self, prefix: &str) -> Result<usize, StorageError> {
        Ok(self.shared.count(prefix))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StorageError> {
        self.apply(Op::Create { key: key.to_string(), value })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, StorageError> {
        self.apply(Op::Update { key: key.to_string(), value, expected })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StorageError> {
        self.apply(Op::Delete { key: key.to_string(), expected })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StorageError> {
        self.shared.watch(prefix, after)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StorageError> {
        self.shared.compact(revision);
        Ok(())
    }
}
