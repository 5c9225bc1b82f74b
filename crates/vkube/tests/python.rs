//! The official Python `kubernetes` client (PyPI) against `vkube apiserver`.
//! CI installs it into a venv and sets VKUBE_PYTHON (see .ci/run).

mod common;

use common::ApiServerProcess;

#[test]
fn python_client_list_create_patch_watch() {
    let python = std::env::var("VKUBE_PYTHON").unwrap_or_else(|_| "/tmp/vkube-ci-venv/bin/python".into());
    let probe = std::process::Command::new(&python).args(["-c", "import kubernetes"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "the Python kubernetes client is missing: run .ci/run once, or set VKUBE_PYTHON to an interpreter that has it"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServerProcess::start(dir.path(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let output = std::process::Command::new(&python).arg(script).arg(&server.kubeconfig).output().unwrap();
    assert!(
        output.status.success(),
        "python client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("python client ok"));
    server.stop();
}
