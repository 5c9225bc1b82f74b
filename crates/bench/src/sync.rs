//! `vkube-bench sync`: the syncer benchmark of docs/benchmarks.md. The host (`vkube host`) and
//! the virtual cluster (`vkube serve`) run as separate processes, so the virtual cluster's RSS
//! and restart are measured on their own.
//!
//! Workload: groups of four objects (a config map and a secret that a pod references, a
//! service, the pod) created in the virtual cluster's `default` namespace.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Closed-loop creates in flight for (a).
const IN_FLIGHT: usize = 32;

/// Starts `vkube ARGS` and waits for its `ready` line; returns the child and the time it took.
pub(crate) fn start(vkube: &Path, args: &[&str]) -> anyhow::Result<(Child, f64)> {
    start_wrapped(&[], vkube, args)
}

/// The wrapper command an environment variable names (split at white space; none when unset).
pub(crate) fn wrapper_from_env(variable: &str) -> Vec<String> {
    std::env::var(variable).map(|w| w.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

/// `vkube` as a command, under `wrapper` when there is one.
pub(crate) fn wrapped_command(wrapper: &[String], vkube: &Path) -> Command {
    match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(vkube);
            command
        }
        None => Command::new(vkube),
    }
}

/// [`start`] under a wrapper command (`perf record -g --`, `heaptrack`): `wrapper` comes first,
/// then `vkube ARGS`.
pub(crate) fn start_wrapped(wrapper: &[String], vkube: &Path, args: &[&str]) -> anyhow::Result<(Child, f64)> {
    let started = Instant::now();
    let mut child = wrapped_command(wrapper, vkube)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", vkube.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "ready" => break,
            Some(Ok(_)) => {}
            _ => bail!("vkube {} exited before it was ready", args.join(" ")),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok((child, started.elapsed().as_secs_f64() * 1000.0))
}

/// `vkube host` (with `nodes` nodes) and `vkube serve` (virtual cluster `vc1` on it) under `dir`,
/// as separate processes, both ready.
pub(crate) struct Clusters {
    pub(crate) host: Child,
    pub(crate) serve: Child,
    /// Milliseconds from starting `vkube serve` to its `ready` line.
    pub(crate) serve_ready_ms: f64,
    pub(crate) host_kubeconfig: PathBuf,
    pub(crate) vc_dir: PathBuf,
    /// What starts `vkube serve` again on the same state.
    pub(crate) serve_args: Vec<String>,
}

impl Clusters {
    pub(crate) fn start(vkube: &Path, dir: &Path, nodes: usize) -> anyhow::Result<Clusters> {
        let host_dir = dir.join("host").to_string_lossy().to_string();
        let vc_dir = dir.join("vc1");
        let nodes = nodes.to_string();
        let (host, _) = start(vkube, &["host", "--dir", &host_dir, "--listen", "127.0.0.1:0", "--nodes", &nodes])?;
        let host_kubeconfig = dir.join("host").join("host.kubeconfig");
        let serve_args: Vec<String> = [
            "serve",
            "--name",
            "vc1",
            "--host-kubeconfig",
            &host_kubeconfig.to_string_lossy(),
            "--dir",
            &vc_dir.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
        // VKUBE_BENCH_WRAP_SERVE="heaptrack -o FILE" profiles the first `vkube serve` (heaptrack
        // does not pass SIGTERM on: kill the leftover `vkube serve` after such a run).
        let (serve, serve_ready_ms) = start_wrapped(&wrapper_from_env("VKUBE_BENCH_WRAP_SERVE"), vkube, &args)?;
        Ok(Clusters { host, serve, serve_ready_ms, host_kubeconfig, vc_dir, serve_args })
    }
}

pub(crate) fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
}

pub(crate) async fn client(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
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

/// The four objects of group `i` (virtual names), in creation order.
fn group(prefix: &str, i: usize) -> [(&'static str, Value); 4] {
    let name = format!("{prefix}-{i}");
    [
        ("ConfigMap", json!({"metadata": {"name": name}, "data": {"app.conf": format!("id={i}")}})),
        ("Secret", json!({"metadata": {"name": name}, "stringData": {"token": format!("t-{i}")}})),
        ("Service", json!({"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}})),
        (
            "Pod",
            json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": {"containers": [{
                "name": "c", "image": "nginx:1.27",
                "envFrom": [{"configMapRef": {"name": name}}],
                "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                "volumes": [{"name": "s", "secret": {"secretName": name}}]}}),
        ),
    ]
}

/// The same object as the syncer would write it to the host (names translated, references
/// rewritten), for the direct-write baseline.
fn translated(kind: &str, object: &Value) -> Value {
    let mut out = object.clone();
    let rename = |n: &str| format!("{n}-x-default-x-vc1");
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    out["metadata"]["name"] = json!(rename(&name));
    if kind == "Pod" {
        out["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"] = json!(rename(&name));
        out["spec"]["volumes"][0]["secret"]["secretName"] = json!(rename(&name));
    }
    out
}

async fn create(client: &kube::Client, namespace: &str, kind: &str, object: Value) -> anyhow::Result<()> {
    async fn make<K>(client: &kube::Client, namespace: &str, object: Value) -> anyhow::Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        api.create(&PostParams::default(), &serde_json::from_value(object)?).await?;
        Ok(())
    }
    match kind {
        "ConfigMap" => make::<ConfigMap>(client, namespace, object).await,
        "Secret" => make::<Secret>(client, namespace, object).await,
        "Service" => make::<Service>(client, namespace, object).await,
        _ => make::<Pod>(client, namespace, object).await,
    }
}

/// When each object (by kind and virtual name) was first seen, and when each pod first ran.
#[derive(Default)]
struct Seen {
    present: Mutex<HashMap<(String, String), Instant>>,
    running: Mutex<HashMap<String, Instant>>,
}

impl Seen {
    fn count(&self, prefix: &str) -> usize {
        self.present.lock().unwrap().keys().filter(|(_, n)| n.starts_with(prefix)).count()
    }
    fn running(&self, prefix: &str) -> usize {
        self.running.lock().unwrap().keys().filter(|n| n.starts_with(prefix)).count()
    }
}

/// Watches kind `K` in `namespace`, recording objects under their virtual name (the
/// `object-name` annotation on the host, the name itself in the virtual cluster).
fn watch<K>(client: &kube::Client, namespace: &str, kind: &'static str, seen: Arc<Seen>, host: bool)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            let object = match event {
                Ok(Event::Apply(o) | Event::InitApply(o)) => o,
                _ => continue,
            };
            let now = Instant::now();
            let name = if host {
                match object.annotations().get("vcluster.loft.sh/object-name") {
                    Some(name) => name.clone(),
                    None => continue,
                }
            } else {
                object.name_any()
            };
            seen.present.lock().unwrap().entry((kind.to_string(), name.clone())).or_insert(now);
            if kind == "Pod" {
                let value = serde_json::to_value(&object).unwrap_or_default();
                if value.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
                    seen.running.lock().unwrap().entry(name).or_insert(now);
                }
            }
        }
    });
}

fn watch_all(client: &kube::Client, namespace: &str, seen: &Arc<Seen>, host: bool) {
    watch::<ConfigMap>(client, namespace, "ConfigMap", seen.clone(), host);
    watch::<Secret>(client, namespace, "Secret", seen.clone(), host);
    watch::<Service>(client, namespace, "Service", seen.clone(), host);
    watch::<Pod>(client, namespace, "Pod", seen.clone(), host);
}

async fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what}: not done within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Instant::now())
}

/// Creates groups `0..groups` with `IN_FLIGHT` creates in flight; returns when all responded.
async fn closed_loop(
    client: &kube::Client,
    namespace: &str,
    prefix: &str,
    groups: usize,
    host_names: bool,
) -> anyhow::Result<()> {
    let objects: Vec<(&'static str, Value)> = (0..groups)
        .flat_map(|i| group(prefix, i))
        .map(|(kind, object)| if host_names { (kind, translated(kind, &object)) } else { (kind, object) })
        .collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(objects)
        .map(|(kind, object)| async move { create(client, namespace, kind, object).await })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Work queued plus work running in the syncer, from its metrics.
async fn queue_depth(client: &kube::Client) -> Option<i64> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    let gauge = |name: &str| -> Option<i64> {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok())
    };
    Some(gauge("vkube_syncer_queue_depth ")? + gauge("vkube_syncer_in_flight ")?)
}

/// One run of the workload.
async fn run_once(vkube: &Path, objects: usize, nodes: usize) -> anyhow::Result<Run> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let groups = objects / 4;
    let mut dir = tempfile::tempdir()?;
    if std::env::var_os("VKUBE_BENCH_KEEP").is_some() {
        // Keep both clusters' stores for inspection (printed at the end).
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    let clusters = Clusters::start(vkube, dir.path(), nodes)?;
    let (mut host_process, mut serve, first_ready_ms) = (clusters.host, clusters.serve, clusters.serve_ready_ms);
    let mut reap = Reap(vec![host_process.id(), serve.id()]);
    let (vc_dir, host_kubeconfig, serve_args) = (clusters.vc_dir, clusters.host_kubeconfig, clusters.serve_args);
    let serve_args: Vec<&str> = serve_args.iter().map(String::as_str).collect();
    let virtual_client = client(&vc_dir.join("vc1.kubeconfig")).await?;
    let host_client = client(&host_kubeconfig).await?;
    let on_host = Arc::new(Seen::default());
    let in_virtual = Arc::new(Seen::default());
    watch_all(&host_client, "vcluster-vc1", &on_host, true);
    watch_all(&virtual_client, "default", &in_virtual, false);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (a) closed loop, then until every host copy exists (and every pod runs in the virtual cluster).
    let started = Instant::now();
    closed_loop(&virtual_client, "default", "a", groups, false).await?;
    let written = started.elapsed().as_secs_f64();
    let synced = wait("(a) host copies", Duration::from_secs(600), || on_host.count("a-") >= groups * 4).await?;
    let synced_s = synced.duration_since(started).as_secs_f64();
    let running = wait("(a) pods running", Duration::from_secs(600), || in_virtual.running("a-") >= groups).await?;
    let running_s = running.duration_since(started).as_secs_f64();
    let direct_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "bench-direct"}}))?;
    Api::<Namespace>::all(host_client.clone()).create(&PostParams::default(), &direct_ns).await?;
    let direct_started = Instant::now();
    closed_loop(&host_client, "bench-direct", "a", groups, true).await?;
    let direct_s = direct_started.elapsed().as_secs_f64();

    // (b) and (c): the same number again at 200 creates/s, open loop: each group's four creates
    // are sent in order, a group every 20 ms whether the ones before were answered or not (a
    // slow answer must not lower the rate the row claims).
    let begin = tokio::time::Instant::now();
    let mut senders = Vec::with_capacity(groups);
    for i in 0..groups {
        tokio::time::sleep_until(begin + Duration::from_millis(20) * i as u32).await;
        let client = virtual_client.clone();
        senders.push(tokio::spawn(async move {
            let mut answered = Vec::with_capacity(4);
            for (kind, object) in group("b", i) {
                let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let sent = Instant::now();
                create(&client, "default", kind, object).await?;
                answered.push(((kind.to_string(), name), sent, Instant::now()));
            }
            anyhow::Ok(answered)
        }));
    }
    let mut responded: HashMap<(String, String), Instant> = HashMap::new();
    let mut answer_ms = Vec::with_capacity(groups * 4);
    for sender in senders {
        for (key, sent, answered) in sender.await?? {
            answer_ms.push(answered.duration_since(sent).as_secs_f64() * 1000.0);
            responded.insert(key, answered);
        }
    }
    let sent_rate = (groups * 4) as f64 / begin.elapsed().as_secs_f64();
    let (answer50, answer99, _) = percentiles(answer_ms);
    wait("(b) host copies", Duration::from_secs(600), || on_host.count("b-") >= groups * 4).await?;
    wait("(c) pods running", Duration::from_secs(600), || in_virtual.running("b-") >= groups).await?;
    let visible: Vec<f64> = {
        let present = on_host.present.lock().unwrap();
        responded
            .iter()
            .filter_map(|(k, t)| present.get(k).map(|s| s.saturating_duration_since(*t).as_secs_f64() * 1000.0))
            .collect()
    };
    let round_trip: Vec<f64> = {
        let (h, v) = (on_host.running.lock().unwrap(), in_virtual.running.lock().unwrap());
        h.iter()
            .filter(|(n, _)| n.starts_with("b-"))
            .filter_map(|(n, t)| v.get(n).map(|s| s.saturating_duration_since(*t).as_secs_f64() * 1000.0))
            .collect()
    };
    let by_kind: Vec<String> = ["ConfigMap", "Secret", "Service", "Pod"]
        .iter()
        .map(|kind| {
            let present = on_host.present.lock().unwrap();
            let values: Vec<f64> = responded
                .iter()
                .filter(|((k, _), _)| k == kind)
                .filter_map(|(k, t)| present.get(k).map(|s| s.saturating_duration_since(*t).as_secs_f64() * 1000.0))
                .collect();
            let (p50, p99, _) = percentiles(values);
            format!("{kind} {p50:.1}/{p99:.1}")
        })
        .collect();
    let (v50, v99, vmax) = percentiles(visible);
    let (r50, r99, rmax) = percentiles(round_trip);
    let total = on_host.count("");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_virtual, rss_host) = (rss_mib(serve.id()), rss_mib(host_process.id()));
    let (cpu_virtual, cpu_host) = (cpu_seconds(serve.id()), cpu_seconds(host_process.id()));

    if std::env::var_os("VKUBE_BENCH_DEBUG").is_some() {
        // The slowest host copies of (b), with when their create was answered: clustered in time
        // (a stall) or spread out (a path that is slow for some objects).
        let present = on_host.present.lock().unwrap();
        let mut slowest: Vec<(f64, f64, &(String, String))> = responded
            .iter()
            .filter_map(|(k, t)| {
                let seen = present.get(k)?;
                let at = t.saturating_duration_since(begin.into_std()).as_secs_f64() * 1000.0;
                Some((seen.saturating_duration_since(*t).as_secs_f64() * 1000.0, at, k))
            })
            .collect();
        slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (latency, at, (kind, name)) in slowest.iter().take(30) {
            eprintln!("(b) slow: {kind} {name} answered at {at:.0} ms, on the host {latency:.1} ms later");
        }
    }
    if std::env::var_os("VKUBE_BENCH_DEBUG").is_some() {
        // What the run cost: reconciles by kind, and each store's revision (its write count).
        if let Ok(request) = http::Request::get("/metrics").body(Vec::new())
            && let Ok(text) = virtual_client.request_text(request).await
        {
            for line in text.lines().filter(|l| l.starts_with("vkube_syncer_syncs_total")) {
                eprintln!("before restart: {line}");
            }
        }
        for (side, client) in [("virtual", &virtual_client), ("host", &host_client)] {
            let list = Api::<Pod>::all(client.clone()).list(&kube::api::ListParams::default().limit(1)).await?;
            eprintln!("{side} store revision: {}", list.metadata.resource_version.unwrap_or_default());
        }
    }
    // (d) restart the virtual cluster with everything synced: until ready, then until its queue drains.
    stop(&mut serve);
    let restart_started = Instant::now();
    // VKUBE_BENCH_WRAP_RESTART="perf record -g -o FILE --" profiles the restarted process (its RSS
    // row then reads the wrapper's).
    let (mut serve, restart_ready_ms) =
        start_wrapped(&wrapper_from_env("VKUBE_BENCH_WRAP_RESTART"), vkube, &serve_args)?;
    reap.0.push(serve.id());
    let virtual_client = client(&vc_dir.join("vc1.kubeconfig")).await?;
    let (mut drained_ms, mut restart_cpu) = (f64::NAN, f64::NAN);
    for _ in 0..60_000 {
        if queue_depth(&virtual_client).await == Some(0) {
            drained_ms = restart_started.elapsed().as_secs_f64() * 1000.0;
            restart_cpu = cpu_seconds(serve.id());
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if std::env::var_os("VKUBE_BENCH_DEBUG").is_some()
        && let Ok(request) = http::Request::get("/metrics").body(Vec::new())
        && let Ok(text) = virtual_client.request_text(request).await
    {
        for line in text.lines().filter(|l| l.contains("_total") || l.contains("_sum")) {
            eprintln!("after restart: {line}");
        }
        for (side, client) in [("virtual", &virtual_client), ("host", &host_client)] {
            let list = Api::<Pod>::all(client.clone()).list(&kube::api::ListParams::default().limit(1)).await?;
            eprintln!("{side} store revision after: {}", list.metadata.resource_version.unwrap_or_default());
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = |client: kube::Client| async move {
        let pods = Api::<Pod>::namespaced(client.clone(), "vcluster-vc1").list(&Default::default()).await?.items.len();
        let maps =
            Api::<ConfigMap>::namespaced(client.clone(), "vcluster-vc1").list(&Default::default()).await?.items.len();
        anyhow::Ok((pods, maps))
    };
    let (pods_after, maps_after) = counts(host_client.clone()).await?;
    stop(&mut serve);
    stop(&mut host_process);

    Ok(Run {
        first_ready_ms,
        written,
        synced_s,
        direct_s,
        running_s,
        v50,
        v99,
        vmax,
        by_kind: by_kind.join(", "),
        sent_rate,
        answer50,
        answer99,
        r50,
        r99,
        rmax,
        total,
        restart_ready_ms,
        drained_ms,
        pods_after,
        maps_after,
        rss_virtual,
        rss_host,
        cpu_virtual,
        cpu_host,
        restart_cpu,
    })
}

/// Kills the processes a run started when it ends early (a failed wait).
struct Reap(Vec<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).stderr(Stdio::null()).status();
        }
    }
}

/// What one run measured.
struct Run {
    first_ready_ms: f64,
    written: f64,
    synced_s: f64,
    direct_s: f64,
    running_s: f64,
    v50: f64,
    v99: f64,
    vmax: f64,
    by_kind: String,
    /// Creates per second of (b) from the first send to the last answer, and their answer time.
    sent_rate: f64,
    answer50: f64,
    answer99: f64,
    r50: f64,
    r99: f64,
    rmax: f64,
    total: usize,
    restart_ready_ms: f64,
    drained_ms: f64,
    pods_after: usize,
    maps_after: usize,
    rss_virtual: f64,
    rss_host: f64,
    /// CPU seconds (user + system) each process had used when (e) was read (the direct-write
    /// baseline of (a) counts on the host's), and the restarted `vkube serve` when drained.
    cpu_virtual: f64,
    cpu_host: f64,
    restart_cpu: f64,
}

/// CPU seconds (user + system) `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) : state is the first, utime the 12th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

/// `min / median / max` of one number over the runs, with `decimals`.
fn spread(runs: &[Run], decimals: usize, value: impl Fn(&Run) -> f64) -> String {
    let mut values: Vec<f64> = runs.iter().map(value).collect();
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let (min, max) = (values[0], values[values.len() - 1]);
    if values.len() == 1 {
        format!("{min:.decimals$}")
    } else {
        format!("{min:.decimals$} / {median:.decimals$} / {max:.decimals$}")
    }
}

/// Runs the workload `runs` times on fresh clusters and prints each row as min / median / max.
pub async fn run(vkube: PathBuf, objects: usize, nodes: usize, runs: usize) -> anyhow::Result<()> {
    let mut done = Vec::new();
    for i in 0..runs.max(1) {
        eprintln!("run {} of {}", i + 1, runs.max(1));
        done.push(run_once(&vkube, objects, nodes).await?);
    }
    let runs = &done;
    let groups = objects / 4;
    println!(
        "| workload: {objects} + {objects} objects (config maps + secrets referenced by pods, services, pods), {nodes} simulated nodes; {} run(s), min / median / max | result |",
        runs.len()
    );
    println!("|---|---|");
    println!("| first start of `vkube serve` to `ready` | {} ms |", spread(runs, 0, |r| r.first_ready_ms));
    println!(
        "| (a) {objects} objects created ({IN_FLIGHT} in flight, {} s) until all are on the host, vs. writing the same translated objects directly to the host | {} s vs {} s = {}x (all pods Running in the virtual cluster after {} s) |",
        spread(runs, 2, |r| r.written),
        spread(runs, 2, |r| r.synced_s),
        spread(runs, 2, |r| r.direct_s),
        spread(runs, 2, |r| r.synced_s / r.direct_s),
        spread(runs, 2, |r| r.running_s),
    );
    let kinds: Vec<&str> = runs.iter().map(|r| r.by_kind.as_str()).collect();
    println!(
        "| (b) {objects} more at 200 creates/s (open loop; achieved {}/s, creates answered in p50 {} ms, p99 {} ms): create response → host copy visible | p50 {} ms, p99 {} ms, max {} ms (p50/p99 ms by kind, per run: {}) |",
        spread(runs, 0, |r| r.sent_rate),
        spread(runs, 1, |r| r.answer50),
        spread(runs, 1, |r| r.answer99),
        spread(runs, 1, |r| r.v50),
        spread(runs, 1, |r| r.v99),
        spread(runs, 1, |r| r.vmax),
        kinds.join(" · "),
    );
    println!(
        "| (c) host pod Running → virtual pod Running ({groups} pods) | p50 {} ms, p99 {} ms, max {} ms |",
        spread(runs, 1, |r| r.r50),
        spread(runs, 1, |r| r.r99),
        spread(runs, 1, |r| r.rmax),
    );
    println!(
        "| (d) restart of `vkube serve` with {} synced objects: to `ready` / until its queue drained | {} ms / {} ms ({} CPU s); host pods {}, config maps {} after (no duplicates) |",
        spread(runs, 0, |r| r.total as f64),
        spread(runs, 0, |r| r.restart_ready_ms),
        spread(runs, 0, |r| r.drained_ms),
        spread(runs, 2, |r| r.restart_cpu),
        spread(runs, 0, |r| r.pods_after as f64),
        spread(runs, 0, |r| r.maps_after as f64),
    );
    println!(
        "| (e) RSS at the synced objects: `vkube serve` (virtual cluster) / `vkube host` (simulated host) | {} MiB / {} MiB |",
        spread(runs, 1, |r| r.rss_virtual),
        spread(runs, 1, |r| r.rss_host),
    );
    println!(
        "| CPU used through (a) and (b): `vkube serve` / `vkube host` (with the direct writes of (a)) | {} s / {} s |",
        spread(runs, 1, |r| r.cpu_virtual),
        spread(runs, 1, |r| r.cpu_host),
    );
    Ok(())
}
