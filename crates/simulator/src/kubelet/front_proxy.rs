//! An extension API server's listener behind kube-apiserver's aggregation layer (the front
//! proxy), as metrics-server runs one: kube-apiserver authenticates and authorizes the caller,
//! then proxies with its proxy client certificate and the caller in `X-Remote-User` /
//! `X-Remote-Group`. This listener trusts exactly that: a client certificate signed by the
//! cluster's request-header CA, with a common name the cluster allows, read from
//! `kube-system/extension-apiserver-authentication` as every extension API server does.
//!
//! [`register`] makes kube-apiserver route a group version here: an `ExternalName` service
//! naming this listener's address and an `APIService` for it (the aggregator resolves external
//! names to the name itself).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio::net::TcpListener;

use super::server::{KubeletError, identity, text, tls_config};

/// Who kube-apiserver says is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
}

/// Answers one proxied request.
pub type Handler =
    Arc<dyn Fn(Caller, Request<hyper::body::Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// A running listener.
pub struct FrontProxied {
    /// Where kube-apiserver reaches it.
    pub endpoint: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FrontProxied {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The cluster's request-header settings.
struct RequestHeader {
    ca: String,
    allowed_names: Vec<String>,
    user_headers: Vec<String>,
    group_headers: Vec<String>,
}

fn list(data: &std::collections::BTreeMap<String, String>, key: &str, default: &[&str]) -> Vec<String> {
    data.get(key)
        .and_then(|text| serde_json::from_str::<Vec<String>>(text).ok())
        .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
}

async fn request_header(client: &Client) -> Result<RequestHeader, KubeletError> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let data = maps
        .get("extension-apiserver-authentication")
        .await
        .map_err(|e| KubeletError::RequestHeader(e.to_string()))?
        .data
        .unwrap_or_default();
    let ca = data.get("requestheader-client-ca-file").cloned().ok_or_else(|| {
        KubeletError::RequestHeader(
            "no requestheader-client-ca-file key: the API server runs without a front proxy (--requestheader-client-ca-file, --proxy-client-cert-file)".into(),
        )
    })?;
    Ok(RequestHeader {
        ca,
        allowed_names: list(&data, "requestheader-allowed-names", &[]),
        user_headers: list(&data, "requestheader-username-headers", &["X-Remote-User"]),
        group_headers: list(&data, "requestheader-group-headers", &["X-Remote-Group"]),
    })
}

/// Listens on a free port of `address` and answers what kube-apiserver proxies with `handler`.
pub async fn serve(client: &Client, address: IpAddr, handler: Handler) -> Result<FrontProxied, KubeletError> {
    let settings = Arc::new(request_header(client).await?);
    let listen = SocketAddr::new(address, 0);
    let listener = TcpListener::bind(listen).await.map_err(|e| KubeletError::Listen(listen, e))?;
    let endpoint = listener.local_addr().map_err(|e| KubeletError::Listen(listen, e))?;
    let tls = tls_config(&settings.ca, vec![address.to_string(), "localhost".into()])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (acceptor, settings, handler) = (acceptor.clone(), settings.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await else {
                    return;
                };
                let proxy = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| identity(c));
                let service = hyper::service::service_fn(move |request| {
                    let answer = caller(&settings, proxy.as_ref().map(|p| p.0.as_str()), &request)
                        .map(|caller| handler(caller, request));
                    async move {
                        Ok::<_, std::convert::Infallible>(match answer {
                            Ok(pending) => pending.await,
                            Err(refused) => text(StatusCode::UNAUTHORIZED, refused),
                        })
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Ok(FrontProxied { endpoint, task })
}

/// The caller kube-apiserver names, when the proxy is one the cluster allows.
fn caller<B>(settings: &RequestHeader, proxy: Option<&str>, request: &Request<B>) -> Result<Caller, String> {
    let Some(proxy) = proxy else { return Err("Unauthorized".into()) };
    if !settings.allowed_names.is_empty() && !settings.allowed_names.iter().any(|n| n == proxy) {
        return Err(format!("client certificate {proxy:?} is not an allowed front proxy"));
    }
    let header = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .flat_map(|name| request.headers().get_all(name.as_str()).iter())
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let user = header(&settings.user_headers).into_iter().next().filter(|u| !u.is_empty());
    let Some(user) = user else { return Err("Unauthorized".into()) };
    Ok(Caller { user, groups: header(&settings.group_headers) })
}

/// An extension API server's legacy discovery of its one group version: `/apis`, `/apis/GROUP`,
/// `/apis/GROUP/VERSION` (with `resources`), for `path` split at slashes.
pub fn discovery(path: &[&str], group: &str, version: &str, resources: serde_json::Value) -> Option<serde_json::Value> {
    let group_version = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    let api_group = json!({"name": group, "versions": [group_version], "preferredVersion": group_version});
    match path {
        ["apis"] => Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group]})),
        ["apis", g] if *g == group => {
            let mut api_group = api_group;
            api_group["kind"] = json!("APIGroup");
            api_group["apiVersion"] = json!("v1");
            Some(api_group)
        }
        ["apis", g, v] if *g == group && *v == version => Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"), "resources": resources})),
        _ => None,
    }
}

/// Who manages the objects [`register`] writes.
const MANAGER: &str = "vkube-host";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vkube-host");

/// The name of `group`/`version`'s APIService.
fn api_service_name(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

fn api_services(client: &Client) -> Api<kube::api::DynamicObject> {
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    );
    Api::all_with(client.clone(), &resource)
}

/// Routes `group`/`version` of the cluster to `endpoint` as service `kube-system/<service>`.
/// Leaves an APIService someone else registered alone (a real metrics-server) and says so (false).
pub async fn register(
    client: &Client,
    group: &str,
    version: &str,
    service: &str,
    endpoint: SocketAddr,
) -> Result<bool, kube::Error> {
    let name = api_service_name(group, version);
    let services = api_services(client);
    if let Some(existing) = services.get_opt(&name).await? {
        let ours =
            existing.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).is_some_and(|v| v == MANAGED_BY.1);
        if !ours {
            return Ok(false);
        }
    }
    let params = PatchParams::apply(MANAGER).force();
    let core: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "kube-system");
    let object = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service, "namespace": "kube-system", "labels": {MANAGED_BY.0: MANAGED_BY.1}},
        "spec": {"type": "ExternalName", "externalName": endpoint.ip().to_string()}});
    core.patch(service, &params, &Patch::Apply(&object)).await?;
    let object = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": name, "labels": {MANAGED_BY.0: MANAGED_BY.1}},
        "spec": {"group": group, "version": version, "insecureSkipTLSVerify": true,
            "groupPriorityMinimum": 100, "versionPriority": 100,
            "service": {"namespace": "kube-system", "name": service, "port": endpoint.port()}}});
    services.patch(&name, &params, &Patch::Apply(&object)).await?;
    Ok(true)
}

/// Removes what [`register`] wrote (an unavailable APIService would fail the cluster's discovery).
pub async fn unregister(client: &Client, group: &str, version: &str, service: &str) {
    let _ = api_services(client).delete(&api_service_name(group, version), &DeleteParams::default()).await;
    let core: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), "kube-system");
    let _ = core.delete(service, &DeleteParams::default()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RequestHeader {
        RequestHeader {
            ca: String::new(),
            allowed_names: vec!["front-proxy-client".into()],
            user_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
        }
    }

    #[test]
    fn only_an_allowed_proxy_naming_a_user_is_believed() {
        let request = |user: Option<&str>| {
            let mut builder = Request::get("/apis").header("X-Remote-Group", "system:authenticated");
            if let Some(user) = user {
                builder = builder.header("X-Remote-User", user);
            }
            builder.body(()).unwrap()
        };
        let caller = caller(&settings(), Some("front-proxy-client"), &request(Some("alice"))).unwrap();
        assert_eq!((caller.user.as_str(), caller.groups), ("alice", vec!["system:authenticated".to_string()]));
        let refused = caller_error(&settings(), Some("someone-else"), &request(Some("alice")));
        assert!(refused.contains("not an allowed front proxy"), "{refused}");
        assert_eq!(caller_error(&settings(), None, &request(Some("alice"))), "Unauthorized");
        assert_eq!(caller_error(&settings(), Some("front-proxy-client"), &request(None)), "Unauthorized");
    }

    fn caller_error(settings: &RequestHeader, proxy: Option<&str>, request: &Request<()>) -> String {
        caller(settings, proxy, request).map(|c| c.user).unwrap_err()
    }
}
