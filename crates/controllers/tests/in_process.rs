//! The controllers in-process: an API server on 127.0.0.1:0, the simulated nodes and kubelet on
//! it, and `vkube_controllers::run`, driven through kube-rs.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ReplicationController, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

async fn cluster(dir: &std::path::Path) -> (vkube_apiserver::RunningServer, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = vkube_apiserver::ServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = vkube_apiserver::start(config, None).await.unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.admin_kubeconfig("c").unwrap()).unwrap();
    let options = KubeConfigOptions::default();
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.unwrap()).unwrap();
    let root_ca = server.pki.as_ref().map(|p| p.ca_cert.clone());
    tokio::spawn(vkube_simulator::run(client.clone(), vkube_simulator::SimulatorConfig::default()));
    tokio::spawn(vkube_controllers::run(client.clone(), root_ca));
    (server, client)
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // A check that does not return (a request kube-rs keeps retrying) counts against the
        // deadline too, so the test fails saying what it waited for.
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(value)) => return value,
            Ok(None) => {}
            Err(_) => panic!("timed out waiting for {what} (a check did not return)"),
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_scale_and_orphaned_replica_sets_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployment = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    deployments.create(&PostParams::default(), &object(deployment)).await.unwrap();
    eventually("three ready replicas", || {
        let deployments = deployments.clone();
        async move { (deployments.get("web").await.ok()?.status?.ready_replicas? == 3).then_some(()) }
    })
    .await;
    deployments.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    eventually("one pod left", || {
        let pods = pods.clone();
        async move {
            let live = pods.list(&ListParams::default()).await.ok()?.items;
            (live.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).count() == 1).then_some(())
        }
    })
    .await;
    // Orphan propagation keeps the replica set and its pod, without the owner reference.
    deployments.delete("web", &DeleteParams::orphan()).await.unwrap();
    eventually("the deployment gone, its replica set orphaned", || {
        let (deployments, sets) = (deployments.clone(), sets.clone());
        async move {
            let gone = matches!(deployments.get("web").await, Err(kube::Error::Api(s)) if s.code == 404);
            let set = sets.list(&ListParams::default()).await.ok()?.items.pop()?;
            (gone && set.metadata.owner_references.unwrap_or_default().is_empty()).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 1, "the orphaned pod stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_jobs_replication_controllers_and_namespace_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone()).create(&pp, &object(json!({"metadata": {"name": "team"}}))).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    eventually("default account and root CA", || {
        let (accounts, maps) = (accounts.clone(), maps.clone());
        async move {
            accounts.get("default").await.ok()?;
            let ca = maps.get("kube-root-ca.crt").await.ok()?.data?.remove("ca.crt")?;
            ca.contains("BEGIN CERTIFICATE").then_some(())
        }
    })
    .await;

    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), "team");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "team");
    let cron = json!({"metadata": {"name": "tick"}, "spec": {"schedule": "@every 2s", "concurrencyPolicy": "Forbid",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    cron_jobs.create(&pp, &object(cron)).await.unwrap();
    eventually("a completed job owned by the cron job", || {
        let jobs = jobs.clone();
        async move {
            let done = jobs.list(&ListParams::default()).await.ok()?.items.into_iter().find(|j| {
                j.status.as_ref().and_then(|s| s.succeeded) == Some(1)
                    && j.metadata.owner_references.as_ref().is_some_and(|o| o[0].name == "tick")
            })?;
            Some(done)
        }
    })
    .await;
    eventually("the cron job's status to show the run", || {
        let cron_jobs = cron_jobs.clone();
        async move {
            let status = cron_jobs.get("tick").await.ok()?.status?;
            (status.last_schedule_time.is_some() && status.last_successful_time.is_some()).then_some(())
        }
    })
    .await;
    cron_jobs.delete("tick", &DeleteParams::default()).await.unwrap();
    eventually("its jobs collected", || {
        let jobs = jobs.clone();
        async move {
            let left = jobs.list(&ListParams::default()).await.ok()?.items;
            left.iter().all(|j| j.metadata.deletion_timestamp.is_some()).then_some(())
        }
    })
    .await;

    let controllers: Api<ReplicationController> = Api::namespaced(client.clone(), "team");
    // A name in the template (the conformance suite's RC has one) does not name the pods.
    let rc = json!({"metadata": {"name": "legacy"}, "spec": {"replicas": 2,
        "template": {"metadata": {"name": "legacy", "labels": {"app": "legacy"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    controllers.create(&pp, &object(rc)).await.unwrap();
    eventually("two ready replicas", || {
        let controllers = controllers.clone();
        async move { (controllers.get("legacy").await.ok()?.status?.ready_replicas? == 2).then_some(()) }
    })
    .await;
}

/// Garbage collection for every owner reference, as upstream's collector: a config map owned by
/// a custom resource, a secret owned by a config map; background, foreground (the owner waits
/// for dependents that block its deletion) and orphan propagation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_kind_owns_any_kind() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{DynamicObject, GroupVersionKind};
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = json!({"metadata": {"name": "owners.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "owners", "singular": "owner", "kind": "Owner"},
        "versions": [{"name": "v1", "served": true, "storage": true,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    crds.create(&PostParams::default(), &object(crd)).await.unwrap();
    let resource = kube::discovery::ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Owner"),
        "owners",
    );
    let owners: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let gone = |result: Result<ConfigMap, kube::Error>| matches!(result, Err(kube::Error::Api(s)) if s.code == 404);
    let reference = |api_version: &str, kind: &str, name: &str, uid: &str, block: bool| json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": block});
    let owner_object = |name: &str| -> DynamicObject {
        object(json!({"apiVersion": "example.com/v1", "kind": "Owner", "metadata": {"name": name}}))
    };
    let owner = eventually("the custom resource type", || {
        let owners = owners.clone();
        let owner = owner_object("boss");
        async move { owners.create(&PostParams::default(), &owner).await.ok() }
    })
    .await;
    let owner_uid = owner.metadata.uid.clone().unwrap();

    // Background: the custom resource goes, then its config map, then the config map's secret.
    let map = json!({"metadata": {"name": "owned", "ownerReferences": [reference("example.com/v1", "Owner", "boss", &owner_uid, false)]}});
    let map = maps.create(&PostParams::default(), &object(map)).await.unwrap();
    let secret = json!({"metadata": {"name": "owned-secret", "ownerReferences": [reference("v1", "ConfigMap", "owned", &map.metadata.uid.clone().unwrap(), false)]}});
    secrets.create(&PostParams::default(), &object(secret)).await.unwrap();
    // A dependent whose owner exists is left alone.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(maps.get("owned").await.is_ok() && secrets.get("owned-secret").await.is_ok());
    owners.delete("boss", &DeleteParams::background()).await.unwrap();
    eventually("the config map and its secret collected", || {
        let (maps, secrets) = (maps.clone(), secrets.clone());
        async move {
            let secret_gone = matches!(secrets.get("owned-secret").await, Err(kube::Error::Api(s)) if s.code == 404);
            (gone(maps.get("owned").await) && secret_gone).then_some(())
        }
    })
    .await;

    // Foreground: the owner stays (Terminating) until its blocking dependent is gone.
    let owner = owners.create(&PostParams::default(), &owner_object("fg")).await.unwrap();
    let uid = owner.metadata.uid.clone().unwrap();
    let map = json!({"metadata": {"name": "blocker", "finalizers": ["example.com/hold"],
        "ownerReferences": [reference("example.com/v1", "Owner", "fg", &uid, true)]}});
    maps.create(&PostParams::default(), &object(map)).await.unwrap();
    owners.delete("fg", &DeleteParams::foreground()).await.unwrap();
    eventually("the blocking dependent being deleted", || {
        let maps = maps.clone();
        async move { maps.get("blocker").await.ok()?.metadata.deletion_timestamp.map(|_| ()) }
    })
    .await;
    let waiting = owners.get("fg").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(waiting.metadata.finalizers.unwrap_or_default(), ["foregroundDeletion"]);
    maps.patch("blocker", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    eventually("the owner gone after its dependent", || {
        let owners = owners.clone();
        async move { matches!(owners.get("fg").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;

    // Orphan: the dependent stays without its reference.
    let owner = owners.create(&PostParams::default(), &owner_object("or")).await.unwrap();
    let uid = owner.metadata.uid.clone().unwrap();
    let map = json!({"metadata": {"name": "orphan", "ownerReferences": [reference("example.com/v1", "Owner", "or", &uid, true)]}});
    maps.create(&PostParams::default(), &object(map)).await.unwrap();
    owners.delete("or", &DeleteParams::orphan()).await.unwrap();
    eventually("the owner gone, its dependent orphaned", || {
        let (owners, maps) = (owners.clone(), maps.clone());
        async move {
            let owner_gone = matches!(owners.get("or").await, Err(kube::Error::Api(s)) if s.code == 404);
            let map = maps.get("orphan").await.ok()?;
            (owner_gone && map.metadata.owner_references.unwrap_or_default().is_empty()).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_quotas_count_usage_and_refuse_what_exceeds_them() {
    use k8s_openapi::api::core::v1::{ResourceQuota, Service};
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let hard = json!({"pods": "2", "cpu": "1", "memory": "500Mi", "services": "10", "services.loadbalancers": "1",
        "count/replicasets.apps": "1", "resourcequotas": "1"});
    quotas.create(&pp, &object(json!({"metadata": {"name": "q"}, "spec": {"hard": hard}}))).await.unwrap();
    let used = |expected: serde_json::Value| {
        let quotas = quotas.clone();
        async move {
            let q = quotas.get("q").await.ok()?;
            let used = serde_json::to_value(q.status?.used?).ok()?;
            expected.as_object()?.iter().all(|(k, v)| used.get(k) == Some(v)).then_some(())
        }
    };
    eventually("usage calculated", || {
        used(json!({"pods": "0", "cpu": "0", "resourcequotas": "1", "count/replicasets.apps": "0"}))
    })
    .await;

    let pod = |name: &str, cpu: &str| -> Pod {
        object(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx",
            "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]}}))
    };
    pods.create(&pp, &pod("fits", "500m")).await.unwrap();
    // A dry run is checked but not charged.
    let dry = PostParams { dry_run: true, ..Default::default() };
    pods.create(&dry, &pod("dry", "400m")).await.unwrap();
    let refused = pods.create(&pp, &pod("too-big", "600m")).await.unwrap_err();
    let kube::Error::Api(status) = refused else { panic!("expected a Status") };
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"too-big\" is forbidden: exceeded quota: q, requested: cpu=600m, used: cpu=500m, limited: cpu=1"
    );
    let unstated: Pod =
        object(json!({"metadata": {"name": "no-requests"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}));
    let kube::Error::Api(status) = pods.create(&pp, &unstated).await.unwrap_err() else { panic!() };
    assert_eq!(
        status.message,
        "pods \"no-requests\" is forbidden: failed quota: q: must specify cpu for: c; memory for: c"
    );
    eventually("the pod counted", || used(json!({"pods": "1", "cpu": "500m", "memory": "100Mi"}))).await;

    // Two load balancers in a row: the second is refused before the controller recounts.
    let lb = |name: &str| -> Service {
        object(json!({"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}))
    };
    services.create(&pp, &lb("lb-1")).await.unwrap();
    let kube::Error::Api(status) = services.create(&pp, &lb("lb-2")).await.unwrap_err() else { panic!() };
    assert!(status.message.contains("exceeded quota: q, requested: services.loadbalancers=1"), "{}", status.message);

    // Object counts of any kind.
    let set = |name: &str| -> ReplicaSet {
        object(json!({"metadata": {"name": name}, "spec": {"replicas": 0, "selector": {"matchLabels": {"rs": name}},
            "template": {"metadata": {"labels": {"rs": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
    };
    sets.create(&pp, &set("one")).await.unwrap();
    let refused = sets.create(&pp, &set("two")).await.map(|_| ()).unwrap_err().to_string();
    assert!(refused.contains("exceeded quota"), "{refused}");

    // Deleting gives the usage back.
    pods.delete("fits", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    sets.delete("one", &DeleteParams::default()).await.unwrap();
    eventually("usage released", || {
        used(json!({"pods": "0", "cpu": "0", "memory": "0", "count/replicasets.apps": "0"}))
    })
    .await;
    pods.create(&pp, &pod("fits-now", "900m")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sets_adopt_matching_orphans_and_release_pods_that_stop_matching() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let pp = PostParams::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let orphan = json!({"metadata": {"name": "orphan", "labels": {"app": "adopt"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    pods.create(&pp, &object(orphan)).await.unwrap();
    let rs = json!({"metadata": {"name": "adopter"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "adopt"}},
        "template": {"metadata": {"labels": {"app": "adopt"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let rs = sets.create(&pp, &object(rs)).await.unwrap();
    let uid = rs.metadata.uid.clone().unwrap();
    let controlled_by = |pod: &Pod, uid: &str| {
        pod.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true))
    };
    eventually("the orphan adopted", || {
        let (pods, uid) = (pods.clone(), uid.clone());
        async move { controlled_by(&pods.get("orphan").await.ok()?, &uid).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 1, "the adopted pod is the one replica");

    // A pod whose labels stop matching is released, and replaced.
    pods.patch("orphan", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})))
        .await
        .unwrap();
    eventually("released and replaced", || {
        let (pods, uid) = (pods.clone(), uid.clone());
        async move {
            let all = pods.list(&ListParams::default()).await.ok()?.items;
            let released = all.iter().any(|p| p.metadata.name.as_deref() == Some("orphan") && !controlled_by(p, &uid));
            let replacement =
                all.iter().any(|p| p.metadata.name.as_deref() != Some("orphan") && controlled_by(p, &uid));
            (released && replacement).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budgets_count_healthy_pods_and_gate_evictions() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::EvictParams;
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = cluster(dir.path()).await;
    // kube-rs retries a 429 fifteen times by default: this client takes the refusal as it is.
    let kubeconfig = Kubeconfig::from_yaml(&server.admin_kubeconfig("c").unwrap()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.default_retry = false;
    let once = kube::Client::try_from(config).unwrap();
    let pp = PostParams::default();
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    budgets
        .create(&pp, &object(json!({"metadata": {"name": "b"}, "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "pdb"}}}})))
        .await
        .unwrap();
    let rs = json!({"metadata": {"name": "pdb"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "pdb"}},
        "template": {"metadata": {"labels": {"app": "pdb"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    sets.create(&pp, &object(rs)).await.unwrap();
    let healthy = |current: i32, allowed: i32| {
        let budgets = budgets.clone();
        async move {
            let s = budgets.get("b").await.ok()?.status?;
            (s.current_healthy == current && s.disruptions_allowed == allowed && s.observed_generation.is_some())
                .then_some(())
        }
    };
    eventually("three healthy, none allowed", || healthy(3, 0)).await;
    let victim = pods.list(&ListParams::default()).await.unwrap().items[0].metadata.name.clone().unwrap();
    let refused = Api::<Pod>::namespaced(once, "default").evict(&victim, &EvictParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = refused else { panic!("expected a Status") };
    assert_eq!((status.code, status.reason.as_str()), (429, "TooManyRequests"));
    assert!(pods.get(&victim).await.is_ok(), "a refused eviction deletes nothing");

    budgets.patch("b", &PatchParams::default(), &Patch::Merge(json!({"spec": {"minAvailable": 2}}))).await.unwrap();
    eventually("one disruption allowed", || healthy(3, 1)).await;
    pods.evict(&victim, &EvictParams::default()).await.unwrap();
    let status = budgets.get("b").await.unwrap().status.unwrap();
    assert!(status.disrupted_pods.unwrap_or_default().contains_key(&victim), "the eviction is recorded in the budget");
    eventually("the evicted pod gone", || {
        let (pods, victim) = (pods.clone(), victim.clone());
        async move { matches!(pods.get(&victim).await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_jobs_run_one_pod_per_index_and_report_completed_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let job = json!({"metadata": {"name": "idx"}, "spec": {"completionMode": "Indexed", "completions": 3, "parallelism": 3,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "exit 0"]}]}}}});
    jobs.create(&PostParams::default(), &object(job)).await.unwrap();
    eventually("the job complete with indexes 0-2", || {
        let jobs = jobs.clone();
        async move {
            let status = jobs.get("idx").await.ok()?.status?;
            let complete = status.conditions?.iter().any(|c| c.type_ == "Complete" && c.status == "True");
            (complete && status.completed_indexes.as_deref() == Some("0-2")).then_some(())
        }
    })
    .await;
    let mut seen: Vec<(String, String)> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let spec = p.spec.unwrap();
            let env = spec.containers[0].env.clone().unwrap_or_default();
            assert!(env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"), "the index is in the environment");
            (
                p.metadata.labels.unwrap()["batch.kubernetes.io/job-completion-index"].clone(),
                spec.hostname.unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec![("0".into(), "idx-0".into()), ("1".into(), "idx-1".into()), ("2".into(), "idx-2".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_refused_by_a_quota_says_so_until_it_fits() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let pp = PostParams::default();
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let rcs: Api<ReplicationController> = Api::namespaced(client.clone(), "default");
    quotas.create(&pp, &object(json!({"metadata": {"name": "two"}, "spec": {"hard": {"pods": "2"}}}))).await.unwrap();
    eventually("the quota counted", || {
        let quotas = quotas.clone();
        async move { quotas.get("two").await.ok()?.status?.used.is_some().then_some(()) }
    })
    .await;
    let rc = json!({"metadata": {"name": "condition-test"}, "spec": {"replicas": 3, "selector": {"name": "ct"},
        "template": {"metadata": {"labels": {"name": "ct"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    rcs.create(&pp, &object(rc)).await.unwrap();
    let failure = |present: bool| {
        let rcs = rcs.clone();
        async move {
            let rc = rcs.get("condition-test").await.ok()?;
            let status = rc.status?;
            let has = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "ReplicaFailure" && c.reason.as_deref() == Some("FailedCreate"));
            (status.observed_generation >= rc.metadata.generation && has == present).then_some(())
        }
    };
    eventually("the ReplicaFailure condition", || failure(true)).await;
    rcs.patch("condition-test", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    eventually("the condition gone", || failure(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_adopt_orphaned_replica_sets_and_continue_their_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let pp = PostParams::default();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let orphan = json!({"metadata": {"name": "old", "labels": {"name": "sample", "pod": "httpd"},
        "annotations": {"deployment.kubernetes.io/revision": "3546343826724305832"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"name": "sample", "pod": "httpd"}},
        "template": {"metadata": {"labels": {"name": "sample", "pod": "httpd"}}, "spec": {"containers": [{"name": "httpd", "image": "httpd"}]}}}});
    let orphan = tokio::time::timeout(Duration::from_secs(30), sets.create(&pp, &object(orphan)))
        .await
        .expect("the replica set is created in time")
        .unwrap();
    let deployment = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"name": "sample"}},
        "template": {"metadata": {"labels": {"name": "sample"}}, "spec": {"containers": [{"name": "agnhost", "image": "agnhost"}]}}}});
    let deployment = tokio::time::timeout(Duration::from_secs(30), deployments.create(&pp, &object(deployment)))
        .await
        .expect("the deployment is created in time")
        .unwrap();
    let uid = deployment.metadata.uid.unwrap();
    eventually("the next revision, the orphan adopted and scaled down", || {
        let (deployments, sets, uid) = (deployments.clone(), sets.clone(), uid.clone());
        async move {
            let d = deployments.get("d").await.ok()?;
            let revision = d.metadata.annotations?.get("deployment.kubernetes.io/revision").cloned()?;
            let old = sets.get("old").await.ok()?;
            let adopted =
                old.metadata.owner_references.iter().flatten().any(|o| o.uid == uid && o.controller == Some(true));
            (revision == "3546343826724305833" && adopted && old.spec?.replicas == Some(0)).then_some(())
        }
    })
    .await;
    assert_eq!(sets.get("old").await.unwrap().metadata.uid, orphan.metadata.uid, "adopted, not replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_owners_deleted_in_the_foreground_goes_entirely() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = cluster(dir.path()).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut uids = std::collections::HashMap::new();
    for name in ["pod1", "pod2", "pod3"] {
        let pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let created = pods.create(&PostParams::default(), &object(pod)).await.unwrap();
        uids.insert(name, created.metadata.uid.unwrap());
    }
    for (name, owner) in [("pod1", "pod3"), ("pod2", "pod1"), ("pod3", "pod2")] {
        let patch = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": uids[owner],
            "controller": true, "blockOwnerDeletion": true}]}});
        pods.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    }
    pods.delete("pod1", &DeleteParams::foreground()).await.unwrap();
    eventually("every pod of the ring gone", || {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default()).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
}
