//! Which valid `sync` settings the running syncer does not act on yet, so `vkube serve` can say
//! so at start instead of silently ignoring them.

use crate::Config;

/// One line per setting that is set but not implemented by the syncer yet.
pub fn not_yet_synced(config: &Config) -> Vec<String> {
    let to = &config.sync.to_host;
    let mut out = Vec::new();
    let mut unsupported = |set: bool, path: &str, what: &str| {
        if set {
            out.push(format!("{path} is set, but vkube does not {what} yet; the setting has no effect"));
        }
    };
    unsupported(to.volume_snapshots.enabled, "sync.toHost.volumeSnapshots.enabled", "sync volume snapshots");
    unsupported(
        !to.volume_snapshots.translate.is_empty(),
        "sync.toHost.volumeSnapshots.translate",
        "apply translate rules to volume snapshots",
    );
    unsupported(
        config.control_plane.advanced.virtual_scheduler.enabled,
        "controlPlane.advanced.virtualScheduler.enabled",
        "schedule pods inside the virtual cluster (the host's scheduler places them)",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_fully_supported_and_extras_are_named() {
        assert!(not_yet_synced(&Config::default()).is_empty(), "{:?}", not_yet_synced(&Config::default()));
        let config = Config::from_yaml(
            "controlPlane:\n  advanced:\n    virtualScheduler: {enabled: true}\nsync:\n  fromHost:\n    nodes: {enabled: true}\n",
        )
        .unwrap();
        assert!(
            not_yet_synced(&config)[0].starts_with("controlPlane.advanced.virtualScheduler.enabled is set"),
            "a virtual scheduler vkube does not run is named: {:?}",
            not_yet_synced(&config)
        );
        let config = Config::from_yaml(
            "controlPlane:\n  advanced:\n    defaultImageRegistry: registry.corp:5000\n    workloadServiceAccount: {name: runner}\n",
        )
        .unwrap();
        assert!(not_yet_synced(&config).is_empty(), "the registry and the workload account are acted on");
        let config = Config::from_yaml("sync:\n  toHost:\n    ingresses:\n      enabled: true\n").unwrap();
        assert!(not_yet_synced(&config).is_empty(), "ingresses are synced");
        let config = Config::from_yaml("sync:\n  toHost:\n    volumeSnapshots:\n      enabled: true\n").unwrap();
        let lines = not_yet_synced(&config);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("sync.toHost.volumeSnapshots.enabled is set"), "{lines:?}");
        let config = Config::from_yaml(
            "sync:\n  fromHost:\n    nodes:\n      enabled: true\n      syncBackChanges: true\n      clearImageStatus: true\n      selector: {labels: {pool: a}}\n",
        )
        .unwrap();
        assert!(not_yet_synced(&config).is_empty(), "node sync is acted on: {:?}", not_yet_synced(&config));
    }
}
