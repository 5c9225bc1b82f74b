//! The resource catalog: every resource type the server serves, built-in (one line each) or from
//! an Established CustomResourceDefinition. Discovery, OpenAPI, routing and storage keys all read
//! it, so a resource exists exactly when it is in here.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// The verbs of an ordinary stored resource.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// JSON paths of a custom resource's scale subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    /// `.spec.replicas` for built-ins.
    pub spec_replicas: String,
    /// `.status.replicas` for built-ins.
    pub status_replicas: String,
    /// Where the label selector string lives, if anywhere.
    pub label_selector: Option<String>,
}

/// A subresource that is not `status` or `scale` (those are flags on the type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraSubresource {
    /// e.g. `log`, `token`, `finalize`.
    pub name: &'static str,
    /// The group of the kind it accepts/returns ("" = same as parent).
    pub group: &'static str,
    /// Version of that kind.
    pub version: &'static str,
    /// The kind it accepts/returns.
    pub kind: &'static str,
    /// Its verbs.
    pub verbs: &'static [&'static str],
}

/// A printer column of a custom resource (`additionalPrinterColumns`).
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    /// Header.
    pub name: String,
    /// OpenAPI type (`string`, `integer`, `date` ...).
    pub column_type: String,
    /// Format hint.
    pub format: String,
    /// Help text.
    pub description: String,
    /// 0 = shown by default, more = `-o wide` only.
    pub priority: i64,
    /// Simple JSON path (`.spec.replicas`).
    pub json_path: String,
}

/// What the server knows of a custom resource beyond its names.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomInfo {
    /// The CRD's `openAPIV3Schema` for this version, if any.
    pub schema: Option<Value>,
    /// Printer columns (empty = Name + Age).
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD name (`plural.group`).
    pub crd_name: String,
    /// The version objects are stored at (they are pruned against its schema too).
    pub storage_version: String,
    /// The CRD is being deleted: its objects can be read and deleted, not created.
    pub terminating: bool,
    /// `spec.conversion.webhook` when the strategy is `Webhook`: objects at another version
    /// are converted by it.
    pub conversion_webhook: Option<Value>,
}

/// One servable resource type.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    /// API group, "" for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Lower-case plural used in URLs.
    pub plural: String,
    /// Lower-case singular.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Kind of the list.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl get po`.
    pub short_names: Vec<String>,
    /// `kubectl get all`.
    pub categories: Vec<String>,
    /// Has a `status` subresource.
    pub has_status: bool,
    /// Has a `scale` subresource.
    pub scale: Option<ScalePaths>,
    /// The server maintains `metadata.generation`.
    pub generation: bool,
    /// Verbs on the main resource.
    pub verbs: Vec<&'static str>,
    /// Other subresources.
    pub extra: Vec<ExtraSubresource>,
    /// Create-only review resources that are answered, never stored.
    pub review: bool,
    /// Set for custom resources.
    pub custom: Option<CustomInfo>,
    /// Storage group/resource when it differs from the served one (events.k8s.io events share
    /// core events' storage).
    pub storage: Option<(&'static str, &'static str)>,
}

impl ResourceType {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The storage key prefix for all objects of this type, ending in `/`.
    pub fn key_prefix(&self) -> String {
        let (group, plural) = match self.storage {
            Some((group, plural)) => (group.to_string(), plural.to_string()),
            None => (self.group.clone(), self.plural.clone()),
        };
        let group = if group.is_empty() { "core".to_string() } else { group };
        format!("/registry/{group}/{plural}/")
    }

    /// The storage key prefix for one namespace (or the whole type when cluster-scoped).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.namespace_prefix(namespace))
    }

    /// Whether strategic merge patch is accepted (built-in kinds only).
    pub fn accepts_strategic_merge(&self) -> bool {
        self.custom.is_none()
    }

    /// Whether this is a custom resource.
    pub fn is_custom(&self) -> bool {
        self.custom.is_some()
    }
}

const STATUS: u8 = 1;
const SCALE: u8 = 2;
const GENERATION: u8 = 4;
const CLUSTER: u8 = 8;
const REVIEW: u8 = 16;
/// Served from what the server knows, never written (`get`, `list` only).
const READ_ONLY: u8 = 32;

struct Line {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    flags: u8,
    short: &'static [&'static str],
    categories: &'static [&'static str],
}

const fn line(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    flags: u8,
    short: &'static [&'static str],
    categories: &'static [&'static str],
) -> Line {
    Line { group, version, plural, kind, flags, short, categories }
}

const ALL: &[&str] = &["all"];

/// The built-in resources, one line each.
const BUILTIN: &[Line] = &[
    line("", "v1", "pods", "Pod", STATUS | GENERATION, &["po"], ALL),
    line("", "v1", "services", "Service", STATUS, &["svc"], ALL),
    line("", "v1", "endpoints", "Endpoints", 0, &["ep"], &[]),
    line("", "v1", "configmaps", "ConfigMap", 0, &["cm"], &[]),
    line("", "v1", "secrets", "Secret", 0, &[], &[]),
    line("", "v1", "serviceaccounts", "ServiceAccount", 0, &["sa"], &[]),
    line("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", STATUS, &["pvc"], &[]),
    line("", "v1", "persistentvolumes", "PersistentVolume", STATUS | CLUSTER, &["pv"], &[]),
    line("", "v1", "nodes", "Node", STATUS | CLUSTER, &["no"], &[]),
    line("", "v1", "events", "Event", 0, &["ev"], &[]),
    line("", "v1", "limitranges", "LimitRange", 0, &["limits"], &[]),
    line("", "v1", "resourcequotas", "ResourceQuota", STATUS, &["quota"], &[]),
    line("", "v1", "replicationcontrollers", "ReplicationController", STATUS | SCALE | GENERATION, &["rc"], ALL),
    line("", "v1", "namespaces", "Namespace", STATUS | CLUSTER, &["ns"], &[]),
    line("", "v1", "podtemplates", "PodTemplate", 0, &[], &[]),
    line("", "v1", "componentstatuses", "ComponentStatus", CLUSTER | READ_ONLY, &["cs"], &[]),
    line("apps", "v1", "deployments", "Deployment", STATUS | SCALE | GENERATION, &["deploy"], ALL),
    line("apps", "v1", "replicasets", "ReplicaSet", STATUS | SCALE | GENERATION, &["rs"], ALL),
    line("apps", "v1", "statefulsets", "StatefulSet", STATUS | SCALE | GENERATION, &["sts"], ALL),
    line("apps", "v1", "daemonsets", "DaemonSet", STATUS | GENERATION, &["ds"], ALL),
    line("apps", "v1", "controllerrevisions", "ControllerRevision", 0, &[], &[]),
    line("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", STATUS, &["hpa"], ALL),
    line("autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler", STATUS, &["hpa"], ALL),
    line("batch", "v1", "jobs", "Job", STATUS | GENERATION, &[], ALL),
    line("batch", "v1", "cronjobs", "CronJob", STATUS | GENERATION, &["cj"], ALL),
    line("networking.k8s.io", "v1", "ingresses", "Ingress", STATUS | GENERATION, &["ing"], &[]),
    line("networking.k8s.io", "v1", "ingressclasses", "IngressClass", CLUSTER, &[], &[]),
    line("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", GENERATION, &["netpol"], &[]),
    line("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", STATUS | GENERATION, &["pdb"], &[]),
    line("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", CLUSTER, &["pc"], &[]),
    line("storage.k8s.io", "v1", "storageclasses", "StorageClass", CLUSTER, &["sc"], &[]),
    line("storage.k8s.io", "v1", "csinodes", "CSINode", CLUSTER, &[], &[]),
    line("storage.k8s.io", "v1", "csidrivers", "CSIDriver", CLUSTER, &[], &[]),
    line("storage.k8s.io", "v1", "csistoragecapacities", "CSIStorageCapacity", 0, &[], &[]),
    line("storage.k8s.io", "v1", "volumeattachments", "VolumeAttachment", STATUS | CLUSTER, &[], &[]),
    line("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", CLUSTER, &[], &[]),
    line("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", 0, &[], &[]),
    line("events.k8s.io", "v1", "events", "Event", 0, &["ev"], &[]),
    line("coordination.k8s.io", "v1", "leases", "Lease", 0, &[], &[]),
    line("apiregistration.k8s.io", "v1", "apiservices", "APIService", STATUS | CLUSTER, &[], &["api-extensions"]),
    line(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        STATUS | CLUSTER,
        &["csr"],
        &[],
    ),
    line(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        CLUSTER | GENERATION,
        &[],
        &["api-extensions"],
    ),
    line(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        CLUSTER | GENERATION,
        &[],
        &["api-extensions"],
    ),
    line(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        STATUS | CLUSTER | GENERATION,
        &[],
        &["api-extensions"],
    ),
    line(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        CLUSTER | GENERATION,
        &[],
        &["api-extensions"],
    ),
    line("flowcontrol.apiserver.k8s.io", "v1", "flowschemas", "FlowSchema", STATUS | CLUSTER | GENERATION, &[], &[]),
    line(
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "prioritylevelconfigurations",
        "PriorityLevelConfiguration",
        STATUS | CLUSTER | GENERATION,
        &[],
        &[],
    ),
    line("rbac.authorization.k8s.io", "v1", "roles", "Role", 0, &[], &[]),
    line("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", 0, &[], &[]),
    line("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", CLUSTER, &[], &[]),
    line("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", CLUSTER, &[], &[]),
    line(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        STATUS | CLUSTER,
        &["crd", "crds"],
        &["api-extensions"],
    ),
    line(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        CLUSTER | REVIEW,
        &[],
        &[],
    ),
    line("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", CLUSTER | REVIEW, &[], &[]),
    line("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", CLUSTER | REVIEW, &[], &[]),
    line("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", REVIEW, &[], &[]),
    line("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", CLUSTER | REVIEW, &[], &[]),
    line("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", CLUSTER | REVIEW, &[], &[]),
    // kubectl 1.27 asks for the beta (then alpha) version of `auth whoami`.
    line("authentication.k8s.io", "v1beta1", "selfsubjectreviews", "SelfSubjectReview", CLUSTER | REVIEW, &[], &[]),
    line("authentication.k8s.io", "v1alpha1", "selfsubjectreviews", "SelfSubjectReview", CLUSTER | REVIEW, &[], &[]),
];

fn extra_subresources(group: &str, plural: &str) -> Vec<ExtraSubresource> {
    const GET: &[&str] = &["get"];
    const CREATE: &[&str] = &["create"];
    const GET_UPDATE: &[&str] = &["get", "patch", "update"];
    const CONNECT: &[&str] = &["create", "get"];
    const PROXY: &[&str] = &["create", "delete", "get", "patch", "update"];
    match (group, plural) {
        ("", "pods") => vec![
            ExtraSubresource { name: "attach", group: "", version: "", kind: "PodAttachOptions", verbs: CONNECT },
            ExtraSubresource { name: "exec", group: "", version: "", kind: "PodExecOptions", verbs: CONNECT },
            ExtraSubresource {
                name: "portforward",
                group: "",
                version: "",
                kind: "PodPortForwardOptions",
                verbs: CONNECT,
            },
            ExtraSubresource { name: "proxy", group: "", version: "", kind: "PodProxyOptions", verbs: PROXY },
            ExtraSubresource { name: "log", group: "", version: "", kind: "Pod", verbs: GET },
            ExtraSubresource { name: "binding", group: "", version: "", kind: "Binding", verbs: CREATE },
            ExtraSubresource { name: "eviction", group: "policy", version: "v1", kind: "Eviction", verbs: CREATE },
            ExtraSubresource { name: "ephemeralcontainers", group: "", version: "", kind: "Pod", verbs: GET_UPDATE },
            ExtraSubresource { name: "resize", group: "", version: "", kind: "Pod", verbs: GET_UPDATE },
        ],
        ("certificates.k8s.io", "certificatesigningrequests") => vec![ExtraSubresource {
            name: "approval",
            group: "",
            version: "",
            kind: "CertificateSigningRequest",
            verbs: GET_UPDATE,
        }],
        ("", "services") => {
            vec![ExtraSubresource { name: "proxy", group: "", version: "", kind: "ServiceProxyOptions", verbs: PROXY }]
        }
        ("", "nodes") => {
            vec![ExtraSubresource { name: "proxy", group: "", version: "", kind: "NodeProxyOptions", verbs: PROXY }]
        }
        ("", "namespaces") => {
            vec![ExtraSubresource { name: "finalize", group: "", version: "", kind: "Namespace", verbs: &["update"] }]
        }
        ("", "serviceaccounts") => vec![ExtraSubresource {
            name: "token",
            group: "authentication.k8s.io",
            version: "v1",
            kind: "TokenRequest",
            verbs: CREATE,
        }],
        _ => Vec::new(),
    }
}

fn builtin(line: &Line) -> ResourceType {
    let review = line.flags & REVIEW != 0;
    let verbs = if review {
        vec!["create"]
    } else if line.flags & READ_ONLY != 0 {
        vec!["get", "list"]
    } else if line.plural == "namespaces" {
        ALL_VERBS.iter().copied().filter(|v| *v != "deletecollection").collect()
    } else {
        ALL_VERBS.to_vec()
    };
    ResourceType {
        group: line.group.into(),
        version: line.version.into(),
        plural: line.plural.into(),
        singular: line.kind.to_lowercase(),
        kind: line.kind.into(),
        list_kind: format!("{}List", line.kind),
        namespaced: line.flags & CLUSTER == 0,
        short_names: line.short.iter().map(|s| s.to_string()).collect(),
        categories: line.categories.iter().map(|s| s.to_string()).collect(),
        has_status: line.flags & STATUS != 0,
        scale: (line.flags & SCALE != 0).then(|| ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".status.selector".into()),
        }),
        generation: line.flags & GENERATION != 0,
        verbs,
        extra: extra_subresources(line.group, line.plural),
        review,
        custom: None,
        storage: (line.group == "events.k8s.io").then_some(("", "events")),
    }
}

/// The set of served resource types. Cheap to clone; CRD changes swap in a new snapshot.
#[derive(Clone, Debug)]
pub struct Catalog {
    inner: Arc<RwLock<Arc<Snapshot>>>,
}

/// An immutable view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every type, keyed by (group, version, plural).
    pub types: BTreeMap<(String, String, String), Arc<ResourceType>>,
    /// Group names in discovery order (built-ins first, then custom groups by name).
    pub group_order: Vec<String>,
    /// Bumped on every change; used for discovery and OpenAPI hashes.
    pub generation: u64,
    /// The keys of `types` served by an extension API server through the aggregation layer.
    pub aggregated: std::collections::BTreeSet<(String, String, String)>,
}

impl Snapshot {
    /// Looks a type up by its URL parts.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(&(group.to_string(), version.to_string(), plural.to_string())).cloned()
    }

    /// All types of one group/version, in name order.
    pub fn group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types.values().filter(|t| t.group == group && t.version == version).cloned().collect()
    }

    /// The versions served for a group, preferred first.
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> =
            self.types.values().filter(|t| t.group == group).map(|t| t.version.clone()).collect();
        versions.dedup();
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        versions.dedup();
        versions
    }

    /// Finds a type by kind within a group/version.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types.values().find(|t| t.group == group && t.version == version && t.kind == kind).cloned()
    }
}

/// Orders Kubernetes versions: GA > beta > alpha, then by number.
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let rest = version.strip_prefix('v').unwrap_or(version);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (stability, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (1, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (0, n.parse().unwrap_or(0))
    } else if tail.is_empty() {
        (2, 0)
    } else {
        (0, 0)
    };
    (stability, major, minor)
}

impl Default for Catalog {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Catalog {
    /// The built-in resources only.
    pub fn builtin() -> Self {
        let mut snapshot = Snapshot::default();
        for line in BUILTIN {
            let t = builtin(line);
            if !snapshot.group_order.contains(&t.group) {
                snapshot.group_order.push(t.group.clone());
            }
            snapshot.types.insert((t.group.clone(), t.version.clone(), t.plural.clone()), Arc::new(t));
        }
        Catalog { inner: Arc::new(RwLock::new(Arc::new(snapshot))) }
    }

    /// Adds types served by something other than the store (an aggregated API such as
    /// `metrics.k8s.io`); they stay when custom resources change.
    pub fn add_served(&self, served: Vec<ResourceType>) {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = guard.clone();
        let mut types = old.types.clone();
        let mut group_order = old.group_order.clone();
        for t in served {
            if !group_order.contains(&t.group) {
                group_order.push(t.group.clone());
            }
            types.insert((t.group.clone(), t.version.clone(), t.plural.clone()), Arc::new(t));
        }
        *guard = Arc::new(Snapshot {
            types,
            group_order,
            generation: old.generation + 1,
            aggregated: old.aggregated.clone(),
        });
    }

    /// Whether `served` differs from the aggregated types now in the catalog.
    pub fn aggregated_differs(&self, served: &[ResourceType]) -> bool {
        let snapshot = self.snapshot();
        served.len() != snapshot.aggregated.len()
            || served.iter().any(|t| {
                let key = (t.group.clone(), t.version.clone(), t.plural.clone());
                !snapshot.aggregated.contains(&key) || snapshot.types.get(&key).is_none_or(|o| **o != *t)
            })
    }

    /// Replaces the types served through the aggregation layer with `served` (a group version
    /// served here keeps its own types).
    pub fn set_aggregated(&self, served: Vec<ResourceType>) {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = guard.clone();
        let mut types = old.types.clone();
        for key in &old.aggregated {
            types.remove(key);
        }
        let mut aggregated = std::collections::BTreeSet::new();
        for t in served {
            let key = (t.group.clone(), t.version.clone(), t.plural.clone());
            if types.contains_key(&key) {
                continue;
            }
            aggregated.insert(key.clone());
            types.insert(key, Arc::new(t));
        }
        let mut group_order: Vec<String> =
            old.group_order.iter().filter(|g| types.values().any(|t| &t.group == *g)).cloned().collect();
        let mut new_groups: Vec<String> = Vec::new();
        for t in types.values() {
            if !group_order.contains(&t.group) && !new_groups.contains(&t.group) {
                new_groups.push(t.group.clone());
            }
        }
        new_groups.sort();
        group_order.extend(new_groups);
        *guard = Arc::new(Snapshot { types, group_order, generation: old.generation + 1, aggregated });
    }

    /// The current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces all custom resource types with `custom` (from the Established CRDs).
    pub fn set_custom(&self, custom: Vec<ResourceType>) {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = guard.clone();
        let mut types: BTreeMap<_, _> =
            old.types.iter().filter(|(_, t)| !t.is_custom()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut group_order: Vec<String> = Vec::new();
        for t in types.values() {
            if !group_order.contains(&t.group) {
                group_order.push(t.group.clone());
            }
        }
        group_order.sort_by_key(|g| BUILTIN.iter().position(|l| l.group == g.as_str()).unwrap_or(usize::MAX));
        let mut custom_groups: Vec<String> = Vec::new();
        for t in custom {
            let key = (t.group.clone(), t.version.clone(), t.plural.clone());
            if types.contains_key(&key) {
                continue;
            }
            if !group_order.contains(&t.group) && !custom_groups.contains(&t.group) {
                custom_groups.push(t.group.clone());
            }
            types.insert(key, Arc::new(t));
        }
        custom_groups.sort();
        group_order.extend(custom_groups);
        let unchanged =
            types.len() == old.types.len() && types.iter().all(|(k, v)| old.types.get(k).is_some_and(|o| o == v));
        if unchanged {
            return;
        }
        *guard = Arc::new(Snapshot {
            types,
            group_order,
            generation: old.generation + 1,
            aggregated: old.aggregated.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_namespaces_and_scopes() {
        let snapshot = Catalog::builtin().snapshot();
        let pods = snapshot.get("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "p1"), "/registry/core/pods/default/p1");
        assert_eq!(pods.namespace_prefix(None), "/registry/core/pods/");
        let nodes = snapshot.get("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/core/nodes/n1");
        let deploy = snapshot.get("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.key(Some("a"), "d"), "/registry/apps/deployments/a/d");
        assert!(deploy.scale.is_some() && deploy.generation);
    }

    #[test]
    fn new_events_share_core_event_storage() {
        let snapshot = Catalog::builtin().snapshot();
        let core = snapshot.get("", "v1", "events").unwrap();
        let new = snapshot.get("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(core.key_prefix(), new.key_prefix());
    }

    #[test]
    fn versions_order_ga_before_beta_before_alpha() {
        let mut v = vec!["v1alpha1", "v2beta1", "v1", "v1beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }

    #[test]
    fn custom_types_appear_and_disappear() {
        let catalog = Catalog::builtin();
        let before = catalog.snapshot().generation;
        let mut widget = builtin(&line("example.com", "v1", "widgets", "Widget", 0, &[], &[]));
        widget.custom = Some(CustomInfo {
            schema: None,
            printer_columns: vec![],
            crd_name: "widgets.example.com".into(),
            storage_version: "v1".into(),
            terminating: false,
            conversion_webhook: None,
        });
        catalog.set_custom(vec![widget.clone()]);
        let snapshot = catalog.snapshot();
        assert!(snapshot.get("example.com", "v1", "widgets").is_some());
        assert_eq!(snapshot.group_order.last().unwrap(), "example.com");
        assert_eq!(snapshot.group_order[0], "");
        catalog.set_custom(vec![widget]);
        assert_eq!(catalog.snapshot().generation, before + 1, "no change, no new generation");
        catalog.set_custom(vec![]);
        assert!(catalog.snapshot().get("example.com", "v1", "widgets").is_none());
    }
}
