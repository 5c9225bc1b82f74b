//! Authentication: who a request comes from. A verified client certificate names its user (CN)
//! and groups (O); a bearer token is a static token or a service-account token that is still
//! valid; a request with neither is `system:anonymous`, which RBAC then allows only what
//! upstream's bootstrap policy opens to `system:unauthenticated`. A bad token is 401.

use http::{HeaderMap, header};
use serde_json::Value;

use super::{AUTHENTICATED, Identity};
use crate::error::{ApiError, ApiResult};
use crate::http::AppState;

/// The user of unauthenticated requests to a plain-HTTP server (`vkube apiserver --plain-http`,
/// for tests and demos only): like kube-apiserver's old insecure port, a superuser.
pub fn unsecured() -> Identity {
    Identity::new("system:unsecured", vec![super::MASTERS.into(), AUTHENTICATED.into()])
}

/// The authenticated user of a request: `certificate` (from the TLS handshake) first, then the
/// bearer token, else anonymous (or [`unsecured`] on a plain-HTTP server).
pub async fn authenticate(state: &AppState, certificate: Option<Identity>, headers: &HeaderMap) -> ApiResult<Identity> {
    if let Some(identity) = certificate {
        return Ok(identity.authenticated());
    }
    match bearer(headers) {
        Some(token) => token_identity(state, &token).await.map(Identity::authenticated).ok_or(ApiError::Unauthorized),
        None if state.allow_anonymous => Ok(unsecured()),
        None => Ok(Identity::anonymous()),
    }
}

/// The bearer token of an `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

/// Who a bearer token stands for: a static token, or a valid service account token.
pub async fn token_identity(state: &AppState, token: &str) -> Option<Identity> {
    if token.is_empty() {
        return None;
    }
    match state.tokens.get(token) {
        Some(identity) => Some(identity.clone()),
        None => service_account_identity(state, token).await,
    }
}

/// The service account a signed token names, if the token is valid and the account (and the
/// pod it is bound to) still exists with the same uid.
async fn service_account_identity(state: &AppState, token: &str) -> Option<Identity> {
    let subject = state.token_signer.as_ref()?.verify(token)?;
    let snapshot = state.registry.catalog.snapshot();
    let accounts = snapshot.get("", "v1", "serviceaccounts")?;
    let account = state.registry.get(&accounts, Some(&subject.namespace), &subject.name).await.ok()?;
    if account.pointer("/metadata/uid").and_then(Value::as_str) != Some(subject.uid.as_str()) {
        return None;
    }
    let mut identity = Identity::new(
        format!("system:serviceaccount:{}:{}", subject.namespace, subject.name),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", subject.namespace),
            AUTHENTICATED.into(),
        ],
    );
    identity.uid = subject.uid.clone();
    if let Some(jti) = &subject.jti {
        identity.extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={jti}")]);
    }
    if let Some((pod_name, pod_uid)) = &subject.pod {
        let pods = snapshot.get("", "v1", "pods")?;
        let pod = state.registry.get(&pods, Some(&subject.namespace), pod_name).await.ok()?;
        if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod_uid.as_str()) {
            return None;
        }
        identity.extra.insert("authentication.kubernetes.io/pod-name".into(), vec![pod_name.clone()]);
        identity.extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![pod_uid.clone()]);
    }
    Some(identity)
}
