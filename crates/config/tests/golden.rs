//! Golden files: every valid file parses (and survives a defaults round trip), every invalid file
//! produces exactly the problems its `# expect:` lines name.

use std::path::Path;

use serde_json::json;
use vkube_config::{AutoSwitch, Config};

fn files(dir: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(dir);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no files in {}", dir.display());
    out
}

#[test]
fn valid_files_parse_and_round_trip() {
    for (name, text) in files("valid") {
        let config = Config::from_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = Config::from_yaml(&config.to_yaml())
            .unwrap_or_else(|e| panic!("{name} after round trip: {e}\n{}", config.to_yaml()));
        assert_eq!(again, config, "{name}");
    }
}

#[test]
fn the_reference_defaults_are_the_defaults() {
    let (_, text) = files("valid").into_iter().find(|(n, _)| n == "reference-defaults.yaml").unwrap();
    assert_eq!(Config::from_yaml(&text).unwrap(), Config::default());
    assert_eq!(Config::from_yaml("").unwrap(), Config::default());
}

#[test]
fn defaulted_output_matches_the_reference_key_by_key() {
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let expected = [
        ("/sync/toHost/pods/enabled", json!(true)),
        ("/sync/toHost/pods/translateImage", json!({})),
        ("/sync/toHost/pods/enforceTolerations", json!([])),
        ("/sync/toHost/pods/useSecretsForSATokens", json!(false)),
        ("/sync/toHost/pods/rewriteHosts/enabled", json!(true)),
        ("/sync/toHost/pods/rewriteHosts/initContainer/image", json!("library/alpine:3.20")),
        ("/sync/toHost/pods/rewriteHosts/initContainer/resources/limits", json!({"cpu": "30m", "memory": "64Mi"})),
        ("/sync/toHost/pods/rewriteHosts/initContainer/resources/requests", json!({"cpu": "30m", "memory": "64Mi"})),
        ("/sync/toHost/secrets/enabled", json!(true)),
        ("/sync/toHost/secrets/all", json!(false)),
        ("/sync/toHost/configMaps/enabled", json!(true)),
        ("/sync/toHost/configMaps/all", json!(false)),
        ("/sync/toHost/ingresses/enabled", json!(false)),
        ("/sync/toHost/services/enabled", json!(true)),
        ("/sync/toHost/endpoints/enabled", json!(true)),
        ("/sync/toHost/networkPolicies/enabled", json!(false)),
        ("/sync/toHost/persistentVolumeClaims/enabled", json!(true)),
        ("/sync/toHost/persistentVolumes/enabled", json!(false)),
        ("/sync/toHost/volumeSnapshots/enabled", json!(false)),
        ("/sync/toHost/storageClasses/enabled", json!(false)),
        ("/sync/toHost/serviceAccounts/enabled", json!(false)),
        ("/sync/toHost/podDisruptionBudgets/enabled", json!(false)),
        ("/sync/toHost/priorityClasses/enabled", json!(false)),
        ("/sync/toHost/customResources", json!({})),
        ("/sync/fromHost/nodes/enabled", json!(false)),
        ("/sync/fromHost/nodes/syncBackChanges", json!(false)),
        ("/sync/fromHost/nodes/clearImageStatus", json!(false)),
        ("/sync/fromHost/nodes/selector/all", json!(false)),
        ("/sync/fromHost/nodes/selector/labels", json!({})),
        ("/sync/fromHost/events/enabled", json!(true)),
        ("/sync/fromHost/ingressClasses/enabled", json!(false)),
        ("/sync/fromHost/runtimeClasses/enabled", json!(false)),
        ("/sync/fromHost/priorityClasses/enabled", json!(false)),
        ("/sync/fromHost/storageClasses/enabled", json!("auto")),
        ("/sync/fromHost/csiNodes/enabled", json!("auto")),
        ("/sync/fromHost/csiDrivers/enabled", json!("auto")),
        ("/sync/fromHost/csiStorageCapacities/enabled", json!("auto")),
        ("/sync/fromHost/customResources", json!({})),
    ];
    for (pointer, value) in expected {
        assert_eq!(defaults.pointer(pointer), Some(&value), "{pointer}");
    }
}

#[test]
fn auto_switches_keep_three_states_and_resolve() {
    let config =
        Config::from_yaml("sync:\n  fromHost:\n    csiNodes: {enabled: true}\n    csiDrivers: {enabled: \"false\"}\n")
            .unwrap();
    assert_eq!(config.sync.from_host.csi_nodes.enabled, AutoSwitch::True);
    assert_eq!(config.sync.from_host.csi_drivers.enabled, AutoSwitch::False);
    assert_eq!(config.sync.from_host.storage_classes.enabled, AutoSwitch::Auto);
    let resolved = config.resolved();
    assert_eq!(resolved.sync.from_host.storage_classes.enabled, AutoSwitch::False);
    assert_eq!(resolved.sync.from_host.csi_nodes.enabled, AutoSwitch::True);
}

#[test]
fn invalid_files_report_exactly_the_expected_problems() {
    for (name, text) in files("invalid") {
        let exact: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect: ")).collect();
        let prefixes: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# expect-prefix: ")).collect();
        assert!(!exact.is_empty() || !prefixes.is_empty(), "{name} has no # expect lines");
        let problems = Config::from_yaml(&text).expect_err(&name).0;
        let got: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(got.len(), exact.len() + prefixes.len(), "{name}: got {got:#?}");
        for expected in &exact {
            assert!(got.iter().any(|g| g == expected), "{name}: missing {expected:?}; got {got:#?}");
        }
        for prefix in &prefixes {
            assert!(got.iter().any(|g| g.starts_with(prefix)), "{name}: nothing starts with {prefix:?}; got {got:#?}");
        }
    }
}

#[test]
fn the_committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("vcluster.schema.json");
    let current = serde_json::to_string_pretty(&vkube_config::json_schema()).unwrap() + "\n";
    if std::env::var_os("VKUBE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "crates/config/vcluster.schema.json is stale: run `VKUBE_UPDATE_SCHEMA=1 cargo test -p vkube-config` (or `vkube config schema > crates/config/vcluster.schema.json`)"
    );
}
