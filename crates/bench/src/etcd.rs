//! `vkube-bench etcd`: what etcd costs and what several replicas buy (docs/benchmarks.md).
//!
//! 1. Creates at one rate (open loop, 5,000 at 200/s, 1 KiB each) and closed loop (16 clients,
//!    5 s): straight into etcd (gRPC `KV/Put`, the floor vkube's store sits on; and its v3 JSON
//!    gateway, for comparison), through `vkube apiserver` on that etcd, through upstream's
//!    kube-apiserver on that etcd, and through `vkube apiserver` on its embedded SQLite; each
//!    etcd row on a fresh etcd. Then vkube creates and raw puts taking turns on one etcd, the
//!    steadiest ratio of the two on a noisy machine.
//! 2. Failover: three `vkube serve` replicas of one virtual cluster on the etcd with the default
//!    lease times (15 s / 10 s / 2 s); the leader is killed (`kill -9`) `kills` times, each time
//!    measuring until a standby holds the lease and until a pod created right after the kill is
//!    on the host (the new leader syncing). The killed replica is started again as a standby.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use vkube_store::testing::Etcd;
use vkube_store::{EtcdConfig, RawEtcd};

use crate::{Launched, Target, closed_loop, launch, open_loop, open_loop_with, prepare_namespace, summary};

type Plain = Client<HttpConnector, Full<Bytes>>;

/// One put through etcd's gateway.
async fn put(client: &Plain, url: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({"key": b64.encode(key), "value": b64.encode(value)}).to_string();
    let request = hyper::Request::post(format!("{url}/v3/kv/put"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = client.request(request).await?;
    let status = response.status();
    let _ = response.into_body().collect().await?;
    if !status.is_success() {
        bail!("etcd put answered {status}");
    }
    Ok(())
}

/// About the bytes an API create stores: a 1 KiB secret as JSON.
fn value() -> Vec<u8> {
    crate::secret_body("raw").into_bytes()
}

/// Prints a row; its (mean, p50, p99, max) and rate.
fn row(what: &str, latencies: Vec<f64>, per_second: f64) -> ([f64; 4], f64) {
    let (mean, p50, p99, max) = summary(latencies);
    println!(
        "| {what} | mean {mean:.2} ms, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms | {per_second:.0} creates/s |"
    );
    ([mean, p50, p99, max], per_second)
}

async fn through_api(vkube: &Path, extra: &[&str], what: &str) -> anyhow::Result<([f64; 4], f64)> {
    let Launched { mut child, admin, .. } = launch(vkube, extra).await?;
    let measured = drive(&admin, what).await;
    crate::sync::stop(&mut child);
    measured
}

/// The open and the closed loop of secret creates through an API server; the row.
async fn drive(admin: &Target, what: &str) -> anyhow::Result<([f64; 4], f64)> {
    prepare_namespace(admin, "open", None).await?;
    let latencies = open_loop(admin, "open", "s", 5000, 200.0).await?;
    prepare_namespace(admin, "closed", None).await?;
    let target = admin.clone();
    let rate = closed_loop(move |w, n| {
        let target = target.clone();
        async move {
            let (status, _) = target
                .send("POST", "/api/v1/namespaces/closed/secrets", Some(crate::secret_body(&format!("c{w}-{n}"))))
                .await?;
            if status != 201 {
                bail!("closed-loop create answered {status}");
            }
            Ok(())
        }
    })
    .await?;
    Ok(row(what, latencies, rate))
}

/// Creates through `vkube apiserver` on `etcd` and raw gRPC puts into the same etcd, taking
/// turns (5,000 at 200/s in all): a stall of the machine or the disk weighs on both alike, so
/// their ratio is steadier than that of rows measured one after the other. (p50, p99) of each.
async fn interleaved(vkube: &Path, etcd: &str) -> anyhow::Result<((f64, f64), (f64, f64))> {
    let Launched { mut child, admin, .. } =
        launch(vkube, &["--etcd-endpoints", etcd, "--etcd-prefix", "/mixed/"]).await?;
    prepare_namespace(&admin, "mixed", None).await?;
    let raw = Arc::new(RawEtcd::connect(&EtcdConfig { endpoints: vec![etcd.to_string()], ..Default::default() })?);
    let latencies = open_loop_with(5000, 200.0, move |i| {
        let (raw, admin) = (raw.clone(), admin.clone());
        async move {
            if i % 2 == 0 {
                raw.put(&format!("/raw-mixed/{i}"), value().into()).await?;
            } else {
                let body = crate::secret_body(&format!("m{i}"));
                let (status, _) = admin.send("POST", "/api/v1/namespaces/mixed/secrets", Some(body)).await?;
                if status != 201 {
                    bail!("create answered {status}");
                }
            }
            Ok(())
        }
    })
    .await;
    crate::sync::stop(&mut child);
    let latencies = latencies?;
    let half = |parity: usize| {
        let (_, p50, p99, _) = summary(latencies.iter().skip(parity).step_by(2).copied().collect());
        (p50, p99)
    };
    Ok((half(0), half(1)))
}

/// The same loops through upstream's kube-apiserver (`tools/k8s/control-plane.sh --api-only`, the
/// binary `tools/k8s/build.sh` builds) on `etcd`, as admin by client certificate.
async fn through_kube_apiserver(etcd: &str) -> anyhow::Result<([f64; 4], f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/k8s/control-plane.sh");
    let dir = tempfile::tempdir()?;
    let out = tokio::process::Command::new(script)
        .args(["start", &dir.path().to_string_lossy(), "--api-only"])
        .env("VKUBE_K8S_ETCD", etcd)
        .output()
        .await?;
    let stop = || std::process::Command::new(script).args(["stop", &dir.path().to_string_lossy()]).status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(base) = stdout.lines().find_map(|l| l.strip_prefix("api: ")) else {
        let _ = stop();
        bail!("control-plane.sh did not start kube-apiserver: {}", String::from_utf8_lossy(&out.stderr));
    };
    let pki = dir.path().join("pki");
    let pem = |name: &str| std::fs::read(pki.join(name)).with_context(|| format!("reading {name}"));
    let roots = crate::roots(&pem("ca.crt")?)?;
    let chain = rustls_pemfile::certs(&mut &pem("admin.crt")?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &pem("admin.key")?[..])?.context("admin.key holds no key")?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let admin = Target::new(base.trim().to_string(), String::new(), tls);
    let measured = drive(&admin, "kube-apiserver 1.33 (upstream) on that etcd").await;
    let _ = stop();
    measured
}

/// Writes the replicas' vcluster.yaml: etcd, three replicas, default lease times.
fn replicas_config(dir: &Path, etcd: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("vcluster.yaml");
    std::fs::write(
        &path,
        format!(
            "controlPlane:\n  backingStore:\n    database: {{embedded: {{enabled: false}}}}\n    etcd: {{external: {{enabled: true, endpoint: \"{etcd}\", prefix: /failover/}}}}\n  statefulSet:\n    highAvailability: {{replicas: 3}}\n"
        ),
    )?;
    Ok(path)
}

struct Replica {
    child: Child,
    client: kube::Client,
}

async fn start_replica(vkube: &Path, dir: &Path, host_kubeconfig: &Path, config: &Path) -> anyhow::Result<Replica> {
    let state = dir.join("vc1");
    let args = [
        "serve",
        "--host-kubeconfig",
        &host_kubeconfig.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
        "--dir",
        &state.to_string_lossy(),
        "--listen",
        "127.0.0.1:0",
    ]
    .map(|a| a.to_string());
    let (child, _) = crate::sync::start(vkube, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    // Each replica writes the kubeconfig with its own address over the last one's: keep a copy.
    let own = dir.join(format!("replica-{}.kubeconfig", child.id()));
    std::fs::copy(state.join("vc1.kubeconfig"), &own)?;
    Ok(Replica { child, client: crate::sync::client(&own).await? })
}

async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases.get_opt("vkube-controller").await.ok().flatten()?.spec?.holder_identity
}

fn pid_of(identity: &str) -> u32 {
    identity.rsplit('_').next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// Seconds (lease taken over, new leader syncing) for each of `kills` kills of the leader.
async fn failover(vkube: &Path, etcd: &str, kills: usize) -> anyhow::Result<Vec<(f64, f64)>> {
    let dir = tempfile::tempdir()?;
    let host_dir = dir.path().join("host").to_string_lossy().to_string();
    let (mut host, _) = crate::sync::start(vkube, &["host", "--dir", &host_dir, "--listen", "127.0.0.1:0"])?;
    let host_kubeconfig = dir.path().join("host").join("host.kubeconfig");
    let config = replicas_config(dir.path(), etcd)?;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(start_replica(vkube, dir.path(), &host_kubeconfig, &config).await?);
    }
    let host_pods: Api<Pod> = Api::namespaced(crate::sync::client(&host_kubeconfig).await?, "vcluster-vc1");
    let mut times = Vec::new();
    for kill in 0..kills {
        let before = holder(&replicas[0].client).await.context("no replica holds the lease")?;
        let leader = replicas
            .iter()
            .position(|r| r.child.id() == pid_of(&before))
            .with_context(|| format!("the lease holder {before} is none of the replicas"))?;
        let mut killed = replicas.remove(leader);
        let survivor = replicas[0].client.clone();
        let pods: Api<Pod> = Api::namespaced(survivor.clone(), "default");
        killed.child.kill()?;
        let at = Instant::now();
        let _ = killed.child.wait();
        let name = format!("probe-{kill}");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await.context("creating through a survivor")?;
        let mut taken = None;
        let synced = loop {
            if taken.is_none() && holder(&survivor).await.is_some_and(|h| h != before) {
                taken = Some(at.elapsed().as_secs_f64());
            }
            if taken.is_some() && host_pods.get_opt(&format!("{name}-x-default-x-vc1")).await?.is_some() {
                break at.elapsed().as_secs_f64();
            }
            if at.elapsed() > Duration::from_secs(120) {
                bail!("no replica synced within 120 s of kill {kill}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let taken = taken.unwrap_or(synced);
        eprintln!("kill {}: lease taken over after {taken:.2} s, syncing after {synced:.2} s", kill + 1);
        times.push((taken, synced));
        replicas.push(start_replica(vkube, dir.path(), &host_kubeconfig, &config).await?);
    }
    for mut replica in replicas {
        crate::sync::stop(&mut replica.child);
    }
    crate::sync::stop(&mut host);
    Ok(times)
}

fn spread(values: impl Iterator<Item = f64>) -> String {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.as_slice() {
        [] => "-".into(),
        v => format!("min {:.2} s, median {:.2} s, max {:.2} s", v[0], v[v.len() / 2], v[v.len() - 1]),
    }
}

/// The open and the closed loop of raw puts (`put(key)` does one); the row.
async fn put_row<F, Fut>(what: &str, put: F) -> anyhow::Result<([f64; 4], f64)>
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let open = put.clone();
    let latencies = open_loop_with(5000, 200.0, move |i| open(format!("/raw/open/{i}"))).await?;
    let rate = closed_loop(move |w, n| put(format!("/raw/closed/{w}/{n}"))).await?;
    Ok(row(what, latencies, rate))
}

/// A new etcd (with fsync), ready: every create row starts on an empty one, as a row measured
/// after another's 40,000 writes would pay for a bigger database.
async fn fresh_etcd() -> anyhow::Result<Etcd> {
    let etcd = tokio::task::spawn_blocking(|| Etcd::start_with(true)).await?;
    // Until etcd has elected itself, requests fail.
    etcd.store("/ready/").await;
    Ok(etcd)
}

pub async fn run(vkube: PathBuf, kills: usize) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!(
        "| 5,000 creates (1 KiB) at 200/s, open loop | latency from the scheduled send | closed loop, 16 clients, 5 s |"
    );
    println!("|---|---|---|");
    let etcd = fresh_etcd().await?;
    let grpc = Arc::new(RawEtcd::connect(&EtcdConfig { endpoints: vec![etcd.url.clone()], ..Default::default() })?);
    let floor = put_row("etcd put (gRPC, what vkube's store uses)", move |key| {
        let grpc = grpc.clone();
        async move { Ok(grpc.put(&key, value().into()).await.map(|_| ())?) }
    })
    .await?;
    drop(etcd);
    let etcd = fresh_etcd().await?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let raw: Plain = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(http);
    let url = etcd.url.clone();
    put_row("etcd put (its v3 JSON gateway)", move |key| {
        let (raw, url) = (raw.clone(), url.clone());
        async move { put(&raw, &url, &key, &value()).await }
    })
    .await?;
    drop(etcd);
    let etcd = fresh_etcd().await?;
    let api =
        through_api(&vkube, &["--etcd-endpoints", &etcd.url, "--etcd-prefix", "/api/"], "vkube apiserver on that etcd")
            .await?;
    drop(etcd);
    let upstream_etcd = fresh_etcd().await?;
    let upstream = through_kube_apiserver(&upstream_etcd.url).await?;
    drop(upstream_etcd);
    through_api(&vkube, &[], "vkube apiserver on SQLite").await?;
    println!();
    for (what, of) in [("vkube", api), ("kube-apiserver", upstream)] {
        let ratio = |at: usize| of.0[at] / floor.0[at];
        println!(
            "{what} on etcd / etcd's gRPC put: mean {:.2}x, p50 {:.2}x, p99 {:.2}x; closed loop {:.0} % of etcd's puts/s",
            ratio(0),
            ratio(1),
            ratio(2),
            100.0 * of.1 / floor.1
        );
    }
    let etcd = fresh_etcd().await?;
    let (put, create) = interleaved(&vkube, &etcd.url).await?;
    println!(
        "taking turns on one etcd (2,500 each at 100/s): etcd put p50 {:.2} ms, p99 {:.2} ms; vkube create p50 {:.2} ms, p99 {:.2} ms: {:.2}x at p50, {:.2}x at p99",
        put.0,
        put.1,
        create.0,
        create.1,
        create.0 / put.0,
        create.1 / put.1
    );
    if kills > 0 {
        let times = failover(&vkube, &etcd.url, kills).await?;
        println!();
        println!("| failover, 3 replicas, lease 15 s / renew 10 s / retry 2 s, {kills} kills | result |");
        println!("|---|---|");
        println!("| leader killed -> a standby holds the lease | {} |", spread(times.iter().map(|t| t.0)));
        println!(
            "| leader killed -> a pod created after the kill is on the host | {} |",
            spread(times.iter().map(|t| t.1))
        );
    }
    Ok(())
}
