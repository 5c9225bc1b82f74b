//! Streams into a pod's containers: `pods/exec`, `pods/attach` and `pods/portforward`. The API
//! server checks the request as kube-apiserver does (options, pod, container, node), then hands
//! the session to whoever runs the pod ([`PodStreams`]): the host API server for a virtual
//! cluster, the simulated kubelet for the simulated host. The protocols are `vkube_streams`'.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

pub use vkube_streams::{
    Frames, PROTOCOLS, Refusal, Session, StreamRequest, channel, exit_status, failure_status, first_output, frame,
    portforward,
};

use crate::{ApiError, ApiResult};

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::BadRequest(refusal.0)
    }
}

/// Answers an exec or attach request (see [`vkube_streams::upgrade`]).
pub async fn upgrade<F>(
    headers: &http::HeaderMap,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    request: StreamRequest,
    open: F,
) -> ApiResult<http::Response<axum::body::Body>>
where
    F: FnOnce(StreamRequest) -> BoxFuture<'static, ApiResult<Session>>,
{
    vkube_streams::upgrade(headers, on_upgrade, request, open).await
}

/// Whoever runs pods: opens a session for a checked request, or refuses it before the upgrade.
pub trait PodStreams: Send + Sync {
    fn open(&self, request: StreamRequest) -> BoxFuture<'static, ApiResult<Session>>;

    /// Opens a connection to `port` of `pod` (as stored) for port-forward; the error text is
    /// what the client's error stream says.
    fn connect(&self, pod: &Value, port: u16) -> BoxFuture<'static, Result<portforward::Forward, String>>;
}

/// A shared [`PodStreams`].
pub type SharedPodStreams = Arc<dyn PodStreams>;

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Checks an exec or attach request the way kube-apiserver does (its options, then the pod's
/// container, then whether a node runs it) and returns it, protocol not yet chosen.
pub fn check(subresource: &str, pod: &Value, query: Option<&str>) -> ApiResult<StreamRequest> {
    let mut request = StreamRequest::new(subresource, pod);
    let name = request.name.clone();
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        let (key, value) = (decode(key), decode(value));
        let flag = |field: &mut bool| -> ApiResult<()> {
            *field = parse_bool(&value)
                .ok_or_else(|| ApiError::BadRequest(format!("strconv.ParseBool: parsing {value:?}: invalid syntax")))?;
            Ok(())
        };
        match key.as_str() {
            "container" => request.container = value,
            "command" if subresource == "exec" => request.command.push(value),
            "stdin" => flag(&mut request.stdin)?,
            "stdout" => flag(&mut request.stdout)?,
            "stderr" => flag(&mut request.stderr)?,
            "tty" => flag(&mut request.tty)?,
            _ => {}
        }
    }
    let names = |key: &str| container_names(pod, key);
    let containers = names("containers");
    if request.container.is_empty() {
        match containers.as_slice() {
            [only] => request.container = only.clone(),
            [] => return Err(ApiError::BadRequest(format!("a container name must be specified for pod {name}"))),
            _ => {
                let all = [names("initContainers"), containers.clone(), names("ephemeralContainers")].concat();
                return Err(ApiError::BadRequest(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                )));
            }
        }
    } else {
        let all = [names("initContainers"), containers, names("ephemeralContainers")].concat();
        if !all.contains(&request.container) {
            return Err(ApiError::BadRequest(format!("container {} is not valid for pod {name}", request.container)));
        }
    }
    if pod.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
    }
    if request.tty {
        // The kubelet drops stderr with a terminal: it is merged into stdout.
        request.stderr = false;
    }
    if !request.stdin && !request.stdout && !request.stderr {
        return Err(ApiError::BadRequest("you must specify at least 1 of stdin, stdout, stderr".into()));
    }
    Ok(request)
}

/// The names of the containers of `pod` listed under `spec.<key>` (`containers`,
/// `initContainers`, `ephemeralContainers`).
pub fn container_names(pod: &Value, key: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{key}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(containers: &[&str], node: Option<&str>) -> Value {
        let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c, "image": "x"})).collect();
        json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": containers, "nodeName": node, "initContainers": [{"name": "init", "image": "x"}]}})
    }

    #[test]
    fn requests_are_checked_in_upstreams_order() {
        let one = pod(&["c"], Some("n1"));
        let request = check("exec", &one, Some("command=sh&command=-c&command=echo+hi&stdout=true&stderr=1")).unwrap();
        assert_eq!(request.container, "c", "the only container is meant");
        assert_eq!(request.command, ["sh", "-c", "echo hi"]);
        assert!(request.stdout && request.stderr && !request.stdin);
        let two = pod(&["a", "b"], Some("n1"));
        let error = check("exec", &two, Some("command=ls&stdout=true")).unwrap_err();
        assert_eq!(error.to_string(), "a container name must be specified for pod web, choose one of: [init a b]");
        let error = check("exec", &two, Some("container=z&command=ls&stdout=true")).unwrap_err();
        assert_eq!(error.to_string(), "container z is not valid for pod web");
        let unscheduled = pod(&["c"], None);
        let error = check("exec", &unscheduled, Some("command=ls&stdout=true")).unwrap_err();
        assert_eq!(error.to_string(), "pod web does not have a host assigned");
        let error = check("exec", &one, Some("command=ls")).unwrap_err();
        assert_eq!(error.to_string(), "you must specify at least 1 of stdin, stdout, stderr");
        let tty = check("attach", &one, Some("stdin=true&stdout=true&stderr=true&tty=true")).unwrap();
        assert!(!tty.stderr, "a terminal merges stderr into stdout");
    }
}
