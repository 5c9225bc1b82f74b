//! The aggregation layer, as kube-aggregator runs it inside kube-apiserver: an `APIService` whose
//! `spec.service` names a service of this cluster makes its group version served by whatever
//! answers behind that service (an extension API server a tenant installed).
//!
//! - **Availability** ([`run`]): each such APIService is checked as upstream's availability
//!   controller does (service present, listening on the port, endpoints with addresses, then a
//!   `GET /apis/GROUP/VERSION` as `system:kube-aggregator`), and its `Available` condition written
//!   with upstream's reasons and messages. What the server lists there joins discovery (legacy
//!   and aggregated) until the APIService goes or stops answering.
//! - **Proxying** ([`proxy`]): requests under `/apis/GROUP/VERSION` go to a ready endpoint's pod,
//!   reached through the pod hook (for a virtual cluster: the host pod, through the host API
//!   server's port-forward, wherever vkube runs), over TLS with the front proxy's client
//!   certificate and the authenticated caller in `X-Remote-User`/`X-Remote-Group`/
//!   `X-Remote-Extra-*`, after this server authenticated and authorized the request. The
//!   serving certificate is checked against `spec.caBundle` for `SERVICE.NAMESPACE.svc`, or not
//!   at all with `insecureSkipTLSVerify`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use base64::Engine;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::auth::Identity;
use crate::catalog::ResourceType;
use crate::http::AppState;
use crate::registry::{ListParams, WriteOptions};
use crate::{ApiError, ApiResult};

mod tls;

/// Where a remote group version is served.
#[derive(Clone, Debug, PartialEq)]
pub struct Remote {
    /// The APIService's name (`VERSION.GROUP`).
    pub api_service: String,
    pub namespace: String,
    pub service: String,
    pub port: i32,
    /// PEM certificates the serving certificate must chain to (`spec.caBundle`).
    pub ca_bundle: Option<String>,
    /// `spec.insecureSkipTLSVerify`.
    pub insecure: bool,
}

/// The remote group versions this server knows, and which of them answer.
#[derive(Default)]
pub struct Aggregator {
    /// Every non-local APIService, by (group, version); whether it is available.
    remotes: RwLock<BTreeMap<(String, String), (Remote, bool)>>,
}

impl Aggregator {
    /// The remote serving `group`/`version`, and whether it is available.
    pub fn remote(&self, group: &str, version: &str) -> Option<(Remote, bool)> {
        let remotes = self.remotes.read().unwrap_or_else(|p| p.into_inner());
        remotes.get(&(group.to_string(), version.to_string())).cloned()
    }
}

/// Why an APIService is not available: upstream's condition reason and message.
#[derive(Debug, Clone, PartialEq)]
struct Unavailable {
    reason: &'static str,
    message: String,
}

fn unavailable(reason: &'static str, message: String) -> Unavailable {
    Unavailable { reason, message }
}

/// The APIService's remote, if it names a service.
fn remote_of(api_service: &Value) -> Option<((String, String), Remote)> {
    let spec = api_service.get("spec")?;
    let service = spec.get("service").filter(|s| s.is_object())?;
    let group = spec.get("group").and_then(Value::as_str).unwrap_or_default().to_string();
    let version = spec.get("version").and_then(Value::as_str).unwrap_or_default().to_string();
    let ca_bundle = spec
        .get("caBundle")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty())
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|pem| String::from_utf8_lossy(&pem).into_owned());
    let remote = Remote {
        api_service: api_service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
        namespace: service.get("namespace").and_then(Value::as_str).unwrap_or_default().to_string(),
        service: service.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        port: service.get("port").and_then(Value::as_i64).unwrap_or(443) as i32,
        ca_bundle,
        insecure: spec.get("insecureSkipTLSVerify").and_then(Value::as_bool).unwrap_or(false),
    };
    Some(((group, version), remote))
}

/// The pod and port a request to `remote` goes to: a ready address of the service's endpoints
/// on the port the service maps `remote.port` to.
async fn resolve(state: &AppState, remote: &Remote) -> Result<(Value, u16), Unavailable> {
    let snapshot = state.registry.catalog.snapshot();
    let get = |plural: &str| snapshot.get("", "v1", plural).expect("built-in");
    let (ns, name) = (remote.namespace.as_str(), remote.service.as_str());
    let service = match state.registry.get(&get("services"), Some(ns), name).await {
        Ok(service) => service,
        Err(ApiError::NotFound { .. }) => {
            return Err(unavailable("ServiceNotFound", format!("service/{name} in {ns:?} is not present")));
        }
        Err(error) => {
            return Err(unavailable(
                "ServiceAccessError",
                format!("service/{name} in {ns:?} cannot be checked due to: {error}"),
            ));
        }
    };
    let ports = service.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(port) = ports.iter().find(|p| p.get("port").and_then(Value::as_i64) == Some(i64::from(remote.port)))
    else {
        return Err(unavailable(
            "ServicePortError",
            format!("service/{name} in {ns:?} is not listening on port {}", remote.port),
        ));
    };
    let port_name = port.get("name").and_then(Value::as_str).unwrap_or_default();
    let endpoints = match state.registry.get(&get("endpoints"), Some(ns), name).await {
        Ok(endpoints) => endpoints,
        Err(ApiError::NotFound { .. }) => {
            return Err(unavailable(
                "EndpointsNotFound",
                format!("cannot find endpoints for service/{name} in {ns:?}"),
            ));
        }
        Err(error) => {
            return Err(unavailable(
                "EndpointsAccessError",
                format!("service/{name} in {ns:?} cannot be checked due to: {error}"),
            ));
        }
    };
    let missing = || {
        unavailable(
            "MissingEndpoints",
            format!("endpoints for service/{name} in {ns:?} have no addresses with port name {port_name:?}"),
        )
    };
    for subset in endpoints.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let Some(number) = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for address in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
            let Some(pod) = address
                .get("targetRef")
                .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
                .and_then(|r| r.get("name").and_then(Value::as_str))
            else {
                continue;
            };
            if let Ok(pod) = state.registry.get(&get("pods"), Some(ns), pod).await {
                return Ok((pod, number));
            }
        }
    }
    Err(missing())
}

/// A connection to `port` of service `namespace/name`: to a ready pod behind it, as requests
/// to an APIService's service go (admission webhooks are reached this way too).
pub(crate) async fn connect_service(
    state: &AppState,
    namespace: &str,
    name: &str,
    port: i32,
) -> Result<Box<dyn vkube_streams::portforward::PodConnection>, String> {
    let remote = Remote {
        api_service: String::new(),
        namespace: namespace.to_string(),
        service: name.to_string(),
        port,
        ca_bundle: None,
        insecure: false,
    };
    let (pod, port) = resolve(state, &remote).await.map_err(|e| e.message)?;
    let Some(streams) = state.pod_streams.clone() else {
        return Err("this API server reaches no pods".into());
    };
    Ok(streams.connect(&pod, port).await?.connection)
}

pub(crate) use tls::trusting;

/// Sends `request` to `remote` as `caller` (whom this server authenticated and authorized).
async fn send(
    state: &AppState,
    remote: &Remote,
    caller: &Identity,
    mut request: Request<Body>,
) -> Result<Response<hyper::body::Incoming>, Unavailable> {
    let (pod, port) = resolve(state, remote).await?;
    let host = format!("{}.{}.svc:{}", remote.service, remote.namespace, remote.port);
    let path = request_path(&request);
    let failed = |error: String| {
        unavailable("FailedDiscoveryCheck", format!("failing or missing response from https://{host}{path}: {error}"))
    };
    let Some(streams) = state.pod_streams.clone() else {
        return Err(failed("this API server reaches no pods".into()));
    };
    let connection = streams.connect(&pod, port).await.map_err(&failed)?.connection;
    let pki = state.pki.as_ref().ok_or_else(|| failed("this API server has no front-proxy certificate".into()))?;
    let config = tls::client_config(pki, remote).map_err(&failed)?;
    let server_name = rustls::pki_types::ServerName::try_from(format!("{}.{}.svc", remote.service, remote.namespace))
        .map_err(|e| failed(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, connection)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| failed(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    set_caller(request.headers_mut(), caller);
    if let Ok(value) = HeaderValue::from_str(&host) {
        request.headers_mut().insert(http::header::HOST, value);
    }
    sender.send_request(request).await.map_err(|e| failed(e.to_string()))
}

fn request_path<B>(request: &Request<B>) -> String {
    request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default()
}

/// The caller as the front proxy names it; the caller's own credentials are not passed on.
fn set_caller(headers: &mut http::HeaderMap, caller: &Identity) {
    headers.remove(http::header::AUTHORIZATION);
    let stale: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("impersonate-") || k.starts_with("x-remote-")
        })
        .cloned()
        .collect();
    for name in stale {
        headers.remove(name);
    }
    if let Ok(user) = HeaderValue::from_str(&caller.user) {
        headers.insert("x-remote-user", user);
    }
    for group in &caller.groups {
        if let Ok(group) = HeaderValue::from_str(group) {
            headers.append("x-remote-group", group);
        }
    }
    // Keys escaped as client-go does: characters a header name may not hold become %XX.
    const NOT_TOKEN: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'\'')
        .remove(b'*')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'|')
        .remove(b'~');
    for (key, values) in &caller.extra {
        let name = format!("x-remote-extra-{}", percent_encoding::utf8_percent_encode(key, NOT_TOKEN));
        let Ok(name) = http::HeaderName::from_bytes(name.to_lowercase().as_bytes()) else { continue };
        for value in values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(name.clone(), value);
            }
        }
    }
}

/// Answers a request under `/apis/GROUP/VERSION` of a remote group version.
pub async fn proxy(
    state: &AppState,
    remote: Remote,
    available: bool,
    caller: &Identity,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> ApiResult<Response<Body>> {
    let service_unavailable = || {
        let mut response = Response::new(Body::from("service unavailable\n"));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    };
    if !available {
        return Ok(service_unavailable());
    }
    let mut request = Request::from_parts(parts, Body::new(body));
    *request.version_mut() = http::Version::HTTP_11;
    match send(state, &remote, caller, request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Ok(Response::from_parts(parts, Body::new(body)))
        }
        Err(error) => {
            tracing::debug!(api_service = %remote.api_service, message = %error.message, "proxying to an APIService failed");
            Ok(service_unavailable())
        }
    }
}

/// What the aggregator calls itself when it checks a server.
fn aggregator_identity() -> Identity {
    Identity::new("system:kube-aggregator", vec![crate::auth::MASTERS.into()])
}

/// `GET /apis/GROUP/VERSION` of `remote`: its resource list.
async fn discover(state: &AppState, remote: &Remote, group: &str, version: &str) -> Result<Value, Unavailable> {
    let path = format!("/apis/{group}/{version}");
    let request = Request::get(&path)
        .header(http::header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|e| unavailable("FailedDiscoveryCheck", e.to_string()))?;
    let answer = tokio::time::timeout(Duration::from_secs(6), async {
        let response = send(state, remote, &aggregator_identity(), request).await?;
        let status = response.status();
        let url = format!("https://{}.{}.svc:{}{path}", remote.service, remote.namespace, remote.port);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(|e| unavailable("FailedDiscoveryCheck", format!("failing or missing response from {url}: {e}")))?
            .to_bytes();
        if !status.is_success() && !status.is_redirection() {
            return Err(unavailable("FailedDiscoveryCheck", format!("bad status from {url}: {}", status.as_u16())));
        }
        Ok(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
    })
    .await;
    match answer {
        Ok(result) => result,
        Err(_) => Err(unavailable(
            "FailedDiscoveryCheck",
            format!("timed out waiting for https://{}.{}.svc:{}{path}", remote.service, remote.namespace, remote.port),
        )),
    }
}

/// A verb of an extension server's resource list, if it is one Kubernetes defines.
fn known_verb(verb: &str) -> Option<&'static str> {
    ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"].into_iter().find(|v| *v == verb)
}

/// The resource types an extension server lists for `group`/`version` (subresources other than
/// status are not shown in this server's discovery).
fn resource_types(group: &str, version: &str, list: &Value) -> Vec<ResourceType> {
    let resources = list.get("resources").and_then(Value::as_array).cloned().unwrap_or_default();
    let text = |r: &Value, key: &str| r.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let strings = |r: &Value, key: &str| -> Vec<String> {
        r.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
    };
    let subresources: Vec<String> = resources.iter().map(|r| text(r, "name")).filter(|n| n.contains('/')).collect();
    resources
        .iter()
        .filter(|r| !text(r, "name").contains('/') && !text(r, "name").is_empty())
        .map(|r| {
            let plural = text(r, "name");
            let kind = text(r, "kind");
            let has = |sub: &str| subresources.contains(&format!("{plural}/{sub}"));
            ResourceType {
                group: group.to_string(),
                version: version.to_string(),
                singular: text(r, "singularName"),
                list_kind: format!("{kind}List"),
                kind,
                namespaced: r.get("namespaced").and_then(Value::as_bool).unwrap_or(false),
                short_names: strings(r, "shortNames"),
                categories: strings(r, "categories"),
                has_status: has("status"),
                scale: None,
                generation: false,
                verbs: strings(r, "verbs").iter().filter_map(|v| known_verb(v)).collect(),
                extra: Vec::new(),
                review: false,
                custom: None,
                storage: None,
                plural,
            }
        })
        .collect()
}

/// What the availability loop remembers of one APIService between checks.
struct Checked {
    remote: Remote,
    /// The pod and port the last discovery check reached.
    endpoint: Option<(String, u16)>,
    at: Instant,
    outcome: Result<(), Unavailable>,
    /// What the server listed the last time it answered (kept while it does not, as upstream
    /// keeps a stale discovery document).
    types: Vec<ResourceType>,
}

/// How often an available APIService's discovery is fetched again; its service, endpoints and
/// pod are looked at on every pass.
const RECHECK: Duration = Duration::from_secs(30);
/// How often APIServices are listed.
const PASS: Duration = Duration::from_secs(1);

/// Keeps the remote group versions, their discovery and their `Available` conditions current
/// until `stopped` changes.
pub async fn run(state: Arc<AppState>, mut stopped: watch::Receiver<bool>) {
    let mut checked: HashMap<String, Checked> = HashMap::new();
    loop {
        if let Err(error) = pass(&state, &mut checked).await {
            tracing::debug!(%error, "checking APIServices");
        }
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(PASS) => {}
        }
    }
}

async fn pass(state: &AppState, checked: &mut HashMap<String, Checked>) -> ApiResult<()> {
    let snapshot = state.registry.catalog.snapshot();
    let Some(rt) = snapshot.get("apiregistration.k8s.io", "v1", "apiservices") else { return Ok(()) };
    let list = state.registry.list(&rt, None, &ListParams::default()).await?;
    let mut remotes = BTreeMap::new();
    let mut served = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for api_service in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let Some(((group, version), remote)) = remote_of(api_service) else { continue };
        let name = remote.api_service.clone();
        seen.insert(name.clone());
        let entry = checked.entry(name).or_insert_with(|| Checked {
            remote: remote.clone(),
            endpoint: None,
            at: Instant::now(),
            outcome: Err(unavailable("Unknown", String::new())),
            types: Vec::new(),
        });
        match resolve(state, &remote).await {
            Err(failure) => {
                entry.outcome = Err(failure);
                entry.endpoint = None;
            }
            Ok((pod, port)) => {
                let endpoint =
                    (pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(), port);
                let due = entry.remote != remote
                    || entry.outcome.is_err()
                    || entry.endpoint.as_ref() != Some(&endpoint)
                    || entry.at.elapsed() >= RECHECK;
                if due {
                    match discover(state, &remote, &group, &version).await {
                        Ok(list) => {
                            entry.types = resource_types(&group, &version, &list);
                            entry.outcome = Ok(());
                        }
                        Err(failure) => entry.outcome = Err(failure),
                    }
                    entry.at = Instant::now();
                    entry.endpoint = Some(endpoint);
                }
            }
        }
        entry.remote = remote.clone();
        write_condition(state, &rt, api_service, entry.outcome.as_ref().err()).await;
        served.extend(entry.types.iter().cloned());
        remotes.insert((group, version), (remote, entry.outcome.is_ok()));
    }
    checked.retain(|name, _| seen.contains(name));
    {
        let mut current = state.aggregator.remotes.write().unwrap_or_else(|p| p.into_inner());
        *current = remotes;
    }
    if state.registry.catalog.aggregated_differs(&served) {
        state.registry.catalog.set_aggregated(served);
    }
    Ok(())
}

/// Writes the `Available` condition when it differs from the stored one.
async fn write_condition(state: &AppState, rt: &ResourceType, api_service: &Value, failure: Option<&Unavailable>) {
    let (status, reason, message) = match failure {
        None => ("True", "Passed", "all checks passed".to_string()),
        Some(failure) => ("False", failure.reason, failure.message.clone()),
    };
    let conditions = api_service.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let current = conditions.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Available"));
    let same = |key: &str, value: &str| current.and_then(|c| c.get(key)).and_then(Value::as_str) == Some(value);
    if same("status", status) && same("reason", reason) && same("message", &message) {
        return;
    }
    let transition = match current {
        Some(c) if same("status", status) => {
            c.get("lastTransitionTime").cloned().unwrap_or(json!(crate::registry::now()))
        }
        _ => json!(crate::registry::now()),
    };
    let mut object = api_service.clone();
    let mut others: Vec<Value> =
        conditions.into_iter().filter(|c| c.get("type").and_then(Value::as_str) != Some("Available")).collect();
    others.push(json!({"type": "Available", "status": status, "lastTransitionTime": transition,
        "reason": reason, "message": message}));
    object["status"] = json!({"conditions": others});
    let name = api_service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let options = WriteOptions { field_manager: "kube-apiserver".into(), ..Default::default() };
    if let Err(error) = state.registry.update(rt, None, name, object, "status", &options).await {
        tracing::debug!(%name, %error, "writing an APIService's condition");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_names_its_service_and_trust() {
        let ca = base64::engine::general_purpose::STANDARD.encode("PEM");
        let api_service = json!({"metadata": {"name": "v1alpha1.wardle.example.com"}, "spec": {
            "group": "wardle.example.com", "version": "v1alpha1", "caBundle": ca,
            "service": {"namespace": "sample", "name": "api", "port": 7443}}});
        let ((group, version), remote) = remote_of(&api_service).unwrap();
        assert_eq!((group.as_str(), version.as_str()), ("wardle.example.com", "v1alpha1"));
        assert_eq!((remote.service.as_str(), remote.port, remote.ca_bundle.as_deref()), ("api", 7443, Some("PEM")));
        assert!(!remote.insecure);
        let local = json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"}});
        assert!(remote_of(&local).is_none(), "no service: served here");
    }

    #[test]
    fn the_caller_replaces_credentials_and_forged_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        headers.insert("x-remote-user", HeaderValue::from_static("forged"));
        headers.insert("impersonate-user", HeaderValue::from_static("root"));
        let mut caller = Identity::new("alice", vec!["dev".into(), "system:authenticated".into()]);
        caller.extra.insert("scopes.example.com/Name".into(), vec!["a".into(), "b".into()]);
        set_caller(&mut headers, &caller);
        assert!(headers.get(http::header::AUTHORIZATION).is_none());
        assert!(headers.get("impersonate-user").is_none());
        assert_eq!(headers.get_all("x-remote-user").iter().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(headers.get_all("x-remote-group").iter().collect::<Vec<_>>(), ["dev", "system:authenticated"]);
        let extra: Vec<_> = headers.get_all("x-remote-extra-scopes.example.com%2fname").iter().collect();
        assert_eq!(extra, ["a", "b"]);
    }

    #[test]
    fn listed_resources_become_types() {
        let list = json!({"resources": [
            {"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder",
             "verbs": ["create", "get", "list", "watch", "frobnicate"], "shortNames": ["fl"]},
            {"name": "flunders/status", "namespaced": true, "kind": "Flunder", "verbs": ["get"]}]});
        let types = resource_types("wardle.example.com", "v1alpha1", &list);
        assert_eq!(types.len(), 1);
        let t = &types[0];
        assert_eq!(
            (t.plural.as_str(), t.kind.as_str(), t.namespaced, t.has_status),
            ("flunders", "Flunder", true, true)
        );
        assert_eq!(t.verbs, ["create", "get", "list", "watch"]);
        assert_eq!(t.short_names, ["fl"]);
    }
}
