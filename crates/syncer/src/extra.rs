//! The optional kinds: ingresses, network policies, pod disruption budgets and service accounts
//! to the host (one engine, the translation per kind from `vkube_translate::extra`), and ingress
//! classes, runtime classes and priority classes mirrored from the host.

use std::sync::Arc;

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, CSIStorageCapacity, StorageClass};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vkube_translate::Context;
use vkube_translate::names::{host_name, host_name_cluster};

use crate::cached_host;
use crate::{MANAGER, Namespaced, Syncer, Work, cached, has_controller, ignore_not_found, to_value};

/// The namespaced optional kinds copied to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ToHostKind {
    Ingress,
    NetworkPolicy,
    PodDisruptionBudget,
    ServiceAccount,
    EndpointSlice,
}

/// The cluster-scoped kinds copied to the host (as `vcluster-NAME-x-HNS-x-VC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ClusterKind {
    PriorityClass,
    StorageClass,
    PersistentVolume,
}

impl ClusterKind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            ClusterKind::PriorityClass => "PriorityClass",
            ClusterKind::StorageClass => "StorageClass",
            ClusterKind::PersistentVolume => "PersistentVolume",
        }
    }
}

/// A cluster-scoped kind the syncer reads and writes as typed objects.
pub(crate) trait ClusterScoped:
    Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> ClusterScoped for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// One cluster-scoped kind copied to the host.
pub(crate) struct ClusterToHost<K: ClusterScoped> {
    pub(crate) id: ClusterKind,
    pub(crate) virtual_objects: Store<K>,
    pub(crate) host_objects: Store<K>,
}

/// The cluster-scoped kinds mirrored from the host.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum MirrorKind {
    IngressClass,
    RuntimeClass,
    PriorityClass,
    StorageClass,
    CsiDriver,
    CsiNode,
}

impl ToHostKind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            ToHostKind::Ingress => "Ingress",
            ToHostKind::NetworkPolicy => "NetworkPolicy",
            ToHostKind::PodDisruptionBudget => "PodDisruptionBudget",
            ToHostKind::ServiceAccount => "ServiceAccount",
            ToHostKind::EndpointSlice => "EndpointSlice",
        }
    }
}

impl MirrorKind {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            MirrorKind::IngressClass => "IngressClass",
            MirrorKind::RuntimeClass => "RuntimeClass",
            MirrorKind::PriorityClass => "PriorityClass",
            MirrorKind::StorageClass => "StorageClass",
            MirrorKind::CsiDriver => "CSIDriver",
            MirrorKind::CsiNode => "CSINode",
        }
    }
}

/// How a virtual object of an optional kind looks on the host.
type Translate = fn(&Context, &Value) -> Value;

/// One namespaced kind copied to the host: both caches and how it translates.
pub(crate) struct ToHost<K: Resource<DynamicType = ()> + 'static> {
    pub(crate) id: ToHostKind,
    pub(crate) virtual_objects: Store<K>,
    pub(crate) host_objects: Store<K>,
    translate: Translate,
    /// Top-level fields the host copy takes from the virtual object on every sync.
    forced: &'static [&'static str],
    /// Whether the host's status is copied back.
    status_back: bool,
}

impl<K: Resource<DynamicType = ()> + 'static> ToHost<K> {
    pub(crate) fn new(id: ToHostKind, virtual_objects: Store<K>, host_objects: Store<K>) -> Self {
        use vkube_translate::extra::*;
        let (translate, forced, status_back): (Translate, &'static [&'static str], bool) = match id {
            ToHostKind::Ingress => (host_ingress, &["spec"], true),
            ToHostKind::NetworkPolicy => (host_network_policy, &["spec"], false),
            ToHostKind::PodDisruptionBudget => (host_pod_disruption_budget, &["spec"], true),
            ToHostKind::ServiceAccount => (host_service_account, &["automountServiceAccountToken"], false),
            ToHostKind::EndpointSlice => (host_endpoint_slice, &["addressType", "endpoints", "ports"], false),
        };
        ToHost { id, virtual_objects, host_objects, translate, forced, status_back }
    }
}

/// One cluster-scoped kind mirrored from the host.
pub(crate) struct Mirror<K: Resource<DynamicType = ()> + 'static> {
    pub(crate) id: MirrorKind,
    pub(crate) host_objects: Store<K>,
    pub(crate) virtual_objects: Store<K>,
    /// Top-level fields copied from the host object.
    fields: &'static [&'static str],
}

impl<K: Resource<DynamicType = ()> + 'static> Mirror<K> {
    pub(crate) fn new(id: MirrorKind, host_objects: Store<K>, virtual_objects: Store<K>) -> Self {
        let fields: &'static [&'static str] = match id {
            MirrorKind::IngressClass => &["spec"],
            MirrorKind::RuntimeClass => &["handler", "overhead", "scheduling"],
            MirrorKind::PriorityClass => &["value", "globalDefault", "description", "preemptionPolicy"],
            MirrorKind::StorageClass => vkube_translate::extra::STORAGE_CLASS_FIELDS,
            MirrorKind::CsiDriver | MirrorKind::CsiNode => &["spec"],
        };
        Mirror { id, host_objects, virtual_objects, fields }
    }
}

/// The optional kinds that are switched on.
/// Which virtual EndpointSlices name which service (`kubernetes.io/service-name`), kept by the
/// slices' watch, so a service change finds its slices without a scan.
#[derive(Default)]
pub(crate) struct SliceIndex {
    by_slice: HashMap<(String, String), String>,
    by_service: HashMap<(String, String), std::collections::BTreeSet<String>>,
}

impl SliceIndex {
    /// Slice `namespace/slice` now names `service` (None: it went, or names none).
    pub(crate) fn set(&mut self, namespace: &str, slice: &str, service: Option<&str>) {
        let key = (namespace.to_string(), slice.to_string());
        if let Some(old) = self.by_slice.remove(&key)
            && let Some(slices) = self.by_service.get_mut(&(namespace.to_string(), old.clone()))
        {
            slices.remove(slice);
            if slices.is_empty() {
                self.by_service.remove(&(namespace.to_string(), old));
            }
        }
        if let Some(service) = service {
            self.by_slice.insert(key, service.to_string());
            self.by_service.entry((namespace.to_string(), service.to_string())).or_default().insert(slice.to_string());
        }
    }

    /// The slices of service `namespace/service`.
    pub(crate) fn of(&self, namespace: &str, service: &str) -> Vec<String> {
        self.by_service
            .get(&(namespace.to_string(), service.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) slice_index: std::sync::Arc<std::sync::Mutex<SliceIndex>>,
    pub(crate) ingresses: Option<ToHost<Ingress>>,
    pub(crate) network_policies: Option<ToHost<NetworkPolicy>>,
    pub(crate) budgets: Option<ToHost<PodDisruptionBudget>>,
    pub(crate) accounts: Option<ToHost<ServiceAccount>>,
    pub(crate) endpoint_slices: Option<ToHost<EndpointSlice>>,
    pub(crate) ingress_classes: Option<Mirror<IngressClass>>,
    pub(crate) runtime_classes: Option<Mirror<RuntimeClass>>,
    pub(crate) priority_classes: Option<Mirror<PriorityClass>>,
    pub(crate) storage_classes: Option<Mirror<StorageClass>>,
    pub(crate) csi_drivers: Option<Mirror<CSIDriver>>,
    pub(crate) csi_nodes: Option<Mirror<CSINode>>,
    pub(crate) capacities: Option<Capacities>,
    pub(crate) priority_classes_to_host: Option<ClusterToHost<PriorityClass>>,
    pub(crate) storage_classes_to_host: Option<ClusterToHost<StorageClass>>,
    pub(crate) volumes_to_host: Option<ClusterToHost<k8s_openapi::api::core::v1::PersistentVolume>>,
}

/// Makes `current` take `fields` and the labels and annotations of `desired`; returns whether
/// anything changed.
pub(crate) fn force(current: &mut Value, desired: &Value, fields: &[&str]) -> bool {
    let mut changed = false;
    for field in fields {
        let want = desired.get(*field).cloned().unwrap_or(Value::Null);
        if current.get(*field).cloned().unwrap_or(Value::Null) != want {
            current[*field] = want;
            changed = true;
        }
    }
    let (labels, annotations) = metadata_maps(desired);
    if metadata_maps(current) != (labels.clone(), annotations.clone()) {
        current["metadata"]["labels"] = labels;
        current["metadata"]["annotations"] = annotations;
        changed = true;
    }
    changed
}

/// The labels and annotations of `value`'s metadata (null when absent).
pub(crate) fn metadata_maps(value: &Value) -> (Value, Value) {
    let get = |key: &str| value.pointer(&format!("/metadata/{key}")).cloned().unwrap_or(Value::Null);
    let empty_is_null = |v: Value| if v.as_object().is_some_and(|m| m.is_empty()) { Value::Null } else { v };
    (empty_is_null(get("labels")), empty_is_null(get("annotations")))
}

impl Syncer {
    pub(crate) async fn reconcile_to_host(
        &self,
        id: ToHostKind,
        namespace: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        let extras = &self.extras;
        match id {
            ToHostKind::Ingress => self.sync_to_host(extras.ingresses.as_ref(), namespace, name).await,
            ToHostKind::NetworkPolicy => self.sync_to_host(extras.network_policies.as_ref(), namespace, name).await,
            ToHostKind::PodDisruptionBudget => self.sync_to_host(extras.budgets.as_ref(), namespace, name).await,
            ToHostKind::ServiceAccount => self.sync_to_host(extras.accounts.as_ref(), namespace, name).await,
            ToHostKind::EndpointSlice => self.sync_to_host(extras.endpoint_slices.as_ref(), namespace, name).await,
        }
    }

    pub(crate) async fn reconcile_mirror(&self, id: MirrorKind, name: &str) -> Result<(), kube::Error> {
        let extras = &self.extras;
        self.requeue_users_of_class(id, name);
        match id {
            MirrorKind::IngressClass => self.sync_mirror(extras.ingress_classes.as_ref(), name).await,
            MirrorKind::RuntimeClass => self.sync_mirror(extras.runtime_classes.as_ref(), name).await,
            MirrorKind::PriorityClass => self.sync_mirror(extras.priority_classes.as_ref(), name).await,
            MirrorKind::StorageClass => self.sync_mirror(extras.storage_classes.as_ref(), name).await,
            MirrorKind::CsiDriver => self.sync_mirror(extras.csi_drivers.as_ref(), name).await,
            MirrorKind::CsiNode => self.sync_mirror(extras.csi_nodes.as_ref(), name).await,
        }
    }

    pub(crate) async fn reconcile_cluster_to_host(&self, id: ClusterKind, name: &str) -> Result<(), kube::Error> {
        match id {
            ClusterKind::PriorityClass => {
                self.sync_cluster_to_host(self.extras.priority_classes_to_host.as_ref(), name).await
            }
            ClusterKind::StorageClass => {
                self.sync_cluster_to_host(self.extras.storage_classes_to_host.as_ref(), name).await
            }
            ClusterKind::PersistentVolume => {
                self.sync_cluster_to_host(self.extras.volumes_to_host.as_ref(), name).await
            }
        }
    }

    /// A cluster-scoped kind copied to the host: created, forced from the virtual object,
    /// deleted with it. A host copy deleted by someone else deletes the virtual storage class but
    /// is re-created for a priority class (pods may need it), as the reference does.
    async fn sync_cluster_to_host<K: ClusterScoped>(
        &self,
        kind: Option<&ClusterToHost<K>>,
        name: &str,
    ) -> Result<(), kube::Error> {
        let Some(kind) = kind else { return Ok(()) };
        if kind.id == ClusterKind::PriorityClass && name.starts_with("system-") {
            // Every cluster has its own system classes; pods keep their names (§4.3).
            return Ok(());
        }
        let label = kind.id.kind();
        let context = &self.config.context;
        let host = host_name_cluster(context, name);
        let pair = crate::NameMapping::core(label, crate::ObjectName::new("", name), crate::ObjectName::new("", &host));
        let pair = crate::NameMapping {
            group: match kind.id {
                ClusterKind::PriorityClass => "scheduling.k8s.io".into(),
                ClusterKind::StorageClass => "storage.k8s.io".into(),
                ClusterKind::PersistentVolume => String::new(),
            },
            ..pair
        };
        let virtual_object = cached(&kind.virtual_objects, None, name);
        if virtual_object.as_ref().is_some_and(|v| {
            v.meta().annotations.as_ref().is_some_and(|a| a.contains_key(vkube_translate::claims::HOST_PV))
        }) {
            // A volume imported from the host (§3.9), not the tenant's.
            self.queue.send(crate::Work::Volume(name.to_string()));
            return Ok(());
        }
        let host_object = cached_host(&kind.host_objects, None, &host).filter(|h| {
            crate::virtual_key_of(&self.mappings, label, h.as_ref()).is_some_and(|(ns, n)| ns.is_empty() && n == name)
                || h.annotations().get(vkube_translate::metadata::OBJECT_NAME).is_some_and(|n| n == name)
        });
        let host_api: Api<K> = Api::all(self.host_client.clone());
        let virtual_api: Api<K> = Api::all(self.virtual_client.clone());
        let translate = |object: &Value| match kind.id {
            ClusterKind::PriorityClass => vkube_translate::extra::host_priority_class(context, object),
            ClusterKind::StorageClass => vkube_translate::extra::host_storage_class(context, object),
            ClusterKind::PersistentVolume => vkube_translate::extra::host_persistent_volume(context, object),
        };
        match (virtual_object, host_object) {
            (None, None) => {
                self.mappings.remove(label, &pair.virtual_name);
                Ok(())
            }
            (None, Some(_)) => ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await),
            (Some(_), None) if kind.id != ClusterKind::PriorityClass && self.seen(label, &host) => {
                tracing::info!(kind = label, %name, "host copy deleted; deleting the virtual object");
                ignore_not_found(virtual_api.delete(name, &DeleteParams::default()).await)
            }
            (Some(object), None) => {
                if object.meta().deletion_timestamp.is_some() || !self.record(object.as_ref(), pair, vec![]).await {
                    return Ok(());
                }
                let mut desired = translate(&to_value(object.as_ref()));
                self.patch_to_host(label, "", &mut desired)?;
                crate::ensure(&host_api, desired).await
            }
            (Some(object), Some(host_object)) => {
                if !self.record(object.as_ref(), pair, vec![]).await {
                    return Ok(());
                }
                let value = to_value(object.as_ref());
                let mut desired = translate(&value);
                self.patch_to_host(label, "", &mut desired)?;
                let mut current = to_value(host_object.as_ref());
                if kind.id == ClusterKind::PersistentVolume {
                    // The host binds the volume: its claim reference stays; its phase comes back.
                    if let Some(claim) = current.pointer("/spec/claimRef").cloned() {
                        desired["spec"]["claimRef"] = claim;
                    }
                    let phase = current.pointer("/status/phase").cloned();
                    if phase.is_some() && phase.as_ref() != value.pointer("/status/phase") {
                        let patch = Patch::Merge(json!({"status": {"phase": phase}}));
                        ignore_not_found(virtual_api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await)?;
                    }
                }
                let forced: &[&str] = match kind.id {
                    // `globalDefault` is only set at creation.
                    ClusterKind::PriorityClass => &["value", "description", "preemptionPolicy"],
                    ClusterKind::StorageClass => vkube_translate::extra::STORAGE_CLASS_FIELDS,
                    ClusterKind::PersistentVolume => &["spec"],
                };
                if !force(&mut current, &desired, forced) {
                    return Ok(());
                }
                let replacement: K = serde_json::from_value(current).map_err(kube::Error::SerdeError)?;
                let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
                match host_api.replace(&host, &params, &replacement).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        self.queue
                            .send_after(std::time::Duration::from_secs(1), Work::ClusterToHost(kind.id, name.into()));
                        Ok(())
                    }
                    Err(error) => ignore_not_found(Err::<K, _>(error)),
                }
            }
        }
    }

    /// The pairs of the objects `object` of `id` uses (an ingress: its services and secrets).
    fn extra_references(&self, id: ToHostKind, object: &Value) -> Vec<crate::NameMapping> {
        if id != ToHostKind::Ingress {
            return Vec::new();
        }
        let context = &self.config.context;
        let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        let mut out: Vec<crate::NameMapping> = vkube_translate::extra::ingress_secrets(object)
            .into_iter()
            .map(|(ns, n)| self.pair("Secret", &ns, &n, &host_name(context, &n, &ns)))
            .collect();
        let mut services = Vec::new();
        if let Some(name) = object.pointer("/spec/defaultBackend/service/name").and_then(Value::as_str) {
            services.push(name.to_string());
        }
        for rule in object.pointer("/spec/rules").and_then(Value::as_array).into_iter().flatten() {
            for path in rule.pointer("/http/paths").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = path.pointer("/backend/service/name").and_then(Value::as_str) {
                    services.push(name.to_string());
                }
            }
        }
        out.extend(services.iter().map(|s| self.pair("Service", namespace, s, &host_name(context, s, namespace))));
        out
    }

    /// Whether a virtual object of `id` has a host copy at all. An EndpointSlice only when it
    /// belongs to a selector-less service of its namespace (other than `default/kubernetes`), and
    /// is not one a controller made (the mirroring controller's copies of Endpoints are synced
    /// as Endpoints and mirrored by the host itself; the slice controller's follow selectors) (§3.5).
    fn eligible<K: Resource>(&self, id: ToHostKind, object: &K) -> bool {
        if id != ToHostKind::EndpointSlice {
            return true;
        }
        let labels = object.meta().labels.clone().unwrap_or_default();
        if matches!(
            labels.get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
            Some("endpointslicemirroring-controller.k8s.io" | "endpointslice-controller.k8s.io")
        ) {
            return false;
        }
        let Some(service) = labels.get("kubernetes.io/service-name") else { return false };
        let namespace = object.meta().namespace.clone().unwrap_or_default();
        if namespace == "default" && service == "kubernetes" {
            return false;
        }
        cached(&self.services, Some(&namespace), service)
            .is_some_and(|s| s.spec.as_ref().and_then(|spec| spec.selector.as_ref()).is_none_or(|sel| sel.is_empty()))
    }

    /// Why an object naming class `class` (kind `IngressClass`, `RuntimeClass`, `PriorityClass`
    /// or `StorageClass`) is not synced, if it is not: a selector for that kind of class is set
    /// and the host has no such class, or the selector does not pick it (§3.7, §3.8, §4.1).
    pub(crate) fn class_refusal(&self, kind: &str, class: Option<&str>) -> Option<String> {
        let selector = self.config.class_selectors.get(kind)?;
        let class = class.filter(|c| !c.is_empty())?;
        if kind == "PriorityClass" && class.starts_with("system-") {
            return None;
        }
        fn labels_of<K: Resource<DynamicType = ()> + Clone + 'static>(
            mirror: Option<&Mirror<K>>,
            name: &str,
        ) -> Option<std::collections::BTreeMap<String, String>> {
            cached(&mirror?.host_objects, None, name).map(|o| o.labels().clone())
        }
        let extras = &self.extras;
        let (labels, setting) = match kind {
            "IngressClass" => (labels_of(extras.ingress_classes.as_ref(), class), "ingressClasses"),
            "RuntimeClass" => (labels_of(extras.runtime_classes.as_ref(), class), "runtimeClasses"),
            "PriorityClass" => (labels_of(extras.priority_classes.as_ref(), class), "priorityClasses"),
            _ => (labels_of(extras.storage_classes.as_ref(), class), "storageClasses"),
        };
        match labels {
            None => Some(format!("{kind} {class:?} does not exist on the host (sync.fromHost.{setting})")),
            Some(labels) if !vkube_translate::labels::selector_matches(selector, &labels) => {
                Some(format!("{kind} {class:?} is not picked by sync.fromHost.{setting}.selector"))
            }
            Some(_) => None,
        }
    }

    /// With a selector for classes of `id`, a change of class `name` (picked now, or no more)
    /// decides again for the objects naming it that a refusal may have kept virtual: pods
    /// (priority or runtime class), ingresses (ingress class), claims (storage class).
    fn requeue_users_of_class(&self, id: MirrorKind, name: &str) {
        if !self.config.class_selectors.contains_key(id.kind()) {
            return;
        }
        match id {
            MirrorKind::PriorityClass | MirrorKind::RuntimeClass => {
                for pod in self.virtual_pods.state() {
                    let spec = pod.spec.as_ref();
                    let class = match id {
                        MirrorKind::PriorityClass => spec.and_then(|s| s.priority_class_name.as_deref()),
                        _ => spec.and_then(|s| s.runtime_class_name.as_deref()),
                    };
                    if class == Some(name) {
                        self.queue.send(Work::Pod(pod.namespace().unwrap_or_default(), pod.name_any()));
                    }
                }
            }
            MirrorKind::IngressClass => {
                for ingress in self.extras.ingresses.iter().flat_map(|k| k.virtual_objects.state()) {
                    if ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) == Some(name) {
                        let key = (ingress.namespace().unwrap_or_default(), ingress.name_any());
                        self.queue.send(Work::ToHost(ToHostKind::Ingress, key.0, key.1));
                    }
                }
            }
            MirrorKind::StorageClass => {
                for claim in self.claims.state() {
                    if claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()) == Some(name) {
                        self.queue.send(Work::Claim(claim.namespace().unwrap_or_default(), claim.name_any()));
                    }
                }
            }
            MirrorKind::CsiDriver | MirrorKind::CsiNode => {}
        }
    }

    /// Requeues the virtual EndpointSlices of service `namespace/name` (it changed or went).
    pub(crate) fn endpoint_slices_of(&self, namespace: &str, name: &str) {
        if self.extras.endpoint_slices.is_none() {
            return;
        }
        for slice in crate::lock(&self.extras.slice_index).of(namespace, name) {
            self.queue.send(Work::ToHost(ToHostKind::EndpointSlice, namespace.into(), slice));
        }
    }

    async fn sync_to_host<K: Namespaced>(
        &self,
        kind: Option<&ToHost<K>>,
        namespace: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        let Some(kind) = kind else { return Ok(()) };
        let label = kind.id.kind();
        let host = host_name(&self.config.context, name, namespace);
        let virtual_object =
            cached(&kind.virtual_objects, Some(namespace), name).filter(|o| self.eligible(kind.id, o.as_ref()));
        let host_object = cached_host(&kind.host_objects, Some(self.host_namespace()), &host)
            .filter(|h| self.belongs(label, h.as_ref(), namespace, name));
        let host_api: Api<K> = self.host_api();
        let virtual_api: Api<K> = Api::namespaced(self.virtual_client.clone(), namespace);
        match (virtual_object, host_object) {
            (None, None) => {
                self.forget(label, namespace, name);
                Ok(())
            }
            (None, Some(host_object)) => {
                if host_object.meta().deletion_timestamp.is_none() {
                    tracing::info!(kind = label, %namespace, %name, "virtual object deleted; deleting the host copy");
                    ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)?;
                }
                Ok(())
            }
            (Some(_), None) if self.seen(label, &host) => {
                tracing::info!(kind = label, %namespace, %name, "host copy deleted; deleting the virtual object");
                ignore_not_found(virtual_api.delete(name, &DeleteParams::default()).await)
            }
            (Some(object), None) => {
                if object.meta().deletion_timestamp.is_some() {
                    return Ok(());
                }
                let value = to_value(object.as_ref());
                if kind.id == ToHostKind::Ingress
                    && let Some(message) = self
                        .class_refusal("IngressClass", value.pointer("/spec/ingressClassName").and_then(Value::as_str))
                {
                    let target = crate::events::Target::of(object.as_ref());
                    self.recorder.warn(&target, "SyncWarning", "SyncIngress", &message).await;
                    return Ok(());
                }
                let pair = self.pair(label, namespace, name, &host);
                if !self.record(object.as_ref(), pair, self.extra_references(kind.id, &value)).await {
                    return Ok(());
                }
                let desired =
                    self.owned((kind.translate)(&self.config.context, &value), has_controller(object.as_ref()));
                self.create_on_host::<K>(desired).await
            }
            (Some(object), Some(host_object)) => {
                let value = to_value(object.as_ref());
                let pair = self.pair(label, namespace, name, &host);
                if !self.record(object.as_ref(), pair, self.extra_references(kind.id, &value)).await {
                    return Ok(());
                }
                let mut desired = (kind.translate)(&self.config.context, &value);
                self.patch_to_host(label, namespace, &mut desired)?;
                let mut current = to_value(host_object.as_ref());
                if kind.id == ToHostKind::Ingress
                    && value.pointer("/spec/ingressClassName").is_none_or(Value::is_null)
                    && let Some(class) = current.pointer("/spec/ingressClassName").filter(|c| !c.is_null()).cloned()
                {
                    // §3.7: a class the host gave the ingress (its default class, an admission
                    // controller) shows in the virtual cluster too, and stays on the host.
                    desired["spec"]["ingressClassName"] = class.clone();
                    let patch = Patch::Merge(json!({"spec": {"ingressClassName": class}}));
                    ignore_not_found(virtual_api.patch(name, &PatchParams::apply(MANAGER), &patch).await)?;
                }
                let mut host_status = json!({"status": current.get("status").cloned().unwrap_or(Value::Null)});
                if force(&mut current, &desired, kind.forced) {
                    let replacement: K = serde_json::from_value(current).map_err(kube::Error::SerdeError)?;
                    let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
                    match host_api.replace(&host, &params, &replacement).await {
                        Ok(_) => {}
                        // Someone wrote it meanwhile: its watch event brings it here again.
                        Err(kube::Error::Api(status)) if status.code == 409 => {
                            let work = Work::ToHost(kind.id, namespace.into(), name.into());
                            self.queue.send_after(std::time::Duration::from_secs(1), work);
                            return Ok(());
                        }
                        Err(error) => return ignore_not_found(Err::<K, _>(error)),
                    }
                }
                self.patch_to_virtual(label, namespace, &mut host_status)?;
                let host_status = host_status["status"].take();
                if kind.status_back && !host_status.is_null() && value.get("status") != Some(&host_status) {
                    let patch = Patch::Merge(json!({"status": host_status}));
                    ignore_not_found(virtual_api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await)?;
                }
                Ok(())
            }
        }
    }

    async fn sync_mirror<K: ClusterScoped>(&self, kind: Option<&Mirror<K>>, name: &str) -> Result<(), kube::Error> {
        let Some(kind) = kind else { return Ok(()) };
        let api: Api<K> = Api::all(self.virtual_client.clone());
        let mut host_object = cached(&kind.host_objects, None, name);
        // §3.10/§3.19: with a selector only the classes it picks are copied (the built-in
        // priority classes always); a copy whose class stops matching goes.
        if let Some(selector) = self.config.class_selectors.get(kind.id.kind())
            && !(kind.id == MirrorKind::PriorityClass && name.starts_with("system-"))
            && host_object.as_ref().is_some_and(|h| !vkube_translate::labels::selector_matches(selector, h.labels()))
        {
            host_object = None;
        }
        let virtual_object = cached(&kind.virtual_objects, None, name);
        let marker = vkube_translate::labels::MANAGED_BY;
        if kind.id == MirrorKind::CsiNode {
            // A node's CSI information is shown only while the virtual cluster shows the node;
            // only copies the syncer made (marked) are removed.
            let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.virtual_client.clone());
            if nodes.get_opt(name).await?.is_none() {
                host_object = None;
            }
            if host_object.is_none() && !virtual_object.as_ref().is_some_and(|v| v.labels().contains_key(marker)) {
                return Ok(());
            }
        }
        let Some(host_object) = host_object else {
            // A class the host does not have (the built-in priority classes stay, and so does a
            // tenant's own storage class labelled `vcluster.loft.sh/controlled-by`).
            let own = virtual_object
                .as_ref()
                .is_some_and(|v| v.labels().contains_key(vkube_translate::labels::CONTROLLED_BY));
            if virtual_object.is_some() && !own && !name.starts_with("system-") {
                tracing::info!(kind = kind.id.kind(), %name, "not on the host; deleting the virtual copy");
                ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(());
        };
        let host_value = to_value(host_object.as_ref());
        let (mut labels, annotations) = metadata_maps(&host_value);
        if kind.id == MirrorKind::CsiNode {
            if !labels.is_object() {
                labels = json!({});
            }
            labels[marker] = json!(self.config.context.name);
        }
        let mut desired = json!({"metadata": {"name": name, "labels": labels, "annotations": annotations}});
        for field in kind.fields {
            if let Some(value) = host_value.get(*field) {
                desired[*field] = value.clone();
            }
        }
        match virtual_object {
            None => crate::ensure(&api, desired).await,
            Some(current) => {
                let mut current = to_value(current.as_ref());
                if !force(&mut current, &desired, kind.fields) {
                    return Ok(());
                }
                let replacement: K = serde_json::from_value(current).map_err(kube::Error::SerdeError)?;
                let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
                match api.replace(name, &params, &replacement).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        self.queue.send_after(std::time::Duration::from_secs(1), Work::Mirror(kind.id, name.into()));
                        Ok(())
                    }
                    Err(error) => ignore_not_found(Err::<K, _>(error)),
                }
            }
        }
    }
}

/// Which optional kinds a syncer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionalKinds {
    /// `sync.toHost.ingresses.enabled`.
    pub ingresses: bool,
    /// `sync.toHost.networkPolicies.enabled`.
    pub network_policies: bool,
    /// `sync.toHost.podDisruptionBudgets.enabled`.
    pub pod_disruption_budgets: bool,
    /// `sync.toHost.serviceAccounts.enabled`.
    pub service_accounts: bool,
    /// `sync.toHost.endpointSlices.enabled`: slices of selector-less services.
    pub endpoint_slices: bool,
    /// `sync.fromHost.ingressClasses.enabled`.
    pub ingress_classes: bool,
    /// `sync.fromHost.runtimeClasses.enabled`.
    pub runtime_classes: bool,
    /// `sync.fromHost.priorityClasses.enabled`.
    pub priority_classes: bool,
    /// `sync.fromHost.storageClasses.enabled` (once `auto` is decided).
    pub storage_classes: bool,
    /// `sync.fromHost.csiDrivers.enabled` (once `auto` is decided).
    pub csi_drivers: bool,
    /// `sync.fromHost.csiNodes.enabled` (once `auto` is decided).
    pub csi_nodes: bool,
    /// `sync.fromHost.csiStorageCapacities.enabled` (once `auto` is decided).
    pub csi_storage_capacities: bool,
    /// `sync.toHost.priorityClasses.enabled`.
    pub priority_classes_to_host: bool,
    /// `sync.toHost.storageClasses.enabled`.
    pub storage_classes_to_host: bool,
    /// `sync.toHost.persistentVolumes.enabled`: volumes the tenant creates go to the host.
    pub persistent_volumes_to_host: bool,
}

/// What the syncer needs to start the reflectors of an optional kind.
pub(crate) struct Wiring<'a> {
    pub(crate) virtual_client: &'a kube::Client,
    pub(crate) host_client: &'a kube::Client,
    pub(crate) host_namespace: &'a str,
    pub(crate) managed: &'a kube::runtime::watcher::Config,
    pub(crate) queue: &'a crate::Queue,
    pub(crate) seen: &'a crate::Seen,
    pub(crate) mappings: &'a Arc<crate::Mappings>,
    /// Who uses which host config map or secret.
    pub(crate) refs: &'a Arc<std::sync::Mutex<crate::refs::RefIndex>>,
    pub(crate) context: &'a vkube_translate::Context,
    pub(crate) tasks: &'a mut Vec<tokio::task::JoinHandle<()>>,
    /// Resolves once the cache has its initial list, one per cache started.
    pub(crate) ready: &'a mut Vec<futures::future::BoxFuture<'static, ()>>,
}

impl Wiring<'_> {
    /// Keeps a started reflector's task and a way to wait for its initial list.
    pub(crate) fn started<K>(&mut self, (store, task): (Store<K>, tokio::task::JoinHandle<()>)) -> Store<K>
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        self.keep(store.clone(), task);
        store
    }

    /// Keeps `task` running and waits for `store`'s initial list before the syncer is ready.
    pub(crate) fn keep<K>(&mut self, store: Store<K>, task: tokio::task::JoinHandle<()>)
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        self.tasks.push(task);
        self.ready.push(Box::pin(async move {
            let _ = store.wait_until_ready().await;
        }));
    }

    /// Watches kind `id` in the virtual cluster and its copies on the host; `on_virtual` also
    /// sees every virtual change (true for a deletion).
    pub(crate) fn copied_to_host<K>(
        &mut self,
        id: ToHostKind,
        on_virtual: impl Fn(&K, bool) + Send + 'static,
    ) -> ToHost<K>
    where
        K: Namespaced + Send + Sync,
    {
        let q = self.queue.clone();
        let virtual_objects = self.started(crate::reflect(
            Api::<K>::all(self.virtual_client.clone()),
            Default::default(),
            move |object, deleted| {
                on_virtual(object, deleted);
                q.send(Work::ToHost(id, object.namespace().unwrap_or_default(), object.name_any()));
            },
        ));
        let (q, seen, mappings) = (self.queue.clone(), self.seen.clone(), self.mappings.clone());
        let host_objects = self.started(crate::reflect(
            Api::<K>::namespaced(self.host_client.clone(), self.host_namespace),
            self.managed.clone(),
            move |object, deleted| {
                if !deleted {
                    crate::lock(&seen).insert((id.kind(), object.name_any()));
                }
                if let Some((namespace, name)) = crate::virtual_key_of(&mappings, id.kind(), object) {
                    q.send(Work::ToHost(id, namespace, name));
                }
            },
        ));
        ToHost::new(id, virtual_objects, host_objects)
    }

    /// Watches cluster-scoped kind `id` in the virtual cluster and its copies on the host.
    pub(crate) fn cluster_to_host<K: ClusterScoped>(
        &mut self,
        id: ClusterKind,
        marker: &str,
        virtual_config: kube::runtime::watcher::Config,
    ) -> ClusterToHost<K> {
        let q = self.queue.clone();
        let virtual_objects = self.started(crate::reflect(
            Api::<K>::all(self.virtual_client.clone()),
            virtual_config,
            move |object, _| q.send(Work::ClusterToHost(id, object.name_any())),
        ));
        let (q, seen, mappings) = (self.queue.clone(), self.seen.clone(), self.mappings.clone());
        let managed = kube::runtime::watcher::Config::default()
            .labels(&format!("{}={marker}", vkube_translate::labels::MANAGED_BY));
        let host_objects =
            self.started(crate::reflect(Api::<K>::all(self.host_client.clone()), managed, move |object, deleted| {
                if !deleted {
                    crate::lock(&seen).insert((id.kind(), object.name_any()));
                }
                let name = object
                    .annotations()
                    .get(vkube_translate::metadata::OBJECT_NAME)
                    .cloned()
                    .or_else(|| crate::virtual_key_of(&mappings, id.kind(), object).map(|(_, n)| n));
                if let Some(name) = name {
                    q.send(Work::ClusterToHost(id, name));
                }
            }));
        ClusterToHost { id, virtual_objects, host_objects }
    }

    /// Watches kind `id` on the host and its copies in the virtual cluster.
    pub(crate) fn mirror<K: ClusterScoped>(&mut self, id: MirrorKind) -> Mirror<K> {
        let (host_client, virtual_client) = (self.host_client.clone(), self.virtual_client.clone());
        let mut watch = |client: kube::Client| {
            let q = self.queue.clone();
            self.started(crate::reflect(Api::<K>::all(client), Default::default(), move |object, _| {
                q.send(Work::Mirror(id, object.name_any()));
            }))
        };
        let host_objects = watch(host_client);
        let virtual_objects = watch(virtual_client);
        Mirror::new(id, host_objects, virtual_objects)
    }
}

impl Extras {
    /// The virtual object a failed sync of `id` is reported on.
    pub(crate) fn target(&self, id: ToHostKind, namespace: &str, name: &str) -> Option<crate::events::Target> {
        fn of<K: Resource<DynamicType = ()> + Clone + 'static>(
            kind: Option<&ToHost<K>>,
            namespace: &str,
            name: &str,
        ) -> Option<crate::events::Target> {
            let object = cached(&kind?.virtual_objects, Some(namespace), name)?;
            Some(crate::events::Target::of(object.as_ref()))
        }
        match id {
            ToHostKind::Ingress => of(self.ingresses.as_ref(), namespace, name),
            ToHostKind::NetworkPolicy => of(self.network_policies.as_ref(), namespace, name),
            ToHostKind::PodDisruptionBudget => of(self.budgets.as_ref(), namespace, name),
            ToHostKind::ServiceAccount => of(self.accounts.as_ref(), namespace, name),
            ToHostKind::EndpointSlice => of(self.endpoint_slices.as_ref(), namespace, name),
        }
    }
}

/// The host's CSI storage capacities (any host namespace) shown in the virtual cluster's
/// `kube-system` as `NAME-x-HOSTNAMESPACE` (sync-behavior.md 3.20).
pub(crate) struct Capacities {
    pub(crate) host_objects: Store<CSIStorageCapacity>,
    pub(crate) virtual_objects: Store<CSIStorageCapacity>,
}

/// Where the virtual cluster shows host capacities.
const CAPACITY_NAMESPACE: &str = "kube-system";

impl Wiring<'_> {
    /// Watches the host's capacities in every namespace and their copies in the virtual cluster.
    pub(crate) fn capacities(&mut self) -> Capacities {
        let q = self.queue.clone();
        let host_objects = self.started(crate::reflect(
            Api::<CSIStorageCapacity>::all(self.host_client.clone()),
            Default::default(),
            move |object, _| q.send(Work::Capacity(object.namespace().unwrap_or_default(), object.name_any())),
        ));
        let q = self.queue.clone();
        let virtual_objects = self.started(crate::reflect(
            Api::<CSIStorageCapacity>::namespaced(self.virtual_client.clone(), CAPACITY_NAMESPACE),
            Default::default(),
            move |object, _| {
                if let Some((namespace, name)) = crate::virtual_key(object) {
                    q.send(Work::Capacity(namespace, name));
                }
            },
        ));
        Capacities { host_objects, virtual_objects }
    }
}

impl Syncer {
    /// Shows host capacity `namespace/name` in the virtual cluster, or removes its copy.
    pub(crate) async fn reconcile_capacity(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(capacities) = &self.extras.capacities else { return Ok(()) };
        let virtual_name = vkube_translate::names::safe_concat_name(&[name, "x", namespace]);
        let host_object = cached(&capacities.host_objects, Some(namespace), name);
        let virtual_object = cached(&capacities.virtual_objects, Some(CAPACITY_NAMESPACE), &virtual_name);
        let api: Api<CSIStorageCapacity> = Api::namespaced(self.virtual_client.clone(), CAPACITY_NAMESPACE);
        let Some(host_object) = host_object else {
            if virtual_object.is_some() {
                ignore_not_found(api.delete(&virtual_name, &DeleteParams::default()).await)?;
            }
            return Ok(());
        };
        let host_value = to_value(host_object.as_ref());
        let (labels, annotations) = metadata_maps(&host_value);
        let mut annotations = if annotations.is_object() { annotations } else { json!({}) };
        // The bookkeeping names the host object (the reverse of the usual use).
        annotations[vkube_translate::metadata::OBJECT_NAME] = json!(name);
        annotations[vkube_translate::metadata::OBJECT_NAMESPACE] = json!(namespace);
        let mut desired = json!({"metadata": {"name": virtual_name, "namespace": CAPACITY_NAMESPACE,
            "labels": labels, "annotations": annotations}});
        let fields = ["storageClassName", "nodeTopology", "capacity", "maximumVolumeSize"];
        for field in fields {
            if let Some(value) = host_value.get(field) {
                desired[field] = value.clone();
            }
        }
        let Some(current) = virtual_object else { return crate::ensure(&api, desired).await };
        let mut current = to_value(current.as_ref());
        if !force(&mut current, &desired, &fields) {
            return Ok(());
        }
        let replacement: CSIStorageCapacity = serde_json::from_value(current).map_err(kube::Error::SerdeError)?;
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        ignore_not_found(api.replace(&virtual_name, &params, &replacement).await).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::SliceIndex;

    #[test]
    fn the_slice_index_follows_relabels_and_deletions() {
        let mut index = SliceIndex::default();
        index.set("ns", "db-1", Some("db"));
        index.set("ns", "db-2", Some("db"));
        index.set("other", "db-1", Some("db"));
        assert_eq!(index.of("ns", "db"), ["db-1", "db-2"]);
        index.set("ns", "db-2", Some("cache"));
        assert_eq!(
            (index.of("ns", "db"), index.of("ns", "cache")),
            (vec!["db-1".to_string()], vec!["db-2".to_string()])
        );
        index.set("ns", "db-1", None);
        assert!(index.of("ns", "db").is_empty());
        assert_eq!(index.of("other", "db"), ["db-1"], "namespaces apart");
    }
}
