//! The HTTP layer: authentication, URL grammar, content negotiation and the mapping of every
//! request onto the registry. Errors from anywhere become a `Status` response here, in
//! [`error_response`], and nowhere else.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::catalog::ResourceType;
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::openapi;
use crate::registry::{
    AdmissionHook, DeleteOptions, Deleted, FieldValidation, ListParams, PatchType, Registry, WatchItem, WriteOptions,
};
use crate::selector::{FieldSelector, LabelSelector};
use crate::table;

/// Largest accepted request body (kube-apiserver's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How much of a refused body is read before the connection is given up.
const MAX_DRAINED: usize = 64 << 20;

pub use crate::auth::Identity;

/// Serves `pods/log` for pods whose containers run elsewhere (the syncer forwards to the host).
pub trait PodLogs: Send + Sync + 'static {
    /// The log text of `container` of pod `namespace/name` (follow ends when the stream ends).
    fn logs(
        &self,
        namespace: &str,
        name: &str,
        query: &str,
    ) -> futures::future::BoxFuture<
        'static,
        ApiResult<futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>>,
    >;
}

/// Everything a request handler needs.
pub struct AppState {
    /// The object registry.
    pub registry: Registry,
    /// Bearer tokens and the users they stand for.
    pub tokens: HashMap<String, Identity>,
    /// The RBAC authorizer.
    pub rbac: Arc<crate::auth::Rbac>,
    /// Reported by `/version`.
    pub minor: u32,
    /// Whether `/readyz` says ok.
    pub ready: AtomicBool,
    /// Accept requests without credentials as `system:anonymous` (only for plain-HTTP test servers).
    pub allow_anonymous: bool,
    /// Source of pod logs, if any.
    pub pod_logs: Option<Arc<dyn PodLogs>>,
    /// Runs `pods/exec` and `pods/attach` sessions, if anything does.
    pub pod_streams: Option<crate::streams::SharedPodStreams>,
    /// Reaches pods, services and nodes for their `proxy` subresources, if anything does.
    pub proxies: Option<crate::proxy::SharedProxies>,
    /// Supplies `metrics.k8s.io`, if anything does.
    pub resource_metrics: Option<crate::resource_metrics::SharedResourceMetrics>,
    /// ValidatingAdmissionPolicies and their bindings, as admission reads them.
    pub policies: crate::admission::policy::Policies,
    /// The admission webhook configurations (caches started on first use).
    pub webhooks: crate::admission::webhook::Webhooks,
    /// Group versions served by extension API servers (`APIService` with a service).
    pub aggregator: Arc<crate::aggregation::Aggregator>,
    /// Signs and verifies service account tokens (None without TLS).
    pub token_signer: Option<crate::tokens::TokenSigner>,
    /// The cluster CA, which signs approved client certificate requests (None without TLS).
    pub pki: Option<crate::pki::Pki>,
    /// Extra `/metrics` text of whoever embeds the server.
    pub metrics: Option<crate::server::MetricsSource>,
    /// Extra `/readyz` checks of whoever embeds the server, by name.
    pub ready_checks: Vec<(String, crate::server::ReadyCheck)>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("minor", &self.minor).finish_non_exhaustive()
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parsed query string: the last value of each key wins, as in Go's `Get`.
#[derive(Debug, Default)]
struct Query(HashMap<String, String>, AdmissionHook, Arc<std::sync::Mutex<Vec<String>>>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or_default().split('&') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            map.insert(decode(k), decode(v));
        }
        Query(map, AdmissionHook::default(), Arc::default())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("") => Ok(false),
            Some(v) => {
                parse_bool(v).ok_or_else(|| ApiError::BadRequest(format!("invalid boolean value for {key}: {v:?}")))
            }
        }
    }

    fn list_params(&self) -> ApiResult<ListParams> {
        let number = |key: &str| -> ApiResult<Option<u64>> {
            match self.get(key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => {
                    v.parse().map(Some).map_err(|_| ApiError::BadRequest(format!("invalid value for {key}: {v:?}")))
                }
            }
        };
        Ok(ListParams {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or_default())?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or_default())?,
            limit: number("limit")?.map(|l| l as usize),
            continue_token: self.get("continue").filter(|c| !c.is_empty()).map(String::from),
            resource_version: self.get("resourceVersion").map(String::from),
            resource_version_match: self.get("resourceVersionMatch").filter(|v| !v.is_empty()).map(String::from),
            timeout: number("timeoutSeconds")?.map(Duration::from_secs),
            bookmarks: self.flag("allowWatchBookmarks")?,
            send_initial_events: match self.get("sendInitialEvents") {
                None | Some("") => None,
                Some(v) => Some(
                    parse_bool(v).ok_or_else(|| ApiError::BadRequest(format!("invalid sendInitialEvents {v:?}")))?,
                ),
            },
        })
    }

    fn write_options(&self, headers: &HeaderMap) -> ApiResult<WriteOptions> {
        let manager = match self.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(m) if m.len() > 128 => {
                return Err(ApiError::InvalidOptions {
                    message: "fieldManager: Too long: may not be more than 128 bytes".into(),
                    causes: vec![crate::error::Cause::too_long("fieldManager", 128)],
                });
            }
            Some(m) => m.to_string(),
            None => {
                let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown");
                agent.split('/').next().unwrap_or("unknown").to_string()
            }
        };
        let field_validation = match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"
                )));
            }
        };
        Ok(WriteOptions {
            admission: self.1.clone(),
            dry_run: self.dry_run()?,
            field_manager: manager,
            field_validation,
            warnings: self.2.clone(),
            duplicate_fields: Vec::new(),
            request_json: None,
        })
    }

    fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!("dryRun must be All, got {other:?}"))),
        }
    }
}

/// The one place an error becomes a response.
/// `PodLogOptions` as upstream decodes and validates them before it looks at the pod.
fn validate_log_options(name: &str, query: &Query) -> ApiResult<()> {
    let number = |key: &str| -> ApiResult<Option<i64>> {
        match query.get(key) {
            None => Ok(None),
            Some(text) => text
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("strconv.ParseInt: parsing {text:?}: invalid syntax"))),
        }
    };
    let (tail, limit, since) = (number("tailLines")?, number("limitBytes")?, number("sinceSeconds")?);
    let mut causes = Vec::new();
    if let Some(tail) = tail.filter(|t| *t < 0) {
        causes.push(crate::error::Cause::invalid_number("tailLines", tail, "must be greater than or equal to 0"));
    }
    if let Some(limit) = limit.filter(|l| *l < 1) {
        causes.push(crate::error::Cause::invalid_number("limitBytes", limit, "must be greater than 0"));
    }
    match (since, query.get("sinceTime")) {
        (Some(_), Some(_)) => causes.push(crate::error::Cause::forbidden(
            "[]",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        )),
        (Some(since), None) if since < 1 => {
            causes.push(crate::error::Cause::invalid_number("sinceSeconds", since, "must be greater than 0"))
        }
        _ => {}
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid { group: String::new(), kind: "PodLogOptions".into(), name: name.to_string(), causes })
}

/// Whether kube-apiserver has a handler for paths under `/apis/GROUP/VERSION`: the core group and
/// built-in groups always do (an unknown version or resource there is a `Status` 404); a group
/// only custom resources serve does for its served versions (the rest falls through to the
/// plain-text "404 page not found").
fn routed(snapshot: &crate::catalog::Snapshot, group: &str, version: &str) -> bool {
    group.is_empty()
        || snapshot.versions(group).iter().any(|v| snapshot.group_version(group, v).iter().any(|t| !t.is_custom()))
        || !snapshot.group_version(group, version).is_empty()
}

/// The answer to a path no handler serves.
fn page_not_found() -> Response<Body> {
    let mut response =
        bytes_response(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"404 page not found\n"));
    response.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

pub fn error_response(error: &ApiError) -> Response<Body> {
    let status = error.status();
    let mut response =
        json_response(StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &status);
    if matches!(error, ApiError::TooLargeResourceVersion { .. } | ApiError::Unavailable(_)) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    bytes_response(code, "application/json", Bytes::from(crate::wire::to_vec(body)))
}

fn bytes_response(code: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn text_response(text: &str) -> Response<Body> {
    bytes_response(StatusCode::OK, "text/plain; charset=utf-8", Bytes::from(text.to_string()))
}

/// What shape the client wants objects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Object,
    Table,
    Metadata,
}

fn shape(headers: &HeaderMap) -> Shape {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if params.first() != Some(&"application/json") {
            if params.first().is_some_and(|m| *m == "*/*" || m.starts_with("application/")) {
                return Shape::Object;
            }
            continue;
        }
        let is_meta_group = params.contains(&"g=meta.k8s.io");
        if is_meta_group && params.contains(&"as=Table") && (params.contains(&"v=v1") || params.contains(&"v=v1beta1"))
        {
            return Shape::Table;
        }
        if is_meta_group
            && (params.contains(&"as=PartialObjectMetadata") || params.contains(&"as=PartialObjectMetadataList"))
        {
            return Shape::Metadata;
        }
        if params.len() == 1 {
            return Shape::Object;
        }
    }
    Shape::Object
}

const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

fn object_response(code: StatusCode, rt: &ResourceType, object: &Value, shape: Shape, include: &str) -> Response<Body> {
    match shape {
        Shape::Object => json_response(code, object),
        Shape::Metadata => json_response(code, &table::partial_metadata(object)),
        Shape::Table => {
            let rv = object.pointer("/metadata/resourceVersion").and_then(Value::as_str);
            let t = table::table(rt, std::slice::from_ref(object), rv, true, include);
            bytes_response(code, TABLE_CONTENT_TYPE, Bytes::from(crate::wire::to_vec(&t)))
        }
    }
}

/// Handles one request end to end.
pub async fn handle(
    state: Arc<AppState>,
    identity: Option<Identity>,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let started = std::time::Instant::now();
    let span = tracing::debug_span!("request", %method, %path);
    let response = match route(&state, identity, parts, body).instrument(span).await {
        Ok(response) => response,
        Err(error) => {
            if error.code() >= 500 {
                tracing::error!(%method, %path, %error, "request failed");
            }
            error_response(&error)
        }
    };
    // As kube-apiserver's httplog: `RUST_LOG=vkube::requests=debug` shows each request's time.
    tracing::debug!(target: "vkube::requests", %method, %path, status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64, "served");
    response
}

async fn read_body(body: hyper::body::Incoming, headers: &HeaderMap) -> ApiResult<Bytes> {
    if let Some(length) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        && length > MAX_BODY
    {
        drain(body).await;
        return Err(ApiError::TooLarge { size: length, limit: MAX_BODY });
    }
    let mut body = body;
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| ApiError::BadRequest(format!("failed to read the request body: {error}")))?;
        if let Ok(data) = frame.into_data() {
            collected.extend_from_slice(&data);
            if collected.len() > MAX_BODY {
                let size = collected.len() + drain(body).await;
                return Err(ApiError::TooLarge { size, limit: MAX_BODY });
            }
        }
    }
    Ok(collected.freeze())
}

/// Reads and drops the rest of a request body that will not be used (at most [`MAX_DRAINED`]
/// bytes), so the client, still writing it, gets the error response instead of a closed
/// connection. Returns how many bytes it read.
async fn drain(mut body: hyper::body::Incoming) -> usize {
    let mut read = 0;
    while read <= MAX_DRAINED {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
    read
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decodes a JSON or YAML request body into an object.
fn decode_body(bytes: &[u8], content_type: &str) -> ApiResult<Value> {
    if content_type == "application/vnd.kubernetes.protobuf" {
        return crate::protobuf::decode(bytes);
    }
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type})"
        )));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| ApiError::BadRequest("the request body is not valid UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    decode_text(text, content_type, None)
}

/// Decodes the body of a create, update or patch: as [`decode_body`], and fields given twice
/// are refused or warned about as the write's `fieldValidation` says (last value wins).
fn decode_write_body(bytes: &[u8], content_type: &str, options: &mut WriteOptions) -> ApiResult<Value> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return decode_body(bytes, content_type);
    }
    let text =
        std::str::from_utf8(bytes).map_err(|_| ApiError::BadRequest("the request body is not valid UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    if !content_type.contains("yaml") {
        options.request_json = Some(bytes::Bytes::copy_from_slice(bytes));
    }
    decode_text(text, content_type, Some(options))
}

fn decode_text(text: &str, content_type: &str, options: Option<&mut WriteOptions>) -> ApiResult<Value> {
    let checked = options.filter(|o| o.field_validation != FieldValidation::Ignore);
    if content_type.contains("yaml") {
        let (value, duplicate) = crate::strict::yaml_with_duplicates(text)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?;
        if let (Some(detail), Some(options)) = (duplicate, checked) {
            let detail = format!("error converting YAML to JSON: yaml: unmarshal errors:\n  {detail}");
            if options.field_validation == FieldValidation::Strict {
                return Err(ApiError::BadRequest(format!("error strict decoding YAML: {detail}")));
            }
            options.warnings.lock().unwrap_or_else(|p| p.into_inner()).push(detail);
        }
        return Ok(value);
    }
    let value = serde_json::from_str(text).map_err(|e| ApiError::BadRequest(format!("error decoding JSON: {e}")))?;
    if let Some(options) = checked {
        options.duplicate_fields = crate::strict::duplicate_json_fields(text);
    }
    Ok(value)
}

async fn route(
    state: &Arc<AppState>,
    identity: Option<Identity>,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> ApiResult<Response<Body>> {
    let path = parts.uri.path().to_string();
    let identity = crate::auth::authenticate::authenticate(state, identity, &parts.headers).await?;
    let identity = crate::auth::impersonate::impersonate(&state.rbac, identity, &parts.headers)?;
    let attributes = crate::auth::Attributes::from_request(parts.method.as_str(), &path, parts.uri.query());
    if let Err(refused) = crate::auth::authorize(&state.rbac, &identity, &attributes) {
        if identity.user.starts_with("vkube:") {
            // vkube's own components are bound to what they need: a refusal is a bug.
            tracing::warn!(user = %identity.user, error = %refused, "a vkube component was refused");
        }
        return Err(refused);
    }
    let mut query = Query::parse(parts.uri.query());
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
    // A group version an extension API server serves (not `/apis/GROUP`: answered here).
    if let ["apis", group, version, ..] = segments.as_slice()
        && let Some((remote, available)) = state.aggregator.remote(group, version)
    {
        return crate::aggregation::proxy(state, remote, available, &identity, parts, body).await;
    }
    let get = parts.method == Method::GET;
    match segments.as_slice() {
        ["version"] if get => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": "1", "minor": state.minor.to_string(), "gitVersion": format!("v1.{}.0", state.minor),
                    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
                    "platform": "linux/amd64",
                }),
            ));
        }
        [check, ..] if get && matches!(*check, "healthz" | "livez" | "readyz") => {
            if *check == "readyz" && !state.ready.load(Ordering::Relaxed) {
                return Err(ApiError::Unavailable("not ready".into()));
            }
            let mut lines = String::from("[+]ping ok\n[+]etcd ok\n");
            if *check == "readyz" {
                for (name, ready) in &state.ready_checks {
                    if !ready() {
                        return Err(ApiError::Unavailable(format!("readiness check {name} failed")));
                    }
                    lines.push_str(&format!("[+]{name} ok\n"));
                }
            }
            if query.0.contains_key("verbose") {
                return Ok(text_response(&format!("{lines}{check} check passed\n")));
            }
            return Ok(text_response("ok"));
        }
        ["metrics"] if get => {
            let mut text = format!(
                "# HELP vkube_apiserver_ready 1 when the API server is ready.\n# TYPE vkube_apiserver_ready gauge\nvkube_apiserver_ready {}\n",
                u8::from(state.ready.load(Ordering::Relaxed))
            );
            if let Some(metrics) = &state.metrics {
                text.push_str(&metrics());
            }
            return Ok(bytes_response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", Bytes::from(text)));
        }
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] if get => {
            let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if accept.contains("protobuf") || segments[0] == "swagger-2.0.0.pb-v1" {
                return Ok(bytes_response(StatusCode::OK, openapi::V2_CONTENT_TYPE, Bytes::new()));
            }
            let snapshot = state.registry.catalog.snapshot();
            let (doc, etag) = state.registry.openapi.v2_document(&snapshot);
            let quoted = format!("\"{etag}\"");
            let matches =
                parts.headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(quoted.as_str());
            let mut response = if matches {
                bytes_response(StatusCode::NOT_MODIFIED, "application/json", Bytes::new())
            } else {
                bytes_response(StatusCode::OK, "application/json", Bytes::from(doc.as_ref().clone()))
            };
            if let Ok(value) = HeaderValue::from_str(&quoted) {
                response.headers_mut().insert(header::ETAG, value);
            }
            return Ok(response);
        }
        ["openapi", "v3"] if get => {
            let snapshot = state.registry.catalog.snapshot();
            return Ok(json_response(StatusCode::OK, &state.registry.openapi.index(&snapshot)));
        }
        ["openapi", "v3", rest @ ..] if get => {
            let snapshot = state.registry.catalog.snapshot();
            let doc = state.registry.openapi.document(&snapshot, &rest.join("/")).ok_or_else(ApiError::no_route)?;
            return Ok(bytes_response(StatusCode::OK, "application/json", Bytes::from(doc.as_ref().clone())));
        }
        ["api"] if get => return Ok(discovery_response(state, &parts.headers, true)),
        ["apis"] if get => return Ok(discovery_response(state, &parts.headers, false)),
        ["api", version] if get => {
            let snapshot = state.registry.catalog.snapshot();
            let doc = discovery::api_resource_list(&snapshot, "", version).ok_or_else(ApiError::no_route)?;
            return Ok(json_response(StatusCode::OK, &doc));
        }
        ["apis", group] if get => {
            let snapshot = state.registry.catalog.snapshot();
            if snapshot.versions(group).is_empty() {
                return Ok(page_not_found());
            }
            let doc = discovery::api_group(&snapshot, group).ok_or_else(ApiError::no_route)?;
            return Ok(json_response(StatusCode::OK, &doc));
        }
        ["apis", group, version] if get => {
            let snapshot = state.registry.catalog.snapshot();
            if !routed(&snapshot, group, version) {
                return Ok(page_not_found());
            }
            let doc = discovery::api_resource_list(&snapshot, group, version).ok_or_else(ApiError::no_route)?;
            return Ok(json_response(StatusCode::OK, &doc));
        }
        _ => {}
    }
    // The resource metrics API, served from whoever supplies it (as an aggregated API would be).
    if let (Some(source), ["apis", crate::resource_metrics::GROUP, crate::resource_metrics::VERSION, rest @ ..]) =
        (&state.resource_metrics, segments.as_slice())
        && !rest.is_empty()
    {
        if parts.method != Method::GET || query.flag("watch")? {
            return Err(ApiError::MethodNotAllowed);
        }
        let list = crate::resource_metrics::serve(source.as_ref(), rest, query.get("labelSelector")).await?;
        return Ok(json_response(StatusCode::OK, &list));
    }
    // `pods/proxy`, `services/proxy`, `nodes/proxy`: everything after `proxy` is the target's path.
    let proxied = match segments.as_slice() {
        ["api", "v1", "namespaces", ns, kind @ ("pods" | "services"), id, "proxy", rest @ ..] => {
            Some((*kind, Some(*ns), *id, rest))
        }
        ["api", "v1", "nodes", id, "proxy", rest @ ..] => Some(("nodes", None, *id, rest)),
        _ => None,
    };
    if let Some((kind, ns, id, rest)) = proxied {
        // The path keeps a trailing slash the client sent (`.../proxy/` is the target's `/`).
        let mut path = format!("/{}", rest.join("/"));
        if path.len() > 1 && trimmed.len() < parts.uri.path().len() {
            path.push('/');
        }
        return proxy_request(state, kind, ns, id, path, parts, body).await;
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segments.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (group, version, rest),
        _ => return Ok(page_not_found()),
    };
    let snapshot = state.registry.catalog.snapshot();
    let found = Target::parse(rest).and_then(|target| Some((snapshot.get(group, version, target.resource)?, target)));
    let Some((rt, target)) = found else {
        return if routed(&snapshot, group, version) { Err(ApiError::no_route()) } else { Ok(page_not_found()) };
    };
    if target.namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route());
    }
    if target.name.is_some() && rt.namespaced && target.namespace.is_none() {
        return Err(ApiError::no_route());
    }
    let rbac_write = rt.group == crate::auth::escalation::GROUP && parts.method != Method::GET;
    if parts.method != Method::GET {
        let dry_run = query.dry_run()?;
        let chain = crate::admission::Chain::for_request(state.clone(), identity.clone(), dry_run, query.2.clone())
            .on_subresource(target.subresource.unwrap_or_default());
        query.1 = AdmissionHook(Some(Arc::new(chain)));
    }
    let response = serve_resource(state, &rt, &target, &identity, &query, parts, body).await;
    if rbac_write && response.as_ref().is_ok_and(|r| r.status().is_success()) {
        // The writer's next request is decided with what it just wrote.
        state.rbac.caught_up(state.registry.store.current_revision()).await;
    }
    // Deprecated built-in APIs say so on every request, as upstream does.
    if rt.group.is_empty() && rt.plural == "endpoints" && state.minor >= 33 {
        let mut response = response.unwrap_or_else(|error| error_response(&error));
        let warning = HeaderValue::from_static(
            "299 - \"v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice\"",
        );
        response.headers_mut().append(header::WARNING, warning);
        return Ok(response);
    }
    response
}

/// A request to `kind` `id`'s proxy: the object must exist; whoever reaches it answers.
async fn proxy_request(
    state: &Arc<AppState>,
    kind: &str,
    ns: Option<&str>,
    id: &str,
    path: String,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> ApiResult<Response<Body>> {
    let snapshot = state.registry.catalog.snapshot();
    let rt = snapshot.get("", "v1", kind).ok_or_else(ApiError::no_route)?;
    let (_, name, _) =
        crate::proxy::split_name(id).ok_or_else(|| ApiError::BadRequest(format!("invalid {kind} request {id:?}")))?;
    let object = state.registry.get(&rt, ns, &name).await?;
    let target = crate::proxy::target(kind, ns, id, object)?;
    let Some(proxies) = state.proxies.clone() else {
        return Err(ApiError::Unavailable(format!(
            "no endpoints available for {} {name:?}: this API server reaches no pods, services or nodes",
            rt.kind.to_lowercase()
        )));
    };
    let bytes = read_body(body, &parts.headers).await?;
    let uri = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut request = http::Request::new(bytes);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri.parse().map_err(|_| ApiError::BadRequest(format!("invalid proxy path {uri:?}")))?;
    for (name, value) in &parts.headers {
        // The caller's credentials are for this server, not for what it proxies to.
        if name != header::AUTHORIZATION && name != header::HOST && !name.as_str().starts_with("impersonate-") {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    proxies.proxy(target, request).await
}

fn discovery_response(state: &AppState, headers: &HeaderMap, core: bool) -> Response<Body> {
    let snapshot = state.registry.catalog.snapshot();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut response = match discovery::negotiate(accept) {
        Some(version) => {
            let doc = discovery::aggregated(&snapshot, core, version);
            bytes_response(
                StatusCode::OK,
                &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
                Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
            )
        }
        None => json_response(
            StatusCode::OK,
            &if core { discovery::api_versions() } else { discovery::api_group_list(&snapshot) },
        ),
    };
    response.headers_mut().insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

/// The parts of a resource URL after the group-version prefix.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    namespace: Option<&'a str>,
    resource: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn parse(rest: &[&'a str]) -> Option<Self> {
        let t = |namespace, resource, name, subresource| Some(Target { namespace, resource, name, subresource });
        match rest {
            ["namespaces", name, sub @ ("status" | "finalize")] => t(None, "namespaces", Some(*name), Some(*sub)),
            ["namespaces", ns, resource] => t(Some(*ns), resource, None, None),
            ["namespaces", ns, resource, name] => t(Some(*ns), resource, Some(*name), None),
            ["namespaces", ns, resource, name, sub] => t(Some(*ns), resource, Some(*name), Some(*sub)),
            [resource] => t(None, resource, None, None),
            [resource, name] => t(None, resource, Some(*name), None),
            [resource, name, sub] => t(None, resource, Some(*name), Some(*sub)),
            _ => None,
        }
    }
}

/// The options object of a `CONNECT` to a pod's `attach` or `exec`, as admission webhooks see it.
fn connect_options(subresource: &str, query: Option<&str>) -> (&'static str, Value) {
    let kind = if subresource == "exec" { "PodExecOptions" } else { "PodAttachOptions" };
    let mut options = json!({"kind": kind, "apiVersion": "v1"});
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " ")).decode_utf8_lossy().into_owned();
        match key {
            "stdin" | "stdout" | "stderr" | "tty" => {
                options[key] = json!(matches!(value.as_str(), "1" | "t" | "T" | "true" | "True" | "TRUE"));
            }
            "container" => options["container"] = json!(value),
            "command" => match options["command"].as_array_mut() {
                Some(words) => words.push(json!(value)),
                None => options["command"] = json!([value]),
            },
            _ => {}
        }
    }
    (kind, options)
}

fn delete_options(query: &Query, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut options = DeleteOptions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: Value = if body.starts_with(b"k8s\0") {
            crate::protobuf::decode_delete_options(body)?
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding DeleteOptions: {e}")))?
        };
        options.grace_period = value.get("gracePeriodSeconds").and_then(Value::as_i64);
        options.propagation = value.get("propagationPolicy").and_then(Value::as_str).map(String::from);
        if options.propagation.is_none()
            && let Some(orphan) = value.get("orphanDependents").and_then(Value::as_bool)
        {
            options.propagation = Some(if orphan { "Orphan" } else { "Background" }.into());
        }
        options.uid = value.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
        options.resource_version =
            value.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from);
        options.dry_run = value.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All"));
    }
    if let Some(grace) = query.get("gracePeriodSeconds").filter(|g| !g.is_empty()) {
        options.grace_period =
            Some(grace.parse().map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds {grace:?}")))?);
    }
    if let Some(policy) = query.get("propagationPolicy").filter(|p| !p.is_empty()) {
        options.propagation = Some(policy.to_string());
    }
    if let Some(policy) = &options.propagation
        && !matches!(policy.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::InvalidOptions {
            message: format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {policy:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ),
            causes: vec![crate::error::Cause::not_supported(
                "propagationPolicy",
                policy,
                &["Foreground", "Background", "Orphan"],
            )],
        });
    }
    if query.dry_run()? {
        options.dry_run = true;
    }
    options.admission = query.1.clone();
    Ok(options)
}

fn returns_deleted_object(rt: &ResourceType) -> bool {
    rt.group.is_empty()
        && matches!(
            rt.kind.as_str(),
            "Pod"
                | "Service"
                | "PersistentVolume"
                | "PersistentVolumeClaim"
                | "ServiceAccount"
                | "Namespace"
                | "Node"
                | "PodTemplate"
                | "ResourceQuota"
        )
}

#[allow(clippy::too_many_arguments)]
async fn serve_resource(
    state: &Arc<AppState>,
    rt: &Arc<ResourceType>,
    target: &Target<'_>,
    identity: &Identity,
    query: &Query,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> ApiResult<Response<Body>> {
    let registry = &state.registry;
    let headers = &parts.headers;
    let shape = shape(headers);
    let include = query.get("includeObject").unwrap_or("Metadata");
    let ns = target.namespace;
    let method = parts.method.clone();
    let verb_allowed = |verb: &str| rt.verbs.contains(&verb);
    if rt.kind == "ComponentStatus" && rt.group.is_empty() && method == Method::GET && target.subresource.is_none() {
        return component_statuses(rt, target.name, shape, include);
    }
    match (target.name, target.subresource) {
        (None, None) => match method {
            Method::GET => {
                let params = query.list_params()?;
                if query.flag("watch")? {
                    if !verb_allowed("watch") {
                        return Err(ApiError::MethodNotAllowed);
                    }
                    return watch_response(state, rt.clone(), ns.map(String::from), params, shape, include.to_string())
                        .await;
                }
                if !verb_allowed("list") {
                    return Err(ApiError::MethodNotAllowed);
                }
                if shape == Shape::Object {
                    let body = registry.list_json(rt, ns, &params).await?;
                    return Ok(bytes_response(StatusCode::OK, "application/json", Bytes::from(body)));
                }
                let list = registry.list(rt, ns, &params).await?;
                Ok(list_response(rt, list, shape, include))
            }
            Method::POST => {
                let bytes = read_body(body, headers).await?;
                let mut options = query.write_options(headers)?;
                let object = decode_write_body(&bytes, &content_type(headers), &mut options)?;
                if rt.review {
                    if shape != Shape::Object {
                        // Reviews are answered as themselves: no Table or metadata-only form.
                        return Err(ApiError::NotAcceptable(
                            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf".into(),
                        ));
                    }
                    return Ok(json_response(
                        StatusCode::CREATED,
                        &crate::auth::reviews::review(state, rt, ns, object, identity).await?,
                    ));
                }
                let mut object = object;
                if rt.kind == "CertificateSigningRequest" && object.get("spec").is_some_and(Value::is_object) {
                    // Who asked, as the server records it (clients cannot choose).
                    let mut groups = identity.groups.clone();
                    if !groups.iter().any(|g| g == "system:authenticated") {
                        groups.push("system:authenticated".into());
                    }
                    object["spec"]["username"] = json!(identity.user);
                    object["spec"]["groups"] = json!(groups);
                }
                let created = registry.create(rt, ns, object, &options).await?;
                Ok(with_warnings(object_response(StatusCode::CREATED, rt, &created, shape, include), &options))
            }
            Method::DELETE => {
                if !verb_allowed("deletecollection") {
                    return Err(ApiError::MethodNotAllowed);
                }
                let bytes = read_body(body, headers).await?;
                let options = delete_options(query, &bytes)?;
                let params = query.list_params()?;
                let list = registry.delete_collection(rt, ns, &params, &options).await?;
                Ok(json_response(StatusCode::OK, &list))
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), None) => match method {
            Method::GET => {
                let object = registry.get(rt, ns, name).await?;
                Ok(object_response(StatusCode::OK, rt, &object, shape, include))
            }
            Method::PUT => {
                let bytes = read_body(body, headers).await?;
                let mut options = query.write_options(headers)?;
                let object = decode_write_body(&bytes, &content_type(headers), &mut options)?;
                let (updated, created) = registry.update_or_create(rt, ns, name, object, &options).await?;
                let code = if created { StatusCode::CREATED } else { StatusCode::OK };
                Ok(with_warnings(object_response(code, rt, &updated, shape, include), &options))
            }
            Method::PATCH => patch_response(state, rt, ns, name, "", query, headers, body, shape, include).await,
            Method::DELETE => {
                let bytes = read_body(body, headers).await?;
                let options = delete_options(query, &bytes)?;
                let orphaning_job = rt.group == "batch" && rt.kind == "Job" && options.propagation.is_none();
                let deleted = registry.delete(rt, ns, name, &options).await?;
                let mut response = match deleted {
                    Deleted::Gone(object) if !returns_deleted_object(rt) => {
                        let uid = object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
                        let mut details = json!({"name": name, "kind": rt.plural, "uid": uid});
                        if !rt.group.is_empty() {
                            details["group"] = json!(rt.group);
                        }
                        json_response(
                            StatusCode::OK,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                        )
                    }
                    Deleted::Gone(object) | Deleted::Pending(object) => {
                        object_response(StatusCode::OK, rt, &object, shape, include)
                    }
                };
                if orphaning_job {
                    response.headers_mut().append(header::WARNING, HeaderValue::from_static(
                        "299 - \"child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning\"",
                    ));
                }
                Ok(response)
            }
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some("status")) if rt.has_status => match method {
            Method::GET => Ok(object_response(StatusCode::OK, rt, &registry.get(rt, ns, name).await?, shape, include)),
            Method::PUT => {
                let bytes = read_body(body, headers).await?;
                let object = decode_body(&bytes, &content_type(headers))?;
                let options = query.write_options(headers)?;
                let updated = registry.update(rt, ns, name, object, "status", &options).await?;
                Ok(object_response(StatusCode::OK, rt, &updated, shape, include))
            }
            Method::PATCH => patch_response(state, rt, ns, name, "status", query, headers, body, shape, include).await,
            _ => Err(ApiError::MethodNotAllowed),
        },
        (Some(name), Some(sub @ ("ephemeralcontainers" | "resize" | "approval")))
            if rt.extra.iter().any(|e| e.name == sub) =>
        {
            let written = match method {
                Method::GET => {
                    return Ok(object_response(StatusCode::OK, rt, &registry.get(rt, ns, name).await?, shape, include));
                }
                Method::PUT => {
                    let bytes = read_body(body, headers).await?;
                    let object = decode_body(&bytes, &content_type(headers))?;
                    let options = query.write_options(headers)?;
                    registry.update(rt, ns, name, object, sub, &options).await?
                }
                Method::PATCH => {
                    let response =
                        patch_response(state, rt, ns, name, sub, query, headers, body, shape, include).await?;
                    if sub != "approval" {
                        return Ok(response);
                    }
                    registry.get(rt, ns, name).await?
                }
                _ => return Err(ApiError::MethodNotAllowed),
            };
            let written = if sub == "approval" { sign_if_approved(state, rt, written).await? } else { written };
            Ok(object_response(StatusCode::OK, rt, &written, shape, include))
        }
        (Some(name), Some("scale")) if rt.scale.is_some() => scale(state, rt, ns, name, query, parts, body).await,
        (Some(name), Some("finalize")) if rt.kind == "Namespace" && method == Method::PUT => {
            let bytes = read_body(body, headers).await?;
            let object = decode_body(&bytes, &content_type(headers))?;
            let mut current = registry.get(rt, None, name).await?;
            current["spec"]["finalizers"] = object.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
            if let Some(rv) = object.pointer("/metadata/resourceVersion") {
                current["metadata"]["resourceVersion"] = rv.clone();
            }
            let options = query.write_options(headers)?;
            let updated = registry.update(rt, None, name, current, "finalize", &options).await?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        (Some(name), Some("token")) if rt.kind == "ServiceAccount" && method == Method::POST => {
            let bytes = read_body(body, headers).await?;
            let mut request = decode_body(&bytes, &content_type(headers))?;
            let account = registry.get(rt, ns, name).await?;
            let signer = state.token_signer.as_ref().ok_or_else(|| {
                ApiError::Unavailable("service account tokens need TLS: this server has no signing key".into())
            })?;
            let uid = account.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
            let spec = request.get("spec").cloned().unwrap_or(json!({}));
            let (token, expiry) = signer.issue(ns.unwrap_or("default"), name, uid, &spec)?;
            request["apiVersion"] = json!("authentication.k8s.io/v1");
            request["kind"] = json!("TokenRequest");
            request["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": crate::registry::now()});
            let mut spec = spec;
            if spec.get("audiences").is_none_or(|a| a.as_array().is_none_or(Vec::is_empty)) {
                spec["audiences"] = json!([crate::tokens::ISSUER]);
            }
            spec["expirationSeconds"] = json!(spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600));
            request["spec"] = spec;
            request["status"] = json!({"token": token, "expirationTimestamp": expiry});
            Ok(json_response(StatusCode::CREATED, &request))
        }
        (Some(name), Some("binding")) if rt.kind == "Pod" && method == Method::POST => {
            let bytes = read_body(body, headers).await?;
            let binding = decode_body(&bytes, &content_type(headers))?;
            let node = binding.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
            if node.is_empty() {
                return Err(ApiError::InvalidOptions {
                    message: "Binding is invalid: target.name: Required value".into(),
                    causes: vec![crate::error::Cause::required("target.name", "")],
                });
            }
            let patch = json!({"spec": {"nodeName": node}});
            let pod = registry.get(rt, ns, name).await?;
            if pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
                return Err(ApiError::Conflict {
                    message: format!(
                        "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node {:?}",
                        pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("")
                    ),
                    subject: crate::error::Subject {
                        group: String::new(),
                        kind: "pods/binding".into(),
                        name: name.into(),
                    },
                    causes: vec![],
                });
            }
            let options = query.write_options(headers)?;
            registry.patch(rt, ns, name, PatchType::Merge, &patch, "binding", &options).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (Some(name), Some("eviction")) if rt.kind == "Pod" && method == Method::POST => {
            let bytes = read_body(body, headers).await?;
            let eviction = decode_body(&bytes, &content_type(headers))?;
            let mut options = DeleteOptions::default();
            if let Some(grace) = eviction.pointer("/deleteOptions/gracePeriodSeconds").and_then(Value::as_i64) {
                options.grace_period = Some(grace);
            }
            let dry_run = query.dry_run()?
                || eviction
                    .pointer("/deleteOptions/dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|v| v == "All"));
            crate::eviction::evict(registry, rt, ns.unwrap_or("default"), name, &options, dry_run).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        (Some(name), Some(sub @ ("exec" | "attach")))
            if rt.kind == "Pod" && (method == Method::GET || method == Method::POST) =>
        {
            // kube-apiserver's order: the options, the pod, the container, the node, then the
            // upgrade to whatever runs the pod.
            if query.get("dryRun").is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::BadRequest("dryRun is not supported".into()));
            }
            let pod = registry.get(rt, ns, name).await?;
            let request = crate::streams::check(sub, &pod, parts.uri.query())?;
            // Validating webhooks see the CONNECT with its options object.
            let (kind, options) = connect_options(sub, parts.uri.query());
            let call = crate::admission::webhook::Call {
                rt,
                subresource: sub,
                operation: "CONNECT",
                namespace: ns,
                name,
                object: Some(&options),
                old: None,
                identity,
                dry_run: false,
                options: Value::Null,
                object_kind: Some(kind),
            };
            crate::admission::webhook::validate(state, &call, &mut Vec::new()).await?;
            let Some(streams) = state.pod_streams.clone() else {
                return Err(ApiError::BadRequest(format!(
                    "unable to upgrade connection: pod {name} runs nowhere this API server can reach (it runs no containers and is not connected to a host)"
                )));
            };
            let on_upgrade = parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned();
            crate::streams::upgrade(headers, on_upgrade, request, move |request| streams.open(request)).await
        }
        (Some(name), Some("portforward")) if rt.kind == "Pod" && (method == Method::GET || method == Method::POST) => {
            let pod = registry.get(rt, ns, name).await?;
            if pod.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
            }
            let Some(streams) = state.pod_streams.clone() else {
                return Err(ApiError::BadRequest(format!(
                    "unable to upgrade connection: pod {name} runs nowhere this API server can reach (it runs no containers and is not connected to a host)"
                )));
            };
            let connector: crate::streams::portforward::Connector = Arc::new(move |port| streams.connect(&pod, port));
            let on_upgrade = parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned();
            crate::streams::portforward::upgrade(headers, parts.uri.query(), on_upgrade, connector)
                .await
                .map_err(ApiError::from)
        }
        (Some(name), Some("log")) if rt.kind == "Pod" && method == Method::GET => {
            // kube-apiserver's order: the options, the pod, the container, the node.
            validate_log_options(name, query)?;
            let pod = registry.get(rt, ns, name).await?;
            // Every container name, in upstream's visiting order (init, regular, ephemeral).
            let names = |key: &str| crate::streams::container_names(&pod, key);
            let containers = names("containers");
            let all: Vec<String> = [names("initContainers"), containers.clone(), names("ephemeralContainers")].concat();
            match query.get("container").filter(|c| !c.is_empty()) {
                Some(container) if !all.iter().any(|c| c == container) => {
                    return Err(ApiError::BadRequest(format!("container {container} is not valid for pod {name}")));
                }
                Some(_) => {}
                None if containers.is_empty() => {
                    return Err(ApiError::BadRequest(format!("a container name must be specified for pod {name}")));
                }
                None if containers.len() > 1 => {
                    return Err(ApiError::BadRequest(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        all.join(" ")
                    )));
                }
                None => {}
            }
            // A pod no node runs has no log yet: an empty answer, as upstream gives.
            if pod.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty) {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                return Ok(response);
            }
            let Some(source) = &state.pod_logs else {
                return Err(ApiError::BadRequest(format!(
                    "pod {name} has no log source: this API server runs no containers and is not connected to a host"
                )));
            };
            // Without `container`, a pod's only container is meant (as kube-apiserver reads it).
            let mut forwarded = parts.uri.query().unwrap_or("").to_string();
            if query.get("container").is_none_or(str::is_empty)
                && let [only] = containers.as_slice()
            {
                let pairs = forwarded.split('&').filter(|p| !p.is_empty() && !p.starts_with("container="));
                forwarded = pairs.chain([format!("container={only}").as_str()]).collect::<Vec<_>>().join("&");
            }
            let stream = source.logs(ns.unwrap_or("default"), name, &forwarded).await?;
            let mut response = Response::new(Body::from_stream(stream));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(response)
        }
        _ => Err(ApiError::no_route()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn patch_response(
    state: &Arc<AppState>,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: &str,
    subresource: &str,
    query: &Query,
    headers: &HeaderMap,
    body: hyper::body::Incoming,
    shape: Shape,
    include: &str,
) -> ApiResult<Response<Body>> {
    let bytes = read_body(body, headers).await?;
    let kind = content_type(headers);
    let force = query.flag("force")?;
    let patch_type = match kind.as_str() {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply { force },
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            )));
        }
    };
    if force && !matches!(patch_type, PatchType::Apply { .. }) {
        return Err(ApiError::InvalidOptions {
            message:
                "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
                    .into(),
            causes: vec![crate::error::Cause::forbidden("force", "may not be specified for non-apply patch")],
        });
    }
    if matches!(patch_type, PatchType::Apply { .. }) && query.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::InvalidOptions {
            message:
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
                    .into(),
            causes: vec![crate::error::Cause::required("fieldManager", "is required for apply patch")],
        });
    }
    let mut options = query.write_options(headers)?;
    let patch_body = match patch_type {
        PatchType::Apply { .. } => decode_write_body(&bytes, "application/yaml", &mut options)?,
        _ => decode_body(&bytes, "application/json")?,
    };
    let (object, created) = state.registry.patch(rt, ns, name, patch_type, &patch_body, subresource, &options).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(with_warnings(object_response(code, rt, &object, shape, include), &options))
}

/// Adds a `Warning: 299 - "..."` header for each warning the write produced.
fn with_warnings(mut response: Response<Body>, options: &WriteOptions) -> Response<Body> {
    for warning in options.warnings.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let text = format!("299 - {}", serde_json::to_string(warning).unwrap_or_default());
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn list_response(rt: &ResourceType, mut list: Value, shape: Shape, include: &str) -> Response<Body> {
    match shape {
        Shape::Object => json_response(StatusCode::OK, &list),
        Shape::Metadata => {
            let items: Vec<Value> =
                list["items"].as_array().into_iter().flatten().map(table::partial_metadata).collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list["metadata"].take(), "items": items}),
            )
        }
        Shape::Table => {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let rv = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(String::from);
            let mut t = table::table(rt, &items, rv.as_deref(), true, include);
            if let Some(token) = list.pointer("/metadata/continue").filter(|t| t.as_str() != Some("")) {
                t["metadata"]["continue"] = token.clone();
            }
            bytes_response(StatusCode::OK, TABLE_CONTENT_TYPE, Bytes::from(crate::wire::to_vec(&t)))
        }
    }
}

async fn watch_response(
    state: &Arc<AppState>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    params: ListParams,
    shape: Shape,
    include: String,
) -> ApiResult<Response<Body>> {
    let receiver = state.registry.watch(rt.clone(), namespace, params).await?;
    let mut first = true;
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(move |item| {
        let mut shaped = |object: Value| match shape {
            Shape::Object => object,
            Shape::Metadata => table::partial_metadata(&object),
            Shape::Table => {
                let rv = object.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(String::from);
                let t = table::table(&rt, std::slice::from_ref(&object), rv.as_deref(), first, &include);
                first = false;
                t
            }
        };
        let (kind, object) = match item {
            // The object as stored: written into the event line without parsing it.
            WatchItem::Raw(kind, bytes) if shape == Shape::Object => {
                let mut line = Vec::with_capacity(bytes.len() + 32);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(kind.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(&bytes);
                line.extend_from_slice(b"}\n");
                return Ok::<_, std::io::Error>(Bytes::from(line));
            }
            WatchItem::Raw(kind, bytes) => match serde_json::from_slice(&bytes) {
                Ok(object) => (kind, shaped(object)),
                Err(_) => return Ok(Bytes::new()),
            },
            WatchItem::Object(kind, object) => (kind, shaped(object)),
            WatchItem::Bookmark(rv, initial_end) => {
                let (api_version, kind) = match shape {
                    Shape::Object => (rt.api_version(), rt.kind.clone()),
                    Shape::Metadata => ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata".to_string()),
                    Shape::Table => ("meta.k8s.io/v1".to_string(), "Table".to_string()),
                };
                let mut object =
                    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}});
                if initial_end {
                    object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                }
                ("BOOKMARK", object)
            }
            WatchItem::Error(status) => ("ERROR", status),
        };
        let line = crate::wire::to_vec(&json!({"type": kind, "object": object}));
        Ok(Bytes::from(line))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let content_type = if shape == Shape::Table { TABLE_CONTENT_TYPE } else { "application/json" };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

async fn scale(
    state: &Arc<AppState>,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: &str,
    query: &Query,
    parts: http::request::Parts,
    body: hyper::body::Incoming,
) -> ApiResult<Response<Body>> {
    let registry = &state.registry;
    let paths = rt.scale.clone().expect("checked by the caller");
    let pointer = |path: &str| format!("/{}", path.trim_start_matches('.').replace('.', "/"));
    let to_scale = |object: &Value| -> Value {
        let selector = paths.label_selector.as_deref().and_then(|p| object.pointer(&pointer(p)).cloned());
        let selector = match selector {
            Some(Value::String(s)) => s,
            _ => object
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
                })
                .unwrap_or_default(),
        };
        let meta = &object["metadata"];
        json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace").cloned().unwrap_or(Value::Null), "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
            "spec": {"replicas": object.pointer(&pointer(&paths.spec_replicas)).and_then(Value::as_i64).unwrap_or(0)},
            "status": {"replicas": object.pointer(&pointer(&paths.status_replicas)).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
        })
    };
    let headers = &parts.headers;
    let body = match parts.method {
        Method::GET => {
            let current = registry.get(rt, ns, name).await?;
            return Ok(json_response(StatusCode::OK, &to_scale(&current)));
        }
        Method::PUT | Method::PATCH => {
            let bytes = read_body(body, headers).await?;
            let kind = if parts.method == Method::PUT { content_type(headers) } else { "application/json".into() };
            decode_body(&bytes, &kind)?
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    // A write that names no resourceVersion is unconditional: when the object changes between
    // the read and the write (a controller's status update), it is made again on the new one,
    // as upstream's GuaranteedUpdate does.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = registry.get(rt, ns, name).await?;
        let new_scale = if parts.method == Method::PUT {
            body.clone()
        } else {
            let mut scale = to_scale(&current);
            match content_type(headers).as_str() {
                "application/json-patch+json" => crate::patch::json_patch(&mut scale, &body)?,
                "application/strategic-merge-patch+json" => crate::patch::strategic_merge_patch(&mut scale, &body)?,
                _ => crate::patch::merge_patch(&mut scale, &body)?,
            }
            scale
        };
        let given = new_scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|r| {
                !r.is_empty()
                    && (parts.method == Method::PUT
                        || Some(*r) != current.pointer("/metadata/resourceVersion").and_then(Value::as_str))
            })
            .map(String::from);
        match scale_to(registry, rt, ns, name, query, headers, &paths, &current, &new_scale, given.as_deref()).await {
            // Upstream retries without a bound; a bound keeps a pathological writer from pinning this.
            Err(ApiError::Conflict { .. }) if given.is_none() && attempt < 100 => continue,
            Ok(stored) => return Ok(json_response(StatusCode::OK, &to_scale(&stored))),
            Err(error) => return Err(error),
        }
    }
}

/// Writes `new_scale`'s replicas into `current` (at `given` resourceVersion, else at the one
/// read); the stored object.
#[allow(clippy::too_many_arguments)]
async fn scale_to(
    registry: &crate::registry::Registry,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    query: &Query,
    headers: &http::HeaderMap,
    paths: &crate::catalog::ScalePaths,
    current: &Value,
    new_scale: &Value,
    given: Option<&str>,
) -> ApiResult<Value> {
    let pointer = |path: &str| format!("/{}", path.trim_start_matches('.').replace('.', "/"));
    let replicas = new_scale.pointer("/spec/replicas").and_then(Value::as_i64).ok_or_else(|| ApiError::Invalid {
        group: "autoscaling".into(),
        kind: "Scale".into(),
        name: name.into(),
        causes: vec![crate::error::Cause::required("spec.replicas", "")],
    })?;
    if replicas < 0 {
        return Err(ApiError::Invalid {
            group: "autoscaling".into(),
            kind: "Scale".into(),
            name: name.into(),
            causes: vec![crate::error::Cause::invalid_number(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        });
    }
    let mut updated = current.clone();
    let spec_pointer = pointer(&paths.spec_replicas);
    let mut target = &mut updated;
    let segments: Vec<&str> = spec_pointer.trim_start_matches('/').split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if i + 1 == segments.len() {
            target[*segment] = json!(replicas);
        } else {
            if !target.get(*segment).is_some_and(Value::is_object) {
                target[*segment] = json!({});
            }
            target = &mut target[*segment];
        }
    }
    if let Some(rv) = given {
        updated["metadata"]["resourceVersion"] = json!(rv);
    }
    let options = query.write_options(headers)?;
    registry.update(rt, ns, name, updated, "", &options).await
}

/// The `kubernetes.io/kube-apiserver-client` signer (what kube-controller-manager's
/// csrsigning controller does): an approved request for a client certificate gets one, signed by
/// the cluster CA, at once.
async fn sign_if_approved(state: &AppState, rt: &ResourceType, csr: Value) -> ApiResult<Value> {
    use base64::Engine;
    const SIGNERS: &[&str] = &["kubernetes.io/kube-apiserver-client", "kubernetes.io/legacy-unknown"];
    let approved = csr.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Approved")
            && c.get("status").and_then(Value::as_str) != Some("False")
    });
    let denied_or_failed = csr
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| matches!(c.get("type").and_then(Value::as_str), Some("Denied" | "Failed")));
    let signer = csr.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or_default();
    let issued = csr.pointer("/status/certificate").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
    let Some(pki) = &state.pki else { return Ok(csr) };
    if !approved || denied_or_failed || issued || !SIGNERS.contains(&signer) {
        return Ok(csr);
    }
    let name = csr.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let request = csr.pointer("/spec/request").and_then(Value::as_str).unwrap_or_default();
    let pem = base64::engine::general_purpose::STANDARD.decode(request).ok().and_then(|b| String::from_utf8(b).ok());
    let seconds = csr.pointer("/spec/expirationSeconds").and_then(Value::as_u64).unwrap_or(365 * 24 * 3600).max(600);
    let mut updated = csr.clone();
    match pem.map(|pem| pki.sign_client_request(&pem, seconds)) {
        Some(Ok(certificate)) => {
            updated["status"]["certificate"] = json!(base64::engine::general_purpose::STANDARD.encode(certificate));
        }
        _ => {
            let failed = json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                "message": "the request is not a valid PEM certificate signing request",
                "lastUpdateTime": crate::registry::now(), "lastTransitionTime": crate::registry::now()});
            let conditions =
                crate::strategy::ensure_object(&mut updated, "status").entry("conditions").or_insert_with(|| json!([]));
            if let Some(list) = conditions.as_array_mut() {
                list.push(failed);
            }
        }
    }
    let options =
        crate::registry::WriteOptions { field_manager: "certificate-controller".into(), ..Default::default() };
    state.registry.update(rt, None, &name, updated, "status", &options).await
}

/// `componentstatuses`: the parts of this control plane, all healthy while it answers (the list
/// upstream deprecated but still serves).
fn component_statuses(rt: &ResourceType, name: Option<&str>, shape: Shape, include: &str) -> ApiResult<Response<Body>> {
    let item = |name: &str| {
        json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name},
            "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]})
    };
    let names = ["controller-manager", "scheduler", "etcd-0"];
    match name {
        Some(name) if names.contains(&name) => Ok(object_response(StatusCode::OK, rt, &item(name), shape, include)),
        Some(name) => Err(ApiError::not_found("", "componentstatuses", name)),
        None => {
            let list = json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {},
                "items": names.iter().map(|n| item(n)).collect::<Vec<_>>()});
            Ok(list_response(rt, list, shape, include))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_targets() {
        assert_eq!(
            Target::parse(&["namespaces", "a", "status"]).unwrap(),
            Target { namespace: None, resource: "namespaces", name: Some("a"), subresource: Some("status") }
        );
        assert_eq!(
            Target::parse(&["namespaces", "a", "pods"]).unwrap(),
            Target { namespace: Some("a"), resource: "pods", name: None, subresource: None }
        );
        assert_eq!(
            Target::parse(&["namespaces", "a"]).unwrap(),
            Target { namespace: None, resource: "namespaces", name: Some("a"), subresource: None }
        );
        assert_eq!(Target::parse(&["namespaces", "a", "pods", "p", "log"]).unwrap().subresource, Some("log"));
        assert!(Target::parse(&["a", "b", "c", "d"]).is_none());
    }

    #[test]
    fn queries_tolerate_empty_pairs_and_go_booleans() {
        let q = Query::parse(Some("&watch=True&limit=500&labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dx"));
        assert!(q.flag("watch").unwrap());
        let params = q.list_params().unwrap();
        assert_eq!(params.limit, Some(500));
        assert_eq!(params.fields.pinned_name(), Some("x"));
        assert!(Query::parse(Some("watch=maybe")).flag("watch").is_err());
    }

    #[test]
    fn accept_headers_pick_the_shape() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert_eq!(shape(&h), Shape::Table);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        );
        assert_eq!(shape(&h), Shape::Metadata);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/vnd.kubernetes.protobuf,application/json"));
        assert_eq!(shape(&h), Shape::Object);
        assert_eq!(shape(&HeaderMap::new()), Shape::Object);
    }
}
