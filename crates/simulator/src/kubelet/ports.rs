//! What answers on a simulated pod's ports (for port-forward): every `containerPort` a container
//! declares has a small responder. A connection that starts with an HTTP request gets HTTP
//! answers naming the pod (its host name, as `hostname` shows in a container), the port, the
//! method and the path; anything else is echoed back. A port no container declares refuses the
//! connection with the kubelet's words.

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

/// The ports the pod's containers declare.
pub fn declared(pod: &Value) -> Vec<u16> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|key| pod.pointer(&format!("/spec/{key}")).and_then(Value::as_array).into_iter().flatten())
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .filter(|p| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == "TCP")
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()))
        .collect()
}

/// Connects to `port` of `pod`: the client's end of a connection to the port's responder.
pub fn connect(pod: &Value, port: u16) -> Result<DuplexStream, String> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if !declared(pod).contains(&port) {
        let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        return Err(format!(
            "error forwarding port {port} to pod {name}, uid {uid}: failed to connect to localhost:{port} inside the pod's network namespace, IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused"
        ));
    }
    let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).filter(|h| !h.is_empty()).unwrap_or(name);
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(respond(server, hostname.to_string(), port));
    Ok(client)
}

/// Serves one connection: HTTP when it starts like a request, an echo otherwise.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, pod: String, port: u16) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        if !looks_like_http(&buffer) {
            if io.write_all(&buffer).await.is_err() {
                return;
            }
            buffer.clear();
            continue;
        }
        // Answer every complete request in the buffer (keep-alive).
        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() < end + 4 + length {
                break;
            }
            buffer.drain(..end + 4 + length);
            let mut words = head.split_whitespace();
            let (method, path) = (words.next().unwrap_or("GET"), words.next().unwrap_or("/"));
            let close = head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("connection:") && l.to_ascii_lowercase().contains("close"));
            let body = format!("{pod} port {port}: {method} {path}\n");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{body}",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            if io.write_all(answer.as_bytes()).await.is_err() || close {
                let _ = io.shutdown().await;
                return;
            }
        }
    }
}

fn looks_like_http(buffer: &[u8]) -> bool {
    const METHODS: [&[u8]; 7] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"PATCH ", b"OPTIONS "];
    METHODS.iter().any(|m| buffer.starts_with(m) || (buffer.len() < m.len() && m.starts_with(buffer)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Value {
        json!({"metadata": {"name": "web-x-default-x-vc", "uid": "u1"}, "spec": {"hostname": "web",
            "containers": [{"name": "c", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]}]}})
    }

    #[tokio::test]
    async fn http_is_answered_and_anything_else_echoed() {
        let mut http = connect(&pod(), 80).unwrap();
        http.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = http.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("web port 80: GET /health\n"), "the pod's host name, the port, the request");
        let mut echo = connect(&pod(), 80).unwrap();
        echo.write_all(b"\x00ping").await.unwrap();
        let mut back = [0u8; 5];
        echo.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"\x00ping");
    }

    #[test]
    fn undeclared_ports_refuse() {
        assert!(connect(&pod(), 8080).unwrap_err().contains("connect: connection refused"));
        assert!(connect(&pod(), 53).is_err(), "UDP ports are not forwarded");
    }
}
