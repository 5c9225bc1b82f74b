//! Discovery documents: legacy (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList`)
//! and aggregated (`APIGroupDiscoveryList`, v2 and v2beta1), all derived from the catalog.

use serde_json::{Value, json};

use crate::catalog::{ResourceType, Snapshot};

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
}

fn group_entry(snapshot: &Snapshot, group: &str) -> Value {
    let versions: Vec<Value> = snapshot
        .versions(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(json!({}));
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// `GET /apis`.
pub fn api_group_list(snapshot: &Snapshot) -> Value {
    let groups: Vec<Value> =
        snapshot.group_order.iter().filter(|g| !g.is_empty()).map(|g| group_entry(snapshot, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub fn api_group(snapshot: &Snapshot, group: &str) -> Option<Value> {
    if group.is_empty() || !snapshot.group_order.iter().any(|g| g == group) {
        return None;
    }
    let mut entry = group_entry(snapshot, group);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

fn subresources(rt: &ResourceType) -> Vec<(String, String, String, String, Vec<&'static str>)> {
    let mut out = Vec::new();
    if rt.has_status {
        out.push(("status".into(), String::new(), String::new(), rt.kind.clone(), vec!["get", "patch", "update"]));
    }
    if rt.scale.is_some() {
        out.push(("scale".into(), "autoscaling".into(), "v1".into(), "Scale".into(), vec!["get", "patch", "update"]));
    }
    for extra in &rt.extra {
        out.push((
            extra.name.into(),
            extra.group.into(),
            extra.version.into(),
            extra.kind.into(),
            extra.verbs.to_vec(),
        ));
    }
    out
}

/// `GET /api/v1` or `/apis/{group}/{version}`.
pub fn api_resource_list(snapshot: &Snapshot, group: &str, version: &str) -> Option<Value> {
    let types = snapshot.group_version(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in &types {
        let mut entry = json!({
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": rt.verbs,
        });
        if !rt.short_names.is_empty() {
            entry["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            entry["categories"] = json!(rt.categories);
        }
        resources.push(entry);
        for (name, sub_group, sub_version, kind, verbs) in subresources(rt) {
            let mut sub = json!({"name": format!("{}/{name}", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": kind, "verbs": verbs});
            if !sub_group.is_empty() {
                sub["group"] = json!(sub_group);
                sub["version"] = json!(sub_version);
            }
            resources.push(sub);
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
}

/// `GET /api` or `/apis` in aggregated form; `version` is `v2` or `v2beta1`.
pub fn aggregated(snapshot: &Snapshot, core: bool, version: &str) -> Value {
    let groups: Vec<&String> =
        snapshot.group_order.iter().filter(|g| if core { g.is_empty() } else { !g.is_empty() }).collect();
    let items: Vec<Value> = groups
        .into_iter()
        .map(|group| {
            let versions: Vec<Value> = snapshot
                .versions(group)
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = snapshot
                        .group_version(group, v)
                        .iter()
                        .map(|rt| {
                            let subs: Vec<Value> = subresources(rt)
                                .into_iter()
                                .map(|(name, g, ver, kind, verbs)| {
                                    json!({"subresource": name, "responseKind": {"group": g, "version": ver, "kind": kind}, "verbs": verbs})
                                })
                                .collect();
                            let mut entry = json!({
                                "resource": rt.plural, "singularResource": rt.singular,
                                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                                "responseKind": {"group": "", "version": "", "kind": rt.kind},
                                "verbs": rt.verbs,
                            });
                            if !rt.short_names.is_empty() {
                                entry["shortNames"] = json!(rt.short_names);
                            }
                            if !rt.categories.is_empty() {
                                entry["categories"] = json!(rt.categories);
                            }
                            if !subs.is_empty() {
                                entry["subresources"] = json!(subs);
                            }
                            entry
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

/// Which discovery form an Accept header asks for: `Some("v2")`, `Some("v2beta1")` or `None`
/// (legacy), honouring the order the client listed them in.
pub fn negotiate(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if params.first() != Some(&"application/json") {
            continue;
        }
        let has = |p: &str| params.contains(&p);
        if has("g=apidiscovery.k8s.io") && has("as=APIGroupDiscoveryList") {
            if has("v=v2") {
                return Some("v2");
            }
            if has("v=v2beta1") {
                return Some("v2beta1");
            }
        } else if params.len() == 1 {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn negotiation_honours_the_requested_version() {
        let new = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(new), Some("v2"));
        assert_eq!(negotiate(old), Some("v2beta1"));
        assert_eq!(negotiate("application/json, */*"), None);
        assert_eq!(negotiate(""), None);
    }

    #[test]
    fn documents_list_resources_and_subresources() {
        let snapshot = Catalog::builtin().snapshot();
        let core = api_resource_list(&snapshot, "", "v1").unwrap();
        let names: Vec<&str> =
            core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"pods") && names.contains(&"pods/status") && names.contains(&"pods/log"));
        let groups = api_group_list(&snapshot);
        assert_eq!(groups["groups"][0]["name"], "apps");
        let agg = aggregated(&snapshot, false, "v2beta1");
        assert_eq!(agg["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        let apps = &agg["items"][0];
        assert_eq!(apps["metadata"]["name"], "apps");
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["subresources"][1]["responseKind"]["kind"], "Scale");
        let core_agg = aggregated(&snapshot, true, "v2");
        assert_eq!(core_agg["items"].as_array().unwrap().len(), 1);
        assert_eq!(core_agg["items"][0]["metadata"]["name"], "");
    }
}
