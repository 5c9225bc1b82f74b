//! What a simulated container of the upstream sample API server image
//! (`registry.k8s.io/e2e-test-images/sample-apiserver`, the extension API server of the
//! conformance suite's aggregator test) does: serve `wardle.example.com/v1alpha1` flunders over
//! HTTPS on its port (443 unless declared otherwise), kept in memory per pod.
//!
//! Like the real one it answers only requests that name a user in `X-Remote-User` (what the
//! aggregation layer sends); unlike it, it neither checks the front proxy's client certificate
//! nor serves the certificate its arguments name (a self-signed one: register it with
//! `insecureSkipTLSVerify`), and it does not watch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

use axum::body::Body;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::DuplexStream;

/// The image's name (any registry, any tag).
pub const IMAGE: &str = "sample-apiserver";
const GROUP: &str = "wardle.example.com";
const VERSION: &str = "v1alpha1";

#[derive(Default)]
struct Flunders {
    revision: u64,
    items: BTreeMap<(String, String), Value>,
}

/// Each pod's flunders, by pod uid.
static STORES: LazyLock<Mutex<HashMap<String, Flunders>>> = LazyLock::new(Mutex::default);

static ACCEPTOR: LazyLock<Option<tokio_rustls::TlsAcceptor>> = LazyLock::new(|| {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).ok()?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).ok()?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .ok()?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
});

/// Serves one connection to the pod `uid`'s server.
pub async fn serve(io: DuplexStream, uid: String) {
    let Some(acceptor) = ACCEPTOR.as_ref() else { return };
    let Ok(tls) = acceptor.accept(io).await else { return };
    let service = hyper::service::service_fn(move |request| {
        let uid = uid.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&uid, request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn status(code: StatusCode, reason: &str, message: String, name: Option<&str>) -> Response<Body> {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    if let Some(name) = name {
        body["details"] = json!({"name": name, "group": GROUP, "kind": "flunders"});
    }
    respond(code, &body)
}

fn discovery(path: &[&str]) -> Option<Value> {
    let flunders = json!([{"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}]);
    super::front_proxy::discovery(path, GROUP, VERSION, flunders)
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

async fn handle(uid: &str, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let user = request.headers().get("x-remote-user").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if user.is_empty() {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into(), None);
    }
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    if method == Method::GET
        && let Some(document) = discovery(&segments)
    {
        return respond(StatusCode::OK, &document);
    }
    let (namespace, name) = match segments.as_slice() {
        ["apis", GROUP, VERSION, "flunders"] => (None, None),
        ["apis", GROUP, VERSION, "namespaces", ns, "flunders"] => (Some(ns.to_string()), None),
        ["apis", GROUP, VERSION, "namespaces", ns, "flunders", name] => (Some(ns.to_string()), Some(name.to_string())),
        _ => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            );
        }
    };
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "could not read the body".into(), None),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut stores = STORES.lock().unwrap_or_else(|p| p.into_inner());
    let store = stores.entry(uid.to_string()).or_default();
    let not_found = |name: &str| {
        status(StatusCode::NOT_FOUND, "NotFound", format!("flunders.{GROUP} \"{name}\" not found"), Some(name))
    };
    match (method, namespace, name) {
        (Method::GET, namespace, None) => {
            let items: Vec<Value> = store
                .items
                .iter()
                .filter(|((ns, _), _)| namespace.as_ref().is_none_or(|wanted| wanted == ns))
                .map(|(_, v)| v.clone())
                .collect();
            respond(
                StatusCode::OK,
                &json!({"kind": "FlunderList", "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": {"resourceVersion": store.revision.to_string()}, "items": items}),
            )
        }
        (Method::POST, Some(ns), None) => {
            let Some(mut object) = parsed.filter(Value::is_object) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not a JSON object".into(), None);
            };
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            if name.is_empty() {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "Flunder.wardle.example.com \"\" is invalid: metadata.name: Required value: name or generateName is required".into(),
                    None,
                );
            }
            if store.items.contains_key(&(ns.clone(), name.clone())) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("flunders.{GROUP} \"{name}\" already exists"),
                    Some(&name),
                );
            }
            store.revision += 1;
            let metadata = &mut object["metadata"];
            metadata["namespace"] = json!(ns);
            metadata["uid"] = json!(format!("{uid}-{}", store.revision));
            metadata["resourceVersion"] = json!(store.revision.to_string());
            metadata["creationTimestamp"] = json!(now());
            object["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
            object["kind"] = json!("Flunder");
            store.items.insert((ns, name), object.clone());
            respond(StatusCode::CREATED, &object)
        }
        (method, Some(ns), Some(name)) => {
            let key = (ns, name.clone());
            let Some(current) = store.items.get(&key).cloned() else { return not_found(&name) };
            match method {
                Method::GET => respond(StatusCode::OK, &current),
                Method::DELETE => {
                    store.items.remove(&key);
                    store.revision += 1;
                    respond(StatusCode::OK, &current)
                }
                Method::PUT | Method::PATCH => {
                    let Some(change) = parsed else {
                        return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not JSON".into(), None);
                    };
                    let mut object = if method == Method::PUT {
                        change
                    } else {
                        let mut merged = current.clone();
                        merge(&mut merged, &change);
                        merged
                    };
                    store.revision += 1;
                    for field in ["uid", "creationTimestamp", "namespace", "name"] {
                        object["metadata"][field] = current["metadata"][field].clone();
                    }
                    object["metadata"]["resourceVersion"] = json!(store.revision.to_string());
                    store.items.insert(key, object.clone());
                    respond(StatusCode::OK, &object)
                }
                _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed".into(), None),
            }
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "method not allowed".into(), None),
    }
}
