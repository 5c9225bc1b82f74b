//! API behaviour that real clients rely on, checked through kubectl against `vkube up` (a virtual
//! cluster with its syncer on the simulated host): each test is one difference from
//! kube-apiserver that a client's own test suite found.

mod common;

use common::Up;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  selector: {app: db}
  ports:
  - port: 5432
"#;

/// A `create` of a Service that already exists answers 409 and changes nothing on either side: the
/// host service the existing one uses is not released and the virtual service stays.
#[test]
fn creating_an_existing_service_again_changes_nothing() {
    let Up { up, k, host, dir: _dir, _home } = Up::start();
    let created = k.output_with_stdin(&["create", "-f", "-"], SERVICE);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let host_uid =
        || host.ok(&["get", "service", "db-x-default-x-vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.metadata.uid}"]);
    let before = (k.ok(&["get", "service", "db", "-o", "jsonpath={.metadata.uid} {.spec.clusterIP}"]), host_uid());

    let again = k.output_with_stdin(&["create", "-f", "-"], SERVICE);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains(r#"services "db" already exists"#), "{stderr}");
    // A server-side dry run says the same.
    let dry = k.output_with_stdin(&["create", "--dry-run=server", "-f", "-"], SERVICE);
    assert!(String::from_utf8_lossy(&dry.stderr).contains("already exists"));

    // The host copy is the same object (not released, not re-created), the virtual one too.
    assert_eq!(host_uid(), before.1, "the host service survived the failed create");
    let after = (k.ok(&["get", "service", "db", "-o", "jsonpath={.metadata.uid} {.spec.clusterIP}"]), host_uid());
    assert_eq!(after, before, "both sides unchanged");
    assert!(up.stop().success());
}

/// `kubectl logs POD` of a one-container pod reads that container (kube-apiserver fills in the
/// only container's name), and `-f` streams while the pod runs and ends when it goes away.
#[test]
fn logs_default_to_the_only_container_and_follow_until_the_pod_stops() {
    use std::io::{BufRead, BufReader};
    let Up { up, k, dir: _dir, _home, .. } = Up::start();
    k.ok(&["run", "web", "--image=nginx:1.27"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let raw = k.ok(&["get", "--raw", "/api/v1/namespaces/default/pods/web/log"]);
    assert!(raw.contains("simulated container web "), "the only container is meant: {raw}");

    let mut follow = k.command(&["logs", "-f", "web"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    // Two lines at start, then one a second while the pod runs.
    let seen: Vec<String> = lines.by_ref().take(4).map(Result::unwrap).collect();
    assert!(seen[3].contains("simulated container web is running (2)"), "{seen:#?}");
    k.ok(&["delete", "pod", "web", "--wait=false"]);
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rest = lines.count();
        let _ = done.send((rest, follow.wait().unwrap()));
    });
    let (_, status) = finished.recv_timeout(std::time::Duration::from_secs(30)).expect("logs -f ends with the pod");
    assert!(status.success(), "{status}");
    assert!(up.stop().success());
}

/// Bodies as kube-apiserver writes them: `kind`, `apiVersion`, `metadata` first, metadata in
/// ObjectMeta order, `Status` in metav1.Status order, a newline at the end; invalid objects named
/// with their group; a body over 3 MiB answered with 413, not a cut connection.
#[test]
fn responses_have_upstream_shape() {
    let Up { up, k, dir: _dir, _home, .. } = Up::start();
    k.ok(&["create", "configmap", "shape", "--from-literal=b=2", "--from-literal=a=1"]);
    let raw = k.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps/shape"]);
    assert!(
        raw.starts_with(
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"shape","namespace":"default","uid":""#
        ),
        "{raw}"
    );
    assert!(raw.contains(r#""creationTimestamp":"#) && raw.ends_with("}\n"), "{raw:?}");
    let list = k.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.name%3Dshape"]);
    assert!(list.starts_with(r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"#), "{list}");
    // kubectl -v=8 shows the raw response body.
    let missing = k.output(&["get", "--raw", "/api/v1/namespaces/default/configmaps/none", "-v=8"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"none\" not found","reason":"NotFound","details":{"name":"none","kind":"configmaps"},"code":404}"#),
        "{stderr}"
    );

    let invalid = k.output_with_stdin(
        &["create", "-f", "-", "-v=8"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n",
    );
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.contains(r#""message":"Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0""#),
        "{stderr}"
    );

    let big =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: {}\n", "x".repeat(4 << 20));
    let refused = k.output_with_stdin(&["create", "-f", "-"], &big);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Request entity too large"), "{stderr}");
    assert!(k.output(&["get", "configmap", "big"]).status.code() == Some(1), "nothing was stored");
    assert!(up.stop().success());
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: dns}
spec:
  selector: {matchLabels: {app: dns}}
  template:
    metadata: {labels: {app: dns}}
    spec:
      containers:
      - name: dns
        image: coredns:1.11
        ports:
        - containerPort: 8080
"#;

const WIDGETS: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              tags:
                type: array
                x-kubernetes-list-type: set
                items: {type: string}
              parts:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    size: {type: integer}
"#;

/// Server-side apply as upstream does it: defaults a create recorded are no conflict for an
/// apply of the same manifest; container ports are keyed by port and protocol; `set` and `map`
/// lists of custom resources merge between managers.
#[test]
fn server_side_apply_merges_lists_like_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = common::ApiServerProcess::start(&dir.path().join("state"), &[]);
    let k = common::Kubectl::new(33, &server.kubeconfig, home.path());

    // Created (the server defaults protocol: TCP), then applied unchanged: no conflict.
    assert!(k.output_with_stdin(&["create", "-f", "-"], DEPLOYMENT).status.success());
    let applied = k.output_with_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    // 53/UDP and 53/TCP are two ports.
    let both = DEPLOYMENT.replace(
        "        - containerPort: 8080\n",
        "        - {containerPort: 53, protocol: UDP, name: dns}\n        - {containerPort: 53, protocol: TCP, name: dns-tcp}\n",
    );
    let applied = k.output_with_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], &both);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let ports = k.ok(&[
        "get",
        "deployment",
        "dns",
        "-o",
        "jsonpath={range .spec.template.spec.containers[0].ports[*]}{.containerPort}/{.protocol} {end}",
    ]);
    // 8080 stays: kubectl-create still owns it (as on kube-apiserver).
    assert_eq!(ports.trim(), "8080/TCP 53/UDP 53/TCP");

    // A set and a map list of a custom resource, applied by two managers, hold both's items.
    assert!(k.output_with_stdin(&["apply", "-f", "-"], WIDGETS).status.success());
    common::wait_until(std::time::Duration::from_secs(10), "the widget type", || {
        k.output(&["get", "widgets"]).status.success()
    });
    let widget = |tag: &str, part: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w}}\nspec:\n  tags: [{tag}]\n  parts: [{{name: {part}, size: 1}}]\n"
        )
    };
    for (manager, tag, part) in [("alice", "red", "wheel"), ("bob", "blue", "door")] {
        let applied = k.output_with_stdin(
            &["apply", "--server-side", &format!("--field-manager={manager}"), "-f", "-"],
            &widget(tag, part),
        );
        assert!(applied.status.success(), "{manager}: {}", String::from_utf8_lossy(&applied.stderr));
    }
    let spec = k.ok(&["get", "widget", "w", "-o", "jsonpath={.spec.tags} {.spec.parts[*].name}"]);
    assert_eq!(spec, r#"["red","blue"] wheel door"#);
    // Each manager owns its own items: alice dropping hers removes only hers.
    let applied = k.output_with_stdin(
        &["apply", "--server-side", "--field-manager=alice", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {}\n",
    );
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let spec = k.ok(&["get", "widget", "w", "-o", "jsonpath={.spec.tags} {.spec.parts[*].name}"]);
    assert_eq!(spec, r#"["blue"] door"#);
    drop(server);
}

/// APIs clients call that kube-apiserver serves: componentstatuses, TokenReview, client
/// certificates through CertificateSigningRequests (`kubectl certificate approve`), APIService
/// objects (the local ones listed), and the pods/ephemeralcontainers and pods/resize subresources.
#[test]
fn apis_clients_call_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = common::ApiServerProcess::start(&dir.path().join("state"), &[]);
    let k = common::Kubectl::new(33, &server.kubeconfig, home.path());

    let statuses = k.ok(&["get", "componentstatuses", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(statuses, "controller-manager scheduler etcd-0");

    // TokenReview of a service account token (`vkube apiserver` alone runs no controllers: the
    // account is made here).
    k.ok(&["create", "serviceaccount", "default"]);
    let token = k.ok(&["create", "token", "default"]);
    let review = format!("apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {}\n", token.trim());
    let reviewed = k.output_with_stdin(
        &["create", "-f", "-", "-o", "jsonpath={.status.authenticated} {.status.user.username} {.status.user.extra.authentication\\.kubernetes\\.io/credential-id[0]}"],
        &review,
    );
    let reviewed = String::from_utf8_lossy(&reviewed.stdout).to_string();
    assert!(reviewed.starts_with("true system:serviceaccount:default:default JTI="), "{reviewed}");
    let bad = k.output_with_stdin(
        &["create", "-f", "-", "-o", "jsonpath={.status.authenticated}"],
        "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {token: nonsense}\n",
    );
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "false");
    // CertificateSigningRequests are listed by signer, as upstream's field selector allows.
    let by_signer = k.output(&["get", "csr", "--field-selector", "spec.signerName=example.com/none"]);
    assert!(by_signer.status.success(), "{}", String::from_utf8_lossy(&by_signer.stderr));

    // A client certificate: request, approve, use.
    let key = dir.path().join("jane.key");
    let csr = dir.path().join("jane.csr");
    let made = std::process::Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=jane/O=team-a", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let request = common::base64(&std::fs::read(&csr).unwrap());
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: jane}}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client\n  usages: [client auth]\n"
    );
    assert!(k.output_with_stdin(&["create", "-f", "-"], &manifest).status.success());
    assert!(k.ok(&["get", "csr", "jane"]).contains("Pending"));
    k.ok(&["certificate", "approve", "jane"]);
    let certificate = k.ok(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]);
    assert!(!certificate.is_empty(), "the approved request is signed at once");
    assert!(k.ok(&["get", "csr", "jane"]).contains("Approved,Issued"));
    let certificate_file = dir.path().join("jane.crt");
    std::fs::write(&certificate_file, common::base64_decode(&certificate)).unwrap();
    let jane = dir.path().join("jane.kubeconfig");
    std::fs::copy(&server.kubeconfig, &jane).unwrap();
    let jane_k = common::Kubectl::new(33, &jane, home.path());
    jane_k.ok(&[
        "config",
        "set-credentials",
        "jane",
        "--client-certificate",
        certificate_file.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
        "--embed-certs",
    ]);
    jane_k.ok(&["config", "set-context", "--current", "--user", "jane"]);
    let whoami = jane_k.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
    assert!(whoami.starts_with("jane [\"team-a\""), "{whoami}");

    // APIService objects: the local ones, and a tenant's own (AlreadyExists the second time).
    let services = k.ok(&["get", "apiservices", "-o", "name"]);
    for local in ["apiservice.apiregistration.k8s.io/v1.", "apiservice.apiregistration.k8s.io/v1.apps"] {
        assert!(services.lines().any(|l| l == local), "{local} in {services}");
    }
    let wardle = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1alpha1.wardle.k8s.io}\nspec: {group: wardle.k8s.io, version: v1alpha1, groupPriorityMinimum: 1000, versionPriority: 15, insecureSkipTLSVerify: true, service: {name: api, namespace: wardle}}\n";
    assert!(k.output_with_stdin(&["create", "-f", "-"], wardle).status.success());
    let again = k.output_with_stdin(&["create", "-f", "-"], wardle);
    assert!(String::from_utf8_lossy(&again.stderr).contains("AlreadyExists"));

    // Subresources of pods: ephemeral containers are added (never removed); resize changes
    // resources only.
    k.ok(&["run", "web", "--image=nginx:1.27"]);
    k.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=ephemeralcontainers",
        "--type=strategic",
        "-p",
        r#"{"spec":{"ephemeralContainers":[{"name":"debugger","image":"busybox:1.36","stdin":true,"tty":true}]}}"#,
    ]);
    assert_eq!(k.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.ephemeralContainers[0].name}"]), "debugger");
    let removed = k.output(&[
        "patch",
        "pod",
        "web",
        "--subresource=ephemeralcontainers",
        "--type=merge",
        "-p",
        r#"{"spec":{"ephemeralContainers":[]}}"#,
    ]);
    assert!(String::from_utf8_lossy(&removed.stderr).contains("may not be changed or removed"));
    k.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=resize",
        "-p",
        r#"{"spec":{"containers":[{"name":"web","resources":{"requests":{"cpu":"250m"}}}]}}"#,
    ]);
    assert_eq!(k.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.containers[0].resources.requests.cpu}"]), "250m");
    drop(server);
}
