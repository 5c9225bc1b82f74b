//! Events: host events about synced objects are mirrored into the virtual cluster (involved
//! object translated back), and the syncer's own problems are recorded as Warning events on the
//! virtual object (reason `SyncError` or `SyncWarning`, sync-behavior.md 3.0.7).

use std::collections::HashMap;

use futures::StreamExt;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::cached_host;
use crate::{MANAGER, Syncer, cached, ignore_not_found, lock, to_value, virtual_key_of};

/// The component name on events the syncer records.
const COMPONENT: &str = "vcluster-syncer";

/// The virtual object an event is about.
pub(crate) struct Target {
    kind: String,
    api_version: String,
    namespace: String,
    name: String,
    uid: String,
}

impl Target {
    /// A custom resource's object.
    pub(crate) fn dynamic(object: &kube::api::DynamicObject, resource: &kube::api::ApiResource) -> Self {
        Target {
            kind: resource.kind.clone(),
            api_version: resource.api_version.clone(),
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            uid: object.uid().unwrap_or_default(),
        }
    }

    pub(crate) fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Target {
            kind: K::kind(&()).to_string(),
            api_version: K::api_version(&()).to_string(),
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            uid: object.uid().unwrap_or_default(),
        }
    }
}

/// The message of an API error without the client's wrapping.
pub(crate) fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// An event already recorded: (object uid, reason, message, action).
type EventKey = (String, String, String, String);

/// Records Warning events, counting repeats on one event instead of creating new ones.
pub(crate) struct Recorder {
    client: Client,
    recorded: Mutex<HashMap<EventKey, (String, i32)>>,
}

impl Recorder {
    pub(crate) fn new(client: Client) -> Self {
        Recorder { client, recorded: Mutex::new(HashMap::new()) }
    }

    pub(crate) async fn warn(&self, target: &Target, reason: &str, action: &str, message: &str) {
        let key = (target.uid.clone(), reason.to_string(), message.to_string(), action.to_string());
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let api: Api<CoreEvent> = Api::namespaced(self.client.clone(), &target.namespace);
        let repeat = lock(&self.recorded).get(&key).cloned();
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.is_ok() {
                lock(&self.recorded).insert(key, (name, count + 1));
                return;
            }
        }
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let name = format!("{}.{:x}", target.name, stamp);
        let event = json!({
            "metadata": {"name": name, "namespace": target.namespace},
            "involvedObject": {"kind": target.kind, "apiVersion": target.api_version, "namespace": target.namespace,
                               "name": target.name, "uid": target.uid},
            "reason": reason,
            "action": action,
            "message": message,
            "type": "Warning",
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
        });
        let Ok(event) = serde_json::from_value::<CoreEvent>(event) else { return };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                lock(&self.recorded).insert(key, (name, 1));
            }
            Err(error) => tracing::debug!(%error, "could not record a warning event"),
        }
    }
}

/// A host event as the watch delivers it.
pub(crate) enum Observed {
    /// Listed when the watch (re)started: may have been mirrored before.
    Initial(CoreEvent),
    /// The initial list is complete.
    InitialDone,
    /// New or changed since.
    Live(CoreEvent),
}

/// How many host events are mirrored at once.
const MIRRORING: usize = 16;

/// Mirrors host events about synced objects until the channel closes. Events of the initial
/// list that the virtual cluster already shows (same name and count) are skipped, so a restart
/// does not rewrite thousands of events.
pub(crate) async fn mirror(
    syncer: std::sync::Arc<Syncer>,
    mut observed: tokio::sync::mpsc::UnboundedReceiver<Observed>,
) {
    let mut known: Option<HashMap<(String, String), i32>> = None;
    let mut pending = Vec::new();
    while let Some(first) = observed.recv().await {
        pending.push(first);
        while let Ok(more) = observed.try_recv() {
            pending.push(more);
        }
        let mut batch = Vec::new();
        let mut initial_done = false;
        for item in pending.drain(..) {
            match item {
                Observed::Initial(event) => {
                    if known.is_none() {
                        known = Some(syncer.mirrored_events().await);
                    }
                    batch.push((event, true));
                }
                Observed::InitialDone => initial_done = true,
                Observed::Live(event) => batch.push((event, false)),
            }
        }
        let known_ref = &known;
        futures::stream::iter(batch)
            .for_each_concurrent(MIRRORING, |(event, initial)| {
                let syncer = syncer.clone();
                async move {
                    let skip = initial.then_some(known_ref.as_ref()).flatten();
                    if let Err(error) = syncer.mirror_event(&event, skip).await {
                        tracing::debug!(%error, "could not mirror a host event");
                    }
                }
            })
            .await;
        if initial_done {
            // The initial list has been handled; a restarted watch lists (and checks) again.
            known = None;
        }
    }
}

impl Syncer {
    /// Events in the virtual cluster (namespace, name) with their counts.
    async fn mirrored_events(&self) -> HashMap<(String, String), i32> {
        let api: Api<CoreEvent> = Api::all(self.virtual_client.clone());
        match api.list(&kube::api::ListParams::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .map(|e| ((e.namespace().unwrap_or_default(), e.name_any()), e.count.unwrap_or(1)))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// §2.9: a host event annotated `vcluster.loft.sh/force-sync: "true"` whose object is not a
    /// synced one is copied into the virtual `default` namespace under its own name.
    async fn copy_forced_event(&self, event: &CoreEvent) -> Result<(), kube::Error> {
        if !crate::data::forced(event) {
            return Ok(());
        }
        let mut copy = to_value(event);
        let name = event.name_any();
        copy["metadata"] = json!({"name": name, "namespace": "default",
            "labels": event.metadata.labels, "annotations": event.metadata.annotations});
        if let Some(annotations) = copy.pointer_mut("/metadata/annotations").and_then(serde_json::Value::as_object_mut)
        {
            annotations.remove(crate::data::FORCE_SYNC);
        }
        copy["involvedObject"]["namespace"] = json!("default");
        let api: Api<CoreEvent> = Api::namespaced(self.virtual_client.clone(), "default");
        let object: CoreEvent = serde_json::from_value(copy.clone()).map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let update =
                    json!({"count": copy["count"], "lastTimestamp": copy["lastTimestamp"], "message": copy["message"]});
                ignore_not_found(api.patch(&name, &PatchParams::apply(MANAGER), &Patch::Merge(update)).await)
            }
            Err(error) => Err(error),
        }
    }

    /// Mirrors a host event about a synced object into the virtual cluster; `skip` lists events
    /// already there.
    async fn mirror_event(
        &self,
        event: &CoreEvent,
        skip: Option<&HashMap<(String, String), i32>>,
    ) -> Result<(), kube::Error> {
        let kind = event.involved_object.kind.clone().unwrap_or_default();
        let host_object = event.involved_object.name.clone().unwrap_or_default();
        if !vkube_translate::events::KINDS.contains(&kind.as_str()) {
            return self.copy_forced_event(event).await;
        }
        let hns = Some(self.host_namespace());
        let owner = match kind.as_str() {
            "Pod" => cached_host(&self.host_pods, hns, &host_object)
                .and_then(|o| virtual_key_of(&self.mappings, "Pod", o.as_ref())),
            "Service" => cached_host(&self.host_services, hns, &host_object)
                .and_then(|o| virtual_key_of(&self.mappings, "Service", o.as_ref())),
            "ConfigMap" => cached_host(&self.host_config_maps, hns, &host_object)
                .and_then(|o| virtual_key_of(&self.mappings, "ConfigMap", o.as_ref())),
            _ => cached_host(&self.host_secrets, hns, &host_object)
                .and_then(|o| virtual_key_of(&self.mappings, "Secret", o.as_ref())),
        };
        let Some((namespace, name)) = owner else { return self.copy_forced_event(event).await };
        let (ns, n) = (Some(namespace.as_str()), name.as_str());
        let uid = match kind.as_str() {
            "Pod" => cached(&self.virtual_pods, ns, n).and_then(|o| o.uid()),
            "Service" => cached(&self.services, ns, n).and_then(|o| o.uid()),
            "ConfigMap" => cached(&self.config_maps, ns, n).and_then(|o| o.uid()),
            _ => cached(&self.secrets, ns, n).and_then(|o| o.uid()),
        };
        let Some(uid) = uid else { return Ok(()) };
        // Already mirrored (a restart lists every host event again): nothing to translate.
        let event_name = vkube_translate::events::virtual_event_name(
            event.metadata.name.as_deref().unwrap_or_default(),
            &host_object,
            &name,
        );
        let count = event.count.unwrap_or(1);
        if skip.and_then(|known| known.get(&(namespace.clone(), event_name.clone()))).is_some_and(|c| *c >= count) {
            return Ok(());
        }
        let object = vkube_translate::events::VirtualObject { namespace: &namespace, name: &name, uid: &uid };
        let mirrored =
            vkube_translate::events::virtual_event(&to_value(event), self.host_namespace(), &host_object, &object);
        let api: Api<CoreEvent> = Api::namespaced(self.virtual_client.clone(), &namespace);
        let object: CoreEvent = serde_json::from_value(mirrored.clone()).map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let update = json!({"count": mirrored["count"], "lastTimestamp": mirrored["lastTimestamp"], "message": mirrored["message"], "series": mirrored.get("series")});
                ignore_not_found(api.patch(&event_name, &PatchParams::apply(MANAGER), &Patch::Merge(update)).await)
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 403 => Ok(()),
            Err(error) => Err(error),
        }
    }
}
