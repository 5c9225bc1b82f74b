//! The `vkube` command: parses arguments, wires the parts together, maps errors to exit codes.

/// Writes a line to stderr, ignoring failure: a closed stderr (a pipe whose reader went away)
/// must not stop a running cluster.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod commands;

use clap::{Parser, Subcommand};

/// Virtual Kubernetes clusters.
#[derive(Parser, Debug)]
#[command(name = "vkube", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a standalone Kubernetes API server on the embedded store.
    Apiserver(commands::apiserver::Args),
    /// Run a simulated host cluster: an API server plus simulated nodes, scheduler and kubelet.
    Host(commands::host::Args),
    /// Run one virtual cluster (API server + syncer) against a host reached by a kubeconfig.
    Serve(commands::serve::Args),
    /// Run a simulated host and a virtual cluster on it, in one process.
    Up(commands::up::Args),
    /// List a virtual cluster's name mappings (virtual ↔ host pairs and what each pod uses).
    Mappings(commands::mappings::Args),
    /// Check, print and explain vcluster.yaml files.
    #[command(subcommand)]
    Config(commands::config::Command),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VKUBE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Apiserver(args) => commands::apiserver::run(args).await,
            Command::Config(command) => commands::config::run(command),
            Command::Mappings(args) => commands::mappings::run(args),
            Command::Host(args) => commands::host::run(args).await,
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Up(args) => commands::up::run(args).await,
        }
    });
    // Background tasks must not keep a stopping process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
