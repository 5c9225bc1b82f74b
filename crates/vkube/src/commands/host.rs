//! `vkube host`: a simulated host cluster (API server + nodes, scheduler, kubelet, endpoints),
//! or with `--attach KUBECONFIG` only the simulated nodes and kubelet on another cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
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
    #[arg(long, required_unless_present = "attach")]
    pub dir: Option<PathBuf>,
    /// Run only the simulated nodes and kubelet against the cluster this kubeconfig names (any
    /// Kubernetes API server with its own scheduler and controllers), like KWOK.
    #[arg(long, value_name = "KUBECONFIG", conflicts_with = "dir")]
    pub attach: Option<PathBuf>,
    /// Address the host API server listens on.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub listen: SocketAddr,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=250))]
    pub nodes: u32,
}

/// The log of a simulated container: what the simulated kubelet did with it. With `follow` the
/// stream goes on (a line a second) while the pod runs and ends when it stops or goes away.
#[derive(Default)]
pub struct SimulatedLogs {
    /// The host's own API (set once the server is up); pods are read through it.
    pub client: std::sync::OnceLock<kube::Client>,
}

/// How often a followed simulated container writes a line.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn is_running(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

impl PodLogs for SimulatedLogs {
    fn logs(
        &self,
        namespace: &str,
        name: &str,
        query: &str,
    ) -> BoxFuture<'static, ApiResult<BoxStream<'static, Result<Bytes, std::io::Error>>>> {
        let value = |key: &str| {
            query.split('&').find_map(|pair| pair.strip_prefix(key).and_then(|v| v.strip_prefix('='))).map(String::from)
        };
        let container = value("container").unwrap_or_else(|| "main".into());
        let follow = value("follow").is_some_and(|v| matches!(v.as_str(), "true" | "1" | "True"));
        let now = || jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let lines = format!(
            "{now} simulated container {container} of pod {namespace}/{name} started on a vkube simulated node\n{now} simulated container {container} is running\n",
            now = now(),
        );
        let client = self.client.get().cloned();
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(async move {
            let first = futures::stream::once(async move { Ok(Bytes::from(lines)) });
            let Some(client) = client.filter(|_| follow) else {
                let stream: BoxStream<'static, Result<Bytes, std::io::Error>> = Box::pin(first);
                return Ok(stream);
            };
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, &namespace);
            let ticks = futures::stream::unfold(1u64, move |tick| {
                let (pods, name, container) = (pods.clone(), name.clone(), container.clone());
                async move {
                    tokio::time::sleep(FOLLOW_INTERVAL).await;
                    match pods.get_opt(&name).await {
                        Ok(Some(pod)) if is_running(&pod) => {
                            let line = format!("{} simulated container {container} is running ({tick})\n", now());
                            Some((Ok(Bytes::from(line)), tick + 1))
                        }
                        _ => None,
                    }
                }
            });
            let stream: BoxStream<'static, Result<Bytes, std::io::Error>> = Box::pin(first.chain(ticks));
            Ok(stream)
        })
    }
}

/// Runs the simulated nodes and kubelet on the cluster `kubeconfig` names until SIGINT/SIGTERM.
async fn attach(kubeconfig: &std::path::Path, nodes: u32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(kubeconfig)
        .with_context(|| format!("reading the kubeconfig {} (--attach)", kubeconfig.display()))?;
    let client = super::client_from_kubeconfig(&text).await?;
    let version = client
        .apiserver_version()
        .await
        .with_context(|| format!("reaching the API server of {} (--attach)", kubeconfig.display()))?;
    let simulator = SimulatorConfig { nodes: nodes as usize, attached: true, ..SimulatorConfig::default() };
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
        (Some(kubeconfig), _) => return attach(kubeconfig, args.nodes).await,
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
