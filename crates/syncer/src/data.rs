//! Config maps and secrets: on the host exactly those some virtual pod uses (or all, when
//! configured), with their data synced both ways; a host copy nothing uses any more is deleted.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use vkube_translate::Context;
use vkube_translate::names::host_name;
use vkube_translate::pods::{config_map_host_name, host_copy, references};

use crate::cached_host;
use crate::refs::{DataKind, Use};
use crate::{
    MANAGER, Namespaced, Syncer, cached, events, has_controller, ignore_not_found, lock, to_value, version_of,
    virtual_key_of,
};

/// The host config maps and secrets `pod` needs.
pub(crate) fn uses_of_pod(context: &Context, pod: &Pod) -> BTreeSet<Use> {
    let namespace = pod.namespace().unwrap_or_default();
    let refs = references(&to_value(pod));
    let maps = refs.config_maps.into_iter().map(|name| Use {
        kind: DataKind::ConfigMap,
        host: config_map_host_name(context, &name, &namespace),
        namespace: namespace.clone(),
        name,
    });
    let secrets = refs.secrets.into_iter().map(|name| Use {
        kind: DataKind::Secret,
        host: host_name(context, &name, &namespace),
        namespace: namespace.clone(),
        name,
    });
    maps.chain(secrets).collect()
}

/// `vcluster.loft.sh/force-sync: "true"`: a config map or secret synced although no pod uses it.
pub(crate) fn forced<K: kube::Resource>(object: &K) -> bool {
    object.meta().annotations.as_ref().and_then(|a| a.get(FORCE_SYNC)).is_some_and(|v| v == "true")
}

/// The annotation that syncs an unused config map or secret (§2.9).
pub(crate) const FORCE_SYNC: &str = "vcluster.loft.sh/force-sync";

/// The use a virtual object makes of its own host copy when every object of its kind syncs.
pub(crate) fn own_use(kind: DataKind, host: &str, namespace: &str, name: &str, deleted: bool) -> BTreeSet<Use> {
    if deleted {
        return BTreeSet::new();
    }
    BTreeSet::from([Use { kind, host: host.into(), namespace: namespace.into(), name: name.into() }])
}

impl Syncer {
    /// Makes host copy `host` match what its users need: absent when unused, else the data of
    /// the virtual object it stands for.
    pub(crate) async fn reconcile_data(&self, kind: DataKind, host: &str) -> Result<(), kube::Error> {
        let enabled = match kind {
            DataKind::ConfigMap => self.config.config_maps,
            DataKind::Secret => self.config.secrets,
        };
        if !enabled {
            return Ok(());
        }
        // One reconcile of a host copy at a time: the work queue runs each key once, but a pod
        // about to be created reconciles what it uses directly.
        let gate = lock(&self.data_gates).entry((kind, host.to_string())).or_default().clone();
        let _turn = gate.lock().await;
        let sources = lock(&self.refs).sources(kind, host);
        match kind {
            DataKind::ConfigMap => {
                let current = cached_host(&self.host_config_maps, Some(self.host_namespace()), host);
                self.reconcile_copy(kind, host, sources, current, &self.config_maps).await
            }
            DataKind::Secret => {
                let current = cached_host(&self.host_secrets, Some(self.host_namespace()), host);
                self.reconcile_copy(kind, host, sources, current, &self.secrets).await
            }
        }
    }

    async fn reconcile_copy<K: Namespaced>(
        &self,
        kind: DataKind,
        host: &str,
        sources: Vec<(String, String)>,
        current: Option<std::sync::Arc<K>>,
        virtual_store: &kube::runtime::reflector::Store<K>,
    ) -> Result<(), kube::Error> {
        let host_api: Api<K> = self.host_api();
        if sources.is_empty() {
            if current.is_some() {
                tracing::info!(kind = kind.kind(), %host, "no longer used; deleting the host copy");
                ignore_not_found(host_api.delete(host, &DeleteParams::default()).await)?;
            }
            lock(&self.last_synced).remove(host);
            lock(&self.data_versions).remove(host);
            lock(&self.last_metadata).remove(&(kind.kind(), host.to_string()));
            let host_name = crate::ObjectName::new(self.host_namespace(), host);
            if let Some(owner) = self.mappings.virtual_of(kind.kind(), &host_name) {
                self.mappings.remove(kind.kind(), &owner);
            }
            return Ok(());
        }
        // Several virtual objects may stand for one host name: the shared kube-root-ca.crt copy
        // by design, any other pair only by a name collision, which is refused.
        let holder = current
            .as_ref()
            .and_then(|c| virtual_key_of(&self.mappings, kind.kind(), c.as_ref()))
            .filter(|key| sources.contains(key));
        let (namespace, name) = holder.unwrap_or_else(|| sources[0].clone());
        let shared = kind == DataKind::ConfigMap && name == "kube-root-ca.crt";
        if !shared {
            for (other_ns, other) in sources.iter().filter(|(ns, n)| *ns != namespace || *n != name) {
                if let Some(object) = cached(virtual_store, Some(other_ns), other) {
                    let message = format!(
                        "cannot sync: host name {}/{host} is already used by {} {namespace}/{name}; rename this {}",
                        self.host_namespace(),
                        kind.kind(),
                        kind.kind()
                    );
                    let action = format!("Sync{}", kind.kind());
                    self.recorder.warn(&events::Target::of(object.as_ref()), "SyncWarning", &action, &message).await;
                }
            }
        }
        let Some(source) = crate::cached_virtual(virtual_store, Some(&namespace), &name) else {
            // Referenced but not created yet: its watch event brings it here again.
            return Ok(());
        };
        if !shared && !self.record(source.as_ref(), self.pair(kind.kind(), &namespace, &name, host), vec![]).await {
            return Ok(());
        }
        if let Some(current) = current.as_deref() {
            let uid = source.uid().unwrap_or_default();
            // A virtual object re-created under the same name (§3.0.2): its host copy is made
            // again from the new object, not merged with the old one's data.
            let recorded = current.annotations().get(vkube_translate::metadata::OBJECT_UID).cloned();
            if recorded.is_some_and(|recorded| !recorded.is_empty() && recorded != uid) {
                tracing::info!(kind = kind.kind(), %host, "the virtual object was re-created; re-creating its host copy");
                let only_that_copy = DeleteParams {
                    preconditions: Some(kube::api::Preconditions { uid: current.uid(), resource_version: None }),
                    ..DeleteParams::default()
                };
                ignore_not_found(host_api.delete(host, &only_that_copy).await)?;
                lock(&self.last_synced).remove(host);
                lock(&self.data_versions).remove(host);
                return Ok(());
            }
            self.restore_bookkeeping(current, kind.kind(), &namespace, &name, &uid).await?;
        }
        let virtual_api: Api<K> = Api::namespaced(self.virtual_client.clone(), &namespace);
        if let (Some(current), false) = (current.as_deref(), shared) {
            self.sync_metadata(kind.kind(), &virtual_api, source.as_ref(), current, Default::default()).await?;
        }
        let fields: &[&str] = match kind {
            DataKind::ConfigMap => &["data", "binaryData"],
            DataKind::Secret => &["data"],
        };
        self.sync_data(kind, host, source.as_ref(), current.as_deref(), &virtual_api, &host_api, fields).await
    }

    /// Data of config maps and secrets syncs both ways: a change on one side since the last sync
    /// is copied to the other; when both changed, the virtual side wins.
    #[allow(clippy::too_many_arguments)]
    async fn sync_data<K: Namespaced>(
        &self,
        kind: DataKind,
        host: &str,
        source: &K,
        current: Option<&K>,
        virtual_api: &Api<K>,
        host_api: &Api<K>,
        fields: &[&str],
    ) -> Result<(), kube::Error> {
        let virtual_value = to_value(source);
        let pick = |value: &Value| -> Value {
            fields
                .iter()
                .map(|f| (f.to_string(), value.get(*f).cloned().unwrap_or(Value::Null)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let virtual_data = pick(&virtual_value);
        let Some(current) = current else {
            let copy = host_copy(&self.config.context, &virtual_value, kind.kind(), host);
            let copy = self.owned(copy, has_controller(source));
            self.create_on_host::<K>(copy).await?;
            lock(&self.last_synced).insert(host.to_string(), virtual_data);
            return Ok(());
        };
        let last = lock(&self.last_synced).get(host).cloned();
        // A cached object older than one this syncer wrote (its watch event not in yet) stands for
        // what was written, not for a change on that side.
        let seen = lock(&self.data_versions).get(host).copied().unwrap_or_default();
        let (host_version, virtual_version) = (version_of(current), version_of(source));
        let host_data = match &last {
            Some(last) if host_version < seen.0 => last.clone(),
            _ => pick(&to_value(current)),
        };
        let virtual_data = match &last {
            Some(last) if virtual_version < seen.1 => last.clone(),
            _ => virtual_data,
        };
        let mut versions = (host_version.max(seen.0), virtual_version.max(seen.1));
        if host_data == virtual_data {
            lock(&self.last_synced).insert(host.to_string(), virtual_data);
            lock(&self.data_versions).insert(host.to_string(), versions);
            return Ok(());
        }
        let host_changed_only = last.as_ref().is_some_and(|last| *last == virtual_data && *last != host_data);
        // The patch carries deletions too (§3.0.5): a key removed on one side goes on the other.
        // It is written on the version read: a concurrent change is a Conflict, read again.
        let on_version = |mut patch: Value, object: &K| {
            patch["metadata"] = json!({"resourceVersion": object.resource_version()});
            Patch::Merge(patch)
        };
        if host_changed_only {
            let patch = on_version(crate::forcing_patch(&virtual_data, &host_data), source);
            let written = virtual_api.patch(&source.name_any(), &PatchParams::apply(MANAGER), &patch).await;
            if let Some(written) = crate::ignore_not_found_value(written)? {
                versions.1 = version_of(&written);
            }
            lock(&self.last_synced).insert(host.to_string(), host_data);
        } else {
            let patch = on_version(crate::forcing_patch(&host_data, &virtual_data), current);
            let written = host_api.patch(host, &PatchParams::apply(MANAGER), &patch).await;
            if let Some(written) = crate::ignore_not_found_value(written)? {
                versions.0 = version_of(&written);
            }
            lock(&self.last_synced).insert(host.to_string(), virtual_data);
        }
        lock(&self.data_versions).insert(host.to_string(), versions);
        Ok(())
    }
}
