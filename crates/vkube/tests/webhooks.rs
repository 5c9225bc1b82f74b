//! Admission webhooks a tenant installs: a webhook server running in the virtual cluster (the
//! conformance suite's `agnhost webhook`, as the simulated kubelet runs it) behind a service,
//! registered with Validating/MutatingWebhookConfigurations whose `caBundle` trusts its
//! certificate. Writes and deletes are refused, objects mutated, and a webhook that cannot be
//! reached fails closed or open as its `failurePolicy` says, through kubectl, on both hosts.

#[macro_use]
mod common;

use std::time::Duration;

use base64::Engine;
use common::{VirtualCluster, wait_until};

/// A CA and a serving certificate for `e2e-test-webhook.webhooks.svc`: (CA PEM, cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["e2e-test-webhook.webhooks.svc".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn server(cert: &str, key: &str) -> String {
    server_running(cert, key, "webhook")
}

/// The webhook server's namespace, secret, deployment (`agnhost <subcommand>`) and service.
fn server_running(cert: &str, key: &str, subcommand: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: webhooks}}
---
apiVersion: v1
kind: Secret
metadata: {{name: serving, namespace: webhooks}}
data: {{tls.crt: {cert}, tls.key: {key}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: webhook, namespace: webhooks}}
spec:
  replicas: 1
  selector: {{matchLabels: {{webhook: "true"}}}}
  template:
    metadata: {{labels: {{webhook: "true"}}}}
    spec:
      containers:
      - name: webhook
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [{subcommand}, --tls-cert-file=/certs/tls.crt, --tls-private-key-file=/certs/tls.key, --port=8444]
        ports: [{{containerPort: 8444}}]
        volumeMounts: [{{name: certs, mountPath: /certs, readOnly: true}}]
      volumes: [{{name: certs, secret: {{secretName: serving}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: e2e-test-webhook, namespace: webhooks}}
spec:
  selector: {{webhook: "true"}}
  ports: [{{port: 8443, targetPort: 8444}}]
"#,
        cert = b64(cert),
        key = b64(key),
    )
}

fn hook(name: &str, path: &str, ca: &str, operations: &str, resources: &str, failure: &str) -> String {
    hook_in_group(name, path, ca, operations, "\"\"", resources, failure)
}

fn hook_in_group(
    name: &str,
    path: &str,
    ca: &str,
    operations: &str,
    group: &str,
    resources: &str,
    failure: &str,
) -> String {
    format!(
        r#"- name: {name}
  clientConfig:
    service: {{namespace: webhooks, name: e2e-test-webhook, path: {path}, port: 8443}}
    caBundle: {ca}
  rules: [{{operations: [{operations}], apiGroups: [{group}], apiVersions: [v1], resources: [{resources}]}}]
  namespaceSelector: {{matchLabels: {{tenant: checked}}}}
  failurePolicy: {failure}
  sideEffects: None
  admissionReviewVersions: [v1, v1beta1]
  timeoutSeconds: 5
"#,
        ca = b64(ca)
    )
}

on_both_hosts! {
fn webhooks_refuse_mutate_and_fail_as_their_policy_says(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let k = &cluster.k;
    let (ca, cert, key) = certificates();
    let applied = k.output_with_stdin(&["apply", "-f", "-"], &server(&cert, &key));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    k.ok(&["create", "namespace", "checked"]);
    k.ok(&["label", "namespace", "checked", "tenant=checked"]);
    wait_until(Duration::from_secs(60), "the webhook's endpoints", || {
        !k.ok(&["get", "endpoints", "-n", "webhooks", "e2e-test-webhook", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]).is_empty()
    });

    let validating = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: deny}}\nwebhooks:\n{}",
        hook("deny-configmaps.example.com", "/configmaps", &ca, "CREATE, UPDATE, DELETE", "configmaps", "Fail")
    );
    let mutating = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: mutate}}\nwebhooks:\n{}{}",
        hook("first.example.com", "/mutating-configmaps", &ca, "CREATE", "configmaps", "Fail"),
        hook("second.example.com", "/mutating-configmaps", &ca, "CREATE", "configmaps", "Fail")
    );
    for configuration in [&validating, &mutating] {
        let applied = k.output_with_stdin(&["apply", "-f", "-"], configuration);
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    }

    // A refused create names the webhook and its reason; nothing is stored.
    let refused = wait_until_some(|| {
        let out = k.output(&["create", "configmap", "bad", "-n", "checked", "--from-literal=webhook-e2e-test=webhook-disallow"]);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    assert!(
        refused.contains("admission webhook \"deny-configmaps.example.com\" denied the request: the configmap contains unwanted key and value"),
        "{refused}"
    );
    assert!(k.fails(&["get", "configmap", "bad", "-n", "checked"]).contains("not found"));
    // Outside the selected namespaces nothing is called.
    k.ok(&["create", "configmap", "free", "--from-literal=webhook-e2e-test=webhook-disallow"]);

    // Two mutating webhooks in a row: the second sees what the first added.
    k.ok(&["create", "configmap", "staged", "-n", "checked", "--from-literal=mutation-start=yes"]);
    let data = k.ok(&["get", "configmap", "staged", "-n", "checked", "-o", "jsonpath={.data}"]);
    assert!(data.contains("\"mutation-stage-1\":\"yes\"") && data.contains("\"mutation-stage-2\":\"yes\""), "{data}");

    // A custom resource mutated the same way keeps only what its schema declares: the second
    // webhook's field is pruned, as kube-apiserver decodes a webhook's answer.
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: stages.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: stages, singular: stage, kind: Stage}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          data:\n            type: object\n            properties:\n              mutation-start: {type: string}\n              mutation-stage-1: {type: string}\n";
    let applied = k.output_with_stdin(&["apply", "-f", "-"], crd);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    k.ok(&["wait", "--for=condition=Established", "crd/stages.example.com", "--timeout=30s"]);
    let stages = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: mutate-stages}}\nwebhooks:\n{}{}",
        hook_in_group("stage-1.example.com", "/mutating-custom-resource", &ca, "CREATE", "example.com", "stages", "Fail"),
        hook_in_group("stage-2.example.com", "/mutating-custom-resource", &ca, "CREATE", "example.com", "stages", "Fail")
    );
    let applied = k.output_with_stdin(&["apply", "-f", "-"], &stages);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let stage = "apiVersion: example.com/v1\nkind: Stage\nmetadata: {name: s1, namespace: checked}\ndata: {mutation-start: \"yes\"}\n";
    let data = wait_until_some(|| {
        let created = k.output_with_stdin(&["create", "-f", "-", "-o", "jsonpath={.data}"], stage);
        let data = String::from_utf8_lossy(&created.stdout).into_owned();
        // Until the configuration takes effect the object passes unmutated: try again.
        if data.contains("mutation-stage-1") {
            return Some(data);
        }
        let _ = k.output(&["delete", "stage", "s1", "-n", "checked"]);
        None
    });
    assert_eq!(data, r#"{"mutation-stage-1":"yes","mutation-start":"yes"}"#);

    // Deletes pass the validating webhook with the old object.
    k.ok(&["create", "configmap", "keep", "-n", "checked", "--from-literal=webhook-e2e-test=webhook-nondeletable"]);
    let kept = k.fails(&["delete", "configmap", "keep", "-n", "checked"]);
    assert!(kept.contains("the configmap cannot be deleted because it contains unwanted key and value"), "{kept}");
    assert_eq!(k.ok(&["get", "configmap", "keep", "-n", "checked", "-o", "name"]).trim(), "configmap/keep");

    // An unreachable webhook fails the write closed (500) or lets it through (Ignore).
    k.ok(&["delete", "mutatingwebhookconfiguration", "mutate"]);
    k.ok(&["scale", "deployment", "webhook", "-n", "webhooks", "--replicas=0"]);
    wait_until(Duration::from_secs(60), "the webhook's endpoints gone", || {
        k.ok(&["get", "endpoints", "-n", "webhooks", "e2e-test-webhook", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]).is_empty()
    });
    let closed = wait_until_some(|| {
        let out = k.output(&["create", "configmap", "closed", "-n", "checked"]);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && !said.contains("first.example.com")).then_some(said)
    });
    assert!(closed.contains("Internal error occurred: failed calling webhook \"deny-configmaps.example.com\""), "{closed}");
    k.ok(&["patch", "validatingwebhookconfiguration", "deny", "--type=json", "-p",
        r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#]);
    wait_until(Duration::from_secs(10), "the write to pass the failing-open webhook", || {
        k.output(&["create", "configmap", "open", "-n", "checked"]).status.success()
    });
}
}

/// Retries `attempt` (webhook configurations take effect a moment after they are written).
fn wait_until_some<T>(mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for the webhook to refuse");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A CRD whose two versions differ in shape (v1 `hostPort: "host:port"`, v2 `host` and `port`)
/// with `conversion.strategy: Webhook` naming the webhook service; `storage` is the version
/// objects are stored at.
fn converted_crd(ca: &str, storage: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: targets.stable.example.com}}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {{plural: targets, singular: target, kind: Target}}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1, v1beta1]
      clientConfig:
        service: {{namespace: webhooks, name: e2e-test-webhook, path: /crdconvert, port: 8443}}
        caBundle: {ca}
  versions:
  - name: v1
    served: true
    storage: {v1}
    schema: {{openAPIV3Schema: {{type: object, properties: {{hostPort: {{type: string}}}}}}}}
  - name: v2
    served: true
    storage: {v2}
    schema: {{openAPIV3Schema: {{type: object, properties: {{host: {{type: string}}, port: {{type: string}}}}}}}}
"#,
        ca = b64(ca),
        v1 = storage == "v1",
        v2 = storage == "v2",
    )
}

on_both_hosts! {
/// Conversion webhooks (the conformance suite's `agnhost crd-conversion-webhook`): an object
/// written at one version is read, listed and watched at the other as the webhook converts it;
/// writes at a version other than the storage version are stored converted; a failing
/// conversion is an error naming the webhook's reason.
fn conversion_webhooks_convert_custom_resources_between_versions(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let k = &cluster.k;
    let (ca, cert, key) = certificates();
    let applied = k.output_with_stdin(&["apply", "-f", "-"], &server_running(&cert, &key, "crd-conversion-webhook"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    wait_until(Duration::from_secs(60), "the webhook's endpoints", || {
        !k.ok(&["get", "endpoints", "-n", "webhooks", "e2e-test-webhook", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]).is_empty()
    });
    let applied = k.output_with_stdin(&["apply", "-f", "-"], &converted_crd(&ca, "v1"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    k.ok(&["wait", "--for=condition=Established", "crd/targets.stable.example.com", "--timeout=30s"]);
    let create = |version: &str, name: &str, fields: &str| {
        let object = format!("{{\"apiVersion\": \"stable.example.com/{version}\", \"kind\": \"Target\", \"metadata\": {{\"name\": \"{name}\"}}, {fields}}}");
        k.output_with_stdin(&["create", "-f", "-"], &object)
    };
    let read = |version: &str, name: &str| -> serde_json::Value {
        serde_json::from_str(&k.ok(&["get", &format!("targets.{version}.stable.example.com"), name, "-o", "json"])).unwrap()
    };
    let created = create("v1", "t1", r#""hostPort": "localhost:8080""#);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let v2 = read("v2", "t1");
    assert_eq!(v2["apiVersion"], "stable.example.com/v2");
    assert_eq!((v2["host"].as_str(), v2["port"].as_str()), (Some("localhost"), Some("8080")));
    assert!(v2.get("hostPort").is_none(), "{v2}");

    // Written at v2, stored at v1: read back at v1 in v1's shape.
    let created = create("v2", "t2", r#""host": "example.org", "port": "443""#);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert_eq!(read("v1", "t2")["hostPort"], "example.org:443");

    // The storage version moves to v2; a v1 write is stored at v2. Lists at either version
    // hold every object, each converted as needed.
    let applied = k.output_with_stdin(&["apply", "-f", "-"], &converted_crd(&ca, "v2"));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    wait_until(Duration::from_secs(10), "a v1 write after the storage change", || {
        create("v1", "t3", r#""hostPort": "b:2""#).status.success()
    });
    let host_ports = k.ok(&["get", "targets.v1.stable.example.com", "-o", "jsonpath={.items[*].hostPort}"]);
    assert_eq!(host_ports, "localhost:8080 example.org:443 b:2");
    let hosts = k.ok(&["get", "targets.v2.stable.example.com", "-o", "jsonpath={.items[*].host} {.items[*].port}"]);
    assert_eq!(hosts, "localhost example.org b 8080 443 2");
    let watched = k.output(&["get", "targets.v2.stable.example.com", "--watch", "--request-timeout=3s", "-o", "jsonpath={.host}:{.port} "]);
    assert_eq!(String::from_utf8_lossy(&watched.stdout).trim(), "localhost:8080 example.org:443 b:2", "a watch sees converted objects");

    // The webhook refuses what it cannot convert: the write fails with its reason, nothing stored.
    let refused = create("v1", "bad", r#""hostPort": "nocolon""#);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("conversion webhook for stable.example.com/v1, Kind=Target failed: invalid hostPort value `nocolon`"), "{said}");
    assert!(k.fails(&["get", "targets.v1.stable.example.com", "bad"]).contains("not found"));
}
}
