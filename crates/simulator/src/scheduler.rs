//! The simulated host's scheduler as pure decisions, after kube-scheduler's default profile:
//! the filters in its order (NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit),
//! the node a pod goes to, the `FailedScheduling` message in kube-scheduler's words, and
//! preemption (DefaultPreemption: on one node, the lower-priority pods whose removal lets the pod
//! fit, as few and as low as possible).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use vkube_quota::{Quantity, ResourceList};

/// A pod the scheduler counts on a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub priority: i64,
    pub requests: ResourceList,
}

impl Placed {
    /// The scheduler's view of `pod`.
    pub fn of(pod: &Value) -> Placed {
        let text = |pointer: &str| pod.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
        Placed {
            uid: text("/metadata/uid"),
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            priority: priority(pod),
            requests: vkube_quota::pod_requests(pod),
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Taints (`{key, value, effect}`).
    pub taints: Vec<Value>,
    /// Not cordoned.
    pub schedulable: bool,
    /// `status.allocatable` (`pods` among them).
    pub allocatable: ResourceList,
    /// What the pods bound to it request, plus the pods nominated to it that the pod being
    /// scheduled must not take the room of.
    pub requested: ResourceList,
    /// Pods bound to it (and nominated ones, as above).
    pub pods: usize,
}

/// A pod's priority (`spec.priority`, set by the Priority admission; 0 without).
pub fn priority(pod: &Value) -> i64 {
    pod.pointer("/spec/priority").and_then(Value::as_i64).unwrap_or(0)
}

/// Whether the pod may preempt others (`preemptionPolicy` other than `Never`).
pub fn may_preempt(pod: &Value) -> bool {
    pod.pointer("/spec/preemptionPolicy").and_then(Value::as_str) != Some("Never")
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Why a pod does not fit a node: kube-scheduler's reasons, and whether removing pods could
/// change that (only the resource reasons can).
#[derive(Clone, Debug, PartialEq)]
pub struct Unfit {
    pub reasons: Vec<String>,
    pub resolvable: bool,
}

impl Unfit {
    fn unresolvable(reason: String) -> Unfit {
        Unfit { reasons: vec![reason], resolvable: false }
    }
}

/// Whether `toleration` tolerates `taint`.
fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = str_of(toleration, "/effect");
    if !effect.is_empty() && effect != str_of(taint, "/effect") {
        return false;
    }
    let key = str_of(toleration, "/key");
    match str_of(toleration, "/operator") {
        "Exists" => key.is_empty() || key == str_of(taint, "/key"),
        _ => key == str_of(taint, "/key") && str_of(toleration, "/value") == str_of(taint, "/value"),
    }
}

fn expression_matches(expression: &Value, labels: &BTreeMap<String, String>) -> bool {
    let key = str_of(expression, "/key");
    let values: Vec<&str> =
        expression.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let actual = labels.get(key).map(String::as_str);
    match str_of(expression, "/operator") {
        "In" => actual.is_some_and(|a| values.contains(&a)),
        "NotIn" => actual.is_none_or(|a| !values.contains(&a)),
        "Exists" => actual.is_some(),
        "DoesNotExist" => actual.is_none(),
        "Gt" | "Lt" => {
            let (Some(a), Some(v)) =
                (actual.and_then(|a| a.parse::<i64>().ok()), values.first().and_then(|v| v.parse::<i64>().ok()))
            else {
                return false;
            };
            if str_of(expression, "/operator") == "Gt" { a > v } else { a < v }
        }
        _ => false,
    }
}

fn matches_node(pod: &Value, node: &NodeView) -> bool {
    if let Some(selector) = pod.pointer("/spec/nodeSelector").and_then(Value::as_object)
        && !selector.iter().all(|(k, v)| node.labels.get(k).map(String::as_str) == v.as_str())
    {
        return false;
    }
    let Some(terms) = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    else {
        return true;
    };
    terms.iter().any(|term| {
        term.get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|e| expression_matches(e, &node.labels))
            && term.get("matchFields").and_then(Value::as_array).into_iter().flatten().all(|f| {
                str_of(f, "/key") != "metadata.name"
                    || expression_matches(
                        &json!({"key": "name", "operator": f["operator"], "values": f["values"]}),
                        &[("name".to_string(), node.name.clone())].into(),
                    )
            })
    })
}

/// NodeResourcesFit: the resources `requests` lacks room for on a node with `allocatable`,
/// already asked for `requested` by `pods` pods (empty: it fits).
pub fn insufficient(
    requests: &ResourceList,
    allocatable: &ResourceList,
    requested: &ResourceList,
    pods: usize,
) -> Vec<String> {
    let mut reasons = Vec::new();
    let allowed = allocatable.get("pods").map_or(i64::MAX, |q| q.as_f64() as i64);
    if pods as i64 + 1 > allowed {
        reasons.push("Too many pods".to_string());
    }
    for (name, wanted) in requests {
        if wanted.is_zero() || name == "pods" {
            continue;
        }
        let free = allocatable.get(name).copied().unwrap_or(Quantity::ZERO)
            - requested.get(name).copied().unwrap_or(Quantity::ZERO);
        if *wanted > free {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

/// Whether `pod` (asking for `requests`) may run on `node`, else why not.
pub fn filter(pod: &Value, requests: &ResourceList, node: &NodeView) -> Result<(), Unfit> {
    if !node.schedulable {
        return Err(Unfit::unresolvable("node(s) were unschedulable".into()));
    }
    let tolerations: Vec<&Value> =
        pod.pointer("/spec/tolerations").and_then(Value::as_array).into_iter().flatten().collect();
    if let Some(taint) = node
        .taints
        .iter()
        .filter(|t| matches!(str_of(t, "/effect"), "NoSchedule" | "NoExecute"))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
    {
        let reason =
            format!("node(s) had untolerated taint {{{}: {}}}", str_of(taint, "/key"), str_of(taint, "/value"));
        return Err(Unfit::unresolvable(reason));
    }
    if !matches_node(pod, node) {
        return Err(Unfit::unresolvable("node(s) didn't match Pod's node affinity/selector".into()));
    }
    let reasons = insufficient(requests, &node.allocatable, &node.requested, node.pods);
    if reasons.is_empty() { Ok(()) } else { Err(Unfit { reasons, resolvable: true }) }
}

/// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node
/// affinity/selector.`, from how many nodes gave each reason.
fn histogram(nodes: usize, counts: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = counts.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{nodes} nodes are available.")
    } else {
        format!("0/{nodes} nodes are available: {}.", parts.join(", "))
    }
}

/// The node for `pod`: among those it fits, the one with the fewest pods (ties by name); else
/// kube-scheduler's message of why none.
pub fn schedule<'a>(pod: &Value, nodes: &'a [NodeView]) -> Result<&'a NodeView, String> {
    let requests = vkube_quota::pod_requests(pod);
    let mut counts = BTreeMap::new();
    let mut best: Option<&NodeView> = None;
    for node in nodes {
        match filter(pod, &requests, node) {
            Ok(()) => {
                if best.is_none_or(|b| (node.pods, &node.name) < (b.pods, &b.name)) {
                    best = Some(node);
                }
            }
            Err(unfit) => {
                for reason in unfit.reasons {
                    *counts.entry(reason).or_insert(0) += 1;
                }
            }
        }
    }
    best.ok_or_else(|| histogram(nodes.len(), &counts))
}

/// What preemption decided: the node the pod is nominated to and the pods to evict there.
#[derive(Clone, Debug, PartialEq)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Placed>,
}

fn add(list: &mut ResourceList, other: &ResourceList, sign: i64) {
    for (name, q) in other {
        let have = list.get(name).copied().unwrap_or(Quantity::ZERO);
        let q = if sign < 0 { Quantity::ZERO - *q } else { *q };
        list.insert(name.clone(), have + q);
    }
}

/// DefaultPreemption for `pod`, which fits no node: for each node it fails only for lack of
/// room, the lower-priority pods there (`pods_on`) are removed, then as many as still leave
/// room are kept, highest priority first; the node whose victims have the lowest top
/// priority (then sum of priorities, then count) wins. Else kube-scheduler's `preemption:`
/// message.
pub fn preempt(pod: &Value, nodes: &[NodeView], pods_on: &dyn Fn(&str) -> Vec<Placed>) -> Result<Preemption, String> {
    if !may_preempt(pod) {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let requests = vkube_quota::pod_requests(pod);
    let own = priority(pod);
    let mut counts = BTreeMap::new();
    let mut candidates: Vec<Preemption> = Vec::new();
    for node in nodes {
        match filter(pod, &requests, node) {
            Ok(()) => continue,
            Err(unfit) if !unfit.resolvable => {
                *counts.entry("Preemption is not helpful for scheduling".to_string()).or_insert(0) += 1;
                continue;
            }
            Err(_) => {}
        }
        let mut lower: Vec<Placed> = pods_on(&node.name).into_iter().filter(|p| p.priority < own).collect();
        let mut requested = node.requested.clone();
        for victim in &lower {
            add(&mut requested, &victim.requests, -1);
        }
        let mut count = node.pods - lower.len().min(node.pods);
        if !insufficient(&requests, &node.allocatable, &requested, count).is_empty() {
            *counts.entry("No preemption victims found for incoming pod".to_string()).or_insert(0) += 1;
            continue;
        }
        lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
        let mut victims = Vec::new();
        for pod in lower {
            let mut with = requested.clone();
            add(&mut with, &pod.requests, 1);
            if insufficient(&requests, &node.allocatable, &with, count + 1).is_empty() {
                requested = with;
                count += 1;
            } else {
                victims.push(pod);
            }
        }
        candidates.push(Preemption { node: node.name.clone(), victims });
    }
    let rank = |c: &Preemption| {
        let top = c.victims.iter().map(|v| v.priority).max().unwrap_or(i64::MIN);
        let sum: i64 = c.victims.iter().map(|v| v.priority).sum();
        (top, sum, c.victims.len(), c.node.clone())
    };
    candidates.into_iter().min_by_key(rank).ok_or_else(|| format!("preemption: {}", histogram(nodes.len(), &counts)))
}

/// The condition a preempted pod gets before it is deleted.
pub fn disruption_condition(preemptor: &Value, now: &str) -> Value {
    let scheduler = preemptor.pointer("/spec/schedulerName").and_then(Value::as_str).unwrap_or("default-scheduler");
    json!({
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
        "lastProbeTime": null, "lastTransitionTime": now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(&str, &str)]) -> ResourceList {
        entries.iter().map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap())).collect()
    }

    fn node(name: &str, pods: usize, labels: &[(&str, &str)], taints: Vec<Value>) -> NodeView {
        NodeView {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            taints,
            pods,
            schedulable: true,
            allocatable: list(&[("cpu", "8"), ("memory", "32Gi"), ("pods", "110")]),
            requested: ResourceList::new(),
        }
    }

    fn pod(name: &str, priority: i64, requests: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": name}, "spec": {"priority": priority,
            "containers": [{"name": "c", "resources": {"requests": requests}}]}})
    }

    #[test]
    fn scheduling_honours_selectors_taints_and_load() {
        let nodes = vec![
            node("a", 5, &[("zone", "1")], vec![]),
            node("b", 1, &[("zone", "2")], vec![]),
            node("c", 0, &[("zone", "2")], vec![json!({"key": "gpu", "value": "yes", "effect": "NoSchedule"})]),
        ];
        let plain = json!({"spec": {}});
        assert_eq!(schedule(&plain, &nodes).unwrap().name, "b", "least loaded untainted node");
        let zone1 = json!({"spec": {"nodeSelector": {"zone": "1"}}});
        assert_eq!(schedule(&zone1, &nodes).unwrap().name, "a");
        let tolerant = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}});
        assert_eq!(schedule(&tolerant, &nodes).unwrap().name, "c");
        let affinity = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["2"]}]}]}}}}});
        assert_eq!(schedule(&affinity, &nodes).unwrap().name, "a");
        let impossible = json!({"spec": {"nodeSelector": {"zone": "9"}}});
        assert_eq!(
            schedule(&impossible, &nodes).unwrap_err(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: yes}, 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn pods_fit_the_room_left_by_what_others_request() {
        let mut full = node("a", 1, &[], vec![]);
        full.requested = list(&[("cpu", "7500m")]);
        let mut free = node("b", 3, &[], vec![]);
        free.requested = list(&[("cpu", "2")]);
        let nodes = vec![full, free];
        let half = pod("p", 0, json!({"cpu": "1"}));
        assert_eq!(schedule(&half, &nodes).unwrap().name, "b", "the room, not the pod count, decides");
        let huge = pod("p", 0, json!({"cpu": "7", "example.com/foo": "1"}));
        assert_eq!(
            schedule(&huge, &nodes).unwrap_err(),
            "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient example.com/foo."
        );
        let mut crowded = node("c", 2, &[], vec![]);
        crowded.allocatable.insert("pods".into(), Quantity::from_int(2));
        assert_eq!(
            schedule(&json!({"spec": {}}), &[crowded]).unwrap_err(),
            "0/1 nodes are available: 1 Too many pods."
        );
    }

    #[test]
    fn preemption_evicts_the_fewest_lowest_priority_pods() {
        // Two nodes with 5 of a resource, each running two pods asking for 2 of it (the
        // conformance suite's "basic preemption"): the low-priority one goes.
        let placed = |name: &str, priority: i64| Placed::of(&pod(name, priority, json!({"example.com/foo": "2"})));
        let mut nodes = Vec::new();
        for name in ["n0", "n1"] {
            let mut view = node(name, 2, &[], vec![]);
            view.allocatable.insert("example.com/foo".into(), Quantity::from_int(5));
            view.requested = list(&[("example.com/foo", "4")]);
            nodes.push(view);
        }
        let pods_on = |node: &str| match node {
            "n0" => vec![placed("low", 1), placed("medium-0", 100)],
            _ => vec![placed("medium-1", 100), placed("medium-2", 100)],
        };
        let high = pod("high", 1000, json!({"example.com/foo": "2"}));
        assert!(schedule(&high, &nodes).is_err());
        let decided = preempt(&high, &nodes, &pods_on).unwrap();
        assert_eq!(decided.node, "n0");
        assert_eq!(decided.victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["low"]);

        // 1000 of a resource, 200 + 300 + 450 used by priorities 1, 2, 3; a pod of priority 4
        // asking for 500 evicts 1 and 2 (keeping 3 leaves room), not 3.
        let mut one = node("n", 3, &[], vec![]);
        one.allocatable.insert("fakecpu".into(), Quantity::from_int(1000));
        one.requested = list(&[("fakecpu", "950")]);
        let set = |node: &str| {
            assert_eq!(node, "n");
            [("p1", 1, "200"), ("p2", 2, "300"), ("p3", 3, "450")]
                .iter()
                .map(|(n, p, q)| Placed::of(&pod(n, *p, json!({"fakecpu": q}))))
                .collect()
        };
        let p4 = pod("p4", 4, json!({"fakecpu": "500"}));
        let mut victims: Vec<String> =
            preempt(&p4, std::slice::from_ref(&one), &set).unwrap().victims.into_iter().map(|v| v.name).collect();
        victims.sort();
        assert_eq!(victims, ["p1", "p2"]);

        let equal = pod("p", 1, json!({"fakecpu": "500"}));
        assert_eq!(
            preempt(&equal, std::slice::from_ref(&one), &set).unwrap_err(),
            "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
        let mut never = p4.clone();
        never["spec"]["preemptionPolicy"] = json!("Never");
        assert!(preempt(&never, std::slice::from_ref(&one), &set).unwrap_err().contains("preemptionPolicy=Never"));
        let elsewhere = {
            let mut p = p4.clone();
            p["spec"]["nodeSelector"] = json!({"zone": "9"});
            p
        };
        assert_eq!(
            preempt(&elsewhere, std::slice::from_ref(&one), &set).unwrap_err(),
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }
}
