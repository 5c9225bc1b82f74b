//! Services (sync-behavior.md 3.4): the host service for a virtual one (selector pinned to this
//! virtual namespace and cluster, addresses left to the host), and the addresses the virtual
//! service takes from the host.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::Context;
use crate::labels::{host_labels, host_selector_map};
use crate::metadata::{Identity, host_annotations, kind_string};
use crate::names::host_name;

/// Annotations never copied between the two sides.
pub const EXCLUDED_ANNOTATIONS: &[&str] = &["field.cattle.io/publicEndpoints"];

fn strings(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The host service for virtual `service`.
pub fn host_service(context: &Context, service: &Value) -> Value {
    let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = service.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let host = host_name(context, name, namespace);
    let identity = Identity {
        name,
        namespace: Some(namespace),
        uid: service.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default(),
        kind: &kind_string("", "v1", "Service"),
        host_name: &host,
        host_namespace: Some(&context.host_namespace),
    };
    let labels = host_labels(context, &strings(service.pointer("/metadata/labels")), None, Some(namespace));
    let annotations = host_annotations(
        &strings(service.pointer("/metadata/annotations")),
        &BTreeMap::new(),
        EXCLUDED_ANNOTATIONS,
        &identity,
    );
    let mut spec = service.get("spec").cloned().unwrap_or(json!({}));
    if let Some(map) = spec.as_object_mut() {
        let selector = map.get("selector").and_then(Value::as_object).cloned();
        match host_selector_map(context, selector.as_ref(), namespace) {
            Some(selector) => {
                map.insert("selector".into(), Value::Object(selector));
            }
            None => {
                map.remove("selector");
            }
        }
        if map.get("clusterIP").and_then(Value::as_str) != Some("None") {
            map.remove("clusterIP");
        }
        for field in ["clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"] {
            map.remove(field);
        }
        if let Some(ports) = map.get_mut("ports").and_then(Value::as_array_mut) {
            for port in ports {
                if let Some(port) = port.as_object_mut() {
                    port.remove("nodePort");
                }
            }
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": host, "namespace": context.host_namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    })
}

/// `virtual_service` with the addresses the host allocated: cluster IPs, ports with node ports,
/// health check node port.
pub fn with_host_addresses(virtual_service: &Value, host: &Value) -> Value {
    let mut out = virtual_service.clone();
    if !out.get("spec").is_some_and(Value::is_object) {
        out["spec"] = json!({});
    }
    for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "ports", "healthCheckNodePort"] {
        match host.pointer(&format!("/spec/{field}")) {
            Some(value) => out["spec"][field] = value.clone(),
            None => {
                if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove(field);
                }
            }
        }
    }
    out
}

/// The host endpoints for the virtual endpoints of a selector-less service: addresses copied,
/// pod target references renamed to the host pods (sync-behavior.md 3.5).
pub fn host_endpoints(context: &Context, endpoints: &Value) -> Value {
    let name = endpoints.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = endpoints.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let host = host_name(context, name, namespace);
    let identity = Identity {
        name,
        namespace: Some(namespace),
        uid: endpoints.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default(),
        kind: &kind_string("", "v1", "Endpoints"),
        host_name: &host,
        host_namespace: Some(&context.host_namespace),
    };
    let labels = host_labels(context, &strings(endpoints.pointer("/metadata/labels")), None, Some(namespace));
    let annotations =
        host_annotations(&strings(endpoints.pointer("/metadata/annotations")), &BTreeMap::new(), &[], &identity);
    json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": host, "namespace": context.host_namespace, "labels": labels, "annotations": annotations},
        "subsets": host_subsets(context, endpoints.get("subsets")),
    })
}

/// Endpoint subsets with pod target references renamed to the host pods.
pub fn host_subsets(context: &Context, subsets: Option<&Value>) -> Value {
    let mut subsets = subsets.cloned().unwrap_or(json!([]));
    for subset in subsets.as_array_mut().into_iter().flatten() {
        for field in ["addresses", "notReadyAddresses"] {
            for address in subset.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                let Some(target) = address.get_mut("targetRef").and_then(Value::as_object_mut) else { continue };
                if target.get("kind").and_then(Value::as_str) != Some("Pod") {
                    continue;
                }
                let pod = target.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let pod_namespace = target.get("namespace").and_then(Value::as_str).unwrap_or_default().to_string();
                target.insert("name".into(), json!(host_name(context, &pod, &pod_namespace)));
                target.insert("namespace".into(), json!(context.host_namespace));
                target.remove("uid");
                target.remove("resourceVersion");
            }
        }
    }
    subsets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc() -> Context {
        Context::new("my-vc", "vcluster-my-vc")
    }

    #[test]
    fn worked_example() {
        let service = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"],
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30001}]}});
        let host = host_service(&vc(), &service);
        assert_eq!(host["metadata"]["name"], "web-x-default-x-my-vc");
        assert_eq!(
            host["spec"]["selector"],
            json!({"app": "web", "vcluster.loft.sh/managed-by": "my-vc", "vcluster.loft.sh/namespace": "default"})
        );
        assert!(host["spec"].get("clusterIP").is_none());
        assert_eq!(host["spec"]["ports"], json!([{"port": 80, "targetPort": 8080}]));
        let allocated = json!({"spec": {"clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"], "ports": [{"port": 80, "targetPort": 8080, "nodePort": 31234}]}});
        let back = with_host_addresses(&service, &allocated);
        assert_eq!(back["spec"]["clusterIP"], "10.96.12.34");
        assert_eq!(back["spec"]["ports"][0]["nodePort"], 31234);
        assert_eq!(back["spec"]["selector"], json!({"app": "web"}), "the virtual selector stays virtual");
    }

    #[test]
    fn headless_and_selectorless_services() {
        let headless = json!({"metadata": {"name": "db", "namespace": "d"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}});
        assert_eq!(host_service(&vc(), &headless)["spec"]["clusterIP"], "None");
        let external = json!({"metadata": {"name": "ext", "namespace": "d"}, "spec": {"ports": [{"port": 5432}]}});
        assert!(host_service(&vc(), &external)["spec"].get("selector").is_none());
    }

    #[test]
    fn endpoints_of_selectorless_services_point_at_host_pods() {
        let endpoints = json!({"metadata": {"name": "ext", "namespace": "d", "uid": "u"},
            "subsets": [{"addresses": [{"ip": "10.244.0.5", "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "d", "uid": "p"}},
                                       {"ip": "192.168.1.1"}],
                         "ports": [{"port": 5432}]}]});
        let host = host_endpoints(&vc(), &endpoints);
        assert_eq!(host["metadata"]["name"], "ext-x-d-x-my-vc");
        let address = &host["subsets"][0]["addresses"][0];
        assert_eq!(
            address["targetRef"],
            json!({"kind": "Pod", "name": "web-0-x-d-x-my-vc", "namespace": "vcluster-my-vc"})
        );
        assert_eq!(host["subsets"][0]["addresses"][1], json!({"ip": "192.168.1.1"}));
        assert_eq!(host["subsets"][0]["ports"], json!([{"port": 5432}]));
    }
}
