//! The syncer runtime: watches the virtual cluster and the host namespace and makes the host
//! follow (pods, the config maps and secrets they reference, services, endpoints of
//! selector-less services, persistent volume claims), bringing status back and propagating
//! deletion both ways; mirrors host events and nodes into the virtual cluster. Decisions come
//! from `vkube_translate`; this crate only observes and writes, through `kube::Client`.
//!
//! Every reconcile looks objects up by key in the watch caches and reads the reference and node
//! indexes the watch callbacks maintain, so one reconcile costs the same with 10 or 10,000
//! objects.

mod claims;
mod custom;
mod data;
mod events;
mod extra;
mod kubernetes;
mod links;
mod mapped;
pub mod mappings;
mod metrics;
mod nodes;
pub mod patches;
mod pods;
pub mod rbac;
mod refs;
mod replicate;
mod services;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event as CoreEvent, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
    Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use vkube_translate::Context;
use vkube_translate::labels::MANAGED_BY;
use vkube_translate::metadata::{OBJECT_NAME, OBJECT_NAMESPACE};
use vkube_translate::pods::PodSettings;

pub use custom::CustomResourceSync;
pub use extra::OptionalKinds;
pub use mapped::{MappedKind, MappedSync};
pub use metrics::Metrics;
pub use replicate::ServiceReplication;
pub use services::{HostAllocation, allocate_on_host, release_on_host};

use mappings::{Mappings, NameMapping, ObjectName};
use refs::{DataKind, NodeIndex, RefIndex};
use vkube_controllers::{Tasks, reflect_modified};

/// How many objects reconcile at once.
const CONCURRENCY: usize = 32;

/// Field manager of the syncer's writes.
pub const MANAGER: &str = "vkube-syncer";
/// Annotation on a host service created ahead of its virtual service (protects it for a while).
pub const BLOCK_DELETION: &str = "vcluster.loft.sh/block-deletion";

/// Label on virtual nodes that stand for host nodes running synced pods.
pub const FAKE_NODE: &str = vkube_translate::nodes::FAKE_NODE;

/// What the syncer needs to know.
#[derive(Clone, Debug)]
pub struct SyncerConfig {
    /// Virtual cluster name and host namespace.
    pub context: Context,
    /// Pod translation settings.
    pub pods: PodSettings,
    /// Sync every config map, not only referenced ones.
    pub all_config_maps: bool,
    /// Sync every secret, not only referenced ones.
    pub all_secrets: bool,
    /// Sync pods (`sync.toHost.pods.enabled`).
    pub pods_enabled: bool,
    /// Sync referenced config maps (`sync.toHost.configMaps.enabled`).
    pub config_maps: bool,
    /// Sync referenced secrets (`sync.toHost.secrets.enabled`).
    pub secrets: bool,
    /// Sync services (`sync.toHost.services.enabled`).
    pub services: bool,
    /// Mirror host events (`sync.fromHost.events.enabled`).
    pub events: bool,
    /// Sync persistent volume claims (`sync.toHost.persistentVolumeClaims.enabled`).
    pub claims: bool,
    /// Sync the endpoints of selector-less services (`sync.toHost.endpoints.enabled`).
    pub endpoints: bool,
    /// Give namespaced host objects an owner reference to the virtual cluster's host service
    /// (`experimental.syncSettings.setOwner`), so deleting that service cleans the host up.
    pub set_owner: bool,
    /// Where the syncer counts its work.
    pub metrics: Arc<Metrics>,
    /// The virtual API server's address: the endpoints of the virtual cluster's host service and
    /// of the virtual `default/kubernetes` service.
    pub api_server: Option<std::net::SocketAddr>,
    /// Where the mapping store persists (the virtual cluster's own store); None keeps it in
    /// memory only.
    pub mappings: Option<MappingStorage>,
    /// The optional kinds switched on (all off by default, as in the reference).
    pub optional: OptionalKinds,
    /// Label selectors (`LabelSelector` JSON) of the classes copied from the host, by kind
    /// (`IngressClass`, `RuntimeClass`, `PriorityClass`, `StorageClass`); none: every class.
    pub class_selectors: BTreeMap<String, serde_json::Value>,
    /// Translate rules by kind (`Pod`, `Service`, ...).
    pub patches: patches::PatchesByKind,
    /// Custom resources synced to or from the host.
    pub custom_resources: Vec<CustomResourceSync>,
    /// The virtual API server gives new services the host's addresses ([`allocate_on_host`]
    /// as its hook): a virtual service whose cluster IP is not its host copy's is then made
    /// again to take it (§3.4).
    pub services_take_host_addresses: bool,
    /// How virtual nodes are made (`sync.fromHost.nodes`; the name, tolerations and version are
    /// filled in at start).
    pub nodes: vkube_translate::nodes::NodeSettings,
    /// `networking.replicateServices`.
    pub replicate: ServiceReplication,
    /// Host objects copied into the virtual cluster by name (`sync.fromHost.configMaps|secrets`,
    /// namespaced `sync.fromHost.customResources`).
    pub mapped: Vec<MappedSync>,
    /// `policies.podSecurityStandard`: pods violating it are not synced (§4.1).
    pub pod_security: Option<vkube_translate::pod_security::Level>,
}

/// The store the mapping store persists in.
#[derive(Clone)]
pub struct MappingStorage(pub Arc<dyn vkube_store::Storage>);

impl std::fmt::Debug for MappingStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MappingStorage")
    }
}

impl SyncerConfig {
    /// The reference defaults for virtual cluster `context`.
    pub fn new(context: Context) -> Self {
        SyncerConfig {
            context,
            pods: PodSettings::default(),
            all_config_maps: false,
            all_secrets: false,
            pods_enabled: true,
            config_maps: true,
            secrets: true,
            services: true,
            events: true,
            claims: true,
            endpoints: true,
            set_owner: true,
            metrics: Arc::new(Metrics::default()),
            api_server: None,
            mappings: None,
            optional: OptionalKinds::default(),
            class_selectors: BTreeMap::new(),
            patches: patches::PatchesByKind::default(),
            custom_resources: Vec::new(),
            services_take_host_addresses: false,
            nodes: Default::default(),
            pod_security: None,
            mapped: Vec::new(),
            replicate: ServiceReplication::default(),
        }
    }
}

/// Why the syncer could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncerError {
    /// A configured custom resource cannot be synced.
    #[error("sync.{direction}.customResources[{key:?}]")]
    CustomResource {
        /// `toHost` or `fromHost`.
        direction: &'static str,
        /// The configuration key.
        key: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The mapping store could not be read.
    #[error("cannot read the mapping store")]
    Mappings(#[source] vkube_store::StorageError),
    /// The host namespace or workload service account could not be prepared.
    #[error("cannot prepare host namespace {namespace}")]
    HostNamespace {
        /// The namespace.
        namespace: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// A unit of work, keyed so that duplicates in one batch collapse.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Work {
    /// Reconcile the virtual pod `namespace/name`.
    Pod(String, String),
    /// Reconcile the host config map or secret with this host name.
    Data(DataKind, String),
    /// Reconcile virtual node `name`.
    Node(String),
    /// Reconcile the virtual service `namespace/name`.
    Service(String, String),
    /// Reconcile the endpoints of the virtual service `namespace/name`.
    Endpoints(String, String),
    /// Reconcile the virtual claim `namespace/name`.
    Claim(String, String),
    /// Reconcile the fake persistent volume with this name.
    Volume(String),
    /// Forget mappings whose virtual and host objects are both gone.
    Mappings,
    /// Reconcile the virtual object `namespace/name` of an optional kind copied to the host.
    ToHost(extra::ToHostKind, String, String),
    /// Reconcile the virtual copy of the host's cluster-scoped object `name`.
    Mirror(extra::MirrorKind, String),
    /// Reconcile the virtual cluster-scoped object `name` copied to the host.
    ClusterToHost(extra::ClusterKind, String),
    /// Reconcile object `namespace/name` of the configured custom resource at this index.
    Custom(usize, String, String),
    /// Reconcile the virtual replica of the host service `networking.replicateServices.fromHost[i]`.
    ReplicaFromHost(usize),
    /// Reconcile the host replica of the virtual service `networking.replicateServices.toHost[i]`.
    ReplicaToHost(usize),
    /// Remove replicated services no longer configured.
    StaleReplicas,
    /// Reconcile the virtual copy of host object `namespace/name` of the mapped kind at this index.
    Mapped(usize, String, String),
    /// Reconcile the virtual copy of host CSI storage capacity `namespace/name`.
    Capacity(String, String),
    /// The labels of virtual namespace `name` changed: re-project them onto its host pods.
    Namespace(String),
}

impl Work {
    fn kind(&self) -> &'static str {
        match self {
            Work::Pod(..) => "Pod",
            Work::Data(kind, _) => kind.kind(),
            Work::Node(_) => "Node",
            Work::Service(..) => "Service",
            Work::Endpoints(..) => "Endpoints",
            Work::Claim(..) => "PersistentVolumeClaim",
            Work::Volume(..) => "PersistentVolume",
            Work::Mappings => "Mapping",
            Work::ToHost(kind, ..) => kind.kind(),
            Work::Mirror(kind, _) => kind.kind(),
            Work::ClusterToHost(kind, _) => kind.kind(),
            Work::Custom(..) => "CustomResource",
            Work::Capacity(..) => "CSIStorageCapacity",
            Work::Mapped(..) => "FromHost",
            Work::ReplicaFromHost(_) | Work::ReplicaToHost(_) | Work::StaleReplicas => "ReplicatedService",
            Work::Namespace(..) => "Namespace",
        }
    }
}

/// The work queue: counts what waits in it.
#[derive(Clone)]
struct Queue {
    sender: mpsc::UnboundedSender<Work>,
    metrics: Arc<Metrics>,
    /// Items sent and not taken yet: sending one again is a no-op (its reconcile reads the
    /// latest state anyway).
    waiting: Arc<Mutex<HashSet<Work>>>,
}

impl Queue {
    fn send(&self, work: Work) {
        if !lock(&self.waiting).insert(work.clone()) {
            return;
        }
        self.metrics.queued();
        if self.sender.send(work).is_err() {
            self.metrics.dequeued(1);
        }
    }

    /// Marks `work` as taken: sending it again queues it again.
    fn taken(&self, work: &Work) {
        lock(&self.waiting).remove(work);
    }

    fn send_after(&self, delay: Duration, work: Work) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.send(work);
        });
    }
}

struct Syncer {
    config: SyncerConfig,
    virtual_client: Client,
    host_client: Client,
    virtual_pods: Store<Pod>,
    host_pods: Store<Pod>,
    namespaces: Store<Namespace>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    host_config_maps: Store<ConfigMap>,
    host_secrets: Store<Secret>,
    services: Store<Service>,
    host_services: Store<Service>,
    endpoints: Store<Endpoints>,
    host_endpoints: Store<Endpoints>,
    claims: Store<PersistentVolumeClaim>,
    host_claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    /// Host objects seen in this run, by kind: one that disappears was deleted on the host.
    seen: Arc<Mutex<HashSet<(&'static str, String)>>>,
    /// Who uses which host config map or secret.
    refs: Arc<Mutex<RefIndex>>,
    /// Which host nodes run synced pods.
    nodes: Arc<Mutex<NodeIndex>>,
    /// The virtual claim bound to each volume name.
    volume_users: Arc<Mutex<HashMap<String, (String, String)>>>,
    /// Virtual nodes: fake ones, or the host's.
    node_sync: nodes::NodeSync,
    /// The optional kinds that are switched on.
    extras: extra::Extras,
    /// The custom resources synced, in configuration order.
    customs: Vec<custom::Custom>,
    /// Host objects copied into the virtual cluster by name, by index of `SyncerConfig::mapped`.
    mapped: Vec<mapped::Mapped>,
    /// Replicated services' caches.
    replication: replicate::Replication,
    /// Service-link variables by virtual namespace (§4.8), kept by the services' watch.
    service_links: links::LinkIndex,
    /// Whole virtual pods not bound to a node yet (the cache holds them slim).
    unbound: Arc<Mutex<HashMap<(String, String), Pod>>>,
    /// Host pods deleted since their virtual pod was last reconciled, as they were last seen (by
    /// virtual namespace and name): their final status (a preemption's `DisruptionTarget`)
    /// reaches the virtual pod before it goes.
    gone_host_pods: Arc<Mutex<HashMap<(String, String), Pod>>>,
    /// Every virtual ↔ host pair made, persisted in the virtual cluster's store.
    mappings: Arc<Mappings>,
    /// Data last written to both sides, per host config map or secret name (for bidirectional data).
    last_synced: Mutex<HashMap<String, Value>>,
    /// Serializes the reconciles of each host config map or secret.
    data_gates: Mutex<HashMap<(DataKind, String), Gate>>,
    /// The newest (host, virtual) resourceVersions seen or written per host config map or secret.
    data_versions: Mutex<HashMap<String, (u64, u64)>>,
    /// The bidirectional spec fields of each host service (by name) both sides last agreed on,
    /// with the newest host and virtual resourceVersions seen or written (§3.4).
    last_service_spec: Mutex<HashMap<String, SpecAgreement>>,
    /// Virtual services being deleted and created again to take their host cluster IP.
    recreating: Mutex<HashSet<(String, String)>>,
    /// Labels and annotations both sides last agreed on, per (kind, host name) (§2.7).
    last_metadata: Mutex<HashMap<(&'static str, String), Agreement>>,
    /// The owner reference namespaced host objects get (the virtual cluster's host service).
    owner: Option<OwnerReference>,
    /// The cluster IP of that service (`kubernetes.default` inside host pods).
    api_service_ip: Option<String>,
    recorder: events::Recorder,
    queue: Queue,
}

/// Host objects seen in this run, by kind.
type Seen = Arc<Mutex<HashSet<(&'static str, String)>>>;

/// A namespaced kind the syncer reads and writes as typed objects.
pub(crate) trait Namespaced:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + 'static
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + 'static
{
}

fn to_value<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// A translate rule that failed, as an error of the sync it belongs to.
pub(crate) fn patch_error(message: String) -> kube::Error {
    kube::Error::Service(message.into())
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn ignore_not_found(result: Result<impl Sized, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

/// An object's resourceVersion as a number (0 when absent): how the syncer tells a cached object
/// older than one it wrote (both etcd and vkube's store count revisions up).
fn version_of<K: Resource>(object: &K) -> u64 {
    object.meta().resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The written object, or None when it was gone.
fn ignore_not_found_value<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cached object `namespace/name` (or cluster-scoped `name`).
fn cached<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut key = ObjectRef::<K>::new(name);
    if let Some(namespace) = namespace {
        key = key.within(namespace);
    }
    store.get(&key)
}

/// The JSON merge patch that turns `current` into `desired` exactly: changed values set, keys
/// `desired` lacks set to null (at every level of nested objects).
pub(crate) fn forcing_patch(current: &Value, desired: &Value) -> Value {
    match (current, desired) {
        (Value::Object(current), Value::Object(desired)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in desired {
                match current.get(key) {
                    Some(existing) if existing == value => {}
                    Some(existing) => {
                        patch.insert(key.clone(), forcing_patch(existing, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in current.keys().filter(|k| !desired.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        (_, desired) => desired.clone(),
    }
}

/// [`cached`] for a virtual object a to-host syncer may act on: one labelled
/// `vcluster.loft.sh/controlled-by` belongs to something else and counts as absent (§1.11).
fn cached_virtual<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    cached(store, namespace, name).filter(|object| !controlled(object.as_ref()))
}

/// [`cached`] for a host object: one labelled `vcluster.loft.sh/controlled-by` belongs to
/// something else (a plugin, another controller) and counts as absent (§1.11): the syncer neither
/// updates nor deletes it, and its name is taken for a copy of its own.
fn cached_host<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    cached(store, namespace, name).filter(|object| !controlled(object.as_ref()))
}

/// Whether an object carries a non-empty `vcluster.loft.sh/controlled-by` label.
pub(crate) fn controlled<K: Resource>(object: &K) -> bool {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|labels| labels.get(vkube_translate::labels::CONTROLLED_BY))
        .is_some_and(|value| !value.is_empty())
}

/// The virtual (namespace, name) a host object's bookkeeping annotations name.
fn virtual_key<K: Resource>(host: &K) -> Option<(String, String)> {
    let annotations = host.meta().annotations.as_ref()?;
    Some((annotations.get(OBJECT_NAMESPACE)?.clone(), annotations.get(OBJECT_NAME)?.clone()))
}

/// The virtual (namespace, name) a host object of `kind` stands for: its bookkeeping
/// annotations, or the mapping store when someone removed them.
fn virtual_key_of<K: Resource>(mappings: &Mappings, kind: &str, host: &K) -> Option<(String, String)> {
    virtual_key(host).or_else(|| {
        let meta = host.meta();
        let host_name = ObjectName::new(meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref()?);
        mappings.virtual_of(kind, &host_name).map(|v| (v.namespace, v.name))
    })
}

fn has_controller<K: Resource>(object: &K) -> bool {
    object.meta().owner_references.iter().flatten().any(|o| o.controller == Some(true))
}

impl Syncer {
    fn host_namespace(&self) -> &str {
        &self.config.context.host_namespace
    }

    fn host_api<K: Namespaced>(&self) -> Api<K> {
        Api::namespaced(self.host_client.clone(), self.host_namespace())
    }

    /// Adds the owner reference to the virtual cluster's host service (when configured).
    fn owned(&self, mut host: Value, controller: bool) -> Value {
        if let Some(owner) = &self.owner {
            let mut reference = to_value(owner);
            reference["controller"] = json!(controller);
            host["metadata"]["ownerReferences"] = json!([reference]);
        }
        host
    }

    /// Applies the translate rules of `kind` to `object`, about to be written to the host.
    fn patch_to_host(&self, kind: &str, namespace: &str, object: &mut Value) -> Result<(), kube::Error> {
        match self.config.patches.get(kind) {
            Some(patches) => patches.to_host(&self.config.context, namespace, object).map_err(patch_error),
            None => Ok(()),
        }
    }

    /// Applies the translate rules of `kind` to `object`, about to be written to the virtual cluster.
    fn patch_to_virtual(&self, kind: &str, namespace: &str, object: &mut Value) -> Result<(), kube::Error> {
        match self.config.patches.get(kind) {
            Some(patches) => patches.to_virtual(namespace, object).map_err(patch_error),
            None => Ok(()),
        }
    }

    /// Creates `desired` on the host (after the kind's translate rules); an existing object of
    /// the same name is left alone (the reconcile that follows its watch event takes over).
    async fn create_on_host<K: Namespaced>(&self, mut desired: Value) -> Result<(), kube::Error> {
        let kind = desired["kind"].as_str().unwrap_or_default().to_string();
        let namespace = desired
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(OBJECT_NAMESPACE))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.patch_to_host(&kind, &namespace, &mut desired)?;
        let object: K = serde_json::from_value(desired).map_err(kube::Error::SerdeError)?;
        let api = self.host_api::<K>();
        match api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &object).await {
            Ok(created) => {
                // Both sides agree on the metadata the copy was made with (§2.7): a change made
                // before the first reconcile of the pair is then told apart from a host-only key.
                let kind: Option<&'static str> =
                    ["Pod", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim"].into_iter().find(|k| *k == kind);
                if let Some(kind) = kind {
                    let agreed = vkube_translate::metadata_sync::of_host(
                        &self.config.context,
                        created.labels(),
                        created.annotations(),
                        Default::default(),
                    );
                    let host_version = version_of(&created);
                    let agreement = Agreement { metadata: agreed, host_version, virtual_version: 0 };
                    lock(&self.last_metadata).insert((kind, created.name_any()), agreement);
                }
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Ours (made by a concurrent reconcile) is fine; anyone else's is not overwritten.
                let existing = api.get_opt(&object.name_any()).await?;
                let ours = existing
                    .as_ref()
                    .is_some_and(|e| e.labels().get(MANAGED_BY).is_some_and(|v| *v == self.config.context.name));
                if ours || existing.is_none() { Ok(()) } else { Err(kube::Error::Api(status)) }
            }
            Err(error) => Err(error),
        }
    }

    fn namespace_labels(&self, namespace: &str) -> std::collections::BTreeMap<String, String> {
        cached(&self.namespaces, None, namespace).map(|n| n.labels().clone()).unwrap_or_default()
    }

    /// Whether a host object of `kind` stands for the virtual object `namespace/name` (and not
    /// for another virtual object whose translated name happens to be the same).
    fn belongs<K: Resource>(&self, kind: &str, host: &K, namespace: &str, name: &str) -> bool {
        virtual_key_of(&self.mappings, kind, host).is_some_and(|(ns, n)| ns == namespace && n == name)
    }

    /// The pair of virtual `namespace/name` of `kind` and its host object `host`.
    fn pair(&self, kind: &str, namespace: &str, name: &str, host: &str) -> NameMapping {
        NameMapping::core(kind, ObjectName::new(namespace, name), ObjectName::new(self.host_namespace(), host))
    }

    /// Records that virtual `namespace/name` of `kind` is `host` on the host (with what it uses);
    /// refuses, with a `SyncWarning` event on `object`, when that host name stands for another
    /// virtual object. Returns whether the sync may go on.
    async fn record<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        pair: NameMapping,
        references: Vec<NameMapping>,
    ) -> bool {
        self.record_for(|| events::Target::of(object), pair, references).await
    }

    /// [`Syncer::record`] for an object whose event target is made by `target`.
    async fn record_for(
        &self,
        target: impl FnOnce() -> events::Target,
        pair: NameMapping,
        references: Vec<NameMapping>,
    ) -> bool {
        match self.mappings.record(pair, references) {
            Ok(()) => true,
            Err(conflict) => {
                let message = format!(
                    "cannot sync: host name {} is already used by {} {}; rename this {}",
                    conflict.host, conflict.kind, conflict.existing, conflict.kind
                );
                let action = format!("Sync{}", conflict.kind);
                self.recorder.warn(&target(), "SyncWarning", &action, &message).await;
                false
            }
        }
    }

    /// Forgets the mapping of virtual `namespace/name` of `kind` (both sides are gone).
    fn forget(&self, kind: &str, namespace: &str, name: &str) {
        self.mappings.remove(kind, &ObjectName::new(namespace, name));
        let host = vkube_translate::names::host_name(&self.config.context, name, namespace);
        lock(&self.last_metadata).retain(|(k, h), _| *k != kind || *h != host);
        if kind == "Service" {
            lock(&self.last_service_spec).remove(&host);
        }
    }

    /// §2.7: labels and annotations changed on either side of a synced pair reach the other side
    /// (the virtual side wins a key both changed).
    pub(crate) async fn sync_metadata<K: Namespaced>(
        &self,
        kind: &'static str,
        virtual_api: &Api<K>,
        virtual_object: &K,
        host_object: &K,
        excluded: vkube_translate::metadata_sync::Excluded,
    ) -> Result<(), kube::Error> {
        use vkube_translate::metadata_sync::{decide, of_host, of_virtual};
        let context = &self.config.context;
        let host = host_object.name_any();
        let key = (kind, host.clone());
        let last = lock(&self.last_metadata).get(&key).cloned();
        // A cached object older than one this syncer wrote (its watch event not in yet) stands
        // for what was written, not for a change on that side.
        let (host_version, virtual_version) = (version_of(host_object), version_of(virtual_object));
        let host_now = match &last {
            Some(last) if host_version < last.host_version => last.metadata.clone(),
            _ => of_host(context, host_object.labels(), host_object.annotations(), excluded),
        };
        let virtual_now = match &last {
            Some(last) if virtual_version < last.virtual_version => last.metadata.clone(),
            _ => {
                // Compared as the host would carry it: the kind's translate rules applied.
                let namespace = virtual_object.namespace().unwrap_or_default();
                let mut translated = json!({"metadata": {"labels": virtual_object.labels(), "annotations": virtual_object.annotations()}});
                self.patch_to_host(kind, &namespace, &mut translated)?;
                let map = |field: &str| -> std::collections::BTreeMap<String, String> {
                    let entries = translated["metadata"][field].as_object().into_iter().flatten();
                    entries.filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
                };
                of_virtual(context, &map("labels"), &map("annotations"), excluded)
            }
        };
        let decision = decide(context, last.as_ref().map(|l| &l.metadata), &virtual_now, &host_now);
        let mut agreement = Agreement {
            metadata: decision.agreed,
            host_version: host_version.max(last.as_ref().map_or(0, |l| l.host_version)),
            virtual_version: virtual_version.max(last.as_ref().map_or(0, |l| l.virtual_version)),
        };
        // Written on the version read: a concurrent change makes it a Conflict, read again.
        let on_version = |mut patch: Value, object: &K| {
            if let Some(version) = object.resource_version() {
                patch["metadata"]["resourceVersion"] = json!(version);
            }
            patch
        };
        if let Some(patch) = decision.host_patch {
            let patch = on_version(patch, host_object);
            let host_api: Api<K> = self.host_api();
            match host_api.patch(&host, &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await {
                Ok(written) => agreement.host_version = version_of(&written),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        if let Some(patch) = decision.virtual_patch {
            let patch = on_version(patch, virtual_object);
            let name = virtual_object.name_any();
            match virtual_api.patch(&name, &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await {
                Ok(written) => agreement.virtual_version = version_of(&written),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        lock(&self.last_metadata).insert(key, agreement);
        Ok(())
    }

    /// Puts the bookkeeping annotations back on a host object that lost them (the mapping store
    /// still knew it).
    async fn restore_bookkeeping<K: Namespaced>(
        &self,
        host: &K,
        kind: &str,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<(), kube::Error> {
        if virtual_key(host).is_some() {
            return Ok(());
        }
        let host_name = host.meta().name.clone().unwrap_or_default();
        tracing::info!(%kind, %namespace, %name, %host_name, "restoring the bookkeeping annotations of a host object");
        let annotations = json!({
            OBJECT_NAME: name,
            OBJECT_NAMESPACE: namespace,
            vkube_translate::metadata::OBJECT_UID: uid,
            vkube_translate::metadata::OBJECT_KIND: vkube_translate::metadata::kind_string("", "v1", kind),
            vkube_translate::metadata::OBJECT_HOST_NAME: host_name,
            vkube_translate::metadata::OBJECT_HOST_NAMESPACE: self.host_namespace(),
        });
        let patch = Patch::Merge(json!({"metadata": {"annotations": annotations}}));
        ignore_not_found(self.host_api::<K>().patch(&host_name, &PatchParams::apply(MANAGER), &patch).await)
    }

    /// Drops the mappings whose virtual and host objects are both gone (sync-behavior.md §6.4).
    fn collect_mappings(&self) {
        let hns = Some(self.host_namespace());
        for pair in self.mappings.owners() {
            let (vns, vname) = (Some(pair.virtual_name.namespace.as_str()), pair.virtual_name.name.as_str());
            let host = pair.host_name.name.as_str();
            let exists = match pair.kind.as_str() {
                "Pod" => {
                    cached(&self.virtual_pods, vns, vname).is_some() || cached(&self.host_pods, hns, host).is_some()
                }
                "ConfigMap" => {
                    cached(&self.config_maps, vns, vname).is_some()
                        || cached(&self.host_config_maps, hns, host).is_some()
                }
                "Secret" => {
                    cached(&self.secrets, vns, vname).is_some() || cached(&self.host_secrets, hns, host).is_some()
                }
                "Service" => {
                    cached(&self.services, vns, vname).is_some() || cached(&self.host_services, hns, host).is_some()
                }
                "Endpoints" => {
                    cached(&self.endpoints, vns, vname).is_some() || cached(&self.host_endpoints, hns, host).is_some()
                }
                "PersistentVolumeClaim" => {
                    cached(&self.claims, vns, vname).is_some() || cached(&self.host_claims, hns, host).is_some()
                }
                _ => true,
            };
            if !exists {
                self.mappings.remove(&pair.kind, &pair.virtual_name);
            }
        }
    }

    fn seen(&self, kind: &'static str, host: &str) -> bool {
        lock(&self.seen).contains(&(kind, host.to_string()))
    }

    async fn reconcile(&self, item: &Work) -> Result<(), kube::Error> {
        match item {
            Work::Pod(namespace, name) => self.reconcile_pod(namespace, name).await,
            Work::Data(kind, host) => self.reconcile_data(*kind, host).await,
            Work::Node(name) => self.reconcile_node(name).await,
            Work::Service(namespace, name) => self.reconcile_service(namespace, name).await,
            Work::Endpoints(namespace, name) => self.reconcile_endpoints(namespace, name).await,
            Work::Claim(namespace, name) => self.reconcile_claim(namespace, name).await,
            Work::Volume(name) => self.reconcile_volume(name).await,
            Work::Mappings => {
                self.collect_mappings();
                Ok(())
            }
            Work::ToHost(kind, namespace, name) => self.reconcile_to_host(*kind, namespace, name).await,
            Work::Mirror(kind, name) => self.reconcile_mirror(*kind, name).await,
            Work::ClusterToHost(kind, name) => self.reconcile_cluster_to_host(*kind, name).await,
            Work::Custom(index, namespace, name) => self.reconcile_custom(*index, namespace, name).await,
            Work::Capacity(namespace, name) => self.reconcile_capacity(namespace, name).await,
            Work::Mapped(index, namespace, name) => self.reconcile_mapped(*index, namespace, name).await,
            Work::ReplicaFromHost(index) => self.reconcile_replica_from_host(*index).await,
            Work::ReplicaToHost(index) => self.reconcile_replica_to_host(*index).await,
            Work::StaleReplicas => self.remove_stale_replicas().await,
            Work::Namespace(name) => {
                // Each pod's reconcile re-projects the namespace's labels onto its host pod.
                for pod in self.virtual_pods.state().iter().filter(|p| p.namespace().as_deref() == Some(name.as_str()))
                {
                    self.queue.send(Work::Pod(name.clone(), pod.name_any()));
                }
                Ok(())
            }
        }
    }

    /// Reports a failed sync as a Warning event on the virtual object (sync-behavior.md 3.0.7).
    async fn report_failure(&self, item: &Work, error: &kube::Error) {
        let message = format!("Error syncing: {}", events::describe(error));
        let target = match item {
            Work::Pod(ns, n) => cached(&self.virtual_pods, Some(ns), n).map(|o| events::Target::of(o.as_ref())),
            Work::Service(ns, n) => cached(&self.services, Some(ns), n).map(|o| events::Target::of(o.as_ref())),
            Work::Endpoints(ns, n) => cached(&self.endpoints, Some(ns), n).map(|o| events::Target::of(o.as_ref())),
            Work::Claim(ns, n) => cached(&self.claims, Some(ns), n).map(|o| events::Target::of(o.as_ref())),
            Work::ToHost(kind, ns, n) => self.extras.target(*kind, ns, n),
            Work::Custom(index, ns, n) => self.custom_target(*index, ns, n),
            Work::Mapped(index, ns, n) => self.mapped_target(*index, ns, n),
            Work::Data(kind, host) => {
                let sources = lock(&self.refs).sources(*kind, host);
                sources.first().and_then(|(ns, n)| match kind {
                    DataKind::ConfigMap => {
                        cached(&self.config_maps, Some(ns), n).map(|o| events::Target::of(o.as_ref()))
                    }
                    DataKind::Secret => cached(&self.secrets, Some(ns), n).map(|o| events::Target::of(o.as_ref())),
                })
            }
            _ => None,
        };
        if let Some(target) = target {
            self.recorder.warn(&target, "SyncError", &format!("Sync{}", item.kind()), &message).await;
        }
    }
}

/// What the syncer reads of a cached virtual pod: identity, deletion, node, container names and
/// images, status (everything else is read from the API when the host pod is created).
fn slim_virtual_pod(pod: &mut Pod) {
    // Annotations stay (§2.7 syncs them), except kubectl's copy of the whole manifest.
    let mut annotations = pod.metadata.annotations.take();
    if let Some(annotations) = annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    // What follows the virtual pod after creation stays: tolerations, and the ephemeral
    // containers' names (§3.1).
    let tolerations = pod.spec.as_mut().and_then(|s| s.tolerations.take());
    // The whole status stays: it is compared with the host pod's on every reconcile, and a
    // slimmed one (without container statuses) would differ every time and be written again.
    let status = pod.status.take();
    let ephemeral: Option<Vec<_>> = pod.spec.as_ref().and_then(|s| s.ephemeral_containers.as_ref()).map(|list| {
        list.iter()
            .map(|c| k8s_openapi::api::core::v1::EphemeralContainer { name: c.name.clone(), ..Default::default() })
            .collect()
    });
    vkube_controllers::slim_pod_with(pod, |container| k8s_openapi::api::core::v1::Container {
        name: container.name,
        image: container.image,
        ..Default::default()
    });
    if let Some(spec) = pod.spec.as_mut() {
        spec.image_pull_secrets = None;
        spec.tolerations = tolerations;
        spec.ephemeral_containers = ephemeral;
    }
    pod.metadata.annotations = annotations;
    pod.status = status;
}

/// Taken while one reconcile of a host copy runs.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// A service's bidirectional spec fields both sides last agreed on, and the newest host and
/// virtual resourceVersions seen or written (§3.4).
type SpecAgreement = (serde_json::Map<String, Value>, u64, u64);

/// What both sides of a pair last agreed on (§2.7), and the newest resourceVersions of each side
/// the syncer saw or wrote.
#[derive(Clone, Debug)]
struct Agreement {
    metadata: vkube_translate::metadata_sync::Metadata,
    host_version: u64,
    virtual_version: u64,
}

/// The config maps and secrets the translate rules of `kind` make `object` use (§7.5).
pub(crate) fn referenced_uses(
    context: &Context,
    patches: &patches::PatchesByKind,
    kind: &str,
    object: &Value,
) -> BTreeSet<refs::Use> {
    let Some(rules) = patches.get(kind) else { return BTreeSet::new() };
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    rules
        .data_references(namespace, object)
        .into_iter()
        .map(|(kind, namespace, name)| match kind {
            "ConfigMap" => refs::Use {
                kind: DataKind::ConfigMap,
                host: vkube_translate::pods::config_map_host_name(context, &name, &namespace),
                namespace,
                name,
            },
            _ => refs::Use {
                kind: DataKind::Secret,
                host: vkube_translate::names::host_name(context, &name, &namespace),
                namespace,
                name,
            },
        })
        .collect()
}

/// kubectl's record of the applied manifest.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the syncer reads of a host pod: its bookkeeping (without the token annotations), node,
/// container names and images, and status.
fn slim_host_pod(pod: &mut Pod) {
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|k, _| !k.starts_with("vcluster.loft.sh/token-"));
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.init_containers = None;
        // Only the names of ephemeral containers (which ones the host pod has).
        if let Some(list) = spec.ephemeral_containers.as_mut() {
            for container in list.iter_mut() {
                let name = std::mem::take(&mut container.name);
                *container = k8s_openapi::api::core::v1::EphemeralContainer { name, ..Default::default() };
            }
        }
        spec.host_aliases = None;
        spec.dns_config = None;
        for container in &mut spec.containers {
            let (name, image) = (std::mem::take(&mut container.name), container.image.take());
            *container = k8s_openapi::api::core::v1::Container { name, image, ..Default::default() };
        }
    }
}

/// A reflector whose cache keeps objects as they come (minus managed fields).
pub(crate) fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    on_change: impl Fn(&K, bool) + Send + 'static,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflect_modified(api, config, |_| {}, on_change)
}

/// Creates `object` unless it exists.
async fn ensure<K>(api: &Api<K>, object: Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    vkube_controllers::create_if_absent(api, object, MANAGER).await
}

/// The host namespace, the workload service account and the virtual cluster's own host service
/// (the owner of every namespaced host object, and `kubernetes.default` for pods); returns that
/// service's owner reference (when configured) and cluster IP.
async fn prepare_host(
    host: &Client,
    config: &SyncerConfig,
) -> Result<(Option<OwnerReference>, Option<String>), kube::Error> {
    let namespace = &config.context.host_namespace;
    // The namespace and the workload service account are the platform's to create (the
    // reference's chart does; the syncer's derived RBAC has no rights on them): made here only
    // when the syncer may, e.g. with an admin kubeconfig.
    let allowed = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            tracing::info!(%namespace, what, "not allowed to create it on the host; expecting it to exist");
            Ok(())
        }
        other => other,
    };
    allowed(ensure(&Api::<Namespace>::all(host.clone()), json!({"metadata": {"name": namespace}})).await, "namespace")?;
    let accounts: Api<ServiceAccount> = Api::namespaced(host.clone(), namespace);
    let account = json!({"metadata": {"name": config.pods.workload_account(&config.context)}});
    allowed(ensure(&accounts, account).await, "workload service account")?;
    let services: Api<Service> = Api::namespaced(host.clone(), namespace);
    let name = &config.context.name;
    let target = config.api_server.map(|a| a.port()).unwrap_or(8443);
    ensure(
        &services,
        json!({
            "metadata": {"name": name, "labels": {"app": "vcluster", "release": name}},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": target, "protocol": "TCP"}]},
        }),
    )
    .await?;
    if let Some(api_server) = config.api_server {
        // The virtual API server may listen elsewhere after a restart: keep both current.
        let ports =
            json!({"spec": {"ports": [{"name": "https", "port": 443, "targetPort": target, "protocol": "TCP"}]}});
        services.patch(name, &PatchParams::apply(MANAGER), &Patch::Merge(ports)).await?;
        let endpoints: Api<Endpoints> = Api::namespaced(host.clone(), namespace);
        let desired = kubernetes::host_endpoints_for(name, api_server);
        let written = match endpoints.get_opt(name).await? {
            Some(_) => endpoints.patch(name, &PatchParams::apply(MANAGER), &Patch::Merge(desired)).await.map(|_| ()),
            None => ensure(&endpoints, desired).await,
        };
        match written {
            // A real host refuses loopback addresses (its pods could not reach them anyway).
            Err(kube::Error::Api(status)) if status.code == 422 => {
                tracing::warn!(%api_server, "the host refused the virtual API server's address as an endpoint; host pods reach it only through a routable --listen address");
            }
            other => other?,
        }
    }
    let service = services.get(name).await?;
    let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.clone()).filter(|ip| !ip.is_empty() && ip != "None");
    let owner = config.set_owner.then(|| OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.clone(),
        uid: service.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    });
    Ok((owner, ip))
}

/// Prepares the host namespace, starts watching both sides and syncs until the future is
/// dropped. `ready` turns true once every cache has its initial list.
pub async fn run(
    virtual_client: Client,
    host_client: Client,
    config: SyncerConfig,
    ready: watch::Sender<bool>,
) -> Result<(), SyncerError> {
    let mut config = config;
    config.pods.service_accounts = config.optional.service_accounts;
    // Host pods run on the nodes the virtual cluster shows by selector (§4.1).
    config.pods.node_selector.extend(config.nodes.labels.clone());
    config.pods.priority = if config.optional.priority_classes_to_host {
        vkube_translate::pods::PriorityMode::Translated
    } else if config.optional.priority_classes {
        vkube_translate::pods::PriorityMode::Kept
    } else {
        vkube_translate::pods::PriorityMode::Cleared
    };
    let namespace = config.context.host_namespace.clone();
    let (owner, api_service_ip) = prepare_host(&host_client, &config)
        .await
        .map_err(|source| SyncerError::HostNamespace { namespace: namespace.clone(), source })?;

    let mappings = Arc::new(match config.mappings.clone() {
        Some(storage) => Mappings::load(storage.0, &namespace).await.map_err(SyncerError::Mappings)?,
        None => Mappings::in_memory(),
    });
    let (sender, mut work) = mpsc::unbounded_channel::<Work>();
    let metrics = config.metrics.clone();
    let queue = Queue { sender, metrics: metrics.clone(), waiting: Arc::default() };
    let context = config.context.clone();
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY}={}", context.name));
    let all = watcher::Config::default;
    let refs: Arc<Mutex<RefIndex>> = Arc::default();
    let nodes: Arc<Mutex<NodeIndex>> = Arc::default();
    let seen: Arc<Mutex<HashSet<(&'static str, String)>>> = Arc::default();
    let volume_users: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let mut tasks = Vec::new();

    // Virtual pods are cached slim (the full pod is read when its host pod is created); what
    // they reference is indexed from the full object before it is slimmed.
    // Until it is bound (its host pod exists and was scheduled), the whole pod is kept aside
    // too, so creating its host pod needs no read.
    let unbound: Arc<Mutex<HashMap<(String, String), Pod>>> = Arc::default();
    let (q, index, ctx, waiting) = (queue.clone(), refs.clone(), context.clone(), unbound.clone());
    let pod_patches = config.patches.clone();
    let index_then_slim = move |pod: &mut Pod| {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let mut uses = data::uses_of_pod(&ctx, pod);
        if pod_patches.contains_key("Pod") {
            uses.extend(referenced_uses(&ctx, &pod_patches, "Pod", &to_value(pod)));
        }
        for (kind, host) in lock(&index).set(&format!("pod/{ns}/{name}"), uses) {
            q.send(Work::Data(kind, host));
        }
        let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
        if bound || pod.metadata.deletion_timestamp.is_some() {
            lock(&waiting).remove(&(ns, name));
        } else {
            lock(&waiting).insert((ns, name), pod.clone());
        }
        slim_virtual_pod(pod);
    };
    let (q, index, waiting) = (queue.clone(), refs.clone(), unbound.clone());
    let (virtual_pods, task) =
        reflect_modified(Api::<Pod>::all(virtual_client.clone()), all(), index_then_slim, move |pod, deleted| {
            let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
            if deleted {
                for (kind, host) in lock(&index).set(&format!("pod/{ns}/{name}"), BTreeSet::new()) {
                    q.send(Work::Data(kind, host));
                }
                lock(&waiting).remove(&(ns.clone(), name.clone()));
            }
            q.send(Work::Pod(ns, name));
        });
    tasks.push(task);
    let gone_host_pods: Arc<Mutex<HashMap<(String, String), Pod>>> = Arc::default();
    let (q, node_index, m, gone) = (queue.clone(), nodes.clone(), mappings.clone(), gone_host_pods.clone());
    let (host_pods, task) = reflect_modified(
        Api::<Pod>::namespaced(host_client.clone(), &namespace),
        managed.clone(),
        slim_host_pod,
        move |pod, deleted| {
            // DaemonSet pods alone do not keep a node in the virtual cluster (§4.9).
            let daemon =
                pod.annotations().get(vkube_translate::pods::OWNER_SET_KIND).map(String::as_str) == Some("DaemonSet");
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|_| !deleted && !daemon);
            for node in lock(&node_index).set(&pod.name_any(), node) {
                q.send(Work::Node(node));
            }
            if let Some((ns, name)) = virtual_key_of(&m, "Pod", pod) {
                if deleted {
                    lock(&gone).insert((ns.clone(), name.clone()), pod.clone());
                }
                q.send(Work::Pod(ns, name));
            }
        },
    );
    tasks.push(task);
    let q = queue.clone();
    let (namespaces, task) =
        reflect(Api::<Namespace>::all(virtual_client.clone()), all(), move |namespace, deleted| {
            if !deleted {
                q.send(Work::Namespace(namespace.name_any()));
            }
        });
    tasks.push(task);
    let (q, index, ctx, everything) = (queue.clone(), refs.clone(), context.clone(), config.all_config_maps);
    let (config_maps, task) = reflect(Api::<ConfigMap>::all(virtual_client.clone()), all(), move |map, deleted| {
        let (ns, name) = (map.namespace().unwrap_or_default(), map.name_any());
        let host = vkube_translate::pods::config_map_host_name(&ctx, &name, &ns);
        // Synced although unused with `all`, or when annotated force-sync (§2.9); the entry is
        // reset whenever the object changes, so removing the annotation ends it.
        if everything || data::forced(map) || lock(&index).has(&format!("all/configmap/{ns}/{name}")) {
            let keep = everything || data::forced(map);
            let uses = data::own_use(DataKind::ConfigMap, &host, &ns, &name, deleted || !keep);
            lock(&index).set(&format!("all/configmap/{ns}/{name}"), uses);
        }
        q.send(Work::Data(DataKind::ConfigMap, host));
    });
    tasks.push(task);
    let (q, index, ctx, everything) = (queue.clone(), refs.clone(), context.clone(), config.all_secrets);
    let (secrets, task) = reflect(Api::<Secret>::all(virtual_client.clone()), all(), move |secret, deleted| {
        let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        let host = vkube_translate::names::host_name(&ctx, &name, &ns);
        if everything || data::forced(secret) || lock(&index).has(&format!("all/secret/{ns}/{name}")) {
            let keep = everything || data::forced(secret);
            let uses = data::own_use(DataKind::Secret, &host, &ns, &name, deleted || !keep);
            lock(&index).set(&format!("all/secret/{ns}/{name}"), uses);
        }
        q.send(Work::Data(DataKind::Secret, host));
    });
    tasks.push(task);
    let q = queue.clone();
    let (host_config_maps, task) =
        reflect(Api::<ConfigMap>::namespaced(host_client.clone(), &namespace), managed.clone(), move |map, _| {
            q.send(Work::Data(DataKind::ConfigMap, map.name_any()));
        });
    tasks.push(task);
    let q = queue.clone();
    let (host_secrets, task) =
        reflect(Api::<Secret>::namespaced(host_client.clone(), &namespace), managed.clone(), move |secret, _| {
            q.send(Work::Data(DataKind::Secret, secret.name_any()));
        });
    tasks.push(task);
    let q = queue.clone();
    let service_links = links::LinkIndex::default();
    let link_index = service_links.clone();
    let (services, task) = reflect(Api::<Service>::all(virtual_client.clone()), all(), move |service, deleted| {
        let (ns, name) = (service.namespace().unwrap_or_default(), service.name_any());
        link_index.update(service, deleted);
        q.send(Work::Service(ns.clone(), name.clone()));
        q.send(Work::Endpoints(ns, name));
    });
    tasks.push(task);
    let (q, seen_by, m) = (queue.clone(), seen.clone(), mappings.clone());
    let (host_services, task) = reflect(
        Api::<Service>::namespaced(host_client.clone(), &namespace),
        managed.clone(),
        move |service, deleted| {
            if !deleted {
                lock(&seen_by).insert(("Service", service.name_any()));
            }
            if let Some((ns, name)) = virtual_key_of(&m, "Service", service) {
                q.send(Work::Service(ns, name));
            }
        },
    );
    tasks.push(task);
    let q = queue.clone();
    let (endpoints, task) = reflect(Api::<Endpoints>::all(virtual_client.clone()), all(), move |endpoints, _| {
        q.send(Work::Endpoints(endpoints.namespace().unwrap_or_default(), endpoints.name_any()));
    });
    tasks.push(task);
    let (q, m) = (queue.clone(), mappings.clone());
    let (host_endpoints, task) =
        reflect(Api::<Endpoints>::namespaced(host_client.clone(), &namespace), managed.clone(), move |endpoints, _| {
            if let Some((ns, name)) = virtual_key_of(&m, "Endpoints", endpoints) {
                q.send(Work::Endpoints(ns, name));
            }
        });
    tasks.push(task);
    let (q, users) = (queue.clone(), volume_users.clone());
    let (claims, task) =
        reflect(Api::<PersistentVolumeClaim>::all(virtual_client.clone()), all(), move |claim, deleted| {
            let (ns, name) = (claim.namespace().unwrap_or_default(), claim.name_any());
            if let Some(volume) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                if deleted {
                    lock(&users).remove(&volume);
                } else {
                    lock(&users).insert(volume.clone(), (ns.clone(), name.clone()));
                }
                q.send(Work::Volume(volume));
            }
            q.send(Work::Claim(ns, name));
        });
    tasks.push(task);
    let (q, seen_by, m) = (queue.clone(), seen.clone(), mappings.clone());
    let (host_claims, task) = reflect(
        Api::<PersistentVolumeClaim>::namespaced(host_client.clone(), &namespace),
        managed.clone(),
        move |claim, deleted| {
            if !deleted {
                lock(&seen_by).insert(("PersistentVolumeClaim", claim.name_any()));
            }
            if let Some((ns, name)) = virtual_key_of(&m, "PersistentVolumeClaim", claim) {
                q.send(Work::Claim(ns, name));
            }
        },
    );
    tasks.push(task);
    let q = queue.clone();
    let fake_volumes = watcher::Config::default().labels(&format!("{}=true", vkube_translate::claims::FAKE_PV));
    let (volumes, task) =
        reflect(Api::<PersistentVolume>::all(virtual_client.clone()), fake_volumes, move |volume, _| {
            q.send(Work::Volume(volume.name_any()));
        });
    tasks.push(task);
    // Virtual nodes, and the host's when they are shown as they are (§4.9).
    let node_watch = |q: Queue| {
        move |node: &Node, _deleted: bool| {
            q.send(Work::Node(node.name_any()));
        }
    };
    let (virtual_nodes, task) = reflect(Api::<Node>::all(virtual_client.clone()), all(), node_watch(queue.clone()));
    tasks.push(task);
    let host_nodes = if config.nodes.real {
        let (store, task) = reflect(Api::<Node>::all(host_client.clone()), all(), node_watch(queue.clone()));
        tasks.push(task);
        Some(store)
    } else {
        None
    };
    let optional = config.optional;
    let mut extras = extra::Extras::default();
    let mut customs = Vec::new();
    let mut mapped = Vec::new();
    let replication;
    let mut extras_ready = Vec::new();
    {
        let mut wiring = extra::Wiring {
            virtual_client: &virtual_client,
            host_client: &host_client,
            host_namespace: &namespace,
            managed: &managed,
            queue: &queue,
            seen: &seen,
            mappings: &mappings,
            refs: &refs,
            context: &context,
            tasks: &mut tasks,
            ready: &mut extras_ready,
        };
        if optional.ingresses {
            // An ingress makes its TLS and annotation secrets "used", like a pod.
            let (q, index, ctx, ingress_patches) =
                (queue.clone(), refs.clone(), context.clone(), config.patches.clone());
            extras.ingresses =
                Some(wiring.copied_to_host(extra::ToHostKind::Ingress, move |ingress: &Ingress, deleted| {
                    let (ns, name) = (ingress.namespace().unwrap_or_default(), ingress.name_any());
                    let uses: BTreeSet<refs::Use> = if deleted {
                        BTreeSet::new()
                    } else {
                        let value = to_value(ingress);
                        let mut uses: BTreeSet<refs::Use> = vkube_translate::extra::ingress_secrets(&value)
                            .into_iter()
                            .map(|(namespace, name)| refs::Use {
                                kind: DataKind::Secret,
                                host: vkube_translate::names::host_name(&ctx, &name, &namespace),
                                namespace,
                                name,
                            })
                            .collect();
                        uses.extend(referenced_uses(&ctx, &ingress_patches, "Ingress", &value));
                        uses
                    };
                    for (kind, host) in lock(&index).set(&format!("ingress/{ns}/{name}"), uses) {
                        q.send(Work::Data(kind, host));
                    }
                }));
        }
        if optional.network_policies {
            extras.network_policies =
                Some(wiring.copied_to_host(extra::ToHostKind::NetworkPolicy, |_: &NetworkPolicy, _| {}));
        }
        if optional.pod_disruption_budgets {
            extras.budgets =
                Some(wiring.copied_to_host(extra::ToHostKind::PodDisruptionBudget, |_: &PodDisruptionBudget, _| {}));
        }
        if optional.service_accounts {
            extras.accounts =
                Some(wiring.copied_to_host(extra::ToHostKind::ServiceAccount, |_: &ServiceAccount, _| {}));
        }
        if optional.endpoint_slices {
            let index = extras.slice_index.clone();
            extras.endpoint_slices = Some(wiring.copied_to_host(
                extra::ToHostKind::EndpointSlice,
                move |slice: &k8s_openapi::api::discovery::v1::EndpointSlice, deleted| {
                    let service = slice.labels().get("kubernetes.io/service-name").filter(|_| !deleted);
                    lock(&index).set(
                        &slice.namespace().unwrap_or_default(),
                        &slice.name_any(),
                        service.map(String::as_str),
                    );
                },
            ));
        }
        if optional.ingress_classes {
            extras.ingress_classes = Some(wiring.mirror(extra::MirrorKind::IngressClass));
        }
        if optional.runtime_classes {
            extras.runtime_classes = Some(wiring.mirror(extra::MirrorKind::RuntimeClass));
        }
        if optional.priority_classes {
            extras.priority_classes = Some(wiring.mirror(extra::MirrorKind::PriorityClass));
        }
        if optional.storage_classes {
            extras.storage_classes = Some(wiring.mirror(extra::MirrorKind::StorageClass));
        }
        if optional.csi_drivers {
            extras.csi_drivers = Some(wiring.mirror(extra::MirrorKind::CsiDriver));
        }
        if optional.csi_nodes {
            extras.csi_nodes = Some(wiring.mirror(extra::MirrorKind::CsiNode));
        }
        if optional.csi_storage_capacities {
            extras.capacities = Some(wiring.capacities());
        }
        for (index, sync) in config.custom_resources.iter().enumerate() {
            let direction = if sync.to_host { "toHost" } else { "fromHost" };
            let (resource, has_status) =
                custom::ensure_definition(wiring.virtual_client, wiring.host_client, &sync.key, sync.to_host)
                    .await
                    .map_err(|source| SyncerError::CustomResource { direction, key: sync.key.clone(), source })?;
            customs.push(custom::start(index, sync.clone(), resource, has_status, &mut wiring));
        }
        for (index, sync) in config.mapped.iter().enumerate() {
            let (resource, has_status) = match (&sync.kind, mapped::core_resource(&sync.kind)) {
                (_, Some(resource)) => (resource, false),
                (MappedKind::Custom(key), None) => {
                    custom::ensure_definition(wiring.virtual_client, wiring.host_client, key, true).await.map_err(
                        |source| SyncerError::CustomResource { direction: "fromHost", key: key.clone(), source },
                    )?
                }
                (_, None) => continue,
            };
            mapped.push(mapped::start(index, sync.clone(), resource, has_status, &mut wiring));
        }
        replication = replicate::start(&config.replicate, &mut wiring);
        let marker = vkube_translate::names::marker(&context, false);
        if optional.priority_classes_to_host {
            extras.priority_classes_to_host =
                Some(wiring.cluster_to_host(extra::ClusterKind::PriorityClass, &marker, all()));
        }
        if optional.storage_classes_to_host {
            extras.storage_classes_to_host =
                Some(wiring.cluster_to_host(extra::ClusterKind::StorageClass, &marker, all()));
        }
        if optional.persistent_volumes_to_host {
            // The tenant's own volumes, not the fake ones the syncer shows for bound claims.
            let tenant = watcher::Config::default().labels(&format!("{}!=true", vkube_translate::claims::FAKE_PV));
            extras.volumes_to_host =
                Some(wiring.cluster_to_host(extra::ClusterKind::PersistentVolume, &marker, tenant));
        }
    }
    // Host events are not cached (there are many and each is needed once): the watch hands them
    // to the mirroring task below.
    let (event_sender, event_receiver) = mpsc::unbounded_channel::<events::Observed>();
    let host_events_api = Api::<CoreEvent>::namespaced(host_client.clone(), &namespace);
    tasks.push(tokio::spawn(async move {
        let stream = watcher::watcher(host_events_api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let observed = match event {
                Ok(Event::InitApply(event)) => events::Observed::Initial(event),
                Ok(Event::InitDone) => events::Observed::InitialDone,
                Ok(Event::Apply(event)) => events::Observed::Live(event),
                _ => continue,
            };
            if event_sender.send(observed).is_err() {
                return;
            }
        }
    }));
    tasks.push(tokio::spawn(mappings.clone().persist()));
    let mut _tasks = Tasks(tasks);

    let _ = virtual_pods.wait_until_ready().await;
    let _ = host_pods.wait_until_ready().await;
    let _ = namespaces.wait_until_ready().await;
    let _ = config_maps.wait_until_ready().await;
    let _ = host_config_maps.wait_until_ready().await;
    let _ = secrets.wait_until_ready().await;
    let _ = host_secrets.wait_until_ready().await;
    let _ = services.wait_until_ready().await;
    let _ = host_services.wait_until_ready().await;
    let _ = endpoints.wait_until_ready().await;
    let _ = host_endpoints.wait_until_ready().await;
    let _ = claims.wait_until_ready().await;
    let _ = host_claims.wait_until_ready().await;
    let _ = volumes.wait_until_ready().await;
    futures::future::join_all(extras_ready).await;
    let _ = virtual_nodes.wait_until_ready().await;
    if let Some(store) = &host_nodes {
        let _ = store.wait_until_ready().await;
    }
    let mut node_settings = config.nodes.clone();
    node_settings.vcluster = context.name.clone();
    node_settings.enforced_tolerations = config.pods.enforce_tolerations.clone();
    if node_settings.version.is_empty() {
        node_settings.version = match virtual_client.apiserver_version().await {
            Ok(info) => info.git_version,
            Err(_) => "v1.33.0".into(),
        };
    }
    let node_sync = nodes::NodeSync::new(node_settings, host_nodes, virtual_nodes);
    let recorder = events::Recorder::new(virtual_client.clone());
    let syncer = Arc::new(Syncer {
        config,
        virtual_client,
        host_client,
        virtual_pods,
        host_pods,
        namespaces,
        config_maps,
        secrets,
        host_config_maps,
        host_secrets,
        services,
        host_services,
        endpoints,
        host_endpoints,
        claims,
        host_claims,
        volumes,
        seen,
        refs,
        nodes,
        volume_users,
        mappings: mappings.clone(),
        extras,
        customs,
        mapped,
        replication,
        service_links,
        unbound,
        gone_host_pods,
        node_sync,
        last_synced: Mutex::new(HashMap::new()),
        data_versions: Mutex::new(HashMap::new()),
        data_gates: Mutex::new(HashMap::new()),
        last_metadata: Mutex::new(HashMap::new()),
        last_service_spec: Mutex::new(HashMap::new()),
        recreating: Mutex::new(HashSet::new()),
        owner,
        api_service_ip,
        recorder,
        queue: queue.clone(),
    });
    if syncer.config.events {
        _tasks.0.push(tokio::spawn(events::mirror(syncer.clone(), event_receiver)));
    }
    // Everything that existed before this start was queued by the watch callbacks (their initial
    // lists), virtual nodes left from a previous run included.
    queue.send(Work::Service("default".into(), "kubernetes".into()));
    // Mappings of objects deleted on both sides while the syncer was away, and every 3 minutes
    // those a missed event left behind (sync-behavior.md §6.4).
    queue.send(Work::Mappings);
    let q = queue.clone();
    _tasks.0.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(180)).await;
            q.send(Work::Mappings);
        }
    }));
    metrics.set_ready(true);
    let _ = ready.send(true);
    // A keyed work queue without batch barriers: an item starts as soon as one of CONCURRENCY
    // slots is free; an item whose key is already being reconciled is marked dirty and runs once
    // more when that reconcile ends, so one key never reconciles twice at the same time.
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let active: Arc<Mutex<(HashSet<Work>, HashSet<Work>)>> = Arc::default();
    while let Some(item) = work.recv().await {
        metrics.dequeued(1);
        queue.taken(&item);
        {
            let mut guard = lock(&active);
            let (running, dirty) = &mut *guard;
            if running.contains(&item) {
                dirty.insert(item);
                continue;
            }
            running.insert(item.clone());
        }
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let (syncer, active) = (syncer.clone(), active.clone());
        metrics.started();
        tokio::spawn(async move {
            loop {
                let started = Instant::now();
                let result = syncer.reconcile(&item).await;
                syncer.config.metrics.observe(item.kind(), started.elapsed(), result.is_ok());
                match &result {
                    // The object changed under a write made on a precondition: read it again.
                    Err(kube::Error::Api(status)) if status.code == 409 && status.reason == "Conflict" => {
                        tracing::debug!(?item, "changed while being synced; again");
                        syncer.queue.send_after(Duration::from_millis(50), item.clone());
                    }
                    Err(error) => {
                        tracing::warn!(?item, %error, "sync failed; retrying");
                        syncer.report_failure(&item, error).await;
                        syncer.queue.send_after(Duration::from_millis(500), item.clone());
                    }
                    Ok(()) => {}
                }
                let mut guard = lock(&active);
                let (running, dirty) = &mut *guard;
                if result.is_ok() && dirty.remove(&item) {
                    continue;
                }
                dirty.remove(&item);
                running.remove(&item);
                break;
            }
            syncer.config.metrics.finished();
            drop(slot);
        });
    }
    Ok(())
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[tokio::test]
    async fn an_item_waiting_in_the_queue_is_not_queued_twice() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let queue = Queue { sender, metrics: metrics.clone(), waiting: Arc::default() };
        let pod = Work::Pod("default".into(), "web".into());
        queue.send(pod.clone());
        queue.send(pod.clone());
        queue.send(Work::Node("n1".into()));
        assert_eq!(metrics.queue_depth(), 2);
        let first = receiver.recv().await.unwrap();
        queue.taken(&first);
        assert_eq!(first, pod);
        assert_eq!(receiver.recv().await.unwrap(), Work::Node("n1".into()));
        assert!(receiver.try_recv().is_err(), "the second send of a waiting item was dropped");
        queue.send(pod.clone());
        assert_eq!(receiver.recv().await.unwrap(), pod, "once taken, it queues again");
    }
}

#[cfg(test)]
mod forcing_patch_tests {
    use super::*;

    #[test]
    fn forcing_patches_remove_what_the_desired_value_lacks() {
        let current = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}, "conditions": [{"type": "x"}]});
        let desired = json!({"loadBalancer": {}});
        let patch = forcing_patch(&current, &desired);
        assert_eq!(patch, json!({"loadBalancer": {"ingress": null}, "conditions": null}));
        // Applied as a merge patch (RFC 7386), it gives exactly the desired value.
        fn merge(target: &mut Value, patch: &Value) {
            match (target.as_object_mut(), patch.as_object()) {
                (Some(target), Some(patch)) => {
                    for (key, value) in patch {
                        if value.is_null() {
                            target.remove(key);
                        } else {
                            merge(target.entry(key.clone()).or_insert(Value::Null), value);
                        }
                    }
                }
                _ => *target = patch.clone(),
            }
        }
        let mut patched = current.clone();
        merge(&mut patched, &patch);
        assert_eq!(patched, desired);
    }

    #[test]
    fn the_cached_virtual_pod_keeps_its_whole_status() {
        // The status brought back from the host is compared with the cached virtual pod's: with
        // container statuses slimmed away they would differ on every reconcile of a running pod
        // and be written again (2,500 needless writes after a restart in `vkube-bench sync`).
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "value": "1"}]}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "c", "image": "nginx", "imageID": "sim://nginx", "ready": true,
                    "restartCount": 0, "started": true, "state": {"running": {"startedAt": "2026-12-03T16:15:47Z"}}}],
                "initContainerStatuses": [{"name": "i", "image": "busybox", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}]
            }
        }))
        .unwrap();
        let mut slim = pod.clone();
        slim_virtual_pod(&mut slim);
        assert_eq!(slim.status, pod.status);
        assert_eq!(slim.spec.unwrap().containers[0].env, None);
    }
}
