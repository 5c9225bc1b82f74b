//! Deployments inside the virtual cluster (`vkube up`), driven by kubectl.

mod common;

use std::time::Duration;

use common::{HostKind, VirtualCluster, wait_until};

on_both_hosts! {
fn deployment_rolls_out_scales_rolls_back_and_cascades(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let (k, host, dir) = (&cluster.k, &cluster.host, cluster.scratch.clone());
    k.ok(&["create", "deployment", "web", "--image=nginx:1.27", "--replicas=3"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let pods = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.status.phase} {.status.podIP}{\"\\n\"}{end}",
    ]);
    assert_eq!(pods.lines().filter(|l| l.starts_with("Running 10.244.")).count(), 3, "{pods}");
    assert_eq!(host.ok(&["get", "pods", "-n", "vcluster-vc1", "-o", "name"]).lines().count(), 3);

    // A daemon set runs one pod on each node the virtual cluster shows (those running its pods).
    let nodes = k.ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
    nodes.sort();
    assert!(!nodes.is_empty());
    let agent = dir.join("ds.yaml");
    std::fs::write(&agent, "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: agent, image: busybox}]}\n").unwrap();
    k.ok(&["apply", "-f", agent.to_str().unwrap()]);
    k.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    let placed = k.ok(&["get", "pods", "-l", "app=agent", "-o", "jsonpath={.items[*].spec.nodeName}"]);
    let mut placed: Vec<&str> = placed.split_whitespace().collect();
    placed.sort();
    assert_eq!(placed, nodes, "one pod per node");
    // Every template is a ControllerRevision: history lists them and undo goes back to one.
    k.ok(&["set", "image", "daemonset/agent", "agent=busybox:1.36"]);
    wait_until(Duration::from_secs(30), "the second revision", || {
        k.ok(&["rollout", "history", "daemonset/agent"]).lines().filter(|l| l.starts_with(['1', '2'])).count() == 2
    });
    k.ok(&["rollout", "undo", "daemonset/agent", "--to-revision=1"]);
    assert_eq!(k.ok(&["get", "daemonset", "agent", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]), "busybox");
    k.ok(&["delete", "daemonset", "agent"]);
    wait_until(Duration::from_secs(20), "daemon set pods gone", || {
        k.ok(&["get", "pods", "-l", "app=agent", "-o", "name"]).is_empty()
    });

    k.ok(&["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let images = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
    assert_eq!(images.split_whitespace().filter(|i| *i == "nginx:1.28").count(), 3, "{images}");
    k.ok(&["rollout", "undo", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(
        k.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]),
        "nginx:1.27"
    );

    k.ok(&["scale", "deployment/web", "--replicas=5"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(k.ok(&["get", "deployment", "web"]).contains("5/5"));
    k.ok(&["scale", "deployment/web", "--replicas=2"]);
    wait_until(Duration::from_secs(20), "two pods", || {
        k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]).lines().count() == 2
    });

    k.ok(&["delete", "deployment", "web"]);
    wait_until(Duration::from_secs(20), "cascade to replica sets and pods, virtual and host", || {
        k.ok(&["get", "replicasets,pods", "-o", "name"]).is_empty()
            && host.ok(&["get", "pods", "-n", "vcluster-vc1", "-o", "name"]).is_empty()
    });

    // A job with three completions, two at a time; its pods go when the job goes.
    let job = dir.join("job.yaml");
    std::fs::write(&job, "apiVersion: batch/v1\nkind: Job\nmetadata: {name: three}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n").unwrap();
    k.ok(&["apply", "-f", job.to_str().unwrap()]);
    k.ok(&["wait", "--for=condition=Complete", "job/three", "--timeout=60s"]);
    assert_eq!(k.ok(&["get", "job", "three", "-o", "jsonpath={.status.succeeded}"]), "3");
    let phases = k.ok(&["get", "pods", "-l", "job-name=three", "-o", "jsonpath={.items[*].status.phase}"]);
    assert_eq!(phases.split_whitespace().filter(|p| *p == "Succeeded").count(), 3, "{phases}");
    k.ok(&["delete", "job", "three"]);
    wait_until(Duration::from_secs(20), "job pods gone", || k.ok(&["get", "pods", "-o", "name"]).is_empty());

    // A stateful set starts web-0 then web-1 with their claims, rolls an image change, and cascades.
    let set = dir.join("sts.yaml");
    std::fs::write(&set, "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: postgres:16}]}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n").unwrap();
    k.ok(&["apply", "-f", set.to_str().unwrap()]);
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    assert_eq!(k.ok(&["get", "pods", "-l", "app=db", "-o", "jsonpath={.items[*].metadata.name}"]), "db-0 db-1");
    assert_eq!(k.ok(&["get", "pod", "db-1", "-o", "jsonpath={.spec.hostname}.{.spec.subdomain}"]), "db-1.db");
    assert_eq!(k.ok(&["get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"]), "data-db-0 data-db-1");
    let created = |pod: &str| k.ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.creationTimestamp}"]);
    assert!(created("db-0") <= created("db-1"), "ordered start");
    k.ok(&["set", "image", "statefulset/db", "db=postgres:17"]);
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app=db", "-o", "jsonpath={.items[*].spec.containers[0].image}"]),
        "postgres:17 postgres:17"
    );
    k.ok(&["delete", "statefulset", "db"]);
    wait_until(Duration::from_secs(20), "stateful set pods gone", || k.ok(&["get", "pods", "-o", "name"]).is_empty());

    // New namespaces get a default service account and the root CA; deleting one removes its pods everywhere.
    k.ok(&["create", "namespace", "team"]);
    wait_until(Duration::from_secs(10), "default service account and kube-root-ca.crt", || {
        k.ok(&["get", "serviceaccount,configmap", "-n", "team", "-o", "name"]).lines().count() == 2
    });
    assert!(
        k.ok(&["get", "configmap", "kube-root-ca.crt", "-n", "team", "-o", "jsonpath={.data.ca\\.crt}"])
            .contains("BEGIN CERTIFICATE")
    );
    assert!(k.ok(&["create", "token", "default", "-n", "team"]).starts_with("eyJ"));
    k.ok(&["run", "worker", "-n", "team", "--image=busybox"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/worker", "-n", "team", "--timeout=30s"]);
    assert!(host.ok(&["get", "pods", "-n", "vcluster-vc1", "-o", "name"]).contains("worker-x-team-x-vc1"));
    k.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    wait_until(Duration::from_secs(20), "the namespace's host pod gone", || {
        host.ok(&["get", "pods", "-n", "vcluster-vc1", "-o", "name"]).is_empty()
    });
    assert!(cluster.stop().success());
}
}

on_both_hosts! {
fn cron_jobs_replication_controllers_restarts_and_the_kubernetes_service(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let (k, host, dir) = (&cluster.k, &cluster.host, cluster.scratch.clone());

    // default/kubernetes stands for the virtual cluster's host service and reaches the virtual API server.
    wait_until(Duration::from_secs(10), "default/kubernetes", || {
        k.output(&["get", "service", "kubernetes", "-o", "name"]).status.success()
    });
    let host_ip = host.ok(&["get", "service", "vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(k.ok(&["get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]), host_ip);
    if kind == HostKind::Simulated {
        // A real host refuses a loopback address as an endpoint (the virtual API server listens on
        // 127.0.0.1 here), so its endpoints stay empty there.
        wait_until(Duration::from_secs(10), "default/kubernetes endpoints", || {
            k.output(&["get", "endpoints", "kubernetes", "-o", "name"]).status.success()
        });
        let port = k.ok(&["get", "endpoints", "kubernetes", "-o", "jsonpath={.subsets[0].ports[0].port}"]);
        let kubeconfig = std::fs::read_to_string(&cluster.serving.kubeconfig).unwrap();
        assert!(kubeconfig.contains(&format!(":{port}")), "endpoints name the API server port {port}");
    }
    assert!(
        !host.ok(&["get", "services", "-n", "vcluster-vc1", "-o", "name"]).contains("kubernetes-x-default"),
        "not copied to the host like a tenant service"
    );

    // A cron job on a short schedule starts jobs that complete; history limits prune them.
    let bad = k.fails(&["create", "cronjob", "bad", "--image=busybox", "--schedule=every minute"]);
    assert!(bad.contains("spec.schedule") && bad.contains("unparseable schedule"), "{bad}");
    k.ok(&["create", "cronjob", "tick", "--image=busybox", "--schedule=@every 2s"]);
    k.ok(&["patch", "cronjob", "tick", "--type=merge", "-p", r#"{"spec":{"successfulJobsHistoryLimit":1}}"#]);
    wait_until(Duration::from_secs(40), "a completed run and the last schedule time", || {
        let done = k.ok(&["get", "jobs", "-o", "jsonpath={range .items[*]}{.status.succeeded}{\"\\n\"}{end}"]);
        done.lines().any(|l| l == "1")
            && !k.ok(&["get", "cronjob", "tick", "-o", "jsonpath={.status.lastSuccessfulTime}"]).is_empty()
    });
    let owners = k.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.ownerReferences[0].name}"]);
    assert!(owners.split_whitespace().all(|o| o == "tick"), "{owners}");
    wait_until(Duration::from_secs(30), "at most one finished job kept", || {
        let done = k.ok(&["get", "jobs", "-o", "jsonpath={range .items[*]}{.status.succeeded}{\"\\n\"}{end}"]);
        done.lines().filter(|l| *l == "1").count() <= 1
    });
    k.ok(&["delete", "cronjob", "tick"]);
    wait_until(Duration::from_secs(20), "its jobs and pods gone", || {
        k.ok(&["get", "jobs,pods", "-o", "name"]).is_empty()
    });

    // A replication controller keeps its replicas and scales.
    let rc = dir.join("rc.yaml");
    std::fs::write(&rc, "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: legacy}}\n    spec: {containers: [{name: c, image: nginx}]}\n").unwrap();
    k.ok(&["apply", "-f", rc.to_str().unwrap()]);
    wait_until(Duration::from_secs(30), "two ready replicas", || {
        k.ok(&["get", "rc", "legacy", "-o", "jsonpath={.status.readyReplicas}"]) == "2"
    });
    assert_eq!(k.ok(&["get", "rc", "legacy", "-o", "jsonpath={.spec.selector.app}"]), "legacy", "selector defaulted");
    k.ok(&["scale", "rc", "legacy", "--replicas=3"]);
    wait_until(Duration::from_secs(30), "three ready replicas", || {
        k.ok(&["get", "rc", "legacy", "-o", "jsonpath={.status.readyReplicas}"]) == "3"
    });
    k.ok(&["delete", "pod", "-l", "app=legacy", "--wait=false"]);
    wait_until(Duration::from_secs(30), "replaced pods", || {
        k.ok(&["get", "rc", "legacy", "-o", "jsonpath={.status.readyReplicas}"]) == "3"
    });
    k.ok(&["delete", "rc", "legacy"]);
    wait_until(Duration::from_secs(20), "its pods gone", || k.ok(&["get", "pods", "-o", "name"]).is_empty());

    // `kubectl rollout restart` replaces every pod of a deployment.
    k.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=2"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let before = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]);
    k.ok(&["rollout", "restart", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    wait_until(Duration::from_secs(30), "only new pods", || {
        let after = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]);
        after.split_whitespace().count() == 2 && after.split_whitespace().all(|p| !before.contains(p))
    });
    assert!(
        k.ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.template.metadata.annotations}"])
            .contains("kubectl.kubernetes.io/restartedAt")
    );
    assert_eq!(
        k.ok(&["rollout", "history", "deployment/web"])
            .lines()
            .filter(|l| l.trim().starts_with(char::is_numeric))
            .count(),
        2
    );
    assert!(cluster.stop().success());
}
}
