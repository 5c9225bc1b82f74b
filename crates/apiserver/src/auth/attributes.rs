//! Authorization attributes of a request, derived from its method, path and query exactly as
//! kube-apiserver's `RequestInfoFactory` does (so RBAC rules mean the same on both servers).

/// What a request asks to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, `proxy`,
    /// or for non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// Whether the request names a resource (else it is a non-resource path).
    pub resource_request: bool,
    /// The URL path.
    pub path: String,
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource, if any.
    pub subresource: String,
    /// Namespace ("" for cluster scope).
    pub namespace: String,
    /// Object name ("" for collections, unless a `metadata.name` field selector names one).
    pub name: String,
}

impl Attributes {
    /// The attributes of an HTTP request.
    pub fn from_request(method: &str, path: &str, query: Option<&str>) -> Self {
        let mut info = Attributes { verb: method.to_ascii_lowercase(), path: path.to_string(), ..Default::default() };
        let mut parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if parts.len() == 1 && parts[0].is_empty() {
            parts.clear();
        }
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return info;
        }
        let prefix = parts.remove(0);
        if prefix == "apis" {
            if parts.len() < 3 {
                return info;
            }
            info.group = parts.remove(0).to_string();
        }
        info.resource_request = true;
        info.version = parts.remove(0).to_string();
        if matches!(parts[0], "proxy" | "watch") {
            if parts.len() < 2 {
                return info;
            }
            info.verb = parts.remove(0).to_string();
        } else {
            info.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        }
        if parts[0] == "namespaces" && parts.len() > 1 {
            info.namespace = parts[1].to_string();
            if parts.len() > 2 && !matches!(parts[2], "status" | "finalize") {
                parts.drain(..2);
            }
        }
        if parts.len() >= 3 && info.verb != "proxy" {
            info.subresource = parts[2].to_string();
        }
        if parts.len() >= 2 {
            info.name = parts[1].to_string();
        }
        if !parts.is_empty() {
            info.resource = parts[0].to_string();
        }
        if info.name.is_empty() && info.verb == "get" {
            let watch = query_values(query, "watch").next().is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
            info.verb = if watch { "watch" } else { "list" }.to_string();
            if let Some(selector) = query_values(query, "fieldSelector").next()
                && let Some(name) = exact_name(&selector)
            {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".into();
        }
        info
    }

    /// A resource request (what access reviews and internal checks ask).
    pub fn resource(verb: &str, group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> Self {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            group: group.into(),
            version: "*".into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// A non-resource request.
    pub fn non_resource(verb: &str, path: &str) -> Self {
        Attributes { verb: verb.into(), path: path.into(), ..Default::default() }
    }

    /// Upstream's `forbiddenMessage`.
    pub fn forbidden_message(&self, user: &str) -> String {
        if !self.resource_request {
            return format!("User \"{user}\" cannot {} path \"{}\"", self.verb, self.path);
        }
        let mut resource = self.resource.clone();
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        if self.namespace.is_empty() {
            format!(
                "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope",
                self.verb, self.group
            )
        } else {
            format!(
                "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{}\"",
                self.verb, self.group, self.namespace
            )
        }
    }
}

fn query_values<'a>(query: Option<&'a str>, key: &'a str) -> impl Iterator<Item = String> + 'a {
    query.unwrap_or_default().split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        (decode(k) == key).then(|| decode(v))
    })
}

/// The name a field selector requires exactly (`metadata.name=x` or `==`), if it is a valid path
/// segment.
fn exact_name(selector: &str) -> Option<String> {
    for term in selector.split(',') {
        let term = term.trim();
        let value = term.strip_prefix("metadata.name==").or_else(|| term.strip_prefix("metadata.name="));
        if let Some(value) = value
            && !value.starts_with('=')
        {
            let valid =
                !value.is_empty() && value != "." && value != ".." && !value.contains('/') && !value.contains('%');
            return valid.then(|| value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: Option<&str>) -> Attributes {
        Attributes::from_request(method, path, query)
    }

    #[test]
    fn requests_map_to_upstream_verbs_and_resources() {
        let a = attrs("GET", "/api/v1/namespaces/team-a/pods", None);
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace.as_str()), ("list", "pods", "team-a"));
        let a = attrs("GET", "/api/v1/namespaces/team-a/pods", Some("watch=true&fieldSelector=metadata.name%3Dweb"));
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "web"));
        let a = attrs("GET", "/api/v1/namespaces/team-a/pods/web/log", None);
        assert_eq!((a.verb.as_str(), a.subresource.as_str(), a.name.as_str()), ("get", "log", "web"));
        let a = attrs("DELETE", "/apis/apps/v1/namespaces/x/deployments", None);
        assert_eq!((a.verb.as_str(), a.group.as_str()), ("deletecollection", "apps"));
        let a = attrs("PUT", "/api/v1/namespaces/x/finalize", None);
        assert_eq!((a.resource.as_str(), a.name.as_str(), a.subresource.as_str()), ("namespaces", "x", "finalize"));
        let a = attrs("GET", "/api/v1/namespaces/x", None);
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("get", "namespaces", "x", "x")
        );
        let a = attrs("GET", "/api/v1/watch/namespaces/x/pods", None);
        assert_eq!((a.verb.as_str(), a.resource.as_str()), ("watch", "pods"));
        for path in ["/api", "/apis/apps/v1", "/api/v1", "/version", "/openapi/v3/apis/apps/v1"] {
            let a = attrs("GET", path, None);
            assert!(!a.resource_request, "{path}");
            assert_eq!(a.verb, "get");
        }
    }

    #[test]
    fn forbidden_messages_read_as_upstream() {
        let a = attrs("GET", "/api/v1/namespaces/team-b/pods", None);
        assert_eq!(
            a.forbidden_message("alice"),
            "User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"team-b\""
        );
        let a = attrs("GET", "/api", None);
        assert_eq!(a.forbidden_message("system:anonymous"), "User \"system:anonymous\" cannot get path \"/api\"");
    }
}
