//! `vkube host`: a simulated host cluster (API server + nodes, scheduler, kubelet, endpoints),
//! or with `--attach KUBECONFIG` only the simulated nodes and kubelet on another cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kube::ResourceExt;
use vkube_apiserver::http::PodLogs;
use vkube_apiserver::pki::write_private;
use vkube_apiserver::streams::{self, PodStreams, Session, StreamRequest};
use vkube_apiserver::{ApiError, ApiResult, ServerConfig};
use vkube_simulator::SimulatorConfig;
use vkube_simulator::kubelet::KubeletServer;
use vkube_simulator::kubelet::logs::{self, LogOptions};

mod metrics_api;

/// Flags of `vkube host`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the host's store, certificates and host.kubeconfig (created if missing).
    #[arg(long, required_unless_present = "attach")]
    pub dir: Option<PathBuf>,
    /// Run only the simulated nodes and kubelet against the cluster this kubeconfig names (any
    /// Kubernetes API server with its own scheduler and controllers), like KWOK.
    #[arg(long, value_name = "KUBECONFIG", conflicts_with = "dir")]
    pub attach: Option<PathBuf>,
    /// Address the host API server listens on.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub listen: SocketAddr,
    /// With --attach: where the simulated kubelet's API (pods' logs) listens; the API server
    /// calls it there. Port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0", requires = "attach")]
    pub kubelet_listen: SocketAddr,
    /// With --attach: the address nodes report, at which the API server reaches the kubelet API
    /// (default: the --kubelet-listen address, 127.0.0.1 when that is unspecified).
    #[arg(long, requires = "attach")]
    pub kubelet_address: Option<std::net::IpAddr>,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub nodes: u32,
    /// Whether `kubectl exec` runs commands in the simulated host's pod sandboxes (local processes
    /// in a folder per pod, as the user running vkube; not a container).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub exec: String,
    /// With --attach: the user the API server calls kubelets as (its kubelet client
    /// certificate's name); exec runs commands only for it, never for someone calling the
    /// kubelet API directly. Repeat for several.
    #[arg(long, default_value = "kube-apiserver-kubelet-client", requires = "attach")]
    pub exec_user: Vec<String>,
}

/// The simulated host's kubelet as its own API server reaches it in-process (vkube's API server
/// calls no kubelet over the network): `pods/log`, and `pods/exec`/`pods/attach` in a sandbox
/// folder per pod under `sandboxes`.
pub struct SimulatedKubelet {
    /// The host's own API (set once the server is up); pods are read through it.
    pub client: std::sync::OnceLock<kube::Client>,
    /// Where exec sandboxes are made.
    pub sandboxes: PathBuf,
    /// Whether exec runs commands at all (`--exec`).
    pub exec: bool,
    /// Attached to another cluster: only nodes named `<prefix>-N` are this kubelet's (metrics
    /// cover them and their pods, not the cluster's other nodes).
    pub node_prefix: Option<String>,
}

impl SimulatedKubelet {
    pub fn new(sandboxes: PathBuf, exec: bool) -> Arc<Self> {
        Arc::new(SimulatedKubelet { client: std::sync::OnceLock::new(), sandboxes, exec, node_prefix: None })
    }

    /// The hooks that make a host API server use this kubelet.
    pub fn hooks(self: &Arc<Self>) -> vkube_apiserver::Hooks {
        vkube_apiserver::Hooks {
            pod_logs: Some(self.clone()),
            pod_streams: Some(self.clone()),
            proxies: Some(self.clone()),
            resource_metrics: Some(self.clone()),
            ..vkube_apiserver::Hooks::default()
        }
    }
}

/// Whether node `name` is one of the simulated `<prefix>-N` (any node without a prefix).
fn owns(prefix: Option<&str>, name: &str) -> bool {
    prefix.is_none_or(|prefix| {
        name.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('-')).is_some_and(|n| n.parse::<u32>().is_ok())
    })
}

impl PodLogs for SimulatedKubelet {
    fn logs(
        &self,
        namespace: &str,
        name: &str,
        query: &str,
    ) -> BoxFuture<'static, ApiResult<BoxStream<'static, Result<Bytes, std::io::Error>>>> {
        let options = LogOptions::from_query(query);
        let result = logs::stream(self.client.get().cloned(), namespace, name, &options)
            .map_err(|error| vkube_apiserver::ApiError::BadRequest(error.0));
        Box::pin(async move { result })
    }
}

impl vkube_apiserver::proxy::Proxies for SimulatedKubelet {
    /// Pods' declared ports answer through their responders (services through the pod their
    /// endpoints name); a simulated node's kubelet serves no proxy.
    fn proxy(
        &self,
        target: vkube_apiserver::proxy::ProxyTarget,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, ApiResult<http::Response<axum::body::Body>>> {
        let client = self.client.get().cloned();
        Box::pin(async move {
            let client = client.ok_or_else(|| ApiError::Unavailable("the simulated kubelet is starting".into()))?;
            let namespace = target.namespace.clone().unwrap_or_default();
            let (pod, port) = match target.resource.as_str() {
                "pods" => {
                    let port = vkube_apiserver::proxy::pod_port(&target.object, target.port.as_deref());
                    (target.object.clone(), port)
                }
                "services" => service_backend(&client, &namespace, &target).await?,
                _ => {
                    return Err(ApiError::Unavailable(format!(
                        "the simulated kubelet of node {:?} serves no proxy",
                        target.name
                    )));
                }
            };
            let port = port.ok_or_else(|| {
                ApiError::Unavailable(format!("no endpoints available for {} {:?}", target.resource, target.name))
            })?;
            let connection = vkube_simulator::kubelet::ports::connect(&pod, port, Some(client.clone()))
                .map_err(|error| ApiError::Unavailable(format!("error trying to reach service: {error}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(connection))
                .await
                .map_err(|e| ApiError::Unavailable(format!("error trying to reach service: {e}")))?;
            tokio::spawn(conn);
            let request = request.map(http_body_util::Full::new);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ApiError::Unavailable(format!("error trying to reach service: {e}")))?;
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(parts, axum::body::Body::new(body)))
        })
    }
}

impl vkube_apiserver::resource_metrics::ResourceMetrics for SimulatedKubelet {
    fn nodes(&self) -> BoxFuture<'static, ApiResult<Vec<serde_json::Value>>> {
        let client = self.client.get().cloned();
        let prefix = self.node_prefix.clone();
        Box::pin(async move {
            let client = client.ok_or_else(|| ApiError::Unavailable("the simulated kubelet is starting".into()))?;
            let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
            let failed = |e: kube::Error| ApiError::Unavailable(format!("reading the simulated nodes: {e}"));
            let pods: Vec<serde_json::Value> = pods
                .list(&Default::default())
                .await
                .map_err(failed)?
                .items
                .iter()
                .map(|p| serde_json::to_value(p).unwrap_or_default())
                .collect();
            let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            Ok(nodes
                .list(&Default::default())
                .await
                .map_err(failed)?
                .items
                .iter()
                .filter(|node| owns(prefix.as_deref(), &node.name_any()))
                .map(|node| {
                    let labels = serde_json::to_value(&node.metadata.labels).unwrap_or_default();
                    vkube_simulator::kubelet::metrics::node_metrics(&node.name_any(), &labels, &pods, &now)
                })
                .collect())
        })
    }

    fn pods(&self, namespace: Option<String>) -> BoxFuture<'static, ApiResult<Vec<serde_json::Value>>> {
        let client = self.client.get().cloned();
        let prefix = self.node_prefix.clone();
        Box::pin(async move {
            let client = client.ok_or_else(|| ApiError::Unavailable("the simulated kubelet is starting".into()))?;
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = match &namespace {
                Some(namespace) => kube::Api::namespaced(client, namespace),
                None => kube::Api::all(client),
            };
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| ApiError::Unavailable(format!("reading the simulated pods: {e}")))?;
            let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
            Ok(list
                .items
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| owns(prefix.as_deref(), n))
                })
                .filter_map(|p| {
                    vkube_simulator::kubelet::metrics::pod_metrics(&serde_json::to_value(p).unwrap_or_default(), &now)
                })
                .collect())
        })
    }
}

/// The pod and port a service's proxy reaches: its endpoints' first ready address with a pod.
async fn service_backend(
    client: &kube::Client,
    namespace: &str,
    target: &vkube_apiserver::proxy::ProxyTarget,
) -> ApiResult<(serde_json::Value, Option<u16>)> {
    use k8s_openapi::api::core::v1::{Endpoints, Pod};
    let unavailable = || ApiError::Unavailable(format!("no endpoints available for service {:?}", target.name));
    let endpoints: kube::Api<Endpoints> = kube::Api::namespaced(client.clone(), namespace);
    let endpoints = endpoints.get_opt(&target.name).await.ok().flatten().ok_or_else(unavailable)?;
    // The service port named (by name or number), or its first.
    let ports = target.object.pointer("/spec/ports").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
    let wanted = match target.port.as_deref() {
        Some(port) => ports.iter().find(|p| {
            p.get("name").and_then(|n| n.as_str()) == Some(port)
                || p.get("port").and_then(|n| n.as_u64()).map(|n| n.to_string()).as_deref() == Some(port)
        }),
        None => ports.first(),
    };
    let port_name = wanted.and_then(|p| p.get("name")).and_then(|n| n.as_str()).unwrap_or_default();
    for subset in endpoints.subsets.unwrap_or_default() {
        let port = subset.ports.iter().flatten().find(|p| p.name.as_deref().unwrap_or_default() == port_name);
        let address = subset
            .addresses
            .iter()
            .flatten()
            .find(|a| a.target_ref.as_ref().is_some_and(|r| r.kind.as_deref() == Some("Pod")));
        if let (Some(port), Some(address)) = (port, address) {
            let name = address.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
            let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
            let pod = pods.get_opt(&name).await.ok().flatten().ok_or_else(unavailable)?;
            return Ok((serde_json::to_value(pod).unwrap_or_default(), u16::try_from(port.port).ok()));
        }
    }
    Err(unavailable())
}

impl PodStreams for SimulatedKubelet {
    fn connect(
        &self,
        pod: &serde_json::Value,
        port: u16,
    ) -> BoxFuture<'static, Result<streams::portforward::Forward, String>> {
        let client = self.client.get().cloned();
        let result =
            vkube_simulator::kubelet::ports::connect(pod, port, client).map(streams::portforward::Forward::plain);
        Box::pin(async move { result })
    }

    fn open(&self, request: StreamRequest) -> BoxFuture<'static, ApiResult<Session>> {
        let client = self.client.get().cloned();
        let (base, exec) = (self.sandboxes.clone(), self.exec);
        Box::pin(async move {
            let client = client.ok_or_else(|| ApiError::Unavailable("the simulated kubelet is starting".into()))?;
            vkube_simulator::kubelet::sessions::open(client, base, exec, request).await.map_err(ApiError::BadRequest)
        })
    }
}

/// Runs the simulated nodes and kubelet on the cluster `kubeconfig` names until SIGINT/SIGTERM.
async fn attach(kubeconfig: &std::path::Path, args: &Args) -> anyhow::Result<()> {
    let nodes = args.nodes;
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading the kubeconfig {} (--attach)", kubeconfig.display()))?;
    let client = super::client_from_kubeconfig(&text).await?;
    let version = client
        .apiserver_version()
        .await
        .with_context(|| format!("reaching the API server of {} (--attach)", kubeconfig.display()))?;
    let mut simulator = SimulatorConfig { nodes: nodes as usize, attached: true, ..SimulatorConfig::default() };
    // Kept until the simulation stops.
    // Exec sandboxes live as long as this process (no state directory when attached).
    let sandboxes = std::env::temp_dir().join(format!("vkube-sandboxes-{}", std::process::id()));
    let started = KubeletServer::start(
        client.clone(),
        args.kubelet_listen,
        args.kubelet_address,
        &simulator.node_prefix,
        sandboxes.clone(),
        args.exec == "on",
        args.exec_user.clone(),
    )
    .await;
    let _kubelet = match started {
        Ok(server) => {
            say!("kubelet API on {}", server.endpoint);
            simulator.kubelet = Some(server.endpoint);
            Some(server)
        }
        Err(error) => {
            say!(
                "warning: no kubelet API, so `kubectl logs`, `exec` and `port-forward` of simulated pods fail: {error}"
            );
            None
        }
    };
    // `kubectl top`: the simulated nodes' and pods' usage as an aggregated metrics API.
    let address = simulator.kubelet.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |e| e.ip());
    let kubelet = Arc::new(SimulatedKubelet {
        client: std::sync::OnceLock::from(client.clone()),
        sandboxes: sandboxes.clone(),
        exec: args.exec == "on",
        node_prefix: Some(simulator.node_prefix.clone()),
    });
    let metrics = match metrics_api::start(&client, address, kubelet).await {
        Ok((served, true)) => {
            say!("metrics API (metrics.k8s.io/v1beta1) on {}", served.endpoint);
            Some(served)
        }
        Ok((_, false)) => {
            say!("the cluster has its own metrics API (APIService v1beta1.metrics.k8s.io): left as it is");
            None
        }
        Err(error) => {
            say!("warning: no metrics API, so `kubectl top` of simulated pods fails: {error:#}");
            None
        }
    };
    let simulation = tokio::spawn(vkube_simulator::run(client.clone(), simulator));
    say!("attached to Kubernetes {} ({nodes} simulated nodes)", version.git_version);
    super::announce_ready();
    let outcome = tokio::select! {
        _ = super::shutdown_signal() => Ok(()),
        result = simulation => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error).context("the simulator stopped"),
            Err(error) => Err(error).context("the simulator crashed"),
        },
    };
    if metrics.is_some() {
        metrics_api::stop(&client).await;
    }
    let _ = std::fs::remove_dir_all(&sandboxes);
    outcome
}

/// Runs the simulated host until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = match (&args.attach, &args.dir) {
        (Some(kubeconfig), _) => return attach(kubeconfig, &args).await,
        (None, Some(dir)) => dir.clone(),
        (None, None) => anyhow::bail!("vkube host needs --dir DIR (a simulated host) or --attach KUBECONFIG"),
    };
    let mut config = ServerConfig::new(&dir);
    config.listen = args.listen;
    config.cluster_name = "vkube-host".into();
    let kubelet = SimulatedKubelet::new(dir.join("sandboxes"), args.exec == "on");
    let server = vkube_apiserver::start_with(config, kubelet.hooks())
        .await
        .with_context(|| format!("starting the host API server in {}", dir.display()))?;
    let kubeconfig = server.admin_kubeconfig("vkube-host").context("the host API server has no certificates")?;
    let path = dir.join("host.kubeconfig");
    write_private(&path, &kubeconfig).with_context(|| format!("writing {}", path.display()))?;
    let client = super::client_from_kubeconfig(&kubeconfig).await?;
    let _ = kubelet.client.set(client.clone());
    let simulator = SimulatorConfig { nodes: args.nodes as usize, ..SimulatorConfig::default() };
    let simulation = tokio::spawn(vkube_simulator::run(client, simulator));
    say!("kubeconfig: {}", path.display());
    say!("listening on {}", server.url);
    super::announce_ready();
    tokio::select! {
        _ = super::shutdown_signal() => {}
        result = simulation => {
            server.shutdown().await;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(error).context("the simulator stopped"),
                Err(error) => Err(error).context("the simulator crashed"),
            };
        }
    }
    say!("shutting down");
    server.shutdown().await;
    Ok(())
}
