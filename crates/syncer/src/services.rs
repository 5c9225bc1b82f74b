//! Services (the host allocates cluster IPs and node ports; spec virtual → host, status host →
//! virtual) and the endpoints of selector-less services (virtual → host; the host's endpoints
//! controller makes those of services with a selector from the translated selector).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use vkube_translate::Context;
use vkube_translate::names::host_name;
use vkube_translate::services::{host_endpoints, host_service, host_subsets, with_host_addresses};

use crate::cached_host;
use crate::{
    BLOCK_DELETION, MANAGER, Syncer, Work, cached, has_controller, ignore_not_found, ignore_not_found_value, lock,
    to_value,
};

/// How long a host service with [`BLOCK_DELETION`] waits for its virtual service.
const BLOCK_DELETION_WINDOW: Duration = Duration::from_secs(120);

/// What [`allocate_on_host`] did: the virtual service with the host's addresses, and the UID of
/// the host service when this very call created it (the only host service a failed virtual create
/// may take back).
#[derive(Debug, Clone)]
pub struct HostAllocation {
    /// The virtual service with `spec.clusterIP(s)` and node ports taken from the host copy.
    pub service: Value,
    /// The host service's UID when this call created it; `None` when an existing one was reused.
    pub created_uid: Option<String>,
}

/// Creates the host service for a virtual service that is being created and returns the virtual
/// service with the host's addresses (what the reference's API interceptor does). An existing host
/// service of the same name is reused (and then never released), so retries and restarts allocate
/// nothing twice and a failed create never removes a service someone else made.
pub async fn allocate_on_host(
    host: &Client,
    context: &Context,
    service: Value,
    patches: &crate::patches::Patches,
) -> Result<HostAllocation, kube::Error> {
    let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = service.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    if namespace == "default" && name == "kubernetes" {
        // Not copied: it stands for the virtual cluster's own host service and takes its address.
        let api: Api<Service> = Api::namespaced(host.clone(), &context.host_namespace);
        let service = match api.get_opt(&context.name).await? {
            Some(own) => with_host_addresses(&service, &to_value(&own)),
            None => service,
        };
        return Ok(HostAllocation { service, created_uid: None });
    }
    if service
        .pointer(&format!("/metadata/labels/{}", vkube_translate::labels::CONTROLLED_BY.replace('/', "~1")))
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty())
    {
        // Controlled by something else (§1.11): no host copy, so no host addresses either.
        return Ok(HostAllocation { service, created_uid: None });
    }
    let mut desired = host_service(context, &service);
    patches.to_host(context, namespace, &mut desired).map_err(crate::patch_error)?;
    // The virtual service is stored only after this returns: until the syncer has seen it, the
    // host service must not be taken for an orphan.
    desired["metadata"]["annotations"][BLOCK_DELETION] = json!("true");
    let api: Api<Service> = Api::namespaced(host.clone(), &context.host_namespace);
    let object: Service = serde_json::from_value(desired.clone()).map_err(kube::Error::SerdeError)?;
    let (host_service, created_uid) =
        match api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &object).await {
            Ok(created) => {
                let uid = created.uid();
                (created, uid)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let name = desired["metadata"]["name"].as_str().unwrap_or_default();
                (api.get(name).await?, None)
            }
            Err(error) => return Err(error),
        };
    Ok(HostAllocation { service: with_host_addresses(&service, &to_value(&host_service)), created_uid })
}

/// Deletes the host service that [`allocate_on_host`] created (`created_uid`) when the virtual
/// create failed. The UID precondition makes sure nothing else is deleted: not a host service that
/// was reused, nor one re-created under the same name in the meantime.
pub async fn release_on_host(host: &Client, context: &Context, service: &Value, created_uid: &str) {
    let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let namespace = service.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let api: Api<Service> = Api::namespaced(host.clone(), &context.host_namespace);
    let only_ours = DeleteParams {
        preconditions: Some(kube::api::Preconditions { uid: Some(created_uid.to_string()), resource_version: None }),
        ..DeleteParams::default()
    };
    let _ = api.delete(&host_name(context, name, namespace), &only_ours).await;
}

fn age(timestamp: &k8s_openapi::jiff::Timestamp) -> Duration {
    let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(*timestamp);
    Duration::from_secs(elapsed.as_secs().max(0) as u64)
}

impl Syncer {
    pub(crate) async fn reconcile_service(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        // Its endpoint slices' host copies depend on it existing without a selector (§3.5).
        self.endpoint_slices_of(namespace, name);
        if namespace == "default" && name == "kubernetes" {
            return self.reconcile_kubernetes().await;
        }
        if !self.config.services {
            return Ok(());
        }
        let context = &self.config.context;
        let host = host_name(context, name, namespace);
        let virtual_service = crate::cached_virtual(&self.services, Some(namespace), name);
        let host_service_now = cached_host(&self.host_services, Some(self.host_namespace()), &host)
            .filter(|h| self.belongs("Service", h.as_ref(), namespace, name));
        let host_api: Api<Service> = self.host_api();
        let virtual_api: Api<Service> = Api::namespaced(self.virtual_client.clone(), namespace);
        match (virtual_service, host_service_now) {
            (None, None) => {
                self.forget("Service", namespace, name);
                Ok(())
            }
            (None, Some(_)) if lock(&self.recreating).contains(&(namespace.to_string(), name.to_string())) => {
                // Being re-created with the host's address (§3.4): the host service stays.
                self.queue.send_after(Duration::from_secs(1), Work::Service(namespace.into(), name.into()));
                Ok(())
            }
            (None, Some(host_service_obj)) => {
                let blocked = host_service_obj.annotations().get(BLOCK_DELETION).is_some_and(|v| v == "true");
                let age =
                    host_service_obj.metadata.creation_timestamp.as_ref().map(|t| age(&t.0)).unwrap_or(Duration::ZERO);
                if blocked && age < BLOCK_DELETION_WINDOW {
                    self.queue.send_after(Duration::from_secs(10), Work::Service(namespace.into(), name.into()));
                    return Ok(());
                }
                ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)
            }
            (Some(_), None) if self.seen("Service", &host) => {
                tracing::info!(%namespace, %name, "host service deleted; deleting the virtual service");
                ignore_not_found(virtual_api.delete(name, &DeleteParams::default()).await)
            }
            (Some(virtual_service), None) => {
                // Created before the syncer ran (or without the API hook): give it a host copy.
                let none = crate::patches::Patches::default();
                let patches = self.config.patches.get("Service").unwrap_or(&none);
                allocate_on_host(&self.host_client, context, to_value(virtual_service.as_ref()), patches)
                    .await
                    .map(|_| ())
            }
            (Some(virtual_service), Some(host_service_obj)) => {
                if !self.record(virtual_service.as_ref(), self.pair("Service", namespace, name, &host), vec![]).await {
                    return Ok(());
                }
                let uid = virtual_service.uid().unwrap_or_default();
                self.restore_bookkeeping(host_service_obj.as_ref(), "Service", namespace, name, &uid).await?;
                let virtual_value = to_value(virtual_service.as_ref());
                let host_value = to_value(host_service_obj.as_ref());
                let unpatched = host_service(context, &virtual_value);
                let mut desired = unpatched.clone();
                self.patch_to_host("Service", namespace, &mut desired)?;
                // A field a translate rule keeps off the host is left as the host has it.
                let kept_home =
                    |field: &str| unpatched["spec"].get(field).is_some() && desired["spec"].get(field).is_none();
                let mut metadata = serde_json::Map::new();
                if host_service_obj.annotations().contains_key(BLOCK_DELETION) {
                    metadata.insert("annotations".into(), json!({BLOCK_DELETION: null}));
                }
                if let Some(owned) =
                    self.owned(json!({}), has_controller(virtual_service.as_ref())).pointer("/metadata/ownerReferences")
                    && host_service_obj.owner_references().is_empty()
                {
                    metadata.insert("ownerReferences".into(), owned.clone());
                }
                // §3.4: a virtual cluster IP that is not the host's (the host service was made
                // again while the syncer was away) means re-creating the virtual service.
                let ip = |v: &Value| v.pointer("/spec/clusterIP").and_then(Value::as_str).map(String::from);
                if self.config.services_take_host_addresses
                    && let (Some(virtual_ip), Some(host_ip)) = (ip(&virtual_value), ip(&host_value))
                    && virtual_ip != host_ip
                    && ![virtual_ip.as_str(), host_ip.as_str()].iter().any(|i| i.is_empty() || *i == "None")
                {
                    return self.recreate_virtual_service(&virtual_api, virtual_service.as_ref(), &host_ip).await;
                }
                // The selector follows the virtual service (translated).
                let mut spec = serde_json::Map::new();
                let want = desired["spec"].get("selector").cloned().unwrap_or(Value::Null);
                if want != host_value["spec"].get("selector").cloned().unwrap_or(Value::Null) && !kept_home("selector")
                {
                    spec.insert("selector".into(), want);
                }
                // The other fields both ways (§3.4 CopyBidirectional): the virtual value as the
                // host would get it (translate rules applied; node ports as allocated).
                let mut virtual_spec = serde_json::Map::new();
                for field in vkube_translate::services::BIDIRECTIONAL.iter().filter(|f| !kept_home(f)) {
                    let source =
                        if matches!(*field, "ports" | "healthCheckNodePort") { &virtual_value } else { &desired };
                    if let Some(value) = source["spec"].get(*field) {
                        virtual_spec.insert(field.to_string(), value.clone());
                    }
                }
                let mut host_spec = host_value["spec"].clone();
                if let Some(map) = host_spec.as_object_mut() {
                    map.retain(|k, _| !kept_home(k));
                }
                let (host_version, virtual_version) =
                    (crate::version_of(host_service_obj.as_ref()), crate::version_of(virtual_service.as_ref()));
                let last = lock(&self.last_service_spec).get(&host).cloned();
                let virtual_spec = match &last {
                    Some((agreed, _, seen)) if virtual_version < *seen => Value::Object(agreed.clone()),
                    _ => Value::Object(virtual_spec),
                };
                let host_spec = match &last {
                    Some((agreed, seen, _)) if host_version < *seen => Value::Object(agreed.clone()),
                    _ => host_spec,
                };
                let both = vkube_translate::services::sync_spec(last.as_ref().map(|l| &l.0), &virtual_spec, &host_spec);
                spec.extend(both.host);
                let mut versions = (host_version, virtual_version);
                if !spec.is_empty() || !metadata.is_empty() {
                    // On the version read (a concurrent change is a Conflict: read again).
                    metadata.insert("resourceVersion".into(), json!(host_service_obj.resource_version()));
                    let patch = json!({"metadata": metadata, "spec": spec});
                    if let Some(written) = ignore_not_found_value(
                        host_api.patch(&host, &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await,
                    )? {
                        versions.0 = crate::version_of(&written);
                    }
                }
                if !both.virtual_.is_empty() {
                    let patch = Patch::Merge(
                        json!({"metadata": {"resourceVersion": virtual_service.resource_version()}, "spec": both.virtual_}),
                    );
                    if let Some(written) =
                        ignore_not_found_value(virtual_api.patch(name, &PatchParams::apply(MANAGER), &patch).await)?
                    {
                        versions.1 = crate::version_of(&written);
                    }
                }
                lock(&self.last_service_spec).insert(host.clone(), (both.agreed, versions.0, versions.1));
                let excluded = vkube_translate::metadata_sync::Excluded {
                    keys: &["field.cattle.io/publicEndpoints", BLOCK_DELETION],
                    prefixes: &[],
                };
                self.sync_metadata(
                    "Service",
                    &virtual_api,
                    virtual_service.as_ref(),
                    host_service_obj.as_ref(),
                    excluded,
                )
                .await?;
                let mut host_status = json!({"status": host_value.get("status").cloned().unwrap_or(json!({}))});
                self.patch_to_virtual("Service", namespace, &mut host_status)?;
                let host_status = host_status["status"].take();
                // §3.4: the status is the host's, whole (a load balancer written only on the
                // virtual side does not survive).
                let virtual_status = virtual_value.get("status").cloned().unwrap_or(json!({}));
                if virtual_status != host_status {
                    let patch = json!({"status": crate::forcing_patch(&virtual_status, &host_status)});
                    ignore_not_found(
                        virtual_api.patch_status(name, &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await,
                    )?;
                }
                Ok(())
            }
        }
    }

    /// Deletes and creates again virtual service `service` so that it takes the host's cluster IP
    /// `host_ip` (the create reuses the existing host service). The host service is kept meanwhile.
    async fn recreate_virtual_service(
        &self,
        virtual_api: &Api<Service>,
        service: &Service,
        host_ip: &str,
    ) -> Result<(), kube::Error> {
        let (namespace, name) = (service.namespace().unwrap_or_default(), service.name_any());
        tracing::info!(%namespace, %name, %host_ip, "the virtual cluster IP is not the host's; re-creating the virtual service");
        let key = (namespace.clone(), name.clone());
        lock(&self.recreating).insert(key.clone());
        let result = async {
            let only_this = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(kube::api::Preconditions { uid: service.uid(), resource_version: None }),
                ..DeleteParams::default()
            };
            ignore_not_found(virtual_api.delete(&name, &only_this).await)?;
            let mut again = to_value(service);
            if let Some(meta) = again.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.retain(|k, _| {
                    matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations" | "ownerReferences")
                });
            }
            if let Some(spec) = again.get_mut("spec").and_then(Value::as_object_mut) {
                for field in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
                    spec.remove(field);
                }
            }
            if let Some(map) = again.as_object_mut() {
                map.remove("status");
            }
            let object: Service = serde_json::from_value(again).map_err(kube::Error::SerdeError)?;
            virtual_api.create(&PostParams::default(), &object).await.map(|_| ())
        }
        .await;
        lock(&self.recreating).remove(&key);
        result
    }

    /// The host endpoints of virtual service `namespace/name`: a copy of the virtual endpoints when
    /// the service has no selector; otherwise none written by the syncer (the host makes them).
    pub(crate) async fn reconcile_endpoints(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        if !self.config.endpoints || (namespace == "default" && name == "kubernetes") {
            return Ok(());
        }
        let host = host_name(&self.config.context, name, namespace);
        let service = cached(&self.services, Some(namespace), name);
        let endpoints = cached(&self.endpoints, Some(namespace), name);
        let current = cached_host(&self.host_endpoints, Some(self.host_namespace()), &host)
            .filter(|h| self.belongs("Endpoints", h.as_ref(), namespace, name));
        let host_api: Api<Endpoints> = self.host_api();
        let selector_less = service
            .as_ref()
            .is_some_and(|s| s.spec.as_ref().and_then(|spec| spec.selector.as_ref()).is_none_or(|s| s.is_empty()));
        let (Some(endpoints), true) = (endpoints.filter(|_| selector_less), selector_less) else {
            // No service, a service with a selector, or no endpoints: nothing of ours on the host.
            if current.is_some() {
                ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)?;
            } else {
                self.forget("Endpoints", namespace, name);
            }
            return Ok(());
        };
        if !self.record(endpoints.as_ref(), self.pair("Endpoints", namespace, name, &host), vec![]).await {
            return Ok(());
        }
        let value = to_value(endpoints.as_ref());
        let Some(current) = current else {
            let desired = host_endpoints(&self.config.context, &value);
            return self.create_on_host::<Endpoints>(self.owned(desired, false)).await;
        };
        let subsets = host_subsets(&self.config.context, value.get("subsets"));
        let have = to_value(current.as_ref()).get("subsets").cloned().unwrap_or(json!([]));
        // The host may default fields (port protocols): compare with what was last written too.
        let key = format!("Endpoints/{host}");
        if subsets != have && lock(&self.last_synced).get(&key) != Some(&subsets) {
            let patch = json!({"subsets": subsets});
            ignore_not_found(host_api.patch(&host, &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await)?;
            lock(&self.last_synced).insert(key, subsets);
        }
        Ok(())
    }
}
