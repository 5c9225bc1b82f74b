//! Pod Security Standards (`policies.podSecurityStandard`, sync-behavior.md §4.1): a virtual pod
//! is checked against the `baseline` or `restricted` level, latest version, before it is synced,
//! with the checks, their order and their messages of Kubernetes' Pod Security admission, so a
//! tenant reads the same reasons a real cluster's `enforce` label would give.

use std::collections::BTreeSet;

use serde_json::Value;

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Everything allowed.
    Privileged,
    /// Known privilege escalations refused.
    Baseline,
    /// Hardened: baseline plus the restricted checks.
    Restricted,
}

impl Level {
    /// The level named by `policies.podSecurityStandard` (empty or unknown: none; the
    /// configuration's validation refuses unknown names).
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// Checks `pod` (a Pod as JSON) against `level`; Err carries the admission's message,
/// `violates PodSecurity "LEVEL:latest": reason (detail), ...`.
pub fn evaluate(level: Level, pod: &Value) -> Result<(), String> {
    if level == Level::Privileged {
        return Ok(());
    }
    let pod = PodView::new(pod);
    // Baseline checks by ID, then restricted ones; a restricted check replaces its baseline
    // counterpart (capabilities, volumes, seccomp).
    let mut checks: Vec<Check> = vec![
        app_armor_profile,
        capabilities_baseline,
        host_namespaces,
        host_path_volumes,
        host_ports,
        privileged,
        proc_mount,
        se_linux_options,
        seccomp_profile_baseline,
        sysctls,
        windows_host_process,
    ];
    if level == Level::Restricted {
        let replaced = [capabilities_baseline as Check, host_path_volumes, seccomp_profile_baseline];
        checks.retain(|c| !replaced.iter().any(|r| std::ptr::fn_addr_eq(*r, *c)));
        checks.extend([
            allow_privilege_escalation as Check,
            capabilities_restricted,
            restricted_volumes,
            run_as_non_root,
            run_as_user,
            seccomp_profile_restricted,
        ]);
    }
    let failures: Vec<String> = checks
        .iter()
        .filter_map(|check| check(&pod))
        .map(|(reason, detail)| if detail.is_empty() { reason } else { format!("{reason} ({detail})") })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("violates PodSecurity \"{}:latest\": {}", level.name(), failures.join(", ")))
    }
}

/// A failed check: reason and detail.
type Failure = Option<(String, String)>;
type Check = fn(&PodView) -> Failure;

/// The parts of a pod the checks read.
struct PodView<'a> {
    annotations: Option<&'a serde_json::Map<String, Value>>,
    spec: &'a Value,
    /// Init, regular and ephemeral containers, in that order.
    containers: Vec<&'a Value>,
}

impl<'a> PodView<'a> {
    fn new(pod: &'a Value) -> Self {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let containers = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .flat_map(|key| spec.get(key).and_then(Value::as_array).into_iter().flatten())
            .collect();
        PodView { annotations: pod.pointer("/metadata/annotations").and_then(Value::as_object), spec, containers }
    }

    fn pod_context(&self, field: &str) -> Option<&'a Value> {
        self.spec.get("securityContext").and_then(|c| c.get(field)).filter(|v| !v.is_null())
    }

    fn windows(&self) -> bool {
        self.spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
    }

    /// Names of the containers for which `bad` holds.
    fn containers_where(&self, bad: impl Fn(&Value) -> bool) -> Vec<String> {
        self.containers.iter().filter(|c| bad(c)).map(|c| name(c)).collect()
    }
}

fn name(container: &Value) -> String {
    container.get("name").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn context<'a>(container: &'a Value, field: &str) -> Option<&'a Value> {
    container.get("securityContext").and_then(|c| c.get(field)).filter(|v| !v.is_null())
}

fn str_at<'a>(value: Option<&'a Value>, key: &str) -> &'a str {
    value.and_then(|v| v.get(key)).and_then(Value::as_str).unwrap_or_default()
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return String::new();
    }
    format!("\"{}\"", items.iter().map(AsRef::as_ref).collect::<Vec<_>>().join("\", \""))
}

fn plural(singular: &str, plural: &str, count: usize) -> String {
    if count == 1 { singular } else { plural }.to_string()
}

fn containers_phrase(names: &[String]) -> String {
    format!("{} {}", plural("container", "containers", names.len()), join_quote(names))
}

fn fail(reason: impl Into<String>, detail: impl Into<String>) -> Failure {
    Some((reason.into(), detail.into()))
}

fn app_armor_profile(pod: &PodView) -> Failure {
    let allowed = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if let Some(profile) = pod.pod_context("appArmorProfile") {
        let kind = str_at(Some(profile), "type");
        if !allowed(kind) {
            setters.push("pod".to_string());
            values.insert(kind.to_string());
        }
    }
    let mut bad = Vec::new();
    for c in &pod.containers {
        let kind = context(c, "appArmorProfile").map(|p| str_at(Some(p), "type"));
        if let Some(kind) = kind.filter(|k| !allowed(k)) {
            bad.push(name(c));
            values.insert(kind.to_string());
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    let mut values: Vec<String> = values.into_iter().collect();
    let mut annotations: Vec<String> = pod
        .annotations
        .into_iter()
        .flatten()
        .filter(|(k, v)| {
            let v = v.as_str().unwrap_or_default();
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or_default()))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(plural("annotation", "annotations", annotations.len()));
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    fail(
        plural("forbidden AppArmor profile", "forbidden AppArmor profiles", values.len()),
        format!("{} must not set AppArmor profile type to {}", setters.join(" and "), join_quote(&values)),
    )
}

fn capabilities_added(container: &Value) -> Vec<String> {
    context(container, "capabilities")
        .and_then(|c| c.get("add"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn capabilities_baseline(pod: &PodView) -> Failure {
    let mut forbidden = BTreeSet::new();
    let mut bad = Vec::new();
    for c in &pod.containers {
        let extra: Vec<String> =
            capabilities_added(c).into_iter().filter(|cap| !BASELINE_CAPABILITIES.contains(&cap.as_str())).collect();
        if !extra.is_empty() {
            bad.push(name(c));
            forbidden.extend(extra);
        }
    }
    if bad.is_empty() {
        return None;
    }
    let forbidden: Vec<String> = forbidden.into_iter().collect();
    fail(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(&forbidden)
        ),
    )
}

fn capabilities_restricted(pod: &PodView) -> Failure {
    if pod.windows() {
        return None;
    }
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for c in &pod.containers {
        let Some(capabilities) = context(c, "capabilities") else {
            missing_drop.push(name(c));
            continue;
        };
        let drops_all = capabilities
            .get("drop")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")));
        if !drops_all {
            missing_drop.push(name(c));
        }
        let extra: Vec<String> = capabilities_added(c).into_iter().filter(|cap| cap != "NET_BIND_SERVICE").collect();
        if !extra.is_empty() {
            adding.push(name(c));
            forbidden.extend(extra);
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            r#"{} must set securityContext.capabilities.drop=["ALL"]"#,
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        let forbidden: Vec<String> = forbidden.into_iter().collect();
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(&forbidden)
        ));
    }
    if details.is_empty() { None } else { fail("unrestricted capabilities", details.join("; ")) }
}

fn host_namespaces(pod: &PodView) -> Failure {
    let on: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| pod.spec.get(**k).and_then(Value::as_bool) == Some(true))
        .map(|k| format!("{k}=true"))
        .collect();
    if on.is_empty() { None } else { fail("host namespaces", on.join(", ")) }
}

fn volumes<'a>(pod: &PodView<'a>) -> impl Iterator<Item = &'a Value> {
    pod.spec.get("volumes").and_then(Value::as_array).into_iter().flatten()
}

fn host_path_volumes(pod: &PodView) -> Failure {
    let names: Vec<String> =
        volumes(pod).filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null())).map(name).collect();
    if names.is_empty() {
        return None;
    }
    fail("hostPath volumes", format!("{} {}", plural("volume", "volumes", names.len()), join_quote(&names)))
}

fn host_ports(pod: &PodView) -> Failure {
    let mut ports = BTreeSet::new();
    let mut bad = Vec::new();
    for c in &pod.containers {
        let used: Vec<i64> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64).filter(|port| *port != 0))
            .collect();
        if !used.is_empty() {
            bad.push(name(c));
            ports.extend(used.iter().map(i64::to_string));
        }
    }
    if bad.is_empty() {
        return None;
    }
    let ports: Vec<String> = ports.into_iter().collect();
    fail(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            plural("uses", "use", bad.len()),
            plural("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

fn privileged(pod: &PodView) -> Failure {
    let bad = pod.containers_where(|c| context(c, "privileged").and_then(Value::as_bool) == Some(true));
    if bad.is_empty() {
        return None;
    }
    fail("privileged", format!("{} must not set securityContext.privileged=true", containers_phrase(&bad)))
}

fn proc_mount(pod: &PodView) -> Failure {
    let mut kinds = BTreeSet::new();
    let mut bad = Vec::new();
    for c in &pod.containers {
        if let Some(kind) = context(c, "procMount").and_then(Value::as_str).filter(|m| *m != "Default") {
            bad.push(name(c));
            kinds.insert(kind.to_string());
        }
    }
    if bad.is_empty() {
        return None;
    }
    let kinds: Vec<String> = kinds.into_iter().collect();
    fail(
        "procMount",
        format!("{} must not set securityContext.procMount to {}", containers_phrase(&bad), join_quote(&kinds)),
    )
}

fn se_linux_options(pod: &PodView) -> Failure {
    const TYPES: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];
    let mut types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |options: &Value| {
        let mut ok = true;
        let kind = str_at(Some(options), "type");
        if !TYPES.contains(&kind) {
            ok = false;
            types.insert(kind.to_string());
        }
        if !str_at(Some(options), "user").is_empty() {
            ok = false;
            user = true;
        }
        if !str_at(Some(options), "role").is_empty() {
            ok = false;
            role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    if pod.pod_context("seLinuxOptions").is_some_and(|o| !valid(o)) {
        setters.push("pod".to_string());
    }
    let mut bad = Vec::new();
    for c in &pod.containers {
        if context(c, "seLinuxOptions").is_some_and(|o| !valid(o)) {
            bad.push(name(c));
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !types.is_empty() {
        let types: Vec<String> = types.into_iter().collect();
        data.push(format!("{} {}", plural("type", "types", types.len()), join_quote(&types)));
    }
    if user {
        data.push("user may not be set".to_string());
    }
    if role {
        data.push("role may not be set".to_string());
    }
    fail(
        "seLinuxOptions",
        format!("{} set forbidden securityContext.seLinuxOptions: {}", setters.join(" and "), data.join("; ")),
    )
}

fn valid_seccomp(kind: &str) -> bool {
    kind == "Localhost" || kind == "RuntimeDefault"
}

/// Pod and containers setting a seccomp type other than RuntimeDefault/Localhost, the bad
/// values, whether the pod sets a valid one, and the containers leaving it unset.
fn seccomp_setters(pod: &PodView) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(profile) = pod.pod_context("seccompProfile") {
        let kind = str_at(Some(profile), "type");
        if valid_seccomp(kind) {
            pod_set = true;
        } else {
            setters.push("pod".to_string());
            values.insert(kind.to_string());
        }
    }
    let mut bad = Vec::new();
    let mut unset = Vec::new();
    for c in &pod.containers {
        match context(c, "seccompProfile") {
            Some(profile) => {
                let kind = str_at(Some(profile), "type");
                if !valid_seccomp(kind) {
                    bad.push(name(c));
                    values.insert(kind.to_string());
                }
            }
            None if !pod_set => unset.push(name(c)),
            None => {}
        }
    }
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (setters, values.into_iter().collect(), unset)
}

fn seccomp_profile_baseline(pod: &PodView) -> Failure {
    let (setters, values, _) = seccomp_setters(pod);
    if setters.is_empty() {
        return None;
    }
    fail(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

fn seccomp_profile_restricted(pod: &PodView) -> Failure {
    if pod.windows() {
        return None;
    }
    if let failure @ Some(_) = seccomp_profile_baseline(pod) {
        return failure;
    }
    let (_, _, unset) = seccomp_setters(pod);
    if unset.is_empty() {
        return None;
    }
    fail(
        "seccompProfile",
        format!(
            r#"pod or {} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#,
            containers_phrase(&unset)
        ),
    )
}

fn sysctls(pod: &PodView) -> Failure {
    const SAFE: &[&str] = &[
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    ];
    let forbidden: Vec<String> = pod
        .pod_context("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| str_at(Some(s), "name").to_string())
        .filter(|n| !SAFE.contains(&n.as_str()))
        .collect();
    if forbidden.is_empty() { None } else { fail("forbidden sysctls", forbidden.join(", ")) }
}

fn windows_host_process(pod: &PodView) -> Failure {
    let host_process =
        |options: Option<&Value>| options.and_then(|o| o.get("hostProcess")).and_then(Value::as_bool) == Some(true);
    let mut setters = Vec::new();
    if host_process(pod.pod_context("windowsOptions")) {
        setters.push("pod".to_string());
    }
    let bad = pod.containers_where(|c| host_process(context(c, "windowsOptions")));
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    fail(
        "hostProcess",
        format!("{} must not set securityContext.windowsOptions.hostProcess=true", setters.join(" and ")),
    )
}

fn allow_privilege_escalation(pod: &PodView) -> Failure {
    if pod.windows() {
        return None;
    }
    let bad = pod.containers_where(|c| context(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false));
    if bad.is_empty() {
        return None;
    }
    fail(
        "allowPrivilegeEscalation != false",
        format!("{} must set securityContext.allowPrivilegeEscalation=false", containers_phrase(&bad)),
    )
}

fn restricted_volumes(pod: &PodView) -> Failure {
    const ALLOWED: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    const KNOWN: &[&str] = &[
        "hostPath",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "nfs",
        "iscsi",
        "glusterfs",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "fc",
        "azureFile",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "portworxVolume",
        "scaleIO",
        "storageos",
    ];
    let mut bad = Vec::new();
    let mut kinds = BTreeSet::new();
    for volume in volumes(pod) {
        let set = |key: &str| volume.get(key).is_some_and(|v| !v.is_null());
        if ALLOWED.iter().any(|k| set(k)) {
            continue;
        }
        bad.push(name(volume));
        kinds.insert(KNOWN.iter().find(|k| set(k)).copied().unwrap_or("unknown").to_string());
    }
    if bad.is_empty() {
        return None;
    }
    let kinds: Vec<String> = kinds.into_iter().collect();
    fail(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural("volume", "volumes", bad.len()),
            join_quote(&bad),
            plural("uses", "use", bad.len()),
            plural("restricted volume type", "restricted volume types", kinds.len()),
            join_quote(&kinds)
        ),
    )
}

fn run_as_non_root(pod: &PodView) -> Failure {
    let mut setters = Vec::new();
    let mut pod_non_root = false;
    match pod.pod_context("runAsNonRoot").and_then(Value::as_bool) {
        Some(false) => setters.push("pod".to_string()),
        Some(true) => pod_non_root = true,
        None => {}
    }
    let explicit = pod.containers_where(|c| context(c, "runAsNonRoot").and_then(Value::as_bool) == Some(false));
    let implicit = pod.containers_where(|c| context(c, "runAsNonRoot").is_none() && !pod_non_root);
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return fail(
            "runAsNonRoot != true",
            format!("{} must not set securityContext.runAsNonRoot=false", setters.join(" and ")),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    fail(
        "runAsNonRoot != true",
        format!("pod or {} must set securityContext.runAsNonRoot=true", containers_phrase(&implicit)),
    )
}

fn run_as_user(pod: &PodView) -> Failure {
    let mut setters = Vec::new();
    if pod.pod_context("runAsUser").and_then(Value::as_i64) == Some(0) {
        setters.push("pod".to_string());
    }
    let bad = pod.containers_where(|c| context(c, "runAsUser").and_then(Value::as_i64) == Some(0));
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    fail("runAsUser=0", format!("{} must not set runAsUser=0", setters.join(" and ")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    /// A pod that passes `restricted`.
    fn hardened() -> Value {
        pod(json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "nginx", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }))
    }

    #[test]
    fn a_plain_pod_passes_baseline_and_fails_restricted_with_the_admissions_words() {
        let plain = pod(json!({"containers": [{"name": "app", "image": "nginx"}]}));
        assert_eq!(evaluate(Level::Baseline, &plain), Ok(()));
        assert_eq!(
            evaluate(Level::Restricted, &plain),
            Err("violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")".into())
        );
        assert_eq!(evaluate(Level::Restricted, &hardened()), Ok(()));
        assert_eq!(evaluate(Level::Privileged, &pod(json!({"hostNetwork": true}))), Ok(()));
    }

    #[test]
    fn baseline_refuses_privilege_host_access_and_unsafe_settings_in_check_order() {
        let bad = pod(json!({
            "hostNetwork": true, "hostPID": true,
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
            "initContainers": [{"name": "init", "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}}}],
            "containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}], "securityContext": {"privileged": true, "procMount": "Unmasked"}},
                {"name": "b", "securityContext": {"seccompProfile": {"type": "Unconfined"}, "seLinuxOptions": {"type": "spc_t", "user": "root"}}}
            ],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "ok", "emptyDir": {}}]
        }));
        assert_eq!(
            evaluate(Level::Baseline, &bad),
            Err("violates PodSecurity \"baseline:latest\": non-default capabilities (container \"init\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add), host namespaces (hostNetwork=true, hostPID=true), hostPath volumes (volume \"root\"), hostPort (container \"a\" uses hostPort 8080), privileged (containers \"init\", \"a\" must not set securityContext.privileged=true), procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\"), seLinuxOptions (container \"b\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set), seccompProfile (container \"b\" must not set securityContext.seccompProfile.type to \"Unconfined\"), forbidden sysctls (kernel.msgmax)".into())
        );
    }

    #[test]
    fn restricted_replaces_the_baseline_volume_capability_and_seccomp_checks() {
        let mut p = hardened();
        p["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}, {"name": "share", "nfs": {"server": "x", "path": "/"}}]);
        p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_BIND_SERVICE", "CHOWN"]);
        p["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
        assert_eq!(
            evaluate(Level::Restricted, &p),
            Err("violates PodSecurity \"restricted:latest\": unrestricted capabilities (container \"app\" must not include \"CHOWN\" in securityContext.capabilities.add), restricted volume types (volumes \"root\", \"share\" use restricted volume types \"hostPath\", \"nfs\"), runAsUser=0 (container \"app\" must not set runAsUser=0)".into())
        );
        assert_eq!(
            evaluate(Level::Baseline, &p),
            Err("violates PodSecurity \"baseline:latest\": hostPath volumes (volume \"root\")".into())
        );
    }

    #[test]
    fn ephemeral_containers_and_apparmor_annotations_are_checked_too() {
        let mut p = hardened();
        p["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "securityContext": {"privileged": true}}]);
        let message = evaluate(Level::Baseline, &p).unwrap_err();
        assert!(
            message.contains("privileged (container \"debugger\" must not set securityContext.privileged=true)"),
            "{message}"
        );
        let mut p = hardened();
        p["metadata"]["annotations"] = json!({"container.apparmor.security.beta.kubernetes.io/app": "unconfined"});
        assert_eq!(
            evaluate(Level::Baseline, &p),
            Err("violates PodSecurity \"baseline:latest\": forbidden AppArmor profile (annotation must not set AppArmor profile type to \"container.apparmor.security.beta.kubernetes.io/app=\"unconfined\"\")".into())
        );
    }

    #[test]
    fn windows_pods_skip_the_linux_only_restricted_checks() {
        let p = pod(
            json!({"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": true}, "containers": [{"name": "w"}]}),
        );
        assert_eq!(evaluate(Level::Restricted, &p), Ok(()));
    }

    #[test]
    fn only_the_three_levels_parse() {
        assert_eq!(Level::parse(""), None);
        assert_eq!(Level::parse("restricted"), Some(Level::Restricted));
        assert_eq!(Level::parse("strict"), None);
    }
}
