//! A kubelet's own API for this cluster's pods, on a listener of its own (`ServerConfig::
//! kubelet_listen`): what tools that talk to a node's kubelet directly use (`/exec`, `/attach`,
//! `/portForward`, `/containerLogs`, `/pods`), as on a kind or k3d node whose port 10250 is
//! reachable. Pods are named as in this cluster; the streams go wherever this API server sends
//! its own `pods/exec` (the `PodStreams` hook: for a virtual cluster, the host pod).
//!
//! As a kubelet with webhook authentication and authorization: the caller is authenticated as
//! on the API port (client certificate or bearer token) and must be allowed the kubelet's
//! subresource of the pod's node (`nodes/proxy`, verb by method: `get` for GET, `create` for
//! POST). Answers are plain text, as a kubelet's.

use std::sync::Arc;

use axum::body::Body;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::http::AppState;
use crate::{ApiError, ApiResult};

fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(message.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The kubelet's stream options (`input=1&output=1&error=1&tty=1&command=...`) as the API
/// server's (`stdin=true&...&container=C`).
fn stream_query(query: &str, container: &str) -> String {
    let mut out = vec![format!(
        "container={}",
        percent_encoding::utf8_percent_encode(container, percent_encoding::NON_ALPHANUMERIC)
    )];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let on = matches!(value, "1" | "true" | "True");
        match key {
            "input" | "stdin" if on => out.push("stdin=true".into()),
            "output" | "stdout" if on => out.push("stdout=true".into()),
            "error" | "stderr" if on => out.push("stderr=true".into()),
            "tty" if on => out.push("tty=true".into()),
            "command" => out.push(pair.to_string()),
            _ => {}
        }
    }
    out.join("&")
}

/// Answers one request to the kubelet listener.
pub async fn handle(
    state: Arc<AppState>,
    identity: Option<Identity>,
    request: http::Request<hyper::body::Incoming>,
) -> Response<Body> {
    match route(&state, identity, request).await {
        Ok(response) => response,
        Err(error) => {
            let status = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            text(status, error.message())
        }
    }
}

async fn route(
    state: &Arc<AppState>,
    identity: Option<Identity>,
    request: http::Request<hyper::body::Incoming>,
) -> ApiResult<Response<Body>> {
    let (parts, _body) = request.into_parts();
    let identity = crate::auth::authenticate::authenticate(state, identity, &parts.headers).await?;
    if identity.user == "system:anonymous" {
        return Err(ApiError::Unauthorized);
    }
    let path = parts.uri.path().trim_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').collect();
    let query = parts.uri.query().unwrap_or_default().to_string();
    // `/exec/NS/POD[/UID]/CONTAINER`, `/portForward/NS/POD[/UID]`, `/containerLogs/NS/POD/CONTAINER`.
    let (kind, namespace, name, container) = match segments.as_slice() {
        [kind @ ("exec" | "attach"), ns, pod, container] | [kind @ ("exec" | "attach"), ns, pod, _, container] => {
            (*kind, *ns, *pod, Some(*container))
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => ("portForward", *ns, *pod, None),
        ["containerLogs", ns, pod, container] => ("containerLogs", *ns, *pod, Some(*container)),
        ["pods"] | ["runningpods"] if parts.method == Method::GET => {
            authorize(state, &identity, &parts.method, None)?;
            return pods(state).await;
        }
        _ => return Ok(text(StatusCode::NOT_FOUND, "404 page not found\n")),
    };
    let snapshot = state.registry.catalog.snapshot();
    let rt = snapshot.get("", "v1", "pods").expect("built-in");
    let pod = match state.registry.get(&rt, Some(namespace), name).await {
        Ok(pod) => pod,
        Err(ApiError::NotFound { .. }) => {
            return Ok(text(StatusCode::NOT_FOUND, format!("pod does not exist: {namespace}/{name}")));
        }
        Err(error) => return Err(error),
    };
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default().to_string();
    authorize(state, &identity, &parts.method, Some(&node))?;
    let Some(streams) = state.pod_streams.clone() else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "this kubelet reaches no containers\n"));
    };
    let on_upgrade = parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned();
    match (kind, container) {
        (sub @ ("exec" | "attach"), Some(container)) => {
            let request = crate::streams::check(sub, &pod, Some(&stream_query(&query, container)))?;
            crate::streams::upgrade(&parts.headers, on_upgrade, request, move |request| streams.open(request)).await
        }
        ("portForward", _) => {
            let connector: crate::streams::portforward::Connector = Arc::new(move |port| streams.connect(&pod, port));
            crate::streams::portforward::upgrade(&parts.headers, Some(&query), on_upgrade, connector)
                .await
                .map_err(ApiError::from)
        }
        ("containerLogs", Some(container)) => {
            let Some(source) = &state.pod_logs else {
                return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "this kubelet reaches no containers\n"));
            };
            let forwarded = format!("{query}&container={container}");
            let stream = source.logs(namespace, name, &forwarded).await?;
            let mut response = Response::new(Body::from_stream(stream));
            response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
            Ok(response)
        }
        _ => Ok(text(StatusCode::NOT_FOUND, "404 page not found\n")),
    }
}

/// `nodes/proxy` of `node` (any node for the node-wide listings), as a kubelet asks.
fn authorize(state: &AppState, identity: &Identity, method: &Method, node: Option<&str>) -> ApiResult<()> {
    let path = format!("/api/v1/nodes/{}/proxy", node.filter(|n| !n.is_empty()).unwrap_or("_"));
    let verb = if method == Method::GET || method == Method::HEAD { "GET" } else { "POST" };
    let attributes = crate::auth::Attributes::from_request(verb, &path, None);
    crate::auth::authorize(&state.rbac, identity, &attributes)
}

/// `/pods`: the pods of this cluster that run on a node (a kubelet lists its own).
async fn pods(state: &AppState) -> ApiResult<Response<Body>> {
    let snapshot = state.registry.catalog.snapshot();
    let rt = snapshot.get("", "v1", "pods").expect("built-in");
    let list = state.registry.list(&rt, None, &crate::registry::ListParams::default()).await?;
    let items: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()))
        .cloned()
        .collect();
    let body = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    let mut response = Response::new(Body::from(body.to_string()));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_options_become_the_api_servers() {
        assert_eq!(
            stream_query("input=1&output=1&tty=1&command=ls&command=-l", "c"),
            "container=c&stdin=true&stdout=true&tty=true&command=ls&command=-l"
        );
        assert_eq!(stream_query("output=1&error=0", "my-box"), "container=my%2Dbox&stdout=true");
    }
}
