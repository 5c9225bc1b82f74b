//! Server-side printing (`as=Table`): the upstream column sets, so `kubectl get` shows the same
//! columns as against a real cluster, and PartialObjectMetadata row objects.

use serde_json::{Value, json};

use crate::catalog::ResourceType;

/// One column: name, type, priority (0 = default view, 1 = `-o wide`).
type Column = (&'static str, &'static str, i64);

fn columns(rt: &ResourceType) -> Vec<Column> {
    let name = ("Name", "string", 0);
    let age = ("Age", "string", 0);
    let mut cols = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => vec![
            name,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            age,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("apps", "Deployment") => vec![
            name,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            name,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "StatefulSet") => {
            vec![name, ("Ready", "string", 0), age, ("Containers", "string", 1), ("Images", "string", 1)]
        }
        ("apps", "DaemonSet") => vec![
            name,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("batch", "Job") => vec![
            name,
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("batch", "CronJob") => vec![
            name,
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("", "Service") => vec![
            name,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            age,
            ("Selector", "string", 1),
        ],
        ("", "Node") => vec![
            name,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            age,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        ("", "Namespace") => vec![name, ("Status", "string", 0), age],
        ("", "ConfigMap") => vec![name, ("Data", "integer", 0), age],
        ("", "Secret") => vec![name, ("Type", "string", 0), ("Data", "integer", 0), age],
        ("", "ServiceAccount") => vec![name, ("Secrets", "integer", 0), age],
        ("", "Endpoints") => vec![name, ("Endpoints", "string", 0), age],
        ("", "PersistentVolumeClaim") => vec![
            name,
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            age,
            ("VolumeMode", "string", 1),
        ],
        ("", "PersistentVolume") => vec![
            name,
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("Reason", "string", 0),
            age,
        ],
        ("", "Event") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        ("networking.k8s.io", "Ingress") => vec![
            name,
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            age,
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            name,
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            age,
        ],
        ("coordination.k8s.io", "Lease") => vec![name, ("Holder", "string", 0), age],
        ("certificates.k8s.io", "CertificateSigningRequest") => vec![
            name,
            age,
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ],
        ("apiregistration.k8s.io", "APIService") => {
            vec![name, ("Service", "string", 0), ("Available", "string", 0), age]
        }
        ("", "ComponentStatus") => {
            vec![name, ("Status", "string", 0), ("Message", "string", 0), ("Error", "string", 0)]
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            vec![name, ("Value", "integer", 0), ("Global-Default", "boolean", 0), age]
        }
        _ => Vec::new(),
    };
    if cols.is_empty() && rt.is_custom() {
        cols.push(name);
    }
    cols
}

/// The Table for `objects`. `headers` false omits column definitions (watch events after the
/// first); `include_object` is `None`, `Metadata` (default) or `Object`.
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    resource_version: Option<&str>,
    headers: bool,
    include_object: &str,
) -> Value {
    let mut builtin = columns(rt);
    let custom_columns = rt.custom.as_ref().map(|c| c.printer_columns.clone()).unwrap_or_default();
    let generic = builtin.is_empty();
    if generic {
        builtin = vec![("Name", "string", 0), ("Created At", "date", 0)];
    }
    let mut definitions: Vec<Value> = builtin
        .iter()
        .map(|(n, t, p)| {
            let format = if *n == "Name" { "name" } else { "" };
            json!({"name": n, "type": t, "format": format, "description": description(n), "priority": p})
        })
        .collect();
    for c in &custom_columns {
        definitions.push(json!({"name": c.name, "type": c.column_type, "format": c.format, "description": c.description, "priority": c.priority}));
    }
    if rt.is_custom() {
        definitions.push(
            json!({"name": "Age", "type": "date", "format": "", "description": description("Age"), "priority": 0}),
        );
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = if generic && !rt.is_custom() {
                vec![json!(name_of(o)), json!(o.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null))]
            } else if rt.is_custom() {
                vec![json!(name_of(o))]
            } else {
                cells(rt, o)
            };
            for c in &custom_columns {
                let value = json_path(o, &c.json_path);
                cells.push(match (c.column_type.as_str(), value) {
                    ("date", Some(Value::String(t))) => json!(age(&t)),
                    (_, Some(v)) => v,
                    (_, None) => Value::Null,
                });
            }
            if rt.is_custom() {
                cells.push(json!(age(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or(""))));
            }
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => row["object"] = partial_metadata(o),
            }
            row
        })
        .collect();
    let mut table = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "rows": rows});
    if let Some(rv) = resource_version {
        table["metadata"]["resourceVersion"] = json!(rv);
    }
    if headers {
        table["columnDefinitions"] = Value::Array(definitions);
    } else {
        table["columnDefinitions"] = json!([]);
    }
    table
}

/// The PartialObjectMetadata form of an object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object.get("metadata").cloned().unwrap_or(json!({}))})
}

fn description(column: &str) -> &'static str {
    match column {
        "Name" => {
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
        }
        "Age" | "Created At" => {
            "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
        }
        "Ready" => "The aggregate readiness state of this object.",
        "Status" => "The aggregate status of this object.",
        "Restarts" => {
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."
        }
        _ => "",
    }
}

fn name_of(o: &Value) -> String {
    o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn s<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn i(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(text: String) -> String {
    if text.is_empty() { "<none>".into() } else { text }
}

fn containers_and_images(o: &Value, spec: &str) -> (String, String) {
    let containers = o.pointer(&format!("{spec}/containers")).and_then(Value::as_array).cloned().unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_text(o: &Value) -> String {
    let Some(selector) = o.pointer("/spec/selector") else {
        return "<none>".into();
    };
    let mut parts: Vec<String> = Vec::new();
    let labels = selector.get("matchLabels").and_then(Value::as_object).or(selector
        .as_object()
        .filter(|_| selector.get("matchLabels").is_none() && selector.get("matchExpressions").is_none()));
    if let Some(map) = labels {
        for (k, v) in map {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in selector.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let values: Vec<&str> =
            e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        let key = s(e, "/key");
        match s(e, "/operator") {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    or_none(parts.join(","))
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = json!(name_of(o));
    let created = s(o, "/metadata/creationTimestamp");
    let age_cell = json!(age(created));
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            let statuses =
                o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = o.pointer("/spec/containers").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
            let ready = statuses.iter().filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true)).count();
            let restarts: i64 = statuses.iter().map(|c| i(c, "/restartCount")).sum();
            let mut reason = s(o, "/status/phase").to_string();
            if !s(o, "/status/reason").is_empty() {
                reason = s(o, "/status/reason").to_string();
            }
            for c in &statuses {
                let waiting = s(c, "/state/waiting/reason");
                let terminated = s(c, "/state/terminated/reason");
                if !waiting.is_empty() {
                    reason = waiting.to_string();
                } else if !terminated.is_empty() && reason != "Running" {
                    reason = terminated.to_string();
                }
            }
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                reason = "Terminating".into();
            }
            let gates = o.pointer("/spec/readinessGates").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(reason),
                json!(restarts.to_string()),
                age_cell,
                json!(or_none(s(o, "/status/podIP").into())),
                json!(or_none(s(o, "/spec/nodeName").into())),
                json!(or_none(s(o, "/status/nominatedNodeName").into())),
                json!(if gates == 0 { "<none>".to_string() } else { format!("0/{gates}") }),
            ]
        }
        ("apps", "Deployment") => {
            let (c, img) = containers_and_images(o, "/spec/template/spec");
            vec![
                name,
                json!(format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"))),
                json!(i(o, "/status/updatedReplicas")),
                json!(i(o, "/status/availableReplicas")),
                age_cell,
                json!(c),
                json!(img),
                json!(selector_text(o)),
            ]
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            let (c, img) = containers_and_images(o, "/spec/template/spec");
            vec![
                name,
                json!(i(o, "/spec/replicas")),
                json!(i(o, "/status/replicas")),
                json!(i(o, "/status/readyReplicas")),
                age_cell,
                json!(c),
                json!(img),
                json!(selector_text(o)),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, img) = containers_and_images(o, "/spec/template/spec");
            vec![
                name,
                json!(format!("{}/{}", i(o, "/status/readyReplicas"), i(o, "/spec/replicas"))),
                age_cell,
                json!(c),
                json!(img),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, img) = containers_and_images(o, "/spec/template/spec");
            let node_selector = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(i(o, "/status/desiredNumberScheduled")),
                json!(i(o, "/status/currentNumberScheduled")),
                json!(i(o, "/status/numberReady")),
                json!(i(o, "/status/updatedNumberScheduled")),
                json!(i(o, "/status/numberAvailable")),
                json!(or_none(node_selector)),
                age_cell,
                json!(c),
                json!(img),
                json!(selector_text(o)),
            ]
        }
        ("batch", "Job") => {
            let (c, img) = containers_and_images(o, "/spec/template/spec");
            let conditions = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            let has = |t: &str| conditions.iter().any(|c| s(c, "/type") == t && s(c, "/status") == "True");
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(n) => format!("{}/{n}", i(o, "/status/succeeded")),
                None => format!("{}/1 of {}", i(o, "/status/succeeded"), i(o, "/spec/parallelism")),
            };
            let start = s(o, "/status/startTime");
            let end = s(o, "/status/completionTime");
            let duration = if start.is_empty() {
                String::new()
            } else {
                span(start, if end.is_empty() { None } else { Some(end) })
            };
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                age_cell,
                json!(c),
                json!(img),
                json!(selector_text(o)),
            ]
        }
        ("batch", "CronJob") => {
            let (c, img) = containers_and_images(o, "/spec/jobTemplate/spec/template/spec");
            let last = s(o, "/status/lastScheduleTime");
            vec![
                name,
                json!(s(o, "/spec/schedule")),
                json!(or_none(s(o, "/spec/timeZone").into())),
                json!(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false)),
                json!(o.pointer("/status/active").and_then(Value::as_array).map(Vec::len).unwrap_or(0)),
                json!(if last.is_empty() { "<none>".into() } else { age(last) }),
                age_cell,
                json!(c),
                json!(img),
                json!("<none>"),
            ]
        }
        ("", "Service") => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let node = p.get("nodePort").and_then(Value::as_i64).map(|n| format!(":{n}")).unwrap_or_default();
                    format!("{}{node}/{}", i(p, "/port"), p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"))
                })
                .collect();
            let external: Vec<String> =
                o.pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|ing| {
                        if s(ing, "/ip").is_empty() {
                            s(ing, "/hostname").to_string()
                        } else {
                            s(ing, "/ip").to_string()
                        }
                    })
                    .chain(
                        o.pointer("/spec/externalIPs")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().map(String::from)),
                    )
                    .collect();
            let service_type = s(o, "/spec/type");
            let external_text = if external.is_empty() {
                if service_type == "LoadBalancer" {
                    "<pending>".into()
                } else if service_type == "ExternalName" {
                    s(o, "/spec/externalName").to_string()
                } else {
                    "<none>".into()
                }
            } else {
                external.join(",")
            };
            let selector = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(service_type),
                json!(or_none(s(o, "/spec/clusterIP").into())),
                json!(external_text),
                json!(if ports.is_empty() { "<none>".into() } else { ports.join(",") }),
                age_cell,
                json!(or_none(selector)),
            ]
        }
        ("", "Node") => {
            let conditions = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            let ready = conditions.iter().find(|c| s(c, "/type") == "Ready");
            let mut status = match ready.map(|c| s(c, "/status")) {
                Some("True") => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect();
            let address = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|a| s(a, "/type") == t)
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                name,
                json!(status),
                json!(or_none(roles.join(","))),
                age_cell,
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
                json!(or_none(s(o, "/status/nodeInfo/osImage").into())),
                json!(or_none(s(o, "/status/nodeInfo/kernelVersion").into())),
                json!(or_none(s(o, "/status/nodeInfo/containerRuntimeVersion").into())),
            ]
        }
        ("", "Namespace") => vec![name, json!(s(o, "/status/phase")), age_cell],
        ("", "ConfigMap") => {
            let n = o.get("data").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0)
                + o.get("binaryData").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0);
            vec![name, json!(n), age_cell]
        }
        ("", "Secret") => {
            let n = o.get("data").and_then(Value::as_object).map(|m| m.len()).unwrap_or(0);
            vec![name, json!(s(o, "/type")), json!(n), age_cell]
        }
        ("", "ServiceAccount") => {
            vec![name, json!(o.get("secrets").and_then(Value::as_array).map(Vec::len).unwrap_or(0)), age_cell]
        }
        ("", "Endpoints") => {
            let mut endpoints = Vec::new();
            for subset in o.get("subsets").and_then(Value::as_array).into_iter().flatten() {
                let ports: Vec<i64> = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| i(p, "/port"))
                    .collect();
                for a in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
                    if ports.is_empty() {
                        endpoints.push(s(a, "/ip").to_string());
                    }
                    for p in &ports {
                        endpoints.push(format!("{}:{p}", s(a, "/ip")));
                    }
                }
            }
            let text = if endpoints.len() > 3 {
                format!("{} + {} more...", endpoints[..3].join(","), endpoints.len() - 3)
            } else {
                endpoints.join(",")
            };
            vec![name, json!(or_none(text)), age_cell]
        }
        ("", "PersistentVolumeClaim") => {
            let modes: Vec<&str> = o
                .pointer("/status/accessModes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(short_mode)
                .collect();
            vec![
                name,
                json!(s(o, "/status/phase")),
                json!(s(o, "/spec/volumeName")),
                json!(s(o, "/status/capacity/storage")),
                json!(modes.join(",")),
                json!(or_none(s(o, "/spec/storageClassName").into())),
                age_cell,
                json!(s(o, "/spec/volumeMode")),
            ]
        }
        ("", "PersistentVolume") => {
            let modes: Vec<&str> = o
                .pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(short_mode)
                .collect();
            let claim = if s(o, "/spec/claimRef/name").is_empty() {
                String::new()
            } else {
                format!("{}/{}", s(o, "/spec/claimRef/namespace"), s(o, "/spec/claimRef/name"))
            };
            vec![
                name,
                json!(s(o, "/spec/capacity/storage")),
                json!(modes.join(",")),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(o, "/status/phase")),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!(s(o, "/status/reason")),
                age_cell,
            ]
        }
        ("", "Event") => {
            let last = [s(o, "/lastTimestamp"), s(o, "/eventTime"), s(o, "/metadata/creationTimestamp")]
                .into_iter()
                .find(|t| !t.is_empty())
                .unwrap_or("");
            let object = format!("{}/{}", s(o, "/involvedObject/kind").to_lowercase(), s(o, "/involvedObject/name"));
            vec![
                json!(age(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(object),
                json!(s(o, "/message").trim()),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let hosts: Vec<&str> = o
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| s(r, "/host"))
                .filter(|h| !h.is_empty())
                .collect();
            let address: Vec<&str> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|a| s(a, "/ip"))
                .collect();
            let ports = if o.pointer("/spec/tls").is_some() { "80, 443" } else { "80" };
            vec![
                name,
                json!(or_none(s(o, "/spec/ingressClassName").into())),
                json!(if hosts.is_empty() { "*".into() } else { hosts.join(",") }),
                json!(address.join(",")),
                json!(ports),
                age_cell,
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let mut n = name_of(o);
            if o.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class").and_then(Value::as_str)
                == Some("true")
            {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(s(o, "/provisioner")),
                json!(o.get("reclaimPolicy").and_then(Value::as_str).unwrap_or("Delete")),
                json!(o.get("volumeBindingMode").and_then(Value::as_str).unwrap_or("Immediate")),
                json!(o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false).to_string()),
                age_cell,
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(o, "/spec/holderIdentity")), age_cell]
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            let mut condition: Vec<String> = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("type").and_then(Value::as_str).map(String::from))
                .collect();
            if o.pointer("/status/certificate").and_then(Value::as_str).is_some_and(|c| !c.is_empty()) {
                condition.push("Issued".into());
            }
            let condition = if condition.is_empty() { "Pending".to_string() } else { condition.join(",") };
            let duration = o
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(human_duration)
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                age_cell,
                json!(s(o, "/spec/signerName")),
                json!(s(o, "/spec/username")),
                json!(duration),
                json!(condition),
            ]
        }
        ("apiregistration.k8s.io", "APIService") => {
            let service = match (o.pointer("/spec/service/namespace"), o.pointer("/spec/service/name")) {
                (Some(ns), Some(n)) => format!("{}/{}", ns.as_str().unwrap_or(""), n.as_str().unwrap_or("")),
                _ => "Local".to_string(),
            };
            let available = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Available"))
                .map(|c| {
                    let status = c.get("status").and_then(Value::as_str).unwrap_or("Unknown");
                    match c.get("reason").and_then(Value::as_str) {
                        Some(reason) if status != "True" => format!("{status} ({reason})"),
                        _ => status.to_string(),
                    }
                })
                .unwrap_or_else(|| "Unknown".into());
            vec![name, json!(service), json!(available), age_cell]
        }
        ("", "ComponentStatus") => {
            let healthy = o.pointer("/conditions/0/status").and_then(Value::as_str) == Some("True");
            vec![
                name,
                json!(if healthy { "Healthy" } else { "Unhealthy" }),
                json!(s(o, "/conditions/0/message")),
                json!(""),
            ]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name,
            json!(i(o, "/value")),
            json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
            age_cell,
        ],
        _ => vec![name, age_cell],
    }
}

fn short_mode(mode: &str) -> &str {
    match mode {
        "ReadWriteOnce" => "RWO",
        "ReadOnlyMany" => "ROX",
        "ReadWriteMany" => "RWX",
        "ReadWriteOncePod" => "RWOP",
        other => other,
    }
}

/// Evaluates a simple JSON path (`.spec.replicas`, `.status.conditions[0].type`).
pub fn json_path(object: &Value, path: &str) -> Option<Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current = object;
    for part in path.trim_start_matches('.').split('.') {
        if part.is_empty() {
            continue;
        }
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !field.is_empty() {
            current = current.get(field)?;
        }
        if let Some(i) = index {
            current = current.get(i)?;
        }
    }
    Some(current.clone())
}

fn seconds_since(timestamp: &str) -> Option<i64> {
    let t: jiff::Timestamp = timestamp.parse().ok()?;
    Some((jiff::Timestamp::now() - t).get_seconds())
}

/// kubectl's human-readable age (`5m`, `3h12m`, `2d`).
pub fn age(timestamp: &str) -> String {
    match seconds_since(timestamp) {
        Some(seconds) => human_duration(seconds),
        None => "<unknown>".into(),
    }
}

fn span(start: &str, end: Option<&str>) -> String {
    let Ok(s) = start.parse::<jiff::Timestamp>() else {
        return String::new();
    };
    let e = end.and_then(|e| e.parse::<jiff::Timestamp>().ok()).unwrap_or_else(jiff::Timestamp::now);
    human_duration((e - s).get_seconds())
}

/// apimachinery's `duration.HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let years = days / 365;
    let pair = |a: i64, au: &str, b: i64, bu: &str| {
        if b == 0 { format!("{a}{au}") } else { format!("{a}{au}{b}{bu}") }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        pair(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        pair(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        pair(days, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        pair(years, "y", days % 365, "d")
    } else {
        format!("{years}y")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn human_durations_match_kubectl() {
        for (s, expected) in [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 120, "3h2m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (20 * 86400, "20d"),
        ] {
            assert_eq!(human_duration(s), expected, "{s}");
        }
    }

    #[test]
    fn pod_rows_have_ready_status_restarts() {
        let pods = Catalog::builtin().snapshot().get("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": crate::registry::now()},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1}, {"name": "b", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table(&pods, &[pod], Some("5"), true, "Metadata");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "CrashLoopBackOff");
        assert_eq!(cells[3], "1");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), cells.as_array().unwrap().len());
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn every_builtin_row_matches_its_columns() {
        let snapshot = Catalog::builtin().snapshot();
        let object = json!({"metadata": {"name": "x", "creationTimestamp": "2025-01-01T00:00:00Z"}});
        for rt in snapshot.types.values() {
            let t = table(rt, std::slice::from_ref(&object), None, true, "None");
            assert_eq!(
                t["columnDefinitions"].as_array().unwrap().len(),
                t["rows"][0]["cells"].as_array().unwrap().len(),
                "{}",
                rt.kind
            );
        }
    }

    #[test]
    fn json_paths() {
        let o = json!({"spec": {"replicas": 3, "list": [{"a": 1}]}});
        assert_eq!(json_path(&o, ".spec.replicas"), Some(json!(3)));
        assert_eq!(json_path(&o, ".spec.list[0].a"), Some(json!(1)));
        assert_eq!(json_path(&o, ".spec.missing"), None);
    }
}
