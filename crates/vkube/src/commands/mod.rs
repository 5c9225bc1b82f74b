//! One module per CLI command: an `Args` struct and a `run` function.

pub mod apiserver;
pub mod config;
pub mod host;
pub mod mappings;
pub mod serve;
pub mod up;

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// A kube client for a kubeconfig document (installs the rustls crypto provider first).
pub async fn client_from_kubeconfig(text: &str) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Prints `ready` on stdout and flushes it; a closed stdout is ignored (the cluster keeps running).
pub fn announce_ready() {
    use std::io::Write as _;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}
