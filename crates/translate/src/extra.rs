//! The optional toHost kinds (sync-behavior.md 3.6, 3.7, 3.11, 3.12): ingresses, network
//! policies, service accounts and pod disruption budgets as the host sees them, and the secrets an
//! ingress makes "used".

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::Context;
use crate::labels::{MANAGED_BY, NAMESPACE, host_label_selector, host_labels, namespace_label_key};
use crate::metadata::{Identity, host_annotations, kind_string};
use crate::names::host_name;

/// Annotations of an ingress that name secrets (`name` or `namespace/name`).
pub const INGRESS_SECRET_ANNOTATIONS: &[&str] = &[
    "nginx.ingress.kubernetes.io/auth-secret",
    "nginx.ingress.kubernetes.io/auth-tls-secret",
    "nginx.ingress.kubernetes.io/proxy-ssl-secret",
];

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn strings(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The metadata of the host copy of a namespaced virtual object of `group/version, kind`:
/// translated name, labels and bookkeeping annotations (`annotations` replaces the virtual
/// annotations when the kind rewrites some of them).
pub fn host_metadata(
    context: &Context,
    object: &Value,
    (group, version, kind): (&str, &str, &str),
    annotations: Option<BTreeMap<String, String>>,
) -> Value {
    let name = text(object, "/metadata/name");
    let namespace = text(object, "/metadata/namespace");
    let host = host_name(context, name, namespace);
    let identity = Identity {
        name,
        namespace: Some(namespace),
        uid: text(object, "/metadata/uid"),
        kind: &kind_string(group, version, kind),
        host_name: &host,
        host_namespace: Some(&context.host_namespace),
    };
    let labels = host_labels(context, &strings(object.pointer("/metadata/labels")), None, Some(namespace));
    let virtual_annotations = annotations.unwrap_or_else(|| strings(object.pointer("/metadata/annotations")));
    let annotations = host_annotations(&virtual_annotations, &BTreeMap::new(), &[], &identity);
    json!({"name": host, "namespace": context.host_namespace, "labels": labels, "annotations": annotations})
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// Rewrites a secret reference (`name` or `namespace/name`) made from `namespace`; returns the
/// host form and the (namespace, name) of the virtual secret.
fn secret_reference(context: &Context, value: &str, namespace: &str) -> (String, (String, String)) {
    match value.split_once('/') {
        Some((ns, name)) => {
            (format!("{}/{}", context.host_namespace, host_name(context, name, ns)), (ns.into(), name.into()))
        }
        None => (host_name(context, value, namespace), (namespace.into(), value.into())),
    }
}

/// The virtual secrets (namespace, name) an ingress uses: its TLS secrets and the secrets its
/// nginx annotations name.
pub fn ingress_secrets(ingress: &Value) -> BTreeSet<(String, String)> {
    let namespace = text(ingress, "/metadata/namespace");
    let mut out = BTreeSet::new();
    for tls in ingress.pointer("/spec/tls").and_then(Value::as_array).into_iter().flatten() {
        if let Some(secret) = tls.get("secretName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            out.insert((namespace.to_string(), secret.to_string()));
        }
    }
    let annotations = strings(ingress.pointer("/metadata/annotations"));
    for key in INGRESS_SECRET_ANNOTATIONS {
        if let Some(value) = annotations.get(*key).filter(|v| !v.is_empty()) {
            let (ns, name) = value.split_once('/').unwrap_or((namespace, value));
            out.insert((ns.to_string(), name.to_string()));
        }
    }
    out
}

fn rename_backend(context: &Context, backend: &mut Value, namespace: &str) {
    for pointer in ["/service/name", "/resource/name"] {
        if let Some(name) = backend.pointer(pointer).and_then(Value::as_str).map(String::from)
            && let Some(slot) = backend.pointer_mut(pointer)
        {
            *slot = json!(host_name(context, &name, namespace));
        }
    }
}

/// Rewrites the service names inside AWS load balancer controller annotations
/// (`alb.ingress.kubernetes.io/actions.NAME`, `…/conditions.NAME`, `forwardConfig.targetGroups`).
fn alb_annotation(context: &Context, key: &str, value: &str, namespace: &str) -> (String, String) {
    let marker = format!("-x-{namespace}-x-");
    for prefix in ["alb.ingress.kubernetes.io/actions.", "alb.ingress.kubernetes.io/conditions."] {
        let Some(service) = key.strip_prefix(prefix) else { continue };
        if key.contains(&marker) {
            return (key.into(), value.into());
        }
        let key = format!("{prefix}{}", host_name(context, service, namespace));
        if !prefix.ends_with("actions.") {
            return (key, value.into());
        }
        let Ok(mut action) = serde_json::from_str::<Value>(value) else { return (key, value.into()) };
        if let Some(groups) = action.pointer_mut("/forwardConfig/targetGroups").and_then(Value::as_array_mut) {
            for group in groups {
                if let Some(name) = group.get("serviceName").and_then(Value::as_str).map(String::from) {
                    group["serviceName"] = json!(host_name(context, &name, namespace));
                }
            }
        }
        return (key, action.to_string());
    }
    (key.into(), value.into())
}

/// The host ingress for a virtual one: backends point at the host services, TLS and annotation
/// secrets at the host secrets; `ingressClassName` is kept.
pub fn host_ingress(context: &Context, ingress: &Value) -> Value {
    let namespace = text(ingress, "/metadata/namespace");
    let mut annotations = BTreeMap::new();
    for (key, value) in strings(ingress.pointer("/metadata/annotations")) {
        // §2.8: Rancher's view of the endpoints belongs to the cluster it was computed in.
        if crate::services::EXCLUDED_ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if INGRESS_SECRET_ANNOTATIONS.contains(&key.as_str()) && !value.is_empty() {
            annotations.insert(key, secret_reference(context, &value, namespace).0);
        } else {
            let (key, value) = alb_annotation(context, &key, &value, namespace);
            annotations.insert(key, value);
        }
    }
    let mut spec = ingress.get("spec").cloned().unwrap_or(json!({}));
    if let Some(backend) = spec.get_mut("defaultBackend") {
        rename_backend(context, backend, namespace);
    }
    for rule in spec.get_mut("rules").and_then(Value::as_array_mut).into_iter().flatten() {
        for path in rule.pointer_mut("/http/paths").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(backend) = path.get_mut("backend") {
                rename_backend(context, backend, namespace);
            }
        }
    }
    for tls in spec.get_mut("tls").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(secret) = tls.get("secretName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            tls["secretName"] = json!(host_name(context, secret, namespace));
        }
    }
    let gvk = ("networking.k8s.io", "v1", "Ingress");
    json!({
        "apiVersion": api_version(gvk.0, gvk.1),
        "kind": gvk.2,
        "metadata": host_metadata(context, ingress, gvk, Some(annotations)),
        "spec": spec,
    })
}

/// `selector` (a LabelSelector) with keys translated and `extra` labels required.
fn pinned_selector(context: &Context, selector: Option<&Value>, extra: &[(&str, &str)]) -> Value {
    let mut out = host_label_selector(context, selector.unwrap_or(&json!({})));
    if !out.is_object() {
        out = json!({});
    }
    let labels = out.get_mut("matchLabels").and_then(Value::as_object_mut).map(std::mem::take);
    let mut labels = labels.unwrap_or_default();
    for (key, value) in extra {
        labels.insert((*key).into(), json!(value));
    }
    out["matchLabels"] = Value::Object(labels);
    out
}

/// A namespace selector as a selector over the namespace labels projected onto host pods.
fn namespace_selector_on_pods(context: &Context, selector: &Value) -> (Map<String, Value>, Vec<Value>) {
    let labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (namespace_label_key(context, k), v.clone())).collect())
        .unwrap_or_default();
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(key) = e.get("key").and_then(Value::as_str).map(String::from) {
                        e["key"] = json!(namespace_label_key(context, &key));
                    }
                    e
                })
                .collect()
        })
        .unwrap_or_default();
    (labels, expressions)
}

fn host_peer(context: &Context, peer: &Value, namespace: &str) -> Value {
    if peer.get("ipBlock").is_some() {
        return json!({"ipBlock": peer["ipBlock"]});
    }
    let mut selector = pinned_selector(context, peer.get("podSelector"), &[(MANAGED_BY, &context.name)]);
    match peer.get("namespaceSelector").filter(|s| !s.is_null()) {
        Some(namespaces) => {
            let (labels, expressions) = namespace_selector_on_pods(context, namespaces);
            if let Some(map) = selector["matchLabels"].as_object_mut() {
                map.extend(labels);
            }
            if !expressions.is_empty() {
                let mut all = selector.get("matchExpressions").and_then(Value::as_array).cloned().unwrap_or_default();
                all.extend(expressions);
                selector["matchExpressions"] = json!(all);
            }
        }
        None => {
            selector["matchLabels"][NAMESPACE] = json!(namespace);
        }
    }
    json!({"podSelector": selector})
}

/// The host network policy for a virtual one: every selector pinned to this virtual cluster's
/// pods in the host namespace (a peer without a namespace selector means the policy's own
/// namespace); `ipBlock` peers copied.
pub fn host_network_policy(context: &Context, policy: &Value) -> Value {
    let namespace = text(policy, "/metadata/namespace");
    let spec = policy.get("spec").cloned().unwrap_or(json!({}));
    let mut out = Map::new();
    out.insert(
        "podSelector".into(),
        pinned_selector(context, spec.get("podSelector"), &[(NAMESPACE, namespace), (MANAGED_BY, &context.name)]),
    );
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        let Some(rules) = spec.get(direction).and_then(Value::as_array) else { continue };
        let rules: Vec<Value> = rules
            .iter()
            .map(|rule| {
                let mut rule = rule.clone();
                if let Some(list) = rule.get(peers).and_then(Value::as_array) {
                    rule[peers] = json!(list.iter().map(|p| host_peer(context, p, namespace)).collect::<Vec<_>>());
                }
                rule
            })
            .collect();
        out.insert(direction.into(), json!(rules));
    }
    if let Some(types) = spec.get("policyTypes") {
        out.insert("policyTypes".into(), types.clone());
    }
    let gvk = ("networking.k8s.io", "v1", "NetworkPolicy");
    json!({
        "apiVersion": api_version(gvk.0, gvk.1),
        "kind": gvk.2,
        "metadata": host_metadata(context, policy, gvk, None),
        "spec": out,
    })
}

/// The host copy of a namespaced custom resource of `group/version, kind`: translated metadata,
/// every other field (except status, which the host owns) as the tenant wrote it.
pub fn host_custom_resource(context: &Context, object: &Value, gvk: (&str, &str, &str)) -> Value {
    let mut out = json!({
        "apiVersion": api_version(gvk.0, gvk.1),
        "kind": gvk.2,
        "metadata": host_metadata(context, object, gvk, None),
    });
    for (key, value) in object.as_object().into_iter().flatten() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            out[key] = value.clone();
        }
    }
    out
}

/// The host pod disruption budget for a virtual one: selector keys translated (no namespace or
/// cluster pin, as the reference [QUIRK]: vkube adds both so a budget never counts another
/// tenant's pods).
pub fn host_pod_disruption_budget(context: &Context, budget: &Value) -> Value {
    let namespace = text(budget, "/metadata/namespace");
    let mut spec = budget.get("spec").cloned().unwrap_or(json!({}));
    if let Some(map) = spec.as_object_mut() {
        let selector =
            pinned_selector(context, map.get("selector"), &[(NAMESPACE, namespace), (MANAGED_BY, &context.name)]);
        map.insert("selector".into(), selector);
    }
    let gvk = ("policy", "v1", "PodDisruptionBudget");
    json!({
        "apiVersion": api_version(gvk.0, gvk.1),
        "kind": gvk.2,
        "metadata": host_metadata(context, budget, gvk, None),
        "spec": spec,
    })
}

/// The host EndpointSlice for a virtual one of a selector-less service (§3.5): its service label
/// names the host service (`kubernetes.io/service-name`, the hashed host name where the reference
/// concatenates), pod targets name the host pods; addresses, ports and conditions stay.
pub fn host_endpoint_slice(context: &Context, slice: &Value) -> Value {
    let namespace = text(slice, "/metadata/namespace");
    let gvk = ("discovery.k8s.io", "v1", "EndpointSlice");
    let mut metadata = host_metadata(context, slice, gvk, None);
    let service = text(slice, "/metadata/labels/kubernetes.io~1service-name");
    if !service.is_empty() {
        metadata["labels"]["kubernetes.io/service-name"] = json!(host_name(context, service, namespace));
    }
    let mut endpoints = slice.get("endpoints").cloned().unwrap_or(json!([]));
    for endpoint in endpoints.as_array_mut().into_iter().flatten() {
        if let Some(target) = endpoint.get_mut("targetRef").and_then(Value::as_object_mut)
            && target.get("kind").and_then(Value::as_str) == Some("Pod")
        {
            let pod = target.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let pod_namespace = target
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace)
                .to_string();
            target.insert("name".into(), json!(host_name(context, &pod, &pod_namespace)));
            target.insert("namespace".into(), json!(context.host_namespace));
            target.remove("resourceVersion");
        }
    }
    json!({
        "apiVersion": api_version(gvk.0, gvk.1),
        "kind": gvk.2,
        "metadata": metadata,
        "addressType": slice.get("addressType").cloned().unwrap_or(json!("IPv4")),
        "endpoints": endpoints,
        "ports": slice.get("ports").cloned().unwrap_or(json!([])),
    })
}

/// The host service account for a virtual one: no secrets, no pull secrets, no token mounting
/// (pods get their virtual tokens from the syncer); labels and annotations (cloud IAM roles) follow.
pub fn host_service_account(context: &Context, account: &Value) -> Value {
    let gvk = ("", "v1", "ServiceAccount");
    json!({
        "apiVersion": "v1",
        "kind": gvk.2,
        "metadata": host_metadata(context, account, gvk, None),
        "automountServiceAccountToken": false,
    })
}

/// The metadata of the host copy of a cluster-scoped virtual object.
fn host_cluster_metadata(context: &Context, object: &Value, (group, version, kind): (&str, &str, &str)) -> Value {
    let name = text(object, "/metadata/name");
    let host = crate::names::host_name_cluster(context, name);
    let identity = Identity {
        name,
        namespace: None,
        uid: text(object, "/metadata/uid"),
        kind: &kind_string(group, version, kind),
        host_name: &host,
        host_namespace: None,
    };
    let labels = host_labels(context, &strings(object.pointer("/metadata/labels")), None, None);
    let mut virtual_annotations = strings(object.pointer("/metadata/annotations"));
    virtual_annotations.remove("storageclass.kubernetes.io/is-default-class");
    let annotations = host_annotations(&virtual_annotations, &BTreeMap::new(), &[], &identity);
    json!({"name": host, "labels": labels, "annotations": annotations})
}

/// The highest value a priority class copied to the host may have (above is reserved for the
/// system classes).
pub const MAX_PRIORITY: i64 = 1_000_000_000;

/// The host priority class for a virtual one: `vcluster-NAME-x-HNS-x-VC`, never the global
/// default, value capped at [`MAX_PRIORITY`].
pub fn host_priority_class(context: &Context, class: &Value) -> Value {
    let gvk = ("scheduling.k8s.io", "v1", "PriorityClass");
    let mut out = json!({
        "apiVersion": api_version(gvk.0, gvk.1),
        "kind": gvk.2,
        "metadata": host_cluster_metadata(context, class, gvk),
        "value": class.get("value").and_then(Value::as_i64).unwrap_or(0).min(MAX_PRIORITY),
        "globalDefault": false,
    });
    for field in ["description", "preemptionPolicy"] {
        if let Some(value) = class.get(field) {
            out[field] = value.clone();
        }
    }
    out
}

/// The host storage class for a virtual one: `vcluster-NAME-x-HNS-x-VC`, never the default class.
pub fn host_storage_class(context: &Context, class: &Value) -> Value {
    let gvk = ("storage.k8s.io", "v1", "StorageClass");
    let mut out = json!({
        "apiVersion": api_version(gvk.0, gvk.1),
        "kind": gvk.2,
        "metadata": host_cluster_metadata(context, class, gvk),
    });
    for field in STORAGE_CLASS_FIELDS {
        if let Some(value) = class.get(*field) {
            out[*field] = value.clone();
        }
    }
    out
}

/// The host persistent volume for one the tenant created (static provisioning):
/// `vcluster-NAME-x-HNS-x-VC`, without the claim reference (the host binds it to the claim's
/// host copy); its storage class is renamed to `vcluster-CLASS-x-HNS-x-VC` (§3.9, the name of the
/// class's host copy with toHost storage classes), so only this virtual cluster's claims, which
/// name the same, bind to it.
pub fn host_persistent_volume(context: &Context, volume: &Value) -> Value {
    let gvk = ("", "v1", "PersistentVolume");
    let mut spec = volume.get("spec").cloned().unwrap_or(json!({}));
    if let Some(map) = spec.as_object_mut() {
        map.remove("claimRef");
        if let Some(class) = map.get("storageClassName").and_then(Value::as_str).filter(|c| !c.is_empty()) {
            let class = crate::names::host_name_cluster(context, class);
            map.insert("storageClassName".into(), json!(class));
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": gvk.2,
        "metadata": host_cluster_metadata(context, volume, gvk),
        "spec": spec,
    })
}

/// The fields of a storage class that follow its source.
pub const STORAGE_CLASS_FIELDS: &[&str] = &[
    "provisioner",
    "parameters",
    "reclaimPolicy",
    "mountOptions",
    "allowVolumeExpansion",
    "volumeBindingMode",
    "allowedTopologies",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn vc() -> Context {
        Context::new("my-vc", "vcluster-my-vc")
    }

    #[test]
    fn ingress_worked_example() {
        let ingress = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "annotations": {
                "nginx.ingress.kubernetes.io/auth-secret": "basic-auth",
                "nginx.ingress.kubernetes.io/auth-tls-secret": "certs/ca",
                "alb.ingress.kubernetes.io/actions.web": "{\"type\":\"forward\",\"forwardConfig\":{\"targetGroups\":[{\"serviceName\":\"web\",\"servicePort\":80}]}}",
                "team": "shop"}},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["shop.example.com"], "secretName": "web-tls"}],
                "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                "rules": [{"host": "shop.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]
            }
        });
        let host = host_ingress(&vc(), &ingress);
        assert_eq!(host["metadata"]["name"], "web-x-default-x-my-vc");
        assert_eq!(host["metadata"]["namespace"], "vcluster-my-vc");
        assert_eq!(host["spec"]["tls"][0]["secretName"], "web-tls-x-default-x-my-vc");
        assert_eq!(host["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"], "web-x-default-x-my-vc");
        assert_eq!(host["spec"]["defaultBackend"]["service"]["name"], "fallback-x-default-x-my-vc");
        assert_eq!(host["spec"]["ingressClassName"], "nginx");
        let annotations = &host["metadata"]["annotations"];
        assert_eq!(annotations["nginx.ingress.kubernetes.io/auth-secret"], "basic-auth-x-default-x-my-vc");
        assert_eq!(annotations["nginx.ingress.kubernetes.io/auth-tls-secret"], "vcluster-my-vc/ca-x-certs-x-my-vc");
        let action = annotations["alb.ingress.kubernetes.io/actions.web-x-default-x-my-vc"].as_str().unwrap();
        assert!(action.contains("\"serviceName\":\"web-x-default-x-my-vc\""), "{action}");
        assert_eq!(annotations["team"], "shop");
        assert_eq!(annotations["vcluster.loft.sh/object-kind"], "networking.k8s.io/v1, Kind=Ingress");
        assert_eq!(host["metadata"]["labels"]["vcluster.loft.sh/managed-by"], "my-vc");
        let secrets = ingress_secrets(&ingress);
        let expected: BTreeSet<(String, String)> = [("default", "web-tls"), ("default", "basic-auth"), ("certs", "ca")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(secrets, expected);
    }

    #[test]
    fn network_policy_worked_example() {
        let policy = json!({
            "metadata": {"name": "api", "namespace": "shop", "uid": "u"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "api"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"role": "frontend"}}, "namespaceSelector": {"matchLabels": {"team": "web"}}},
                    {"podSelector": {"matchLabels": {"role": "admin"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 8080}]}],
                "egress": [{"to": [{"namespaceSelector": {}}]}]
            }
        });
        let host = host_network_policy(&vc(), &policy);
        let spec = &host["spec"];
        assert_eq!(
            spec["podSelector"]["matchLabels"],
            json!({"app": "api", "vcluster.loft.sh/namespace": "shop", "vcluster.loft.sh/managed-by": "my-vc"})
        );
        let from = &spec["ingress"][0]["from"];
        let ns_key = namespace_label_key(&vc(), "team");
        assert!(ns_key.starts_with("vcluster.loft.sh/ns-label-my-vc-x-"), "{ns_key}");
        assert_eq!(
            from[0]["podSelector"]["matchLabels"],
            json!({"role": "frontend", ns_key: "web", "vcluster.loft.sh/managed-by": "my-vc"})
        );
        assert!(from[0].get("namespaceSelector").is_none(), "all pods live in one host namespace");
        assert_eq!(
            from[1]["podSelector"]["matchLabels"],
            json!({"role": "admin", "vcluster.loft.sh/namespace": "shop", "vcluster.loft.sh/managed-by": "my-vc"})
        );
        assert_eq!(from[2], json!({"ipBlock": {"cidr": "10.0.0.0/8"}}));
        assert_eq!(spec["ingress"][0]["ports"], json!([{"port": 8080}]));
        assert_eq!(
            spec["egress"][0]["to"][0]["podSelector"]["matchLabels"],
            json!({"vcluster.loft.sh/managed-by": "my-vc"}),
            "an empty namespace selector means every namespace of the virtual cluster"
        );
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    }

    #[test]
    fn cluster_scoped_classes() {
        let class = json!({"metadata": {"name": "high", "uid": "u", "labels": {"tier": "a"}},
            "value": 2_000_000_000i64, "globalDefault": true, "description": "d", "preemptionPolicy": "Never"});
        let host = host_priority_class(&vc(), &class);
        assert_eq!(host["metadata"]["name"], "vcluster-high-x-vcluster-my-vc-x-my-vc");
        assert_eq!(host["value"], MAX_PRIORITY);
        assert_eq!(host["globalDefault"], false);
        assert_eq!(host["preemptionPolicy"], "Never");
        assert_eq!(host["metadata"]["labels"]["vcluster.loft.sh/managed-by"], "vcluster-my-vc-x-my-vc");
        assert!(host["metadata"].get("namespace").is_none());
        assert!(host["metadata"]["annotations"].get("vcluster.loft.sh/object-namespace").is_none());
        let storage = json!({"metadata": {"name": "fast", "uid": "u",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true", "team": "db"}},
            "provisioner": "ebs.csi.aws.com", "parameters": {"type": "gp3"}, "reclaimPolicy": "Retain"});
        let host = host_storage_class(&vc(), &storage);
        assert_eq!(host["metadata"]["name"], "vcluster-fast-x-vcluster-my-vc-x-my-vc");
        assert_eq!(host["provisioner"], "ebs.csi.aws.com");
        assert_eq!(host["parameters"]["type"], "gp3");
        assert!(host["metadata"]["annotations"].get("storageclass.kubernetes.io/is-default-class").is_none());
        assert_eq!(host["metadata"]["annotations"]["team"], "db");
    }

    #[test]
    fn tenant_volumes() {
        let volume = json!({"metadata": {"name": "data", "uid": "u"}, "spec": {"capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/mnt/data"}, "storageClassName": "manual",
            "claimRef": {"namespace": "db", "name": "data"}, "persistentVolumeReclaimPolicy": "Retain"}});
        let host = host_persistent_volume(&vc(), &volume);
        assert_eq!(host["metadata"]["name"], "vcluster-data-x-vcluster-my-vc-x-my-vc");
        assert!(host["spec"].get("claimRef").is_none());
        assert_eq!(host["spec"]["hostPath"]["path"], "/mnt/data");
        assert_eq!(
            host["spec"]["storageClassName"], "vcluster-manual-x-vcluster-my-vc-x-my-vc",
            "only this virtual cluster's claims name that class"
        );
    }

    #[test]
    fn budgets_and_service_accounts() {
        let budget = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}});
        let host = host_pod_disruption_budget(&vc(), &budget);
        assert_eq!(host["metadata"]["name"], "web-x-d-x-my-vc");
        assert_eq!(host["spec"]["minAvailable"], 2);
        assert_eq!(
            host["spec"]["selector"]["matchLabels"],
            json!({"app": "web", "vcluster.loft.sh/namespace": "d", "vcluster.loft.sh/managed-by": "my-vc"})
        );
        let account = json!({"metadata": {"name": "builder", "namespace": "d", "uid": "u",
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
            "secrets": [{"name": "builder-token"}], "imagePullSecrets": [{"name": "registry"}]});
        let host = host_service_account(&vc(), &account);
        assert_eq!(host["metadata"]["name"], "builder-x-d-x-my-vc");
        assert_eq!(host["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], "arn:aws:iam::1:role/x");
        assert_eq!(host["automountServiceAccountToken"], false);
        assert!(host.get("secrets").is_none() && host.get("imagePullSecrets").is_none());
    }
}
