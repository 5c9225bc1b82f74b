//! The endpoints controller: Endpoints for every service with a selector, from the running pods
//! it selects. Runs in the virtual cluster and on the simulated host.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
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

/// The EndpointSlice mirroring `subsets` of `service`: one slice per service, named after it and
/// its uid, owned by it, one endpoint per address.
pub fn endpoint_slice(service: &Value, subsets: &[Value]) -> Value {
    let name = str_of(service, "/metadata/name");
    let uid = str_of(service, "/metadata/uid");
    let suffix: String = crate::workloads::template_hash(&json!(uid)).chars().take(5).collect();
    let mut labels = service.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    labels["kubernetes.io/service-name"] = json!(name);
    labels["endpointslice.kubernetes.io/managed-by"] = json!("endpointslice-controller.k8s.io");
    let mut endpoints: Vec<Value> = Vec::new();
    let mut ports: Vec<Value> = Vec::new();
    for subset in subsets {
        for port in subset.get("ports").and_then(Value::as_array).into_iter().flatten() {
            // A slice port always has a name (a pointer upstream, "" for an unnamed port):
            // kubectl describe dereferences it.
            let mut port = port.clone();
            if port.get("name").is_none() {
                port["name"] = json!("");
            }
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        for (field, ready) in [("addresses", true), ("notReadyAddresses", false)] {
            for address in subset.get(field).and_then(Value::as_array).into_iter().flatten() {
                let ip = str_of(address, "/ip");
                if endpoints.iter().any(|e| e.pointer("/addresses/0").and_then(Value::as_str) == Some(ip)) {
                    continue;
                }
                let mut endpoint =
                    json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false}});
                for key in ["nodeName", "targetRef"] {
                    if let Some(value) = address.get(key) {
                        endpoint[key] = value.clone();
                    }
                }
                endpoints.push(endpoint);
            }
        }
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-{suffix}"),
            "namespace": str_of(service, "/metadata/namespace"),
            "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// Objects of one kind by namespace and label pair (for services: selector pair), so the
/// services a pod change touches, and the pods a service selects, are found without scanning
/// every object of the namespace.
#[derive(Default)]
struct LabelIndex {
    by_pair: HashMap<(String, String, String), BTreeSet<String>>,
    pairs: HashMap<(String, String), BTreeMap<String, String>>,
}

impl LabelIndex {
    /// Records object `namespace/name` with `pairs` (None: gone).
    fn set(&mut self, namespace: &str, name: &str, pairs: Option<&BTreeMap<String, String>>) {
        let key = (namespace.to_string(), name.to_string());
        if self.pairs.get(&key).map(Some) == Some(pairs) || (pairs.is_none() && !self.pairs.contains_key(&key)) {
            return;
        }
        for (k, v) in self.pairs.remove(&key).into_iter().flatten() {
            let pair = (namespace.to_string(), k, v);
            if let Some(names) = self.by_pair.get_mut(&pair) {
                names.remove(name);
                if names.is_empty() {
                    self.by_pair.remove(&pair);
                }
            }
        }
        if let Some(pairs) = pairs {
            for (k, v) in pairs {
                let pair = (namespace.to_string(), k.clone(), v.clone());
                self.by_pair.entry(pair).or_default().insert(name.to_string());
            }
            self.pairs.insert(key, pairs.clone());
        }
    }

    /// Names of the objects of `namespace` with label pair `key=value`.
    fn with_pair(&self, namespace: &str, key: &str, value: &str) -> impl Iterator<Item = &String> {
        self.by_pair.get(&(namespace.to_string(), key.to_string(), value.to_string())).into_iter().flatten()
    }

    fn pairs(&self, namespace: &str, name: &str) -> Option<&BTreeMap<String, String>> {
        self.pairs.get(&(namespace.to_string(), name.to_string()))
    }
}

/// What changed.
enum Change {
    Pod(String, String),
    Service(String, String),
}

/// Whether `labels` satisfy a service's `selector` (which must not be empty).
fn selects(
    selector: &std::collections::BTreeMap<String, String>,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Keeps Endpoints in step with services and pods until the future is dropped. A pod change
/// recomputes only the services that select the pod now or listed it before; what was last
/// written is remembered, so nothing is read back from the API.
pub async fn run(client: Client) {
    let (dirty, mut changes) = mpsc::unbounded_channel::<Change>();
    let pod_dirty = dirty.clone();
    let (pods, pods_task) = crate::reflect_pods(Api::<Pod>::all(client.clone()), move |pod: &Pod| {
        let _ = pod_dirty.send(Change::Pod(pod.namespace().unwrap_or_default(), pod.name_any()));
    });
    let (services, services_task) = crate::reflect(Api::<Service>::all(client.clone()), move |service: &Service| {
        let _ = dirty.send(Change::Service(service.namespace().unwrap_or_default(), service.name_any()));
    });
    let _tasks = crate::Tasks(vec![pods_task, services_task]);
    let _ = pods.wait_until_ready().await;
    let _ = services.wait_until_ready().await;
    // Subsets last written per service (seeded from what exists, so a restart rewrites nothing
    // that is current), and the services each pod was listed in.
    let mut written: HashMap<(String, String), Value> = HashMap::new();
    if let Ok(existing) = Api::<Endpoints>::all(client.clone()).list(&Default::default()).await {
        for endpoints in existing.items {
            let subsets = serde_json::to_value(endpoints.subsets.clone().unwrap_or_default()).unwrap_or(Value::Null);
            written.insert((endpoints.namespace().unwrap_or_default(), endpoints.name_any()), subsets);
        }
    }
    let mut members: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    let (mut selectors, mut pod_labels) = (LabelIndex::default(), LabelIndex::default());
    let mut slices: HashMap<(String, String), String> = HashMap::new();
    let ours = kube::api::ListParams::default()
        .labels("endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io");
    if let Ok(existing) = Api::<EndpointSlice>::all(client.clone()).list(&ours).await {
        for slice in existing.items {
            if let Some(service) = slice.labels().get("kubernetes.io/service-name") {
                slices.insert((slice.namespace().unwrap_or_default(), service.clone()), slice.name_any());
            }
        }
    }
    while let Some(first) = changes.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = changes.try_recv() {
            batch.push(more);
        }
        let mut todo: BTreeSet<(String, String)> = BTreeSet::new();
        for change in batch {
            match change {
                Change::Service(namespace, name) => {
                    let service = services.get(&ObjectRef::new(&name).within(&namespace));
                    let selector = service.as_ref().and_then(|s| s.spec.as_ref()?.selector.clone());
                    selectors.set(&namespace, &name, selector.as_ref().filter(|s| !s.is_empty()));
                    todo.insert((namespace, name));
                }
                Change::Pod(namespace, name) => {
                    let pod = pods.get(&ObjectRef::new(&name).within(&namespace));
                    let labels = pod.as_ref().map(|p| p.labels().clone()).unwrap_or_default();
                    pod_labels.set(&namespace, &name, pod.as_ref().map(|_| &labels));
                    // The services whose selector shares a pair with the pod's labels, then all of it.
                    for (k, v) in &labels {
                        for service in selectors.with_pair(&namespace, k, v) {
                            if selectors.pairs(&namespace, service).is_some_and(|s| selects(s, &labels)) {
                                todo.insert((namespace.clone(), service.clone()));
                            }
                        }
                    }
                    let listed_in = if pod.is_some() {
                        members.get(&(namespace.clone(), name)).cloned()
                    } else {
                        members.remove(&(namespace.clone(), name))
                    };
                    for service in listed_in.into_iter().flatten() {
                        todo.insert((namespace.clone(), service));
                    }
                }
            }
        }
        for (namespace, name) in todo {
            let key = (namespace.clone(), name.clone());
            let api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
            let Some(service) = services.get(&ObjectRef::new(&name).within(&namespace)) else {
                if written.remove(&key).is_some() {
                    let _ = api.delete(&name, &Default::default()).await;
                }
                if let Some(slice) = slices.remove(&key) {
                    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
                    let _ = slice_api.delete(&slice, &Default::default()).await;
                }
                continue;
            };
            let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
            if selector.is_empty() {
                continue;
            }
            // The pods with the selector's first pair, then all of it.
            let (first_key, first_value) = selector.iter().next().expect("a selector that is not empty");
            let pod_values: Vec<Value> = pod_labels
                .with_pair(&namespace, first_key, first_value)
                .filter(|pod| pod_labels.pairs(&namespace, pod).is_some_and(|l| selects(&selector, l)))
                .filter_map(|pod| pods.get(&ObjectRef::new(pod).within(&namespace)))
                .filter_map(|p| serde_json::to_value(p.as_ref()).ok())
                .collect();
            let pod_refs: Vec<&Value> = pod_values.iter().collect();
            let service_value = serde_json::to_value(service.as_ref()).unwrap_or(Value::Null);
            let Some(subsets) = endpoint_subsets(&service_value, &pod_refs) else { continue };
            let wanted = json!(subsets);
            let slice = endpoint_slice(&service_value, &subsets);
            let slice_name = slice["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if written.get(&key) == Some(&wanted) && slices.contains_key(&key) {
                continue;
            }
            let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
            match slice_api.patch(&slice_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&slice)).await {
                Ok(_) => {
                    slices.insert(key.clone(), slice_name);
                }
                Err(error) => tracing::debug!(%namespace, %name, %error, "endpoint slice update failed"),
            }
            if written.get(&key) == Some(&wanted) {
                continue;
            }
            let desired = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": namespace, "labels": service.labels()}, "subsets": subsets});
            match api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&desired)).await {
                Ok(_) => {
                    for pod in pod_values.iter().filter_map(|p| p.pointer("/metadata/name").and_then(Value::as_str)) {
                        members.entry((namespace.clone(), pod.to_string())).or_default().insert(name.clone());
                    }
                    written.insert(key, wanted);
                }
                Err(error) => tracing::debug!(%namespace, %name, %error, "endpoints update failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_index_finds_objects_by_pair_and_forgets_old_pairs() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let mut index = LabelIndex::default();
        index.set("shop", "web-1", Some(&labels(&[("app", "web"), ("tier", "front")])));
        index.set("shop", "web-2", Some(&labels(&[("app", "web")])));
        index.set("other", "web-3", Some(&labels(&[("app", "web")])));
        let found = |index: &LabelIndex| index.with_pair("shop", "app", "web").cloned().collect::<Vec<_>>();
        assert_eq!(found(&index), ["web-1", "web-2"], "only its namespace");
        index.set("shop", "web-2", Some(&labels(&[("app", "api")])));
        assert_eq!(found(&index), ["web-1"], "a label change moves it");
        index.set("shop", "web-1", None);
        assert!(found(&index).is_empty());
        assert_eq!(index.pairs("shop", "web-2"), Some(&labels(&[("app", "api")])));
        assert_eq!(index.by_pair.len(), 2, "no empty entries left: {:?}", index.by_pair.keys());
    }

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

    #[test]
    fn slices_mirror_the_endpoints() {
        let service = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u1", "labels": {"team": "a"}}});
        let subsets = vec![json!({
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "addresses": [{"ip": "10.244.0.2", "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "p1", "namespace": "d"}}],
            "notReadyAddresses": [{"ip": "10.244.0.3"}],
        })];
        let slice = endpoint_slice(&service, &subsets);
        assert!(slice["metadata"]["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "web");
        assert_eq!(slice["metadata"]["labels"]["team"], "a");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(slice["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
        assert_eq!(slice["endpoints"][0]["addresses"], json!(["10.244.0.2"]));
        assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "p1");
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(endpoint_slice(&service, &[])["endpoints"], json!([]));
        let unnamed = vec![json!({"ports": [{"port": 6379, "protocol": "TCP"}], "addresses": [{"ip": "10.244.0.4"}]})];
        assert_eq!(endpoint_slice(&service, &unnamed)["ports"], json!([{"name": "", "port": 6379, "protocol": "TCP"}]));
    }
}
