//! RBAC with kube-apiserver's semantics, decided from an in-memory copy of every Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding that one store watch keeps current, so a
//! decision costs a few map lookups and string compares, never a store read.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde_json::{Map, Value, json};
use vkube_store::{EventKind, ListOptions, Storage, StorageError};

use super::{Attributes, Decision, Identity};

/// Where every RBAC object is stored.
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// One `PolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    /// Verbs (`*` for all).
    pub verbs: Vec<String>,
    /// API groups (`*` for all).
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*/subresource` or `*`.
    pub resources: Vec<String>,
    /// Object names (empty for all).
    pub resource_names: Vec<String>,
    /// Non-resource paths (a trailing `*` matches a prefix).
    pub non_resource_urls: Vec<String>,
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

fn has(set: &[String], wanted: &str) -> bool {
    set.iter().any(|s| s == wanted)
}

impl Rule {
    /// A rule from its JSON form.
    pub fn from_value(value: &Value) -> Self {
        Rule {
            verbs: strings(value, "verbs"),
            api_groups: strings(value, "apiGroups"),
            resources: strings(value, "resources"),
            resource_names: strings(value, "resourceNames"),
            non_resource_urls: strings(value, "nonResourceURLs"),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn list_from(object: &Value) -> Vec<Rule> {
        object.get("rules").and_then(Value::as_array).into_iter().flatten().map(Rule::from_value).collect()
    }

    /// The JSON form, fields in the Go struct's order, empty lists left out.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        for (key, list) in [
            ("verbs", &self.verbs),
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !list.is_empty() || key == "verbs" {
                map.insert(key.into(), json!(list));
            }
        }
        Value::Object(map)
    }

    /// Whether the rule grants `attributes` (upstream's `RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        if !(has(&self.verbs, "*") || has(&self.verbs, &a.verb)) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*" || url == &a.path || (url.ends_with('*') && a.path.starts_with(url.trim_end_matches('*')))
            });
        }
        if !(has(&self.api_groups, "*") || has(&self.api_groups, &a.group)) {
            return false;
        }
        let resource_matches = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if a.subresource.is_empty() {
                return r == &a.resource;
            }
            (r.len() == a.resource.len() + 1 + a.subresource.len()
                && r.starts_with(a.resource.as_str())
                && r.as_bytes()[a.resource.len()] == b'/'
                && r.ends_with(a.subresource.as_str()))
                || (r.len() == a.subresource.len() + 2 && r.starts_with("*/") && r.ends_with(a.subresource.as_str()))
        });
        resource_matches && (self.resource_names.is_empty() || has(&self.resource_names, &a.name))
    }

    /// `rbacv1helpers.CompactString`: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let quoted = |list: &[String]| {
            let items: Vec<String> = list.iter().map(|s| serde_json::to_string(s).unwrap_or_default()).collect();
            format!("[{}]", items.join(" "))
        };
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:{}", quoted(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// One subject of a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// The name.
    pub name: String,
    /// For service accounts (empty: the binding's namespace).
    pub namespace: String,
}

impl Subject {
    fn applies_to(&self, identity: &Identity, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => identity.user == self.name,
            "Group" => identity.in_group(&self.name),
            "ServiceAccount" => {
                let namespace = if self.namespace.is_empty() { binding_namespace } else { &self.namespace };
                !namespace.is_empty()
                    && identity
                        .user
                        .strip_prefix("system:serviceaccount:")
                        .and_then(|rest| rest.split_once(':'))
                        .is_some_and(|(ns, name)| ns == namespace && name == self.name)
            }
            _ => false,
        }
    }

    fn describe(&self, binding_namespace: &str) -> String {
        if self.kind == "ServiceAccount" {
            let namespace = if self.namespace.is_empty() { binding_namespace } else { &self.namespace };
            format!("{} \"{}/{namespace}\"", self.kind, self.name)
        } else {
            format!("{} \"{}\"", self.kind, self.name)
        }
    }
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// Name.
    pub name: String,
    /// Namespace (empty for a ClusterRoleBinding).
    pub namespace: String,
    /// `Role` or `ClusterRole`.
    pub role_kind: String,
    /// The role's name.
    pub role_name: String,
    /// Who it binds.
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// A binding from its JSON form.
    pub fn from_value(object: &Value) -> Self {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
        Binding {
            name: text("/metadata/name"),
            namespace: text("/metadata/namespace"),
            role_kind: text("/roleRef/kind"),
            role_name: text("/roleRef/name"),
            subjects: object
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|s| Subject {
                    kind: s.get("kind").and_then(Value::as_str).unwrap_or_default().into(),
                    name: s.get("name").and_then(Value::as_str).unwrap_or_default().into(),
                    namespace: s.get("namespace").and_then(Value::as_str).unwrap_or_default().into(),
                })
                .collect(),
        }
    }

    /// `ClusterRoleBinding "x" of ClusterRole "y" to User "z"`.
    fn describe(&self, subject: &Subject) -> String {
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding \"{}\" of {} \"{}\" to {}",
                self.name,
                self.role_kind,
                self.role_name,
                subject.describe("")
            )
        } else {
            format!(
                "RoleBinding \"{}/{}\" of {} \"{}\" to {}",
                self.name,
                self.namespace,
                self.role_kind,
                self.role_name,
                subject.describe(&self.namespace)
            )
        }
    }
}

#[derive(Default)]
struct Policy {
    cluster_roles: HashMap<String, Arc<[Rule]>>,
    roles: HashMap<String, HashMap<String, Arc<[Rule]>>>,
    cluster_role_bindings: BTreeMap<String, Binding>,
    role_bindings: HashMap<String, BTreeMap<String, Binding>>,
}

impl Policy {
    fn role_rules(&self, binding: &Binding) -> Result<Arc<[Rule]>, String> {
        match binding.role_kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&binding.role_name)
                .cloned()
                .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io \"{}\" not found", binding.role_name)),
            "Role" => self
                .roles
                .get(&binding.namespace)
                .and_then(|roles| roles.get(&binding.role_name))
                .cloned()
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{}\" not found", binding.role_name)),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }

    /// Upstream's `VisitRulesFor`: the rules of every cluster binding, then of every binding in
    /// `namespace`, that names `identity`. `visit` returns false to stop; unresolvable role
    /// references are collected as errors.
    fn visit(
        &self,
        identity: &Identity,
        namespace: &str,
        mut visit: impl FnMut(&Binding, &Subject, &Rule) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let cluster = self.cluster_role_bindings.values();
        let local = (!namespace.is_empty()).then(|| self.role_bindings.get(namespace)).flatten();
        for binding in cluster.chain(local.into_iter().flat_map(|b| b.values())) {
            let Some(subject) = binding.subjects.iter().find(|s| s.applies_to(identity, &binding.namespace)) else {
                continue;
            };
            match self.role_rules(binding) {
                Ok(rules) => {
                    for rule in rules.iter() {
                        if !visit(binding, subject, rule) {
                            return errors;
                        }
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        errors
    }

    fn apply(&mut self, key: &str, value: Option<&Value>) {
        let Some(rest) = key.strip_prefix(PREFIX) else { return };
        let parts: Vec<&str> = rest.split('/').collect();
        match (parts.as_slice(), value) {
            (["clusterroles", name], Some(v)) => {
                self.cluster_roles.insert(name.to_string(), Rule::list_from(v).into());
            }
            (["clusterroles", name], None) => {
                self.cluster_roles.remove(*name);
            }
            (["roles", ns, name], Some(v)) => {
                self.roles.entry(ns.to_string()).or_default().insert(name.to_string(), Rule::list_from(v).into());
            }
            (["roles", ns, name], None) => {
                if let Some(roles) = self.roles.get_mut(*ns) {
                    roles.remove(*name);
                }
            }
            (["clusterrolebindings", name], Some(v)) => {
                let binding = Binding { name: name.to_string(), namespace: String::new(), ..Binding::from_value(v) };
                self.cluster_role_bindings.insert(name.to_string(), binding);
            }
            (["clusterrolebindings", name], None) => {
                self.cluster_role_bindings.remove(*name);
            }
            (["rolebindings", ns, name], Some(v)) => {
                let binding = Binding { name: name.to_string(), namespace: ns.to_string(), ..Binding::from_value(v) };
                self.role_bindings.entry(ns.to_string()).or_default().insert(name.to_string(), binding);
            }
            (["rolebindings", ns, name], None) => {
                if let Some(bindings) = self.role_bindings.get_mut(*ns) {
                    bindings.remove(*name);
                }
            }
            _ => {}
        }
    }
}

/// The RBAC authorizer over its in-memory index.
pub struct Rbac {
    policy: RwLock<Policy>,
    applied: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Rbac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rbac").field("applied", &*self.applied.borrow()).finish_non_exhaustive()
    }
}

impl Default for Rbac {
    fn default() -> Self {
        Rbac { policy: RwLock::new(Policy::default()), applied: tokio::sync::watch::channel(0).0 }
    }
}

impl Rbac {
    /// Loads every RBAC object of `store` and keeps the index current with a watch (which ends
    /// with the store or the authorizer).
    pub async fn start(store: Arc<dyn Storage>) -> Result<Arc<Rbac>, StorageError> {
        let rbac = Arc::new(Rbac::default());
        let revision = rbac.load(store.as_ref()).await?;
        tokio::spawn(follow(Arc::downgrade(&rbac), store, revision));
        Ok(rbac)
    }

    async fn load(&self, store: &dyn Storage) -> Result<u64, StorageError> {
        let list = store.list(ListOptions { prefix: PREFIX.into(), ..Default::default() }).await?;
        let mut policy = Policy::default();
        for kv in &list.items {
            if let Ok(value) = serde_json::from_slice::<Value>(&kv.value) {
                policy.apply(&kv.key, Some(&value));
            }
        }
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        self.applied.send_replace(list.revision);
        Ok(list.revision)
    }

    /// Applies a change directly (tests build an index without a store).
    pub fn apply(&self, key: &str, value: Option<&Value>) {
        self.policy.write().unwrap_or_else(|p| p.into_inner()).apply(key, value);
    }

    /// Waits (at most two seconds) until the index reflects the store at `revision` (every
    /// change up to it, RBAC or not, has been seen), so a client that just wrote a binding is
    /// authorized by it on its next request.
    pub async fn caught_up(&self, revision: u64) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|r| *r >= revision)).await;
    }

    /// RBAC's decision (upstream's `RBACAuthorizer.Authorize`).
    pub fn authorize(&self, identity: &Identity, attributes: &Attributes) -> Decision {
        let policy = self.policy.read().unwrap_or_else(|p| p.into_inner());
        let mut allowed_by = None;
        let errors = policy.visit(identity, &attributes.namespace, |binding, subject, rule| {
            if rule.allows(attributes) {
                allowed_by = Some(binding.describe(subject));
                return false;
            }
            true
        });
        match allowed_by {
            Some(source) => Decision { allowed: true, reason: format!("RBAC: allowed by {source}") },
            None if errors.is_empty() => Decision::default(),
            None => Decision { allowed: false, reason: format!("RBAC: {}", aggregate(&errors)) },
        }
    }

    /// Every rule that applies to `identity` in `namespace` (cluster-wide ones included), and
    /// the role references that could not be resolved.
    pub fn rules_for(&self, identity: &Identity, namespace: &str) -> (Vec<Rule>, Vec<String>) {
        let policy = self.policy.read().unwrap_or_else(|p| p.into_inner());
        let mut rules = Vec::new();
        let errors = policy.visit(identity, namespace, |_, _, rule| {
            rules.push(rule.clone());
            true
        });
        (rules, errors)
    }
}

/// `utilerrors.NewAggregate(errors).Error()`.
pub fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => {
            let mut text = String::from("[");
            for (i, e) in many.iter().enumerate() {
                if i > 0 {
                    text.push_str(", ");
                }
                let _ = write!(text, "{e}");
            }
            text.push(']');
            text
        }
    }
}

async fn follow(rbac: Weak<Rbac>, store: Arc<dyn Storage>, mut revision: u64) {
    loop {
        let mut watcher = match store.watch(PREFIX, revision) {
            Ok(watcher) => watcher,
            Err(StorageError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, "RBAC index: cannot watch; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        loop {
            match watcher.next_progress().await {
                Ok(events) => {
                    let Some(rbac) = rbac.upgrade() else { return };
                    let last = watcher.revision();
                    if !events.is_empty() {
                        let mut policy = rbac.policy.write().unwrap_or_else(|p| p.into_inner());
                        for event in &events {
                            let value = match event.kind {
                                EventKind::Put => serde_json::from_slice::<Value>(&event.kv.value).ok(),
                                EventKind::Delete => None,
                            };
                            policy.apply(&event.kv.key, value.as_ref());
                        }
                    }
                    revision = last;
                    rbac.applied.send_replace(last);
                }
                Err(StorageError::Closed) => return,
                Err(error) => {
                    // Fell behind compaction: reload everything, then follow from there.
                    tracing::warn!(%error, "RBAC index: watch ended; reloading");
                    let Some(rbac) = rbac.upgrade() else { return };
                    match rbac.load(store.as_ref()).await {
                        Ok(now) => revision = now,
                        Err(StorageError::Closed) => return,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(objects: &[(&str, Value)]) -> Rbac {
        let rbac = Rbac::default();
        for (key, value) in objects {
            rbac.apply(&format!("{PREFIX}{key}"), Some(value));
        }
        rbac
    }

    fn user(name: &str, groups: &[&str]) -> Identity {
        Identity::new(name, groups.iter().map(|g| g.to_string()).collect())
    }

    #[test]
    fn bindings_grant_their_roles_rules_in_their_scope() {
        let rbac = index(&[
            (
                "clusterroles/reader",
                json!({"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}]}),
            ),
            (
                "roles/team-a/named",
                json!({"rules": [{"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"]}]}),
            ),
            (
                "rolebindings/team-a/r",
                json!({"roleRef": {"kind": "ClusterRole", "name": "reader"}, "subjects": [{"kind": "User", "name": "alice"}]}),
            ),
            (
                "rolebindings/team-a/n",
                json!({"roleRef": {"kind": "Role", "name": "named"}, "subjects": [{"kind": "ServiceAccount", "name": "ci"}]}),
            ),
            (
                "clusterrolebindings/g",
                json!({"roleRef": {"kind": "ClusterRole", "name": "reader"}, "subjects": [{"kind": "Group", "name": "auditors"}]}),
            ),
        ]);
        let alice = user("alice", &["system:authenticated"]);
        let list = |ns: &str| Attributes::resource("list", "", "pods", "", ns, "");
        let decision = rbac.authorize(&alice, &list("team-a"));
        assert!(decision.allowed);
        assert_eq!(
            decision.reason,
            "RBAC: allowed by RoleBinding \"r/team-a\" of ClusterRole \"reader\" to User \"alice\""
        );
        assert!(!rbac.authorize(&alice, &list("team-b")).allowed);
        assert!(!rbac.authorize(&alice, &list("")).allowed);
        assert!(rbac.authorize(&alice, &Attributes::resource("get", "", "pods", "log", "team-a", "x")).allowed);
        assert!(!rbac.authorize(&alice, &Attributes::resource("get", "", "pods", "exec", "team-a", "x")).allowed);
        let auditor = user("bob", &["auditors"]);
        assert!(rbac.authorize(&auditor, &list("")).allowed);
        let ci = user("system:serviceaccount:team-a:ci", &[]);
        let get = |name: &str| Attributes::resource("get", "apps", "deployments", "", "team-a", name);
        assert!(rbac.authorize(&ci, &get("web")).allowed);
        assert!(!rbac.authorize(&ci, &get("db")).allowed);
        assert!(!rbac.authorize(&user("system:serviceaccount:team-b:ci", &[]), &get("web")).allowed);
    }

    #[test]
    fn unresolvable_roles_are_the_reason_of_a_refusal() {
        let rbac = index(&[(
            "clusterrolebindings/dangling",
            json!({"roleRef": {"kind": "ClusterRole", "name": "gone"}, "subjects": [{"kind": "User", "name": "alice"}]}),
        )]);
        let decision = rbac.authorize(&user("alice", &[]), &Attributes::non_resource("get", "/api"));
        assert!(!decision.allowed);
        assert_eq!(decision.reason, "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found");
    }

    #[test]
    fn wildcards_and_non_resource_paths_match_as_upstream() {
        let rule = Rule::from_value(&json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}));
        assert!(rule.allows(&Attributes::resource("get", "apps", "deployments", "scale", "x", "y")));
        assert!(!rule.allows(&Attributes::resource("get", "apps", "deployments", "", "x", "y")));
        let rule = Rule::from_value(&json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*", "/version"]}));
        assert!(rule.allows(&Attributes::non_resource("get", "/apis/apps/v1")));
        assert!(rule.allows(&Attributes::non_resource("get", "/version")));
        assert!(!rule.allows(&Attributes::non_resource("get", "/version/")));
        assert!(!rule.allows(&Attributes::non_resource("post", "/version")));
        assert_eq!(
            Rule::from_value(&json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["nodes"]}))
                .compact_string(),
            "{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}"
        );
    }
}
