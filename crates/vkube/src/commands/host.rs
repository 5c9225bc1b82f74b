//! `vkube host`: a simulated host cluster (API server + nodes, scheduler, kubelet, endpoints),
//! or with `--attach KUBECONFIG` only the simulated nodes and kubelet on another cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use vkube_apiserver::http::PodLogs;
use vkube_apiserver::pki::write_private;
use vkube_apiserver::{ApiResult, ServerConfig};
use vkube_simulator::SimulatorConfig;
use vkube_simulator::kubelet::KubeletServer;
use vkube_simulator::kubelet::logs::{self, LogOptions};

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
}

/// `pods/log` of the simulated host's pods, served in-process (vkube's API server calls no kubelet).
#[derive(Default)]
pub struct SimulatedLogs {
    /// The host's own API (set once the server is up); pods are read through it.
    pub client: std::sync::OnceLock<kube::Client>,
}

impl PodLogs for SimulatedLogs {
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
    let _kubelet =
        match KubeletServer::start(client.clone(), args.kubelet_listen, args.kubelet_address, &simulator.node_prefix)
            .await
        {
            Ok(server) => {
                say!("kubelet API on {}", server.endpoint);
                simulator.kubelet = Some(server.endpoint);
                Some(server)
            }
            Err(error) => {
                say!("warning: no kubelet API, so `kubectl logs` of simulated pods fails: {error}");
                None
            }
        };
    let simulation = tokio::spawn(vkube_simulator::run(client, simulator));
    say!("attached to Kubernetes {} ({nodes} simulated nodes)", version.git_version);
    super::announce_ready();
    tokio::select! {
        _ = super::shutdown_signal() => Ok(()),
        result = simulation => match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error).context("the simulator stopped"),
            Err(error) => Err(error).context("the simulator crashed"),
        },
    }
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
    let logs = Arc::new(SimulatedLogs::default());
    let server = vkube_apiserver::start(config, Some(logs.clone()))
        .await
        .with_context(|| format!("starting the host API server in {}", dir.display()))?;
    let kubeconfig = server.admin_kubeconfig("vkube-host").context("the host API server has no certificates")?;
    let path = dir.join("host.kubeconfig");
    write_private(&path, &kubeconfig).with_context(|| format!("writing {}", path.display()))?;
    let client = super::client_from_kubeconfig(&kubeconfig).await?;
    let _ = logs.client.set(client.clone());
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
