//! Conversion webhooks of custom resources (`spec.conversion.strategy: Webhook`): objects read at
//! a version other than the one they are stored at, and objects written at a version other than
//! the storage version, are converted by the CRD's webhook with a `ConversionReview`
//! (`apiextensions.k8s.io/v1`, or `v1beta1` when the CRD accepts only that), as kube-apiserver
//! does. The answer is checked as upstream checks it: the request's UID, one object per object
//! sent, each at the desired version and of the same kind; of the metadata only labels and
//! annotations may change (the rest is kept from the original).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::http::AppState;

/// Converts custom resources with a CRD's webhook: `Ok` with one object per object given, at
/// `desired` (`group/version`), or why not (upstream's words).
pub trait Converter: Send + Sync {
    fn convert<'a>(
        &'a self,
        webhook: &'a Value,
        desired: &'a str,
        objects: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, String>>;
}

/// The converter of a running server: calls the webhook's service or URL.
pub struct WebhookConverter {
    state: Weak<AppState>,
}

impl WebhookConverter {
    pub fn new(state: &Arc<AppState>) -> Self {
        WebhookConverter { state: Arc::downgrade(state) }
    }
}

/// kube-apiserver waits 30 seconds for a conversion webhook.
const TIMEOUT: Duration = Duration::from_secs(30);

impl Converter for WebhookConverter {
    fn convert<'a>(
        &'a self,
        webhook: &'a Value,
        desired: &'a str,
        objects: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Value>, String>> {
        Box::pin(async move {
            let state = self.state.upgrade().ok_or("the server is stopping")?;
            let versions: Vec<&str> = webhook["conversionReviewVersions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let version = if versions.contains(&"v1") || versions.is_empty() { "v1" } else { "v1beta1" };
            let uid = uuid::Uuid::new_v4().to_string();
            let review = json!({
                "apiVersion": format!("apiextensions.k8s.io/{version}"), "kind": "ConversionReview",
                "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects},
            });
            let body = serde_json::to_vec(&review).unwrap_or_default();
            let answer = crate::admission::webhook::post(&state, &webhook["clientConfig"], body, TIMEOUT)
                .await
                .map_err(|failed| failed.0)?;
            converted(&answer, &uid, desired, &objects)
        })
    }
}

/// The objects of a webhook's `answer` to the review `uid` of `sent`, checked.
pub fn converted(answer: &Value, uid: &str, desired: &str, sent: &[Value]) -> Result<Vec<Value>, String> {
    let response = answer.get("response").ok_or("conversion webhook response was absent")?;
    if response["uid"].as_str() != Some(uid) {
        return Err(format!("expected response.uid={uid:?}, got {:?}", response["uid"].as_str().unwrap_or_default()));
    }
    let status = response.pointer("/result/status").and_then(Value::as_str).unwrap_or_default();
    if status != "Success" {
        return Err(match response.pointer("/result/message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            Some(message) => message.to_string(),
            None => format!("response.result.status was '{status}', not 'Success'"),
        });
    }
    let objects = response["convertedObjects"].as_array().cloned().unwrap_or_default();
    if objects.len() != sent.len() {
        return Err(format!("returned objects count {} does not match the requested {}", objects.len(), sent.len()));
    }
    let mut out = Vec::with_capacity(objects.len());
    for (mut object, original) in objects.into_iter().zip(sent) {
        if object["apiVersion"].as_str() != Some(desired) {
            return Err(format!(
                "invalid apiVersion {:?} in converted object, expected {desired:?}",
                object["apiVersion"].as_str().unwrap_or_default()
            ));
        }
        if object["kind"] != original["kind"] {
            return Err(format!(
                "invalid kind {:?} in converted object, expected {:?}",
                object["kind"].as_str().unwrap_or_default(),
                original["kind"].as_str().unwrap_or_default()
            ));
        }
        // Only labels and annotations are the webhook's to change.
        let mut metadata = original.get("metadata").cloned().unwrap_or_else(|| json!({}));
        for field in ["labels", "annotations"] {
            match object.pointer(&format!("/metadata/{field}")) {
                Some(value) if !value.is_null() => metadata[field] = value.clone(),
                _ => {
                    if let Some(map) = metadata.as_object_mut() {
                        map.remove(field);
                    }
                }
            }
        }
        object["metadata"] = metadata;
        out.push(object);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> Vec<Value> {
        vec![json!({"apiVersion": "example.com/v1", "kind": "Host",
            "metadata": {"name": "a", "uid": "u1", "labels": {"x": "1"}}, "hostPort": "localhost:8080"})]
    }

    #[test]
    fn answers_are_checked_and_metadata_kept() {
        let answer = |object: Value| json!({"response": {"uid": "r1", "result": {"status": "Success"}, "convertedObjects": [object]}});
        let good = json!({"apiVersion": "example.com/v2", "kind": "Host",
            "metadata": {"name": "renamed", "uid": "u1", "labels": {"y": "2"}}, "host": "localhost", "port": "8080"});
        let out = converted(&answer(good.clone()), "r1", "example.com/v2", &sent()).unwrap();
        assert_eq!(out[0]["metadata"], json!({"name": "a", "uid": "u1", "labels": {"y": "2"}}), "only labels change");
        assert_eq!(out[0]["host"], "localhost");
        assert!(
            converted(&answer(good.clone()), "other", "example.com/v2", &sent()).unwrap_err().contains("response.uid")
        );
        let mut wrong = good.clone();
        wrong["apiVersion"] = json!("example.com/v1");
        assert!(converted(&answer(wrong), "r1", "example.com/v2", &sent()).unwrap_err().contains("invalid apiVersion"));
        let failed =
            json!({"response": {"uid": "r1", "result": {"status": "Failure", "message": "invalid hostPort value"}}});
        assert_eq!(converted(&failed, "r1", "example.com/v2", &sent()).unwrap_err(), "invalid hostPort value");
        let none = json!({"response": {"uid": "r1", "result": {"status": "Success"}, "convertedObjects": []}});
        assert!(converted(&none, "r1", "example.com/v2", &sent()).unwrap_err().contains("does not match"));
    }
}
