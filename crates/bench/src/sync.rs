//! `vkube-bench sync`: the syncer benchmark against a real `vkube up` process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

fn start(vkube: &Path, dir: &Path) -> anyhow::Result<(Child, f64)> {
    let started = Instant::now();
    let mut child = Command::new(vkube)
        .args(["up", "--dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--host-listen", "127.0.0.1:0", "--nodes", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", vkube.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "ready" => break,
            Some(Ok(_)) => {}
            _ => bail!("vkube up exited before it was ready"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok((child, started.elapsed().as_secs_f64() * 1000.0))
}

async fn client(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| values.get(((values.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    (at(0.5), at(0.99), at(1.0))
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"bench": "yes"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})).unwrap()
}

/// Times when each pod was seen (by name) in some condition.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_pods(api: Api<Pod>, created: Seen, running: Seen, name_of: fn(&Pod) -> Option<String>) {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let pods = match event {
                Ok(Event::Apply(p) | Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            let now = Instant::now();
            for p in pods {
                let Some(name) = name_of(&p) else { continue };
                created.lock().unwrap().entry(name.clone()).or_insert(now);
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    running.lock().unwrap().entry(name).or_insert(now);
                }
            }
        }
    });
}

fn virtual_name(pod: &Pod) -> Option<String> {
    pod.metadata.name.clone()
}

fn host_to_virtual_name(pod: &Pod) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get("vcluster.loft.sh/object-name").cloned()
}

pub async fn run(vkube: PathBuf, count: usize) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let (mut child, first_ready_ms) = start(&vkube, dir.path())?;
    let pid = child.id();
    let virtual_client = client(&dir.path().join("vc1/vc1.kubeconfig")).await?;
    let host_client = client(&dir.path().join("host/host.kubeconfig")).await?;
    let virtual_pods: Api<Pod> = Api::namespaced(virtual_client.clone(), "default");
    let host_pods: Api<Pod> = Api::namespaced(host_client.clone(), "vcluster-vc1");
    let (host_seen, host_running): (Seen, Seen) = Default::default();
    let (virtual_seen, virtual_running): (Seen, Seen) = Default::default();
    watch_pods(host_pods.clone(), host_seen.clone(), host_running.clone(), host_to_virtual_name);
    watch_pods(virtual_pods.clone(), virtual_seen.clone(), virtual_running.clone(), virtual_name);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (b) creates at 200/s; latency from each create's response to the host pod appearing.
    let mut responded: HashMap<String, Instant> = HashMap::new();
    let interval = Duration::from_millis(5);
    let started = Instant::now();
    let begin = tokio::time::Instant::now();
    for i in 0..count {
        tokio::time::sleep_until(begin + interval * i as u32).await;
        let name = format!("p-{i}");
        virtual_pods.create(&PostParams::default(), &pod(&name)).await?;
        responded.insert(name, Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while host_running.lock().unwrap().len() < count || virtual_running.lock().unwrap().len() < count {
        if Instant::now() > deadline {
            bail!("not everything synced in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let synced_all = {
        let running = virtual_running.lock().unwrap();
        running.values().max().map(|t| t.duration_since(started).as_secs_f64()).unwrap_or(f64::NAN)
    };
    let visible: Vec<f64> = {
        let seen = host_seen.lock().unwrap();
        responded
            .iter()
            .filter_map(|(n, t)| seen.get(n).map(|s| s.saturating_duration_since(*t).as_secs_f64() * 1000.0))
            .collect()
    };
    let round_trip: Vec<f64> = {
        let (h, v) = (host_running.lock().unwrap(), virtual_running.lock().unwrap());
        h.iter().filter_map(|(n, t)| v.get(n).map(|s| s.saturating_duration_since(*t).as_secs_f64() * 1000.0)).collect()
    };
    let (v50, v99, vmax) = percentiles(visible);
    let (r50, r99, rmax) = percentiles(round_trip);
    let rss = rss_mib(pid);

    // (a) the same number of translated pods written directly to the host, for comparison.
    let direct: Api<Pod> = Api::namespaced(host_client.clone(), "bench-direct");
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "bench-direct"}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(host_client.clone()).create(&PostParams::default(), &ns).await?;
    let direct_start = Instant::now();
    let begin = tokio::time::Instant::now();
    for i in 0..count {
        tokio::time::sleep_until(begin + interval * i as u32).await;
        direct.create(&PostParams::default(), &pod(&format!("p-{i}-x-default-x-vc1"))).await?;
    }
    let direct_seconds = direct_start.elapsed().as_secs_f64();

    // (d) restart with everything synced.
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = child.wait();
    let (mut again, restart_ms) = start(&vkube, dir.path())?;
    let _ = Command::new("kill").arg("-TERM").arg(again.id().to_string()).status();
    let _ = again.wait();

    println!("| workload ({count} pods, 10 simulated nodes) | result |");
    println!("|---|---|");
    println!("| first start to `ready` | {first_ready_ms:.0} ms |");
    println!(
        "| (a) all {count} created at 200/s and Running in the virtual cluster, vs. writing them directly to the host at 200/s | {synced_all:.2} s vs {direct_seconds:.2} s = {:.2}x |",
        synced_all / direct_seconds
    );
    println!("| (b) create response → host pod visible | p50 {v50:.1} ms, p99 {v99:.1} ms, max {vmax:.1} ms |");
    println!("| (c) host pod Running → virtual pod Running | p50 {r50:.1} ms, p99 {r99:.1} ms, max {rmax:.1} ms |");
    println!("| (d) restart with {count} synced pods to `ready` | {restart_ms:.0} ms |");
    println!("| (e) RSS of `vkube up` (host + virtual + syncer + simulator) with {count} pods | {rss:.1} MiB |");
    Ok(())
}
