//! Events: host events about synced objects are mirrored into the virtual cluster (involved
//! object translated back), and the syncer's own problems are recorded as Warning events on the
//! virtual object (reason `SyncError` or `SyncWarning`, sync-behavior.md 3.0.7).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::{MANAGER, Syncer, cached, ignore_not_found, lock, to_value, virtual_key};

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

impl Syncer {
    /// Mirrors a host event about a synced object into the virtual cluster.
    pub(crate) async fn reconcile_event(&self, host_event_name: &str) -> Result<(), kube::Error> {
        let Some(event) = cached(&self.host_events, Some(self.host_namespace()), host_event_name) else {
            return Ok(());
        };
        let kind = event.involved_object.kind.clone().unwrap_or_default();
        let host_object = event.involved_object.name.clone().unwrap_or_default();
        if !vkube_translate::events::KINDS.contains(&kind.as_str()) {
            return Ok(());
        }
        let hns = Some(self.host_namespace());
        let owner = match kind.as_str() {
            "Pod" => cached(&self.host_pods, hns, &host_object).and_then(|o| virtual_key(o.as_ref())),
            "Service" => cached(&self.host_services, hns, &host_object).and_then(|o| virtual_key(o.as_ref())),
            "ConfigMap" => cached(&self.host_config_maps, hns, &host_object).and_then(|o| virtual_key(o.as_ref())),
            _ => cached(&self.host_secrets, hns, &host_object).and_then(|o| virtual_key(o.as_ref())),
        };
        let Some((namespace, name)) = owner else { return Ok(()) };
        let (ns, n) = (Some(namespace.as_str()), name.as_str());
        let uid = match kind.as_str() {
            "Pod" => cached(&self.virtual_pods, ns, n).and_then(|o| o.uid()),
            "Service" => cached(&self.services, ns, n).and_then(|o| o.uid()),
            "ConfigMap" => cached(&self.config_maps, ns, n).and_then(|o| o.uid()),
            _ => cached(&self.secrets, ns, n).and_then(|o| o.uid()),
        };
        let Some(uid) = uid else { return Ok(()) };
        let object = vkube_translate::events::VirtualObject { namespace: &namespace, name: &name, uid: &uid };
        let mirrored = vkube_translate::events::virtual_event(
            &to_value(event.as_ref()),
            self.host_namespace(),
            &host_object,
            &object,
        );
        let event_name = mirrored["metadata"]["name"].as_str().unwrap_or_default().to_string();
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
