//! The generic registry: create, read, list, update, patch, delete and watch for every resource
//! type over the key/value store, with the metadata rules every Kubernetes object follows.
//! Per-kind behaviour comes from [`crate::strategy`]; the HTTP layer only translates requests.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vkube_store::{EventKind, KeyValue, ListOptions, Storage, StorageError};

use crate::catalog::{Catalog, ResourceType};
use crate::error::{ApiError, ApiResult, Cause, Subject};
use crate::fields::{self, ListRules};
use crate::patch;
use crate::selector::{FieldSelector, LabelSelector};
use crate::strategy;
use crate::validation;

/// The current time as Kubernetes writes `metav1.Time` (second precision, UTC).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn timestamp_after(seconds: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// How unknown fields are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop silently.
    Ignore,
    /// Accept with a warning.
    #[default]
    Warn,
    /// Reject with 400.
    Strict,
}

/// A check on every write after validation (the validating-admission stage): the object as it
/// would be stored and, for an update, the stored one. An error refuses the write.
pub trait Admission: Send + Sync {
    /// Mutating admission of a create (`old` is None) or update, after defaulting and before
    /// validation: may change `new`.
    fn mutate<'a>(
        &'a self,
        _rt: &'a ResourceType,
        _old: Option<&'a Value>,
        _new: &'a mut Value,
    ) -> futures::future::BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Admits or refuses a write of `new` over `old`.
    fn admit<'a>(
        &'a self,
        rt: &'a ResourceType,
        old: Option<&'a Value>,
        new: &'a Value,
    ) -> futures::future::BoxFuture<'a, ApiResult<()>>;

    /// Admits or refuses the delete of `old` (validating webhooks).
    fn admit_delete<'a>(
        &'a self,
        _rt: &'a ResourceType,
        _old: &'a Value,
    ) -> futures::future::BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The admission check of one write, if any.
#[derive(Clone, Default)]
pub struct AdmissionHook(pub Option<Arc<dyn Admission>>);

impl std::fmt::Debug for AdmissionHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "AdmissionHook(set)" } else { "AdmissionHook(none)" })
    }
}

/// Options shared by every write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Validating admission beyond the kind's own rules (e.g. RBAC escalation checks).
    pub admission: AdmissionHook,
    /// `dryRun=All`: do everything but persist.
    pub dry_run: bool,
    /// Who is writing, for managedFields.
    pub field_manager: String,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// Warnings for the client (`Warning: 299` headers), filled in by the write.
    pub warnings: Arc<std::sync::Mutex<Vec<String>>>,
    /// Fields the request body gave twice (paths, `spec.replicas`): refused or warned about
    /// with the unknown fields, as `fieldValidation` says.
    pub duplicate_fields: Vec<String>,
    /// The request's JSON body, when the object written is that body: a wrongly typed value is
    /// then reported as the first one in the client's order, as Go's decoder reports it.
    pub request_json: Option<bytes::Bytes>,
}

/// The patch types the server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml`
    Apply {
        /// `force=true`
        force: bool,
    },
}

/// Parsed list/watch parameters.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit`.
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `timeoutSeconds` (watch).
    pub timeout: Option<Duration>,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
}

/// `DeleteOptions`, from the body and the query.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
    /// `propagationPolicy` (or the deprecated `orphanDependents`).
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// Validating admission of the delete (webhooks).
    pub admission: AdmissionHook,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Value),
    /// The object is being deleted (finalizers or grace period); this is its state now.
    Pending(Value),
}

/// One event of a watch stream.
#[derive(Clone, Debug)]
pub enum WatchItem {
    /// ADDED / MODIFIED / DELETED with the object.
    Object(&'static str, Value),
    /// As `Object`, the object already serialized: the stored bytes with the event's
    /// resourceVersion spliced in. A watch without selectors on a kind stored as it is served
    /// sends these, so an event is not parsed and serialized again for every watcher.
    Raw(&'static str, Bytes),
    /// A bookmark at this resourceVersion; `initial_end` marks the end of initial events.
    Bookmark(u64, bool),
    /// An ERROR event carrying a Status.
    Error(Value),
}

impl WatchItem {
    /// The event type and the object of an ADDED / MODIFIED / DELETED item, parsed if raw.
    pub fn into_object(self) -> Option<(&'static str, Value)> {
        match self {
            WatchItem::Object(kind, object) => Some((kind, object)),
            WatchItem::Raw(kind, bytes) => serde_json::from_slice(&bytes).ok().map(|object| (kind, object)),
            WatchItem::Bookmark(..) | WatchItem::Error(_) => None,
        }
    }
}

/// The registry over one store.
#[derive(Clone)]
pub struct Registry {
    /// The backing store.
    pub store: Arc<dyn Storage>,
    /// The served types.
    pub catalog: Catalog,
    /// How often watches with `allowWatchBookmarks` get a bookmark.
    pub bookmark_interval: Duration,
    /// OpenAPI documents (also the schemas unknown fields are checked against).
    pub openapi: crate::openapi::OpenApi,
    /// Background work (namespace finalization) is signalled here.
    cleanup: Option<mpsc::UnboundedSender<Cleanup>>,
    /// Allocates service addresses elsewhere (a virtual cluster takes them from its host).
    pub service_addresses: Option<Arc<dyn ServiceAddresses>>,
    /// One refresh of the custom types at a time, so an older list never replaces a newer one.
    refreshing: Arc<tokio::sync::Mutex<()>>,
    /// Calls the conversion webhooks of custom resources (set once the server runs).
    converter: Arc<std::sync::OnceLock<Arc<dyn crate::conversion_webhook::Converter>>>,
}

/// Forgets a finalization when it ends (or its task is dropped).
struct Finalizing(Arc<std::sync::Mutex<std::collections::HashSet<String>>>, Option<String>);

impl Drop for Finalizing {
    fn drop(&mut self) {
        if let Some(key) = &self.1 {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        }
    }
}

/// Background finalization the registry runs for a deleted object.
#[derive(Clone, Debug)]
enum Cleanup {
    /// Delete a terminating namespace's contents, then the namespace.
    Namespace(String),
    /// Delete a terminating CRD's objects, then the definition.
    Definition(String),
    /// Bring the local `APIService` objects in line with the served group versions.
    ApiServices,
}

/// Where Services get their cluster IPs and node ports when not from the server's own range: a
/// virtual cluster creates the host service first and uses the host's addresses.
pub trait ServiceAddresses: Send + Sync + 'static {
    /// The service (namespace, name and uid set) with `spec.clusterIP(s)` and node ports filled in.
    fn allocate(&self, service: Value) -> futures::future::BoxFuture<'static, ApiResult<AllocatedService>>;
    /// Gives back what `allocate` took (only what that call made, `release` of its answer), when
    /// the service could not be stored after all.
    fn release(&self, allocated: AllocatedService) -> futures::future::BoxFuture<'static, ()>;
}

/// A service with addresses from [`ServiceAddresses::allocate`].
#[derive(Debug, Clone)]
pub struct AllocatedService {
    /// The service to store.
    pub service: Value,
    /// What the allocation made that a failed create must take back (`None`: nothing, e.g. an
    /// existing host service was reused); opaque to the registry.
    pub release: Option<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn subject(rt: &ResourceType, name: &str) -> Subject {
    Subject { group: rt.group.clone(), kind: rt.plural.clone(), name: name.to_string() }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// The labels of an object.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

fn finalizers_of(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Why a resourceVersion does not parse, in upstream's words.
fn rv_parse_error(text: &str) -> String {
    format!("resourceVersion: Invalid value: {text:?}: strconv.ParseUint: parsing {text:?}: invalid syntax")
}

/// A list's resourceVersion (a malformed one is a 400).
fn parse_rv(text: &str) -> ApiResult<u64> {
    text.parse().map_err(|_| ApiError::BadRequest(format!("invalid resource version: {}", rv_parse_error(text))))
}

/// The keys of one list page, and the parsed objects when selectors had to look at them.
struct ListPage {
    kvs: Vec<KeyValue>,
    objects: Option<Vec<Value>>,
    metadata: Value,
}

/// What the cluster IP and node port allocators read of a stored service: decoded without
/// building the whole object, since a service create reads every service.
#[derive(serde::Deserialize)]
struct ServiceAllocations {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    ports: Option<Vec<AllocatedPort>>,
}

#[derive(serde::Deserialize)]
struct AllocatedPort {
    #[serde(rename = "nodePort")]
    node_port: Option<i64>,
}

impl ServiceAllocations {
    /// The `spec` of stored service bytes (`None` when they do not decode).
    fn read(stored: &[u8]) -> Option<ServiceAllocations> {
        #[derive(serde::Deserialize)]
        struct Stored {
            spec: Option<ServiceAllocations>,
        }
        serde_json::from_slice::<Stored>(stored).ok()?.spec
    }
}

/// Inserts `"resourceVersion":"N"` into the top-level `metadata` object of a stored JSON
/// object without parsing it. None when the bytes do not have the expected shape.
pub fn splice_resource_version(stored: &[u8], revision: u64) -> Option<Vec<u8>> {
    let position = top_level_value(stored, b"metadata")?;
    if stored.get(position) != Some(&b'{') {
        return None;
    }
    let insert = format!("\"resourceVersion\":\"{revision}\"");
    let empty = stored[position + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(stored.len() + insert.len() + 1);
    out.extend_from_slice(&stored[..=position]);
    out.extend_from_slice(insert.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&stored[position + 1..]);
    Some(out)
}

/// The byte offset of the value of top-level key `key` in a JSON object.
fn top_level_value(json: &[u8], key: &[u8]) -> Option<usize> {
    let mut i = json.iter().position(|b| !b.is_ascii_whitespace())?;
    if json[i] != b'{' {
        return None;
    }
    i += 1;
    let mut depth = 1usize;
    let mut expecting_key = true;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    if json[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 && expecting_key {
                    let name = &json[start..i.min(json.len())];
                    let mut j = i + 1;
                    while j < json.len() && (json[j].is_ascii_whitespace() || json[j] == b':') {
                        j += 1;
                    }
                    if name == key {
                        return Some(j);
                    }
                    expecting_key = false;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 1 => expecting_key = true,
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

/// Refuses `object` as kube-apiserver's decoder refuses a built-in kind with a value of the wrong
/// JSON type (400, `Deployment in version "v1" cannot be handled as a Deployment: json: cannot
/// unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32`), a
/// `[]byte` field that is not base64, a malformed quantity or time.
fn check_go_types(rt: &ResourceType, object: &Value, options: &WriteOptions) -> ApiResult<()> {
    if crate::go_decode::refusal(rt, object, None).is_none() {
        return Ok(());
    }
    // The first bad value as the client wrote them, when we have the text.
    let text = options.request_json.as_deref().and_then(|b| std::str::from_utf8(b).ok());
    let problem = text
        .and_then(|text| crate::go_decode::refusal(rt, object, Some(text)))
        .or_else(|| crate::go_decode::refusal(rt, object, None))
        .unwrap_or_default();
    Err(ApiError::BadRequest(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: {problem}",
        kind = rt.kind,
        version = rt.version
    )))
}

impl Registry {
    /// A registry over `store` serving `catalog`.
    pub fn new(store: Arc<dyn Storage>, catalog: Catalog) -> Self {
        Registry {
            store,
            catalog,
            bookmark_interval: Duration::from_secs(60),
            openapi: crate::openapi::OpenApi::default(),
            cleanup: None,
            service_addresses: None,
            refreshing: Arc::default(),
            converter: Arc::default(),
        }
    }

    /// Who converts custom resources whose CRD names a conversion webhook.
    pub fn set_converter(&self, converter: Arc<dyn crate::conversion_webhook::Converter>) {
        let _ = self.converter.set(converter);
    }

    /// Brings `objects` (decoded for `rt`) to `rt`'s version: those of a CRD with a conversion
    /// webhook that are stored at another version go to the webhook, in one review; the answer
    /// is pruned and defaulted with `rt`'s schema. Others are already there.
    pub async fn to_served(&self, rt: &ResourceType, objects: &mut [Value]) -> ApiResult<()> {
        let Some(webhook) = rt.custom.as_ref().and_then(|c| c.conversion_webhook.as_ref()) else { return Ok(()) };
        let desired = rt.api_version();
        let indices: Vec<usize> =
            (0..objects.len()).filter(|&i| objects[i]["apiVersion"].as_str() != Some(desired.as_str())).collect();
        if indices.is_empty() {
            return Ok(());
        }
        let sent: Vec<Value> = indices.iter().map(|&i| objects[i].clone()).collect();
        let converted = self.convert(rt, webhook, &desired, sent).await?;
        let snapshot = self.catalog.snapshot();
        for (i, mut object) in indices.into_iter().zip(converted) {
            // The resource version is the stored object's (the webhook may not change it).
            self.openapi.prune_unknown_fields(&snapshot, rt, &mut object);
            if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
                crate::crd::apply_defaults(&mut object, schema);
            }
            objects[i] = object;
        }
        Ok(())
    }

    /// `object`, written at `rt`'s version, at the version its CRD stores (through the
    /// conversion webhook when they differ), pruned with the storage version's schema.
    async fn to_storage<'a>(&self, rt: &ResourceType, object: &'a Value) -> ApiResult<Cow<'a, Value>> {
        let Some(custom) = rt.custom.as_ref() else { return Ok(Cow::Borrowed(object)) };
        let Some(webhook) = custom.conversion_webhook.as_ref().filter(|_| custom.storage_version != rt.version) else {
            return Ok(Cow::Borrowed(object));
        };
        let desired = format!("{}/{}", rt.group, custom.storage_version);
        let mut converted = self.convert(rt, webhook, &desired, vec![object.clone()]).await?;
        let mut stored = converted.pop().unwrap_or_default();
        let snapshot = self.catalog.snapshot();
        if let Some(storage) = snapshot.get(&rt.group, &custom.storage_version, &rt.plural) {
            self.openapi.prune_unknown_fields(&snapshot, &storage, &mut stored);
        }
        Ok(Cow::Owned(stored))
    }

    /// One review to the webhook; a failure reads as upstream's (`conversion webhook for
    /// stable.example.com/v1, Kind=Target failed: ...`, naming the version converted from).
    async fn convert(
        &self,
        rt: &ResourceType,
        webhook: &Value,
        desired: &str,
        sent: Vec<Value>,
    ) -> ApiResult<Vec<Value>> {
        let from = sent.first().and_then(|o| o["apiVersion"].as_str()).unwrap_or_default().to_string();
        let failed =
            |why: String| ApiError::Internal(format!("conversion webhook for {from}, Kind={} failed: {why}", rt.kind));
        let Some(converter) = self.converter.get() else { return Err(failed("no conversion webhook client".into())) };
        converter.convert(webhook, desired, sent).await.map_err(failed)
    }

    /// Starts the background work: namespace and CRD finalization and custom resource registration.
    pub async fn start_background(&mut self) -> ApiResult<()> {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Cleanup>();
        self.cleanup = Some(sender.clone());
        self.refresh_custom_types().await?;
        let snapshot = self.catalog.snapshot();
        let namespaces = snapshot.get("", "v1", "namespaces").expect("built-in");
        let crds = snapshot.get("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("built-in");
        for rt in [namespaces, crds] {
            tokio::spawn(self.clone().follow(rt, self.store.current_revision(), sender.clone()));
        }
        let registry = self.clone();
        // What is being finalized (a namespace or CRD is finalized once, whoever asks).
        let active = Arc::new(std::sync::Mutex::new(std::collections::HashSet::<String>::new()));
        tokio::spawn(async move {
            while let Some(work) = receiver.recv().await {
                let registry = registry.clone();
                let once = match &work {
                    Cleanup::ApiServices => None,
                    other => Some(format!("{other:?}")),
                };
                if let Some(key) = &once
                    && !active.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone())
                {
                    continue;
                }
                let active = active.clone();
                // Each runs on its own: a namespace waiting on a finalizer holds up nothing else.
                tokio::spawn(async move {
                    let _done = Finalizing(active, once);
                    let mut delay = Duration::from_millis(100);
                    loop {
                        let done = match &work {
                            Cleanup::Namespace(namespace) => registry.finalize_namespace(namespace).await,
                            Cleanup::Definition(name) => registry.finalize_definition(name).await,
                            Cleanup::ApiServices => registry.register_local_api_services().await.map(|()| true),
                        };
                        match done {
                            Ok(true) => break,
                            Ok(false) => {}
                            Err(error) => tracing::warn!(?work, %error, "cleanup failed; retrying"),
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                });
            }
        });
        // Resume namespaces and CRDs that were terminating when the server stopped.
        let snapshot = self.catalog.snapshot();
        let terminating = [
            (snapshot.get("", "v1", "namespaces").expect("built-in"), Cleanup::Namespace as fn(String) -> Cleanup),
            (
                snapshot.get("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("built-in"),
                Cleanup::Definition as fn(String) -> Cleanup,
            ),
        ];
        for (rt, work) in terminating {
            let list = self.store.list(ListOptions { prefix: rt.key_prefix(), ..Default::default() }).await?;
            for kv in list.items {
                let object = self.decode(&rt, &kv)?;
                if object.pointer("/metadata/deletionTimestamp").is_some() {
                    let _ = sender.send(work(meta_str(&object, "name").unwrap_or_default().to_string()));
                }
            }
        }
        Ok(())
    }

    /// What a write of `written` (at `rt`'s version) stored as `kv` reads back as: `written` with
    /// the new resource version when the stored form is the served one (no conversion on the way
    /// in or out), else the stored bytes decoded; either way before [`Registry::to_served`].
    fn read_back(&self, rt: &ResourceType, mut written: Value, kv: &KeyValue) -> ApiResult<Value> {
        let converted = rt.custom.is_some() || matches!(rt.group.as_str(), "events.k8s.io" | "autoscaling");
        if converted {
            return self.decode(rt, kv);
        }
        match written.get_mut("metadata").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.remove("selfLink");
                meta.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            }
            None => return self.decode(rt, kv),
        }
        Ok(written)
    }

    /// The stored bytes as an API object of type `rt`.
    pub fn decode(&self, rt: &ResourceType, kv: &KeyValue) -> ApiResult<Value> {
        let mut object: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::Internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
        if rt.group == "events.k8s.io" {
            object = strategy::event_to_events_v1(&object);
        }
        if rt.group == "autoscaling" && rt.version == "v1" {
            object = crate::conversion::hpa_v2_to_v1(&object);
        }
        // Custom resources are defaulted when read too, so a default added to the schema later
        // shows on objects stored before it (as upstream's storage decoder defaults them).
        if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
            crate::crd::apply_defaults(&mut object, schema);
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        }
        let converted_later = rt.custom.as_ref().is_some_and(|c| c.conversion_webhook.is_some())
            && object["apiVersion"].as_str().is_some_and(|v| !v.is_empty());
        if !converted_later {
            // A webhook's CRD keeps the stored version for `to_served` to convert from.
            object["apiVersion"] = json!(rt.api_version());
        }
        object["kind"] = json!(rt.kind);
        Ok(object)
    }

    fn encode(&self, rt: &ResourceType, object: &Value) -> ApiResult<Bytes> {
        let mut stored = match (rt.group.as_str(), rt.version.as_str()) {
            ("events.k8s.io", _) => strategy::events_v1_to_event(object),
            ("autoscaling", "v1") => {
                let mut v2 = crate::conversion::hpa_v1_to_v2(object);
                crate::conversion::default_hpa_v2(&mut v2);
                v2
            }
            ("autoscaling", _) => {
                let mut v2 = object.clone();
                crate::conversion::default_hpa_v2(&mut v2);
                v2
            }
            _ => object.clone(),
        };
        if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("selfLink");
        }
        Ok(Bytes::from(crate::wire::to_vec_compact(&stored)))
    }

    /// Reads one object.
    pub async fn get(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let (object, _) = self.get_with_revision(rt, namespace, name).await?;
        Ok(object)
    }

    async fn get_with_revision(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> ApiResult<(Value, u64)> {
        match self.store.get(&rt.key(namespace, name)).await? {
            Some(kv) => {
                let mut object = self.decode(rt, &kv)?;
                self.to_served(rt, std::slice::from_mut(&mut object)).await?;
                Ok((object, kv.mod_revision))
            }
            None => Err(ApiError::not_found(&rt.group, &rt.plural, name)),
        }
    }

    /// Checks that every field selector term names a field this kind supports.
    pub fn check_field_selector(&self, rt: &ResourceType, selector: &FieldSelector) -> ApiResult<()> {
        let probe = json!({"metadata": {}});
        for requirement in &selector.0 {
            if strategy::field_value(rt, &probe, &requirement.field).is_none() {
                // Kinds with their own field label conversion answer as it does; the rest with
                // the generic selectable-fields message.
                let field = &requirement.field;
                let message = match (rt.group.as_str(), rt.kind.as_str()) {
                    ("", "Pod" | "Node" | "Namespace" | "ReplicationController" | "Event" | "Secret" | "Service")
                    | ("events.k8s.io", "Event")
                    | ("certificates.k8s.io", "CertificateSigningRequest") => {
                        format!("field label not supported: {field}")
                    }
                    _ if rt.is_custom() => format!("field label not supported: {field}"),
                    ("batch", "Job") => format!("field label {field:?} not supported for Job"),
                    _ => format!(
                        "{field:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    ),
                };
                return Err(ApiError::BadRequest(message));
            }
        }
        Ok(())
    }

    fn matches(&self, rt: &ResourceType, params: &ListParams, object: &Value) -> bool {
        (params.labels.is_empty() || params.labels.matches(&labels_of(object)))
            && (params.fields.is_empty() || params.fields.matches(|f| strategy::field_value(rt, object, f)))
    }

    /// Lists objects, returning the list object (`kind: XList`).
    pub async fn list(&self, rt: &ResourceType, namespace: Option<&str>, params: &ListParams) -> ApiResult<Value> {
        let page = self.collect(rt, namespace, params).await?;
        let mut items = match page.objects {
            Some(objects) => objects,
            None => page.kvs.iter().map(|kv| self.decode(rt, kv)).collect::<ApiResult<Vec<_>>>()?,
        };
        self.to_served(rt, &mut items).await?;
        Ok(json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": page.metadata, "items": items}))
    }

    /// Every object of `rt` (in `namespace`) as this server last saw it (admission's view,
    /// like upstream's informers: see `Storage::list_recent`).
    pub async fn list_recent(&self, rt: &ResourceType, namespace: Option<&str>) -> ApiResult<Vec<Value>> {
        let prefix = rt.namespace_prefix(namespace);
        let list = self.store.list_recent(ListOptions { prefix, ..Default::default() }).await?;
        list.items.iter().map(|kv| self.decode(rt, kv)).collect()
    }

    /// The same list as [`Registry::list`], already serialized. Unfiltered lists splice each
    /// object's resourceVersion into its stored bytes instead of parsing it, which is what makes
    /// large informer lists cheap.
    pub async fn list_json(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> ApiResult<Vec<u8>> {
        let converted = rt.custom.as_ref().is_some_and(|c| c.conversion_webhook.is_some());
        if rt.group == "events.k8s.io" || converted {
            return serde_json::to_vec(&self.list(rt, namespace, params).await?)
                .map_err(|e| ApiError::Internal(e.to_string()));
        }
        let page = self.collect(rt, namespace, params).await?;
        let mut out = Vec::with_capacity(page.kvs.iter().map(|kv| kv.value.len() + 32).sum::<usize>() + 256);
        let head = json!({"kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": page.metadata});
        let head = crate::wire::to_vec_compact(&head);
        out.extend_from_slice(&head[..head.len() - 1]);
        out.extend_from_slice(b",\"items\":[");
        // Items of built-in lists carry no kind and apiVersion (upstream's typed lists); those
        // of custom resources do.
        let typed = !rt.is_custom();
        let raw = Self::served_as_stored(rt);
        let (raw_ok, type_prefix) = (raw.is_some(), raw.unwrap_or_default());
        let item = |mut object: Value| {
            if typed && let Some(map) = object.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            object
        };
        match page.objects {
            Some(objects) => {
                for (i, object) in objects.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut out, &crate::wire::Ordered(&item(object)))
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                }
            }
            None => {
                for (i, kv) in page.kvs.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Stored bytes are used as they are only when stored under the served
                    // version (a custom resource served at another version is re-labelled).
                    match splice_resource_version(&kv.value, kv.mod_revision) {
                        Some(bytes) if raw_ok && typed && bytes.starts_with(type_prefix.as_bytes()) => {
                            out.push(b'{');
                            out.extend_from_slice(&bytes[type_prefix.len()..]);
                        }
                        Some(bytes) if raw_ok && !typed && bytes.starts_with(type_prefix.as_bytes()) => {
                            out.extend_from_slice(&bytes)
                        }
                        _ => serde_json::to_writer(&mut out, &crate::wire::Ordered(&item(self.decode(rt, kv)?)))
                            .map_err(|e| ApiError::Internal(e.to_string()))?,
                    }
                }
            }
        }
        out.extend_from_slice(b"]}\n");
        Ok(out)
    }

    /// Reads the keys a list returns; parses objects only when selectors need them.
    async fn collect(&self, rt: &ResourceType, namespace: Option<&str>, params: &ListParams) -> ApiResult<ListPage> {
        self.check_field_selector(rt, &params.fields)?;
        let prefix = rt.namespace_prefix(namespace);
        let (mut revision, mut start_after) = (None, None);
        let mut inconsistent: Option<String> = None;
        if let Some(token) = params.continue_token.as_deref().filter(|t| !t.is_empty()) {
            let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<ContinueToken>(&b).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
                            .into(),
                    )
                })?;
            if params.resource_version.as_deref().is_some_and(|rv| !rv.is_empty() && rv != "0") {
                return Err(ApiError::BadRequest(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            // rv 0: the inconsistent continuation of an expired token, at the current revision.
            revision = (decoded.rv != 0).then_some(decoded.rv);
            inconsistent = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&ContinueToken { rv: 0, start: decoded.start.clone() }).unwrap_or_default(),
            ));
            start_after = Some(format!("{prefix}{}", decoded.start));
        } else if params.resource_version_match.as_deref() == Some("Exact") {
            let rv = params.resource_version.as_deref().unwrap_or_default();
            let rv = parse_rv(rv)?;
            if rv == 0 {
                return Err(ApiError::InvalidOptions {
                    message: "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
                    causes: vec![Cause::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    )],
                });
            }
            revision = Some(rv);
        } else if let Some(rv) = params.resource_version.as_deref().filter(|rv| !rv.is_empty() && *rv != "0") {
            let rv = parse_rv(rv)?;
            let current = self.store.current_revision();
            if rv > current {
                return Err(ApiError::TooLargeResourceVersion { requested: rv, current });
            }
        }
        let limit = params.limit.filter(|l| *l > 0);
        let filtered = !params.labels.is_empty() || !params.fields.is_empty();
        let expired = |e: StorageError| {
            match e {
            StorageError::Compacted { .. } if params.continue_token.is_some() => ApiError::Expired {
                message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into(),
                continue_token: inconsistent.clone(),
            },
            other => other.into(),
        }
        };
        let mut page = ListPage { kvs: Vec::new(), objects: None, metadata: Value::Null };
        let mut more = false;
        // How many items the next pages hold (known only when no selector filters the list).
        let mut remaining = None;
        let list_revision;
        if !filtered {
            let result = self
                .store
                .list(ListOptions { prefix: prefix.clone(), start_after, limit, revision })
                .await
                .map_err(expired)?;
            list_revision = result.revision;
            more = result.remaining > 0;
            remaining = Some(result.remaining);
            page.kvs = result.items;
        } else {
            let result = self
                .store
                .list(ListOptions { prefix: prefix.clone(), start_after, limit: None, revision })
                .await
                .map_err(expired)?;
            list_revision = result.revision;
            let mut objects = Vec::new();
            for kv in result.items {
                let object = self.decode(rt, &kv)?;
                if !self.matches(rt, params, &object) {
                    continue;
                }
                if limit.is_some_and(|l| objects.len() >= l) {
                    more = true;
                    break;
                }
                objects.push(object);
                page.kvs.push(kv);
            }
            page.objects = Some(objects);
        }
        let mut metadata = json!({"resourceVersion": list_revision.to_string()});
        if more && let Some(last) = page.kvs.last() {
            let token = ContinueToken { rv: list_revision, start: last.key[prefix.len()..].to_string() };
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&token).map_err(|e| ApiError::Internal(e.to_string()))?);
            metadata["continue"] = json!(encoded);
            if let Some(remaining) = remaining {
                metadata["remainingItemCount"] = json!(remaining);
            }
        } else if rt.is_custom() {
            // Unstructured lists always carry the field.
            metadata["continue"] = json!("");
        }
        page.metadata = metadata;
        Ok(page)
    }

    /// ServiceAccount admission: a pod runs as `default` unless it names an account, and when
    /// that account exists and the pod does not opt out, it gets the usual projected token
    /// volume (`kube-api-access-*`: token, `kube-root-ca.crt`, namespace) mounted in every
    /// container. Unlike upstream, a pod whose account does not exist yet is admitted without
    /// the volume instead of refused (a namespace's default account appears moments after it).
    async fn admit_service_account(&self, pod: &mut Value) -> ApiResult<()> {
        let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_string();
        let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        let account = spec
            .get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount"))
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .unwrap_or("default")
            .to_string();
        spec.insert("serviceAccountName".into(), json!(account));
        spec.insert("serviceAccount".into(), json!(account));
        if spec.get("automountServiceAccountToken") == Some(&json!(false)) {
            return Ok(());
        }
        const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
        let mounted = ["containers", "initContainers"].iter().any(|field| {
            spec.get(*field).and_then(Value::as_array).into_iter().flatten().any(|c| {
                c.get("volumeMounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|m| m.get("mountPath") == Some(&json!(MOUNT)))
            })
        });
        if mounted {
            return Ok(());
        }
        let accounts = self.catalog.snapshot().get("", "v1", "serviceaccounts").expect("built-in");
        let Some(kv) = self.store.get(&accounts.key(Some(&namespace), &account)).await? else { return Ok(()) };
        let sa = self.decode(&accounts, &kv)?;
        // The pod's own choice wins over its account's.
        if sa.get("automountServiceAccountToken") == Some(&json!(false))
            && spec.get("automountServiceAccountToken") != Some(&json!(true))
        {
            return Ok(());
        }
        let suffix: String = uuid::Uuid::new_v4().simple().to_string().chars().take(5).collect();
        let volume = format!("kube-api-access-{suffix}");
        let volumes = spec.entry("volumes").or_insert(json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}}));
        }
        for field in ["containers", "initContainers"] {
            for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                let mounts = container.as_object_mut().map(|c| c.entry("volumeMounts").or_insert(json!([])));
                if let Some(mounts) = mounts.and_then(Value::as_array_mut) {
                    mounts.push(json!({"name": volume, "mountPath": MOUNT, "readOnly": true}));
                }
            }
        }
        Ok(())
    }

    async fn check_namespace_accepts(&self, rt: &ResourceType, namespace: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let namespaces = self.catalog.snapshot().get("", "v1", "namespaces").expect("built-in");
        // As upstream's NamespaceLifecycle: the namespace as this server last saw it, read
        // live when it has not seen it.
        let ns = match self.store.get_recent(&namespaces.key(None, namespace)).await? {
            Some(kv) => self.decode(&namespaces, &kv)?,
            None => return Err(ApiError::not_found("", "namespaces", namespace)),
        };
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::Forbidden {
                message: format!(
                    "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    rt.plural, ""
                ),
                subject: Subject { group: rt.group.clone(), kind: rt.plural.clone(), name: String::new() },
                causes: vec![Cause {
                    reason: "NamespaceTerminating",
                    field: "metadata.namespace".into(),
                    message: format!("namespace {namespace} is being terminated"),
                }],
            });
        }
        Ok(())
    }

    fn check_type_meta(&self, rt: &ResourceType, object: &mut Value) -> ApiResult<()> {
        let Some(map) = object.as_object_mut() else {
            return Err(ApiError::BadRequest(format!(
                "the body of the request must be a JSON object describing a {}",
                rt.kind
            )));
        };
        let expected_version = rt.api_version();
        // A built-in kind decodes through its scheme: a body of another kind or version is
        // refused as upstream's decoder words it.
        let body_kind = map.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty());
        let body_version = map.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty());
        if !rt.is_custom()
            && (body_kind.is_some_and(|k| k != rt.kind) || body_version.is_some_and(|v| v != expected_version))
        {
            let kind = body_kind.unwrap_or(&rt.kind);
            let version = body_version.unwrap_or(&expected_version);
            return Err(ApiError::BadRequest(format!(
                "{kind} in version \"{version}\" cannot be handled as a {}: no kind \"{kind}\" is registered for version \"{version}\" in scheme \"pkg/runtime/scheme.go:110\"",
                rt.kind
            )));
        }
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), json!(expected_version));
            }
            Some(v) if v == expected_version => {}
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({other}) does not match the expected API version ({expected_version})"
                )));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), json!(rt.kind));
            }
            Some(k) if k == rt.kind => {}
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "the kind in the data ({other}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
        }
        match map.get("metadata") {
            None | Some(Value::Null) => {
                map.insert("metadata".into(), json!({}));
            }
            Some(Value::Object(_)) => {}
            Some(_) => return Err(ApiError::BadRequest("metadata must be an object".into())),
        }
        Ok(())
    }

    /// Drops fields the schema does not declare; `fieldValidation` decides whether that is an
    /// error (Strict), a warning (Warn, the default) or silent (Ignore).
    /// How lists and maps of `rt` merge for managedFields and server-side apply.
    fn list_rules<'a>(&self, rt: &'a ResourceType, shape: &'a Option<Arc<crate::openapi::Shape>>) -> ListRules<'a> {
        ListRules {
            builtin: !rt.is_custom(),
            schema: rt.custom.as_ref().and_then(|c| c.schema.as_ref()),
            shape: shape.as_deref(),
            map_members: false,
        }
    }

    fn check_unknown_fields(&self, rt: &ResourceType, object: &mut Value, options: &WriteOptions) -> ApiResult<()> {
        let snapshot = self.catalog.snapshot();
        let unknown = self.openapi.prune_unknown_fields(&snapshot, rt, object);
        // Objects written at another version are stored at the storage version: what its schema
        // does not know is dropped too (silently, as upstream's conversion does).
        if let Some(custom) = &rt.custom
            && custom.storage_version != rt.version
            && custom.conversion_webhook.is_none()
            && let Some(storage) = snapshot.get(&rt.group, &custom.storage_version, &rt.plural)
        {
            self.openapi.prune_unknown_fields(&snapshot, &storage, object);
        }
        if unknown.is_empty() && options.duplicate_fields.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .chain(options.duplicate_fields.iter().map(|f| format!("duplicate field {f:?}")))
            .collect();
        match options.field_validation {
            FieldValidation::Strict => Err(ApiError::BadRequest(if rt.is_custom() {
                format!("strict decoding error: {}", listed.join(", "))
            } else {
                format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    listed.join(", "),
                    kind = rt.kind,
                    version = rt.version
                )
            })),
            FieldValidation::Warn => {
                options.warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(listed);
                Ok(())
            }
            FieldValidation::Ignore => Ok(()),
        }
    }

    /// What mutating admission returned, decoded as upstream decodes a webhook's patched
    /// object: fields the schema does not know are dropped (silently), the rest defaulted (a
    /// webhook's container gets its defaults).
    fn after_mutation(&self, rt: &ResourceType, object: &mut Value) {
        let snapshot = self.catalog.snapshot();
        self.openapi.prune_unknown_fields(&snapshot, rt, object);
        strategy::default_object(rt, object);
    }

    fn validate(&self, rt: &ResourceType, object: &Value) -> ApiResult<()> {
        let mut causes = Vec::new();
        let rule =
            if rt.is_custom() { validation::dns1123_subdomain } else { validation::name_rule(&rt.group, &rt.kind) };
        validation::object_meta(object.get("metadata").unwrap_or(&Value::Null), rule, &mut causes);
        if rt.kind == "CustomResourceDefinition" {
            crate::crd::validate(object, &mut causes);
        }
        strategy::validate(rt, object, &mut causes);
        if let Some(custom) = &rt.custom
            && let Some(schema) = &custom.schema
        {
            crate::crd::validate_against_schema(object, schema, &mut causes);
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Invalid {
                group: rt.group.clone(),
                kind: rt.kind.clone(),
                name: meta_str(object, "name").unwrap_or_default().to_string(),
                causes,
            })
        }
    }

    /// Creates an object.
    pub async fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: Value,
        options: &WriteOptions,
    ) -> ApiResult<Value> {
        self.create_inner(rt, namespace, object, options, None).await
    }

    async fn create_inner(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions,
        managed_fields: Option<Value>,
    ) -> ApiResult<Value> {
        if rt.custom.as_ref().is_some_and(|c| c.terminating) {
            return Err(ApiError::NotAllowedNow(
                "create not allowed while custom resource definition is terminating".into(),
            ));
        }
        check_go_types(rt, &object, options)?;
        crate::go_decode::drop_nulls(rt, &mut object);
        self.check_type_meta(rt, &mut object)?;
        let meta = object["metadata"].as_object_mut().expect("checked");
        if rt.namespaced {
            let ns = namespace.unwrap_or("default");
            match meta.get("namespace").and_then(Value::as_str) {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
                }
                _ => {
                    meta.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta.get("resourceVersion").and_then(Value::as_str).is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::BadRequest("resourceVersion should not be set on objects to be created".into()));
        }
        let generate_name = meta.get("generateName").and_then(Value::as_str).map(String::from);
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() && generate_name.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::Invalid {
                group: rt.group.clone(),
                kind: rt.kind.clone(),
                name: String::new(),
                causes: vec![Cause::required("metadata.name", "name or generateName is required")],
            });
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now()));
        for field in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            meta.remove(field);
        }
        if rt.generation || rt.is_custom() {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        // Status is the controllers' to write: a create starts without one (nodes excepted,
        // whose kubelet registers them with their status), as upstream PrepareForCreate does.
        if rt.has_status && !(rt.group.is_empty() && rt.kind == "Node") {
            object.as_object_mut().expect("map").remove("status");
        }
        self.check_unknown_fields(rt, &mut object, options)?;
        strategy::default_object(rt, &mut object);
        if rt.kind == "Pod" && rt.group.is_empty() {
            self.admit_service_account(&mut object).await?;
        }
        if let Some(admission) = &options.admission.0 {
            admission.mutate(rt, None, &mut object).await?;
            self.after_mutation(rt, &mut object);
        }
        if rt.kind == "CustomResourceDefinition" {
            crate::crd::prepare(&mut object);
        }
        if let Some(custom) = &rt.custom
            && let Some(schema) = &custom.schema
        {
            crate::crd::apply_defaults(&mut object, schema);
        }
        let manager = options.field_manager.clone();
        let shape = self.openapi.shape_for(&self.catalog.snapshot(), rt);
        match managed_fields {
            Some(managed) => object["metadata"]["managedFields"] = managed,
            None => {
                fields::record_update(None, &mut object, &manager, &rt.api_version(), "", self.list_rules(rt, &shape))
            }
        }
        let ns = namespace.unwrap_or("default");
        for attempt in 0..8 {
            let mut candidate = object.clone();
            if name.is_empty() {
                let prefix = generate_name.as_deref().unwrap_or_default();
                let prefix: String = prefix.chars().take(58).collect();
                candidate["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
            }
            self.validate(rt, &candidate)?;
            if let Some(admission) = &options.admission.0 {
                admission.admit(rt, None, &candidate).await?;
            }
            if attempt == 0 {
                self.check_namespace_accepts(rt, ns).await?;
            }
            let candidate_name = meta_str(&candidate, "name").unwrap_or_default().to_string();
            let key = rt.key(rt.namespaced.then_some(ns), &candidate_name);
            let already_exists = || ApiError::AlreadyExists {
                group: rt.group.clone(),
                resource: rt.plural.clone(),
                name: candidate_name.clone(),
            };
            // Nothing is allocated (here or on a host) for an object that cannot be stored: a
            // create of an existing name must change nothing anywhere.
            let is_service = rt.kind == "Service" && rt.group.is_empty();
            if (options.dry_run || is_service) && self.store.get(&key).await?.is_some() {
                if !name.is_empty() || attempt == 7 {
                    return Err(already_exists());
                }
                continue;
            }
            let mut allocated = None;
            if is_service {
                match &self.service_addresses {
                    Some(hook) if !options.dry_run => {
                        let allocation = hook.allocate(candidate).await?;
                        candidate = allocation.service.clone();
                        allocated = Some(allocation);
                    }
                    _ => self.allocate_service_addresses(&mut candidate).await?,
                }
            }
            if options.dry_run {
                return Ok(candidate);
            }
            let created = self.store.create(&key, self.encode(rt, &*self.to_storage(rt, &candidate).await?)?).await;
            if created.is_err()
                && let Some(allocation) = allocated
                && allocation.release.is_some()
                && let Some(hook) = &self.service_addresses
            {
                hook.release(allocation).await;
            }
            match created {
                Ok(kv) => {
                    let mut stored = self.read_back(rt, candidate, &kv)?;
                    self.to_served(rt, std::slice::from_mut(&mut stored)).await?;
                    self.after_write(rt, &stored).await;
                    return Ok(stored);
                }
                Err(StorageError::AlreadyExists { .. }) if name.is_empty() && attempt < 7 => {
                    continue;
                }
                Err(StorageError::AlreadyExists { .. }) => return Err(already_exists()),
                Err(other) => return Err(other.into()),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// Node ports for the ports of a NodePort or LoadBalancer service that have none.
    async fn allocate_node_ports(&self, service: &mut Value) -> ApiResult<()> {
        let service_type = service.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
        let missing = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .is_some_and(|ports| ports.iter().any(|p| p.get("nodePort").is_none()));
        if !matches!(service_type, "NodePort" | "LoadBalancer") || !missing {
            return Ok(());
        }
        let services = self.catalog.snapshot().get("", "v1", "services").expect("built-in");
        let existing = self.store.list(ListOptions { prefix: services.key_prefix(), ..Default::default() }).await?;
        let mut used_ports = std::collections::HashSet::new();
        for kv in &existing.items {
            let Some(other) = ServiceAllocations::read(&kv.value) else { continue };
            used_ports.extend(other.ports.into_iter().flatten().filter_map(|p| p.node_port));
        }
        for port in service.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(p) = port.get("nodePort").and_then(Value::as_i64) {
                used_ports.insert(p);
            }
        }
        let mut rng = rand::rng();
        for port in service.pointer_mut("/spec/ports").and_then(Value::as_array_mut).into_iter().flatten() {
            if port.get("nodePort").is_none() {
                let node_port = loop {
                    let candidate = rng.random_range(30000..=32767);
                    if used_ports.insert(candidate) {
                        break candidate;
                    }
                };
                port["nodePort"] = json!(node_port);
            }
        }
        Ok(())
    }

    async fn allocate_service_addresses(&self, service: &mut Value) -> ApiResult<()> {
        let service_type = service.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        if service_type == "ExternalName" {
            return Ok(());
        }
        let services = self.catalog.snapshot().get("", "v1", "services").expect("built-in");
        let existing = self.store.list(ListOptions { prefix: services.key_prefix(), ..Default::default() }).await?;
        let mut used_ips = std::collections::HashSet::new();
        for kv in &existing.items {
            if let Some(ip) = ServiceAllocations::read(&kv.value).and_then(|other| other.cluster_ip) {
                used_ips.insert(ip);
            }
        }
        let spec = strategy::ensure_object(service, "spec");
        let requested = spec.get("clusterIP").and_then(Value::as_str).unwrap_or_default().to_string();
        let ip = if requested.is_empty() {
            let mut rng = rand::rng();
            loop {
                // 10.96.0.0/12, skipping the network address and .1 (the kubernetes service).
                let offset: u32 = rng.random_range(2..(1 << 20) - 1);
                let ip =
                    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) + offset).to_string();
                if !used_ips.contains(&ip) {
                    break ip;
                }
            }
        } else if requested != "None" && used_ips.contains(&requested) {
            return Err(ApiError::Invalid {
                group: String::new(),
                kind: "Service".into(),
                name: meta_str(service, "name").unwrap_or_default().to_string(),
                causes: vec![Cause::invalid_strings(
                    "spec.clusterIPs",
                    &[&requested],
                    &format!("failed to allocate IP {requested}: provided IP is already allocated"),
                )],
            });
        } else {
            requested
        };
        let spec = strategy::ensure_object(service, "spec");
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        self.allocate_node_ports(service).await
    }

    /// Replaces an object (PUT), on the main resource or the `status` subresource.
    pub async fn update(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        subresource: &str,
        options: &WriteOptions,
    ) -> ApiResult<Value> {
        self.update_inner(rt, namespace, name, body, subresource, options).await.map(|(object, _)| object)
    }

    /// A PUT of the main resource: updates, or creates where the kind allows create-on-update;
    /// says whether it created.
    pub async fn update_or_create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        options: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        self.update_inner(rt, namespace, name, body, "", options).await
    }

    async fn update_inner(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut body: Value,
        subresource: &str,
        options: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        self.check_type_meta(rt, &mut body)?;
        if let Some(body_name) = meta_str(&body, "name").filter(|n| !n.is_empty())
            && body_name != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let (current, revision) = match self.get_with_revision(rt, namespace, name).await {
            // Kinds whose strategies allow create-on-update (a PUT of a missing object creates it).
            Err(ApiError::NotFound { .. })
                if subresource.is_empty()
                    && meta_str(&body, "resourceVersion").is_none_or(str::is_empty)
                    && matches!(
                        (rt.group.as_str(), rt.kind.as_str()),
                        ("", "Endpoints" | "LimitRange" | "Service")
                            | ("coordination.k8s.io", "Lease")
                            | ("rbac.authorization.k8s.io", _)
                    ) =>
            {
                return self.create(rt, namespace, body, options).await.map(|created| (created, true));
            }
            other => other?,
        };
        match meta_str(&body, "resourceVersion").filter(|rv| !rv.is_empty()) {
            Some(rv) if rv != revision.to_string() => {
                return Err(ApiError::stale(&rt.group, &rt.plural, name));
            }
            Some(_) => {}
            None if rt.is_custom() => {
                // Upstream names the resource (plural) as the kind here, and prints the missing
                // version as the number 0x0.
                return Err(ApiError::Invalid {
                    group: rt.group.clone(),
                    kind: rt.plural.clone(),
                    name: name.to_string(),
                    causes: vec![Cause {
                        reason: "FieldValueInvalid",
                        field: "metadata.resourceVersion".into(),
                        message: "Invalid value: 0x0: must be specified for an update".into(),
                    }],
                });
            }
            None => {}
        }
        self.write_update(rt, namespace, name, current, revision, body, subresource, options, true)
            .await
            .map(|updated| (updated, false))
    }

    /// Patches an object; server-side apply creates it when missing (`.1` is true then).
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        patch_body: &Value,
        subresource: &str,
        options: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        if patch_type == PatchType::Strategic && !rt.accepts_strategic_merge() {
            return Err(ApiError::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
            ));
        }
        let shape = self.openapi.shape_for(&self.catalog.snapshot(), rt);
        let rules = self.list_rules(rt, &shape);
        for _attempt in 0..5 {
            let existing = self.get_with_revision(rt, namespace, name).await;
            let (current, revision) = match existing {
                Ok(found) => found,
                Err(ApiError::NotFound { .. })
                    if matches!(patch_type, PatchType::Apply { .. }) && subresource.is_empty() =>
                {
                    let mut applied = patch_body.clone();
                    self.check_apply_body(rt, name, &mut applied)?;
                    let mut object = fields::apply(
                        None,
                        &applied,
                        &options.field_manager,
                        true,
                        &rt.api_version(),
                        "",
                        rules,
                        Subject::default(),
                    )?;
                    object["metadata"]["name"] = json!(name);
                    // The Apply entry replaces the Update entry a create would record.
                    let managed = object.pointer("/metadata/managedFields").cloned();
                    match self.create_inner(rt, namespace, object, options, managed).await {
                        Err(ApiError::AlreadyExists { .. }) => continue,
                        other => return other.map(|o| (o, true)),
                    }
                }
                Err(e) => return Err(e),
            };
            let mut patched = current.clone();
            match patch_type {
                PatchType::Json => patch::json_patch(&mut patched, patch_body)?,
                PatchType::Merge => patch::merge_patch(&mut patched, patch_body)?,
                PatchType::Strategic => patch::strategic_merge_patch(&mut patched, patch_body)?,
                PatchType::Apply { .. } => {}
            }
            // As upstream turns a patched object into its Go type: a JSON or merge patch's
            // result is decoded from JSON (422 quoting the patched object), a strategic one's is
            // converted from its map (422 quoting the patch, as Go prints it).
            let refused = match patch_type {
                PatchType::Json | PatchType::Merge => crate::go_decode::refusal(rt, &patched, None).map(|problem| {
                    (String::from_utf8_lossy(&crate::wire::to_vec_compact(&patched)).into_owned(), problem)
                }),
                PatchType::Strategic => crate::go_decode::conversion_refusal(rt, &patched)
                    .map(|problem| (crate::go_decode::go_print(patch_body), problem)),
                PatchType::Apply { .. } => None,
            };
            if let Some((text, problem)) = refused {
                return Err(ApiError::Invalid {
                    group: String::new(),
                    kind: String::new(),
                    name: String::new(),
                    causes: vec![Cause::invalid("patch", &text, &problem)],
                });
            }
            match patch_type {
                PatchType::Json | PatchType::Merge | PatchType::Strategic => {}
                PatchType::Apply { force } => {
                    let mut applied = patch_body.clone();
                    self.check_apply_body(rt, name, &mut applied)?;
                    patched = fields::apply(
                        Some(&current),
                        &applied,
                        &options.field_manager,
                        force,
                        &rt.api_version(),
                        subresource,
                        rules,
                        Subject::default(),
                    )?;
                }
            }
            let explicit_rv = meta_str(&patched, "resourceVersion").map(String::from);
            if let Some(rv) = explicit_rv.as_deref()
                && !rv.is_empty()
                && rv != revision.to_string()
            {
                return Err(ApiError::stale(&rt.group, &rt.plural, name));
            }
            let record = !matches!(patch_type, PatchType::Apply { .. });
            match self.write_update(rt, namespace, name, current, revision, patched, subresource, options, record).await
            {
                Err(ApiError::Conflict { .. }) if !patch_body_sets_rv(patch_body) => continue,
                other => return other.map(|o| (o, false)),
            }
        }
        Err(ApiError::stale(&rt.group, &rt.plural, name))
    }

    fn check_apply_body(&self, rt: &ResourceType, name: &str, applied: &mut Value) -> ApiResult<()> {
        if !applied.is_object() {
            return Err(ApiError::BadRequest("an apply patch must be an object".into()));
        }
        if applied.get("apiVersion").and_then(Value::as_str).is_none()
            || applied.get("kind").and_then(Value::as_str).is_none()
        {
            return Err(ApiError::BadRequest("apiVersion and kind must be set in an apply patch".into()));
        }
        self.check_type_meta(rt, applied)?;
        if let Some(body_name) = meta_str(applied, "name").filter(|n| !n.is_empty())
            && body_name != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        // An apply patch must fit the schema whatever `fieldValidation` says: upstream cannot
        // build the typed patch and answers 500 with the fields it does not know.
        let mut probe = applied.clone();
        let unknown = self.openapi.prune_unknown_fields(&self.catalog.snapshot(), rt, &mut probe);
        if !unknown.is_empty() {
            let lines: Vec<String> = unknown
                .iter()
                .map(|path| format!("{}: field not declared in schema", typed_path(applied, path)))
                .collect();
            let detail = match lines.as_slice() {
                [one] => one.clone(),
                many => format!("errors:\n  {}", many.join("\n  ")),
            };
            let namespace = meta_str(applied, "namespace").unwrap_or_default();
            return Err(ApiError::Unclassified(format!(
                "failed to create typed patch object ({namespace}/{name}; {}, Kind={}): {detail}",
                if rt.group.is_empty() { format!("/{}", rt.version) } else { rt.api_version() },
                rt.kind
            )));
        }
        Ok(())
    }

    /// The shared tail of PUT and PATCH: server-owned fields, status rules, validation,
    /// generation, managedFields, finalizer-driven deletion and the compare-and-swap write.
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        current: Value,
        revision: u64,
        mut new: Value,
        subresource: &str,
        options: &WriteOptions,
        record: bool,
    ) -> ApiResult<Value> {
        // Decoding into the typed object fails before anything else is looked at.
        check_go_types(rt, &new, options)?;
        crate::go_decode::drop_nulls(rt, &mut new);
        self.check_type_meta(rt, &mut new)?;
        if subresource == "status" {
            let mut merged = current.clone();
            match new.get("status") {
                Some(status) => merged["status"] = status.clone(),
                None => {
                    merged.as_object_mut().expect("map").remove("status");
                }
            }
            // Most built-in kinds take metadata changes through `status` too (labels,
            // annotations ...); pods, policies, volume attachments and custom resources do not
            // (upstream's ResetObjectMetaForStatus and custom resources' status strategy).
            let keeps_metadata = !rt.is_custom()
                && !matches!(
                    (rt.group.as_str(), rt.kind.as_str()),
                    ("", "Pod")
                        | ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy")
                        | ("storage.k8s.io", "VolumeAttachment")
                );
            match new.get("metadata").filter(|_| keeps_metadata) {
                Some(metadata) if metadata.is_object() => merged["metadata"] = metadata.clone(),
                _ => {
                    if let Some(managed) = new.pointer("/metadata/managedFields") {
                        merged["metadata"]["managedFields"] = managed.clone();
                    }
                }
            }
            new = merged;
        } else if let Some(merged) = strategy::subresource_write(rt, subresource, &current, &new)? {
            new = merged;
        } else if rt.has_status {
            match current.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().expect("map").remove("status");
                }
            }
        }
        {
            let meta = new["metadata"].as_object_mut().expect("checked");
            meta.insert("name".into(), json!(name));
            if rt.namespaced {
                meta.insert("namespace".into(), json!(namespace.unwrap_or("default")));
            } else {
                meta.remove("namespace");
            }
            for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                match current["metadata"].get(field) {
                    Some(v) => {
                        meta.insert(field.into(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
            meta.remove("resourceVersion");
        }
        let deleting = current.pointer("/metadata/deletionTimestamp").is_some();
        if deleting {
            let before = finalizers_of(&current);
            if finalizers_of(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::Invalid {
                    group: rt.group.clone(),
                    kind: rt.kind.clone(),
                    name: name.to_string(),
                    causes: vec![Cause::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                });
            }
        }
        self.check_unknown_fields(rt, &mut new, options)?;
        strategy::default_object(rt, &mut new);
        if let Some(admission) = &options.admission.0 {
            admission.mutate(rt, Some(&current), &mut new).await?;
            self.after_mutation(rt, &mut new);
        }
        if rt.kind == "CustomResourceDefinition" {
            crate::crd::prepare(&mut new);
        }
        if let Some(custom) = &rt.custom
            && let Some(schema) = &custom.schema
        {
            crate::crd::apply_defaults(&mut new, schema);
        }
        strategy::backfill_update(rt, &current, &mut new);
        self.validate(rt, &new)?;
        let mut causes = Vec::new();
        strategy::validate_update(rt, &current, &new, &mut causes);
        if !causes.is_empty() {
            return Err(ApiError::Invalid {
                group: rt.group.clone(),
                kind: rt.kind.clone(),
                name: name.to_string(),
                causes,
            });
        }
        if let Some(admission) = &options.admission.0 {
            admission.admit(rt, Some(&current), &new).await?;
        }
        // A binding assigns a node without counting as a spec change (upstream's `assignPod`
        // writes past the strategy that bumps generations).
        if (rt.generation || rt.is_custom()) && subresource != "binding" && spec_changed(rt, &current, &new) {
            let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        if rt.kind == "Service" && rt.group.is_empty() {
            // clusterIP is immutable once allocated.
            for field in ["clusterIP", "clusterIPs"] {
                if let Some(v) = current.pointer(&format!("/spec/{field}")) {
                    strategy::ensure_object(&mut new, "spec").insert(field.into(), v.clone());
                }
            }
            // A service made NodePort or LoadBalancer gets its node ports now, as upstream
            // allocates them on update (a virtual cluster's come from its host, through the syncer).
            if self.service_addresses.is_none() && subresource.is_empty() && !options.dry_run {
                self.allocate_node_ports(&mut new).await?;
            }
        }
        if record {
            let mut current_for_fields = current.clone();
            if let Some(meta) = current_for_fields.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            let shape = self.openapi.shape_for(&self.catalog.snapshot(), rt);
            fields::record_update(
                Some(&current_for_fields),
                &mut new,
                &options.field_manager,
                &rt.api_version(),
                subresource,
                self.list_rules(rt, &shape),
            );
        }
        let mut comparable = current.clone();
        comparable["metadata"].as_object_mut().expect("map").remove("resourceVersion");
        let finish_deletion = deleting && finalizers_of(&new).is_empty() && !namespace_still_finalizing(rt, &new);
        if comparable == new && !finish_deletion {
            return Ok(current);
        }
        let key = rt.key(namespace, name);
        if options.dry_run {
            new["metadata"]["resourceVersion"] = json!(revision.to_string());
            return Ok(new);
        }
        if finish_deletion {
            // Graceful pods wait for their kubelet's grace-0 delete; everything else goes now.
            let graceful_pod_pending = rt.kind == "Pod"
                && rt.group.is_empty()
                && new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0;
            if !graceful_pod_pending {
                let kv = match self.store.delete(&key, Some(revision)).await {
                    Ok(kv) => kv,
                    Err(StorageError::Conflict { .. }) => {
                        return Err(ApiError::stale(&rt.group, &rt.plural, name));
                    }
                    Err(StorageError::NotFound { .. }) => {
                        return Err(ApiError::not_found(&rt.group, &rt.plural, name));
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut gone = new.clone();
                gone["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                self.after_delete(rt, &gone).await;
                return Ok(gone);
            }
        }
        match self.store.update(&key, self.encode(rt, &*self.to_storage(rt, &new).await?)?, revision).await {
            Ok(kv) => {
                let mut stored = self.read_back(rt, new, &kv)?;
                self.to_served(rt, std::slice::from_mut(&mut stored)).await?;
                self.after_write(rt, &stored).await;
                Ok(stored)
            }
            Err(StorageError::Conflict { .. }) => Err(ApiError::stale(&rt.group, &rt.plural, name)),
            Err(StorageError::NotFound { .. }) => Err(ApiError::not_found(&rt.group, &rt.plural, name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object, honouring preconditions, finalizers, propagation and grace periods.
    pub async fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        crate::admission::priority::check_delete(rt, name)?;
        for _attempt in 0..5 {
            let (current, revision) = self.get_with_revision(rt, namespace, name).await?;
            if let Some(uid) = &options.uid
                && meta_str(&current, "uid") != Some(uid.as_str())
            {
                return Err(ApiError::Conflict {
                    message: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&current, "uid").unwrap_or_default()
                    ),
                    subject: subject(rt, name),
                    causes: Vec::new(),
                });
            }
            if let Some(rv) = &options.resource_version
                && *rv != revision.to_string()
            {
                return Err(ApiError::Conflict {
                    message: format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
                    ),
                    subject: subject(rt, name),
                    causes: Vec::new(),
                });
            }
            if let Some(admission) = &options.admission.0 {
                admission.admit_delete(rt, &current).await?;
            }
            let mut updated = current.clone();
            updated["metadata"].as_object_mut().expect("map").remove("resourceVersion");
            let already_deleting = current.pointer("/metadata/deletionTimestamp").is_some();
            let mut finalizers = finalizers_of(&current);
            // Without a policy, jobs and replication controllers orphan their pods (their
            // strategies' DefaultGarbageCollectionPolicy); everything else goes in the background.
            let propagation = options.propagation.as_deref().or(match (rt.group.as_str(), rt.kind.as_str()) {
                ("batch", "Job") | ("", "ReplicationController") => Some("Orphan"),
                _ => None,
            });
            match propagation {
                Some("Foreground") if !already_deleting && !finalizers.contains(&"foregroundDeletion".to_string()) => {
                    finalizers.push("foregroundDeletion".into());
                }
                Some("Orphan") if !already_deleting && !finalizers.contains(&"orphan".to_string()) => {
                    finalizers.push("orphan".into());
                }
                _ => {}
            }
            let is_pod = rt.kind == "Pod" && rt.group.is_empty();
            let is_namespace = rt.kind == "Namespace" && rt.group.is_empty();
            // A CRD goes only after its instances (upstream's `customresourcecleanup` finalizer).
            let is_definition = rt.kind == "CustomResourceDefinition" && rt.group == "apiextensions.k8s.io";
            if is_definition && !already_deleting && !finalizers.iter().any(|f| f == crate::crd::CLEANUP_FINALIZER) {
                finalizers.push(crate::crd::CLEANUP_FINALIZER.into());
            }
            let graceful = is_pod && {
                let bound = current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
                let phase = current.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
                let terminal = matches!(phase, "Succeeded" | "Failed");
                let grace = options.grace_period.unwrap_or_else(|| {
                    current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)
                });
                bound && !terminal && grace > 0
            };
            let keep = !finalizers.is_empty() || graceful || is_namespace && namespace_has_spec_finalizers(&current);
            if keep {
                let meta = updated["metadata"].as_object_mut().expect("map");
                if !finalizers.is_empty() {
                    meta.insert("finalizers".into(), json!(finalizers));
                }
                if graceful {
                    let grace = options.grace_period.unwrap_or_else(|| {
                        current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)
                    });
                    let previous = current.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
                    if previous.is_none_or(|p| grace < p) {
                        meta.insert("deletionTimestamp".into(), json!(timestamp_after(grace)));
                        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                } else if !already_deleting {
                    meta.insert("deletionTimestamp".into(), json!(now()));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                if is_namespace {
                    strategy::ensure_object(&mut updated, "status").insert("phase".into(), json!("Terminating"));
                }
                if is_definition && !already_deleting {
                    crate::crd::set_condition(
                        &mut updated,
                        "Terminating",
                        "InstanceDeletionPending",
                        "CustomResourceDefinition marked for deletion; cleanup will start soon",
                    );
                }
                if updated == {
                    let mut c = current.clone();
                    c["metadata"].as_object_mut().expect("map").remove("resourceVersion");
                    c
                } {
                    return Ok(Deleted::Pending(current));
                }
                if options.dry_run {
                    return Ok(Deleted::Pending(updated));
                }
                let to_store = self.to_storage(rt, &updated).await?;
                match self.store.update(&rt.key(namespace, name), self.encode(rt, &to_store)?, revision).await {
                    Ok(kv) => {
                        let mut stored = self.decode(rt, &kv)?;
                        self.to_served(rt, std::slice::from_mut(&mut stored)).await?;
                        if is_definition {
                            self.after_write(rt, &stored).await;
                        }
                        if let Some(sender) = &self.cleanup {
                            if is_namespace {
                                let _ = sender.send(Cleanup::Namespace(name.to_string()));
                            } else if is_definition {
                                let _ = sender.send(Cleanup::Definition(name.to_string()));
                            }
                        }
                        return Ok(Deleted::Pending(stored));
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if options.dry_run {
                return Ok(Deleted::Gone(current));
            }
            match self.store.delete(&rt.key(namespace, name), Some(revision)).await {
                Ok(kv) => {
                    let mut gone = current;
                    gone["metadata"]["resourceVersion"] = json!(kv.mod_revision.to_string());
                    self.after_delete(rt, &gone).await;
                    return Ok(Deleted::Gone(gone));
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(StorageError::NotFound { .. }) => {
                    return Err(ApiError::not_found(&rt.group, &rt.plural, name));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::stale(&rt.group, &rt.plural, name))
    }

    /// Deletes every object matching the selectors; returns the list of what was deleted.
    pub async fn delete_collection(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
        options: &DeleteOptions,
    ) -> ApiResult<Value> {
        let mut list =
            self.list(rt, namespace, &ListParams { limit: None, continue_token: None, ..params.clone() }).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let mut deleted = Vec::new();
        for item in items {
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            let ns = item.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
            match self.delete(rt, ns.as_deref(), &name, options).await {
                Ok(Deleted::Gone(o) | Deleted::Pending(o)) => deleted.push(o),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !rt.is_custom() {
            for item in deleted.iter_mut().filter_map(Value::as_object_mut) {
                item.remove("kind");
                item.remove("apiVersion");
            }
        }
        list["items"] = Value::Array(deleted);
        Ok(list)
    }

    async fn after_write(&self, rt: &ResourceType, _object: &Value) {
        if rt.kind == "CustomResourceDefinition"
            && rt.group == "apiextensions.k8s.io"
            && let Err(error) = self.refresh_custom_types().await
        {
            tracing::error!(%error, "could not refresh custom resource types");
        }
    }

    async fn after_delete(&self, rt: &ResourceType, object: &Value) {
        if rt.kind == "CustomResourceDefinition" && rt.group == "apiextensions.k8s.io" {
            // Deleting a CRD deletes all of its instances.
            let snapshot = self.catalog.snapshot();
            let crd_name = meta_str(object, "name").unwrap_or_default();
            let prefixes: Vec<String> = snapshot
                .types
                .values()
                .filter(|t| t.custom.as_ref().is_some_and(|c| c.crd_name == crd_name))
                .map(|t| t.key_prefix())
                .collect();
            for prefix in prefixes {
                if let Ok(list) = self.store.list(ListOptions { prefix, ..Default::default() }).await {
                    for kv in list.items {
                        let _ = self.store.delete(&kv.key, None).await;
                    }
                }
            }
            if let Err(error) = self.refresh_custom_types().await {
                tracing::error!(%error, "could not refresh custom resource types");
            }
        }
    }

    /// Follows namespaces or CRDs in the store, as they are written through any API server on
    /// it (replicas on one etcd): definitions are served here too, and what another replica
    /// began deleting is finalized here as well (so it completes if that replica dies).
    async fn follow(self, rt: Arc<ResourceType>, mut revision: u64, cleanup: mpsc::UnboundedSender<Cleanup>) {
        let definitions = rt.kind == "CustomResourceDefinition";
        let prefix = rt.key_prefix();
        loop {
            let mut watcher = match self.store.watch(&prefix, revision) {
                Ok(watcher) => watcher,
                Err(StorageError::Closed) => return,
                Err(error) => {
                    tracing::warn!(%error, kind = %rt.kind, "following the store: cannot watch; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                match watcher.next_batch().await {
                    Ok(events) => {
                        for event in events.iter().filter(|e| e.kind == EventKind::Put) {
                            let Ok(object) = self.decode(&rt, &event.kv) else { continue };
                            if object.pointer("/metadata/deletionTimestamp").is_some() {
                                let name = meta_str(&object, "name").unwrap_or_default().to_string();
                                let _ = cleanup.send(if definitions {
                                    Cleanup::Definition(name)
                                } else {
                                    Cleanup::Namespace(name)
                                });
                            }
                        }
                        if definitions && let Err(error) = self.refresh_custom_types().await {
                            tracing::warn!(%error, "could not refresh custom resource types");
                        }
                    }
                    Err(StorageError::Closed) => return,
                    Err(error) => {
                        // Fell behind a compaction: read everything again, then follow from there.
                        tracing::warn!(%error, kind = %rt.kind, "following the store: watch ended; reloading");
                        revision = self.store.current_revision();
                        if definitions {
                            let _ = self.refresh_custom_types().await;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Re-reads every CRD and serves exactly the Established ones.
    pub async fn refresh_custom_types(&self) -> ApiResult<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let crds =
            self.catalog.snapshot().get("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("built-in");
        let list = self.store.list(ListOptions { prefix: crds.key_prefix(), ..Default::default() }).await?;
        let mut types = Vec::new();
        for kv in &list.items {
            let crd = self.decode(&crds, kv)?;
            types.extend(crate::crd::resource_types(&crd));
        }
        self.catalog.set_custom(types);
        if let Some(sender) = &self.cleanup {
            let _ = sender.send(Cleanup::ApiServices);
        }
        Ok(())
    }

    /// Keeps one `APIService` per served group/version, as kube-apiserver's aggregator lists
    /// them (`v1.`, `v1.apps`, ...; Available, reason Local): built-in ones labelled
    /// `automanaged: onstart`, those of CRD groups `automanaged: "true"` and removed with them.
    async fn register_local_api_services(&self) -> ApiResult<()> {
        const AUTOMANAGED: &str = "kube-aggregator.kubernetes.io/automanaged";
        let snapshot = self.catalog.snapshot();
        let Some(services) = snapshot.get("apiregistration.k8s.io", "v1", "apiservices") else { return Ok(()) };
        let mut wanted = std::collections::BTreeMap::new();
        for (i, group) in snapshot.group_order.iter().enumerate() {
            let versions: Vec<String> = snapshot.versions(group);
            let custom = snapshot.types.values().any(|t| &t.group == group && t.is_custom());
            for (rank, version) in versions.iter().enumerate() {
                let name = format!("{version}.{group}");
                let (minimum, priority) = if custom { (1000, 100) } else { (18000 - 100 * i as i64, 15 - rank as i64) };
                let object = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                    "metadata": {"name": name, "labels": {AUTOMANAGED: if custom { "true" } else { "onstart" }}},
                    "spec": {"group": group, "version": version, "groupPriorityMinimum": minimum, "versionPriority": priority},
                    "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local",
                        "message": "Local APIServices are always available", "lastTransitionTime": now()}]}});
                wanted.insert(name, object);
            }
        }
        let existing = self.store.list(ListOptions { prefix: services.key_prefix(), ..Default::default() }).await?;
        for kv in &existing.items {
            let object = self.decode(&services, kv)?;
            let name = meta_str(&object, "name").unwrap_or_default().to_string();
            let managed = object.pointer(&format!("/metadata/labels/{}", AUTOMANAGED.replace('/', "~1"))).is_some();
            if wanted.remove(&name).is_none() && managed {
                let _ = self.store.delete(&kv.key, Some(kv.mod_revision)).await;
            }
        }
        let options = WriteOptions { field_manager: "kube-apiserver".into(), ..Default::default() };
        for (name, object) in wanted {
            match self.create(&services, None, object.clone(), &options).await {
                Ok(mut created) => {
                    created["status"] = object["status"].clone();
                    self.update(&services, None, &name, created, "status", &options).await?;
                }
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Deletes every object of `rt` under `prefix` (each through the normal delete, so watchers
    /// see each go and finalizers hold); returns how many are still there.
    async fn delete_all(&self, rt: &ResourceType, prefix: String) -> ApiResult<usize> {
        let mut remaining = 0;
        for kv in self.store.list(ListOptions { prefix, ..Default::default() }).await?.items {
            remaining += 1;
            let object = self.decode(rt, &kv)?;
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let name = meta_str(&object, "name").unwrap_or_default().to_string();
            let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
            let options = DeleteOptions { propagation: Some("Background".into()), ..Default::default() };
            match self.delete(rt, namespace.as_deref(), &name, &options).await {
                Ok(Deleted::Gone(_)) => remaining -= 1,
                Ok(Deleted::Pending(_)) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(remaining)
    }

    /// One round of CRD finalization: deletes the definition's objects (each through the normal
    /// delete, so watchers see every one go and their own finalizers hold); once none is left,
    /// removes the cleanup finalizer (and so the definition). True when done.
    async fn finalize_definition(&self, name: &str) -> ApiResult<bool> {
        let snapshot = self.catalog.snapshot();
        let crds = snapshot.get("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("built-in");
        let (crd, _) = match self.get_with_revision(&crds, None, name).await {
            Ok(found) => found,
            Err(ApiError::NotFound { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        if crd.pointer("/metadata/deletionTimestamp").is_none() {
            return Ok(true);
        }
        let mut remaining = 0;
        let mut seen_prefixes = std::collections::HashSet::new();
        let instances: Vec<&Arc<ResourceType>> = snapshot
            .types
            .values()
            .filter(|t| t.custom.as_ref().is_some_and(|c| c.crd_name == name))
            .filter(|t| seen_prefixes.insert(t.key_prefix()))
            .collect();
        for rt in instances {
            remaining += self.delete_all(rt, rt.key_prefix()).await?;
        }
        if remaining > 0 {
            return Ok(false);
        }
        for _attempt in 0..5 {
            let (current, revision) = match self.get_with_revision(&crds, None, name).await {
                Ok(found) => found,
                Err(ApiError::NotFound { .. }) => return Ok(true),
                Err(e) => return Err(e),
            };
            let mut finalized = current.clone();
            let rest: Vec<String> =
                finalizers_of(&current).into_iter().filter(|f| f != crate::crd::CLEANUP_FINALIZER).collect();
            finalized["metadata"]["finalizers"] = json!(rest);
            let options = WriteOptions { field_manager: "apiextensions-apiserver".into(), ..Default::default() };
            match self.write_update(&crds, None, name, current, revision, finalized, "", &options, false).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => return Ok(true),
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// One round of namespace finalization: deletes what is left in the namespace; once
    /// nothing is left, removes the `kubernetes` finalizer (and so the namespace). True when done.
    async fn finalize_namespace(&self, namespace: &str) -> ApiResult<bool> {
        let snapshot = self.catalog.snapshot();
        let namespaces = snapshot.get("", "v1", "namespaces").expect("built-in");
        let ns = match self.get_with_revision(&namespaces, None, namespace).await {
            Ok((ns, _)) => ns,
            Err(ApiError::NotFound { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            return Ok(true);
        }
        let mut remaining = 0;
        let mut seen_prefixes = std::collections::HashSet::new();
        for rt in snapshot.types.values() {
            if !rt.namespaced || rt.review || !seen_prefixes.insert(rt.key_prefix()) {
                continue;
            }
            remaining += self.delete_all(rt, rt.namespace_prefix(Some(namespace))).await?;
        }
        if remaining > 0 {
            return Ok(false);
        }
        let (current, revision) = match self.get_with_revision(&namespaces, None, namespace).await {
            Ok(found) => found,
            Err(ApiError::NotFound { .. }) => return Ok(true),
            Err(e) => return Err(e),
        };
        let mut finalized = current.clone();
        if let Some(spec) = finalized.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("finalizers".into(), json!([]));
        }
        let options = WriteOptions { field_manager: "namespace-controller".into(), ..Default::default() };
        self.write_update(&namespaces, None, namespace, current, revision, finalized, "finalize", &options, false)
            .await?;
        Ok(true)
    }

    /// Starts a watch; events arrive on the returned channel until the timeout or an error.
    pub async fn watch(
        &self,
        rt: Arc<ResourceType>,
        namespace: Option<String>,
        params: ListParams,
    ) -> ApiResult<mpsc::Receiver<WatchItem>> {
        self.check_field_selector(&rt, &params.fields)?;
        if params.send_initial_events == Some(true) && params.resource_version_match.as_deref() != Some("NotOlderThan")
        {
            return Err(ApiError::InvalidOptions {
                message: "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
                causes: vec![Cause::forbidden("resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")],
            });
        }
        let prefix = rt.namespace_prefix(namespace.as_deref());
        let rv = params.resource_version.clone().unwrap_or_default();
        let initial = params.send_initial_events.unwrap_or(rv.is_empty() || rv == "0");
        let (sender, receiver) = mpsc::channel(256);
        let mut initial_events = Vec::new();
        let start = if initial {
            let list = self.store.list(ListOptions { prefix: prefix.clone(), ..Default::default() }).await?;
            let mut objects = Vec::new();
            for kv in &list.items {
                let object = self.decode(&rt, kv)?;
                if self.matches(&rt, &params, &object) {
                    objects.push(object);
                }
            }
            self.to_served(&rt, &mut objects).await?;
            initial_events.extend(objects.into_iter().map(|o| WatchItem::Object("ADDED", o)));
            list.revision
        } else {
            // Upstream's watch answers a malformed version with an unclassified 500.
            rv.parse().map_err(|_| ApiError::Unclassified(rv_parse_error(&rv)))?
        };
        let watcher = match self.store.watch(&prefix, start) {
            Ok(w) => Some(w),
            Err(StorageError::Compacted { requested, compacted }) => {
                let error = ApiError::Expired {
                    message: format!("too old resource version: {requested} ({compacted})"),
                    continue_token: None,
                };
                let _ = sender.try_send(WatchItem::Error(error.status()));
                None
            }
            Err(e) => return Err(e.into()),
        };
        let Some(mut watcher) = watcher else {
            return Ok(receiver);
        };
        let registry = self.clone();
        let timeout = params.timeout.unwrap_or_else(|| Duration::from_secs(1800 + rand::rng().random_range(0..1800)));
        tokio::spawn(async move {
            for item in initial_events {
                if sender.send(item).await.is_err() {
                    return;
                }
            }
            if params.send_initial_events == Some(true) && sender.send(WatchItem::Bookmark(start, true)).await.is_err()
            {
                return;
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut bookmarks = tokio::time::interval_at(
                tokio::time::Instant::now() + registry.bookmark_interval,
                registry.bookmark_interval,
            );
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        if params.bookmarks {
                            let _ = sender.send(WatchItem::Bookmark(watcher.revision(), false)).await;
                        }
                        return;
                    }
                    _ = bookmarks.tick(), if params.bookmarks => {
                        if sender.send(WatchItem::Bookmark(watcher.revision(), false)).await.is_err() {
                            return;
                        }
                    }
                    _ = sender.closed() => return,
                    batch = watcher.next_batch() => {
                        let batch = match batch {
                            Ok(batch) => batch,
                            Err(StorageError::Compacted { requested, compacted }) => {
                                let error = ApiError::Expired {
                        message: format!("too old resource version: {requested} ({compacted})"),
                        continue_token: None,
                    };
                                let _ = sender.send(WatchItem::Error(error.status())).await;
                                return;
                            }
                            Err(_) => return,
                        };
                        for event in batch {
                            let Some(mut item) = registry.watch_item(&rt, &params, &event) else { continue };
                            if let WatchItem::Object(_, object) = &mut item
                                && let Err(error) = registry.to_served(&rt, std::slice::from_mut(object)).await
                            {
                                // As upstream: the watch ends with the error.
                                let _ = sender.send(WatchItem::Error(error.status())).await;
                                return;
                            }
                            if sender.send(item).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(receiver)
    }

    /// When objects of `rt` stored under its served version can be sent as stored (nothing is
    /// converted, defaulted or re-labelled on reading them): the start such stored bytes have,
    /// `{"kind":K,"apiVersion":V,` (bytes stored under another version do not have it).
    fn served_as_stored(rt: &ResourceType) -> Option<String> {
        let custom = rt.custom.as_ref();
        let changed_on_read = rt.group == "events.k8s.io"
            || custom.is_some_and(|c| c.conversion_webhook.is_some())
            || custom.and_then(|c| c.schema.as_ref()).is_some_and(crate::crd::has_defaults);
        (!changed_on_read).then(|| format!("{{\"kind\":{},\"apiVersion\":{},", json!(rt.kind), json!(rt.api_version())))
    }

    /// `kv` as [`Registry::decode`] would serialize it, straight from the stored bytes (their
    /// resourceVersion spliced in), when it is stored as `rt` serves it and nothing is changed on
    /// reading it (no defaults, conversions or re-labelling); `None` otherwise.
    fn raw_object(&self, rt: &ResourceType, kv: &KeyValue) -> Option<Bytes> {
        let type_prefix = Self::served_as_stored(rt)?;
        let bytes = splice_resource_version(&kv.value, kv.mod_revision)?;
        // One line per event: stored bytes with any line break (none are written) are re-encoded.
        (bytes.starts_with(type_prefix.as_bytes()) && !bytes.contains(&b'\n')).then(|| Bytes::from(bytes))
    }

    fn watch_item(&self, rt: &ResourceType, params: &ListParams, event: &vkube_store::Event) -> Option<WatchItem> {
        if params.labels.is_empty() && params.fields.is_empty() {
            // Every object is in the watch's view: the event's type follows from whether the
            // key existed before, and the object goes out as stored when that is how it is served.
            let kind = match event.kind {
                EventKind::Put if event.prev.is_some() => "MODIFIED",
                EventKind::Put => "ADDED",
                EventKind::Delete => {
                    event.prev.as_ref()?;
                    "DELETED"
                }
            };
            return Some(match self.raw_object(rt, &event.kv) {
                Some(bytes) => WatchItem::Raw(kind, bytes),
                None => WatchItem::Object(kind, self.decode(rt, &event.kv).ok()?),
            });
        }
        let decode = |kv: &KeyValue| self.decode(rt, kv).ok();
        let was = event.prev.as_ref().and_then(decode).filter(|o| self.matches(rt, params, o));
        match event.kind {
            EventKind::Put => {
                let object = decode(&event.kv)?;
                let is = self.matches(rt, params, &object);
                match (was.is_some(), is) {
                    (true, true) => Some(WatchItem::Object("MODIFIED", object)),
                    (false, true) => Some(WatchItem::Object("ADDED", object)),
                    // Leaving the selector: the previous content at this event's version, as
                    // upstream's watch cache sends it.
                    (true, false) => {
                        let mut previous = was?;
                        let version = object.pointer("/metadata/resourceVersion").cloned();
                        if let (Some(meta), Some(version)) = (previous.get_mut("metadata"), version) {
                            meta["resourceVersion"] = version;
                        }
                        Some(WatchItem::Object("DELETED", previous))
                    }
                    (false, false) => None,
                }
            }
            EventKind::Delete => {
                was?;
                let object = decode(&event.kv)?;
                Some(WatchItem::Object("DELETED", object))
            }
        }
    }

    /// Creates the namespaces every cluster has, if missing.
    pub async fn bootstrap(&self) -> ApiResult<()> {
        let namespaces = self.catalog.snapshot().get("", "v1", "namespaces").expect("built-in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let options = WriteOptions { field_manager: "vkube-apiserver".into(), ..Default::default() };
            match self.create(&namespaces, None, object, &options).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let classes = self.catalog.snapshot().get("scheduling.k8s.io", "v1", "priorityclasses").expect("built-in");
        for object in crate::admission::priority::system_classes() {
            let options = WriteOptions { field_manager: "kube-apiserver".into(), ..Default::default() };
            match self.create(&classes, None, object, &options).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.reconcile_bootstrap_policy().await
    }

    /// Upstream's RBAC bootstrap policy (`bootstrap_policy.json`, generated from kube-apiserver
    /// by `tools/gen_bootstrap_policy.py`): the default ClusterRoles (`cluster-admin`, `admin`,
    /// `edit`, `view`, `system:*`), their bindings, and the Roles of kube-system and kube-public.
    /// Missing objects are created; existing ones marked `rbac.authorization.kubernetes.io/autoupdate:
    /// "true"` get back the rules and subjects the policy has (what users added stays), as
    /// kube-apiserver reconciles them at start.
    async fn reconcile_bootstrap_policy(&self) -> ApiResult<()> {
        static POLICY: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
            serde_json::from_str(include_str!("bootstrap_policy.json")).expect("the bootstrap policy is JSON")
        });
        let snapshot = self.catalog.snapshot();
        let options = WriteOptions { field_manager: "kube-apiserver".into(), ..Default::default() };
        for object in POLICY["objects"].as_array().into_iter().flatten() {
            let kind = object["kind"].as_str().unwrap_or_default();
            let plural = format!("{}s", kind.to_lowercase());
            let Some(rt) = snapshot.get("rbac.authorization.k8s.io", "v1", &plural) else { continue };
            let name = meta_str(object, "name").unwrap_or_default();
            let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
            match self.get(&rt, namespace, name).await {
                Err(ApiError::NotFound { .. }) => match self.create(&rt, namespace, object.clone(), &options).await {
                    Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                    Err(error) => tracing::warn!(%kind, %name, %error, "could not create a bootstrap RBAC object"),
                },
                Ok(current) => {
                    let autoupdate = current
                        .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
                        .and_then(Value::as_str)
                        != Some("false");
                    let mut wanted = current.clone();
                    let mut changed = false;
                    for field in ["rules", "subjects"] {
                        let Some(bootstrap) = object.get(field).and_then(Value::as_array) else { continue };
                        let list = wanted.as_object_mut().expect("objects are maps").entry(field).or_insert(json!([]));
                        if let Some(list) = list.as_array_mut() {
                            for entry in bootstrap {
                                if !list.contains(entry) {
                                    list.push(entry.clone());
                                    changed = true;
                                }
                            }
                        }
                    }
                    if autoupdate
                        && changed
                        && let Err(error) = self.update(&rt, namespace, name, wanted, "", &options).await
                    {
                        tracing::warn!(%kind, %name, %error, "could not reconcile a bootstrap RBAC object");
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

fn patch_body_sets_rv(patch: &Value) -> bool {
    patch.pointer("/metadata/resourceVersion").is_some()
        || patch.as_array().is_some_and(|ops| {
            ops.iter().any(|op| op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion"))
        })
}

fn namespace_has_spec_finalizers(ns: &Value) -> bool {
    ns.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
}

fn namespace_still_finalizing(rt: &ResourceType, object: &Value) -> bool {
    rt.kind == "Namespace" && rt.group.is_empty() && namespace_has_spec_finalizers(object)
}

fn spec_changed(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    if strip(old) != strip(new) {
        return true;
    }
    rt.kind == "Deployment" && old.pointer("/metadata/annotations") != new.pointer("/metadata/annotations")
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A field path as structured-merge-diff prints it: a leading dot, and list items by their
/// `name` key where they have one (`.spec.containers[name="c"].bogus`), else by index.
fn typed_path(object: &Value, path: &str) -> String {
    let mut out = String::new();
    let mut at = Some(object);
    for segment in path.split('.') {
        let (key, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        out.push('.');
        out.push_str(key);
        at = at.and_then(|v| v.get(key));
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let index = index.trim_end_matches(']');
            let item = index.parse::<usize>().ok().and_then(|i| at.and_then(|v| v.get(i)));
            match item.and_then(|i| i.get("name")).and_then(Value::as_str) {
                Some(name) => out.push_str(&format!("[name=\"{name}\"]")),
                None => out.push_str(&format!("[{index}]")),
            }
            at = item;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_version_is_spliced_into_top_level_metadata_only() {
        let stored = br#"{"aaa":{"metadata":{"x":1}},"data":{"k":"v\"metadata\":{"},"kind":"ConfigMap","metadata":{"name":"a"},"spec":{"template":{"metadata":{}}}}"#;
        let spliced = splice_resource_version(stored, 42).unwrap();
        let value: Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(value["metadata"], json!({"name": "a", "resourceVersion": "42"}));
        assert_eq!(value["aaa"]["metadata"], json!({"x": 1}));
        assert_eq!(value["spec"]["template"]["metadata"], json!({}));
        let empty = splice_resource_version(br#"{"metadata":{}}"#, 7).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&empty).unwrap(), json!({"metadata": {"resourceVersion": "7"}}));
        assert!(splice_resource_version(br#"{"kind":"X"}"#, 1).is_none());
        assert!(splice_resource_version(b"[1]", 1).is_none());
    }
}
