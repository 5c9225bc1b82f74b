//! Resource quota, decided as kube-apiserver and kube-controller-manager decide it: what an
//! object uses ([`usage`]), which quotas it counts against (scopes), the usage a quota's status
//! shows ([`calculate_used`]) and the admission check of a write ([`admit`]). Pure functions on
//! JSON objects; the API server and the quota controller do the I/O.

pub mod limits;
pub mod quantity;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

pub use quantity::Quantity;

/// Resource name → quantity, sorted by name (as quota errors print them).
pub type ResourceList = BTreeMap<String, Quantity>;

/// Reads a `ResourceList` JSON map; entries that are not quantities are left out.
pub fn resource_list(value: Option<&Value>) -> ResourceList {
    let Some(map) = value.and_then(Value::as_object) else { return ResourceList::new() };
    map.iter().filter_map(|(name, q)| Some((name.clone(), Quantity::parse(q.as_str()?).ok()?))).collect()
}

/// A `ResourceList` as JSON (canonical quantities).
pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(list.iter().map(|(name, q)| (name.clone(), Value::String(q.to_string()))).collect())
}

/// A resource kind the quota system knows: (API group, plural).
pub type Kind = (String, String);

const POD_NAMES: &[&str] = &[
    "pods",
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];
const SERVICE_NAMES: &[&str] = &["services", "count/services", "services.nodeports", "services.loadbalancers"];
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// The object-count name of a kind (`count/pods`, `count/replicasets.apps`).
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") }
}

/// The pre-`count/` name some core kinds are also counted under.
fn legacy_count_name(group: &str, plural: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    Some(match plural {
        "services" => "services",
        "replicationcontrollers" => "replicationcontrollers",
        "resourcequotas" => "resourcequotas",
        "secrets" => "secrets",
        "configmaps" => "configmaps",
        "persistentvolumeclaims" => "persistentvolumeclaims",
        _ => return None,
    })
}

/// Whether `name` is an extended resource (`example.com/dongle`): outside `kubernetes.io/`.
fn is_extended(name: &str) -> bool {
    name.contains('/')
        && !name.starts_with("kubernetes.io/")
        && !name.contains(".kubernetes.io/")
        && !name.starts_with("requests.")
}

/// Whether the evaluator of `kind` tracks the quota resource `name`.
pub fn tracks(group: &str, plural: &str, name: &str) -> bool {
    match (group, plural) {
        ("", "pods") => {
            POD_NAMES.contains(&name)
                || name.starts_with("hugepages-")
                || name.strip_prefix("requests.").is_some_and(|r| r.starts_with("hugepages-") || is_extended(r))
        }
        ("", "services") => SERVICE_NAMES.contains(&name),
        ("", "persistentvolumeclaims") => {
            matches!(name, "persistentvolumeclaims" | "count/persistentvolumeclaims" | "requests.storage")
                || name.split_once(STORAGE_CLASS_SUFFIX).is_some_and(|(class, rest)| {
                    !class.is_empty() && matches!(rest, "requests.storage" | "persistentvolumeclaims")
                })
        }
        _ => name == count_name(group, plural) || legacy_count_name(group, plural) == Some(name),
    }
}

/// The kind whose objects a quota resource name counts, if any.
pub fn kind_of(name: &str) -> Option<Kind> {
    let core = |plural: &str| Some((String::new(), plural.to_string()));
    for plural in ["pods", "services", "persistentvolumeclaims"] {
        if tracks("", plural, name) {
            return core(plural);
        }
    }
    if let Some(rest) = name.strip_prefix("count/") {
        return match rest.split_once('.') {
            Some((plural, group)) => Some((group.to_string(), plural.to_string())),
            None => core(rest),
        };
    }
    match name {
        "replicationcontrollers" | "resourcequotas" | "secrets" | "configmaps" => core(name),
        _ => None,
    }
}

/// The names of `hard` that `kind` tracks.
fn matching(group: &str, plural: &str, hard: &ResourceList) -> BTreeSet<String> {
    hard.keys().filter(|name| tracks(group, plural, name)).cloned().collect()
}

fn add_to(list: &mut ResourceList, name: &str, q: Quantity) {
    list.entry(name.to_string()).and_modify(|have| *have = *have + q).or_insert(q);
}

fn one() -> Quantity {
    Quantity::from_int(1)
}

/// What `object` of `kind` uses, as upstream's evaluators count it. `now` is the Unix time in
/// seconds (a pod past its deletion grace period no longer uses compute resources).
pub fn usage(group: &str, plural: &str, object: &Value, now: i64) -> ResourceList {
    let mut result = ResourceList::new();
    result.insert(count_name(group, plural), one());
    if let Some(legacy) = legacy_count_name(group, plural) {
        result.insert(legacy.to_string(), one());
    }
    match (group, plural) {
        ("", "pods") if pod_uses_compute(object, now) => pod_compute_usage(object, &mut result),
        ("", "services") => {
            let spec = &object["spec"];
            let ports = spec["ports"].as_array().map_or(0, Vec::len) as i64;
            match spec["type"].as_str() {
                Some("NodePort") => {
                    result.insert("services.nodeports".into(), Quantity::from_int(ports));
                }
                Some("LoadBalancer") => {
                    if spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false) {
                        result.insert("services.nodeports".into(), Quantity::from_int(ports));
                    }
                    result.insert("services.loadbalancers".into(), one());
                }
                _ => {}
            }
        }
        ("", "persistentvolumeclaims") => {
            let class = object
                .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
                .or_else(|| object.pointer("/spec/storageClassName"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !class.is_empty() {
                result.insert(format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"), one());
            }
            let requested = resource_list(object.pointer("/spec/resources/requests")).remove("storage");
            let allocated = resource_list(object.pointer("/status/allocatedResources")).remove("storage");
            let storage = match (requested, allocated) {
                (Some(r), Some(a)) => Some(Ord::max(r, a)),
                (r, a) => r.or(a),
            };
            if let Some(storage) = storage {
                result.insert("requests.storage".into(), storage);
                if !class.is_empty() {
                    result.insert(format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"), storage);
                }
            }
        }
        _ => {}
    }
    result
}

/// Whether a pod still uses compute resources: not Succeeded or Failed, and not past the end of
/// its deletion grace period.
fn pod_uses_compute(pod: &Value, now: i64) -> bool {
    if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
        return false;
    }
    let deletion = pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str);
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
    if let (Some(deletion), Some(grace)) = (deletion, grace)
        && let Ok(at) = deletion.parse::<jiff::Timestamp>()
        && now > at.as_second() + grace
    {
        return false;
    }
    true
}

fn add_list(into: &mut ResourceList, from: &ResourceList) {
    for (name, q) in from {
        add_to(into, name, *q);
    }
}

fn max_list(into: &mut ResourceList, from: &ResourceList) {
    for (name, q) in from {
        into.entry(name.clone()).and_modify(|have| *have = (*have).max(*q)).or_insert(*q);
    }
}

/// A pod's effective requests, as the scheduler counts them ([`pod_resources`]).
pub fn pod_requests(pod: &Value) -> ResourceList {
    pod_resources(pod, "requests")
}

/// A pod's effective requests or limits (`field`): the containers' sum, at least each init
/// container's (with the sidecars started before it), plus the pod overhead.
pub(crate) fn pod_resources(pod: &Value, field: &str) -> ResourceList {
    let spec = &pod["spec"];
    let of = |c: &Value| resource_list(c.pointer(&format!("/resources/{field}")));
    let mut total = ResourceList::new();
    for container in spec["containers"].as_array().into_iter().flatten() {
        add_list(&mut total, &of(container));
    }
    let mut sidecars = ResourceList::new();
    let mut init = ResourceList::new();
    for container in spec["initContainers"].as_array().into_iter().flatten() {
        let own = of(container);
        let step = if container["restartPolicy"].as_str() == Some("Always") {
            add_list(&mut total, &own);
            add_list(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut step = own;
            add_list(&mut step, &sidecars);
            step
        };
        max_list(&mut init, &step);
    }
    max_list(&mut total, &init);
    let overhead = resource_list(spec.get("overhead"));
    if field == "requests" {
        add_list(&mut total, &overhead);
    } else {
        for (name, q) in overhead {
            if let Some(have) = total.get_mut(&name) {
                *have = *have + q;
            }
        }
    }
    total
}

fn pod_compute_usage(pod: &Value, result: &mut ResourceList) {
    let requests = pod_resources(pod, "requests");
    let limits = pod_resources(pod, "limits");
    result.insert("pods".into(), one());
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(name) {
            result.insert(name.into(), *q);
            result.insert(format!("requests.{name}"), *q);
        }
        if let Some(q) = limits.get(name) {
            result.insert(format!("limits.{name}"), *q);
        }
    }
    for (name, q) in &requests {
        if name.starts_with("hugepages-") {
            result.insert(name.clone(), *q);
            result.insert(format!("requests.{name}"), *q);
        }
        if is_extended(name) {
            result.insert(format!("requests.{name}"), *q);
        }
    }
}

/// One scope requirement of a quota (`spec.scopes` entries are `Exists` requirements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `Terminating`, `BestEffort`, `PriorityClass` ...
    pub name: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// For `In` and `NotIn`.
    pub values: Vec<String>,
}

/// A quota's scopes: `spec.scopes` and `spec.scopeSelector.matchExpressions`.
pub fn scopes(quota: &Value) -> Vec<Scope> {
    let mut out: Vec<Scope> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|name| Scope { name: name.to_string(), operator: "Exists".into(), values: Vec::new() })
        .collect();
    for expression in
        quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten()
    {
        out.push(Scope {
            name: expression["scopeName"].as_str().unwrap_or_default().to_string(),
            operator: expression["operator"].as_str().unwrap_or_default().to_string(),
            values: expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        });
    }
    out
}

fn best_effort(pod: &Value) -> bool {
    let spec = &pod["spec"];
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    !containers.into_iter().any(|c| {
        ["requests", "limits"].iter().any(|field| {
            let list = resource_list(c.pointer(&format!("/resources/{field}")));
            ["cpu", "memory"].iter().any(|name| list.get(*name).is_some_and(|q| !q.is_zero()))
        })
    })
}

fn cross_namespace_affinity(pod: &Value) -> bool {
    let affinity = &pod.pointer("/spec/affinity").cloned().unwrap_or(Value::Null);
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let terms =
            affinity[kind]["requiredDuringSchedulingIgnoredDuringExecution"].as_array().into_iter().flatten().chain(
                affinity[kind]["preferredDuringSchedulingIgnoredDuringExecution"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|weighted| &weighted["podAffinityTerm"]),
            );
        terms.into_iter().any(|term| {
            term["namespaces"].as_array().is_some_and(|n| !n.is_empty()) || !term["namespaceSelector"].is_null()
        })
    })
}

fn value_matches(scope: &Scope, value: &str) -> bool {
    match scope.operator.as_str() {
        "In" => scope.values.iter().any(|v| v == value),
        "NotIn" => !scope.values.iter().any(|v| v == value),
        "Exists" => !value.is_empty(),
        "DoesNotExist" => value.is_empty(),
        _ => false,
    }
}

/// Whether `object` of `kind` is within every scope (no scopes: everything is). Only pods (and
/// claims, for `VolumeAttributesClass`) can be within a scope.
pub fn within_scopes(group: &str, plural: &str, object: &Value, scopes: &[Scope]) -> bool {
    scopes.iter().all(|scope| match (group, plural) {
        ("", "pods") => {
            let deadline = object.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64);
            match scope.name.as_str() {
                "Terminating" => deadline.is_some_and(|d| d >= 0),
                "NotTerminating" => deadline.is_none(),
                "BestEffort" => best_effort(object),
                "NotBestEffort" => !best_effort(object),
                "PriorityClass" => value_matches(
                    scope,
                    object.pointer("/spec/priorityClassName").and_then(Value::as_str).unwrap_or_default(),
                ),
                "CrossNamespacePodAffinity" => cross_namespace_affinity(object),
                _ => false,
            }
        }
        ("", "persistentvolumeclaims") if scope.name == "VolumeAttributesClass" => value_matches(
            scope,
            object.pointer("/spec/volumeAttributesClassName").and_then(Value::as_str).unwrap_or_default(),
        ),
        _ => false,
    })
}

/// The kinds whose objects a quota with `hard` counts.
pub fn kinds(hard: &ResourceList) -> BTreeSet<Kind> {
    hard.keys().filter_map(|name| kind_of(name)).collect()
}

/// `status.used` of `quota` (its `spec.hard` and scopes) over its namespace's objects:
/// `objects(kind)` lists them, `None` when the server has no such kind (its names then stay
/// out of `used`). Every tracked name is present, zero when nothing uses it.
pub fn calculate_used(quota: &Value, objects: &mut dyn FnMut(&Kind) -> Option<Vec<Value>>, now: i64) -> ResourceList {
    let hard = resource_list(quota.pointer("/spec/hard"));
    let scopes = scopes(quota);
    let mut used = ResourceList::new();
    for kind in kinds(&hard) {
        let Some(items) = objects(&kind) else { continue };
        let names = matching(&kind.0, &kind.1, &hard);
        for name in &names {
            used.insert(name.clone(), Quantity::ZERO);
        }
        for item in items.iter().filter(|item| within_scopes(&kind.0, &kind.1, item, &scopes)) {
            for (name, q) in usage(&kind.0, &kind.1, item, now) {
                if names.contains(&name) {
                    add_to(&mut used, &name, q);
                }
            }
        }
    }
    used
}

/// The write being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A create.
    Create,
    /// An update (`old` is the stored object).
    Update,
}

fn pretty(list: &ResourceList) -> String {
    list.iter().map(|(name, q)| format!("{name}={q}")).collect::<Vec<_>>().join(",")
}

/// The requests and limits every container must state when a quota constrains them.
fn constraints(pod: &Value, restricted: &BTreeSet<String>) -> Result<(), String> {
    let required: Vec<&str> = ["cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"]
        .into_iter()
        .filter(|name| restricted.contains(*name))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let spec = &pod["spec"];
    for container in spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
    {
        let requests = resource_list(container.pointer("/resources/requests"));
        let limits = resource_list(container.pointer("/resources/limits"));
        for name in &required {
            let (list, resource) = match name.split_once('.') {
                Some(("limits", resource)) => (&limits, resource),
                Some((_, resource)) => (&requests, resource),
                None => (&requests, *name),
            };
            if !list.contains_key(resource) {
                missing.entry(name).or_default().insert(container["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(name, containers)| format!("{name} for: {}", containers.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// The quota admission check of a write to `kind` in a namespace holding `quotas`: `Ok` with
/// the new `status.used` of each quota the write is charged to (index into `quotas`), or the
/// reason it is refused (kube-apiserver's words, after `... is forbidden: `).
pub fn admit(
    quotas: &[Value],
    group: &str,
    plural: &str,
    operation: Operation,
    new: &Value,
    old: Option<&Value>,
    now: i64,
) -> Result<Vec<(usize, ResourceList)>, String> {
    // Pods are charged when created; services and claims also when they change.
    let handles = match (group, plural) {
        ("", "services" | "persistentvolumeclaims") => true,
        _ => operation == Operation::Create,
    };
    if !handles || quotas.is_empty() {
        return Ok(Vec::new());
    }
    let mut interesting = Vec::new();
    for (index, quota) in quotas.iter().enumerate() {
        let hard = resource_list(quota.pointer("/status/hard"));
        let restricted = matching(group, plural, &hard);
        if restricted.is_empty() || !within_scopes(group, plural, new, &scopes(quota)) {
            continue;
        }
        let name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        if (group, plural) == ("", "pods") {
            constraints(new, &restricted).map_err(|e| format!("failed quota: {name}: {e}"))?;
        }
        let used = resource_list(quota.pointer("/status/used"));
        if restricted.iter().any(|r| !used.contains_key(r)) {
            return Err(format!(
                "status unknown for quota: {name}, resources: {}",
                restricted.iter().cloned().collect::<Vec<_>>().join(",")
            ));
        }
        interesting.push(index);
    }
    if interesting.is_empty() {
        return Ok(Vec::new());
    }
    let mut delta = usage(group, plural, new, now);
    if let Some(old) = old.filter(|_| operation == Operation::Update)
        && old.pointer("/metadata/resourceVersion").and_then(Value::as_str).is_some_and(|rv| !rv.is_empty())
    {
        let before = usage(group, plural, old, now);
        for (name, q) in delta.iter_mut() {
            if let Some(b) = before.get(name) {
                *q = *q - *b;
                if q.is_negative() {
                    *q = Quantity::ZERO;
                }
            }
        }
    }
    delta.retain(|_, q| !q.is_zero());
    if delta.is_empty() {
        return Ok(Vec::new());
    }
    let mut charged = Vec::new();
    for index in interesting {
        let quota = &quotas[index];
        let name = quota.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let hard = resource_list(quota.pointer("/status/hard"));
        let used = resource_list(quota.pointer("/status/used"));
        let requested: ResourceList =
            delta.iter().filter(|(n, _)| hard.contains_key(*n)).map(|(n, q)| (n.clone(), *q)).collect();
        if requested.is_empty() {
            continue;
        }
        let mut new_used = used.clone();
        for (n, q) in &requested {
            add_to(&mut new_used, n, *q);
        }
        let exceeded: BTreeSet<&String> =
            requested.keys().filter(|n| hard.get(*n).is_some_and(|limit| new_used[*n] > *limit)).collect();
        if !exceeded.is_empty() {
            let mask = |list: &ResourceList| -> ResourceList {
                list.iter().filter(|(n, _)| exceeded.contains(n)).map(|(n, q)| (n.clone(), *q)).collect()
            };
            return Err(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                pretty(&mask(&requested)),
                pretty(&mask(&used)),
                pretty(&mask(&hard))
            ));
        }
        charged.push((index, new_used));
    }
    Ok(charged)
}

#[cfg(test)]
mod tests;
