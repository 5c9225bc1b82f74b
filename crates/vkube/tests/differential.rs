//! The differential corpus: the same request sequences sent to a real kube-apiserver (the
//! `tools/k8s` build, API only) and to `vkube apiserver`, compared after normalising what differs
//! by nature (uids, timestamps, resourceVersions, generated names). A difference fails the test
//! unless docs/api-server.md lists it (section "Differential corpus: listed differences").

mod common;

use std::collections::BTreeMap;

use common::{ApiServerProcess, RealControlPlane};
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// One request of a sequence. `{ns}` in the path stands for the sequence's namespace.
#[derive(Clone, Debug)]
struct Step {
    method: &'static str,
    path: String,
    body: Option<Value>,
    content_type: &'static str,
    accept: &'static str,
}

#[derive(Clone, Debug)]
struct Sequence {
    name: String,
    steps: Vec<Step>,
}

const JSON: &str = "application/json";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
const METADATA: &str = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io";

fn step(method: &'static str, path: impl Into<String>, body: Option<Value>) -> Step {
    let content_type = if method == "PATCH" { "application/merge-patch+json" } else { JSON };
    Step { method, path: path.into(), body, content_type, accept: JSON }
}

fn with_type(mut step: Step, content_type: &'static str) -> Step {
    step.content_type = content_type;
    step
}

fn accepting(mut step: Step, accept: &'static str) -> Step {
    step.accept = accept;
    step
}

/// A namespaced kind the corpus exercises: where it lives and a valid object of it.
struct Kind {
    prefix: &'static str,
    plural: &'static str,
    object: fn(&str) -> Value,
    builtin: bool,
}

fn meta(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": {"corpus": "yes"}}})
}

fn with(mut base: Value, field: &str, value: Value) -> Value {
    base[field] = value;
    base
}

fn pod_spec() -> Value {
    json!({"containers": [{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]})
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "x"}}, "spec": pod_spec()})
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            prefix: "/api/v1",
            plural: "configmaps",
            object: |n| with(meta("v1", "ConfigMap", n), "data", json!({"a": "1"})),
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "secrets",
            object: |n| with(meta("v1", "Secret", n), "stringData", json!({"a": "1"})),
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "services",
            object: |n| {
                with(meta("v1", "Service", n), "spec", json!({"selector": {"app": "x"}, "ports": [{"port": 80}]}))
            },
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "serviceaccounts",
            object: |n| meta("v1", "ServiceAccount", n),
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "pods",
            object: |n| with(meta("v1", "Pod", n), "spec", pod_spec()),
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "endpoints",
            object: |n| {
                with(
                    meta("v1", "Endpoints", n),
                    "subsets",
                    json!([{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 80}]}]),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "persistentvolumeclaims",
            object: |n| {
                with(
                    meta("v1", "PersistentVolumeClaim", n),
                    "spec",
                    json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "limitranges",
            object: |n| {
                with(
                    meta("v1", "LimitRange", n),
                    "spec",
                    json!({"limits": [{"type": "Container", "default": {"cpu": "100m"}}]}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "resourcequotas",
            object: |n| with(meta("v1", "ResourceQuota", n), "spec", json!({"hard": {"pods": "10"}})),
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "podtemplates",
            object: |n| with(meta("v1", "PodTemplate", n), "template", template()),
            builtin: true,
        },
        Kind {
            prefix: "/api/v1",
            plural: "replicationcontrollers",
            object: |n| {
                with(
                    meta("v1", "ReplicationController", n),
                    "spec",
                    json!({"replicas": 1, "selector": {"app": "x"}, "template": template()}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/apps/v1",
            plural: "deployments",
            object: |n| {
                with(
                    meta("apps/v1", "Deployment", n),
                    "spec",
                    json!({"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": template()}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/apps/v1",
            plural: "replicasets",
            object: |n| {
                with(
                    meta("apps/v1", "ReplicaSet", n),
                    "spec",
                    json!({"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": template()}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/apps/v1",
            plural: "statefulsets",
            object: |n| {
                with(
                    meta("apps/v1", "StatefulSet", n),
                    "spec",
                    json!({"serviceName": "x", "selector": {"matchLabels": {"app": "x"}}, "template": template()}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/apps/v1",
            plural: "daemonsets",
            object: |n| {
                with(
                    meta("apps/v1", "DaemonSet", n),
                    "spec",
                    json!({"selector": {"matchLabels": {"app": "x"}}, "template": template()}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/apps/v1",
            plural: "controllerrevisions",
            object: |n| with(meta("apps/v1", "ControllerRevision", n), "revision", json!(1)),
            builtin: true,
        },
        Kind {
            prefix: "/apis/batch/v1",
            plural: "jobs",
            object: |n| {
                with(
                    meta("batch/v1", "Job", n),
                    "spec",
                    json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/batch/v1",
            plural: "cronjobs",
            object: |n| {
                with(
                    meta("batch/v1", "CronJob", n),
                    "spec",
                    json!({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/networking.k8s.io/v1",
            plural: "networkpolicies",
            object: |n| with(meta("networking.k8s.io/v1", "NetworkPolicy", n), "spec", json!({"podSelector": {}})),
            builtin: true,
        },
        Kind {
            prefix: "/apis/networking.k8s.io/v1",
            plural: "ingresses",
            object: |n| {
                with(
                    meta("networking.k8s.io/v1", "Ingress", n),
                    "spec",
                    json!({"defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/policy/v1",
            plural: "poddisruptionbudgets",
            object: |n| {
                with(
                    meta("policy/v1", "PodDisruptionBudget", n),
                    "spec",
                    json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/coordination.k8s.io/v1",
            plural: "leases",
            object: |n| with(meta("coordination.k8s.io/v1", "Lease", n), "spec", json!({"holderIdentity": "me"})),
            builtin: true,
        },
        Kind {
            prefix: "/apis/rbac.authorization.k8s.io/v1",
            plural: "roles",
            object: |n| {
                with(
                    meta("rbac.authorization.k8s.io/v1", "Role", n),
                    "rules",
                    json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/rbac.authorization.k8s.io/v1",
            plural: "rolebindings",
            object: |n| {
                with(
                    with(
                        meta("rbac.authorization.k8s.io/v1", "RoleBinding", n),
                        "roleRef",
                        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"}),
                    ),
                    "subjects",
                    json!([{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/discovery.k8s.io/v1",
            plural: "endpointslices",
            object: |n| {
                with(
                    with(meta("discovery.k8s.io/v1", "EndpointSlice", n), "addressType", json!("IPv4")),
                    "endpoints",
                    json!([{"addresses": ["10.1.2.3"]}]),
                )
            },
            builtin: true,
        },
        Kind {
            prefix: "/apis/example.com/v1",
            plural: "widgets",
            object: |n| with(meta("example.com/v1", "Widget", n), "spec", json!({"color": "red", "size": 1})),
            builtin: false,
        },
    ]
}

/// The generated part of the corpus: every kind through the same sequences.
fn corpus() -> Vec<Sequence> {
    let mut out = Vec::new();
    for kind in kinds() {
        let collection = format!("{}/namespaces/{{ns}}/{}", kind.prefix, kind.plural);
        let item = |name: &str| format!("{collection}/{name}");
        let object = |name: &str| (kind.object)(name);
        let mut add = |what: &str, steps: Vec<Step>| {
            out.push(Sequence { name: format!("{}/{what}", kind.plural), steps });
        };
        add(
            "create-get-list",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                step("GET", item("a"), None),
                step("GET", format!("{collection}?labelSelector=corpus%3Dyes"), None),
            ],
        );
        add(
            "create-twice",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                step("POST", collection.clone(), Some(object("a"))),
            ],
        );
        add("get-missing", vec![step("GET", item("missing"), None)]);
        add("delete-missing", vec![step("DELETE", item("missing"), None)]);
        let mut stale = object("a");
        stale["metadata"]["resourceVersion"] = json!("1");
        add(
            "update-stale",
            vec![step("POST", collection.clone(), Some(object("a"))), step("PUT", item("a"), Some(stale))],
        );
        add("update-missing", vec![step("PUT", item("b"), Some(object("b")))]);
        add(
            "merge-patch",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                step(
                    "PATCH",
                    item("a"),
                    Some(json!({"metadata": {"labels": {"patched": "merge"}, "annotations": {"a": "b"}}})),
                ),
            ],
        );
        add(
            "json-patch",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                with_type(
                    step(
                        "PATCH",
                        item("a"),
                        Some(json!([{"op": "add", "path": "/metadata/labels/patched", "value": "json"}])),
                    ),
                    "application/json-patch+json",
                ),
                with_type(
                    step(
                        "PATCH",
                        item("a"),
                        Some(json!([{"op": "test", "path": "/metadata/labels/patched", "value": "other"}])),
                    ),
                    "application/json-patch+json",
                ),
            ],
        );
        if kind.builtin {
            add(
                "strategic-patch",
                vec![
                    step("POST", collection.clone(), Some(object("a"))),
                    with_type(
                        step("PATCH", item("a"), Some(json!({"metadata": {"labels": {"patched": "strategic"}}}))),
                        "application/strategic-merge-patch+json",
                    ),
                ],
            );
        } else {
            add(
                "strategic-patch-refused",
                vec![
                    step("POST", collection.clone(), Some(object("a"))),
                    with_type(
                        step("PATCH", item("a"), Some(json!({"metadata": {"labels": {"x": "y"}}}))),
                        "application/strategic-merge-patch+json",
                    ),
                ],
            );
        }
        let apply = |manager: &str, force: bool| {
            let mut path = format!("{}?fieldManager={manager}", item("a"));
            if force {
                path.push_str("&force=true");
            }
            with_type(step("PATCH", path, Some(object("a"))), "application/apply-patch+yaml")
        };
        let mut changed = object("a");
        changed["metadata"]["labels"]["corpus"] = json!("changed");
        let apply_changed = |manager: &str| {
            with_type(
                step("PATCH", format!("{}?fieldManager={manager}", item("a")), Some(changed.clone())),
                "application/apply-patch+yaml",
            )
        };
        add("apply-create-then-conflict", vec![apply("alice", false), apply_changed("bob")]);
        add(
            "apply-force",
            vec![apply("alice", false), {
                let mut forced = apply_changed("bob");
                forced.path.push_str("&force=true");
                forced
            }],
        );
        add(
            "apply-without-manager",
            vec![with_type(step("PATCH", item("a"), Some(object("a"))), "application/apply-patch+yaml")],
        );
        add(
            "delete-then-get",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                step("DELETE", item("a"), None),
                step("GET", item("a"), None),
            ],
        );
        add(
            "dry-run-create",
            vec![step("POST", format!("{collection}?dryRun=All"), Some(object("a"))), step("GET", item("a"), None)],
        );
        add(
            "deletecollection",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                step("POST", collection.clone(), Some(object("b"))),
                step("DELETE", format!("{collection}?labelSelector=corpus%3Dyes"), None),
                step("GET", collection.clone(), None),
            ],
        );
        add("bad-label-selector", vec![step("GET", format!("{collection}?labelSelector=a%3D%3D%3Db"), None)]);
        add("bad-field-selector", vec![step("GET", format!("{collection}?fieldSelector=spec.nothing%3Dx"), None)]);
        add("invalid-name", vec![step("POST", collection.clone(), Some(object("Not_Valid")))]);
        add(
            "paginate",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                step("POST", collection.clone(), Some(object("b"))),
                step("GET", format!("{collection}?limit=1"), None),
            ],
        );
        add(
            "table",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                accepting(step("GET", collection.clone(), None), TABLE),
            ],
        );
        add(
            "partial-metadata",
            vec![
                step("POST", collection.clone(), Some(object("a"))),
                accepting(step("GET", item("a"), None), METADATA),
            ],
        );
        add(
            "wrong-kind",
            vec![step(
                "POST",
                collection.clone(),
                Some(json!({"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "a"}})),
            )],
        );
        add("name-mismatch", vec![step("PUT", item("a"), Some(object("b")))]);
    }
    out
}

const WIDGETS: &str = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.example.com"},
  "spec": {"group": "example.com", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "additionalPrinterColumns": [{"name": "Color", "type": "string", "jsonPath": ".spec.color"}],
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
        "properties": {"color": {"type": "string", "default": "blue"}, "size": {"type": "integer", "minimum": 0}}}}}}}]}}"#;

/// One side's answer, normalised.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    code: u16,
    content_type: String,
    warning: String,
    body: Value,
}

/// What differs by nature between two servers: identities, times, versions, generated names.
fn normalise(value: &mut Value, path: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let here = format!("{path}.{key}");
                match key.as_str() {
                    "uid" | "resourceVersion" | "creationTimestamp" | "deletionTimestamp" | "time" | "continue"
                    | "lastTransitionTime" | "lastUpdateTime" | "renewTime" | "acquireTime" | "remainingItemCount" => {
                        if !child.is_null() {
                            *child = json!("<normalised>");
                        }
                    }
                    "clusterIP" => *child = json!("<ip>"),
                    // Values that embed a uid or a random suffix.
                    "batch.kubernetes.io/controller-uid" | "controller-uid" => *child = json!("<uid>"),
                    "name" if child.as_str().is_some_and(|n| n.starts_with("kube-api-access-")) => {
                        *child = json!("kube-api-access-<random>")
                    }
                    "clusterIPs" => *child = json!(["<ip>"]),
                    "message" if child.as_str().is_some_and(|m| m.contains("resourceVersion") || m.contains("UID")) => {
                        *child = json!("<normalised>")
                    }
                    _ => normalise(child, &here),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                normalise(item, &format!("{path}[{i}]"));
            }
        }
        _ => {}
    }
}

/// Leaf paths where `a` and `b` differ.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                differences(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    &format!("{path}.{key}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

async fn send(client: &kube::Client, step: &Step, namespace: &str) -> Answer {
    let path = step.path.replace("{ns}", namespace);
    let body = step.body.as_ref().map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    let request = http::Request::builder()
        .method(step.method)
        .uri(&path)
        .header("content-type", step.content_type)
        .header("accept", step.accept)
        .body(kube::client::Body::from(body))
        .unwrap();
    let response = client.send(request).await.expect("the server answers");
    let code = response.status().as_u16();
    let header =
        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let content_type = header("content-type");
    let warning = header("warning");
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut body =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes).to_string()));
    normalise(&mut body, "");
    Answer { code, content_type, warning, body }
}

async fn client_for(kubeconfig: &std::path::Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&text).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// `| sequence glob | path glob | reason |` rows of docs/api-server.md's listed differences.
fn listed() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api-server.md")).unwrap();
    let section = doc.split("## Differential corpus: listed differences").nth(1).expect("the section exists");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((cells.get(1)?.trim_matches('`').to_string(), cells.get(2)?.trim_matches('`').to_string()))
        })
        .collect()
}

fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vkube_answers_the_corpus_as_kube_apiserver_does() {
    let dir = tempfile::tempdir().unwrap();
    let real = tokio::task::spawn_blocking({
        let path = dir.path().join("k8s");
        move || RealControlPlane::start_api_only(&path)
    })
    .await
    .unwrap();
    let ours = ApiServerProcess::start(&dir.path().join("vkube"), &[]);
    let clients = [client_for(&real.kubeconfig).await, client_for(&ours.kubeconfig).await];
    let sequences = corpus();
    assert!(sequences.len() >= 200, "the corpus has {} sequences", sequences.len());

    // Setup on both: the custom resource definition and a namespace per sequence.
    for client in &clients {
        let crd: Value = serde_json::from_str(WIDGETS).unwrap();
        let created =
            send(client, &step("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(crd)), "").await;
        assert_eq!(created.code, 201, "{created:?}");
        for i in 0..sequences.len() {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("d{i}")}});
            assert_eq!(send(client, &step("POST", "/api/v1/namespaces", Some(namespace)), "").await.code, 201);
            let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
            let _ = send(client, &step("POST", format!("/api/v1/namespaces/d{i}/serviceaccounts"), Some(account)), "")
                .await;
        }
        // The custom resource type is served once the definition is established.
        for _ in 0..100 {
            if send(client, &step("GET", "/apis/example.com/v1/widgets", None), "").await.code == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    let allowed = listed();
    let mut unlisted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut compared = 0;
    for (i, sequence) in sequences.iter().enumerate() {
        let namespace = format!("d{i}");
        for (n, step) in sequence.steps.iter().enumerate() {
            let real_answer = send(&clients[0], step, &namespace).await;
            let our_answer = send(&clients[1], step, &namespace).await;
            compared += 1;
            let mut found = Vec::new();
            if real_answer.code != our_answer.code {
                found.push(format!("code {} != {}", real_answer.code, our_answer.code));
            }
            let kind = |ct: &str| ct.split(';').next().unwrap_or_default().to_string();
            if kind(&real_answer.content_type) != kind(&our_answer.content_type) {
                found.push(format!("content-type {:?} != {:?}", real_answer.content_type, our_answer.content_type));
            }
            if real_answer.warning.is_empty() != our_answer.warning.is_empty() {
                found.push(format!("warning {:?} != {:?}", real_answer.warning, our_answer.warning));
            }
            let mut paths = Vec::new();
            differences(&real_answer.body, &our_answer.body, "", &mut paths);
            for path in paths {
                found.push(format!("body {path}"));
            }
            let key = format!("{}#{n}", sequence.name);
            let open: Vec<String> =
                found.into_iter().filter(|what| !allowed.iter().any(|(s, p)| glob(s, &key) && glob(p, what))).collect();
            if !open.is_empty() {
                let detail = format!(
                    "{}\n      kube-apiserver: {} {}\n      vkube:          {} {}",
                    open.join("; "),
                    real_answer.code,
                    real_answer.body,
                    our_answer.code,
                    our_answer.body
                );
                unlisted.entry(key).or_default().push(detail);
            }
        }
    }
    // The bootstrap RBAC policy: the same ClusterRoles, ClusterRoleBindings and kube-system Roles
    // with the same rules and subjects.
    for path in [
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings",
    ] {
        let policy = |answer: Answer| -> BTreeMap<String, Value> {
            answer.body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o.pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate").is_some())
                .map(|o| {
                    let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    // The rules of aggregated roles are filled by the controller manager's
                    // aggregation controller, which the API-only oracle does not run.
                    let rules = if o["aggregationRule"].is_null() { o["rules"].clone() } else { Value::Null };
                    (name, json!({"rules": rules, "subjects": o["subjects"], "roleRef": o["roleRef"], "aggregationRule": o["aggregationRule"], "labels": o["metadata"]["labels"]}))
                })
                .collect()
        };
        let real_policy = policy(send(&clients[0], &step("GET", path, None), "").await);
        let our_policy = policy(send(&clients[1], &step("GET", path, None), "").await);
        assert!(!real_policy.is_empty(), "{path}: upstream has a bootstrap policy");
        assert_eq!(our_policy, real_policy, "{path}: the bootstrap policy differs from kube-apiserver's");
    }
    eprintln!("differential corpus: {} sequences, {compared} requests compared", sequences.len());
    if !unlisted.is_empty() {
        let report: Vec<String> = unlisted.iter().map(|(k, v)| format!("  {k}: {}", v.join("\n    "))).collect();
        panic!(
            "{} steps differ from kube-apiserver without a row in docs/api-server.md:\n{}",
            unlisted.len(),
            report.join("\n")
        );
    }
}
