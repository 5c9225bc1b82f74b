//! `pods/proxy`, `services/proxy` and `nodes/proxy`: HTTP requests passed to a pod's port, a
//! service's endpoint or a node's kubelet, the rest of the path after `proxy` as their path.
//! The API server checks the target as kube-apiserver does (the object exists, the name's
//! `[scheme:]name[:port]` form) and hands the request to whoever can reach it ([`Proxies`]).

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::Response;
use serde_json::Value;

use crate::{ApiError, ApiResult};

/// What a proxy request goes to.
#[derive(Clone, Debug)]
pub struct ProxyTarget {
    /// `pods`, `services` or `nodes`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The port (number or name) the path named, if any.
    pub port: Option<String>,
    /// `http` or `https` when the path named one.
    pub scheme: Option<String>,
    /// The object as stored.
    pub object: Value,
}

/// Whoever can reach pods, services and nodes.
pub trait Proxies: Send + Sync {
    /// Sends `request` (its URI: the path after `proxy`, and the query) to `target`.
    fn proxy(
        &self,
        target: ProxyTarget,
        request: http::Request<Bytes>,
    ) -> BoxFuture<'static, ApiResult<Response<Body>>>;
}

/// A shared [`Proxies`].
pub type SharedProxies = Arc<dyn Proxies>;

/// Splits `[scheme:]name[:port]` as upstream's `SplitSchemeNamePort` does.
pub fn split_name(id: &str) -> Option<(Option<String>, String, Option<String>)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => (None, *name, None),
        [name, port] => (None, *name, Some(*port)),
        [scheme, name, port] => (Some(*scheme), *name, Some(*port)),
        _ => return None,
    };
    if name.is_empty() || scheme.is_some_and(|s| !matches!(s, "http" | "https" | "")) {
        return None;
    }
    let keep = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(String::from);
    Some((keep(scheme), name.to_string(), keep(port)))
}

/// The port of a pod to proxy to: the one named (a number, or a container port's name), else
/// the first port a container declares.
pub fn pod_port(pod: &Value, port: Option<&str>) -> Option<u16> {
    let ports: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .collect();
    let number = |p: &Value| p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok());
    match port {
        Some(port) => port.parse::<u16>().ok().or_else(|| {
            ports.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(port)).and_then(|p| number(p))
        }),
        None => ports.first().and_then(|p| number(p)),
    }
}

/// The target of a proxy request to `resource` `id` (already read as `object`).
pub fn target(resource: &str, namespace: Option<&str>, id: &str, object: Value) -> ApiResult<ProxyTarget> {
    let (scheme, name, port) =
        split_name(id).ok_or_else(|| ApiError::BadRequest(format!("invalid {resource} request {id:?}")))?;
    Ok(ProxyTarget { resource: resource.into(), namespace: namespace.map(String::from), name, port, scheme, object })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_split_like_upstream() {
        assert_eq!(split_name("web"), Some((None, "web".into(), None)));
        assert_eq!(split_name("web:80"), Some((None, "web".into(), Some("80".into()))));
        assert_eq!(split_name("https:web:443"), Some((Some("https".into()), "web".into(), Some("443".into()))));
        assert_eq!(split_name("ftp:web:21"), None);
        assert_eq!(split_name("a:b:c:d"), None);
    }

    #[test]
    fn pod_ports_by_number_name_or_first() {
        let pod = json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]}]}});
        assert_eq!(pod_port(&pod, None), Some(8080));
        assert_eq!(pod_port(&pod, Some("http")), Some(8080));
        assert_eq!(pod_port(&pod, Some("9090")), Some(9090));
        assert_eq!(pod_port(&pod, Some("metrics")), None);
    }
}
