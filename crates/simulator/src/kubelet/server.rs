//! The listener, authentication and authorization of the simulated kubelet API, and its routes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::net::TcpListener;

use super::logs::{self, LogOptions};

/// Why the kubelet API could not be served.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(
        "reading the client CA from kube-system/extension-apiserver-authentication (key client-ca-file): {0}; the kubelet API needs it to authenticate the API server"
    )]
    ClientCa(String),
    #[error("reading the front proxy's settings from kube-system/extension-apiserver-authentication: {0}")]
    RequestHeader(String),
    #[error("the kubelet's serving certificate: {0}")]
    Certificate(String),
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// A running kubelet API.
pub struct KubeletServer {
    /// Where the API server reaches it: the address nodes report (InternalIP) and the port
    /// (`status.daemonEndpoints.kubeletEndpoint.Port`).
    pub endpoint: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeletServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long an authorization decision is reused (a kubelet's webhook cache keeps allowed ones 5 min).
const DECISION_TTL: Duration = Duration::from_secs(60);

/// Who asked for what: (user, groups, verb, subresource, node).
type DecisionKey = (String, Vec<String>, String, String, String);

struct State {
    client: Client,
    /// Where exec sandboxes are made, and whether exec runs at all.
    sandboxes: std::path::PathBuf,
    exec: bool,
    /// Who may have commands run (exec, attach with input): the API server's kubelet client.
    exec_users: Vec<String>,
    /// Node names are `<prefix>-<i>`: pods on other nodes are not this kubelet's.
    node_prefix: String,
    decisions: Mutex<HashMap<DecisionKey, (bool, Instant)>>,
}

impl KubeletServer {
    /// Binds `listen` and serves; `address` is what nodes report (the listen address unless given).
    pub async fn start(
        client: Client,
        listen: SocketAddr,
        address: Option<IpAddr>,
        node_prefix: &str,
        sandboxes: std::path::PathBuf,
        exec: bool,
        exec_users: Vec<String>,
    ) -> Result<KubeletServer, KubeletError> {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
        let ca = maps
            .get("extension-apiserver-authentication")
            .await
            .map_err(|e| KubeletError::ClientCa(e.to_string()))?
            .data
            .and_then(|mut d| d.remove("client-ca-file"))
            .ok_or_else(|| KubeletError::ClientCa("no client-ca-file key".into()))?;
        let listener = TcpListener::bind(listen).await.map_err(|e| KubeletError::Listen(listen, e))?;
        let bound = listener.local_addr().map_err(|e| KubeletError::Listen(listen, e))?;
        let address =
            address.unwrap_or(if bound.ip().is_unspecified() { IpAddr::from([127, 0, 0, 1]) } else { bound.ip() });
        let names = vec![address.to_string(), "localhost".to_string(), format!("{node_prefix}-kubelet")];
        let tls = tls_config(&ca, names)?;
        let state = Arc::new(State {
            client,
            sandboxes,
            exec,
            exec_users,
            node_prefix: node_prefix.to_string(),
            decisions: Mutex::default(),
        });
        let task = tokio::spawn(accept_loop(listener, tokio_rustls::TlsAcceptor::from(Arc::new(tls)), state));
        Ok(KubeletServer { endpoint: SocketAddr::new(address, bound.port()), task })
    }
}

/// A self-signed serving certificate (kube-apiserver does not verify kubelets unless told to)
/// and client certificates required, verified against the cluster's client CA.
pub(super) fn tls_config(ca_pem: &str, names: Vec<String>) -> Result<rustls::ServerConfig, KubeletError> {
    let bad = |e: &dyn std::fmt::Display| KubeletError::Certificate(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bad(&e))?;
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names).map_err(|e| bad(&e))?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).map_err(|e| bad(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn accept_loop(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                return;
            };
            let Some(caller) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| identity(c))
            else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let (state, caller) = (state.clone(), caller.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(&state, &caller, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await;
        });
    }
}

/// The user and groups of a verified client certificate (CN, O).
pub(super) fn identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    Some((user, subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect()))
}

pub(super) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(message.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The pod a request is about, when it runs on a simulated node and the caller may reach it
/// (else the answer to give).
async fn pod_of(
    state: &State,
    caller: &(String, Vec<String>),
    verb: &str,
    path: &str,
    namespace: &str,
    name: &str,
) -> Result<Pod, Response<Body>> {
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), namespace);
    let pod = match pods.get_opt(name).await {
        Ok(Some(pod)) => pod,
        Ok(None) => return Err(text(StatusCode::NOT_FOUND, format!("pod \"{name}\" not found"))),
        Err(error) => return Err(text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())),
    };
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
    if !node.starts_with(&format!("{}-", state.node_prefix)) {
        return Err(text(StatusCode::NOT_FOUND, format!("pod \"{name}\" does not run on a simulated node")));
    }
    if !allowed(state, caller, verb, subresource(path), &node).await {
        return Err(text(
            StatusCode::FORBIDDEN,
            format!("Forbidden (user={}, verb={verb}, resource=nodes, subresource={})", caller.0, subresource(path)),
        ));
    }
    Ok(pod)
}

/// An exec or attach as the kubelet is asked for it (`input`, `output`, `error`, `tty` as `1`,
/// `command` repeated).
fn stream_request(kind: &str, container: &str, query: &str, pod: &Pod) -> vkube_streams::StreamRequest {
    let mut request = vkube_streams::StreamRequest::new(kind, &serde_json::to_value(pod).unwrap_or_default());
    request.container = container.to_string();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " ")).decode_utf8_lossy().into_owned();
        let on = value == "1" || value == "true";
        match key {
            "command" => request.command.push(value),
            "input" | "stdin" => request.stdin = on,
            "output" | "stdout" => request.stdout = on,
            "error" | "stderr" => request.stderr = on,
            "tty" => request.tty = on,
            _ => {}
        }
    }
    if request.tty {
        request.stderr = false;
    }
    request
}

/// The kubelet's authorization attributes of a path: `nodes/<subresource>` (as the kubelet's
/// `GetRequestAttributes`: everything not a known stats/metrics/log/spec path is `proxy`).
fn subresource(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        "spec" => "spec",
        "checkpoint" => "checkpoint",
        _ => "proxy",
    }
}

async fn allowed(state: &State, caller: &(String, Vec<String>), verb: &str, subresource: &str, node: &str) -> bool {
    let key = (caller.0.clone(), caller.1.clone(), verb.to_string(), subresource.to_string(), node.to_string());
    if let Some((decision, at)) = state.decisions.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && at.elapsed() < DECISION_TTL
    {
        return *decision;
    }
    let review: SubjectAccessReview = match serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": caller.0, "groups": caller.1, "resourceAttributes": {
            "verb": verb, "resource": "nodes", "subresource": subresource, "name": node}},
    })) {
        Ok(review) => review,
        Err(_) => return false,
    };
    let reviews: Api<SubjectAccessReview> = Api::all(state.client.clone());
    let decision = match reviews.create(&PostParams::default(), &review).await {
        Ok(answer) => answer.status.is_some_and(|s| s.allowed),
        Err(error) => {
            tracing::warn!(%error, "the kubelet API could not ask the API server for an authorization decision");
            return false;
        }
    };
    state.decisions.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (decision, Instant::now()));
    decision
}

/// Whether `caller` gets commands run in sandboxes: exec is on and the caller is the API server
/// (whose `pods/exec` authorization has been checked), not someone reaching the kubelet directly.
fn runs_commands(exec: bool, users: &[String], caller: &str) -> bool {
    exec && users.iter().any(|u| u == caller)
}

async fn handle(
    state: &State,
    caller: &(String, Vec<String>),
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let verb = match *request.method() {
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    };
    let pod = match segments.as_slice() {
        ["containerLogs" | "exec" | "attach", namespace, name, _] | ["portForward", namespace, name] => {
            match pod_of(state, caller, verb, &path, namespace, name).await {
                Ok(pod) => pod,
                Err(refused) => return refused,
            }
        }
        _ => return text(StatusCode::NOT_FOUND, "404 page not found"),
    };
    let on_upgrade = request.extensions().get::<hyper::upgrade::OnUpgrade>().cloned();
    match segments.as_slice() {
        [kind @ ("exec" | "attach"), _, _, container] => {
            let stream = stream_request(kind, container, &query, &pod);
            let exec = runs_commands(state.exec, &state.exec_users, &caller.0);
            if *kind == "exec" && state.exec && !exec {
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "exec into simulated containers runs only for the API server ({}), not for {} calling the kubelet directly",
                        state.exec_users.join(", "),
                        caller.0
                    ),
                );
            }
            let (client, base) = (state.client.clone(), state.sandboxes.clone());
            let open = move |request| -> futures::future::BoxFuture<
                'static,
                Result<vkube_streams::Session, vkube_streams::Refusal>,
            > {
                Box::pin(async move {
                    super::sessions::open(client, base, exec, request).await.map_err(vkube_streams::Refusal)
                })
            };
            match vkube_streams::upgrade(request.headers(), on_upgrade, stream, open).await {
                Ok(response) => response,
                Err(refusal) => text(StatusCode::BAD_REQUEST, refusal.0),
            }
        }
        ["portForward", ..] => {
            let value = serde_json::to_value(&pod).unwrap_or_default();
            let client = state.client.clone();
            let connect: vkube_streams::portforward::Connector = Arc::new(move |port| {
                let result = super::ports::connect(&value, port, Some(client.clone()))
                    .map(vkube_streams::portforward::Forward::plain);
                Box::pin(async move { result })
            });
            match vkube_streams::portforward::upgrade(request.headers(), Some(&query), on_upgrade, connect).await {
                Ok(response) => response,
                Err(refusal) => text(StatusCode::BAD_REQUEST, refusal.0),
            }
        }
        ["containerLogs", namespace, name, container] if verb == "get" => {
            let known = pod.spec.iter().flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()));
            if !known.clone().any(|c| c.name == *container) {
                return text(StatusCode::NOT_FOUND, format!("container \"{container}\" in pod \"{name}\" not found"));
            }
            let mut options = LogOptions::from_query(&query);
            options.container = Some(container.to_string());
            match logs::stream(Some(state.client.clone()), namespace, name, &options) {
                Ok(stream) => {
                    let mut response = Response::new(Body::from_stream(stream));
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
                    response
                }
                Err(error) => text(StatusCode::BAD_REQUEST, error.0),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_server_gets_commands_run() {
        let users = vec!["kube-apiserver-kubelet-client".to_string()];
        assert!(runs_commands(true, &users, "kube-apiserver-kubelet-client"));
        assert!(!runs_commands(true, &users, "kubernetes-admin"), "a user calling the kubelet directly");
        assert!(!runs_commands(false, &users, "kube-apiserver-kubelet-client"), "--exec off");
    }

    #[test]
    fn paths_map_to_the_kubelets_node_subresources() {
        assert_eq!(subresource("/containerLogs/default/web/c"), "proxy");
        assert_eq!(subresource("/exec/default/web/c"), "proxy");
        assert_eq!(subresource("/logs/syslog"), "log");
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/metrics/cadvisor"), "metrics");
    }
}
