//! The typed `vcluster.yaml`: every key of the reference's `sync` section with its documented
//! default, plus the few settings vkube needs to run a virtual cluster.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A whole `vcluster.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// vkube settings that vcluster.yaml has no key for: the virtual cluster's name and host namespace.
    pub vkube: VkubeSettings,
    /// Where the control plane keeps its state and how its API server listens.
    pub control_plane: ControlPlane,
    /// Sync describes how to sync resources from the virtual cluster to host cluster and back.
    pub sync: Sync,
    /// Policies the virtual cluster enforces on its workloads.
    pub policies: Policies,
    /// Networking options related to the virtual cluster.
    pub networking: Networking,
}

/// `networking`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Networking {
    /// ReplicateServices allows replicating services from the host within the virtual cluster or the other way around.
    pub replicate_services: ReplicateServices,
}

/// `networking.replicateServices`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReplicateServices {
    /// ToHost defines the services that should get synced from virtual cluster to the host cluster. If services are
    /// synced to a different namespace than the virtual cluster is in, additional permissions for the other namespace
    /// are required.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to_host: Vec<ServiceMapping>,
    /// FromHost defines the services that should get synced from the host to the virtual cluster.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_host: Vec<ServiceMapping>,
}

/// One replicated service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceMapping {
    /// From is the service that should get synced. Can be either in the form name or namespace/name.
    pub from: String,
    /// To is the target service that it should get synced to. Can be either in the form name or namespace/name.
    pub to: String,
}

/// Policies the virtual cluster enforces on its workloads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Policies {
    /// PodSecurityStandard that can be enforced can be one of: empty (""), baseline, restricted or privileged.
    /// A pod that violates it is not synced to the host (a `SyncError` event says why).
    pub pod_security_standard: String,
}

/// Settings of vkube itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VkubeSettings {
    /// Name of the virtual cluster (the `--name` flag wins). Empty: `vc1`.
    pub name: String,
    /// Host namespace the virtual cluster's workloads run in (the `--host-namespace` flag wins).
    /// Empty: `vcluster-<name>`.
    pub host_namespace: String,
}

/// The control plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControlPlane {
    /// Where the virtual cluster's objects are stored.
    pub backing_store: BackingStore,
    /// How the virtual API server listens.
    pub proxy: Proxy,
    /// Settings the syncer reads (sync-behavior.md §11.1).
    pub advanced: Advanced,
    /// Of vcluster's StatefulSet settings, vkube reads `highAvailability` (its replicas are
    /// processes: several `vkube serve` on one etcd).
    pub stateful_set: StatefulSet,
}

/// `controlPlane.statefulSet`: only `highAvailability` applies to vkube.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StatefulSet {
    /// Several replicas of one virtual cluster.
    pub high_availability: HighAvailability,
}

/// `controlPlane.statefulSet.highAvailability`: every replica serves the API; the syncer and the
/// controllers run in the one holding the `kube-system/vkube-controller` Lease of the virtual
/// cluster. Times are seconds; the defaults are Kubernetes' own (kube-controller-manager's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HighAvailability {
    /// How many `vkube serve` processes run this virtual cluster (more than one needs
    /// `controlPlane.backingStore.etcd.external`). Leader election runs when above 1 or on etcd.
    pub replicas: u32,
    /// How long a standby waits, after it last saw the leader renew, before it takes over.
    pub lease_duration: u32,
    /// How long the leader keeps trying to renew before it gives up (and exits).
    pub renew_deadline: u32,
    /// How often the leader renews and a standby tries to acquire.
    pub retry_period: u32,
}

impl Default for HighAvailability {
    fn default() -> Self {
        HighAvailability { replicas: 1, lease_duration: 15, renew_deadline: 10, retry_period: 2 }
    }
}

/// `controlPlane.advanced`: the keys the syncer reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Advanced {
    /// Registry for the images vkube adds to host pods (the rewrite-hosts init container) that
    /// name none.
    pub default_image_registry: String,
    /// The host service account host pods run under (`vc-workload-<name>` when empty).
    pub workload_service_account: WorkloadServiceAccount,
    /// Scheduling inside the virtual cluster (needs real host nodes).
    pub virtual_scheduler: Switch,
}

/// `controlPlane.advanced.workloadServiceAccount`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadServiceAccount {
    /// Its name.
    pub name: String,
}

/// A plain `enabled` switch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Switch {
    pub enabled: bool,
}

/// The store of the virtual control plane: embedded SQLite (default) or an external etcd.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackingStore {
    /// The embedded database (SQLite in the data directory).
    pub database: Database,
    /// An external etcd.
    pub etcd: Etcd,
}

/// Embedded database settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Database {
    /// The embedded SQLite store.
    pub embedded: Toggle,
}

impl Default for Database {
    fn default() -> Self {
        Database { embedded: Toggle { enabled: true } }
    }
}

/// External etcd settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Etcd {
    /// An etcd cluster vkube does not manage.
    pub external: ExternalEtcd,
}

/// An external etcd cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExternalEtcd {
    /// Use the external etcd instead of the embedded database.
    pub enabled: bool,
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// One client URL, or several separated by commas (vcluster's field; joins `endpoints`).
    pub endpoint: String,
    /// TLS towards etcd: the CA and the client certificate etcd requires.
    pub tls: EtcdTls,
    /// Prepended to every key, so several virtual clusters can share one etcd (default
    /// `/vkube/NAME/`).
    pub prefix: String,
}

impl ExternalEtcd {
    /// Every endpoint, from `endpoints` and `endpoint`.
    pub fn all_endpoints(&self) -> Vec<String> {
        let listed = self.endpoint.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from);
        self.endpoints.iter().cloned().chain(listed).collect()
    }
}

/// Files of the TLS settings towards etcd.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EtcdTls {
    /// PEM CA the etcd servers' certificates must chain to.
    pub ca_file: String,
    /// PEM client certificate.
    pub cert_file: String,
    /// PEM key of the client certificate.
    pub key_file: String,
}

/// The virtual API server's listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Proxy {
    /// Address to bind.
    pub bind_address: String,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// Extra DNS names or IPs for the serving certificate.
    #[serde(rename = "extraSANs")]
    #[schemars(rename = "extraSANs")]
    pub extra_sans: Vec<String>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy { bind_address: "127.0.0.1".into(), port: 8443, extra_sans: Vec::new() }
    }
}

/// A plain switch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Toggle {
    /// Enabled defines if this option should be enabled.
    pub enabled: bool,
}

impl Toggle {
    /// A switch that is on.
    pub fn on() -> Self {
        Toggle { enabled: true }
    }
}

/// `sync`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Sync {
    /// Configure resources to sync from the virtual cluster to the host cluster.
    pub to_host: ToHost,
    /// Configure what resources vCluster should sync from the host cluster to the virtual cluster.
    pub from_host: FromHost,
}

/// `sync.toHost`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ToHost {
    /// Pods defines if pods created within the virtual cluster should get synced to the host cluster.
    pub pods: Pods,
    /// Secrets defines if secrets created within the virtual cluster should get synced to the host cluster.
    pub secrets: SyncAll,
    /// ConfigMaps defines if config maps created within the virtual cluster should get synced to the host cluster.
    pub config_maps: SyncAll,
    /// Ingresses defines if ingresses created within the virtual cluster should get synced to the host cluster.
    pub ingresses: WithTranslate,
    /// Services defines if services created within the virtual cluster should get synced to the host cluster.
    pub services: WithTranslate,
    /// Endpoints defines if endpoints created within the virtual cluster should get synced to the host cluster.
    pub endpoints: WithTranslate,
    /// EndpointSlices defines if endpoint slices of selector-less services should get synced from the virtual cluster to the host cluster.
    pub endpoint_slices: WithTranslate,
    /// NetworkPolicies defines if network policies created within the virtual cluster should get synced to the host cluster.
    pub network_policies: WithTranslate,
    /// PersistentVolumeClaims defines if persistent volume claims created within the virtual cluster should get synced to the host cluster.
    pub persistent_volume_claims: WithTranslate,
    /// PersistentVolumes defines if persistent volumes created within the virtual cluster should get synced to the host cluster.
    pub persistent_volumes: WithTranslate,
    /// VolumeSnapshots defines if volume snapshots created within the virtual cluster should get synced to the host cluster.
    pub volume_snapshots: WithTranslate,
    /// StorageClasses defines if storage classes created within the virtual cluster should get synced to the host cluster.
    pub storage_classes: WithTranslate,
    /// ServiceAccounts defines if service accounts created within the virtual cluster should get synced to the host cluster.
    pub service_accounts: WithTranslate,
    /// PodDisruptionBudgets defines if pod disruption budgets created within the virtual cluster should get synced to the host cluster.
    pub pod_disruption_budgets: WithTranslate,
    /// PriorityClasses defines if priority classes created within the virtual cluster should get synced to the host cluster.
    pub priority_classes: WithTranslate,
    /// CustomResources defines what custom resources should get synced from the virtual cluster to the
    /// host cluster, keyed by `<plural>.<group>[/<version>]`.
    pub custom_resources: BTreeMap<String, CustomResourceToHost>,
}

impl Default for ToHost {
    fn default() -> Self {
        ToHost {
            pods: Pods::default(),
            secrets: SyncAll::default(),
            config_maps: SyncAll::default(),
            ingresses: WithTranslate::default(),
            services: WithTranslate::on(),
            endpoints: WithTranslate::on(),
            endpoint_slices: WithTranslate::on(),
            network_policies: WithTranslate::default(),
            persistent_volume_claims: WithTranslate::on(),
            persistent_volumes: WithTranslate::default(),
            volume_snapshots: WithTranslate::default(),
            storage_classes: WithTranslate::default(),
            service_accounts: WithTranslate::default(),
            pod_disruption_budgets: WithTranslate::default(),
            priority_classes: WithTranslate::default(),
            custom_resources: BTreeMap::new(),
        }
    }
}

/// A switch with translate rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WithTranslate {
    /// Enabled defines if this option should be enabled.
    pub enabled: bool,
    /// Translate the patch according to the given patches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub translate: Vec<Translate>,
}

impl WithTranslate {
    /// Enabled, no rules.
    pub fn on() -> Self {
        WithTranslate { enabled: true, translate: Vec::new() }
    }
}

/// Secrets and config maps: only referenced ones, or all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SyncAll {
    /// Enabled defines if this option should be enabled.
    pub enabled: bool,
    /// All defines if all resources of that type should get synced or only the necessary ones that are needed.
    pub all: bool,
    /// Translate the patch according to the given patches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub translate: Vec<Translate>,
}

impl Default for SyncAll {
    fn default() -> Self {
        SyncAll { enabled: true, all: false, translate: Vec::new() }
    }
}

/// `sync.toHost.pods`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Pods {
    /// Enabled defines if pod syncing should be enabled.
    pub enabled: bool,
    /// TranslateImage maps an image to another image that should be used instead.
    pub translate_image: BTreeMap<String, String>,
    /// EnforceTolerations will add the specified tolerations to all pods synced by the virtual cluster
    /// (`key[=value][:Effect]` or `*`).
    pub enforce_tolerations: Vec<String>,
    /// UseSecretsForSATokens will use secrets to save the generated service account tokens by virtual
    /// cluster instead of using a pod annotation.
    #[serde(rename = "useSecretsForSATokens")]
    #[schemars(rename = "useSecretsForSATokens")]
    pub use_secrets_for_sa_tokens: bool,
    /// RewriteHosts is a special option needed to rewrite statefulset containers to allow the correct FQDN.
    pub rewrite_hosts: RewriteHosts,
    /// RuntimeClassName is the runtime class to set for synced pods (forced on every host pod).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_class_name: String,
    /// PriorityClassName is the priority class to set for synced pods that have none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,
    /// Translate the patch according to the given patches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub translate: Vec<Translate>,
}

impl Default for Pods {
    fn default() -> Self {
        Pods {
            enabled: true,
            translate_image: BTreeMap::new(),
            enforce_tolerations: Vec::new(),
            use_secrets_for_sa_tokens: false,
            rewrite_hosts: RewriteHosts::default(),
            runtime_class_name: String::new(),
            priority_class_name: String::new(),
            translate: Vec::new(),
        }
    }
}

/// `sync.toHost.pods.rewriteHosts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RewriteHosts {
    /// Enabled specifies if rewriting stateful set pods should be enabled.
    pub enabled: bool,
    /// InitContainer holds extra options for the init container used to rewrite the FQDN.
    pub init_container: InitContainer,
}

impl Default for RewriteHosts {
    fn default() -> Self {
        RewriteHosts { enabled: true, init_container: InitContainer::default() }
    }
}

/// The rewrite-hosts init container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InitContainer {
    /// Image is the image virtual cluster should use to rewrite this FQDN.
    pub image: String,
    /// Resources are the resources that should be assigned to the init container.
    pub resources: Resources,
}

impl Default for InitContainer {
    fn default() -> Self {
        InitContainer { image: "library/alpine:3.20".into(), resources: Resources::default() }
    }
}

/// Container resources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    /// Limits are resource limits for the container.
    pub limits: BTreeMap<String, Quantity>,
    /// Requests are minimal resources that will be consumed by the container.
    pub requests: BTreeMap<String, Quantity>,
}

impl Default for Resources {
    fn default() -> Self {
        let both: BTreeMap<String, Quantity> =
            [("cpu".to_string(), Quantity("30m".into())), ("memory".to_string(), Quantity("64Mi".into()))].into();
        Resources { limits: both.clone(), requests: both }
    }
}

/// A Kubernetes quantity (`30m`, `64Mi`, `0.5`); YAML numbers are accepted as Kubernetes does.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(with = "QuantityValue")]
pub struct Quantity(pub String);

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum QuantityValue {
    Text(String),
    Number(f64),
}

impl Serialize for Quantity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Ok(Quantity(s)),
            serde_json::Value::Number(n) => Ok(Quantity(match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                _ => n.to_string(),
            })),
            other => Err(serde::de::Error::custom(format!("{other} is not a quantity"))),
        }
    }
}

/// One `translate[]` entry: exactly one of `expression`/`reverseExpression`, `reference` or `labels`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Translate {
    /// Path is the path within the patch to target. If the path is not found within the patch, the patch is not applied.
    pub path: String,
    /// Expression transforms the value according to the given JavaScript expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// ReverseExpression transforms the value according to the given JavaScript expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reverse_expression: Option<String>,
    /// Reference treats the path value as a reference to another object and rewrites it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<TranslateReference>,
    /// Labels treats the path value as a labels selector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<TranslateLabels>,
}

/// `translate[].reference`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TranslateReference {
    /// APIVersion is the apiVersion of the referenced object.
    pub api_version: String,
    /// APIVersionPath is optional relative path to use to determine the kind.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version_path: String,
    /// Kind is the kind of the referenced object.
    pub kind: String,
    /// KindPath is the optional relative path to use to determine the kind.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind_path: String,
    /// NamePath is the optional relative path to the reference name within the object.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name_path: String,
    /// NamespacePath is the optional relative path to the reference namespace within the object.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace_path: String,
}

/// `translate[].labels` (no options).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TranslateLabels {}

/// `sync.toHost.customResources[<key>]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CustomResourceToHost {
    /// Enabled defines if this option should be enabled.
    pub enabled: bool,
    /// Scope of the resource: only `Namespaced` may be synced to the host.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Translate the patch according to the given patches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub translate: Vec<Translate>,
}

impl Default for CustomResourceToHost {
    fn default() -> Self {
        CustomResourceToHost { enabled: true, scope: String::new(), translate: Vec::new() }
    }
}

/// `sync.fromHost`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FromHost {
    /// Nodes defines if nodes should get synced from the host cluster to the virtual cluster, but not back.
    pub nodes: Nodes,
    /// Events defines if events should get synced from the host cluster to the virtual cluster, but not back.
    pub events: Toggle,
    /// IngressClasses defines if ingress classes should get synced from the host cluster to the virtual cluster, but not back.
    pub ingress_classes: ClassesFromHost,
    /// RuntimeClasses defines if runtime classes should get synced from the host cluster to the virtual cluster, but not back.
    pub runtime_classes: ClassesFromHost,
    /// PriorityClasses defines if priority classes should get synced from the host cluster to the virtual cluster, but not back.
    pub priority_classes: ClassesFromHost,
    /// StorageClasses defines if storage classes should get synced from the host cluster to the virtual cluster, but not back.
    pub storage_classes: StorageClassesFromHost,
    /// CSINodes defines if csi nodes should get synced from the host cluster to the virtual cluster, but not back.
    #[serde(rename = "csiNodes")]
    #[schemars(rename = "csiNodes")]
    pub csi_nodes: AutoToggle,
    /// CSIDrivers defines if csi drivers should get synced from the host cluster to the virtual cluster, but not back.
    #[serde(rename = "csiDrivers")]
    #[schemars(rename = "csiDrivers")]
    pub csi_drivers: AutoToggle,
    /// CSIStorageCapacities defines if csi storage capacities should get synced from the host cluster to the virtual cluster, but not back.
    #[serde(rename = "csiStorageCapacities")]
    #[schemars(rename = "csiStorageCapacities")]
    pub csi_storage_capacities: AutoToggle,
    /// CustomResources defines what custom resources should get synced read-only to the virtual cluster
    /// from the host cluster, keyed by `<plural>.<group>[/<version>]`.
    pub custom_resources: BTreeMap<String, CustomResourceFromHost>,
    /// ConfigMaps defines if config maps in the host should get synced to the virtual cluster (read-only copies, picked by `mappings.byName`).
    pub config_maps: MappedFromHost,
    /// Secrets defines if secrets in the host should get synced to the virtual cluster (read-only copies, picked by `mappings.byName`).
    pub secrets: MappedFromHost,
}

/// `sync.fromHost.configMaps` / `secrets`: host objects copied into the virtual cluster by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MappedFromHost {
    /// Enabled defines if this option should be enabled.
    pub enabled: bool,
    /// Mappings for object and namespace names.
    pub mappings: Mappings,
}

/// `mappings`: which host objects appear where in the virtual cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Mappings {
    /// ByName is a map of host-object-namespace/host-object-name: virtual-object-namespace/virtual-object-name.
    /// Forms: `"foo/*": "foo-in-virtual/*"` (every object of a host namespace), `"foo/my-object":
    /// "foo/my-virtual-object"` (one object; value name `*` keeps its name), `"": "my-virtual-namespace/*"`
    /// (every object of the vCluster host namespace) and `"/my-object": "my-virtual-namespace/my-object"`
    /// (one object of the vCluster host namespace).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_name: BTreeMap<String, String>,
}

impl Mappings {
    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl Default for FromHost {
    fn default() -> Self {
        FromHost {
            nodes: Nodes::default(),
            events: Toggle::on(),
            ingress_classes: ClassesFromHost::default(),
            runtime_classes: ClassesFromHost::default(),
            priority_classes: ClassesFromHost::default(),
            storage_classes: StorageClassesFromHost::default(),
            csi_nodes: AutoToggle::default(),
            csi_drivers: AutoToggle::default(),
            csi_storage_capacities: AutoToggle::default(),
            custom_resources: BTreeMap::new(),
            config_maps: MappedFromHost::default(),
            secrets: MappedFromHost::default(),
        }
    }
}

/// `sync.fromHost.nodes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Nodes {
    /// Enabled specifies if syncing real nodes should be enabled. If this is disabled, vCluster will create fake nodes instead.
    pub enabled: bool,
    /// SyncBackChanges enables syncing labels and taints from the virtual cluster to the host cluster.
    pub sync_back_changes: bool,
    /// ClearImageStatus will erase the image status when syncing a node.
    pub clear_image_status: bool,
    /// Selector can be used to define more granular what nodes should get synced from the host cluster to the virtual cluster.
    pub selector: NodeSelector,
}

/// `sync.fromHost.nodes.selector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NodeSelector {
    /// All specifies if all nodes should get synced by vCluster from the host to the virtual cluster or only the ones where pods are assigned to.
    pub all: bool,
    /// Labels are the node labels used to sync nodes from host cluster to virtual cluster.
    pub labels: BTreeMap<String, String>,
}

/// `sync.fromHost.customResources[<key>]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CustomResourceFromHost {
    /// Enabled defines if this option should be enabled.
    pub enabled: bool,
    /// Scope of the resource: `Cluster` or `Namespaced` (default `Cluster`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Translate the patch according to the given patches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub translate: Vec<Translate>,
    /// Mappings for object and namespace names (required for `Namespaced`, forbidden for `Cluster`).
    #[serde(skip_serializing_if = "Mappings::is_empty")]
    pub mappings: Mappings,
}

impl Default for CustomResourceFromHost {
    fn default() -> Self {
        CustomResourceFromHost {
            enabled: true,
            scope: String::new(),
            translate: Vec::new(),
            mappings: Mappings::default(),
        }
    }
}

/// A switch with three states: `auto`, `true` or `false` (YAML booleans or strings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[schemars(with = "AutoValue")]
pub enum AutoSwitch {
    /// Decided by vkube (see [`crate::Config::resolved`]).
    #[default]
    Auto,
    /// On.
    True,
    /// Off.
    False,
}

/// The accepted spellings of an [`AutoSwitch`].
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum AutoValue {
    Bool(bool),
    Text(AutoText),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum AutoText {
    Auto,
    True,
    False,
}

impl Serialize for AutoSwitch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AutoSwitch::Auto => serializer.serialize_str("auto"),
            AutoSwitch::True => serializer.serialize_bool(true),
            AutoSwitch::False => serializer.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for AutoSwitch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(true) => Ok(AutoSwitch::True),
            serde_json::Value::Bool(false) => Ok(AutoSwitch::False),
            serde_json::Value::String(s) if s == "true" => Ok(AutoSwitch::True),
            serde_json::Value::String(s) if s == "false" => Ok(AutoSwitch::False),
            serde_json::Value::String(s) if s == "auto" => Ok(AutoSwitch::Auto),
            other => Err(serde::de::Error::custom(format!("{other} is not one of auto, true, false"))),
        }
    }
}

/// Classes copied from the host, all or those a label selector picks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClassesFromHost {
    /// Enabled defines if this option should be enabled.
    pub enabled: bool,
    /// Selector picks the host classes to copy; objects referring to another class are not synced.
    #[serde(skip_serializing_if = "ClassSelector::is_empty")]
    pub selector: ClassSelector,
}

/// Storage classes copied from the host (`auto`, `true` or `false`), all or those a selector picks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StorageClassesFromHost {
    /// Enabled defines if this option should be enabled (`auto`, `true` or `false`).
    pub enabled: AutoSwitch,
    /// Selector picks the host classes to copy; claims naming another class are not synced.
    #[serde(skip_serializing_if = "ClassSelector::is_empty")]
    pub selector: ClassSelector,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClassSelector {
    /// Labels the object must have with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on labels (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

impl ClassSelector {
    /// No requirement at all (every class is picked).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values for `In` and `NotIn`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A switch that may be `auto`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AutoToggle {
    /// Enabled defines if this option should be enabled (`auto`, `true` or `false`).
    pub enabled: AutoSwitch,
}
