//! The durable embedded backend: SQLite in WAL mode with `synchronous=FULL`, so a write is on disk
//! (fsynced) before it is acknowledged and survives `kill -9` or power loss.
//!
//! One writer thread owns the connection. It drains every write waiting in its queue, plans them
//! against the in-memory index, commits them in a single transaction (group commit: one fsync for
//! many concurrent writers) and only then publishes them to readers and watchers. Reads never touch
//! SQLite after start-up: the whole latest state lives in the shared index.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::state::{Op, Plan, Shared};
use crate::{EventKind, KeyValue, ListOptions, ListResult, Revision, Storage, StorageError, Watcher};

/// Largest number of writes grouped into one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<KeyValue, StorageError>>;

enum Request {
    Write(Op, Reply),
    Compact(Revision, oneshot::Sender<Result<(), StorageError>>),
}

/// A durable store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStorage {
    shared: Shared,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Write(op, _) => write!(f, "Write({op:?})"),
            Request::Compact(rev, _) => write!(f, "Compact({rev})"),
        }
    }
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` and loads its latest state.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open(path).map_err(StorageError::Backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL,
                 create_revision INTEGER NOT NULL,
                 mod_revision INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (
                 name TEXT PRIMARY KEY NOT NULL,
                 value INTEGER NOT NULL
             ) WITHOUT ROWID;",
        )
        .map_err(StorageError::Backend)?;
        let revision: Revision = conn
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |row| row.get::<_, i64>(0))
            .optional()
            .map_err(StorageError::Backend)?
            .map(|r| r as Revision)
            .unwrap_or(1);
        let mut data = BTreeMap::new();
        {
            let mut statement = conn
                .prepare("SELECT key, value, create_revision, mod_revision FROM kv")
                .map_err(StorageError::Backend)?;
            let rows = statement
                .query_map([], |row| {
                    Ok(KeyValue {
                        key: row.get(0)?,
                        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
                        create_revision: row.get::<_, i64>(2)? as Revision,
                        mod_revision: row.get::<_, i64>(3)? as Revision,
                    })
                })
                .map_err(StorageError::Backend)?;
            for row in rows {
                let kv = row.map_err(StorageError::Backend)?;
                data.insert(kv.key.clone(), kv);
            }
        }
        let shared = Shared::new(data, revision);
        let (requests, receiver) = mpsc::channel();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("vkube-sqlite-writer".into())
            .spawn(move || writer(conn, writer_shared, receiver))
            .map_err(|_| StorageError::Closed)?;
        Ok(SqliteStorage { shared, requests })
    }

    async fn apply(&self, op: Op) -> Result<KeyValue, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Write(op, reply)).map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }
}

/// The writer loop: block for one request, take every other one already queued, commit them
/// together, then answer them all.
fn writer(mut conn: Connection, shared: Shared, receiver: mpsc::Receiver<Request>) {
    while let Ok(first) = receiver.recv() {
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        let mut compactions = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Write(op, reply) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Request::Compact(rev, reply) => compactions.push((rev, reply)),
            }
            if ops.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        if !ops.is_empty() {
            let plan = shared.plan(&ops);
            match commit(&mut conn, &plan) {
                Ok(()) => {
                    let Plan { outcomes, events, revision } = plan;
                    shared.publish(events, revision);
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "sqlite commit failed; writes rejected");
                    for reply in replies {
                        let _ = reply.send(Err(StorageError::Backend(clone_error(&error))));
                    }
                }
            }
        }
        for (revision, reply) in compactions {
            shared.compact(revision);
            let _ = reply.send(Ok(()));
        }
    }
}

fn clone_error(error: &rusqlite::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(error.to_string().into())
}

fn commit(conn: &mut Connection, plan: &Plan) -> Result<(), rusqlite::Error> {
    if plan.events.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
        for event in &plan.events {
            match event.kind {
                EventKind::Put => {
                    upsert.execute(params![
                        event.kv.key,
                        event.kv.value.as_ref(),
                        event.kv.create_revision as i64,
                        event.kv.mod_revision as i64
                    ])?;
                }
                EventKind::Delete => {
                    delete.execute(params![event.kv.key])?;
                }
            }
        }
        tx.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('revision', ?1)", params![plan.revision as i64])?;
    }
    tx.commit()
}

#[async_trait]
impl Storage for SqliteStorage {
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
        self.apply(Op::Create { key: key.to_string(), value }).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, StorageError> {
        self.apply(Op::Update { key: key.to_string(), value, expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StorageError> {
        self.apply(Op::Delete { key: key.to_string(), expected }).await
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StorageError> {
        self.shared.watch(prefix, after)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StorageError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Compact(revision, reply)).map_err(|_| StorageError::Closed)?;
        answer.await.map_err(|_| StorageError::Closed)?
    }
}
