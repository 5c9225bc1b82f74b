//! Services (sync-behavior.md 3.4): the host service for a virtual one (selector pinned to this
//! virtual namespace and cluster, addresses left to the host), and the addresses the virtual
//! service takes from the host.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

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

/// Spec fields of a service that sync both ways after creation (sync-behavior.md §3.4): a host
/// change (node ports the host allocates, a load balancer IP) comes back, a virtual one goes.
pub const BIDIRECTIONAL: &[&str] = &[
    "type",
    "externalIPs",
    "externalName",
    "loadBalancerIP",
    "ports",
    "publishNotReadyAddresses",
    "externalTrafficPolicy",
    "sessionAffinity",
    "sessionAffinityConfig",
    "loadBalancerSourceRanges",
    "healthCheckNodePort",
];

/// What to write so both sides carry the same bidirectional spec fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecSync {
    /// Fields to set on the host service's spec (`null` removes).
    pub host: Map<String, Value>,
    /// Fields to set on the virtual service's spec.
    pub virtual_: Map<String, Value>,
    /// What both carry afterwards (the next `last`).
    pub agreed: Map<String, Value>,
}

/// Ports as `virtual_ports` says, with the node ports the host allocated for the same port and
/// protocol where the virtual side names none (so writing them never re-allocates).
fn with_host_node_ports(virtual_ports: &Value, host_ports: &Value) -> Value {
    let key =
        |p: &Value| (p.get("port").cloned(), p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string());
    let mut out = virtual_ports.clone();
    for port in out.as_array_mut().into_iter().flatten() {
        if port.get("nodePort").is_none()
            && let Some(node_port) = host_ports
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| key(h) == key(port))
                .and_then(|h| h.get("nodePort"))
        {
            port["nodePort"] = node_port.clone();
        }
    }
    out
}

/// Per field of [`BIDIRECTIONAL`]: equal sides stay; else a virtual change since `last` wins, then
/// a host change. Without `last` (first sight after a restart) a virtual value wins and a field
/// the virtual side leaves unset takes the host's (its defaults and allocations).
pub fn sync_spec(last: Option<&Map<String, Value>>, virtual_spec: &Value, host_spec: &Value) -> SpecSync {
    let mut out = SpecSync::default();
    for field in BIDIRECTIONAL {
        let (v, h) = (virtual_spec.get(*field).unwrap_or(&Value::Null), host_spec.get(*field).unwrap_or(&Value::Null));
        let v = &if *field == "ports" { with_host_node_ports(v, h) } else { v.clone() };
        let merged = if v == h {
            v.clone()
        } else {
            match last.map(|l| l.get(*field).unwrap_or(&Value::Null)) {
                Some(base) if v != base => v.clone(),
                Some(_) => h.clone(),
                None if v.is_null() => h.clone(),
                None => v.clone(),
            }
        };
        if *h != merged {
            out.host.insert(field.to_string(), merged.clone());
        }
        if virtual_spec.get(*field).unwrap_or(&Value::Null) != &merged {
            out.virtual_.insert(field.to_string(), merged.clone());
        }
        if !merged.is_null() {
            out.agreed.insert(field.to_string(), merged);
        }
    }
    out
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

    #[test]
    fn node_ports_the_host_allocates_come_back_and_virtual_edits_go() {
        let virtual_spec = json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]});
        let host_spec = json!({"type": "NodePort", "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}]});
        let first = sync_spec(None, &virtual_spec, &host_spec);
        assert!(first.host.is_empty(), "nothing to change on the host: {:?}", first.host);
        assert_eq!(first.virtual_["ports"][0]["nodePort"], 31000);
        assert_eq!(first.virtual_["externalTrafficPolicy"], "Cluster");
        // The tenant adds a port: it goes to the host, the allocated node port kept.
        let edited = json!({"type": "NodePort", "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}, {"port": 443, "protocol": "TCP"}]});
        let second = sync_spec(Some(&first.agreed), &edited, &host_spec);
        assert_eq!(second.host["ports"][0]["nodePort"], 31000);
        assert_eq!(second.host["ports"].as_array().unwrap().len(), 2);
        // Someone sets a load balancer IP on the host: it comes back.
        let mut host_later = host_spec.clone();
        host_later["loadBalancerIP"] = json!("203.0.113.7");
        let third = sync_spec(
            Some(&first.agreed),
            &json!({"type": "NodePort", "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}]}),
            &host_later,
        );
        assert_eq!(third.virtual_.get("loadBalancerIP"), Some(&json!("203.0.113.7")));
        assert!(third.host.is_empty());
    }
}
