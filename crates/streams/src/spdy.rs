//! The SPDY/3.1 side of an exec or attach session (kubectl 1.27-1.29, and kubectl's fallback):
//! the client opens one SPDY stream per channel (`streamType` error, stdin, stdout, stderr,
//! resize); they are mapped onto the same frame channels as the WebSocket protocols, so a
//! session does not know which protocol its client speaks.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::{Frames, Session, StreamRequest, channel};
use crate::Refusal;

/// The remote-command protocol spoken over SPDY (the kubelet's newest; v5 exists only for
/// WebSocket, where it adds the close signal SPDY has natively).
const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client has to open its streams (the kubelet's default).
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the client has to hang up after the session ended.
const LINGER: Duration = Duration::from_secs(10);

/// Whether the request asks for a SPDY/3.1 upgrade.
pub(super) fn is_spdy(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("SPDY/3.1"))
}

/// The client's protocol versions (one header each, or comma-separated).
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Checks a SPDY upgrade: the protocol to speak and the answer's headers.
pub(super) fn negotiate(headers: &HeaderMap) -> Result<(&'static str, HeaderMap), Refusal> {
    let offered = offered(headers);
    if !offered.iter().any(|p| p == PROTOCOL) {
        return Err(Refusal(format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{PROTOCOL}\"]"
        )));
    }
    let mut answer = HeaderMap::new();
    answer.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    answer.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    answer.insert("x-stream-protocol-version", HeaderValue::from_static(PROTOCOL));
    Ok((PROTOCOL, answer))
}

/// Runs `session` over the upgraded connection, once the client opened the streams `request`
/// needs.
pub(super) async fn run(upgraded: hyper::upgrade::Upgraded, session: Session, request: &StreamRequest) {
    let expected = expected_streams(request);
    serve_session(vkube_spdy::serve(TokioIo::new(upgraded)), session, expected).await;
}

/// The stream types the client opens for `request`.
fn expected_streams(request: &StreamRequest) -> Vec<&'static str> {
    let mut expected = vec!["error"];
    for (on, kind) in
        [(request.stdin, "stdin"), (request.stdout, "stdout"), (request.stderr, "stderr"), (request.tty, "resize")]
    {
        if on {
            expected.push(kind);
        }
    }
    expected
}

/// Waits for the client's streams, then runs the session over them.
async fn serve_session(mut spdy: vkube_spdy::Session, session: Session, expected: Vec<&'static str>) {
    let mut streams: Vec<(String, vkube_spdy::Stream)> = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
    while !expected.iter().all(|kind| streams.iter().any(|(k, _)| k == kind)) {
        match tokio::time::timeout_at(deadline, spdy.streams.recv()).await {
            Ok(Some(stream)) => {
                let kind = stream.header("streamtype").unwrap_or_default().to_string();
                streams.push((kind, stream));
            }
            _ => {
                tracing::debug!("the client did not open its streams");
                spdy.go_away();
                return;
            }
        }
    }
    let (client_frames, from_client) = mpsc::channel::<Vec<u8>>(64);
    let (to_client, mut session_frames) = mpsc::channel::<Vec<u8>>(64);
    let running = tokio::spawn(session(Frames { from_client, to_client }));
    let mut writers: [Option<vkube_spdy::StreamWriter>; 4] = [None, None, None, None];
    let mut readers = Vec::new();
    for (kind, stream) in streams {
        let id = match kind.as_str() {
            "stdin" => channel::STDIN,
            "stdout" => channel::STDOUT,
            "stderr" => channel::STDERR,
            "error" => channel::ERROR,
            "resize" => channel::RESIZE,
            _ => continue,
        };
        if let Some(slot) = writers.get_mut(usize::from(id)) {
            *slot = Some(stream.writer.clone());
        }
        if id == channel::STDIN || id == channel::RESIZE {
            let client_frames = client_frames.clone();
            let mut incoming = stream.incoming;
            readers.push(tokio::spawn(async move {
                while let Some(data) = incoming.recv().await {
                    if client_frames.send(super::frame(id, &data)).await.is_err() {
                        return;
                    }
                }
                // The client closed its input: what the v5 close signal says on WebSocket.
                if id == channel::STDIN {
                    let _ = client_frames.send(vec![channel::CLOSE, channel::STDIN]).await;
                }
            }));
        }
    }
    drop(client_frames);
    while let Some(frame) = session_frames.recv().await {
        let Some((stream, data)) = frame.split_first() else { continue };
        if let Some(Some(writer)) = writers.get(usize::from(*stream))
            && !data.is_empty()
            && !writer.write(data)
        {
            break;
        }
    }
    for writer in writers.iter().flatten() {
        writer.close();
    }
    // The client hangs up once it has read everything. A GOAWAY now would make Go's spdystream
    // drop the frames it has not handled yet (it drains its queues on GOAWAY), cutting output.
    let _ = tokio::time::timeout(LINGER, async { while spdy.streams.recv().await.is_some() {} }).await;
    spdy.go_away();
    for reader in readers {
        reader.abort();
    }
    running.abort();
}
