//! kubectl 1.27, 1.30 and 1.33 (the real binaries) against `vkube apiserver`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::{ApiServerProcess, Kubectl, wait_until};

const MANIFEST: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  color: blue
  size: "1"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        env: [{name: MODE, value: one}]
      - name: sidecar
        image: busybox:1.36
"#;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color: {type: string}
"#;

fn scenario(minor: u32) {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = ApiServerProcess::start(&dir.path().join("state"), &["--minor", &minor.to_string()]);
    let k = Kubectl::new(minor, &server.kubeconfig, home.path());
    let manifest = dir.path().join("app.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let manifest = manifest.to_str().unwrap();

    // Discovery and OpenAPI.
    let resources = k.ok(&["api-resources"]);
    for expected in ["deployments", "configmaps", "customresourcedefinitions", "leases"] {
        assert!(resources.contains(expected), "api-resources lists {expected}:\n{resources}");
    }
    let explained = k.ok(&["explain", "deployment.spec.replicas"]);
    assert!(explained.contains("replicas"), "{explained}");

    // create, then get in several shapes.
    let created = k.ok(&["create", "-f", manifest]);
    assert!(
        created.contains("configmap/settings created") && created.contains("deployment.apps/web created"),
        "{created}"
    );
    let table = k.ok(&["get", "deployments"]);
    assert!(table.starts_with("NAME") && table.contains("READY") && table.contains("UP-TO-DATE"), "{table}");
    let wide = k.ok(&["get", "deployment", "web", "-o", "wide"]);
    assert!(wide.contains("nginx:1.27,busybox:1.36") && wide.contains("app=web"), "{wide}");
    let yaml = k.ok(&["get", "configmap", "settings", "-o", "yaml"]);
    assert!(yaml.contains("color: blue") && yaml.contains("resourceVersion:"), "{yaml}");
    let duplicate = k.fails(&["create", "-f", manifest]);
    assert!(duplicate.contains("AlreadyExists"), "{duplicate}");

    // Unknown fields: an error by default (fieldValidation=Strict), a warning when asked.
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndatta:\n  a: b\n").unwrap();
    let strict = k.fails(&["create", "-f", typo.to_str().unwrap()]);
    assert!(strict.contains(r#"unknown field \"datta\""#) || strict.contains(r#"unknown field "datta""#), "{strict}");
    let warned = k.output(&["create", "--validate=warn", "-f", typo.to_str().unwrap()]);
    assert!(warned.status.success(), "{}", String::from_utf8_lossy(&warned.stderr));
    assert!(
        String::from_utf8_lossy(&warned.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&warned.stderr)
    );
    assert_eq!(k.ok(&["get", "cm", "typo", "-o", "jsonpath={.datta}"]), "", "the unknown field was dropped");

    // apply three times with edits: client-side three-way merge on built-in kinds.
    k.ok(&["apply", "-f", manifest]);
    let edited = MANIFEST.replace("nginx:1.27", "nginx:1.28").replace("size: \"1\"", "size: \"2\"");
    std::fs::write(manifest, &edited).unwrap();
    k.ok(&["apply", "-f", manifest]);
    let edited = edited.replace("  color: blue\n", "").replace("value: one", "value: two");
    std::fs::write(manifest, &edited).unwrap();
    k.ok(&["apply", "-f", manifest]);
    let data = k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data}"]);
    assert_eq!(data, r#"{"size":"2"}"#, "color was removed by the third apply");
    let images = k.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image} {.spec.template.spec.containers[0].env[0].value}",
    ]);
    assert_eq!(images, "nginx:1.28 busybox:1.36 two", "containers merged by name, not replaced");

    // diff: no change, then a change.
    let same = k.output(&["diff", "-f", manifest]);
    assert_eq!(same.status.code(), Some(0), "no diff expected: {}", String::from_utf8_lossy(&same.stdout));
    std::fs::write(manifest, edited.replace("replicas: 2", "replicas: 3")).unwrap();
    let changed = k.output(&["diff", "-f", manifest]);
    assert_eq!(changed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&changed.stdout).contains("+  replicas: 3"));
    assert_eq!(k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "2", "diff persists nothing");

    // label, annotate, the three patch types, scale.
    k.ok(&["label", "cm", "settings", "tier=front"]);
    k.ok(&["annotate", "cm", "settings", "owner=team-a"]);
    k.ok(&["patch", "cm", "settings", "--type=merge", "-p", r#"{"data":{"merged":"yes"}}"#]);
    k.ok(&["patch", "cm", "settings", "--type=json", "-p", r#"[{"op":"add","path":"/data/json","value":"yes"}]"#]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.37"}]}}}}"#,
    ]);
    let labelled = k.ok(&[
        "get",
        "cm",
        "settings",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner} {.data.merged} {.data.json}",
    ]);
    assert_eq!(labelled, "front team-a yes yes");
    let images = k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].image}"]);
    assert_eq!(images, "nginx:1.28 busybox:1.37", "strategic merge patch kept the other container");
    k.ok(&["scale", "deploy", "web", "--replicas=5"]);
    assert_eq!(k.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "5");

    // server-side apply of a new object, then with a conflict forced through.
    let ssa = dir.path().join("ssa.yaml");
    std::fs::write(&ssa, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  k: v1\n").unwrap();
    let out = k.ok(&["apply", "--server-side", "-f", ssa.to_str().unwrap()]);
    assert!(out.contains("serverside-applied"), "{out}");
    k.ok(&["patch", "cm", "ssa", "--type=merge", "-p", r#"{"data":{"k":"other"}}"#]);
    let conflict = k.fails(&["apply", "--server-side", "-f", ssa.to_str().unwrap()]);
    assert!(conflict.contains("conflict"), "{conflict}");
    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", ssa.to_str().unwrap()]);
    assert_eq!(k.ok(&["get", "cm", "ssa", "-o", "jsonpath={.data.k}"]), "v1");

    // edit with a scripted editor.
    let editor = dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/size: \"2\"/size: \"edited\"/' \"$1\"\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&editor).status().unwrap();
    let output = k.command(&["edit", "cm", "settings"]).env("KUBE_EDITOR", &editor).output().unwrap();
    assert!(output.status.success(), "edit: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.size}"]), "edited");

    // Service account tokens: issued by TokenRequest, accepted while the account exists.
    k.ok(&["create", "serviceaccount", "robot"]);
    let token = k.ok(&["create", "token", "robot"]).trim().to_string();
    let ca = dir.path().join("ca.pem");
    let ca_data =
        k.ok(&["config", "view", "--raw", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}"]);
    std::fs::write(&ca, common::base64_decode(&ca_data)).unwrap();
    let server_url = k.ok(&["config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    let as_robot = |args: &[&str]| {
        let mut full = vec![
            "--kubeconfig=/dev/null",
            "--server",
            &server_url,
            "--certificate-authority",
            ca.to_str().unwrap(),
            "--token",
            &token,
        ];
        full.extend_from_slice(args);
        k.output(&full)
    };
    let whoami = as_robot(&["auth", "whoami"]);
    assert!(
        String::from_utf8_lossy(&whoami.stdout).contains("system:serviceaccount:default:robot"),
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    // A service account with no bindings may read nothing; a RoleBinding to `view` lets it.
    let refused = as_robot(&["get", "cm", "settings"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "configmaps \"settings\" is forbidden: User \"system:serviceaccount:default:robot\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\""
        ),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    k.ok(&["create", "rolebinding", "robot-view", "--clusterrole=view", "--serviceaccount=default:robot"]);
    let allowed = as_robot(&["get", "cm", "settings"]);
    assert!(allowed.status.success(), "{}", String::from_utf8_lossy(&allowed.stderr));
    k.ok(&["delete", "serviceaccount", "robot"]);
    let rejected = as_robot(&["get", "cm", "settings"]);
    assert!(!rejected.status.success() && String::from_utf8_lossy(&rejected.stderr).contains("Unauthorized"));

    // describe.
    let described = k.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("Name:") && described.contains("web") && described.contains("busybox:1.37"),
        "{described}"
    );

    // get -w sees a later create.
    let mut watch =
        k.command(&["get", "configmaps", "-w"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let header = receiver.recv_timeout(Duration::from_secs(20)).expect("watch prints a header");
    assert!(header.starts_with("NAME") && header.contains("DATA"), "{header}");
    let mut create = k.command(&["create", "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    create.stdin.take().unwrap().write_all(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: watched\n").unwrap();
    assert!(create.wait().unwrap().success());
    let mut seen = false;
    while let Ok(line) = receiver.recv_timeout(Duration::from_secs(20)) {
        assert!(!line.starts_with("NAME"), "a single header: {line}");
        if line.starts_with("watched ") {
            seen = true;
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen, "kubectl get -w printed the new configmap");

    // CRD, wait for Established, then use the new kind.
    let crd = dir.path().join("crd.yaml");
    std::fs::write(&crd, CRD).unwrap();
    k.ok(&["apply", "-f", crd.to_str().unwrap()]);
    k.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=20s"]);
    let widget = dir.path().join("widget.yaml");
    std::fs::write(&widget, "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  color: red\n")
        .unwrap();
    k.ok(&["apply", "-f", widget.to_str().unwrap()]);
    std::fs::write(&widget, "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  color: green\n")
        .unwrap();
    k.ok(&["apply", "-f", widget.to_str().unwrap()]);
    let widgets = k.ok(&["get", "wd"]);
    assert!(widgets.contains("COLOR") && widgets.contains("green"), "{widgets}");

    // wait --for=delete on an object held by a finalizer.
    let held = dir.path().join("held.yaml");
    std::fs::write(
        &held,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n",
    )
    .unwrap();
    k.ok(&["create", "-f", held.to_str().unwrap()]);
    k.ok(&["delete", "cm", "held", "--wait=false"]);
    let waiter = k
        .command(&["wait", "--for=delete", "cm/held", "--timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    k.ok(&["patch", "cm", "held", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    let waited = waiter.wait_with_output().unwrap();
    assert!(waited.status.success(), "wait --for=delete: {}", String::from_utf8_lossy(&waited.stderr));

    // delete waits for the object to be gone; errors read like the real server's.
    k.ok(&["delete", "-f", manifest]);
    let gone = k.fails(&["get", "deploy", "web"]);
    assert!(gone.contains(r#"deployments.apps "web" not found"#), "{gone}");
    let invalid = k.fails(&["create", "configmap", "Bad_Name"]);
    assert!(invalid.contains("Bad_Name"), "{invalid}");
    wait_until(Duration::from_secs(5), "nothing left", || k.ok(&["get", "deploy", "-o", "name"]).is_empty());
    server.stop();
}

#[test]
fn kubectl_1_27() {
    scenario(27);
}

#[test]
fn kubectl_1_30() {
    scenario(30);
}

#[test]
fn kubectl_1_33() {
    scenario(33);
}
