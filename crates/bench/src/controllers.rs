//! `vkube-bench controllers`: the controllers benchmark of docs/benchmarks.md. The host
//! (`vkube host`) and the virtual cluster (`vkube serve`: API server, controllers, syncer) run
//! as separate processes; CPU time and RSS are read from /proc for each.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::sync::{Clusters, client, rss_mib, stop};

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of /proc/PID/stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

async fn running(api: &Api<Pod>, label: &str) -> anyhow::Result<(usize, usize)> {
    let pods = api.list(&ListParams::default().labels(label)).await?.items;
    let running = pods.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count();
    Ok((pods.len(), running))
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    while !check().await? {
        if started.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn deployment(name: &str, replicas: i32) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
    }))?)
}

pub async fn run(vkube: PathBuf, replicas: usize, churn: usize, nodes: usize) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let clusters = Clusters::start(&vkube, dir.path(), nodes)?;
    let (mut host, mut serve) = (clusters.host, clusters.serve);
    let vc = client(&clusters.vc_dir.join("vc1.kubeconfig")).await?;
    let host_client = client(&clusters.host_kubeconfig).await?;
    let deployments: Api<Deployment> = Api::namespaced(vc.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    let host_pods: Api<Pod> = Api::namespaced(host_client, "vcluster-vc1");
    let (serve_pid, host_pid) = (serve.id(), host.id());

    // A deployment of `replicas` pods until all are Running in the virtual cluster.
    let (cpu_serve, cpu_host) = (cpu_seconds(serve_pid), cpu_seconds(host_pid));
    deployments.create(&PostParams::default(), &deployment("web", replicas as i32)?).await?;
    let rollout = wait_for("deployment ready", Duration::from_secs(300), async || {
        let d = deployments.get("web").await?;
        Ok(d.status.and_then(|s| s.ready_replicas).unwrap_or(0) as usize == replicas)
    })
    .await?;
    let rollout_cpu = (cpu_seconds(serve_pid) - cpu_serve, cpu_seconds(host_pid) - cpu_host);

    // Churn: scale a second deployment from 0 to `churn` and back to 0.
    deployments.create(&PostParams::default(), &deployment("churn", 0)?).await?;
    let (cpu_serve, cpu_host) = (cpu_seconds(serve_pid), cpu_seconds(host_pid));
    let scale = |n: usize| Patch::Merge(json!({"spec": {"replicas": n}}));
    deployments.patch("churn", &PatchParams::default(), &scale(churn)).await?;
    let up = wait_for("churn pods running", Duration::from_secs(600), async || {
        Ok(running(&pods, "app=churn").await?.1 == churn)
    })
    .await?;
    let rss_peak = (rss_mib(serve_pid), rss_mib(host_pid));
    deployments.patch("churn", &PatchParams::default(), &scale(0)).await?;
    let down = wait_for("churn pods gone", Duration::from_secs(600), async || {
        let (virtual_left, _) = running(&pods, "app=churn").await?;
        let host_left = host_pods.list(&ListParams::default()).await?.items.len();
        Ok(virtual_left == 0 && host_left == replicas)
    })
    .await?;
    let churn_cpu = (cpu_seconds(serve_pid) - cpu_serve, cpu_seconds(host_pid) - cpu_host);
    let rss_after = (rss_mib(serve_pid), rss_mib(host_pid));
    stop(&mut serve);
    stop(&mut host);

    println!(
        "| workload ({nodes} simulated nodes) | time | CPU `vkube serve` / `vkube host` | RSS `vkube serve` / `vkube host` |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {replicas}-replica deployment created → all Running in the virtual cluster | {rollout:.2} s | {:.2} s / {:.2} s | |",
        rollout_cpu.0, rollout_cpu.1
    );
    println!(
        "| churn: scale 0 → {churn} (all Running) → 0 (gone in both clusters) | {up:.2} s up, {down:.2} s down | {:.2} s / {:.2} s | {:.1} / {:.1} MiB at {churn} pods, {:.1} / {:.1} MiB after |",
        churn_cpu.0, churn_cpu.1, rss_peak.0, rss_peak.1, rss_after.0, rss_after.1
    );
    Ok(())
}
