//! Streams into a pod's containers: `pods/exec` and `pods/attach` over WebSocket with the
//! channel protocols `v5.channel.k8s.io` and `v4.channel.k8s.io` (kubectl 1.30+, kube-rs, the
//! Python client). The API server checks the request as kube-apiserver does (options, pod,
//! container, node), then hands the session to whoever runs the pod ([`PodStreams`]): the host
//! API server for a virtual cluster, the simulated kubelet for the simulated host.
//!
//! A session is a pair of frame channels. A frame is one WebSocket binary message: its first byte
//! names the stream (0 stdin, 1 stdout, 2 stderr, 3 error (a JSON `Status`), 4 terminal resize
//! (`{"Width":80,"Height":24}`), and with v5 255 = close, followed by the stream closed).

pub mod portforward;
mod spdy;
mod websocket;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{ApiError, ApiResult};

pub use websocket::PROTOCOLS;

/// Answers an exec or attach request upgraded to WebSocket (kubectl 1.30+, kube-rs, Python) or
/// SPDY/3.1 (kubectl 1.27-1.29 and kubectl's fallback): `open` starts the session or refuses the
/// request before the upgrade; the session then runs over whichever protocol the client speaks.
pub async fn upgrade<F>(
    headers: &http::HeaderMap,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut request: StreamRequest,
    open: F,
) -> ApiResult<http::Response<axum::body::Body>>
where
    F: FnOnce(StreamRequest) -> BoxFuture<'static, ApiResult<Session>>,
{
    let websocket = websocket::is_websocket(headers);
    let (protocol, answer) = if websocket {
        websocket::negotiate(headers)?
    } else if spdy::is_spdy(headers) {
        spdy::negotiate(headers)?
    } else {
        return Err(ApiError::BadRequest("Upgrade request required".into()));
    };
    let on_upgrade =
        on_upgrade.ok_or_else(|| ApiError::BadRequest("unable to upgrade connection: not upgradable".into()))?;
    request.protocol = protocol.to_string();
    let session = open(request.clone()).await?;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "stream upgrade failed");
                return;
            }
        };
        if websocket {
            websocket::run(upgraded, session).await;
        } else {
            spdy::run(upgraded, session, &request).await;
        }
    });
    let mut response = http::Response::new(axum::body::Body::empty());
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = answer;
    Ok(response)
}

/// Stream ids of the channel protocols.
pub mod channel {
    /// The container's standard input (client → pod).
    pub const STDIN: u8 = 0;
    /// Standard output (pod → client).
    pub const STDOUT: u8 = 1;
    /// Standard error (pod → client).
    pub const STDERR: u8 = 2;
    /// The outcome, a JSON `Status` (pod → client).
    pub const ERROR: u8 = 3;
    /// Terminal size changes (client → pod).
    pub const RESIZE: u8 = 4;
    /// v5: the stream named by the next byte is closed (client → pod).
    pub const CLOSE: u8 = 255;
}

/// What a client asked of a pod, checked.
#[derive(Clone, Debug)]
pub struct StreamRequest {
    /// `exec` or `attach`.
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The container (the pod's only one when the request named none).
    pub container: String,
    /// The command of an exec.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// The negotiated protocol (`v5.channel.k8s.io` or `v4.channel.k8s.io`).
    pub protocol: String,
    /// The pod as stored.
    pub pod: Value,
}

/// Frames from the client, frames to the client.
pub struct Frames {
    pub from_client: mpsc::Receiver<Vec<u8>>,
    pub to_client: mpsc::Sender<Vec<u8>>,
}

/// A session that is ready to run once the connection is upgraded. It ends when it drops its
/// sender; like the kubelet, it first sends an empty frame on its first output stream (stdout,
/// else stderr, else error) to say it is open, and last the outcome on the error stream.
pub type Session = Box<dyn FnOnce(Frames) -> BoxFuture<'static, ()> + Send>;

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
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut request = StreamRequest {
        subresource: subresource.into(),
        namespace,
        name: name.clone(),
        container: String::new(),
        command: Vec::new(),
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
        protocol: String::new(),
        pod: pod.clone(),
    };
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

/// The error-stream `Status` for a command that exited with `code` (0: success).
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The error-stream `Status` for a session that could not run the command.
pub fn failure_status(message: &str) -> Value {
    serde_json::json!({"metadata": {}, "status": "Failure", "message": message})
}

/// The stream a session's first (empty) frame goes to.
pub fn first_output(request: &StreamRequest) -> u8 {
    if request.stdout {
        channel::STDOUT
    } else if request.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    }
}

/// One frame: `stream` then `data`.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(stream);
    out.extend_from_slice(data);
    out
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

    #[test]
    fn exit_codes_become_statuses() {
        assert_eq!(exit_status(0)["status"], "Success");
        let failed = exit_status(3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], json!({"reason": "ExitCode", "message": "3"}));
    }
}
