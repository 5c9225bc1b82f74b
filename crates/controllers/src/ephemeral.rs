//! The ephemeral-volume controller: for every generic ephemeral volume of a pod, the claim
//! `<pod>-<volume>` made from the volume's `volumeClaimTemplate` and owned by the pod (so it goes
//! with the pod), as kube-controller-manager's `ephemeral-volume-controller` makes it.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::Controllers;

/// The claims `pod` needs for its ephemeral volumes (pure).
pub(crate) fn desired_claims(pod: &Pod) -> Vec<Value> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    let owner = json!({"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(),
        "uid": pod.metadata.uid.clone().unwrap_or_default(), "controller": true, "blockOwnerDeletion": true});
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|volume| {
            let template = volume.ephemeral.as_ref()?.volume_claim_template.as_ref()?;
            let metadata = template.metadata.clone().unwrap_or_default();
            Some(json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": format!("{}-{}", pod.name_any(), volume.name),
                    "namespace": pod.namespace().unwrap_or_default(),
                    "labels": metadata.labels.unwrap_or_default(),
                    "annotations": metadata.annotations.unwrap_or_default(),
                    "ownerReferences": [owner.clone()],
                },
                "spec": template.spec,
            }))
        })
        .collect()
}

impl Controllers {
    /// Creates the missing claims of pod `namespace/name`'s ephemeral volumes. A claim of that
    /// name that the pod does not own is left alone (upstream: the pod waits).
    pub(crate) async fn ephemeral_volumes(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let Some(pod) = self.pods.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)) else {
            return Ok(());
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        for claim in desired_claims(&pod) {
            let claim: PersistentVolumeClaim = serde_json::from_value(claim).map_err(kube::Error::SerdeError)?;
            match claims
                .create(
                    &PostParams { field_manager: Some("ephemeral-volume-controller".into()), ..Default::default() },
                    &claim,
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let existing = claims.get(&claim.name_any()).await?;
                    let owned = existing.owner_references().iter().any(|o| Some(&o.uid) == pod.metadata.uid.as_ref());
                    if !owned {
                        tracing::info!(%namespace, pod = %name, claim = %claim.name_any(), "PVC was not created for the pod (the pod is not its owner)");
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ephemeral_volume_gets_a_claim_owned_by_the_pod() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}], "volumes": [
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}},
                {"name": "cache", "emptyDir": {}}]}}))
        .unwrap();
        let claims = desired_claims(&pod);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0]["metadata"]["name"], "web-scratch");
        assert_eq!(claims[0]["metadata"]["labels"]["a"], "b");
        assert_eq!(claims[0]["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(claims[0]["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "1Gi");
    }
}
