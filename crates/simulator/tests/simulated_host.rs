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
