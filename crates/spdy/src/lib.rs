//! The server side of SPDY/3.1 as Kubernetes uses it for streams (`kubectl exec` before 1.30,
//! `kubectl port-forward`, and kube-apiserver calling a kubelet): the peer opens streams with
//! SYN_STREAM frames carrying a few headers (`streamType`, `port`, `requestID`), the server
//! replies to each, and both send DATA frames until each side closes its half with FIN.
//!
//! Like Go's `spdystream`, which every Kubernetes component uses, there is no flow control
//! (WINDOW_UPDATE and SETTINGS are read and ignored) and the server never opens streams.
//! Header blocks are zlib-compressed with the SPDY/3 dictionary, one compression context per
//! direction for the whole session.

mod dictionary;

use std::collections::HashMap;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The protocol version in control frames.
const VERSION: u16 = 3;
/// A frame's last one in its direction of the stream.
const FLAG_FIN: u8 = 0x01;
/// Control frame types.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// RST_STREAM status: the stream is refused / cancelled.
const CANCEL: u32 = 5;
/// The largest DATA frame sent (the format allows 16 MiB).
const CHUNK: usize = 32 * 1024;
/// The largest control frame accepted.
const MAX_CONTROL: usize = 1 << 20;

/// Why a session ended early.
#[derive(Debug)]
pub struct SpdyError(pub String);

impl std::fmt::Display for SpdyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpdyError {}

/// A stream the peer opened.
pub struct Stream {
    pub id: u32,
    /// Its headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// What the peer sends on it; ends when the peer closes its half (or resets the stream).
    pub incoming: mpsc::Receiver<Bytes>,
    /// Sends on it.
    pub writer: StreamWriter,
}

impl Stream {
    /// The value of header `name` (case-insensitive; the first of several values).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

enum Out {
    Reply(u32),
    Data(u32, Bytes, bool),
    Reset(u32),
    Ping(u32),
    GoAway,
}

/// The sending half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::UnboundedSender<Out>,
}

impl StreamWriter {
    /// Sends `data` (in frames of at most 32 KiB); false once the session is gone.
    pub fn write(&self, data: &[u8]) -> bool {
        data.chunks(CHUNK).all(|chunk| self.out.send(Out::Data(self.id, Bytes::copy_from_slice(chunk), false)).is_ok())
    }

    /// Closes this side of the stream (an empty DATA frame with FIN).
    pub fn close(&self) {
        let _ = self.out.send(Out::Data(self.id, Bytes::new(), true));
    }

    /// Resets the stream (both sides).
    pub fn reset(&self) {
        let _ = self.out.send(Out::Reset(self.id));
    }
}

/// A running session: the streams the peer opens arrive on `streams`.
pub struct Session {
    pub streams: mpsc::Receiver<Stream>,
    control: mpsc::UnboundedSender<Out>,
}

impl Session {
    /// Tells the peer the session is over (GOAWAY); the connection closes once every writer is gone.
    pub fn go_away(&self) {
        let _ = self.control.send(Out::GoAway);
    }
}

/// Serves a SPDY session on `io` (an upgraded connection).
pub fn serve<IO>(io: IO) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let (out, out_rx) = mpsc::unbounded_channel();
    let (streams_tx, streams) = mpsc::channel(16);
    tokio::spawn(write_loop(writer, out_rx));
    let control = out.clone();
    tokio::spawn(async move {
        if let Err(error) = read_loop(reader, out, streams_tx).await {
            tracing::debug!(%error, "spdy session ended");
        }
    });
    Session { streams, control }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    out: mpsc::UnboundedSender<Out>,
    streams: mpsc::Sender<Stream>,
) -> Result<(), SpdyError> {
    let io = |e: std::io::Error| SpdyError(e.to_string());
    let mut inflater = HeaderInflater::new();
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut head = [0u8; 8];
    loop {
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if first & 0x8000_0000 == 0 {
            // A DATA frame.
            let id = first & 0x7fff_ffff;
            let mut data = vec![0u8; length];
            reader.read_exact(&mut data).await.map_err(io)?;
            if let Some(sender) = open.get(&id)
                && !data.is_empty()
                && sender.send(Bytes::from(data)).await.is_err()
            {
                // Nobody reads this stream any more.
                open.remove(&id);
            }
            if flags & FLAG_FIN != 0 {
                open.remove(&id);
            }
            continue;
        }
        if length > MAX_CONTROL {
            return Err(SpdyError(format!("control frame of {length} bytes")));
        }
        let kind = (first & 0xffff) as u16;
        let mut payload = vec![0u8; length];
        reader.read_exact(&mut payload).await.map_err(io)?;
        let word = |at: usize| payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match kind {
            SYN_STREAM => {
                let id = word(0).ok_or_else(|| SpdyError("short SYN_STREAM".into()))? & 0x7fff_ffff;
                let block = inflater.inflate(payload.get(10..).unwrap_or_default())?;
                let headers = parse_headers(&block)?;
                let (sender, incoming) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    open.insert(id, sender);
                }
                let _ = out.send(Out::Reply(id));
                let stream = Stream { id, headers, incoming, writer: StreamWriter { id, out: out.clone() } };
                if streams.send(stream).await.is_err() {
                    let _ = out.send(Out::Reset(id));
                }
            }
            RST_STREAM => {
                if let Some(id) = word(0) {
                    open.remove(&(id & 0x7fff_ffff));
                }
            }
            PING => {
                if let Some(id) = word(0) {
                    let _ = out.send(Out::Ping(id));
                }
            }
            GOAWAY => return Ok(()),
            // SYN_REPLY (the server opens no streams), SETTINGS, HEADERS, WINDOW_UPDATE: nothing to do.
            _ => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut out: mpsc::UnboundedReceiver<Out>) {
    let mut deflater = HeaderDeflater::new();
    let mut last_stream = 0u32;
    while let Some(item) = out.recv().await {
        let frame = match item {
            Out::Reply(id) => {
                last_stream = last_stream.max(id);
                // An empty header block: zero pairs.
                let block = deflater.deflate(&0u32.to_be_bytes());
                let mut payload = id.to_be_bytes().to_vec();
                payload.extend_from_slice(&block);
                control(SYN_REPLY, 0, &payload)
            }
            Out::Data(id, data, fin) => {
                let mut frame = Vec::with_capacity(8 + data.len());
                frame.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                let length = (data.len() as u32).to_be_bytes();
                frame.push(if fin { FLAG_FIN } else { 0 });
                frame.extend_from_slice(&length[1..]);
                frame.extend_from_slice(&data);
                frame
            }
            Out::Reset(id) => {
                let mut payload = id.to_be_bytes().to_vec();
                payload.extend_from_slice(&CANCEL.to_be_bytes());
                control(RST_STREAM, 0, &payload)
            }
            Out::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Out::GoAway => {
                let mut payload = last_stream.to_be_bytes().to_vec();
                payload.extend_from_slice(&0u32.to_be_bytes());
                control(GOAWAY, 0, &payload)
            }
        };
        if writer.write_all(&frame).await.is_err() {
            break;
        }
        if out.is_empty() && writer.flush().await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    let length = (payload.len() as u32).to_be_bytes();
    frame.push(flags);
    frame.extend_from_slice(&length[1..]);
    frame.extend_from_slice(payload);
    frame
}

/// A header block: a count, then length-prefixed names and values.
fn parse_headers(block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let bad = || SpdyError("malformed header block".into());
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let part = block.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(part)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_lowercase();
        let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// Serializes headers into an (uncompressed) header block.
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (headers.len() as u32).to_be_bytes().to_vec();
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.to_lowercase().as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The session's header decompressor (one zlib stream over every header block the peer sends).
pub struct HeaderInflater {
    inner: Decompress,
    dictionary: Vec<u8>,
}

impl Default for HeaderInflater {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderInflater {
    pub fn new() -> Self {
        HeaderInflater { inner: Decompress::new(true), dictionary: dictionary::dictionary() }
    }

    /// Decompresses one header block.
    pub fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let before = self.inner.total_in();
            let result = self.inner.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.inner.total_in() - before) as usize;
            match result {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) if consumed >= input.len() && out.len() < out.capacity() => return Ok(out),
                Ok(Status::BufError) if consumed >= input.len() => return Ok(out),
                Ok(_) => {}
                Err(error) if error.needs_dictionary().is_some() => {
                    self.inner.set_dictionary(&self.dictionary).map_err(|e| SpdyError(e.to_string()))?;
                }
                Err(error) => return Err(SpdyError(format!("header block: {error}"))),
            }
        }
    }
}

/// The session's header compressor.
pub struct HeaderDeflater {
    inner: Compress,
}

impl Default for HeaderDeflater {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDeflater {
    pub fn new() -> Self {
        let mut inner = Compress::new(Compression::default(), true);
        let _ = inner.set_dictionary(&dictionary::dictionary());
        HeaderDeflater { inner }
    }

    /// Compresses one header block (sync-flushed, so the peer can read it at once).
    pub fn deflate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.inner.total_in();
            let _ = self.inner.compress_vec(&input[consumed..], &mut out, FlushCompress::Sync);
            consumed += (self.inner.total_in() - before) as usize;
            if consumed >= input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_survive_a_shared_compression_context() {
        let mut deflater = HeaderDeflater::new();
        let mut inflater = HeaderInflater::new();
        for round in 0..3 {
            let request = round.to_string();
            let block = header_block(&[("streamType", "data"), ("port", "8080"), ("requestID", &request)]);
            let compressed = deflater.deflate(&block);
            let headers = parse_headers(&inflater.inflate(&compressed).unwrap()).unwrap();
            assert_eq!(headers[0], ("streamtype".to_string(), "data".to_string()), "names are lower-cased");
            assert_eq!(headers[2].1, request);
        }
    }

    /// A client's frames, as spdystream writes them.
    fn syn_stream(deflater: &mut HeaderDeflater, id: u32, fin: bool, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend_from_slice(&deflater.deflate(&header_block(headers)));
        control(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &payload)
    }

    fn data(id: u32, fin: bool, bytes: &[u8]) -> Vec<u8> {
        let mut frame = id.to_be_bytes().to_vec();
        frame.push(if fin { FLAG_FIN } else { 0 });
        frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(bytes);
        frame
    }

    #[tokio::test]
    async fn streams_are_replied_to_and_carry_data_both_ways() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut session = serve(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut deflater = HeaderDeflater::new();
        let mut frames = syn_stream(&mut deflater, 1, false, &[("streamType", "stdin")]);
        frames.extend(data(1, false, b"hello"));
        frames.extend(data(1, true, b""));
        frames.extend(control(PING, 0, &7u32.to_be_bytes()));
        client_write.write_all(&frames).await.unwrap();

        let mut stream = session.streams.recv().await.unwrap();
        assert_eq!((stream.id, stream.header("STREAMTYPE")), (1, Some("stdin")));
        assert_eq!(stream.incoming.recv().await.unwrap(), Bytes::from_static(b"hello"));
        assert!(stream.incoming.recv().await.is_none(), "FIN ends the peer's half");
        stream.writer.write(b"out");
        stream.writer.close();

        // The client sees: SYN_REPLY, PING echo, DATA "out", DATA FIN.
        let mut inflater = HeaderInflater::new();
        let mut read_frame = async || {
            let mut head = [0u8; 8];
            client_read.read_exact(&mut head).await.unwrap();
            let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            let mut payload = vec![0u8; length];
            client_read.read_exact(&mut payload).await.unwrap();
            (head, payload)
        };
        let (head, payload) = read_frame().await;
        assert_eq!(&head[..4], &[0x80, 3, 0, SYN_REPLY as u8]);
        assert_eq!(&payload[..4], &1u32.to_be_bytes());
        assert_eq!(parse_headers(&inflater.inflate(&payload[4..]).unwrap()).unwrap(), vec![]);
        let (head, payload) = read_frame().await;
        assert_eq!((&head[..4], payload.as_slice()), (&[0x80, 3, 0, PING as u8][..], &7u32.to_be_bytes()[..]));
        let (head, payload) = read_frame().await;
        assert_eq!((&head[..4], head[4], payload.as_slice()), (&1u32.to_be_bytes()[..], 0, &b"out"[..]));
        let (head, payload) = read_frame().await;
        assert_eq!((head[4], payload.len()), (FLAG_FIN, 0));
    }
}
