//! One conformance suite, run against every backend: the behaviour the API server relies on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vkube_store::{EventKind, ListOptions, MemoryStorage, SqliteStorage, Storage, StorageError};

fn v(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

async fn create_get_and_revisions(store: Arc<dyn Storage>) {
    let start = store.current_revision();
    let a = store.create("/a/1", v("one")).await.unwrap();
    assert_eq!(a.create_revision, start + 1);
    assert_eq!(a.mod_revision, start + 1);
    assert_eq!(store.current_revision(), start + 1);
    let got = store.get("/a/1").await.unwrap().unwrap();
    assert_eq!(got, a);
    assert!(store.get("/a/2").await.unwrap().is_none());
    match store.create("/a/1", v("again")).await {
        Err(StorageError::AlreadyExists { key }) => assert_eq!(key, "/a/1"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // A failed write does not consume a revision.
    assert_eq!(store.current_revision(), start + 1);
}

async fn compare_and_swap(store: Arc<dyn Storage>) {
    let a = store.create("/cas/x", v("1")).await.unwrap();
    let b = store.update("/cas/x", v("2"), a.mod_revision).await.unwrap();
    assert_eq!(b.create_revision, a.create_revision);
    assert!(b.mod_revision > a.mod_revision);
    match store.update("/cas/x", v("3"), a.mod_revision).await {
        Err(StorageError::Conflict { expected, actual, .. }) => {
            assert_eq!(expected, a.mod_revision);
            assert_eq!(actual, b.mod_revision);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("/cas/x").await.unwrap().unwrap().value, v("2"));
    assert!(matches!(store.update("/cas/missing", v("1"), 1).await, Err(StorageError::NotFound { .. })));
    assert!(matches!(store.delete("/cas/x", Some(a.mod_revision)).await, Err(StorageError::Conflict { .. })));
    let deleted = store.delete("/cas/x", Some(b.mod_revision)).await.unwrap();
    assert_eq!(deleted.value, v("2"));
    assert_eq!(deleted.mod_revision, store.current_revision());
    assert!(store.get("/cas/x").await.unwrap().is_none());
    assert!(matches!(store.delete("/cas/x", None).await, Err(StorageError::NotFound { .. })));
}

async fn list_prefix_pagination_and_history(store: Arc<dyn Storage>) {
    for name in ["b", "a", "c", "d"] {
        store.create(&format!("/list/ns1/{name}"), v(name)).await.unwrap();
    }
    store.create("/list/ns10/z", v("other")).await.unwrap();
    store.create("/lisu/x", v("outside")).await.unwrap();
    let all = store.list(ListOptions { prefix: "/list/ns1/".into(), ..Default::default() }).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/list/ns1/a", "/list/ns1/b", "/list/ns1/c", "/list/ns1/d"]);
    assert_eq!(all.remaining, 0);
    assert_eq!(store.count("/list/").await.unwrap(), 5);

    let page1 =
        store.list(ListOptions { prefix: "/list/ns1/".into(), limit: Some(3), ..Default::default() }).await.unwrap();
    assert_eq!(page1.items.len(), 3);
    assert_eq!(page1.remaining, 1);
    let at = page1.revision;
    // Writes between pages must not show up in later pages of the same snapshot.
    store.create("/list/ns1/e", v("e")).await.unwrap();
    let d = store.get("/list/ns1/d").await.unwrap().unwrap();
    store.update("/list/ns1/d", v("d2"), d.mod_revision).await.unwrap();
    store.delete("/list/ns1/a", None).await.unwrap();
    let page2 = store
        .list(ListOptions {
            prefix: "/list/ns1/".into(),
            start_after: Some(page1.items.last().unwrap().key.clone()),
            limit: Some(3),
            revision: Some(at),
        })
        .await
        .unwrap();
    assert_eq!(page2.revision, at);
    let values: Vec<_> = page2.items.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(values, [v("d")]);
    assert_eq!(page2.remaining, 0);
    // The whole snapshot at `at` still contains the deleted key.
    let snapshot = store
        .list(ListOptions { prefix: "/list/ns1/".into(), revision: Some(at), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(snapshot.items.len(), 4);
    assert_eq!(snapshot.items[0].value, v("a"));
    // The latest state reflects the writes.
    let latest = store.list(ListOptions { prefix: "/list/ns1/".into(), ..Default::default() }).await.unwrap();
    let values: Vec<_> = latest.items.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(values, [v("b"), v("c"), v("d2"), v("e")]);
    assert!(matches!(
        store.list(ListOptions { revision: Some(latest.revision + 100), ..Default::default() }).await,
        Err(StorageError::FutureRevision { .. })
    ));
}

async fn watch_from_revision(store: Arc<dyn Storage>) {
    let start = store.current_revision();
    let mut watcher = store.watch("/w/", start).unwrap();
    let a = store.create("/w/a", v("1")).await.unwrap();
    store.create("/x/ignored", v("1")).await.unwrap();
    let a2 = store.update("/w/a", v("2"), a.mod_revision).await.unwrap();
    store.delete("/w/a", None).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(5), watcher.next_batch())
            .await
            .expect("watch event in time")
            .unwrap();
        events.extend(batch);
    }
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].prev, None);
    assert_eq!(events[1].kind, EventKind::Put);
    assert_eq!(events[1].prev.as_ref().unwrap().value, v("1"));
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(events[2].kv.value, v("2"));
    assert!(events[2].revision() > a2.mod_revision);
    // A watcher started later at an older revision replays the same history.
    let mut replay = store.watch("/w/", a.mod_revision).unwrap();
    let batch = replay.next_batch().await.unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[0].kv.value, v("2"));
}

async fn compaction(store: Arc<dyn Storage>) {
    let a = store.create("/c/a", v("1")).await.unwrap();
    let b = store.update("/c/a", v("2"), a.mod_revision).await.unwrap();
    store.compact(b.mod_revision).await.unwrap();
    assert!(matches!(store.watch("/c/", a.mod_revision), Err(StorageError::Compacted { .. })));
    assert!(matches!(
        store.list(ListOptions { prefix: "/c/".into(), revision: Some(a.mod_revision), ..Default::default() }).await,
        Err(StorageError::Compacted { .. })
    ));
    assert!(store.watch("/c/", b.mod_revision).is_ok());
    assert_eq!(store.get("/c/a").await.unwrap().unwrap().value, v("2"));
}

async fn concurrent_writers(store: Arc<dyn Storage>) {
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..50 {
                let kv = store.create(&format!("/conc/{writer}/{i}"), v("x")).await.unwrap();
                revisions.push(kv.mod_revision);
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800, "every write gets its own revision");
    assert_eq!(store.count("/conc/").await.unwrap(), 800);
    // A counter incremented with compare-and-swap by racing writers loses no increment.
    store.create("/conc-counter", v("0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                loop {
                    let cur = store.get("/conc-counter").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    match store.update("/conc-counter", v(&(n + 1).to_string()), cur.mod_revision).await {
                        Ok(_) => break,
                        Err(StorageError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.get("/conc-counter").await.unwrap().unwrap().value, v("160"));
}

/// What admission reads (`get_recent`, `list_recent`) includes this store's own writes at once
/// (a write returns only once the store's copy has it) and leaves out what is deleted.
async fn recent_reads_see_own_writes(store: Arc<dyn Storage>) {
    assert!(store.get_recent("/recent/ns/a").await.unwrap().is_none());
    let written = store.create("/recent/ns/a", v("one")).await.unwrap();
    let read = store.get_recent("/recent/ns/a").await.unwrap().unwrap();
    assert_eq!((read.value, read.mod_revision), (v("one"), written.mod_revision));
    store.create("/recent/ns/b", v("two")).await.unwrap();
    let listed = store.list_recent(ListOptions { prefix: "/recent/ns/".into(), ..Default::default() }).await.unwrap();
    assert_eq!(listed.items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["/recent/ns/a", "/recent/ns/b"]);
    store.delete("/recent/ns/a", None).await.unwrap();
    assert!(store.get_recent("/recent/ns/a").await.unwrap().is_none());
    let listed = store.list_recent(ListOptions { prefix: "/recent/ns/".into(), ..Default::default() }).await.unwrap();
    assert_eq!(listed.items.len(), 1);
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_get_and_revisions() {
                let (s, _g) = $make;
                super::create_get_and_revisions(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compare_and_swap() {
                let (s, _g) = $make;
                super::compare_and_swap(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_prefix_pagination_and_history() {
                let (s, _g) = $make;
                super::list_prefix_pagination_and_history(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn recent_reads_see_own_writes() {
                let (s, _g) = $make;
                super::recent_reads_see_own_writes(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_from_revision() {
                let (s, _g) = $make;
                super::watch_from_revision(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compaction() {
                let (s, _g) = $make;
                super::compaction(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_writers() {
                let (s, _g) = $make;
                super::concurrent_writers(s).await
            }
        }
    };
}

suite!(memory, (Arc::new(MemoryStorage::new()) as Arc<dyn Storage>, ()));
suite!(sqlite, {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStorage::open(&dir.path().join("state.db")).unwrap();
    (Arc::new(store) as Arc<dyn Storage>, dir)
});

use vkube_store::testing::Etcd;

suite!(etcd, {
    let etcd = Etcd::start();
    let store = etcd.store("/vkube/").await;
    (Arc::new(store) as Arc<dyn Storage>, etcd)
});

/// Two stores on one etcd (two API server replicas): each reads what the other wrote, at once,
/// and sees its changes in watches; keys of another prefix are not theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_replicas_read_each_others_writes() {
    let etcd = Etcd::start();
    let (a, b) = (etcd.store("/vc1/").await, etcd.store("/vc1/").await);
    let other = etcd.store("/vc2/").await;
    let mut watcher = b.watch("/k/", b.current_revision()).unwrap();
    let written = a.create("/k/x", v("1")).await.unwrap();
    assert_eq!(b.get("/k/x").await.unwrap().unwrap(), written, "a read after another replica's write sees it");
    let batch = tokio::time::timeout(Duration::from_secs(5), watcher.next_batch()).await.unwrap().unwrap();
    assert_eq!(batch[0].kv, written);
    let updated = b.update("/k/x", v("2"), written.mod_revision).await.unwrap();
    assert!(matches!(a.update("/k/x", v("3"), written.mod_revision).await, Err(StorageError::Conflict { .. })));
    assert_eq!(a.get("/k/x").await.unwrap().unwrap(), updated);
    assert!(other.get("/k/x").await.unwrap().is_none(), "another prefix is another cluster");
    // The revision is etcd's: a write under another prefix moves every replica's revision on.
    let elsewhere = other.create("/k/y", v("1")).await.unwrap();
    a.get("/k/x").await.unwrap();
    assert!(a.current_revision() >= elsewhere.mod_revision);
    // A new replica loads what is there.
    let c = etcd.store("/vc1/").await;
    assert_eq!(c.get("/k/x").await.unwrap().unwrap(), updated);
}

/// etcd killed and started again under a running store: once etcd answers again, the store
/// writes again (no restart of vkube), and its watch carries on where it was: every change
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_carries_on_after_etcd_restarts() {
    let mut etcd = Etcd::start();
    let store = etcd.store("/vc1/").await;
    let mut watcher = store.watch("/k/", store.current_revision()).unwrap();
    let before = store.create("/k/1", v("before")).await.unwrap();
    tokio::task::block_in_place(|| etcd.restart());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        match store.create("/k/2", v("after")).await {
            Ok(kv) => break kv,
            // A create etcd applied but whose answer was lost.
            Err(StorageError::AlreadyExists { .. }) => break store.get("/k/2").await.unwrap().unwrap(),
            Err(error) => assert!(std::time::Instant::now() < deadline, "no write 60 s after the restart: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(after.mod_revision > before.mod_revision);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(30), watcher.next_batch()).await.unwrap().unwrap();
        seen.extend(batch.into_iter().map(|e| (e.kv.key, e.kv.value)));
    }
    assert_eq!(seen, [("/k/1".to_string(), v("before")), ("/k/2".to_string(), v("after"))]);
    assert_eq!(store.get("/k/1").await.unwrap().unwrap(), before, "a consistent read after the restart");
}

/// An etcd that serves TLS and requires client certificates: vkube connects with the CA and a
/// client certificate, and is refused without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    use vkube_store::{EtcdConfig, EtcdStorage, testing::Tls};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>, name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_path, key_path) = (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    };
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    // etcd's JSON gateway dials etcd's gRPC side with the server's certificate: it must be good
    // for client authentication too (as etcd's own guides issue them).
    let (server_cert, server_key) = issue(
        vec!["127.0.0.1".into(), "localhost".into()],
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        "server",
    );
    let (client_cert, client_key) = issue(vec!["vkube".into()], vec![ExtendedKeyUsagePurpose::ClientAuth], "client");
    let etcd = tokio::task::block_in_place(|| {
        Etcd::start_tls(&Tls { ca: ca_path.clone(), cert: server_cert, key: server_key })
    });
    assert!(etcd.url.starts_with("https://"));
    let config = EtcdConfig {
        endpoints: vec![etcd.url.clone()],
        prefix: "/tls/".into(),
        ca_file: Some(ca_path.clone()),
        cert_file: Some(client_cert),
        key_file: Some(client_key),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let store = loop {
        match EtcdStorage::connect(config.clone()).await {
            Ok(store) => break store,
            Err(error) => assert!(std::time::Instant::now() < deadline, "etcd over TLS not ready: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let written = store.create("/k", v("secret")).await.unwrap();
    assert_eq!(store.get("/k").await.unwrap().unwrap(), written);
    let mut watcher = store.watch("/", written.mod_revision).unwrap();
    let updated = store.update("/k", v("2"), written.mod_revision).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), watcher.next_batch()).await.unwrap().unwrap();
    assert_eq!(batch[0].kv, updated, "the watch runs over TLS too");
    // Without a client certificate etcd refuses the connection.
    let anonymous = EtcdConfig { cert_file: None, key_file: None, ..config.clone() };
    let refused = EtcdStorage::connect(anonymous).await;
    assert!(refused.is_err(), "etcd requires a client certificate");
    // Without the CA, vkube does not trust etcd's certificate.
    let untrusting = EtcdConfig { ca_file: None, ..config };
    assert!(EtcdStorage::connect(untrusting).await.is_err(), "an unknown CA is not trusted");
}

/// Durable-only: state and the revision counter survive reopening.
#[tokio::test]
async fn sqlite_reopen_keeps_data_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (rev, kv) = {
        let store = SqliteStorage::open(&path).unwrap();
        let kv = store.create("/p/a", v("1")).await.unwrap();
        store.create("/p/b", v("2")).await.unwrap();
        store.delete("/p/b", None).await.unwrap();
        (store.current_revision(), kv)
    };
    let store = SqliteStorage::open(&path).unwrap();
    assert_eq!(store.current_revision(), rev);
    assert_eq!(store.get("/p/a").await.unwrap().unwrap(), kv);
    assert!(store.get("/p/b").await.unwrap().is_none());
    let next = store.create("/p/c", v("3")).await.unwrap();
    assert_eq!(next.mod_revision, rev + 1, "revisions continue after a restart");
    // History from before the restart is gone: watchers must relist.
    assert!(matches!(store.watch("/p/", rev - 1), Err(StorageError::Compacted { .. })));
}
