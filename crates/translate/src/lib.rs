//! The pure sync model: how a virtual object's name, labels, annotations and references look on
//! the host, and back. No tokio, no client, no clock: everything a decision needs is passed in.
//!
//! Conventions follow the reference syncer exactly where host objects are concerned (names,
//! bookkeeping keys, hashes), so a host namespace can be read by either implementation.

pub mod claims;
pub mod events;
pub mod extra;
pub mod labels;
pub mod metadata;
pub mod metadata_sync;
pub mod names;
pub mod nodes;
pub mod pod_security;
pub mod pods;
pub mod quantity;
pub mod replicate;
pub mod services;

/// The virtual cluster a translation is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The virtual cluster's name (`VC`).
    pub name: String,
    /// The host namespace its workloads run in (`HNS`).
    pub host_namespace: String,
}

impl Context {
    /// A context for virtual cluster `name` in host namespace `host_namespace`.
    pub fn new(name: impl Into<String>, host_namespace: impl Into<String>) -> Self {
        Context { name: name.into(), host_namespace: host_namespace.into() }
    }
}
