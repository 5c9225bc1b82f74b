//! The endpoints controller: Endpoints for every service with a selector, from the running pods
//! it selects. Runs in the virtual cluster and on the simulated host.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Field manager of the endpoints the controller writes.
pub const MANAGER: &str = "endpoint-controller";

fn is_ready(pod: &Value) -> bool {
    crate::workloads::is_ready(pod)
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn resolve_target_port(port: &Value, pod: &Value) -> Option<i64> {
    match port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default())
            .find(|p| str_of(p, "/name") == name)
            .and_then(|p| p.get("containerPort").and_then(Value::as_i64)),
        _ => port.get("port").and_then(Value::as_i64),
    }
}

/// The Endpoints `subsets` of `service` over the running pods it selects, or None when the service
/// has no selector (its endpoints are managed by someone else).
pub fn endpoint_subsets(service: &Value, pods: &[&Value]) -> Option<Vec<Value>> {
    let selector = service.pointer("/spec/selector").and_then(Value::as_object).filter(|s| !s.is_empty())?;
    let selected: Vec<&Value> = pods
        .iter()
        .copied()
        .filter(|p| {
            let labels = p.pointer("/metadata/labels").and_then(Value::as_object);
            selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
                && !str_of(p, "/status/podIP").is_empty()
                && p.pointer("/metadata/deletionTimestamp").is_none()
                && str_of(p, "/status/phase") == "Running"
        })
        .collect();
    let mut subsets = Vec::new();
    for port in service.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        let mut number = None;
        for pod in &selected {
            let Some(target) = resolve_target_port(port, pod) else { continue };
            number = Some(target);
            let address = json!({
                "ip": str_of(pod, "/status/podIP"),
                "nodeName": str_of(pod, "/spec/nodeName"),
                "targetRef": {"kind": "Pod", "namespace": str_of(pod, "/metadata/namespace"), "name": str_of(pod, "/metadata/name"), "uid": str_of(pod, "/metadata/uid")},
            });
            if is_ready(pod) { ready.push(address) } else { not_ready.push(address) }
        }
        let Some(number) = number else { continue };
        let mut endpoint_port =
            json!({"port": number, "protocol": port.get("protocol").cloned().unwrap_or(json!("TCP"))});
        if let Some(name) = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            endpoint_port["name"] = json!(name);
        }
        let mut subset = json!({"ports": [endpoint_port]});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        subsets.push(subset);
    }
    Some(subsets)
}

/// Keeps Endpoints in step with services and pods until the future is dropped.
pub async fn run(client: Client) {
    let (dirty, mut changes) = mpsc::unbounded_channel::<String>();
    let pod_dirty = dirty.clone();
    let (pods, pods_task) = crate::reflect(Api::<Pod>::all(client.clone()), move |pod: &Pod| {
        let _ = pod_dirty.send(pod.namespace().unwrap_or_default());
    });
    let (services, services_task) = crate::reflect(Api::<Service>::all(client.clone()), move |service: &Service| {
        let _ = dirty.send(service.namespace().unwrap_or_default());
    });
    let _tasks = crate::Tasks(vec![pods_task, services_task]);
    while let Some(first) = changes.recv().await {
        let mut namespaces = BTreeSet::from([first]);
        while let Ok(more) = changes.try_recv() {
            namespaces.insert(more);
        }
        for namespace in namespaces {
            let pod_values: Vec<Value> = pods
                .state()
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
                .filter_map(|p| serde_json::to_value(p.as_ref()).ok())
                .collect();
            let pod_refs: Vec<&Value> = pod_values.iter().collect();
            let api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
            for service in services.state().iter().filter(|s| s.namespace().as_deref() == Some(namespace.as_str())) {
                let service_value = serde_json::to_value(service.as_ref()).unwrap_or(Value::Null);
                let Some(subsets) = endpoint_subsets(&service_value, &pod_refs) else { continue };
                let name = service.name_any();
                let desired = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": namespace, "labels": service.labels()}, "subsets": subsets});
                let current = api.get_opt(&name).await.ok().flatten();
                let current_subsets = current.as_ref().map(|e| serde_json::to_value(&e.subsets).unwrap_or(Value::Null));
                let wanted = if subsets.is_empty() { Value::Null } else { json!(subsets) };
                if current_subsets.as_ref() == Some(&wanted) {
                    continue;
                }
                if let Err(error) =
                    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired)).await
                {
                    tracing::debug!(%namespace, %name, %error, "endpoints update failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_selected_running_pods() {
        let service =
            json!({"spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}});
        let ready = json!({"metadata": {"name": "p1", "namespace": "d", "uid": "1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n", "containers": [{"ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.244.0.2", "conditions": [{"type": "Ready", "status": "True"}]}});
        let other = json!({"metadata": {"name": "p2", "labels": {"app": "db"}}, "status": {"phase": "Running", "podIP": "10.244.0.3"}});
        let subsets = endpoint_subsets(&service, &[&ready, &other]).unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.244.0.2");
        assert_eq!(subsets[0]["ports"][0], json!({"port": 8080, "protocol": "TCP", "name": "http"}));
        assert!(endpoint_subsets(&json!({"spec": {"ports": []}}), &[]).is_none(), "no selector: not ours");
    }
}
