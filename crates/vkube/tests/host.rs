//! `vkube host` (the simulated host cluster) driven by kubectl.

mod common;

use common::{ApiServerProcess, Kubectl};

#[test]
fn simulated_host_runs_pods_for_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let host = ApiServerProcess::start_command(
        &["host", "--dir", state.to_str().unwrap(), "--listen", "127.0.0.1:0", "--nodes", "3"],
        state.join("host.kubeconfig"),
    );
    let k = Kubectl::new(33, &host.kubeconfig, home.path());
    common::wait_until(std::time::Duration::from_secs(10), "three nodes", || {
        k.ok(&["get", "nodes", "-o", "name"]).lines().count() == 3
    });
    let nodes = k.ok(&["get", "nodes"]);
    assert!(nodes.contains("sim-node-2") && nodes.contains("Ready"), "{nodes}");
    k.ok(&["run", "web", "--image=nginx:1.27", "--labels=app=web"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=20s"]);
    let wide = k.ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(wide.contains("Running") && wide.contains("10.244.") && wide.contains("sim-node-"), "{wide}");
    let logs = k.ok(&["logs", "web"]);
    assert!(logs.contains("simulated container web of pod default/web"), "{logs}");
    k.ok(&["expose", "pod", "web", "--port=80"]);
    common::wait_until(std::time::Duration::from_secs(10), "endpoints", || {
        k.ok(&["get", "endpoints", "web", "-o", "jsonpath={.subsets[0].addresses[0].ip}"]).starts_with("10.244.")
    });
    k.ok(&["delete", "pod", "web", "--timeout=20s"]);
    assert!(k.ok(&["get", "pods", "-o", "name"]).is_empty());
    assert!(host.stop().success());
}
