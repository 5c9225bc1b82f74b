//! OpenAPI: `/openapi/v3` and one document per group-version, generated from k8s-openapi's
//! schemars impls for built-in kinds and from `openAPIV3Schema` for custom resources; the
//! definitions of all of them as a JSON Swagger 2.0 document at `/openapi/v2`; and the empty
//! protobuf answer for `/openapi/v2` that kubectl 1.27 and 1.28 need.
//!
//! Patch operations advertise `fieldValidation` (so kubectl leaves validation to the server) and
//! do not advertise strategic merge patch (so kubectl computes it from its compiled-in types
//! rather than from schemas that lack the patch-merge-key extensions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use schemars::SchemaGenerator;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::{ResourceType, Snapshot};

/// The content type kubectl expects for `/openapi/v2`.
pub const V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

type DocumentCache = HashMap<(u64, String), Arc<Vec<u8>>>;
type ShapeCache = HashMap<(u64, String), Option<Arc<Shape>>>;

/// Caches generated documents per catalog generation.
#[derive(Clone, Debug, Default)]
pub struct OpenApi {
    cache: Arc<Mutex<DocumentCache>>,
    shapes: Arc<Mutex<ShapeCache>>,
}

fn path_key(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn hash(generation: u64, key: &str) -> String {
    let digest = Sha256::digest(format!("{generation}/{key}/{}", env!("CARGO_PKG_VERSION")));
    digest.iter().take(32).map(|b| format!("{b:02X}")).collect()
}

impl OpenApi {
    /// `GET /openapi/v3`.
    pub fn index(&self, snapshot: &Snapshot) -> Value {
        let mut paths = Map::new();
        let mut seen = std::collections::BTreeSet::new();
        for rt in snapshot.types.values() {
            if seen.insert((rt.group.clone(), rt.version.clone())) {
                let key = path_key(&rt.group, &rt.version);
                paths.insert(
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(snapshot.generation, &key))}),
                );
            }
        }
        json!({"paths": paths})
    }

    /// `GET /openapi/v3/{api/v1 | apis/g/v}` as JSON bytes, or None when not served.
    pub fn document(&self, snapshot: &Snapshot, key: &str) -> Option<Arc<Vec<u8>>> {
        let cache_key = (snapshot.generation, key.to_string());
        if let Some(doc) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&cache_key) {
            return Some(doc.clone());
        }
        let (group, version) = match key.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => (String::new(), v.to_string()),
            ["apis", g, v] => (g.to_string(), v.to_string()),
            _ => return None,
        };
        let types = snapshot.group_version(&group, &version);
        if types.is_empty() {
            return None;
        }
        let doc = Arc::new(serde_json::to_vec(&build_document(&types)).ok()?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(generation, _), _| *generation == snapshot.generation);
        cache.insert(cache_key, doc.clone());
        Some(doc)
    }
}

impl OpenApi {
    /// `GET /openapi/v2` as JSON: every group-version's definitions in one Swagger 2.0
    /// document (no paths: clients read operations from `/openapi/v3`), and its ETag.
    pub fn v2_document(&self, snapshot: &Snapshot) -> (Arc<Vec<u8>>, String) {
        const KEY: &str = "openapi/v2";
        let etag = hash(snapshot.generation, KEY);
        let cache_key = (snapshot.generation, KEY.to_string());
        if let Some(doc) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&cache_key) {
            return (doc.clone(), etag);
        }
        let mut definitions = Map::new();
        let mut seen = std::collections::BTreeSet::new();
        for rt in snapshot.types.values() {
            if !seen.insert((rt.group.clone(), rt.version.clone())) {
                continue;
            }
            let types = snapshot.group_version(&rt.group, &rt.version);
            let document = build_document(&types);
            if let Some(schemas) = document.pointer("/components/schemas").and_then(Value::as_object) {
                for (name, schema) in schemas {
                    definitions.entry(name.clone()).or_insert_with(|| v2_schema(schema.clone()));
                }
            }
            // Custom resources are published as upstream's CRD publisher converts them for v2.
            for custom in types.iter().filter(|t| t.is_custom()) {
                let schema = custom.custom.as_ref().and_then(|c| c.schema.as_ref());
                let mut definition = crd_v2_definition(schema);
                definition["x-kubernetes-group-version-kind"] =
                    json!([{"group": custom.group, "version": custom.version, "kind": custom.kind}]);
                definitions.insert(custom_schema_name(custom), definition);
            }
        }
        let document = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": {},
            "definitions": definitions,
        });
        let text =
            serde_json::to_string(&document).unwrap_or_default().replace("#/components/schemas/", "#/definitions/");
        let doc = Arc::new(text.into_bytes());
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(generation, _), _| *generation == snapshot.generation);
        cache.insert(cache_key, doc.clone());
        (doc, etag)
    }
}

/// A CRD version's schema as OpenAPI v2 publishes it (upstream's `ToStructuralOpenAPIV2` and
/// `buildKubeNative`): no schema, or unknown fields kept at the root, is a bare object (kubectl's
/// v2 validation would refuse anything else); otherwise what v2 cannot express goes, and
/// `apiVersion`, `kind` and `metadata` are added.
fn crd_v2_definition(schema: Option<&Value>) -> Value {
    let Some(schema) = schema.filter(|s| s.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))) else {
        return json!({"type": "object"});
    };
    let mut out = v2_structural(schema.clone());
    let properties = crate::strategy::ensure_object(&mut out, "properties");
    properties.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
    properties.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
    properties.insert("metadata".into(), json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
    out
}

fn v2_structural(mut schema: Value) -> Value {
    let Some(node) = schema.as_object_mut() else { return schema };
    for junctor in ["allOf", "oneOf", "anyOf", "not"] {
        node.remove(junctor);
    }
    if node.remove("nullable") == Some(json!(true)) {
        node.remove("type");
        node.remove("items");
        node.remove("properties");
    }
    let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if preserve {
        node.remove("items");
        node.remove("properties");
    }
    if !node.contains_key("items") && node.get("type") == Some(&json!("array")) {
        node.remove("type");
    }
    if preserve && node.get("type") == Some(&json!("object")) {
        node.remove("type");
    }
    let nullable: Vec<String> = node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, p)| p.get("nullable") == Some(&json!(true)))
        .map(|(name, _)| name.clone())
        .collect();
    if let Some(required) = node.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|r| !nullable.iter().any(|n| r == n));
    }
    if node.get("additionalProperties").and_then(|a| a.get("nullable")) == Some(&json!(true)) {
        node.remove("required");
    }
    if node.get("required").and_then(Value::as_array).is_some_and(Vec::is_empty) {
        node.remove("required");
    }
    if let Some(properties) = node.get_mut("properties").and_then(Value::as_object_mut) {
        for child in properties.values_mut() {
            *child = v2_structural(child.take());
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get_mut(key).filter(|c| c.is_object()) {
            *child = v2_structural(child.take());
        }
    }
    if node.get("x-kubernetes-embedded-resource") == Some(&json!(true)) && !preserve {
        let properties = node.entry("properties").or_insert_with(|| json!({}));
        if let Some(properties) = properties.as_object_mut() {
            properties.insert("apiVersion".into(), json!({"type": "string", "description": "apiVersion defines the versioned schema of this representation of an object. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}));
            properties.insert("kind".into(), json!({"type": "string", "description": "kind is a string value representing the type of this object. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}));
            properties.insert("metadata".into(), json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
        }
        let required = node.entry("required").or_insert_with(|| json!([]));
        if let Some(required) = required.as_array_mut() {
            for field in ["kind", "apiVersion"] {
                if !required.iter().any(|r| r == field) {
                    required.push(json!(field));
                }
            }
        }
    }
    schema
}

/// An OpenAPI v3 schema as Swagger 2.0 has it: `nullable` and the combinators 2.0 lacks
/// (`oneOf`, `anyOf`, `not`) go, a lone `allOf` reference becomes the reference (as upstream's
/// v2 conversion does).
fn v2_schema(mut schema: Value) -> Value {
    if let Some(object) = schema.as_object_mut() {
        for dropped in ["nullable", "oneOf", "anyOf", "not"] {
            object.remove(dropped);
        }
        if let Some(Value::Array(all)) = object.get("allOf")
            && all.len() == 1
            && all[0].get("$ref").is_some()
        {
            let reference = all[0]["$ref"].clone();
            object.remove("allOf");
            object.insert("$ref".into(), reference);
        }
        for (key, value) in object.iter_mut() {
            match key.as_str() {
                "properties" | "patternProperties" | "definitions" => {
                    if let Some(children) = value.as_object_mut() {
                        for child in children.values_mut() {
                            *child = v2_schema(child.take());
                        }
                    }
                }
                "items" | "additionalProperties" if value.is_object() => *value = v2_schema(value.take()),
                "allOf" => {
                    if let Some(list) = value.as_array_mut() {
                        for child in list {
                            *child = v2_schema(child.take());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    schema
}

/// The fields a kind may have, as a compact tree built from its schema (no descriptions), used to
/// find unknown fields without keeping whole OpenAPI documents in memory.
#[derive(Debug, Default)]
pub struct Shape {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    /// Declared properties (node indexes).
    Object(HashMap<String, usize>),
    /// Declared properties, and any other field kept (`x-kubernetes-preserve-unknown-fields`
    /// beside properties: the declared ones are still checked).
    OpenObject(HashMap<String, usize>),
    /// Every value has this shape.
    Map(usize),
    /// Every item has this shape.
    List(usize),
    /// Anything goes (scalars, int-or-string, preserve-unknown-fields, untyped objects).
    Any,
}

impl Shape {
    fn build(schemas: &Map<String, Value>, root: &Value) -> Shape {
        let mut shape = Shape::default();
        let mut named = HashMap::new();
        shape.node(schemas, root, &mut named, 0);
        shape
    }

    fn node(
        &mut self,
        schemas: &Map<String, Value>,
        schema: &Value,
        named: &mut HashMap<String, usize>,
        depth: usize,
    ) -> usize {
        let mut schema = schema;
        let mut name = None;
        for _ in 0..8 {
            if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
                let target = reference.strip_prefix("#/components/schemas/").unwrap_or(reference);
                if let Some(&index) = named.get(target) {
                    return index;
                }
                match schemas.get(target) {
                    Some(found) => {
                        name = Some(target.to_string());
                        schema = found;
                    }
                    None => break,
                }
            } else if let Some([only]) = schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                schema = only;
            } else {
                break;
            }
        }
        let index = self.nodes.len();
        self.nodes.push(Node::Any);
        if let Some(name) = name {
            named.insert(name, index);
        }
        if depth > 64 {
            return index;
        }
        let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let embedded = schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
        let node = if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            let mut fields = HashMap::new();
            for (key, child) in properties {
                fields.insert(key.clone(), self.node(schemas, child, named, depth + 1));
            }
            if embedded {
                // An embedded object is an object of some kind: its metadata is ObjectMeta.
                for key in ["apiVersion", "kind"] {
                    fields.entry(key.to_string()).or_insert_with(|| {
                        self.nodes.push(Node::Any);
                        self.nodes.len() - 1
                    });
                }
                let meta = json!({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
                let metadata = self.node(schemas, &meta, named, depth + 1);
                fields.insert("metadata".into(), metadata);
            }
            if preserve { Node::OpenObject(fields) } else { Node::Object(fields) }
        } else if preserve {
            Node::Any
        } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            Node::Map(self.node(schemas, additional, named, depth + 1))
        } else if let Some(items) = schema.get("items") {
            Node::List(self.node(schemas, items, named, depth + 1))
        } else {
            Node::Any
        };
        self.nodes[index] = node;
        index
    }

    /// Whether the field at `names` (object fields from the root; lists stepped through to their
    /// items) is a map (`additionalProperties`) rather than a struct.
    pub fn is_map(&self, names: &[&str]) -> bool {
        let mut at = 0;
        for name in names {
            if let Node::List(items) = &self.nodes[at] {
                at = *items;
            }
            at = match &self.nodes[at] {
                Node::Object(fields) | Node::OpenObject(fields) => match fields.get(*name) {
                    Some(&next) => next,
                    None => return false,
                },
                Node::Map(next) => *next,
                _ => return false,
            };
        }
        matches!(self.nodes[at], Node::Map(_))
    }

    /// Removes undeclared fields below node `at`; records their paths.
    fn prune(&self, at: usize, value: &mut Value, path: &str, unknown: &mut Vec<String>, root: bool) {
        let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
        match (&self.nodes[at], value) {
            (Node::Object(fields), Value::Object(map)) => {
                let mut remove = Vec::new();
                for (key, child) in map.iter_mut() {
                    match fields.get(key) {
                        Some(&next) => self.prune(next, child, &join(key), unknown, false),
                        None if root
                            && (key == "apiVersion" || key == "kind" || key == "metadata")
                            && fields.is_empty() => {}
                        None if root && (key == "apiVersion" || key == "kind") => {}
                        None => remove.push(key.clone()),
                    }
                }
                for key in remove {
                    map.remove(&key);
                    unknown.push(join(&key));
                }
            }
            (Node::OpenObject(fields), Value::Object(map)) => {
                for (key, child) in map.iter_mut() {
                    if let Some(&next) = fields.get(key) {
                        self.prune(next, child, &join(key), unknown, false);
                    }
                }
            }
            (Node::Map(next), Value::Object(map)) => {
                for (key, child) in map.iter_mut() {
                    self.prune(*next, child, &join(key), unknown, false);
                }
            }
            (Node::List(next), Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.prune(*next, item, &format!("{path}[{i}]"), unknown, false);
                }
            }
            _ => {}
        }
    }
}

impl OpenApi {
    /// The shape of `rt`'s objects (built once per catalog generation).
    pub fn shape_for(&self, snapshot: &Snapshot, rt: &ResourceType) -> Option<Arc<Shape>> {
        let key = (snapshot.generation, format!("{}/{}/{}", rt.group, rt.version, rt.kind));
        if let Some(shape) = self.shapes.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return shape.clone();
        }
        let shape = match &rt.custom {
            Some(info) => info.schema.as_ref().map(|schema| {
                let mut schema = schema.clone();
                // metadata is ObjectMeta (unknown metadata fields are unknown fields), at the
                // root and in embedded objects.
                let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
                generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
                let schemas = generator.take_definitions(true);
                if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
                    properties.insert("metadata".into(), reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
                }
                Arc::new(Shape::build(&schemas, &schema))
            }),
            None => {
                let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
                builtin_schema(&mut generator, &rt.group, &rt.version, &rt.kind).map(|name| {
                    let schemas = generator.take_definitions(true);
                    Arc::new(Shape::build(&schemas, &reference(&name)))
                })
            }
        };
        let mut shapes = self.shapes.lock().unwrap_or_else(|p| p.into_inner());
        shapes.retain(|(generation, _), _| *generation == snapshot.generation);
        shapes.insert(key, shape.clone());
        shape
    }

    /// Removes every field of `object` that `rt`'s schema does not declare and returns their
    /// paths (`spec.template.spec.containers[0].imagee`). Fields under
    /// `x-kubernetes-preserve-unknown-fields` and schema-less objects are kept.
    pub fn prune_unknown_fields(&self, snapshot: &Snapshot, rt: &ResourceType, object: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        if let Some(shape) = self.shape_for(snapshot, rt) {
            shape.prune(0, object, "", &mut unknown, true);
        }
        unknown
    }
}

/// Adds the schema of a built-in kind to the generator; returns its definition name.
fn builtin_schema(generator: &mut SchemaGenerator, group: &str, version: &str, kind: &str) -> Option<String> {
    use k8s_openapi::api::*;
    macro_rules! schema {
        ($t:ty) => {{
            generator.subschema_for::<$t>();
            Some(<$t as schemars::JsonSchema>::schema_name().to_string())
        }};
    }
    match (group, kind) {
        ("", "Pod") => schema!(core::v1::Pod),
        ("", "Service") => schema!(core::v1::Service),
        ("", "Endpoints") => schema!(core::v1::Endpoints),
        ("", "ConfigMap") => schema!(core::v1::ConfigMap),
        ("", "Secret") => schema!(core::v1::Secret),
        ("", "ServiceAccount") => schema!(core::v1::ServiceAccount),
        ("", "PersistentVolumeClaim") => schema!(core::v1::PersistentVolumeClaim),
        ("", "PersistentVolume") => schema!(core::v1::PersistentVolume),
        ("", "Node") => schema!(core::v1::Node),
        ("", "Event") => schema!(core::v1::Event),
        ("", "LimitRange") => schema!(core::v1::LimitRange),
        ("", "ResourceQuota") => schema!(core::v1::ResourceQuota),
        ("", "ReplicationController") => schema!(core::v1::ReplicationController),
        ("", "Namespace") => schema!(core::v1::Namespace),
        ("", "PodTemplate") => schema!(core::v1::PodTemplate),
        ("apps", "Deployment") => schema!(apps::v1::Deployment),
        ("apps", "ReplicaSet") => schema!(apps::v1::ReplicaSet),
        ("apps", "StatefulSet") => schema!(apps::v1::StatefulSet),
        ("apps", "DaemonSet") => schema!(apps::v1::DaemonSet),
        ("apps", "ControllerRevision") => schema!(apps::v1::ControllerRevision),
        ("autoscaling", "HorizontalPodAutoscaler") if version == "v1" => {
            schema!(autoscaling::v1::HorizontalPodAutoscaler)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => schema!(autoscaling::v2::HorizontalPodAutoscaler),
        ("batch", "Job") => schema!(batch::v1::Job),
        ("batch", "CronJob") => schema!(batch::v1::CronJob),
        ("networking.k8s.io", "Ingress") => schema!(networking::v1::Ingress),
        ("networking.k8s.io", "IngressClass") => schema!(networking::v1::IngressClass),
        ("networking.k8s.io", "NetworkPolicy") => schema!(networking::v1::NetworkPolicy),
        ("policy", "PodDisruptionBudget") => schema!(policy::v1::PodDisruptionBudget),
        ("scheduling.k8s.io", "PriorityClass") => schema!(scheduling::v1::PriorityClass),
        ("storage.k8s.io", "StorageClass") => schema!(storage::v1::StorageClass),
        ("storage.k8s.io", "CSINode") => schema!(storage::v1::CSINode),
        ("storage.k8s.io", "CSIDriver") => schema!(storage::v1::CSIDriver),
        ("storage.k8s.io", "CSIStorageCapacity") => schema!(storage::v1::CSIStorageCapacity),
        ("storage.k8s.io", "VolumeAttachment") => schema!(storage::v1::VolumeAttachment),
        ("node.k8s.io", "RuntimeClass") => schema!(node::v1::RuntimeClass),
        ("discovery.k8s.io", "EndpointSlice") => schema!(discovery::v1::EndpointSlice),
        ("events.k8s.io", "Event") => schema!(events::v1::Event),
        ("coordination.k8s.io", "Lease") => schema!(coordination::v1::Lease),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            schema!(admissionregistration::v1::MutatingWebhookConfiguration)
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            schema!(admissionregistration::v1::ValidatingWebhookConfiguration)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            schema!(admissionregistration::v1::ValidatingAdmissionPolicy)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            schema!(admissionregistration::v1::ValidatingAdmissionPolicyBinding)
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => schema!(flowcontrol::v1::FlowSchema),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            schema!(flowcontrol::v1::PriorityLevelConfiguration)
        }
        ("rbac.authorization.k8s.io", "Role") => schema!(rbac::v1::Role),
        ("rbac.authorization.k8s.io", "RoleBinding") => schema!(rbac::v1::RoleBinding),
        ("rbac.authorization.k8s.io", "ClusterRole") => schema!(rbac::v1::ClusterRole),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            schema!(rbac::v1::ClusterRoleBinding)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            schema!(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition)
        }
        ("authorization.k8s.io", "SelfSubjectAccessReview") => {
            schema!(authorization::v1::SelfSubjectAccessReview)
        }
        ("authorization.k8s.io", "SelfSubjectRulesReview") => {
            schema!(authorization::v1::SelfSubjectRulesReview)
        }
        ("authorization.k8s.io", "SubjectAccessReview") => schema!(authorization::v1::SubjectAccessReview),
        ("authorization.k8s.io", "LocalSubjectAccessReview") => {
            schema!(authorization::v1::LocalSubjectAccessReview)
        }
        ("authentication.k8s.io", "TokenReview") => schema!(authentication::v1::TokenReview),
        ("authentication.k8s.io", "SelfSubjectReview") => {
            schema!(authentication::v1::SelfSubjectReview)
        }
        _ => None,
    }
}

fn custom_schema_name(rt: &ResourceType) -> String {
    let reversed: Vec<&str> = rt.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), rt.version, rt.kind)
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// k8s-openapi's Rust types make some optional fields required (`metadata` of every kind, the
/// `name` of references, which upstream lets be empty); upstream's documents list neither.
fn upstream_required(schema: &mut Value) {
    let referent_name = schema
        .pointer("/properties/name/description")
        .and_then(Value::as_str)
        .is_some_and(|d| d.starts_with("Name of the referent"));
    let Some(object) = schema.as_object_mut() else { return };
    let Some(required) = object.get_mut("required").and_then(Value::as_array_mut) else { return };
    required.retain(|field| field != "metadata" && !(referent_name && field == "name"));
    if required.is_empty() {
        object.remove("required");
    }
}

fn build_document(types: &[Arc<ResourceType>]) -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    let any_scale = types.iter().any(|t| t.scale.is_some());
    if any_scale {
        generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    }
    let mut names = Vec::new();
    let mut custom = Vec::new();
    for rt in types {
        let name = match &rt.custom {
            Some(info) => {
                let name = custom_schema_name(rt);
                let mut schema = info
                    .schema
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
                if let Some(props) = schema.as_object_mut() {
                    let properties = props.entry("properties").or_insert(json!({}));
                    properties["apiVersion"] = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."});
                    properties["kind"] = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."});
                    properties["metadata"] = json!({"allOf": [reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")], "description": "Standard object's metadata."});
                }
                custom.push((name.clone(), schema));
                name
            }
            None => match builtin_schema(&mut generator, &rt.group, &rt.version, &rt.kind) {
                Some(name) => name,
                None => continue,
            },
        };
        names.push((rt.clone(), name));
    }
    let mut schemas = generator.take_definitions(true);
    for schema in schemas.values_mut() {
        upstream_required(schema);
    }
    if let Some(scale) = schemas.get_mut("io.k8s.api.autoscaling.v1.Scale").and_then(Value::as_object_mut) {
        scale.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}]),
        );
    }
    schemas.insert("io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(), json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}));
    for (name, schema) in custom {
        schemas.insert(name, schema);
    }
    let mut paths = Map::new();
    for (rt, name) in &names {
        if let Some(schema) = schemas.get_mut(name).and_then(Value::as_object_mut) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": rt.group, "version": rt.version, "kind": rt.kind}]),
            );
        }
        add_paths(&mut paths, rt, name);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn parameter(name: &str, location: &str, kind: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "schema": {"type": kind}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn operation(
    rt: &ResourceType,
    action: &str,
    id: &str,
    query: &[&str],
    schema: &str,
    body: Option<Vec<&str>>,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "parameters": query.iter().map(|q| parameter(q, "query", if *q == "force" || *q == "watch" { "boolean" } else { "string" })).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference(schema)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    });
    if let Some(types) = body {
        let body_schema = if action == "patch" { "io.k8s.apimachinery.pkg.apis.meta.v1.Patch" } else { schema };
        let content: Map<String, Value> =
            types.into_iter().map(|t| (t.to_string(), json!({"schema": reference(body_schema)}))).collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

fn add_paths(paths: &mut Map<String, Value>, rt: &ResourceType, schema: &str) {
    let prefix =
        if rt.group.is_empty() { format!("/api/{}", rt.version) } else { format!("/apis/{}/{}", rt.group, rt.version) };
    let collection = if rt.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{prefix}/{}", rt.plural)
    };
    let item = format!("{collection}/{{name}}");
    let mut path_params = vec![];
    if rt.namespaced {
        path_params.push(parameter("namespace", "path", "string"));
    }
    let kind = &rt.kind;
    let scope = if rt.namespaced { "Namespaced" } else { "" };
    let group_part: String = if rt.group.is_empty() {
        "Core".into()
    } else {
        rt.group
            .split('.')
            .next()
            .unwrap_or_default()
            .chars()
            .enumerate()
            .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
            .collect()
    };
    let version_part: String =
        rt.version.chars().enumerate().map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c }).collect();
    let id = |verb: &str| format!("{verb}{group_part}{version_part}{scope}{kind}");
    let write = ["dryRun", "fieldManager", "fieldValidation"];
    let patch_types =
        vec!["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"];
    if rt.review {
        paths.insert(collection, json!({"parameters": path_params, "post": operation(rt, "post", &id("create"), &write, schema, Some(vec!["application/json"]))}));
        return;
    }
    paths.insert(
        collection,
        json!({
            "parameters": path_params,
            "get": operation(rt, "list", &id("list"), &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"], schema, None),
            "post": operation(rt, "post", &id("create"), &write, schema, Some(vec!["application/json", "application/yaml"])),
            "delete": operation(rt, "deletecollection", &id("deleteCollection"), &["labelSelector", "fieldSelector", "dryRun"], "io.k8s.apimachinery.pkg.apis.meta.v1.Status", None),
        }),
    );
    let mut item_params = vec![parameter("name", "path", "string")];
    item_params.extend(path_params.iter().cloned());
    let patch_query = ["dryRun", "fieldManager", "fieldValidation", "force"];
    paths.insert(
        item.clone(),
        json!({
            "parameters": item_params,
            "get": operation(rt, "get", &id("read"), &[], schema, None),
            "put": operation(rt, "put", &id("replace"), &write, schema, Some(vec!["application/json", "application/yaml"])),
            "patch": operation(rt, "patch", &id("patch"), &patch_query, schema, Some(patch_types.clone())),
            "delete": operation(rt, "delete", &id("delete"), &["dryRun", "gracePeriodSeconds", "propagationPolicy"], "io.k8s.apimachinery.pkg.apis.meta.v1.Status", None),
        }),
    );
    if rt.has_status {
        paths.insert(
            format!("{item}/status"),
            json!({
                "parameters": item_params,
                "get": operation(rt, "get", &format!("{}Status", id("read")), &[], schema, None),
                "put": operation(rt, "put", &format!("{}Status", id("replace")), &write, schema, Some(vec!["application/json"])),
                "patch": operation(rt, "patch", &format!("{}Status", id("patch")), &patch_query, schema, Some(patch_types.clone())),
            }),
        );
    }
    if rt.scale.is_some() {
        let scale = "io.k8s.api.autoscaling.v1.Scale";
        paths.insert(
            format!("{item}/scale"),
            json!({
                "parameters": item_params,
                "get": operation(rt, "get", &format!("{}Scale", id("read")), &[], scale, None),
                "put": operation(rt, "put", &format!("{}Scale", id("replace")), &write, scale, Some(vec!["application/json"])),
                "patch": operation(rt, "patch", &format!("{}Scale", id("patch")), &patch_query, scale, Some(patch_types)),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn crd_schemas_are_published_in_v2_as_upstream_converts_them() {
        // Checked against kube-apiserver 1.33's /openapi/v2 for the same CRD.
        assert_eq!(
            crd_v2_definition(Some(&json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))),
            json!({"type": "object"})
        );
        assert_eq!(crd_v2_definition(None), json!({"type": "object"}));
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["a", "nn"], "properties": {
            "a": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"x": {"type": "string"}}},
            "nn": {"type": "string", "nullable": true},
            "o": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true}}}}});
        let spec = crd_v2_definition(Some(&schema))["properties"]["spec"].clone();
        assert_eq!(spec["properties"]["a"], json!({"x-kubernetes-preserve-unknown-fields": true}));
        assert_eq!(spec["properties"]["nn"], json!({}));
        assert_eq!(spec["properties"]["o"], json!({"x-kubernetes-int-or-string": true}));
        assert_eq!(spec["required"], json!(["a"]));
    }

    #[test]
    fn core_document_has_gvk_and_field_validation() {
        let snapshot = Catalog::builtin().snapshot();
        let openapi = OpenApi::default();
        let index = openapi.index(&snapshot);
        let url = index["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/api/v1?hash="));
        let doc: Value = serde_json::from_slice(&openapi.document(&snapshot, "api/v1").unwrap()).unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
        assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_none());
        let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(pod["properties"]["spec"].is_object());
        let text = serde_json::to_string(&doc).unwrap();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {name}");
        }
    }

    #[test]
    fn unknown_fields_are_found_and_removed() {
        let snapshot = Catalog::builtin().snapshot();
        let openapi = OpenApi::default();
        let deployments = snapshot.get("apps", "v1", "deployments").unwrap();
        let mut object = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo",
                "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]}]}}}, "extra": true});
        let unknown = openapi.prune_unknown_fields(&snapshot, &deployments, &mut object);
        assert_eq!(unknown, ["metadata.bogus", "spec.template.spec.containers[0].imagee", "extra"]);
        assert!(object.get("extra").is_none());
        assert!(object.pointer("/spec/template/spec/containers/0/imagee").is_none());
        assert_eq!(object["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1");
        let configmaps = snapshot.get("", "v1", "configmaps").unwrap();
        let mut clean = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "managedFields": [{"manager": "m", "fieldsV1": {"f:data": {}}}]}, "data": {"k": "v"}});
        assert!(openapi.prune_unknown_fields(&snapshot, &configmaps, &mut clean).is_empty());
    }

    #[test]
    fn every_builtin_group_version_has_a_document() {
        let snapshot = Catalog::builtin().snapshot();
        let openapi = OpenApi::default();
        for key in openapi.index(&snapshot)["paths"].as_object().unwrap().keys() {
            assert!(openapi.document(&snapshot, key).is_some(), "{key}");
        }
    }
}
