//! Key/value storage with a single global revision counter, compare-and-swap writes and prefix
//! watches: the contract the vkube API server needs from its backing store (the same shape as
//! etcd's, trimmed to what kube-apiserver really uses, see k3s-io/kine's `limited.go`).
//!
//! The store knows nothing of Kubernetes objects: keys are strings, values are bytes.
//!
//! Three backends share one in-memory index ([`state`]):
//! - [`MemoryStorage`]: nothing is persisted; for tests.
//! - [`SqliteStorage`]: every acknowledged write is committed and its write-ahead log
//!   `fdatasync`ed before the caller hears about it; concurrent writers are grouped into one
//!   transaction per commit.
//! - [`EtcdStorage`]: an etcd cluster (revisions are etcd's; the index is fed by an etcd watch,
//!   so several API servers can share one etcd).
//!
//! All pass the same conformance suite (`tests/conformance.rs`).

mod etcd;
mod memory;
mod sqlite;
mod state;
pub mod testing;

use async_trait::async_trait;
use bytes::Bytes;

pub use etcd::{EtcdConfig, EtcdStorage, RawEtcd};
pub use memory::MemoryStorage;
pub use sqlite::{SqliteStorage, read_prefix};
pub use state::Watcher;

/// A store revision: increases by one with every successful write, across all keys.
pub type Revision = u64;

/// One stored key with its value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value as stored.
    pub value: Bytes,
    /// The revision of the write that created the key.
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Whether the key was written or deleted.
    pub kind: EventKind,
    /// For a put, the new key/value. For a delete, the last value, with `mod_revision` set to the
    /// revision of the deletion.
    pub kv: KeyValue,
    /// The key/value before this change, if the key existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Parameters of a prefix list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly greater than this one (pagination).
    pub start_after: Option<String>,
    /// At most this many keys.
    pub limit: Option<usize>,
    /// Read the state as of this revision instead of the latest one.
    pub revision: Option<Revision>,
}

/// The result of a list.
#[derive(Clone, Debug, Default)]
pub struct ListResult {
    /// The matching keys in key order.
    pub items: Vec<KeyValue>,
    /// The revision the list reflects.
    pub revision: Revision,
    /// How many further keys match after the last one returned (0 when complete).
    pub remaining: usize,
}

/// Every way a storage operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A create found the key already present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// An update or delete named a key that does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A compare-and-swap found a different modification revision.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The revision actually stored.
        actual: Revision,
    },
    /// The requested revision has been compacted away.
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The newest compacted revision; history starts after it.
        compacted: Revision,
    },
    /// The requested revision is newer than anything stored.
    #[error("revision {requested} is in the future (current: {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The durable backend failed; the write was not acknowledged.
    #[error("storage backend failed")]
    Backend(#[source] rusqlite::Error),
    /// The remote backend (etcd) failed or could not be reached; the write may not have happened.
    #[error("{0}")]
    Remote(String),
    /// The store is shutting down or its writer died.
    #[error("storage is closed")]
    Closed,
}

/// The storage contract of the API server.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The latest revision.
    fn current_revision(&self) -> Revision;

    /// Reads one key at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError>;

    /// Lists keys under a prefix, optionally at an older revision and paginated.
    async fn list(&self, options: ListOptions) -> Result<ListResult, StorageError>;

    /// Reads one key as this server last saw it: a store that serves reads from a copy fed by a
    /// watch (etcd) answers from the copy without asking for the latest revision first, so the
    /// answer may lag other servers' writes by the watch's delay (what upstream's admission
    /// plugins read from informers); a key the copy lacks is read at the latest revision.
    async fn get_recent(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        self.get(key).await
    }

    /// Lists as this server last saw it (see [`Storage::get_recent`]).
    async fn list_recent(&self, options: ListOptions) -> Result<ListResult, StorageError> {
        self.list(options).await
    }

    /// Counts keys under a prefix at the latest revision.
    async fn count(&self, prefix: &str) -> Result<usize, StorageError>;

    /// Creates a key that must not exist yet.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StorageError>;

    /// Replaces a key's value if its modification revision is still `expected`.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, StorageError>;

    /// Deletes a key, if `expected` is given only when its modification revision matches.
    /// Returns the deleted value with `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StorageError>;

    /// Watches every change under `prefix` after revision `after`.
    fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StorageError>;

    /// Forgets history up to and including `revision`: older revisions can no longer be listed or
    /// watched from.
    async fn compact(&self, revision: Revision) -> Result<(), StorageError>;
}
