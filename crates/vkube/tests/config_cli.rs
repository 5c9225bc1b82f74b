//! `vkube config` as a user runs it.

use std::process::Command;

fn vkube(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vkube")).args(args).output().unwrap()
}

fn testdata(path: &str) -> String {
    format!("{}/../config/testdata/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_reports_every_mistake_and_exits_1() {
    let output = vkube(&["config", "validate", "-f", &testdata("invalid/three-mistakes.yaml")]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("sync.toHost.pods.enforceTolerations[0]: ")));
    assert!(lines.iter().any(|l| l.starts_with("sync.fromHost.priorityClasses.enabled: ")));
    assert!(lines.iter().any(|l| l.starts_with("sync.fromHost.nodes.selector: ")));
    assert!(String::from_utf8_lossy(&output.stderr).contains("3 problem(s)"));
}

#[test]
fn validate_accepts_good_files() {
    let output = vkube(&["config", "validate", "-f", &testdata("valid/every-option.yaml")]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    let missing = vkube(&["config", "validate", "-f", "/nonexistent/vcluster.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/vcluster.yaml"));
}

#[test]
fn defaults_validate_and_schema_is_the_committed_one() {
    let defaults = vkube(&["config", "defaults"]);
    assert!(defaults.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("defaults.yaml");
    std::fs::write(&file, &defaults.stdout).unwrap();
    assert!(vkube(&["config", "validate", "-f", file.to_str().unwrap()]).status.success());
    let schema = vkube(&["config", "schema"]);
    let committed =
        std::fs::read_to_string(format!("{}/../config/vcluster.schema.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(String::from_utf8_lossy(&schema.stdout), committed);
}

#[test]
fn rbac_follows_the_enabled_syncers() {
    let output = vkube(&["config", "rbac", "-f", &testdata("valid/every-option.yaml")]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("kind: Role") && text.contains("namespace: tenants-team-a"));
    assert!(text.contains("kind: ClusterRole") && text.contains("name: vc-team-a-v-tenants-team-a"));
    assert!(text.contains("ingresses") && text.contains("widgets") && text.contains("clusterissuers"));
    let defaults = String::from_utf8_lossy(&vkube(&["config", "rbac"]).stdout).to_string();
    assert!(!defaults.contains("ClusterRole"), "the defaults need no ClusterRole");
}
