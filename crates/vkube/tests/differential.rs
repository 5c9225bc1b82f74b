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
    // Subresources beyond status and scale: a pod's binding and eviction, a service account's
    // token (the token itself and its expiry normalised), and the errors around them.
    let pods = "/api/v1/namespaces/{ns}/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec()});
    let binding = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let sub = |name: &str, steps: Vec<Step>| Sequence { name: format!("subresources/{name}"), steps };
    out.push(sub(
        "binding",
        vec![
            step("POST", pods, Some(pod.clone())),
            step("POST", format!("{pods}/p/binding"), Some(binding("node-1"))),
            step("GET", format!("{pods}/p"), None),
            step("POST", format!("{pods}/p/binding"), Some(binding("node-2"))),
        ],
    ));
    out.push(sub("binding-missing-pod", vec![step("POST", format!("{pods}/p/binding"), Some(binding("node-1")))]));
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}});
    out.push(sub(
        "eviction",
        vec![
            step("POST", pods, Some(pod.clone())),
            step("POST", format!("{pods}/p/eviction"), Some(eviction.clone())),
            step("GET", format!("{pods}/p"), None),
        ],
    ));
    out.push(sub("eviction-missing-pod", vec![step("POST", format!("{pods}/p/eviction"), Some(eviction))]));
    let token = |seconds: i64| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}});
    let accounts = "/api/v1/namespaces/{ns}/serviceaccounts";
    out.push(sub(
        "token",
        vec![
            step(
                "POST",
                accounts,
                Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})),
            ),
            step("POST", format!("{accounts}/robot/token"), Some(token(3600))),
            step("POST", format!("{accounts}/robot/token"), Some(token(60))),
            step("POST", format!("{accounts}/missing/token"), Some(token(3600))),
        ],
    ));
    // pods/log on a server without kubelets: the checks before a kubelet is called, and the log of
    // a pod no node runs (an empty stream).
    let two = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "two"}, "spec": {
        "initContainers": [{"name": "setup", "image": "busybox"}],
        "containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx"}]}});
    out.push(sub("log-missing-pod", vec![step("GET", format!("{pods}/missing/log"), None)]));
    out.push(sub(
        "log-unscheduled",
        vec![step("POST", pods, Some(pod.clone())), step("GET", format!("{pods}/p/log"), None)],
    ));
    out.push(sub(
        "log-container-choice",
        vec![
            step("POST", pods, Some(two)),
            step("GET", format!("{pods}/two/log"), None),
            step("GET", format!("{pods}/two/log?container=c"), None),
            step("GET", format!("{pods}/two/log?container=setup"), None),
            step("GET", format!("{pods}/two/log?container=b&tailLines=2&timestamps=true"), None),
        ],
    ));
    out.push(sub(
        "log-bad-options",
        vec![
            step("POST", pods, Some(pod.clone())),
            step("GET", format!("{pods}/p/log?tailLines=-1"), None),
            step("GET", format!("{pods}/p/log?limitBytes=0"), None),
            step("GET", format!("{pods}/p/log?sinceSeconds=0"), None),
            step("GET", format!("{pods}/p/log?sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"), None),
            step("GET", format!("{pods}/p/log?tailLines=abc"), None),
        ],
    ));
    // Watches that cannot start: a resource version long gone (410 Gone, as an ERROR event), a
    // malformed one, and a bad selector.
    let maps = "/api/v1/namespaces/{ns}/configmaps";
    let watch = |sequence: &str, query: &str| Sequence {
        name: format!("watch/{sequence}"),
        steps: vec![step("GET", format!("{maps}?watch=true&timeoutSeconds=1&{query}"), None)],
    };
    out.push(watch("gone", "resourceVersion=1"));
    out.push(watch("malformed-version", "resourceVersion=abc"));
    out.push(watch("bad-selector", "labelSelector=a%3D%3D%3Db"));
    out.push(Sequence {
        name: "list/too-old-continue".into(),
        steps: vec![step(
            "GET",
            format!("{maps}?limit=1&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MSwic3RhcnQiOiJhIn0"),
            None,
        )],
    });
    // Paths nothing serves: an unknown group, version or resource, a name under a cluster-scoped
    // resource's namespace path.
    for (name, path) in [
        ("unknown-group", "/apis/nothing.example.com/v1/namespaces/{ns}/things"),
        ("unknown-version", "/apis/apps/v9/namespaces/{ns}/deployments"),
        ("unknown-core-version", "/api/v9/namespaces/{ns}/pods"),
        ("unknown-resource", "/api/v1/namespaces/{ns}/nothings"),
        ("unknown-group-resource", "/apis/apps/v1/namespaces/{ns}/nothings"),
        ("cluster-scoped-in-namespace", "/api/v1/namespaces/{ns}/nodes"),
        ("unknown-group-discovery", "/apis/nothing.example.com"),
        ("unknown-version-discovery", "/apis/apps/v9"),
        ("unknown-path", "/random"),
    ] {
        out.push(Sequence { name: format!("routes/{name}"), steps: vec![step("GET", path, None)] });
    }
    // A custom resource of two versions (no conversion webhook: only apiVersion changes), a
    // structural schema that prunes unknown fields (except under x-kubernetes-preserve-unknown-fields),
    // defaults, validation, and the status subresource.
    let gadgets = |version: &str| format!("/apis/example.com/{version}/namespaces/{{ns}}/gadgets");
    let gadget = |version: &str, spec: Value| {
        json!({"apiVersion": format!("example.com/{version}"), "kind": "Gadget",
        "metadata": {"name": "g", "labels": {"corpus": "yes"}}, "spec": spec})
    };
    let crd = |name: &str, steps: Vec<Step>| Sequence { name: format!("crd/{name}"), steps };
    out.push(crd(
        "versions",
        vec![
            step("POST", gadgets("v1"), Some(gadget("v1", json!({"size": 2})))),
            step("GET", format!("{}/g", gadgets("v2")), None),
            step("GET", gadgets("v2"), None),
            step("PATCH", format!("{}/g", gadgets("v2")), Some(json!({"spec": {"size": 3}}))),
            step("GET", format!("{}/g", gadgets("v1")), None),
            step("PUT", format!("{}/g", gadgets("v2")), Some(gadget("v2", json!({"size": 4})))),
            step("GET", "/apis/example.com/v3/namespaces/{ns}/gadgets", None),
        ],
    ));
    out.push(crd(
        "pruning-and-defaults",
        vec![
            step(
                "POST",
                gadgets("v1"),
                Some(json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "junk": 1,
                    "spec": {"size": 1, "unknown": "x", "blob": {"free": {"form": [1, 2]}}}})),
            ),
            step("GET", format!("{}/g", gadgets("v1")), None),
            step(
                "PATCH",
                format!("{}/g", gadgets("v1")),
                Some(json!({"spec": {"another": true, "blob": {"more": 1}}})),
            ),
        ],
    ));
    out.push(crd(
        "invalid",
        vec![
            step("POST", gadgets("v1"), Some(gadget("v1", json!({"size": 0})))),
            step("POST", gadgets("v1"), Some(gadget("v1", json!({"size": 11, "mode": "medium"})))),
            step("POST", gadgets("v1"), Some(gadget("v1", json!({"mode": "fast", "tags": ["a", "b", "c", "d"]})))),
            step("POST", gadgets("v1"), Some(gadget("v1", json!({"size": "two"})))),
        ],
    ));
    out.push(crd(
        "status",
        vec![
            step("POST", gadgets("v1"), Some(gadget("v1", json!({"size": 2})))),
            step(
                "PATCH",
                format!("{}/g/status", gadgets("v1")),
                Some(json!({"spec": {"size": 9}, "status": {"ready": true}})),
            ),
            step(
                "PATCH",
                format!("{}/g", gadgets("v2")),
                Some(json!({"spec": {"size": 5}, "status": {"ready": false}})),
            ),
            step("GET", format!("{}/g/status", gadgets("v2")), None),
            accepting(step("GET", gadgets("v2"), None), TABLE),
        ],
    ));
    out
}

/// Gadgets: two served versions (v1 stored) with one schema.
fn gadgets_crd() -> Value {
    let version = |name: &str, storage: bool| {
        json!({"name": name, "served": true, "storage": storage, "subresources": {"status": {}},
          "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
              "size": {"type": "integer", "minimum": 1, "maximum": 10},
              "mode": {"type": "string", "enum": ["fast", "slow"], "default": "slow"},
              "tags": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
              "blob": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}})
    };
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
      "metadata": {"name": "gadgets.example.com"},
      "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [version("v1", true), version("v2", false)]}})
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
                    "uid"
                    | "resourceVersion"
                    | "creationTimestamp"
                    | "deletionTimestamp"
                    | "time"
                    | "continue"
                    | "token"
                    | "expirationTimestamp"
                    | "lastTransitionTime"
                    | "lastUpdateTime"
                    | "renewTime"
                    | "acquireTime"
                    | "remainingItemCount" => {
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
                    "message"
                        if child.as_str().is_some_and(|m| {
                            m.contains("resourceVersion")
                                || m.contains("UID")
                                || m.starts_with("too old resource version")
                        }) =>
                    {
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
    let mut body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        // A watch stream: one JSON event per line.
        let events: Result<Vec<Value>, _> =
            bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(serde_json::from_slice).collect();
        match events {
            Ok(events) if !events.is_empty() => json!(events),
            _ => json!(String::from_utf8_lossy(&bytes).to_string()),
        }
    });
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

/// The two servers compared (kept running while held) and a client for each: kube-apiserver
/// (API only) first, `vkube apiserver` second.
async fn both_servers() -> ((ApiServerProcess, RealControlPlane, tempfile::TempDir), [kube::Client; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let real = tokio::task::spawn_blocking({
        let path = dir.path().join("k8s");
        move || RealControlPlane::start_api_only(&path)
    })
    .await
    .unwrap();
    let ours = ApiServerProcess::start(&dir.path().join("vkube"), &[]);
    let clients = [client_for(&real.kubeconfig).await, client_for(&ours.kubeconfig).await];
    // Dropped in this order: the servers stop before their directory goes.
    ((ours, real, dir), clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vkube_answers_the_corpus_as_kube_apiserver_does() {
    let (_servers, clients) = both_servers().await;
    let sequences = corpus();
    assert!(sequences.len() >= 200, "the corpus has {} sequences", sequences.len());

    // Setup on both: the custom resource definition and a namespace per sequence.
    for client in &clients {
        for crd in [serde_json::from_str(WIDGETS).unwrap(), gadgets_crd()] {
            let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
            let created = send(client, &step("POST", path, Some(crd)), "").await;
            assert_eq!(created.code, 201, "{created:?}");
        }
        for i in 0..sequences.len() {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("d{i}")}});
            assert_eq!(send(client, &step("POST", "/api/v1/namespaces", Some(namespace)), "").await.code, 201);
            let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
            let _ = send(client, &step("POST", format!("/api/v1/namespaces/d{i}/serviceaccounts"), Some(account)), "")
                .await;
        }
        // The custom resource type is served once the definition is established.
        for _ in 0..100 {
            if send(client, &step("GET", "/apis/example.com/v1/widgets", None), "").await.code == 200
                && send(client, &step("GET", "/apis/example.com/v2/gadgets", None), "").await.code == 200
            {
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

/// What clients read of an `APIResourceList` entry, by resource name.
fn resource_entries(list: &Value) -> BTreeMap<String, Value> {
    let sorted = |r: &Value, key: &str| {
        let mut items: Vec<String> =
            r[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
        items.sort();
        json!(items)
    };
    list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let entry = json!({
                "namespaced": r["namespaced"], "kind": r["kind"], "singularName": r["singularName"],
                "verbs": sorted(r, "verbs"), "shortNames": sorted(r, "shortNames"), "categories": sorted(r, "categories"),
            });
            (r["name"].as_str().unwrap_or_default().to_string(), entry)
        })
        .collect()
}

/// What clients read of aggregated discovery (`APIGroupDiscoveryList`), by `group/version/resource`.
fn aggregated_entries(list: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for group in list["items"].as_array().into_iter().flatten() {
        let name = group["metadata"]["name"].as_str().unwrap_or_default();
        for version in group["versions"].as_array().into_iter().flatten() {
            let v = version["version"].as_str().unwrap_or_default();
            for r in version["resources"].as_array().into_iter().flatten() {
                let mut verbs: Vec<&str> =
                    r["verbs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                verbs.sort();
                let mut subresources: Vec<String> = r["subresources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["subresource"].as_str().map(String::from))
                    .collect();
                subresources.sort();
                let entry = json!({
                    "scope": r["scope"], "singularResource": r["singularResource"], "kind": r["responseKind"]["kind"],
                    "verbs": verbs, "subresources": subresources,
                });
                out.insert(format!("{name}/{v}/{}", r["resource"].as_str().unwrap_or_default()), entry);
            }
        }
    }
    out
}

/// Compares two keyed maps: keys on one side only, and differing fields.
fn compare_entries(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>, out: &mut Vec<String>) {
    for (key, real) in a {
        match b.get(key) {
            None => out.push(format!("missing {key}")),
            Some(ours) => {
                let mut paths = Vec::new();
                differences(real, ours, "", &mut paths);
                out.extend(paths.into_iter().map(|p| format!("{key}{p}")));
            }
        }
    }
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).map(|k| format!("extra {k}")));
}

/// Opens a watch on `path`, runs `steps`, and returns the events that arrive (type and
/// normalised object), stopping after `expected` events or two quiet seconds.
async fn watch_during(
    client: &kube::Client,
    path: &str,
    steps: &[Step],
    namespace: &str,
    expected: usize,
) -> Vec<Value> {
    let request = http::Request::builder()
        .method("GET")
        .uri(path.replace("{ns}", namespace))
        .header("accept", JSON)
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.expect("the watch opens");
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let reader = tokio::spawn(async move {
        let mut body = response.into_body();
        let mut buffer = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else { continue };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if let Ok(mut event) = serde_json::from_slice::<Value>(&line) {
                    normalise(&mut event, "");
                    let _ = sender.send(event);
                }
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for step in steps {
        let answer = send(client, step, namespace).await;
        assert!(answer.code < 300, "{} {} answered {}: {}", step.method, step.path, answer.code, answer.body);
    }
    let mut seen = Vec::new();
    while seen.len() < expected {
        match tokio::time::timeout(std::time::Duration::from_secs(2), events.recv()).await {
            Ok(Some(event)) => seen.push(event),
            _ => break,
        }
    }
    reader.abort();
    seen
}

/// Discovery (legacy and aggregated) and watch event sequences, compared with kube-apiserver's;
/// differences must be listed in docs/api-server.md like the corpus's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_watch_streams_match_kube_apiserver() {
    let (_servers, clients) = both_servers().await;
    let mut found: Vec<(String, String)> = Vec::new();

    // Legacy discovery: the same groups, preferred versions and resources.
    let get = |i: usize, path: &str, accept: &'static str| {
        let client = clients[i].clone();
        let step = accepting(step("GET", path.to_string(), None), accept);
        async move { send(&client, &step, "").await.body }
    };
    let group_versions = |list: &Value| -> BTreeMap<String, Value> {
        list["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let versions: Vec<&str> =
                    g["versions"].as_array().into_iter().flatten().filter_map(|v| v["groupVersion"].as_str()).collect();
                (
                    g["name"].as_str().unwrap_or_default().to_string(),
                    json!({"versions": versions, "preferred": g["preferredVersion"]["groupVersion"]}),
                )
            })
            .collect()
    };
    let (real_groups, our_groups) =
        (group_versions(&get(0, "/apis", JSON).await), group_versions(&get(1, "/apis", JSON).await));
    let mut group_findings = Vec::new();
    compare_entries(&real_groups, &our_groups, &mut group_findings);
    found.extend(group_findings.into_iter().map(|f| ("discovery/groups".to_string(), f)));
    let mut versions = vec!["/api/v1".to_string()];
    for (group, entry) in &real_groups {
        if our_groups.contains_key(group) {
            for version in entry["versions"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                versions.push(format!("/apis/{version}"));
            }
        }
    }
    for path in &versions {
        let (real_list, our_list) = (get(0, path, JSON).await, get(1, path, JSON).await);
        let mut findings = Vec::new();
        compare_entries(&resource_entries(&real_list), &resource_entries(&our_list), &mut findings);
        found.extend(findings.into_iter().map(|f| (format!("discovery{path}"), f)));
    }
    // Aggregated discovery (what kubectl 1.30+ reads).
    const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    for path in ["/api", "/apis"] {
        let (real_list, our_list) = (get(0, path, AGGREGATED).await, get(1, path, AGGREGATED).await);
        let mut findings = Vec::new();
        compare_entries(&aggregated_entries(&real_list), &aggregated_entries(&our_list), &mut findings);
        found.extend(findings.into_iter().map(|f| (format!("aggregated{path}"), f)));
    }

    // OpenAPI v3: the same group versions, and for every built-in schema both documents hold
    // the same properties, required fields and group-version-kinds.
    let paths = |index: &Value| -> BTreeMap<String, Value> {
        index["paths"].as_object().into_iter().flatten().map(|(k, _)| (k.clone(), json!(true))).collect()
    };
    let (real_index, our_index) =
        (paths(&get(0, "/openapi/v3", JSON).await), paths(&get(1, "/openapi/v3", JSON).await));
    // Group-version documents (what kubectl reads) one by one; the others (group and discovery
    // endpoint documents) as one finding.
    let group_version = |p: &String| p == "api/v1" || p.matches('/').count() == 2 && p.starts_with("apis/");
    let split = |index: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        index.iter().filter(|(p, _)| group_version(p)).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut findings = Vec::new();
    compare_entries(&split(&real_index), &split(&our_index), &mut findings);
    found.extend(findings.into_iter().map(|f| ("openapi/v3".to_string(), f)));
    if real_index.keys().any(|p| !group_version(p) && !our_index.contains_key(p)) {
        found.push(("openapi/v3".to_string(), "group and endpoint documents".to_string()));
    }
    for path in
        real_index.keys().filter(|p| our_index.contains_key(*p) && (p.starts_with("api/") || p.starts_with("apis/")))
    {
        let schemas = |doc: &Value| -> BTreeMap<String, Value> {
            doc["components"]["schemas"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(name, _)| name.starts_with("io.k8s.api."))
                .map(|(name, schema)| {
                    let mut properties: Vec<&String> = schema["properties"].as_object().map(|p| p.keys().collect()).unwrap_or_default();
                    properties.sort();
                    let mut required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    required.sort();
                    (name.clone(), json!({"properties": properties, "required": required, "gvk": schema["x-kubernetes-group-version-kind"]}))
                })
                .collect()
        };
        let document = format!("/openapi/v3/{path}");
        let (real_doc, our_doc) = (schemas(&get(0, &document, JSON).await), schemas(&get(1, &document, JSON).await));
        let ours_only_shared: BTreeMap<String, Value> =
            real_doc.iter().filter(|(k, _)| our_doc.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut findings = Vec::new();
        compare_entries(
            &ours_only_shared,
            &our_doc.iter().filter(|(k, _)| real_doc.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            &mut findings,
        );
        found.extend(findings.into_iter().map(|f| (format!("openapi/{path}"), f)));
    }

    // Watch streams: every event of a namespace, and a label-selected watch that sees the object
    // leave its selector.
    let cm = |labels: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched", "labels": labels}, "data": {"a": "1"}});
    let steps = vec![
        step("POST", "/api/v1/namespaces/{ns}/configmaps", Some(cm(json!({"tier": "one"})))),
        step(
            "PUT",
            "/api/v1/namespaces/{ns}/configmaps/watched",
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched", "labels": {"tier": "one"}}, "data": {"a": "2"}}),
            ),
        ),
        step(
            "PATCH",
            "/api/v1/namespaces/{ns}/configmaps/watched",
            Some(json!({"metadata": {"labels": {"tier": "two"}}})),
        ),
        step("DELETE", "/api/v1/namespaces/{ns}/configmaps/watched", None),
    ];
    for (i, client) in clients.iter().enumerate() {
        for namespace in ["w1", "w2"] {
            let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
            let created = send(client, &step("POST", "/api/v1/namespaces", Some(object)), "").await;
            assert_eq!(created.code, 201, "server {i}: {created:?}");
        }
    }
    for (name, path, namespace, expected) in [
        ("watch/all", "/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion=0", "w1", 4),
        ("watch/selected", "/api/v1/namespaces/{ns}/configmaps?watch=true&labelSelector=tier%3Done", "w2", 3),
    ] {
        let real_events = watch_during(&clients[0], path, &steps, namespace, expected).await;
        let our_events = watch_during(&clients[1], path, &steps, namespace, expected).await;
        let types = |events: &[Value]| {
            events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(types(&our_events), types(&real_events), "{name}: event types (left vkube, right kube-apiserver)");
        for (n, (real_event, our_event)) in real_events.iter().zip(&our_events).enumerate() {
            let mut paths = Vec::new();
            differences(real_event, our_event, "", &mut paths);
            found.extend(paths.into_iter().map(|p| (format!("{name}#{n}"), format!("body {p}"))));
        }
    }

    let allowed = listed();
    let open: Vec<String> = found
        .iter()
        .filter(|(key, what)| !allowed.iter().any(|(s, p)| glob(s, key) && glob(p, what)))
        .map(|(key, what)| format!("{key}: {what}"))
        .collect();
    eprintln!("discovery and watch: {} findings, {} listed", found.len(), found.len() - open.len());
    assert!(
        open.is_empty(),
        "{} differences from kube-apiserver without a row in docs/api-server.md:\n  {}",
        open.len(),
        open.join("\n  ")
    );
}
