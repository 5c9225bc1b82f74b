//! `vkube host`: a simulated host cluster (API server + nodes, scheduler, kubelet, endpoints).

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

/// Flags of `vkube host`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the host's store, certificates and host.kubeconfig (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Address the host API server listens on.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub listen: SocketAddr,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub nodes: u32,
}

/// The log of a simulated container: what the simulated kubelet did with it.
pub struct SimulatedLogs;

impl PodLogs for SimulatedLogs {
    fn logs(
        &self,
        namespace: &str,
        name: &str,
        query: &str,
    ) -> BoxFuture<'static, ApiResult<BoxStream<'static, Result<Bytes, std::io::Error>>>> {
        let container = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("container="))
            .map(String::from)
            .unwrap_or_else(|| "main".into());
        let lines = format!(
            "{now} simulated container {container} of pod {namespace}/{name} started on a vkube simulated node\n{now} simulated container {container} is running\n",
            now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        );
        Box::pin(async move {
            let stream: BoxStream<'static, Result<Bytes, std::io::Error>> =
                Box::pin(futures::stream::once(async move { Ok(Bytes::from(lines)) }));
            Ok(stream)
        })
    }
}

/// Runs the simulated host until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(&args.dir);
    config.listen = args.listen;
    config.cluster_name = "vkube-host".into();
    let server = vkube_apiserver::start(config, Some(Arc::new(SimulatedLogs)))
        .await
        .with_context(|| format!("starting the host API server in {}", args.dir.display()))?;
    let kubeconfig = server.admin_kubeconfig("vkube-host").context("the host API server has no certificates")?;
    let path = args.dir.join("host.kubeconfig");
    write_private(&path, &kubeconfig).with_context(|| format!("writing {}", path.display()))?;
    let client = super::client_from_kubeconfig(&kubeconfig).await?;
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
