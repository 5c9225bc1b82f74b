//! The durable embedded backend: SQLite in WAL mode. A commit appends to the write-ahead log and
//! the log is `fdatasync`ed before any write of the batch is acknowledged, so acknowledged writes
//! survive `kill -9` and power loss. (`synchronous=NORMAL` plus our own `fdatasync` of the WAL is
//! the same guarantee as `synchronous=FULL` at less than half the cost here: FULL issues a full
//! `fsync` per commit; SQLite still syncs the WAL and database around every checkpoint.)
//!
//! Writers queue their operation; whoever finds the connection free commits every queued write in
//! a single transaction (group commit: one fsync for many concurrent writers), planned against the
//! in-memory index, and only then publishes them to readers and watchers. Reads never touch SQLite
//! after start-up: the whole latest state lives in the shared index.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::state::{Op, Plan, Shared};
use crate::{EventKind, KeyValue, ListOptions, ListResult, Revision, Storage, StorageError, Watcher};

/// Largest number of writes grouped into one transaction.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<KeyValue, StorageError>>;

/// A durable store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStorage {
    shared: Shared,
    /// The connection; whoever holds it is the leader that commits everything queued.
    connection: Mutex<Connection>,
    /// Writes waiting for the next commit.
    queue: Mutex<Vec<(Op, Reply)>>,
    /// The write-ahead log, synced after every commit (opened once it exists).
    wal: Mutex<Option<std::fs::File>>,
    wal_path: std::path::PathBuf,
    /// Tells the checkpoint thread to stop.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How often the background thread moves the write-ahead log into the database.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Checkpoints from its own connection, so writers never pay for copying the log into the
/// database (with automatic checkpoints, every thousandth page committed stalls its writer).
fn checkpointer(path: std::path::PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let conn = match Connection::open(&path) {
        Ok(conn) => conn,
        Err(error) => {
            tracing::error!(%error, "checkpoint connection failed; the write-ahead log will grow until restart");
            return;
        }
    };
    let _ = conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "checkpoint failed; retrying");
        }
    }
}

/// A row of `SELECT key, value, create_revision, mod_revision FROM kv`.
fn key_value(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        create_revision: row.get::<_, i64>(2)? as Revision,
        mod_revision: row.get::<_, i64>(3)? as Revision,
    })
}

/// Reads the keys under `prefix` from the database at `path` without opening it for writing
/// (safe while a server runs on it): for inspection tools.
pub fn read_prefix(path: &Path, prefix: &str) -> Result<Vec<KeyValue>, StorageError> {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(StorageError::Backend)?;
    let mut statement = conn
        .prepare("SELECT key, value, create_revision, mod_revision FROM kv WHERE substr(key, 1, ?2) = ?1 ORDER BY key")
        .map_err(StorageError::Backend)?;
    let rows = statement
        .query_map(rusqlite::params![prefix, prefix.chars().count() as i64], key_value)
        .map_err(StorageError::Backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(StorageError::Backend)
}

impl SqliteStorage {
    /// Opens (creating if needed) the database at `path` and loads its latest state.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let conn = Connection::open(path).map_err(StorageError::Backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA wal_autocheckpoint=0;
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
            let rows = statement.query_map([], key_value).map_err(StorageError::Backend)?;
            for row in rows {
                let kv = row.map_err(StorageError::Backend)?;
                data.insert(kv.key.clone(), kv);
            }
        }
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (checkpoint_path, checkpoint_stop) = (path.to_path_buf(), stop.clone());
        std::thread::Builder::new()
            .name("vkube-sqlite-checkpoint".into())
            .spawn(move || checkpointer(checkpoint_path, checkpoint_stop))
            .map_err(|_| StorageError::Closed)?;
        Ok(SqliteStorage {
            shared: Shared::new(data, revision),
            connection: Mutex::new(conn),
            queue: Mutex::new(Vec::new()),
            wal: Mutex::new(None),
            wal_path: wal_path.into(),
            stop,
        })
    }

    /// Queues a write and waits for the commit that includes it.
    ///
    /// Group commit without a writer thread: the caller that finds the connection free becomes
    /// the leader and commits every queued write (its own and any that arrive meanwhile) before
    /// letting go; the others wait for their answer. This saves two thread hand-offs per write,
    /// which dominate latency on an idle machine.
    async fn apply(&self, op: Op) -> Result<KeyValue, StorageError> {
        let (reply, answer) = oneshot::channel();
        lock(&self.queue).push((op, reply));
        self.lead_while_work_is_queued();
        answer.await.map_err(|_| StorageError::Closed)?
    }

    fn lead_while_work_is_queued(&self) {
        loop {
            let Ok(mut conn) = self.connection.try_lock() else {
                // The current leader drains the queue after every commit, including our write.
                return;
            };
            loop {
                let batch: Vec<(Op, Reply)> = {
                    let mut queue = lock(&self.queue);
                    let take = queue.len().min(MAX_BATCH);
                    queue.drain(..take).collect()
                };
                if batch.is_empty() {
                    break;
                }
                self.commit_batch(&mut conn, batch);
            }
            drop(conn);
            // A write queued between the last drain and the unlock found the lock taken; make
            // sure somebody commits it.
            if lock(&self.queue).is_empty() {
                return;
            }
        }
    }

    fn commit_batch(&self, conn: &mut Connection, batch: Vec<(Op, Reply)>) {
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        let plan = self.shared.plan(&ops);
        if let Err(error) = commit(conn, &plan) {
            tracing::error!(%error, "sqlite commit failed; writes rejected");
            for reply in replies {
                let _ = reply.send(Err(StorageError::Backend(clone_error(&error))));
            }
            return;
        }
        // The batch is in the database now, so memory must show it whatever the sync says.
        let synced = self.sync_wal(plan.events.is_empty());
        let Plan { outcomes, events, revision } = plan;
        self.shared.publish(events, revision);
        match synced {
            Ok(()) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                // Not known to be durable: never acknowledge it.
                tracing::error!(%error, "syncing the write-ahead log failed; writes not acknowledged");
                for reply in replies {
                    let _ = reply.send(Err(StorageError::Backend(clone_error(&error))));
                }
            }
        }
    }
}

impl SqliteStorage {
    /// Makes the commit durable: `fdatasync` of the write-ahead log.
    fn sync_wal(&self, nothing_written: bool) -> Result<(), rusqlite::Error> {
        if nothing_written {
            return Ok(());
        }
        let mut wal = lock(&self.wal);
        if wal.is_none() {
            *wal = Some(std::fs::File::open(&self.wal_path).map_err(io_error)?);
        }
        wal.as_ref().map(std::fs::File::sync_data).transpose().map_err(io_error)?;
        Ok(())
    }
}

fn io_error(error: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        // Compaction only trims in-memory history; the connection lock orders it with commits.
        let _conn = lock(&self.connection);
        self.shared.compact(revision);
        Ok(())
    }
}
