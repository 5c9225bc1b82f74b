//! vkube's Kubernetes-compatible API server: the virtual control plane's front door.
//!
//! It serves every built-in kind a tenant or the syncer uses, and custom resources from
//! Established CRDs, over the embedded store, to unmodified kubectl, kube-rs and Python clients.
//! It knows nothing of hosts or syncing.
//!
//! Layers, outermost first: [`server`] (listening, TLS, authentication) → [`http`] (URL grammar,
//! negotiation, Status errors) → [`registry`] (generic object semantics) → `vkube_store`.
//! Per-kind rules live in [`strategy`], [`table`] and [`crd`]; discovery and OpenAPI are derived
//! from the [`catalog`].

pub mod admission;
pub mod aggregation;
pub mod auth;
pub mod catalog;
pub mod cel;
pub mod conversion;
pub mod conversion_webhook;
pub mod crd;
pub mod discovery;
pub mod error;
pub mod eviction;
pub mod fields;
pub mod go_decode;
pub mod http;
pub mod kubelet;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod proxy;
pub mod registry;
pub mod resource_metrics;
pub mod selector;
pub mod server;
pub mod strategy;
pub mod streams;
pub mod strict;
pub mod table;
pub mod tokens;
pub mod validation;
pub mod wire;

pub use error::{ApiError, ApiResult};
pub use server::{Hooks, RunningServer, ServerConfig, ServerError, start, start_with};
