//! Per-kind behaviour on top of the generic registry: defaulting, extra validation and the
//! fields each kind can be selected by. A kind without an entry here behaves generically.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::catalog::ResourceType;
use crate::error::Cause;

/// Fills in the defaults a real API server adds on create (and, for templates, on update).
pub fn default_object(rt: &ResourceType, object: &mut Value) {
    if rt.is_custom() {
        return;
    }
    if rt.group == "admissionregistration.k8s.io" {
        crate::admission::registration::default(&rt.kind, object);
    }
    // Go writes non-pointer structs even when empty: the status of a kind that has one, and the
    // metadata of embedded templates (whose creationTimestamp is then null).
    if rt.has_status {
        // Zero counts Go writes (non-omitempty integers) in a new object's status.
        let zeros: &[&str] = match (rt.group.as_str(), rt.kind.as_str()) {
            ("apps", "ReplicaSet" | "StatefulSet") | ("", "ReplicationController") => &["replicas"],
            ("apps", "DaemonSet") => {
                &["currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"]
            }
            ("policy", "PodDisruptionBudget") => {
                &["currentHealthy", "desiredHealthy", "disruptionsAllowed", "expectedPods"]
            }
            _ => &[],
        };
        let status = ensure_object(object, "status");
        for field in zeros {
            status.entry(*field).or_insert(json!(0));
        }
        if rt.group == "networking.k8s.io" && rt.kind == "Ingress" {
            status.entry("loadBalancer").or_insert(json!({}));
        }
    }
    for template in ["/spec/template", "/template", "/spec/jobTemplate", "/spec/jobTemplate/spec/template"] {
        if let Some(Value::Object(template)) = object.pointer_mut(template) {
            let metadata = template.entry("metadata").or_insert_with(|| json!({}));
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.entry("creationTimestamp").or_insert(Value::Null);
            }
        }
    }
    if let Some(claims) = object.pointer_mut("/spec/volumeClaimTemplates").and_then(Value::as_array_mut) {
        for claim in claims.iter_mut().filter_map(Value::as_object_mut) {
            let metadata = claim.entry("metadata").or_insert_with(|| json!({}));
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.entry("creationTimestamp").or_insert(Value::Null);
            }
        }
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(class) = object.as_object_mut() {
                class.entry("preemptionPolicy").or_insert(json!("PreemptLowerPriority"));
            }
        }
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec") {
                default_pod_spec(spec);
            }
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                // SetDefaults_Pod and the DefaultTolerationSeconds admission plugin (priority and
                // preemption policy: `admission::priority`).
                spec.entry("enableServiceLinks").or_insert(json!(true));
                let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
                if let Some(list) = tolerations.as_array_mut() {
                    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
                        let tolerated = list.iter().any(|t| {
                            let key_matches =
                                t.get("key").and_then(Value::as_str).is_none_or(|k| k == key || k.is_empty());
                            let effect_matches = t
                                .get("effect")
                                .and_then(Value::as_str)
                                .is_none_or(|e| e == "NoExecute" || e.is_empty());
                            key_matches
                                && effect_matches
                                && (t.get("key").is_some() || t.get("operator") == Some(&json!("Exists")))
                        });
                        if !tolerated {
                            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                        }
                    }
                }
            }
            // SetDefaults_Pod: a limit without a request is also the request.
            for list in ["/spec/containers", "/spec/initContainers"] {
                for container in object.pointer_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                    let Some(limits) = container.pointer("/resources/limits").and_then(Value::as_object).cloned()
                    else {
                        continue;
                    };
                    let resources = ensure_object(container, "resources");
                    let requests = resources.entry("requests").or_insert_with(|| json!({}));
                    if let Some(requests) = requests.as_object_mut() {
                        for (name, quantity) in limits {
                            requests.entry(name).or_insert(quantity);
                        }
                    }
                }
            }
            let qos = qos_class(object.get("spec").unwrap_or(&Value::Null));
            let status = ensure_object(object, "status");
            status.entry("phase").or_insert(json!("Pending"));
            status.entry("qosClass").or_insert(json!(qos));
        }
        ("", "Service") => {
            let spec = ensure_object(object, "spec");
            spec.entry("type").or_insert(json!("ClusterIP"));
            spec.entry("sessionAffinity").or_insert(json!("None"));
            let is_external_name = spec.get("type") == Some(&json!("ExternalName"));
            if !is_external_name {
                spec.entry("internalTrafficPolicy").or_insert(json!("Cluster"));
                spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
                spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports {
                    if let Some(port) = port.as_object_mut() {
                        port.entry("protocol").or_insert(json!("TCP"));
                        if let Some(number) = port.get("port").cloned() {
                            port.entry("targetPort").or_insert(number);
                        }
                    }
                }
            }
            let is_lb_or_np = matches!(spec.get("type").and_then(Value::as_str), Some("NodePort" | "LoadBalancer"));
            if is_lb_or_np {
                spec.entry("externalTrafficPolicy").or_insert(json!("Cluster"));
            }
            ensure_object(object, "status").entry("loadBalancer").or_insert(json!({}));
        }
        ("", "Secret") => {
            let map = object.as_object_mut().expect("objects are maps");
            map.entry("type").or_insert(json!("Opaque"));
            if let Some(Value::Object(string_data)) = map.remove("stringData") {
                let data = map.entry("data").or_insert(json!({}));
                if !data.is_object() {
                    *data = json!({});
                }
                for (key, value) in string_data {
                    let text = value.as_str().unwrap_or_default();
                    data[key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
        }
        ("", "Namespace") => {
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let meta = ensure_object(object, "metadata");
            let labels = meta.entry("labels").or_insert(json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            labels["kubernetes.io/metadata.name"] = json!(name);
            ensure_object(object, "spec").entry("finalizers").or_insert(json!(["kubernetes"]));
            ensure_object(object, "status").entry("phase").or_insert(json!("Active"));
        }
        ("", "PersistentVolumeClaim") => {
            ensure_object(object, "spec").entry("volumeMode").or_insert(json!("Filesystem"));
            ensure_object(object, "status").entry("phase").or_insert(json!("Pending"));
        }
        ("", "PersistentVolume") => {
            let spec = ensure_object(object, "spec");
            spec.entry("persistentVolumeReclaimPolicy").or_insert(json!("Retain"));
            spec.entry("volumeMode").or_insert(json!("Filesystem"));
            ensure_object(object, "status").entry("phase").or_insert(json!("Pending"));
        }
        ("", "ReplicationController") => {
            let spec = ensure_object(object, "spec");
            spec.entry("replicas").or_insert(json!(1));
            default_template(object);
            // An empty selector (and empty labels) default to the template's labels.
            let template_labels = object.pointer("/spec/template/metadata/labels").cloned();
            if let Some(labels) = template_labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
                if object.pointer("/spec/selector").and_then(Value::as_object).is_none_or(|m| m.is_empty()) {
                    object["spec"]["selector"] = labels.clone();
                }
                if object.pointer("/metadata/labels").and_then(Value::as_object).is_none_or(|m| m.is_empty()) {
                    object["metadata"]["labels"] = labels;
                }
            }
        }
        ("apps", "Deployment") => {
            let spec = ensure_object(object, "spec");
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            let strategy = spec.entry("strategy").or_insert(json!({}));
            if let Some(strategy) = strategy.as_object_mut() {
                strategy.entry("type").or_insert(json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    let rolling = strategy.entry("rollingUpdate").or_insert(json!({}));
                    if let Some(rolling) = rolling.as_object_mut() {
                        rolling.entry("maxSurge").or_insert(json!("25%"));
                        rolling.entry("maxUnavailable").or_insert(json!("25%"));
                    }
                }
            }
            default_template(object);
        }
        ("apps", "ReplicaSet") => {
            ensure_object(object, "spec").entry("replicas").or_insert(json!(1));
            default_template(object);
        }
        ("apps", "StatefulSet") => {
            ensure_object(object, "status").entry("availableReplicas").or_insert(json!(0));
            let spec = ensure_object(object, "spec");
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("podManagementPolicy").or_insert(json!("OrderedReady"));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("updateStrategy").or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
            spec.entry("persistentVolumeClaimRetentionPolicy")
                .or_insert(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
            if let Some(templates) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
                for template in templates {
                    ensure_object(template, "spec").entry("volumeMode").or_insert(json!("Filesystem"));
                }
            }
            default_template(object);
        }
        ("apps", "DaemonSet") => {
            let spec = ensure_object(object, "spec");
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("updateStrategy")
                .or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}));
            default_template(object);
        }
        ("batch", "Job") => {
            let uid = object.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let manual = object.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
            if !manual && object.pointer("/spec/selector").is_none() && !uid.is_empty() {
                // What the real server generates: a selector on the job's uid, echoed in the template.
                let spec = ensure_object(object, "spec");
                spec.insert("selector".into(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
                if let Some(template) = object.pointer_mut("/spec/template") {
                    let metadata = ensure_object(template, "metadata");
                    let labels = metadata.entry("labels").or_insert(json!({}));
                    if labels.is_object() {
                        labels["batch.kubernetes.io/controller-uid"] = json!(uid);
                        labels["batch.kubernetes.io/job-name"] = json!(name);
                        labels["controller-uid"] = json!(uid);
                        labels["job-name"] = json!(name);
                    }
                }
            }
            let spec = ensure_object(object, "spec");
            spec.entry("completions").or_insert(json!(1));
            spec.entry("parallelism").or_insert(json!(1));
            spec.entry("backoffLimit").or_insert(json!(6));
            spec.entry("completionMode").or_insert(json!("NonIndexed"));
            spec.entry("suspend").or_insert(json!(false));
            spec.entry("podReplacementPolicy").or_insert(json!("TerminatingOrFailed"));
            spec.entry("manualSelector").or_insert(json!(false));
            default_template(object);
        }
        ("batch", "CronJob") => {
            let spec = ensure_object(object, "spec");
            spec.entry("concurrencyPolicy").or_insert(json!("Allow"));
            spec.entry("suspend").or_insert(json!(false));
            spec.entry("successfulJobsHistoryLimit").or_insert(json!(3));
            spec.entry("failedJobsHistoryLimit").or_insert(json!(1));
            if let Some(job_spec) = object.pointer_mut("/spec/jobTemplate/spec")
                && let Some(pod_spec) = job_spec.pointer_mut("/template/spec")
            {
                default_pod_spec(pod_spec);
            }
        }
        ("", "LimitRange") => {
            // A limit's default request is its default limit unless given.
            for limit in object.pointer_mut("/spec/limits").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(default) = limit.get("default").cloned()
                    && let Some(limit) = limit.as_object_mut()
                {
                    let requests = limit.entry("defaultRequest").or_insert_with(|| json!({}));
                    if let (Some(requests), Some(default)) = (requests.as_object_mut(), default.as_object()) {
                        for (resource, quantity) in default {
                            requests.entry(resource.clone()).or_insert(quantity.clone());
                        }
                    }
                }
            }
        }
        ("", "PodTemplate") => {
            if let Some(spec) = object.pointer_mut("/template/spec") {
                default_pod_spec(spec);
            }
        }
        ("", "Endpoints") => {
            for subset in object.get_mut("subsets").and_then(Value::as_array_mut).into_iter().flatten() {
                for port in subset.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(port) = port.as_object_mut() {
                        port.entry("protocol").or_insert(json!("TCP"));
                    }
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            for endpoint in object.get_mut("endpoints").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(endpoint) = endpoint.as_object_mut() {
                    endpoint.entry("conditions").or_insert(json!({}));
                }
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            // Ingress always; Egress when egress rules are given.
            let has_egress = object.pointer("/spec/egress").is_some();
            let spec = ensure_object(object, "spec");
            spec.entry("policyTypes")
                .or_insert_with(|| if has_egress { json!(["Ingress", "Egress"]) } else { json!(["Ingress"]) });
        }
        _ => {}
    }
}

fn default_template(object: &mut Value) {
    if let Some(spec) = object.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// Ensures `object[field]` is a map and returns it.
pub fn ensure_object<'a>(object: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    let map = object.as_object_mut().expect("objects are maps");
    let entry = map.entry(field.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made a map")
}

/// The pod spec defaults (also applied to pod templates).
pub fn default_pod_spec(spec: &mut Value) {
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName").or_insert(json!("default-scheduler"));
    spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
    spec.entry("securityContext").or_insert(json!({}));
    for key in ["containers", "initContainers"] {
        if let Some(containers) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for container in containers {
                let Some(c) = container.as_object_mut() else {
                    continue;
                };
                c.entry("terminationMessagePath").or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let policy = if image_is_latest(image) { "Always" } else { "IfNotPresent" };
                c.entry("imagePullPolicy").or_insert(json!(policy));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for port in ports {
                        if let Some(p) = port.as_object_mut() {
                            p.entry("protocol").or_insert(json!("TCP"));
                        }
                    }
                }
            }
        }
    }
}

fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// A pod's QoS class (`Guaranteed`, `Burstable`, `BestEffort`) from its spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let has = |k: &str| limits.is_some_and(|l| l.contains_key(k));
        let equal = |k: &str| {
            let limit = limits.and_then(|l| l.get(k));
            let request = requests.and_then(|r| r.get(k));
            request.is_none() || request == limit
        };
        if !(has("cpu") && has("memory") && equal("cpu") && equal("memory")) {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// What an update keeps from the stored object when the writer left it out: a pod's QoS class
/// (upstream backfills it, since old kubelets dropped it from status writes).
pub fn backfill_update(rt: &ResourceType, old: &Value, new: &mut Value) {
    if rt.group.is_empty()
        && rt.kind == "Pod"
        && new.pointer("/status/qosClass").and_then(Value::as_str).is_none_or(str::is_empty)
        && let Some(class) = old.pointer("/status/qosClass").filter(|c| c.is_string())
    {
        ensure_object(new, "status").insert("qosClass".into(), class.clone());
    }
}

/// Kind-specific rules of an update, beyond those of the new object alone.
pub fn validate_update(rt: &ResourceType, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    if rt.group.is_empty() && rt.kind == "Pod" {
        // A pod's QoS class is fixed when it is created.
        let class =
            |pod: &Value| pod.pointer("/status/qosClass").and_then(Value::as_str).unwrap_or_default().to_string();
        let (before, after) = (class(old), class(new));
        if before != after {
            causes.push(Cause::invalid("status.qosClass", &after, "field is immutable"));
        }
    }
    if rt.group == "scheduling.k8s.io" && rt.kind == "PriorityClass" {
        // A class's value and preemption policy are fixed (upstream's ValidatePriorityClassUpdate).
        if old.get("value") != new.get("value") {
            causes.push(Cause::forbidden("value", "may not be changed in an update."));
        }
        let policy = |pc: &Value| pc.get("preemptionPolicy").cloned().unwrap_or(Value::Null);
        if policy(old) != policy(new) {
            let after = new.get("preemptionPolicy").and_then(Value::as_str).unwrap_or_default();
            causes.push(Cause::invalid("preemptionPolicy", after, "field is immutable"));
        }
    }
}

/// Kind-specific validation beyond metadata, producing field causes.
pub fn validate(rt: &ResourceType, object: &Value, causes: &mut Vec<Cause>) {
    if rt.is_custom() {
        return;
    }
    if rt.group == "admissionregistration.k8s.io" {
        crate::admission::registration::validate(&rt.kind, object, causes);
    }
    crate::admission::priority::validate(rt, object, causes);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Event") => {
            // core/v1 events: the involved object is in the event's namespace (an event about a
            // cluster-scoped object may live in `default`).
            let event_namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
            let involved = object.pointer("/involvedObject/namespace").and_then(Value::as_str).unwrap_or_default();
            let fits = if involved.is_empty() {
                event_namespace.is_empty() || event_namespace == "default"
            } else {
                involved == event_namespace
            };
            if !fits {
                causes.push(Cause::invalid("involvedObject.namespace", involved, "does not match event.namespace"));
            }
        }
        ("", "Pod") => validate_pod_spec(object.get("spec"), "spec", causes),
        ("apps", "ControllerRevision") if object.get("data").is_none_or(Value::is_null) => {
            causes.push(Cause::required("data", "data is mandatory"));
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => {
            let selector = object.pointer("/spec/selector");
            let generated = rt.kind == "Job";
            if selector.is_none() && !generated {
                causes.push(Cause::required("spec.selector", ""));
            }
            validate_pod_spec(object.pointer("/spec/template/spec"), "spec.template.spec", causes);
            if let Some(selector) = selector.and_then(|s| s.get("matchLabels")).and_then(Value::as_object) {
                let labels = object.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
                let matches = selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                if !matches {
                    let labels_text = labels
                        .map(|l| {
                            l.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    causes.push(Cause::invalid(
                        "spec.template.metadata.labels",
                        &labels_text,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            if let Some(replicas) = object.pointer("/spec/replicas").and_then(Value::as_i64)
                && replicas < 0
            {
                causes.push(Cause::invalid_number("spec.replicas", replicas, "must be greater than or equal to 0"));
            }
        }
        ("", "Service") => {
            let service_type = object.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
            const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
            if !TYPES.contains(&service_type) {
                causes.push(Cause::not_supported("spec.type", service_type, TYPES));
            }
            let headless = object.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
            let ports = object.pointer("/spec/ports").and_then(Value::as_array);
            if service_type != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
                causes.push(Cause::required("spec.ports", ""));
            }
            for (i, port) in ports.into_iter().flatten().enumerate() {
                match port.get("port").and_then(Value::as_i64) {
                    Some(p) if (1..=65535).contains(&p) => {}
                    Some(p) => causes.push(Cause::invalid_number(
                        format!("spec.ports[{i}].port"),
                        p,
                        "must be between 1 and 65535, inclusive",
                    )),
                    None => causes.push(Cause::required(format!("spec.ports[{i}].port"), "")),
                }
            }
        }
        ("batch", "CronJob") => {
            match object.pointer("/spec/schedule").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required("spec.schedule", "")),
                Some(schedule) => {
                    if let Err(error) = vkube_cron::parse(schedule) {
                        causes.push(Cause::invalid(
                            "spec.schedule",
                            schedule,
                            &format!("unparseable schedule: {error}"),
                        ));
                    }
                }
            }
            if let Some(zone) = object.pointer("/spec/timeZone").and_then(Value::as_str)
                && jiff::tz::TimeZone::get(zone).is_err()
            {
                causes.push(Cause::invalid("spec.timeZone", zone, "unknown time zone"));
            }
            for (field, min) in
                [("startingDeadlineSeconds", 0), ("successfulJobsHistoryLimit", 0), ("failedJobsHistoryLimit", 0)]
            {
                if let Some(value) = object.pointer(&format!("/spec/{field}")).and_then(Value::as_i64)
                    && value < min
                {
                    causes.push(Cause::invalid_number(
                        format!("spec.{field}"),
                        value,
                        "must be greater than or equal to 0",
                    ));
                }
            }
            if let Some(policy) = object.pointer("/spec/concurrencyPolicy").and_then(Value::as_str) {
                const POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];
                if !POLICIES.contains(&policy) {
                    causes.push(Cause::not_supported("spec.concurrencyPolicy", policy, POLICIES));
                }
            }
            validate_pod_spec(
                object.pointer("/spec/jobTemplate/spec/template/spec"),
                "spec.jobTemplate.spec.template.spec",
                causes,
            );
        }
        ("", "ReplicationController") => {
            validate_pod_spec(object.pointer("/spec/template/spec"), "spec.template.spec", causes);
            if let Some(selector) = object.pointer("/spec/selector").and_then(Value::as_object) {
                let labels = object.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
                if !selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
                    causes.push(Cause::invalid(
                        "spec.template.metadata.labels",
                        "",
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData"] {
                if let Some(data) = object.get(field).and_then(Value::as_object) {
                    for key in data.keys() {
                        let ok = !key.is_empty()
                            && key.len() <= 253
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                            && key != "."
                            && key != "..";
                        if !ok {
                            causes.push(Cause::invalid(
                                format!("{field}[{key}]"),
                                key,
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let Some(spec) = spec else {
        causes.push(Cause::required(path, ""));
        return;
    };
    match spec.get("containers").and_then(Value::as_array) {
        None => causes.push(Cause::required(format!("{path}.containers"), "")),
        Some(containers) if containers.is_empty() => causes.push(Cause::required(format!("{path}.containers"), "")),
        Some(containers) => {
            let mut seen = std::collections::HashSet::new();
            for (i, c) in containers.iter().enumerate() {
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(format!("{path}.containers[{i}].name"), "")),
                    Some(name) => {
                        if let Err(detail) = crate::validation::dns1123_label(name) {
                            causes.push(Cause::invalid(format!("{path}.containers[{i}].name"), name, &detail));
                        }
                        if !seen.insert(name.to_string()) {
                            causes.push(Cause {
                                reason: "FieldValueDuplicate",
                                field: format!("{path}.containers[{i}].name"),
                                message: format!("Duplicate value: {name:?}"),
                            });
                        }
                    }
                }
                if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("{path}.containers[{i}].image"), ""));
                }
            }
        }
    }
}

/// The value of a selectable field, or `None` when the kind does not support selecting by it.
pub fn field_value(rt: &ResourceType, object: &Value, field: &str) -> Option<String> {
    let text = |pointer: &str| -> String {
        match object.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        }
    };
    match field {
        "metadata.name" => return Some(text("/metadata/name")),
        "metadata.namespace" if rt.namespaced => return Some(text("/metadata/namespace")),
        _ => {}
    }
    let pointer = match (rt.group.as_str(), rt.kind.as_str(), field) {
        ("", "Pod", "spec.nodeName" | "spec.host") => "/spec/nodeName",
        ("", "Pod", "spec.restartPolicy") => "/spec/restartPolicy",
        ("", "Pod", "spec.schedulerName") => "/spec/schedulerName",
        ("", "Pod", "spec.serviceAccountName") => "/spec/serviceAccountName",
        ("", "Pod", "spec.hostNetwork") => {
            return Some(object.pointer("/spec/hostNetwork").and_then(Value::as_bool).unwrap_or(false).to_string());
        }
        ("", "Pod", "status.phase") => "/status/phase",
        ("", "Pod", "status.podIP") => "/status/podIP",
        ("", "Pod", "status.nominatedNodeName") => "/status/nominatedNodeName",
        ("", "Event", f) if f.starts_with("involvedObject.") => {
            return Some(text(&format!("/involvedObject/{}", &f["involvedObject.".len()..])));
        }
        ("", "Event", "reason") => "/reason",
        ("", "Event", "type") => "/type",
        ("", "Event", "reportingComponent") => "/reportingComponent",
        ("", "Event", "source") => "/source/component",
        ("events.k8s.io", "Event", f) if f.starts_with("regarding.") => {
            return Some(text(&format!("/regarding/{}", &f["regarding.".len()..])));
        }
        ("events.k8s.io", "Event", "reason") => "/reason",
        ("events.k8s.io", "Event", "type") => "/type",
        ("events.k8s.io", "Event", "reportingController") => "/reportingController",
        ("", "Secret", "type") => "/type",
        ("certificates.k8s.io", "CertificateSigningRequest", "spec.signerName") => "/spec/signerName",
        ("", "Namespace", "status.phase") => "/status/phase",
        ("", "Node", "spec.unschedulable") => {
            return Some(object.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false).to_string());
        }
        ("", "Service", "spec.clusterIP") => "/spec/clusterIP",
        ("", "Service", "spec.type") => "/spec/type",
        ("", "ReplicationController", "status.replicas") | ("apps", "ReplicaSet", "status.replicas") => {
            return Some(object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0).to_string());
        }
        ("batch", "Job", "status.successful") => {
            return Some(object.pointer("/status/succeeded").and_then(Value::as_i64).unwrap_or(0).to_string());
        }
        _ => return None,
    };
    Some(text(pointer))
}

/// Converts a stored core/v1 Event into its events.k8s.io/v1 form.
pub fn event_to_events_v1(core: &Value) -> Value {
    let mut out = json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": core.get("metadata").cloned().unwrap_or(json!({})),
    });
    let copy = |out: &mut Value, from: &str, to: &str| {
        if let Some(v) = core.get(from)
            && !v.is_null()
        {
            out[to] = v.clone();
        }
    };
    copy(&mut out, "involvedObject", "regarding");
    copy(&mut out, "related", "related");
    copy(&mut out, "message", "note");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingComponent", "reportingController");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "count", "deprecatedCount");
    copy(&mut out, "firstTimestamp", "deprecatedFirstTimestamp");
    copy(&mut out, "lastTimestamp", "deprecatedLastTimestamp");
    copy(&mut out, "source", "deprecatedSource");
    if let Some(series) = core.get("series").filter(|s| !s.is_null()) {
        out["series"] = series.clone();
    }
    if out.get("reportingController").is_none()
        && let Some(c) = core.pointer("/source/component")
    {
        out["reportingController"] = c.clone();
    }
    out
}

/// Converts an events.k8s.io/v1 Event into the stored core/v1 form.
pub fn events_v1_to_event(new: &Value) -> Value {
    let mut out = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": new.get("metadata").cloned().unwrap_or(json!({})),
    });
    let copy = |out: &mut Value, from: &str, to: &str| {
        if let Some(v) = new.get(from)
            && !v.is_null()
        {
            out[to] = v.clone();
        }
    };
    copy(&mut out, "regarding", "involvedObject");
    copy(&mut out, "related", "related");
    copy(&mut out, "note", "message");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "series", "series");
    copy(&mut out, "reportingController", "reportingComponent");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "deprecatedCount", "count");
    copy(&mut out, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(&mut out, "deprecatedLastTimestamp", "lastTimestamp");
    copy(&mut out, "deprecatedSource", "source");
    if out.get("source").is_none()
        && let Some(c) = new.get("reportingController")
    {
        out["source"] = json!({"component": c});
    }
    if out.get("involvedObject").is_none() {
        out["involvedObject"] = json!({});
    }
    out
}

/// What a write through a subresource other than `status` stores: the current object with only
/// the fields that subresource owns taken from `new` (None: not such a subresource).
/// `pods/ephemeralcontainers` owns `spec.ephemeralContainers` (which can only grow);
/// `pods/resize` the containers' `resources` and `resizePolicy`;
/// `certificatesigningrequests/approval` the `status.conditions`.
pub fn subresource_write(
    rt: &ResourceType,
    subresource: &str,
    current: &Value,
    new: &Value,
) -> crate::error::ApiResult<Option<Value>> {
    use crate::error::{ApiError, Cause};
    let invalid = |causes: Vec<Cause>| ApiError::Invalid {
        group: rt.group.clone(),
        kind: rt.kind.clone(),
        name: current.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(),
        causes,
    };
    let mut merged = current.clone();
    match (rt.group.as_str(), rt.kind.as_str(), subresource) {
        ("", "Pod", "binding") => {
            // What upstream's `assignPod` writes: the node, and the PodScheduled condition.
            merged["spec"]["nodeName"] = new.pointer("/spec/nodeName").cloned().unwrap_or(Value::Null);
            let status = ensure_object(&mut merged, "status");
            let conditions = status.entry("conditions").or_insert(json!([]));
            if let Some(list) = conditions.as_array_mut() {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                list.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::registry::now()}));
            }
        }
        ("", "Pod", "ephemeralcontainers") => {
            let before =
                current.pointer("/spec/ephemeralContainers").and_then(Value::as_array).cloned().unwrap_or_default();
            let after = new.pointer("/spec/ephemeralContainers").and_then(Value::as_array).cloned().unwrap_or_default();
            let name = |c: &Value| c.get("name").and_then(Value::as_str).map(String::from);
            for (i, old) in before.iter().enumerate() {
                if !after.iter().any(|c| name(c) == name(old) && c == old) {
                    return Err(invalid(vec![Cause::forbidden(
                        format!("spec.ephemeralContainers[{i}]"),
                        "existing ephemeral containers may not be changed or removed",
                    )]));
                }
            }
            let ordinary: Vec<String> = ["containers", "initContainers"]
                .iter()
                .flat_map(|f| {
                    current.pointer(&format!("/spec/{f}")).and_then(Value::as_array).cloned().unwrap_or_default()
                })
                .filter_map(|c| name(&c))
                .collect();
            for (i, container) in after.iter().enumerate() {
                let container_name = name(container).unwrap_or_default();
                if container_name.is_empty() {
                    return Err(invalid(vec![Cause::required(format!("spec.ephemeralContainers[{i}].name"), "")]));
                }
                if ordinary.contains(&container_name) {
                    return Err(invalid(vec![Cause::duplicate(
                        format!("spec.ephemeralContainers[{i}].name"),
                        &container_name,
                    )]));
                }
            }
            ensure_object(&mut merged, "spec").insert("ephemeralContainers".into(), Value::Array(after));
        }
        ("", "Pod", "resize") => {
            let current_names: Vec<Option<&str>> = current
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            let wanted = new.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
            let wanted_names: Vec<Option<&str>> =
                wanted.iter().map(|c| c.get("name").and_then(Value::as_str)).collect();
            if wanted_names != current_names {
                return Err(invalid(vec![Cause::forbidden("spec", "only cpu and memory resources are mutable")]));
            }
            if let Some(containers) = merged.pointer_mut("/spec/containers").and_then(Value::as_array_mut) {
                for (container, wanted) in containers.iter_mut().zip(&wanted) {
                    for field in ["resources", "resizePolicy"] {
                        match wanted.get(field) {
                            Some(value) => container[field] = value.clone(),
                            None => {
                                if let Some(map) = container.as_object_mut() {
                                    map.remove(field);
                                }
                            }
                        }
                    }
                }
            }
        }
        ("certificates.k8s.io", "CertificateSigningRequest", "approval") => {
            let conditions = new.pointer("/status/conditions").cloned().unwrap_or(json!([]));
            ensure_object(&mut merged, "status").insert("conditions".into(), conditions);
            // Metadata changes (labels, annotations) come along, as upstream's approval
            // strategy keeps them.
            if let Some(metadata) = new.get("metadata").filter(|m| m.is_object()) {
                merged["metadata"] = metadata.clone();
            }
        }
        _ => return Ok(None),
    }
    if let Some(managed) = new.pointer("/metadata/managedFields") {
        merged["metadata"]["managedFields"] = managed.clone();
    }
    Ok(Some(merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn rt(group: &str, plural: &str) -> std::sync::Arc<ResourceType> {
        Catalog::builtin().snapshot().get(group, "v1", plural).unwrap()
    }

    #[test]
    fn approvals_carry_conditions_and_metadata_only() {
        let csr = rt("certificates.k8s.io", "certificatesigningrequests");
        let current = json!({"metadata": {"name": "c"}, "spec": {"signerName": "a"}, "status": {}});
        let new = json!({"metadata": {"name": "c", "annotations": {"patchedapproval": "true"}}, "spec": {"signerName": "b"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        let merged = subresource_write(&csr, "approval", &current, &new).unwrap().unwrap();
        assert_eq!(merged["metadata"]["annotations"]["patchedapproval"], "true");
        assert_eq!(merged["spec"]["signerName"], "a");
        assert_eq!(merged["status"]["conditions"][0]["type"], "Approved");
    }

    #[test]
    fn pod_defaults_match_upstream() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx"}, {"name": "b", "image": "nginx:1.27"}]}});
        default_object(&rt("", "pods"), &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn a_pods_qos_class_is_kept_and_cannot_change() {
        let pods = rt("", "pods");
        let old = json!({"status": {"phase": "Running", "qosClass": "BestEffort"}});
        let mut without = json!({"status": {"phase": "Succeeded"}});
        backfill_update(&pods, &old, &mut without);
        assert_eq!(without["status"]["qosClass"], "BestEffort", "a write that leaves it out keeps it");
        let mut causes = Vec::new();
        validate_update(&pods, &old, &without, &mut causes);
        assert!(causes.is_empty());
        let changed = json!({"status": {"qosClass": "Guaranteed"}});
        validate_update(&pods, &old, &changed, &mut causes);
        assert_eq!(causes[0].line(), "status.qosClass: Invalid value: \"Guaranteed\": field is immutable");
        let classes = rt("scheduling.k8s.io", "priorityclasses");
        let old = json!({"value": 10, "preemptionPolicy": "PreemptLowerPriority", "description": "a"});
        let mut causes = Vec::new();
        validate_update(
            &classes,
            &old,
            &json!({"value": 10, "preemptionPolicy": "PreemptLowerPriority", "description": "b"}),
            &mut causes,
        );
        assert!(causes.is_empty(), "the description may change");
        validate_update(&classes, &old, &json!({"value": 100, "preemptionPolicy": "Never"}), &mut causes);
        let lines: Vec<String> = causes.iter().map(Cause::line).collect();
        assert_eq!(
            lines,
            [
                "value: Forbidden: may not be changed in an update.",
                "preemptionPolicy: Invalid value: \"Never\": field is immutable"
            ]
        );
    }

    #[test]
    fn secret_string_data_becomes_base64_data() {
        let mut secret = json!({"metadata": {"name": "s"}, "stringData": {"password": "hunter2"}});
        default_object(&rt("", "secrets"), &mut secret);
        assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
        assert_eq!(secret["type"], "Opaque");
        assert!(secret.get("stringData").is_none());
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let mut causes = Vec::new();
        validate(&rt("apps", "deployments"), &d, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn pod_field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let pods = rt("", "pods");
        assert_eq!(field_value(&pods, &pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(field_value(&pods, &pod, "status.phase").as_deref(), Some("Running"));
        assert_eq!(field_value(&pods, &pod, "metadata.namespace").as_deref(), Some("d"));
        assert_eq!(field_value(&pods, &pod, "spec.foo"), None);
        let nodes = rt("", "nodes");
        assert_eq!(field_value(&nodes, &pod, "metadata.namespace"), None);
    }

    #[test]
    fn events_round_trip_between_group_versions() {
        let core = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"},
            "message": "hello", "reason": "Started", "type": "Normal", "count": 2,
            "reportingComponent": "kubelet"});
        let new = event_to_events_v1(&core);
        assert_eq!(new["note"], "hello");
        assert_eq!(new["regarding"]["name"], "p");
        assert_eq!(new["deprecatedCount"], 2);
        let back = events_v1_to_event(&new);
        assert_eq!(back["message"], "hello");
        assert_eq!(back["involvedObject"]["kind"], "Pod");
        assert_eq!(back["count"], 2);
    }
}
