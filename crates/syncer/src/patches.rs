//! Translate rules (`sync.toHost.<kind>.translate[]`, sync-behavior.md §7): field-level
//! rewrites of what the syncer writes. Toward the host a rule's `expression` (JavaScript) runs on
//! every value its path matches, `reference` renames an object reference to its host object, and
//! `labels` translates a label selector; a rule with only a `reverseExpression` keeps its field off
//! the host. Toward the virtual cluster (status and other fields copied back) `reverseExpression`
//! runs and fields with only an `expression` are not copied.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use vkube_config::Translate;
use vkube_translate::Context;
use vkube_translate::names::{host_name, host_name_short};

/// One step of a rule's path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// `.name` or `["name"]`.
    Key(String),
    /// `[2]`.
    Index(usize),
    /// `[*]`: every element of an array or value of a map.
    All,
}

/// Parses `spec.containers[*].image` or `metadata.annotations["example.com/key"]`.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut rest = path.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = if let Some(quoted) = after.strip_prefix('"') {
                quoted.find('"').map(|i| i + 2).ok_or_else(|| format!("{path}: unterminated quoted key"))?
            } else {
                after.find(']').ok_or_else(|| format!("{path}: missing ]"))?
            };
            let inner = &after[..end];
            if !after[end..].starts_with(']') {
                return Err(format!("{path}: missing ] after {inner}"));
            }
            steps.push(match inner {
                "*" => Step::All,
                quoted if quoted.starts_with('"') => Step::Key(quoted.trim_matches('"').to_string()),
                number => Step::Index(number.parse().map_err(|_| format!("{path}: [{number}] is not an index"))?),
            });
            rest = &after[end + 1..];
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            if end == 0 {
                return Err(format!("{path}: empty field name"));
            }
            steps.push(Step::Key(rest_trimmed[..end].to_string()));
            rest = &rest_trimmed[end..];
        }
    }
    Ok(steps)
}

/// What a rule does.
#[derive(Clone, Debug)]
enum Action {
    /// `expression` toward the host, `reverseExpression` toward the virtual cluster.
    Expressions { forward: Option<String>, reverse: Option<String> },
    /// The value names an object of `kind` (`name_path`/`namespace_path` inside an object value).
    Reference { kind: String, name_path: String, namespace_path: String },
    /// The value is a label selector.
    Labels,
}

#[derive(Clone, Debug)]
struct Rule {
    path: String,
    steps: Vec<Step>,
    action: Action,
}

/// The translate rules of one kind.
#[derive(Clone, Debug, Default)]
pub struct Patches {
    rules: Vec<Rule>,
}

/// Translate rules by kind (`Pod`, `Service`, ...).
pub type PatchesByKind = HashMap<String, Patches>;

/// Kinds the syncer copies under `NAME-x-NAMESPACE-x-VC`; other references use the short form.
const SYNCED_KINDS: &[&str] =
    &["Pod", "Secret", "ConfigMap", "Service", "Endpoints", "PersistentVolumeClaim", "ServiceAccount", "Ingress"];

impl Patches {
    /// Compiles the rules of one `translate` list.
    pub fn new(rules: &[Translate]) -> Result<Self, String> {
        let mut out = Vec::new();
        for rule in rules {
            let action = if let Some(reference) = &rule.reference {
                Action::Reference {
                    kind: reference.kind.clone(),
                    name_path: reference.name_path.clone(),
                    namespace_path: reference.namespace_path.clone(),
                }
            } else if rule.labels.is_some() {
                Action::Labels
            } else {
                Action::Expressions { forward: rule.expression.clone(), reverse: rule.reverse_expression.clone() }
            };
            out.push(Rule { path: rule.path.clone(), steps: parse_path(&rule.path)?, action });
        }
        Ok(Patches { rules: out })
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies the rules to `object` (a whole host object or a patch about to be written to the
    /// host); `namespace` is the virtual namespace it comes from.
    pub fn to_host(&self, context: &Context, namespace: &str, object: &mut Value) -> Result<(), String> {
        let mut js = Js::default();
        for rule in &self.rules {
            match &rule.action {
                Action::Expressions { forward: Some(source), .. } => {
                    visit(object, &rule.steps, String::new(), &mut |path, value| {
                        js.evaluate(source, value, path, namespace).map(Some)
                    })?;
                }
                Action::Expressions { forward: None, .. } => {
                    // Only a reverse expression: the field never reaches the host.
                    visit(object, &rule.steps, String::new(), &mut |_, _| Ok(Some(None)))?;
                }
                Action::Reference { kind, name_path, namespace_path } => {
                    visit(object, &rule.steps, String::new(), &mut |_, value| {
                        Ok(Some(Some(reference(context, kind, name_path, namespace_path, namespace, value))))
                    })?;
                }
                Action::Labels => {
                    visit(object, &rule.steps, String::new(), &mut |_, value| {
                        Ok(Some(value.map(|v| labels(context, v))))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Applies the rules to `object`, a patch about to be written to the virtual cluster.
    pub fn to_virtual(&self, namespace: &str, object: &mut Value) -> Result<(), String> {
        let mut js = Js::default();
        for rule in &self.rules {
            match &rule.action {
                Action::Expressions { reverse: Some(source), .. } => {
                    visit(object, &rule.steps, String::new(), &mut |path, value| {
                        js.evaluate(source, value, path, namespace).map(Some)
                    })?;
                }
                Action::Expressions { reverse: None, .. } => {
                    visit(object, &rule.steps, String::new(), &mut |_, _| Ok(Some(None)))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The config maps and secrets `object` (a virtual object of namespace `namespace`) names
    /// through `reference` rules, as (kind, namespace, name): they are "used" like a pod's
    /// volumes and reach the host (§7.5).
    pub fn data_references(&self, namespace: &str, object: &Value) -> Vec<(&'static str, String, String)> {
        let mut found = Vec::new();
        let mut scratch = object.clone();
        for rule in &self.rules {
            let Action::Reference { kind, name_path, namespace_path } = &rule.action else { continue };
            let kind: &'static str = match kind.as_str() {
                "Secret" => "Secret",
                "ConfigMap" => "ConfigMap",
                _ => continue,
            };
            let _ = visit(&mut scratch, &rule.steps, String::new(), &mut |_, value| {
                let named = match value {
                    Some(Value::String(name)) => Some((namespace.to_string(), name.clone())),
                    Some(Value::Object(map)) if !name_path.is_empty() => {
                        let ns = (!namespace_path.is_empty())
                            .then(|| map.get(namespace_path).and_then(Value::as_str))
                            .flatten()
                            .unwrap_or(namespace);
                        map.get(name_path).and_then(Value::as_str).map(|name| (ns.to_string(), name.to_string()))
                    }
                    _ => None,
                };
                if let Some((ns, name)) = named.filter(|(_, n)| !n.is_empty()) {
                    found.push((kind, ns, name));
                }
                Ok(None)
            });
        }
        found
    }

    /// The paths of the rules (for error messages).
    pub fn paths(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.path.as_str()).collect()
    }
}

/// The callback of [`visit`]: the concrete path and the value there (None when absent).
type Visitor<'a> = dyn FnMut(&str, Option<&Value>) -> Result<Decision, String> + 'a;

/// What a visit callback decides for one matched value: `None` leaves it, `Some(None)` deletes
/// it, `Some(Some(v))` replaces it.
type Decision = Option<Option<Value>>;

/// Calls `f` for every value `steps` reaches in `value` (a missing quoted key reaches "nothing",
/// so an expression can add it).
fn visit(value: &mut Value, steps: &[Step], path: String, f: &mut Visitor<'_>) -> Result<(), String> {
    let Some((step, rest)) = steps.split_first() else { return Ok(()) };
    match (step, value) {
        (Step::Key(key), Value::Object(map)) => {
            let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            if rest.is_empty() {
                apply(map, key, &here, f)
            } else if let Some(next) = map.get_mut(key) {
                visit(next, rest, here, f)
            } else {
                Ok(())
            }
        }
        (Step::Index(i), Value::Array(list)) => {
            let here = format!("{path}[{i}]");
            let Some(element) = list.get_mut(*i) else { return Ok(()) };
            if rest.is_empty() {
                if let Some(decision) = f(&here, Some(element))? {
                    *element = decision.unwrap_or(Value::Null);
                }
                Ok(())
            } else {
                visit(element, rest, here, f)
            }
        }
        (Step::All, Value::Array(list)) => {
            for (i, element) in list.iter_mut().enumerate() {
                let here = format!("{path}[{i}]");
                if rest.is_empty() {
                    if let Some(decision) = f(&here, Some(element))? {
                        *element = decision.unwrap_or(Value::Null);
                    }
                } else {
                    visit(element, rest, here, f)?;
                }
            }
            Ok(())
        }
        (Step::All, Value::Object(map)) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let here = format!("{path}[\"{key}\"]");
                if rest.is_empty() {
                    apply(map, &key, &here, f)?;
                } else if let Some(next) = map.get_mut(&key) {
                    visit(next, rest, here, f)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn apply(map: &mut Map<String, Value>, key: &str, path: &str, f: &mut Visitor<'_>) -> Result<(), String> {
    match f(path, map.get(key))? {
        None => {}
        Some(None) => {
            map.remove(key);
        }
        Some(Some(value)) => {
            map.insert(key.to_string(), value);
        }
    }
    Ok(())
}

/// A JavaScript engine, started on first use and shared by every expression of one call.
#[derive(Default)]
struct Js {
    engine: Option<(rquickjs::Runtime, rquickjs::Context)>,
}

impl Js {
    /// Runs `source` as `function(value, valueExists, context) { return (SOURCE); }`; null or
    /// undefined means "delete".
    fn evaluate(
        &mut self,
        source: &str,
        value: Option<&Value>,
        path: &str,
        namespace: &str,
    ) -> Result<Option<Value>, String> {
        if self.engine.is_none() {
            let runtime = rquickjs::Runtime::new().map_err(|e| e.to_string())?;
            let context = rquickjs::Context::full(&runtime).map_err(|e| e.to_string())?;
            self.engine = Some((runtime, context));
        }
        let Some((_, js)) = &self.engine else { return Ok(None) };
        let context = json!({"path": path, "virtualNamespace": namespace});
        let script = format!(
            "JSON.stringify((function(value, valueExists, context) {{ return ({source}\n); }})({}, {}, {}))",
            value.cloned().unwrap_or(Value::Null),
            value.is_some(),
            context
        );
        js.with(|ctx| match ctx.eval::<Option<String>, _>(script) {
            Ok(None) => Ok(None),
            Ok(Some(text)) => {
                let result: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                Ok((!result.is_null()).then_some(result))
            }
            Err(rquickjs::Error::Exception) => Err(format!(
                "translate expression at {path}: {}",
                vkube_config::js::exception_message(&ctx, "exception")
            )),
            Err(other) => Err(format!("translate expression at {path}: {other}")),
        })
    }
}

/// The host form of a reference to an object of `kind`.
fn reference(
    context: &Context,
    kind: &str,
    name_path: &str,
    namespace_path: &str,
    namespace: &str,
    value: Option<&Value>,
) -> Value {
    let rename = |name: &str, ns: &str| {
        if SYNCED_KINDS.contains(&kind) { host_name(context, name, ns) } else { host_name_short(context, name, ns) }
    };
    match value {
        Some(Value::String(name)) => json!(rename(name, namespace)),
        Some(Value::Object(map)) if !name_path.is_empty() => {
            let mut out = map.clone();
            let ns = (!namespace_path.is_empty())
                .then(|| map.get(namespace_path).and_then(Value::as_str))
                .flatten()
                .unwrap_or(namespace)
                .to_string();
            if let Some(name) = map.get(name_path).and_then(Value::as_str) {
                out.insert(name_path.to_string(), json!(rename(name, &ns)));
            }
            if !namespace_path.is_empty() && map.contains_key(namespace_path) {
                out.insert(namespace_path.to_string(), json!(context.host_namespace));
            }
            Value::Object(out)
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// The host form of a label selector (or a plain label map).
fn labels(context: &Context, value: &Value) -> Value {
    if value.get("matchLabels").is_some() || value.get("matchExpressions").is_some() {
        return vkube_translate::labels::host_label_selector(context, value);
    }
    match value.as_object() {
        Some(map) => {
            Value::Object(map.iter().map(|(k, v)| (vkube_translate::labels::host_key(context, k), v.clone())).collect())
        }
        None => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str) -> Translate {
        Translate { path: path.into(), ..Default::default() }
    }

    fn vc() -> Context {
        Context::new("vc", "vcluster-vc")
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("spec.containers[*].image").unwrap(),
            vec![Step::Key("spec".into()), Step::Key("containers".into()), Step::All, Step::Key("image".into())]
        );
        assert_eq!(
            parse_path("metadata.annotations[\"example.com/a.b\"]").unwrap(),
            vec![Step::Key("metadata".into()), Step::Key("annotations".into()), Step::Key("example.com/a.b".into())]
        );
        assert_eq!(parse_path("spec.ports[1].port").unwrap()[2], Step::Index(1));
        assert!(parse_path("spec.ports[x]").is_err());
        assert!(parse_path("spec[\"open").is_err());
    }

    #[test]
    fn expressions_rewrite_add_and_delete() {
        let image =
            Translate { expression: Some("\"mirror.local/\" + value".into()), ..rule("spec.containers[*].image") };
        let added = Translate {
            expression: Some("valueExists ? value : context.virtualNamespace".into()),
            ..rule("metadata.annotations[\"team\"]")
        };
        let removed = Translate { expression: Some("null".into()), ..rule("metadata.labels.secret") };
        let home_only = Translate { reverse_expression: Some("value".into()), ..rule("spec.nodeSelector") };
        let patches = Patches::new(&[image, added, removed, home_only]).unwrap();
        let mut pod = json!({"metadata": {"labels": {"secret": "x", "app": "web"}},
            "spec": {"nodeSelector": {"a": "b"}, "containers": [{"image": "nginx"}, {"image": "redis"}]}});
        patches.to_host(&vc(), "shop", &mut pod).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["image"], "mirror.local/nginx");
        assert_eq!(pod["spec"]["containers"][1]["image"], "mirror.local/redis");
        assert_eq!(pod["metadata"]["annotations"]["team"], Value::Null, "no annotations map to add to");
        assert_eq!(pod["metadata"]["labels"], json!({"app": "web"}));
        assert!(pod["spec"].get("nodeSelector").is_none(), "reverse-only fields stay home");
        let mut with_map = json!({"metadata": {"annotations": {}}});
        patches.to_host(&vc(), "shop", &mut with_map).unwrap();
        assert_eq!(with_map["metadata"]["annotations"]["team"], "shop");
    }

    #[test]
    fn reverse_expressions_run_toward_the_virtual_cluster() {
        let rule = Translate {
            expression: Some("value".into()),
            reverse_expression: Some("value.replace('internal.', '')".into()),
            ..rule("status.loadBalancer.ingress[*].hostname")
        };
        let forward_only = Translate { expression: Some("value".into()), ..super::tests::rule("status.conditions") };
        let patches = Patches::new(&[rule, forward_only]).unwrap();
        let mut status = json!({"status": {"conditions": [], "loadBalancer": {"ingress": [{"hostname": "internal.lb.example.com"}]}}});
        patches.to_virtual("default", &mut status).unwrap();
        assert_eq!(status["status"]["loadBalancer"]["ingress"][0]["hostname"], "lb.example.com");
        assert!(status["status"].get("conditions").is_none(), "forward-only fields are not copied back");
    }

    #[test]
    fn references_and_labels() {
        let secret = Translate {
            reference: Some(vkube_config::TranslateReference {
                api_version: "v1".into(),
                kind: "Secret".into(),
                ..Default::default()
            }),
            ..rule("spec.secretName")
        };
        let issuer = Translate {
            reference: Some(vkube_config::TranslateReference {
                api_version: "cert-manager.io/v1".into(),
                kind: "Issuer".into(),
                name_path: "name".into(),
                ..Default::default()
            }),
            ..rule("spec.issuerRef")
        };
        let selector = Translate { labels: Some(Default::default()), ..rule("spec.selector") };
        let patches = Patches::new(&[secret, issuer, selector]).unwrap();
        let mut certificate = json!({"spec": {"secretName": "tls", "issuerRef": {"name": "letsencrypt", "kind": "Issuer"},
            "selector": {"matchLabels": {"release": "x", "app": "web"}}}});
        patches.to_host(&vc(), "shop", &mut certificate).unwrap();
        assert_eq!(certificate["spec"]["secretName"], "tls-x-shop-x-vc");
        let issuer = certificate["spec"]["issuerRef"]["name"].as_str().unwrap();
        assert_eq!(issuer, host_name_short(&vc(), "letsencrypt", "shop"));
        assert!(issuer.starts_with('v') && issuer.len() == 14, "{issuer}");
        assert_eq!(certificate["spec"]["issuerRef"]["kind"], "Issuer");
        let selector = &certificate["spec"]["selector"]["matchLabels"];
        assert_eq!(selector["app"], "web");
        assert!(selector.get("release").is_none(), "reserved keys are translated: {selector}");
    }

    #[test]
    fn a_failing_expression_is_an_error_naming_the_path() {
        let patches =
            Patches::new(&[Translate { expression: Some("value.nope.deeper".into()), ..rule("spec.x") }]).unwrap();
        let error = patches.to_host(&vc(), "d", &mut json!({"spec": {"x": 1}})).unwrap_err();
        assert!(error.contains("spec.x"), "{error}");
    }
}
