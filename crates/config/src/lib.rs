//! `vcluster.yaml` for vkube: typed structs for the reference's `sync` section (and the few other
//! settings vkube needs), the documented defaults, validation that reports every problem with its
//! field path and the fix, a JSON Schema generated from the types, and the host RBAC a config
//! needs. Pure: no I/O.
//!
//! Parsing runs in three passes so that one run reports everything: the YAML is checked against
//! the generated JSON Schema (unknown keys with "did you mean", reference keys vkube does not
//! implement, wrong types), then deserialized into [`Config`] with defaults, then checked by the
//! semantic rules in [`rules`].

pub mod mappings;
pub mod paths;
pub mod rbac;
mod rules;
mod schema_check;
pub mod support;
pub mod tolerations;
pub mod types;

use std::sync::LazyLock;

pub use types::*;

/// One problem in a configuration file: where it is and what is wrong (and what would be right).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `sync.toHost.pods.enforceTolerations[1]` (empty for the whole file).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }
}

/// Every problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);

static SCHEMA: LazyLock<serde_json::Value> =
    LazyLock::new(|| serde_json::to_value(schemars::schema_for!(Config)).expect("the schema serializes"));

/// The JSON Schema of `vcluster.yaml` as vkube reads it.
pub fn json_schema() -> serde_json::Value {
    SCHEMA.clone()
}

impl Config {
    /// Parses, defaults and validates a `vcluster.yaml`.
    pub fn from_yaml(text: &str) -> Result<Config, Problems> {
        let value: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| Problems(vec![Problem::new("", format!("not valid YAML: {e}"))]))?
        };
        Config::from_value(value)
    }

    /// Parses, defaults and validates an already decoded document.
    pub fn from_value(value: serde_json::Value) -> Result<Config, Problems> {
        let value = if value.is_null() { serde_json::json!({}) } else { value };
        // Every problem of the file in one run: the semantic rules also check what the schema
        // pass found nothing wrong with (the values it refused are left out, so they take their
        // defaults and raise nothing twice).
        let (mut problems, checked) = schema_check::check(&SCHEMA, &value);
        match serde_json::from_value::<Config>(checked) {
            Ok(config) => {
                problems.extend(rules::check(&config));
                if problems.is_empty() { Ok(config) } else { Err(Problems(problems)) }
            }
            Err(error) if problems.is_empty() => Err(Problems(vec![Problem::new("", error.to_string())])),
            Err(_) => Err(Problems(problems)),
        }
    }

    /// The fully defaulted configuration as YAML.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_default()
    }

    /// This configuration with every `auto` switch decided.
    ///
    /// Rule: the `auto` switches (`sync.fromHost.storageClasses`, `csiNodes`, `csiDrivers`,
    /// `csiStorageCapacities`) exist for a virtual scheduler, which needs the host's storage
    /// objects to schedule pods with volumes. vkube schedules on the host, so `auto` resolves to
    /// `false`; set `true` to mirror them anyway.
    pub fn resolved(&self) -> Config {
        let mut config = self.clone();
        let from_host = &mut config.sync.from_host;
        for switch in [
            &mut from_host.storage_classes.enabled,
            &mut from_host.csi_nodes.enabled,
            &mut from_host.csi_drivers.enabled,
            &mut from_host.csi_storage_capacities.enabled,
        ] {
            if *switch == AutoSwitch::Auto {
                *switch = AutoSwitch::False;
            }
        }
        config
    }

    /// The virtual cluster's name (`vc1` when unset).
    pub fn name(&self) -> &str {
        if self.vkube.name.is_empty() { "vc1" } else { &self.vkube.name }
    }

    /// The host namespace (`vcluster-<name>` when unset).
    pub fn host_namespace(&self) -> String {
        if self.vkube.host_namespace.is_empty() {
            format!("vcluster-{}", self.name())
        } else {
            self.vkube.host_namespace.clone()
        }
    }
}

impl AutoSwitch {
    /// Whether the switch is on once decided (`auto` counts as off; see [`Config::resolved`]).
    pub fn is_on(self) -> bool {
        self == AutoSwitch::True
    }
}

pub mod js {
    //! Compile-checks `expression`/`reverseExpression` JavaScript without running it.

    /// The message of the exception `ctx` is holding (`fallback` when it has none).
    pub fn exception_message(ctx: &rquickjs::Ctx<'_>, fallback: &str) -> String {
        let exception = ctx.catch();
        exception
            .as_exception()
            .and_then(|e| e.message())
            .or_else(|| exception.as_string().and_then(|s| s.to_string().ok()))
            .unwrap_or_else(|| fallback.into())
    }

    /// Compiles `source` as the body of `function(value, context) { return (SOURCE); }`.
    pub(crate) fn check_expression(source: &str) -> Result<(), String> {
        let runtime = rquickjs::Runtime::new().map_err(|e| e.to_string())?;
        let context = rquickjs::Context::full(&runtime).map_err(|e| e.to_string())?;
        context.with(|ctx| {
            let wrapped = format!("(function(value, valueExists, context) {{ return ({source}\n); }})");
            match ctx.eval::<rquickjs::Function, _>(wrapped) {
                Ok(_) => Ok(()),
                Err(rquickjs::Error::Exception) => Err(exception_message(&ctx, "syntax error")),
                Err(other) => Err(other.to_string()),
            }
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn expressions_compile_or_explain() {
            assert!(super::check_expression(r#""mirror.corp.local/" + value"#).is_ok());
            assert!(super::check_expression("value ? value.substring(7) : value").is_ok());
            let error = super::check_expression("value +").unwrap_err();
            assert!(!error.is_empty());
        }
    }
}
