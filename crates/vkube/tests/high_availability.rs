//! Three `vkube serve` replicas of one virtual cluster on one etcd: every replica serves the
//! API, the one holding the `kube-system/vkube-controller` lease syncs. Killing the leader
//! (`kill -9`) in the middle of 1,000 pod creates loses nothing: a standby takes over, every
//! acknowledged pod is there, the host ends with each pod exactly once, and the clients of the
//! surviving replicas (writers and a watch) never see an error.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::ApiServerProcess;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use vkube_store::testing::Etcd;

const PODS: usize = 1000;

/// One replica and the kubeconfig it wrote when it started (the next replica writes its own
/// over it in the shared folder).
struct Replica {
    process: ApiServerProcess,
    kubeconfig: String,
}

fn start_replica(state: &Path, host_kubeconfig: &Path, config: &Path) -> Replica {
    let process = ApiServerProcess::start_command(
        &[
            "serve",
            "--host-kubeconfig",
            host_kubeconfig.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        state.join("vc1.kubeconfig"),
    );
    let kubeconfig = std::fs::read_to_string(&process.kubeconfig).unwrap();
    Replica { process, kubeconfig }
}

async fn client(kubeconfig: &str) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    leases.get_opt("vkube-controller").await.ok().flatten()?.spec?.holder_identity
}

/// The pid at the end of a holder identity (`HOST_ADDR_PID`).
fn pid_of(identity: &str) -> u32 {
    identity.rsplit('_').next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"load": "burst"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
    }))
    .unwrap()
}

#[test]
fn the_leader_killed_during_1000_creates_loses_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let host_dir = dir.path().join("host");
    let _host = ApiServerProcess::start_command(
        &["host", "--dir", host_dir.to_str().unwrap(), "--listen", "127.0.0.1:0", "--nodes", "2"],
        host_dir.join("host.kubeconfig"),
    );
    let config = dir.path().join("vcluster.yaml");
    std::fs::write(
        &config,
        format!(
            "controlPlane:\n  backingStore:\n    database: {{embedded: {{enabled: false}}}}\n    etcd: {{external: {{enabled: true, endpoint: \"{}\"}}}}\n  statefulSet:\n    highAvailability: {{replicas: 3}}\n",
            etcd.url
        ),
    )
    .unwrap();
    let state = dir.path().join("vc1");
    let host_kubeconfig = host_dir.join("host.kubeconfig");
    // The first replica creates the certificates the others load, and takes the lease.
    let leader = start_replica(&state, &host_kubeconfig, &config);
    let standbys = [start_replica(&state, &host_kubeconfig, &config), start_replica(&state, &host_kubeconfig, &config)];
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let host = runtime.block_on(client(&std::fs::read_to_string(&host_kubeconfig).unwrap()));
    let survivors: Vec<kube::Client> = standbys.iter().map(|r| runtime.block_on(client(&r.kubeconfig))).collect();
    let first = runtime.block_on(holder(&survivors[0])).expect("a replica holds the lease");
    assert_eq!(pid_of(&first), leader.process.child.id(), "the first replica leads: {first}");
    for standby in &standbys {
        let said = standby.process.said.lock().unwrap().join("\n");
        assert!(said.contains("standing by"), "a later replica stands by: {said}");
    }

    // A watch through one survivor, open across the failover.
    let namespaces: Api<Namespace> = Api::all(survivors[0].clone());
    runtime
        .block_on(namespaces.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "load"}})).unwrap(),
        ))
        .unwrap();
    let watched: Api<Pod> = Api::namespaced(survivors[1].clone(), "load");
    let watch = runtime.spawn(async move {
        let mut seen = BTreeSet::new();
        let mut stream = watched.watch(&WatchParams::default().timeout(240), "0").await.unwrap().boxed();
        while seen.len() < PODS {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Added(pod))) => {
                    seen.insert(pod.metadata.name.unwrap_or_default());
                }
                Ok(Some(WatchEvent::Error(status))) => return Err(format!("the watch failed: {status:?}")),
                Ok(Some(_)) => {}
                Ok(None) => return Err(format!("the watch ended after {} pods", seen.len())),
                Err(error) => return Err(format!("the watch broke after {} pods: {error}", seen.len())),
            }
        }
        Ok(seen)
    });

    // 1,000 creates through the survivors, 16 at a time; the leader dies after 200 of them.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let load = {
        let (survivors, acknowledged) = (survivors.clone(), acknowledged.clone());
        runtime.spawn(async move {
            futures::stream::iter(0..PODS)
                .map(|i| {
                    let pods: Api<Pod> = Api::namespaced(survivors[i % 2].clone(), "load");
                    let acknowledged = acknowledged.clone();
                    async move {
                        let name = format!("p-{i:04}");
                        let created = pods.create(&PostParams::default(), &pod(&name)).await;
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        created.map(|_| name.clone()).map_err(|error| format!("{name}: {error}"))
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        })
    };
    common::wait_until(Duration::from_secs(120), "200 creates", || acknowledged.load(Ordering::Relaxed) >= 200);
    let killed_at = Instant::now();
    leader.process.kill();
    let results = runtime.block_on(load).unwrap();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "creates through the survivors failed: {failed:?}");
    let created: BTreeSet<String> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(created.len(), PODS);

    // A standby takes the lease over once it has run out, and syncs.
    let new_leader = loop {
        if let Some(now) = runtime.block_on(holder(&survivors[0]))
            && now != first
        {
            break now;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(60), "no replica took the lease over in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(standbys.iter().any(|r| r.process.child.id() == pid_of(&new_leader)), "a survivor leads now: {new_leader}");

    // Every acknowledged pod is there, read through either survivor.
    for survivor in &survivors {
        let pods: Api<Pod> = Api::namespaced(survivor.clone(), "load");
        let listed: BTreeSet<String> = runtime
            .block_on(pods.list(&ListParams::default()))
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(listed, created, "every acknowledged create is stored");
    }
    // The host ends with each pod exactly once: one host pod per virtual pod, carrying its UID.
    let virtual_uids: std::collections::BTreeMap<String, String> = runtime
        .block_on(Api::<Pod>::namespaced(survivors[0].clone(), "load").list(&ListParams::default()))
        .unwrap()
        .items
        .into_iter()
        .map(|p| (format!("{}-x-load-x-vc1", p.metadata.name.unwrap()), p.metadata.uid.unwrap()))
        .collect();
    let host_pods: Api<Pod> = Api::namespaced(host.clone(), "vcluster-vc1");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let on_host: std::collections::BTreeMap<String, String> = runtime
            .block_on(host_pods.list(&ListParams::default()))
            .unwrap()
            .items
            .into_iter()
            .map(|p| {
                let uid = p.metadata.annotations.as_ref().and_then(|a| a.get("vcluster.loft.sh/object-uid")).cloned();
                (p.metadata.name.unwrap(), uid.unwrap_or_default())
            })
            .collect();
        if on_host == virtual_uids {
            break;
        }
        let missing = virtual_uids.keys().filter(|k| !on_host.contains_key(*k)).count();
        let extra: Vec<&String> = on_host.keys().filter(|k| !virtual_uids.contains_key(*k)).collect();
        assert!(extra.is_empty(), "host pods without a virtual pod: {extra:?}");
        if Instant::now() > deadline {
            let said: Vec<String> = standbys.iter().map(|r| r.process.said.lock().unwrap().join("\n")).collect();
            panic!(
                "the host does not hold each pod exactly once after 180 s: {missing} missing, {} with another UID; the survivors said:\n{}",
                on_host.iter().filter(|(k, v)| virtual_uids.get(*k).is_some_and(|u| u != *v)).count(),
                said.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // The watch through a survivor saw every pod, without an error.
    let seen = runtime.block_on(watch).unwrap().unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(seen, created);

    // The new leader stopped with SIGTERM gives the lease up: the last replica takes it at its
    // next try (retry period 2 s), well before the 15 s lease would have run out.
    let (mut leading, last): (Vec<Replica>, Vec<Replica>) =
        standbys.into_iter().partition(|r| r.process.child.id() == pid_of(&new_leader));
    let stopped_at = Instant::now();
    let leading = leading.pop().unwrap();
    let said = leading.process.said.clone();
    let status = leading.process.stop();
    assert!(status.success(), "a replica stops cleanly on SIGTERM ({status}): {}", said.lock().unwrap().join("\n"));
    let last = &last[0];
    let client = runtime.block_on(client(&last.kubeconfig));
    loop {
        let now = runtime.block_on(holder(&client)).unwrap_or_default();
        if pid_of(&now) == last.process.child.id() {
            break;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(8), "the released lease was not taken at once: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(etcd);
}
