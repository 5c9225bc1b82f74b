//! Admission webhooks, as kube-apiserver's MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook plugins call them: a write (or a delete, or a `CONNECT` to a
//! pod's `attach`/`exec`) that a webhook's rules, namespace and object selectors and match
//! conditions select is sent as an `admission.k8s.io/v1` AdmissionReview to the webhook's
//! `clientConfig`: a `url`, or a `service` of this cluster (reached through the pod behind it,
//! as the aggregation layer reaches extension servers, so wherever vkube runs), over TLS checked
//! against `caBundle`.
//!
//! Mutating webhooks run one after another (configurations by name, webhooks in order), each
//! seeing what the ones before it patched (`JSONPatch`); validating webhooks run after the
//! object's own validation. A refusal is the webhook's `Status` (code at least 400, the message
//! prefixed `admission webhook "NAME" denied the request`); a webhook that cannot be called
//! fails the request (`failurePolicy: Fail`, 500) or is skipped (`Ignore`), in upstream's words.
//! Webhooks are never called for the admission configuration objects themselves, so a broken
//! webhook can always be removed.
//!
//! Differences from upstream, written down in docs/api-server.md: `reinvocationPolicy:
//! IfNeeded` does not call a webhook a second time; objects are sent in the version they were
//! written in (`matchPolicy: Equivalent` does not convert them).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::policy::{CachePair, ObjectCache, rule_matches_resource};
use crate::auth::Identity;
use crate::catalog::ResourceType;
use crate::error::{ApiError, ApiResult};
use crate::http::AppState;
use crate::registry::labels_of;
use crate::selector::LabelSelector;

const GROUP: &str = "admissionregistration.k8s.io";

/// The webhook configuration caches of one server.
#[derive(Default)]
pub struct Webhooks {
    caches: CachePair,
}

impl Webhooks {
    fn caches(&self, state: &AppState) -> &(Arc<ObjectCache>, Arc<ObjectCache>) {
        self.caches.get(&state.registry, ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"])
    }
}

/// What is being admitted.
pub struct Call<'a> {
    pub rt: &'a ResourceType,
    /// `""`, `status`, `attach` ...
    pub subresource: &'a str,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    /// The new object (creates, updates, the options of a `CONNECT`).
    pub object: Option<&'a Value>,
    /// The stored object (updates, deletes).
    pub old: Option<&'a Value>,
    pub identity: &'a Identity,
    pub dry_run: bool,
    /// The request's options object (`CreateOptions`, `UpdateOptions`, `DeleteOptions`).
    pub options: Value,
    /// For a `CONNECT`: the kind of `object` (`PodAttachOptions` ...).
    pub object_kind: Option<&'a str>,
}

/// Resources webhooks never see (upstream's IsExemptAdmissionConfigurationResource).
fn exempt(rt: &ResourceType) -> bool {
    rt.group == GROUP
        && matches!(
            rt.plural.as_str(),
            "validatingwebhookconfigurations"
                | "mutatingwebhookconfigurations"
                | "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
        )
}

/// The webhooks of `configurations` (sorted by configuration name, then in order).
fn hooks_of(mut configurations: Vec<Value>) -> Vec<Value> {
    configurations.sort_by(|a, b| {
        a.pointer("/metadata/name").and_then(Value::as_str).cmp(&b.pointer("/metadata/name").and_then(Value::as_str))
    });
    configurations
        .into_iter()
        .flat_map(|c| c.get("webhooks").and_then(Value::as_array).cloned().unwrap_or_default())
        .collect()
}

fn selected(selector: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    !selector.is_object() || LabelSelector::from_object(selector).matches(labels)
}

/// Whether `hook`'s rules and selectors select `call` (`namespace`: the object's namespace).
fn selects(hook: &Value, call: &Call, object: Option<&Value>, namespace: Option<&Value>) -> bool {
    let rules = hook.get("rules").cloned().unwrap_or(Value::Null);
    if !rule_matches_resource(&rules, call.rt, call.subresource, call.operation, call.name) {
        return false;
    }
    // The object selector: the new object's labels or the old one's.
    let object_selector = &hook["objectSelector"];
    if object_selector.is_object() {
        let matches = |o: Option<&Value>| o.is_some_and(|o| selected(object_selector, &labels_of(o)));
        if !(matches(object) || matches(call.old)) {
            return false;
        }
    }
    // The namespace selector: the namespace's labels (a Namespace's own labels).
    let namespace_selector = &hook["namespaceSelector"];
    if call.rt.group.is_empty() && call.rt.kind == "Namespace" {
        let own = object.or(call.old);
        return own.is_none_or(|o| selected(namespace_selector, &labels_of(o)));
    }
    match namespace {
        Some(ns) => selected(namespace_selector, &labels_of(ns)),
        None => !call.rt.namespaced || !namespace_selector.is_object(),
    }
}

/// The AdmissionReview a webhook receives.
fn review(call: &Call, object: Option<&Value>, uid: &str, version: &str) -> Value {
    let rt = call.rt;
    let kind = match call.object_kind {
        Some(kind) => json!({"group": "", "version": "v1", "kind": kind}),
        None => json!({"group": rt.group, "version": rt.version, "kind": rt.kind}),
    };
    let resource = json!({"group": rt.group, "version": rt.version, "resource": rt.plural});
    let mut user = json!({"username": call.identity.user, "groups": call.identity.groups});
    if !call.identity.uid.is_empty() {
        user["uid"] = json!(call.identity.uid);
    }
    if !call.identity.extra.is_empty() {
        user["extra"] = json!(call.identity.extra);
    }
    let mut request = json!({
        "uid": uid,
        "kind": kind, "resource": resource,
        "requestKind": kind, "requestResource": resource,
        "operation": call.operation,
        "userInfo": user,
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": call.old.cloned().unwrap_or(Value::Null),
        "dryRun": call.dry_run,
        "options": call.options,
    });
    if !call.subresource.is_empty() {
        request["subResource"] = json!(call.subresource);
        request["requestSubResource"] = json!(call.subresource);
    }
    if !call.name.is_empty() {
        request["name"] = json!(call.name);
    }
    if let Some(namespace) = call.namespace {
        request["namespace"] = json!(namespace);
    }
    json!({"kind": "AdmissionReview", "apiVersion": format!("admission.k8s.io/{version}"), "request": request})
}

/// Why a webhook could not be called (upstream's ErrCallingWebhook).
#[derive(Debug)]
pub(crate) struct CallFailed(pub(crate) String);

/// Whether the match conditions hold; an error counts as a failure to call.
fn conditions_hold(hook: &Value, call: &Call, object: Option<&Value>, request: &Value) -> Result<bool, CallFailed> {
    let null = Value::Null;
    for condition in hook["matchConditions"].as_array().into_iter().flatten() {
        let source = condition["expression"].as_str().unwrap_or_default();
        let expression = crate::cel::compile(source).map_err(CallFailed)?;
        let result = expression
            .evaluate(&[
                ("object", object.unwrap_or(&null)),
                ("oldObject", call.old.unwrap_or(&null)),
                ("request", request),
                ("authorizer", &null),
            ])
            .map_err(|e| {
                let name = condition["name"].as_str().unwrap_or_default();
                CallFailed(format!("failed to evaluate match condition {name:?}: {e}"))
            })?;
        if result != Value::Bool(true) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where a webhook is, as upstream names it in errors.
fn target(config: &Value) -> (String, String) {
    if let Some(url) = config["url"].as_str() {
        return (url.to_string(), String::new());
    }
    let service = &config["service"];
    let name = service["name"].as_str().unwrap_or_default();
    let namespace = service["namespace"].as_str().unwrap_or_default();
    let port = service["port"].as_i64().unwrap_or(443);
    let path = service["path"].as_str().unwrap_or_default();
    (format!("https://{name}.{namespace}.svc:{port}{path}"), format!("{name}.{namespace}.svc"))
}

/// Posts `body` to the webhook; its answer.
pub(crate) async fn post(
    state: &AppState,
    config: &Value,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Value, CallFailed> {
    let (url, service_host) = target(config);
    let seconds = timeout.as_secs().max(1);
    let location = format!("{url}?timeout={seconds}s");
    let failed = |detail: String| CallFailed(format!("failed to call webhook: Post {location:?}: {detail}"));
    let exchange = async {
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string();
        let connection: Box<dyn vkube_streams::portforward::PodConnection> = if service_host.is_empty() {
            let port = uri.port_u16().unwrap_or(443);
            Box::new(tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?)
        } else {
            let service = &config["service"];
            let port = i32::try_from(service["port"].as_i64().unwrap_or(443)).unwrap_or(443);
            crate::aggregation::connect_service(
                state,
                service["namespace"].as_str().unwrap_or_default(),
                service["name"].as_str().unwrap_or_default(),
                port,
            )
            .await?
        };
        let server_name = if service_host.is_empty() { host.clone() } else { service_host.clone() };
        let tls_config = crate::aggregation::trusting(config["caBundle"].as_str())?;
        let server_name =
            rustls::pki_types::ServerName::try_from(server_name).map_err(|e| format!("invalid server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls_config))
            .connect(server_name, connection)
            .await
            .map_err(|e| format!("tls: failed to verify certificate: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.path().to_string()).unwrap_or_else(|| "/".into());
        let authority = if service_host.is_empty() {
            uri.authority().map(|a| a.to_string()).unwrap_or_default()
        } else {
            service_host.clone()
        };
        let request = http::Request::post(format!("{path}?timeout={seconds}s"))
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json, */*")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!(
                "an error on the server ({:?}) has prevented the request from succeeding",
                String::from_utf8_lossy(&bytes).trim()
            ));
        }
        serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("invalid JSON in the response: {e}"))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(detail)) => Err(failed(detail)),
        Err(_) => Err(failed("context deadline exceeded".into())),
    }
}

/// The webhook's decision: allowed (with a patch, for mutating webhooks) or the refusal.
struct Answer {
    allowed: bool,
    status: Value,
    patch: Option<Value>,
    warnings: Vec<String>,
}

fn answer_of(review: Value, uid: &str, mutating: bool) -> Result<Answer, CallFailed> {
    let invalid = |why: String| CallFailed(format!("received invalid webhook response: {why}"));
    let Some(response) = review.get("response").filter(|r| r.is_object()) else {
        return Err(invalid("webhook response was absent".into()));
    };
    let got = response["uid"].as_str().unwrap_or_default();
    if got != uid {
        return Err(invalid(format!("expected response.uid={uid:?}, got {got:?}")));
    }
    let patch = match response.get("patch").and_then(Value::as_str).filter(|p| !p.is_empty()) {
        None => None,
        Some(_) if !mutating => return Err(invalid("validating webhooks may not return patches".into())),
        Some(encoded) => {
            if response["patchType"].as_str() != Some("JSONPatch") {
                return Err(invalid(format!(
                    "webhook returned response.patch but not response.patchType; expected \"JSONPatch\", got {:?}",
                    response["patchType"].as_str().unwrap_or_default()
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| invalid(format!("illegal base64 patch: {e}")))?;
            Some(serde_json::from_slice(&bytes).map_err(|e| invalid(format!("the patch is not JSON: {e}")))?)
        }
    };
    Ok(Answer {
        allowed: response["allowed"].as_bool().unwrap_or(false),
        status: response.get("status").cloned().unwrap_or(Value::Null),
        patch,
        warnings: response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
    })
}

/// The refusal of webhook `name` (upstream's ToStatusErr).
fn denied(name: &str, status: &Value) -> ApiError {
    let by = format!("admission webhook {name:?} denied the request");
    let code = status["code"].as_u64().filter(|c| *c >= 400).unwrap_or(400);
    let message = status["message"].as_str().filter(|m| !m.is_empty());
    let reason = status["reason"].as_str().filter(|r| !r.is_empty());
    let message = match (message, reason) {
        (Some(message), _) => format!("{by}: {message}"),
        (None, Some(reason)) => format!("{by}: {reason}"),
        (None, None) => format!("{by} without explanation"),
    };
    let mut body = status.as_object().cloned().unwrap_or_default();
    body.insert("kind".into(), json!("Status"));
    body.insert("apiVersion".into(), json!("v1"));
    body.entry("metadata").or_insert(json!({}));
    body.insert("status".into(), json!("Failure"));
    body.insert("message".into(), json!(message));
    body.insert("code".into(), json!(code));
    ApiError::Rejected(Box::new(Value::Object(body)))
}

/// Calls one webhook about `call` (with `object` as it now is); `None` when it does not apply.
async fn call_one(
    state: &AppState,
    hook: &Value,
    call: &Call<'_>,
    object: Option<&Value>,
    namespace: Option<&Value>,
    mutating: bool,
) -> Result<Option<Answer>, ApiError> {
    let name = hook["name"].as_str().unwrap_or_default();
    if !selects(hook, call, object, namespace) {
        return Ok(None);
    }
    let fail_open = hook["failurePolicy"].as_str() == Some("Ignore");
    let uid = uuid::Uuid::new_v4().to_string();
    let versions: Vec<&str> =
        hook["admissionReviewVersions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let version = if versions.contains(&"v1") || versions.is_empty() { "v1" } else { "v1beta1" };
    let sent = review(call, object, &uid, version);
    let outcome = async {
        if !conditions_hold(hook, call, object, &sent["request"])? {
            return Ok(None);
        }
        if call.dry_run && !matches!(hook["sideEffects"].as_str(), Some("None" | "NoneOnDryRun")) {
            return Err(Err(ApiError::BadRequest(format!("admission webhook {name:?} does not support dry run"))));
        }
        let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30));
        let body = serde_json::to_vec(&sent).unwrap_or_default();
        let answer = post(state, &hook["clientConfig"], body, timeout).await?;
        answer_of(answer, &uid, mutating).map(Some).map_err(Ok)
    };
    let outcome: Result<Option<Answer>, Result<CallFailed, ApiError>> = outcome.await;
    match outcome {
        Ok(answer) => Ok(answer),
        Err(Err(error)) => Err(error),
        Err(Ok(CallFailed(why))) if fail_open => {
            tracing::warn!(webhook = name, %why, "failed calling webhook, failing open");
            Ok(None)
        }
        Err(Ok(CallFailed(why))) => Err(ApiError::Internal(format!("failed calling webhook {name:?}: {why}"))),
    }
}

impl From<CallFailed> for Result<CallFailed, ApiError> {
    fn from(failed: CallFailed) -> Self {
        Ok(failed)
    }
}

/// The namespace object of a namespaced call (for namespace selectors).
async fn namespace_of(state: &AppState, call: &Call<'_>) -> Option<Value> {
    let namespace = call.namespace.filter(|_| call.rt.namespaced)?;
    let rt = state.registry.catalog.snapshot().get("", "v1", "namespaces")?;
    state.registry.get(&rt, None, namespace).await.ok()
}

/// Whether any mutating webhook is configured that could select a write of `rt`.
pub fn any_mutating(state: &AppState, rt: &ResourceType) -> bool {
    !exempt(rt) && !state.webhooks.caches(state).0.is_empty()
}

/// Runs the mutating webhooks that select `call` over `object`, one after another.
pub async fn mutate(
    state: &AppState,
    call: &Call<'_>,
    object: &mut Value,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    if exempt(call.rt) {
        return Ok(());
    }
    let hooks = hooks_of(state.webhooks.caches(state).0.all());
    if hooks.is_empty() {
        return Ok(());
    }
    let namespace = namespace_of(state, call).await;
    for hook in &hooks {
        let Some(answer) = call_one(state, hook, call, Some(object), namespace.as_ref(), true).await? else {
            continue;
        };
        warnings.extend(answer.warnings);
        if !answer.allowed {
            return Err(denied(hook["name"].as_str().unwrap_or_default(), &answer.status));
        }
        if let Some(patch) = answer.patch {
            let mut patched = object.clone();
            crate::patch::json_patch(&mut patched, &patch).map_err(|e| {
                ApiError::Internal(format!(
                    "JSON Patch: {}",
                    e.message().trim_start_matches("Internal error occurred: ")
                ))
            })?;
            *object = patched;
        }
    }
    Ok(())
}

/// Runs the validating webhooks that select `call`; the first refusal wins.
pub async fn validate(state: &AppState, call: &Call<'_>, warnings: &mut Vec<String>) -> ApiResult<()> {
    if exempt(call.rt) {
        return Ok(());
    }
    let hooks = hooks_of(state.webhooks.caches(state).1.all());
    if hooks.is_empty() {
        return Ok(());
    }
    let namespace = namespace_of(state, call).await;
    // In parallel, as upstream calls them; the first refusal (in webhook order) is returned.
    let calls = hooks.iter().map(|hook| call_one(state, hook, call, call.object, namespace.as_ref(), false));
    let outcomes = futures::future::join_all(calls).await;
    let mut refusal = None;
    for (hook, outcome) in hooks.iter().zip(outcomes) {
        match outcome {
            Ok(Some(answer)) => {
                warnings.extend(answer.warnings);
                if !answer.allowed && refusal.is_none() {
                    refusal = Some(denied(hook["name"].as_str().unwrap_or_default(), &answer.status));
                }
            }
            Ok(None) => {}
            Err(error) if refusal.is_none() => refusal = Some(error),
            Err(_) => {}
        }
    }
    refusal.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configmaps() -> ResourceType {
        (*crate::catalog::Catalog::builtin().snapshot().get("", "v1", "configmaps").unwrap()).clone()
    }

    #[test]
    fn a_refusal_reads_as_upstreams() {
        let error = denied("deny.example.com", &json!({"reason": "the configmap contains unwanted key and value"}));
        let status = error.status();
        assert_eq!(status["code"], 400);
        assert_eq!(
            status["message"],
            "admission webhook \"deny.example.com\" denied the request: the configmap contains unwanted key and value"
        );
        let error = denied("d", &json!({"code": 403, "message": "no"}));
        assert_eq!(error.status()["code"], 403);
        assert_eq!(
            denied("d", &Value::Null).status()["message"],
            "admission webhook \"d\" denied the request without explanation"
        );
    }

    #[test]
    fn answers_must_carry_the_request_uid_and_a_json_patch_type() {
        let patch = base64::engine::general_purpose::STANDARD.encode(br#"[{"op":"add","path":"/data/a","value":"b"}]"#);
        let ok = json!({"response": {"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": patch}});
        assert!(answer_of(ok.clone(), "u", true).unwrap().patch.is_some());
        let CallFailed(why) = answer_of(ok.clone(), "other", true).err().unwrap();
        assert!(why.contains("expected response.uid=\"other\""), "{why}");
        assert!(answer_of(ok, "u", false).is_err(), "validating webhooks may not patch");
        let untyped = json!({"response": {"uid": "u", "allowed": true, "patch": patch}});
        assert!(answer_of(untyped, "u", true).is_err());
    }

    #[test]
    fn rules_select_by_operation_resource_and_subresource() {
        let rt = configmaps();
        let identity = Identity::default();
        let call = |operation, subresource| Call {
            rt: &rt,
            subresource,
            operation,
            namespace: Some("default"),
            name: "x",
            object: None,
            old: None,
            identity: &identity,
            dry_run: false,
            options: Value::Null,
            object_kind: None,
        };
        let hook = json!({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]});
        let ns = json!({"metadata": {"name": "default"}});
        assert!(selects(&hook, &call("CREATE", ""), None, Some(&ns)));
        assert!(!selects(&hook, &call("UPDATE", ""), None, Some(&ns)));
        assert!(!selects(&hook, &call("CREATE", "status"), None, Some(&ns)), "a subresource is not its resource");
        let all = json!({"rules": [{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}],
            "namespaceSelector": {"matchLabels": {"team": "a"}}});
        assert!(!selects(&all, &call("UPDATE", "status"), None, Some(&ns)), "the namespace selector");
        let labelled = json!({"metadata": {"name": "default", "labels": {"team": "a"}}});
        assert!(selects(&all, &call("UPDATE", "status"), None, Some(&labelled)));
    }
}
