//! The WebSocket side of a stream session: the handshake (`101 Switching Protocols` with the
//! first channel protocol of the client's list this server speaks, as upstream's `wsstream`
//! picks it) and the pump between the socket and the session's frame channels.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, header};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{Frames, Session};
use crate::Refusal;

/// The channel protocols served, in the order upstream prefers them.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How long a session may stay silent both ways (kubelet's default stream idle timeout).
const IDLE: Duration = Duration::from_secs(4 * 60 * 60);

/// Whether the request asks for a WebSocket upgrade.
pub fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// The protocol to speak: the first of the client's list that is served.
fn choose(headers: &HeaderMap) -> Result<&'static str, Refusal> {
    let asked: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    asked.iter().find_map(|p| PROTOCOLS.iter().find(|s| *s == p).copied()).ok_or_else(|| {
        Refusal(format!(
            "unable to upgrade connection: requested protocol(s) are not supported: {asked:?}; supports {PROTOCOLS:?}"
        ))
    })
}

/// Checks a WebSocket upgrade: the protocol to speak and the answer's headers.
pub(super) fn negotiate(headers: &HeaderMap) -> Result<(&'static str, HeaderMap), Refusal> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Refusal("unable to upgrade connection: missing Sec-WebSocket-Key".into()))?;
    let protocol = choose(headers)?;
    let mut answer = HeaderMap::new();
    answer.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    answer.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    answer.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).map_err(|e| Refusal(e.to_string()))?,
    );
    answer.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    Ok((protocol, answer))
}

/// Runs `session` over the upgraded connection.
pub(super) async fn run(upgraded: hyper::upgrade::Upgraded, session: Session) {
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    pump(socket, session).await;
}

/// Moves frames between the socket and the session until the session ends, then closes.
async fn pump<S>(socket: WebSocketStream<S>, session: Session)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    let (client_frames, from_client) = mpsc::channel::<Vec<u8>>(64);
    let (to_client, mut session_frames) = mpsc::channel::<Vec<u8>>(64);
    let running = tokio::spawn(session(Frames { from_client, to_client }));
    let reader = tokio::spawn(async move {
        while let Ok(Some(Ok(message))) = tokio::time::timeout(IDLE, source.next()).await {
            // Text frames count as bytes too (the Python client sends a text frame for text
            // input), as upstream's wsstream reads every message.
            let data = match message {
                Message::Binary(data) => data.to_vec(),
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if !data.is_empty() && client_frames.send(data).await.is_err() {
                break;
            }
        }
    });
    while let Some(frame) = session_frames.recv().await {
        if sink.send(Message::binary(frame)).await.is_err() {
            break;
        }
    }
    // A normal closure: clients take anything else (even a close without a code) as an error.
    let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    let _ = sink.send(Message::Close(Some(normal))).await;
    let _ = sink.close().await;
    reader.abort();
    running.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn the_clients_first_served_protocol_wins() {
        let kubectl = headers(&[("sec-websocket-protocol", "v5.channel.k8s.io")]);
        assert_eq!(choose(&kubectl).unwrap(), "v5.channel.k8s.io");
        let python = headers(&[("sec-websocket-protocol", "v4.channel.k8s.io,v5.channel.k8s.io")]);
        assert_eq!(choose(&python).unwrap(), "v4.channel.k8s.io");
        let old = headers(&[("sec-websocket-protocol", "channel.k8s.io")]);
        assert!(choose(&old).unwrap_err().to_string().contains("not supported"));
        assert!(is_websocket(&headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket")])));
        assert!(!is_websocket(&headers(&[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")])));
    }
}
