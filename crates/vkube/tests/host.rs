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
    // kubectl describe reads the service's EndpointSlices (an unnamed port included).
    let described = k.ok(&["describe", "service", "web"]);
    assert!(described.contains("Endpoints:") && described.contains("10.244."), "{described}");
    k.ok(&["delete", "pod", "web", "--timeout=20s"]);
    assert!(k.ok(&["get", "pods", "-o", "name"]).is_empty());
    assert!(host.stop().success());
}

#[test]
fn serve_runs_against_a_separate_host_and_names_settings_it_ignores() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let host = ApiServerProcess::start_command(
        &["host", "--dir", state.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        state.join("host.kubeconfig"),
    );
    let config = dir.path().join("vcluster.yaml");
    std::fs::write(&config, "sync:\n  toHost:\n    volumeSnapshots:\n      enabled: true\n").unwrap();
    let vc_dir = dir.path().join("vc");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["serve", "--name", "team", "--host-kubeconfig"])
        .arg(&host.kubeconfig)
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(&vc_dir)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(serve.stderr.take().unwrap()).lines();
    let warning = stderr.by_ref().map_while(Result::ok).find(|l| l.starts_with("warning:")).unwrap();
    // Nobody reads stderr any more: the process must keep running (and stop cleanly) regardless.
    drop(stderr);
    assert!(
        warning.contains("sync.toHost.volumeSnapshots.enabled is set, but vkube does not sync volume snapshots yet"),
        "{warning}"
    );
    let mut stdout = BufReader::new(serve.stdout.take().unwrap()).lines();
    assert!(stdout.by_ref().map_while(Result::ok).any(|l| l == "ready"));
    std::thread::spawn(move || for _ in stdout {});
    let k = Kubectl::new(33, &vc_dir.join("team.kubeconfig"), home.path());
    k.ok(&["run", "web", "--image=nginx:1.27"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let on_host = Kubectl::new(33, &host.kubeconfig, home.path());
    assert!(on_host.ok(&["get", "pods", "-n", "vcluster-team", "-o", "name"]).contains("pod/web-x-default-x-team"));
    let _ = std::process::Command::new("kill").arg("-TERM").arg(serve.id().to_string()).status();
    assert!(serve.wait().unwrap().success());
    assert!(host.stop().success());
}

#[test]
fn serve_refuses_a_custom_resource_the_host_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("host");
    let host = ApiServerProcess::start_command(
        &["host", "--dir", state.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        state.join("host.kubeconfig"),
    );
    let config = dir.path().join("vcluster.yaml");
    std::fs::write(
        &config,
        "sync:\n  toHost:\n    customResources:\n      widgets.example.com:\n        enabled: true\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["serve", "--name", "team", "--host-kubeconfig"])
        .arg(&host.kubeconfig)
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(dir.path().join("vc"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: the syncer could not start: sync.toHost.customResources[\"widgets.example.com\"]")
            && stderr.contains("not available in the host cluster"),
        "{stderr}"
    );
    assert!(host.stop().success());
}
