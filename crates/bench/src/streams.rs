//! `vkube-bench streams`: what the virtual API server adds to streams. The host (`vkube host`)
//! and the virtual cluster (`vkube serve`) run as separate processes; the same pod is reached
//! through the virtual cluster (virtual API server -> host API server -> simulated kubelet) and
//! through the host directly (host API server -> simulated kubelet):
//!
//! - exec round trip: `exec true` (kube-rs, WebSocket v5), from request to exit status;
//! - port-forward throughput: bytes sent through one forwarded connection to the pod's echo
//!   responder and read back (kube-rs, WebSocket channel form).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::sync::{Clusters, client, stop};

/// `exec true` `rounds` times; the round trips in milliseconds, sorted.
async fn exec_round_trips(pods: &Api<Pod>, name: &str, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut process = pods.exec(name, ["true"], &AttachParams::default().stderr(false)).await?;
        let status = process.take_status().context("exec status")?.await.context("no exec status")?;
        anyhow::ensure!(status.status.as_deref() == Some("Success"), "exec failed: {status:?}");
        process.join().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// MB/s of `megabytes` sent through one forwarded connection to the echo port and read back.
async fn forward_throughput(pods: &Api<Pod>, name: &str, megabytes: usize) -> anyhow::Result<f64> {
    let mut forwarder = pods.portforward(name, &[9000]).await?;
    let stream = forwarder.take_stream(9000).context("no stream for port 9000")?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let total = megabytes << 20;
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            writer.write_all(&chunk).await?;
            sent += chunk.len();
        }
        anyhow::Ok(writer)
    });
    let mut buffer = vec![0u8; 64 * 1024];
    let mut received = 0;
    while received < total {
        let n = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buffer)).await??;
        anyhow::ensure!(n > 0, "the forward closed after {received} bytes");
        received += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(sending.await??);
    forwarder.abort();
    Ok(megabytes as f64 / elapsed)
}

fn median(sorted: &[f64]) -> f64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run(vkube: PathBuf, rounds: usize, megabytes: usize) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let clusters = Clusters::start(&vkube, dir.path(), 1)?;
    let (mut host, mut serve) = (clusters.host, clusters.serve);
    let (vc_dir, host_kubeconfig) = (clusters.vc_dir, clusters.host_kubeconfig);
    let outcome = async {
        let vc = client(&vc_dir.join("vc1.kubeconfig")).await?;
        let host_client = client(&host_kubeconfig).await?;
        let virtual_pods: Api<Pod> = Api::namespaced(vc, "default");
        let pod = json!({"metadata": {"name": "echo"}, "spec": {"containers": [{"name": "c", "image": "busybox",
            "command": ["sleep", "infinity"], "ports": [{"containerPort": 9000}]}]}});
        virtual_pods.create(&PostParams::default(), &serde_json::from_value(pod)?).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let phase = virtual_pods.get("echo").await?.status.and_then(|s| s.phase).unwrap_or_default();
            if phase == "Running" {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the pod did not run");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let host_pods: Api<Pod> = Api::namespaced(host_client, "vcluster-vc1");
        let host_name = "echo-x-default-x-vc1";
        // Warm both paths (connections, caches) before measuring.
        exec_round_trips(&virtual_pods, "echo", 3).await?;
        exec_round_trips(&host_pods, host_name, 3).await?;
        // Alternating, so that a slow stretch of the machine weighs on both sides alike.
        let (mut through, mut direct) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        for _ in 0..rounds {
            through.extend(exec_round_trips(&virtual_pods, "echo", 1).await?);
            direct.extend(exec_round_trips(&host_pods, host_name, 1).await?);
        }
        through.sort_by(f64::total_cmp);
        direct.sort_by(f64::total_cmp);
        println!(
            "exec round trip ({rounds} x `true`): virtual median {:.2} ms (p90 {:.2}), host directly {:.2} ms (p90 {:.2}); added {:.2} ms",
            median(&through),
            through[through.len() * 9 / 10],
            median(&direct),
            direct[direct.len() * 9 / 10],
            median(&through) - median(&direct)
        );
        let mut through = Vec::new();
        let mut direct = Vec::new();
        for _ in 0..3 {
            through.push(forward_throughput(&virtual_pods, "echo", megabytes).await?);
            direct.push(forward_throughput(&host_pods, host_name, megabytes).await?);
        }
        through.sort_by(f64::total_cmp);
        direct.sort_by(f64::total_cmp);
        println!(
            "port-forward echo ({megabytes} MiB each way, 3 runs): virtual {:.1}/{:.1}/{:.1} MiB/s (min/median/max), host directly {:.1}/{:.1}/{:.1}; ratio {:.0} %",
            through[0],
            through[1],
            through[2],
            direct[0],
            direct[1],
            direct[2],
            100.0 * through[1] / direct[1]
        );
        anyhow::Ok(())
    }
    .await;
    stop(&mut serve);
    stop(&mut host);
    outcome
}
