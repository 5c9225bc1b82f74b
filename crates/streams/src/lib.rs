//! The serving side of the stream protocols of `exec`, `attach` and `port-forward`, shared by
//! vkube's API server and the simulated kubelet: WebSocket with the channel protocols
//! `v5.channel.k8s.io` and `v4.channel.k8s.io` (kubectl 1.30+, kube-rs, the Python client), SPDY/3.1
//! (kubectl 1.27-1.29, kubectl's fallback, and kube-apiserver calling a kubelet), and the three
//! forms of port-forward.
//!
//! A session is a pair of frame channels. A frame is one WebSocket binary message: its first byte
//! names the stream (0 stdin, 1 stdout, 2 stderr, 3 error (a JSON `Status`), 4 terminal resize
//! (`{"Width":80,"Height":24}`), and with v5 255 = close, followed by the stream closed).

pub mod portforward;
mod spdy;
mod websocket;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

pub use websocket::PROTOCOLS;

/// A request refused before the upgrade (a 400 with this message).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Answers an exec or attach request upgraded to WebSocket (kubectl 1.30+, kube-rs, Python) or
/// SPDY/3.1 (kubectl 1.27-1.29, kubectl's fallback, kube-apiserver to a kubelet): `open` starts
/// the session or refuses the request before the upgrade; the session then runs over whichever
/// protocol the client speaks.
pub async fn upgrade<F, E>(
    headers: &http::HeaderMap,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut request: StreamRequest,
    open: F,
) -> Result<http::Response<axum::body::Body>, E>
where
    F: FnOnce(StreamRequest) -> BoxFuture<'static, Result<Session, E>>,
    E: From<Refusal>,
{
    let websocket = websocket::is_websocket(headers);
    let (protocol, answer) = if websocket {
        websocket::negotiate(headers)?
    } else if spdy::is_spdy(headers) {
        spdy::negotiate(headers)?
    } else {
        return Err(Refusal("Upgrade request required".into()).into());
    };
    let on_upgrade = on_upgrade.ok_or_else(|| Refusal("unable to upgrade connection: not upgradable".into()))?;
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

impl StreamRequest {
    /// A request for `subresource` (`exec` or `attach`) of `pod` (as stored), no stream asked yet.
    pub fn new(subresource: &str, pod: &Value) -> Self {
        let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
        StreamRequest {
            subresource: subresource.into(),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            container: String::new(),
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
            protocol: String::new(),
            pod: pod.clone(),
        }
    }
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
    use super::*;

    #[test]
    fn exit_codes_become_statuses() {
        assert_eq!(exit_status(0)["status"], "Success");
        let failed = exit_status(3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "3"}));
    }
}
