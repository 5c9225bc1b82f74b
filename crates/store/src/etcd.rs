//! The etcd backend: keys, revisions (a key's `mod_revision` is etcd's revision, so
//! resourceVersions are etcd's), compare-and-swap writes as etcd transactions, and the shared
//! in-memory index ([`crate::state`]) fed by one etcd watch, so lists, gets and watches are
//! served as the embedded backends serve them.
//!
//! It speaks etcd's v3 API through etcd's own JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/watch` ...) on the client URL, over HTTP/1.1 with rustls (CA, client certificate): no
//! gRPC stack and no `protoc` at build time (what the `etcd-client` crate needs), and the same
//! requests and guarantees.
//!
//! Consistency, as kube-apiserver's watch cache gives it: a write returns after the index has
//! seen its revision (read your writes), and a read first asks etcd for its current revision
//! and waits until the index has caught up to it, so every replica on one etcd reads what any
//! replica wrote before. The watch covers the whole keyspace (events outside the prefix only
//! move the revision on), so the index knows etcd's revision exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

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

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// A store on an etcd cluster.
pub struct EtcdStorage {
    http: Client<Https, Full<Bytes>>,
    endpoints: Vec<String>,
    /// The endpoint that answered last.
    current: Arc<AtomicUsize>,
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

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(value: &Value) -> Vec<u8> {
    value.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()).unwrap_or_default()
}

/// A revision as the gateway writes it (int64 as a JSON string).
fn revision_of(value: &Value) -> Revision {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
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
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&config)?)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let endpoints: Vec<String> = config.endpoints.iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        let current = Arc::new(AtomicUsize::new(0));
        let prefix = config.prefix.clone();
        let caller = Caller { http: http.clone(), endpoints: endpoints.clone(), current: current.clone() };
        let (data, revision) = load(&caller, &prefix).await?;
        let shared = Shared::new(data, revision);
        let feed = tokio::spawn(follow(caller, prefix.clone(), shared.clone()));
        Ok(EtcdStorage { http, endpoints, current, prefix, shared, feed, reads: ReadBarrier::default() })
    }

    fn caller(&self) -> Caller {
        Caller { http: self.http.clone(), endpoints: self.endpoints.clone(), current: self.current.clone() }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Waits until the index has seen `revision` (a write's, or etcd's current one).
    async fn caught_up(&self, revision: Revision) -> Result<(), StorageError> {
        match tokio::time::timeout(Duration::from_secs(30), self.shared.wait_for(revision)).await {
            Ok(result) => result,
            Err(_) => Err(remote(format!("the watch of etcd did not reach revision {revision} in 30s"))),
        }
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
                let answer =
                    self.caller().call("kv/range", json!({"key": b64(b"\0"), "count_only": true, "limit": 1})).await?;
                let revision = revision_of(&answer["header"]["revision"]);
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
        compare: Value,
        success: Value,
    ) -> Result<(bool, Value, Revision), StorageError> {
        let full = b64(self.full_key(key).as_bytes());
        let mut compare = compare;
        compare["key"] = json!(full);
        let body = json!({"compare": [compare], "success": [success], "failure": [{"request_range": {"key": full}}]});
        let answer = self.caller().call("kv/txn", body).await?;
        let revision = revision_of(&answer["header"]["revision"]);
        Ok((answer["succeeded"].as_bool().unwrap_or(false), answer, revision))
    }

    fn found(&self, answer: &Value) -> Option<KeyValue> {
        let kv = answer.pointer("/responses/0/response_range/kvs/0")?;
        key_value(kv, &self.prefix)
    }
}

/// One etcd request at a time, to whichever endpoint answers.
#[derive(Clone)]
struct Caller {
    http: Client<Https, Full<Bytes>>,
    endpoints: Vec<String>,
    current: Arc<AtomicUsize>,
}

impl Caller {
    /// A request to an endpoint; on a connection failure the next endpoint is tried.
    async fn send(&self, path: &str, body: Value) -> Result<http::Response<hyper::body::Incoming>, StorageError> {
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut last = None;
        for attempt in 0..self.endpoints.len() {
            let at = (self.current.load(Ordering::Relaxed) + attempt) % self.endpoints.len();
            let request = http::Request::post(format!("{}/v3/{path}", self.endpoints[at]))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(bytes.clone()))
                .map_err(|e| remote(e.to_string()))?;
            match self.http.request(request).await {
                Ok(response) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(error) => last = Some(format!("{}: {error}", self.endpoints[at])),
            }
        }
        Err(remote(format!("no etcd endpoint answered ({})", last.unwrap_or_default())))
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, StorageError> {
        let response = self.send(path, body).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| remote(e.to_string()))?.to_bytes();
        let answer: Value =
            serde_json::from_slice(&bytes).map_err(|e| remote(format!("etcd answered {status}: {e}")))?;
        if !status.is_success() {
            let message = answer["message"].as_str().or(answer["error"].as_str()).unwrap_or_default().to_string();
            return Err(remote(format!("etcd: {message}")));
        }
        Ok(answer)
    }
}

fn key_value(kv: &Value, prefix: &str) -> Option<KeyValue> {
    let key = String::from_utf8(unb64(&kv["key"])).ok()?;
    Some(KeyValue {
        key: key.strip_prefix(prefix)?.to_string(),
        value: Bytes::from(unb64(&kv["value"])),
        create_revision: revision_of(&kv["create_revision"]),
        mod_revision: revision_of(&kv["mod_revision"]),
    })
}

/// Every key under `prefix`, at one revision (paged), and that revision.
async fn load(caller: &Caller, prefix: &str) -> Result<(BTreeMap<String, KeyValue>, Revision), StorageError> {
    let (start, end) = if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()))
    };
    let mut data = BTreeMap::new();
    let mut from = start;
    let mut revision = 0;
    loop {
        let mut body = json!({"key": b64(&from), "range_end": b64(&end), "limit": 1000});
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        let answer = caller.call("kv/range", body).await?;
        if revision == 0 {
            revision = revision_of(&answer["header"]["revision"]);
        }
        let kvs = answer["kvs"].as_array().cloned().unwrap_or_default();
        for kv in &kvs {
            if let Some(kv) = key_value(kv, prefix) {
                data.insert(kv.key.clone(), kv);
            }
        }
        if !answer["more"].as_bool().unwrap_or(false) || kvs.is_empty() {
            return Ok((data, revision));
        }
        from = unb64(&kvs[kvs.len() - 1]["key"]);
        from.push(0);
    }
}

/// Follows every change of etcd after the index's revision into the index, reconnecting when
/// the stream ends; after a compaction it missed, reloads (watchers then relist).
async fn follow(caller: Caller, prefix: String, shared: Shared) {
    let mut delay = Duration::from_millis(100);
    loop {
        let start = shared.current_revision() + 1;
        let body = json!({"create_request": {"key": b64(b"\0"), "range_end": b64(b"\0"),
            "start_revision": start.to_string(), "prev_kv": true, "progress_notify": true}});
        match caller.send("watch", body).await {
            Ok(response) if response.status().is_success() => {
                delay = Duration::from_millis(100);
                let mut body = response.into_body();
                let mut buffer = Vec::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(chunk) = frame.into_data() else { continue };
                    buffer.extend_from_slice(&chunk);
                    while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        let Ok(message) = serde_json::from_slice::<Value>(&line) else { continue };
                        if apply(&message["result"], &prefix, &shared) == Flow::Reload {
                            reload(&caller, &prefix, &shared).await;
                            break;
                        }
                    }
                }
            }
            Ok(response) => tracing::warn!(status = %response.status(), "etcd refused the watch; retrying"),
            Err(error) => tracing::warn!(%error, "etcd watch failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[derive(PartialEq)]
enum Flow {
    Continue,
    Reload,
}

/// Applies one watch response: its events, by revision, under the prefix; the revision otherwise.
fn apply(result: &Value, prefix: &str, shared: &Shared) -> Flow {
    if revision_of(&result["compact_revision"]) > 0 {
        return Flow::Reload;
    }
    let mut batch: Vec<Event> = Vec::new();
    let mut at = 0;
    for event in result["events"].as_array().into_iter().flatten() {
        let revision = revision_of(&event["kv"]["mod_revision"]);
        if revision != at && at != 0 {
            publish(shared, std::mem::take(&mut batch), at);
        }
        at = revision;
        let prev = event.get("prev_kv").and_then(|kv| key_value(kv, prefix));
        let deleted = event["type"] == "DELETE";
        let kv = if deleted {
            prev.clone().map(|p| KeyValue { mod_revision: revision, ..p })
        } else {
            key_value(&event["kv"], prefix)
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
    let header = revision_of(&result["header"]["revision"]);
    let confirms_creation = result["created"].as_bool() == Some(true);
    if !confirms_creation && result["events"].as_array().is_none_or(Vec::is_empty) && header > shared.current_revision()
    {
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

async fn reload(caller: &Caller, prefix: &str, shared: &Shared) {
    loop {
        match load(caller, prefix).await {
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
        let put = json!({"request_put": {"key": b64(self.full_key(key).as_bytes()), "value": b64(&value)}});
        let (succeeded, _, revision) =
            self.transaction(key, json!({"target": "CREATE", "result": "EQUAL", "create_revision": "0"}), put).await?;
        if !succeeded {
            return Err(StorageError::AlreadyExists { key: key.to_string() });
        }
        self.caught_up(revision).await?;
        Ok(KeyValue { key: key.to_string(), value, create_revision: revision, mod_revision: revision })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue, StorageError> {
        let put =
            json!({"request_put": {"key": b64(self.full_key(key).as_bytes()), "value": b64(&value), "prev_kv": true}});
        let compare = json!({"target": "MOD", "result": "EQUAL", "mod_revision": expected.to_string()});
        let (succeeded, answer, revision) = self.transaction(key, compare, put).await?;
        if !succeeded {
            return Err(match self.found(&answer) {
                None => StorageError::NotFound { key: key.to_string() },
                Some(kv) => StorageError::Conflict { key: key.to_string(), expected, actual: kv.mod_revision },
            });
        }
        let created = answer
            .pointer("/responses/0/response_put/prev_kv")
            .and_then(|kv| key_value(kv, &self.prefix))
            .map_or(revision, |kv| kv.create_revision);
        self.caught_up(revision).await?;
        Ok(KeyValue { key: key.to_string(), value, create_revision: created, mod_revision: revision })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StorageError> {
        let delete = json!({"request_delete_range": {"key": b64(self.full_key(key).as_bytes()), "prev_kv": true}});
        let compare = match expected {
            Some(expected) => json!({"target": "MOD", "result": "EQUAL", "mod_revision": expected.to_string()}),
            None => json!({"target": "CREATE", "result": "GREATER", "create_revision": "0"}),
        };
        let (succeeded, answer, revision) = self.transaction(key, compare, delete).await?;
        if !succeeded {
            return Err(match (self.found(&answer), expected) {
                (Some(kv), Some(expected)) => {
                    StorageError::Conflict { key: key.to_string(), expected, actual: kv.mod_revision }
                }
                _ => StorageError::NotFound { key: key.to_string() },
            });
        }
        let prev = answer
            .pointer("/responses/0/response_delete_range/prev_kvs/0")
            .and_then(|kv| key_value(kv, &self.prefix))
            .ok_or_else(|| StorageError::NotFound { key: key.to_string() })?;
        self.caught_up(revision).await?;
        Ok(KeyValue { mod_revision: revision, ..prev })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StorageError> {
        self.shared.watch(prefix, after)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StorageError> {
        match self.caller().call("kv/compaction", json!({"revision": revision.to_string()})).await {
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
        let kv = |key: &str, value: &str, create: u64, modified: u64| {
            json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes()), "create_revision": create.to_string(),
                "mod_revision": modified.to_string()})
        };
        let result = json!({"header": {"revision": "4"}, "events": [
            {"kv": kv("p/a", "1", 2, 2)},
            {"kv": kv("other", "x", 3, 3)},
            {"type": "DELETE", "kv": {"key": b64(b"p/a"), "mod_revision": "4"}, "prev_kv": kv("p/a", "1", 2, 2)}]});
        assert!(apply(&result, "p/", &shared) == Flow::Continue);
        assert_eq!(shared.current_revision(), 4, "a change outside the prefix moves the revision on");
        assert!(shared.get("a").is_none(), "created then deleted");
        let listed = shared.list(&ListOptions { prefix: "a".into(), revision: Some(2), ..Default::default() }).unwrap();
        assert_eq!(listed.items[0].value, Bytes::from("1"), "history keeps the put");
        // The watch's confirmation says where etcd is, not that its events have arrived.
        let created = json!({"header": {"revision": "7"}, "created": true});
        apply(&created, "p/", &shared);
        assert_eq!(shared.current_revision(), 4, "the confirmation of the watch is no progress");
        let progress = json!({"header": {"revision": "9"}});
        apply(&progress, "p/", &shared);
        assert_eq!(shared.current_revision(), 9);
        assert!(apply(&json!({"compact_revision": "5"}), "p/", &shared) == Flow::Reload);
    }
}
