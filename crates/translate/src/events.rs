//! Events (sync-behavior.md section 9): host events about synced objects are mirrored into the
//! virtual cluster, about the virtual objects; virtual events never go to the host.

use serde_json::{Value, json};

/// Involved-object kinds whose events are mirrored.
pub const KINDS: &[&str] = &["Pod", "Service", "Secret", "ConfigMap"];

/// The virtual object an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualObject<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// UID.
    pub uid: &'a str,
}

/// The virtual event for host event `event` about host object `host_name` in `host_namespace`.
pub fn virtual_event(event: &Value, host_namespace: &str, host_name: &str, object: &VirtualObject<'_>) -> Value {
    let event_name = event.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let name = virtual_event_name(event_name, host_name, object.name);
    let mut out = event.clone();
    let metadata = json!({
        "name": name,
        "namespace": object.namespace,
        "labels": event.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
        "annotations": event.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
    });
    out["metadata"] = metadata;
    out["involvedObject"]["namespace"] = json!(object.namespace);
    out["involvedObject"]["name"] = json!(object.name);
    out["involvedObject"]["uid"] = json!(object.uid);
    if let Some(map) = out["involvedObject"].as_object_mut() {
        map.remove("resourceVersion");
    }
    if let Some(message) = event.get("message").and_then(Value::as_str) {
        let qualified = message
            .replace(&format!("{host_namespace}/{host_name}"), &format!("{}/{}", object.namespace, object.name))
            .replace(host_name, object.name);
        out["message"] = json!(qualified);
    }
    out
}

/// The virtual name of host event `event_name` about host object `host_name`, which stands for
/// virtual object `virtual_name`: the object's name at its start is the virtual one.
pub fn virtual_event_name(event_name: &str, host_name: &str, virtual_name: &str) -> String {
    match event_name.strip_prefix(host_name) {
        Some(rest) => format!("{virtual_name}{rest}"),
        None => event_name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_messages_point_at_the_virtual_object() {
        let host = json!({"metadata": {"name": "nginx-x-default-x-my-vc.17a8b9c0d1e2f3a4", "namespace": "vcluster-my-vc", "resourceVersion": "9"},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": "vcluster-my-vc", "name": "nginx-x-default-x-my-vc", "uid": "host-uid", "resourceVersion": "3"},
            "reason": "Scheduled", "type": "Normal", "count": 1,
            "message": "Successfully assigned vcluster-my-vc/nginx-x-default-x-my-vc to node-1"});
        let object = VirtualObject { namespace: "default", name: "nginx", uid: "virtual-uid" };
        let event = virtual_event(&host, "vcluster-my-vc", "nginx-x-default-x-my-vc", &object);
        assert_eq!(event["metadata"]["name"], "nginx.17a8b9c0d1e2f3a4");
        assert_eq!(event["metadata"]["namespace"], "default");
        assert!(event["metadata"].get("resourceVersion").is_none());
        assert_eq!(
            event["involvedObject"],
            json!({"kind": "Pod", "apiVersion": "v1", "namespace": "default", "name": "nginx", "uid": "virtual-uid"})
        );
        assert_eq!(event["message"], "Successfully assigned default/nginx to node-1");
        assert_eq!(event["reason"], "Scheduled");
        assert_eq!(event["count"], 1);
    }
}
