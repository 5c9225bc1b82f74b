//! Pods: created on the host with their references synced first, status and node binding
//! brought back, images forced onto the host, deletion both ways, re-created virtual pods
//! replaced, and a second virtual pod that maps to a taken host name refused.

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use vkube_translate::metadata::OBJECT_UID;
use vkube_translate::names::host_name;
use vkube_translate::pods::{
    PodEnvironment, host_pod, token_audiences, token_secret, token_secret_data, token_secret_name,
};

/// Audiences of a token whose source names none (the virtual API server's own).
const DEFAULT_AUDIENCES: &[&str] =
    &["https://kubernetes.default.svc.cluster.local", "https://kubernetes.default.svc", "https://kubernetes.default"];
/// Lifetime of the tokens minted for host pods (minted once per pod like the reference, which
/// asks for ten years; the virtual API server grants at most one).
const TOKEN_SECONDS: i64 = 365 * 24 * 3600;

use crate::cached_host;
use crate::{
    MANAGER, Syncer, SyncerConfig, cached, data, events, has_controller, ignore_not_found, is_not_found, lock, to_value,
};

/// Pod annotations that do not sync after creation (§2.8): what the syncer derives for the host
/// pod (identity, owners, tokens, hosts rewrite), the autoscaler's, and kubectl's manifest copy
/// (not kept in the pod cache).
const POD_METADATA: vkube_translate::metadata_sync::Excluded = vkube_translate::metadata_sync::Excluded {
    keys: &[
        "cluster-autoscaler.kubernetes.io/safe-to-evict",
        "cluster-autoscaler.kubernetes.io/daemonset-pod",
        crate::LAST_APPLIED,
    ],
    prefixes: &["vcluster.loft.sh/"],
};

impl Syncer {
    pub(crate) async fn reconcile_pod(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        if !self.config.pods_enabled {
            return Ok(());
        }
        let context = &self.config.context;
        let host = host_name(context, name, namespace);
        let virtual_pod = crate::cached_virtual(&self.virtual_pods, Some(namespace), name);
        let host_pod_now = cached_host(&self.host_pods, Some(self.host_namespace()), &host);
        if let Some(other) = host_pod_now.as_ref().filter(|h| !self.belongs("Pod", h.as_ref(), namespace, name)) {
            // The host name is taken by another virtual pod (`a-x-b` in `c` and `a` in `b-x-c`).
            if let Some(virtual_pod) = &virtual_pod {
                let owner = crate::virtual_key_of(&self.mappings, "Pod", other.as_ref())
                    .map(|(ns, n)| format!("{ns}/{n}"))
                    .unwrap_or_default();
                let message = format!(
                    "cannot sync: host name {}/{host} is already used by virtual pod {owner}; rename this pod",
                    self.host_namespace()
                );
                self.recorder.warn(&events::Target::of(virtual_pod.as_ref()), "SyncWarning", "SyncPod", &message).await;
            }
            return Ok(());
        }
        let virtual_api: Api<Pod> = Api::namespaced(self.virtual_client.clone(), namespace);
        let host_api: Api<Pod> = self.host_api();
        match (virtual_pod, host_pod_now) {
            (None, None) => {
                lock(&self.gone_host_pods).remove(&(namespace.to_string(), name.to_string()));
                self.forget("Pod", namespace, name);
                Ok(())
            }
            (None, Some(host_pod)) => {
                if host_pod.metadata.deletion_timestamp.is_none() {
                    tracing::info!(%namespace, %name, "virtual pod deleted; deleting host pod");
                    ignore_not_found(host_api.delete(&host, &DeleteParams::default()).await)?;
                }
                self.delete_token_secret(namespace, name).await
            }
            (Some(virtual_pod), None) => {
                let ran_before = virtual_pod.status.as_ref().and_then(|s| s.start_time.as_ref()).is_some();
                if ran_before || virtual_pod.metadata.deletion_timestamp.is_some() {
                    let last = lock(&self.gone_host_pods).remove(&(namespace.to_string(), name.to_string()));
                    if let Some(last) = last.filter(|h| h.annotations().get(OBJECT_UID) == virtual_pod.uid().as_ref()) {
                        // What the host said last (why it went) stays on the virtual pod.
                        self.bring_status_back(&virtual_api, &virtual_pod, &last).await?;
                    }
                    tracing::info!(%namespace, %name, "host pod is gone; deleting virtual pod");
                    let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                    ignore_not_found(virtual_api.delete(name, &params).await)?;
                    return self.delete_token_secret(namespace, name).await;
                }
                let spec = virtual_pod.spec.as_ref();
                for (kind, class) in [
                    ("PriorityClass", spec.and_then(|s| s.priority_class_name.as_deref())),
                    ("RuntimeClass", spec.and_then(|s| s.runtime_class_name.as_deref())),
                ] {
                    if let Some(message) = self.class_refusal(kind, class) {
                        let target = events::Target::of(virtual_pod.as_ref());
                        self.recorder.warn(&target, "SyncWarning", "SyncPod", &message).await;
                        return Ok(());
                    }
                }
                // The cache holds a slim copy: the host pod is made from the whole pod, kept aside
                // until it is bound (read from the API when it is not there).
                let whole = lock(&self.unbound)
                    .get(&(namespace.to_string(), name.to_string()))
                    .filter(|p| p.uid() == virtual_pod.uid())
                    .cloned();
                let virtual_pod = match whole {
                    Some(pod) => pod,
                    None => match virtual_api.get_opt(name).await? {
                        Some(pod) => pod,
                        None => return Ok(()),
                    },
                };
                if !self.pod_security_allows(&virtual_pod).await {
                    return Ok(());
                }
                let mut uses = data::uses_of_pod(context, &virtual_pod);
                uses.extend(crate::referenced_uses(context, &self.config.patches, "Pod", &to_value(&virtual_pod)));
                if !self
                    .record(&virtual_pod, self.pair("Pod", namespace, name, &host), self.pod_references(&uses))
                    .await
                {
                    return Ok(());
                }
                // The config maps and secrets go first (concurrently, while the tokens are
                // minted): the pod must find them.
                let value = to_value(&virtual_pod);
                if self.config.pods.service_accounts {
                    // The host pod runs under the host copy of its own account: that goes first.
                    let spec = virtual_pod.spec.as_ref();
                    let account = spec
                        .and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone()))
                        .filter(|a| !a.is_empty())
                        .unwrap_or_else(|| "default".into());
                    self.reconcile_to_host(crate::extra::ToHostKind::ServiceAccount, namespace, &account).await?;
                }
                let data = futures::future::try_join_all(uses.iter().map(|u| self.reconcile_data(u.kind, &u.host)));
                let (_, environment) =
                    futures::future::try_join(data, self.pod_environment(&virtual_pod, &value)).await?;
                let labels = self.namespace_labels(namespace);
                if self.config.pods.token_secrets && !environment.tokens.is_empty() {
                    let data = token_secret_data(&value, &environment.tokens);
                    self.write_token_secret(token_secret(context, &value, &data)).await?;
                }
                if vkube_translate::labels::affinity_uses_both_namespace_forms(&value) {
                    let message = "Inter-pod affinity rule(s) that use both .namespaces and .namespaceSelector are not supported: the namespaceSelector is ignored";
                    self.recorder.warn(&events::Target::of(&virtual_pod), "SyncWarning", "SyncPod", message).await;
                }
                let desired = host_pod(context, &value, &labels, &self.config.pods, &environment);
                let desired = self.owned(desired, has_controller(&virtual_pod));
                self.create_on_host::<Pod>(desired).await?;
                if self.config.pods.token_secrets && !environment.tokens.is_empty() {
                    self.own_token_secret_by_pod(&host_api, namespace, name, &host).await?;
                }
                Ok(())
            }
            (Some(virtual_pod), Some(host_pod)) => {
                let virtual_uid = virtual_pod.uid().unwrap_or_default();
                if !self.mappings.contains("Pod", &crate::ObjectName::new(namespace, name)) {
                    // Synced before the mapping store knew it (or its save was lost to a crash).
                    let uses = lock(&self.refs).uses_of(&format!("pod/{namespace}/{name}"));
                    let pair = self.pair("Pod", namespace, name, &host);
                    if !self.record(virtual_pod.as_ref(), pair, self.pod_references(&uses)).await {
                        return Ok(());
                    }
                }
                self.restore_bookkeeping(host_pod.as_ref(), "Pod", namespace, name, &virtual_uid).await?;
                if host_pod.annotations().get(OBJECT_UID).is_some_and(|uid| *uid != virtual_uid) {
                    tracing::info!(%namespace, %name, "virtual pod was re-created; replacing host pod");
                    return ignore_not_found(
                        host_api
                            .delete(&host, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
                            .await,
                    );
                }
                if virtual_pod.metadata.deletion_timestamp.is_some() {
                    if host_pod.metadata.deletion_timestamp.is_none() {
                        let grace = virtual_pod.metadata.deletion_grace_period_seconds.map(|g| g.max(0) as u32);
                        ignore_not_found(
                            host_api
                                .delete(&host, &DeleteParams { grace_period_seconds: grace, ..Default::default() })
                                .await,
                        )?;
                    }
                    return Ok(());
                }
                self.bring_status_back(&virtual_api, &virtual_pod, &host_pod).await?;
                if host_pod.metadata.deletion_timestamp.is_some() {
                    // Deleted on the host (preempted, evicted, drained): the virtual pod
                    // terminates with it, with the same grace period, as the reference does.
                    tracing::info!(%namespace, %name, "host pod is being deleted; deleting virtual pod");
                    let grace = host_pod.metadata.deletion_grace_period_seconds.map(|g| g.max(0) as u32);
                    let params = DeleteParams { grace_period_seconds: grace, ..DeleteParams::default() };
                    return ignore_not_found(virtual_api.delete(name, &params).await);
                }
                self.project_namespace_labels(&host_api, namespace, &host_pod).await?;
                self.sync_metadata("Pod", &virtual_api, virtual_pod.as_ref(), host_pod.as_ref(), POD_METADATA).await?;
                self.forward_spec(&host_api, &virtual_pod, &host_pod).await?;
                self.add_ephemeral_containers(&virtual_api, &host_api, &virtual_pod, &host_pod).await?;
                self.force_images(&host_api, &virtual_pod, &host_pod).await
            }
        }
    }

    /// §4.1: a pod violating `policies.podSecurityStandard` is not synced; a `SyncError` event
    /// on it gives the Pod Security admission's reasons. Checked when the host pod is made and
    /// when ephemeral containers are added (the only security settings a running pod can gain).
    async fn pod_security_allows(&self, pod: &Pod) -> bool {
        let Some(level) = self.config.pod_security else { return true };
        let Err(reason) = vkube_translate::pod_security::evaluate(level, &to_value(pod)) else { return true };
        let message = format!("Pod {} is forbidden: {reason}", pod.name_any());
        self.recorder.warn(&events::Target::of(pod), "SyncError", "SyncPod", &message).await;
        false
    }

    /// §2.3: the `ns-label` labels of a host pod are its virtual namespace's current labels
    /// (host network policies translated from namespace selectors match on them).
    async fn project_namespace_labels(
        &self,
        host_api: &Api<Pod>,
        namespace: &str,
        host_pod: &Pod,
    ) -> Result<(), kube::Error> {
        let context = &self.config.context;
        let wanted = vkube_translate::labels::namespace_labels(context, &self.namespace_labels(namespace));
        let prefix = format!("{}-{}-x-", vkube_translate::labels::NS_LABEL_PREFIX, context.name);
        let current: std::collections::BTreeMap<String, String> = host_pod
            .labels()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if current == wanted {
            return Ok(());
        }
        let mut labels = serde_json::Map::new();
        for key in current.keys().filter(|k| !wanted.contains_key(*k)) {
            labels.insert(key.clone(), Value::Null);
        }
        for (key, value) in &wanted {
            labels.insert(key.clone(), json!(value));
        }
        let patch = Patch::Merge(json!({"metadata": {"labels": labels}}));
        ignore_not_found(host_api.patch(&host_pod.name_any(), &PatchParams::apply(MANAGER), &patch).await)
    }

    /// The mapping-store references of a pod: the config maps and secrets it uses.
    fn pod_references(&self, uses: &std::collections::BTreeSet<crate::refs::Use>) -> Vec<crate::NameMapping> {
        uses.iter().map(|u| self.pair(u.kind.kind(), &u.namespace, &u.name, &u.host)).collect()
    }

    /// Creates (or refreshes) the token secret of a host pod in secret mode.
    async fn write_token_secret(&self, secret: Value) -> Result<(), kube::Error> {
        let name = secret["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let secret = self.owned(secret, false);
        let object: Secret = serde_json::from_value(secret.clone()).map_err(kube::Error::SerdeError)?;
        let api: Api<Secret> = self.host_api();
        match api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let patch = Patch::Merge(json!({"stringData": secret["stringData"]}));
                api.patch(&name, &PatchParams::apply(MANAGER), &patch).await.map(|_| ())
            }
            Err(error) => Err(error),
        }
    }

    /// §4.7: the token secret belongs to its host pod, so the host collects it with the pod even
    /// when vkube is not running.
    async fn own_token_secret_by_pod(
        &self,
        host_api: &Api<Pod>,
        namespace: &str,
        name: &str,
        host: &str,
    ) -> Result<(), kube::Error> {
        let Some(pod) = host_api.get_opt(host).await? else { return Ok(()) };
        let owner = json!([{"apiVersion": "v1", "kind": "Pod", "name": host, "uid": pod.uid()}]);
        let api: Api<Secret> = self.host_api();
        let secret = token_secret_name(&self.config.context, name, namespace);
        let patch = Patch::Merge(json!({"metadata": {"ownerReferences": owner}}));
        ignore_not_found(api.patch(&secret, &PatchParams::apply(MANAGER), &patch).await)
    }

    /// Deletes the token secret of a host pod (secret mode), if there is one.
    async fn delete_token_secret(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        if !self.config.pods.token_secrets {
            return Ok(());
        }
        let api: Api<Secret> = self.host_api();
        let secret = token_secret_name(&self.config.context, name, namespace);
        ignore_not_found(api.delete(&secret, &DeleteParams::default()).await)
    }

    /// The DNS server, `kubernetes.default` address and service account tokens of a new host pod.
    async fn pod_environment(&self, pod: &Pod, value: &Value) -> Result<PodEnvironment, kube::Error> {
        let context = &self.config.context;
        let dns = host_name(context, "kube-dns", "kube-system");
        let dns_ip = cached(&self.host_services, Some(self.host_namespace()), &dns)
            .and_then(|s| s.spec.as_ref().and_then(|s| s.cluster_ip.clone()))
            .filter(|ip| !ip.is_empty() && ip != "None");
        let mut tokens = Vec::new();
        let audiences = token_audiences(value);
        if !audiences.is_empty() {
            let namespace = pod.namespace().unwrap_or_default();
            let spec = pod.spec.as_ref();
            let account = spec
                .and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone()))
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "default".into());
            let accounts: Api<ServiceAccount> = Api::namespaced(self.virtual_client.clone(), &namespace);
            for audience in audiences {
                let audiences = match audience {
                    Some(audience) => vec![audience],
                    None => DEFAULT_AUDIENCES.iter().map(|a| a.to_string()).collect(),
                };
                let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"audiences": audiences, "expirationSeconds": TOKEN_SECONDS,
                             "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.name_any(), "uid": pod.uid()}}});
                let minted: Value =
                    accounts.create_subresource("token", &account, &PostParams::default(), &request).await?;
                tokens.push(minted.pointer("/status/token").and_then(Value::as_str).unwrap_or_default().to_string());
            }
        }
        let namespace = pod.namespace().unwrap_or_default();
        let (service_links, service_link_config_maps) = match self.service_links.for_pod(&namespace) {
            crate::links::Links::Inline(links) => (links, Vec::new()),
            crate::links::Links::ConfigMaps(names) => (Vec::new(), names),
            crate::links::Links::Write(rewrite) => {
                let (maps, names) = self.service_link_config_maps(&namespace, &rewrite.variables);
                write_service_link_config_maps(self.host_api(), maps, &names, &rewrite.before).await?;
                self.service_links.written(&namespace, rewrite.generation, names.clone());
                (if names.is_empty() { rewrite.variables } else { Vec::new() }, names)
            }
            crate::links::Links::Stale(names, rewrite) => {
                let (maps, written) = self.service_link_config_maps(&namespace, &rewrite.variables);
                let (api, index) = (self.host_api(), self.service_links.clone());
                tokio::spawn(async move {
                    match write_service_link_config_maps(api, maps, &written, &rewrite.before).await {
                        Ok(()) => index.written(&namespace, rewrite.generation, written),
                        Err(error) => {
                            tracing::warn!(%namespace, %error, "rewriting the service-link config maps failed; the next pod tries again");
                            index.rewrite_failed(&namespace);
                        }
                    }
                });
                (Vec::new(), names)
            }
        };
        Ok(PodEnvironment {
            api_service_ip: self.api_service_ip.clone(),
            dns_ip,
            cluster_domain: "cluster.local".into(),
            tokens,
            service_links: std::sync::Arc::new(service_links),
            service_link_config_maps,
        })
    }

    /// §4.8 at scale: the host config maps holding a namespace's service-link variables (none
    /// when they fit into each container), owned as configured, and their names.
    fn service_link_config_maps(&self, namespace: &str, links: &[(String, String)]) -> (Vec<Value>, Vec<String>) {
        if links.len() <= vkube_translate::pods::INLINE_SERVICE_LINKS {
            return (Vec::new(), Vec::new());
        }
        let maps: Vec<Value> = vkube_translate::pods::service_link_config_maps(&self.config.context, namespace, links)
            .into_iter()
            .map(|map| self.owned(map, false))
            .collect();
        let names =
            maps.iter().filter_map(|m| m.pointer("/metadata/name").and_then(Value::as_str).map(String::from)).collect();
        (maps, names)
    }

    async fn bring_status_back(
        &self,
        virtual_api: &Api<Pod>,
        virtual_pod: &Pod,
        host_pod: &Pod,
    ) -> Result<(), kube::Error> {
        let name = virtual_pod.name_any();
        let host_node = host_pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let virtual_node = virtual_pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if let Some(node) = host_node.filter(|_| virtual_node.is_none()) {
            self.ensure_virtual_node(&node).await?;
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
            match virtual_api
                .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        let mut host_status = json!({"status": to_value(&host_pod.status)});
        self.patch_to_virtual("Pod", &virtual_pod.namespace().unwrap_or_default(), &mut host_status)?;
        let mut host_status = host_status["status"].take();
        // The virtual pod keeps its own QoS class (§3.1: the host's may differ, e.g. because of
        // containers injected on the host); everything else follows the host.
        let mut virtual_status = to_value(&virtual_pod.status);
        for status in [&mut host_status, &mut virtual_status] {
            if let Some(map) = status.as_object_mut() {
                map.remove("qosClass");
            }
        }
        // The rewriteHosts init container exists only on the host (§4.5).
        if let Some(inits) = host_status.get_mut("initContainerStatuses").and_then(Value::as_array_mut) {
            inits.retain(|s| s.get("name").and_then(Value::as_str) != Some(vkube_translate::pods::REWRITE_HOSTS));
        }
        if host_status.is_null() || virtual_status == host_status {
            return Ok(());
        }
        tracing::debug!(pod = %name, virtual = %virtual_status, host = %host_status, "status back to the virtual pod");
        match virtual_api
            .patch_status(&name, &PatchParams::apply(MANAGER), &Patch::Merge(json!({"status": host_status})))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// §3.1: what may change on a running pod follows the virtual pod: tolerations (added; the
    /// host's own and the enforced ones stay), `activeDeadlineSeconds`, `schedulingGates`.
    async fn forward_spec(&self, host_api: &Api<Pod>, virtual_pod: &Pod, host_pod: &Pod) -> Result<(), kube::Error> {
        let (Some(virtual_spec), Some(host_spec)) = (virtual_pod.spec.as_ref(), host_pod.spec.as_ref()) else {
            return Ok(());
        };
        let mut patch = serde_json::Map::new();
        let host_tolerations = host_spec.tolerations.clone().unwrap_or_default();
        let missing: Vec<_> =
            virtual_spec.tolerations.iter().flatten().filter(|t| !host_tolerations.contains(t)).cloned().collect();
        if !missing.is_empty() {
            let all: Vec<_> = host_tolerations.into_iter().chain(missing).collect();
            patch.insert("tolerations".into(), json!(all));
        }
        if virtual_spec.active_deadline_seconds != host_spec.active_deadline_seconds
            && virtual_spec.active_deadline_seconds.is_some()
        {
            patch.insert("activeDeadlineSeconds".into(), json!(virtual_spec.active_deadline_seconds));
        }
        let gates = |spec: &k8s_openapi::api::core::v1::PodSpec| spec.scheduling_gates.clone().unwrap_or_default();
        if gates(virtual_spec) != gates(host_spec) {
            patch.insert("schedulingGates".into(), json!(gates(virtual_spec)));
        }
        if patch.is_empty() {
            return Ok(());
        }
        let patch = Patch::Merge(json!({"spec": patch}));
        match host_api.patch(&host_pod.name_any(), &PatchParams::apply(MANAGER), &patch).await {
            Ok(_) => Ok(()),
            // What the host refuses (a longer deadline, a gate added after creation) is the
            // tenant's to know.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                let message = format!("the host refused the pod's update: {}", status.message);
                self.recorder.warn(&events::Target::of(virtual_pod), "SyncError", "SyncPod", &message).await;
                Ok(())
            }
            Err(error) => ignore_not_found(Err::<(), _>(error)),
        }
    }

    /// §3.1: ephemeral containers added to the virtual pod (`kubectl debug`) are added to the
    /// host pod through its `ephemeralcontainers` subresource, translated like its containers.
    async fn add_ephemeral_containers(
        &self,
        virtual_api: &Api<Pod>,
        host_api: &Api<Pod>,
        virtual_pod: &Pod,
        host_pod: &Pod,
    ) -> Result<(), kube::Error> {
        let names = |pod: &Pod| -> Vec<String> {
            pod.spec.iter().flat_map(|s| s.ephemeral_containers.iter().flatten()).map(|c| c.name.clone()).collect()
        };
        let on_host = names(host_pod);
        if names(virtual_pod).iter().all(|n| on_host.contains(n)) {
            return Ok(());
        }
        // The cache's copy is slim: the whole pod is translated.
        let Some(whole) = virtual_api.get_opt(&virtual_pod.name_any()).await? else { return Ok(()) };
        if !self.pod_security_allows(&whole).await {
            return Ok(());
        }
        let value = to_value(&whole);
        let labels = self.namespace_labels(&whole.namespace().unwrap_or_default());
        let mut environment = self.pod_environment(&whole, &value).await?;
        environment.tokens.clear();
        let translated =
            vkube_translate::pods::host_pod(&self.config.context, &value, &labels, &self.config.pods, &environment);
        // A strategic merge by name: only the new ones are sent, the host's stay as they are.
        let mut containers = Vec::new();
        for container in translated.pointer("/spec/ephemeralContainers").and_then(Value::as_array).into_iter().flatten()
        {
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
            if !on_host.iter().any(|n| n == name) {
                containers.push(container.clone());
            }
        }
        let patch = Patch::Strategic(json!({"spec": {"ephemeralContainers": containers}}));
        let params = PatchParams::apply(MANAGER);
        match host_api.patch_subresource("ephemeralcontainers", &host_pod.name_any(), &params, &patch).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 422 => {
                let message = format!("the host refused the ephemeral container: {}", status.message);
                self.recorder.warn(&events::Target::of(virtual_pod), "SyncError", "SyncPod", &message).await;
                Ok(())
            }
            Err(error) => ignore_not_found(Err::<Pod, _>(error)).map(|_| ()),
        }
    }

    /// Container images follow the virtual pod: a change made on the host is reverted.
    async fn force_images(&self, host_api: &Api<Pod>, virtual_pod: &Pod, host_pod: &Pod) -> Result<(), kube::Error> {
        let mut desired = host_pod_images(&self.config, virtual_pod);
        if self.config.patches.contains_key("Pod") {
            // The host images are what the pod's translate rules make of them.
            let containers: Vec<Value> = desired.iter().map(|(n, i)| json!({"name": n, "image": i})).collect();
            let mut images = json!({"spec": {"containers": containers}});
            self.patch_to_host("Pod", &virtual_pod.namespace().unwrap_or_default(), &mut images)?;
            for (slot, container) in
                desired.iter_mut().zip(images["spec"]["containers"].as_array().into_iter().flatten())
            {
                if let Some(image) = container.get("image").and_then(Value::as_str) {
                    slot.1 = image.to_string();
                }
            }
        }
        let actual = host_pod
            .spec
            .as_ref()
            .map(|s| {
                s.containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if desired == actual || host_pod.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let containers: Vec<Value> =
            desired.iter().map(|(name, image)| json!({"name": name, "image": image})).collect();
        let patch = json!({"spec": {"containers": containers}});
        ignore_not_found(
            host_api.patch(&host_pod.name_any(), &PatchParams::apply(MANAGER), &Patch::Strategic(patch)).await,
        )
    }
}

fn host_pod_images(config: &SyncerConfig, pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| {
                    let image = c.image.clone().unwrap_or_default();
                    let image = config.pods.translate_image.get(&image).cloned().unwrap_or(image);
                    (c.name.clone(), image)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a namespace's service-link config maps `maps` (named `names`) to the host and removes
/// those of `before` no longer needed.
async fn write_service_link_config_maps(
    api: Api<k8s_openapi::api::core::v1::ConfigMap>,
    maps: Vec<Value>,
    names: &[String],
    before: &[String],
) -> Result<(), kube::Error> {
    let apply = PatchParams::apply(MANAGER).force();
    for (map, name) in maps.into_iter().zip(names) {
        api.patch(name, &apply, &Patch::Apply(map)).await?;
    }
    for stale in before.iter().filter(|n| !names.contains(n)) {
        ignore_not_found(api.delete(stale, &DeleteParams::default()).await)?;
    }
    Ok(())
}
