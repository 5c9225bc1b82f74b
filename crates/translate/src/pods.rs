//! Pods (sync-behavior.md section 4): the host pod for a virtual pod, the objects it references,
//! and the virtual status from the host pod. Directions: spec virtual → host on create (image
//! changes are forced onto the host afterwards); status host → virtual.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::Context;
use crate::labels::{host_labels, namespace_labels};
use crate::metadata::{Identity, host_annotations, kind_string};
use crate::names::{host_name, kube_root_ca_host_name};

/// What a virtual pod needs on the host besides itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Config maps (virtual names, in the pod's namespace).
    pub config_maps: BTreeSet<String>,
    /// Secrets (virtual names, in the pod's namespace).
    pub secrets: BTreeSet<String>,
    /// Persistent volume claims (virtual names, in the pod's namespace).
    pub claims: BTreeSet<String>,
}

/// Settings of `sync.toHost.pods` the translation needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSettings {
    /// Exact image string → host image.
    pub translate_image: BTreeMap<String, String>,
    /// Tolerations added to every host pod.
    pub enforce_tolerations: Vec<Value>,
    /// Service account tokens go into a host secret per pod instead of pod annotations
    /// (`sync.toHost.pods.useSecretsForSATokens`).
    pub token_secrets: bool,
    /// Service accounts are synced (`sync.toHost.serviceAccounts.enabled`): host pods run under
    /// the host copy of their own account instead of the shared workload account.
    pub service_accounts: bool,
    /// What happens to `priorityClassName`/`priority`.
    pub priority: PriorityMode,
    /// The init container that puts a pod's virtual FQDN into its `/etc/hosts`
    /// (`sync.toHost.pods.rewriteHosts`; None when disabled).
    pub rewrite_hosts: Option<RewriteHosts>,
    /// `sync.toHost.pods.runtimeClassName`: forced on every host pod (empty: none).
    pub runtime_class: String,
    /// `sync.toHost.pods.priorityClassName`: the class of host pods that end up without one
    /// (their `priority` then cleared for the host's admission to fill in; empty: none).
    pub default_priority_class: String,
    /// `controlPlane.advanced.workloadServiceAccount.name`: the host account host pods run under
    /// (empty: `vc-workload-<VC>`).
    pub workload_account: String,
    /// `sync.fromHost.nodes.selector.labels`, merged into every host pod's `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
}

impl PodSettings {
    /// The host service account of host pods (when service accounts are not synced).
    pub fn workload_account(&self, context: &Context) -> String {
        if self.workload_account.is_empty() {
            format!("vc-workload-{}", context.name)
        } else {
            self.workload_account.clone()
        }
    }
}

/// The `rewriteHosts` init container's image and resources.
#[derive(Clone, Debug, PartialEq)]
pub struct RewriteHosts {
    /// The image, registry included.
    pub image: String,
    /// The container's `resources`.
    pub resources: Value,
}

impl Default for RewriteHosts {
    fn default() -> Self {
        let quantities = json!({"cpu": "30m", "memory": "64Mi"});
        RewriteHosts {
            image: "mirror.gcr.io/library/alpine:3.20".into(),
            resources: json!({"limits": quantities, "requests": quantities}),
        }
    }
}

/// Name of the init container, and of its volume, that rewrite `/etc/hosts` (§4.5).
pub const REWRITE_HOSTS: &str = "vcluster-rewrite-hosts";
/// `vcluster.loft.sh/owner-set-kind`: the kind of the set that owns a host pod.
pub const OWNER_SET_KIND: &str = "vcluster.loft.sh/owner-set-kind";

/// Adds the `/etc/hosts` rewrite to a host pod spec whose virtual pod has a subdomain (§4.5):
/// an emptyDir, a first init container writing the hosts file with the virtual FQDN, and that
/// file mounted at `/etc/hosts` in every other container.
fn rewrite_hosts(spec: &mut Map<String, Value>, settings: &RewriteHosts, fqdn: &str, hostname: &str) {
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(volumes) = volumes.as_array_mut() {
        volumes.push(json!({"name": REWRITE_HOSTS, "emptyDir": {}}));
    }
    let mount = json!({"name": REWRITE_HOSTS, "mountPath": "/etc/hosts", "subPath": "hosts"});
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            let mounts = container.as_object_mut().map(|c| c.entry("volumeMounts").or_insert_with(|| json!([])));
            if let Some(mounts) = mounts.and_then(Value::as_array_mut) {
                mounts.push(mount.clone());
            }
        }
    }
    let script =
        format!("sed -E -e 's/^(\\d+.\\d+.\\d+.\\d+\\s+){hostname}$/\\1 {fqdn} {hostname}/' /etc/hosts > /hosts/hosts");
    let init = json!({
        "name": REWRITE_HOSTS,
        "image": settings.image,
        "command": ["sh"],
        "args": ["-c", script],
        "resources": settings.resources,
        "securityContext": {"runAsUser": 1001, "runAsGroup": 1001, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": REWRITE_HOSTS, "mountPath": "/hosts"}],
    });
    let inits = spec.entry("initContainers").or_insert_with(|| json!([]));
    if let Some(inits) = inits.as_array_mut() {
        inits.insert(0, init);
    }
}

/// Downward-API paths as the host pod must read them (§4.8): its own name, namespace, uid,
/// labels and account are the host pod's, so the virtual ones come from its annotations.
fn downward_path(context: &Context, path: &str) -> Option<String> {
    let annotation = |key: &str| Some(format!("metadata.annotations['vcluster.loft.sh/{key}']"));
    match path {
        "metadata.name" => annotation("name"),
        "metadata.namespace" => annotation("namespace"),
        "metadata.uid" => annotation("uid"),
        "metadata.labels" => annotation("labels"),
        "spec.serviceAccountName" => annotation("service-account-name"),
        _ => {
            let key = path.strip_prefix("metadata.labels['")?.strip_suffix("']")?;
            crate::labels::RESERVED
                .contains(&key)
                .then(|| format!("metadata.labels['{}']", crate::labels::translated_key(context, key)))
        }
    }
}

fn rewrite_field_ref(context: &Context, holder: &mut Value) {
    if let Some(path) = holder.pointer("/fieldRef/fieldPath").and_then(Value::as_str)
        && let Some(rewritten) = downward_path(context, path)
    {
        holder["fieldRef"]["fieldPath"] = json!(rewritten);
    }
}

/// How host pods get their priority (sync-behavior.md 4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PriorityMode {
    /// No priority class sync: both fields are cleared.
    #[default]
    Cleared,
    /// Priority classes come from the host: both are kept.
    Kept,
    /// Priority classes go to the host: the class is renamed to its host copy, `priority` is
    /// left to the host's admission.
    Translated,
}

/// The host secret holding the tokens of `pod` in secret mode (sync-behavior.md 4.7.1):
/// `HostName("<pod>-sa-token", namespace)`, one key per volume, never synced back, no marker labels.
pub fn token_secret(context: &Context, pod: &Value, tokens: &BTreeMap<String, String>) -> Value {
    let name = text(pod, "/metadata/name");
    let namespace = text(pod, "/metadata/namespace");
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": token_secret_name(context, name, namespace),
            "namespace": context.host_namespace,
            "annotations": {"vcluster.loft.sh/skip-backsync": "true"},
        },
        "stringData": tokens,
    })
}

/// The name of that secret.
pub fn token_secret_name(context: &Context, pod: &str, namespace: &str) -> String {
    host_name(context, &format!("{pod}-sa-token"), namespace)
}

/// In secret mode, the secret's data: each token under the name of the volume it is for, in the
/// order [`token_audiences`] lists the sources.
pub fn token_secret_data(pod: &Value, tokens: &[String]) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let mut index = 0;
    for volume in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let sources = volume.pointer("/projected/sources").and_then(Value::as_array).cloned().unwrap_or_default();
        for _ in sources.iter().filter(|s| s.get("serviceAccountToken").is_some()) {
            if let Some(token) = tokens.get(index) {
                data.insert(text(volume, "/name").to_string(), token.clone());
            }
            index += 1;
        }
    }
    data
}

fn strings(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The claim of a pod's generic ephemeral volume (`<pod>-<volume>`, as upstream names it).
pub fn ephemeral_claim_name(pod: &str, volume: &str) -> String {
    format!("{pod}-{volume}")
}

/// The config maps, secrets and claims a pod refers to.
pub fn references(pod: &Value) -> References {
    let mut refs = References::default();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let pod_name = text(pod, "/metadata/name");
    for volume in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        if volume.get("ephemeral").is_some() {
            refs.claims.insert(ephemeral_claim_name(pod_name, text(volume, "/name")));
        }
        if let Some(name) = volume.pointer("/configMap/name").and_then(Value::as_str) {
            refs.config_maps.insert(name.into());
        }
        if let Some(name) = volume.pointer("/secret/secretName").and_then(Value::as_str) {
            refs.secrets.insert(name.into());
        }
        if let Some(name) = volume.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) {
            refs.claims.insert(name.into());
        }
        for source in volume.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = source.pointer("/configMap/name").and_then(Value::as_str) {
                refs.config_maps.insert(name.into());
            }
            if let Some(name) = source.pointer("/secret/name").and_then(Value::as_str) {
                refs.secrets.insert(name.into());
            }
        }
    }
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for container in spec.get(field).and_then(Value::as_array).into_iter().flatten() {
            for env in container.get("env").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = env.pointer("/valueFrom/configMapKeyRef/name").and_then(Value::as_str) {
                    refs.config_maps.insert(name.into());
                }
                if let Some(name) = env.pointer("/valueFrom/secretKeyRef/name").and_then(Value::as_str) {
                    refs.secrets.insert(name.into());
                }
            }
            for from in container.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = from.pointer("/configMapRef/name").and_then(Value::as_str) {
                    refs.config_maps.insert(name.into());
                }
                if let Some(name) = from.pointer("/secretRef/name").and_then(Value::as_str) {
                    refs.secrets.insert(name.into());
                }
            }
        }
    }
    for secret in spec.get("imagePullSecrets").and_then(Value::as_array).into_iter().flatten() {
        if let Some(name) = secret.get("name").and_then(Value::as_str) {
            refs.secrets.insert(name.into());
        }
    }
    refs
}

/// The host name of a config map referenced from namespace `namespace`.
pub fn config_map_host_name(context: &Context, name: &str, namespace: &str) -> String {
    if name == "kube-root-ca.crt" { kube_root_ca_host_name(context) } else { host_name(context, name, namespace) }
}

fn rename(value: &mut Value, pointer: &str, to: impl Fn(&str) -> String) {
    if let Some(slot) = value.pointer_mut(pointer)
        && let Some(name) = slot.as_str().map(String::from)
    {
        *slot = json!(to(&name));
    }
}

/// What a host pod needs from the running clusters (sync-behavior.md 4.3, 4.4, 4.7.1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodEnvironment {
    /// Cluster IP of the virtual cluster's host service: `kubernetes.default` host aliases.
    pub api_service_ip: Option<String>,
    /// Cluster IP of the host copy of the virtual `kube-system/kube-dns`: the pod's nameserver.
    pub dns_ip: Option<String>,
    /// The cluster domain (`cluster.local` unless configured).
    pub cluster_domain: String,
    /// Tokens the virtual API server minted for the pod's projected `serviceAccountToken`
    /// sources, in the order [`token_audiences`] lists them.
    pub tokens: Vec<String>,
    /// The service-link variables of the virtual services of the pod's namespace (§4.8,
    /// [`namespace_service_links`]), written into each container.
    pub service_links: std::sync::Arc<Vec<(String, String)>>,
    /// Host config maps holding the namespace's service-link variables when there are too many
    /// to write into every container ([`INLINE_SERVICE_LINKS`]); read through `envFrom` instead.
    pub service_link_config_maps: Vec<String>,
}

/// Up to this many service-link variables (of the virtual services of a namespace) are written
/// into each container; beyond, they are kept in config maps the containers read through
/// `envFrom`, so a host pod of a namespace with thousands of services stays small (a real API
/// server refuses objects over 1.5 MB; each service adds 7 variables to every container).
pub const INLINE_SERVICE_LINKS: usize = 350;

/// Data per service-link config map (a config map holds at most 1 MiB).
const LINKS_PER_CONFIG_MAP_BYTES: usize = 512 * 1024;

/// The service-link variables of the virtual services of a namespace (not `kubernetes`), sorted.
pub fn namespace_service_links(services: &[Value]) -> Vec<(String, String)> {
    let mut variables = std::collections::BTreeMap::new();
    for service in services {
        let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let ip = service.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
        if ip.is_empty() || ip == "None" || name == "kubernetes" {
            continue;
        }
        let ports = service.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
        variables.extend(service_link_variables(name, ip, &ports));
    }
    variables.into_iter().collect()
}

/// The host config maps holding `links` of virtual namespace `namespace` (each under 512 KiB),
/// named `vc-service-links-<i>.<namespace>.<VC>` (no translated name has dots and no `-x-`
/// suffix, so none can collide) and labelled `vcluster.loft.sh/controlled-by`, so no syncer
/// takes them for a copy of a virtual object.
pub fn service_link_config_maps(context: &Context, namespace: &str, links: &[(String, String)]) -> Vec<Value> {
    let mut chunks: Vec<Map<String, Value>> = vec![Map::new()];
    let mut size = 0;
    for (name, value) in links {
        let entry = name.len() + value.len();
        if size + entry > LINKS_PER_CONFIG_MAP_BYTES && !chunks.last().is_some_and(Map::is_empty) {
            chunks.push(Map::new());
            size = 0;
        }
        size += entry;
        chunks.last_mut().expect("one chunk").insert(name.clone(), json!(value));
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": format!("vc-service-links-{i}.{namespace}.{}", context.name),
                    "namespace": context.host_namespace,
                    "labels": {crate::labels::CONTROLLED_BY: "vkube-service-links"},
                },
                "data": data,
            })
        })
        .collect()
}

/// The docker-links style variables of one service, as the kubelet writes them
/// (`<NAME>_SERVICE_HOST`, `_SERVICE_PORT`, `_SERVICE_PORT_<PORTNAME>`, `_PORT`,
/// `_PORT_<port>_<PROTO>` and its `_PROTO`/`_PORT`/`_ADDR`), for a service with a cluster IP.
pub fn service_link_variables(name: &str, ip: &str, ports: &[Value]) -> Vec<(String, String)> {
    let Some(first) = ports.first() else { return Vec::new() };
    let prefix = name.to_uppercase().replace('-', "_");
    let port_of = |p: &Value| p.get("port").and_then(Value::as_i64).unwrap_or(0);
    let proto_of = |p: &Value| p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_lowercase();
    let mut out = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
        (format!("{prefix}_SERVICE_PORT"), port_of(first).to_string()),
    ];
    for port in ports {
        if let Some(port_name) = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            out.push((
                format!("{prefix}_SERVICE_PORT_{}", port_name.to_uppercase().replace('-', "_")),
                port_of(port).to_string(),
            ));
        }
    }
    out.push((format!("{prefix}_PORT"), format!("{}://{ip}:{}", proto_of(first), port_of(first))));
    for port in ports {
        let (number, proto) = (port_of(port), proto_of(port));
        let base = format!("{prefix}_PORT_{number}_{}", proto.to_uppercase());
        out.push((base.clone(), format!("{proto}://{ip}:{number}")));
        out.push((format!("{base}_PROTO"), proto.clone()));
        out.push((format!("{base}_PORT"), number.to_string()));
        out.push((format!("{base}_ADDR"), ip.to_string()));
    }
    out
}

/// The service-link variables of a pod (§4.8): those of the virtual services of its namespace
/// when `enableServiceLinks` is not false, and always `KUBERNETES_*` for the virtual cluster's
/// API service; sorted by name.
fn service_links(pod_spec: &Map<String, Value>, environment: &PodEnvironment) -> Vec<(String, String)> {
    let mut variables = std::collections::BTreeMap::new();
    if links_enabled(pod_spec) && environment.service_link_config_maps.is_empty() {
        variables.extend(environment.service_links.iter().cloned());
    }
    if let Some(ip) = &environment.api_service_ip {
        let port = json!([{"name": "https", "port": 443, "protocol": "TCP"}]);
        variables.extend(service_link_variables("kubernetes", ip, port.as_array().expect("a list")));
    }
    variables.into_iter().collect()
}

fn links_enabled(pod_spec: &Map<String, Value>) -> bool {
    pod_spec.get("enableServiceLinks").and_then(Value::as_bool) != Some(false)
}

/// The audiences of a pod's projected `serviceAccountToken` sources, in order (None: the
/// default audiences).
pub fn token_audiences(pod: &Value) -> Vec<Option<String>> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|v| v.pointer("/projected/sources").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter_map(|s| s.get("serviceAccountToken").cloned())
        .map(|t| t.get("audience").and_then(Value::as_str).filter(|a| !a.is_empty()).map(String::from))
        .collect()
}

/// The host annotation holding token `index` of pod `uid`: `vcluster.loft.sh/token-` and eight
/// lowercase alphanumerics (derived from the pod, so a retried create writes the same key).
fn token_annotation(uid: &str, index: usize) -> String {
    let digest = crate::names::hash_prefix(&format!("{uid}/{index}"), 16);
    let suffix: String = digest.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    format!("vcluster.loft.sh/token-{}", suffix.to_ascii_lowercase())
}

/// The host pod for `pod` (a virtual pod, as JSON) whose namespace has `namespace_labels`.
pub fn host_pod(
    context: &Context,
    pod: &Value,
    virtual_namespace_labels: &BTreeMap<String, String>,
    settings: &PodSettings,
    environment: &PodEnvironment,
) -> Value {
    let name = text(pod, "/metadata/name");
    let namespace = text(pod, "/metadata/namespace");
    let uid = text(pod, "/metadata/uid");
    let host = host_name(context, name, namespace);
    let cm = |n: &str| config_map_host_name(context, n, namespace);
    let other = |n: &str| host_name(context, n, namespace);

    let mut labels = host_labels(context, &strings(pod.pointer("/metadata/labels")), None, Some(namespace));
    labels.extend(namespace_labels(context, virtual_namespace_labels));
    let virtual_annotations = strings(pod.pointer("/metadata/annotations"));
    let identity = Identity {
        name,
        namespace: Some(namespace),
        uid,
        kind: &kind_string("", "v1", "Pod"),
        host_name: &host,
        host_namespace: Some(&context.host_namespace),
    };
    let mut annotations = host_annotations(&virtual_annotations, &BTreeMap::new(), &[], &identity);
    let mut extra = |key: &str, value: String| {
        if !virtual_annotations.contains_key(key) {
            annotations.insert(key.to_string(), value);
        }
    };
    extra("vcluster.loft.sh/namespace", namespace.into());
    extra("vcluster.loft.sh/name", name.into());
    extra("vcluster.loft.sh/uid", uid.into());
    extra("vcluster.loft.sh/service-account-name", text(pod, "/spec/serviceAccountName").into());
    let label_lines: Vec<String> = strings(pod.pointer("/metadata/labels"))
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
        .collect();
    extra("vcluster.loft.sh/labels", label_lines.join("\n"));
    let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array).cloned().unwrap_or_default();
    let controller = owners.iter().find(|o| o.get("controller").and_then(Value::as_bool) == Some(true));
    extra("cluster-autoscaler.kubernetes.io/safe-to-evict", controller.is_some().to_string());
    if controller.and_then(|c| c.get("kind")).and_then(Value::as_str) == Some("DaemonSet") {
        extra("cluster-autoscaler.kubernetes.io/daemonset-pod", "true".into());
    }
    if !owners.is_empty() {
        extra("vcluster.loft.sh/owner-references", serde_json::to_string(&owners).unwrap_or_default());
    }
    // The kind of the workload set the pod belongs to (the reference's QUIRK checks `apps/v1` for
    // Jobs too, so it never names a Job; vkube names Jobs by their `batch/v1`).
    let set_kind = owners.iter().find_map(|o| {
        let kind = o.get("kind").and_then(Value::as_str)?;
        let api_version = o.get("apiVersion").and_then(Value::as_str)?;
        match (api_version, kind) {
            ("apps/v1", "DaemonSet" | "ReplicaSet" | "StatefulSet") | ("batch/v1", "Job") => Some(kind.to_string()),
            _ => None,
        }
    });
    if let Some(kind) = set_kind {
        extra(OWNER_SET_KIND, kind);
    }

    let mut spec = pod.get("spec").cloned().unwrap_or(json!({}));
    if let Some(map) = spec.as_object_mut() {
        let account = if settings.service_accounts {
            let own = map
                .get("serviceAccountName")
                .or_else(|| map.get("serviceAccount"))
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .unwrap_or("default");
            host_name(context, own, namespace)
        } else {
            settings.workload_account(context)
        };
        map.insert("serviceAccountName".into(), json!(account));
        map.remove("serviceAccount");
        map.insert("automountServiceAccountToken".into(), json!(false));
        map.insert("enableServiceLinks".into(), json!(false));
        // §4.1: `sync.fromHost.nodes.selector.labels` pin every host pod to the selected nodes
        // (the configured values win over the pod's own).
        if !settings.node_selector.is_empty() {
            let selector = map.entry("nodeSelector").or_insert_with(|| json!({}));
            if !selector.is_object() {
                *selector = json!({});
            }
            for (key, value) in &settings.node_selector {
                selector[key] = json!(value);
            }
        }
        match settings.priority {
            PriorityMode::Kept => {}
            PriorityMode::Cleared => {
                map.remove("priorityClassName");
                map.remove("priority");
                map.remove("preemptionPolicy");
            }
            PriorityMode::Translated => {
                map.remove("priority");
                map.remove("preemptionPolicy");
                let class = map.get("priorityClassName").and_then(Value::as_str).unwrap_or_default().to_string();
                if !class.is_empty() && !matches!(class.as_str(), "system-node-critical" | "system-cluster-critical") {
                    map.insert("priorityClassName".into(), json!(crate::names::host_name_cluster(context, &class)));
                }
            }
        }
        // §4.3: configured classes.
        let has_class = map.get("priorityClassName").and_then(Value::as_str).is_some_and(|c| !c.is_empty());
        if !has_class && !settings.default_priority_class.is_empty() {
            map.insert("priorityClassName".into(), json!(settings.default_priority_class));
            map.remove("priority");
            map.remove("preemptionPolicy");
        }
        if !settings.runtime_class.is_empty() {
            map.insert("runtimeClassName".into(), json!(settings.runtime_class));
        }
        let subdomain = map.remove("subdomain").and_then(|s| s.as_str().map(String::from)).unwrap_or_default();
        let mut hostname = map.get("hostname").and_then(Value::as_str).unwrap_or("").to_string();
        if hostname.is_empty() {
            let mut short: String = name.chars().take(63).collect::<String>().replace('.', "-");
            if short.ends_with('-') {
                short.pop();
            }
            map.insert("hostname".into(), json!(short));
            hostname = short;
        }
        let opted_out = ["vcluster.loft.sh/disable-subdomain-rewrite", "vcluster.loft.sh/hosts-rewritten"]
            .iter()
            .all(|key| virtual_annotations.get(*key).is_some_and(|v| v == "true"));
        if let Some(rewrite) = settings.rewrite_hosts.as_ref().filter(|_| !subdomain.is_empty() && !opted_out) {
            let domain =
                if environment.cluster_domain.is_empty() { "cluster.local" } else { &environment.cluster_domain };
            let fqdn = format!("{hostname}.{subdomain}.{namespace}.svc.{domain}");
            rewrite_hosts(map, rewrite, &fqdn, &hostname);
            annotations.insert("vcluster.loft.sh/hosts-rewritten".into(), "true".into());
        }
        // §4.6: affinity terms and spread constraints see only this virtual cluster's pods.
        if let Some(affinity) = map.get_mut("affinity") {
            for kind in ["podAffinity", "podAntiAffinity"] {
                let required = format!("/{kind}/requiredDuringSchedulingIgnoredDuringExecution");
                for term in affinity.pointer_mut(&required).and_then(Value::as_array_mut).into_iter().flatten() {
                    *term = crate::labels::host_affinity_term(context, term, namespace).0;
                }
                let preferred = format!("/{kind}/preferredDuringSchedulingIgnoredDuringExecution");
                for weighted in affinity.pointer_mut(&preferred).and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(term) = weighted.get("podAffinityTerm").cloned() {
                        weighted["podAffinityTerm"] = crate::labels::host_affinity_term(context, &term, namespace).0;
                    }
                }
            }
        }
        for constraint in map.get_mut("topologySpreadConstraints").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(selector) = constraint.get("labelSelector").filter(|s| !s.is_null()).cloned() {
                constraint["labelSelector"] = crate::labels::host_spread_selector(context, &selector, namespace);
            }
        }
        let mut tolerations = map.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
        for enforced in &settings.enforce_tolerations {
            if !tolerations.contains(enforced) {
                tolerations.push(enforced.clone());
            }
        }
        if !tolerations.is_empty() {
            map.insert("tolerations".into(), Value::Array(tolerations));
        }
    }
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(image) = container.get("image").and_then(Value::as_str)
                && let Some(replacement) = settings.translate_image.get(image)
            {
                container["image"] = json!(replacement);
            }
            for env in container.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
                rename(env, "/valueFrom/configMapKeyRef/name", cm);
                rename(env, "/valueFrom/secretKeyRef/name", other);
                if let Some(from) = env.get_mut("valueFrom") {
                    rewrite_field_ref(context, from);
                }
            }
            for from in container.get_mut("envFrom").and_then(Value::as_array_mut).into_iter().flatten() {
                rename(from, "/configMapRef/name", cm);
                rename(from, "/secretRef/name", other);
            }
        }
    }
    for secret in spec.get_mut("imagePullSecrets").and_then(Value::as_array_mut).into_iter().flatten() {
        rename(secret, "/name", other);
    }
    let mut token_index = 0;
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes.iter_mut() {
            let volume_name = text(volume, "/name").to_string();
            // §4.7: a generic ephemeral volume is the claim the virtual cluster's controller made
            // for it, synced like any claim.
            if let Some(map) = volume.as_object_mut()
                && map.remove("ephemeral").is_some()
            {
                map.insert(
                    "persistentVolumeClaim".into(),
                    json!({"claimName": ephemeral_claim_name(name, &volume_name)}),
                );
            }
            rename(volume, "/configMap/name", cm);
            rename(volume, "/secret/secretName", other);
            rename(volume, "/persistentVolumeClaim/claimName", other);
            for item in volume.pointer_mut("/downwardAPI/items").and_then(Value::as_array_mut).into_iter().flatten() {
                rewrite_field_ref(context, item);
            }
            if let Some(sources) = volume.pointer_mut("/projected/sources").and_then(Value::as_array_mut) {
                for source in sources.iter_mut() {
                    rename(source, "/configMap/name", cm);
                    rename(source, "/secret/name", other);
                    for item in
                        source.pointer_mut("/downwardAPI/items").and_then(Value::as_array_mut).into_iter().flatten()
                    {
                        rewrite_field_ref(context, item);
                    }
                    // The virtual cluster's token travels in an annotation the kubelet projects.
                    let Some(path) = source.pointer("/serviceAccountToken/path").and_then(Value::as_str) else {
                        continue;
                    };
                    let path = path.to_string();
                    let Some(token) = environment.tokens.get(token_index) else {
                        *source = Value::Null;
                        continue;
                    };
                    token_index += 1;
                    if settings.token_secrets {
                        let secret = token_secret_name(context, name, namespace);
                        *source = json!({"secret": {"name": secret, "items": [{"key": volume_name, "path": path, "mode": 420}]}});
                        continue;
                    }
                    let key = token_annotation(uid, token_index - 1);
                    tokens.insert(key.clone(), token.clone());
                    *source = json!({"downwardAPI": {"items": [{"path": path, "mode": 420,
                        "fieldRef": {"apiVersion": "v1", "fieldPath": format!("metadata.annotations['{key}']")}}]}});
                }
                sources.retain(|s| !s.is_null());
            }
        }
    }
    if let Some(map) = spec.as_object_mut() {
        apply_environment(map, namespace, environment);
    }
    // The host's kubelet must not add the host's services (enableServiceLinks is off there); the
    // virtual ones are written into every container instead, before its own variables, which win.
    let links = pod.get("spec").and_then(Value::as_object).map(|s| service_links(s, environment)).unwrap_or_default();
    if !links.is_empty() {
        for field in ["containers", "initContainers"] {
            for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                let own: Vec<Value> = container.get("env").and_then(Value::as_array).cloned().unwrap_or_default();
                let defined: std::collections::HashSet<String> =
                    own.iter().filter_map(|e| e.get("name").and_then(Value::as_str).map(String::from)).collect();
                let mut env: Vec<Value> = links
                    .iter()
                    .filter(|(name, _)| !defined.contains(name))
                    .map(|(name, value)| json!({"name": name, "value": value}))
                    .collect();
                env.extend(own);
                container["env"] = Value::Array(env);
            }
        }
    }
    // Too many to write into each container: read from the namespace's config maps, first, so
    // the container's own `envFrom` sources and variables win.
    let enabled = pod.get("spec").and_then(Value::as_object).is_some_and(links_enabled);
    if enabled && !environment.service_link_config_maps.is_empty() {
        let sources: Vec<Value> =
            environment.service_link_config_maps.iter().map(|name| json!({"configMapRef": {"name": name}})).collect();
        for field in ["containers", "initContainers"] {
            for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                let mut env_from = sources.clone();
                env_from.extend(container.get("envFrom").and_then(Value::as_array).cloned().unwrap_or_default());
                container["envFrom"] = Value::Array(env_from);
            }
        }
    }
    annotations.extend(tokens);
    let metadata: Map<String, Value> = [
        ("name".to_string(), json!(host)),
        ("namespace".to_string(), json!(context.host_namespace)),
        ("labels".to_string(), json!(labels)),
        ("annotations".to_string(), json!(annotations)),
    ]
    .into_iter()
    .collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// Host aliases for `kubernetes.default` and the pod's DNS (sync-behavior.md 4.3, 4.4).
fn apply_environment(spec: &mut Map<String, Value>, namespace: &str, environment: &PodEnvironment) {
    let domain = environment.cluster_domain.as_str();
    if let Some(ip) = &environment.api_service_ip {
        let mut hostnames = Vec::new();
        if !domain.is_empty() {
            hostnames.push(format!("kubernetes.default.svc.{domain}"));
        }
        hostnames.extend(["kubernetes", "kubernetes.default", "kubernetes.default.svc"].map(String::from));
        let aliases = spec.entry("hostAliases").or_insert(json!([]));
        if let Some(aliases) = aliases.as_array_mut() {
            aliases.push(json!({"ip": ip, "hostnames": hostnames}));
        }
    }
    let Some(dns_ip) = &environment.dns_ip else { return };
    let policy = spec.get("dnsPolicy").and_then(Value::as_str).unwrap_or("ClusterFirst").to_string();
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let cluster_dns = (policy == "ClusterFirst" && !host_network) || policy == "ClusterFirstWithHostNet";
    if !cluster_dns {
        return;
    }
    let existing = spec.get("dnsConfig").cloned().unwrap_or(json!({}));
    let mut nameservers = vec![json!(dns_ip)];
    for server in existing.get("nameservers").and_then(Value::as_array).into_iter().flatten() {
        if !nameservers.contains(server) {
            nameservers.push(server.clone());
        }
    }
    let mut config = json!({"nameservers": nameservers, "options": [{"name": "ndots", "value": "5"}]});
    if !domain.is_empty() {
        let mut searches =
            vec![json!(format!("{namespace}.svc.{domain}")), json!(format!("svc.{domain}")), json!(domain)];
        searches.extend(existing.get("searches").and_then(Value::as_array).cloned().unwrap_or_default());
        config["searches"] = json!(searches);
    }
    spec.insert("dnsPolicy".into(), json!("None"));
    spec.insert("dnsConfig".into(), config);
}

/// A config map or secret copied to the host: data verbatim, metadata translated.
pub fn host_copy(context: &Context, object: &Value, kind: &str, host: &str) -> Value {
    let name = text(object, "/metadata/name");
    let namespace = text(object, "/metadata/namespace");
    let identity = Identity {
        name,
        namespace: Some(namespace),
        uid: text(object, "/metadata/uid"),
        kind: &kind_string("", "v1", kind),
        host_name: host,
        host_namespace: Some(&context.host_namespace),
    };
    let labels = host_labels(context, &strings(object.pointer("/metadata/labels")), None, Some(namespace));
    let annotations =
        host_annotations(&strings(object.pointer("/metadata/annotations")), &BTreeMap::new(), &[], &identity);
    let mut copy = json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": host, "namespace": context.host_namespace, "labels": labels, "annotations": annotations},
    });
    for field in ["data", "binaryData", "stringData", "type", "immutable"] {
        if let Some(value) = object.get(field) {
            copy[field] = value.clone();
        }
    }
    // A service account token secret goes to the host as plain data: the host's token
    // controller would otherwise manage (and overwrite) it for a service account it does not have.
    if kind == "Secret" && copy.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token") {
        copy["type"] = json!("Opaque");
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vc() -> Context {
        Context::new("my-vc", "vcluster-my-vc")
    }

    #[test]
    fn service_account_token_secrets_reach_the_host_as_opaque() {
        let token = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "namespace": "default",
            "annotations": {"kubernetes.io/service-account.name": "default"}},
            "type": "kubernetes.io/service-account-token", "data": {"token": "eA=="}});
        let copy = host_copy(&vc(), &token, "Secret", "t-x-default-x-my-vc");
        assert_eq!(copy["type"], "Opaque");
        assert_eq!(copy["data"]["token"], "eA==");
        let plain = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "p", "namespace": "default"}, "type": "kubernetes.io/tls"});
        assert_eq!(host_copy(&vc(), &plain, "Secret", "p-x-default-x-my-vc")["type"], "kubernetes.io/tls");
    }

    fn fixture() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nginx", "namespace": "default", "uid": "uid-1", "labels": {"app": "nginx", "release": "stable"}},
            "spec": {
                "serviceAccountName": "default",
                "containers": [{"name": "web", "image": "nginx:1.27",
                    "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                    "envFrom": [{"configMapRef": {"name": "settings"}}]}],
                "imagePullSecrets": [{"name": "registry"}],
                "volumes": [
                    {"name": "config", "configMap": {"name": "files"}},
                    {"name": "ca", "configMap": {"name": "kube-root-ca.crt"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}, {"secret": {"name": "extra"}}]}}
                ],
            },
            "status": {"phase": "Pending"},
        })
    }

    #[test]
    fn references_cover_volumes_env_and_pull_secrets() {
        let refs = references(&fixture());
        assert_eq!(refs.config_maps, ["files", "kube-root-ca.crt", "settings"].map(String::from).into());
        assert_eq!(refs.secrets, ["db", "extra", "registry"].map(String::from).into());
        assert_eq!(refs.claims, ["data"].map(String::from).into());
    }

    #[test]
    fn host_pod_is_translated() {
        let settings = PodSettings {
            translate_image: [("nginx:1.27".to_string(), "mirror.local/nginx:1.27".to_string())].into(),
            enforce_tolerations: vec![json!({"key": "dedicated", "operator": "Exists"})],
            token_secrets: false,
            service_accounts: false,
            priority: PriorityMode::Cleared,
            rewrite_hosts: None,
            runtime_class: String::new(),
            default_priority_class: String::new(),
            workload_account: String::new(),
            node_selector: [("pool".to_string(), "tenants".to_string())].into(),
        };
        let ns_labels: BTreeMap<String, String> =
            [("kubernetes.io/metadata.name".to_string(), "default".to_string())].into();
        let mut prioritized = fixture();
        prioritized["spec"]["priorityClassName"] = json!("high");
        prioritized["spec"]["priority"] = json!(1000);
        prioritized["spec"]["preemptionPolicy"] = json!("Never");
        for (mode, class, priority, policy) in [
            (PriorityMode::Cleared, None, None, None),
            (PriorityMode::Kept, Some("high"), Some(1000), Some("Never")),
            (PriorityMode::Translated, Some("vcluster-high-x-vcluster-my-vc-x-my-vc"), None, None),
        ] {
            let with_mode = PodSettings { priority: mode, ..settings.clone() };
            let host = host_pod(&vc(), &prioritized, &BTreeMap::new(), &with_mode, &PodEnvironment::default());
            assert_eq!(host["spec"]["priorityClassName"].as_str(), class, "{mode:?}");
            assert_eq!(host["spec"]["priority"].as_i64(), priority, "{mode:?}");
            assert_eq!(host["spec"]["preemptionPolicy"].as_str(), policy, "{mode:?}: the host's admission decides");
        }
        let synced_accounts = PodSettings { service_accounts: true, ..settings.clone() };
        let own = host_pod(&vc(), &fixture(), &ns_labels, &synced_accounts, &PodEnvironment::default());
        assert_eq!(own["spec"]["serviceAccountName"], "default-x-default-x-my-vc", "its own account's host copy");
        let host = host_pod(&vc(), &fixture(), &ns_labels, &settings, &PodEnvironment::default());
        assert_eq!(host["metadata"]["name"], "nginx-x-default-x-my-vc");
        assert_eq!(host["metadata"]["namespace"], "vcluster-my-vc");
        assert_eq!(host["spec"]["nodeSelector"], json!({"pool": "tenants"}), "pinned to the selected nodes");
        let mut pinned = fixture();
        pinned["spec"]["nodeSelector"] = json!({"pool": "mine", "disk": "ssd"});
        let pinned = host_pod(&vc(), &pinned, &ns_labels, &settings, &PodEnvironment::default());
        assert_eq!(pinned["spec"]["nodeSelector"], json!({"pool": "tenants", "disk": "ssd"}), "the configuration wins");
        let labels = &host["metadata"]["labels"];
        assert_eq!(labels["vcluster.loft.sh/label-my-vc-x-a4d451ec23"], "stable");
        assert_eq!(labels["vcluster.loft.sh/ns-label-my-vc-x-cf1227b7b2"], "default");
        assert_eq!(labels["vcluster.loft.sh/managed-by"], "my-vc");
        let annotations = &host["metadata"]["annotations"];
        assert_eq!(annotations["vcluster.loft.sh/object-kind"], "/v1, Kind=Pod");
        assert_eq!(annotations["vcluster.loft.sh/labels"], "app=\"nginx\"\nrelease=\"stable\"");
        assert_eq!(annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false");
        let spec = &host["spec"];
        assert_eq!(spec["serviceAccountName"], "vc-workload-my-vc");
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["hostname"], "nginx");
        assert_eq!(spec["containers"][0]["image"], "mirror.local/nginx:1.27");
        assert_eq!(spec["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"], "db-x-default-x-my-vc");
        assert_eq!(spec["containers"][0]["envFrom"][0]["configMapRef"]["name"], "settings-x-default-x-my-vc");
        assert_eq!(spec["imagePullSecrets"][0]["name"], "registry-x-default-x-my-vc");
        assert_eq!(spec["volumes"][0]["configMap"]["name"], "files-x-default-x-my-vc");
        assert_eq!(spec["volumes"][1]["configMap"]["name"], "vcluster-kube-root-ca.crt-x-my-vc");
        assert_eq!(spec["volumes"][2]["persistentVolumeClaim"]["claimName"], "data-x-default-x-my-vc");
        assert_eq!(
            spec["volumes"][3]["projected"]["sources"],
            json!([{"secret": {"name": "extra-x-default-x-my-vc"}}])
        );
        assert_eq!(spec["tolerations"], json!([{"key": "dedicated", "operator": "Exists"}]));
        assert!(host.get("status").is_none());
    }

    #[test]
    fn config_map_copies_keep_data_and_get_bookkeeping() {
        let cm = json!({"metadata": {"name": "settings", "namespace": "team", "uid": "u"}, "data": {"a": "1"}});
        let copy = host_copy(&vc(), &cm, "ConfigMap", "settings-x-team-x-my-vc");
        assert_eq!(copy["data"], json!({"a": "1"}));
        assert_eq!(copy["metadata"]["annotations"]["vcluster.loft.sh/object-name"], "settings");
        assert_eq!(copy["metadata"]["labels"]["vcluster.loft.sh/namespace"], "team");
    }

    #[test]
    fn service_links_are_written_like_the_kubelet_does() {
        let variables =
            service_link_variables("db-main", "10.96.0.20", &[json!({"name": "pg", "port": 5432, "protocol": "TCP"})]);
        let map: BTreeMap<String, String> = variables.into_iter().collect();
        assert_eq!(map["DB_MAIN_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(map["DB_MAIN_SERVICE_PORT"], "5432");
        assert_eq!(map["DB_MAIN_SERVICE_PORT_PG"], "5432");
        assert_eq!(map["DB_MAIN_PORT"], "tcp://10.96.0.20:5432");
        assert_eq!(map["DB_MAIN_PORT_5432_TCP"], "tcp://10.96.0.20:5432");
        assert_eq!(map["DB_MAIN_PORT_5432_TCP_PROTO"], "tcp");
        assert_eq!(map["DB_MAIN_PORT_5432_TCP_ADDR"], "10.96.0.20");
        assert_eq!(map.len(), 8);
    }

    #[test]
    fn many_service_links_are_read_from_config_maps_not_written_into_containers() {
        let services: Vec<Value> = (0..200)
            .map(|i| {
                json!({"metadata": {"name": format!("svc-{i}")}, "spec": {"clusterIP": format!("10.96.1.{i}"),
                "ports": [{"port": 80, "protocol": "TCP"}]}})
            })
            .collect();
        let links = namespace_service_links(&services);
        assert!(links.len() > INLINE_SERVICE_LINKS);
        let maps = service_link_config_maps(&vc(), "default", &links);
        assert_eq!(maps.len(), 1);
        let _ = &services;
        assert_eq!(maps[0]["metadata"]["name"], "vc-service-links-0.default.my-vc");
        assert_eq!(maps[0]["data"]["SVC_7_SERVICE_HOST"], "10.96.1.7");
        assert_eq!(maps[0]["metadata"]["labels"][crate::labels::CONTROLLED_BY], "vkube-service-links");
        let environment = PodEnvironment {
            api_service_ip: Some("10.96.0.10".into()),
            service_links: std::sync::Arc::new(links),
            service_link_config_maps: vec!["vc-service-links-0.default.my-vc".into()],
            ..PodEnvironment::default()
        };
        let mut pod = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "envFrom": [{"secretRef": {"name": "own"}}]}]}});
        let host = host_pod(&vc(), &pod, &BTreeMap::new(), &PodSettings::default(), &environment);
        let container = &host["spec"]["containers"][0];
        assert_eq!(container["envFrom"][0], json!({"configMapRef": {"name": "vc-service-links-0.default.my-vc"}}));
        assert_eq!(
            container["envFrom"][1]["secretRef"]["name"], "own-x-default-x-my-vc",
            "the pod's own source last, winning"
        );
        let names: Vec<&str> =
            container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert!(names.iter().all(|n| n.starts_with("KUBERNETES_")), "only the API's variables inline: {names:?}");
        pod["spec"]["enableServiceLinks"] = json!(false);
        let host = host_pod(&vc(), &pod, &BTreeMap::new(), &PodSettings::default(), &environment);
        assert_eq!(host["spec"]["containers"][0]["envFrom"].as_array().unwrap().len(), 1, "links off: none");
        // Thousands of services: several maps, each under the size limit.
        let many: Vec<(String, String)> =
            (0..40_000).map(|i| (format!("S{i}_SERVICE_HOST"), "10.96.200.200".into())).collect();
        let maps = service_link_config_maps(&vc(), "default", &many);
        assert!(maps.len() > 1);
        for map in &maps {
            assert!(serde_json::to_string(&map["data"]).unwrap().len() < 1024 * 1024);
        }
        let total: usize = maps.iter().map(|m| m["data"].as_object().unwrap().len()).sum();
        assert_eq!(total, many.len());
    }

    #[test]
    fn tokens_dns_and_the_api_service_come_from_the_environment() {
        let environment = PodEnvironment {
            api_service_ip: Some("10.96.0.10".into()),
            dns_ip: Some("10.96.0.53".into()),
            cluster_domain: "cluster.local".into(),
            tokens: vec!["eyJ.virtual.token".into()],
            service_links: std::sync::Arc::new(namespace_service_links(&[json!({"metadata": {"name": "db-main"},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}})])),
            service_link_config_maps: Vec::new(),
        };
        let pod = fixture();
        assert_eq!(token_audiences(&pod), vec![None]);
        let host = host_pod(&vc(), &pod, &BTreeMap::new(), &PodSettings::default(), &environment);
        let spec = &host["spec"];
        let item = &spec["volumes"][3]["projected"]["sources"][0]["downwardAPI"]["items"][0];
        assert_eq!(item["path"], "token");
        let field = item["fieldRef"]["fieldPath"].as_str().unwrap();
        let key = field.trim_start_matches("metadata.annotations['").trim_end_matches("']");
        assert!(
            key.starts_with("vcluster.loft.sh/token-") && key.len() == "vcluster.loft.sh/token-".len() + 8,
            "{key}"
        );
        assert_eq!(host["metadata"]["annotations"][key], "eyJ.virtual.token");
        assert_eq!(
            spec["volumes"][3]["projected"]["sources"][1],
            json!({"secret": {"name": "extra-x-default-x-my-vc"}})
        );
        assert_eq!(
            spec["hostAliases"],
            json!([{"ip": "10.96.0.10", "hostnames": ["kubernetes.default.svc.cluster.local", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]}])
        );
        assert_eq!(spec["dnsPolicy"], "None");
        assert_eq!(
            spec["dnsConfig"],
            json!({"nameservers": ["10.96.0.53"], "searches": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                   "options": [{"name": "ndots", "value": "5"}]})
        );
        // Default DNS policy and host-network pods keep the host's resolver.
        let mut own_dns = pod.clone();
        own_dns["spec"]["dnsPolicy"] = json!("Default");
        let host = host_pod(&vc(), &own_dns, &BTreeMap::new(), &PodSettings::default(), &environment);
        assert!(host["spec"].get("dnsConfig").is_none());
    }

    #[test]
    fn secret_mode_puts_tokens_in_a_secret_per_pod() {
        let settings = PodSettings { token_secrets: true, ..PodSettings::default() };
        let environment = PodEnvironment { tokens: vec!["eyJ.t".into()], ..PodEnvironment::default() };
        let pod = fixture();
        let host = host_pod(&vc(), &pod, &BTreeMap::new(), &settings, &environment);
        let source = &host["spec"]["volumes"][3]["projected"]["sources"][0];
        assert_eq!(
            source,
            &json!({"secret": {"name": "nginx-sa-token-x-default-x-my-vc", "items": [{"key": "token", "path": "token", "mode": 420}]}})
        );
        assert!(
            !host["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("vcluster.loft.sh/token-"))
        );
        let data = token_secret_data(&pod, &environment.tokens);
        assert_eq!(data, BTreeMap::from([("token".to_string(), "eyJ.t".to_string())]));
        let secret = token_secret(&vc(), &pod, &data);
        assert_eq!(secret["metadata"]["name"], "nginx-sa-token-x-default-x-my-vc");
        assert_eq!(secret["metadata"]["annotations"]["vcluster.loft.sh/skip-backsync"], "true");
        assert!(secret["metadata"].get("labels").is_none(), "no marker labels: the secret syncer leaves it alone");
        assert_eq!(secret["stringData"]["token"], "eyJ.t");
    }
}
