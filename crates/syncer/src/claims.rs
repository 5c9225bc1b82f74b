//! Persistent volume claims: created on the host, bound there; the binding (volume name, bind
//! annotations, status) comes back and the virtual cluster shows a fake persistent volume for
//! it. Requests (volume expansion) go virtual → host; deletion both ways.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use vkube_translate::claims::{HOST_PV, fake_volume, host_claim_with, imported_volume, virtual_claim_patch};
use vkube_translate::names::host_name;

use crate::cached_host;
use crate::{MANAGER, Syncer, cached, ensure, events, has_controller, ignore_not_found, lock, to_value};

/// Claim annotations that do not sync after creation (§2.8): the binding's, which come back
/// host → virtual on their own, and the storage class ones translated at creation.
const CLAIM_METADATA: vkube_translate::metadata_sync::Excluded = vkube_translate::metadata_sync::Excluded {
    keys: &[
        "volume.beta.kubernetes.io/storage-class",
        "volume.beta.kubernetes.io/storage-provisioner",
        "volume.kubernetes.io/storage-provisioner",
        "volume.kubernetes.io/selected-node",
    ],
    prefixes: &["pv.kubernetes.io/"],
};

impl Syncer {
    pub(crate) async fn reconcile_claim(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        if !self.config.claims {
            return Ok(());
        }
        let host = host_name(&self.config.context, name, namespace);
        let virtual_claim = cached(&self.claims, Some(namespace), name);
        let host_claim_now = cached_host(&self.host_claims, Some(self.host_namespace()), &host);
        let kind = "PersistentVolumeClaim";
        if let Some(other) = host_claim_now.as_ref().filter(|h| !self.belongs(kind, h.as_ref(), namespace, name)) {
            if let Some(claim) = &virtual_claim {
                let owner = crate::virtual_key_of(&self.mappings, kind, other.as_ref())
                    .map(|(ns, n)| format!("{ns}/{n}"))
                    .unwrap_or_default();
                let message = format!(
                    "cannot sync: host name {}/{host} is already used by claim {owner}; rename this claim",
                    self.host_namespace()
                );
                let target = events::Target::of(claim.as_ref());
                self.recorder.warn(&target, "SyncWarning", "SyncPersistentVolumeClaim", &message).await;
            }
            return Ok(());
        }
        let virtual_api: Api<PersistentVolumeClaim> = Api::namespaced(self.virtual_client.clone(), namespace);
        let host_api: Api<PersistentVolumeClaim> = self.host_api();
        let now = DeleteParams::default().grace_period(0);
        match (virtual_claim, host_claim_now) {
            (None, None) => {
                self.forget(kind, namespace, name);
                Ok(())
            }
            (None, Some(host_claim_obj)) => {
                if host_claim_obj.metadata.deletion_timestamp.is_none() {
                    tracing::info!(%namespace, %name, "virtual claim deleted; deleting the host claim");
                    ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)?;
                }
                Ok(())
            }
            (Some(_), None) if self.seen("PersistentVolumeClaim", &host) => {
                tracing::info!(%namespace, %name, "host claim deleted; deleting the virtual claim");
                ignore_not_found(virtual_api.delete(name, &now).await)
            }
            (Some(claim), None) => {
                if claim.metadata.deletion_timestamp.is_some() {
                    return Ok(());
                }
                let class = claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref());
                if let Some(message) = self.class_refusal("StorageClass", class) {
                    let target = events::Target::of(claim.as_ref());
                    self.recorder.warn(&target, "SyncWarning", "SyncPersistentVolumeClaim", &message).await;
                    return Ok(());
                }
                if !self.record(claim.as_ref(), self.pair(kind, namespace, name, &host), vec![]).await {
                    return Ok(());
                }
                let (classes, volumes) =
                    (self.config.optional.storage_classes_to_host, self.config.optional.persistent_volumes_to_host);
                // §3.8: a dynamically provisioned claim keeps a class the host has.
                let class = claim.spec.as_ref().and_then(|s| s.storage_class_name.clone()).filter(|c| !c.is_empty());
                let host_has_class = match class.filter(|_| volumes && !classes) {
                    Some(class) => {
                        let host_classes: Api<k8s_openapi::api::storage::v1::StorageClass> =
                            Api::all(self.host_client.clone());
                        // Not allowed to look: assume it is the host's.
                        !matches!(host_classes.get_opt(&class).await, Ok(None))
                    }
                    None => true,
                };
                let value = to_value(claim.as_ref());
                let desired = host_claim_with(&self.config.context, &value, classes, volumes, host_has_class);
                self.create_on_host::<PersistentVolumeClaim>(self.owned(desired, has_controller(claim.as_ref()))).await
            }
            (Some(claim), Some(host_claim_obj)) => {
                if claim.metadata.deletion_timestamp.is_some() {
                    if host_claim_obj.metadata.deletion_timestamp.is_none() {
                        ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)?;
                    }
                    return Ok(());
                }
                if host_claim_obj.metadata.deletion_timestamp.is_some() {
                    return ignore_not_found(virtual_api.delete(name, &DeleteParams::default()).await);
                }
                if !self.record(claim.as_ref(), self.pair(kind, namespace, name, &host), vec![]).await {
                    return Ok(());
                }
                let uid = claim.uid().unwrap_or_default();
                self.restore_bookkeeping(host_claim_obj.as_ref(), kind, namespace, name, &uid).await?;
                let virtual_value = to_value(claim.as_ref());
                let host_value = to_value(host_claim_obj.as_ref());
                let want = virtual_value.pointer("/spec/resources/requests");
                if want.is_some() && want != host_value.pointer("/spec/resources/requests") {
                    let patch = json!({"spec": {"resources": {"requests": want}}});
                    ignore_not_found(host_api.patch(&host, &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await)?;
                }
                self.sync_metadata(kind, &virtual_api, claim.as_ref(), host_claim_obj.as_ref(), CLAIM_METADATA).await?;
                if let Some(patch) = virtual_claim_patch(&virtual_value, &host_value) {
                    ignore_not_found(
                        virtual_api.patch(name, &PatchParams::apply(MANAGER), &Patch::Merge(patch)).await,
                    )?;
                }
                let host_status = host_value.get("status").cloned().unwrap_or(Value::Null);
                if !host_status.is_null() && virtual_value.get("status") != Some(&host_status) {
                    let patch = Patch::Merge(json!({"status": host_status}));
                    ignore_not_found(virtual_api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await)?;
                }
                Ok(())
            }
        }
    }

    /// The volume a virtual claim is bound to exists exactly while it is: a fake one, or with
    /// `sync.toHost.persistentVolumes.enabled` the host volume provisioned for the claim's host
    /// copy, imported under its own name (§3.9).
    pub(crate) async fn reconcile_volume(&self, name: &str) -> Result<(), kube::Error> {
        let tenant = self.extras.volumes_to_host.as_ref().and_then(|t| cached(&t.virtual_objects, None, name));
        if tenant.as_ref().is_some_and(|v| !v.annotations().contains_key(HOST_PV)) {
            // The tenant's own volume (synced to the host), not one to fake or import.
            return Ok(());
        }
        let user = lock(&self.volume_users).get(name).cloned();
        let claim = user
            .and_then(|(ns, claim)| cached(&self.claims, Some(&ns), &claim))
            .filter(|c| c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name));
        let volume = cached(&self.volumes, None, name).or(tenant);
        let api: Api<PersistentVolume> = Api::all(self.virtual_client.clone());
        let remove = |volume: std::sync::Arc<PersistentVolume>| {
            let api = api.clone();
            async move {
                if volume.finalizers().iter().len() > 0 {
                    let patch = Patch::Merge(json!({"metadata": {"finalizers": null}}));
                    ignore_not_found(api.patch(&volume.name_any(), &PatchParams::apply(MANAGER), &patch).await)?;
                }
                ignore_not_found(api.delete(&volume.name_any(), &DeleteParams::default()).await)
            }
        };
        let Some(claim) = claim else {
            return match volume {
                Some(volume) => remove(volume).await,
                None => Ok(()),
            };
        };
        if self.config.optional.persistent_volumes_to_host {
            let host_api: Api<PersistentVolume> = Api::all(self.host_client.clone());
            let Some(host_volume) = host_api.get_opt(name).await? else {
                // The host volume is gone: so is its import.
                return match volume.filter(|v| v.annotations().contains_key(HOST_PV)) {
                    Some(volume) => remove(volume).await,
                    None => Ok(()),
                };
            };
            let desired = imported_volume(&to_value(&host_volume), &to_value(claim.as_ref()));
            let Some(current) = volume else {
                ensure(&api, desired.clone()).await?;
                let patch = Patch::Merge(json!({"status": desired["status"]}));
                return ignore_not_found(api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await);
            };
            if !current.annotations().contains_key(HOST_PV) {
                // A fake volume from before: the import takes its place.
                return remove(current).await;
            }
            let current_value = to_value(current.as_ref());
            let differs = |key: &str| {
                let strip = |v: &Value| {
                    let mut v = v.get(key).cloned().unwrap_or(Value::Null);
                    if let Some(claim) = v.get_mut("claimRef").and_then(Value::as_object_mut) {
                        claim.remove("resourceVersion");
                    }
                    v
                };
                strip(&current_value) != strip(&desired)
            };
            if differs("spec") {
                let patch = Patch::Merge(json!({"spec": desired["spec"]}));
                ignore_not_found(api.patch(name, &PatchParams::apply(MANAGER), &patch).await)?;
            }
            if differs("status") {
                let patch = Patch::Merge(json!({"status": desired["status"]}));
                ignore_not_found(api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await)?;
            }
            return Ok(());
        }
        if volume.is_none() {
            ensure(&api, fake_volume(&to_value(claim.as_ref()), name)).await?;
        }
        let phase = volume.as_ref().and_then(|v| v.status.as_ref()).and_then(|s| s.phase.as_deref());
        if phase != Some("Bound") {
            let patch = Patch::Merge(json!({"status": {"phase": "Bound"}}));
            ignore_not_found(api.patch_status(name, &PatchParams::apply(MANAGER), &patch).await)?;
        }
        Ok(())
    }
}
