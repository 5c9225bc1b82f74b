//! vkube beside a real Kubernetes (the upstream control plane `tools/k8s` builds): the simulated
//! kubelet attached to it, and a virtual cluster whose syncer runs on it with exactly the RBAC
//! `vkube config rbac` derives.

mod common;

use std::time::Duration;

use common::{ApiServerProcess, HostKind, Kubectl, RealControlPlane, VirtualCluster, wait_until};

/// `vkube host --attach`: simulated nodes and kubelet on a real control plane, whose own
/// scheduler places pods and whose controllers fill endpoints.
#[test]
fn the_simulated_kubelet_attaches_to_a_real_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let real = RealControlPlane::start(&dir.path().join("k8s"));
    let k = Kubectl::new(33, &real.kubeconfig, home.path());
    assert!(k.ok(&["get", "--raw", "/version"]).contains(r#""gitVersion": "v1.33.13""#));
    let _kubelet = ApiServerProcess::start_command(
        &["host", "--attach", real.kubeconfig.to_str().unwrap(), "--nodes", "2"],
        real.kubeconfig.clone(),
    );
    wait_until(Duration::from_secs(20), "two Ready nodes", || {
        k.ok(&["get", "nodes", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}"])
            == "True True"
    });
    k.ok(&["create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "--port=80"]);
    k.ok(&["expose", "deployment", "web", "--port=80"]);
    k.ok(&["wait", "--for=condition=Available", "deployment/web", "--timeout=60s"]);
    let nodes = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.nodeName}"]);
    assert!(nodes.split(' ').all(|n| n.starts_with("sim-node-")), "{nodes}");
    wait_until(Duration::from_secs(30), "the real endpoints controller to list both pods", || {
        k.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].addresses[0]}",
        ])
        .split(' ')
        .filter(|a| a.starts_with("10.244."))
        .count()
            == 2
    });

    // `kubectl logs` through kube-apiserver reaches the simulated kubelet's API.
    let logs = k.ok(&["logs", "deployment/web", "--tail=1"]);
    assert!(logs.starts_with("simulated container nginx is running"), "{logs}");
    let pod = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]);
    let missing = k.fails(&["logs", &pod, "--previous"]);
    assert!(missing.contains("previous terminated container \"nginx\""), "{missing}");
    // That API is the kubelet's: client certificates of the cluster's CA only, authorized by
    // kube-apiserver (nodes/proxy), so no one but the API server and admins reads a log directly.
    let port = k.ok(&["get", "node", "sim-node-0", "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"]);
    let address = k.ok(&["get", "node", "sim-node-0", "-o", "jsonpath={.status.addresses[0].address}"]);
    let node = k.ok(&["get", "pod", &pod, "-o", "jsonpath={.spec.nodeName}"]);
    let url = format!("https://{address}:{port}/containerLogs/default/{pod}/nginx");
    let pki = real.dir.join("pki");
    let curl = |cert: Option<&str>| {
        let mut command = std::process::Command::new("curl");
        command.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url]);
        if let Some(name) = cert {
            command
                .arg("--cert")
                .arg(pki.join(format!("{name}.crt")))
                .arg("--key")
                .arg(pki.join(format!("{name}.key")));
        }
        String::from_utf8(command.output().unwrap().stdout).unwrap()
    };
    assert_eq!(curl(Some("apiserver-kubelet-client")), "200", "the API server's own certificate ({node})");
    assert_eq!(curl(Some("scheduler")), "403", "a valid certificate without nodes/proxy");
    assert_eq!(curl(None), "000", "no certificate: no TLS session");
}

/// A virtual cluster on a real host, its syncer authenticated as a service account bound to
/// what `vkube config rbac` derives (a permission missing there fails this test).
#[test]
fn the_syncer_runs_on_a_real_host_with_the_derived_rbac() {
    let cluster = VirtualCluster::start(HostKind::Real, None);
    let (k, admin) = (&cluster.k, &cluster.host);
    k.ok(&["create", "configmap", "settings", "--from-literal=a=1"]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  containers:\n  - name: web\n    image: nginx:1.27\n    envFrom: [{configMapRef: {name: settings}}]\n";
    assert!(k.output_with_stdin(&["create", "-f", "-"], pod).status.success());
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let host_pods = admin.ok(&["get", "pods", "-n", "vcluster-vc1", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(host_pods.split(' ').any(|p| p == "web-x-default-x-vc1"), "{host_pods}");
    assert_eq!(
        admin.ok(&["get", "configmap", "settings-x-default-x-vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    // A service takes its cluster IP from the real host's allocator.
    k.ok(&["expose", "pod", "web", "--port=80"]);
    let virtual_ip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let host_ip =
        admin.ok(&["get", "service", "web-x-default-x-vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(virtual_ip, host_ip);
    assert!(host_ip.starts_with("10.0."), "{host_ip}");
    k.ok(&["delete", "pod", "web", "--timeout=60s"]);
    wait_until(Duration::from_secs(30), "the host pod gone", || {
        !admin.ok(&["get", "pods", "-n", "vcluster-vc1", "-o", "name"]).contains("web-x-default-x-vc1")
    });
}
