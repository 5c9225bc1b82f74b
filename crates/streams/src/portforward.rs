//! `pods/portforward` in the three forms clients speak:
//!
//! - kubectl 1.31+: a WebSocket with the subprotocol `SPDY/3.1+portforward.k8s.io` whose binary
//!   messages carry a SPDY session (the tunnel kube-apiserver unwraps);
//! - kubectl before 1.31 (and its fallback): a SPDY/3.1 upgrade with `portforward.k8s.io`;
//! - kube-rs and the Python client: a WebSocket with `v4.channel.k8s.io` and a `ports` query, two
//!   channels per port (data `2i`, error `2i+1`), each opened by a frame carrying the port number
//!   (little-endian), as the kubelet does.
//!
//! In the SPDY forms every forwarded connection is a pair of streams (`streamType` error and
//! data, same `port` and `requestID`). Each connection is one [`PodConnection`] from whoever runs
//! the pod; a refusal is written to the error stream, as the kubelet reports a port nothing
//! listens on.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::Refusal;

/// A connection to a port of a pod.
pub trait PodConnection: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PodConnection for T {}

/// A forwarded connection, and what the pod's side reports when it fails after it was opened
/// (a relay learns of a refusal only from the stream's error channel).
pub struct Forward {
    pub connection: Box<dyn PodConnection>,
    pub failure: Option<BoxFuture<'static, Option<String>>>,
}

impl Forward {
    /// A connection that fails only by closing.
    pub fn plain(connection: impl PodConnection + 'static) -> Self {
        Forward { connection: Box::new(connection), failure: None }
    }

    /// The late failure, if one comes within a second of the connection's end.
    async fn failure(failure: Option<BoxFuture<'static, Option<String>>>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(1), failure?).await.ok().flatten()
    }
}

/// Opens connections to a pod's ports (the error text goes to the client's error stream).
pub type Connector = std::sync::Arc<dyn Fn(u16) -> BoxFuture<'static, Result<Forward, String>> + Send + Sync>;

/// The SPDY protocol of port-forward, and its WebSocket tunnel.
const SPDY_PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The channel protocols of WebSocket port-forward (the kubelet's).
const CHANNEL_PROTOCOLS: [&str; 2] = ["v4.channel.k8s.io", "channel.k8s.io"];

/// How the client forwards.
enum Form {
    Tunnel,
    Spdy,
    Channels(&'static str, Vec<u16>),
}

/// The ports of a WebSocket port-forward (`ports=80,443` or repeated, or `port=80&port=443`).
fn ports(query: Option<&str>) -> Result<Vec<u16>, Refusal> {
    let mut out = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // `ports` from clients; `port` (repeated) is how kube-apiserver asks a kubelet.
        if key != "ports" && key != "port" {
            continue;
        }
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        for port in value.split(',').filter(|p| !p.is_empty()) {
            let parsed = port
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Refusal(format!("unable to parse \"{port}\" as a port: invalid port")))?;
            out.push(parsed);
        }
    }
    if out.is_empty() {
        return Err(Refusal("query parameter \"ports\" is required".into()));
    }
    Ok(out)
}

fn protocols(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Answers a port-forward request: the upgrade in the client's form, then one connection from
/// `connect` per forwarded connection until the client hangs up.
pub async fn upgrade(
    headers: &HeaderMap,
    query: Option<&str>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    connect: Connector,
) -> Result<http::Response<axum::body::Body>, Refusal> {
    let mut answer = HeaderMap::new();
    answer.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let form = if super::websocket::is_websocket(headers) {
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Refusal("unable to upgrade connection: missing Sec-WebSocket-Key".into()))?;
        let asked = protocols(headers, "sec-websocket-protocol");
        let form = asked.iter().find_map(|p| {
            if p == TUNNEL_PROTOCOL {
                Some(Form::Tunnel)
            } else {
                CHANNEL_PROTOCOLS.iter().find(|c| *c == p).map(|c| Form::Channels(c, Vec::new()))
            }
        });
        let form = match form {
            Some(Form::Channels(protocol, _)) => Form::Channels(protocol, ports(query)?),
            Some(form) => form,
            None => {
                return Err(Refusal(format!(
                    "unable to upgrade connection: requested protocol(s) are not supported: {asked:?}; supports [\"{TUNNEL_PROTOCOL}\" \"v4.channel.k8s.io\" \"channel.k8s.io\"]"
                )));
            }
        };
        answer.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        answer.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|e| Refusal(e.to_string()))?,
        );
        let chosen = match &form {
            Form::Tunnel => TUNNEL_PROTOCOL,
            Form::Channels(protocol, _) => protocol,
            Form::Spdy => SPDY_PROTOCOL,
        };
        answer.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(chosen));
        form
    } else if super::spdy::is_spdy(headers) {
        let offered = protocols(headers, "x-stream-protocol-version");
        if !offered.iter().any(|p| p == SPDY_PROTOCOL) {
            return Err(Refusal(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{SPDY_PROTOCOL}\"]"
            )));
        }
        answer.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        answer.insert("x-stream-protocol-version", HeaderValue::from_static(SPDY_PROTOCOL));
        Form::Spdy
    } else {
        return Err(Refusal("Upgrade request required".into()));
    };
    let on_upgrade = on_upgrade.ok_or_else(|| Refusal("unable to upgrade connection: not upgradable".into()))?;
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(error) => {
                tracing::debug!(%error, "port-forward upgrade failed");
                return;
            }
        };
        match form {
            Form::Spdy => serve_spdy(vkube_spdy::serve(upgraded), connect).await,
            Form::Tunnel => {
                let socket = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                let (near, far) = tokio::io::duplex(256 * 1024);
                tokio::spawn(tunnel(socket, far));
                serve_spdy(vkube_spdy::serve(near), connect).await;
            }
            Form::Channels(_, ports) => {
                let socket = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                serve_channels(socket, ports, connect).await;
            }
        }
    });
    let mut response = http::Response::new(axum::body::Body::empty());
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = answer;
    Ok(response)
}

/// Carries a byte stream in WebSocket binary messages, both ways (kubectl's tunnel).
async fn tunnel<S>(socket: WebSocketStream<S>, bytes: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    let (mut reader, mut writer) = tokio::io::split(bytes);
    let inbound = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if writer.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut buffer = vec![0u8; 32 * 1024];
    while let Ok(n) = reader.read(&mut buffer).await {
        if n == 0 || sink.send(Message::binary(buffer[..n].to_vec())).await.is_err() {
            break;
        }
    }
    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(normal))).await;
    inbound.abort();
}

/// The SPDY forms: pairs of streams per request id.
async fn serve_spdy(mut session: vkube_spdy::Session, connect: Connector) {
    #[derive(Default)]
    struct Pair {
        error: Option<vkube_spdy::Stream>,
        data: Option<vkube_spdy::Stream>,
    }
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = session.streams.recv().await {
        let id = stream.header("requestid").unwrap_or_default().to_string();
        let pair = pairs.entry(id.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => pair.error = Some(stream),
            Some("data") => pair.data = Some(stream),
            _ => {
                stream.writer.reset();
                continue;
            }
        }
        if pair.error.is_some() && pair.data.is_some() {
            let Pair { error: Some(error), data: Some(data) } = pairs.remove(&id).unwrap_or_default() else { continue };
            tokio::spawn(forward_pair(error, data, connect.clone()));
        }
    }
}

async fn forward_pair(error: vkube_spdy::Stream, data: vkube_spdy::Stream, connect: Connector) {
    let port = data.header("port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    match connect(port).await {
        Ok(Forward { connection, failure }) => {
            let (mut from_pod, mut to_pod) = tokio::io::split(connection);
            let mut incoming = data.incoming;
            let upstream = tokio::spawn(async move {
                while let Some(chunk) = incoming.recv().await {
                    if to_pod.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = to_pod.shutdown().await;
            });
            let mut buffer = vec![0u8; 32 * 1024];
            while let Ok(n) = from_pod.read(&mut buffer).await {
                if n == 0 || !data.writer.write(&buffer[..n]) {
                    break;
                }
            }
            // The pod's side is over. kubectl closes its local connection once the error stream
            // ends, and only then its own half of the data stream, so both close now; what the
            // client still sends goes to the pod until that close.
            data.writer.close();
            if let Some(message) = Forward::failure(failure).await {
                error.writer.write(message.as_bytes());
            }
            error.writer.close();
            let _ = tokio::time::timeout(Duration::from_secs(30), upstream).await;
        }
        Err(message) => {
            error.writer.write(message.as_bytes());
            data.writer.close();
            error.writer.close();
        }
    }
}

/// The channel form: two channels per port on one WebSocket, one connection per port.
async fn serve_channels<S>(socket: WebSocketStream<S>, ports: Vec<u16>, connect: Connector)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    let (out, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let mut to_pods = Vec::new();
    let mut tasks = Vec::new();
    for (index, port) in ports.iter().copied().enumerate() {
        let (data, error) = ((index * 2) as u8, (index * 2 + 1) as u8);
        let port_bytes = port.to_le_bytes();
        for channel in [data, error] {
            let _ = out.send(vec![channel, port_bytes[0], port_bytes[1]]).await;
        }
        match connect(port).await {
            Ok(Forward { connection, failure }) => {
                let (mut from_pod, to_pod) = tokio::io::split(connection);
                to_pods.push(Some(to_pod));
                let out = out.clone();
                tasks.push(tokio::spawn(async move {
                    // The channel byte first, then up to 64 KiB read straight behind it.
                    let mut buffer = vec![0u8; 64 * 1024 + 1];
                    buffer[0] = data;
                    while let Ok(n) = from_pod.read(&mut buffer[1..]).await {
                        if n == 0 || out.send(buffer[..=n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                    if let Some(message) = Forward::failure(failure).await {
                        let _ = out.send(super::frame(error, message.as_bytes())).await;
                    }
                }));
            }
            Err(message) => {
                to_pods.push(None);
                let _ = out.send(super::frame(error, message.as_bytes())).await;
            }
        }
    }
    drop(out);
    let inbound = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Text(text) => text.into(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((channel, bytes)) = data.split_first() else { continue };
            if channel % 2 == 0
                && let Some(Some(to_pod)) = to_pods.get_mut(usize::from(*channel / 2))
                && to_pod.write_all(bytes).await.is_err()
            {
                to_pods[usize::from(*channel / 2)] = None;
            }
        }
        for to_pod in to_pods.iter_mut().flatten() {
            let _ = to_pod.shutdown().await;
        }
    });
    // Once every pod connection is over, the client is told by the socket's close (as the
    // kubelet closes it when its forwards end).
    while let Some(frame) = out_rx.recv().await {
        if sink.send(Message::binary(frame)).await.is_err() {
            break;
        }
    }
    inbound.abort();
    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(normal))).await;
    for task in tasks {
        task.abort();
    }
}

/// The client side of the channel form for one port, over `socket` (an upgraded
/// `pods/NAME/portforward?ports=PORT`): the returned connection carries the port's bytes, its
/// failure is what the error channel says. What kube-rs's `Portforwarder` does, without its
/// per-frame channel hop and 4 KiB reads: a relay hop (virtual API server to host) costs less.
pub fn channel_client<S>(socket: WebSocketStream<S>) -> Forward
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (mut from_us, mut to_us) = tokio::io::split(theirs);
    let (mut sink, mut source) = socket.split();
    let (failed, failure) = tokio::sync::oneshot::channel::<Option<String>>();
    tokio::spawn(async move {
        // Each channel's first frame is the port number.
        let mut opened = [false; 2];
        let mut error = String::new();
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, bytes)) = data.split_first() else { continue };
            let Some(seen) = opened.get_mut(usize::from(channel)) else { continue };
            if !*seen {
                *seen = true;
            } else if channel == 0 {
                if to_us.write_all(bytes).await.is_err() {
                    break;
                }
            } else {
                error.push_str(&String::from_utf8_lossy(bytes));
            }
        }
        let _ = to_us.shutdown().await;
        let _ = failed.send((!error.is_empty()).then_some(error));
    });
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024 + 1];
        loop {
            match from_us.read(&mut buffer[1..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buffer[..=n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The channel form has no half-close: our end is done, so is the forward.
        let _ = sink.close().await;
    });
    let failure: BoxFuture<'static, Option<String>> = Box::pin(async move { failure.await.ok().flatten() });
    Forward { connection: Box::new(ours), failure: Some(failure) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(ports(Some("ports=80,443")).unwrap(), [80, 443]);
        assert_eq!(ports(Some("ports=80&ports=81")).unwrap(), [80, 81]);
        assert_eq!(ports(Some("port=80&port=81")).unwrap(), [80, 81], "as kube-apiserver asks a kubelet");
        assert!(ports(Some("ports=http")).unwrap_err().to_string().contains("unable to parse \"http\" as a port"));
        assert!(ports(None).is_err());
    }
}
