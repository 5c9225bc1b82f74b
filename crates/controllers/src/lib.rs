//! Controllers that run inside a virtual cluster (the stock kube-controller-manager's job in the
//! reference): deployments, replica sets, and the garbage collector ([`garbage`]). They talk to
//! the API only through `kube::Client`; decisions live in [`workloads`].

pub mod aggregation;
pub mod cronjobs;
pub mod daemonsets;
pub mod disruption;
pub mod endpoints;
pub mod ephemeral;
pub mod garbage;
pub mod jobs;
pub mod leader_election;
pub mod quota;
pub mod statefulsets;
pub mod workloads;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, ReplicationController, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Field manager of the controllers' writes.
pub const MANAGER: &str = "vkube-controller-manager";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    Deployment(String, String),
    CronJob(String, String),
    ReplicationController(String, String),
    ReplicaSet(String, String),
    Job(String, String),
    StatefulSet(String, String),
    DaemonSet(String, String),
    AllDaemonSets,
    Namespace(String),
    EphemeralVolumes(String, String),
    /// A pod without a controller: the replica sets and replication controllers matching it
    /// may adopt it.
    OrphanPod(String, String),
    /// A replica set without a controller: the deployments matching it may adopt it.
    OrphanReplicaSet(String, String),
    /// A PodDisruptionBudget's status.
    Disruption(String, String),
    /// Every PodDisruptionBudget of a namespace (its pods or their controllers changed).
    Disruptions(String),
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// The object `namespace/name` from `store`, unless it is missing or being deleted.
fn live<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace)).filter(|o| o.meta().deletion_timestamp.is_none())
}

/// The uid of the controller owner of `object` and that owner's kind.
fn controller_of<K: Resource>(object: &K) -> Option<(&str, &str)> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.uid.as_str(), o.kind.as_str()))
}

/// Writes `status` to `namespace/name` of kind `K` when it differs from `current`.
async fn write_status<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    current: &Value,
    status: Value,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    if current.get("status") == Some(&status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    ignore_not_found(
        api.patch_status(name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": status}))).await,
    )
}

/// Aborts the tasks it holds when dropped, so stopping a controller stops all of its watches.
pub struct Tasks(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

pub(crate) fn reflect<K>(
    api: Api<K>,
    on_change: impl Fn(&K) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflect_with(api, watcher::Config::default(), on_change)
}

/// Drops what no controller reads from a cached pod (annotations, volumes, container details
/// other than ports, container statuses): with thousands of pods the caches stay small.
pub(crate) fn slim_pod(pod: &mut Pod) {
    slim_pod_with(pod, |container| k8s_openapi::api::core::v1::Container {
        name: container.name,
        ports: container.ports,
        ..Default::default()
    });
}

/// Drops annotations, volumes (but generic ephemeral ones, which the ephemeral-volume controller
/// reads), init and ephemeral containers, affinity and tolerations from a cached pod and keeps of
/// each container what `keep` returns (shared with the syncer's cache).
pub fn slim_pod_with(
    pod: &mut Pod,
    keep: impl Fn(k8s_openapi::api::core::v1::Container) -> k8s_openapi::api::core::v1::Container,
) {
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = spec
            .volumes
            .take()
            .map(|volumes| volumes.into_iter().filter(|v| v.ephemeral.is_some()).collect::<Vec<_>>())
            .filter(|volumes| !volumes.is_empty());
        spec.init_containers = None;
        spec.ephemeral_containers = None;
        spec.affinity = None;
        spec.tolerations = None;
        for container in &mut spec.containers {
            *container = keep(std::mem::take(container));
        }
    }
    if let Some(status) = pod.status.as_mut() {
        // A failed pod keeps its containers' exit codes (jobs' pod failure policies read them).
        let failed = status.phase.as_deref() == Some("Failed");
        status.container_statuses = status.container_statuses.take().filter(|_| failed).map(|statuses| {
            statuses
                .into_iter()
                .map(|s| k8s_openapi::api::core::v1::ContainerStatus {
                    name: s.name,
                    state: s.state.map(|state| k8s_openapi::api::core::v1::ContainerState {
                        terminated: state.terminated,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect()
        });
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

/// A pod reflector whose cache holds [`slim_pod`]s.
pub(crate) fn reflect_pods(
    api: Api<Pod>,
    on_change: impl Fn(&Pod) + Send + 'static,
) -> (Store<Pod>, tokio::task::JoinHandle<()>) {
    reflect_modified(api, watcher::Config::default(), slim_pod, move |pod, _| on_change(pod))
}

/// [`reflect`] with a watch configuration (selectors). Managed fields are dropped from the cache.
pub(crate) fn reflect_with<K>(
    api: Api<K>,
    config: watcher::Config,
    on_change: impl Fn(&K) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflect_modified(api, config, |_| {}, move |object, _| on_change(object))
}

/// Creates `object` (JSON of kind `K`) as `manager` unless an object of that name exists.
pub async fn create_if_absent<K>(api: &Api<K>, object: Value, manager: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::Serialize + DeserializeOwned + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams { field_manager: Some(manager.into()), ..Default::default() }, &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Starts a reflector for `api` (managed fields dropped, every object passed through `modify`
/// before it is cached) and returns its store and task; `on_change` sees every change, with
/// `true` for a deletion. Used by the controllers and the syncer.
pub fn reflect_modified<K>(
    api: Api<K>,
    config: watcher::Config,
    modify: impl Fn(&mut K) + Send + 'static,
    on_change: impl Fn(&K, bool) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (_, writer) = reflector::store();
    reflect_into(writer, api, config, modify, on_change)
}

/// [`reflect_modified`] into a given store writer (for kinds whose type information is only
/// known at run time, such as custom resources).
pub fn reflect_into<K>(
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    config: watcher::Config,
    modify: impl Fn(&mut K) + Send + 'static,
    on_change: impl Fn(&K, bool) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let reader = writer.as_reader();
    let stream = watcher::watcher(api, config).default_backoff().modify(move |object| {
        object.meta_mut().managed_fields = None;
        modify(object);
    });
    let stream = reflector::reflector(writer, stream);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(o) | Event::InitApply(o)) => on_change(&o, false),
                Ok(Event::Delete(o)) => on_change(&o, true),
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "watch error; retrying"),
            }
        }
    });
    (reader, task)
}

/// What an owner controls once a claim is done: `owned` (as the cache shows it) without what
/// the claim adopted or released, plus the adopted objects as they now are.
fn after_claim(mut owned: Vec<Value>, adopted: Vec<Value>, released: Vec<Value>) -> Vec<Value> {
    let name_of = |o: &Value| o.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
    let changed: BTreeSet<Option<String>> = released.iter().chain(adopted.iter()).map(name_of).collect();
    owned.retain(|o| !changed.contains(&name_of(o)));
    owned.extend(adopted);
    owned
}

/// Adopts the orphans among `candidates` (objects of `api`'s kind in `owner`'s namespace) that
/// `owner`'s selector matches and releases the ones it controls that no longer match, each with
/// a merge patch guarded by the object's resourceVersion (upstream's ControllerRefManager).
/// Returns the adopted objects (as they now are) and the released ones.
async fn claim_objects<K>(
    api: &Api<K>,
    owner: &Value,
    candidates: &[Value],
    api_version: &str,
    kind: &str,
) -> Result<(Vec<Value>, Vec<Value>), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let refs: Vec<&Value> = candidates.iter().collect();
    let (adopt, release) = workloads::claim(owner, &refs);
    let uid = owner.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    let mut adopted = Vec::new();
    let mut released = Vec::new();
    for (object, adopting) in adopt.iter().map(|p| (p, true)).chain(release.iter().map(|p| (p, false))) {
        let mut references: Vec<Value> =
            object.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
        if adopting {
            references.push(workloads::owner_reference(owner, api_version, kind));
        } else {
            references.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
        }
        let patch = json!({"metadata": {"ownerReferences": references,
            "resourceVersion": object.pointer("/metadata/resourceVersion"), "uid": object.pointer("/metadata/uid")}});
        let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(now) if adopting => adopted.push(value(&now)),
            Ok(_) => released.push((*object).clone()),
            // Gone or changed meanwhile: the next reconcile sees it as it is.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(error),
        }
    }
    Ok((adopted, released))
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a write is expected to show up in the cache before it is no longer waited for.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Pods a controller created or deleted that its cache has not shown yet (the upstream
/// controllers' "expectations"): a reconcile right after a write would otherwise act twice.
#[derive(Default)]
struct Expectations {
    created: std::collections::HashMap<String, Vec<(String, std::time::Instant)>>,
    deleted: std::collections::HashMap<String, Vec<(String, std::time::Instant)>>,
}

impl Expectations {
    fn created(&mut self, owner: &str, pod: &str) {
        self.created.entry(owner.to_string()).or_default().push((pod.to_string(), std::time::Instant::now()));
    }

    fn deleted(&mut self, owner: &str, pod: &str) {
        self.deleted.entry(owner.to_string()).or_default().push((pod.to_string(), std::time::Instant::now()));
    }

    /// `owned` (the cached pods of `owner`) as they are after the pending writes: created pods
    /// the cache lacks are added (active, not ready), deleted pods it still shows as active are
    /// left out. Writes the cache now shows, or that are too old, are forgotten.
    fn adjust(&mut self, owner: &str, mut owned: Vec<Value>) -> Vec<Value> {
        let name_of = |p: &Value| p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let fresh = |(_, at): &(String, std::time::Instant)| at.elapsed() < EXPECTATION_TTL;
        if let Some(created) = self.created.get_mut(owner) {
            created.retain(|entry| fresh(entry) && !owned.iter().any(|p| name_of(p) == entry.0));
            for (name, _) in created.iter() {
                owned.push(
                    json!({"metadata": {"name": name, "creationTimestamp": now()}, "status": {"phase": "Pending"}}),
                );
            }
            if created.is_empty() {
                self.created.remove(owner);
            }
        }
        if let Some(deleted) = self.deleted.get_mut(owner) {
            deleted
                .retain(|entry| fresh(entry) && owned.iter().any(|p| name_of(p) == entry.0 && workloads::is_active(p)));
            owned.retain(|p| !deleted.iter().any(|(name, _)| *name == name_of(p)));
            if deleted.is_empty() {
                self.deleted.remove(owner);
            }
        }
        owned
    }
}

struct Controllers {
    client: Client,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    jobs: Store<Job>,
    stateful_sets: Store<StatefulSet>,
    daemon_sets: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    cron_jobs: Store<CronJob>,
    replication_controllers: Store<ReplicationController>,
    budgets: Store<PodDisruptionBudget>,
    /// Pod writes of replica sets, replication controllers and jobs the cache has not shown yet.
    expectations: std::sync::Mutex<Expectations>,
    /// When each cron job is woken up next.
    wakeups: std::sync::Mutex<std::collections::HashMap<(String, String), jiff::Timestamp>>,
    queue: mpsc::UnboundedSender<Work>,
    /// The cluster CA, published as `kube-root-ca.crt` in every namespace.
    root_ca: Option<String>,
}

impl Controllers {
    /// The pods in `namespace` whose controller has `uid`, as JSON.
    fn owned_pods(&self, namespace: &str, uid: &str) -> Vec<Value> {
        self.pods
            .state()
            .iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(namespace) && controller_of(p.as_ref()).is_some_and(|(u, _)| u == uid)
            })
            .map(|p| value(p.as_ref()))
            .collect()
    }

    /// Adopts the orphaned pods `owner`'s selector matches and releases the ones it controls
    /// that no longer match (each a patch guarded by the pod's resourceVersion); the cache shows
    /// the result before the next reconcile.
    /// Returns the pods adopted (as they now are) and released.
    async fn claim_pods(
        &self,
        owner: &Value,
        api_version: &str,
        kind: &str,
    ) -> Result<(Vec<Value>, Vec<Value>), kube::Error> {
        let namespace = owner.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let in_namespace: Vec<Value> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .map(|p| value(p.as_ref()))
            .collect();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        claim_objects(&pods, owner, &in_namespace, api_version, kind).await
    }

    /// Keeps a PodDisruptionBudget's status: healthy, desired and expected pods, and how many
    /// may be disrupted now (`disruption::status`).
    async fn disruption(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(pdb) = live(&self.budgets, namespace, name) else { return Ok(()) };
        let budget = value(pdb.as_ref());
        let pods: Vec<Value> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .map(|p| value(p.as_ref()))
            .collect();
        let refs: Vec<&Value> = pods.iter().collect();
        let scale_of = |pod: &Value| -> Option<(String, i64)> {
            let owner = pod
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)?
                .iter()
                .find(|o| o["controller"] == json!(true))?;
            let owner_name = owner["name"].as_str()?;
            let replicas = |spec: Option<i32>| i64::from(spec.unwrap_or(1));
            match owner["kind"].as_str()? {
                "ReplicaSet" => {
                    let rs = self.replica_sets.get(&ObjectRef::new(owner_name).within(namespace))?;
                    if let Some(deployment) =
                        rs.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    {
                        let d = self.deployments.get(&ObjectRef::new(&deployment.name).within(namespace))?;
                        return Some((d.uid()?, replicas(d.spec.as_ref()?.replicas)));
                    }
                    Some((rs.uid()?, replicas(rs.spec.as_ref()?.replicas)))
                }
                "ReplicationController" => {
                    let rc = self.replication_controllers.get(&ObjectRef::new(owner_name).within(namespace))?;
                    Some((rc.uid()?, replicas(rc.spec.as_ref()?.replicas)))
                }
                "StatefulSet" => {
                    let set = self.stateful_sets.get(&ObjectRef::new(owner_name).within(namespace))?;
                    Some((set.uid()?, replicas(set.spec.as_ref()?.replicas)))
                }
                _ => None,
            }
        };
        let status = disruption::status(&budget, &refs, &scale_of, jiff::Timestamp::now().as_second());
        let unchanged = {
            let mut current = budget.get("status").cloned().unwrap_or(Value::Null);
            let mut wanted = status.clone();
            // A transition time alone is no change worth a write.
            for v in [&mut current, &mut wanted] {
                if let Some(conditions) = v.get_mut("conditions").and_then(Value::as_array_mut) {
                    for c in conditions.iter_mut().filter_map(Value::as_object_mut) {
                        c.remove("lastTransitionTime");
                    }
                }
            }
            current == wanted
        };
        if unchanged {
            return Ok(());
        }
        let mut updated = budget.clone();
        updated["status"] = status;
        let updated: PodDisruptionBudget = serde_json::from_value(updated).map_err(kube::Error::SerdeError)?;
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match api.replace_status(name, &params, &updated).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The pods `owner` controls once it has adopted and released what its selector says.
    async fn claimed_pods(&self, owner: &Value, api_version: &str, kind: &str) -> Result<Vec<Value>, kube::Error> {
        let namespace = owner.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let uid = owner.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let (adopted, released) = self.claim_pods(owner, api_version, kind).await?;
        Ok(after_claim(self.owned_pods(namespace, uid), adopted, released))
    }

    /// Queues the replica sets, replication controllers and jobs whose selector matches an orphan.
    fn orphan_pod(&self, namespace: &str, name: &str) {
        let Some(pod) = self.pods.get(&ObjectRef::new(name).within(namespace)) else { return };
        let pod = value(pod.as_ref());
        let refs = [&pod];
        for rs in self.replica_sets.state().iter().filter(|r| r.namespace().as_deref() == Some(namespace)) {
            if !workloads::claim(&value(rs.as_ref()), &refs).0.is_empty() {
                let _ = self.queue.send(Work::ReplicaSet(namespace.to_string(), rs.name_any()));
            }
        }
        for rc in self.replication_controllers.state().iter().filter(|r| r.namespace().as_deref() == Some(namespace)) {
            if !workloads::claim(&value(rc.as_ref()), &refs).0.is_empty() {
                let _ = self.queue.send(Work::ReplicationController(namespace.to_string(), rc.name_any()));
            }
        }
        for job in self.jobs.state().iter().filter(|j| j.namespace().as_deref() == Some(namespace)) {
            if !workloads::claim(&value(job.as_ref()), &refs).0.is_empty() {
                let _ = self.queue.send(Work::Job(namespace.to_string(), job.name_any()));
            }
        }
    }

    async fn replica_set(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(rs) = live(&self.replica_sets, namespace, name) else { return Ok(()) };
        self.keep_replicas::<ReplicaSet>(value(rs.as_ref()), "apps/v1", "ReplicaSet").await
    }

    async fn replication_controller(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(rc) = live(&self.replication_controllers, namespace, name) else { return Ok(()) };
        self.keep_replicas::<ReplicationController>(value(rc.as_ref()), "v1", "ReplicationController").await
    }

    /// Keeps `spec.replicas` pods of `owner`'s template running and reports the counts.
    async fn keep_replicas<K>(&self, owner: Value, api_version: &str, kind: &str) -> Result<(), kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let namespace = owner.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let name = owner.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let uid = owner.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let owned = self.claimed_pods(&owner, api_version, kind).await?;
        // The cache may not show this controller's last writes yet: count those pods as they are.
        let owned = lock(&self.expectations).adjust(uid, owned);
        let refs: Vec<&Value> = owned.iter().collect();
        let plan = workloads::plan_replicas(&owner, &refs, jiff::Timestamp::now().as_second());
        if let Some(wait) = plan.recheck_after {
            // A pod becomes available when it has been ready long enough: look again then.
            let queue = self.queue.clone();
            let item = match kind {
                "ReplicaSet" => Work::ReplicaSet(namespace.to_string(), name.to_string()),
                _ => Work::ReplicationController(namespace.to_string(), name.to_string()),
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(wait)).await;
                let _ = queue.send(item);
            });
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut refused = None;
        for _ in 0..plan.create {
            let pod: Pod = serde_json::from_value(workloads::pod_for_owner(&owner, api_version, kind))
                .map_err(kube::Error::SerdeError)?;
            match pods.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &pod).await {
                Ok(created) => lock(&self.expectations).created(uid, &created.name_any()),
                // Refused by admission (a quota, a limit range): the owner says so in its status
                // (`ReplicaFailure`) and tries again a little later.
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    refused = Some(status.message);
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        for victim in &plan.delete {
            ignore_not_found(pods.delete(victim, &DeleteParams::default()).await)?;
            lock(&self.expectations).deleted(uid, victim);
        }
        let has_failure = owner.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| !c.is_empty());
        if let Some(message) = refused {
            let mut status = plan.status.clone();
            status["conditions"] = json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": message, "lastTransitionTime": now()}]);
            let unchanged = owner.pointer("/status/conditions/0/message") == Some(&json!(message))
                && owner.pointer("/status/observedGeneration") == plan.status.get("observedGeneration");
            if !unchanged {
                write_status::<K>(&self.client, namespace, name, &owner, status).await?;
            }
            let queue = self.queue.clone();
            let item = match kind {
                "ReplicaSet" => Work::ReplicaSet(namespace.to_string(), name.to_string()),
                _ => Work::ReplicationController(namespace.to_string(), name.to_string()),
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = queue.send(item);
            });
        } else if plan.create == 0 && plan.delete.is_empty() {
            let mut status = plan.status;
            if has_failure {
                // The failure is over: the condition goes (a merge patch removes it with null).
                status["conditions"] = Value::Null;
            }
            write_status::<K>(&self.client, namespace, name, &owner, status).await?;
        }
        Ok(())
    }

    /// Starts the cron job's due run, applies its concurrency policy and history limits, and
    /// wakes up again at the next scheduled time.
    async fn cron_job(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(cron_job) = live(&self.cron_jobs, namespace, name) else { return Ok(()) };
        let cron_value = value(cron_job.as_ref());
        let uid = cron_job.uid().unwrap_or_default();
        let owned: Vec<Value> = self
            .jobs
            .state()
            .iter()
            .filter(|j| {
                j.namespace().as_deref() == Some(namespace) && controller_of(j.as_ref()).is_some_and(|(u, _)| u == uid)
            })
            .map(|j| value(j.as_ref()))
            .collect();
        let refs: Vec<&Value> = owned.iter().collect();
        let now = jiff::Timestamp::now();
        let plan = cronjobs::plan(&cron_value, &refs, now);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        for victim in &plan.delete {
            ignore_not_found(jobs.delete(victim, &DeleteParams::background()).await)?;
        }
        if let Some(job) = &plan.create {
            let job: Job = serde_json::from_value(job.clone()).map_err(kube::Error::SerdeError)?;
            match jobs.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &job).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        if let Some((reason, message)) = &plan.warning {
            self.warn(cron_job.as_ref(), "CronJob", "batch/v1", reason, message).await;
        }
        write_status::<CronJob>(&self.client, namespace, name, &cron_value, plan.status).await?;
        if let Some(next) = plan.next {
            let wait = next.as_millisecond() - now.as_millisecond();
            let key = (namespace.to_string(), name.to_string());
            let mut wakeups = self.wakeups.lock().unwrap_or_else(|p| p.into_inner());
            if wakeups.get(&key).is_none_or(|at| *at > next || *at <= now) {
                wakeups.insert(key, next);
                let queue = self.queue.clone();
                let item = Work::CronJob(namespace.to_string(), name.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64 + 50)).await;
                    let _ = queue.send(item);
                });
            }
        }
        Ok(())
    }

    /// Records a Warning event about `object` (once per reason and message).
    async fn warn<K: Resource>(&self, object: &K, kind: &str, api_version: &str, reason: &str, message: &str) {
        let meta = object.meta();
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let event_name = format!("{name}.{}", &workloads::template_hash(&json!([reason, message, meta.uid])));
        let now = now();
        let event = json!({
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {"kind": kind, "apiVersion": api_version, "namespace": namespace, "name": name, "uid": meta.uid},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "cronjob-controller"},
        });
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Ok(event) = serde_json::from_value(event) {
            let _ = api.create(&PostParams::default(), &event).await;
        }
    }

    async fn deployment(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(deployment) = live(&self.deployments, namespace, name) else { return Ok(()) };
        let d = value(deployment.as_ref());
        let uid = deployment.uid().unwrap_or_default();
        let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let hash = workloads::template_hash(&template);
        let in_namespace: Vec<Value> = self
            .replica_sets
            .state()
            .iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace))
            .map(|r| value(r.as_ref()))
            .collect();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
        // Orphaned replica sets the selector matches are adopted (their revision counts).
        let (adopted, released) = claim_objects(&rs_api, &d, &in_namespace, "apps/v1", "Deployment").await?;
        let controlled: Vec<Value> = in_namespace.into_iter().filter(|r| workloads::controlled_by(r, &uid)).collect();
        let owned = after_claim(controlled, adopted, released);
        let wanted = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        let current_name = format!("{name}-{hash}");
        let current =
            owned.iter().find(|r| r.pointer("/metadata/name").and_then(Value::as_str) == Some(current_name.as_str()));
        let max_revision = owned.iter().map(workloads::revision).max().unwrap_or(0);
        match current {
            None => {
                let rs: ReplicaSet = serde_json::from_value(workloads::replica_set_for(&d, &hash, max_revision + 1))
                    .map_err(kube::Error::SerdeError)?;
                ignore_not_found(
                    rs_api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &rs).await,
                )?;
                let annotate = json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": (max_revision + 1).to_string()}}});
                let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
                ignore_not_found(deployments.patch(name, &PatchParams::apply(MANAGER), &Patch::Merge(annotate)).await)?;
            }
            Some(rs) => {
                if rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(wanted) {
                    let scale = json!({"spec": {"replicas": wanted}, "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": wanted.to_string()}}});
                    ignore_not_found(
                        rs_api.patch(&current_name, &PatchParams::apply(MANAGER), &Patch::Merge(scale)).await,
                    )?;
                }
                if workloads::revision(rs) < max_revision {
                    // A rollback to an older template: it becomes the newest revision again.
                    let bump = json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": (max_revision + 1).to_string()}}});
                    ignore_not_found(
                        rs_api.patch(&current_name, &PatchParams::apply(MANAGER), &Patch::Merge(bump)).await,
                    )?;
                    let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
                    ignore_not_found(
                        deployments
                            .patch(
                                name,
                                &PatchParams::apply(MANAGER),
                                &Patch::Merge(bump_for_deployment(max_revision + 1)),
                            )
                            .await,
                    )?;
                }
            }
        }
        // Old replica sets scale down once the new one is available; history is trimmed.
        let new_ready =
            current.and_then(|rs| rs.pointer("/status/availableReplicas").and_then(Value::as_i64)).unwrap_or(0)
                >= wanted;
        let mut old: Vec<&Value> = owned
            .iter()
            .filter(|r| r.pointer("/metadata/name").and_then(Value::as_str) != Some(current_name.as_str()))
            .collect();
        old.sort_by_key(|r| workloads::revision(r));
        for rs in &old {
            let rs_name = rs.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let recreate = d.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");
            if (new_ready || recreate) && rs.pointer("/spec/replicas").and_then(Value::as_i64) != Some(0) {
                ignore_not_found(
                    rs_api
                        .patch(rs_name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"spec": {"replicas": 0}})))
                        .await,
                )?;
            }
        }
        let limit = d.pointer("/spec/revisionHistoryLimit").and_then(Value::as_i64).unwrap_or(10).max(0) as usize;
        let idle: Vec<&&Value> =
            old.iter().filter(|r| r.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0) == 0).collect();
        if idle.len() > limit {
            for rs in &idle[..idle.len() - limit] {
                let rs_name = rs.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                ignore_not_found(rs_api.delete(rs_name, &DeleteParams::background()).await)?;
            }
        }
        let all: Vec<&Value> = owned.iter().collect();
        let status = workloads::deployment_status(&d, current, &all, &now());
        let changed = {
            let mut a = d.get("status").cloned().unwrap_or(Value::Null);
            let mut b = status.clone();
            for v in [&mut a, &mut b] {
                if let Some(map) = v.as_object_mut() {
                    map.remove("conditions");
                }
            }
            a != b || d.pointer("/status/conditions/1/reason") != status.pointer("/conditions/1/reason")
        };
        if changed {
            let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
            ignore_not_found(
                deployments
                    .patch_status(name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": status})))
                    .await,
            )?;
        }
        Ok(())
    }

    async fn job(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(job) = live(&self.jobs, namespace, name) else { return Ok(()) };
        let job_value = value(job.as_ref());
        let uid = job.uid().unwrap_or_default();
        let owned = self.claimed_pods(&job_value, "batch/v1", "Job").await?;
        // Pods created a moment ago count even before the cache shows them (no extra runs).
        let owned = lock(&self.expectations).adjust(&uid, owned);
        let refs: Vec<&Value> = owned.iter().collect();
        let plan = jobs::plan(&job_value, &refs, &now());
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        for index in &plan.create {
            let pod: Pod =
                serde_json::from_value(jobs::pod_for(&job_value, *index)).map_err(kube::Error::SerdeError)?;
            let created =
                pods.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &pod).await?;
            lock(&self.expectations).created(&uid, &created.name_any());
        }
        for victim in &plan.delete {
            ignore_not_found(pods.delete(victim, &DeleteParams::background()).await)?;
            lock(&self.expectations).deleted(&uid, victim);
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let mut current = job_value.get("status").cloned().unwrap_or(Value::Null);
        let mut wanted = plan.status.clone();
        for v in [&mut current, &mut wanted] {
            if let Some(map) = v.as_object_mut() {
                for volatile in ["startTime", "completionTime", "conditions"] {
                    map.remove(volatile);
                }
            }
        }
        let newly_finished = plan.finished && job_value.pointer("/status/conditions").is_none();
        if current != wanted || newly_finished {
            ignore_not_found(
                api.patch_status(name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": plan.status})))
                    .await,
            )?;
        }
        if plan.finished
            && let Some(ttl) = job_value.pointer("/spec/ttlSecondsAfterFinished").and_then(Value::as_i64)
        {
            let finished_at = job_value
                .pointer("/status/completionTime")
                .or_else(|| job_value.pointer("/status/conditions/1/lastTransitionTime"))
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
            let elapsed =
                finished_at.map(|t| k8s_openapi::jiff::Timestamp::now().duration_since(t).as_secs()).unwrap_or(0);
            if elapsed >= ttl {
                ignore_not_found(api.delete(name, &DeleteParams::background()).await)?;
            } else {
                let queue = self.queue.clone();
                let item = Work::Job(namespace.to_string(), name.to_string());
                let wait = Duration::from_secs((ttl - elapsed).max(1) as u64);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = queue.send(item);
                });
            }
        }
        Ok(())
    }

    async fn stateful_set(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(set) = live(&self.stateful_sets, namespace, name) else { return Ok(()) };
        let set_value = value(set.as_ref());
        let owned = self.owned_pods(namespace, &set.uid().unwrap_or_default());
        let refs: Vec<&Value> = owned.iter().collect();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match statefulsets::next_step(&set_value, &refs) {
            statefulsets::Step::Create(n) => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
                for claim in statefulsets::claims_for(&set_value, n) {
                    let claim: PersistentVolumeClaim =
                        serde_json::from_value(claim).map_err(kube::Error::SerdeError)?;
                    ignore_not_found(claims.create(&params, &claim).await)?;
                }
                let pod: Pod =
                    serde_json::from_value(statefulsets::pod_for(&set_value, n)).map_err(kube::Error::SerdeError)?;
                ignore_not_found(pods.create(&params, &pod).await)?;
            }
            statefulsets::Step::Delete(pod) => ignore_not_found(pods.delete(&pod, &DeleteParams::default()).await)?,
            statefulsets::Step::Wait => {}
        }
        let status = statefulsets::status(&set_value, &refs);
        write_status::<StatefulSet>(&self.client, namespace, name, &set_value, status).await?;
        Ok(())
    }

    async fn daemon_set(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(set) = live(&self.daemon_sets, namespace, name) else { return Ok(()) };
        let set_value = value(set.as_ref());
        let owned = self.owned_pods(namespace, &set.uid().unwrap_or_default());
        let pod_refs: Vec<&Value> = owned.iter().collect();
        let node_values: Vec<Value> = self.nodes.state().iter().map(|n| value(n.as_ref())).collect();
        let node_refs: Vec<&Value> = node_values.iter().collect();
        let (create, delete) = daemonsets::plan(&set_value, &node_refs, &pod_refs);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        for node in &create {
            let pod: Pod =
                serde_json::from_value(daemonsets::pod_for(&set_value, node)).map_err(kube::Error::SerdeError)?;
            pods.create(&params, &pod).await?;
        }
        for pod in &delete {
            ignore_not_found(pods.delete(pod, &DeleteParams::default()).await)?;
        }
        self.daemon_set_history(namespace, &set_value).await?;
        let status = daemonsets::status(&set_value, &node_refs, &pod_refs);
        write_status::<DaemonSet>(&self.client, namespace, name, &set_value, status).await?;
        Ok(())
    }

    /// The set's ControllerRevisions: one per template, the current one newest.
    async fn daemon_set_history(&self, namespace: &str, set: &Value) -> Result<(), kube::Error> {
        use k8s_openapi::api::apps::v1::ControllerRevision;
        let uid = set.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        let api: Api<ControllerRevision> = Api::namespaced(self.client.clone(), namespace);
        let revisions: Vec<Value> = api
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .iter()
            .map(value)
            .filter(|r| workloads::controlled_by(r, uid))
            .collect();
        let refs: Vec<&Value> = revisions.iter().collect();
        let plan = daemonsets::history(set, &refs);
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        if let Some(revision) = plan.create {
            let revision: ControllerRevision = serde_json::from_value(revision).map_err(kube::Error::SerdeError)?;
            api.create(&params, &revision).await?;
        }
        if let Some((name, number)) = plan.renumber {
            let patch = Patch::Merge(json!({"revision": number}));
            ignore_not_found(api.patch(&name, &PatchParams::default(), &patch).await.map(|_| ()))?;
        }
        for name in plan.delete {
            ignore_not_found(api.delete(&name, &DeleteParams::default()).await.map(|_| ()))?;
        }
        Ok(())
    }

    /// Every active namespace has a `default` service account and the `kube-root-ca.crt` config map.
    async fn namespace(&self, name: &str) -> Result<(), kube::Error> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let Some(namespace) = namespaces.get_opt(name).await? else { return Ok(()) };
        if namespace.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        if accounts.get_opt("default").await?.is_none() {
            let account: ServiceAccount =
                serde_json::from_value(json!({"metadata": {"name": "default"}})).map_err(kube::Error::SerdeError)?;
            ignore_not_found(accounts.create(&params, &account).await)?;
        }
        if let Some(ca) = &self.root_ca {
            let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), name);
            let wanted = json!({"ca.crt": ca});
            match maps.get_opt("kube-root-ca.crt").await? {
                None => {
                    let map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kube-root-ca.crt",
                        "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                        "data": wanted}))
                    .map_err(kube::Error::SerdeError)?;
                    ignore_not_found(maps.create(&params, &map).await)?;
                }
                Some(map) if value(&map.data) != wanted => {
                    ignore_not_found(
                        maps.patch(
                            "kube-root-ca.crt",
                            &PatchParams::apply(MANAGER),
                            &Patch::Merge(json!({"data": wanted})),
                        )
                        .await,
                    )?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn bump_for_deployment(revision: i64) -> Value {
    json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": revision.to_string()}}})
}

/// The user the controllers act as inside the virtual cluster.
pub const USER: &str = "vkube:controllers";

/// Upstream's bootstrap ClusterRoles (`system:controller:<name>`) of the kube-controller-manager
/// loops these controllers implement: the controllers' user is bound to exactly these, so they
/// may do what their upstream counterparts may, and nothing more.
pub const UPSTREAM_ROLES: &[&str] = &[
    "clusterrole-aggregation-controller",
    "cronjob-controller",
    "daemon-set-controller",
    "deployment-controller",
    "disruption-controller",
    "endpoint-controller",
    "endpointslice-controller",
    "ephemeral-volume-controller",
    "generic-garbage-collector",
    "job-controller",
    "replicaset-controller",
    "replication-controller",
    "resourcequota-controller",
    "root-ca-cert-publisher",
    "service-account-controller",
    "statefulset-controller",
];

/// Runs the controllers until the future is dropped. `root_ca` is the cluster CA (PEM) published
/// in every namespace.
pub async fn run(client: Client, root_ca: Option<String>) {
    let (queue, mut work) = mpsc::unbounded_channel::<Work>();
    let q = queue.clone();
    let (_namespaces, t5) = reflect(Api::<Namespace>::all(client.clone()), move |ns: &Namespace| {
        let _ = q.send(Work::Namespace(ns.name_any()));
    });
    let q = queue.clone();
    let default_account = watcher::Config::default().fields("metadata.name=default");
    let (_accounts, t6) =
        reflect_with(Api::<ServiceAccount>::all(client.clone()), default_account, move |sa: &ServiceAccount| {
            let _ = q.send(Work::Namespace(sa.namespace().unwrap_or_default()));
        });
    let q = queue.clone();
    let root_ca_maps = watcher::Config::default().fields("metadata.name=kube-root-ca.crt");
    let (_root_cas, t7) = reflect_with(Api::<ConfigMap>::all(client.clone()), root_ca_maps, move |cm: &ConfigMap| {
        if cm.name_any() == "kube-root-ca.crt" {
            let _ = q.send(Work::Namespace(cm.namespace().unwrap_or_default()));
        }
    });
    let q = queue.clone();
    let (deployments, t1) = reflect(Api::<Deployment>::all(client.clone()), move |d: &Deployment| {
        let _ = q.send(Work::Deployment(d.namespace().unwrap_or_default(), d.name_any()));
    });
    let q = queue.clone();
    let (replica_sets, t2) = reflect(Api::<ReplicaSet>::all(client.clone()), move |rs: &ReplicaSet| {
        let namespace = rs.namespace().unwrap_or_default();
        let _ = q.send(Work::ReplicaSet(namespace.clone(), rs.name_any()));
        if let Some(owner) = rs.owner_references().iter().find(|o| o.kind == "Deployment") {
            let _ = q.send(Work::Deployment(namespace, owner.name.clone()));
        } else if controller_of(rs).is_none() && rs.metadata.deletion_timestamp.is_none() {
            let _ = q.send(Work::OrphanReplicaSet(namespace, rs.name_any()));
        }
    });
    let q = queue.clone();
    let (jobs, t4) = reflect(Api::<Job>::all(client.clone()), move |job: &Job| {
        let namespace = job.namespace().unwrap_or_default();
        let _ = q.send(Work::Job(namespace.clone(), job.name_any()));
        if let Some(owner) = job.owner_references().iter().find(|o| o.kind == "CronJob") {
            let _ = q.send(Work::CronJob(namespace, owner.name.clone()));
        }
    });
    let q = queue.clone();
    let (cron_jobs, t11) = reflect(Api::<CronJob>::all(client.clone()), move |cron_job: &CronJob| {
        let _ = q.send(Work::CronJob(cron_job.namespace().unwrap_or_default(), cron_job.name_any()));
    });
    let q = queue.clone();
    let (replication_controllers, t12) =
        reflect(Api::<ReplicationController>::all(client.clone()), move |rc: &ReplicationController| {
            let _ = q.send(Work::ReplicationController(rc.namespace().unwrap_or_default(), rc.name_any()));
        });
    let q = queue.clone();
    let (pods, t3) = reflect_pods(Api::<Pod>::all(client.clone()), move |pod: &Pod| {
        let ephemeral = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| v.ephemeral.is_some());
        if ephemeral {
            let _ = q.send(Work::EphemeralVolumes(pod.namespace().unwrap_or_default(), pod.name_any()));
        }
        let _ = q.send(Work::Disruptions(pod.namespace().unwrap_or_default()));
        if controller_of(pod).is_none() && pod.metadata.deletion_timestamp.is_none() && !pod.labels().is_empty() {
            let _ = q.send(Work::OrphanPod(pod.namespace().unwrap_or_default(), pod.name_any()));
        }
        for owner in pod.owner_references() {
            let namespace = pod.namespace().unwrap_or_default();
            match owner.kind.as_str() {
                "ReplicaSet" => {
                    let _ = q.send(Work::ReplicaSet(namespace, owner.name.clone()));
                }
                "Job" => {
                    let _ = q.send(Work::Job(namespace, owner.name.clone()));
                }
                "StatefulSet" => {
                    let _ = q.send(Work::StatefulSet(namespace, owner.name.clone()));
                }
                "DaemonSet" => {
                    let _ = q.send(Work::DaemonSet(namespace, owner.name.clone()));
                }
                "ReplicationController" => {
                    let _ = q.send(Work::ReplicationController(namespace, owner.name.clone()));
                }
                _ => {}
            }
        }
    });
    let q = queue.clone();
    let (stateful_sets, t8) = reflect(Api::<StatefulSet>::all(client.clone()), move |set: &StatefulSet| {
        let _ = q.send(Work::StatefulSet(set.namespace().unwrap_or_default(), set.name_any()));
    });
    let q = queue.clone();
    let (daemon_sets, t9) = reflect(Api::<DaemonSet>::all(client.clone()), move |set: &DaemonSet| {
        let _ = q.send(Work::DaemonSet(set.namespace().unwrap_or_default(), set.name_any()));
    });
    let q = queue.clone();
    let (nodes, t10) = reflect(Api::<Node>::all(client.clone()), move |_: &Node| {
        let _ = q.send(Work::AllDaemonSets);
    });
    let q = queue.clone();
    let (budgets, t13) = reflect(Api::<PodDisruptionBudget>::all(client.clone()), move |pdb: &PodDisruptionBudget| {
        let _ = q.send(Work::Disruption(pdb.namespace().unwrap_or_default(), pdb.name_any()));
    });
    let endpoints = tokio::spawn(endpoints::run(client.clone()));
    let collector = tokio::spawn(garbage::run(client.clone()));
    let aggregator = tokio::spawn(aggregation::run(client.clone()));
    let quotas = tokio::spawn(quota::run(client.clone()));
    let _tasks =
        Tasks(vec![t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, endpoints, collector, aggregator, quotas]);
    let _ = deployments.wait_until_ready().await;
    let _ = replica_sets.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let _ = jobs.wait_until_ready().await;
    let _ = stateful_sets.wait_until_ready().await;
    let _ = daemon_sets.wait_until_ready().await;
    let _ = nodes.wait_until_ready().await;
    let _ = cron_jobs.wait_until_ready().await;
    let _ = replication_controllers.wait_until_ready().await;
    let _ = budgets.wait_until_ready().await;
    let controllers = Controllers {
        budgets,
        cron_jobs,
        replication_controllers,
        wakeups: std::sync::Mutex::default(),
        expectations: std::sync::Mutex::default(),
        client,
        deployments,
        replica_sets,
        jobs,
        stateful_sets,
        daemon_sets,
        nodes,
        pods,
        queue: queue.clone(),
        root_ca,
    };
    while let Some(first) = work.recv().await {
        let mut batch = BTreeSet::from([first]);
        while let Ok(more) = work.try_recv() {
            batch.insert(more);
        }
        for item in batch {
            let result = match &item {
                Work::Deployment(namespace, name) => controllers.deployment(namespace, name).await,
                Work::ReplicaSet(namespace, name) => controllers.replica_set(namespace, name).await,
                Work::Job(namespace, name) => controllers.job(namespace, name).await,
                Work::CronJob(namespace, name) => controllers.cron_job(namespace, name).await,
                Work::ReplicationController(namespace, name) => {
                    controllers.replication_controller(namespace, name).await
                }
                Work::Namespace(name) => controllers.namespace(name).await,
                Work::EphemeralVolumes(namespace, name) => controllers.ephemeral_volumes(namespace, name).await,
                Work::StatefulSet(namespace, name) => controllers.stateful_set(namespace, name).await,
                Work::DaemonSet(namespace, name) => controllers.daemon_set(namespace, name).await,
                Work::OrphanReplicaSet(namespace, name) => {
                    if let Some(rs) = controllers.replica_sets.get(&ObjectRef::new(name).within(namespace)) {
                        let rs = value(rs.as_ref());
                        for d in controllers
                            .deployments
                            .state()
                            .iter()
                            .filter(|d| d.namespace().as_deref() == Some(namespace))
                        {
                            if !workloads::claim(&value(d.as_ref()), &[&rs]).0.is_empty() {
                                let _ = queue.send(Work::Deployment(namespace.clone(), d.name_any()));
                            }
                        }
                    }
                    Ok(())
                }
                Work::Disruption(namespace, name) => controllers.disruption(namespace, name).await,
                Work::Disruptions(namespace) => {
                    for pdb in
                        controllers.budgets.state().iter().filter(|b| b.namespace().as_deref() == Some(namespace))
                    {
                        let _ = queue.send(Work::Disruption(namespace.clone(), pdb.name_any()));
                    }
                    Ok(())
                }
                Work::OrphanPod(namespace, name) => {
                    controllers.orphan_pod(namespace, name);
                    Ok(())
                }
                Work::AllDaemonSets => {
                    for set in controllers.daemon_sets.state() {
                        let _ = queue.send(Work::DaemonSet(set.namespace().unwrap_or_default(), set.name_any()));
                    }
                    Ok(())
                }
            };
            if let Err(error) = result {
                tracing::debug!(?item, %error, "controller work failed; retrying");
                let queue = queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = queue.send(item);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, deleting: bool) -> Value {
        let mut pod = json!({"metadata": {"name": name}, "status": {"phase": "Running"}});
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("2026-11-30T00:00:00Z");
        }
        pod
    }

    #[test]
    fn pending_writes_count_until_the_cache_shows_them() {
        let mut expectations = Expectations::default();
        expectations.created("rs", "web-new");
        expectations.deleted("rs", "web-old");
        // The cache still shows the old pod as running and lacks the new one.
        let seen = expectations.adjust("rs", vec![pod("web-a", false), pod("web-old", false)]);
        let names: Vec<&str> = seen.iter().filter_map(|p| p.pointer("/metadata/name")?.as_str()).collect();
        assert_eq!(names, ["web-a", "web-new"]);
        // Once the cache shows both writes, nothing is adjusted any more.
        let caught_up = vec![pod("web-a", false), pod("web-new", false), pod("web-old", true)];
        assert_eq!(expectations.adjust("rs", caught_up.clone()), caught_up);
        assert!(expectations.created.is_empty() && expectations.deleted.is_empty());
    }
}
