//! Service replication (`networking.replicateServices`, sync-behavior.md §12.4): a host service
//! shown in the virtual cluster as a headless service whose endpoints reach it, and a virtual
//! service exposed in the host namespace under a plain name. Objects made this way carry
//! `vcluster.loft.sh/controlled-by: vcluster`, so the ordinary service syncer leaves them alone.

use serde_json::{Map, Value, json};

use crate::Context;
use crate::labels::{CONTROLLED_BY, host_selector_map};

/// The value of `vcluster.loft.sh/controlled-by` on replicated services.
pub const CONTROLLER: &str = "vcluster";

/// Whether `object` was made by service replication.
pub fn is_replica(object: &Value) -> bool {
    object.pointer("/metadata/labels").and_then(|l| l.get(CONTROLLED_BY)).and_then(Value::as_str) == Some(CONTROLLER)
}

/// The ports of `service` without node ports.
fn ports(service: &Value) -> Value {
    let mut ports = service.pointer("/spec/ports").cloned().unwrap_or_else(|| json!([]));
    for port in ports.as_array_mut().into_iter().flatten() {
        if let Some(port) = port.as_object_mut() {
            port.remove("nodePort");
        }
    }
    ports
}

fn replica_metadata(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace, "labels": {CONTROLLED_BY: CONTROLLER}})
}

/// The virtual headless service standing for host service `host` as `namespace/name`.
pub fn virtual_service(host: &Value, namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": replica_metadata(name, namespace),
        "spec": {"clusterIP": "None", "type": "ClusterIP", "ports": ports(host)},
    })
}

/// The virtual endpoints of that service: the host service's cluster IP with its ports, or for a
/// headless host service the addresses of its host endpoints (without references to host pods
/// and nodes, which the virtual cluster does not have).
pub fn virtual_endpoints(host: &Value, host_endpoints: Option<&Value>, namespace: &str, name: &str) -> Value {
    let cluster_ip = host.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
    let subsets = if cluster_ip.is_empty() || cluster_ip == "None" {
        let mut subsets = host_endpoints.and_then(|e| e.get("subsets")).cloned().unwrap_or_else(|| json!([]));
        for subset in subsets.as_array_mut().into_iter().flatten() {
            for key in ["addresses", "notReadyAddresses"] {
                for address in subset.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(address) = address.as_object_mut() {
                        address.remove("targetRef");
                        address.remove("nodeName");
                    }
                }
            }
        }
        subsets
    } else {
        let ports: Vec<Value> = ports(host)
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut port = Map::new();
                for key in ["name", "protocol", "appProtocol"] {
                    if let Some(v) = p.get(key) {
                        port.insert(key.into(), v.clone());
                    }
                }
                port.insert("port".into(), p.get("port").cloned().unwrap_or(json!(0)));
                Value::Object(port)
            })
            .collect();
        json!([{"addresses": [{"ip": cluster_ip}], "ports": ports}])
    };
    let mut endpoints = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": replica_metadata(name, namespace)});
    if subsets.as_array().is_some_and(|s| !s.is_empty()) {
        endpoints["subsets"] = subsets;
    }
    endpoints
}

/// The host service in the host namespace, under plain `name`, exposing virtual service
/// `service`: its ports, its selector translated to the host pods' labels (headless stays
/// headless).
pub fn host_service(context: &Context, service: &Value, name: &str) -> Value {
    let namespace = service.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let selector = service.pointer("/spec/selector").and_then(Value::as_object);
    let mut spec = json!({"type": "ClusterIP", "ports": ports(service)});
    if let Some(selector) = host_selector_map(context, selector, namespace) {
        spec["selector"] = Value::Object(selector);
    }
    if service.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
        spec["clusterIP"] = json!("None");
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": replica_metadata(name, &context.host_namespace), "spec": spec})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_service_is_a_headless_virtual_service_reaching_its_cluster_ip() {
        let host = json!({"metadata": {"name": "db", "namespace": "data"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.7",
            "ports": [{"name": "pg", "port": 5432, "targetPort": 5432, "protocol": "TCP", "nodePort": 30007}]}});
        let service = virtual_service(&host, "default", "database");
        assert_eq!(
            service,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "database", "namespace": "default", "labels": {"vcluster.loft.sh/controlled-by": "vcluster"}},
                "spec": {"clusterIP": "None", "type": "ClusterIP", "ports": [{"name": "pg", "port": 5432, "targetPort": 5432, "protocol": "TCP"}]}})
        );
        assert!(is_replica(&service));
        let endpoints = virtual_endpoints(&host, None, "default", "database");
        assert_eq!(
            endpoints["subsets"],
            json!([{"addresses": [{"ip": "10.96.0.7"}], "ports": [{"name": "pg", "protocol": "TCP", "port": 5432}]}])
        );
    }

    #[test]
    fn a_headless_host_service_lends_its_endpoint_addresses() {
        let host = json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        let host_endpoints = json!({"subsets": [{"addresses": [{"ip": "10.0.0.5", "nodeName": "n1",
            "targetRef": {"kind": "Pod", "name": "web-0"}}], "ports": [{"port": 80}]}]});
        let endpoints = virtual_endpoints(&host, Some(&host_endpoints), "default", "web");
        assert_eq!(endpoints["subsets"], json!([{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"port": 80}]}]));
        assert!(virtual_endpoints(&host, None, "default", "web").get("subsets").is_none());
    }

    #[test]
    fn a_virtual_service_is_exposed_on_the_host_selecting_its_pods() {
        let context = Context::new("vc1", "vcluster-vc1");
        let service = json!({"metadata": {"name": "api", "namespace": "shop"}, "spec": {"clusterIP": "None",
            "selector": {"app": "api"}, "ports": [{"port": 8080, "nodePort": 31000}]}});
        let host = host_service(&context, &service, "shop-api");
        assert_eq!(host["metadata"]["name"], "shop-api");
        assert_eq!(host["metadata"]["namespace"], "vcluster-vc1");
        assert_eq!(host["spec"]["clusterIP"], "None");
        assert_eq!(host["spec"]["ports"], json!([{"port": 8080}]));
        let selector = &host["spec"]["selector"];
        assert_eq!(selector["vcluster.loft.sh/managed-by"], "vc1");
        assert_eq!(selector["vcluster.loft.sh/namespace"], "shop");
        assert_eq!(selector.as_object().unwrap().len(), 3, "{selector}");
    }
}
