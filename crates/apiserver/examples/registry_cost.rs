//! Measures the in-process cost of registry operations (no HTTP, no TLS), for profiling.
//! `cargo run --release -p vkube-apiserver --example registry_cost`

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use vkube_apiserver::catalog::Catalog;
use vkube_apiserver::registry::{ListParams, Registry, WriteOptions};
use vkube_store::{MemoryStorage, SqliteStorage, Storage};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    for (name, store) in [
        ("memory", Arc::new(MemoryStorage::new()) as Arc<dyn Storage>),
        ("sqlite", Arc::new(SqliteStorage::open(&dir.path().join("s.db")).unwrap()) as Arc<dyn Storage>),
    ] {
        let registry = Registry::new(store, Catalog::builtin());
        registry.bootstrap().await.unwrap();
        let secrets = registry.catalog.snapshot().get("", "v1", "secrets").unwrap();
        let options = WriteOptions { field_manager: "bench".into(), ..Default::default() };
        let payload = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=".repeat(28);
        let n = 5000;
        let t = Instant::now();
        for i in 0..n {
            let body = json!({"metadata": {"name": format!("s{i}"), "labels": {"bench": "yes"}}, "data": {"payload": payload}});
            registry.create(&secrets, Some("default"), body, &options).await.unwrap();
        }
        let per_create = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        let list = registry.list(&secrets, Some("default"), &ListParams::default()).await.unwrap();
        let list_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let bytes = serde_json::to_vec(&list).unwrap();
        let encode_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let raw = registry.list_json(&secrets, Some("default"), &ListParams::default()).await.unwrap();
        let raw_ms = t.elapsed().as_secs_f64() * 1e3;
        println!("{name}: list_json {raw_ms:.1} ms ({} bytes)", raw.len());
        println!(
            "{name}: create {per_create:.1} us; list 5000 {list_ms:.1} ms + encode {encode_ms:.1} ms ({} bytes)",
            bytes.len()
        );
    }
}
