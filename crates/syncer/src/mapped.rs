//! Host objects copied into the virtual cluster by name (sync-behavior.md §5.5, §8.4):
//! `sync.fromHost.configMaps|secrets` and namespaced `sync.fromHost.customResources`, each with
//! `mappings.byName`. One way: the copy follows the host object (data, labels, annotations; a
//! tenant's edit of the copy is undone), goes when the host object goes, and is made in its
//! virtual namespace (created if missing). Only the mapped namespaces are watched, on both sides.
//!
//! A copy carries `vcluster.loft.sh/object-host-namespace` and `object-host-name`, naming its
//! source: a virtual object without them is the tenant's own and never deleted, and a copy whose
//! source went while vkube was down goes at the next start (the reference keeps it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use vkube_config::mappings::ByName;

use crate::patches::Patches;
use crate::{MANAGER, Syncer, Work, ignore_not_found, to_value};

/// The source's namespace, on a copy.
pub(crate) const HOST_NAMESPACE: &str = "vcluster.loft.sh/object-host-namespace";
/// The source's name, on a copy.
pub(crate) const HOST_NAME: &str = "vcluster.loft.sh/object-host-name";

/// What is copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappedKind {
    /// `sync.fromHost.configMaps`.
    ConfigMap,
    /// `sync.fromHost.secrets`.
    Secret,
    /// A namespaced `sync.fromHost.customResources` entry (its key).
    Custom(String),
}

/// One configured kind of host objects copied by name.
#[derive(Clone, Debug)]
pub struct MappedSync {
    /// The kind.
    pub kind: MappedKind,
    /// Which host objects, and where they appear.
    pub by_name: ByName,
    /// Translate rules (custom resources).
    pub patches: Patches,
}

/// A kind being copied, with its caches by namespace.
pub(crate) struct Mapped {
    sync: MappedSync,
    resource: ApiResource,
    has_status: bool,
    host: BTreeMap<String, Store<DynamicObject>>,
    virtual_objects: BTreeMap<String, Store<DynamicObject>>,
}

fn lookup(
    stores: &BTreeMap<String, Store<DynamicObject>>,
    resource: &ApiResource,
    ns: &str,
    name: &str,
) -> Option<Value> {
    let store = stores.get(ns)?;
    store.get(&ObjectRef::<DynamicObject>::new_with(name, resource.clone()).within(ns)).map(|o| to_value(o.as_ref()))
}

/// Whether host object `value` may be copied: not a copy of a virtual object (`managed-by`),
/// not owned by something else (`controlled-by`), not the per-namespace root CA.
fn is_source(kind: &MappedKind, value: &Value) -> bool {
    let label = |key: &str| value.pointer("/metadata/labels").and_then(|l| l.get(key)).is_some_and(|v| v != "");
    let root_ca = *kind == MappedKind::ConfigMap
        && value.pointer("/metadata/name").and_then(Value::as_str) == Some("kube-root-ca.crt");
    !label(vkube_translate::labels::MANAGED_BY) && !label(vkube_translate::labels::CONTROLLED_BY) && !root_ca
}

/// The fields of an object other than identity, metadata and status.
fn body(value: &Value) -> serde_json::Map<String, Value> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The virtual copy of host object `host` as `namespace/name`.
fn desired_copy(resource: &ApiResource, host: &Value, namespace: &str, name: &str) -> Value {
    let (host_namespace, host_name) = (
        host.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
        host.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default(),
    );
    let mut annotations = host.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    annotations.remove(crate::LAST_APPLIED);
    annotations.insert(HOST_NAMESPACE.into(), json!(host_namespace));
    annotations.insert(HOST_NAME.into(), json!(host_name));
    let labels = host.pointer("/metadata/labels").cloned().filter(|l| !l.is_null()).unwrap_or_else(|| json!({}));
    let mut copy = Value::Object(body(host));
    copy["apiVersion"] = json!(resource.api_version);
    copy["kind"] = json!(resource.kind);
    copy["metadata"] = json!({"name": name, "namespace": namespace, "labels": labels, "annotations": annotations});
    if let Some(status) = host.get("status").filter(|s| !s.is_null()) {
        copy["status"] = status.clone();
    }
    copy
}

fn is_copy_of(value: &Value, host_namespace: &str, host_name: &str) -> bool {
    let annotation =
        |key: &str| value.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str);
    annotation(HOST_NAMESPACE) == Some(host_namespace) && annotation(HOST_NAME) == Some(host_name)
}

impl Syncer {
    /// Brings the virtual copy of host object `host_namespace/host_name` of mapped kind `index`
    /// in line with it.
    pub(crate) async fn reconcile_mapped(
        &self,
        index: usize,
        host_namespace: &str,
        host_name: &str,
    ) -> Result<(), kube::Error> {
        let Some(mapped) = self.mapped.get(index) else { return Ok(()) };
        let own = self.host_namespace();
        let Some((namespace, name)) = mapped.sync.by_name.to_virtual(own, host_namespace, host_name) else {
            return Ok(());
        };
        let resource = &mapped.resource;
        let host =
            lookup(&mapped.host, resource, host_namespace, host_name).filter(|h| is_source(&mapped.sync.kind, h));
        let current = lookup(&mapped.virtual_objects, resource, &namespace, &name);
        let api: Api<DynamicObject> = Api::namespaced_with(self.virtual_client.clone(), &namespace, resource);
        let Some(host) = host else {
            // The source is gone (or never was): only a copy of it goes, never a tenant's object.
            if current.as_ref().is_some_and(|c| is_copy_of(c, host_namespace, host_name)) {
                tracing::info!(%namespace, %name, kind = %resource.kind, "host source gone; deleting its virtual copy");
                ignore_not_found(api.delete(&name, &DeleteParams::default()).await)?;
            }
            return Ok(());
        };
        let mut desired = desired_copy(resource, &host, &namespace, &name);
        mapped.sync.patches.to_virtual(&namespace, &mut desired).map_err(crate::patch_error)?;
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match current {
            None => {
                self.ensure_virtual_namespace(&namespace).await?;
                crate::ensure(&api, desired.clone()).await?;
            }
            Some(current) => {
                let same_metadata = ["labels", "annotations"].iter().all(|k| {
                    let get = |v: &Value| {
                        v.pointer(&format!("/metadata/{k}")).cloned().filter(|m| !m.is_null() && m != &json!({}))
                    };
                    get(&current) == get(&desired)
                });
                if body(&current) != body(&desired) || !same_metadata {
                    let immutable_changed = |key: &str| current.get(key).is_some_and(|v| Some(v) != desired.get(key));
                    if immutable_changed("type") || current.get("immutable") == Some(&json!(true)) {
                        // A secret's type (and an immutable object) cannot change: made again.
                        ignore_not_found(api.delete(&name, &DeleteParams::default()).await)?;
                        return Ok(());
                    }
                    let mut replacement = desired.clone();
                    replacement["metadata"] = current["metadata"].clone();
                    replacement["metadata"]["labels"] = desired["metadata"]["labels"].clone();
                    replacement["metadata"]["annotations"] = desired["metadata"]["annotations"].clone();
                    if let Some(map) = replacement["metadata"].as_object_mut() {
                        map.remove("managedFields");
                    }
                    let object: DynamicObject = serde_json::from_value(replacement).map_err(kube::Error::SerdeError)?;
                    ignore_not_found(api.replace(&name, &params, &object).await)?;
                }
            }
        }
        if mapped.has_status
            && let Some(status) = desired.get("status").filter(|s| !s.is_null())
        {
            let patch = Patch::Merge(json!({"status": status}));
            ignore_not_found(api.patch_status(&name, &PatchParams::apply(MANAGER), &patch).await)?;
        }
        Ok(())
    }

    /// Creates virtual namespace `name` if it does not exist.
    pub(crate) async fn ensure_virtual_namespace(&self, name: &str) -> Result<(), kube::Error> {
        let namespaces: Api<Namespace> = Api::all(self.virtual_client.clone());
        if namespaces.get_opt(name).await?.is_some() {
            return Ok(());
        }
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).map_err(kube::Error::SerdeError)?;
        match namespaces.create(&PostParams::default(), &namespace).await {
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The virtual copy a failed reconcile is reported on.
    pub(crate) fn mapped_target(
        &self,
        index: usize,
        host_namespace: &str,
        host_name: &str,
    ) -> Option<crate::events::Target> {
        let mapped = self.mapped.get(index)?;
        let (namespace, name) = mapped.sync.by_name.to_virtual(self.host_namespace(), host_namespace, host_name)?;
        let store = mapped.virtual_objects.get(&namespace)?;
        let object =
            store.get(&ObjectRef::<DynamicObject>::new_with(&name, mapped.resource.clone()).within(&namespace))?;
        Some(crate::events::Target::dynamic(object.as_ref(), &mapped.resource))
    }
}

/// Starts the caches of mapped kind `index`: the host namespaces it copies from and the virtual
/// namespaces it copies to.
pub(crate) fn start(
    index: usize,
    sync: MappedSync,
    resource: ApiResource,
    has_status: bool,
    wiring: &mut crate::extra::Wiring<'_>,
) -> Mapped {
    let own = wiring.host_namespace.to_string();
    let mut host = BTreeMap::new();
    for namespace in sync.by_name.host_namespaces(&own) {
        let (q, by_name, own) = (wiring.queue.clone(), sync.by_name.clone(), own.clone());
        let (store, task) = crate::custom::reflect_dynamic(
            Api::namespaced_with(wiring.host_client.clone(), &namespace, &resource),
            &resource,
            Default::default(),
            move |object, _| {
                let (ns, name) = (object.namespace().unwrap_or_default(), object.name_any());
                if by_name.to_virtual(&own, &ns, &name).is_some() {
                    q.send(Work::Mapped(index, ns, name));
                }
            },
        );
        wiring.keep(store.clone(), task);
        host.insert(namespace, store);
    }
    let mut virtual_objects = BTreeMap::new();
    for namespace in sync.by_name.virtual_namespaces() {
        let (q, by_name, own) = (wiring.queue.clone(), sync.by_name.clone(), own.clone());
        let (store, task) = crate::custom::reflect_dynamic(
            Api::namespaced_with(wiring.virtual_client.clone(), &namespace, &resource),
            &resource,
            Default::default(),
            move |object, _| {
                let (ns, name) = (object.namespace().unwrap_or_default(), object.name_any());
                if let Some((host_ns, host_name)) = by_name.to_host(&own, &ns, &name) {
                    q.send(Work::Mapped(index, host_ns, host_name));
                }
            },
        );
        wiring.keep(store.clone(), task);
        virtual_objects.insert(namespace, store);
    }
    Mapped { sync, resource, has_status, host, virtual_objects }
}

/// The resource of a core kind.
pub(crate) fn core_resource(kind: &MappedKind) -> Option<ApiResource> {
    match kind {
        MappedKind::ConfigMap => Some(ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&())),
        MappedKind::Secret => Some(ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&())),
        MappedKind::Custom(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_keeps_the_hosts_data_and_metadata_and_names_its_source() {
        let resource = core_resource(&MappedKind::Secret).unwrap();
        let host = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "registry", "namespace": "shared", "uid": "u1", "resourceVersion": "5",
                "labels": {"team": "platform"}, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "owner": "ops"}},
            "data": {".dockerconfigjson": "e30="}});
        let copy = desired_copy(&resource, &host, "default", "pull-secret");
        assert_eq!(
            copy,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "pull-secret", "namespace": "default", "labels": {"team": "platform"},
                    "annotations": {"owner": "ops", HOST_NAMESPACE: "shared", HOST_NAME: "registry"}},
                "data": {".dockerconfigjson": "e30="}})
        );
        assert!(is_copy_of(&copy, "shared", "registry"));
        assert!(!is_copy_of(&copy, "shared", "other"));
        assert!(is_source(&MappedKind::Secret, &host));
        let synced = json!({"metadata": {"name": "x", "labels": {vkube_translate::labels::MANAGED_BY: "vc1"}}});
        assert!(!is_source(&MappedKind::Secret, &synced), "a copy of a virtual object is not a source");
        let root = json!({"metadata": {"name": "kube-root-ca.crt"}});
        assert!(!is_source(&MappedKind::ConfigMap, &root));
    }
}
