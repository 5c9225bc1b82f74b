//! `vkube apiserver`: a standalone API server on the embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use vkube_apiserver::{ServerConfig, pki::write_private};

/// Flags of `vkube apiserver`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the store, certificates and admin.kubeconfig (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Serve plain HTTP without authentication (never on a shared machine).
    #[arg(long)]
    pub plain_http: bool,
    /// Kubernetes minor version reported by /version (27-33 select the matching kubectl).
    #[arg(long, default_value_t = 33, value_parser = clap::value_parser!(u32).range(20..=40))]
    pub minor: u32,
    /// Extra DNS names or IPs for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_sans: Vec<String>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// Where the state is kept when not in `--dir`'s embedded database.
#[derive(clap::Args, Debug, Default)]
pub struct EtcdArgs {
    /// Keep the state in this etcd (client URLs, comma-separated) instead of the embedded database.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// PEM CA of the etcd servers' certificates.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// PEM client certificate for etcd.
    #[arg(long, requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long, requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Prefix of every key in etcd (several clusters can share one etcd).
    #[arg(long, default_value = "/vkube/")]
    pub etcd_prefix: String,
}

impl EtcdArgs {
    /// The store settings, when an etcd was named.
    pub fn config(&self) -> Option<vkube_store::EtcdConfig> {
        (!self.etcd_endpoints.is_empty()).then(|| vkube_store::EtcdConfig {
            endpoints: self.etcd_endpoints.clone(),
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            prefix: self.etcd_prefix.clone(),
        })
    }
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(&args.dir);
    config.listen = args.listen;
    config.plain_http = args.plain_http;
    config.minor = args.minor;
    config.sans = args.tls_sans;
    config.etcd = args.etcd.config();
    let server = vkube_apiserver::start(config, None)
        .await
        .with_context(|| format!("starting the API server in {}", args.dir.display()))?;
    let kubeconfig_path = args.dir.join("admin.kubeconfig");
    match server.admin_kubeconfig("vkube") {
        Some(kubeconfig) => {
            write_private(&kubeconfig_path, &kubeconfig)
                .with_context(|| format!("writing {}", kubeconfig_path.display()))?;
            say!("kubeconfig: {}", kubeconfig_path.display());
        }
        None => say!("warning: serving plain HTTP without authentication on {}", server.url),
    }
    say!("listening on {}", server.url);
    super::announce_ready();
    super::shutdown_signal().await;
    say!("shutting down");
    server.shutdown().await;
    Ok(())
}
