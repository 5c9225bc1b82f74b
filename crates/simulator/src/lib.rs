//! A simulated host cluster in the spirit of KWOK: nodes with leases, a scheduler, a kubelet that
//! runs pods (IPs, schema-complete statuses, completion, graceful deletion) and an endpoints
//! controller. It talks to its API server only through `kube::Client`, so it runs unchanged
//! against any Kubernetes API.
//!
//! The decisions are pure functions in [`lifecycle`] and [`scheduler`]; this module is the thin
//! async driver.

pub mod kubelet;
pub mod lifecycle;
pub mod scheduler;
pub mod script;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use scheduler::{NodeView, Placed};
use vkube_controllers::Tasks;

/// Annotation: seconds a pod with restartPolicy Never/OnFailure runs before it completes.
pub const RUN_SECONDS: &str = "sim.vkube.io/run-seconds";
/// Annotation: the exit code such a pod completes with (0 = Succeeded, else Failed).
pub const EXIT_CODE: &str = "sim.vkube.io/exit-code";
/// Field manager of every write the simulator makes.
pub const MANAGER: &str = "vkube-simulator";

/// How the simulated host looks.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Node names are `<prefix>-<i>`.
    pub node_prefix: String,
    /// How long a run-to-completion pod runs unless its annotation says otherwise.
    pub default_run: Duration,
    /// Pods each node accepts.
    pub pods_per_node: usize,
    /// Attached to a cluster that has its own scheduler and controllers (a real control
    /// plane): only the nodes, the kubelet and the default storage class's provisioner run.
    pub attached: bool,
    /// Where a kubelet API for these nodes listens ([`kubelet::KubeletServer`]): nodes report
    /// its address as their only address (`InternalIP`, also the pods' host IP) and its port as
    /// their kubelet port, so an API server that calls kubelets reaches it. Without one, nodes
    /// report made-up addresses `10.0.0.<i+2>` and port 10250.
    pub kubelet: Option<std::net::SocketAddr>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            nodes: 2,
            node_prefix: "sim-node".into(),
            default_run: Duration::from_secs(1),
            pods_per_node: 110,
            attached: false,
            kubelet: None,
        }
    }
}

/// Why the simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The API server refused a write the simulator cannot do without.
    #[error("could not register node {node}")]
    Node {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl SimulatorConfig {
    /// The address node `index` reports (and its pods' host IP).
    fn node_ip(&self, index: usize) -> String {
        match self.kubelet {
            Some(endpoint) => endpoint.ip().to_string(),
            None => format!("10.0.0.{}", index + 2),
        }
    }
}

fn node_object(config: &SimulatorConfig, index: usize) -> Value {
    let name = format!("{}-{index}", config.node_prefix);
    let now = now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "vkube-simulated", "type": "vkube-simulated",
        }, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": format!("10.244.{index}.0/24"), "podCIDRs": [format!("10.244.{index}.0/24")]},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": config.pods_per_node.to_string(), "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": config.pods_per_node.to_string(), "ephemeral-storage": "100Gi"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": match config.kubelet {
                // The kubelet API is reached there (API servers prefer a Hostname address).
                Some(_) => json!([{"type": "InternalIP", "address": config.node_ip(index)}]),
                None => json!([{"type": "InternalIP", "address": config.node_ip(index)}, {"type": "Hostname", "address": name}]),
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet.map_or(10250, |e| e.port())}},
            "nodeInfo": {
                "machineID": format!("vkube-{index}"), "systemUUID": format!("vkube-{index}"), "bootID": format!("vkube-{index}"),
                "kernelVersion": "6.1.0-vkube", "osImage": "vkube simulated node", "containerRuntimeVersion": "vkube://1.0",
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

/// Pod IPs per node: `10.244.<node>.2` to `.254`.
#[derive(Debug, Default)]
struct Addresses {
    by_pod: HashMap<String, (usize, u8)>,
    used: HashMap<usize, BTreeSet<u8>>,
}

impl Addresses {
    fn record(&mut self, uid: &str, node: usize, ip: &str) {
        if let Some(last) = ip.rsplit('.').next().and_then(|o| o.parse::<u8>().ok()) {
            self.used.entry(node).or_default().insert(last);
            self.by_pod.insert(uid.to_string(), (node, last));
        }
    }

    fn allocate(&mut self, uid: &str, node: usize) -> Option<String> {
        if let Some((n, octet)) = self.by_pod.get(uid)
            && *n == node
        {
            return Some(format!("10.244.{node}.{octet}"));
        }
        let used = self.used.entry(node).or_default();
        let octet = (2..=254u8).find(|o| !used.contains(o))?;
        used.insert(octet);
        self.by_pod.insert(uid.to_string(), (node, octet));
        Some(format!("10.244.{node}.{octet}"))
    }

    fn release(&mut self, uid: &str) {
        if let Some((node, octet)) = self.by_pod.remove(uid)
            && let Some(used) = self.used.get_mut(&node)
        {
            used.remove(&octet);
        }
    }
}

/// Active pods per node as the scheduler knows them: bindings it made count at once (like the
/// real scheduler's assumed pods), so a burst spreads across nodes instead of landing on the one
/// the watch cache still shows as empty.
#[derive(Debug, Default)]
struct NodeLoad {
    by_pod: HashMap<String, (String, Placed)>,
    /// Per node: how many pods, and what they request.
    nodes: HashMap<String, (usize, vkube_quota::ResourceList)>,
}

fn add_requests(list: &mut vkube_quota::ResourceList, requests: &vkube_quota::ResourceList, remove: bool) {
    for (name, q) in requests {
        let have = list.get(name).copied().unwrap_or(vkube_quota::Quantity::ZERO);
        list.insert(name.clone(), if remove { have - *q } else { have + *q });
    }
}

impl NodeLoad {
    /// Records where pod `uid` runs (None: nowhere, gone or finished); true when that freed room.
    fn set(&mut self, uid: &str, placed: Option<(&str, Placed)>) -> bool {
        if let (Some((old, _)), Some((node, _))) = (self.by_pod.get(uid), &placed)
            && old == node
        {
            return false;
        }
        let mut freed = false;
        if let Some((old, pod)) = self.by_pod.remove(uid)
            && let Some((count, requested)) = self.nodes.get_mut(&old)
        {
            *count = count.saturating_sub(1);
            add_requests(requested, &pod.requests, true);
            freed = true;
        }
        if let Some((node, pod)) = placed {
            let (count, requested) = self.nodes.entry(node.to_string()).or_default();
            *count += 1;
            add_requests(requested, &pod.requests, false);
            self.by_pod.insert(uid.to_string(), (node.to_string(), pod));
        }
        freed
    }

    fn on(&self, node: &str) -> (usize, vkube_quota::ResourceList) {
        self.nodes.get(node).cloned().unwrap_or_default()
    }

    fn pods_on(&self, node: &str) -> Vec<Placed> {
        self.by_pod.values().filter(|(n, _)| n == node).map(|(_, p)| p.clone()).collect()
    }
}

/// A pod nominated to a node by preemption: it waits there for its victims to go, and pods of
/// lower priority may not take the room meanwhile.
#[derive(Clone, Debug)]
struct Nomination {
    node: String,
    pod: Placed,
    victims: Vec<String>,
}

struct Shared {
    client: Client,
    config: SimulatorConfig,
    node_names: Vec<String>,
    load: Mutex<NodeLoad>,
    /// Preemptors waiting for their victims, by UID.
    nominated: Mutex<HashMap<String, Nomination>>,
    addresses: Mutex<Addresses>,
    completing: Mutex<HashSet<String>>,
    pods: Store<Pod>,
    /// The nodes as they are now (labels, taints and cordons others may have changed).
    nodes: Store<Node>,
}

impl Shared {
    fn node_index(&self, name: &str) -> Option<usize> {
        self.node_names.iter().position(|n| n == name)
    }

    /// The nodes as pod `uid` of priority `priority` finds them: what is bound there, plus the
    /// pods nominated there that it may not displace (those of at least its priority).
    fn node_views(&self, uid: &str, priority: i64) -> Vec<NodeView> {
        let load = self.load.lock().unwrap_or_else(|p| p.into_inner());
        let nominated = self.nominated.lock().unwrap_or_else(|p| p.into_inner());
        self.node_names
            .iter()
            .map(|name| {
                let node = self.nodes.get(&reflector::ObjectRef::new(name));
                let labels = match &node {
                    Some(node) => node.labels().clone(),
                    None => [
                        ("kubernetes.io/hostname".to_string(), name.clone()),
                        ("kubernetes.io/os".to_string(), "linux".to_string()),
                        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                        ("type".to_string(), "vkube-simulated".to_string()),
                    ]
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                };
                let allocatable =
                    match node.as_ref().and_then(|n| n.status.as_ref()).and_then(|s| s.allocatable.as_ref()) {
                        Some(allocatable) => {
                            vkube_quota::resource_list(Some(&serde_json::to_value(allocatable).unwrap_or_default()))
                        }
                        None => {
                            vkube_quota::resource_list(Some(&node_object(&self.config, 0)["status"]["allocatable"]))
                        }
                    };
                let spec = node.as_ref().and_then(|n| n.spec.clone()).unwrap_or_default();
                let (mut pods, mut requested) = load.on(name);
                for nomination in nominated.values() {
                    if nomination.node == *name && nomination.pod.uid != uid && nomination.pod.priority >= priority {
                        pods += 1;
                        add_requests(&mut requested, &nomination.pod.requests, false);
                    }
                }
                NodeView {
                    name: name.clone(),
                    labels,
                    taints: spec.taints.iter().flatten().map(|t| serde_json::to_value(t).unwrap_or_default()).collect(),
                    schedulable: spec.unschedulable != Some(true),
                    allocatable,
                    requested,
                    pods,
                }
            })
            .collect()
    }

    /// Updates the node load from a watched pod; true when a slot was freed.
    fn observe(&self, pod: &Pod, deleted: bool) -> bool {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        let active = !deleted && !matches!(phase, "Succeeded" | "Failed");
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|_| active);
        let uid = pod.uid().unwrap_or_default();
        if deleted || node.is_some() {
            self.nominated.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
        }
        let mut load = self.load.lock().unwrap_or_else(|p| p.into_inner());
        if node.is_none() && load.by_pod.contains_key(&uid) && !deleted && active {
            // Bound by us a moment ago; the watch has not shown the binding yet.
            return false;
        }
        let placed = node.map(|node| (node, Placed::of(&serde_json::to_value(pod).unwrap_or_default())));
        load.set(&uid, placed)
    }

    /// Tries again to place pods no node had room for.
    async fn retry_unschedulable(self: &Arc<Self>) {
        let waiting: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.reason.as_deref() == Some("Unschedulable")))
            })
            .collect();
        // As kube-scheduler's queue: higher priority first, then the older.
        let mut waiting = waiting;
        waiting.sort_by_key(|p| {
            let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            (std::cmp::Reverse(priority), p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        });
        for pod in waiting {
            self.handle_pod(&pod).await;
        }
    }

    /// Records a core/v1 Event about `pod`, as the real scheduler and kubelet do.
    async fn event(&self, pod: &Pod, reason: &str, message: String, component: &str, node: &str) {
        self.event_of_type(pod, "Normal", reason, message, component, node).await;
    }

    async fn event_of_type(&self, pod: &Pod, kind: &str, reason: &str, message: String, component: &str, node: &str) {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let now = now();
        let suffix: String = format!("{:x}", jiff::Timestamp::now().as_nanosecond()).chars().rev().take(16).collect();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{name}.{suffix}"), "namespace": namespace},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": namespace, "name": name, "uid": pod.uid().unwrap_or_default()},
            "reason": reason, "message": message, "type": kind,
            "source": {"component": component, "host": node},
            "reportingComponent": component, "reportingInstance": node,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &namespace);
        // Recording events must not slow the kubelet down: they are written in the background.
        tokio::spawn(async move {
            match serde_json::from_value(event) {
                Ok(event) => {
                    if let Err(error) = api.create(&PostParams::default(), &event).await {
                        tracing::debug!(%namespace, %name, %error, "could not record event");
                    }
                }
                Err(error) => tracing::debug!(%error, "event did not decode"),
            }
        });
    }

    /// Carries out a preemption: `preemptor` is nominated to the node (its room held there) and
    /// each victim gets the `DisruptionTarget` condition, a `Preempted` event and a graceful
    /// delete, as kube-scheduler does.
    async fn preempt(&self, preemptor: &Pod, value: &Value, decision: &scheduler::Preemption) {
        let uid = preemptor.uid().unwrap_or_default();
        let nomination = Nomination {
            node: decision.node.clone(),
            pod: Placed::of(value),
            victims: decision.victims.iter().map(|v| v.uid.clone()).collect(),
        };
        self.nominated.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.clone(), nomination);
        let condition = scheduler::disruption_condition(value, &now());
        for victim in &decision.victims {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &victim.namespace);
            tracing::info!(namespace = %victim.namespace, name = %victim.name, node = %decision.node, preemptor = %preemptor.name_any(), "preempting");
            let patch = Patch::Strategic(json!({"status": {"conditions": [condition]}}));
            if let Err(error) = api.patch_status(&victim.name, &PatchParams::default(), &patch).await {
                tracing::debug!(name = %victim.name, %error, "could not mark the victim");
            }
            if let Ok(target) = serde_json::from_value::<Pod>(json!({"metadata": {
                "name": victim.name, "namespace": victim.namespace, "uid": victim.uid}}))
            {
                let message = format!("Preempted by pod {uid} on node {}", decision.node);
                self.event(&target, "Preempted", message, "default-scheduler", &decision.node).await;
            }
            if let Err(error) = api.delete(&victim.name, &DeleteParams::default()).await
                && !matches!(&error, kube::Error::Api(s) if s.code == 404)
            {
                tracing::warn!(name = %victim.name, %error, "could not delete the victim");
            }
        }
    }

    async fn handle_pod(self: &Arc<Self>, pod: &Pod) {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let value = serde_json::to_value(pod).unwrap_or(Value::Null);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            if self.node_index(&node).is_some() {
                // The simulated kubelet stops containers at once and confirms the deletion.
                let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                if let Err(error) = api.delete(&name, &params).await
                    && !matches!(&error, kube::Error::Api(s) if s.code == 404)
                {
                    tracing::warn!(%namespace, %name, %error, "could not finish pod deletion");
                }
            }
            return;
        }
        if node.is_empty() {
            let scheduler = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler");
            if scheduler != "default-scheduler" || self.config.attached {
                return;
            }
            let uid = pod.uid().unwrap_or_default();
            let views = self.node_views(&uid, scheduler::priority(&value));
            match scheduler::schedule(&value, &views) {
                Ok(target) => {
                    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": target.name}});
                    match api
                        .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
                        .await
                    {
                        Ok(_) => {
                            self.load
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .set(&uid, Some((&target.name, Placed::of(&value))));
                            self.nominated.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
                            let message = format!("Successfully assigned {namespace}/{name} to {}", target.name);
                            self.event(pod, "Scheduled", message, "default-scheduler", &target.name).await;
                        }
                        Err(error) => tracing::debug!(%namespace, %name, %error, "binding failed"),
                    }
                }
                Err(mut message) => {
                    let preemption = {
                        let load = self.load.lock().unwrap_or_else(|p| p.into_inner());
                        let waiting = self
                            .nominated
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&uid)
                            .is_some_and(|n| n.victims.iter().any(|v| load.by_pod.contains_key(v)));
                        if waiting {
                            // Its victims are still going: no second round (kube-scheduler's
                            // PodEligibleToPreemptOthers).
                            None
                        } else {
                            match scheduler::preempt(&value, &views, &|node| load.pods_on(node)) {
                                Ok(decision) => Some(decision),
                                Err(why) => {
                                    message = format!("{message} {why}");
                                    None
                                }
                            }
                        }
                    };
                    if let Some(decision) = &preemption {
                        self.preempt(pod, &value, decision).await;
                    }
                    let already =
                        value.pointer("/status/conditions/0/reason").and_then(Value::as_str) == Some("Unschedulable");
                    if !already {
                        let mut status = lifecycle::unschedulable_status(&value, &message, &now());
                        if let Some(decision) = &preemption {
                            status["nominatedNodeName"] = json!(decision.node);
                        }
                        // As kube-scheduler: a Warning event, which tools (and the conformance
                        // suite) wait for.
                        self.event_of_type(pod, "Warning", "FailedScheduling", message, "default-scheduler", "").await;
                        let _ = api
                            .patch_status(&name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": status})))
                            .await;
                    } else if let Some(decision) = &preemption {
                        let patch = Patch::Merge(json!({"status": {"nominatedNodeName": decision.node}}));
                        let _ = api.patch_status(&name, &PatchParams::apply(MANAGER), &patch).await;
                    }
                }
            }
            return;
        }
        let Some(index) = self.node_index(&node) else { return };
        let uid = pod.uid().unwrap_or_default();
        let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        if phase.is_empty() || phase == "Pending" {
            let ip = if pod_ip.is_empty() {
                self.addresses.lock().unwrap_or_else(|p| p.into_inner()).allocate(&uid, index)
            } else {
                Some(pod_ip)
            };
            let Some(ip) = ip else {
                tracing::warn!(%node, "no pod IP left on node");
                return;
            };
            let status = lifecycle::running_status(&value, &self.config.node_ip(index), &ip, &now());
            match api.patch_status(&name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": status}))).await
            {
                Ok(_) => {
                    for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
                        let image = container.image.clone().unwrap_or_default();
                        let pulled = format!("Container image \"{image}\" already present on machine");
                        self.event(pod, "Pulled", pulled, "kubelet", &node).await;
                        self.event(pod, "Created", format!("Created container: {}", container.name), "kubelet", &node)
                            .await;
                        self.event(pod, "Started", format!("Started container {}", container.name), "kubelet", &node)
                            .await;
                    }
                }
                Err(error) => tracing::debug!(%namespace, %name, %error, "could not start pod"),
            }
            return;
        }
        if phase == "Running"
            && let Some(statuses) = lifecycle::ephemeral_statuses(&value, &now())
        {
            // Ephemeral containers (`kubectl debug`) start as soon as they are added.
            let patch = Patch::Merge(json!({"status": {"ephemeralContainerStatuses": statuses}}));
            if let Err(error) = api.patch_status(&name, &PatchParams::apply(MANAGER), &patch).await {
                tracing::debug!(%namespace, %name, %error, "could not start ephemeral containers");
            }
        }
        let restart_policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
        if phase == "Running" && restart_policy != "Always" {
            let fresh = self.completing.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.clone());
            if !fresh {
                return;
            }
            let annotations = pod.annotations();
            // The annotation, else what the command says (`sleep 30`), else the default.
            let run = match annotations.get(RUN_SECONDS).and_then(|s| s.parse::<f64>().ok()) {
                Some(seconds) => Some(Duration::from_secs_f64(seconds)),
                None => lifecycle::command_run_time(&value).unwrap_or(Some(self.config.default_run)),
            };
            let Some(run) = run else {
                // `sleep infinity`: it runs until deleted.
                return;
            };
            let exit_code = annotations
                .get(EXIT_CODE)
                .and_then(|s| s.parse::<i64>().ok())
                .or_else(|| lifecycle::command_exit_code(&value))
                .unwrap_or(0);
            let shared = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(run).await;
                let Ok(current) = api.get(&name).await else { return };
                if current.uid().as_deref() != Some(uid.as_str()) || current.metadata.deletion_timestamp.is_some() {
                    return;
                }
                let value = serde_json::to_value(&current).unwrap_or(Value::Null);
                let status = lifecycle::finished_status(&value, exit_code, &now());
                let _ = api
                    .patch_status(&name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": status})))
                    .await;
                shared.completing.lock().unwrap_or_else(|p| p.into_inner()).remove(&uid);
            });
        }
    }
}

async fn register_nodes(client: &Client, config: &SimulatorConfig) -> Result<Vec<String>, SimulatorError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut names = Vec::new();
    for index in 0..config.nodes {
        let object = node_object(config, index);
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let node: Node = serde_json::from_value(object.clone())
            .map_err(|e| SimulatorError::Node { node: name.clone(), source: kube::Error::SerdeError(e) })?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::apply(MANAGER),
                        &Patch::Merge(json!({"status": object["status"]})),
                    )
                    .await
                    .map_err(|source| SimulatorError::Node { node: name.clone(), source })?;
            }
            Err(source) => return Err(SimulatorError::Node { node: name, source }),
        }
        names.push(name);
    }
    Ok(names)
}

async fn heartbeat(client: Client, names: Vec<String>) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        for name in &names {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()}});
            if let Err(error) = leases.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&lease)).await {
                tracing::debug!(%name, %error, "lease renewal failed");
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Registers the nodes and runs the simulation until the future is dropped.
pub async fn run(client: Client, config: SimulatorConfig) -> Result<(), SimulatorError> {
    let attached = config.attached;
    let node_names = register_nodes(&client, &config).await?;
    let mut tasks = Tasks(vec![tokio::spawn(heartbeat(client.clone(), node_names.clone()))]);
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    // The nodes' current labels, taints and cordons; a change may let waiting pods in.
    let (node_reader, node_writer) = reflector::store::<Node>();
    let node_changed = Arc::new(tokio::sync::Notify::new());
    let node_watch = reflector::reflector(
        node_writer,
        watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    let notify = node_changed.clone();
    tasks.0.push(tokio::spawn(async move {
        let mut node_watch = std::pin::pin!(node_watch);
        while let Some(event) = node_watch.next().await {
            if matches!(event, Ok(Event::Apply(_)) | Ok(Event::InitDone)) {
                notify.notify_one();
            }
        }
    }));
    let shared = Arc::new(Shared {
        client: client.clone(),
        config,
        node_names,
        addresses: Mutex::new(Addresses::default()),
        load: Mutex::new(NodeLoad::default()),
        nominated: Mutex::new(HashMap::new()),
        completing: Mutex::new(HashSet::new()),
        pods: pod_reader.clone(),
        nodes: node_reader,
    });
    let retry = shared.clone();
    tasks.0.push(tokio::spawn(async move {
        loop {
            node_changed.notified().await;
            retry.retry_unschedulable().await;
        }
    }));
    tasks.0.push(tokio::spawn(storage::provision(client.clone())));
    if !attached {
        // What a real control plane's controller manager does.
        tasks.0.push(tokio::spawn(vkube_controllers::endpoints::run(client.clone())));
        tasks.0.push(tokio::spawn(storage::collect_owned_by_services(client.clone())));
    }
    let pods = reflector::reflector(
        pod_writer,
        watcher::watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(|pod| pod.metadata.managed_fields = None),
    );
    let mut pods = std::pin::pin!(pods);
    let mut initial = Vec::new();
    while let Some(event) = pods.next().await {
        match event {
            Ok(Event::Init) => initial.clear(),
            Ok(Event::InitApply(pod)) => initial.push(pod),
            Ok(Event::InitDone) => {
                // Record every IP in use before handing out new ones.
                {
                    let mut addresses = shared.addresses.lock().unwrap_or_else(|p| p.into_inner());
                    for pod in &initial {
                        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
                        if let (Some(index), false) = (shared.node_index(&node), ip.is_empty()) {
                            addresses.record(&pod.uid().unwrap_or_default(), index, &ip);
                        }
                        shared.observe(pod, false);
                    }
                }
                for pod in std::mem::take(&mut initial) {
                    shared.handle_pod(&pod).await;
                }
            }
            Ok(Event::Apply(pod)) => {
                let freed = shared.observe(&pod, false);
                shared.handle_pod(&pod).await;
                if freed {
                    shared.retry_unschedulable().await;
                }
            }
            Ok(Event::Delete(pod)) => {
                shared.addresses.lock().unwrap_or_else(|p| p.into_inner()).release(&pod.uid().unwrap_or_default());
                if shared.observe(&pod, true) {
                    shared.retry_unschedulable().await;
                }
            }
            Err(error) => tracing::debug!(%error, "pod watch error"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_load_counts_bindings_at_once_and_frees_on_finish() {
        let mut load = NodeLoad::default();
        let pod = |cpu: &str| Placed::of(&json!({"spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}}));
        assert!(!load.set("a", Some(("n1", pod("1")))));
        assert!(!load.set("b", Some(("n1", pod("500m")))));
        assert_eq!(load.on("n1").0, 2);
        assert_eq!(load.on("n1").1["cpu"].to_string(), "1500m");
        assert!(!load.set("a", Some(("n1", pod("1")))), "the watch confirming a binding changes nothing");
        assert!(load.set("a", None), "finished or deleted frees the room");
        assert_eq!(load.on("n1").0, 1);
        assert_eq!(load.on("n1").1["cpu"].to_string(), "500m");
        assert!(!load.set("never-bound", None));
    }

    #[test]
    fn addresses_are_unique_per_node_and_reused_after_release() {
        let mut addresses = Addresses::default();
        addresses.record("old", 0, "10.244.0.2");
        assert_eq!(addresses.allocate("a", 0).as_deref(), Some("10.244.0.3"));
        assert_eq!(addresses.allocate("a", 0).as_deref(), Some("10.244.0.3"), "stable per pod");
        assert_eq!(addresses.allocate("b", 1).as_deref(), Some("10.244.1.2"));
        addresses.release("old");
        assert_eq!(addresses.allocate("c", 0).as_deref(), Some("10.244.0.2"));
    }

    #[test]
    fn node_objects_decode_as_nodes() {
        let object = node_object(&SimulatorConfig::default(), 1);
        let node: Node = serde_json::from_value(object).unwrap();
        assert_eq!(node.metadata.name.as_deref(), Some("sim-node-1"));
        assert_eq!(node.status.unwrap().addresses.unwrap()[0].address, "10.0.0.3");
        let config = SimulatorConfig { kubelet: Some("127.0.0.1:4321".parse().unwrap()), ..Default::default() };
        let node: Node = serde_json::from_value(node_object(&config, 1)).unwrap();
        let status = node.status.unwrap();
        let addresses: Vec<_> = status.addresses.unwrap().into_iter().map(|a| (a.type_, a.address)).collect();
        assert_eq!(addresses, [("InternalIP".to_string(), "127.0.0.1".to_string())], "the kubelet API's address only");
        assert_eq!(status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port, 4321);
    }
}
