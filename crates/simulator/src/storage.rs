//! The simulated host's storage: a default StorageClass whose provisioner binds every pending
//! claim to a new volume at once (like a cloud disk that appears instantly), and a garbage
//! collector for objects owned by a deleted Service (how a virtual cluster's host objects go
//! when its service is deleted).

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::MANAGER;
use vkube_controllers::create_if_absent;

/// Name of the default storage class.
pub const STORAGE_CLASS: &str = "standard";
/// Provisioner of the default storage class.
pub const PROVISIONER: &str = "vkube.io/simulated";

/// The volume the provisioner makes for `claim`, and the claim's binding.
pub fn volume_for(claim: &Value) -> Option<(Value, Value, Value)> {
    let uid = claim.pointer("/metadata/uid").and_then(Value::as_str)?;
    let name = format!("pvc-{uid}");
    let spec = claim.get("spec").cloned().unwrap_or(json!({}));
    let capacity = spec.pointer("/resources/requests").cloned().unwrap_or(json!({"storage": "1Gi"}));
    let access = spec.get("accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"]));
    let volume = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": capacity,
            "accessModes": access,
            "hostPath": {"path": format!("/var/lib/vkube-sim/{name}"), "type": "DirectoryOrCreate"},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName").cloned().unwrap_or(json!(STORAGE_CLASS)),
            "volumeMode": spec.get("volumeMode").cloned().unwrap_or(json!("Filesystem")),
            "claimRef": {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": claim.pointer("/metadata/namespace"), "name": claim.pointer("/metadata/name"), "uid": uid,
            },
        },
    });
    let binding = json!({
        "metadata": {"annotations": {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.beta.kubernetes.io/storage-provisioner": PROVISIONER,
        }},
        "spec": {"volumeName": name},
    });
    let status = json!({"status": {"phase": "Bound", "accessModes": access, "capacity": capacity}});
    Some((volume, binding, status))
}

async fn bind(client: &Client, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
    let value = serde_json::to_value(claim).map_err(kube::Error::SerdeError)?;
    let Some((volume, binding, status)) = volume_for(&value) else { return Ok(()) };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume_name = volume["metadata"]["name"].as_str().unwrap_or_default().to_string();
    create_if_absent(&volumes, volume, MANAGER).await?;
    let params = PatchParams::apply(MANAGER);
    volumes.patch_status(&volume_name, &params, &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    let name = claim.name_any();
    claims.patch(&name, &params, &Patch::Merge(binding)).await?;
    claims.patch_status(&name, &params, &Patch::Merge(status)).await?;
    Ok(())
}

/// Binds a claim that names its volume (static provisioning), as the host's volume controller
/// does, when the volume exists and is free.
async fn bind_static(client: &Client, claim: &PersistentVolumeClaim, volume: &str) -> Result<(), kube::Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let Some(existing) = volumes.get_opt(volume).await? else { return Ok(()) };
    let uid = claim.uid().unwrap_or_default();
    let taken = existing.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.clone());
    if taken.is_some_and(|t| t != uid) {
        return Ok(());
    }
    let params = PatchParams::apply(MANAGER);
    let claim_ref = json!({"spec": {"claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
        "namespace": claim.namespace(), "name": claim.name_any(), "uid": uid}}});
    volumes.patch(volume, &params, &Patch::Merge(claim_ref)).await?;
    volumes.patch_status(volume, &params, &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await?;
    let spec = existing.spec.unwrap_or_default();
    let status = json!({"status": {"phase": "Bound", "accessModes": spec.access_modes, "capacity": spec.capacity}});
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    let annotations = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}}});
    claims.patch(&claim.name_any(), &params, &Patch::Merge(annotations)).await?;
    claims.patch_status(&claim.name_any(), &params, &Patch::Merge(status)).await?;
    Ok(())
}

/// What happens to a volume whose claim is gone: deleted under the `Delete` reclaim policy
/// (dynamically provisioned volumes), `Released` under `Retain`.
async fn release(volumes: &Api<PersistentVolume>, volume: &str) {
    let Ok(Some(existing)) = volumes.get_opt(volume).await else { return };
    let policy = existing.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.clone());
    if policy.as_deref() == Some("Retain") {
        let patch = Patch::Merge(json!({"status": {"phase": "Released"}}));
        let _ = volumes.patch_status(volume, &PatchParams::apply(MANAGER), &patch).await;
    } else {
        let _ = volumes.delete(volume, &DeleteParams::default()).await;
    }
}

/// Registers the default storage class and binds claims until the future is dropped.
pub async fn provision(client: Client) {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": true,
    });
    if let Err(error) = create_if_absent(&classes, class, MANAGER).await {
        tracing::warn!(%error, "could not register the default storage class");
    }
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let stream = watcher::watcher(claims, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(claim) | Event::InitApply(claim)) => {
                let named = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
                let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                if claim.metadata.deletion_timestamp.is_some() || (named.is_some() && bound) {
                    continue;
                }
                // A failure is retried when the claim changes or on the next start.
                let result = match named {
                    None => bind(&client, &claim).await,
                    Some(volume) => bind_static(&client, &claim, &volume).await,
                };
                if let Err(error) = result {
                    tracing::debug!(%error, claim = %claim.name_any(), "could not bind the claim");
                }
            }
            Ok(Event::Delete(claim)) => {
                if let Some(volume) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                    release(&volumes, &volume).await;
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "claim watch error"),
        }
    }
}

async fn delete_owned<K>(client: &Client, namespace: &str, owner_uid: &str) -> Result<usize, kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut deleted = 0;
    for object in api.list(&ListParams::default()).await?.items {
        if object.owner_references().iter().any(|o| o.uid == owner_uid) {
            match api.delete(&object.name_any(), &DeleteParams::background()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(deleted)
}

/// Deletes the namespaced objects a deleted Service owned, until the future is dropped.
pub async fn collect_owned_by_services(client: Client) {
    let services: Api<Service> = Api::all(client.clone());
    let stream = watcher::watcher(services, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let Ok(Event::Delete(service)) = event else { continue };
        let (Some(namespace), Some(uid)) = (service.namespace(), service.uid()) else { continue };
        let result = async {
            let mut total = delete_owned::<Pod>(&client, &namespace, &uid).await?;
            total += delete_owned::<ConfigMap>(&client, &namespace, &uid).await?;
            total += delete_owned::<Secret>(&client, &namespace, &uid).await?;
            total += delete_owned::<Service>(&client, &namespace, &uid).await?;
            total += delete_owned::<Endpoints>(&client, &namespace, &uid).await?;
            total += delete_owned::<PersistentVolumeClaim>(&client, &namespace, &uid).await?;
            Ok::<_, kube::Error>(total)
        }
        .await;
        match result {
            Ok(total) => {
                tracing::info!(%namespace, service = %service.name_any(), total, "deleted objects the service owned")
            }
            Err(error) => tracing::warn!(%error, "garbage collection after a service deletion failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_gets_a_volume_of_its_size() {
        let claim = json!({"metadata": {"name": "data", "namespace": "ns", "uid": "abc"},
                           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}});
        let (volume, binding, status) = volume_for(&claim).unwrap();
        assert_eq!(volume["metadata"]["name"], "pvc-abc");
        assert_eq!(volume["spec"]["capacity"]["storage"], "5Gi");
        assert_eq!(volume["spec"]["claimRef"]["name"], "data");
        assert_eq!(volume["spec"]["storageClassName"], STORAGE_CLASS);
        assert_eq!(binding["spec"]["volumeName"], "pvc-abc");
        assert_eq!(status["status"]["phase"], "Bound");
        assert_eq!(status["status"]["capacity"]["storage"], "5Gi");
        assert!(volume_for(&json!({"metadata": {"name": "no-uid"}})).is_none());
    }
}
