//! Admission: what every write passes between decoding and storage, in kube-apiserver's order.
//! [`Chain::for_request`] builds the chain of one request; the registry calls it through
//! [`crate::registry::Admission`]: `mutate` after defaulting, `admit` after validation.
//!
//! Mutating: LimitRanger defaults ([`limit_ranger`]); Priority ([`priority`]); mutating
//! admission webhooks ([`webhook`]).
//! Validating: RBAC escalation prevention (`crate::auth::escalation`), for writes of RBAC
//! objects; LimitRanger's min/max ([`limit_ranger`]); ValidatingAdmissionPolicies ([`policy`]);
//! validating admission webhooks ([`webhook`]); ResourceQuota ([`quota`]), for writes in a
//! namespace that holds quotas. Deletes pass the validating webhooks only.
//! [`registration`] holds the defaults and validation of the admission configuration objects.

pub mod limit_ranger;
pub mod policy;
pub mod priority;
pub mod quota;
pub mod registration;
pub mod webhook;

use std::sync::Arc;

use serde_json::Value;

use crate::auth::Identity;
use crate::catalog::ResourceType;
use crate::error::ApiResult;
use crate::http::AppState;

/// The admission checks of one request.
pub struct Chain {
    state: Arc<AppState>,
    identity: Identity,
    dry_run: bool,
    warnings: Arc<std::sync::Mutex<Vec<String>>>,
    /// The subresource written (`""`, `status`, `scale` ...).
    subresource: String,
}

impl Chain {
    /// The chain for a write by `identity` (`dry_run`: nothing it decides is recorded);
    /// `warnings` collects what the client is told in `Warning` headers.
    pub fn for_request(
        state: Arc<AppState>,
        identity: Identity,
        dry_run: bool,
        warnings: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> Chain {
        Chain { state, identity, dry_run, warnings, subresource: String::new() }
    }

    /// The same chain for a write of `subresource`.
    pub fn on_subresource(mut self, subresource: &str) -> Chain {
        self.subresource = subresource.to_string();
        self
    }

    fn call<'a>(
        &'a self,
        rt: &'a ResourceType,
        operation: &'a str,
        object: Option<&'a Value>,
        old: Option<&'a Value>,
    ) -> webhook::Call<'a> {
        let meta = object.or(old);
        let text = |field: &str| meta.and_then(|o| o.pointer(&format!("/metadata/{field}"))).and_then(Value::as_str);
        let options_kind = match operation {
            "CREATE" => "CreateOptions",
            "UPDATE" => "UpdateOptions",
            _ => "DeleteOptions",
        };
        let mut options = serde_json::json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"});
        if self.dry_run {
            options["dryRun"] = serde_json::json!(["All"]);
        }
        webhook::Call {
            rt,
            subresource: &self.subresource,
            operation,
            namespace: text("namespace").filter(|_| rt.namespaced),
            name: text("name").unwrap_or_default(),
            object,
            old,
            identity: &self.identity,
            dry_run: self.dry_run,
            options,
            object_kind: None,
        }
    }

    fn warn(&self, warnings: Vec<String>) {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(warnings);
    }
}

impl crate::registry::Admission for Chain {
    fn mutate<'a>(
        &'a self,
        rt: &'a ResourceType,
        old: Option<&'a Value>,
        new: &'a mut Value,
    ) -> futures::future::BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if old.is_none() {
                limit_ranger::mutate(&self.state.registry, rt, new).await?;
            }
            priority::admit(&self.state.registry, rt, old, new).await?;
            if !webhook::any_mutating(&self.state, rt) {
                return Ok(());
            }
            let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
            let mut object = new.clone();
            let before = new.clone();
            let mut warnings = Vec::new();
            let call = self.call(rt, operation, Some(&before), old);
            let mutated = webhook::mutate(&self.state, &call, &mut object, &mut warnings).await;
            self.warn(warnings);
            mutated?;
            *new = object;
            Ok(())
        })
    }

    fn admit<'a>(
        &'a self,
        rt: &'a ResourceType,
        old: Option<&'a Value>,
        new: &'a Value,
    ) -> futures::future::BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if rt.group == crate::auth::escalation::GROUP {
                crate::auth::escalation::check(&self.state.rbac, &self.state.registry, &self.identity, rt, old, new)
                    .await?;
            }
            if old.is_none() {
                limit_ranger::validate(&self.state.registry, rt, new).await?;
            }
            let request = policy::Request {
                rt,
                operation: if old.is_some() { "UPDATE" } else { "CREATE" },
                object: new,
                old,
                identity: &self.identity,
                dry_run: self.dry_run,
            };
            let mut warnings = Vec::new();
            let decided = policy::admit(&self.state.policies, &self.state.registry, &request, &mut warnings).await;
            self.warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(warnings);
            decided?;
            let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
            let mut warnings = Vec::new();
            let validated =
                webhook::validate(&self.state, &self.call(rt, operation, Some(new), old), &mut warnings).await;
            self.warn(warnings);
            validated?;
            quota::admit(&self.state.registry, rt, old, new, self.dry_run).await
        })
    }

    fn admit_delete<'a>(
        &'a self,
        rt: &'a ResourceType,
        old: &'a Value,
    ) -> futures::future::BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let mut warnings = Vec::new();
            let validated =
                webhook::validate(&self.state, &self.call(rt, "DELETE", None, Some(old)), &mut warnings).await;
            self.warn(warnings);
            validated
        })
    }
}
