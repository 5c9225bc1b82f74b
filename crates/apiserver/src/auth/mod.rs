//! Who is asking and whether they may: the first two stages of every request, in the order
//! kube-apiserver runs them.
//!
//! - [`authenticate`]: client certificates, static and service-account bearer tokens, anonymous
//!   requests as `system:anonymous`, then impersonation headers ([`impersonate`]).
//! - [`attributes`]: the request's authorization attributes (verb, group, resource, subresource,
//!   namespace, name, or a non-resource path), as upstream's `RequestInfoFactory` derives them.
//! - [`authorize`]: `system:masters` always, then RBAC ([`rbac`]) from an in-memory index kept by a
//!   store watch; a refusal becomes upstream's 403 `Status`.
//! - [`escalation`]: the RBAC registry's rule that nobody grants permissions they do not hold.
//! - [`reviews`]: access and rules reviews answered by the same authorizer.

pub mod attributes;
pub mod authenticate;
pub mod escalation;
pub mod impersonate;
pub mod rbac;
pub mod reviews;

use std::collections::BTreeMap;

pub use attributes::Attributes;
pub use rbac::Rbac;

use crate::error::{ApiError, Subject};

/// The group every member of which may do everything, as upstream's privileged-group authorizer.
pub const MASTERS: &str = "system:masters";
/// Added to every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of requests without credentials.
pub const ANONYMOUS: &str = "system:anonymous";

/// Who is making a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// A unique id of the user, if the authenticator knows one.
    pub uid: String,
    /// Extra attributes (`Impersonate-Extra-*`, service-account pod bindings).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// A user in `groups`.
    pub fn new(user: impl Into<String>, groups: Vec<String>) -> Self {
        Identity { user: user.into(), groups, ..Identity::default() }
    }

    /// The anonymous user.
    pub fn anonymous() -> Self {
        Identity::new(ANONYMOUS, vec![UNAUTHENTICATED.into()])
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Adds `system:authenticated` unless present (upstream's authenticated-group adder).
    pub fn authenticated(mut self) -> Self {
        if !self.in_group(AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }
}

/// Decides `attributes` for `identity`: `system:masters` may do everything, anyone else what RBAC
/// grants. A refusal is upstream's 403 (`User "u" cannot list resource "pods" ...`).
pub fn authorize(rbac: &Rbac, identity: &Identity, attributes: &Attributes) -> Result<(), ApiError> {
    let decision = decide(rbac, identity, attributes);
    if decision.allowed { Ok(()) } else { Err(forbidden(identity, attributes, &decision.reason)) }
}

/// An authorization decision and its reason (what access reviews report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// Why (empty when nothing grants it and no binding failed to resolve).
    pub reason: String,
}

/// The authorizer chain: the privileged group, then RBAC.
pub fn decide(rbac: &Rbac, identity: &Identity, attributes: &Attributes) -> Decision {
    if identity.in_group(MASTERS) {
        return Decision { allowed: true, reason: String::new() };
    }
    rbac.authorize(identity, attributes)
}

/// Upstream's 403 for a refused request (`responsewriters.Forbidden`).
pub fn forbidden(identity: &Identity, attributes: &Attributes, reason: &str) -> ApiError {
    let mut message = attributes.forbidden_message(&identity.user);
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    forbidden_error(&attributes.group, &attributes.resource, &attributes.name, &message)
}

/// `apierrors.NewForbidden(resource.group, name, message)`.
pub fn forbidden_error(group: &str, resource: &str, name: &str, message: &str) -> ApiError {
    let qualified = crate::error::qualified(group, resource);
    let message = if resource.is_empty() {
        format!("forbidden: {message}")
    } else if name.is_empty() {
        format!("{qualified} is forbidden: {message}")
    } else {
        format!("{qualified} \"{name}\" is forbidden: {message}")
    };
    ApiError::Forbidden {
        message,
        subject: Subject { group: group.into(), kind: resource.into(), name: name.into() },
        causes: Vec::new(),
    }
}
