use serde_json::json;

use super::*;

fn quota(hard: Value, used: Option<Value>) -> Value {
    let mut q = json!({"metadata": {"name": "test-quota"}, "spec": {"hard": hard.clone()}});
    if let Some(used) = used {
        q["status"] = json!({"hard": hard, "used": used});
    }
    q
}

fn pod(requests: Value, limits: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "resources": {"requests": requests, "limits": limits}}
    ]}})
}

fn shown(list: &ResourceList) -> String {
    pretty(list)
}

#[test]
fn a_pod_uses_its_requests_limits_and_extended_resources() {
    let p = pod(
        json!({"cpu": "500m", "memory": "252Mi", "ephemeral-storage": "30Gi", "example.com/dongle": "2"}),
        json!({"example.com/dongle": "2"}),
    );
    assert_eq!(
        shown(&usage("", "pods", &p, 0)),
        "count/pods=1,cpu=500m,ephemeral-storage=30Gi,memory=252Mi,pods=1,requests.cpu=500m,\
         requests.ephemeral-storage=30Gi,requests.example.com/dongle=2,requests.memory=252Mi"
    );
}

#[test]
fn finished_and_expired_pods_only_count_as_objects() {
    let mut p = pod(json!({"cpu": "1"}), json!({}));
    p["status"] = json!({"phase": "Succeeded"});
    assert_eq!(shown(&usage("", "pods", &p, 0)), "count/pods=1");
    let mut p = pod(json!({"cpu": "1"}), json!({}));
    p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    let at = "2026-01-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second();
    assert!(usage("", "pods", &p, at + 10).contains_key("cpu"));
    assert!(!usage("", "pods", &p, at + 31).contains_key("cpu"));
}

#[test]
fn init_containers_and_sidecars_raise_the_effective_request() {
    let p = json!({"spec": {
        "initContainers": [
            {"name": "init", "resources": {"requests": {"cpu": "2"}}},
            {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
        ],
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}],
        "overhead": {"cpu": "10m"},
    }});
    // max(1 + 0.1 sidecar, 2 init) + overhead
    assert_eq!(usage("", "pods", &p, 0)["requests.cpu"].to_string(), "2010m");
}

#[test]
fn services_count_node_ports_and_load_balancers() {
    let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
    assert_eq!(
        shown(&usage("", "services", &lb, 0)),
        "count/services=1,services=1,services.loadbalancers=1,services.nodeports=2"
    );
    let np = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
    assert_eq!(shown(&usage("", "services", &np, 0)), "count/services=1,services=1,services.nodeports=1");
}

#[test]
fn claims_count_storage_per_class() {
    let pvc = json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1Gi"}}}});
    assert_eq!(
        shown(&usage("", "persistentvolumeclaims", &pvc, 0)),
        "count/persistentvolumeclaims=1,gold.storageclass.storage.k8s.io/persistentvolumeclaims=1,\
         gold.storageclass.storage.k8s.io/requests.storage=1Gi,persistentvolumeclaims=1,requests.storage=1Gi"
    );
}

#[test]
fn resource_names_map_to_the_kinds_they_count() {
    assert_eq!(kind_of("requests.storage"), Some((String::new(), "persistentvolumeclaims".into())));
    assert_eq!(kind_of("requests.cpu"), Some((String::new(), "pods".into())));
    assert_eq!(kind_of("requests.example.com/dongle"), Some((String::new(), "pods".into())));
    assert_eq!(kind_of("count/replicasets.apps"), Some(("apps".into(), "replicasets".into())));
    assert_eq!(kind_of("secrets"), Some((String::new(), "secrets".into())));
    assert_eq!(kind_of("services.nodeports"), Some((String::new(), "services".into())));
    assert_eq!(kind_of("bogus"), None);
}

#[test]
fn used_is_zero_for_every_tracked_name_and_sums_matching_objects() {
    let q = quota(json!({"pods": "5", "cpu": "1", "secrets": "10", "count/widgets.example.com": "1"}), None);
    let pods = vec![pod(json!({"cpu": "250m"}), json!({})), pod(json!({"cpu": "500m"}), json!({}))];
    let used = calculate_used(
        &q,
        &mut |kind| match kind.1.as_str() {
            "pods" => Some(pods.clone()),
            "secrets" => Some(Vec::new()),
            _ => None,
        },
        0,
    );
    assert_eq!(shown(&used), "cpu=750m,pods=2,secrets=0");
}

#[test]
fn scoped_quotas_count_only_pods_within_the_scope() {
    let mut q = quota(json!({"pods": "5"}), None);
    q["spec"]["scopes"] = json!(["BestEffort"]);
    let pods = vec![pod(json!({}), json!({})), pod(json!({"cpu": "1"}), json!({}))];
    let used = calculate_used(&q, &mut |_| Some(pods.clone()), 0);
    assert_eq!(shown(&used), "pods=1");
    let mut q = quota(json!({"pods": "5"}), None);
    q["spec"]["scopeSelector"] =
        json!({"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["gold"]}]});
    let mut gold = pod(json!({}), json!({}));
    gold["spec"]["priorityClassName"] = json!("gold");
    let used = calculate_used(&q, &mut |_| Some(vec![gold.clone(), pod(json!({}), json!({}))]), 0);
    assert_eq!(shown(&used), "pods=1");
}

#[test]
fn a_create_over_the_quota_is_refused_with_upstreams_message() {
    let q = quota(
        json!({"cpu": "1", "memory": "500Mi", "pods": "5"}),
        Some(json!({"cpu": "500m", "memory": "252Mi", "pods": "1"})),
    );
    let p = pod(json!({"cpu": "600m", "memory": "100Mi"}), json!({}));
    let refused = admit(std::slice::from_ref(&q), "", "pods", Operation::Create, &p, None, 0).unwrap_err();
    assert_eq!(refused, "exceeded quota: test-quota, requested: cpu=600m, used: cpu=500m, limited: cpu=1");
    let p = pod(json!({"cpu": "100m", "memory": "100Mi"}), json!({}));
    let charged = admit(&[q], "", "pods", Operation::Create, &p, None, 0).unwrap();
    assert_eq!(charged.len(), 1);
    assert_eq!(shown(&charged[0].1), "cpu=600m,memory=352Mi,pods=2");
}

#[test]
fn quotas_on_cpu_require_every_container_to_state_it() {
    let q = quota(json!({"cpu": "1", "limits.memory": "1Gi"}), Some(json!({"cpu": "0", "limits.memory": "0"})));
    let refused = admit(&[q], "", "pods", Operation::Create, &pod(json!({}), json!({})), None, 0).unwrap_err();
    assert_eq!(refused, "failed quota: test-quota: must specify cpu for: c; limits.memory for: c");
}

#[test]
fn a_quota_without_usage_refuses_until_calculated_and_one_without_status_is_ignored() {
    let mut q = quota(json!({"secrets": "1"}), Some(json!({})));
    let secret = json!({"metadata": {"name": "s"}});
    assert_eq!(
        admit(std::slice::from_ref(&q), "", "secrets", Operation::Create, &secret, None, 0).unwrap_err(),
        "status unknown for quota: test-quota, resources: secrets"
    );
    q.as_object_mut().unwrap().remove("status");
    assert_eq!(admit(&[q], "", "secrets", Operation::Create, &secret, None, 0).unwrap(), vec![]);
}

#[test]
fn service_updates_are_charged_by_their_increase() {
    let q = quota(json!({"services.loadbalancers": "1"}), Some(json!({"services.loadbalancers": "1"})));
    let old = json!({"metadata": {"resourceVersion": "5"}, "spec": {"type": "ClusterIP", "ports": []}});
    let new = json!({"metadata": {"resourceVersion": "5"}, "spec": {"type": "LoadBalancer", "ports": []}});
    assert!(admit(std::slice::from_ref(&q), "", "services", Operation::Update, &new, Some(&old), 0).is_err());
    // A pod update is never charged.
    assert_eq!(admit(&[q], "", "pods", Operation::Update, &new, Some(&old), 0).unwrap(), vec![]);
}
