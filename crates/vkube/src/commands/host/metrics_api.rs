//! `vkube host --attach`: the simulated nodes' resource metrics served to the cluster as
//! metrics-server would serve them, an aggregated `metrics.k8s.io/v1beta1` behind kube-apiserver,
//! so `kubectl top` works there (and in virtual clusters on that host).

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use vkube_apiserver::resource_metrics::{self, GROUP, ResourceMetrics, VERSION};
use vkube_simulator::kubelet::front_proxy::{self, Caller, FrontProxied};

/// The service the APIService names.
pub const SERVICE: &str = "vkube-metrics";

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// The discovery documents of the group (legacy form; the aggregator asks for nothing else of
/// a server that does not answer aggregated discovery).
fn discovery(path: &[&str]) -> Option<Value> {
    let resources: Vec<Value> = resource_metrics::resource_types()
        .into_iter()
        .map(|t| json!({"name": t.plural, "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": t.verbs}))
        .collect();
    front_proxy::discovery(path, GROUP, VERSION, json!(resources))
}

async fn answer(source: Arc<dyn ResourceMetrics>, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if request.method() != Method::GET {
        return failure(&vkube_apiserver::ApiError::MethodNotAllowed);
    }
    if let Some(document) = discovery(&segments) {
        return json_response(StatusCode::OK, &document);
    }
    let selector = request.uri().query().and_then(|query| url_query(query, "labelSelector"));
    match segments.as_slice() {
        ["apis", GROUP, VERSION, rest @ ..] => {
            match resource_metrics::serve(source.as_ref(), rest, selector.as_deref()).await {
                Ok(body) => json_response(StatusCode::OK, &body),
                Err(error) => failure(&error),
            }
        }
        _ => failure(&vkube_apiserver::ApiError::no_route()),
    }
}

fn failure(error: &vkube_apiserver::ApiError) -> Response<Body> {
    json_response(StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &error.status())
}

/// One query parameter, percent-decoded.
fn url_query(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
    })
}

/// Serves `source` behind the front proxy of the cluster `client` reaches and registers it there.
/// Returns the listener (kept while it serves) and whether the APIService is ours to remove.
pub async fn start(
    client: &kube::Client,
    address: std::net::IpAddr,
    source: Arc<dyn ResourceMetrics>,
) -> anyhow::Result<(FrontProxied, bool)> {
    let handler: front_proxy::Handler = Arc::new(move |_caller: Caller, request| {
        // kube-apiserver authorized the caller before proxying (as for metrics-server).
        Box::pin(answer(source.clone(), request))
    });
    let served = front_proxy::serve(client, address, handler).await?;
    let registered = front_proxy::register(client, GROUP, VERSION, SERVICE, served.endpoint).await?;
    Ok((served, registered))
}

/// Takes the registration back.
pub async fn stop(client: &kube::Client) {
    front_proxy::unregister(client, GROUP, VERSION, SERVICE).await;
}
