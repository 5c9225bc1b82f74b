//! Service replication (`networking.replicateServices`, sync-behavior.md §12.4), beside the
//! service syncer: `fromHost` shows a host service in the virtual cluster as a headless service
//! whose endpoints reach it; `toHost` exposes a virtual service in the host namespace under a
//! plain name. Replicas carry `vcluster.loft.sh/controlled-by: vcluster`; a service without it
//! (the tenant's, or someone else's on the host) is never overwritten or deleted. Replicas no
//! longer configured are removed at start.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::{Value, json};
use vkube_translate::replicate;

use crate::{MANAGER, Syncer, Work, ignore_not_found, to_value};

/// `networking.replicateServices`, parsed.
#[derive(Clone, Debug, Default)]
pub struct ServiceReplication {
    /// Host service (namespace, name) → virtual service (namespace, name).
    pub from_host: Vec<((String, String), (String, String))>,
    /// Virtual service (namespace, name) → host service name in the host namespace.
    pub to_host: Vec<((String, String), String)>,
}

/// The caches replication reads.
#[derive(Default)]
pub(crate) struct Replication {
    /// Per `from_host` entry: the host service and its endpoints.
    from_host: Vec<(Store<Service>, Store<Endpoints>)>,
    /// Per `to_host` entry: the virtual service.
    to_host: Vec<Store<Service>>,
    /// Virtual replicas (services and endpoints labelled as replicas).
    virtual_replicas: Option<(Store<Service>, Store<Endpoints>)>,
    /// Host replicas in the host namespace.
    host_replicas: Option<Store<Service>>,
}

fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

fn replica_selector() -> String {
    format!("{}={}", vkube_translate::labels::CONTROLLED_BY, replicate::CONTROLLER)
}

fn named(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

impl Syncer {
    /// Brings the virtual replica of host service `from_host[index]` in line with it.
    pub(crate) async fn reconcile_replica_from_host(&self, index: usize) -> Result<(), kube::Error> {
        let replication = &self.replication;
        let (Some(((host_ns, host_name), (namespace, name))), Some((host_services, host_endpoints))) =
            (self.config.replicate.from_host.get(index), replication.from_host.get(index))
        else {
            return Ok(());
        };
        let services: Api<Service> = Api::namespaced(self.virtual_client.clone(), namespace);
        let endpoints: Api<Endpoints> = Api::namespaced(self.virtual_client.clone(), namespace);
        let current = services.get_opt(name).await?;
        if current.as_ref().is_some_and(|s| !replicate::is_replica(&to_value(s))) {
            let message = format!(
                "cannot replicate host service {host_ns}/{host_name}: virtual service {namespace}/{name} exists and is not a replica; rename or remove it"
            );
            let target = crate::events::Target::of(current.as_ref().unwrap());
            self.recorder.warn(&target, "SyncWarning", "ReplicateService", &message).await;
            return Ok(());
        }
        let Some(host) = get(host_services, host_ns, host_name) else {
            if current.is_some() {
                tracing::info!(%namespace, %name, "replicated host service gone; deleting its virtual replica");
                ignore_not_found(services.delete(name, &DeleteParams::default()).await)?;
                ignore_not_found(endpoints.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(());
        };
        let host = to_value(host.as_ref());
        let desired = replicate::virtual_service(&host, namespace, name);
        let params = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        match &current {
            None => {
                self.ensure_virtual_namespace(namespace).await?;
                crate::ensure(&services, desired.clone()).await?;
            }
            Some(current) => {
                if current.spec.as_ref().map(|s| to_value(&s.ports)) != Some(desired["spec"]["ports"].clone()) {
                    let patch = Patch::Merge(json!({"spec": {"ports": desired["spec"]["ports"]}}));
                    ignore_not_found(services.patch(name, &PatchParams::default(), &patch).await)?;
                }
            }
        }
        // The load balancer's address, as the host has it.
        let ingress = host.pointer("/status/loadBalancer/ingress").cloned().unwrap_or(Value::Null);
        let current_ingress =
            current.as_ref().map(to_value).and_then(|s| s.pointer("/status/loadBalancer/ingress").cloned());
        if ingress != current_ingress.unwrap_or(Value::Null) {
            let patch = Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}}));
            ignore_not_found(services.patch_status(name, &PatchParams::default(), &patch).await)?;
        }
        let host_endpoints = get(host_endpoints, host_ns, host_name).map(|e| to_value(e.as_ref()));
        let desired = replicate::virtual_endpoints(&host, host_endpoints.as_ref(), namespace, name);
        let existing = replication.virtual_replicas.as_ref().and_then(|(_, e)| get(e, namespace, name));
        match existing {
            None => {
                let object: Endpoints = serde_json::from_value(desired).map_err(kube::Error::SerdeError)?;
                match endpoints.create(&params, &object).await {
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        let patch = Patch::Apply(json!({"apiVersion": "v1", "kind": "Endpoints",
                            "metadata": {"labels": object.metadata.labels}, "subsets": object.subsets}));
                        endpoints.patch(name, &PatchParams::apply(MANAGER).force(), &patch).await?;
                    }
                    other => {
                        other?;
                    }
                }
            }
            Some(existing) => {
                let subsets = desired.get("subsets").cloned().unwrap_or(json!([]));
                if to_value(&existing.subsets.clone().unwrap_or_default()) != subsets {
                    let mut object = (*existing).clone();
                    object.subsets = serde_json::from_value(subsets).map_err(kube::Error::SerdeError)?;
                    object.metadata.managed_fields = None;
                    ignore_not_found(endpoints.replace(name, &params, &object).await)?;
                }
            }
        }
        Ok(())
    }

    /// Brings the host replica of virtual service `to_host[index]` in line with it.
    pub(crate) async fn reconcile_replica_to_host(&self, index: usize) -> Result<(), kube::Error> {
        let (Some(((namespace, name), host_name)), Some(sources)) =
            (self.config.replicate.to_host.get(index), self.replication.to_host.get(index))
        else {
            return Ok(());
        };
        let api: Api<Service> = Api::namespaced(self.host_client.clone(), self.host_namespace());
        let current = api.get_opt(host_name).await?;
        let source = get(sources, namespace, name);
        if current.as_ref().is_some_and(|s| !replicate::is_replica(&to_value(s))) {
            if let Some(source) = &source {
                let message = format!(
                    "cannot replicate service to the host: host service {}/{host_name} exists and is not a replica",
                    self.host_namespace()
                );
                self.recorder
                    .warn(&crate::events::Target::of(source.as_ref()), "SyncWarning", "ReplicateService", &message)
                    .await;
            }
            return Ok(());
        }
        let Some(source) = source else {
            if current.is_some() {
                tracing::info!(%namespace, %name, host = %host_name, "replicated virtual service gone; deleting its host replica");
                ignore_not_found(api.delete(host_name, &DeleteParams::default()).await)?;
            }
            return Ok(());
        };
        let desired =
            self.owned(replicate::host_service(&self.config.context, &to_value(source.as_ref()), host_name), false);
        match current {
            None => crate::ensure(&api, desired).await,
            Some(current) => {
                let current = to_value(&current);
                let (ports, selector) =
                    (&desired["spec"]["ports"], desired["spec"].get("selector").cloned().unwrap_or(Value::Null));
                let current_selector = current.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
                let current_ports = current.pointer("/spec/ports").cloned().unwrap_or(json!([]));
                if !same_ports(&current_ports, ports) || current_selector != selector {
                    let patch = Patch::Merge(json!({"spec": {"ports": ports, "selector": selector}}));
                    ignore_not_found(api.patch(host_name, &PatchParams::default(), &patch).await)?;
                }
                Ok(())
            }
        }
    }

    /// Removes replicas no longer configured: virtual ones (with their endpoints) and host ones.
    pub(crate) async fn remove_stale_replicas(&self) -> Result<(), kube::Error> {
        let replicate = &self.config.replicate;
        if let Some((services, _)) = &self.replication.virtual_replicas {
            for service in services.state() {
                let key = (service.namespace().unwrap_or_default(), service.name_any());
                if !replicate.from_host.iter().any(|(_, target)| *target == key) {
                    tracing::info!(namespace = %key.0, name = %key.1, "replica no longer configured; deleting it");
                    let services: Api<Service> = Api::namespaced(self.virtual_client.clone(), &key.0);
                    let endpoints: Api<Endpoints> = Api::namespaced(self.virtual_client.clone(), &key.0);
                    ignore_not_found(services.delete(&key.1, &DeleteParams::default()).await)?;
                    ignore_not_found(endpoints.delete(&key.1, &DeleteParams::default()).await)?;
                }
            }
        }
        if let Some(services) = &self.replication.host_replicas {
            let api: Api<Service> = Api::namespaced(self.host_client.clone(), self.host_namespace());
            for service in services.state() {
                let name = service.name_any();
                if !replicate.to_host.iter().any(|(_, host)| *host == name) {
                    tracing::info!(%name, "host replica no longer configured; deleting it");
                    ignore_not_found(api.delete(&name, &DeleteParams::default()).await)?;
                }
            }
        }
        Ok(())
    }
}

/// Ports equal but for what the host fills in (target ports default to the port, protocols to TCP).
fn same_ports(current: &Value, desired: &Value) -> bool {
    let normal = |ports: &Value| -> Vec<Value> {
        ports
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut p = p.clone();
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                if p.get("targetPort").is_none() {
                    p["targetPort"] = p.get("port").cloned().unwrap_or(Value::Null);
                }
                if let Some(map) = p.as_object_mut() {
                    map.remove("nodePort");
                }
                p
            })
            .collect()
    };
    normal(current) == normal(desired)
}

/// Starts the caches of `config`'s replicated services.
pub(crate) fn start(config: &ServiceReplication, wiring: &mut crate::extra::Wiring<'_>) -> Replication {
    // The replica watchers run even with nothing configured: replicas of an earlier
    // configuration are removed at start.
    let mut out = Replication::default();
    for (index, ((namespace, name), _)) in config.from_host.iter().enumerate() {
        let q = wiring.queue.clone();
        let services = crate::reflect(
            Api::<Service>::namespaced(wiring.host_client.clone(), namespace),
            named(name),
            move |_: &Service, _| q.send(Work::ReplicaFromHost(index)),
        );
        let q = wiring.queue.clone();
        let endpoints = crate::reflect(
            Api::<Endpoints>::namespaced(wiring.host_client.clone(), namespace),
            named(name),
            move |_: &Endpoints, _| q.send(Work::ReplicaFromHost(index)),
        );
        out.from_host.push((wiring.started(services), wiring.started(endpoints)));
    }
    for (index, ((namespace, name), _)) in config.to_host.iter().enumerate() {
        let q = wiring.queue.clone();
        let services = crate::reflect(
            Api::<Service>::namespaced(wiring.virtual_client.clone(), namespace),
            named(name),
            move |_: &Service, _| q.send(Work::ReplicaToHost(index)),
        );
        out.to_host.push(wiring.started(services));
    }
    let replicas = watcher::Config::default().labels(&replica_selector());
    // A tenant's edit or removal of a replica is undone.
    let (q, targets) = (wiring.queue.clone(), config.from_host.clone());
    let on_virtual = move |namespace: String, name: String| {
        if let Some(index) = targets.iter().position(|(_, target)| *target == (namespace.clone(), name.clone())) {
            q.send(Work::ReplicaFromHost(index));
        }
    };
    let on_endpoints = on_virtual.clone();
    let services =
        crate::reflect(Api::<Service>::all(wiring.virtual_client.clone()), replicas.clone(), move |s: &Service, _| {
            on_virtual(s.namespace().unwrap_or_default(), s.name_any())
        });
    let endpoints = crate::reflect(
        Api::<Endpoints>::all(wiring.virtual_client.clone()),
        replicas.clone(),
        move |e: &Endpoints, _| on_endpoints(e.namespace().unwrap_or_default(), e.name_any()),
    );
    out.virtual_replicas = Some((wiring.started(services), wiring.started(endpoints)));
    let (q, targets) = (wiring.queue.clone(), config.to_host.clone());
    let host = crate::reflect(
        Api::<Service>::namespaced(wiring.host_client.clone(), wiring.host_namespace),
        replicas,
        move |s: &Service, _| {
            if let Some(index) = targets.iter().position(|(_, host)| *host == s.name_any()) {
                q.send(Work::ReplicaToHost(index));
            }
        },
    );
    out.host_replicas = Some(wiring.started(host));
    wiring.queue.send(Work::StaleReplicas);
    out
}
