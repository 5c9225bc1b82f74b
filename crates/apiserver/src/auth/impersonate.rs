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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    fn rbac_allowing(rules: serde_json::Value) -> Rbac {
        let rbac = Rbac::default();
        let prefix = crate::auth::rbac::PREFIX;
        rbac.apply(&format!("{prefix}clusterroles/imp"), Some(&json!({ "rules": rules })));
        rbac.apply(
            &format!("{prefix}clusterrolebindings/imp"),
            Some(&json!({"roleRef": {"kind": "ClusterRole", "name": "imp"}, "subjects": [{"kind": "User", "name": "ops"}]})),
        );
        rbac
    }

    #[test]
    fn each_impersonated_part_needs_its_own_permission() {
        let ops = Identity::new("ops", vec![AUTHENTICATED.into()]);
        let rbac = rbac_allowing(json!([
            {"verbs": ["impersonate"], "apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["ci"]},
            {"verbs": ["impersonate"], "apiGroups": [""], "resources": ["groups"], "resourceNames": ["devs"]},
            {"verbs": ["impersonate"], "apiGroups": [""], "resources": ["users"]},
        ]));
        // A service account gets its fixed groups.
        let sa = impersonate(&rbac, ops.clone(), &headers(&[("impersonate-user", "system:serviceaccount:team-a:ci")]))
            .unwrap();
        assert_eq!(sa.groups, ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"]);
        let other_sa =
            impersonate(&rbac, ops.clone(), &headers(&[("impersonate-user", "system:serviceaccount:team-a:prod")]));
        assert_eq!(
            other_sa.unwrap_err().to_string(),
            "serviceaccounts \"prod\" is forbidden: User \"ops\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"team-a\""
        );
        // Groups are checked one by one; an allowed user with them gets system:authenticated too.
        let devs =
            impersonate(&rbac, ops.clone(), &headers(&[("impersonate-user", "x"), ("impersonate-group", "devs")]))
                .unwrap();
        assert_eq!(
            (devs.user.as_str(), devs.groups.clone()),
            ("x", vec!["devs".to_string(), AUTHENTICATED.to_string()])
        );
        let admins = impersonate(
            &rbac,
            ops.clone(),
            &headers(&[("impersonate-user", "x"), ("impersonate-group", "system:masters")]),
        );
        assert!(admins.unwrap_err().to_string().contains("cannot impersonate resource \"groups\""));
        // Extra values need userextras/<key>; groups without a user are a bad request.
        let extra =
            impersonate(&rbac, ops.clone(), &headers(&[("impersonate-user", "x"), ("impersonate-extra-scopes", "a")]));
        assert!(extra.unwrap_err().to_string().contains("cannot impersonate resource \"userextras/scopes\""));
        let no_user = impersonate(&rbac, ops.clone(), &headers(&[("impersonate-group", "devs")]));
        assert_eq!(no_user.unwrap_err().code(), 400);
        // Without headers nothing changes; without permission nothing is impersonated.
        assert_eq!(impersonate(&rbac, ops.clone(), &HeaderMap::new()).unwrap(), ops);
        let nobody = Identity::new("nobody", vec![AUTHENTICATED.into()]);
        assert!(impersonate(&rbac, nobody, &headers(&[("impersonate-user", "x")])).is_err());
    }
}
