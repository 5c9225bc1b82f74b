//! Custom resources (sync-behavior.md §8): at start the host's definition is copied into the
//! virtual cluster (only the chosen version, served and stored); then namespaced objects are copied
//! to the host (`sync.toHost.customResources`) with their status coming back, or cluster-scoped
//! host objects are mirrored into the virtual cluster (`sync.fromHost.customResources`).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::extra::metadata_maps;
use crate::patches::Patches;
use crate::{MANAGER, Syncer, Work, ignore_not_found, to_value};

/// One `customResources` entry as the syncer runs it.
#[derive(Clone, Debug)]
pub struct CustomResourceSync {
    /// The configuration key, `<plural>.<group>[/<version>]`.
    pub key: String,
    /// True for `sync.toHost` (namespaced objects to the host), false for `sync.fromHost`
    /// (cluster-scoped host objects into the virtual cluster).
    pub to_host: bool,
    /// The entry's translate rules.
    pub patches: Patches,
}

/// A custom resource kind being synced.
pub(crate) struct Custom {
    pub(crate) sync: CustomResourceSync,
    pub(crate) resource: ApiResource,
    pub(crate) has_status: bool,
    pub(crate) virtual_objects: Store<DynamicObject>,
    pub(crate) host_objects: Store<DynamicObject>,
    /// The kind, for the syncer's sets of seen host objects.
    pub(crate) label: &'static str,
}

/// `<plural>.<group>[/<version>]` → (plural, group, version).
pub(crate) fn parse_key(key: &str) -> Option<(String, String, Option<String>)> {
    let (name, version) = match key.split_once('/') {
        Some((name, version)) => (name, Some(version.to_string())),
        None => (key, None),
    };
    let (plural, group) = name.split_once('.')?;
    Some((plural.to_string(), group.to_string(), version))
}

/// Why a custom resource cannot be synced.
fn unavailable(key: &str, why: impl std::fmt::Display) -> kube::Error {
    crate::patch_error(format!(
        "custom resource {key}: {why} (seems like it is not available in the host cluster or vkube has no access to it)"
    ))
}

/// Copies the host's definition of `sync.key` into the virtual cluster (the chosen version only)
/// and waits until the virtual API serves it; returns the resource and whether it has a status
/// subresource.
pub(crate) async fn ensure_definition(
    virtual_client: &Client,
    host_client: &Client,
    key: &str,
    namespaced_wanted: bool,
) -> Result<(ApiResource, bool), kube::Error> {
    let (plural, group, version) = parse_key(key).ok_or_else(|| unavailable(key, "not <plural>.<group>"))?;
    let name = format!("{plural}.{group}");
    let host_definitions: Api<CustomResourceDefinition> = Api::all(host_client.clone());
    let definition = host_definitions.get_opt(&name).await?.ok_or_else(|| unavailable(key, "no definition"))?;
    let spec = &definition.spec;
    let chosen = spec
        .versions
        .iter()
        .find(|v| match &version {
            Some(version) => v.name == *version,
            None => v.storage,
        })
        .cloned()
        .ok_or_else(|| unavailable(key, "no such version"))?;
    let has_status = chosen.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some();
    let namespaced = spec.scope == "Namespaced";
    if namespaced_wanted != namespaced {
        let wanted = if namespaced_wanted { "namespaced" } else { "cluster-scoped" };
        return Err(unavailable(key, format!("the host's definition is not {wanted}")));
    }
    let virtual_definitions: Api<CustomResourceDefinition> = Api::all(virtual_client.clone());
    let mut version_entry = chosen.clone();
    version_entry.served = true;
    version_entry.storage = true;
    match virtual_definitions.get_opt(&name).await? {
        Some(existing) if existing.spec.versions.iter().any(|v| v.name == chosen.name && v.served) => {}
        Some(mut existing) => {
            for v in &mut existing.spec.versions {
                v.storage = false;
            }
            existing.spec.versions.retain(|v| v.name != chosen.name);
            existing.spec.versions.push(version_entry);
            existing.metadata.managed_fields = None;
            virtual_definitions.replace(&name, &PostParams::default(), &existing).await?;
        }
        None => {
            let mut copy = json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": name, "labels": definition.metadata.labels, "annotations": definition.metadata.annotations},
                "spec": to_value(spec),
            });
            copy["spec"]["versions"] = json!([version_entry]);
            if let Some(map) = copy["spec"].as_object_mut() {
                map.remove("conversion");
                map.insert("preserveUnknownFields".into(), json!(false));
            }
            let copy: CustomResourceDefinition = serde_json::from_value(copy).map_err(kube::Error::SerdeError)?;
            match virtual_definitions.create(&PostParams::default(), &copy).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
    }
    let resource = ApiResource {
        group: group.clone(),
        version: chosen.name.clone(),
        api_version: format!("{group}/{}", chosen.name),
        kind: spec.names.kind.clone(),
        plural: plural.clone(),
    };
    // Until the new definition is served, lists answer 404.
    let api: Api<DynamicObject> = Api::all_with(virtual_client.clone(), &resource);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match api.list(&kube::api::ListParams::default().limit(1)).await {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok((resource, has_status))
}

/// A reflector over dynamic objects of `resource`.
pub(crate) fn reflect_dynamic(
    api: Api<DynamicObject>,
    resource: &ApiResource,
    config: watcher::Config,
    on_change: impl Fn(&DynamicObject, bool) + Send + 'static,
) -> (Store<DynamicObject>, tokio::task::JoinHandle<()>) {
    let writer = reflector::store::Writer::new(resource.clone());
    vkube_controllers::reflect_into(writer, api, config, |_| {}, on_change)
}

fn cached_dynamic(
    store: &Store<DynamicObject>,
    resource: &ApiResource,
    namespace: Option<&str>,
    name: &str,
) -> Option<std::sync::Arc<DynamicObject>> {
    let mut key = ObjectRef::<DynamicObject>::new_with(name, resource.clone());
    if let Some(namespace) = namespace {
        key = key.within(namespace);
    }
    store.get(&key)
}

/// The top-level fields of `object` other than identity, metadata and status.
fn body(object: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (key, value) in object.as_object().into_iter().flatten() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

impl Syncer {
    /// The virtual object a failed sync of a custom resource is reported on.
    pub(crate) fn custom_target(&self, index: usize, namespace: &str, name: &str) -> Option<crate::events::Target> {
        let custom = self.customs.get(index)?;
        let namespace = (!namespace.is_empty()).then_some(namespace);
        let object = cached_dynamic(&custom.virtual_objects, &custom.resource, namespace, name)?;
        Some(crate::events::Target::dynamic(object.as_ref(), &custom.resource))
    }

    pub(crate) async fn reconcile_custom(&self, index: usize, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(custom) = self.customs.get(index) else { return Ok(()) };
        if custom.sync.to_host {
            self.custom_to_host(index, custom, namespace, name).await
        } else {
            self.custom_from_host(custom, name).await
        }
    }

    async fn custom_to_host(
        &self,
        index: usize,
        custom: &Custom,
        namespace: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        let resource = &custom.resource;
        let kind = resource.kind.as_str();
        let context = &self.config.context;
        let host = vkube_translate::names::host_name(context, name, namespace);
        let virtual_object = cached_dynamic(&custom.virtual_objects, resource, Some(namespace), name);
        let host_object = cached_dynamic(&custom.host_objects, resource, Some(self.host_namespace()), &host)
            .filter(|h| self.belongs(kind, h.as_ref(), namespace, name));
        let host_api: Api<DynamicObject> =
            Api::namespaced_with(self.host_client.clone(), self.host_namespace(), resource);
        let virtual_api: Api<DynamicObject> = Api::namespaced_with(self.virtual_client.clone(), namespace, resource);
        let pair = crate::NameMapping {
            group: resource.group.clone(),
            version: resource.version.clone(),
            ..self.pair(kind, namespace, name, &host)
        };
        match (virtual_object, host_object) {
            (None, None) => {
                self.forget(kind, namespace, name);
                Ok(())
            }
            (None, Some(_)) => ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await),
            (Some(_), None) if self.seen(custom.label, &host) => {
                ignore_not_found(virtual_api.delete(name, &DeleteParams::default()).await)
            }
            (Some(object), None) => {
                let target = || crate::events::Target::dynamic(object.as_ref(), resource);
                if object.metadata.deletion_timestamp.is_some() || !self.record_for(target, pair, vec![]).await {
                    return Ok(());
                }
                let gvk = (resource.group.as_str(), resource.version.as_str(), kind);
                let mut desired =
                    vkube_translate::extra::host_custom_resource(context, &to_value(object.as_ref()), gvk);
                custom.sync.patches.to_host(context, namespace, &mut desired).map_err(crate::patch_error)?;
                crate::ensure(&host_api, self.owned(desired, crate::has_controller(object.as_ref()))).await
            }
            (Some(object), Some(host_object)) => {
                let target = || crate::events::Target::dynamic(object.as_ref(), resource);
                if !self.record_for(target, pair, vec![]).await {
                    return Ok(());
                }
                let gvk = (resource.group.as_str(), resource.version.as_str(), kind);
                let value = to_value(object.as_ref());
                let mut desired = vkube_translate::extra::host_custom_resource(context, &value, gvk);
                custom.sync.patches.to_host(context, namespace, &mut desired).map_err(crate::patch_error)?;
                let current = to_value(host_object.as_ref());
                let (want_labels, want_annotations) = metadata_maps(&desired);
                if body(&desired) != body(&current)
                    || metadata_maps(&current) != (want_labels.clone(), want_annotations.clone())
                {
                    let mut replacement = desired.clone();
                    replacement["metadata"] = current["metadata"].clone();
                    replacement["metadata"]["labels"] = want_labels;
                    replacement["metadata"]["annotations"] = want_annotations;
                    if let Some(status) = current.get("status") {
                        replacement["status"] = status.clone();
                    }
                    let replacement: DynamicObject =
                        serde_json::from_value(replacement).map_err(kube::Error::SerdeError)?;
                    let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
                    match host_api.replace(&host, &params, &replacement).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 409 => {
                            self.queue
                                .send_after(Duration::from_secs(1), Work::Custom(index, namespace.into(), name.into()));
                            return Ok(());
                        }
                        Err(error) => return ignore_not_found(Err::<(), _>(error)),
                    }
                }
                // The host (its controller) owns the status.
                let mut status = json!({"status": current.get("status").cloned().unwrap_or(Value::Null)});
                custom.sync.patches.to_virtual(namespace, &mut status).map_err(crate::patch_error)?;
                let status = status["status"].take();
                if !status.is_null() && value.get("status") != Some(&status) {
                    let patch = Patch::Merge(json!({"status": status}));
                    let params = PatchParams::apply(MANAGER);
                    if custom.has_status {
                        ignore_not_found(virtual_api.patch_status(name, &params, &patch).await)?;
                    } else {
                        ignore_not_found(virtual_api.patch(name, &params, &patch).await)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A cluster-scoped host object mirrored into the virtual cluster.
    async fn custom_from_host(&self, custom: &Custom, name: &str) -> Result<(), kube::Error> {
        let resource = &custom.resource;
        let api: Api<DynamicObject> = Api::all_with(self.virtual_client.clone(), resource);
        let host_object = cached_dynamic(&custom.host_objects, resource, None, name);
        let virtual_object = cached_dynamic(&custom.virtual_objects, resource, None, name);
        let Some(host_object) = host_object else {
            if virtual_object.is_some() {
                ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(());
        };
        let host_value = to_value(host_object.as_ref());
        let (labels, annotations) = metadata_maps(&host_value);
        let mut desired = body(&host_value);
        desired["apiVersion"] = json!(resource.api_version);
        desired["kind"] = json!(resource.kind);
        desired["metadata"] = json!({"name": name, "labels": labels, "annotations": annotations});
        if let Some(status) = host_value.get("status") {
            desired["status"] = status.clone();
        }
        custom.sync.patches.to_virtual("", &mut desired).map_err(crate::patch_error)?;
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match virtual_object {
            None => crate::ensure(&api, desired.clone()).await?,
            Some(current) => {
                let current = to_value(current.as_ref());
                if body(&current) != body(&desired) || metadata_maps(&current) != metadata_maps(&desired) {
                    let mut replacement = desired.clone();
                    replacement["metadata"] = current["metadata"].clone();
                    replacement["metadata"]["labels"] = desired["metadata"]["labels"].clone();
                    replacement["metadata"]["annotations"] = desired["metadata"]["annotations"].clone();
                    let object: DynamicObject = serde_json::from_value(replacement).map_err(kube::Error::SerdeError)?;
                    ignore_not_found(api.replace(name, &params, &object).await)?;
                }
            }
        }
        // Status is its own subresource when the definition says so.
        if custom.has_status
            && let Some(status) = desired.get("status").filter(|s| !s.is_null())
        {
            let patch = Patch::Merge(json!({"status": status}));
            ignore_not_found(api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await)?;
        }
        Ok(())
    }
}

/// Starts the reflectors of custom resource `sync` (after its definition is in place).
pub(crate) fn start(
    index: usize,
    sync: CustomResourceSync,
    resource: ApiResource,
    has_status: bool,
    wiring: &mut crate::extra::Wiring<'_>,
) -> Custom {
    let (virtual_objects, host_objects);
    // Leaked once per configured kind: the set is fixed for the life of the process.
    let label: &'static str = Box::leak(resource.kind.clone().into_boxed_str());
    let q = wiring.queue.clone();
    if sync.to_host {
        // The secrets and config maps its `reference` rules name are "used" (§7.5).
        let (refs, context) = (wiring.refs.clone(), wiring.context.clone());
        let patches: crate::patches::PatchesByKind = [(label.to_string(), sync.patches.clone())].into();
        let (store, task) = reflect_dynamic(
            Api::all_with(wiring.virtual_client.clone(), &resource),
            &resource,
            Default::default(),
            move |object, deleted| {
                let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
                let uses = if deleted {
                    Default::default()
                } else {
                    crate::referenced_uses(&context, &patches, label, &crate::to_value(object))
                };
                let user = format!("custom/{index}/{namespace}/{name}");
                for (kind, host) in crate::lock(&refs).set(&user, uses) {
                    q.send(Work::Data(kind, host));
                }
                q.send(Work::Custom(index, namespace, name))
            },
        );
        wiring.keep(store.clone(), task);
        virtual_objects = store;
        let (q, seen, mappings, kind) = (wiring.queue.clone(), wiring.seen.clone(), wiring.mappings.clone(), label);
        let (store, task) = reflect_dynamic(
            Api::namespaced_with(wiring.host_client.clone(), wiring.host_namespace, &resource),
            &resource,
            wiring.managed.clone(),
            move |object, deleted| {
                if !deleted {
                    crate::lock(&seen).insert((kind, object.name_any()));
                }
                if let Some((namespace, name)) = crate::virtual_key_of(&mappings, kind, object) {
                    q.send(Work::Custom(index, namespace, name));
                }
            },
        );
        wiring.keep(store.clone(), task);
        host_objects = store;
    } else {
        let (store, task) = reflect_dynamic(
            Api::all_with(wiring.host_client.clone(), &resource),
            &resource,
            Default::default(),
            move |object, _| q.send(Work::Custom(index, String::new(), object.name_any())),
        );
        wiring.keep(store.clone(), task);
        host_objects = store;
        let q = wiring.queue.clone();
        let (store, task) = reflect_dynamic(
            Api::all_with(wiring.virtual_client.clone(), &resource),
            &resource,
            Default::default(),
            move |object, _| q.send(Work::Custom(index, String::new(), object.name_any())),
        );
        wiring.keep(store.clone(), task);
        virtual_objects = store;
    }
    Custom { sync, resource, has_status, virtual_objects, host_objects, label }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_parse() {
        assert_eq!(
            super::parse_key("certificates.cert-manager.io"),
            Some(("certificates".into(), "cert-manager.io".into(), None))
        );
        assert_eq!(
            super::parse_key("widgets.example.com/v1beta1"),
            Some(("widgets".into(), "example.com".into(), Some("v1beta1".into())))
        );
        assert_eq!(super::parse_key("widgets"), None);
    }
}
