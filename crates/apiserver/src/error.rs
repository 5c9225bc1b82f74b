//! Every failure of the API server, and the one place where it becomes a `metav1.Status`.

use serde_json::{Value, json};

/// One field-level cause of an `Invalid` (or other) error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// The machine-readable reason, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// The JSON path of the field, e.g. `metadata.name`.
    pub field: String,
    /// What was wrong, in the real server's wording.
    pub message: String,
}

impl Cause {
    /// A `FieldValueInvalid` cause: `value` at `field` is wrong because of `detail`.
    pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Self {
        let field = field.into();
        Cause { reason: "FieldValueInvalid", message: format!("Invalid value: {}: {detail}", quote(value)), field }
    }

    /// A `FieldValueInvalid` cause about a list of strings (written as Go's `%#v` writes a
    /// `[]string`).
    pub fn invalid_strings(field: impl Into<String>, values: &[&str], detail: &str) -> Self {
        let values: Vec<String> = values.iter().map(|v| quote(v)).collect();
        let message = format!("Invalid value: []string{{{}}}: {detail}", values.join(", "));
        Cause { reason: "FieldValueInvalid", message, field: field.into() }
    }

    /// A `FieldValueInvalid` cause about a number (written bare, as upstream's `%v` does).
    pub fn invalid_number(field: impl Into<String>, value: i64, detail: &str) -> Self {
        Cause { reason: "FieldValueInvalid", message: format!("Invalid value: {value}: {detail}"), field: field.into() }
    }

    /// A `FieldValueRequired` cause.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        Cause { reason: "FieldValueRequired", field: field.into(), message: format!("Required value{detail}") }
    }

    /// A `FieldValueDuplicate` cause.
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {}", quote(value)),
        }
    }

    /// A `FieldValueForbidden` cause.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Cause { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {detail}") }
    }

    /// A `FieldValueNotSupported` cause.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {}: supported values: {}", quote(value), list.join(", ")),
        }
    }

    /// A `FieldValueTooLong` cause.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Cause {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }

    /// The `field: message` line kubectl prints.
    pub fn line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// `deployments.apps`, or `configmaps` for the core group, as the real server names resources.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

fn quote(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}

/// Which object an error is about, as `details` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// API group ("" for core).
    pub group: String,
    /// The resource plural (NotFound, Conflict ...) or Kind (Invalid).
    pub kind: String,
    /// The object name.
    pub name: String,
}

/// A ValidatingAdmissionPolicy's refusal.
#[derive(Debug)]
pub struct PolicyDenial {
    /// The full message.
    pub message: String,
    /// `Invalid`, `Forbidden`, `Unauthorized` or `RequestEntityTooLarge`.
    pub reason: &'static str,
    /// The refused object.
    pub subject: Subject,
    /// The policy's message as a cause.
    pub causes: Vec<Cause>,
}

/// Everything a request can fail with. `status()` renders it; nothing else builds a Status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The object or path does not exist.
    #[error("{message}")]
    NotFound { message: String, subject: Option<Subject> },
    /// A create named an object that exists.
    #[error("{} \"{name}\" already exists", qualified(group, resource))]
    AlreadyExists { group: String, resource: String, name: String },
    /// An update lost an optimistic-concurrency race, or a precondition failed.
    #[error("{message}")]
    Conflict { message: String, subject: Subject, causes: Vec<Cause> },
    /// The object failed validation.
    #[error("{kind} \"{name}\" is invalid")]
    Invalid { group: String, kind: String, name: String, causes: Vec<Cause> },
    /// A request-level validation failure that is not about one object (e.g. ListOptions).
    #[error("{message}")]
    InvalidOptions { message: String, causes: Vec<Cause> },
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The verb is not served for this resource.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// The verb is not allowed now, for the reason given.
    #[error("{0}")]
    NotAllowedNow(String),
    /// The response cannot be given in a media type the client accepts.
    #[error("{0}")]
    NotAcceptable(String),
    /// The body's media type cannot be handled.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is larger than the server accepts.
    #[error("Request entity too large: limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    /// No or bad credentials.
    #[error("Unauthorized")]
    Unauthorized,
    /// The caller may not do this (or the namespace is terminating).
    #[error("{message}")]
    Forbidden { message: String, subject: Subject, causes: Vec<Cause> },
    /// A ValidatingAdmissionPolicy refused the write, with the validation's reason
    /// (`Invalid`, `Forbidden`, `Unauthorized`, `RequestEntityTooLarge`).
    #[error("{}", .0.message)]
    PolicyDenied(Box<PolicyDenial>),
    /// The request is refused for now (an eviction a disruption budget does not allow yet).
    #[error("{message}")]
    TooManyRequests { message: String, causes: Vec<Cause> },
    /// A resourceVersion or continue token is too old.
    #[error("{message}")]
    Expired {
        message: String,
        /// A token continuing the list from where it stopped at the current revision (the
        /// inconsistent continuation upstream offers when a continue token expired).
        continue_token: Option<String>,
    },
    /// A resourceVersion from the future.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion { requested: u64, current: u64 },
    /// The server is not ready.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a storage failure.
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// A refusal whose Status someone else wrote (an admission webhook's), served as it is.
    #[error("{}", .0["message"].as_str().unwrap_or_default())]
    Rejected(Box<Value>),
    /// A 500 without a reason: what upstream answers for an error it does not classify.
    #[error("{0}")]
    Unclassified(String),
}

impl ApiError {
    /// `resource.group "name" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            message: format!("{} \"{name}\" not found", qualified(group, resource)),
            subject: Some(Subject { group: group.into(), kind: resource.into(), name: name.into() }),
        }
    }

    /// An unknown path.
    pub fn no_route() -> Self {
        // Upstream's answer carries empty details.
        ApiError::NotFound {
            message: "the server could not find the requested resource".into(),
            subject: Some(Subject::default()),
        }
    }

    /// The standard optimistic-concurrency conflict.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, resource)
            ),
            subject: Subject { group: group.into(), kind: resource.into(), name: name.into() },
            causes: Vec::new(),
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::InvalidOptions { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::MethodNotAllowed | ApiError::NotAllowedNow(_) => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::NotAcceptable(_) => 406,
            ApiError::TooLarge { .. } => 413,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::PolicyDenied(denial) => match denial.reason {
                "Unauthorized" => 401,
                "Forbidden" => 403,
                "RequestEntityTooLarge" => 413,
                _ => 422,
            },
            ApiError::Expired { .. } => 410,
            ApiError::TooLargeResourceVersion { .. } => 504,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) | ApiError::Unclassified(_) => 500,
            ApiError::Rejected(status) => {
                status["code"].as_u64().and_then(|c| u16::try_from(c).ok()).filter(|c| *c >= 400).unwrap_or(400)
            }
        }
    }

    /// The `reason` field.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::InvalidOptions { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed | ApiError::NotAllowedNow(_) => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::PolicyDenied(denial) => denial.reason,
            ApiError::Expired { .. } => "Expired",
            ApiError::TooLargeResourceVersion { .. } => "Timeout",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
            ApiError::Unclassified(_) | ApiError::Rejected(_) => "",
        }
    }

    /// The full message, as kubectl prints it.
    pub fn message(&self) -> String {
        match self {
            ApiError::Invalid { group, kind, name, causes } => {
                // The kind qualified by its group, as upstream's `GroupKind.String()` writes it.
                let kind = if group.is_empty() { kind.clone() } else { format!("{kind}.{group}") };
                let lines: Vec<String> = causes.iter().map(Cause::line).collect();
                if lines.len() == 1 {
                    format!("{kind} \"{name}\" is invalid: {}", lines[0])
                } else {
                    format!("{kind} \"{name}\" is invalid: [{}]", lines.join(", "))
                }
            }
            other => other.to_string(),
        }
    }

    /// The `metav1.Status` body for this error.
    pub fn status(&self) -> Value {
        if let ApiError::Rejected(status) = self {
            return (**status).clone();
        }
        let mut details = serde_json::Map::new();
        let mut always_details = false;
        let put_subject = |subject: &Subject, details: &mut serde_json::Map<String, Value>| {
            if !subject.name.is_empty() {
                details.insert("name".into(), json!(subject.name));
            }
            if !subject.group.is_empty() {
                details.insert("group".into(), json!(subject.group));
            }
            if !subject.kind.is_empty() {
                details.insert("kind".into(), json!(subject.kind));
            }
        };
        let causes: &[Cause] = match self {
            ApiError::NotFound { subject: Some(subject), .. } => {
                always_details = true;
                put_subject(subject, &mut details);
                &[]
            }
            ApiError::AlreadyExists { group, resource, name } => {
                put_subject(
                    &Subject { group: group.clone(), kind: resource.clone(), name: name.clone() },
                    &mut details,
                );
                &[]
            }
            ApiError::Conflict { subject, causes, .. } => {
                put_subject(subject, &mut details);
                causes
            }
            ApiError::Forbidden { subject, causes, .. } => {
                // Even a refused non-resource request carries (empty) details.
                always_details = true;
                put_subject(subject, &mut details);
                causes
            }
            ApiError::Invalid { group, kind, name, causes } => {
                put_subject(&Subject { group: group.clone(), kind: kind.clone(), name: name.clone() }, &mut details);
                causes
            }
            ApiError::InvalidOptions { message, causes } if message == crate::patch::PATCH_FAILED => {
                always_details = true;
                causes
            }
            ApiError::InvalidOptions { message, causes } => {
                // `PatchOptions.meta.k8s.io "" is invalid: ...` names its kind and group.
                if let Some((kind, group)) =
                    message.split_once(' ').and_then(|(qualified, _)| qualified.split_once('.'))
                    && message.contains(" is invalid")
                {
                    details.insert("group".into(), json!(group));
                    details.insert("kind".into(), json!(kind));
                }
                causes
            }
            ApiError::TooManyRequests { causes, .. } => causes,
            ApiError::PolicyDenied(denial) => {
                put_subject(&denial.subject, &mut details);
                &denial.causes
            }
            ApiError::TooLargeResourceVersion { .. } => {
                details.insert(
                    "causes".into(),
                    json!([{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]),
                );
                details.insert("retryAfterSeconds".into(), json!(1));
                &[]
            }
            _ => &[],
        };
        if !causes.is_empty() {
            let list: Vec<Value> = causes
                .iter()
                .map(|c| {
                    let mut cause = json!({"reason": c.reason, "message": c.message});
                    // `field` is omitted when empty, as upstream's omitempty does.
                    if !c.field.is_empty() {
                        cause["field"] = json!(c.field);
                    }
                    cause
                })
                .collect();
            details.insert("causes".into(), Value::Array(list));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if self.reason().is_empty() {
            status.as_object_mut().map(|s| s.remove("reason"));
        }
        if let ApiError::Expired { continue_token: Some(token), .. } = self {
            status["metadata"]["continue"] = json!(token);
        }
        if !details.is_empty() || always_details {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl From<vkube_store::StorageError> for ApiError {
    fn from(error: vkube_store::StorageError) -> Self {
        use vkube_store::StorageError as S;
        match error {
            S::Compacted { requested, compacted } => ApiError::Expired {
                message: format!("too old resource version: {requested} ({compacted})"),
                continue_token: None,
            },
            S::FutureRevision { requested, current } => ApiError::TooLargeResourceVersion { requested, current },
            S::Closed => ApiError::Unavailable("storage is shutting down".into()),
            other => ApiError::Internal(format!("{other}: {}", source_text(&other))),
        }
    }
}

fn source_text(error: &dyn std::error::Error) -> String {
    error.source().map(|s| s.to_string()).unwrap_or_default()
}

/// The result of any API operation.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_names_the_resource_plural() {
        let status = ApiError::not_found("", "configmaps", "cm1").status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], "configmaps \"cm1\" not found");
        assert_eq!(status["details"]["kind"], "configmaps");
        assert_eq!(status["details"]["name"], "cm1");
        assert!(status["details"].get("group").is_none());
    }

    #[test]
    fn invalid_lists_every_cause_in_the_message() {
        let error = ApiError::Invalid {
            group: "apps".into(),
            kind: "Deployment".into(),
            name: "Bad".into(),
            causes: vec![
                Cause::invalid("metadata.name", "Bad", "must be lowercase"),
                Cause::required("spec.selector", ""),
            ],
        };
        let status = error.status();
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["message"],
            "Deployment.apps \"Bad\" is invalid: [metadata.name: Invalid value: \"Bad\": must be lowercase, spec.selector: Required value]"
        );
        assert_eq!(status["details"]["group"], "apps");
        assert_eq!(status["details"]["causes"][1]["field"], "spec.selector");
        assert_eq!(status["details"]["causes"][1]["reason"], "FieldValueRequired");
    }

    #[test]
    fn conflict_has_the_upstream_wording() {
        let status = ApiError::stale("", "configmaps", "cm1").status();
        assert_eq!(status["code"], 409);
        assert_eq!(status["reason"], "Conflict");
        assert!(status["message"].as_str().unwrap().starts_with("Operation cannot be fulfilled on configmaps \"cm1\""));
    }
}
