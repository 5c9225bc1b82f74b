//! Shared setup of the syncer integration tests: two in-process API servers (host with the
//! simulator, virtual) on 127.0.0.1:0, reached through kube-rs.
#![allow(dead_code)]

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use vkube_syncer::SyncerConfig;
use vkube_translate::Context;

pub async fn server(dir: &std::path::Path) -> (vkube_apiserver::RunningServer, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = vkube_apiserver::ServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = vkube_apiserver::start(config, None).await.unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.admin_kubeconfig("c").unwrap()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap();
    (server, client)
}

pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn syncer_config() -> SyncerConfig {
    SyncerConfig::new(Context::new("vc", "vcluster-vc"))
}

pub fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// A host (API server + simulator), a virtual API server and a running syncer.
pub struct Clusters {
    pub host: kube::Client,
    pub vc: kube::Client,
    pub syncer: tokio::task::JoinHandle<Result<(), vkube_syncer::SyncerError>>,
    pub _servers: (vkube_apiserver::RunningServer, vkube_apiserver::RunningServer),
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Clusters {
    pub async fn start(config: SyncerConfig) -> Clusters {
        Self::start_after(config, |_| async {}).await
    }

    /// Starts, running `setup` against the host before the syncer starts.
    pub async fn start_after<F, Fut>(mut config: SyncerConfig, setup: F) -> Clusters
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let host_dir = tempfile::tempdir().unwrap();
        let virtual_dir = tempfile::tempdir().unwrap();
        let (host_server, host) = server(host_dir.path()).await;
        let (virtual_server, vc) = server(virtual_dir.path()).await;
        tokio::spawn(vkube_simulator::run(host.clone(), vkube_simulator::SimulatorConfig::default()));
        setup(host.clone()).await;
        if config.mappings.is_none() {
            config.mappings = Some(vkube_syncer::MappingStorage(virtual_server.state.registry.store.clone()));
        }
        let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
        let syncer = tokio::spawn(vkube_syncer::run(vc.clone(), host.clone(), config, ready));
        ready_rx.wait_for(|r| *r).await.unwrap();
        Clusters { host, vc, syncer, _servers: (host_server, virtual_server), _dirs: (host_dir, virtual_dir) }
    }
}
