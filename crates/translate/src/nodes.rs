//! Nodes in the virtual cluster (sync-behavior.md §4.9): a synthetic "fake" node for each host
//! node that runs a synced pod, or, with `sync.fromHost.nodes.enabled`, the host nodes
//! themselves (metadata merged, taints merged, status copied).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::labels::MANAGED_BY;

/// `vcluster.loft.sh/fake-node`: the label of synthetic nodes.
pub const FAKE_NODE: &str = "vcluster.loft.sh/fake-node";
/// `vcluster.loft.sh/managed-labels`: the node labels that came from the host (one per line).
pub const MANAGED_LABELS: &str = "vcluster.loft.sh/managed-labels";
/// `vcluster.loft.sh/managed-annotations`: the node annotations that came from the host.
pub const MANAGED_ANNOTATIONS: &str = crate::metadata::MANAGED_ANNOTATIONS;
/// `vcluster.loft.sh/original-taints`: the host's taints when the node was last synced (JSON).
pub const ORIGINAL_TAINTS: &str = "vcluster.loft.sh/original-taints";
/// The domain of fake nodes' hostname addresses.
pub const NODE_DOMAIN: &str = "nodes.vcluster.com";
/// Host annotations never merged into a virtual node.
const NOT_MERGED: [&str; 3] = [ORIGINAL_TAINTS, "management.cattle.io/pod-requests", "management.cattle.io/pod-limits"];
/// The not-ready taint a virtual node keeps only while the host node has it.
const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// How virtual nodes are made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSettings {
    /// The virtual cluster's name (the value of the `managed-by` marker).
    pub vcluster: String,
    /// `sync.fromHost.nodes.enabled`: host nodes are copied in (else fake nodes are made).
    pub real: bool,
    /// `sync.fromHost.nodes.selector.all`.
    pub all: bool,
    /// `sync.fromHost.nodes.selector.labels`.
    pub labels: BTreeMap<String, String>,
    /// `sync.fromHost.nodes.clearImageStatus`.
    pub clear_image_status: bool,
    /// `sync.fromHost.nodes.syncBackChanges`.
    pub sync_back: bool,
    /// `sync.toHost.pods.enforceTolerations`: taints they tolerate are hidden from the tenant.
    pub enforced_tolerations: Vec<Value>,
    /// The virtual API server's version (a fake node's kubelet version).
    pub version: String,
}

impl NodeSettings {
    /// Whether the virtual cluster shows host node `host` (labels given), which runs a synced
    /// non-DaemonSet pod when `needed`.
    pub fn selects(&self, host_labels: &BTreeMap<String, String>, needed: bool) -> bool {
        if !self.real {
            return needed;
        }
        if self.all {
            return true;
        }
        if !self.labels.is_empty() {
            return self.labels.iter().all(|(k, v)| host_labels.get(k) == Some(v));
        }
        needed
    }
}

/// A fake node's hostname address: `.` in the name becomes `-`.
pub fn fake_hostname(node: &str) -> String {
    format!("{}.{NODE_DOMAIN}", node.replace('.', "-"))
}

/// A GUID-shaped identifier derived from `seed` (stable, so a node looks the same after a restart).
fn guid(seed: &str) -> String {
    let hex = crate::names::hash_prefix(seed, 32);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The synthetic node that stands for host node `name` (§4.9, fake nodes): fixed capacity and
/// conditions, none of the host node's labels or status.
pub fn fake_node(name: &str, settings: &NodeSettings, arch: &str) -> Value {
    let resources = json!({"cpu": "16", "memory": "32Gi", "ephemeral-storage": "100Gi",
        "hugepages-1Gi": "0", "hugepages-2Mi": "0", "pods": "110"});
    let condition = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                FAKE_NODE: "true",
                "beta.kubernetes.io/arch": arch,
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": crate::names::safe_concat_name(&["fake", name]),
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "false",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources.clone(),
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": arch,
                "bootID": guid(&format!("boot/{name}")),
                "machineID": guid(&format!("machine/{name}")),
                "systemUUID": guid(&format!("system/{name}")),
                "containerRuntimeVersion": "docker://19.3.12",
                "kernelVersion": "4.19.76-fakelinux",
                "kubeletVersion": settings.version,
                "kubeProxyVersion": settings.version,
                "operatingSystem": "linux",
                "osImage": "Fake Kubernetes Image",
            },
            "addresses": fake_addresses(name),
            "images": [],
        },
    })
}

/// The addresses a fake node shows (reset on every sync).
pub fn fake_addresses(name: &str) -> Value {
    json!([{"type": "Hostname", "address": fake_hostname(name)}])
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn key_set(value: Option<&String>) -> BTreeSet<String> {
    value.map(|v| v.split('\n').filter(|k| !k.is_empty()).map(String::from).collect()).unwrap_or_default()
}

/// Managed-key merge of host metadata onto a virtual node's (§3.17): the host wins for keys it
/// sets, keys it set before and no longer does are removed, the tenant's own keys stay. Returns
/// the merged map and the new managed set.
fn merge_managed(
    host: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
    previously: &BTreeSet<String>,
    skip: &dyn Fn(&str) -> bool,
) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut out = BTreeMap::new();
    let mut managed = BTreeSet::new();
    for (k, v) in host {
        if skip(k) {
            continue;
        }
        out.insert(k.clone(), v.clone());
        managed.insert(k.clone());
    }
    for (k, v) in current {
        if !out.contains_key(k) && !previously.contains(k) && !skip(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    (out, managed)
}

/// Whether an enforced toleration tolerates `taint` (key equal, effect equal or empty,
/// operator Exists or Equal with the same value; an empty key with Exists tolerates all).
fn tolerated(toleration: &Value, taint: &Value) -> bool {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let operator = field(toleration, "operator");
    let key = field(toleration, "key");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != field(taint, "key") {
        return false;
    }
    let effect = field(toleration, "effect");
    if !effect.is_empty() && effect != field(taint, "effect") {
        return false;
    }
    match operator.as_str() {
        "Exists" => true,
        _ => field(toleration, "value") == field(taint, "value"),
    }
}

fn same_taint(a: &Value, b: &Value) -> bool {
    a.get("key") == b.get("key") && a.get("effect") == b.get("effect") && a.get("value") == b.get("value")
}

/// The virtual node for host node `host` (§4.9, real nodes), given the virtual node as it is
/// now (None when it does not exist yet).
pub fn real_node(host: &Value, current: Option<&Value>, settings: &NodeSettings) -> Value {
    let empty = json!({});
    let current = current.unwrap_or(&empty);
    let current_annotations = string_map(current.pointer("/metadata/annotations"));
    let current_labels = string_map(current.pointer("/metadata/labels"));
    let host_labels = string_map(host.pointer("/metadata/labels"));
    let host_annotations = string_map(host.pointer("/metadata/annotations"));

    let bookkeeping = |k: &str| k == MANAGED_LABELS || k == MANAGED_ANNOTATIONS || k == MANAGED_BY;
    let (mut labels, managed_labels) =
        merge_managed(&host_labels, &current_labels, &key_set(current_annotations.get(MANAGED_LABELS)), &|k| {
            bookkeeping(k) || k == FAKE_NODE
        });
    labels.insert(MANAGED_BY.into(), settings.vcluster.clone());
    let (mut annotations, managed_annotations) = merge_managed(
        &host_annotations,
        &current_annotations,
        &key_set(current_annotations.get(MANAGED_ANNOTATIONS)),
        &|k| bookkeeping(k) || NOT_MERGED.contains(&k),
    );
    for (key, set) in [(MANAGED_LABELS, &managed_labels), (MANAGED_ANNOTATIONS, &managed_annotations)] {
        if !set.is_empty() {
            annotations.insert(key.into(), set.iter().cloned().collect::<Vec<_>>().join("\n"));
        }
    }

    // Taints: the host's, plus the tenant's own, minus those the host had last time and dropped.
    let host_taints: Vec<Value> = host.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let original: Vec<Value> =
        current_annotations.get(ORIGINAL_TAINTS).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    let mut taints = host_taints.clone();
    for taint in current.pointer("/spec/taints").and_then(Value::as_array).into_iter().flatten() {
        let on_host = host_taints.iter().any(|t| same_taint(t, taint));
        let dropped_by_host = original.iter().any(|t| same_taint(t, taint));
        let stale_not_ready = taint.get("key").and_then(Value::as_str) == Some(NOT_READY);
        if !on_host && !dropped_by_host && !stale_not_ready {
            taints.push(taint.clone());
        }
    }
    taints.retain(|taint| !settings.enforced_tolerations.iter().any(|t| tolerated(t, taint)));
    if host_taints.is_empty() {
        annotations.remove(ORIGINAL_TAINTS);
    } else {
        annotations.insert(ORIGINAL_TAINTS.into(), Value::Array(host_taints).to_string());
    }

    let mut spec = host.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(spec) = spec.as_object_mut() {
        if taints.is_empty() {
            spec.remove("taints");
        } else {
            spec.insert("taints".into(), Value::Array(taints));
        }
    }
    let mut status = host.get("status").cloned().unwrap_or_else(|| json!({}));
    if settings.clear_image_status
        && let Some(status) = status.as_object_mut()
    {
        status.insert("images".into(), json!([]));
    }
    let mut metadata = Map::new();
    metadata.insert("name".into(), host.pointer("/metadata/name").cloned().unwrap_or(Value::Null));
    metadata.insert("labels".into(), json!(labels));
    metadata.insert("annotations".into(), json!(annotations));
    json!({"apiVersion": "v1", "kind": "Node", "metadata": metadata, "spec": spec, "status": status})
}

/// What a tenant changed on a synced node that goes back to the host with `syncBackChanges`:
/// given the virtual node as the syncer last wrote it and as it is now, the merge patch for the
/// host node (labels, taints, unschedulable), or None when nothing changed.
pub fn back_to_host(written: &Value, now: &Value, host: &Value) -> Option<Value> {
    let mut patch = Map::new();
    let before = string_map(written.pointer("/metadata/labels"));
    let after = string_map(now.pointer("/metadata/labels"));
    let mut labels = Map::new();
    for (k, v) in &after {
        if before.get(k) != Some(v) && k != MANAGED_BY {
            labels.insert(k.clone(), json!(v));
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) && k != MANAGED_BY {
            labels.insert(k.clone(), Value::Null);
        }
    }
    if !labels.is_empty() {
        patch.insert("metadata".into(), json!({"labels": labels}));
    }
    let taints = |v: &Value| v.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let (was, is) = (taints(written), taints(now));
    let mut spec = Map::new();
    if was != is {
        let mut host_taints = taints(host);
        host_taints.retain(|t| !was.iter().any(|w| same_taint(w, t)) || is.iter().any(|n| same_taint(n, t)));
        for taint in &is {
            if !host_taints.iter().any(|t| same_taint(t, taint)) {
                host_taints.push(taint.clone());
            }
        }
        spec.insert("taints".into(), Value::Array(host_taints));
    }
    let unschedulable = |v: &Value| v.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false);
    if unschedulable(written) != unschedulable(now) {
        spec.insert("unschedulable".into(), json!(unschedulable(now)));
    }
    if !spec.is_empty() {
        patch.insert("spec".into(), Value::Object(spec));
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// Whether `name` is an extended resource (`example.com/foo`): one a cluster's users advertise,
/// not one the kubelet measures (`cpu`, `memory`, `hugepages-2Mi`, `kubernetes.io/...`).
pub fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.starts_with("kubernetes.io/") && !name.starts_with("requests.")
}

/// The status part of a tenant's node edit that goes back with `syncBackChanges`: the extended
/// resources a tenant added, changed or removed in `capacity` and `allocatable` (device plugins'
/// and the conformance suite's way to advertise them), as a merge patch of the host node's
/// status; None when none changed. What the kubelet measures (cpu, memory, pods ...) stays the
/// host's.
pub fn status_back_to_host(written: &Value, now: &Value) -> Option<Value> {
    let mut status = Map::new();
    for field in ["capacity", "allocatable"] {
        let pointer = format!("/status/{field}");
        let list = |v: &Value| {
            let mut list = v.pointer(&pointer).and_then(Value::as_object).cloned().unwrap_or_default();
            list.retain(|name, _| is_extended_resource(name));
            list
        };
        let (before, after) = (list(written), list(now));
        let mut changes = Map::new();
        for (name, quantity) in &after {
            if before.get(name) != Some(quantity) {
                changes.insert(name.clone(), quantity.clone());
            }
        }
        for name in before.keys().filter(|name| !after.contains_key(*name)) {
            changes.insert(name.clone(), Value::Null);
        }
        if !changes.is_empty() {
            status.insert(field.into(), Value::Object(changes));
        }
    }
    (!status.is_empty()).then(|| json!({"status": status}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NodeSettings {
        NodeSettings { vcluster: "vc".into(), real: true, version: "v1.33.0".into(), ..Default::default() }
    }

    #[test]
    fn fake_nodes_show_nothing_of_the_host() {
        let node = fake_node("ip-10-0-0-1.ec2.internal", &settings(), "amd64");
        let labels = node["metadata"]["labels"].as_object().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "fake-ip-10-0-0-1.ec2.internal");
        assert_eq!(labels[FAKE_NODE], "true");
        assert_eq!(labels.len(), 6);
        assert_eq!(node["status"]["capacity"]["cpu"], "16");
        assert_eq!(node["status"]["addresses"][0]["address"], "ip-10-0-0-1-ec2-internal.nodes.vcluster.com");
        assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.33.0");
        assert_eq!(node, fake_node("ip-10-0-0-1.ec2.internal", &settings(), "amd64"), "stable across restarts");
    }

    #[test]
    fn which_nodes_are_shown() {
        let labels: BTreeMap<String, String> = [("pool".to_string(), "a".to_string())].into();
        let fake = NodeSettings { real: false, ..settings() };
        assert!(fake.selects(&labels, true) && !fake.selects(&labels, false));
        assert!(settings().selects(&labels, true) && !settings().selects(&labels, false), "needed only");
        let all = NodeSettings { all: true, ..settings() };
        assert!(all.selects(&BTreeMap::new(), false));
        let pool_a = NodeSettings { labels: labels.clone(), ..settings() };
        assert!(pool_a.selects(&labels, false));
        assert!(!pool_a.selects(&BTreeMap::new(), true), "exactly the matching nodes, needed or not");
    }

    #[test]
    fn host_metadata_is_merged_and_the_tenants_own_keys_stay() {
        let host = json!({"metadata": {"name": "n1", "labels": {"zone": "a", "pool": "x"},
            "annotations": {"note": "h", "management.cattle.io/pod-requests": "{}"}}, "spec": {}, "status": {}});
        let first = real_node(&host, None, &settings());
        assert_eq!(first["metadata"]["labels"], json!({"zone": "a", "pool": "x", MANAGED_BY: "vc"}));
        assert_eq!(first["metadata"]["annotations"][MANAGED_LABELS], "pool\nzone");
        assert_eq!(first["metadata"]["annotations"]["note"], "h");
        assert!(first["metadata"]["annotations"].get("management.cattle.io/pod-requests").is_none());
        // The tenant adds a label, the host drops `pool` and changes `zone`.
        let mut current = first.clone();
        current["metadata"]["labels"]["team"] = json!("blue");
        let host = json!({"metadata": {"name": "n1", "labels": {"zone": "b"}}, "spec": {}, "status": {}});
        let second = real_node(&host, Some(&current), &settings());
        assert_eq!(second["metadata"]["labels"], json!({"zone": "b", "team": "blue", MANAGED_BY: "vc"}));
        assert!(second["metadata"]["annotations"].get("note").is_none(), "dropped on the host, dropped here");
    }

    #[test]
    fn taints_merge_and_enforced_tolerations_hide_theirs() {
        let taint = |k: &str| json!({"key": k, "effect": "NoSchedule"});
        let host = json!({"metadata": {"name": "n1"}, "spec": {"taints": [taint("gpu"), taint("dedicated")]}});
        let settings = NodeSettings {
            enforced_tolerations: vec![json!({"key": "dedicated", "operator": "Exists"})],
            ..settings()
        };
        let first = real_node(&host, None, &settings);
        assert_eq!(first["spec"]["taints"], json!([taint("gpu")]));
        assert_eq!(
            first["metadata"]["annotations"][ORIGINAL_TAINTS],
            json!([taint("gpu"), taint("dedicated")]).to_string()
        );
        // The tenant adds one; the host removes `gpu`; a stale not-ready taint goes.
        let mut current = first.clone();
        current["spec"]["taints"] = json!([taint("gpu"), taint("mine"), taint(NOT_READY)]);
        let host = json!({"metadata": {"name": "n1"}, "spec": {}});
        let second = real_node(&host, Some(&current), &settings);
        assert_eq!(second["spec"]["taints"], json!([taint("mine")]));
        assert!(second["metadata"]["annotations"].get(ORIGINAL_TAINTS).is_none());
    }

    #[test]
    fn image_status_can_be_cleared() {
        let host =
            json!({"metadata": {"name": "n1"}, "status": {"images": [{"names": ["a"]}], "capacity": {"cpu": "2"}}});
        assert_eq!(real_node(&host, None, &settings())["status"]["images"][0]["names"][0], "a");
        let cleared = real_node(&host, None, &NodeSettings { clear_image_status: true, ..settings() });
        assert_eq!(cleared["status"], json!({"images": [], "capacity": {"cpu": "2"}}));
    }

    #[test]
    fn tenant_edits_go_back_as_a_patch() {
        let written = json!({"metadata": {"labels": {"zone": "a", "old": "1", MANAGED_BY: "vc"}},
            "spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}]}});
        let host = json!({"spec": {"taints": [{"key": "gpu", "effect": "NoSchedule"}, {"key": "hidden", "effect": "NoExecute"}]}});
        assert_eq!(back_to_host(&written, &written, &host), None);
        let now = json!({"metadata": {"labels": {"zone": "a", "team": "blue", MANAGED_BY: "vc"}},
            "spec": {"taints": [{"key": "maint", "effect": "NoSchedule"}], "unschedulable": true}});
        let patch = back_to_host(&written, &now, &host).unwrap();
        assert_eq!(patch["metadata"]["labels"], json!({"team": "blue", "old": null}));
        assert_eq!(
            patch["spec"]["taints"],
            json!([{"key": "hidden", "effect": "NoExecute"}, {"key": "maint", "effect": "NoSchedule"}]),
            "host-only taints (hidden from the tenant) stay"
        );
        assert_eq!(patch["spec"]["unschedulable"], true);
    }

    #[test]
    fn resources_a_tenant_advertises_go_back_to_the_host() {
        let written =
            json!({"status": {"capacity": {"cpu": "8", "example.com/gone": "1"}, "allocatable": {"cpu": "8"}}});
        assert_eq!(status_back_to_host(&written, &written), None);
        let now = json!({"status": {"capacity": {"cpu": "16", "example.com/foo": "5"}, "allocatable": {"cpu": "8", "example.com/foo": "5"}}});
        assert_eq!(
            status_back_to_host(&written, &now).unwrap(),
            json!({"status": {"capacity": {"example.com/foo": "5", "example.com/gone": null}, "allocatable": {"example.com/foo": "5"}}}),
            "the cpu the kubelet measures stays the host's"
        );
    }
}
