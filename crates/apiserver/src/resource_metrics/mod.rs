//! The resource metrics API (`metrics.k8s.io/v1beta1`, what `kubectl top` reads): `nodes` and
//! `pods`, read-only, served when something supplies them ([`ResourceMetrics`]) the way an
//! aggregated metrics-server would be: the simulated host derives usage from its pods' requests,
//! a virtual cluster translates its host's.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::catalog::ResourceType;
use crate::{ApiError, ApiResult};

/// The group and version served.
pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// Whoever knows the usage.
pub trait ResourceMetrics: Send + Sync {
    /// Every node's `NodeMetrics`.
    fn nodes(&self) -> BoxFuture<'static, ApiResult<Vec<Value>>>;
    /// The `PodMetrics` of one namespace, or of all.
    fn pods(&self, namespace: Option<String>) -> BoxFuture<'static, ApiResult<Vec<Value>>>;
}

/// A shared [`ResourceMetrics`].
pub type SharedResourceMetrics = Arc<dyn ResourceMetrics>;

/// The resource types of the group (added to the catalog when metrics are supplied).
pub fn resource_types() -> Vec<ResourceType> {
    [("nodes", "NodeMetrics", false), ("pods", "PodMetrics", true)]
        .into_iter()
        .map(|(plural, kind, namespaced)| ResourceType {
            group: GROUP.into(),
            version: VERSION.into(),
            plural: plural.into(),
            singular: String::new(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            has_status: false,
            scale: None,
            generation: false,
            verbs: vec!["get", "list"],
            extra: Vec::new(),
            review: false,
            custom: None,
            storage: None,
        })
        .collect()
}

/// Answers `GET /apis/metrics.k8s.io/v1beta1/[namespaces/NS/]{nodes,pods}[/NAME]` (`rest` is
/// what follows the version), with a label selector when given.
pub async fn serve(source: &dyn ResourceMetrics, rest: &[&str], selector: Option<&str>) -> ApiResult<Value> {
    let (namespace, plural, name) = match rest {
        ["nodes"] => (None, "nodes", None),
        ["nodes", name] => (None, "nodes", Some(*name)),
        ["pods"] => (None, "pods", None),
        ["namespaces", ns, "pods"] => (Some(*ns), "pods", None),
        ["namespaces", ns, "pods", name] => (Some(*ns), "pods", Some(*name)),
        _ => return Err(ApiError::no_route()),
    };
    let items = match plural {
        "nodes" => source.nodes().await?,
        _ => source.pods(namespace.map(String::from)).await?,
    };
    let kind = if plural == "nodes" { "NodeMetrics" } else { "PodMetrics" };
    if let Some(name) = name {
        return items
            .into_iter()
            .find(|i| i.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
            .ok_or_else(|| ApiError::not_found(GROUP, plural, name));
    }
    let selector = match selector.filter(|s| !s.is_empty()) {
        Some(text) => Some(crate::selector::LabelSelector::parse(text)?),
        None => None,
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter(|item| {
            let labels: std::collections::BTreeMap<String, String> = item
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                .unwrap_or_default();
            selector.as_ref().is_none_or(|s| s.matches(&labels))
        })
        .collect();
    Ok(
        json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items}),
    )
}
