//! The virtual `default/kubernetes` service and endpoints (sync-behavior.md 12.1): they mirror
//! the virtual cluster's own host service `HNS/VC`, whose endpoints point at the virtual API
//! server, so in-cluster clients reach the virtual API through the host service IP.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::{MANAGER, Syncer, ensure, ignore_not_found, to_value};

/// Ports of the host service as the virtual service shows them: without `kubelet`, without node ports.
pub(crate) fn virtual_ports(host: &Value) -> Value {
    let ports: Vec<Value> = host
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("name").and_then(Value::as_str) != Some("kubelet"))
        .map(|p| {
            let mut out = serde_json::Map::new();
            for key in ["name", "protocol", "appProtocol", "port", "targetPort"] {
                if let Some(v) = p.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect();
    json!(ports)
}

/// Subsets of the host endpoints as the virtual endpoints show them: the `https` port only, no
/// host names, node names or target references.
pub(crate) fn virtual_subsets(host: &Value) -> Value {
    let mut subsets = host.get("subsets").cloned().unwrap_or(json!([]));
    for subset in subsets.as_array_mut().into_iter().flatten() {
        for field in ["addresses", "notReadyAddresses"] {
            for address in subset.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(address) = address.as_object_mut() {
                    for key in ["hostname", "nodeName", "targetRef"] {
                        address.remove(key);
                    }
                }
            }
        }
        if let Some(ports) = subset.get_mut("ports").and_then(Value::as_array_mut) {
            ports.retain(|p| p.get("name").and_then(Value::as_str) == Some("https"));
        }
    }
    subsets
}

/// The host endpoints of the virtual cluster's service: the virtual API server's address.
pub(crate) fn host_endpoints_for(name: &str, api_server: SocketAddr) -> Value {
    let ip = if api_server.ip().is_unspecified() { "127.0.0.1".to_string() } else { api_server.ip().to_string() };
    json!({
        "metadata": {"name": name, "labels": {"app": "vcluster", "release": name}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": api_server.port(), "protocol": "TCP"}]}],
    })
}

impl Syncer {
    /// Makes virtual `default/kubernetes` (service and endpoints) follow the host service `HNS/VC`.
    pub(crate) async fn reconcile_kubernetes(&self) -> Result<(), kube::Error> {
        let name = &self.config.context.name;
        let host_services: Api<Service> = self.host_api();
        let Some(host) = host_services.get_opt(name).await? else { return Ok(()) };
        let host = to_value(&host);
        let virtual_services: Api<Service> = Api::namespaced(self.virtual_client.clone(), "default");
        let current = virtual_services.get_opt("kubernetes").await?.map(|s| to_value(&s));
        let ports = virtual_ports(&host);
        let ip = host.pointer("/spec/clusterIP").cloned().unwrap_or(Value::Null);
        let ips = host.pointer("/spec/clusterIPs").cloned().unwrap_or(json!([ip]));
        let same_ip = current.as_ref().is_some_and(|c| c.pointer("/spec/clusterIP") == Some(&ip));
        match current {
            Some(current) if same_ip => {
                if current.pointer("/spec/ports") != Some(&ports) {
                    let patch = json!({"spec": {"ports": ports}});
                    ignore_not_found(
                        virtual_services.patch("kubernetes", &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await,
                    )?;
                }
            }
            current => {
                if current.is_some() {
                    ignore_not_found(virtual_services.delete("kubernetes", &DeleteParams::default()).await)?;
                }
                let service = json!({
                    "metadata": {"name": "kubernetes", "namespace": "default",
                                 "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": ips, "ports": ports,
                             "sessionAffinity": "None"},
                });
                ensure(&virtual_services, service).await?;
            }
        }
        let host_endpoints: Api<Endpoints> = self.host_api();
        let Some(endpoints) = host_endpoints.get_opt(name).await? else { return Ok(()) };
        let subsets = virtual_subsets(&to_value(&endpoints));
        let virtual_endpoints: Api<Endpoints> = Api::namespaced(self.virtual_client.clone(), "default");
        let desired = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": subsets,
        });
        match virtual_endpoints.get_opt("kubernetes").await? {
            Some(existing) if to_value(&existing).get("subsets") == Some(&subsets) => Ok(()),
            Some(_) => ignore_not_found(
                virtual_endpoints.patch("kubernetes", &PatchParams::apply(MANAGER), &Patch::Merge(desired)).await,
            ),
            None => ensure(&virtual_endpoints, desired).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_virtual_service_shows_the_api_port_only() {
        let host = json!({"spec": {"ports": [
            {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP", "nodePort": 31000},
            {"name": "kubelet", "port": 10250, "targetPort": 8443, "protocol": "TCP"}]}});
        assert_eq!(
            virtual_ports(&host),
            json!([{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}])
        );
        let endpoints = json!({"subsets": [{"addresses": [{"ip": "10.0.0.5", "nodeName": "n", "targetRef": {"kind": "Pod"}}],
            "ports": [{"name": "https", "port": 8443}, {"name": "kubelet", "port": 10250}]}]});
        assert_eq!(
            virtual_subsets(&endpoints),
            json!([{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"name": "https", "port": 8443}]}])
        );
        let own = host_endpoints_for("vc", "0.0.0.0:6443".parse().unwrap());
        assert_eq!(own["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
        assert_eq!(own["subsets"][0]["ports"][0]["port"], 6443);
    }
}
