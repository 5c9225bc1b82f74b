//! What the syncer may do inside the virtual cluster: read and write the kinds it syncs in both
//! directions (and their status), mint service-account tokens and bind pods, mirror nodes,
//! classes, CSI objects and events, copy custom resource definitions in, and the custom resources
//! the configuration names. `vkube serve` binds its user to a ClusterRole of these rules.

use serde_json::{Value, json};

use crate::{CustomResourceSync, MappedKind, MappedSync};

/// The user the syncer acts as inside the virtual cluster.
pub const USER: &str = "vkube:syncer";

const ALL: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

/// The rules of the syncer's ClusterRole for a configuration syncing `custom` resources and
/// copying `mapped` host objects in.
pub fn virtual_rules(custom: &[CustomResourceSync], mapped: &[MappedSync]) -> Vec<Value> {
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": [
            "pods", "pods/status", "pods/binding", "pods/ephemeralcontainers", "configmaps", "secrets",
            "services", "services/status", "endpoints", "persistentvolumeclaims",
            "persistentvolumeclaims/status", "persistentvolumes", "persistentvolumes/status",
            "serviceaccounts", "nodes", "nodes/status", "events", "namespaces",
        ], "verbs": ALL}),
        json!({"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}),
        json!({"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingresses/status", "ingressclasses", "networkpolicies"], "verbs": ALL}),
        json!({"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": ALL}),
        json!({"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ALL}),
        json!({"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses", "csidrivers", "csinodes", "csistoragecapacities"], "verbs": ALL}),
        json!({"apiGroups": ["node.k8s.io"], "resources": ["runtimeclasses"], "verbs": ALL}),
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ALL}),
        json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ALL}),
        json!({"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch", "create", "update", "patch"]}),
    ];
    let mapped_keys = mapped.iter().filter_map(|m| match &m.kind {
        MappedKind::Custom(key) => Some(key),
        _ => None,
    });
    for key in custom.iter().map(|c| &c.key).chain(mapped_keys) {
        if let Some((plural, group, _)) = crate::custom::parse_key(key) {
            rules.push(
                json!({"apiGroups": [group], "resources": [plural.clone(), format!("{plural}/status")], "verbs": ALL}),
            );
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_custom_resources_get_a_rule_each() {
        let sync = CustomResourceSync {
            key: "certificates.cert-manager.io".into(),
            to_host: true,
            patches: Default::default(),
        };
        let rules = virtual_rules(&[sync], &[]);
        let last = rules.last().unwrap();
        assert_eq!(last["apiGroups"], json!(["cert-manager.io"]));
        assert_eq!(last["resources"], json!(["certificates", "certificates/status"]));
        assert_eq!(virtual_rules(&[], &[]).len() + 1, rules.len());
    }
}
