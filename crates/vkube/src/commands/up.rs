//! `vkube up`: a simulated host and a virtual cluster on it, in one process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use vkube_apiserver::ServerConfig;
use vkube_apiserver::pki::write_private;
use vkube_simulator::SimulatorConfig;

use super::serve::VirtualCluster;

/// Flags of `vkube up`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Name of the virtual cluster.
    #[arg(long)]
    pub name: Option<String>,
    /// vcluster.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for everything (host/ and NAME/ below it).
    #[arg(long, default_value = ".vkube")]
    pub dir: PathBuf,
    /// Number of simulated host nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub nodes: u32,
    /// Whether `kubectl exec` runs commands in the simulated host's pod sandboxes (local processes
    /// in a folder per pod, as the user running vkube; not a container).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub exec: String,
    /// Address of the virtual API server.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Address of the simulated host's API server.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub host_listen: SocketAddr,
    /// A kubelet API for the virtual cluster's pods (as a kind node's port 10250 is reachable);
    /// `off` for none. A port already taken is left out with a warning.
    #[arg(long, default_value = "127.0.0.1:10250")]
    pub kubelet_listen: String,
}

/// Runs host and virtual cluster until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let name = args.name.clone();
    let probe = VirtualCluster::resolve(args.config.as_deref(), name.clone(), None, PathBuf::new(), Some(args.listen))?;
    let cluster_name = probe.config.name().to_string();
    let mut cluster =
        VirtualCluster::resolve(args.config.as_deref(), name, None, args.dir.join(&cluster_name), Some(args.listen))?;
    cluster.kubelet_listen = match args.kubelet_listen.as_str() {
        "off" => None,
        address => Some(address.parse().with_context(|| {
            format!("--kubelet-listen {address:?}: give an address such as 127.0.0.1:10250, or off")
        })?),
    };

    let host_dir = args.dir.join("host");
    let mut host_config = ServerConfig::new(&host_dir);
    host_config.listen = args.host_listen;
    host_config.cluster_name = "vkube-host".into();
    let kubelet = super::host::SimulatedKubelet::new(host_dir.join("sandboxes"), args.exec == "on");
    let host_server = vkube_apiserver::start_with(host_config, kubelet.hooks())
        .await
        .with_context(|| format!("starting the host API server in {}", host_dir.display()))?;
    let host_kubeconfig =
        host_server.admin_kubeconfig("vkube-host").context("the host API server has no certificates")?;
    let host_path = host_dir.join("host.kubeconfig");
    write_private(&host_path, &host_kubeconfig).with_context(|| format!("writing {}", host_path.display()))?;
    let host = super::client_from_kubeconfig(&host_kubeconfig).await?;
    let _ = kubelet.client.set(host.clone());
    let simulation = tokio::spawn(vkube_simulator::run(
        host.clone(),
        SimulatorConfig { nodes: args.nodes as usize, ..SimulatorConfig::default() },
    ));

    let serving = super::serve::start(&cluster, host).await?;
    say!("host kubeconfig: {}", host_path.display());
    say!("virtual kubeconfig: {}", serving.kubeconfig.display());
    say!("virtual cluster {cluster_name} on {}, host on {}", serving.server.url, host_server.url);
    super::serve::announce_kubelet(&serving.server);
    super::announce_ready();
    super::shutdown_signal().await;
    say!("shutting down");
    serving.stop().await;
    simulation.abort();
    host_server.shutdown().await;
    Ok(())
}
