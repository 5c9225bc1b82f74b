//! Acknowledged writes survive `kill -9`, and a clean restart keeps every object.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ApiServerProcess;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"payload": "x".repeat(512)}}))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServerProcess::start(dir.path(), &[]);
    let api: Api<ConfigMap> = Api::namespaced(client(&server.kubeconfig).await, "default");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let api = api.clone();
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{writer}-{i}");
                match api.create(&PostParams::default(), &configmap(&name)).await {
                    Ok(_) => acknowledged.lock().unwrap().push(name),
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the burst run, then kill the server in the middle of it.
    while acknowledged.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    for writer in writers {
        let _ = tokio::time::timeout(Duration::from_secs(30), writer).await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);

    let restarted = ApiServerProcess::start(dir.path(), &[]);
    let api: Api<ConfigMap> = Api::namespaced(client(&restarted.kubeconfig).await, "default");
    let stored: std::collections::HashSet<String> =
        api.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|c| c.metadata.name).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after kill -9, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let restored = api.get(&acknowledged[0]).await.unwrap();
    assert_eq!(restored.data.unwrap()["payload"].len(), 512);
    // Writes keep working, with resourceVersions beyond everything stored before.
    let before: u64 = restored.metadata.resource_version.unwrap().parse().unwrap();
    let after = api.create(&PostParams::default(), &configmap("after-restart")).await.unwrap();
    assert!(after.metadata.resource_version.unwrap().parse::<u64>().unwrap() > before);
    let status = restarted.stop();
    assert!(status.success(), "SIGTERM stops cleanly: {status}");
}
