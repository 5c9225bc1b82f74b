//! The host RBAC a configuration needs (sync-behavior.md 11.4 and 11.5): the Role in the host
//! namespace and the ClusterRole, rule by rule, from the enabled syncers.

use serde::Serialize;
use serde_json::{Value, json};

use crate::Config;

/// One RBAC policy rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// API groups ("" for core).
    pub api_groups: Vec<String>,
    /// Resources (and subresources).
    pub resources: Vec<String>,
    /// Verbs.
    pub verbs: Vec<String>,
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    PolicyRule { api_groups: owned(groups), resources: owned(resources), verbs: owned(verbs) }
}

const ALL: &[&str] = &["create", "delete", "patch", "update", "get", "list", "watch"];
const READ: &[&str] = &["get", "watch", "list"];

/// The rules of both roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRbac {
    /// Rules of the namespaced Role in the host namespace.
    pub role: Vec<PolicyRule>,
    /// Rules of the ClusterRole; empty when none is needed.
    pub cluster_role: Vec<PolicyRule>,
    /// Rules of a Role in each other host namespace objects are copied from
    /// (`sync.fromHost.{configMaps,secrets,customResources}` mappings): read access there only,
    /// where the reference grants it cluster-wide.
    pub sources: std::collections::BTreeMap<String, Vec<PolicyRule>>,
}

/// Splits a custom resource key `<plural>.<group>[/<version>]` into (plural, group).
fn plural_and_group(key: &str) -> (&str, &str) {
    let resource = key.split('/').next().unwrap_or(key);
    resource.split_once('.').unwrap_or((resource, ""))
}

/// What `config` needs on the host.
pub fn host_rbac(config: &Config) -> HostRbac {
    let config = config.resolved();
    let (to, from) = (&config.sync.to_host, &config.sync.from_host);
    let mut role = vec![
        rule(
            &[""],
            &[
                "configmaps",
                "secrets",
                "services",
                "pods",
                "pods/attach",
                "pods/portforward",
                "pods/exec",
                "persistentvolumeclaims",
            ],
            ALL,
        ),
        rule(&[""], &["pods/status", "pods/ephemeralcontainers"], &["patch", "update"]),
        rule(&["apps"], &["statefulsets", "replicasets", "deployments"], &["get", "list", "watch", "patch", "update"]),
        rule(&[""], &["endpoints", "pods/log"], &["get", "list", "watch"]),
        // `pods/proxy` and `services/proxy` of the tenant's objects go to their host copies (each
        // HTTP method is its own verb), `kubectl top pod` reads the host's pod metrics.
        rule(&[""], &["pods/proxy", "services/proxy"], &["get", "create", "update", "patch", "delete"]),
        rule(&["metrics.k8s.io"], &["pods"], &["get", "list"]),
        rule(&[""], &["events"], &["create", "get", "list", "watch"]),
        rule(&["events.k8s.io"], &["events"], &["create", "get", "list", "watch"]),
    ];
    if to.endpoints.enabled {
        role.push(rule(&[""], &["endpoints"], &["create", "delete", "patch", "update"]));
    }
    if to.endpoint_slices.enabled {
        role.push(rule(&["discovery.k8s.io"], &["endpointslices"], ALL));
    }
    if config.control_plane.backing_store.etcd.external.enabled {
        role.push(rule(&["coordination.k8s.io"], &["leases"], ALL));
    }
    if to.ingresses.enabled {
        role.push(rule(&["networking.k8s.io"], &["ingresses"], ALL));
    }
    if to.network_policies.enabled {
        role.push(rule(&["networking.k8s.io"], &["networkpolicies"], ALL));
    }
    if to.service_accounts.enabled {
        role.push(rule(&[""], &["serviceaccounts"], ALL));
    }
    if to.pod_disruption_budgets.enabled {
        role.push(rule(&["policy"], &["poddisruptionbudgets"], ALL));
    }
    if to.volume_snapshots.enabled {
        role.push(rule(&["snapshot.storage.k8s.io"], &["volumesnapshots"], ALL));
    }
    for (key, entry) in &to.custom_resources {
        if entry.enabled {
            let (plural, group) = plural_and_group(key);
            role.push(rule(&[group], &[plural], ALL));
        }
    }

    let mut cluster = Vec::new();
    if from.nodes.enabled {
        cluster.push(rule(&[""], &["pods", "nodes", "nodes/status"], READ));
        cluster.push(rule(&[""], &["nodes/metrics", "nodes/stats", "nodes/proxy"], &["get"]));
        // `kubectl top node` shows the real nodes' usage (fake nodes sum the tenant's pods).
        cluster.push(rule(&["metrics.k8s.io"], &["nodes"], &["get", "list"]));
        if from.nodes.sync_back_changes {
            cluster.push(rule(&[""], &["nodes", "nodes/status"], &["update", "patch"]));
        }
    }
    if from.storage_classes.enabled.is_on() {
        cluster.push(rule(&["storage.k8s.io"], &["storageclasses"], READ));
    }
    if from.csi_nodes.enabled.is_on() {
        cluster.push(rule(&["storage.k8s.io"], &["csinodes"], READ));
    }
    if from.csi_drivers.enabled.is_on() {
        cluster.push(rule(&["storage.k8s.io"], &["csidrivers"], READ));
    }
    if from.csi_storage_capacities.enabled.is_on() {
        cluster.push(rule(&["storage.k8s.io"], &["csistoragecapacities"], READ));
    }
    if to.persistent_volumes.enabled {
        cluster.push(rule(&[""], &["persistentvolumes"], ALL));
        // Whether the host has a claim's class (§3.8).
        cluster.push(rule(&["storage.k8s.io"], &["storageclasses"], &["get"]));
    }
    if from.ingress_classes.enabled {
        cluster.push(rule(&["networking.k8s.io"], &["ingressclasses"], READ));
    }
    if from.runtime_classes.enabled {
        cluster.push(rule(&["node.k8s.io"], &["runtimeclasses"], READ));
    }
    if to.storage_classes.enabled {
        cluster.push(rule(&["storage.k8s.io"], &["storageclasses"], ALL));
    }
    if to.priority_classes.enabled || from.priority_classes.enabled {
        cluster.push(rule(&["scheduling.k8s.io"], &["priorityclasses"], ALL));
    }
    let any_custom =
        to.custom_resources.values().any(|e| e.enabled) || from.custom_resources.values().any(|e| e.enabled);
    if any_custom {
        cluster.push(rule(&["apiextensions.k8s.io"], &["customresourcedefinitions"], &["get", "list", "watch"]));
    }
    for (key, entry) in &from.custom_resources {
        if entry.enabled {
            let (plural, group) = plural_and_group(key);
            cluster.push(rule(&[group], &[plural], &["get", "list", "watch"]));
        }
    }
    let host_namespace = config.host_namespace();
    let mut sources: std::collections::BTreeMap<String, Vec<PolicyRule>> = Default::default();
    let mut mapped: Vec<(&str, &str, &crate::Mappings)> = Vec::new();
    for (resource, entry) in [("configmaps", &from.config_maps), ("secrets", &from.secrets)] {
        if entry.enabled {
            mapped.push(("", resource, &entry.mappings));
        }
    }
    for (key, entry) in &from.custom_resources {
        if entry.enabled && entry.scope == "Namespaced" {
            let (plural, group) = plural_and_group(key);
            mapped.push((group, plural, &entry.mappings));
        }
    }
    for (group, resource, mappings) in mapped {
        let Ok(by_name) = crate::mappings::ByName::parse("", &mappings.by_name) else { continue };
        for namespace in by_name.host_namespaces(&host_namespace) {
            let read = rule(&[group], &[resource], READ);
            if namespace == host_namespace {
                if !group.is_empty() {
                    role.push(read);
                }
            } else {
                sources.entry(namespace).or_default().push(read);
            }
        }
    }
    // Replicated host services and their endpoints are read where they are (§12.4).
    for mapping in &config.networking.replicate_services.from_host {
        let namespace = mapping.from.split_once('/').map(|(ns, _)| ns.to_string()).unwrap_or(host_namespace.clone());
        if namespace != host_namespace {
            let rules = sources.entry(namespace).or_default();
            let read = rule(&[""], &["services", "endpoints"], READ);
            if !rules.contains(&read) {
                rules.push(read);
            }
        }
    }
    HostRbac { role, cluster_role: cluster, sources }
}

/// The Role (and ClusterRole, when needed) as Kubernetes manifests for virtual cluster `name` in
/// host namespace `namespace`.
pub fn manifests(config: &Config) -> Vec<Value> {
    let rbac = host_rbac(config);
    let (name, namespace) = (config.name(), config.host_namespace());
    let mut out = vec![json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": format!("vc-{name}"), "namespace": namespace},
        "rules": rbac.role,
    })];
    if !rbac.cluster_role.is_empty() {
        let cluster_name: String = format!("vc-{name}-v-{namespace}").chars().take(63).collect();
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name},
            "rules": rbac.cluster_role,
        }));
    }
    let source_name: String = format!("vc-{name}-v-{namespace}").chars().take(63).collect();
    for (source, rules) in rbac.sources {
        out.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": source_name, "namespace": source},
            "rules": rules,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            r.api_groups.iter().any(|g| g == group)
                && r.resources.iter().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    }

    #[test]
    fn defaults_need_only_the_namespaced_role() {
        let rbac = host_rbac(&Config::default());
        assert!(has(&rbac.role, "", "pods", "create"));
        assert!(has(&rbac.role, "", "endpoints", "create"), "endpoint sync is on by default");
        assert!(!has(&rbac.role, "networking.k8s.io", "ingresses", "create"));
        assert!(rbac.cluster_role.is_empty(), "auto switches resolve off and nodes are fake");
        assert!(has(&rbac.role, "", "services/proxy", "get"), "kubectl get --raw .../services/web/proxy");
        assert!(has(&rbac.role, "metrics.k8s.io", "pods", "list"), "kubectl top pod");
    }

    #[test]
    fn enabled_syncers_add_their_rules() {
        let config = Config::from_yaml(
            "sync:\n  toHost:\n    ingresses: {enabled: true}\n    persistentVolumes: {enabled: true}\n    customResources:\n      widgets.example.com/v1: {enabled: true}\n  fromHost:\n    nodes: {enabled: true, syncBackChanges: true}\n    csiDrivers: {enabled: true}\n    ingressClasses: {enabled: true}\n",
        )
        .unwrap();
        let rbac = host_rbac(&config);
        assert!(has(&rbac.role, "networking.k8s.io", "ingresses", "create"));
        assert!(has(&rbac.role, "example.com", "widgets", "delete"));
        assert!(has(&rbac.cluster_role, "", "nodes", "watch"));
        assert!(has(&rbac.cluster_role, "", "nodes/status", "patch"));
        assert!(has(&rbac.cluster_role, "metrics.k8s.io", "nodes", "list"), "kubectl top node, real nodes");
        assert!(has(&rbac.cluster_role, "storage.k8s.io", "csidrivers", "list"));
        assert!(!has(&rbac.cluster_role, "storage.k8s.io", "csinodes", "list"), "csiNodes stays auto = off");
        assert!(has(&rbac.cluster_role, "", "persistentvolumes", "create"));
        assert!(has(&rbac.cluster_role, "networking.k8s.io", "ingressclasses", "get"));
        assert!(has(&rbac.cluster_role, "apiextensions.k8s.io", "customresourcedefinitions", "get"));
        let manifests = manifests(&config);
        assert_eq!(manifests[1]["metadata"]["name"], "vc-vc1-v-vcluster-vc1");
    }

    #[test]
    fn objects_copied_from_other_namespaces_are_read_there_only() {
        let config = Config::from_yaml(
            "sync:\n  fromHost:\n    configMaps: {enabled: true, mappings: {byName: {\"shared/ca\": \"default/ca\", \"\": \"mine\"}}}\n    secrets: {enabled: true, mappings: {byName: {\"shared/*\": \"s/*\"}}}\n    customResources:\n      issuers.cert-manager.io: {enabled: true, scope: Namespaced, mappings: {byName: {\"certs/*\": \"certs/*\", \"/own\": \"certs/own\"}}}\n",
        )
        .unwrap();
        let rbac = host_rbac(&config);
        assert_eq!(rbac.sources.keys().collect::<Vec<_>>(), ["certs", "shared"]);
        assert!(has(&rbac.sources["shared"], "", "configmaps", "watch"));
        assert!(has(&rbac.sources["shared"], "", "secrets", "list"));
        assert!(!has(&rbac.sources["shared"], "", "secrets", "create"), "read only");
        assert!(has(&rbac.sources["certs"], "cert-manager.io", "issuers", "get"));
        assert!(has(&rbac.role, "cert-manager.io", "issuers", "watch"), "the own host namespace's issuers");
        assert!(!has(&rbac.cluster_role, "", "configmaps", "list"), "nothing cluster-wide");
        let manifests = manifests(&config);
        let roles: Vec<_> = manifests
            .iter()
            .filter(|m| m["kind"] == "Role")
            .map(|m| m["metadata"]["namespace"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["vcluster-vc1", "certs", "shared"]);
    }

    #[test]
    fn replicated_host_services_are_read_in_their_namespace() {
        let config = Config::from_yaml(
            "networking:\n  replicateServices:\n    fromHost: [{from: data/db, to: default/db}, {from: data/cache, to: default/cache}, {from: own, to: default/own}]\n",
        )
        .unwrap();
        let rbac = host_rbac(&config);
        assert_eq!(rbac.sources.keys().collect::<Vec<_>>(), ["data"]);
        assert_eq!(rbac.sources["data"].len(), 1);
        assert!(has(&rbac.sources["data"], "", "endpoints", "watch"));
        assert!(rbac.cluster_role.is_empty(), "nothing cluster-wide");
    }
}
