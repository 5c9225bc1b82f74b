//! What answers on a simulated pod's ports (for port-forward): every `containerPort` a container
//! declares has a small responder. A connection that starts with an HTTP request gets HTTP
//! answers naming the pod (its host name, as `hostname` shows in a container), the port, the
//! method and the path; anything else is echoed back. A port no container declares refuses the
//! connection with the kubelet's words.

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

/// An image's name without registry, path and tag.
pub(super) fn image_name(image: &str) -> &str {
    let name = image.rsplit('/').next().unwrap_or(image);
    name.split([':', '@']).next().unwrap_or(name)
}

/// The well-known port of an image the simulator knows (what its server listens on).
fn image_port(image: &str) -> Option<u16> {
    match image_name(image) {
        "nginx" | "httpd" | "nginx-unprivileged" => Some(80),
        super::sample_apiserver::IMAGE => Some(443),
        _ => None,
    }
}

/// Port numbers a command line names (`server.py 1234 1235`, `--port=8080`, `:9090`).
fn command_ports(words: &[&str]) -> Vec<u16> {
    words
        .iter()
        .flat_map(|w| w.split(['=', ':', ' ']))
        .filter_map(|part| part.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .collect()
}

/// The ports each container listens on, with its image: the `containerPort`s it declares (TCP),
/// the port numbers its command and arguments name, and its image's well-known port.
pub fn listening(pod: &Value) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for container in ["initContainers", "containers"]
        .iter()
        .flat_map(|key| pod.pointer(&format!("/spec/{key}")).and_then(Value::as_array).into_iter().flatten())
    {
        let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
        let declared = container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == "TCP")
            .filter_map(|p| p.get("containerPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()));
        let words: Vec<&str> = ["command", "args"]
            .iter()
            .flat_map(|key| container.get(*key).and_then(Value::as_array).into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        for port in declared.chain(command_ports(&words)).chain(image_port(&image)) {
            if !out.iter().any(|(p, _)| *p == port) {
                out.push((port, image.clone()));
            }
        }
    }
    out
}

/// Connects to `port` of `pod`: the client's end of a connection to the port's responder
/// (`client` reads what a server needs from the pod's volumes, e.g. its certificate).
pub fn connect(pod: &Value, port: u16, client: Option<kube::Client>) -> Result<DuplexStream, String> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let Some((_, image)) = listening(pod).into_iter().find(|(p, _)| *p == port) else {
        let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
        return Err(format!(
            "error forwarding port {port} to pod {name}, uid {uid}: failed to connect to localhost:{port} inside the pod's network namespace, IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused"
        ));
    };
    let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).filter(|h| !h.is_empty()).unwrap_or(name);
    let (client_end, server) = tokio::io::duplex(64 * 1024);
    if let Some(webhook) = super::webhook::container(pod)
        && super::webhook::port(webhook) == port
    {
        tokio::spawn(super::webhook::serve(server, pod.clone(), client));
        return Ok(client_end);
    }
    if image_name(&image) == super::sample_apiserver::IMAGE {
        let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        tokio::spawn(super::sample_apiserver::serve(server, uid));
        return Ok(client_end);
    }
    tokio::spawn(respond(server, hostname.to_string(), port, image_port(&image) == Some(port)));
    Ok(client_end)
}

/// nginx's default page, as its image serves it at `/`.
const NGINX_WELCOME: &str = "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n<p>If you see this page, the nginx web server is successfully installed and\nworking. Further configuration is required.</p>\n</body>\n</html>\n";

/// Serves one connection: HTTP when it starts like a request (an image's own page at `/` when it
/// is a web server the simulator knows), an echo otherwise.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, pod: String, port: u16, web_server: bool) {
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
            let (kind, body) = if web_server && path == "/" {
                ("text/html", NGINX_WELCOME.to_string())
            } else {
                ("text/plain; charset=utf-8", format!("{pod} port {port}: {method} {path}\n"))
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{}\r\n{body}",
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
        let mut http = connect(&pod(), 80, None).unwrap();
        http.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = http.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("web port 80: GET /health\n"), "the pod's host name, the port, the request");
        let mut echo = connect(&pod(), 80, None).unwrap();
        echo.write_all(b"\x00ping").await.unwrap();
        let mut back = [0u8; 5];
        echo.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"\x00ping");
    }

    #[test]
    fn ports_nothing_listens_on_refuse() {
        assert!(connect(&pod(), 8080, None).unwrap_err().contains("connect: connection refused"));
        assert!(connect(&pod(), 53, None).is_err(), "UDP ports are not forwarded");
    }

    #[test]
    fn containers_listen_on_declared_command_line_and_image_ports() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "python", "command": ["python", "-u", "/opt/server.py", "1234", "--metrics=:9090"]},
            {"name": "b", "image": "docker.io/library/nginx:1.27", "ports": [{"containerPort": 8443}]}]}});
        let ports: Vec<u16> = listening(&pod).into_iter().map(|(p, _)| p).collect();
        assert_eq!(ports, [1234, 9090, 8443, 80]);
    }

    #[tokio::test]
    async fn nginx_serves_its_welcome_page() {
        let pod = json!({"metadata": {"name": "n"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let mut http = connect(&pod, 80, None).unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).await.unwrap();
        assert!(answer.contains("<h1>Welcome to nginx!</h1>"), "{answer}");
    }
}
