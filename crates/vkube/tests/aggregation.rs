//! The aggregation layer: an extension API server a tenant installs (the upstream sample API
//! server, as the simulated kubelet runs its image) registered with an `APIService` becomes part
//! of the virtual cluster's API, through kubectl, on both hosts.

#[macro_use]
mod common;

use std::time::Duration;

use common::{VirtualCluster, wait_until};

const WARDLE: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: wardle}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: sample-apiserver, namespace: wardle}
spec:
  replicas: 1
  selector: {matchLabels: {apiserver: "true"}}
  template:
    metadata: {labels: {apiserver: "true"}}
    spec:
      containers:
      - name: sample-apiserver
        image: registry.k8s.io/e2e-test-images/sample-apiserver:1.29.2
        ports: [{containerPort: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: wardle}
spec:
  selector: {apiserver: "true"}
  ports: [{port: 7443, targetPort: 443}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1alpha1.wardle.example.com}
spec:
  group: wardle.example.com
  version: v1alpha1
  groupPriorityMinimum: 2000
  versionPriority: 200
  insecureSkipTLSVerify: true
  service: {namespace: wardle, name: api, port: 7443}
"#;

const FLUNDER: &str = r#"apiVersion: wardle.example.com/v1alpha1
kind: Flunder
metadata: {name: f1, labels: {team: a}}
spec: {reference: x}
"#;

on_both_hosts! {
fn an_extension_api_server_serves_its_group_through_the_virtual_cluster(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let k = &cluster.k;
    let applied = k.output_with_stdin(&["apply", "-f", "-"], WARDLE);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let condition = |field: &str| {
        k.ok(&["get", "apiservice", "v1alpha1.wardle.example.com", "-o",
            &format!("jsonpath={{.status.conditions[?(@.type=='Available')].{field}}}")])
    };
    wait_until(Duration::from_secs(60), "the APIService to be available", || condition("status") == "True");
    assert_eq!(condition("reason"), "Passed");
    let resources = k.ok(&["api-resources", "--api-group=wardle.example.com", "--no-headers"]);
    assert!(resources.starts_with("flunders ") && resources.contains("Flunder"), "discovery lists it: {resources}");

    // Plain kubectl against the extension server.
    let created = k.output_with_stdin(&["create", "-f", "-"], FLUNDER);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let again = k.output_with_stdin(&["create", "-f", "-"], FLUNDER);
    assert!(String::from_utf8_lossy(&again.stderr).contains("flunders.wardle.example.com \"f1\" already exists"));
    assert_eq!(k.ok(&["get", "flunders", "-o", "jsonpath={.items[*].metadata.name}"]), "f1");
    k.ok(&["patch", "flunder", "f1", "--type=merge", "-p", r#"{"spec":{"reference":"y"}}"#]);
    assert_eq!(k.ok(&["get", "flunder", "f1", "-o", "jsonpath={.spec.reference}"]), "y");
    k.ok(&["delete", "flunder", "f1"]);
    let gone = k.fails(&["get", "flunder", "f1"]);
    assert!(gone.contains("flunders.wardle.example.com \"f1\" not found"), "{gone}");

    // This server authorizes before proxying.
    let refused = k.fails(&["get", "flunders", "--as", "alice"]);
    assert!(
        refused.contains("User \"alice\" cannot list resource \"flunders\" in API group \"wardle.example.com\""),
        "{refused}"
    );

    // No endpoints: unavailable with upstream's reason, requests 503.
    k.ok(&["scale", "deployment", "sample-apiserver", "-n", "wardle", "--replicas=0"]);
    wait_until(Duration::from_secs(60), "the APIService to be unavailable", || condition("status") == "False");
    assert_eq!(condition("reason"), "MissingEndpoints");
    assert_eq!(condition("message"), "endpoints for service/api in \"wardle\" have no addresses with port name \"\"");
    let unavailable = k.fails(&["get", "flunders"]);
    assert!(unavailable.contains("ServiceUnavailable"), "{unavailable}");
    k.ok(&["scale", "deployment", "sample-apiserver", "-n", "wardle", "--replicas=1"]);
    wait_until(Duration::from_secs(60), "the APIService to be available again", || condition("status") == "True");
    assert_eq!(k.ok(&["get", "flunders", "-o", "jsonpath={.items[*].metadata.name}"]), "", "a new pod's store");

    // A serving certificate nothing vouches for is refused.
    k.ok(&["patch", "apiservice", "v1alpha1.wardle.example.com", "--type=merge", "-p",
        r#"{"spec":{"insecureSkipTLSVerify":false}}"#]);
    wait_until(Duration::from_secs(30), "the check to fail", || condition("status") == "False");
    assert_eq!(condition("reason"), "FailedDiscoveryCheck");
    assert!(condition("message").contains("failing or missing response from https://api.wardle.svc:7443/apis/wardle.example.com/v1alpha1"));
    k.ok(&["delete", "apiservice", "v1alpha1.wardle.example.com"]);
    wait_until(Duration::from_secs(30), "the group to leave discovery", || {
        k.ok(&["api-resources", "--api-group=wardle.example.com", "--no-headers"]).is_empty()
    });
}
}
