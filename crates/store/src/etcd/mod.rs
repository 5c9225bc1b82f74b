//! The etcd backend: keys, revisions (a key's `mod_revision` is etcd's revision, so
//! resourceVersions are etcd's), compare-and-swap writes as etcd transactions, and the shared
//! in-memory index ([`crate::state`]) fed by one etcd watch, so lists, gets and watches are
//! served as the embedded backends serve them.
//!
//! It speaks etcd's v3 gRPC API (`KV/Range`, `KV/Txn`, `KV/Compact`, `Watch/Watch`) over
//! HTTP/2 with rustls (CA, client certificate) through a small client of its own
//! ([`grpc`], messages in [`proto`]): no `protoc` at build time, which the `etcd-client` crate
//! needs. (Until 2026-12 it used etcd's JSON gateway; a watch event through the gateway cost etcd
//! about as much CPU as the write itself.)
//!
//! Consistency, as kube-apiserver's watch cache gives it: a write returns after the index has
//! seen its revision (read your writes), and a read first asks etcd for its current revision
//! and waits until the index has caught up to it, so every replica on one etcd reads what any
//! replica wrote before. The watch covers the whole keyspace (events outside the prefix only
//! move the revision on), so the index knows etcd's revision exactly.

mod grpc;
mod proto;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use self::grpc::Channel;
use self::proto::request_op::Request;
use self::proto::response_op::Response;
use self::proto::{compare, compare_result, compare_target, event_type};
use crate::state::Shared;
use crate::{Event, EventKind, KeyValue, ListOptions, ListResult, Revision, StorageError, Watcher};

/// Where the etcd cluster is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// Client URLs (`https://10.0.0.1:2379`); tried in order when one does not answer.
    pub endpoints: Vec<String>,
    /// PEM CA the servers' certificates must chain to (the system's roots without one).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Prepended to every key (several virtual clusters can share one etcd).
    pub prefix: String,
}

/// A store on an etcd cluster.
pub struct EtcdStorage {
    channel: Channel,
    prefix: String,
    shared: Shared,
    feed: tokio::task::JoinHandle<()>,
    /// Consistent reads share etcd round trips (see [`EtcdStorage::sync`]).
    reads: ReadBarrier,
}

/// Batches the "where is etcd now" requests of concurrent consistent reads: one request at a
/// time, and a reader takes the answer of any request sent after it arrived.
#[derive(Default)]
struct ReadBarrier {
    /// Readers arrived so far.
    arrived: AtomicU64,
    /// One request in flight; holds (readers arrived before the last request was sent, etcd's
    /// revision it answered).
    last: tokio::sync::Mutex<(u64, Revision)>,
}

impl Drop for EtcdStorage {
    fn drop(&mut self) {
        self.feed.abort();
    }
}

/// A revision as etcd sends it (int64; never negative).
fn revision_of(header: Option<&proto::ResponseHeader>) -> Revision {
    header.map_or(0, |h| Revision::try_from(h.revision).unwrap_or(0))
}

fn signed(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// The first key after every key starting with `prefix` (etcd's range end of a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn remote(message: impl std::fmt::Display) -> StorageError {
    StorageError::Remote(message.to_string())
}

const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";
const COMPACT: &str = "/etcdserverpb.KV/Compact";

fn tls_config(config: &EtcdConfig) -> Result<rustls::ClientConfig, StorageError> {
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| remote(format!("reading {}: {e}", path.display())));
    let certs = |pem: &[u8]| {
        rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>().map_err(|e| remote(e.to_string()))
    };
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            for cert in certs(&read(path)?)? {
                roots.add(cert).map_err(|e| remote(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| remote(e.to_string()))?
        .with_root_certificates(roots);
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(&read(cert)?)?;
            let key = rustls_pemfile::private_key(&mut &read(key)?[..])
                .map_err(|e| remote(e.to_string()))?
                .ok_or_else(|| remote(format!("{}: no private key", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| remote(e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(remote("a client certificate needs both a certificate file and a key file")),
    }
}

impl EtcdStorage {
    /// Connects, loads every key under the prefix and starts following etcd's changes.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StorageError> {
        if config.endpoints.is_empty() {
            return Err(remote("no etcd endpoints given"));
        }
        let channel = Channel::new(tls_config(&config)?, config.endpoints.clone());
        let prefix = config.prefix.clone();
        let (data, revision) = load(&channel, &prefix).await?;
        let shared = Shared::new(data, revision);
        let feed = tokio::spawn(follow(channel.clone(), prefix.clone(), shared.clone()));
        Ok(EtcdStorage { channel, prefix, shared, feed, reads: ReadBarrier::default() })
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    /// Waits until the index has seen `revision` (a write's, or etcd's current one).
    async fn caught_up(&self, revision: Revision) -> Result<(), StorageError> {
        if self.shared.current_revision() >= revision {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(Duration::from_secs(30), self.shared.wait_for(revision)).await {
            Ok(result) => result,
            Err(_) => Err(remote(format!("the watch of etcd did not reach revision {revision} in 30s"))),
        };
        tracing::debug!(target: "vkube::etcd", micros = started.elapsed().as_micros() as u64, revision, "waited for the watch");
        outcome
    }

    /// Waits until the index shows everything etcd had committed when this was called: etcd's
    /// current revision from a request sent after this call began (shared with the readers that
    /// arrived meanwhile), then the watch up to it.
    async fn sync(&self) -> Result<(), StorageError> {
        let ticket = self.reads.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        let revision = {
            let mut last = self.reads.last.lock().await;
            if last.0 >= ticket {
                last.1
            } else {
                let covers = self.reads.arrived.load(Ordering::SeqCst);
                let request = proto::RangeRequest { key: vec![0], count_only: true, limit: 1, ..Default::default() };
                let answer: proto::RangeResponse = self.channel.unary(RANGE, &request).await?;
                let revision = revision_of(answer.header.as_ref());
                *last = (covers, revision);
                revision
            }
        };
        self.caught_up(revision).await
    }

    /// Runs a transaction comparing `key`: `compare` holds → `success`, else the key is read.
    async fn transaction(
        &self,
        key: &str,
        result: i32,
        target: compare::TargetUnion,
        success: Request,
    ) -> Result<(bool, proto::TxnResponse, Revision), StorageError> {
        let full = self.full_key(key);
        let target_kind = match target {
            compare::TargetUnion::CreateRevision(_) => compare_target::CREATE,
            compare::TargetUnion::ModRevision(_) => compare_target::MOD,
        };
        let compare = proto::Compare { result, target: target_kind, key: full.clone(), target_union: Some(target) };
        let read = proto::RangeRequest { key: full, ..Default::default() };
        let request = proto::TxnRequest {
            compare: vec![compare],
            success: vec![proto::RequestOp { request: Some(success) }],
            failure: vec![proto::RequestOp { request: Some(Request::Range(read)) }],
        };
        let started = std::time::Instant::now();
        let answer: proto::TxnResponse = self.channel.unary(TXN, &request).await?;
        let revision = revision_of(answer.header.as_ref());
        tracing::debug!(target: "vkube::etcd", micros = started.elapsed().as_micros() as u64, revision, "transaction");
        Ok((answer.succeeded, answer, revision))
    }

    /// The key the failure branch of [`EtcdStorage::transaction`] read.
    fn found(&self, answer: &proto::TxnResponse) -> Option<KeyValue> {
        match answer.responses.first()?.response.as_ref()? {
            Response::Range(range) => key_value(range.kvs.first()?, &self.prefix),
            _ => None,
        }
    }
}

/// A bare etcd client for measuring etcd's own floor (`vkube-bench etcd`): puts through the
/// gRPC channel the store uses, with nothing around them.
pub struct RawEtcd(Channel);

impl RawEtcd {
    /// A client of `config`'s endpoints (its prefix is not used).
    pub fn connect(config: &EtcdConfig) -> Result<Self, StorageError> {
        Ok(RawEtcd(Channel::new(tls_config(config)?, config.endpoints.clone())))
    }

    /// `KV/Put` of `value` at `key`; etcd's revision after it.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StorageError> {
        let request = proto::PutRequest { key: key.as_bytes().to_vec(), value, prev_kv: false };
        let answer: proto::PutResponse = self.0.unary("/etcdserverpb.KV/Put", &request).await?;
        Ok(revision_of(answer.header.as_ref()))
    }
}

fn key_value(kv: &proto::KeyValue, prefix: &str) -> Option<KeyValue> {
    let key = std::str::from_utf8(&kv.key).ok()?;
    Some(KeyValue {
        key: key.strip_prefix(prefix)?.to_string(),
        value: kv.value.clone(),
        create_revision: Revision::try_from(kv.create_revision).unwrap_or(0),
        mod_revision: Revision::try_from(kv.mod_revision).unwrap_or(0),
    })
}

/// Every key under `prefix`, at one revision (paged), and that revision.
async fn load(channel: &Channel, prefix: &str) -> Result<(BTreeMap<String, KeyValue>, Revision), StorageError> {
    let (start, end) = if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()))
    };
    let mut data = BTreeMap::new();
    let mut from = start;
    let mut revision = 0;
    loop {
        let request = proto::RangeRequest {
            key: from.clone(),
            range_end: end.clone(),
            limit: 1000,
            revision: signed(revision),
            ..Default::default()
        };
        let answer: proto::RangeResponse = channel.unary(RANGE, &request).await?;
        if revision == 0 {
            revision = revision_of(answer.header.as_ref());
        }
        for kv in &answer.kvs {
            if let Some(kv) = key_value(kv, prefix) {
                data.insert(kv.key.clone(), kv);
            }
        }
        let Some(last) = answer.kvs.last() else { return Ok((data, revision)) };
        if !answer.more {
            return Ok((data, revision));
        }
        from.clone_from(&last.key);
        from.push(0);
    }
}

/// Follows every change of etcd after the index's revision into the index, reconnecting when
/// the stream ends; after a compaction it missed, reloads (watchers then relist).
async fn follow(channel: Channel, prefix: String, shared: Shared) {
    let mut delay = Duration::from_millis(100);
    loop {
        let start = shared.current_revision() + 1;
        let create = proto::WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: signed(start),
            progress_notify: true,
            prev_kv: true,
        };
        let request =
            proto::WatchRequest { request_union: Some(proto::watch_request::RequestUnion::CreateRequest(create)) };
        match channel.watch(&request).await {
            Ok(mut watch) => {
                delay = Duration::from_millis(100);
                while let Some(answer) = watch.next().await {
                    match answer {
                        Ok(answer) => match apply(&answer, &prefix, &shared) {
                            Flow::Continue => {}
                            Flow::Reload => {
                                reload(&channel, &prefix, &shared).await;
                                break;
                            }
                            Flow::Ended => {
                                tracing::warn!(reason = %answer.cancel_reason, "etcd ended the watch; watching again");
                                break;
                            }
                        },
                        Err(error) => {
                            tracing::warn!(%error, "etcd watch failed; retrying");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "etcd watch failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[derive(PartialEq, Debug)]
enum Flow {
    Continue,
    Reload,
    /// etcd cancelled the watch for another reason than a compaction.
    Ended,
}

/// Applies one watch response: its events, by revision, under the prefix; the revision otherwise.
fn apply(answer: &proto::WatchResponse, prefix: &str, shared: &Shared) -> Flow {
    if answer.compact_revision > 0 {
        return Flow::Reload;
    }
    if answer.canceled {
        return Flow::Ended;
    }
    let mut batch: Vec<Event> = Vec::new();
    let mut at = 0;
    for event in &answer.events {
        let Some(current) = &event.kv else { continue };
        let revision = Revision::try_from(current.mod_revision).unwrap_or(0);
        if revision != at && at != 0 {
            publish(shared, std::mem::take(&mut batch), at);
        }
        at = revision;
        let prev = event.prev_kv.as_ref().and_then(|kv| key_value(kv, prefix));
        let deleted = event.r#type == event_type::DELETE;
        let kv = if deleted {
            prev.clone().map(|p| KeyValue { mod_revision: revision, ..p })
        } else {
            key_value(current, prefix)
        };
        if let Some(kv) = kv {
            batch.push(Event { kind: if deleted { EventKind::Delete } else { EventKind::Put }, kv, prev });
        }
    }
    if at != 0 {
        publish(shared, batch, at);
    }
    // Progress: nothing under the prefix changed up to the header's revision. Not so for the
    // response that confirms the watch: its header is etcd's revision at that moment, and the
    // events up to it (writes since the start revision) are still to come.
    let header = revision_of(answer.header.as_ref());
    if !answer.created && answer.events.is_empty() && header > shared.current_revision() {
        shared.advance(header);
    }
    Flow::Continue
}

fn publish(shared: &Shared, events: Vec<Event>, revision: Revision) {
    if events.is_empty() {
        shared.advance(revision);
    } else {
        shared.publish(events, revision);
    }
}

async fn reload(channel: &Channel, prefix: &str, shared: &Shared) {
    loop {
        match load(channel, prefix).await {
            Ok((data, revision)) => {
                tracing::warn!(revision, "etcd compacted history the watch had not seen; reloaded");
                shared.reset(data, revision);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "reloading from etcd failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[async_trait::async_trait]
impl crate::Storage for EtcdStorage {
    fn current_revision(&self) -> Revision {
        self.shared.current_revision()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        self.sync().await?;
        Ok(self.shared.get(key))
    }

    async fn list(&self, options: ListOptions) -> Result<ListResult, StorageError> {
        match options.revision {
            None => self.sync().await?,
            // A revision etcd has reached but the watch has not yet: wait a moment for it.
            Some(revision) if revision > self.shared.current_revision() => {
                let _ = tokio::time::timeout(Duration::from_secs(3), self.shared.wait_for(revision)).await;
            }
            Some(_) => {}
        }
        self.shared.list(&options)
    }

    async fn get_recent(&self, key: &str) -> Result<Option<KeyValue>, StorageError> {
        match self.shared.get(key) {
            Some(kv) => Ok(Some(kv)),
            None => self.get(key).await,
        }
    }

    async fn list_recent(&self, options: ListOptions) -> Result<ListResult, StorageError> {
        if options.revision.is_some() {
            return self.list(options).await;
        }
        self.shared.list(&options)
    }

    async fn count(&self, prefix: &str) -> Result<usize, StorageError> {
        self.sync().await?;
        Ok(self.shared.count(prefix))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StorageError> {
        let put = Request::Put(proto::PutRequest { key: self.full_key(key), value: value.clone(), prev_kv: false });
        let (succeeded, _, revision) =
            self.transaction(key, compare_result::EQUAL, compare::TargetUnion::CreateRevision(0), put).await?;
        if !succeeded {
            return Err(StorageError::AlreadyExists { key: key.to_string() });
        }
        self.caught_up(revision).await?;
        Ok(KeyValue { key: key.to_string(), value, create_revision: revision, mod_revision: revision })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, StorageError> {
        let put = Request::Put(proto::PutRequest { key: self.full_key(key), value: value.clone(), prev_kv: true });
        let compare = compare::TargetUnion::ModRevision(signed(expected));
        let (succeeded, answer, revision) = self.transaction(key, compare_result::EQUAL, compare, put).await?;
        if !succeeded {
            return Err(match self.found(&answer) {
                None => StorageError::NotFound { key: key.to_string() },
                Some(kv) => StorageError::Conflict { key: key.to_string(), expected, actual: kv.mod_revision },
            });
        }
        let created = match answer.responses.first().and_then(|r| r.response.as_ref()) {
            Some(Response::Put(put)) => put.prev_kv.as_ref().and_then(|kv| key_value(kv, &self.prefix)),
            _ => None,
        }
        .map_or(revision, |kv| kv.create_revision);
        self.caught_up(revision).await?;
        Ok(KeyValue { key: key.to_string(), value, create_revision: created, mod_revision: revision })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StorageError> {
        let delete = Request::DeleteRange(proto::DeleteRangeRequest { key: self.full_key(key), prev_kv: true });
        let (result, compare) = match expected {
            Some(expected) => (compare_result::EQUAL, compare::TargetUnion::ModRevision(signed(expected))),
            None => (compare_result::GREATER, compare::TargetUnion::CreateRevision(0)),
        };
        let (succeeded, answer, revision) = self.transaction(key, result, compare, delete).await?;
        if !succeeded {
            return Err(match (self.found(&answer), expected) {
                (Some(kv), Some(expected)) => {
                    StorageError::Conflict { key: key.to_string(), expected, actual: kv.mod_revision }
                }
                _ => StorageError::NotFound { key: key.to_string() },
            });
        }
        let prev = match answer.responses.first().and_then(|r| r.response.as_ref()) {
            Some(Response::DeleteRange(deleted)) => deleted.prev_kvs.first().and_then(|kv| key_value(kv, &self.prefix)),
            _ => None,
        }
        .ok_or_else(|| StorageError::NotFound { key: key.to_string() })?;
        self.caught_up(revision).await?;
        Ok(KeyValue { mod_revision: revision, ..prev })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StorageError> {
        self.shared.watch(prefix, after)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StorageError> {
        let request = proto::CompactionRequest { revision: signed(revision) };
        match self.channel.unary::<_, proto::CompactionResponse>(COMPACT, &request).await {
            Ok(_) => {}
            // Already compacted there (another replica did it): the same outcome.
            Err(StorageError::Remote(message)) if message.contains("compacted") => {}
            Err(error) => return Err(error),
        }
        self.shared.compact(revision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn watch_responses_become_events_by_revision() {
        let shared = Shared::new(BTreeMap::new(), 1);
        let kv = |key: &str, value: &'static str, create: i64, modified: i64| proto::KeyValue {
            key: key.as_bytes().to_vec(),
            value: Bytes::from_static(value.as_bytes()),
            create_revision: create,
            mod_revision: modified,
        };
        let header = |revision| Some(proto::ResponseHeader { revision });
        let put = |kv| proto::Event { r#type: 0, kv: Some(kv), prev_kv: None };
        let result = proto::WatchResponse {
            header: header(4),
            events: vec![
                put(kv("p/a", "1", 2, 2)),
                put(kv("other", "x", 3, 3)),
                proto::Event {
                    r#type: event_type::DELETE,
                    kv: Some(proto::KeyValue { key: b"p/a".to_vec(), mod_revision: 4, ..Default::default() }),
                    prev_kv: Some(kv("p/a", "1", 2, 2)),
                },
            ],
            ..Default::default()
        };
        assert_eq!(apply(&result, "p/", &shared), Flow::Continue);
        assert_eq!(shared.current_revision(), 4, "a change outside the prefix moves the revision on");
        assert!(shared.get("a").is_none(), "created then deleted");
        let listed = shared.list(&ListOptions { prefix: "a".into(), revision: Some(2), ..Default::default() }).unwrap();
        assert_eq!(listed.items[0].value, Bytes::from("1"), "history keeps the put");
        // The watch's confirmation says where etcd is, not that its events have arrived.
        let created = proto::WatchResponse { header: header(7), created: true, ..Default::default() };
        apply(&created, "p/", &shared);
        assert_eq!(shared.current_revision(), 4, "the confirmation of the watch is no progress");
        let progress = proto::WatchResponse { header: header(9), ..Default::default() };
        apply(&progress, "p/", &shared);
        assert_eq!(shared.current_revision(), 9);
        let compacted = proto::WatchResponse { compact_revision: 5, canceled: true, ..Default::default() };
        assert_eq!(apply(&compacted, "p/", &shared), Flow::Reload);
        let cancelled = proto::WatchResponse { canceled: true, cancel_reason: "gone".into(), ..Default::default() };
        assert_eq!(apply(&cancelled, "p/", &shared), Flow::Ended);
    }
}
