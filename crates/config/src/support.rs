//! Which valid `sync` settings the running syncer does not act on yet, so `vkube serve` can say
//! so at start instead of silently ignoring them.

use crate::Config;

/// One line per setting that is set but not implemented by the syncer yet.
pub fn not_yet_synced(config: &Config) -> Vec<String> {
    let to = &config.sync.to_host;
    let from = &config.sync.from_host;
    let mut out = Vec::new();
    let mut unsupported = |set: bool, path: &str, what: &str| {
        if set {
            out.push(format!("{path} is set, but vkube does not {what} yet; the setting has no effect"));
        }
    };
    unsupported(to.ingresses.enabled, "sync.toHost.ingresses.enabled", "sync ingresses");
    unsupported(to.network_policies.enabled, "sync.toHost.networkPolicies.enabled", "sync network policies");
    unsupported(to.persistent_volumes.enabled, "sync.toHost.persistentVolumes.enabled", "sync persistent volumes");
    unsupported(to.volume_snapshots.enabled, "sync.toHost.volumeSnapshots.enabled", "sync volume snapshots");
    unsupported(to.storage_classes.enabled, "sync.toHost.storageClasses.enabled", "sync storage classes");
    unsupported(to.service_accounts.enabled, "sync.toHost.serviceAccounts.enabled", "sync service accounts");
    unsupported(
        to.pod_disruption_budgets.enabled,
        "sync.toHost.podDisruptionBudgets.enabled",
        "sync pod disruption budgets",
    );
    unsupported(to.priority_classes.enabled, "sync.toHost.priorityClasses.enabled", "sync priority classes");
    unsupported(!to.custom_resources.is_empty(), "sync.toHost.customResources", "sync custom resources");
    let translates = [&to.ingresses, &to.services, &to.endpoints, &to.network_policies, &to.persistent_volume_claims]
        .iter()
        .any(|k| !k.translate.is_empty());
    unsupported(translates, "a sync.toHost.*.translate rule", "apply translate rules");
    unsupported(from.ingress_classes.enabled, "sync.fromHost.ingressClasses.enabled", "sync ingress classes");
    unsupported(from.runtime_classes.enabled, "sync.fromHost.runtimeClasses.enabled", "sync runtime classes");
    unsupported(from.priority_classes.enabled, "sync.fromHost.priorityClasses.enabled", "sync priority classes");
    unsupported(!from.custom_resources.is_empty(), "sync.fromHost.customResources", "sync custom resources");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_fully_supported_and_extras_are_named() {
        assert!(not_yet_synced(&Config::default()).is_empty(), "{:?}", not_yet_synced(&Config::default()));
        let config = Config::from_yaml("sync:\n  toHost:\n    ingresses:\n      enabled: true\n").unwrap();
        let lines = not_yet_synced(&config);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("sync.toHost.ingresses.enabled is set"), "{lines:?}");
    }
}
