//! ValidatingAdmissionPolicy: a write matched by a policy and one of its bindings is checked
//! with the policy's CEL validations (`object`, `oldObject`, `request`, `namespaceObject`,
//! `params`, `variables` in scope); a failed one is refused (`Deny`, with the validation's
//! reason: `422 Invalid` by default) or reported as a warning (`Warn`), in upstream's words.
//! Policies and bindings are read from watch-fed caches, so a new policy takes effect a moment
//! after it is written, as upstream's informers make it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use crate::auth::Identity;
use crate::catalog::ResourceType;
use crate::error::{ApiError, ApiResult, Cause, Subject};
use crate::registry::{ListParams, Registry};
use crate::selector::LabelSelector;

/// Objects of one cluster-scoped kind, kept current by a watch.
#[derive(Default)]
pub struct ObjectCache {
    objects: Mutex<BTreeMap<String, Value>>,
}

impl ObjectCache {
    pub(super) fn start(registry: Registry, group: &'static str, plural: &'static str) -> Arc<ObjectCache> {
        let cache = Arc::new(ObjectCache::default());
        let feed = cache.clone();
        tokio::spawn(async move {
            loop {
                let Some(rt) = registry.catalog.snapshot().get(group, "v1", plural) else { return };
                let Ok(mut events) = registry.watch(rt, None, ListParams::default()).await else {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                };
                feed.objects.lock().unwrap_or_else(|p| p.into_inner()).clear();
                while let Some(item) = events.recv().await {
                    if let Some((kind, object)) = item.into_object() {
                        let name =
                            object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
                        let mut objects = feed.objects.lock().unwrap_or_else(|p| p.into_inner());
                        if kind == "DELETED" {
                            objects.remove(&name);
                        } else {
                            objects.insert(name, object);
                        }
                    }
                }
            }
        });
        cache
    }

    pub(super) fn all(&self) -> Vec<Value> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

/// Two caches of admissionregistration.k8s.io kinds, started on first use.
#[derive(Default)]
pub struct CachePair(OnceLock<(Arc<ObjectCache>, Arc<ObjectCache>)>);

impl CachePair {
    /// The caches of `plurals` (started now if they were not).
    pub(super) fn get(&self, registry: &Registry, plurals: [&'static str; 2]) -> &(Arc<ObjectCache>, Arc<ObjectCache>) {
        const GROUP: &str = "admissionregistration.k8s.io";
        self.0.get_or_init(|| {
            (
                ObjectCache::start(registry.clone(), GROUP, plurals[0]),
                ObjectCache::start(registry.clone(), GROUP, plurals[1]),
            )
        })
    }
}

/// The policy and binding caches of one server.
#[derive(Default)]
pub struct Policies {
    caches: CachePair,
}

impl Policies {
    fn caches(&self, registry: &Registry) -> &(Arc<ObjectCache>, Arc<ObjectCache>) {
        self.caches.get(registry, ["validatingadmissionpolicies", "validatingadmissionpolicybindings"])
    }
}

/// The write being admitted.
pub struct Request<'a> {
    /// Its resource type.
    pub rt: &'a ResourceType,
    /// `CREATE` or `UPDATE`.
    pub operation: &'a str,
    /// The object as it would be stored.
    pub object: &'a Value,
    /// The stored object (updates).
    pub old: Option<&'a Value>,
    /// Who writes.
    pub identity: &'a Identity,
    /// `dryRun`.
    pub dry_run: bool,
}

fn listed(list: &Value, wanted: &str) -> bool {
    list.as_array().is_some_and(|items| items.iter().any(|i| i == "*" || i == wanted))
}

/// Whether one of `rules` names this request (group, version, resource, operation, scope).
fn rule_matches(rules: &Value, request: &Request) -> bool {
    let name = request.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    rule_matches_resource(rules, request.rt, "", request.operation, name)
}

/// Whether one of `rules` (RuleWithOperations) names a request of `operation` on `rt`'s
/// `subresource` (`""` for the resource itself) of the object `name`: `pods` is the resource
/// alone, `pods/status` one subresource, `pods/*` every subresource, `*` every resource,
/// `*/*` everything (upstream's rules.Matcher).
pub(super) fn rule_matches_resource(
    rules: &Value,
    rt: &ResourceType,
    subresource: &str,
    operation: &str,
    name: &str,
) -> bool {
    let resource_listed = |resources: &Value| {
        resources.as_array().is_some_and(|items| {
            items.iter().filter_map(Value::as_str).any(|entry| {
                let (resource, sub) = entry.split_once('/').unwrap_or((entry, ""));
                (resource == "*" || resource == rt.plural) && (sub == "*" || sub == subresource)
            })
        })
    };
    rules.as_array().into_iter().flatten().any(|rule| {
        let scope_ok = match rule["scope"].as_str() {
            Some("Namespaced") => rt.namespaced,
            Some("Cluster") => !rt.namespaced,
            _ => true,
        };
        let names_ok = rule["resourceNames"]
            .as_array()
            .is_none_or(|names| names.is_empty() || names.iter().any(|n| n.as_str() == Some(name)));
        scope_ok
            && names_ok
            && listed(&rule["apiGroups"], &rt.group)
            && listed(&rule["apiVersions"], &rt.version)
            && resource_listed(&rule["resources"])
            && listed(&rule["operations"], operation)
    })
}

/// Whether match resources (a policy's `matchConstraints` or a binding's `matchResources`)
/// select the request.
fn resources_match(constraints: &Value, request: &Request, namespace: Option<&Value>) -> bool {
    if constraints.is_null() {
        return true;
    }
    if !constraints["resourceRules"].is_null() && !rule_matches(&constraints["resourceRules"], request) {
        return false;
    }
    if rule_matches(&constraints["excludeResourceRules"], request) {
        return false;
    }
    let selected = |selector: &Value, object: &Value| {
        !selector.is_object() || LabelSelector::from_object(selector).matches(&crate::registry::labels_of(object))
    };
    if !selected(&constraints["objectSelector"], request.object) {
        return false;
    }
    // Cluster-scoped objects are not filtered by namespace (a Namespace by its own labels).
    let namespace_labels =
        if request.rt.group.is_empty() && request.rt.kind == "Namespace" { Some(request.object) } else { namespace };
    match namespace_labels {
        Some(ns) => selected(&constraints["namespaceSelector"], ns),
        None => true,
    }
}

fn admission_request(request: &Request) -> Value {
    let rt = request.rt;
    json!({
        "kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "resource": {"group": rt.group, "version": rt.version, "resource": rt.plural},
        "name": request.object.pointer("/metadata/name"),
        "namespace": request.object.pointer("/metadata/namespace"),
        "operation": request.operation,
        "userInfo": {"username": request.identity.user, "groups": request.identity.groups},
        "dryRun": request.dry_run,
    })
}

fn forbidden(request: &Request, message: String, reason: &str) -> ApiError {
    let name = request.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let qualified = crate::error::qualified(&request.rt.group, &request.rt.plural);
    let full = format!("{qualified} \"{name}\" is forbidden: {message}");
    let subject = Subject { group: request.rt.group.clone(), kind: request.rt.plural.clone(), name: name.to_string() };
    let causes = vec![Cause { reason: "", field: String::new(), message }];
    let reason = match reason {
        "Forbidden" => "Forbidden",
        "Unauthorized" => "Unauthorized",
        "RequestEntityTooLarge" => "RequestEntityTooLarge",
        _ => "Invalid",
    };
    ApiError::PolicyDenied(Box::new(crate::error::PolicyDenial { message: full, reason, subject, causes }))
}

/// Checks a write against every policy bound to it; `warnings` receives `Warn` results.
pub async fn admit(
    policies: &Policies,
    registry: &Registry,
    request: &Request<'_>,
    warnings: &mut Vec<String>,
) -> ApiResult<()> {
    let (policy_cache, binding_cache) = policies.caches(registry);
    let bindings = binding_cache.all();
    if bindings.is_empty() {
        return Ok(());
    }
    let by_name: HashMap<String, Value> = policy_cache
        .all()
        .into_iter()
        .map(|p| (p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string(), p))
        .collect();
    let namespace = match request.object.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if request.rt.namespaced => {
            let snapshot = registry.catalog.snapshot();
            match snapshot.get("", "v1", "namespaces") {
                Some(rt) => registry.get(&rt, None, ns).await.ok(),
                None => None,
            }
        }
        _ => None,
    };
    let request_value = admission_request(request);
    let null = Value::Null;
    for binding in &bindings {
        let policy_name = binding.pointer("/spec/policyName").and_then(Value::as_str).unwrap_or_default();
        let Some(policy) = by_name.get(policy_name) else { continue };
        let spec = &policy["spec"];
        if !resources_match(&spec["matchConstraints"], request, namespace.as_ref())
            || !resources_match(&binding["spec"]["matchResources"], request, namespace.as_ref())
        {
            continue;
        }
        let binding_name = binding.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let fail_closed = spec["failurePolicy"].as_str() != Some("Ignore");
        let actions: Vec<&str> = binding
            .pointer("/spec/validationActions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let object = request.object.clone();
        let old = request.old.cloned().unwrap_or(Value::Null);
        let params = Value::Null;
        let mut variables = serde_json::Map::new();
        let namespace_object = namespace.clone().unwrap_or(Value::Null);
        let mut decisions: Vec<(String, String)> = Vec::new();
        let evaluate = |source: &str, variables: &serde_json::Map<String, Value>| -> Result<Value, String> {
            let expression = crate::cel::compile(source)?;
            let variables = Value::Object(variables.clone());
            expression.evaluate(&[
                ("object", &object),
                ("oldObject", &old),
                ("request", &request_value),
                ("params", &params),
                ("namespaceObject", &namespace_object),
                ("variables", &variables),
                ("authorizer", &null),
            ])
        };
        // Match conditions: all must hold for the policy to apply.
        let mut applies = true;
        for condition in spec["matchConditions"].as_array().into_iter().flatten() {
            match evaluate(condition["expression"].as_str().unwrap_or_default(), &variables) {
                Ok(Value::Bool(true)) => {}
                Ok(_) => applies = false,
                Err(error) if fail_closed => decisions.push((error, "Invalid".into())),
                Err(_) => applies = false,
            }
        }
        if !applies {
            continue;
        }
        for variable in spec["variables"].as_array().into_iter().flatten() {
            let name = variable["name"].as_str().unwrap_or_default().to_string();
            if let Ok(value) = evaluate(variable["expression"].as_str().unwrap_or_default(), &variables) {
                variables.insert(name, value);
            }
        }
        for validation in spec["validations"].as_array().into_iter().flatten() {
            let source = validation["expression"].as_str().unwrap_or_default();
            match evaluate(source, &variables) {
                Ok(Value::Bool(true)) => {}
                Ok(_) => {
                    let from_expression = validation["messageExpression"]
                        .as_str()
                        .and_then(|m| evaluate(m, &variables).ok())
                        .and_then(|v| v.as_str().map(|s| s.trim().to_string()))
                        .filter(|m| !m.is_empty() && !m.contains('\n'));
                    let message = from_expression
                        .or_else(|| {
                            validation["message"].as_str().map(|m| m.trim().to_string()).filter(|m| !m.is_empty())
                        })
                        .unwrap_or_else(|| format!("failed expression: {}", source.trim()));
                    let reason = validation["reason"].as_str().unwrap_or("Invalid").to_string();
                    decisions.push((message, reason));
                }
                Err(error) if fail_closed => decisions.push((error, "Invalid".into())),
                Err(_) => {}
            }
        }
        for (message, reason) in decisions {
            if actions.contains(&"Warn") {
                warnings.push(format!(
                    "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {message}"
                ));
            }
            if actions.contains(&"Deny") {
                let message = format!(
                    "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {message}"
                );
                return Err(forbidden(request, message, &reason));
            }
        }
    }
    Ok(())
}
