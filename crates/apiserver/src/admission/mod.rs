//! Admission: what every write passes between decoding and storage, in kube-apiserver's order.
//! [`Chain::for_request`] builds the chain of one request; the registry calls it through
//! [`crate::registry::Admission`]: `mutate` after defaulting, `admit` after validation.
//!
//! Mutating: LimitRanger defaults ([`limit_ranger`]).
//! Validating: RBAC escalation prevention (`crate::auth::escalation`), for writes of RBAC
//! objects; LimitRanger's min/max ([`limit_ranger`]); ValidatingAdmissionPolicies ([`policy`]);
//! ResourceQuota ([`quota`]), for writes in a namespace that holds quotas.
//! [`registration`] holds the defaults and validation of the admission configuration objects.

pub mod limit_ranger;
pub mod policy;
pub mod quota;
pub mod registration;

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
        Chain { state, identity, dry_run, warnings }
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
            quota::admit(&self.state.registry, rt, old, new, self.dry_run).await
        })
    }
}
