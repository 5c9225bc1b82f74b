//! The simulator against a real vkube API server, through kube-rs.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use vkube_simulator::{SimulatorConfig, run};

async fn start() -> (vkube_apiserver::RunningServer, kube::Client, tempfile::TempDir) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = vkube_apiserver::ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = vkube_apiserver::start(config, None).await.unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.admin_kubeconfig("host").unwrap()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap();
    (server, client, dir)
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod(name: &str, extra: serde_json::Value) -> Pod {
    let mut value = json!({"metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"name": "http", "containerPort": 8080}]}]}});
    if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_scheduled_run_complete_and_get_endpoints() {
    let (_server, client, _dir) = start().await;
    let simulator = tokio::spawn(run(
        client.clone(),
        SimulatorConfig { nodes: 2, default_run: Duration::from_millis(200), ..Default::default() },
    ));
    let nodes: Api<Node> = Api::all(client.clone());
    let names = eventually("two ready nodes", || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&ListParams::default()).await.ok()?;
            (list.items.len() == 2)
                .then(|| list.items.iter().map(|n| n.metadata.name.clone().unwrap()).collect::<Vec<_>>())
        }
    })
    .await;
    assert_eq!(names, ["sim-node-0", "sim-node-1"]);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("web-1", json!({}))).await.unwrap();
    pods.create(&PostParams::default(), &pod("web-2", json!({}))).await.unwrap();
    let running = eventually("web-1 running", || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("web-1").await.ok()?;
            let status = pod.status.clone()?;
            (status.phase.as_deref() == Some("Running")).then_some(pod)
        }
    })
    .await;
    let ip = running.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(ip.starts_with("10.244."), "{ip}");
    assert!(running.spec.as_ref().unwrap().node_name.as_deref().unwrap().starts_with("sim-node-"));
    let statuses = running.status.as_ref().unwrap().container_statuses.clone().unwrap();
    assert!(statuses[0].ready && statuses[0].container_id.is_some());

    let stuck = pod("stuck", json!({"nodeSelector": {"zone": "nowhere"}}));
    pods.create(&PostParams::default(), &stuck).await.unwrap();
    eventually("stuck to be unschedulable", || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("stuck").await.ok()?;
            let conditions = pod.status?.conditions?;
            conditions.iter().any(|c| c.reason.as_deref() == Some("Unschedulable")).then_some(())
        }
    })
    .await;
    // ... and says so in a Warning event, as kube-scheduler does.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    eventually("a FailedScheduling event for stuck", || {
        let events = events.clone();
        async move {
            let listed = events.list(&Default::default()).await.ok()?;
            listed
                .items
                .iter()
                .any(|e| {
                    e.involved_object.name.as_deref() == Some("stuck")
                        && e.reason.as_deref() == Some("FailedScheduling")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        }
    })
    .await;

    let mut job_pod = pod("once", json!({"restartPolicy": "Never"}));
    job_pod.metadata.labels = None;
    pods.create(&PostParams::default(), &job_pod).await.unwrap();
    eventually("the run-to-completion pod to succeed", || {
        let pods = pods.clone();
        async move { (pods.get("once").await.ok()?.status?.phase.as_deref() == Some("Succeeded")).then_some(()) }
    })
    .await;

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
    .unwrap();
    services.create(&PostParams::default(), &service).await.unwrap();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    eventually("endpoints with both pods", || {
        let endpoints = endpoints.clone();
        async move {
            let e = endpoints.get("web").await.ok()?;
            let subset = e.subsets?.into_iter().next()?;
            let addresses = subset.addresses?;
            (addresses.len() == 2 && subset.ports?[0].port == 8080).then_some(())
        }
    })
    .await;

    // A bound pod is deleted gracefully; the simulated kubelet confirms at once.
    pods.delete("web-1", &DeleteParams::default()).await.unwrap();
    eventually("web-1 gone", || {
        let pods = pods.clone();
        async move { matches!(pods.get("web-1").await, Err(kube::Error::Api(s)) if s.code == 404).then_some(()) }
    })
    .await;
    eventually("endpoints down to one pod", || {
        let endpoints = endpoints.clone();
        async move { (endpoints.get("web").await.ok()?.subsets?.first()?.addresses.as_ref()?.len() == 1).then_some(()) }
    })
    .await;
    simulator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fits_requests_and_preempts_lower_priority_pods() {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let (_server, client, _dir) = start().await;
    let _simulator = tokio::spawn(run(client.clone(), SimulatorConfig { nodes: 1, ..Default::default() }));
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("the node", || {
        let nodes = nodes.clone();
        async move { nodes.get_opt("sim-node-0").await.ok()?.map(|_| ()) }
    })
    .await;
    // As the conformance suite does: a made-up resource on the node's status.
    let extended = json!({"status": {"capacity": {"example.com/foo": "5"}, "allocatable": {"example.com/foo": "5"}}});
    nodes
        .patch_status("sim-node-0", &kube::api::PatchParams::default(), &kube::api::Patch::Strategic(extended))
        .await
        .unwrap();
    let classes: Api<PriorityClass> = Api::all(client.clone());
    for (name, value) in [("low", 1), ("medium", 100), ("high", 1000)] {
        let class = json!({"metadata": {"name": name}, "value": value});
        classes.create(&PostParams::default(), &serde_json::from_value(class).unwrap()).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let asking = |name: &str, class: &str, foo: &str| {
        let resources = json!({"requests": {"example.com/foo": foo}, "limits": {"example.com/foo": foo}});
        let mut pod = pod(name, json!({"priorityClassName": class}));
        pod.spec.as_mut().unwrap().containers[0].resources = Some(serde_json::from_value(resources).unwrap());
        pod
    };
    let phase = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get_opt(name).await.ok()?.and_then(|p| p.status?.phase) }
    };
    pods.create(&PostParams::default(), &asking("low", "low", "2")).await.unwrap();
    pods.create(&PostParams::default(), &asking("medium", "medium", "2")).await.unwrap();
    for name in ["low", "medium"] {
        eventually(name, || async move { (phase(name).await.as_deref() == Some("Running")).then_some(()) }).await;
    }

    // One more of the lowest priority does not fit (4 of 5 taken) and preempts nobody.
    pods.create(&PostParams::default(), &asking("another", "low", "2")).await.unwrap();
    let message = eventually("another unschedulable", || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("another").await.ok()?;
            let condition =
                pod.status?.conditions?.into_iter().find(|c| c.reason.as_deref() == Some("Unschedulable"))?;
            condition.message
        }
    })
    .await;
    assert!(message.starts_with("0/1 nodes are available: 1 Insufficient example.com/foo."), "{message}");
    assert!(pods.get("low").await.unwrap().metadata.deletion_timestamp.is_none(), "no lower priority to preempt");

    // A high-priority pod takes the low one's room: the low one is marked, then deleted.
    let watched = pods.clone();
    let marked = tokio::spawn(async move {
        use futures::StreamExt;
        let config = kube::runtime::watcher::Config::default().fields("metadata.name=low");
        let mut events = std::pin::pin!(kube::runtime::watcher(watched, config));
        let mut marked = false;
        while let Some(Ok(event)) = events.next().await {
            match event {
                kube::runtime::watcher::Event::Apply(pod) | kube::runtime::watcher::Event::InitApply(pod) => {
                    marked |=
                        pod.status.and_then(|s| s.conditions).into_iter().flatten().any(|c| {
                            c.type_ == "DisruptionTarget" && c.reason.as_deref() == Some("PreemptionByScheduler")
                        });
                }
                kube::runtime::watcher::Event::Delete(_) => return marked,
                _ => {}
            }
        }
        marked
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pods.create(&PostParams::default(), &asking("preemptor", "high", "2")).await.unwrap();
    let marked = tokio::time::timeout(Duration::from_secs(10), marked).await.expect("low deleted").unwrap();
    assert!(marked, "the victim carried DisruptionTarget before it went");
    eventually("preemptor running", || async move {
        (phase("preemptor").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let preemptor = pods.get("preemptor").await.unwrap();
    assert_eq!(preemptor.spec.unwrap().priority, Some(1000));
    assert!(pods.get("medium").await.unwrap().metadata.deletion_timestamp.is_none(), "only the lowest goes");
    assert_eq!(phase("another").await.as_deref(), Some("Pending"), "the freed room went to the higher priority");
}
