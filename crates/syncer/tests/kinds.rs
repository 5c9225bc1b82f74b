//! Claims, fake volumes, endpoints of selector-less services, owner references, name
//! collisions and sync failures, through kube-rs against in-process servers.

use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[macro_use]
mod common;
use common::{Clusters, eventually, object, syncer_config};

const HNS: &str = "vcluster-vc";

/// Creates virtual pod `web` (one nginx container) and waits until it runs.
async fn run_web(v_pods: &Api<Pod>) {
    v_pods
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
        )
        .await
        .unwrap();
    eventually("the virtual pod running", || {
        let v_pods = v_pods.clone();
        async move { (v_pods.get("web").await.ok()?.status?.phase.as_deref() == Some("Running")).then_some(()) }
    })
    .await;
}

fn gone<T>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(s)) if s.code == 404)
}

on_both_hosts! {
async fn claims_bind_on_the_host_and_the_virtual_cluster_shows_the_volume() {
    let clusters = Clusters::start(syncer_config()).await;
    let v_claims: Api<PersistentVolumeClaim> = Api::namespaced(clusters.vc.clone(), "default");
    let h_claims: Api<PersistentVolumeClaim> = Api::namespaced(clusters.host.clone(), HNS);
    let v_volumes: Api<PersistentVolume> = Api::all(clusters.vc.clone());
    v_claims
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}})),
        )
        .await
        .unwrap();
    let host_claim = eventually("the host claim to be bound", || {
        let h_claims = h_claims.clone();
        async move {
            let claim = h_claims.get("data-x-default-x-vc").await.ok()?;
            (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim)
        }
    })
    .await;
    let owner = &host_claim.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Service", "vc"), "owned by the virtual cluster's service");
    let volume = host_claim.spec.unwrap().volume_name.unwrap();
    let claim = eventually("the virtual claim to be bound", || {
        let v_claims = v_claims.clone();
        async move {
            let claim = v_claims.get("data").await.ok()?;
            (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim)
        }
    })
    .await;
    assert_eq!(claim.spec.as_ref().unwrap().volume_name.as_deref(), Some(volume.as_str()));
    assert_eq!(claim.annotations().get("pv.kubernetes.io/bind-completed").map(String::as_str), Some("yes"));
    let fake = eventually("the fake volume", || {
        let v_volumes = v_volumes.clone();
        let volume = volume.clone();
        async move {
            let pv = v_volumes.get(&volume).await.ok()?;
            (pv.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(pv)
        }
    })
    .await;
    assert_eq!(fake.spec.as_ref().unwrap().claim_ref.as_ref().unwrap().name.as_deref(), Some("data"));

    // Expanding the virtual claim expands the host claim.
    let expand = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
    v_claims.patch("data", &PatchParams::default(), &Patch::Merge(expand)).await.unwrap();
    eventually("the host claim to be expanded", || {
        let h_claims = h_claims.clone();
        async move {
            let claim = h_claims.get("data-x-default-x-vc").await.ok()?;
            let storage = claim.spec?.resources?.requests?.get("storage")?.0.clone();
            (storage == "5Gi").then_some(())
        }
    })
    .await;

    // Deleting the virtual claim deletes the host claim and the fake volume.
    v_claims.delete("data", &DeleteParams::default()).await.unwrap();
    eventually("host claim and fake volume gone", || {
        let (h_claims, v_volumes, volume) = (h_claims.clone(), v_volumes.clone(), volume.clone());
        async move { (gone(h_claims.get("data-x-default-x-vc").await) && gone(v_volumes.get(&volume).await)).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
/// §3.5: the EndpointSlices a tenant writes for a selector-less service reach the host (service
/// label and pod targets translated); slices of services with a selector or of no service stay
/// virtual; a host copy goes when its service gains a selector.
async fn endpoint_slices_of_selectorless_services_reach_the_host() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let mut config = syncer_config();
    config.optional = vkube_syncer::OptionalKinds { endpoint_slices: true, ..Default::default() };
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let v_services: Api<Service> = Api::namespaced(clusters.vc.clone(), "default");
    let v_slices: Api<EndpointSlice> = Api::namespaced(clusters.vc.clone(), "default");
    let h_slices: Api<EndpointSlice> = Api::namespaced(clusters.host.clone(), HNS);
    v_services.create(&pp, &object(json!({"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}}))).await.unwrap();
    v_services
        .create(&pp, &object(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})))
        .await
        .unwrap();
    let slice = |name: &str, service: &str| {
        object::<EndpointSlice>(json!({"metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"port": 5432, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": "db-0", "namespace": "default"}}]}))
    };
    for (name, service) in [("db-1", "db"), ("web-1", "web"), ("lost-1", "missing")] {
        v_slices.create(&pp, &slice(name, service)).await.unwrap();
    }
    let copy = eventually("the slice's host copy", || {
        let h_slices = h_slices.clone();
        async move { h_slices.get("db-1-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(copy.labels().get("kubernetes.io/service-name").map(String::as_str), Some("db-x-default-x-vc"));
    let target = copy.endpoints[0].target_ref.clone().unwrap();
    assert_eq!((target.name.as_deref(), target.namespace.as_deref()), (Some("db-0-x-default-x-vc"), Some(HNS)));
    assert_eq!(copy.endpoints[0].addresses, ["10.1.2.3"]);
    assert!(gone(h_slices.get("web-1-x-default-x-vc").await), "a selector's slices are the host's own business");
    assert!(gone(h_slices.get("lost-1-x-default-x-vc").await), "no service, no copy");
    v_services
        .patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"selector": {"app": "db"}}})))
        .await
        .unwrap();
    eventually("the copy to go once the service has a selector", || {
        let h_slices = h_slices.clone();
        async move { gone(h_slices.get("db-1-x-default-x-vc").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn endpoints_of_selectorless_services_reach_the_host() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let v_services: Api<Service> = Api::namespaced(clusters.vc.clone(), "default");
    let v_endpoints: Api<Endpoints> = Api::namespaced(clusters.vc.clone(), "default");
    let h_endpoints: Api<Endpoints> = Api::namespaced(clusters.host.clone(), HNS);
    v_services
        .create(&pp, &object(json!({"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}})))
        .await
        .unwrap();
    v_endpoints
        .create(
            &pp,
            &object(json!({"metadata": {"name": "db"}, "subsets": [{"addresses": [{"ip": "192.168.10.7"}], "ports": [{"port": 5432}]}]})),
        )
        .await
        .unwrap();
    eventually("host endpoints with the external address", || {
        let h_endpoints = h_endpoints.clone();
        async move {
            let endpoints = h_endpoints.get("db-x-default-x-vc").await.ok()?;
            let ip = endpoints.subsets?.first()?.addresses.as_ref()?.first()?.ip.clone();
            (ip == "192.168.10.7").then_some(())
        }
    })
    .await;
    let moved = json!({"subsets": [{"addresses": [{"ip": "192.168.10.8"}], "ports": [{"port": 5432}]}]});
    v_endpoints.patch("db", &PatchParams::default(), &Patch::Merge(moved)).await.unwrap();
    eventually("host endpoints to follow", || {
        let h_endpoints = h_endpoints.clone();
        async move {
            let endpoints = h_endpoints.get("db-x-default-x-vc").await.ok()?;
            let ip = endpoints.subsets?.first()?.addresses.as_ref()?.first()?.ip.clone();
            (ip == "192.168.10.8").then_some(())
        }
    })
    .await;
    // A service with a selector gets its host endpoints from the host, never from the syncer.
    v_services
        .create(
            &pp,
            &object(
                json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
            ),
        )
        .await
        .unwrap();
    v_endpoints
        .create(&pp, &object(json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.1.1.1"}], "ports": [{"port": 80}]}]})))
        .await
        .ok();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    if let Ok(endpoints) = h_endpoints.get("web-x-default-x-vc").await {
        assert!(!endpoints.annotations().contains_key("vcluster.loft.sh/object-name"), "the host makes these");
    }
    // Deleting the service removes the copied endpoints.
    v_services.delete("db", &DeleteParams::default()).await.unwrap();
    eventually("host endpoints gone", || {
        let h_endpoints = h_endpoints.clone();
        async move { gone(h_endpoints.get("db-x-default-x-vc").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn a_second_pod_with_the_same_host_name_is_refused_with_a_warning() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(clusters.vc.clone());
    for ns in ["c", "b-x-c"] {
        namespaces.create(&pp, &object(json!({"metadata": {"name": ns}}))).await.unwrap();
    }
    let pod = |name: &str| {
        object::<Pod>(json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
    };
    let first: Api<Pod> = Api::namespaced(clusters.vc.clone(), "c");
    let second: Api<Pod> = Api::namespaced(clusters.vc.clone(), "b-x-c");
    first.create(&pp, &pod("a-x-b")).await.unwrap();
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    eventually("the first pod on the host", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("a-x-b-x-c-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    second.create(&pp, &pod("a")).await.unwrap();
    let events: Api<Event> = Api::namespaced(clusters.vc.clone(), "b-x-c");
    let warning =
        eventually("a warning on the second pod", || {
            let events = events.clone();
            async move {
                events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
                    e.involved_object.name.as_deref() == Some("a") && e.reason.as_deref() == Some("SyncWarning")
                })
            }
        })
        .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning.message.as_deref().unwrap_or_default().contains("already used by virtual pod c/a-x-b"),
        "{warning:?}"
    );
    let host_pod = h_pods.get("a-x-b-x-c-x-vc").await.unwrap();
    assert_eq!(host_pod.annotations()["vcluster.loft.sh/object-namespace"], "c", "the first pod keeps its host pod");
    // Deleting the refused pod leaves the other pod's host pod alone.
    second.delete("a", &DeleteParams::default().grace_period(0)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let host_pod = h_pods.get("a-x-b-x-c-x-vc").await.unwrap();
    assert!(host_pod.metadata.deletion_timestamp.is_none());
}
}

on_both_hosts! {
async fn a_failed_sync_is_reported_on_the_virtual_pod_and_retried() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    // Someone else's config map already has the name the syncer needs.
    let h_maps: Api<ConfigMap> = Api::namespaced(clusters.host.clone(), HNS);
    h_maps
        .create(&pp, &object(json!({"metadata": {"name": "settings-x-default-x-vc"}, "data": {"theirs": "1"}})))
        .await
        .unwrap();
    let v_maps: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "default");
    v_maps.create(&pp, &object(json!({"metadata": {"name": "settings"}, "data": {"mine": "1"}}))).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    v_pods
        .create(&pp, &object(json!({"metadata": {"name": "app"}, "spec": {"containers": [{"name": "c", "image": "nginx", "envFrom": [{"configMapRef": {"name": "settings"}}]}]}})))
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(clusters.vc.clone(), "default");
    let warning =
        eventually("a SyncError event on the pod", || {
            let events = events.clone();
            async move {
                events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
                    e.involved_object.name.as_deref() == Some("app") && e.reason.as_deref() == Some("SyncError")
                })
            }
        })
        .await;
    assert!(warning.message.as_deref().unwrap_or_default().contains("already exists"), "{warning:?}");
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    assert!(gone(h_pods.get("app-x-default-x-vc").await), "the pod waits for its config map");
    assert_eq!(h_maps.get("settings-x-default-x-vc").await.unwrap().data.unwrap()["theirs"], "1", "not overwritten");
    // Once the other object is gone, the retry succeeds.
    h_maps.delete("settings-x-default-x-vc", &DeleteParams::default()).await.unwrap();
    eventually("the pod on the host", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("app-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    assert_eq!(h_maps.get("settings-x-default-x-vc").await.unwrap().data.unwrap()["mine"], "1");
}
}

on_both_hosts! {
async fn deleting_the_virtual_clusters_host_service_cleans_the_host_namespace() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let v_maps: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "default");
    v_maps.create(&pp, &object(json!({"metadata": {"name": "files"}, "data": {"a": "1"}}))).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    v_pods
        .create(&pp, &object(json!({"metadata": {"name": "app"}, "spec": {"containers": [{"name": "c", "image": "nginx"}], "volumes": [{"name": "f", "configMap": {"name": "files"}}]}})))
        .await
        .unwrap();
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    let h_maps: Api<ConfigMap> = Api::namespaced(clusters.host.clone(), HNS);
    eventually("pod and config map on the host", || {
        let (h_pods, h_maps) = (h_pods.clone(), h_maps.clone());
        async move {
            let pod = h_pods.get("app-x-default-x-vc").await.ok()?;
            h_maps.get("files-x-default-x-vc").await.ok()?;
            Some(pod)
        }
    })
    .await;
    // The virtual cluster is deleted: its syncer stops and its service goes.
    clusters.syncer.abort();
    let h_services: Api<Service> = Api::namespaced(clusters.host.clone(), HNS);
    h_services.delete("vc", &DeleteParams::default()).await.unwrap();
    eventually("owned host objects gone", || {
        let (h_pods, h_maps) = (h_pods.clone(), h_maps.clone());
        async move {
            let pods = h_pods.list(&ListParams::default()).await.ok()?.items;
            let pods_left = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).count();
            (pods_left == 0 && gone(h_maps.get("files-x-default-x-vc").await)).then_some(())
        }
    })
    .await;
}
}

on_both_hosts! {
async fn a_restart_with_200_objects_duplicates_nothing_and_removes_orphans() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_maps: Api<ConfigMap> = Api::namespaced(vc.clone(), "default");
    let v_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(vc.clone(), "default");
    let v_services: Api<Service> = Api::namespaced(vc.clone(), "default");
    let v_pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    let pod = |i: usize| {
        object::<Pod>(json!({"metadata": {"name": format!("app-{i}"), "labels": {"app": format!("app-{i}")}},
            "spec": {"containers": [{"name": "c", "image": "nginx", "envFrom": [{"configMapRef": {"name": format!("conf-{i}")}}],
                     "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": format!("token-{i}"), "key": "t"}}}]}]}}))
    };
    for i in 0..50 {
        v_maps
            .create(&pp, &object(json!({"metadata": {"name": format!("conf-{i}")}, "data": {"i": i.to_string()}})))
            .await
            .unwrap();
        v_secrets
            .create(&pp, &object(json!({"metadata": {"name": format!("token-{i}")}, "stringData": {"t": "x"}})))
            .await
            .unwrap();
        v_services
            .create(&pp, &object(json!({"metadata": {"name": format!("app-{i}")}, "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80}]}})))
            .await
            .unwrap();
        v_pods.create(&pp, &pod(i)).await.unwrap();
    }
    let h_pods: Api<Pod> = Api::namespaced(host.clone(), HNS);
    let h_maps: Api<ConfigMap> = Api::namespaced(host.clone(), HNS);
    let h_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(host.clone(), HNS);
    let h_services: Api<Service> = Api::namespaced(host.clone(), HNS);
    // Host copies of this test's objects: (pods, config maps, secrets, services).
    let counts = || {
        let (h_pods, h_maps, h_secrets, h_services) =
            (h_pods.clone(), h_maps.clone(), h_secrets.clone(), h_services.clone());
        async move {
            let synced = |names: Vec<String>, prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
            let pods = h_pods.list(&ListParams::default()).await.ok()?.items.iter().map(|p| p.name_any()).collect();
            let maps = h_maps.list(&ListParams::default()).await.ok()?.items.iter().map(|p| p.name_any()).collect();
            let secrets =
                h_secrets.list(&ListParams::default()).await.ok()?.items.iter().map(|p| p.name_any()).collect();
            let services =
                h_services.list(&ListParams::default()).await.ok()?.items.iter().map(|p| p.name_any()).collect();
            Some((synced(pods, "app-"), synced(maps, "conf-"), synced(secrets, "token-"), synced(services, "app-")))
        }
    };
    eventually("200 objects on the host", || {
        let counts = counts();
        async move { counts.await.filter(|c| *c == (50, 50, 50, 50)) }
    })
    .await;

    // The syncer stops; meanwhile ten pods go and ten new ones come.
    clusters.syncer.abort();
    for i in 0..10 {
        v_pods.delete(&format!("app-{i}"), &DeleteParams::default().grace_period(0)).await.unwrap();
    }
    for i in 50..60 {
        v_maps
            .create(&pp, &object(json!({"metadata": {"name": format!("conf-{i}")}, "data": {"i": i.to_string()}})))
            .await
            .unwrap();
        v_secrets
            .create(&pp, &object(json!({"metadata": {"name": format!("token-{i}")}, "stringData": {"t": "x"}})))
            .await
            .unwrap();
        v_pods.create(&pp, &pod(i)).await.unwrap();
    }
    let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
    let restarted = tokio::spawn(vkube_syncer::run(vc.clone(), clusters.syncer_host.clone(), syncer_config(), ready));
    ready_rx.wait_for(|r| *r).await.unwrap();
    // Orphans (the ten deleted pods and what only they used) go; the new ten arrive; nothing twice.
    let expected: std::collections::BTreeSet<String> = (10..60).map(|i| format!("app-{i}-x-default-x-vc")).collect();
    eventually("the host pods to match the virtual cluster", || {
        let (h_pods, expected) = (h_pods.clone(), expected.clone());
        async move {
            let names: std::collections::BTreeSet<String> =
                h_pods.list(&ListParams::default()).await.ok()?.items.iter().map(|p| p.name_any()).collect();
            (names == expected).then_some(())
        }
    })
    .await;
    eventually("config maps, secrets and services to match", || {
        let counts = counts();
        async move { counts.await.filter(|c| *c == (50, 50, 50, 50)) }
    })
    .await;
    eventually("the config map only a deleted pod used removed, the new pods' added", || {
        let h_maps = h_maps.clone();
        async move {
            let added = h_maps.get("conf-59-x-default-x-vc").await.is_ok();
            (added && gone(h_maps.get("conf-0-x-default-x-vc").await)).then_some(())
        }
    })
    .await;
    restarted.abort();
}
}

on_both_hosts! {
async fn disabled_kinds_stay_in_the_virtual_cluster() {
    let mut config = syncer_config();
    config.pods_enabled = false;
    config.services = false;
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
        )
        .await
        .unwrap();
    let v_services: Api<Service> = Api::namespaced(clusters.vc.clone(), "default");
    v_services
        .create(&pp, &object(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})))
        .await
        .unwrap();
    // A claim (still enabled) reaches the host, so the syncer is working through its queue.
    let v_claims: Api<PersistentVolumeClaim> = Api::namespaced(clusters.vc.clone(), "default");
    v_claims
        .create(&pp, &object(json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})))
        .await
        .unwrap();
    let h_claims: Api<PersistentVolumeClaim> = Api::namespaced(clusters.host.clone(), HNS);
    eventually("the claim on the host", || {
        let h_claims = h_claims.clone();
        async move { h_claims.get("data-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    let h_services: Api<Service> = Api::namespaced(clusters.host.clone(), HNS);
    assert!(gone(h_pods.get("web-x-default-x-vc").await), "pod sync is off");
    assert!(gone(h_services.get("web-x-default-x-vc").await), "service sync is off");
}
}

on_both_hosts! {
async fn tokens_go_into_a_secret_per_pod_in_secret_mode() {
    let mut config = syncer_config();
    config.pods.token_secrets = true;
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(clusters.vc.clone(), "default");
    accounts.create(&pp, &object(json!({"metadata": {"name": "default"}}))).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    let pod = v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
        )
        .await
        .unwrap();
    let volume = pod.spec.unwrap().volumes.unwrap()[0].name.clone();
    assert!(volume.starts_with("kube-api-access-"), "service account admission");
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    let h_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(clusters.host.clone(), HNS);
    let host_pod = eventually("the host pod", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("web-x-default-x-vc").await.ok() }
    })
    .await;
    let source = serde_json::to_value(&host_pod.spec.unwrap().volumes.unwrap()[0]).unwrap();
    assert_eq!(source["projected"]["sources"][0]["secret"]["name"], "web-sa-token-x-default-x-vc");
    let secret = eventually("the token secret owned by the host pod", || {
        let h_secrets = h_secrets.clone();
        async move {
            let secret = h_secrets.get("web-sa-token-x-default-x-vc").await.ok()?;
            let owners = secret.metadata.owner_references.clone().unwrap_or_default();
            (owners.len() == 1 && owners[0].kind == "Pod" && owners[0].name == "web-x-default-x-vc").then_some(secret)
        }
    })
    .await;
    let token = String::from_utf8(secret.data.unwrap()[&volume].0.clone()).unwrap();
    assert!(token.starts_with("eyJ"), "a JWT minted by the virtual API server");
    v_pods.delete("web", &DeleteParams::default().grace_period(0)).await.unwrap();
    eventually("the token secret gone with the pod", || {
        let h_secrets = h_secrets.clone();
        async move { gone(h_secrets.get("web-sa-token-x-default-x-vc").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn the_mapping_store_persists_pairs_and_leads_back_to_host_objects_that_lost_their_annotations() {
    let clusters = Clusters::start(syncer_config()).await;
    let store = clusters.virtual_server.state.registry.store.clone();
    let pp = PostParams::default();
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(vc.clone(), "default");
    v_secrets.create(&pp, &object(json!({"metadata": {"name": "db"}, "stringData": {"p": "x"}}))).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx",
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}]}]}})),
        )
        .await
        .unwrap();
    let h_pods: Api<Pod> = Api::namespaced(host.clone(), HNS);
    eventually("the host pod running", || {
        let h_pods = h_pods.clone();
        async move {
            let pod = h_pods.get("web-x-default-x-vc").await.ok()?;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await;
    // The pod's mapping, with the secret it uses, is in the virtual cluster's store.
    let saved = eventually("the pod's mapping saved", || {
        let store = store.clone();
        async move {
            let stored = vkube_syncer::mappings::stored(store.as_ref()).await.ok()?;
            stored.into_iter().find(|m| m.pair.kind == "Pod" && m.pair.virtual_name.name == "web")
        }
    })
    .await;
    assert_eq!(saved.pair.host_name.namespace, HNS);
    assert_eq!(saved.pair.host_name.name, "web-x-default-x-vc");
    assert_eq!(saved.references.len(), 1, "{saved:?}");
    assert_eq!(
        (saved.references[0].kind.as_str(), saved.references[0].host_name.name.as_str()),
        ("Secret", "db-x-default-x-vc")
    );
    assert!(store.get("/vcluster/mappings/v1/pod/default/web").await.unwrap().is_some());

    // The syncer stops; someone strips the bookkeeping annotations off the host pod.
    clusters.syncer.abort();
    let strip = json!({"metadata": {"annotations": {
        "vcluster.loft.sh/object-name": null, "vcluster.loft.sh/object-namespace": null,
        "vcluster.loft.sh/object-uid": null, "vcluster.loft.sh/object-kind": null,
        "vcluster.loft.sh/object-host-name": null, "vcluster.loft.sh/object-host-namespace": null}}});
    h_pods.patch("web-x-default-x-vc", &PatchParams::default(), &Patch::Merge(strip)).await.unwrap();
    let stripped = h_pods.get("web-x-default-x-vc").await.unwrap();
    assert!(!stripped.annotations().contains_key("vcluster.loft.sh/object-name"));

    // A new syncer reads the stored mappings: the host pod is still known as default/web, gets
    // its annotations back and keeps running; nothing is refused as a collision.
    let mut config = syncer_config();
    config.mappings = Some(vkube_syncer::MappingStorage(store.clone()));
    let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
    let restarted = tokio::spawn(vkube_syncer::run(vc.clone(), clusters.syncer_host.clone(), config, ready));
    ready_rx.wait_for(|r| *r).await.unwrap();
    let virtual_uid = v_pods.get("web").await.unwrap().uid().unwrap();
    eventually("the annotations restored", || {
        let (h_pods, uid) = (h_pods.clone(), virtual_uid.clone());
        async move {
            let pod = h_pods.get("web-x-default-x-vc").await.ok()?;
            let annotations = pod.annotations();
            (annotations.get("vcluster.loft.sh/object-name").map(String::as_str) == Some("web")
                && annotations.get("vcluster.loft.sh/object-namespace").map(String::as_str) == Some("default")
                && annotations.get("vcluster.loft.sh/object-uid") == Some(&uid))
            .then_some(())
        }
    })
    .await;
    let host_pod = h_pods.get("web-x-default-x-vc").await.unwrap();
    assert!(host_pod.metadata.deletion_timestamp.is_none(), "the host pod was not replaced");
    assert_eq!(host_pod.uid(), stripped.uid(), "the same host pod");
    let events: Api<Event> = Api::namespaced(vc.clone(), "default");
    let warnings = events.list(&ListParams::default()).await.unwrap();
    assert!(
        !warnings.items.iter().any(|e| e.reason.as_deref() == Some("SyncWarning")),
        "no collision reported: {:?}",
        warnings.items.iter().map(|e| e.message.clone()).collect::<Vec<_>>()
    );

    // Deleting the pod removes its mapping from the store once both sides are gone.
    v_pods.delete("web", &DeleteParams::default().grace_period(0)).await.unwrap();
    eventually("the mapping deleted", || {
        let store = store.clone();
        async move { store.get("/vcluster/mappings/v1/pod/default/web").await.ok()?.is_none().then_some(()) }
    })
    .await;
    restarted.abort();
}
}

on_both_hosts! {
async fn optional_kinds_reach_the_host_and_classes_come_back() {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let mut config = syncer_config();
    config.optional = vkube_syncer::OptionalKinds {
        ingresses: true,
        network_policies: true,
        pod_disruption_budgets: true,
        service_accounts: true,
        ingress_classes: true,
        runtime_classes: true,
        priority_classes: true,
        storage_classes: true,
        csi_drivers: true,
        csi_nodes: true,
        csi_storage_capacities: true,
        ..Default::default()
    };
    let clusters = Clusters::start(config).await;
    // Every host node has CSI information; the virtual cluster shows it for the nodes it shows.
    let h_nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(clusters.host.clone());
    let h_csi_nodes: Api<k8s_openapi::api::storage::v1::CSINode> = Api::all(clusters.host.clone());
    let names = eventually("the simulated nodes", || {
        let h_nodes = h_nodes.clone();
        async move {
            let names: Vec<String> =
                h_nodes.list(&ListParams::default()).await.ok()?.items.iter().map(|n| n.name_any()).collect();
            (!names.is_empty()).then_some(names)
        }
    })
    .await;
    for node in &names {
        h_csi_nodes
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": node},
                "spec": {"drivers": [{"name": "ebs.csi.aws.com", "nodeID": node}]}})),
            )
            .await
            .unwrap();
    }
    let pp = PostParams::default();
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());

    // Classes the host has appear in the virtual cluster.
    let h_classes: Api<IngressClass> = Api::all(host.clone());
    h_classes
        .create(&pp, &object(json!({"metadata": {"name": "nginx", "labels": {"tier": "edge"}}, "spec": {"controller": "k8s.io/ingress-nginx"}})))
        .await
        .unwrap();
    let h_priorities: Api<PriorityClass> = Api::all(host.clone());
    h_priorities
        .create(&pp, &object(json!({"metadata": {"name": "high"}, "value": 1000, "description": "important"})))
        .await
        .unwrap();
    let h_drivers: Api<k8s_openapi::api::storage::v1::CSIDriver> = Api::all(host.clone());
    h_drivers
        .create(&pp, &object(json!({"metadata": {"name": "ebs.csi.aws.com"}, "spec": {"attachRequired": true}})))
        .await
        .unwrap();
    let v_classes: Api<IngressClass> = Api::all(vc.clone());
    let v_priorities: Api<PriorityClass> = Api::all(vc.clone());
    // The simulated host's default storage class and the driver appear too.
    let v_storage: Api<k8s_openapi::api::storage::v1::StorageClass> = Api::all(vc.clone());
    let v_drivers: Api<k8s_openapi::api::storage::v1::CSIDriver> = Api::all(vc.clone());
    eventually("the host's storage class and CSI driver in the virtual cluster", || {
        let (v_storage, v_drivers) = (v_storage.clone(), v_drivers.clone());
        async move {
            let class = v_storage.get("standard").await.ok()?;
            let driver = v_drivers.get("ebs.csi.aws.com").await.ok()?;
            (!class.provisioner.is_empty() && driver.spec.attach_required == Some(true)).then_some(())
        }
    })
    .await;
    // The host's storage capacities show in kube-system, named after their host namespace.
    let h_capacities: Api<k8s_openapi::api::storage::v1::CSIStorageCapacity> = Api::namespaced(host.clone(), "default");
    h_capacities
        .create(
            &pp,
            &object(json!({"metadata": {"name": "zone-a"}, "storageClassName": "standard", "capacity": "100Gi"})),
        )
        .await
        .unwrap();
    let v_capacities: Api<k8s_openapi::api::storage::v1::CSIStorageCapacity> =
        Api::namespaced(vc.clone(), "kube-system");
    let capacity = eventually("the capacity in the virtual cluster", || {
        let v_capacities = v_capacities.clone();
        async move { v_capacities.get("zone-a-x-default").await.ok() }
    })
    .await;
    assert_eq!(capacity.storage_class_name, "standard");
    assert_eq!(capacity.annotations()["vcluster.loft.sh/object-namespace"], "default");
    h_capacities.delete("zone-a", &DeleteParams::default()).await.unwrap();
    eventually("the capacity gone with the host's", || {
        let v_capacities = v_capacities.clone();
        async move { gone(v_capacities.get("zone-a-x-default").await).then_some(()) }
    })
    .await;
    // A tenant's own class stays only when labelled as theirs.
    v_storage
        .create(&pp, &object(json!({"metadata": {"name": "mine", "labels": {"vcluster.loft.sh/controlled-by": "me"}}, "provisioner": "example.com/x"})))
        .await
        .unwrap();
    v_storage
        .create(&pp, &object(json!({"metadata": {"name": "stray"}, "provisioner": "example.com/x"})))
        .await
        .unwrap();
    eventually("the unlabelled virtual class removed", || {
        let v_storage = v_storage.clone();
        async move { gone(v_storage.get("stray").await).then_some(()) }
    })
    .await;
    assert!(v_storage.get("mine").await.is_ok());
    eventually("the host's classes in the virtual cluster", || {
        let (v_classes, v_priorities) = (v_classes.clone(), v_priorities.clone());
        async move {
            let class = v_classes.get("nginx").await.ok()?;
            let priority = v_priorities.get("high").await.ok()?;
            let controller = class.spec?.controller;
            (controller.as_deref() == Some("k8s.io/ingress-nginx")
                && class.metadata.labels?.get("tier").map(String::as_str) == Some("edge")
                && priority.value == 1000)
                .then_some(())
        }
    })
    .await;

    // An ingress reaches the host with its backends and TLS secret renamed; the secret follows.
    let v_secrets: Api<Secret> = Api::namespaced(vc.clone(), "default");
    v_secrets
        .create(&pp, &object(json!({"metadata": {"name": "web-tls"}, "stringData": {"tls.crt": "c", "tls.key": "k"}})))
        .await
        .unwrap();
    v_secrets.create(&pp, &object(json!({"metadata": {"name": "unused"}, "stringData": {"a": "b"}}))).await.unwrap();
    let v_ingresses: Api<Ingress> = Api::namespaced(vc.clone(), "default");
    v_ingresses
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web", "annotations": {"field.cattle.io/publicEndpoints": "[]", "team": "shop"}},
            "spec": {"ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "web-tls"}],
            "rules": [{"host": "shop.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})),
        )
        .await
        .unwrap();
    let h_ingresses: Api<Ingress> = Api::namespaced(host.clone(), HNS);
    let h_secrets: Api<Secret> = Api::namespaced(host.clone(), HNS);
    let host_ingress = eventually("the host ingress", || {
        let h_ingresses = h_ingresses.clone();
        async move { h_ingresses.get("web-x-default-x-vc").await.ok() }
    })
    .await;
    let spec = host_ingress.spec.clone().unwrap();
    assert_eq!(spec.tls.unwrap()[0].secret_name.as_deref(), Some("web-tls-x-default-x-vc"));
    let rules = spec.rules.unwrap();
    let backend = &rules[0].http.as_ref().unwrap().paths[0].backend;
    assert_eq!(backend.service.as_ref().unwrap().name, "web-x-default-x-vc");
    assert_eq!(host_ingress.labels()["vcluster.loft.sh/managed-by"], "vc");
    // §2.8: Rancher's endpoint annotation stays where it was computed; others are copied.
    assert!(!host_ingress.annotations().contains_key("field.cattle.io/publicEndpoints"));
    assert_eq!(host_ingress.annotations()["team"], "shop");
    eventually("the TLS secret on the host", || {
        let h_secrets = h_secrets.clone();
        async move { h_secrets.get("web-tls-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    assert!(gone(h_secrets.get("unused-x-default-x-vc").await), "a secret nobody uses stays home");
    // The host's load balancer address comes back.
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}});
    h_ingresses.patch_status("web-x-default-x-vc", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    eventually("the ingress status in the virtual cluster", || {
        let v_ingresses = v_ingresses.clone();
        async move {
            let ingress = v_ingresses.get("web").await.ok()?;
            let ip = ingress.status?.load_balancer?.ingress?.first()?.ip.clone()?;
            (ip == "203.0.113.7").then_some(())
        }
    })
    .await;
    // A virtual edit is forced onto the host.
    let edit = json!({"spec": {"rules": [{"host": "www.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
    v_ingresses.patch("web", &PatchParams::default(), &Patch::Merge(edit)).await.unwrap();
    eventually("the edited rule on the host", || {
        let h_ingresses = h_ingresses.clone();
        async move {
            let ingress = h_ingresses.get("web-x-default-x-vc").await.ok()?;
            (ingress.spec?.rules?[0].host.as_deref() == Some("www.example.com")).then_some(())
        }
    })
    .await;

    // Network policies and budgets are pinned to this virtual cluster's pods.
    let v_policies: Api<NetworkPolicy> = Api::namespaced(vc.clone(), "default");
    v_policies
        .create(
            &pp,
            &object(json!({"metadata": {"name": "api"}, "spec": {"podSelector": {"matchLabels": {"app": "api"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}]}})),
        )
        .await
        .unwrap();
    let v_budgets: Api<PodDisruptionBudget> = Api::namespaced(vc.clone(), "default");
    v_budgets
        .create(&pp, &object(json!({"metadata": {"name": "api"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "api"}}}})))
        .await
        .unwrap();
    let h_policies: Api<NetworkPolicy> = Api::namespaced(host.clone(), HNS);
    let h_budgets: Api<PodDisruptionBudget> = Api::namespaced(host.clone(), HNS);
    let policy = eventually("the host network policy", || {
        let h_policies = h_policies.clone();
        async move { h_policies.get("api-x-default-x-vc").await.ok() }
    })
    .await;
    let selector = policy.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(selector.get("vcluster.loft.sh/namespace").map(String::as_str), Some("default"));
    assert_eq!(selector.get("vcluster.loft.sh/managed-by").map(String::as_str), Some("vc"));
    let budget = eventually("the host budget", || {
        let h_budgets = h_budgets.clone();
        async move { h_budgets.get("api-x-default-x-vc").await.ok() }
    })
    .await;
    let budget_selector = budget.spec.unwrap().selector.unwrap().match_labels.unwrap();
    assert_eq!(budget_selector.get("vcluster.loft.sh/managed-by").map(String::as_str), Some("vc"));

    // With service accounts synced, a pod runs under the host copy of its own account.
    let v_accounts: Api<ServiceAccount> = Api::namespaced(vc.clone(), "default");
    v_accounts
        .create(&pp, &object(json!({"metadata": {"name": "builder", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/b"}}})))
        .await
        .unwrap();
    let v_pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "build"}, "spec": {"serviceAccountName": "builder",
            "containers": [{"name": "c", "image": "busybox"}]}})),
        )
        .await
        .unwrap();
    let h_pods: Api<Pod> = Api::namespaced(host.clone(), HNS);
    let pod = eventually("the host pod", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("build-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(pod.spec.as_ref().unwrap().service_account_name.as_deref(), Some("builder-x-default-x-vc"));
    let node = eventually("the pod scheduled", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("build-x-default-x-vc").await.ok()?.spec?.node_name }
    })
    .await;
    let v_csi_nodes: Api<k8s_openapi::api::storage::v1::CSINode> = Api::all(vc.clone());
    let csi = eventually("the pod's node's CSI information in the virtual cluster", || {
        let (v_csi_nodes, node) = (v_csi_nodes.clone(), node.clone());
        async move { v_csi_nodes.get(&node).await.ok() }
    })
    .await;
    assert_eq!(csi.spec.drivers[0].name, "ebs.csi.aws.com");
    assert_eq!(csi.labels()["vcluster.loft.sh/managed-by"], "vc");
    let shown = v_csi_nodes.list(&ListParams::default()).await.unwrap().items.len();
    let virtual_nodes =
        Api::<k8s_openapi::api::core::v1::Node>::all(vc.clone()).list(&ListParams::default()).await.unwrap();
    assert_eq!(shown, virtual_nodes.items.len(), "only nodes the virtual cluster shows");
    let h_accounts: Api<ServiceAccount> = Api::namespaced(host.clone(), HNS);
    let account = h_accounts.get("builder-x-default-x-vc").await.unwrap();
    assert_eq!(account.annotations()["eks.amazonaws.com/role-arn"], "arn:aws:iam::1:role/b");
    assert_eq!(account.automount_service_account_token, Some(false));

    // Deleting the ingress removes its host copy and the secret only it used.
    v_ingresses.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("the host ingress and its secret gone", || {
        let (h_ingresses, h_secrets) = (h_ingresses.clone(), h_secrets.clone());
        async move {
            (gone(h_ingresses.get("web-x-default-x-vc").await) && gone(h_secrets.get("web-tls-x-default-x-vc").await))
                .then_some(())
        }
    })
    .await;
    // A host copy deleted by someone else takes the virtual object with it.
    h_policies.delete("api-x-default-x-vc", &DeleteParams::default()).await.unwrap();
    eventually("the virtual policy gone", || {
        let v_policies = v_policies.clone();
        async move { gone(v_policies.get("api").await).then_some(()) }
    })
    .await;
    // A class removed from the host goes from the virtual cluster.
    h_classes.delete("nginx", &DeleteParams::default()).await.unwrap();
    eventually("the virtual ingress class gone", || {
        let v_classes = v_classes.clone();
        async move { gone(v_classes.get("nginx").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn priority_and_storage_classes_go_to_the_host_and_pods_and_claims_use_them() {
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    use k8s_openapi::api::storage::v1::StorageClass;
    let mut config = syncer_config();
    config.optional = vkube_syncer::OptionalKinds {
        priority_classes_to_host: true,
        storage_classes_to_host: true,
        ..Default::default()
    };
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_priorities: Api<PriorityClass> = Api::all(vc.clone());
    // Above a user-defined class's maximum the virtual API server refuses it (as kube-apiserver),
    // so the host copy's cap is never needed for a class made through the API.
    let too_high = json!({"metadata": {"name": "high"}, "value": 2_000_000_000i64, "globalDefault": true, "description": "batch"});
    match v_priorities.create(&pp, &object(too_high)).await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (422, "Invalid")),
        other => panic!("a priority above 1,000,000,000 was accepted: {other:?}"),
    }
    v_priorities
        .create(&pp, &object(json!({"metadata": {"name": "high"}, "value": 1_000_000_000i64, "globalDefault": true, "description": "batch"})))
        .await
        .unwrap();
    let v_storage: Api<StorageClass> = Api::all(vc.clone());
    v_storage
        .create(
            &pp,
            &object(
                json!({"metadata": {"name": "fast"}, "provisioner": "vkube.io/simulated", "reclaimPolicy": "Delete"}),
            ),
        )
        .await
        .unwrap();
    let h_priorities: Api<PriorityClass> = Api::all(host.clone());
    let h_storage: Api<StorageClass> = Api::all(host.clone());
    let priority = eventually("the host priority class", || {
        let h_priorities = h_priorities.clone();
        async move { h_priorities.get("vcluster-high-x-vcluster-vc-x-vc").await.ok() }
    })
    .await;
    assert_eq!(priority.value, 1_000_000_000);
    // kube-apiserver leaves `globalDefault: false` out (omitempty), vkube's keeps it.
    assert_ne!(priority.global_default, Some(true), "never the host's default");
    assert_eq!(priority.labels()["vcluster.loft.sh/managed-by"], "vcluster-vc-x-vc");
    let storage = eventually("the host storage class", || {
        let h_storage = h_storage.clone();
        async move { h_storage.get("vcluster-fast-x-vcluster-vc-x-vc").await.ok() }
    })
    .await;
    assert_eq!(storage.provisioner, "vkube.io/simulated");

    // Pods and claims name the host copies.
    let v_pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "batch"}, "spec": {"priorityClassName": "high",
            "containers": [{"name": "c", "image": "busybox"}]}})),
        )
        .await
        .unwrap();
    let v_claims: Api<PersistentVolumeClaim> = Api::namespaced(vc.clone(), "default");
    v_claims
        .create(
            &pp,
            &object(json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "fast",
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})),
        )
        .await
        .unwrap();
    let h_pods: Api<Pod> = Api::namespaced(host.clone(), HNS);
    let pod = eventually("the host pod", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("batch-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(pod.spec.unwrap().priority_class_name.as_deref(), Some("vcluster-high-x-vcluster-vc-x-vc"));
    let h_claims: Api<PersistentVolumeClaim> = Api::namespaced(host.clone(), HNS);
    let claim = eventually("the host claim", || {
        let h_claims = h_claims.clone();
        async move { h_claims.get("data-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(claim.spec.unwrap().storage_class_name.as_deref(), Some("vcluster-fast-x-vcluster-vc-x-vc"));

    // Edits follow; a priority class deleted on the host comes back; deleting the virtual class
    // removes the host copy.
    v_priorities
        .patch("high", &PatchParams::default(), &Patch::Merge(json!({"description": "nightly"})))
        .await
        .unwrap();
    eventually("the edited description on the host", || {
        let h_priorities = h_priorities.clone();
        async move {
            let class = h_priorities.get("vcluster-high-x-vcluster-vc-x-vc").await.ok()?;
            (class.description.as_deref() == Some("nightly")).then_some(())
        }
    })
    .await;
    let before = h_priorities.get("vcluster-high-x-vcluster-vc-x-vc").await.unwrap().uid();
    h_priorities.delete("vcluster-high-x-vcluster-vc-x-vc", &DeleteParams::default()).await.unwrap();
    eventually("the host priority class re-created", || {
        let (h_priorities, before) = (h_priorities.clone(), before.clone());
        async move {
            let class = h_priorities.get("vcluster-high-x-vcluster-vc-x-vc").await.ok()?;
            (class.uid() != before).then_some(())
        }
    })
    .await;
    assert!(v_priorities.get("high").await.is_ok(), "the virtual class stays");
    v_storage.delete("fast", &DeleteParams::default()).await.unwrap();
    eventually("the host storage class gone", || {
        let h_storage = h_storage.clone();
        async move { gone(h_storage.get("vcluster-fast-x-vcluster-vc-x-vc").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn translate_rules_rewrite_what_reaches_the_host_and_what_comes_back() {
    use vkube_syncer::patches::Patches;
    let rule = |value: serde_json::Value| serde_json::from_value::<vkube_config::Translate>(value).unwrap();
    let mut config = syncer_config();
    config.patches.insert(
        "Pod".into(),
        Patches::new(&[
            rule(json!({"path": "spec.containers[*].image", "expression": "\"mirror.local/\" + value"})),
            rule(json!({"path": "metadata.annotations[\"cost-center\"]", "expression": "context.virtualNamespace"})),
        ])
        .unwrap(),
    );
    config.patches.insert(
        "Service".into(),
        Patches::new(&[rule(json!({"path": "spec.sessionAffinity", "reverseExpression": "value"}))]).unwrap(),
    );
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_pods: Api<Pod> = Api::namespaced(vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(
                json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}),
            ),
        )
        .await
        .unwrap();
    let h_pods: Api<Pod> = Api::namespaced(host.clone(), HNS);
    eventually("the virtual pod running", || {
        let v_pods = v_pods.clone();
        async move {
            let pod = v_pods.get("web").await.ok()?;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await;
    // The rewritten image stays (the image forcing follows the rules too).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pod = h_pods.get("web-x-default-x-vc").await.unwrap();
    assert_eq!(pod.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("mirror.local/nginx:1.27"));
    assert_eq!(pod.annotations()["cost-center"], "default");
    let virtual_pod = v_pods.get("web").await.unwrap();
    assert_eq!(virtual_pod.spec.unwrap().containers[0].image.as_deref(), Some("nginx:1.27"), "the tenant's image");
    // A host-side image edit is still reverted, to the rewritten image.
    let edit = json!({"spec": {"containers": [{"name": "c", "image": "evil"}]}});
    h_pods.patch("web-x-default-x-vc", &PatchParams::default(), &Patch::Strategic(edit)).await.unwrap();
    eventually("the image forced back", || {
        let h_pods = h_pods.clone();
        async move {
            let pod = h_pods.get("web-x-default-x-vc").await.ok()?;
            (pod.spec?.containers[0].image.as_deref() == Some("mirror.local/nginx:1.27")).then_some(())
        }
    })
    .await;
    // A field with only a reverse expression never reaches the host.
    let v_services: Api<Service> = Api::namespaced(vc.clone(), "default");
    v_services
        .create(
            &pp,
            &object(
                json!({"metadata": {"name": "web"}, "spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}}),
            ),
        )
        .await
        .unwrap();
    let h_services: Api<Service> = Api::namespaced(host.clone(), HNS);
    let service = eventually("the host service", || {
        let h_services = h_services.clone();
        async move { h_services.get("web-x-default-x-vc").await.ok() }
    })
    .await;
    assert_ne!(service.spec.unwrap().session_affinity.as_deref(), Some("ClientIP"));
    // ... and the syncer does not fight the host over it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let settled = h_services.get("web-x-default-x-vc").await.unwrap().resource_version();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(h_services.get("web-x-default-x-vc").await.unwrap().resource_version(), settled, "no write loop");
    let pod_version = h_pods.get("web-x-default-x-vc").await.unwrap().resource_version();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(h_pods.get("web-x-default-x-vc").await.unwrap().resource_version(), pod_version, "no write loop");
}
}

on_both_hosts! {
async fn custom_resources_go_to_the_host_with_status_back_and_cluster_ones_come_from_it() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject};
    use vkube_syncer::CustomResourceSync;
    use vkube_syncer::patches::Patches;
    let rule = |value: serde_json::Value| serde_json::from_value::<vkube_config::Translate>(value).unwrap();
    let mut config = syncer_config();
    config.custom_resources = vec![
        CustomResourceSync {
            key: "widgets.example.com".into(),
            to_host: true,
            patches: Patches::new(&[rule(
                json!({"path": "spec.secretRef", "reference": {"apiVersion": "v1", "kind": "Secret"}}),
            )])
            .unwrap(),
        },
        CustomResourceSync { key: "regions.example.com/v1".into(), to_host: false, patches: Patches::default() },
    ];
    let definition = |plural: &str, kind: &str, scope: &str| {
        object::<CustomResourceDefinition>(json!({
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {"group": "example.com", "scope": scope,
                "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
    };
    let clusters = Clusters::start_after(config, |host| async move {
        let definitions: Api<CustomResourceDefinition> = Api::all(host.clone());
        let pp = PostParams::default();
        definitions.create(&pp, &definition("widgets", "Widget", "Namespaced")).await.unwrap();
        definitions.create(&pp, &definition("regions", "Region", "Cluster")).await.unwrap();
        let regions = ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Region".into(),
            plural: "regions".into(),
        };
        let api: Api<DynamicObject> = Api::all_with(host.clone(), &regions);
        let region: DynamicObject =
            object(json!({"apiVersion": "example.com/v1", "kind": "Region", "metadata": {"name": "eu-west"}, "spec": {"zones": 3}}));
        for _ in 0..100 {
            if api.create(&pp, &region).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the host never served regions");
    })
    .await;
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let widgets = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let regions = ApiResource { kind: "Region".into(), plural: "regions".into(), ..widgets.clone() };
    // The definitions were copied in; the host's cluster-scoped object is mirrored.
    let v_regions: Api<DynamicObject> = Api::all_with(vc.clone(), &regions);
    let region = eventually("the host's region in the virtual cluster", || {
        let v_regions = v_regions.clone();
        async move { v_regions.get("eu-west").await.ok() }
    })
    .await;
    assert_eq!(region.data["spec"]["zones"], 3);
    // A widget goes to the host, renamed, with its reference translated by the rule.
    let v_widgets: Api<DynamicObject> = Api::namespaced_with(vc.clone(), "default", &widgets);
    let v_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(vc.clone(), "default");
    let h_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(host.clone(), HNS);
    v_secrets
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "creds"}, "stringData": {"token": "t0p"}})))
        .await
        .unwrap();
    let widget: DynamicObject = object(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w1", "labels": {"app": "shop"}}, "spec": {"size": 2, "secretRef": "creds"}}));
    v_widgets.create(&PostParams::default(), &widget).await.unwrap();
    let h_widgets: Api<DynamicObject> = Api::namespaced_with(host.clone(), HNS, &widgets);
    let copy = eventually("the host widget", || {
        let h_widgets = h_widgets.clone();
        async move { h_widgets.get("w1-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(copy.data["spec"]["size"], 2);
    assert_eq!(copy.data["spec"]["secretRef"], "creds-x-default-x-vc");
    // The secret the rule names is used now: it reaches the host (§7.5).
    eventually("the referenced secret on the host", || {
        let h_secrets = h_secrets.clone();
        async move { h_secrets.get("creds-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(copy.labels()["vcluster.loft.sh/managed-by"], "vc");
    assert_eq!(copy.annotations()["vcluster.loft.sh/object-name"], "w1");
    // The host's controller owns the status: it comes back.
    let status = json!({"status": {"phase": "Ready"}});
    h_widgets.patch_status("w1-x-default-x-vc", &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
    eventually("the widget status in the virtual cluster", || {
        let v_widgets = v_widgets.clone();
        async move {
            let widget = v_widgets.get("w1").await.ok()?;
            (widget.data["status"]["phase"] == "Ready").then_some(())
        }
    })
    .await;
    // A spec edit follows; deleting the virtual widget deletes the host copy.
    v_widgets.patch("w1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 5}}))).await.unwrap();
    eventually("the edit on the host", || {
        let h_widgets = h_widgets.clone();
        async move { (h_widgets.get("w1-x-default-x-vc").await.ok()?.data["spec"]["size"] == 5).then_some(()) }
    })
    .await;
    v_widgets.delete("w1", &DeleteParams::default()).await.unwrap();
    eventually("the host widget and the secret only it used gone", || {
        let (h_widgets, h_secrets) = (h_widgets.clone(), h_secrets.clone());
        async move {
            (gone(h_widgets.get("w1-x-default-x-vc").await) && gone(h_secrets.get("creds-x-default-x-vc").await))
                .then_some(())
        }
    })
    .await;
    // The host region going takes the virtual one with it.
    Api::<DynamicObject>::all_with(host.clone(), &regions).delete("eu-west", &DeleteParams::default()).await.unwrap();
    eventually("the virtual region gone", || {
        let v_regions = v_regions.clone();
        async move { gone(v_regions.get("eu-west").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
async fn a_tenants_own_volume_goes_to_the_host_and_its_claim_binds_to_it() {
    let mut config = syncer_config();
    config.optional = vkube_syncer::OptionalKinds { persistent_volumes_to_host: true, ..Default::default() };
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let (vc, host) = (clusters.vc.clone(), clusters.host.clone());
    let v_volumes: Api<PersistentVolume> = Api::all(vc.clone());
    v_volumes
        .create(
            &pp,
            &object(json!({"metadata": {"name": "data"}, "spec": {"capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/mnt/data"}, "storageClassName": "manual",
            "persistentVolumeReclaimPolicy": "Retain"}})),
        )
        .await
        .unwrap();
    let h_volumes: Api<PersistentVolume> = Api::all(host.clone());
    let host_name = "vcluster-data-x-vcluster-vc-x-vc";
    let copy = eventually("the host volume", || {
        let h_volumes = h_volumes.clone();
        async move { h_volumes.get(host_name).await.ok() }
    })
    .await;
    assert_eq!(copy.spec.as_ref().unwrap().host_path.as_ref().unwrap().path, "/mnt/data");
    assert_eq!(copy.labels()["vcluster.loft.sh/managed-by"], "vcluster-vc-x-vc");
    assert_eq!(
        copy.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("vcluster-manual-x-vcluster-vc-x-vc"),
        "the class is this virtual cluster's (§3.9): another tenant's claim of class manual cannot bind it"
    );
    // A claim naming the volume binds to its host copy; the virtual claim keeps the tenant's name.
    let v_claims: Api<PersistentVolumeClaim> = Api::namespaced(vc.clone(), "default");
    v_claims
        .create(
            &pp,
            &object(json!({"metadata": {"name": "db"}, "spec": {"volumeName": "data", "storageClassName": "manual",
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}})),
        )
        .await
        .unwrap();
    let h_claims: Api<PersistentVolumeClaim> = Api::namespaced(host.clone(), HNS);
    // §3.8: dynamically provisioned claims keep a class the host has, and name one it lacks as
    // this virtual cluster's.
    for (name, class) in [("dyn-host", "standard"), ("dyn-missing", "gold")] {
        v_claims
            .create(
                &pp,
                &object(json!({"metadata": {"name": name}, "spec": {"storageClassName": class,
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})),
            )
            .await
            .unwrap();
    }
    let classes = eventually("the dynamically provisioned claims on the host", || {
        let h_claims = h_claims.clone();
        async move {
            let class = |c: PersistentVolumeClaim| c.spec.and_then(|s| s.storage_class_name);
            Some((class(h_claims.get("dyn-host-x-default-x-vc").await.ok()?)?, class(h_claims.get("dyn-missing-x-default-x-vc").await.ok()?)?))
        }
    })
    .await;
    assert_eq!(classes, ("standard".to_string(), "vcluster-gold-x-vcluster-vc-x-vc".to_string()));
    eventually("the host claim bound to the host copy", || {
        let h_claims = h_claims.clone();
        async move {
            let claim = h_claims.get("db-x-default-x-vc").await.ok()?;
            let bound = claim.status?.phase.as_deref() == Some("Bound");
            (bound && claim.spec?.volume_name.as_deref() == Some(host_name)).then_some(())
        }
    })
    .await;
    eventually("the virtual claim and volume bound", || {
        let (v_claims, v_volumes) = (v_claims.clone(), v_volumes.clone());
        async move {
            let claim = v_claims.get("db").await.ok()?;
            let volume = v_volumes.get("data").await.ok()?;
            let claim_bound = claim.status?.phase.as_deref() == Some("Bound");
            let volume_bound = volume.status?.phase.as_deref() == Some("Bound");
            (claim_bound && volume_bound && claim.spec?.volume_name.as_deref() == Some("data")).then_some(())
        }
    })
    .await;
    let fakes = v_volumes.list(&ListParams::default().labels("vcluster.loft.sh/fake-pv=true")).await.unwrap();
    let for_db = fakes.items.iter().filter(|v| {
        v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.name.as_deref()) == Some("db")
    });
    assert_eq!(for_db.count(), 0, "no fake volume for the tenant's own");
    let host_volume = h_volumes.get(host_name).await.unwrap();
    let claim_ref = host_volume.spec.unwrap().claim_ref.unwrap();
    assert_eq!(claim_ref.name.as_deref(), Some("db-x-default-x-vc"), "the host's binding is kept");
    // The claim goes: the retained volume is released; the volume goes: its host copy goes.
    v_claims.delete("db", &DeleteParams::default().grace_period(0)).await.unwrap();
    eventually("the virtual volume released", || {
        let v_volumes = v_volumes.clone();
        async move { (v_volumes.get("data").await.ok()?.status?.phase.as_deref() == Some("Released")).then_some(()) }
    })
    .await;
    v_volumes.delete("data", &DeleteParams::default()).await.unwrap();
    eventually("the host volume gone", || {
        let h_volumes = h_volumes.clone();
        async move { gone(h_volumes.get(host_name).await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
/// §3.2: a service account token secret a pod mounts reaches the host as `Opaque` (the host's
/// token controller must not take it for one of its own).
async fn token_secrets_reach_the_host_as_opaque() {
    use k8s_openapi::api::core::v1::Secret;
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let v_secrets: Api<Secret> = Api::namespaced(clusters.vc.clone(), "default");
    v_secrets
        .create(
            &pp,
            &object(json!({"metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "default"}},
                "type": "kubernetes.io/service-account-token", "data": {"token": "c2VjcmV0"}})),
        )
        .await
        .unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx",
                "volumeMounts": [{"name": "t", "mountPath": "/t"}]}], "volumes": [{"name": "t", "secret": {"secretName": "robot-token"}}]}})),
        )
        .await
        .unwrap();
    let h_secrets: Api<Secret> = Api::namespaced(clusters.host.clone(), HNS);
    let copy = eventually("the token secret on the host", || {
        let h_secrets = h_secrets.clone();
        async move { h_secrets.get("robot-token-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(copy.type_.as_deref(), Some("Opaque"));
    assert_eq!(copy.data.unwrap()["token"].0, b"secret");
}
}

on_both_hosts! {
/// §3.1: the virtual pod's status follows the host pod's, except its QoS class, which stays the
/// virtual one (both API servers refuse to change a pod's class).
async fn pod_status_comes_back_but_the_qos_class_stays_virtual() {
    let clusters = Clusters::start(syncer_config()).await;
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    run_web(&v_pods).await;
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    // A pod's QoS class is immutable on both hosts: a status write that changes it is refused.
    let change = json!({"status": {"qosClass": "Guaranteed"}});
    let refused = h_pods.patch_status("web-x-default-x-vc", &PatchParams::default(), &Patch::Merge(change)).await;
    assert!(matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 422 && s.message.contains("field is immutable")), "{refused:?}");
    let host_status = json!({"status": {"message": "seen on the host"}});
    h_pods.patch_status("web-x-default-x-vc", &PatchParams::default(), &Patch::Merge(host_status)).await.unwrap();
    let status = eventually("the host's status message in the virtual pod", || {
        let v_pods = v_pods.clone();
        async move {
            let status = v_pods.get("web").await.ok()?.status?;
            (status.message.as_deref() == Some("seen on the host")).then_some(status)
        }
    })
    .await;
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"), "the virtual QoS class is kept");
}
}

on_both_hosts! {
/// §2.9: a config map or secret annotated `vcluster.loft.sh/force-sync: "true"` reaches the host
/// although no pod uses it, and goes again when the annotation does.
async fn force_sync_annotation_syncs_unused_config_maps_and_secrets() {
    use k8s_openapi::api::core::v1::Secret;
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let v_maps: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "default");
    let v_secrets: Api<Secret> = Api::namespaced(clusters.vc.clone(), "default");
    let forced = json!({"vcluster.loft.sh/force-sync": "true"});
    v_maps
        .create(&pp, &object(json!({"metadata": {"name": "forced", "annotations": forced}, "data": {"a": "1"}})))
        .await
        .unwrap();
    v_maps.create(&pp, &object(json!({"metadata": {"name": "plain"}, "data": {"a": "1"}}))).await.unwrap();
    v_secrets
        .create(&pp, &object(json!({"metadata": {"name": "forced", "annotations": forced}, "stringData": {"k": "v"}})))
        .await
        .unwrap();
    let h_maps: Api<ConfigMap> = Api::namespaced(clusters.host.clone(), HNS);
    let h_secrets: Api<Secret> = Api::namespaced(clusters.host.clone(), HNS);
    eventually("the forced config map and secret on the host", || {
        let (h_maps, h_secrets) = (h_maps.clone(), h_secrets.clone());
        async move {
            let map = h_maps.get("forced-x-default-x-vc").await.ok()?;
            h_secrets.get("forced-x-default-x-vc").await.ok()?;
            (map.data?.get("a").map(String::as_str) == Some("1")).then_some(())
        }
    })
    .await;
    assert!(gone(h_maps.get("plain-x-default-x-vc").await), "an unused config map stays virtual");
    let unforce = json!({"metadata": {"annotations": {"vcluster.loft.sh/force-sync": null}}});
    v_maps.patch("forced", &PatchParams::default(), &Patch::Merge(&unforce)).await.unwrap();
    eventually("the config map gone from the host with its annotation", || {
        let h_maps = h_maps.clone();
        async move { gone(h_maps.get("forced-x-default-x-vc").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
/// §3.4: a service's status is the host's, whole: a load balancer written only on the virtual side
/// goes.
async fn service_status_is_forced_from_the_host() {
    let clusters = Clusters::start(syncer_config()).await;
    let v_services: Api<Service> = Api::namespaced(clusters.vc.clone(), "default");
    let h_services: Api<Service> = Api::namespaced(clusters.host.clone(), HNS);
    v_services
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await
        .unwrap();
    eventually("the host service", || {
        let h_services = h_services.clone();
        async move { h_services.get("web-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    let fake = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}});
    v_services.patch_status("web", &PatchParams::default(), &Patch::Merge(&fake)).await.unwrap();
    // A host-side change makes the syncer look again; the virtual-only ingress is then gone.
    let label = json!({"status": {"conditions": [{"type": "Seen", "status": "True", "reason": "Host", "message": "", "lastTransitionTime": "2026-12-02T00:00:00Z"}]}});
    h_services.patch_status("web-x-default-x-vc", &PatchParams::default(), &Patch::Merge(&label)).await.unwrap();
    eventually("the virtual status equal to the host's", || {
        let v_services = v_services.clone();
        async move {
            let status = v_services.get("web").await.ok()?.status?;
            let ingress_gone = status.load_balancer.and_then(|l| l.ingress).is_none_or(|i| i.is_empty());
            (ingress_gone && status.conditions.is_some_and(|c| c[0].type_ == "Seen")).then_some(())
        }
    })
    .await;
}
}

on_both_hosts! {
/// §3.0: data changes carry deletions both ways, and a virtual config map re-created under the
/// same name replaces its host copy (new object-uid, none of the old data).
async fn config_map_data_deletions_stick_and_recreated_objects_replace_their_copy() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let v_maps: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "default");
    let h_maps: Api<ConfigMap> = Api::namespaced(clusters.host.clone(), HNS);
    v_maps.create(&pp, &object(json!({"metadata": {"name": "settings"}, "data": {"a": "1", "b": "2"}}))).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx",
                "envFrom": [{"configMapRef": {"name": "settings"}}]}]}})),
        )
        .await
        .unwrap();
    let host_data = |wanted: serde_json::Value| {
        let h_maps = h_maps.clone();
        async move {
            let map = h_maps.get("settings-x-default-x-vc").await.ok()?;
            (serde_json::to_value(map.data.clone().unwrap_or_default()).ok()? == wanted).then_some(map)
        }
    };
    eventually("the copy with a and b", || host_data(json!({"a": "1", "b": "2"}))).await;
    // A key removed in the virtual cluster goes from the host copy.
    v_maps.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"b": null}}))).await.unwrap();
    eventually("b gone from the host copy", || host_data(json!({"a": "1"}))).await;
    // A key removed on the host goes from the virtual object.
    h_maps
        .patch(
            "settings-x-default-x-vc",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    eventually("the host's edit in the virtual cluster", || {
        let v_maps = v_maps.clone();
        async move {
            let data = v_maps.get("settings").await.ok()?.data.unwrap_or_default();
            (data.len() == 1 && data.get("c").map(String::as_str) == Some("3")).then_some(())
        }
    })
    .await;
    // Re-created under the same name while the pod still uses it.
    v_maps.delete("settings", &DeleteParams::default()).await.unwrap();
    let fresh =
        v_maps.create(&pp, &object(json!({"metadata": {"name": "settings"}, "data": {"z": "9"}}))).await.unwrap();
    let copy = eventually("the copy of the new object", || host_data(json!({"z": "9"}))).await;
    assert_eq!(copy.annotations()["vcluster.loft.sh/object-uid"], fresh.uid().unwrap());
    let data = v_maps.get("settings").await.unwrap().data.unwrap_or_default();
    assert_eq!(data.len(), 1, "none of the old data came back: {data:?}");
}
}

on_both_hosts! {
/// §1.11: objects labelled `vcluster.loft.sh/controlled-by` belong to something else: no host
/// copy of such a pod, service or config map.
async fn controlled_by_objects_stay_in_the_virtual_cluster() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let controlled = json!({"vcluster.loft.sh/controlled-by": "some-operator"});
    let v_maps: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "default");
    v_maps
        .create(&pp, &object(json!({"metadata": {"name": "owned", "labels": controlled}, "data": {"a": "1"}})))
        .await
        .unwrap();
    let v_services: Api<Service> = Api::namespaced(clusters.vc.clone(), "default");
    v_services
        .create(
            &pp,
            &object(json!({"metadata": {"name": "owned", "labels": controlled}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await
        .unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    v_pods
        .create(&pp, &object(json!({"metadata": {"name": "owned", "labels": controlled}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})))
        .await
        .unwrap();
    // A normal pod using the controlled config map: it syncs, the config map does not.
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "free"}, "spec": {"containers": [{"name": "c", "image": "nginx",
                "envFrom": [{"configMapRef": {"name": "owned"}}]}]}})),
        )
        .await
        .unwrap();
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    eventually("the free pod on the host", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("free-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    let h_maps: Api<ConfigMap> = Api::namespaced(clusters.host.clone(), HNS);
    let h_services: Api<Service> = Api::namespaced(clusters.host.clone(), HNS);
    assert!(gone(h_pods.get("owned-x-default-x-vc").await), "the controlled pod stays virtual");
    assert!(gone(h_maps.get("owned-x-default-x-vc").await), "the controlled config map stays virtual");
    assert!(gone(h_services.get("owned-x-default-x-vc").await), "the controlled service stays virtual");

    // On the host side: a host object that looks like a copy of this virtual cluster's but is
    // labelled controlled-by counts as absent: neither removed as an orphan nor overwritten.
    let host_map = |name: &str, controlled: bool| {
        let mut labels = json!({"vcluster.loft.sh/managed-by": "vc"});
        if controlled {
            labels["vcluster.loft.sh/controlled-by"] = json!("some-plugin");
        }
        object::<ConfigMap>(json!({"metadata": {"name": format!("{name}-x-default-x-vc"), "labels": labels,
            "annotations": {"vcluster.loft.sh/object-name": name, "vcluster.loft.sh/object-namespace": "default"}},
            "data": {"a": "plugin"}}))
    };
    h_maps.create(&pp, &host_map("plugin", true)).await.unwrap();
    h_maps.create(&pp, &host_map("stray", false)).await.unwrap();
    eventually("the stray host copy removed as an orphan", || {
        let h_maps = h_maps.clone();
        async move { gone(h_maps.get("stray-x-default-x-vc").await).then_some(()) }
    })
    .await;
    v_maps.create(&pp, &object(json!({"metadata": {"name": "plugin"}, "data": {"b": "2"}}))).await.unwrap();
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "user"}, "spec": {"containers": [{"name": "c", "image": "nginx",
                "envFrom": [{"configMapRef": {"name": "plugin"}}]}]}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let kept = h_maps.get("plugin-x-default-x-vc").await.expect("the controlled host object stays");
    assert_eq!(kept.data.unwrap().get("a").map(String::as_str), Some("plugin"), "and is not overwritten");
}
}

on_both_hosts! {
/// §2.3: a namespace's labels follow onto the host pods of its pods when they change.
async fn namespace_label_changes_reach_existing_host_pods() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(clusters.vc.clone());
    namespaces.create(&pp, &object(json!({"metadata": {"name": "team", "labels": {"tier": "gold"}}}))).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "team");
    v_pods
        .create(
            &pp,
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})),
        )
        .await
        .unwrap();
    let context = vkube_translate::Context::new("vc", HNS);
    let key = |label: &str| vkube_translate::labels::namespace_label_key(&context, label);
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    let host_labels = || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("web-x-team-x-vc").await.ok().map(|p| p.labels().clone()) }
    };
    let (tier, env) = (key("tier"), key("env"));
    eventually("the host pod with tier=gold", || async {
        host_labels().await.filter(|l| l.get(&tier).map(String::as_str) == Some("gold"))
    })
    .await;
    let change = json!({"metadata": {"labels": {"tier": null, "env": "prod"}}});
    namespaces.patch("team", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    eventually("the host pod with env=prod and no tier", || async {
        host_labels().await.filter(|l| l.get(&env).map(String::as_str) == Some("prod") && !l.contains_key(&tier))
    })
    .await;
}
}

on_both_hosts! {
/// §3.7: a class the host gives an ingress that has none shows in the virtual cluster, and the
/// syncer does not take it away on the host.
async fn an_ingress_class_set_on_the_host_comes_back() {
    use k8s_openapi::api::networking::v1::Ingress;
    let mut config = syncer_config();
    config.optional = vkube_syncer::OptionalKinds { ingresses: true, ..Default::default() };
    let clusters = Clusters::start(config).await;
    let v_ingresses: Api<Ingress> = Api::namespaced(clusters.vc.clone(), "default");
    let h_ingresses: Api<Ingress> = Api::namespaced(clusters.host.clone(), HNS);
    v_ingresses
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}, "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}})),
        )
        .await
        .unwrap();
    eventually("the host ingress", || {
        let h_ingresses = h_ingresses.clone();
        async move { h_ingresses.get("web-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    let class = json!({"spec": {"ingressClassName": "host-default"}});
    h_ingresses.patch("web-x-default-x-vc", &PatchParams::default(), &Patch::Merge(&class)).await.unwrap();
    eventually("the class in the virtual cluster", || {
        let v_ingresses = v_ingresses.clone();
        async move {
            let spec = v_ingresses.get("web").await.ok()?.spec?;
            (spec.ingress_class_name.as_deref() == Some("host-default")).then_some(())
        }
    })
    .await;
    let host_class = h_ingresses.get("web-x-default-x-vc").await.unwrap().spec.unwrap().ingress_class_name;
    assert_eq!(host_class.as_deref(), Some("host-default"), "kept on the host");
}
}

on_both_hosts! {
/// §4.6: an affinity term naming both `namespaces` and a `namespaceSelector` is synced with the
/// list only, and the tenant is told with a Warning event.
async fn affinity_with_both_namespace_forms_is_reported() {
    let clusters = Clusters::start(syncer_config()).await;
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    let term = json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone",
        "namespaces": ["data"], "namespaceSelector": {"matchLabels": {"team": "x"}}});
    v_pods
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}],
                "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}}})),
        )
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(clusters.vc.clone(), "default");
    eventually("the warning on the pod", || {
        let events = events.clone();
        async move {
            events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("SyncWarning")
                    && e.message.as_deref().is_some_and(|m| m.contains(".namespaceSelector"))
                    && e.involved_object.name.as_deref() == Some("web")
            })
        }
    })
    .await;
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    let host = eventually("the host pod", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("web-x-default-x-vc").await.ok() }
    })
    .await;
    let affinity = serde_json::to_value(host.spec.unwrap().affinity).unwrap();
    let selector = &affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"];
    assert_eq!(
        selector["matchExpressions"],
        json!([{"key": "vcluster.loft.sh/namespace", "operator": "In", "values": ["data"]}])
    );
}
}

on_both_hosts! {
/// §2.9: a host event annotated force-sync whose object the virtual cluster does not know is
/// copied into the virtual `default` namespace under its own name, without the annotation.
async fn force_synced_host_events_reach_the_default_namespace() {
    let clusters = Clusters::start(syncer_config()).await;
    let h_events: Api<Event> = Api::namespaced(clusters.host.clone(), HNS);
    // About an object of the host namespace the virtual cluster does not sync (a core/v1 event
    // lives in its involved object's namespace).
    let event = json!({"metadata": {"name": "maintenance.1", "annotations": {"vcluster.loft.sh/force-sync": "true", "team": "infra"}},
        "involvedObject": {"kind": "Deployment", "name": "ops-agent", "namespace": HNS, "apiVersion": "apps/v1"},
        "reason": "Maintenance", "message": "node-7 drains at noon", "type": "Normal", "count": 1,
        "firstTimestamp": "2026-12-02T10:00:00Z", "lastTimestamp": "2026-12-02T10:00:00Z", "source": {"component": "ops"}});
    h_events.create(&PostParams::default(), &object(event)).await.unwrap();
    let plain = json!({"metadata": {"name": "other.1"}, "involvedObject": {"kind": "Deployment", "name": "ops-agent", "namespace": HNS},
        "reason": "Other", "message": "not forced", "type": "Normal"});
    h_events.create(&PostParams::default(), &object(plain)).await.unwrap();
    let v_events: Api<Event> = Api::namespaced(clusters.vc.clone(), "default");
    let copied = eventually("the forced event in the virtual default namespace", || {
        let v_events = v_events.clone();
        async move { v_events.get("maintenance.1").await.ok() }
    })
    .await;
    assert_eq!(copied.message.as_deref(), Some("node-7 drains at noon"));
    assert_eq!(copied.involved_object.namespace.as_deref(), Some("default"));
    assert!(!copied.annotations().contains_key("vcluster.loft.sh/force-sync"));
    assert_eq!(copied.annotations()["team"], "infra");
    assert!(gone(v_events.get("other.1").await), "only forced events are copied");
}
}

on_both_hosts! {
/// §2.7: after creation, a label or annotation added, changed or removed on either side of a
/// pod, service, config map or claim reaches the other side; bookkeeping stays on the host.
async fn labels_and_annotations_follow_changes_on_either_side() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let merge = |value: serde_json::Value| Patch::Merge(value);
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    let v_services: Api<Service> = Api::namespaced(clusters.vc.clone(), "default");
    let h_services: Api<Service> = Api::namespaced(clusters.host.clone(), HNS);
    let v_maps: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "default");
    let h_maps: Api<ConfigMap> = Api::namespaced(clusters.host.clone(), HNS);
    v_maps.create(&pp, &object(json!({"metadata": {"name": "conf", "labels": {"old": "1"}}, "data": {"a": "1"}}))).await.unwrap();
    v_pods
        .create(&pp, &object(json!({"metadata": {"name": "web", "labels": {"app": "web", "old": "1"}}, "spec": {
            "containers": [{"name": "c", "image": "nginx", "envFrom": [{"configMapRef": {"name": "conf"}}]}]}})))
        .await
        .unwrap();
    v_services
        .create(&pp, &object(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})))
        .await
        .unwrap();
    eventually("the host pod, service and config map", || {
        let (h_pods, h_services, h_maps) = (h_pods.clone(), h_services.clone(), h_maps.clone());
        async move {
            h_pods.get("web-x-default-x-vc").await.ok()?;
            h_services.get("web-x-default-x-vc").await.ok()?;
            h_maps.get("conf-x-default-x-vc").await.ok()
        }
    })
    .await;

    // Virtual → host: added, changed, removed; reserved keys translated.
    let pm = PatchParams::default();
    v_pods
        .patch("web", &pm, &merge(json!({"metadata": {"labels": {"tier": "front", "old": null, "release": "r1"}, "annotations": {"team": "shop"}}})))
        .await
        .unwrap();
    v_maps.patch("conf", &pm, &merge(json!({"metadata": {"labels": {"old": null, "new": "2"}}}))).await.unwrap();
    let release = vkube_translate::labels::translated_key(&vkube_translate::Context::new("vc", HNS), "release");
    eventually("the pod's and config map's new metadata on the host", || {
        let (h_pods, h_maps, release) = (h_pods.clone(), h_maps.clone(), release.clone());
        async move {
            let pod = h_pods.get("web-x-default-x-vc").await.ok()?;
            let map = h_maps.get("conf-x-default-x-vc").await.ok()?;
            let (labels, annotations) = (pod.labels(), pod.annotations());
            (labels.get("tier").map(String::as_str) == Some("front")
                && !labels.contains_key("old")
                && labels.get(&release).map(String::as_str) == Some("r1")
                && annotations.get("team").map(String::as_str) == Some("shop")
                && annotations.contains_key("vcluster.loft.sh/object-uid")
                && map.labels().get("new").map(String::as_str) == Some("2")
                && !map.labels().contains_key("old"))
            .then_some(())
        }
    })
    .await;

    // Host → virtual: a cloud controller annotates the host service; someone labels the host pod.
    h_services
        .patch("web-x-default-x-vc", &pm, &merge(json!({"metadata": {"annotations": {"cloud.example.com/lb-id": "lb-7"}}})))
        .await
        .unwrap();
    h_pods.patch("web-x-default-x-vc", &pm, &merge(json!({"metadata": {"labels": {"scanned": "yes"}}}))).await.unwrap();
    eventually("the host's additions in the virtual cluster", || {
        let (v_services, v_pods) = (v_services.clone(), v_pods.clone());
        async move {
            let service = v_services.get("web").await.ok()?;
            let pod = v_pods.get("web").await.ok()?;
            (service.annotations().get("cloud.example.com/lb-id").map(String::as_str) == Some("lb-7")
                && pod.labels().get("scanned").map(String::as_str) == Some("yes")
                && !pod.labels().keys().any(|k| k.starts_with("vcluster.loft.sh/")))
            .then_some(())
        }
    })
    .await;
    // And a host-side removal comes back too, while the virtual values stay.
    h_pods.patch("web-x-default-x-vc", &pm, &merge(json!({"metadata": {"labels": {"scanned": null}}}))).await.unwrap();
    eventually("the host's removal in the virtual cluster", || {
        let v_pods = v_pods.clone();
        async move {
            let pod = v_pods.get("web").await.ok()?;
            (!pod.labels().contains_key("scanned") && pod.labels().get("tier").map(String::as_str) == Some("front"))
                .then_some(())
        }
    })
    .await;
    // A service selecting on the label added later now routes to the host pod.
    v_services.patch("web", &pm, &merge(json!({"spec": {"selector": {"tier": "front"}}}))).await.unwrap();
    eventually("the host service selecting on the new label", || {
        let h_services = h_services.clone();
        async move {
            let service = h_services.get("web-x-default-x-vc").await.ok()?;
            (service.spec?.selector?.get("tier").map(String::as_str) == Some("front")).then_some(())
        }
    })
    .await;
}
}

on_both_hosts! {
/// §7.5: a `reference` rule naming a secret makes it used, like a volume does: the host pod names
/// the host copy, which exists while the pod does.
async fn a_secret_a_translate_rule_names_reaches_the_host() {
    let rule = serde_json::from_value::<vkube_config::Translate>(json!({
        "path": "metadata.annotations[\"example.com/credentials\"]",
        "reference": {"apiVersion": "v1", "kind": "Secret"}}))
    .unwrap();
    let mut config = syncer_config();
    config.patches.insert("Pod".into(), vkube_syncer::patches::Patches::new(&[rule]).unwrap());
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let v_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(clusters.vc.clone(), "default");
    let h_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(clusters.host.clone(), HNS);
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    v_secrets.create(&pp, &object(json!({"metadata": {"name": "creds"}, "stringData": {"u": "p"}}))).await.unwrap();
    v_secrets.create(&pp, &object(json!({"metadata": {"name": "other"}, "stringData": {"u": "p"}}))).await.unwrap();
    v_pods
        .create(&pp, &object(json!({"metadata": {"name": "app", "annotations": {"example.com/credentials": "creds"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}})))
        .await
        .unwrap();
    let pod = eventually("the host pod", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("app-x-default-x-vc").await.ok() }
    })
    .await;
    assert_eq!(pod.annotations()["example.com/credentials"], "creds-x-default-x-vc");
    eventually("the named secret on the host", || {
        let h_secrets = h_secrets.clone();
        async move { h_secrets.get("creds-x-default-x-vc").await.ok() }
    })
    .await;
    assert!(gone(h_secrets.get("other-x-default-x-vc").await), "a secret nothing names stays home");
    v_pods.delete("app", &DeleteParams::default().grace_period(0)).await.unwrap();
    eventually("the secret gone with its only user", || {
        let h_secrets = h_secrets.clone();
        async move { gone(h_secrets.get("creds-x-default-x-vc").await).then_some(()) }
    })
    .await;
}
}

on_both_hosts! {
/// §3.4: spec fields sync both ways: a virtual type change reaches the host with the node port
/// both sides then show, and host-side external IPs come back.
async fn service_fields_sync_both_ways() {
    let clusters = Clusters::start(syncer_config()).await;
    let pp = PostParams::default();
    let pm = PatchParams::default();
    let v_services: Api<Service> = Api::namespaced(clusters.vc.clone(), "default");
    let h_services: Api<Service> = Api::namespaced(clusters.host.clone(), HNS);
    v_services
        .create(&pp, &object(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})))
        .await
        .unwrap();
    eventually("the host service", || {
        let h_services = h_services.clone();
        async move { h_services.get("web-x-default-x-vc").await.ok() }
    })
    .await;
    v_services.patch("web", &pm, &Patch::Merge(json!({"spec": {"type": "NodePort"}}))).await.unwrap();
    let node_port = eventually("one node port on both sides", || {
        let (v_services, h_services) = (v_services.clone(), h_services.clone());
        async move {
            let host = h_services.get("web-x-default-x-vc").await.ok()?.spec?;
            let virtual_spec = v_services.get("web").await.ok()?.spec?;
            let host_port = host.ports?[0].node_port?;
            (host.type_.as_deref() == Some("NodePort") && virtual_spec.ports?[0].node_port == Some(host_port))
                .then_some(host_port)
        }
    })
    .await;
    h_services
        .patch("web-x-default-x-vc", &pm, &Patch::Merge(json!({"spec": {"externalIPs": ["203.0.113.9"]}})))
        .await
        .unwrap();
    eventually("the host's external IP in the virtual service", || {
        let v_services = v_services.clone();
        async move {
            let spec = v_services.get("web").await.ok()?.spec?;
            (spec.external_ips? == ["203.0.113.9"] && spec.ports?[0].node_port == Some(node_port)).then_some(())
        }
    })
    .await;
    // A virtual edit of the same field wins over the host's value.
    v_services.patch("web", &pm, &Patch::Merge(json!({"spec": {"externalIPs": ["203.0.113.10"]}}))).await.unwrap();
    eventually("the virtual external IP on the host", || {
        let h_services = h_services.clone();
        async move {
            let spec = h_services.get("web-x-default-x-vc").await.ok()?.spec?;
            (spec.external_ips? == ["203.0.113.10"]).then_some(())
        }
    })
    .await;
}
}

on_both_hosts! {
/// §3.1: what may change on a running pod follows the virtual pod (tolerations added, the
/// deadline), and an ephemeral container added to it (`kubectl debug`) is added to the host pod,
/// whose running status comes back.
async fn running_pods_take_new_tolerations_deadlines_and_ephemeral_containers() {
    let clusters = Clusters::start(syncer_config()).await;
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    run_web(&v_pods).await;
    let update = json!({"spec": {"activeDeadlineSeconds": 3600,
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"}]}});
    v_pods.patch("web", &PatchParams::default(), &Patch::Strategic(update)).await.unwrap();
    let host = eventually("the toleration and the deadline on the host pod", || {
        let h_pods = h_pods.clone();
        async move {
            let spec = h_pods.get("web-x-default-x-vc").await.ok()?.spec?;
            let tolerated = spec.tolerations.iter().flatten().any(|t| t.key.as_deref() == Some("dedicated"));
            (tolerated && spec.active_deadline_seconds == Some(3600)).then_some(spec)
        }
    })
    .await;
    assert!(
        host.tolerations.iter().flatten().any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready")),
        "the host's own tolerations stay"
    );

    let debug = json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "stdin": true, "tty": true}]}});
    v_pods
        .patch_subresource("ephemeralcontainers", "web", &PatchParams::default(), &Patch::Strategic(debug))
        .await
        .unwrap();
    eventually("the debug container on the host pod, running in the virtual pod", || {
        let (h_pods, v_pods) = (h_pods.clone(), v_pods.clone());
        async move {
            let host = h_pods.get("web-x-default-x-vc").await.ok()?;
            let on_host = host.spec?.ephemeral_containers?.iter().any(|c| c.name == "dbg" && c.image.as_deref() == Some("busybox"));
            let statuses = v_pods.get("web").await.ok()?.status?.ephemeral_container_statuses?;
            let running = statuses.iter().any(|s| s.name == "dbg" && s.state.as_ref().is_some_and(|st| st.running.is_some()));
            (on_host && running).then_some(())
        }
    })
    .await;
}
}

on_both_hosts! {
/// §3.10/§3.19 with a selector: only the host classes it picks are copied, a copy goes when its
/// class stops matching, ingresses naming a class it does not pick stay virtual with a
/// `SyncWarning`, and pods naming such a priority class are refused at creation (no such class in
/// the virtual cluster, as kube-apiserver refuses them).
async fn class_selectors_pick_host_classes_and_gate_what_uses_them() {
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    let mut config = syncer_config();
    config.optional =
        vkube_syncer::OptionalKinds { ingresses: true, ingress_classes: true, priority_classes: true, ..Default::default() };
    let picked = json!({"matchLabels": {"expose": "yes"}});
    config.class_selectors.insert("IngressClass".into(), picked.clone());
    config.class_selectors.insert("PriorityClass".into(), picked);
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let h_classes: Api<IngressClass> = Api::all(clusters.host.clone());
    let h_priorities: Api<PriorityClass> = Api::all(clusters.host.clone());
    for (name, labels) in [("vk-public", json!({"expose": "yes"})), ("vk-internal", json!({}))] {
        h_classes
            .create(&pp, &object(json!({"metadata": {"name": name, "labels": labels}, "spec": {"controller": "example.com/lb"}})))
            .await
            .unwrap();
    }
    for (name, labels, value) in [("vk-gold", json!({"expose": "yes"}), 1000), ("vk-bronze", json!({}), 10)] {
        h_priorities.create(&pp, &object(json!({"metadata": {"name": name, "labels": labels}, "value": value}))).await.unwrap();
    }
    let v_classes: Api<IngressClass> = Api::all(clusters.vc.clone());
    let v_priorities: Api<PriorityClass> = Api::all(clusters.vc.clone());
    eventually("the picked classes in the virtual cluster", || {
        let (v_classes, v_priorities) = (v_classes.clone(), v_priorities.clone());
        async move {
            (v_classes.get("vk-public").await.is_ok() && v_priorities.get("vk-gold").await.is_ok()).then_some(())
        }
    })
    .await;
    assert!(gone(v_classes.get("vk-internal").await), "not picked");
    assert!(gone(v_priorities.get("vk-bronze").await), "not picked");

    let v_ingresses: Api<Ingress> = Api::namespaced(clusters.vc.clone(), "default");
    let ingress = |name: &str, class: &str| {
        object::<Ingress>(json!({"metadata": {"name": name}, "spec": {"ingressClassName": class,
            "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}))
    };
    v_ingresses.create(&pp, &ingress("open", "vk-public")).await.unwrap();
    v_ingresses.create(&pp, &ingress("hidden", "vk-internal")).await.unwrap();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    let pod = |name: &str, class: &str| {
        object::<Pod>(json!({"metadata": {"name": name}, "spec": {"priorityClassName": class,
            "containers": [{"name": "c", "image": "nginx"}]}}))
    };
    v_pods.create(&pp, &pod("rich", "vk-gold")).await.unwrap();
    // A class the selector does not pick has no copy in the virtual cluster, so the virtual API
    // server refuses the pod as kube-apiserver's Priority admission does: nothing to keep back.
    match v_pods.create(&pp, &pod("poor", "vk-bronze")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
            assert_eq!(status.message, "pods \"poor\" is forbidden: no PriorityClass with name vk-bronze was found");
        }
        other => panic!("a pod naming a class not picked was admitted: {other:?}"),
    }
    let h_ingresses: Api<Ingress> = Api::namespaced(clusters.host.clone(), HNS);
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    eventually("the picked ingress and pod on the host", || {
        let (h_ingresses, h_pods) = (h_ingresses.clone(), h_pods.clone());
        async move {
            (h_ingresses.get("open-x-default-x-vc").await.is_ok() && h_pods.get("rich-x-default-x-vc").await.is_ok())
                .then_some(())
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(clusters.vc.clone(), "default");
    let warning = eventually("a warning", || {
        let events = events.clone();
        async move {
            events.list(&ListParams::default()).await.ok()?.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some("hidden") && e.reason.as_deref() == Some("SyncWarning")
            })
        }
    })
    .await;
    assert_eq!(
        warning.message.as_deref(),
        Some("IngressClass \"vk-internal\" is not picked by sync.fromHost.ingressClasses.selector")
    );
    assert!(gone(h_ingresses.get("hidden-x-default-x-vc").await));
    assert!(gone(v_pods.get("poor").await) && gone(h_pods.get("poor-x-default-x-vc").await));

    // The host class gets picked: what was kept back goes to the host without being touched.
    h_classes
        .patch("vk-internal", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"expose": "yes"}}})))
        .await
        .unwrap();
    eventually("the ingress kept back to reach the host", || {
        let h_ingresses = h_ingresses.clone();
        async move { h_ingresses.get("hidden-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;

    // The class stops matching: its copy goes.
    h_classes
        .patch("vk-public", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"expose": null}}})))
        .await
        .unwrap();
    eventually("the copy of a class that stopped matching to go", || {
        let v_classes = v_classes.clone();
        async move { gone(v_classes.get("vk-public").await).then_some(()) }
    })
    .await;
    for name in ["vk-public", "vk-internal"] {
        let _ = h_classes.delete(name, &DeleteParams::default()).await;
    }
    for name in ["vk-gold", "vk-bronze"] {
        let _ = h_priorities.delete(name, &DeleteParams::default()).await;
    }
}
}

on_both_hosts! {
/// §4.1 `policies.podSecurityStandard: restricted`: a pod the standard refuses stays virtual
/// with a `SyncError` event giving Pod Security admission's reasons (on the real host: word for
/// word what kube-apiserver says for a namespace enforcing the same level), a hardened pod is
/// synced, and an ephemeral container that breaks the standard is not added to its host pod.
async fn pods_violating_the_pod_security_standard_stay_virtual() {
    let mut config = syncer_config();
    config.pod_security = Some(vkube_translate::pod_security::Level::Restricted);
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let v_pods: Api<Pod> = Api::namespaced(clusters.vc.clone(), "default");
    let h_pods: Api<Pod> = Api::namespaced(clusters.host.clone(), HNS);
    let plain = json!({"metadata": {"name": "plain"}, "spec": {"containers": [{"name": "app", "image": "nginx",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
    v_pods.create(&pp, &object(plain.clone())).await.unwrap();
    let hardened = json!({"metadata": {"name": "hardened"}, "spec": {
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "nginx", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
    v_pods.create(&pp, &object(hardened)).await.unwrap();
    eventually("the hardened pod on the host", || {
        let h_pods = h_pods.clone();
        async move { h_pods.get("hardened-x-default-x-vc").await.ok().map(|_| ()) }
    })
    .await;
    let events: Api<Event> = Api::namespaced(clusters.vc.clone(), "default");
    let refusal = |name: &'static str| {
        let events = events.clone();
        async move {
            eventually("a SyncError event", || {
                let events = events.clone();
                async move {
                    events.list(&ListParams::default()).await.ok()?.items.into_iter().find_map(|e| {
                        (e.involved_object.name.as_deref() == Some(name) && e.reason.as_deref() == Some("SyncError"))
                            .then_some(e.message?)
                    })
                }
            })
            .await
        }
    };
    let message = refusal("plain").await;
    let expected = "violates PodSecurity \"restricted:latest\": hostPort (container \"app\" uses hostPort 8080), allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";
    assert_eq!(message, format!("Pod plain is forbidden: {expected}"));
    assert!(gone(h_pods.get("plain-x-default-x-vc").await), "a refused pod never reaches the host");
    if common::host_kind() == common::HostKind::Real {
        // The oracle: kube-apiserver's own Pod Security admission refuses the same pod in a
        // namespace enforcing `restricted` with the same reasons (and hostPort, a baseline check).
        let namespaces: Api<Namespace> = Api::all(clusters.host.clone());
        let labels = json!({"pod-security.kubernetes.io/enforce": "restricted"});
        let _ = namespaces.create(&pp, &object(json!({"metadata": {"name": "pss-oracle", "labels": labels}}))).await;
        // (Service account admission runs first: the account must exist.)
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(clusters.host.clone(), "pss-oracle");
        let _ = accounts.create(&pp, &object(json!({"metadata": {"name": "default"}}))).await;
        let oracle: Api<Pod> = Api::namespaced(clusters.host.clone(), "pss-oracle");
        let Err(kube::Error::Api(status)) = oracle.create(&pp, &object(plain)).await else {
            panic!("the host admitted a pod its namespace's Pod Security level forbids")
        };
        let _ = namespaces.delete("pss-oracle", &DeleteParams::default()).await;
        let theirs = status.message.split_once("is forbidden: ").map(|(_, m)| m.to_string()).unwrap_or_default();
        let ours = message.split_once("is forbidden: ").map(|(_, m)| m.to_string()).unwrap_or_default();
        assert_eq!(ours, theirs);
    }

    // A debug container without the hardening the standard asks for stays out of the host pod.
    eventually("the hardened pod running", || {
        let v_pods = v_pods.clone();
        async move { (v_pods.get("hardened").await.ok()?.status?.phase.as_deref() == Some("Running")).then_some(()) }
    })
    .await;
    let debug = json!({"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox",
        "securityContext": {"privileged": true}}]}});
    v_pods
        .patch_subresource("ephemeralcontainers", "hardened", &PatchParams::default(), &Patch::Strategic(debug))
        .await
        .unwrap();
    let message = refusal("hardened").await;
    assert!(message.starts_with("Pod hardened is forbidden: violates PodSecurity \"restricted:latest\": "), "{message}");
    assert!(message.contains("privileged (container \"dbg\" must not set securityContext.privileged=true)"), "{message}");
    let host = h_pods.get("hardened-x-default-x-vc").await.unwrap();
    assert!(host.spec.unwrap().ephemeral_containers.is_none(), "the refused debug container is not on the host pod");
}
}

on_both_hosts! {
/// §5.5 `sync.fromHost.configMaps|secrets` with `mappings.byName`: host objects appear in the
/// virtual cluster where the mappings say (exact names, whole namespaces, the own host
/// namespace), their namespace made if missing; the copy follows the host, a tenant's edit of it
/// is undone, it goes with its source, and the tenant's own objects are never touched. On the
/// real host the syncer reads `shared` through a Role there (no cluster-wide read).
async fn host_config_maps_and_secrets_are_copied_in_by_name() {
    use k8s_openapi::api::core::v1::Secret;
    use vkube_config::mappings::ByName;
    let by_name = |pairs: &[(&str, &str)]| {
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ByName::parse("test", &map).unwrap()
    };
    let mut config = syncer_config();
    config.mapped = vec![
        vkube_syncer::MappedSync {
            kind: vkube_syncer::MappedKind::ConfigMap,
            by_name: by_name(&[("shared/ca-bundle", "default/ca"), ("shared/*", "imported/*")]),
            patches: Default::default(),
        },
        vkube_syncer::MappedSync {
            kind: vkube_syncer::MappedKind::Secret,
            by_name: by_name(&[("/registry", "default/*")]),
            patches: Default::default(),
        },
    ];
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let _ = Api::<Namespace>::all(clusters.host.clone()).create(&pp, &object(json!({"metadata": {"name": "shared"}}))).await;
    let h_shared: Api<ConfigMap> = Api::namespaced(clusters.host.clone(), "shared");
    for (name, data) in [("ca-bundle", json!({"ca.crt": "one"})), ("settings", json!({"mode": "fast"}))] {
        h_shared.create(&pp, &object(json!({"metadata": {"name": name, "labels": {"team": "platform"}}, "data": data}))).await.unwrap();
    }
    let h_secrets: Api<Secret> = Api::namespaced(clusters.host.clone(), HNS);
    for name in ["registry", "unmapped"] {
        let secret = json!({"metadata": {"name": name}, "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}});
        h_secrets.create(&pp, &object(secret)).await.unwrap();
    }
    let v_default: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "default");
    let v_imported: Api<ConfigMap> = Api::namespaced(clusters.vc.clone(), "imported");
    let v_secrets: Api<Secret> = Api::namespaced(clusters.vc.clone(), "default");
    // The tenant's own objects where copies land: never touched. (Its namespace may exist
    // already: the syncer makes it for the copies.)
    let _ = Api::<Namespace>::all(clusters.vc.clone()).create(&pp, &object(json!({"metadata": {"name": "imported"}}))).await;
    v_imported.create(&pp, &object(json!({"metadata": {"name": "mine"}, "data": {"k": "v"}}))).await.unwrap();
    let data = |cm: &ConfigMap, key: &str| cm.data.as_ref().and_then(|d| d.get(key)).cloned();
    let ca = eventually("the copies in the virtual cluster", || {
        let (v_default, v_imported, v_secrets) = (v_default.clone(), v_imported.clone(), v_secrets.clone());
        async move {
            let ca = v_default.get("ca").await.ok()?;
            v_imported.get("settings").await.ok()?;
            v_secrets.get("registry").await.ok()?;
            Some(ca)
        }
    })
    .await;
    assert_eq!(data(&ca, "ca.crt").as_deref(), Some("one"));
    assert_eq!(ca.labels().get("team").map(String::as_str), Some("platform"));
    assert_eq!(ca.annotations().get("vcluster.loft.sh/object-host-name").map(String::as_str), Some("ca-bundle"));
    let secret = v_secrets.get("registry").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert!(gone(v_secrets.get("unmapped").await), "only what the mappings name");
    assert!(gone(v_imported.get("ca-bundle").await), "an exact key wins over the namespace's");

    // The host changes: the copy follows (a removed key goes too).
    h_shared
        .patch("ca-bundle", &PatchParams::default(), &Patch::Merge(json!({"data": {"ca.crt": "two", "extra": "x"}})))
        .await
        .unwrap();
    eventually("the host's change in the copy", || {
        let v_default = v_default.clone();
        async move { (v_default.get("ca").await.ok()?.data?.get("ca.crt")? == "two").then_some(()) }
    })
    .await;
    h_shared.patch("ca-bundle", &PatchParams::default(), &Patch::Merge(json!({"data": {"extra": null}}))).await.unwrap();
    // A tenant's edit of the copy is undone.
    v_default.patch("ca", &PatchParams::default(), &Patch::Merge(json!({"data": {"ca.crt": "mine"}}))).await.unwrap();
    eventually("the copy back to the host's data", || {
        let v_default = v_default.clone();
        async move {
            let data = v_default.get("ca").await.ok()?.data?;
            (data.get("ca.crt")? == "two" && !data.contains_key("extra")).then_some(())
        }
    })
    .await;

    // The source goes: so does its copy, and only its copy.
    h_shared.delete("settings", &DeleteParams::default()).await.unwrap();
    eventually("the copy of a deleted host object to go", || {
        let v_imported = v_imported.clone();
        async move { gone(v_imported.get("settings").await).then_some(()) }
    })
    .await;
    assert!(v_imported.get("mine").await.is_ok(), "the tenant's own object stays");
    let _ = Api::<Namespace>::all(clusters.host.clone()).delete("shared", &DeleteParams::default()).await;
}
}

on_both_hosts! {
/// §8.4: a namespaced custom resource from the host with `mappings.byName`: its definition is
/// copied in, host objects appear (spec and status) where the mappings say, and go with their
/// source.
async fn namespaced_custom_resources_come_from_the_host_by_name() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject};
    let mut config = syncer_config();
    let map = [("certs/*".to_string(), "security/*".to_string())].into();
    config.mapped = vec![vkube_syncer::MappedSync {
        kind: vkube_syncer::MappedKind::Custom("issuers.example.com".into()),
        by_name: vkube_config::mappings::ByName::parse("test", &map).unwrap(),
        patches: Default::default(),
    }];
    let issuers = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Issuer".into(),
        plural: "issuers".into(),
    };
    let resource = issuers.clone();
    let clusters = Clusters::start_after(config, |host| async move {
        let definitions: Api<CustomResourceDefinition> = Api::all(host.clone());
        let pp = PostParams::default();
        let definition = object::<CustomResourceDefinition>(json!({
            "metadata": {"name": "issuers.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "issuers", "singular": "issuer", "kind": "Issuer", "listKind": "IssuerList"},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }));
        definitions.create(&pp, &definition).await.unwrap();
        let _ = Api::<Namespace>::all(host.clone()).create(&pp, &object(json!({"metadata": {"name": "certs"}}))).await;
        let api: Api<DynamicObject> = Api::namespaced_with(host.clone(), "certs", &resource);
        let issuer: DynamicObject = object(json!({"apiVersion": "example.com/v1", "kind": "Issuer",
            "metadata": {"name": "letsencrypt"}, "spec": {"acme": {"server": "https://acme.example"}}}));
        for _ in 0..100 {
            if api.create(&pp, &issuer).await.is_ok() {
                let status = Patch::Merge(json!({"status": {"ready": true}}));
                api.patch_status("letsencrypt", &PatchParams::default(), &status).await.unwrap();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the host never served issuers");
    })
    .await;
    let v_issuers: Api<DynamicObject> = Api::namespaced_with(clusters.vc.clone(), "security", &issuers);
    let copy = eventually("the host's issuer in the virtual cluster, with its status", || {
        let v_issuers = v_issuers.clone();
        async move { v_issuers.get("letsencrypt").await.ok().filter(|i| i.data["status"]["ready"] == true) }
    })
    .await;
    assert_eq!(copy.data["spec"]["acme"]["server"], "https://acme.example");
    let h_issuers: Api<DynamicObject> = Api::namespaced_with(clusters.host.clone(), "certs", &issuers);
    h_issuers.delete("letsencrypt", &DeleteParams::default()).await.unwrap();
    eventually("the copy to go with its source", || {
        let v_issuers = v_issuers.clone();
        async move { gone(v_issuers.get("letsencrypt").await).then_some(()) }
    })
    .await;
    let definitions: Api<CustomResourceDefinition> = Api::all(clusters.host.clone());
    let _ = definitions.delete("issuers.example.com", &DeleteParams::default()).await;
    let _ = Api::<Namespace>::all(clusters.host.clone()).delete("certs", &DeleteParams::default()).await;
}
}

on_both_hosts! {
/// §12.4 `networking.replicateServices`: a host service (another namespace's, and one of the
/// host namespace with hand-made endpoints) shows in the virtual cluster as a headless service
/// whose endpoints reach it, following its ports and going with it; a virtual service is exposed
/// in the host namespace under a plain name, selecting its pods; the ordinary service syncer
/// leaves replicas alone; replicas no longer configured go at the next start.
async fn services_are_replicated_both_ways() {
    let mut config = syncer_config();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    config.replicate = vkube_syncer::ServiceReplication {
        from_host: vec![(pair("data", "db"), pair("default", "database")), (pair(HNS, "metrics"), pair("monitoring", "metrics"))],
        to_host: vec![(pair("shop", "api"), "shop-api".to_string())],
    };
    let clusters = Clusters::start(config).await;
    let pp = PostParams::default();
    let (host, vc) = (clusters.host.clone(), clusters.vc.clone());
    let _ = Api::<Namespace>::all(host.clone()).create(&pp, &object(json!({"metadata": {"name": "data"}}))).await;
    let h_data: Api<Service> = Api::namespaced(host.clone(), "data");
    h_data
        .create(&pp, &object(json!({"metadata": {"name": "db"}, "spec": {"ports": [{"name": "pg", "port": 5432}]}})))
        .await
        .unwrap();
    let host_ip = h_data.get("db").await.unwrap().spec.unwrap().cluster_ip.unwrap();
    let h_services: Api<Service> = Api::namespaced(host.clone(), HNS);
    h_services
        .create(&pp, &object(json!({"metadata": {"name": "metrics"}, "spec": {"clusterIP": "None", "ports": [{"port": 9090}]}})))
        .await
        .unwrap();
    let h_endpoints: Api<Endpoints> = Api::namespaced(host.clone(), HNS);
    h_endpoints
        .create(&pp, &object(json!({"metadata": {"name": "metrics"},
            "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 9090}]}]})))
        .await
        .unwrap();

    let v_services: Api<Service> = Api::namespaced(vc.clone(), "default");
    let v_endpoints: Api<Endpoints> = Api::namespaced(vc.clone(), "default");
    let ip = |e: &Endpoints| {
        e.subsets.as_ref()?.first()?.addresses.as_ref()?.first().map(|a| a.ip.clone())
    };
    let endpoints = eventually("the replica of data/db reaching the host service", || {
        let (v_services, v_endpoints) = (v_services.clone(), v_endpoints.clone());
        async move {
            v_services.get("database").await.ok()?;
            v_endpoints.get("database").await.ok()
        }
    })
    .await;
    assert_eq!(ip(&endpoints).as_deref(), Some(host_ip.as_str()));
    let replica = v_services.get("database").await.unwrap();
    assert_eq!(replica.labels()["vcluster.loft.sh/controlled-by"], "vcluster");
    assert_eq!(replica.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
    let m_endpoints: Api<Endpoints> = Api::namespaced(vc.clone(), "monitoring");
    let metrics = eventually("the replica of the host namespace's headless service", || {
        let m_endpoints = m_endpoints.clone();
        async move { m_endpoints.get("metrics").await.ok().filter(|e| ip(e).is_some()) }
    })
    .await;
    assert_eq!(ip(&metrics).as_deref(), Some("10.1.2.3"));

    // The host service changes: the replica follows; a tenant's removal of it is undone.
    let ports = json!({"spec": {"ports": [{"name": "pg", "port": 5432}, {"name": "admin", "port": 5433}]}});
    h_data.patch("db", &PatchParams::default(), &Patch::Merge(ports)).await.unwrap();
    eventually("the new port on the replica and its endpoints", || {
        let (v_services, v_endpoints) = (v_services.clone(), v_endpoints.clone());
        async move {
            let ports = v_services.get("database").await.ok()?.spec?.ports?;
            let endpoint_ports = v_endpoints.get("database").await.ok()?.subsets?.first()?.ports.clone()?;
            (ports.len() == 2 && endpoint_ports.len() == 2).then_some(())
        }
    })
    .await;
    v_services.delete("database", &DeleteParams::default()).await.unwrap();
    eventually("the replica made again", || {
        let v_services = v_services.clone();
        async move { v_services.get("database").await.ok().map(|_| ()) }
    })
    .await;
    assert!(gone(h_services.get("database-x-default-x-vc").await), "the service syncer leaves replicas alone");

    // A virtual service goes to the host under its plain name, selecting its pods.
    let _ = Api::<Namespace>::all(vc.clone()).create(&pp, &object(json!({"metadata": {"name": "shop"}}))).await;
    let v_shop: Api<Service> = Api::namespaced(vc.clone(), "shop");
    v_shop
        .create(&pp, &object(json!({"metadata": {"name": "api"}, "spec": {"selector": {"app": "api"}, "ports": [{"port": 8080}]}})))
        .await
        .unwrap();
    let exposed = eventually("the host replica of shop/api", || {
        let h_services = h_services.clone();
        async move { h_services.get("shop-api").await.ok() }
    })
    .await;
    assert_eq!(exposed.labels()["vcluster.loft.sh/controlled-by"], "vcluster");
    let selector = exposed.spec.as_ref().unwrap().selector.clone().unwrap();
    assert_eq!(selector["vcluster.loft.sh/namespace"], "shop");
    assert_eq!(selector["vcluster.loft.sh/managed-by"], "vc");
    v_shop.patch("api", &PatchParams::default(), &Patch::Merge(json!({"spec": {"ports": [{"port": 9000}]}}))).await.unwrap();
    eventually("the host replica's port to follow", || {
        let h_services = h_services.clone();
        async move { (h_services.get("shop-api").await.ok()?.spec?.ports?[0].port == 9000).then_some(()) }
    })
    .await;

    // The host service goes: so does its replica.
    h_data.delete("db", &DeleteParams::default()).await.unwrap();
    eventually("the replica to go with the host service", || {
        let (v_services, v_endpoints) = (v_services.clone(), v_endpoints.clone());
        async move { (gone(v_services.get("database").await) && gone(v_endpoints.get("database").await)).then_some(()) }
    })
    .await;

    // Restarted without replication: the replicas left from before go.
    clusters.syncer.abort();
    let mut config = syncer_config();
    config.mappings = Some(vkube_syncer::MappingStorage(clusters.virtual_server.state.registry.store.clone()));
    let (ready, mut ready_rx) = tokio::sync::watch::channel(false);
    let restarted = tokio::spawn(vkube_syncer::run(vc.clone(), clusters.syncer_host.clone(), config, ready));
    ready_rx.wait_for(|r| *r).await.unwrap();
    eventually("replicas no longer configured to go", || {
        let (m_services, h_services) = (Api::<Service>::namespaced(vc.clone(), "monitoring"), h_services.clone());
        async move { (gone(m_services.get("metrics").await) && gone(h_services.get("shop-api").await)).then_some(()) }
    })
    .await;
    assert!(v_shop.get("api").await.is_ok(), "the tenant's own service stays");
    restarted.abort();
    let _ = Api::<Namespace>::all(host.clone()).delete("data", &DeleteParams::default()).await;
}
}

on_both_hosts! {
/// §3.9 with `sync.toHost.persistentVolumes.enabled`: the host volume provisioned for a synced
/// claim is imported under its own name (bound to the virtual claim, marked
/// `vcluster.loft.sh/host-pv`, no fake-volume label, not copied back to the host as the
/// tenant's), and goes with the claim.
async fn host_volumes_provisioned_for_claims_are_imported() {
    let mut config = syncer_config();
    config.optional.persistent_volumes_to_host = true;
    let clusters = Clusters::start(config).await;
    let v_claims: Api<PersistentVolumeClaim> = Api::namespaced(clusters.vc.clone(), "default");
    let v_volumes: Api<PersistentVolume> = Api::all(clusters.vc.clone());
    let h_volumes: Api<PersistentVolume> = Api::all(clusters.host.clone());
    let claim = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}});
    v_claims.create(&PostParams::default(), &object(claim)).await.unwrap();
    let volume = eventually("the virtual claim bound", || {
        let v_claims = v_claims.clone();
        async move {
            let claim = v_claims.get("data").await.ok()?;
            (claim.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(claim.spec?.volume_name?)
        }
    })
    .await;
    let host_volume = h_volumes.get(&volume).await.unwrap();
    let imported = eventually("the imported volume, bound", || {
        let (v_volumes, volume) = (v_volumes.clone(), volume.clone());
        async move {
            let pv = v_volumes.get(&volume).await.ok()?;
            (pv.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(pv)
        }
    })
    .await;
    assert_eq!(imported.annotations().get("vcluster.loft.sh/host-pv"), Some(&volume));
    assert!(!imported.labels().contains_key("vcluster.loft.sh/fake-pv"), "not a fake volume");
    let spec = imported.spec.unwrap();
    let claim_ref = spec.claim_ref.unwrap();
    assert_eq!((claim_ref.namespace.as_deref(), claim_ref.name.as_deref()), (Some("default"), Some("data")));
    assert_eq!(spec.capacity, host_volume.spec.as_ref().unwrap().capacity, "the host's capacity");
    // The import is not the tenant's volume: no host copy of it is made.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let host_names: Vec<String> = h_volumes.list(&ListParams::default()).await.unwrap().items.iter().map(|v| v.name_any()).collect();
    assert!(!host_names.iter().any(|n| n.starts_with("vcluster-")), "{host_names:?}");

    v_claims.delete("data", &DeleteParams::default()).await.unwrap();
    eventually("the imported volume to go with its claim", || {
        let (v_volumes, volume) = (v_volumes.clone(), volume.clone());
        async move { gone(v_volumes.get(&volume).await).then_some(()) }
    })
    .await;
}
}
