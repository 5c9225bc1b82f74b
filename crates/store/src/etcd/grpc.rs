//! gRPC to etcd, written out on hyper's HTTP/2 client: unary calls (`KV/Range`, `KV/Txn`,
//! `KV/Compact` ...) and the `Watch/Watch` stream. Messages are length-prefixed protobuf
//! ([`super::proto`]); the outcome is the `grpc-status` trailer (or header, for a response
//! with no body). Plain `http://` endpoints speak HTTP/2 with prior knowledge, as etcd's own
//! clients do; `https://` ones negotiate `h2` by ALPN.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prost::Message;
use tokio::sync::mpsc;

use crate::StorageError;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

fn remote(message: impl std::fmt::Display) -> StorageError {
    StorageError::Remote(message.to_string())
}

/// A request body: one message, or messages as the caller sends them (a stream stays open
/// while its sender lives).
pub(crate) enum GrpcBody {
    Once(Option<Bytes>),
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            GrpcBody::Once(message) => Poll::Ready(message.take().map(|m| Ok(Frame::data(m)))),
            GrpcBody::Stream(messages) => messages.poll_recv(cx).map(|m| m.map(|m| Ok(Frame::data(m)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, GrpcBody::Once(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GrpcBody::Once(Some(message)) => SizeHint::with_exact(message.len() as u64),
            GrpcBody::Once(None) => SizeHint::with_exact(0),
            GrpcBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A message as gRPC frames it: no compression, its length, its bytes.
pub(crate) fn frame(message: &impl Message) -> Bytes {
    let length = message.encoded_len();
    let mut out = Vec::with_capacity(5 + length);
    out.push(0);
    out.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes());
    message.encode_raw(&mut out);
    Bytes::from(out)
}

/// Takes the first whole message off `buffer`, if one is there.
fn next_message<M: Message + Default>(buffer: &mut BytesMut) -> Option<Result<M, StorageError>> {
    if buffer.len() < 5 {
        return None;
    }
    let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if buffer.len() < 5 + length {
        return None;
    }
    let compressed = buffer[0] != 0;
    buffer.advance(5);
    let message = buffer.split_to(length).freeze();
    if compressed {
        return Some(Err(remote("etcd sent a compressed message, which was not asked for")));
    }
    Some(M::decode(message).map_err(|e| remote(format!("etcd sent a message that does not decode: {e}"))))
}

/// The call's outcome from `grpc-status` / `grpc-message`: `None` when the map has no status.
fn status_of(map: &HeaderMap) -> Option<Result<(), StorageError>> {
    let code = map.get("grpc-status")?.to_str().unwrap_or("2").trim();
    if code == "0" {
        return Some(Ok(()));
    }
    let message = map.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or_default();
    // gRPC percent-encodes the message.
    let message = percent_encoding::percent_decode_str(message).decode_utf8_lossy();
    Some(Err(remote(format!("etcd: {message} (gRPC status {code})"))))
}

/// Calls to an etcd cluster, each to whichever endpoint answers (one HTTP/2 connection per
/// endpoint carries every call).
#[derive(Clone)]
pub(crate) struct Channel {
    http: Client<Https, GrpcBody>,
    endpoints: Arc<Vec<String>>,
    /// The endpoint that answered last.
    current: Arc<AtomicUsize>,
}

impl Channel {
    pub(crate) fn new(tls: rustls::ClientConfig, endpoints: Vec<String>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            // A dead etcd member shows up within 40 s, not at the kernel's TCP timeout; the
            // times are kube-apiserver's. Pings go only while a call is open (the store's watch
            // always is): etcd's server counts pings on a connection without streams, and more
            // frequent ones, as abuse and answers with GOAWAY "too many pings".
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(false)
            .build(connector);
        let endpoints = endpoints.iter().map(|e| e.trim_end_matches('/').to_string()).collect();
        Channel { http, endpoints: Arc::new(endpoints), current: Arc::new(AtomicUsize::new(0)) }
    }

    /// Sends `body` to `path` (`/etcdserverpb.KV/Txn`); when an endpoint cannot be connected
    /// to, the next one is tried.
    async fn send(&self, path: &str, body: impl Fn() -> GrpcBody) -> Result<http::Response<Incoming>, StorageError> {
        let mut last = None;
        for attempt in 0..self.endpoints.len() {
            let at = (self.current.load(Ordering::Relaxed) + attempt) % self.endpoints.len();
            let request = http::Request::post(format!("{}{path}", self.endpoints[at]))
                .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
                .header(http::header::TE, HeaderValue::from_static("trailers"))
                .body(body())
                .map_err(|e| remote(e.to_string()))?;
            match self.http.request(request).await {
                Ok(response) => {
                    self.current.store(at, Ordering::Relaxed);
                    if !response.status().is_success() {
                        return Err(remote(format!("etcd answered HTTP {} to {path}", response.status())));
                    }
                    return Ok(response);
                }
                // Only a request that never left is sent again: a transaction that may have
                // been applied must not be applied twice.
                Err(error) if error.is_connect() => last = Some(format!("{}: {error:?}", self.endpoints[at])),
                Err(error) => return Err(remote(format!("etcd at {}: {error:?}", self.endpoints[at]))),
            }
        }
        Err(remote(format!("no etcd endpoint answered ({})", last.unwrap_or_default())))
    }

    /// One request, one answer.
    pub(crate) async fn unary<Q: Message, A: Message + Default>(
        &self,
        path: &str,
        request: &Q,
    ) -> Result<A, StorageError> {
        let message = frame(request);
        let response = self.send(path, || GrpcBody::Once(Some(message.clone()))).await?;
        if let Some(outcome) = status_of(response.headers()) {
            outcome?;
        }
        let collected = response.into_body().collect().await.map_err(|e| remote(format!("etcd: {e}")))?;
        if let Some(outcome) = collected.trailers().and_then(status_of) {
            outcome?;
        }
        let mut buffer = BytesMut::from(collected.to_bytes());
        next_message(&mut buffer).unwrap_or_else(|| Err(remote(format!("etcd's answer to {path} was cut short"))))
    }

    /// Opens a watch stream with one request; answers come from [`Watch::next`].
    pub(crate) async fn watch(&self, create: &super::proto::WatchRequest) -> Result<Watch, StorageError> {
        let first = frame(create);
        let sent = std::sync::Mutex::new(None);
        let response = self
            .send("/etcdserverpb.Watch/Watch", || {
                let (sender, receiver) = mpsc::unbounded_channel();
                let _ = sender.send(first.clone());
                *sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
                GrpcBody::Stream(receiver)
            })
            .await?;
        if let Some(outcome) = status_of(response.headers()) {
            outcome?;
            return Err(remote("etcd ended the watch as it began"));
        }
        let sender = sent.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Watch { body: response.into_body(), buffer: BytesMut::new(), _requests: sender })
    }
}

/// An open watch stream.
pub(crate) struct Watch {
    body: Incoming,
    buffer: BytesMut,
    /// Keeps the request side open: etcd watches while the client's stream is open.
    _requests: Option<mpsc::UnboundedSender<Bytes>>,
}

impl Watch {
    /// The next answer; `None` when etcd ended the stream.
    pub(crate) async fn next(&mut self) -> Option<Result<super::proto::WatchResponse, StorageError>> {
        loop {
            if let Some(message) = next_message(&mut self.buffer) {
                return Some(message);
            }
            match self.body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        let outcome = frame.trailers_ref().and_then(status_of)?;
                        return outcome.err().map(Err);
                    }
                },
                Err(error) => return Some(Err(remote(format!("etcd watch: {error}")))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::proto;

    #[test]
    fn messages_are_framed_and_taken_back_whole() {
        let kv = proto::KeyValue { key: b"/a".to_vec(), value: Bytes::from_static(b"v"), ..Default::default() };
        let one = frame(&kv);
        assert_eq!(one[0], 0, "not compressed");
        assert_eq!(u32::from_be_bytes([one[1], one[2], one[3], one[4]]) as usize, one.len() - 5);
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&one[..3]);
        assert!(next_message::<proto::KeyValue>(&mut buffer).is_none(), "half a header");
        buffer.extend_from_slice(&one[3..]);
        buffer.extend_from_slice(&one[..6]);
        assert_eq!(next_message::<proto::KeyValue>(&mut buffer).unwrap().unwrap(), kv);
        assert!(next_message::<proto::KeyValue>(&mut buffer).is_none(), "the second is not whole yet");
        buffer.extend_from_slice(&one[6..]);
        assert_eq!(next_message::<proto::KeyValue>(&mut buffer).unwrap().unwrap(), kv);
    }

    #[test]
    fn a_failed_call_says_what_etcd_said() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("11"));
        trailers
            .insert("grpc-message", HeaderValue::from_static("etcdserver: mvcc: required revision has been compacted"));
        let error = status_of(&trailers).unwrap().unwrap_err().to_string();
        assert!(error.contains("required revision has been compacted"), "{error}");
        trailers.insert("grpc-message", HeaderValue::from_static("100%25 sure%3A no"));
        assert!(status_of(&trailers).unwrap().unwrap_err().to_string().contains("100% sure: no"));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(status_of(&trailers).unwrap().is_ok());
        assert!(status_of(&HeaderMap::new()).is_none());
    }
}
