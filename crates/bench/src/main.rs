//! `vkube-bench apiserver`: the API server benchmark of docs/benchmarks.md, against the real
//! `vkube apiserver` process over HTTPS with bearer-token authentication. Open-loop shapes measure
//! latency from each request's scheduled send time, so a slow server cannot hide queueing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Benchmarks.
#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(clap::Subcommand, Debug)]
enum Bench {
    /// The API server benchmark (issue: virtual control plane).
    Apiserver {
        /// The vkube binary to run (build it with --release first).
        #[arg(long, default_value = "target/release/vkube")]
        vkube: PathBuf,
        /// Send the workload as a service account granted `edit` through a RoleBinding in each
        /// namespace (RBAC decides every request), instead of as the admin (`system:masters`).
        #[arg(long)]
        rbac: bool,
    },
    /// The syncer benchmark: `vkube up` with a simulated host.
    Sync {
        /// The vkube binary to run (build it with --release first).
        #[arg(long, default_value = "target/release/vkube")]
        vkube: PathBuf,
        /// Objects per phase: a quarter each of config maps, secrets, services and pods.
        #[arg(long, default_value_t = 5000)]
        objects: usize,
        /// Simulated host nodes.
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        /// Runs on fresh clusters; each row is reported as min / median / max.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The streams benchmark: exec round trip and port-forward throughput through the virtual
    /// cluster against the host directly.
    Streams {
        /// The vkube binary to run (build it with --release first).
        #[arg(long, default_value = "target/release/vkube")]
        vkube: PathBuf,
        /// Exec round trips measured on each path.
        #[arg(long, default_value_t = 200)]
        rounds: usize,
        /// MiB sent through the forwarded connection (and read back) per run.
        #[arg(long, default_value_t = 64)]
        megabytes: usize,
    },
    /// The etcd benchmark: creates through the API server on etcd, on SQLite and straight into
    /// etcd at the same rate; then failover of three `vkube serve` replicas on one etcd.
    Etcd {
        /// The vkube binary to run (build it with --release first).
        #[arg(long, default_value = "target/release/vkube")]
        vkube: PathBuf,
        /// Leaders killed (`kill -9`), one after the other.
        #[arg(long, default_value_t = 10)]
        kills: usize,
    },
    /// The controllers benchmark: a large deployment and pod churn in the virtual cluster.
    Controllers {
        /// The vkube binary to run (build it with --release first).
        #[arg(long, default_value = "target/release/vkube")]
        vkube: PathBuf,
        /// Replicas of the deployment rolled out first.
        #[arg(long, default_value_t = 100)]
        replicas: usize,
        /// Pods created and deleted by the churn.
        #[arg(long, default_value_t = 1000)]
        churn: usize,
        /// Simulated host nodes.
        #[arg(long, default_value_t = 20)]
        nodes: usize,
    },
}

type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Clone)]
struct Target {
    base: String,
    token: String,
    client: Https,
}

impl Target {
    /// HTTPS/1.1 to `base` with `tls`, sending `token` (none when empty).
    fn new(base: String, token: String, tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        let client: Https = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector);
        Target { base, token, client }
    }

    async fn send(&self, method: &str, path: &str, body: Option<String>) -> anyhow::Result<(u16, Bytes)> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        // No token: the client certificate of the TLS connection says who this is.
        if !self.token.is_empty() {
            request = request.header("authorization", format!("Bearer {}", self.token));
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = self.client.request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(mut latencies: Vec<f64>) -> (f64, f64, f64, f64) {
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
    (mean, percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn secret_body(name: &str) -> String {
    // About 1 KiB of data, like kube-burner's api-intensive secrets.
    // (Valid base64: kube-apiserver refuses anything else in a Secret's data.)
    let payload = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY".repeat(32);
    format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{name}","labels":{{"bench":"yes"}}}},"data":{{"payload":"{payload}"}}}}"#
    )
}

/// Waits until `at` without tokio's millisecond timer granularity making the send late: sleeps
/// to within 2 ms, then yields until the instant has come.
async fn send_at(at: tokio::time::Instant) {
    if let Some(early) = at.checked_sub(Duration::from_millis(2)) {
        tokio::time::sleep_until(early).await;
    }
    while tokio::time::Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// Open loop: `count` secret creates at `rate`/s; latency from the scheduled send time.
async fn open_loop(
    target: &Target,
    namespace: &str,
    prefix: &str,
    count: usize,
    rate: f64,
) -> anyhow::Result<Vec<f64>> {
    let path = format!("/api/v1/namespaces/{namespace}/secrets");
    let (target, prefix) = (target.clone(), prefix.to_string());
    open_loop_with(count, rate, move |i| {
        let (target, path, body) = (target.clone(), path.clone(), secret_body(&format!("{prefix}-{i}")));
        async move {
            let (status, _) = target.send("POST", &path, Some(body)).await?;
            if status != 201 {
                bail!("create answered {status}");
            }
            Ok(())
        }
    })
    .await
}

/// Open loop: `write(i)` for i in 0..count at `rate`/s; latency from each scheduled send time.
async fn open_loop_with<F, Fut>(count: usize, rate: f64, write: F) -> anyhow::Result<Vec<f64>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let scheduled = start + interval * i as u32;
        send_at(scheduled).await;
        let write = write(i);
        tasks.push(tokio::spawn(async move {
            write.await?;
            anyhow::Ok(scheduled.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok(latencies)
}

/// 16 clients, each one write after the other for 5 s (`write(client, n)` does one): writes/s.
async fn closed_loop<F, Fut>(write: F) -> anyhow::Result<f64>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut workers = Vec::new();
    for w in 0..16 {
        let write = write.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                write(w, done).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    Ok(total as f64 / 5.0)
}

async fn create_namespace(target: &Target, name: &str) -> anyhow::Result<()> {
    let (status, body) =
        target.send("POST", "/api/v1/namespaces", Some(format!(r#"{{"metadata":{{"name":"{name}"}}}}"#))).await?;
    if status != 201 {
        bail!("namespace create answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

/// Creates namespace `name` as the admin; with `user`, binds `edit` there to that service account
/// (`namespace/name`).
async fn prepare_namespace(admin: &Target, name: &str, user: Option<(&str, &str)>) -> anyhow::Result<()> {
    create_namespace(admin, name).await?;
    if let Some((account_namespace, account)) = user {
        let binding = serde_json::json!({
            "metadata": {"name": "bench-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": account_namespace}],
        });
        let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings");
        let (status, body) = admin.send("POST", &path, Some(binding.to_string())).await?;
        if status != 201 {
            bail!("role binding create answered {status}: {}", String::from_utf8_lossy(&body));
        }
    }
    Ok(())
}

/// A service account `bench-users/bench` and a token for it.
async fn bench_user(admin: &Target) -> anyhow::Result<String> {
    create_namespace(admin, "bench-users").await?;
    let (status, _) = admin
        .send("POST", "/api/v1/namespaces/bench-users/serviceaccounts", Some(r#"{"metadata":{"name":"bench"}}"#.into()))
        .await?;
    if status != 201 {
        bail!("service account create answered {status}");
    }
    let request =
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#;
    let (status, body) =
        admin.send("POST", "/api/v1/namespaces/bench-users/serviceaccounts/bench/token", Some(request.into())).await?;
    let answer: serde_json::Value = serde_json::from_slice(&body)?;
    match answer.pointer("/status/token").and_then(|t| t.as_str()) {
        Some(token) if status == 201 => Ok(token.to_string()),
        _ => bail!("token request answered {status}"),
    }
}

/// A `vkube apiserver` process (on a fresh folder) and an admin client for it.
struct Launched {
    child: std::process::Child,
    pid: u32,
    /// Milliseconds from spawning to its `ready` line.
    ready_ms: f64,
    admin: Target,
    _dir: tempfile::TempDir,
}

/// The certificates of a PEM CA bundle, as rustls trusts them.
fn roots(pem: &[u8]) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// Starts `vkube apiserver --dir NEW --listen 127.0.0.1:0 EXTRA...` and connects as the admin
/// (under the wrapper command `VKUBE_BENCH_WRAP_APISERVER` names, e.g. `perf record -g -o F --`).
async fn launch(vkube: &std::path::Path, extra: &[&str]) -> anyhow::Result<Launched> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut child = sync::wrapped_command(&sync::wrapper_from_env("VKUBE_BENCH_WRAP_APISERVER"), vkube)
        .args(["apiserver", "--dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", vkube.display()))?;
    let pid = child.id();
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    loop {
        match stdout.next() {
            Some(Ok(line)) if line == "ready" => break,
            Some(Ok(_)) => {}
            _ => bail!("vkube apiserver exited before it was ready"),
        }
    }
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let mut url = String::new();
    for line in stderr.by_ref() {
        let line = line?;
        if let Some(u) = line.strip_prefix("listening on ") {
            url = u.trim().to_string();
            break;
        }
    }
    std::thread::spawn(move || for _ in stdout {});
    std::thread::spawn(move || for _ in stderr {});
    let ca = std::fs::read_to_string(dir.path().join("pki/ca.crt"))?;
    let token = std::fs::read_to_string(dir.path().join("pki/admin.token"))?.trim().to_string();
    let roots = roots(ca.as_bytes())?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let admin = Target::new(url.clone(), token, tls);
    admin.send("GET", "/readyz", None).await?;
    Ok(Launched { child, pid, ready_ms, admin, _dir: dir })
}

async fn apiserver(vkube: PathBuf, rbac: bool) -> anyhow::Result<()> {
    let Launched { mut child, pid, ready_ms, admin, _dir } = launch(&vkube, &[]).await?;
    let (target, user) = if rbac {
        let token = bench_user(&admin).await?;
        (Target { token, ..admin.clone() }, Some(("bench-users", "bench")))
    } else {
        (admin.clone(), None)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_mib(pid);

    println!(
        "| workload | result{} |",
        if rbac { " (as a service account with `edit` through RoleBindings)" } else { " (as the admin)" }
    );
    println!("|---|---|");
    println!("| start to `ready` (process spawn to first line) | {ready_ms:.1} ms |");
    println!("| RSS idle | {idle_rss:.1} MiB |");

    if std::env::var_os("VKUBE_BENCH_PROBE").is_some() {
        let mut gets = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(33)).await;
            let t = Instant::now();
            target.send("GET", "/api/v1/namespaces/default", None).await?;
            gets.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (mean, p50, p99, _) = summary(gets);
        println!("| probe: GET at 30/s | mean {mean:.2} ms, p50 {p50:.2} ms, p99 {p99:.2} ms |");
        let mut gets = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            target.send("GET", "/api/v1/namespaces/default", None).await?;
            gets.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (mean, p50, p99, _) = summary(gets);
        println!("| probe: GET back to back | mean {mean:.2} ms, p50 {p50:.2} ms, p99 {p99:.2} ms |");
    }
    prepare_namespace(&admin, "baseline", user).await?;
    let (mean, p50, p99, max) = summary(open_loop(&target, "baseline", "b", 300, 30.0).await?);
    println!(
        "| baseline: 300 secret creates at 30/s | mean {mean:.2} ms, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms |"
    );

    prepare_namespace(&admin, "intensive", user).await?;
    let (mean, p50, p99, max) = summary(open_loop(&target, "intensive", "s", 5000, 200.0).await?);
    println!(
        "| api-intensive: 5,000 secret creates (1 KiB) at 200/s | mean {mean:.2} ms, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms |"
    );

    // LIST of the 5,000 secrets, whole and in pages of 500.
    let mut whole = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, body) = target.send("GET", "/api/v1/namespaces/intensive/secrets", None).await?;
        whole.push(t.elapsed().as_secs_f64() * 1000.0);
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        if status != 200 || list["items"].as_array().map(Vec::len) != Some(5000) {
            bail!("list returned {status} with the wrong item count");
        }
    }
    let (_, list_p50, _, list_max) = summary(whole);
    let mut paged = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let mut token: Option<String> = None;
        let mut total = 0;
        loop {
            let path = match &token {
                Some(t) => format!("/api/v1/namespaces/intensive/secrets?limit=500&continue={t}"),
                None => "/api/v1/namespaces/intensive/secrets?limit=500".to_string(),
            };
            let (_, body) = target.send("GET", &path, None).await?;
            let page: serde_json::Value = serde_json::from_slice(&body)?;
            total += page["items"].as_array().map(Vec::len).unwrap_or(0);
            token = page["metadata"]["continue"].as_str().filter(|t| !t.is_empty()).map(String::from);
            if token.is_none() {
                break;
            }
        }
        if total != 5000 {
            bail!("paginated list returned {total} items");
        }
        paged.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (_, paged_p50, _, paged_max) = summary(paged);
    println!("| LIST 5,000 secrets (median of 10) | {list_p50:.1} ms (max {list_max:.1} ms) |");
    println!(
        "| LIST 5,000 secrets, limit=500 (all 10 pages, median of 10) | {paged_p50:.1} ms (max {paged_max:.1} ms) |"
    );

    // Closed loop: 16 clients creating as fast as they can for 5 s.
    prepare_namespace(&admin, "closed", user).await?;
    let closed = target.clone();
    let per_second = closed_loop(move |w, n| {
        let target = closed.clone();
        async move {
            let body = format!(r#"{{"metadata":{{"name":"c{w}-{n}"}},"data":{{"k":"v"}}}}"#);
            let (status, _) = target.send("POST", "/api/v1/namespaces/closed/configmaps", Some(body)).await?;
            if status != 201 {
                bail!("closed-loop create answered {status}");
            }
            Ok(())
        }
    })
    .await?;
    println!("| closed loop, 16 clients, durable configmap creates for 5 s | {per_second:.0} creates/s |");

    // Watch delivery: 20 watchers, 1,000 creates at 100/s.
    prepare_namespace(&admin, "watched", user).await?;
    // Watch from the list's resourceVersion, as clients do (an old one may be compacted away).
    let (_, listed) = target.send("GET", "/api/v1/namespaces/watched/configmaps", None).await?;
    let listed: serde_json::Value = serde_json::from_slice(&listed)?;
    let from = listed["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let target = target.clone();
        let from = from.clone();
        let sender = sender.clone();
        watchers.push(tokio::spawn(async move {
            let request = hyper::Request::builder()
                .uri(format!(
                    "{}/api/v1/namespaces/watched/configmaps?watch=true&resourceVersion={from}&timeoutSeconds=60",
                    target.base
                ))
                .header("authorization", format!("Bearer {}", target.token))
                .body(Full::new(Bytes::new()))?;
            let response = target.client.request(request).await?;
            let mut body = response.into_body();
            let mut buffer = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else { continue };
                let now = Instant::now();
                buffer.extend_from_slice(&data);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let event: serde_json::Value = serde_json::from_slice(&line)?;
                    if let Some(name) = event["object"]["metadata"]["name"].as_str() {
                        let _ = sender.send((name.to_string(), now));
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(sender);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut responded = std::collections::HashMap::new();
    let interval = Duration::from_millis(10);
    let start = tokio::time::Instant::now();
    for i in 0..1000u32 {
        send_at(start + interval * i).await;
        let name = format!("w-{i}");
        let (status, _) = target
            .send(
                "POST",
                "/api/v1/namespaces/watched/configmaps",
                Some(format!(r#"{{"metadata":{{"name":"{name}"}}}}"#)),
            )
            .await?;
        if status != 201 {
            bail!("watched create answered {status}");
        }
        responded.insert(name, Instant::now());
    }
    let mut delays = Vec::new();
    let collect_until = Instant::now() + Duration::from_secs(5);
    while delays.len() < 20_000 && Instant::now() < collect_until {
        match tokio::time::timeout(Duration::from_millis(200), receiver.recv()).await {
            Ok(Some((name, at))) => {
                if let Some(sent) = responded.get(&name) {
                    delays.push(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    for w in watchers {
        w.abort();
    }
    let received = delays.len();
    let (_, p50, p99, max) = summary(delays);
    println!(
        "| watch: 20 watchers, 1,000 creates at 100/s; delivery after the create's response | p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.2} ms; {received}/20000 events delivered |"
    );
    println!("| RSS after all of the above | {:.1} MiB |", rss_mib(pid));
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = child.wait();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Bench::Apiserver { vkube, rbac } => apiserver(vkube, rbac).await,
        Bench::Sync { vkube, objects, nodes, runs } => sync::run(vkube, objects, nodes, runs).await,
        Bench::Controllers { vkube, replicas, churn, nodes } => controllers::run(vkube, replicas, churn, nodes).await,
        Bench::Streams { vkube, rounds, megabytes } => streams::run(vkube, rounds, megabytes).await,
        Bench::Etcd { vkube, kills } => etcd::run(vkube, kills).await,
    }
}

mod controllers;
mod etcd;
mod streams;
mod sync;
