//! Listening: TLS (HTTP/1.1 and HTTP/2 via ALPN) with client-certificate and bearer-token
//! authentication, or plain HTTP when explicitly asked for; start-up and clean shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::catalog::Catalog;
use crate::http::{AppState, Identity, PodLogs, handle};
use crate::pki::{Pki, PkiError};
use crate::registry::Registry;
use vkube_store::{MemoryStorage, SqliteStorage, Storage};

/// How to start an API server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Holds `store.db` and `pki/`. Required unless `memory` is set.
    pub dir: PathBuf,
    /// Where to listen (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Serve plain HTTP and accept anonymous requests (tests and demos only).
    pub plain_http: bool,
    /// Keep everything in memory instead of `dir/store.db`.
    pub memory: bool,
    /// Keep everything in this etcd instead of `dir/store.db` (`dir` still holds `pki/`).
    pub etcd: Option<vkube_store::EtcdConfig>,
    /// The minor version `/version` reports (it selects kubectl's dispatcher target).
    pub minor: u32,
    /// Extra names/IPs for the serving certificate.
    pub sans: Vec<String>,
    /// Interval of watch bookmarks.
    pub bookmark_interval: Duration,
    /// How long history is kept: every interval the store forgets revisions older than the
    /// previous tick (upstream compacts etcd every 5 minutes the same way), so resource
    /// versions and continue tokens older than this expire (`410 Gone`).
    pub compaction_interval: Duration,
    /// Name used for the cluster in kubeconfigs.
    pub cluster_name: String,
    /// Where a kubelet API for this cluster's pods listens (`crate::kubelet`), if anywhere; a
    /// port already taken leaves it out with a warning.
    pub kubelet_listen: Option<SocketAddr>,
}

impl ServerConfig {
    /// Defaults for a server keeping its state in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            dir: dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            plain_http: false,
            memory: false,
            etcd: None,
            minor: 33,
            sans: Vec::new(),
            bookmark_interval: Duration::from_secs(60),
            compaction_interval: Duration::from_secs(300),
            cluster_name: "vkube".into(),
            kubelet_listen: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("cannot open the store in {dir}")]
    Store {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: vkube_store::StorageError,
    },
    /// The etcd store could not be reached or loaded.
    #[error("cannot use etcd at {endpoints}")]
    Etcd {
        /// The endpoints.
        endpoints: String,
        /// The cause.
        #[source]
        source: vkube_store::StorageError,
    },
    /// The directory could not be created or written.
    #[error("cannot use directory {dir}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be prepared.
    #[error("cannot prepare certificates")]
    Pki(#[from] PkiError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bootstrapping the default namespaces failed.
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT` (or `http://`).
    pub url: String,
    /// The certificates (None for plain HTTP).
    pub pki: Option<Pki>,
    /// Shared state (registry, catalog).
    pub state: Arc<AppState>,
    /// Where the kubelet API listens, when it does.
    pub kubelet_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// A kubeconfig for the admin (client certificate), or None for plain HTTP.
    pub fn admin_kubeconfig(&self, cluster: &str) -> Option<String> {
        self.pki.as_ref().map(|pki| pki.admin_kubeconfig(&self.url, cluster))
    }

    /// The admin bearer token, if TLS is on.
    pub fn admin_token(&self) -> Option<String> {
        self.pki.as_ref().map(|pki| pki.admin_token.clone())
    }

    /// Stops accepting, closes every connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Ways a server delegates work to whoever embeds it.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Source of `pods/log`.
    pub pod_logs: Option<Arc<dyn PodLogs>>,
    /// Runner of `pods/exec` and `pods/attach` sessions.
    pub pod_streams: Option<crate::streams::SharedPodStreams>,
    /// What `pods/proxy`, `services/proxy` and `nodes/proxy` reach.
    pub proxies: Option<crate::proxy::SharedProxies>,
    /// The source of `metrics.k8s.io` (`kubectl top`); the group is served only with one.
    pub resource_metrics: Option<crate::resource_metrics::SharedResourceMetrics>,
    /// Allocator of service addresses.
    pub service_addresses: Option<Arc<dyn crate::registry::ServiceAddresses>>,
    /// More text for `/metrics` (Prometheus text format).
    pub metrics: Option<MetricsSource>,
    /// More `/readyz` checks, by name.
    pub ready_checks: Vec<(String, ReadyCheck)>,
}

/// Produces Prometheus text for `/metrics`.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;
/// One `/readyz` check.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Opens the store, prepares certificates, bootstraps namespaces and starts listening.
pub async fn start(config: ServerConfig, pod_logs: Option<Arc<dyn PodLogs>>) -> Result<RunningServer, ServerError> {
    start_with(config, Hooks { pod_logs, ..Hooks::default() }).await
}

/// [`start`] with every hook.
pub async fn start_with(config: ServerConfig, hooks: Hooks) -> Result<RunningServer, ServerError> {
    let pod_logs = hooks.pod_logs;
    let store: Arc<dyn Storage> = if config.memory {
        Arc::new(MemoryStorage::new())
    } else if let Some(etcd) = &config.etcd {
        let endpoints = etcd.endpoints.join(",");
        Arc::new(
            vkube_store::EtcdStorage::connect(etcd.clone())
                .await
                .map_err(|source| ServerError::Etcd { endpoints, source })?,
        )
    } else {
        std::fs::create_dir_all(&config.dir).map_err(|source| ServerError::Dir { dir: config.dir.clone(), source })?;
        let path = config.dir.join("store.db");
        Arc::new(SqliteStorage::open(&path).map_err(|source| ServerError::Store { dir: config.dir.clone(), source })?)
    };
    let catalog = Catalog::builtin();
    if hooks.resource_metrics.is_some() {
        catalog.add_served(crate::resource_metrics::resource_types());
    }
    let mut registry = Registry::new(store, catalog);
    registry.bookmark_interval = config.bookmark_interval;
    registry.service_addresses = hooks.service_addresses;
    registry.start_background().await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    registry.bootstrap().await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Listen { addr: config.listen, source })?;
    let mut sans = config.sans.clone();
    if !addr.ip().is_unspecified() {
        sans.push(addr.ip().to_string());
    }
    let pki = if config.plain_http { None } else { Some(Pki::load_or_create(&config.dir, &sans)?) };
    let mut tokens = HashMap::new();
    if let Some(pki) = &pki {
        tokens.insert(pki.admin_token.clone(), Identity::new("admin", vec![crate::auth::MASTERS.into()]));
    }
    if let Some(pki) = &pki {
        publish_authentication(&registry, pki).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    }
    let rbac =
        crate::auth::Rbac::start(registry.store.clone()).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
    let state = Arc::new(AppState {
        policies: Default::default(),
        webhooks: Default::default(),
        registry,
        tokens,
        rbac,
        minor: config.minor,
        ready: AtomicBool::new(true),
        allow_anonymous: config.plain_http,
        token_signer: pki.as_ref().and_then(|p| crate::tokens::TokenSigner::from_pkcs8(&p.service_account_key)),
        pki: pki.clone(),
        pod_logs,
        pod_streams: hooks.pod_streams,
        proxies: hooks.proxies,
        resource_metrics: hooks.resource_metrics,
        aggregator: Arc::default(),
        metrics: hooks.metrics,
        ready_checks: hooks.ready_checks,
    });
    state.registry.set_converter(Arc::new(crate::conversion_webhook::WebhookConverter::new(&state)));
    let acceptor = match &pki {
        Some(pki) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config()?))),
        None => None,
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let url = format!("{scheme}://{host}:{}", addr.port());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(crate::aggregation::run(state.clone(), stopped.clone()));
    tokio::spawn(compact_periodically(state.registry.store.clone(), config.compaction_interval, stopped.clone()));
    let mut kubelet_addr = None;
    if let (Some(listen), Some(acceptor)) = (config.kubelet_listen, &acceptor) {
        match TcpListener::bind(listen).await {
            Ok(kubelet) => {
                kubelet_addr = kubelet.local_addr().ok();
                tokio::spawn(accept_loop(
                    kubelet,
                    Some(acceptor.clone()),
                    state.clone(),
                    stopped.clone(),
                    Listener::Kubelet,
                ));
            }
            Err(error) => tracing::warn!(%listen, %error, "the kubelet API cannot listen there; serving without it"),
        }
    }
    let task = tokio::spawn(accept_loop(listener, acceptor, state.clone(), stopped, Listener::Api));
    Ok(RunningServer { addr, url, pki, state, kubelet_addr, stop, task })
}

/// `kube-system/extension-apiserver-authentication`, as kube-apiserver keeps it: the CAs and
/// request-header settings an extension API server (or a kubelet) authenticates callers with.
async fn publish_authentication(registry: &Registry, pki: &Pki) -> crate::ApiResult<()> {
    let rt = registry.catalog.snapshot().get("", "v1", "configmaps").expect("built-in");
    let list = |items: &[&str]| serde_json::to_string(items).unwrap_or_default();
    let data = serde_json::json!({
        "client-ca-file": pki.ca_cert,
        "requestheader-client-ca-file": pki.front_proxy_ca,
        "requestheader-allowed-names": list(&[crate::pki::FRONT_PROXY_CLIENT]),
        "requestheader-username-headers": list(&["X-Remote-User"]),
        "requestheader-group-headers": list(&["X-Remote-Group"]),
        "requestheader-extra-headers-prefix": list(&["X-Remote-Extra-"]),
    });
    let name = "extension-apiserver-authentication";
    let options = crate::registry::WriteOptions { field_manager: "kube-apiserver".into(), ..Default::default() };
    match registry.get(&rt, Some("kube-system"), name).await {
        Ok(mut current) => {
            if current["data"] != data {
                current["data"] = data;
                registry.update(&rt, Some("kube-system"), name, current, "", &options).await?;
            }
        }
        Err(crate::ApiError::NotFound { .. }) => {
            let object = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "kube-system"}, "data": data});
            registry.create(&rt, Some("kube-system"), object, &options).await?;
        }
        Err(error) => return Err(error),
    }
    Ok(())
}

/// Which API a listener serves.
#[derive(Clone, Copy)]
enum Listener {
    Api,
    Kubelet,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
    kind: Listener,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let state = state.clone();
                connections.spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else { return };
                            let identity = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .and_then(|cert| crate::pki::certificate_identity(cert))
                                .map(|(user, groups)| Identity::new(user, groups));
                            serve(TokioIo::new(tls), state, identity, kind).await;
                        }
                        None => serve(TokioIo::new(stream), state, None, kind).await,
                    }
                });
            }
        }
    }
    state.ready.store(false, Ordering::Relaxed);
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn serve<I>(io: I, state: Arc<AppState>, identity: Option<Identity>, kind: Listener)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        let identity = identity.clone();
        async move {
            Ok::<_, std::convert::Infallible>(match kind {
                Listener::Api => handle(state, identity, request).await,
                Listener::Kubelet => crate::kubelet::handle(state, identity, request).await,
            })
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection_with_upgrades(io, service).await;
}

/// Every `interval`, forgets the history before the revision of the previous tick.
async fn compact_periodically(
    store: Arc<dyn vkube_store::Storage>,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut previous: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
        let current = store.current_revision();
        if let Some(revision) = previous
            && let Err(error) = store.compact(revision).await
        {
            tracing::warn!(%error, revision, "compaction failed");
        }
        previous = Some(current);
    }
}
