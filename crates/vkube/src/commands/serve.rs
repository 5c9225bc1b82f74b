//! `vkube serve`: one virtual cluster (API server on the embedded store + syncer) against any host.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use vkube_apiserver::http::PodLogs;
use vkube_apiserver::pki::write_private;
use vkube_apiserver::registry::AllocatedService;
use vkube_apiserver::{ApiError, ApiResult, RunningServer, ServerConfig};
use vkube_config::Config;
use vkube_syncer::SyncerConfig;
use vkube_translate::Context;
use vkube_translate::pods::PodSettings;

/// Flags of `vkube serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Name of the virtual cluster (overrides vkube.name in the config).
    #[arg(long)]
    pub name: Option<String>,
    /// Kubeconfig of the host cluster.
    #[arg(long)]
    pub host_kubeconfig: PathBuf,
    /// Host namespace (default: vcluster-NAME; created if missing).
    #[arg(long)]
    pub host_namespace: Option<String>,
    /// vcluster.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory for the virtual cluster's store, certificates and NAME.kubeconfig.
    #[arg(long)]
    pub dir: PathBuf,
    /// Address of the virtual API server (default: from controlPlane.proxy, 127.0.0.1:8443).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Also serve a kubelet API for the virtual cluster's pods there (`/exec`, `/attach`,
    /// `/portForward`, `/containerLogs`, `/pods`; authenticated and authorized as `nodes/proxy`).
    #[arg(long)]
    pub kubelet_listen: Option<SocketAddr>,
}

/// The resolved settings of one virtual cluster.
pub struct VirtualCluster {
    /// vcluster.yaml after flags.
    pub config: Config,
    /// Where it keeps its state.
    pub dir: PathBuf,
    /// Where its API server listens.
    pub listen: SocketAddr,
    /// Where its kubelet API listens, if anywhere.
    pub kubelet_listen: Option<SocketAddr>,
}

impl VirtualCluster {
    /// Merges flags over the config file.
    pub fn resolve(
        config: Option<&Path>,
        name: Option<String>,
        host_namespace: Option<String>,
        dir: PathBuf,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let mut config = match config {
            Some(path) => super::config::load(path)?,
            None => Config::default(),
        };
        if let Some(name) = name {
            config.vkube.name = name;
        }
        if let Some(namespace) = host_namespace {
            config.vkube.host_namespace = namespace;
        }
        // Re-validate: the flags may have put invalid values in.
        let config =
            Config::from_value(serde_json::to_value(&config)?).map_err(|problems| anyhow::anyhow!("{problems}"))?;
        let listen = match listen {
            Some(listen) => listen,
            None => {
                let proxy = &config.control_plane.proxy;
                format!("{}:{}", proxy.bind_address, proxy.port)
                    .parse()
                    .context("controlPlane.proxy.bindAddress/port")?
            }
        };
        Ok(VirtualCluster { config, dir, listen, kubelet_listen: None })
    }
}

/// The etcd store of `controlPlane.backingStore.etcd.external`, when enabled (keys under
/// `/vkube/NAME/` unless a prefix is given).
fn etcd_config(config: &Config) -> Option<vkube_store::EtcdConfig> {
    let external = &config.control_plane.backing_store.etcd.external;
    let file = |path: &str| (!path.is_empty()).then(|| PathBuf::from(path));
    external.enabled.then(|| vkube_store::EtcdConfig {
        endpoints: external.all_endpoints(),
        ca_file: file(&external.tls.ca_file),
        cert_file: file(&external.tls.cert_file),
        key_file: file(&external.tls.key_file),
        prefix: if external.prefix.is_empty() { format!("/vkube/{}/", config.name()) } else { external.prefix.clone() },
    })
}

/// `pods/log` of virtual pods, read from their host pods.
struct HostLogs {
    host: kube::Client,
    context: Context,
}

fn log_params(query: &str) -> LogParams {
    let mut params = LogParams::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "container" => params.container = Some(value.to_string()),
            "follow" => params.follow = matches!(value, "true" | "1" | "True"),
            "previous" => params.previous = matches!(value, "true" | "1" | "True"),
            "timestamps" => params.timestamps = matches!(value, "true" | "1" | "True"),
            "tailLines" => params.tail_lines = value.parse().ok(),
            "sinceSeconds" => params.since_seconds = value.parse().ok(),
            "limitBytes" => params.limit_bytes = value.parse().ok(),
            _ => {}
        }
    }
    params
}

impl PodLogs for HostLogs {
    fn logs(
        &self,
        namespace: &str,
        name: &str,
        query: &str,
    ) -> BoxFuture<'static, ApiResult<BoxStream<'static, Result<Bytes, std::io::Error>>>> {
        let api: Api<Pod> = Api::namespaced(self.host.clone(), &self.context.host_namespace);
        let host = vkube_translate::names::host_name(&self.context, name, namespace);
        let params = log_params(query);
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(async move {
            let stream = api.log_stream(&host, &params).await.map_err(|error| match error {
                kube::Error::Api(status) if status.code == 404 => {
                    ApiError::BadRequest(format!("pod {namespace}/{name} has not been synced to the host yet"))
                }
                // The kubelet's own refusal (container not started, no previous instance), about
                // the virtual pod.
                kube::Error::Api(status) if status.code == 400 => {
                    ApiError::BadRequest(status.message.replace(&host, &name))
                }
                other => ApiError::Internal(format!("reading the host pod's log: {other}")),
            })?;
            let lines = futures::AsyncBufReadExt::lines(stream).map_ok(|line| Bytes::from(format!("{line}\n")));
            let stream: BoxStream<'static, Result<Bytes, std::io::Error>> = Box::pin(lines);
            Ok(stream)
        })
    }
}

/// `metrics.k8s.io` of the virtual cluster: the host's metrics of the tenant's pods (renamed
/// back, bookkeeping labels dropped) and of the nodes the virtual cluster shows: with real nodes
/// (`sync.fromHost.nodes`) the host's node metrics, with fake nodes the sum of the tenant's own
/// pods on each (no host-wide permission needed, and nothing about other tenants shown).
struct HostMetrics {
    host: kube::Client,
    context: Context,
    /// The virtual cluster (set once its API server is up): which nodes it shows.
    virtual_client: Arc<std::sync::OnceLock<kube::Client>>,
    real_nodes: bool,
}

/// The host's metrics API answered `error`: what a client of an unavailable aggregated API sees.
fn metrics_unavailable(resource: &str, error: kube::Error) -> ApiError {
    tracing::debug!(%error, "the host's metrics API did not answer");
    ApiError::Unavailable(format!(
        "the server is currently unable to handle the request (get {resource}.metrics.k8s.io)"
    ))
}

/// A tenant pod's metrics, renamed back, and the host node it runs on.
struct TenantPodMetrics {
    metrics: serde_json::Value,
    node: String,
}

impl HostMetrics {
    fn shared(&self) -> Self {
        HostMetrics {
            host: self.host.clone(),
            context: self.context.clone(),
            virtual_client: self.virtual_client.clone(),
            real_nodes: self.real_nodes,
        }
    }

    async fn host_list(&self, path: &str, resource: &str) -> ApiResult<Vec<serde_json::Value>> {
        let request = http::Request::get(path).body(Vec::new()).map_err(|e| ApiError::Internal(e.to_string()))?;
        let list: serde_json::Value = self.host.request(request).await.map_err(|e| metrics_unavailable(resource, e))?;
        Ok(list.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default())
    }

    /// The nodes the virtual cluster shows, with their labels.
    async fn shown_nodes(&self) -> ApiResult<std::collections::BTreeMap<String, serde_json::Value>> {
        let Some(virtual_client) = self.virtual_client.get().cloned() else { return Ok(Default::default()) };
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(virtual_client);
        let list = nodes.list(&Default::default()).await.map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(list
            .items
            .into_iter()
            .map(|n| (n.metadata.name.unwrap_or_default(), serde_json::json!(n.metadata.labels.unwrap_or_default())))
            .collect())
    }

    /// The metrics of every pod of the tenant the host reports, under their virtual names.
    async fn tenant_pods(&self) -> ApiResult<Vec<TenantPodMetrics>> {
        let hns = self.context.host_namespace.clone();
        let items = self.host_list(&format!("/apis/metrics.k8s.io/v1beta1/namespaces/{hns}/pods"), "pods").await?;
        // Which virtual pod each host pod stands for: its bookkeeping annotations.
        let pods: Api<Pod> = Api::namespaced(self.host.clone(), &hns);
        let selector = format!("{}={}", vkube_translate::labels::MANAGED_BY, self.context.name);
        let host_pods = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| metrics_unavailable("pods", e))?;
        let mut owners = std::collections::HashMap::new();
        for pod in host_pods.items {
            let annotations = pod.metadata.annotations.unwrap_or_default();
            if let (Some(ns), Some(name)) = (
                annotations.get(vkube_translate::metadata::OBJECT_NAMESPACE),
                annotations.get(vkube_translate::metadata::OBJECT_NAME),
            ) {
                let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
                owners.insert(pod.metadata.name.unwrap_or_default(), (ns.clone(), name.clone(), node));
            }
        }
        Ok(items
            .into_iter()
            .filter_map(|mut metrics| {
                let host_name = metrics.pointer("/metadata/name")?.as_str()?.to_string();
                let (ns, name, node) = owners.get(&host_name)?.clone();
                metrics["metadata"]["name"] = serde_json::json!(name);
                metrics["metadata"]["namespace"] = serde_json::json!(ns);
                if let Some(labels) = metrics.pointer_mut("/metadata/labels").and_then(|l| l.as_object_mut()) {
                    labels.retain(|k, _| !k.starts_with("vcluster.loft.sh/"));
                }
                Some(TenantPodMetrics { metrics, node })
            })
            .collect())
    }
}

/// A fake node's usage: the sum of the tenant's pods on it, shaped as metrics-server's NodeMetrics.
fn fake_node_metrics(name: &str, labels: &serde_json::Value, pods: &[&TenantPodMetrics]) -> serde_json::Value {
    use vkube_translate::quantity;
    let (mut cpu, mut memory) = (0.0, 0.0);
    for pod in pods {
        for container in pod.metrics.pointer("/containers").and_then(|c| c.as_array()).into_iter().flatten() {
            let usage = |key: &str| {
                container.pointer(&format!("/usage/{key}")).and_then(|q| q.as_str()).and_then(quantity::value)
            };
            cpu += usage("cpu").unwrap_or(0.0);
            memory += usage("memory").unwrap_or(0.0);
        }
    }
    let newest = pods.iter().filter_map(|p| p.metrics.get("timestamp")).max_by_key(|t| t.as_str().map(str::to_owned));
    let window = pods.first().and_then(|p| p.metrics.get("window").cloned()).unwrap_or(serde_json::json!("20s"));
    serde_json::json!({
        "kind": "NodeMetrics",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "labels": labels},
        "timestamp": newest.cloned().unwrap_or_else(|| serde_json::json!(vkube_apiserver::registry::now())),
        "window": window,
        "usage": {"cpu": quantity::nanocores(cpu), "memory": quantity::kibibytes(memory)},
    })
}

impl vkube_apiserver::resource_metrics::ResourceMetrics for HostMetrics {
    fn nodes(&self) -> futures::future::BoxFuture<'static, ApiResult<Vec<serde_json::Value>>> {
        let this = self.shared();
        Box::pin(async move {
            if this.real_nodes {
                let items = this.host_list("/apis/metrics.k8s.io/v1beta1/nodes", "nodes").await?;
                let shown = this.shown_nodes().await?;
                return Ok(items
                    .into_iter()
                    .filter(|m| {
                        m.pointer("/metadata/name").and_then(|n| n.as_str()).is_some_and(|n| shown.contains_key(n))
                    })
                    .collect());
            }
            let pods = this.tenant_pods().await?;
            let shown = this.shown_nodes().await?;
            Ok(shown
                .iter()
                .map(|(name, labels)| {
                    let on_node: Vec<&TenantPodMetrics> = pods.iter().filter(|p| p.node == *name).collect();
                    fake_node_metrics(name, labels, &on_node)
                })
                .collect())
        })
    }

    fn pods(
        &self,
        namespace: Option<String>,
    ) -> futures::future::BoxFuture<'static, ApiResult<Vec<serde_json::Value>>> {
        let this = self.shared();
        Box::pin(async move {
            Ok(this
                .tenant_pods()
                .await?
                .into_iter()
                .map(|p| p.metrics)
                .filter(|m| {
                    namespace
                        .as_ref()
                        .is_none_or(|wanted| m.pointer("/metadata/namespace").and_then(|n| n.as_str()) == Some(wanted))
                })
                .collect())
        })
    }
}

/// `pods/proxy` and `services/proxy` of synced objects go to their host copies' (host names, same
/// port and path), `nodes/proxy` to the host node of that name, through the host API server.
struct HostProxies {
    host: kube::Client,
    context: Context,
}

impl vkube_apiserver::proxy::Proxies for HostProxies {
    fn proxy(
        &self,
        target: vkube_apiserver::proxy::ProxyTarget,
        request: http::Request<bytes::Bytes>,
    ) -> futures::future::BoxFuture<'static, ApiResult<http::Response<axum::body::Body>>> {
        let name = match (&target.namespace, target.resource.as_str()) {
            (Some(namespace), "pods" | "services") => {
                vkube_translate::names::host_name(&self.context, &target.name, namespace)
            }
            _ => target.name.clone(),
        };
        let id = match (&target.scheme, &target.port) {
            (Some(scheme), port) => format!("{scheme}:{name}:{}", port.clone().unwrap_or_default()),
            (None, Some(port)) => format!("{name}:{port}"),
            (None, None) => name.clone(),
        };
        let base = match target.namespace {
            Some(_) => format!("/api/v1/namespaces/{}/{}/{id}/proxy", self.context.host_namespace, target.resource),
            None => format!("/api/v1/nodes/{id}/proxy"),
        };
        let host = self.host.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut forwarded = http::Request::builder().method(parts.method).uri(format!("{base}{}", parts.uri));
            for (key, value) in &parts.headers {
                forwarded = forwarded.header(key, value);
            }
            let forwarded = forwarded.body(body.to_vec()).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let response = host
                .send(forwarded.map(kube::client::Body::from))
                .await
                .map_err(|error| ApiError::Unavailable(format!("proxying to the host: {error}")))?;
            let (parts, body) = response.into_parts();
            Ok(http::Response::from_parts(parts, axum::body::Body::new(body)))
        })
    }
}

/// `pods/exec` and `pods/attach` of a synced pod go to its host pod (same container, same
/// options) through the host API server; frames are relayed unchanged both ways.
struct HostStreams {
    host: kube::Client,
    context: Context,
}

impl vkube_apiserver::streams::PodStreams for HostStreams {
    fn connect(
        &self,
        pod: &serde_json::Value,
        port: u16,
    ) -> futures::future::BoxFuture<'static, Result<vkube_apiserver::streams::portforward::Forward, String>> {
        let namespace = pod.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let name = pod.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let host_name = vkube_translate::names::host_name(&self.context, &name, &namespace);
        let host = self.host.clone();
        let path =
            format!("/api/v1/namespaces/{}/pods/{host_name}/portforward?ports={port}", self.context.host_namespace);
        Box::pin(async move {
            // One host port-forward per connection, as kubectl opens one stream pair per connection.
            let request = http::Request::get(&path).body(Vec::new()).map_err(|e| e.to_string())?;
            let connection = host.connect(request).await.map_err(|error| match error {
                kube::Error::Api(status) if status.code == 404 => {
                    format!("pod {namespace}/{name} has not been synced to the host yet")
                }
                kube::Error::Api(status) => status.message.replace(&host_name, &name),
                other => format!("error forwarding port {port} to pod {name}: {other}"),
            })?;
            let forward = vkube_apiserver::streams::portforward::channel_client(connection.into_stream());
            // The host's refusal comes on the error channel; it is passed on to the client's.
            let failure = forward.failure.map(|failure| -> futures::future::BoxFuture<'static, Option<String>> {
                Box::pin(async move { failure.await.map(|e| e.replace(&host_name, &name)) })
            });
            Ok(vkube_apiserver::streams::portforward::Forward { connection: forward.connection, failure })
        })
    }

    fn open(
        &self,
        request: vkube_apiserver::streams::StreamRequest,
    ) -> futures::future::BoxFuture<'static, ApiResult<vkube_apiserver::streams::Session>> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let host_name = vkube_translate::names::host_name(&self.context, &request.name, &request.namespace);
        let encode = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
        let mut query = vec![format!("container={}", encode(&request.container))];
        for arg in &request.command {
            query.push(format!("command={}", encode(arg)));
        }
        for (key, on) in
            [("stdin", request.stdin), ("stdout", request.stdout), ("stderr", request.stderr), ("tty", request.tty)]
        {
            if on {
                query.push(format!("{key}=true"));
            }
        }
        let path = format!(
            "/api/v1/namespaces/{}/pods/{host_name}/{}?{}",
            self.context.host_namespace,
            request.subresource,
            query.join("&")
        );
        let host = self.host.clone();
        let (namespace, name) = (request.namespace.clone(), request.name.clone());
        Box::pin(async move {
            let http_request =
                http::Request::get(&path).body(Vec::new()).map_err(|e| ApiError::Internal(e.to_string()))?;
            let connection = host.connect(http_request).await.map_err(|error| match error {
                kube::Error::Api(status) if status.code == 404 => {
                    ApiError::BadRequest(format!("pod {namespace}/{name} has not been synced to the host yet"))
                }
                // The host's refusal (container not running ...), about the virtual pod.
                kube::Error::Api(status) => ApiError::BadRequest(status.message.replace(&host_name, &name)),
                other => ApiError::BadRequest(format!("unable to upgrade connection: {other}")),
            })?;
            let closes = connection.supports_stream_close();
            let session: vkube_apiserver::streams::Session = Box::new(move |frames| {
                Box::pin(async move {
                    let vkube_apiserver::streams::Frames { mut from_client, to_client } = frames;
                    let (mut sink, mut source) = connection.into_stream().split();
                    let upstream = tokio::spawn(async move {
                        while let Some(frame) = from_client.recv().await {
                            // A close signal the host does not speak (v4) cannot be passed on.
                            if frame.first() == Some(&vkube_apiserver::streams::channel::CLOSE) && !closes {
                                continue;
                            }
                            if sink.send(Message::binary(frame)).await.is_err() {
                                break;
                            }
                        }
                        // The client sends no more, but the command may still answer: the socket
                        // stays open until the host ends the session.
                        std::future::pending::<()>().await;
                        drop(sink);
                    });
                    while let Some(Ok(message)) = source.next().await {
                        match message {
                            Message::Binary(data) if to_client.send(data.to_vec()).await.is_err() => break,
                            Message::Close(_) => break,
                            _ => {}
                        }
                    }
                    upstream.abort();
                })
            });
            Ok(session)
        })
    }
}

/// Services of the virtual cluster take their cluster IPs and node ports from the host: the host
/// service is created first (as the reference's API interceptor does).
struct HostServices {
    host: kube::Client,
    context: Context,
    patches: vkube_syncer::patches::Patches,
}

impl vkube_apiserver::registry::ServiceAddresses for HostServices {
    fn allocate(&self, service: serde_json::Value) -> BoxFuture<'static, ApiResult<AllocatedService>> {
        let (host, context, patches) = (self.host.clone(), self.context.clone(), self.patches.clone());
        Box::pin(async move {
            match vkube_syncer::allocate_on_host(&host, &context, service, &patches).await {
                Ok(allocation) => Ok(AllocatedService { service: allocation.service, release: allocation.created_uid }),
                Err(kube::Error::Api(status)) if status.code == 422 => Err(ApiError::InvalidOptions {
                    message: format!("the host refused the service: {}", status.message),
                    causes: Vec::new(),
                }),
                Err(other) => Err(ApiError::Unavailable(format!("could not create the service on the host: {other}"))),
            }
        })
    }

    fn release(&self, allocated: AllocatedService) -> BoxFuture<'static, ()> {
        let (host, context) = (self.host.clone(), self.context.clone());
        Box::pin(async move {
            if let Some(uid) = &allocated.release {
                vkube_syncer::release_on_host(&host, &context, &allocated.service, uid).await
            }
        })
    }
}

/// The `rewriteHosts` init container (§4.5): an image without a registry comes from
/// `mirror.gcr.io`; resources default to 30m CPU and 64Mi memory, limits and requests.
fn rewrite_hosts_settings(
    init: &vkube_config::types::InitContainer,
    default_registry: &str,
) -> vkube_translate::pods::RewriteHosts {
    let mut settings = vkube_translate::pods::RewriteHosts {
        image: image_with_registry(&init.image, default_registry),
        ..Default::default()
    };
    let quantities = |map: &std::collections::BTreeMap<String, vkube_config::types::Quantity>| {
        map.iter().map(|(k, v)| (k.clone(), serde_json::json!(v.0))).collect::<serde_json::Map<_, _>>()
    };
    if !init.resources.limits.is_empty() {
        settings.resources["limits"] = serde_json::Value::Object(quantities(&init.resources.limits));
    }
    if !init.resources.requests.is_empty() {
        settings.resources["requests"] = serde_json::Value::Object(quantities(&init.resources.requests));
    }
    settings
}

/// `image` with a registry: its own, else `default_registry`
/// (`controlPlane.advanced.defaultImageRegistry`), else `mirror.gcr.io`; a bare repository
/// (`alpine:3.20`) is an official image, `library/...`.
fn image_with_registry(image: &str, default_registry: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    let has_registry = image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        return image.to_string();
    }
    let registry = if default_registry.is_empty() { "mirror.gcr.io" } else { default_registry };
    let repository = if image.contains('/') { image.to_string() } else { format!("library/{image}") };
    format!("{registry}/{repository}")
}

/// The translate rules of every kind the syncer writes to the host, compiled.
fn translate_rules(config: &vkube_config::Config) -> anyhow::Result<vkube_syncer::patches::PatchesByKind> {
    let to = &config.sync.to_host;
    let lists = [
        ("Pod", "pods", &to.pods.translate),
        ("Secret", "secrets", &to.secrets.translate),
        ("ConfigMap", "configMaps", &to.config_maps.translate),
        ("Ingress", "ingresses", &to.ingresses.translate),
        ("Service", "services", &to.services.translate),
        ("Endpoints", "endpoints", &to.endpoints.translate),
        ("EndpointSlice", "endpointSlices", &to.endpoint_slices.translate),
        ("NetworkPolicy", "networkPolicies", &to.network_policies.translate),
        ("PersistentVolumeClaim", "persistentVolumeClaims", &to.persistent_volume_claims.translate),
        ("PersistentVolume", "persistentVolumes", &to.persistent_volumes.translate),
        ("StorageClass", "storageClasses", &to.storage_classes.translate),
        ("ServiceAccount", "serviceAccounts", &to.service_accounts.translate),
        ("PodDisruptionBudget", "podDisruptionBudgets", &to.pod_disruption_budgets.translate),
        ("PriorityClass", "priorityClasses", &to.priority_classes.translate),
    ];
    let mut out = vkube_syncer::patches::PatchesByKind::new();
    for (kind, key, rules) in lists {
        if rules.is_empty() {
            continue;
        }
        let patches = vkube_syncer::patches::Patches::new(rules)
            .map_err(|problem| anyhow::anyhow!("sync.toHost.{key}.translate: {problem}"))?;
        out.insert(kind.to_string(), patches);
    }
    Ok(out)
}

/// Binds the syncer's and the controllers' users inside the virtual cluster: the syncer to a
/// ClusterRole of what it syncs, the controllers to upstream's roles of the controller loops they
/// implement. Applied at every start, so an upgrade brings the rules along.
async fn grant_component_access(
    admin: &kube::Client,
    custom: &[vkube_syncer::CustomResourceSync],
    mapped: &[vkube_syncer::MappedSync],
) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let roles: kube::Api<ClusterRole> = kube::Api::all(admin.clone());
    let bindings: kube::Api<ClusterRoleBinding> = kube::Api::all(admin.clone());
    let params = kube::api::PatchParams::apply("vkube").force();
    let binding = |name: &str, role: &str, user: &str| {
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "vkube"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })
    };
    let syncer = vkube_syncer::rbac::USER;
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": syncer, "labels": {"app.kubernetes.io/managed-by": "vkube"}},
        "rules": vkube_syncer::rbac::virtual_rules(custom, mapped),
    });
    roles.patch(syncer, &params, &kube::api::Patch::Apply(&role)).await.context("granting the syncer its role")?;
    bindings
        .patch(syncer, &params, &kube::api::Patch::Apply(&binding(syncer, syncer, syncer)))
        .await
        .context("binding the syncer's role")?;
    for controller in vkube_controllers::UPSTREAM_ROLES {
        let name = format!("{}:{controller}", vkube_controllers::USER);
        let object = binding(&name, &format!("system:controller:{controller}"), vkube_controllers::USER);
        bindings
            .patch(&name, &params, &kube::api::Patch::Apply(&object))
            .await
            .context("binding the controllers' roles")?;
    }
    Ok(())
}

/// A started virtual cluster: its API server, and the syncer and controllers (here, or in the
/// replica holding the lease).
pub struct Serving {
    pub server: RunningServer,
    /// The admin kubeconfig written for it.
    pub kubeconfig: PathBuf,
    syncer: tokio::task::JoinHandle<()>,
    elector: Option<Arc<vkube_controllers::leader_election::Elector>>,
}

impl Serving {
    /// Stops the syncer and the controllers, gives the lease up (a standby takes over at once),
    /// then stops serving.
    pub async fn stop(self) {
        self.syncer.abort();
        let _ = self.syncer.await;
        if let Some(elector) = &self.elector {
            elector.release().await;
        }
        self.server.shutdown().await;
    }
}

/// Whether this virtual cluster elects a leader among its replicas (several replicas, or a
/// store several processes can share), and with which times.
fn election(config: &Config) -> Option<vkube_controllers::leader_election::Timing> {
    let ha = &config.control_plane.stateful_set.high_availability;
    let secs = |s: u32| std::time::Duration::from_secs(u64::from(s));
    (ha.replicas > 1 || config.control_plane.backing_store.etcd.external.enabled).then(|| {
        vkube_controllers::leader_election::Timing {
            lease_duration: secs(ha.lease_duration),
            renew_deadline: secs(ha.renew_deadline),
            retry_period: secs(ha.retry_period),
        }
    })
}

/// This replica's name in the lease: host name, API address and process id.
fn replica_identity(addr: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "vkube".into());
    format!("{host}_{addr}_{}", std::process::id())
}

/// Starts the virtual API server and the syncer; returns once the syncer's caches are synced,
/// or, with leader election, once another replica is found leading.
pub async fn start(cluster: &VirtualCluster, host: kube::Client) -> anyhow::Result<Serving> {
    let config = &cluster.config;
    for line in vkube_config::support::not_yet_synced(config) {
        say!("warning: {line}");
    }
    let name = config.name().to_string();
    let context = Context::new(name.clone(), config.host_namespace());
    let mut server_config = ServerConfig::new(&cluster.dir);
    server_config.listen = cluster.listen;
    server_config.kubelet_listen = cluster.kubelet_listen;
    server_config.sans = config.control_plane.proxy.extra_sans.clone();
    server_config.cluster_name = name.clone();
    server_config.etcd = etcd_config(config);
    let patches = translate_rules(config)?;
    let service_patches = patches.get("Service").cloned().unwrap_or_default();
    let syncer_metrics = Arc::new(vkube_syncer::Metrics::default());
    let standby = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let standing_by = standby.clone();
    let (rendered, readiness) = (syncer_metrics.clone(), syncer_metrics.clone());
    let host_metrics = HostMetrics {
        host: host.clone(),
        context: context.clone(),
        virtual_client: Arc::new(std::sync::OnceLock::new()),
        real_nodes: config.sync.from_host.nodes.enabled,
    };
    let hooks = vkube_apiserver::Hooks {
        pod_logs: Some(Arc::new(HostLogs { host: host.clone(), context: context.clone() })),
        pod_streams: Some(Arc::new(HostStreams { host: host.clone(), context: context.clone() })),
        proxies: Some(Arc::new(HostProxies { host: host.clone(), context: context.clone() })),
        resource_metrics: Some(Arc::new(host_metrics.shared())),
        // With service sync off, the virtual API server allocates nothing on the host.
        service_addresses: config.sync.to_host.services.enabled.then(|| {
            Arc::new(HostServices { host: host.clone(), context: context.clone(), patches: service_patches }) as _
        }),
        metrics: Some(Arc::new(move || rendered.render())),
        // A standby replica serves the API; the syncer's readiness is the leader's.
        ready_checks: vec![(
            "syncer".into(),
            Arc::new(move || standing_by.load(std::sync::atomic::Ordering::Relaxed) || readiness.is_ready()),
        )],
    };
    let server = vkube_apiserver::start_with(server_config, hooks)
        .await
        .with_context(|| format!("starting the virtual API server in {}", cluster.dir.display()))?;
    let kubeconfig = server.admin_kubeconfig(&name).context("the virtual API server has no certificates")?;
    let path = cluster.dir.join(format!("{name}.kubeconfig"));
    write_private(&path, &kubeconfig).with_context(|| format!("writing {}", path.display()))?;
    let virtual_client = super::client_from_kubeconfig(&kubeconfig).await?;
    let _ = host_metrics.virtual_client.set(virtual_client.clone());
    let pods = &config.sync.to_host.pods;
    let mut enforce = Vec::new();
    for spec in &pods.enforce_tolerations {
        enforce.push(vkube_config::tolerations::parse(spec).map_err(anyhow::Error::msg)?);
    }
    let mut syncer_config = SyncerConfig::new(context);
    syncer_config.pods = PodSettings {
        translate_image: pods.translate_image.clone(),
        enforce_tolerations: enforce,
        token_secrets: pods.use_secrets_for_sa_tokens,
        service_accounts: config.sync.to_host.service_accounts.enabled,
        priority: Default::default(),
        rewrite_hosts: pods.rewrite_hosts.enabled.then(|| {
            rewrite_hosts_settings(
                &pods.rewrite_hosts.init_container,
                &config.control_plane.advanced.default_image_registry,
            )
        }),
        workload_account: config.control_plane.advanced.workload_service_account.name.clone(),
        // Filled from the node settings by the syncer (`sync.fromHost.nodes.selector.labels`).
        node_selector: Default::default(),
        runtime_class: pods.runtime_class_name.clone(),
        default_priority_class: pods.priority_class_name.clone(),
    };
    let nodes = &config.sync.from_host.nodes;
    syncer_config.nodes = vkube_translate::nodes::NodeSettings {
        real: nodes.enabled,
        all: nodes.selector.all,
        labels: nodes.selector.labels.clone(),
        clear_image_status: nodes.clear_image_status,
        sync_back: nodes.sync_back_changes,
        ..Default::default()
    };
    let replicate = &config.networking.replicate_services;
    let split = |value: &str, default_namespace: &str| match value.split_once('/') {
        Some((namespace, name)) => (namespace.to_string(), name.to_string()),
        None => (default_namespace.to_string(), value.to_string()),
    };
    let host_namespace = config.host_namespace();
    syncer_config.replicate = vkube_syncer::ServiceReplication {
        from_host: replicate
            .from_host
            .iter()
            .map(|m| (split(&m.from, &host_namespace), split(&m.to, "default")))
            .collect(),
        to_host: replicate.to_host.iter().map(|m| (split(&m.from, "default"), m.to.clone())).collect(),
    };
    syncer_config.pod_security = vkube_translate::pod_security::Level::parse(&config.policies.pod_security_standard);
    syncer_config.all_config_maps = config.sync.to_host.config_maps.all;
    syncer_config.all_secrets = config.sync.to_host.secrets.all;
    syncer_config.claims = config.sync.to_host.persistent_volume_claims.enabled;
    // The hook above gives virtual services the host's addresses.
    syncer_config.services_take_host_addresses = config.sync.to_host.services.enabled;
    syncer_config.pods_enabled = config.sync.to_host.pods.enabled;
    syncer_config.config_maps = config.sync.to_host.config_maps.enabled;
    syncer_config.secrets = config.sync.to_host.secrets.enabled;
    syncer_config.services = config.sync.to_host.services.enabled;
    syncer_config.events = config.sync.from_host.events.enabled;
    syncer_config.endpoints = config.sync.to_host.endpoints.enabled;
    syncer_config.metrics = syncer_metrics;
    syncer_config.patches = patches;
    let (to, from) = (&config.sync.to_host.custom_resources, &config.sync.from_host.custom_resources);
    let custom = to
        .iter()
        .map(|(key, e)| ("toHost", true, key, e.enabled, &e.translate))
        .chain(from.iter().map(|(key, e)| ("fromHost", false, key, e.enabled, &e.translate)));
    for (direction, to_host, key, enabled, rules) in custom {
        if !enabled {
            continue;
        }
        let patches = vkube_syncer::patches::Patches::new(rules)
            .map_err(|problem| anyhow::anyhow!("sync.{direction}.customResources[{key:?}].translate: {problem}"))?;
        match from.get(key).filter(|entry| !to_host && entry.scope == "Namespaced") {
            // Namespaced host objects are copied by name (§8.4).
            Some(entry) => syncer_config.mapped.push(vkube_syncer::MappedSync {
                kind: vkube_syncer::MappedKind::Custom(key.clone()),
                by_name: by_name(&format!("sync.fromHost.customResources[{key:?}].mappings"), &entry.mappings)?,
                patches,
            }),
            None => syncer_config.custom_resources.push(vkube_syncer::CustomResourceSync {
                key: key.clone(),
                to_host,
                patches,
            }),
        }
    }
    for (kind, entry) in [
        (vkube_syncer::MappedKind::ConfigMap, &config.sync.from_host.config_maps),
        (vkube_syncer::MappedKind::Secret, &config.sync.from_host.secrets),
    ] {
        if entry.enabled {
            let what = match kind {
                vkube_syncer::MappedKind::ConfigMap => "sync.fromHost.configMaps.mappings",
                _ => "sync.fromHost.secrets.mappings",
            };
            let by_name = by_name(what, &entry.mappings)?;
            syncer_config.mapped.push(vkube_syncer::MappedSync { kind, by_name, patches: Default::default() });
        }
    }
    let (to, from) = (&config.sync.to_host, &config.sync.from_host);
    syncer_config.optional = vkube_syncer::OptionalKinds {
        ingresses: to.ingresses.enabled,
        network_policies: to.network_policies.enabled,
        pod_disruption_budgets: to.pod_disruption_budgets.enabled,
        service_accounts: to.service_accounts.enabled,
        endpoint_slices: to.endpoint_slices.enabled,
        ingress_classes: from.ingress_classes.enabled,
        runtime_classes: from.runtime_classes.enabled,
        priority_classes: from.priority_classes.enabled,
        storage_classes: from.storage_classes.enabled.is_on(),
        csi_drivers: from.csi_drivers.enabled.is_on(),
        csi_nodes: from.csi_nodes.enabled.is_on(),
        csi_storage_capacities: from.csi_storage_capacities.enabled.is_on(),
        priority_classes_to_host: to.priority_classes.enabled,
        storage_classes_to_host: to.storage_classes.enabled,
        persistent_volumes_to_host: to.persistent_volumes.enabled,
    };
    for (kind, enabled, selector) in [
        ("IngressClass", from.ingress_classes.enabled, &from.ingress_classes.selector),
        ("RuntimeClass", from.runtime_classes.enabled, &from.runtime_classes.selector),
        ("PriorityClass", from.priority_classes.enabled, &from.priority_classes.selector),
        ("StorageClass", from.storage_classes.enabled.is_on(), &from.storage_classes.selector),
    ] {
        if enabled && !selector.is_empty() {
            syncer_config.class_selectors.insert(kind.to_string(), serde_json::to_value(selector)?);
        }
    }
    syncer_config.api_server = Some(server.addr);
    syncer_config.mappings = Some(vkube_syncer::MappingStorage(server.state.registry.store.clone()));
    let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
    let ready_for_controllers = ready.subscribe();
    let idle = syncer_config.metrics.clone();
    // The syncer and the controllers act inside the virtual cluster as their own users, bound
    // to what they need (the admin's kubeconfig stays the tenant's).
    let pki = server.pki.as_ref().context("the virtual API server has no certificates")?;
    grant_component_access(&virtual_client, &syncer_config.custom_resources, &syncer_config.mapped).await?;
    let component_kubeconfig = |user: &str| -> anyhow::Result<String> {
        let (cert, key) =
            pki.client_certificate(user, &[]).with_context(|| format!("issuing a certificate for {user}"))?;
        Ok(vkube_apiserver::pki::kubeconfig(&server.url, &name, &pki.ca_cert, &cert, &key))
    };
    let syncer_client = super::client_from_kubeconfig(&component_kubeconfig(vkube_syncer::rbac::USER)?).await?;
    let controllers_client = super::client_from_kubeconfig(&component_kubeconfig(vkube_controllers::USER)?).await?;
    let root_ca = server.pki.as_ref().map(|p| p.ca_cert.clone());
    let (failed, failure) = tokio::sync::oneshot::channel::<String>();
    let elector = election(config).map(|timing| {
        Arc::new(vkube_controllers::leader_election::Elector::new(
            virtual_client.clone(),
            replica_identity(server.addr),
            timing,
        ))
    });
    let (standing, mut standing_rx) = tokio::sync::watch::channel(None::<String>);
    let candidate = elector.clone();
    let syncer = tokio::spawn(async move {
        // With several replicas, only the lease holder syncs: wait for the lease, then hold it
        // while syncing; a replica that cannot renew exits (as kube-controller-manager does)
        // before a standby may take over, so the host never sees two syncers.
        if let Some(elector) = &candidate {
            let lease = format!(
                "{}/{}",
                vkube_controllers::leader_election::NAMESPACE,
                vkube_controllers::leader_election::NAME
            );
            elector
                .acquire(|holder| {
                    standby.store(true, std::sync::atomic::Ordering::Relaxed);
                    say!("standing by: {holder} holds the lease {lease}; serving the API only");
                    let _ = standing.send(Some(holder.to_string()));
                })
                .await;
            standby.store(false, std::sync::atomic::Ordering::Relaxed);
            say!("leading as {} (lease {lease}): starting the syncer and the controllers", elector.identity());
        }
        // The controllers stop with the syncer: both are dropped when this task is aborted. They
        // start once the syncer's caches are synced, so a restart does not list everything twice
        // at the same time on two cores ...
        let mut synced = ready_for_controllers;
        let controllers = async move {
            let started = synced.wait_for(|r| *r).await.is_ok();
            if started {
                // ... and once its first pass is through (at most 10 s), so the two do not
                // compete for the cores while the host is brought in sync.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
                while (idle.queue_depth() > 0 || idle.in_flight() > 0) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                vkube_controllers::run(controllers_client, root_ca).await;
            } else {
                // The syncer ended first: its branch reports why.
                std::future::pending::<()>().await;
            }
        };
        let syncer = vkube_syncer::run(syncer_client, host, syncer_config, ready);
        let work = async move {
            tokio::select! {
                () = controllers => tracing::error!("the controllers stopped"),
                result = syncer => if let Err(error) = result {
                    let error = format!("{:#}", anyhow::Error::from(error));
                    tracing::error!(%error, "the syncer stopped");
                    let _ = failed.send(error);
                },
            }
        };
        match &candidate {
            Some(elector) => tokio::select! {
                () = work => {}
                why = elector.hold() => {
                    say!("lost the leadership: {why}; exiting so that only the new leader syncs");
                    std::process::exit(1);
                }
            },
            None => work.await,
        }
    });
    tokio::select! {
        changed = ready_rx.wait_for(|r| *r) => {
            if changed.is_err() {
                // The syncer ended before it was ready: say why.
                let why = failure.await.unwrap_or_else(|_| "it stopped".into());
                anyhow::bail!("the syncer could not start: {why}");
            }
        }
        // Another replica leads: this one serves the API and waits for the lease.
        _ = standing_rx.wait_for(Option::is_some), if elector.is_some() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => anyhow::bail!("the syncer did not sync its caches within 60 s; is the host reachable?"),
    }
    Ok(Serving { server, kubeconfig: path, syncer, elector })
}

/// Says where the virtual cluster's kubelet API listens, when it does.
pub fn announce_kubelet(server: &vkube_apiserver::RunningServer) {
    if let Some(addr) = server.kubelet_addr {
        say!("kubelet API of the virtual cluster's pods on https://{addr}");
    }
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut cluster =
        VirtualCluster::resolve(args.config.as_deref(), args.name, args.host_namespace, args.dir, args.listen)?;
    cluster.kubelet_listen = args.kubelet_listen;
    let text = std::fs::read_to_string(&args.host_kubeconfig)
        .with_context(|| format!("cannot read --host-kubeconfig {}", args.host_kubeconfig.display()))?;
    let host = super::client_from_kubeconfig(&text)
        .await
        .with_context(|| format!("--host-kubeconfig {}", args.host_kubeconfig.display()))?;
    let serving = start(&cluster, host).await?;
    say!("virtual kubeconfig: {}", serving.kubeconfig.display());
    say!("listening on {}", serving.server.url);
    announce_kubelet(&serving.server);
    super::announce_ready();
    super::shutdown_signal().await;
    say!("shutting down");
    serving.stop().await;
    Ok(())
}

/// Parsed `mappings.byName` (validation already refused bad ones; this names the field if not).
fn by_name(what: &str, mappings: &vkube_config::Mappings) -> anyhow::Result<vkube_config::mappings::ByName> {
    vkube_config::mappings::ByName::parse(what, &mappings.by_name)
        .map_err(|problems| anyhow::anyhow!("{what}: {}", problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_get_their_registry_the_default_one_or_mirror_gcr() {
        assert_eq!(image_with_registry("library/alpine:3.20", ""), "mirror.gcr.io/library/alpine:3.20");
        assert_eq!(image_with_registry("alpine:3.20", ""), "mirror.gcr.io/library/alpine:3.20");
        assert_eq!(image_with_registry("alpine:3.20", "registry.corp:5000"), "registry.corp:5000/library/alpine:3.20");
        assert_eq!(image_with_registry("tools/sed:1", "registry.corp"), "registry.corp/tools/sed:1");
        // An image naming its registry keeps it (the reference's default registry overrides it [QUIRK]).
        assert_eq!(image_with_registry("quay.io/x/alpine:3", "registry.corp"), "quay.io/x/alpine:3");
    }
}
