//! RBAC as a tenant meets it, through real kubectl: one scenario (namespace admins, viewers,
//! service accounts, escalation, impersonation, anonymous requests, aggregated roles) run against
//! vkube and against the real kube-apiserver of `tools/k8s`, whose answers must be the same, word
//! for word.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ApiServerProcess, Kubectl, RealControlPlane, wait_until};

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [example.com]
  resources: [widgets]
  verbs: [get, list, watch]
"#;

/// One cluster under test: kubectl as its admin, and what a client without the admin's
/// credentials needs (server URL, CA file).
struct Cluster {
    admin: Kubectl,
    server: String,
    ca: PathBuf,
}

impl Cluster {
    fn new(admin: Kubectl, dir: &Path) -> Self {
        let server = admin.ok(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
        let ca_data = admin.ok(&[
            "config",
            "view",
            "--minify",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]);
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, common::base64_decode(&ca_data)).unwrap();
        Cluster { admin, server, ca }
    }

    /// kubectl with only a bearer token (or none at all).
    fn with_token(&self, token: Option<&str>, args: &[&str]) -> std::process::Output {
        let mut full = vec!["--kubeconfig=/dev/null", "--server", &self.server, "--certificate-authority"];
        let ca = self.ca.to_str().unwrap();
        full.push(ca);
        if let Some(token) = token {
            full.extend(["--token", token]);
        }
        full.extend_from_slice(args);
        self.admin.output(&full)
    }
}

impl Cluster {
    /// `GET path` with curl (kubectl prompts for a password when it has no credentials): the
    /// status code, then the Status message or else the body.
    fn curl(&self, token: Option<&str>, path: &str) -> (String, String) {
        let mut command = std::process::Command::new("curl");
        command.args(["-s", "--cacert", self.ca.to_str().unwrap(), "-w", "\n%{http_code}"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let output = command.arg(format!("{}{path}", self.server)).output().expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let message = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| body.trim().to_string());
        (code.to_string(), message)
    }
}

/// What a step did, as the transcript compared between servers records it.
fn outcome(output: &std::process::Output) -> String {
    let text = if output.status.success() { &output.stdout } else { &output.stderr };
    let text = String::from_utf8_lossy(text);
    format!("{} {}", if output.status.success() { "ok" } else { "refused" }, text.trim())
}

/// Runs the scenario; returns its transcript. `aggregation` says whether controllers run (the
/// cluster-role aggregation controller fills `view` from labelled roles).
fn scenario(cluster: &Cluster, aggregation: bool) -> Vec<String> {
    let admin = &cluster.admin;
    let transcript = std::cell::RefCell::new(Vec::new());
    let step = |label: &str, output: std::process::Output| -> String {
        let result = outcome(&output);
        transcript.borrow_mut().push(format!("{label}: {result}"));
        result
    };

    for namespace in ["team-a", "team-b"] {
        admin.ok(&["create", "namespace", namespace]);
    }
    admin.ok(&["create", "rolebinding", "a-admin", "-n", "team-a", "--clusterrole=admin", "--user=alice"]);
    admin.ok(&["create", "rolebinding", "b-view", "-n", "team-a", "--clusterrole=view", "--user=bob"]);
    admin.ok(&["create", "secret", "generic", "s1", "-n", "team-a", "--from-literal=k=v"]);
    admin.ok(&["create", "configmap", "c1", "-n", "team-a", "--from-literal=k=v"]);
    admin.ok(&["create", "serviceaccount", "robot", "-n", "team-a"]);
    // kube-apiserver's authorizer sees bindings through an informer, a moment after they are
    // written (vkube's before the write is answered).
    wait_until(Duration::from_secs(5), "the bindings to take effect", || {
        let alice = admin.output(&["auth", "can-i", "create", "configmaps", "-n", "team-a", "--as", "alice"]);
        let bob = admin.output(&["auth", "can-i", "get", "configmaps", "-n", "team-a", "--as", "bob"]);
        alice.status.success() && bob.status.success()
    });

    // A namespace admin does everything in its namespace and nothing elsewhere.
    let as_alice = |args: &[&str]| admin.output(&[&["--as", "alice"], args].concat());
    let created =
        step("alice creates a config map in team-a", as_alice(&["create", "configmap", "a1", "-n", "team-a"]));
    assert!(created.starts_with("ok configmap/a1 created"), "{created}");
    let secret =
        step("alice reads a secret in team-a", as_alice(&["get", "secret", "s1", "-n", "team-a", "-o", "name"]));
    assert_eq!(secret, "ok secret/s1");
    let other = step("alice lists pods in team-b", as_alice(&["get", "pods", "-n", "team-b"]));
    assert_eq!(
        other,
        "refused Error from server (Forbidden): pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"team-b\""
    );
    let cluster_scope = step("alice lists namespaces", as_alice(&["get", "namespaces"]));
    assert!(cluster_scope.contains("at the cluster scope"), "{cluster_scope}");

    // Nobody grants what they do not hold (unless they may escalate or bind).
    let role = step(
        "alice creates a role within her rights",
        as_alice(&["create", "role", "pod-reader", "-n", "team-a", "--verb=get", "--resource=pods"]),
    );
    assert!(role.starts_with("ok "), "{role}");
    let escalation = step(
        "alice creates a role on nodes",
        as_alice(&["create", "role", "node-reader", "-n", "team-a", "--verb=get,list", "--resource=nodes"]),
    );
    assert_eq!(
        escalation,
        "refused Error from server (Forbidden): roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}"
    );
    let binding = step(
        "alice binds cluster-admin in team-a",
        as_alice(&["create", "rolebinding", "eve-admin", "-n", "team-a", "--clusterrole=cluster-admin", "--user=eve"]),
    );
    assert!(binding.contains("is attempting to grant RBAC permissions not currently held"), "{binding}");
    let allowed_binding = step(
        "alice binds view in team-a",
        as_alice(&["create", "rolebinding", "eve-view", "-n", "team-a", "--clusterrole=view", "--user=eve"]),
    );
    assert!(allowed_binding.starts_with("ok "), "{allowed_binding}");
    let missing = step(
        "alice binds a role that does not exist",
        as_alice(&["create", "rolebinding", "ghost", "-n", "team-a", "--role=ghost", "--user=eve"]),
    );
    assert!(missing.contains("\"ghost\" not found"), "{missing}");

    // view reads but neither writes nor reads secrets.
    let as_bob = |args: &[&str]| admin.output(&[&["--as", "bob"], args].concat());
    assert_eq!(
        step("bob reads a config map", as_bob(&["get", "cm", "c1", "-n", "team-a", "-o", "name"])),
        "ok configmap/c1"
    );
    let bob_secret = step("bob reads a secret", as_bob(&["get", "secret", "s1", "-n", "team-a"]));
    assert!(bob_secret.contains("User \"bob\" cannot get resource \"secrets\""), "{bob_secret}");
    let bob_delete = step("bob deletes a config map", as_bob(&["delete", "cm", "c1", "-n", "team-a"]));
    assert!(bob_delete.contains("cannot delete resource \"configmaps\""), "{bob_delete}");

    // can-i tells the truth: each answer matches what the request itself got above.
    for (user, verb, resource, namespace, expected) in [
        ("alice", "create", "configmaps", "team-a", "yes"),
        ("alice", "get", "secrets", "team-a", "yes"),
        ("alice", "list", "pods", "team-b", "no"),
        ("alice", "list", "namespaces", "", "no"),
        ("bob", "get", "configmaps", "team-a", "yes"),
        ("bob", "get", "secrets", "team-a", "no"),
        ("bob", "delete", "configmaps", "team-a", "no"),
    ] {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
        if !namespace.is_empty() {
            args.extend(["-n", namespace]);
        }
        let answer = admin.output(&args);
        let said = String::from_utf8_lossy(&answer.stdout).trim().to_string();
        assert_eq!(said, expected, "can-i {verb} {resource} as {user} in {namespace:?}");
        transcript.borrow_mut().push(format!("can-i {user} {verb} {resource} {namespace}: {said}"));
    }
    let mut listed: Vec<String> = admin
        .ok(&["auth", "can-i", "--list", "--as", "bob", "-n", "team-a"])
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    listed.sort();
    assert!(listed.iter().any(|l| l.starts_with("configmaps [] [] [get list watch]")), "{listed:?}");
    assert!(!listed.iter().any(|l| l.starts_with("secrets ")), "view lists no secrets: {listed:?}");
    transcript.borrow_mut().extend(listed.into_iter().map(|l| format!("can-i --list bob: {l}")));

    // A service account with no bindings is refused; a RoleBinding lets it in within a second.
    let token = admin.ok(&["create", "token", "robot", "-n", "team-a"]).trim().to_string();
    let robot_pods = step("robot lists pods", cluster.with_token(Some(&token), &["get", "pods", "-n", "team-a"]));
    assert!(
        robot_pods.contains("User \"system:serviceaccount:team-a:robot\" cannot list resource \"pods\""),
        "{robot_pods}"
    );
    admin.ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "-n",
        "team-a",
        "--clusterrole=view",
        "--serviceaccount=team-a:robot",
    ]);
    let bound = Instant::now();
    loop {
        let listed = cluster.with_token(Some(&token), &["get", "pods", "-n", "team-a"]);
        if listed.status.success() {
            break;
        }
        assert!(
            bound.elapsed() < Duration::from_secs(1),
            "still refused a second after the binding: {}",
            outcome(&listed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    transcript.borrow_mut().push("robot lists pods after its binding: ok".into());

    // Impersonation needs the impersonate verb, on exactly the users it names.
    let impersonating = |user: &str| cluster.with_token(Some(&token), &["--as", user, "get", "pods", "-n", "team-a"]);
    let refused = step("robot impersonates carol", impersonating("carol"));
    assert_eq!(
        refused,
        "refused Error from server (Forbidden): users \"carol\" is forbidden: User \"system:serviceaccount:team-a:robot\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    admin.ok(&[
        "create",
        "clusterrole",
        "impersonate-carol",
        "--verb=impersonate",
        "--resource=users",
        "--resource-name=carol",
    ]);
    admin.ok(&[
        "create",
        "clusterrolebinding",
        "robot-impersonates",
        "--clusterrole=impersonate-carol",
        "--serviceaccount=team-a:robot",
    ]);
    wait_until(Duration::from_secs(1), "the impersonation binding", || {
        outcome(&impersonating("carol")).contains("User \"carol\" cannot list")
    });
    let as_carol = step("robot impersonates carol again", impersonating("carol"));
    assert!(as_carol.contains("User \"carol\" cannot list resource \"pods\""), "{as_carol}");
    let as_dave = step("robot impersonates dave", impersonating("dave"));
    assert!(as_dave.contains("users \"dave\" is forbidden"), "{as_dave}");

    // Anonymous requests get what upstream opens to system:unauthenticated, a bad token nothing.
    let (code, version) = cluster.curl(None, "/version");
    assert_eq!(code, "200", "{version}");
    transcript.borrow_mut().push("anonymous reads /version: 200".into());
    for (label, token, path, expected) in [
        ("anonymous reads /api", None, "/api", "403 forbidden: User \"system:anonymous\" cannot get path \"/api\""),
        (
            "anonymous lists namespaces",
            None,
            "/api/v1/namespaces",
            "403 namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
        ),
        ("anonymous reads /healthz", None, "/healthz", "200 ok"),
        ("a bad token", Some("not-a-token"), "/version", "401 Unauthorized"),
    ] {
        let (code, message) = cluster.curl(token, path);
        let got = format!("{code} {message}");
        assert_eq!(got, expected, "{label}");
        transcript.borrow_mut().push(format!("{label}: {got}"));
    }

    // A labelled role's rules reach `view` through aggregation.
    if aggregation {
        let applied = admin.output_with_stdin(&["apply", "-f", "-"], CRD);
        assert!(applied.status.success(), "{}", outcome(&applied));
        admin.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=30s"]);
        wait_until(Duration::from_secs(10), "bob to list widgets through view", || {
            as_bob(&["get", "widgets", "-n", "team-a"]).status.success()
        });
        transcript.borrow_mut().push("bob lists widgets through the aggregated view: ok".into());
    }
    transcript.into_inner()
}

fn start_vkube(minor: u32) -> (tempfile::TempDir, tempfile::TempDir, ApiServerProcess, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = if minor == 33 {
        ApiServerProcess::up(&dir.path().join("state"))
    } else {
        ApiServerProcess::start(&dir.path().join("state"), &["--minor", &minor.to_string()])
    };
    let cluster = Cluster::new(Kubectl::new(minor, &server.kubeconfig, home.path()), dir.path());
    (dir, home, server, cluster)
}

#[test]
fn rbac_with_kubectl_1_27() {
    let (_dir, _home, _server, cluster) = start_vkube(27);
    scenario(&cluster, false);
}

#[test]
fn rbac_with_kubectl_1_30() {
    let (_dir, _home, _server, cluster) = start_vkube(30);
    scenario(&cluster, false);
}

/// `vkube up` (controllers and syncer running with RBAC on) and the real kube-apiserver with its
/// controller manager answer the whole scenario identically.
#[test]
fn rbac_answers_as_kube_apiserver_does() {
    let (_dir, _home, _server, cluster) = start_vkube(33);
    let ours = scenario(&cluster, true);

    let real_dir = tempfile::tempdir().unwrap();
    let real_home = tempfile::tempdir().unwrap();
    let real = RealControlPlane::start(&real_dir.path().join("k8s"));
    let reference = Cluster::new(Kubectl::new(33, &real.kubeconfig, real_home.path()), real_dir.path());
    let theirs = scenario(&reference, true);
    for (line, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "step {line} differs (left vkube, right kube-apiserver)");
    }
    assert_eq!(ours.len(), theirs.len());
}
