//! Shared setup of the syncer integration tests: two in-process API servers (host with the
//! simulator, virtual) on 127.0.0.1:0, reached through kube-rs.
#![allow(dead_code)]

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use vkube_syncer::SyncerConfig;
use vkube_translate::Context;

pub async fn server(dir: &std::path::Path) -> (vkube_apiserver::RunningServer, kube::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = vkube_apiserver::ServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = vkube_apiserver::start(config, None).await.unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&server.admin_kubeconfig("c").unwrap()).unwrap();
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap();
    (server, client)
}

pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    // Generous: these tests share two cores with real control planes in CI.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn syncer_config() -> SyncerConfig {
    SyncerConfig::new(Context::new("vc", "vcluster-vc"))
}

pub fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Which host a test's syncer runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// vkube's own API server with the simulator (scheduler, controllers, kubelet) in-process.
    Simulated,
    /// The upstream control plane of `tools/k8s` (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler) with the simulator attached as its kubelet; the syncer authenticates as a
    /// service account bound to exactly what `vkube config rbac` derives.
    Real,
}

tokio::task_local! {
    /// The host of the running test (set by [`on_both_hosts!`]).
    pub static HOST: HostKind;
}

/// The host of the running test (simulated outside [`on_both_hosts!`]).
pub fn host_kind() -> HostKind {
    HOST.try_with(|h| *h).unwrap_or(HostKind::Simulated)
}

/// Defines a test once and runs it twice: `NAME::simulated_host` and `NAME::real_host`.
#[macro_export]
macro_rules! on_both_hosts {
    ($(#[$meta:meta])* async fn $name:ident() $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body() $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn simulated_host() {
                common::HOST.scope(common::HostKind::Simulated, body()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real_host() {
                common::HOST.scope(common::HostKind::Real, body()).await
            }
        }
    };
}

/// A running upstream control plane (stopped when dropped).
pub struct RealHost {
    dir: tempfile::TempDir,
    /// The admin's kubeconfig.
    pub kubeconfig: String,
}

impl Drop for RealHost {
    fn drop(&mut self) {
        let _ =
            std::process::Command::new(control_plane_script()).arg("stop").arg(self.dir.path().join("k8s")).output();
    }
}

fn control_plane_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/k8s/control-plane.sh")
}

/// Starts the upstream control plane on loopback (building it first if the cache lacks it).
pub fn real_host() -> RealHost {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(control_plane_script())
        .arg("start")
        .arg(dir.path().join("k8s"))
        .output()
        .expect("tools/k8s/control-plane.sh runs");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).lines().any(|l| l == "ready"),
        "the real control plane did not start (needs Go and the module proxy; .ci/run builds it):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let kubeconfig = std::fs::read_to_string(dir.path().join("k8s/admin.kubeconfig")).unwrap();
    RealHost { dir, kubeconfig }
}

async fn client_from(kubeconfig: &str) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).unwrap();
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap()
}

/// The `vcluster.yaml` whose syncer settings `config` mirrors (what `vkube serve` would run).
pub fn vcluster_yaml(config: &SyncerConfig) -> String {
    let o = &config.optional;
    let mut to_custom = String::new();
    let mut from_custom = String::new();
    for custom in &config.custom_resources {
        let line = format!("      {:?}: {{enabled: true}}\n", custom.key);
        if custom.to_host { to_custom.push_str(&line) } else { from_custom.push_str(&line) }
    }
    let mut data_from_host = String::new();
    for mapped in &config.mapped {
        let by_name = serde_json::to_string(mapped.by_name.written()).unwrap();
        let entry = format!("{{enabled: true, scope: Namespaced, mappings: {{byName: {by_name}}}}}");
        match &mapped.kind {
            vkube_syncer::MappedKind::ConfigMap => data_from_host
                .push_str(&format!("    configMaps: {{enabled: true, mappings: {{byName: {by_name}}}}}\n")),
            vkube_syncer::MappedKind::Secret => {
                data_from_host.push_str(&format!("    secrets: {{enabled: true, mappings: {{byName: {by_name}}}}}\n"))
            }
            vkube_syncer::MappedKind::Custom(key) => from_custom.push_str(&format!("      {key:?}: {entry}\n")),
        }
    }
    let custom = |entries: &str| if entries.is_empty() { " {}\n".to_string() } else { format!("\n{entries}") };
    format!(
        "sync:\n  toHost:\n    pods: {{enabled: {}}}\n    configMaps: {{enabled: {}, all: {}}}\n    secrets: {{enabled: {}, all: {}}}\n    services: {{enabled: {}}}\n    endpoints: {{enabled: {}}}\n    persistentVolumeClaims: {{enabled: {}}}\n    ingresses: {{enabled: {}}}\n    networkPolicies: {{enabled: {}}}\n    podDisruptionBudgets: {{enabled: {}}}\n    serviceAccounts: {{enabled: {}}}\n    endpointSlices: {{enabled: {}}}\n    priorityClasses: {{enabled: {}}}\n    storageClasses: {{enabled: {}}}\n    persistentVolumes: {{enabled: {}}}\n    customResources:{}  fromHost:\n    events: {{enabled: {}}}\n    ingressClasses: {{enabled: {}}}\n    runtimeClasses: {{enabled: {}}}\n    priorityClasses: {{enabled: {}}}\n    storageClasses: {{enabled: {}}}\n    csiDrivers: {{enabled: {}}}\n    csiNodes: {{enabled: {}}}\n    csiStorageCapacities: {{enabled: {}}}\n    nodes: {{enabled: {}, syncBackChanges: {}, clearImageStatus: {}, selector: {{all: {}, labels: {}}}}}\n    customResources:{}",
        config.pods_enabled,
        config.config_maps,
        config.all_config_maps,
        config.secrets,
        config.all_secrets,
        config.services,
        config.endpoints,
        config.claims,
        o.ingresses,
        o.network_policies,
        o.pod_disruption_budgets,
        o.service_accounts,
        o.endpoint_slices,
        o.priority_classes_to_host,
        o.storage_classes_to_host,
        o.persistent_volumes_to_host,
        custom(&to_custom),
        config.events,
        o.ingress_classes,
        o.runtime_classes,
        o.priority_classes,
        o.storage_classes,
        o.csi_drivers,
        o.csi_nodes,
        o.csi_storage_capacities,
        config.nodes.real,
        config.nodes.sync_back,
        config.nodes.clear_image_status,
        config.nodes.all,
        serde_json::to_string(&config.nodes.labels).unwrap(),
        custom(&from_custom),
    ) + &data_from_host
        + &format!("vkube:\n  name: {}\n  hostNamespace: {}\n", config.context.name, config.context.host_namespace)
        + &replicate_yaml(&config.replicate)
}

/// `networking.replicateServices` of `replicate`.
fn replicate_yaml(replicate: &vkube_syncer::ServiceReplication) -> String {
    let from: Vec<String> =
        replicate.from_host.iter().map(|((hn, hs), (vn, vs))| format!("{{from: {hn}/{hs}, to: {vn}/{vs}}}")).collect();
    let to: Vec<String> =
        replicate.to_host.iter().map(|((vn, vs), host)| format!("{{from: {vn}/{vs}, to: {host}}}")).collect();
    format!("networking:\n  replicateServices:\n    fromHost: [{}]\n    toHost: [{}]\n", from.join(", "), to.join(", "))
}

/// On the real host: the host namespace, the syncer's service account bound to the RBAC `vkube
/// config rbac` derives for `config` (Role and, when needed, ClusterRole), the workload service
/// account; returns a client authenticated as the syncer's account.
async fn syncer_identity(admin: &kube::Client, kubeconfig: &str, config: &SyncerConfig) -> kube::Client {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    let namespace = config.context.host_namespace.clone();
    let yaml = vcluster_yaml(config);
    let vcluster = vkube_config::Config::from_yaml(&yaml).unwrap_or_else(|p| panic!("{yaml}\n{p:?}"));
    let apply = PatchParams::apply("vkube-test").force();
    let default_namespace = namespace.clone();
    let create = |kind: &str, object: serde_json::Value| {
        let admin = admin.clone();
        // A Role and its binding go to the namespace the manifest names (the host namespace, or
        // one objects are copied from).
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        let (group, version, plural, namespaced) = match kind {
            "Namespace" => ("", "v1", "namespaces", false),
            "ServiceAccount" => ("", "v1", "serviceaccounts", true),
            "Role" => ("rbac.authorization.k8s.io", "v1", "roles", true),
            "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings", true),
            "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles", false),
            _ => ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", false),
        };
        let resource = kube::api::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() { version.into() } else { format!("{group}/{version}") },
            kind: kind.into(),
            plural: plural.into(),
        };
        let apply = apply.clone();
        let namespace = namespace.unwrap_or_else(|| default_namespace.clone());
        let kind = kind.to_string();
        async move {
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(admin, &namespace, &resource)
            } else {
                Api::all_with(admin, &resource)
            };
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            api.patch(&name, &apply, &Patch::Apply(&object)).await.unwrap_or_else(|e| panic!("{kind} {name}: {e}"));
        }
    };
    let name = config.context.name.clone();
    create("Namespace", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})).await;
    for account in [format!("vc-{name}"), format!("vc-workload-{name}")] {
        create("ServiceAccount", json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}))
            .await;
    }
    let subject = json!([{"kind": "ServiceAccount", "name": format!("vc-{name}"), "namespace": namespace}]);
    for mut manifest in vkube_config::rbac::manifests(&vcluster) {
        let kind = manifest["kind"].as_str().unwrap().to_string();
        let role = manifest["metadata"]["name"].as_str().unwrap().to_string();
        let role_namespace = manifest["metadata"]["namespace"].as_str().unwrap_or(&namespace).to_string();
        if kind == "Role" {
            manifest["metadata"]["namespace"] = json!(role_namespace);
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": role_namespace}});
            create("Namespace", ns).await;
        }
        create(&kind, manifest).await;
        let binding_kind = if kind == "Role" { "RoleBinding" } else { "ClusterRoleBinding" };
        let metadata =
            if kind == "Role" { json!({"name": role, "namespace": role_namespace}) } else { json!({"name": role}) };
        create(
            binding_kind,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": binding_kind,
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                "subjects": subject,
            }),
        )
        .await;
    }
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin.clone(), &namespace);
    let request =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}});
    let answer: serde_json::Value = accounts
        .create_subresource::<serde_json::Value, serde_json::Value>(
            "token",
            &format!("vc-{name}"),
            &Default::default(),
            &request,
        )
        .await
        .unwrap();
    let token = answer["status"]["token"].as_str().unwrap().to_string();
    let mut kubeconfig = Kubeconfig::from_yaml(kubeconfig).unwrap();
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            *auth = kube::config::AuthInfo { token: Some(token.clone().into()), ..Default::default() };
        }
    }
    kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap(),
    )
    .unwrap()
}

/// A host, a virtual API server and a running syncer.
pub struct Clusters {
    /// The host as its admin (for the test's own checks and setup).
    pub host: kube::Client,
    /// The host as the syncer sees it (admin on the simulated host, the derived RBAC on the real).
    pub syncer_host: kube::Client,
    pub vc: kube::Client,
    pub syncer: tokio::task::JoinHandle<Result<(), vkube_syncer::SyncerError>>,
    /// The virtual API server.
    pub virtual_server: vkube_apiserver::RunningServer,
    pub kind: HostKind,
    _host: (Option<vkube_apiserver::RunningServer>, Option<RealHost>),
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Clusters {
    pub async fn start(config: SyncerConfig) -> Clusters {
        Self::start_after(config, |_| async {}).await
    }

    /// Starts, running `setup` against the host (as its admin) before the syncer starts.
    pub async fn start_after<F, Fut>(mut config: SyncerConfig, setup: F) -> Clusters
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let host_dir = tempfile::tempdir().unwrap();
        let virtual_dir = tempfile::tempdir().unwrap();
        let kind = host_kind();
        let (host, syncer_host, host_servers) = match kind {
            HostKind::Simulated => {
                let (host_server, host) = server(host_dir.path()).await;
                tokio::spawn(vkube_simulator::run(host.clone(), vkube_simulator::SimulatorConfig::default()));
                (host.clone(), host, (Some(host_server), None))
            }
            HostKind::Real => {
                let real = tokio::task::spawn_blocking(real_host).await.unwrap();
                let host = client_from(&real.kubeconfig).await;
                let simulator = vkube_simulator::SimulatorConfig { attached: true, ..Default::default() };
                tokio::spawn(vkube_simulator::run(host.clone(), simulator));
                let syncer_host = syncer_identity(&host, &real.kubeconfig, &config).await;
                (host, syncer_host, (None, Some(real)))
            }
        };
        let (virtual_server, vc) = server(virtual_dir.path()).await;
        setup(host.clone()).await;
        if config.mappings.is_none() {
            config.mappings = Some(vkube_syncer::MappingStorage(virtual_server.state.registry.store.clone()));
        }
        let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
        let mut syncer = tokio::spawn(vkube_syncer::run(vc.clone(), syncer_host.clone(), config, ready));
        tokio::select! {
            ready = ready_rx.wait_for(|r| *r) => { ready.unwrap(); }
            stopped = &mut syncer => panic!("the syncer stopped before it was ready: {stopped:?}"),
        }
        Clusters {
            host,
            syncer_host,
            vc,
            syncer,
            virtual_server,
            kind,
            _host: host_servers,
            _dirs: (host_dir, virtual_dir),
        }
    }
}
