//! The simulated kubelet's own HTTPS API: what kube-apiserver calls on a node's kubelet
//! (`/containerLogs/...` for `pods/log`). Served when the simulator is attached to an API server
//! that reaches kubelets over the network (a real control plane); vkube's own host API server
//! reads simulated logs in-process instead.
//!
//! Like a kubelet with `--authentication-token-webhook=false`, `--client-ca-file` and
//! `--authorization-mode=Webhook`: a caller must present a client certificate signed by the
//! cluster's client CA (read from `kube-system/extension-apiserver-authentication`), and is
//! authorized with a SubjectAccessReview on `nodes/<subresource>` of the pod's node.

pub mod exec;
pub mod front_proxy;
pub mod logs;
pub mod metrics;
pub mod ports;
pub mod sample_apiserver;
mod server;
pub mod sessions;
pub mod webhook;

pub use server::{KubeletError, KubeletServer};
