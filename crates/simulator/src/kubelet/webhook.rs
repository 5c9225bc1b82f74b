//! What a simulated container running `agnhost webhook` (the admission webhook server of the
//! conformance suite, `registry.k8s.io/e2e-test-images/agnhost`) does: serve its handlers over
//! HTTPS with the certificate and key its `--tls-cert-file`/`--tls-private-key-file` name (read
//! from the secret or config map volume mounted there), answering AdmissionReviews (v1 and
//! v1beta1) as agnhost's handlers do: `/always-deny`, `/always-allow-delay-5s`, `/add-label`,
//! `/pods`, `/pods/attach`, `/mutating-pods`, `/mutating-pods-sidecar`, `/configmaps`,
//! `/mutating-configmaps`, `/custom-resource`, `/mutating-custom-resource`, `/crd`, `/readyz`;
//! and `agnhost crd-conversion-webhook` (the conversion webhook of the same suite): `/crdconvert`
//! answers ConversionReviews with agnhost's example converter (`stable.example.com` v1
//! `hostPort: "host:port"` <-> v2 `host`, `port`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::Engine;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kube::Client;
use serde_json::{Value, json};
use tokio::io::DuplexStream;

/// The container of `pod` that runs `agnhost webhook` or `agnhost crd-conversion-webhook`.
pub fn container(pod: &Value) -> Option<&Value> {
    pod.pointer("/spec/containers").and_then(Value::as_array)?.iter().find(|c| {
        let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
        let first = c.pointer("/args/0").and_then(Value::as_str);
        super::ports::image_name(image) == "agnhost" && matches!(first, Some("webhook" | CONVERSION))
    })
}

/// agnhost's conversion webhook subcommand.
const CONVERSION: &str = "crd-conversion-webhook";

/// The value of flag `--name` among `container`'s arguments.
fn flag<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let args: Vec<&str> = container.get("args").and_then(Value::as_array)?.iter().filter_map(Value::as_str).collect();
    let long = format!("--{name}");
    args.iter().enumerate().find_map(|(i, arg)| {
        if let Some(value) = arg.strip_prefix(&format!("{long}=")) {
            return Some(value);
        }
        (*arg == long).then(|| args.get(i + 1).copied()).flatten()
    })
}

/// The port `agnhost webhook` listens on (`--port`, 443 by default).
pub fn port(container: &Value) -> u16 {
    flag(container, "port").and_then(|p| p.parse().ok()).unwrap_or(443)
}

async fn acceptor(client: Option<Client>, pod: &Value, container: &Value) -> Result<tokio_rustls::TlsAcceptor, String> {
    let client = client.ok_or("no API client to read the serving certificate with")?;
    let read = |flag_name: &'static str| {
        let client = client.clone();
        async move {
            let path = flag(container, flag_name).ok_or(format!("--{flag_name} is not given"))?;
            super::exec::mounted_file(client, pod, container, path).await.ok_or(format!("{path}: no such file"))
        }
    };
    let (cert, key) = (read("tls-cert-file").await?, read("tls-private-key-file").await?);
    let chain =
        rustls_pemfile::certs(&mut cert.as_slice()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let key = rustls_pemfile::private_key(&mut key.as_slice()).map_err(|e| e.to_string())?.ok_or("no private key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves one connection to the webhook server of `pod`.
pub async fn serve(io: DuplexStream, pod: Value, client: Option<Client>) {
    let Some(container) = container(&pod).cloned() else { return };
    let acceptor = match acceptor(client, &pod, &container).await {
        Ok(acceptor) => acceptor,
        Err(error) => {
            tracing::debug!(%error, "the simulated agnhost webhook cannot serve TLS");
            return;
        }
    };
    let Ok(tls) = acceptor.accept(io).await else { return };
    let sidecar = flag(&container, "sidecar-image").unwrap_or_default().to_string();
    let converts = container.pointer("/args/0").and_then(Value::as_str) == Some(CONVERSION);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let sidecar = sidecar.clone();
        async move {
            let response = if converts { handle_conversion(request).await } else { handle(request, &sidecar).await };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
}

/// `agnhost crd-conversion-webhook`: `/crdconvert` and `/readyz`.
async fn handle_conversion(request: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path == "/readyz" {
        return Response::new(Body::from("ok"));
    }
    if path != "/crdconvert" {
        return text(StatusCode::NOT_FOUND, "404 page not found\n".into());
    }
    let content_type = request.headers().get(http::header::CONTENT_TYPE).and_then(|t| t.to_str().ok()).unwrap_or("");
    let content_type = content_type.to_string();
    if content_type != "application/json" {
        return text(StatusCode::BAD_REQUEST, format!("invalid Content-Type header `{content_type}`\n"));
    }
    let Ok(body) = request.into_body().collect().await else { return Response::new(Body::empty()) };
    let review: Value = match serde_json::from_slice(&body.to_bytes()) {
        Ok(review) => review,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("failed to deserialize body with error {error}\n")),
    };
    let mut reply = Response::new(Body::from(convert_review(&review).to_string()));
    reply.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    reply
}

/// agnhost's answer to a ConversionReview (`doConversionV1`): every object converted, or the
/// first failure.
fn convert_review(review: &Value) -> Value {
    let request = &review["request"];
    let desired = request["desiredAPIVersion"].as_str().unwrap_or_default();
    let mut converted = Vec::new();
    let mut failure = None;
    for object in request["objects"].as_array().into_iter().flatten() {
        match convert_example(object, desired) {
            Ok(mut object) => {
                object["apiVersion"] = json!(desired);
                converted.push(object);
            }
            Err(message) => {
                failure = Some(message);
                break;
            }
        }
    }
    let response = match failure {
        None => {
            json!({"uid": request["uid"], "convertedObjects": converted, "result": {"metadata": {}, "status": "Success"}})
        }
        Some(message) => {
            json!({"uid": request["uid"], "result": {"metadata": {}, "status": "Failure", "message": message}})
        }
    };
    json!({"apiVersion": review["apiVersion"], "kind": "ConversionReview", "response": response})
}

/// agnhost's `convertExampleCRD`.
fn convert_example(object: &Value, to: &str) -> Result<Value, String> {
    let from = object["apiVersion"].as_str().unwrap_or_default();
    if from == to {
        return Err(format!("conversion from a version to itself should not call the webhook: {to}"));
    }
    let mut out = object.clone();
    let map = out.as_object_mut().ok_or("not an object")?;
    match (from, to) {
        ("stable.example.com/v1", "stable.example.com/v2") => {
            if let Some(host_port) = map.remove("hostPort") {
                let text = host_port.as_str().unwrap_or_default().to_string();
                let parts: Vec<&str> = text.split(':').collect();
                if parts.len() != 2 {
                    return Err(format!("invalid hostPort value `{text}`"));
                }
                map.insert("host".into(), json!(parts[0]));
                map.insert("port".into(), json!(parts[1]));
            }
        }
        ("stable.example.com/v2", "stable.example.com/v1") => {
            let (host, port) = (map.remove("host"), map.remove("port"));
            if host.is_some() || port.is_some() {
                let part = |v: Option<Value>| v.and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                map.insert("hostPort".into(), json!(format!("{}:{}", part(host), part(port))));
            }
        }
        ("stable.example.com/v1" | "stable.example.com/v2", _) => {
            return Err(format!("unexpected conversion version {to:?}"));
        }
        _ => return Err(format!("unexpected conversion version {from:?}")),
    }
    Ok(out)
}

async fn handle(request: Request<hyper::body::Incoming>, sidecar: &str) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path == "/readyz" {
        return Response::new(Body::from("ok"));
    }
    let json_body =
        request.headers().get(http::header::CONTENT_TYPE).is_some_and(|t| t.as_bytes() == b"application/json");
    let Ok(body) = request.into_body().collect().await else { return Response::new(Body::empty()) };
    if !json_body {
        // agnhost logs the wrong content type and answers nothing.
        return Response::new(Body::empty());
    }
    let review: Value = match serde_json::from_slice(&body.to_bytes()) {
        Ok(review) => review,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("Request could not be decoded: {error}")),
    };
    let api_version = review["apiVersion"].as_str().unwrap_or_default().to_string();
    if review["kind"] != "AdmissionReview" || !api_version.starts_with("admission.k8s.io/") {
        return text(StatusCode::BAD_REQUEST, format!("Unsupported group version kind: {api_version}"));
    }
    let request = &review["request"];
    let response = match path.as_str() {
        "/always-allow-delay-5s" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some(json!({"allowed": true, "status": {"metadata": {}, "message": "this webhook allows all requests"}}))
        }
        "/always-deny" => Some(deny_message("this webhook denies all requests")),
        "/add-label" => Some(add_label(request)),
        "/pods" => match admit_pods(request) {
            Some(response) => Some(response),
            // "wait-forever": the response is never sent.
            None => std::future::pending().await,
        },
        "/pods/attach" => Some(deny_attachment(request)),
        "/mutating-pods" => mutate_pods(request),
        "/mutating-pods-sidecar" => mutate_pods_sidecar(request, sidecar),
        "/configmaps" => admit_data(request, Some(("", "configmaps")), "the configmap"),
        "/mutating-configmaps" => mutate_data(request, Some(("", "configmaps"))),
        "/custom-resource" => admit_data(request, None, "the custom resource"),
        "/mutating-custom-resource" => mutate_data(request, None),
        "/crd" => Some(admit_crd(request)),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found\n".into()),
    };
    // A handler that returns nothing makes agnhost's server drop the connection.
    let Some(mut response) = response else { return text(StatusCode::INTERNAL_SERVER_ERROR, String::new()) };
    response["uid"] = request["uid"].clone();
    let out = json!({"kind": "AdmissionReview", "apiVersion": api_version, "response": response});
    let mut reply = Response::new(Body::from(out.to_string()));
    reply.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    reply
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
}

fn deny_message(message: &str) -> Value {
    json!({"allowed": false, "status": {"metadata": {}, "message": message}})
}

fn deny_reason(reason: &str) -> Value {
    json!({"allowed": false, "status": {"metadata": {}, "reason": reason}})
}

fn patched(patch: Value) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    json!({"allowed": true, "patch": encoded, "patchType": "JSONPatch"})
}

fn is_resource(request: &Value, group: &str, resource: &str) -> bool {
    request["resource"]["group"].as_str().unwrap_or_default() == group
        && request["resource"]["version"] == "v1"
        && request["resource"]["resource"] == resource
}

fn labels(object: &Value) -> serde_json::Map<String, Value> {
    object.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default()
}

fn add_label(request: &Value) -> Value {
    let labels = labels(&request["object"]);
    match labels.get("added-label").and_then(Value::as_str) {
        _ if labels.is_empty() => {
            patched(json!([{"op": "add", "path": "/metadata/labels", "value": {"added-label": "yes"}}]))
        }
        None => patched(json!([{"op": "add", "path": "/metadata/labels/added-label", "value": "yes"}])),
        Some(value) if value != "yes" => {
            patched(json!([{"op": "replace", "path": "/metadata/labels/added-label", "value": "yes"}]))
        }
        Some(_) => json!({"allowed": true}),
    }
}

/// `None`: the pod asks the webhook never to answer.
fn admit_pods(request: &Value) -> Option<Value> {
    if !is_resource(request, "", "pods") {
        return Some(deny_message("expect resource to be { v1 pods}"));
    }
    let pod = &request["object"];
    let mut message = String::new();
    match labels(pod).get("webhook-e2e-test").and_then(Value::as_str) {
        Some("webhook-disallow") => message.push_str("the pod contains unwanted label; "),
        Some("wait-forever") => return None,
        _ => {}
    }
    for container in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        if container["name"].as_str().unwrap_or_default().contains("webhook-disallow") {
            message.push_str("the pod contains unwanted container name; ");
        }
    }
    Some(if message.is_empty() { json!({"allowed": true}) } else { deny_message(message.trim()) })
}

fn deny_attachment(request: &Value) -> Value {
    if request["name"] != "to-be-attached-pod" {
        return json!({"allowed": true});
    }
    if !is_resource(request, "", "pods") {
        return deny_message("expect resource to be { v1 pods}");
    }
    if request["subResource"] != "attach" {
        return deny_message(&format!(
            "expect subresource to be attach, got {}",
            request["subResource"].as_str().unwrap_or_default()
        ));
    }
    let options = &request["object"];
    if options["stdin"] != true || options["container"] != "container1" {
        return json!({"allowed": true});
    }
    deny_message("attaching to pod 'to-be-attached-pod' is not allowed")
}

fn has_container(pod: &Value, list: &str, name: &str) -> bool {
    pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten().any(|c| c["name"] == name)
}

fn mutate_pods(request: &Value) -> Option<Value> {
    if !is_resource(request, "", "pods") {
        return None;
    }
    let pod = &request["object"];
    let wanted = pod.pointer("/metadata/name") == Some(&json!("webhook-to-be-mutated"))
        && !has_container(pod, "initContainers", "webhook-added-init-container");
    Some(if wanted {
        patched(json!([{"op": "add", "path": "/spec/initContainers",
            "value": [{"image": "webhook-added-image", "name": "webhook-added-init-container", "resources": {}}]}]))
    } else {
        json!({"allowed": true})
    })
}

fn mutate_pods_sidecar(request: &Value, sidecar: &str) -> Option<Value> {
    if sidecar.is_empty() {
        return Some(json!({"allowed": false, "status": {"metadata": {}, "status": "Failure",
            "message": "No image specified by the sidecar-image parameter", "code": 500}}));
    }
    if !is_resource(request, "", "pods") {
        return None;
    }
    Some(if has_container(&request["object"], "containers", "webhook-added-sidecar") {
        json!({"allowed": true})
    } else {
        patched(json!([{"op": "add", "path": "/spec/containers/-",
            "value": {"image": sidecar, "name": "webhook-added-sidecar", "resources": {}}}]))
    })
}

/// `/configmaps` and `/custom-resource`: a `webhook-e2e-test` data key refuses writes
/// (`webhook-disallow`) or deletes (`webhook-nondeletable`).
fn admit_data(request: &Value, resource: Option<(&str, &str)>, what: &str) -> Option<Value> {
    if let Some((group, plural)) = resource
        && !is_resource(request, group, plural)
    {
        return None;
    }
    let operation = request["operation"].as_str().unwrap_or_default();
    let object = if operation == "DELETE" { &request["oldObject"] } else { &request["object"] };
    let value = object.pointer("/data/webhook-e2e-test").and_then(Value::as_str);
    Some(match (value, operation) {
        (Some("webhook-disallow"), "CREATE" | "UPDATE") => deny_reason(&if what == "the configmap" {
            "the configmap contains unwanted key and value".to_string()
        } else {
            "the custom resource contains unwanted data".to_string()
        }),
        (Some("webhook-nondeletable"), "DELETE") => {
            deny_reason(&format!("{what} cannot be deleted because it contains unwanted key and value"))
        }
        _ => json!({"allowed": true}),
    })
}

/// `/mutating-configmaps` and `/mutating-custom-resource`: `mutation-start` adds
/// `mutation-stage-1`, which (at the next webhook) adds `mutation-stage-2`.
fn mutate_data(request: &Value, resource: Option<(&str, &str)>) -> Option<Value> {
    if let Some((group, plural)) = resource
        && !is_resource(request, group, plural)
    {
        return None;
    }
    let data = &request["object"]["data"];
    let stage = if data["mutation-stage-1"] == "yes" {
        Some("/data/mutation-stage-2")
    } else if data["mutation-start"] == "yes" {
        Some("/data/mutation-stage-1")
    } else {
        None
    };
    Some(match stage {
        Some(path) => patched(json!([{"op": "add", "path": path, "value": "yes"}])),
        None => json!({"allowed": true}),
    })
}

fn admit_crd(request: &Value) -> Value {
    let resource = &request["resource"];
    if resource["group"] != "apiextensions.k8s.io" || resource["resource"] != "customresourcedefinitions" {
        return deny_message("expect resource to be a CustomResourceDefinition");
    }
    if labels(&request["object"]).get("webhook-e2e-test").and_then(Value::as_str) == Some("webhook-disallow") {
        return deny_message("the crd contains unwanted label");
    }
    json!({"allowed": true})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_follows_agnhosts_example_converter() {
        let review = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "request": {
            "uid": "u", "desiredAPIVersion": "stable.example.com/v2",
            "objects": [{"apiVersion": "stable.example.com/v1", "kind": "E2e", "metadata": {"name": "a"}, "hostPort": "localhost:8080"}]}});
        let answer = convert_review(&review);
        assert_eq!(answer["response"]["uid"], "u");
        assert_eq!(answer["response"]["result"]["status"], "Success");
        let object = &answer["response"]["convertedObjects"][0];
        assert_eq!(
            (object["apiVersion"].as_str(), object["host"].as_str(), object["port"].as_str()),
            (Some("stable.example.com/v2"), Some("localhost"), Some("8080"))
        );
        assert!(object.get("hostPort").is_none());
        let back = convert_example(object, "stable.example.com/v1").unwrap();
        assert_eq!(back["hostPort"], "localhost:8080");
        let mut bad = review.clone();
        bad["request"]["objects"][0]["hostPort"] = json!("nocolon");
        let answer = convert_review(&bad);
        assert_eq!(answer["response"]["result"]["message"], "invalid hostPort value `nocolon`");
        assert!(answer["response"].get("convertedObjects").is_none());
    }

    fn review(path_object: Value, operation: &str, resource: (&str, &str)) -> Value {
        json!({"uid": "u", "operation": operation, "resource": {"group": resource.0, "version": "v1", "resource": resource.1},
            "object": path_object})
    }

    #[test]
    fn the_container_and_its_port_come_from_its_arguments() {
        let pod = json!({"spec": {"containers": [{"name": "w", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
            "args": ["webhook", "--tls-cert-file=/c/tls.crt", "--port=8444"]}]}});
        let container = container(&pod).unwrap();
        assert_eq!(port(container), 8444);
        assert_eq!(flag(container, "tls-cert-file"), Some("/c/tls.crt"));
    }

    #[test]
    fn handlers_answer_as_agnhosts() {
        let pod = json!({"metadata": {"name": "p", "labels": {"webhook-e2e-test": "webhook-disallow"}},
            "spec": {"containers": [{"name": "webhook-disallow"}]}});
        let denied = admit_pods(&review(pod, "CREATE", ("", "pods"))).unwrap();
        assert_eq!(
            denied["status"]["message"],
            "the pod contains unwanted label; the pod contains unwanted container name;"
        );
        let map = json!({"data": {"mutation-start": "yes"}});
        let first = mutate_data(&review(map, "CREATE", ("", "configmaps")), Some(("", "configmaps"))).unwrap();
        let patch = base64::engine::general_purpose::STANDARD.decode(first["patch"].as_str().unwrap()).unwrap();
        assert!(String::from_utf8(patch).unwrap().contains("mutation-stage-1"));
        let no_labels = json!({"metadata": {"name": "x"}});
        assert_eq!(add_label(&review(no_labels, "CREATE", ("", "configmaps")))["patchType"], "JSONPatch");
    }
}
