//! Persistent volume claims (sync-behavior.md 3.8) and the fake persistent volumes the virtual
//! cluster shows for bound claims (3.9, default mode). Directions: spec virtual → host on create,
//! `spec.resources.requests` virtual → host afterwards (volume expansion); status, `volumeName`
//! and the three bind annotations host → virtual.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::Context;
use crate::labels::host_labels;
use crate::metadata::{Identity, host_annotations, kind_string};
use crate::names::host_name;

/// Annotations the host's volume controller writes; copied host → virtual, never virtual → host.
pub const BIND_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
];

/// Label of the persistent volumes the virtual cluster shows for bound claims.
pub const FAKE_PV: &str = "vcluster.loft.sh/fake-pv";
/// On a virtual volume imported from the host: the host volume's name (§3.9).
pub const HOST_PV: &str = "vcluster.loft.sh/host-pv";

fn strings(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The host claim for virtual `claim`: translated metadata (without the bind annotations), the
/// spec as the tenant wrote it except `volumeName` (the host binds), and a claim data source
/// renamed to its host copy.
pub fn host_claim(context: &Context, claim: &Value) -> Value {
    host_claim_with(context, claim, false, false, true)
}

/// [`host_claim`]; with `classes_to_host` (toHost storage classes) the storage class is renamed
/// to its host copy and the deprecated class annotation dropped; with `volumes_to_host` (toHost
/// persistent volumes) a claim naming its volume names the volume's host copy, its selector's
/// keys are translated, and its class is renamed as the tenant's volumes' are (§3.8): always for
/// a claim bound statically (a volume name or a selector), and for a dynamically provisioned one
/// only when the host has no class of that name (`host_has_class`).
pub fn host_claim_with(
    context: &Context,
    claim: &Value,
    classes_to_host: bool,
    volumes_to_host: bool,
    host_has_class: bool,
) -> Value {
    let name = claim.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = claim.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let host = host_name(context, name, namespace);
    let identity = Identity {
        name,
        namespace: Some(namespace),
        uid: claim.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default(),
        kind: &kind_string("", "v1", "PersistentVolumeClaim"),
        host_name: &host,
        host_namespace: Some(&context.host_namespace),
    };
    let labels = host_labels(context, &strings(claim.pointer("/metadata/labels")), None, Some(namespace));
    let annotations = host_annotations(
        &strings(claim.pointer("/metadata/annotations")),
        &BTreeMap::new(),
        BIND_ANNOTATIONS,
        &identity,
    );
    let mut annotations = annotations;
    let mut spec = claim.get("spec").cloned().unwrap_or(json!({}));
    if let Some(map) = spec.as_object_mut() {
        let named = map.remove("volumeName").and_then(|v| v.as_str().map(String::from)).filter(|v| !v.is_empty());
        let selected = map.get("selector").is_some_and(|s| s.is_object());
        let static_binding = named.is_some() || selected;
        if let Some(volume) = named.filter(|_| volumes_to_host) {
            map.insert("volumeName".into(), json!(crate::names::host_name_cluster(context, &volume)));
        }
        if volumes_to_host {
            if let Some(selector) = map.get("selector").filter(|s| s.is_object()).cloned() {
                map.insert("selector".into(), crate::labels::host_label_selector(context, &selector));
            }
            let class = map.get("storageClassName").and_then(Value::as_str).filter(|c| !c.is_empty()).map(String::from);
            if let Some(class) = class.filter(|_| !classes_to_host && (static_binding || !host_has_class)) {
                map.insert("storageClassName".into(), json!(crate::names::host_name_cluster(context, &class)));
            }
        }
        if classes_to_host {
            let deprecated = annotations.remove("volume.beta.kubernetes.io/storage-class");
            let class = map.get("storageClassName").and_then(Value::as_str).map(String::from).or(deprecated);
            if let Some(class) = class.filter(|c| !c.is_empty()) {
                map.insert("storageClassName".into(), json!(crate::names::host_name_cluster(context, &class)));
            }
        }
        for field in ["dataSource", "dataSourceRef"] {
            if let Some(source) = map.get_mut(field).and_then(Value::as_object_mut)
                && source.get("kind").and_then(Value::as_str) == Some("PersistentVolumeClaim")
                && source.get("apiGroup").is_none_or(|g| g.as_str().unwrap_or_default().is_empty())
            {
                let source_namespace = source.get("namespace").and_then(Value::as_str).unwrap_or(namespace).to_string();
                let source_name = source.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                source.insert("name".into(), json!(host_name(context, &source_name, &source_namespace)));
                source.remove("namespace");
            }
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": host, "namespace": context.host_namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    })
}

/// What the virtual claim takes from the host claim: a merge patch for its metadata and spec
/// (bind annotations, `volumeName`) or None when nothing differs. Status is written separately.
pub fn virtual_claim_patch(virtual_claim: &Value, host: &Value) -> Option<Value> {
    let mut patch = Map::new();
    let mut annotations = Map::new();
    for key in BIND_ANNOTATIONS {
        let pointer = format!("/metadata/annotations/{}", key.replace('/', "~1"));
        let want = host.pointer(&pointer);
        if want != virtual_claim.pointer(&pointer) {
            annotations.insert(key.to_string(), want.cloned().unwrap_or(Value::Null));
        }
    }
    if !annotations.is_empty() {
        patch.insert("metadata".into(), json!({"annotations": annotations}));
    }
    let host_volume = host.pointer("/spec/volumeName").and_then(Value::as_str).filter(|v| !v.is_empty());
    let virtual_volume = virtual_claim.pointer("/spec/volumeName").and_then(Value::as_str).filter(|v| !v.is_empty());
    if let (Some(volume), None) = (host_volume, virtual_volume) {
        patch.insert("spec".into(), json!({"volumeName": volume}));
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// The fake persistent volume the virtual cluster shows for `claim` bound to host volume `volume`.
pub fn fake_volume(claim: &Value, volume: &str) -> Value {
    let spec = claim.get("spec").cloned().unwrap_or(json!({}));
    let capacity = claim
        .pointer("/status/capacity")
        .or_else(|| claim.pointer("/spec/resources/requests"))
        .cloned()
        .unwrap_or(json!({}));
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume,
            "labels": {FAKE_PV: "true"},
            "annotations": {
                "kubernetes.io/createdby": "fake-pv-provisioner",
                "pv.kubernetes.io/bound-by-controller": "true",
                "pv.kubernetes.io/provisioned-by": "fake-pv-provisioner",
            },
        },
        "spec": {
            "flexVolume": {"driver": "fake"},
            "capacity": capacity,
            "accessModes": spec.get("accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
            "claimRef": {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": claim.pointer("/metadata/namespace"),
                "name": claim.pointer("/metadata/name"),
                "uid": claim.pointer("/metadata/uid"),
            },
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName").cloned().unwrap_or(json!("")),
            "volumeMode": spec.get("volumeMode").cloned().unwrap_or(json!("Filesystem")),
        },
    })
}

/// The virtual copy of host volume `host` (dynamically provisioned for the host copy of
/// `claim`), imported under its own name (§3.9): the host's spec and status, bound to the
/// virtual claim, with the claim's class, marked with [`HOST_PV`].
pub fn imported_volume(host: &Value, claim: &Value) -> Value {
    let name = host.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let mut annotations = host.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    annotations.insert(HOST_PV.into(), json!(name));
    let labels = host.pointer("/metadata/labels").cloned().filter(|l| !l.is_null()).unwrap_or_else(|| json!({}));
    let mut spec = host.get("spec").cloned().unwrap_or(json!({}));
    spec["claimRef"] = json!({
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": claim.pointer("/metadata/namespace"),
        "name": claim.pointer("/metadata/name"),
        "uid": claim.pointer("/metadata/uid"),
        "resourceVersion": claim.pointer("/metadata/resourceVersion"),
    });
    spec["storageClassName"] = claim.pointer("/spec/storageClassName").cloned().unwrap_or(json!(""));
    let mut volume = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    });
    if let Some(status) = host.get("status").filter(|s| !s.is_null()) {
        volume["status"] = status.clone();
    }
    volume
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_volume_is_imported_bound_to_the_virtual_claim() {
        let host = json!({"metadata": {"name": "pvc-1234", "uid": "h", "labels": {"topology": "zone-a"},
                "annotations": {"pv.kubernetes.io/provisioned-by": "csi.example.com"}},
            "spec": {"capacity": {"storage": "5Gi"}, "csi": {"driver": "csi.example.com", "volumeHandle": "vol-1"},
                "claimRef": {"namespace": "vcluster-vc1", "name": "data-x-default-x-vc1", "uid": "host-claim"},
                "storageClassName": "standard", "persistentVolumeReclaimPolicy": "Delete"},
            "status": {"phase": "Bound"}});
        let claim = json!({"metadata": {"name": "data", "namespace": "default", "uid": "v", "resourceVersion": "7"},
            "spec": {"storageClassName": "fast"}});
        let volume = imported_volume(&host, &claim);
        assert_eq!(volume["metadata"]["name"], "pvc-1234");
        assert_eq!(volume["metadata"]["annotations"][HOST_PV], "pvc-1234");
        assert_eq!(volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"], "csi.example.com");
        assert!(volume["metadata"]["labels"].get(FAKE_PV).is_none());
        assert_eq!(
            volume["spec"]["claimRef"],
            json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": "default", "name": "data", "uid": "v", "resourceVersion": "7"})
        );
        assert_eq!(volume["spec"]["storageClassName"], "fast");
        assert_eq!(volume["spec"]["csi"]["volumeHandle"], "vol-1");
        assert_eq!(volume["status"]["phase"], "Bound");
    }

    fn vc() -> Context {
        Context::new("my-vc", "vcluster-my-vc")
    }

    #[test]
    fn storage_classes_synced_to_the_host_are_named_by_their_host_copy() {
        let claim =
            json!({"metadata": {"name": "data", "namespace": "db", "uid": "u"}, "spec": {"storageClassName": "fast"}});
        assert_eq!(host_claim(&vc(), &claim)["spec"]["storageClassName"], "fast", "the host's own class by default");
        let host = host_claim_with(&vc(), &claim, true, false, true);
        assert_eq!(host["spec"]["storageClassName"], "vcluster-fast-x-vcluster-my-vc-x-my-vc");
        let mut named = claim.clone();
        named["spec"]["volumeName"] = json!("data");
        assert!(host_claim(&vc(), &named)["spec"].get("volumeName").is_none(), "the host binds");
        let host = host_claim_with(&vc(), &named, false, true, true);
        assert_eq!(
            host["spec"]["volumeName"], "vcluster-data-x-vcluster-my-vc-x-my-vc",
            "the tenant's volume's host copy"
        );
        assert_eq!(
            host["spec"]["storageClassName"], "vcluster-fast-x-vcluster-my-vc-x-my-vc",
            "bound statically: the class of the tenant's volume's host copy"
        );
        // Dynamically provisioned: the host's class when it has one, else the translated name.
        assert_eq!(host_claim_with(&vc(), &claim, false, true, true)["spec"]["storageClassName"], "fast");
        let absent = host_claim_with(&vc(), &claim, false, true, false);
        assert_eq!(absent["spec"]["storageClassName"], "vcluster-fast-x-vcluster-my-vc-x-my-vc");
        // A selector is bound statically too, and its reserved keys are translated.
        let mut selected = claim.clone();
        selected["spec"]["selector"] = json!({"matchLabels": {"tier": "gold", "release": "r1"}});
        let host = host_claim_with(&vc(), &selected, false, true, true);
        assert_eq!(host["spec"]["storageClassName"], "vcluster-fast-x-vcluster-my-vc-x-my-vc");
        assert_eq!(host["spec"]["selector"]["matchLabels"]["tier"], "gold");
        assert!(host["spec"]["selector"]["matchLabels"].get("release").is_none(), "a reserved key is translated");
        let legacy = json!({"metadata": {"name": "data", "namespace": "db", "uid": "u",
            "annotations": {"volume.beta.kubernetes.io/storage-class": "fast"}}, "spec": {}});
        let host = host_claim_with(&vc(), &legacy, true, false, true);
        assert_eq!(host["spec"]["storageClassName"], "vcluster-fast-x-vcluster-my-vc-x-my-vc");
        assert!(host["metadata"]["annotations"].get("volume.beta.kubernetes.io/storage-class").is_none());
    }

    #[test]
    fn claim_goes_to_the_host_without_binding_details() {
        let claim = json!({
            "metadata": {"name": "data-web-0", "namespace": "default", "uid": "u1",
                         "labels": {"app": "web"},
                         "annotations": {"note": "x", "pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "volumeName": "pv-virtual", "storageClassName": "standard",
                     "dataSource": {"kind": "PersistentVolumeClaim", "name": "seed"}},
        });
        let host = host_claim(&vc(), &claim);
        assert_eq!(host["metadata"]["name"], "data-web-0-x-default-x-my-vc");
        assert_eq!(host["metadata"]["namespace"], "vcluster-my-vc");
        assert_eq!(host["metadata"]["annotations"]["note"], "x");
        assert!(host["metadata"]["annotations"].get("pv.kubernetes.io/bind-completed").is_none());
        assert_eq!(host["metadata"]["annotations"]["vcluster.loft.sh/object-name"], "data-web-0");
        assert_eq!(host["metadata"]["labels"]["vcluster.loft.sh/namespace"], "default");
        assert!(host["spec"].get("volumeName").is_none());
        assert_eq!(host["spec"]["storageClassName"], "standard");
        assert_eq!(host["spec"]["dataSource"]["name"], "seed-x-default-x-my-vc");
    }

    #[test]
    fn binding_comes_back_once() {
        let virtual_claim = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {}});
        let host = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                          "spec": {"volumeName": "pvc-123"}});
        let patch = virtual_claim_patch(&virtual_claim, &host).unwrap();
        assert_eq!(patch["spec"]["volumeName"], "pvc-123");
        assert_eq!(patch["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes");
        let synced = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                            "spec": {"volumeName": "pvc-123"}});
        assert_eq!(virtual_claim_patch(&synced, &host), None);
    }

    #[test]
    fn fake_volume_points_at_the_virtual_claim() {
        let claim = json!({"metadata": {"name": "c", "namespace": "d", "uid": "u"},
                           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                           "status": {"capacity": {"storage": "2Gi"}}});
        let pv = fake_volume(&claim, "pvc-123");
        assert_eq!(pv["metadata"]["name"], "pvc-123");
        assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
        assert_eq!(pv["spec"]["claimRef"]["name"], "c");
        assert_eq!(pv["spec"]["flexVolume"]["driver"], "fake");
    }
}
