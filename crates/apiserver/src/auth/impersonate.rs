//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-*` headers replace
//! the authenticated user when it may `impersonate` each requested user, service account, group,
//! extra value and uid, as kube-apiserver's `WithImpersonation` filter decides.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::{ANONYMOUS, AUTHENTICATED, Attributes, Identity, Rbac, UNAUTHENTICATED, decide, forbidden};
use crate::error::{ApiError, ApiResult};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// The identity a request acts as: `identity` itself without impersonation headers, else the
/// impersonated user once every part of it is authorized.
pub fn impersonate(rbac: &Rbac, identity: Identity, headers: &HeaderMap) -> ApiResult<Identity> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let requested_user = text(USER);
    let groups_requested: Vec<String> =
        headers.get_all(GROUP).iter().filter_map(|v| v.to_str().ok()).map(String::from).collect();
    let mut extras: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA)
            && let Ok(value) = value.to_str()
        {
            let key = percent_encoding::percent_decode_str(&key.to_ascii_lowercase()).decode_utf8_lossy().into_owned();
            extras.entry(key).or_default().push(value.to_string());
        }
    }
    let requested_uid = text(UID);
    if requested_user.is_empty() {
        if !groups_requested.is_empty() || !extras.is_empty() || !requested_uid.is_empty() {
            return Err(ApiError::BadRequest(
                "requested impersonation of groups, extra values or a uid without impersonating a user".into(),
            ));
        }
        return Ok(identity);
    }
    // One check per requested part, in upstream's order: the user, each group, each extra value,
    // the uid.
    let mut checks = Vec::new();
    let mut groups = Vec::new();
    let service_account = requested_user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'));
    match service_account {
        Some((namespace, name)) => {
            checks.push(Attributes::resource("impersonate", "", "serviceaccounts", "", namespace, name));
            if groups_requested.is_empty() {
                groups = vec!["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{namespace}")];
            }
        }
        None => checks.push(Attributes::resource("impersonate", "", "users", "", "", &requested_user)),
    }
    for group in &groups_requested {
        checks.push(Attributes::resource("impersonate", "", "groups", "", "", group));
        groups.push(group.clone());
    }
    for (key, values) in &extras {
        for value in values {
            checks.push(Attributes::resource("impersonate", "authentication.k8s.io", "userextras", key, "", value));
        }
    }
    if !requested_uid.is_empty() {
        checks.push(Attributes::resource("impersonate", "authentication.k8s.io", "uids", "", "", &requested_uid));
    }
    for check in &checks {
        let decision = decide(rbac, &identity, check);
        if !decision.allowed {
            return Err(forbidden(&identity, check, &decision.reason));
        }
    }
    if requested_user != ANONYMOUS {
        if !groups.iter().any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
    } else if !groups.iter().any(|g| g == UNAUTHENTICATED) {
        groups.push(UNAUTHENTICATED.into());
    }
    Ok(Identity { user: requested_user, groups, uid: requested_uid, extra: extras })
}
