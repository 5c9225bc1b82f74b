//! Runs the built `vkube` binary and real third-party clients against it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `vkube apiserver` child process on a free port.
pub struct ApiServerProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// What it has said on stderr so far (vkube's messages: addresses, warnings).
    pub said: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ApiServerProcess {
    /// Starts `vkube apiserver --dir DIR --listen 127.0.0.1:PORT` and waits for `ready`.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(dir, "127.0.0.1:0", extra)
    }

    pub fn start_on(dir: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["apiserver", "--dir", dir.to_str().unwrap(), "--listen", listen];
        args.extend_from_slice(extra);
        Self::start_command(&args, dir.join("admin.kubeconfig"))
    }

    /// Starts `vkube up` in `state` on free ports; the kubeconfig is the virtual cluster's.
    pub fn up(state: &Path) -> Self {
        Self::up_with(state, &[])
    }

    /// `vkube up` with extra flags.
    pub fn up_with(state: &Path, extra: &[&str]) -> Self {
        let mut args =
            vec!["up", "--dir", state.to_str().unwrap(), "--listen", "127.0.0.1:0", "--host-listen", "127.0.0.1:0"];
        // Tests run side by side: no kubelet API on the fixed port unless a test asks for one.
        if !extra.contains(&"--kubelet-listen") {
            args.extend(["--kubelet-listen", "off"]);
        }
        args.extend_from_slice(extra);
        Self::start_command(&args, state.join("vc1").join("vc1.kubeconfig"))
    }

    /// Starts `vkube ARGS...`, waits for its `ready` line; `kubeconfig` is where it writes one.
    pub fn start_command(args: &[&str], kubeconfig: PathBuf) -> Self {
        let dir = kubeconfig.parent().unwrap().to_path_buf();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vkube"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vkube starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Keep draining stderr so the child never blocks on a full pipe.
        let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let kept = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let started = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "ready" => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("vkube {} exited before ready: {}", args.join(" "), said.lock().unwrap().join("\n"));
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "vkube {} not ready in 30s", args.join(" "));
        }
        std::thread::spawn(move || for _ in lines {});
        ApiServerProcess { child, dir, kubeconfig, said }
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// SIGKILL and wait.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for ApiServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory holding the versioned kubectl binaries.
pub fn kubectl_dir() -> PathBuf {
    let dispatcher = std::fs::canonicalize(which("kubectl").expect("kubectl on PATH")).unwrap();
    dispatcher.parent().unwrap().to_path_buf()
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

/// Runs one kubectl version against a kubeconfig with an isolated HOME (discovery cache).
pub struct Kubectl {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub home: PathBuf,
}

impl Kubectl {
    pub fn new(minor: u32, kubeconfig: &Path, home: &Path) -> Self {
        let binary = kubectl_dir().join(format!("kubectl.1.{minor}"));
        assert!(binary.exists(), "{} is missing", binary.display());
        Kubectl { binary, kubeconfig: kubeconfig.to_path_buf(), home: home.to_path_buf() }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        command
    }

    /// Runs and returns the output whatever the exit code.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            output.status.success(),
            "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs with `input` on stdin and returns the output whatever the exit code.
    pub fn output_with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            !output.status.success(),
            "kubectl {} unexpectedly succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// Polls until `check` is true or panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `vkube up` with kubectl 1.33 pointed at its virtual cluster and at its host.
pub struct Up {
    pub up: ApiServerProcess,
    pub k: Kubectl,
    pub host: Kubectl,
    pub dir: tempfile::TempDir,
    pub _home: tempfile::TempDir,
}

impl Up {
    pub fn start() -> Up {
        Self::start_with_config(None)
    }

    /// `vkube up`, with `--config` naming a file of `config` when given.
    pub fn start_with_config(config: Option<&str>) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = dir.path().join("vcluster.yaml");
        let up = match config {
            Some(config) => {
                std::fs::write(&file, config).unwrap();
                ApiServerProcess::up_with(&state, &["--config", file.to_str().unwrap()])
            }
            None => ApiServerProcess::up(&state),
        };
        let k = Kubectl::new(33, &up.kubeconfig, home.path());
        let host = Kubectl::new(33, &state.join("host").join("host.kubeconfig"), home.path());
        Up { up, k, host, dir, _home: home }
    }
}

/// A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
/// kube-scheduler from `tools/k8s`) on loopback, stopped when dropped.
pub struct RealControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

impl RealControlPlane {
    /// Starts one in `dir` (building the binaries first if the cache lacks them).
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Only etcd and kube-apiserver: an API oracle with no controllers acting on what it stores.
    pub fn start_api_only(dir: &Path) -> Self {
        Self::start_with(dir, &["--api-only"])
    }

    fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/k8s/control-plane.sh");
        let output =
            Command::new(&script).arg("start").arg(dir).args(extra).output().expect("tools/k8s/control-plane.sh runs");
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).lines().any(|l| l == "ready"),
            "the real control plane did not start (needs Go and the module proxy; .ci/run builds it):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        RealControlPlane { dir: dir.to_path_buf(), kubeconfig: dir.join("admin.kubeconfig") }
    }
}

impl Drop for RealControlPlane {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/k8s/control-plane.sh");
        let _ = Command::new(&script).arg("stop").arg(&self.dir).output();
    }
}

/// `bytes` in base64 (the system's `base64`, no line breaks).
pub fn base64(bytes: &[u8]) -> String {
    String::from_utf8(pipe("base64", &["-w0"], bytes)).unwrap()
}

/// The bytes of base64 `text`.
pub fn base64_decode(text: &str) -> Vec<u8> {
    pipe("base64", &["-d"], text.as_bytes())
}

/// Runs `program args` with `input` on stdin; its stdout.
fn pipe(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child =
        Command::new(program).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// Defines a test once and runs it on both hosts: `NAME::simulated_host` and `NAME::real_host`.
#[macro_export]
macro_rules! on_both_hosts {
    ($(#[$meta:meta])* fn $name:ident($kind:ident: HostKind) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($kind: common::HostKind) $body

            #[test]
            fn simulated_host() {
                body(common::HostKind::Simulated)
            }

            #[test]
            fn real_host() {
                body(common::HostKind::Real)
            }
        }
    };
}

/// Which host a virtual cluster of a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// `vkube up`: vkube's own host API server and the simulator.
    Simulated,
    /// The upstream control plane of `tools/k8s`, `vkube host --attach` as its kubelet, and
    /// `vkube serve` whose syncer is a service account bound to what `vkube config rbac` derives.
    Real,
}

/// A virtual cluster `vc1` (host namespace `vcluster-vc1`) on either host, with kubectl 1.33 for
/// it (`k`) and for its host's admin (`host`).
pub struct VirtualCluster {
    pub k: Kubectl,
    pub host: Kubectl,
    /// The process serving the virtual cluster (`vkube up` or `vkube serve`).
    pub serving: ApiServerProcess,
    /// The directory given to `vkube up --dir` or `vkube serve --dir` (what `vkube mappings` reads).
    pub state: PathBuf,
    /// A scratch directory of the test's own.
    pub scratch: PathBuf,
    /// How `vkube serve` was started (real host only), to start it again.
    serve_command: Option<(Vec<String>, PathBuf)>,
    _kubelet: Option<ApiServerProcess>,
    _real: Option<RealControlPlane>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl VirtualCluster {
    /// Stops the process serving the virtual cluster (SIGTERM) and returns how it exited.
    pub fn stop(self) -> std::process::ExitStatus {
        self.serving.stop()
    }

    /// Stops `vkube serve` (real host only), runs `meanwhile`, and starts it again on the same
    /// store; kubectl follows (the kubeconfig is rewritten with the new port).
    pub fn restart_serving(&mut self, meanwhile: impl FnOnce(&Kubectl)) {
        let (args, kubeconfig) = self.serve_command.clone().expect("only `vkube serve` (a real host) restarts");
        let _ = Command::new("kill").arg("-TERM").arg(self.serving.child.id().to_string()).status();
        let _ = self.serving.child.wait();
        meanwhile(&self.host);
        self.serving =
            ApiServerProcess::start_command(&args.iter().map(String::as_str).collect::<Vec<_>>(), kubeconfig);
    }

    /// Starts one on `kind`, with `config` as its vcluster.yaml when given.
    pub fn start(kind: HostKind, config: Option<&str>) -> Self {
        match kind {
            HostKind::Simulated => {
                let Up { up, k, host, dir, _home } = Up::start_with_config(config);
                let (state, scratch) = (dir.path().join("state"), dir.path().join("scratch"));
                std::fs::create_dir_all(&scratch).unwrap();
                VirtualCluster {
                    k,
                    host,
                    serving: up,
                    state,
                    scratch,
                    serve_command: None,
                    _kubelet: None,
                    _real: None,
                    _dirs: (dir, _home),
                }
            }
            HostKind::Real => Self::on_real_host(config),
        }
    }

    fn on_real_host(config: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let real = RealControlPlane::start(&dir.path().join("k8s"));
        let admin = Kubectl::new(33, &real.kubeconfig, home.path());
        let kubelet = ApiServerProcess::start_command(
            &["host", "--attach", real.kubeconfig.to_str().unwrap()],
            real.kubeconfig.clone(),
        );
        let file = dir.path().join("vcluster.yaml");
        std::fs::write(&file, config.unwrap_or("{}\n")).unwrap();
        // The platform engineer's part: the namespace, the derived RBAC, a service account bound to it.
        admin.ok(&["create", "namespace", "vcluster-vc1"]);
        let rbac = Command::new(env!("CARGO_BIN_EXE_vkube"))
            .args(["config", "rbac", "-f", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(rbac.status.success(), "{}", String::from_utf8_lossy(&rbac.stderr));
        let rbac = String::from_utf8(rbac.stdout).unwrap();
        let applied = admin.output_with_stdin(&["apply", "-f", "-"], &rbac);
        assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
        admin.ok(&["create", "serviceaccount", "vc-vc1", "-n", "vcluster-vc1"]);
        admin.ok(&["create", "serviceaccount", "vc-workload-vc1", "-n", "vcluster-vc1"]);
        for document in rbac.split("\n---") {
            let field = |key: &str| {
                document
                    .lines()
                    .find_map(|l| l.trim_start().strip_prefix(key))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            };
            let (kind, name) = (field("kind: "), field("name: "));
            let account = "--serviceaccount=vcluster-vc1:vc-vc1";
            match kind.as_str() {
                "Role" => {
                    admin.ok(&[
                        "create",
                        "rolebinding",
                        &name,
                        "-n",
                        "vcluster-vc1",
                        &format!("--role={name}"),
                        account,
                    ]);
                }
                "ClusterRole" => {
                    admin.ok(&["create", "clusterrolebinding", &name, &format!("--clusterrole={name}"), account]);
                }
                _ => {}
            }
        }
        let token = admin.ok(&["create", "token", "vc-vc1", "-n", "vcluster-vc1", "--duration=2h"]);
        let syncer_kubeconfig = dir.path().join("syncer.kubeconfig");
        std::fs::copy(&real.kubeconfig, &syncer_kubeconfig).unwrap();
        let syncer_k = Kubectl::new(33, &syncer_kubeconfig, home.path());
        syncer_k.ok(&["config", "set-credentials", "vc-vc1", &format!("--token={}", token.trim())]);
        syncer_k.ok(&["config", "set-context", "--current", "--user=vc-vc1"]);
        let state = dir.path().join("vc");
        let args: Vec<String> = [
            "serve",
            "--host-kubeconfig",
            syncer_kubeconfig.to_str().unwrap(),
            "--config",
            file.to_str().unwrap(),
            "--dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let serving = ApiServerProcess::start_command(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            state.join("vc1.kubeconfig"),
        );
        let serve_command = Some((args, state.join("vc1.kubeconfig")));
        let k = Kubectl::new(33, &serving.kubeconfig, home.path());
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        VirtualCluster {
            k,
            host: admin,
            serving,
            state,
            scratch,
            serve_command,
            _kubelet: Some(kubelet),
            _real: Some(real),
            _dirs: (dir, home),
        }
    }
}
