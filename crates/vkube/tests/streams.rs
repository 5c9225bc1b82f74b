//! `kubectl exec` and `kubectl attach` in a virtual cluster of `vkube up`: the virtual API server
//! checks the request, forwards the stream to the host pod through the host API server, whose
//! simulated kubelet runs the command in the pod's sandbox; and the same through kube-rs.

#[macro_use]
mod common;

use std::time::Duration;

use common::{HostKind, Up, VirtualCluster, wait_until};

const POD: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {app.conf: "x=1\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
  - name: c
    image: nginx
    env:
    - {name: GREETING, value: hello}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: db, key: password}}}
    - {name: MY_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    ports: [{containerPort: 80}]
    volumeMounts:
    - {name: cfg, mountPath: /etc/config}
    - {name: scratch, mountPath: /data}
  - name: sidecar
    image: busybox
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: scratch, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 80}]
"#;

fn start() -> Up {
    let up = Up::start();
    let k = &up.k;
    let applied = k.output_with_stdin(&["apply", "-f", "-"], POD);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    up
}

#[test]
fn kubectl_exec_sees_the_pods_files_and_environment_and_its_exit_code() {
    let up = start();
    let k = &up.k;
    // The mounted config map, and the environment as the tenant wrote it (the virtual identity).
    assert_eq!(k.ok(&["exec", "web", "-c", "c", "--", "cat", "/etc/config/app.conf"]), "x=1\n");
    assert_eq!(
        k.ok(&["exec", "web", "-c", "c", "--", "sh", "-c", "echo $GREETING $PASSWORD $MY_NAME $MY_NAMESPACE"]),
        "hello hunter2 web default\n"
    );
    // An emptyDir keeps what one exec wrote for the next.
    k.ok(&["exec", "web", "-c", "c", "--", "sh", "-c", "echo kept > /data/note"]);
    assert_eq!(k.ok(&["exec", "web", "-c", "c", "--", "cat", "/data/note"]), "kept\n");
    // Standard input, closed at its end (v5 close signal), and stderr apart from stdout.
    let piped =
        k.output_with_stdin(&["exec", "-i", "web", "-c", "c", "--", "sh", "-c", "cat; echo oops >&2"], "typed\n");
    assert!(piped.status.success());
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "typed\n");
    assert_eq!(String::from_utf8_lossy(&piped.stderr), "oops\n");
    // A failing command: its exit code is kubectl's.
    let failed = k.output(&["exec", "web", "-c", "c", "--", "sh", "-c", "exit 3"]);
    assert_eq!(failed.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("command terminated with exit code 3"));
    // What kube-apiserver refuses, it refuses in its words.
    // kubectl names the first container itself when none is given.
    let defaulted = k.output(&["exec", "web", "--", "cat", "/etc/config/app.conf"]);
    assert_eq!(String::from_utf8_lossy(&defaulted.stdout), "x=1\n");
    assert!(String::from_utf8_lossy(&defaulted.stderr).contains("Defaulted container \"c\" out of: c, sidecar"));
    let error = k.fails(&["exec", "web", "-c", "nope", "--", "ls"]);
    assert!(error.contains("container nope is not valid for pod web"), "{error}");
    let error = k.fails(&["exec", "web", "-c", "c", "--", "/no/such/program"]);
    assert!(error.contains("no/such/program"), "{error}");
    k.ok(&["run", "stuck", "--image=nginx", "--overrides", r#"{"spec":{"nodeSelector":{"pool":"none"}}}"#]);
    let error = k.fails(&["exec", "stuck", "--", "ls"]);
    assert!(error.contains("pod stuck does not have a host assigned"), "{error}");
}

#[test]
fn kubectl_before_1_30_execs_over_spdy() {
    let up = start();
    for minor in [27, 29] {
        let home = tempfile::tempdir().unwrap();
        let k = common::Kubectl::new(minor, &up.up.kubeconfig, home.path());
        assert_eq!(
            k.ok(&["exec", "web", "-c", "c", "--", "sh", "-c", "echo $HOSTNAME; cat /etc/config/app.conf"]),
            "web\nx=1\n",
            "kubectl 1.{minor}: the virtual pod's host name and its files"
        );
        let piped =
            k.output_with_stdin(&["exec", "-i", "web", "-c", "c", "--", "sh", "-c", "cat; echo oops >&2"], "typed\n");
        assert!(piped.status.success(), "kubectl 1.{minor}: {}", String::from_utf8_lossy(&piped.stderr));
        assert_eq!(String::from_utf8_lossy(&piped.stdout), "typed\n", "kubectl 1.{minor}: stdin closed at its end");
        assert_eq!(String::from_utf8_lossy(&piped.stderr), "oops\n");
        let failed = k.output(&["exec", "web", "-c", "c", "--", "sh", "-c", "exit 7"]);
        assert_eq!(failed.status.code(), Some(7), "kubectl 1.{minor}: the exit code");
    }
}

#[test]
fn kubectl_attach_streams_the_containers_output() {
    let up = start();
    let mut attach =
        up.k.command(&["attach", "web", "-c", "c"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    let mut stdout = attach.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buffer) {
            if n == 0 || sender.send(String::from_utf8_lossy(&buffer[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    wait_until(Duration::from_secs(15), "the container's output through attach", || {
        while let Ok(chunk) = receiver.try_recv() {
            seen.push_str(&chunk);
        }
        seen.contains("simulated container c is running")
    });
    let _ = attach.kill();
    let _ = attach.wait();
}

/// A container running a shell one-liner logs what the script prints, when it prints it: `logs`
/// (stdout and stderr merged, `--tail`, `-f` ending with the script), `attach` (each on its
/// stream), and the pod ends with the script's exit code.
#[test]
fn a_scripted_container_logs_what_its_script_prints() {
    let up = Up::start();
    let k = &up.k;
    // It waits 5 s before writing, so `kubectl attach` is there in time on a busy machine.
    let script = "sleep 5; for i in $(seq 1 4); do if [ $i -lt 3 ]; then echo out $i; else echo err $i >&2; fi; sleep 0.5; done; exit 3";
    k.ok(&["run", "counter", "--image=busybox", "--restart=Never", "--", "sh", "-c", script]);
    k.ok(&["wait", "--for=condition=Ready", "pod/counter", "--timeout=30s"]);
    let attach = k
        .command(&["attach", "counter"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let followed = k.ok(&["logs", "-f", "counter"]);
    assert_eq!(followed, "out 1\nout 2\nerr 3\nerr 4\n", "the follow ends with the script");
    assert_eq!(k.ok(&["logs", "counter", "--tail=1"]), "err 4\n");
    let attached = attach.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&attached.stdout), String::from_utf8_lossy(&attached.stderr));
    assert!(stderr.contains("err 4"), "stderr on its own stream: {stdout} / {stderr}");
    assert!(!stdout.contains("err"), "{stdout}");
    wait_until(Duration::from_secs(15), "the pod to fail with the script's exit code", || {
        k.ok(&["get", "pod", "counter", "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"])
            == "3"
    });
    assert_eq!(k.ok(&["get", "pod", "counter", "-o", "jsonpath={.status.phase}"]), "Failed");
}

#[test]
fn kube_rs_exec_gets_output_and_the_exit_status() {
    let up = start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, AttachParams};
        use tokio::io::AsyncReadExt;
        let kubeconfig = kube::config::Kubeconfig::read_from(&up.up.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let pods: Api<Pod> = Api::default_namespaced(client);
        let params = AttachParams::default().container("c").stderr(false);
        let mut process = pods.exec("web", ["sh", "-c", "cat /etc/config/app.conf; exit 2"], &params).await.unwrap();
        let mut out = String::new();
        process.stdout().unwrap().read_to_string(&mut out).await.unwrap();
        let status = process.take_status().unwrap().await.unwrap();
        assert_eq!(out, "x=1\n");
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
        let cause = &status.details.unwrap().causes.unwrap()[0];
        assert_eq!((cause.reason.as_deref(), cause.message.as_deref()), (Some("ExitCode"), Some("2")));
        process.join().await.unwrap();
        // A client that names no container in a pod of two gets kube-apiserver's answer.
        let error = pods.exec("web", ["ls"], &AttachParams::default()).await.err().unwrap().to_string();
        assert!(
            error.contains("a container name must be specified for pod web, choose one of: [c sidecar]"),
            "{error}"
        );
    });
}

/// The virtual cluster's kubelet API (`vkube up --kubelet-listen`), as kube-rs's
/// `kubelet_node_*` calls reach a kind node's port 10250: exec with output, stdin and an exit
/// code, logs, with the cluster's own credentials and `nodes/proxy` authorization.
#[test]
fn the_kubelet_api_serves_the_virtual_clusters_pods() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let up = common::ApiServerProcess::up_with(&state, &["--kubelet-listen", "127.0.0.1:0"]);
    let mut address = String::new();
    wait_until(Duration::from_secs(5), "vkube up to say where the kubelet API listens", || {
        let said = up.said.lock().unwrap();
        let found = said.iter().find_map(|l| l.strip_prefix("kubelet API of the virtual cluster's pods on "));
        address = found.unwrap_or_default().to_string();
        found.is_some()
    });
    let k = common::Kubectl::new(33, &up.kubeconfig, home.path());
    k.ok(&["run", "box", "--image=busybox", "--", "sh", "-c", "echo started; sleep infinity"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/box", "--timeout=30s"]);
    k.ok(&["create", "serviceaccount", "nobody"]);
    let token = k.ok(&["create", "token", "nobody"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use kube::api::{AttachParams, LogParams};
        use kube::core::kubelet_debug::KubeletDebugParams;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let kubeconfig = kube::config::Kubeconfig::read_from(&up.kubeconfig).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        config.accept_invalid_certs = true;
        config.cluster_url = address.parse().unwrap();
        let kubelet = kube::Client::try_from(config.clone()).unwrap();
        let pod = KubeletDebugParams { name: "box", namespace: "default", ..Default::default() };
        let params = AttachParams::default().stderr(false);
        let script = ["sh", "-c", "for i in $(seq 1 3); do echo $i; done"];
        let mut process = kubelet.kubelet_node_exec(&pod, "box", script, &params).await.unwrap();
        let mut out = String::new();
        process.stdout().unwrap().read_to_string(&mut out).await.unwrap();
        process.join().await.unwrap();
        assert_eq!(out, "1\n2\n3\n");

        let params = AttachParams::default().stdin(true).stderr(false);
        let mut process = kubelet.kubelet_node_exec(&pod, "box", ["sh"], &params).await.unwrap();
        let mut stdin = process.stdin().unwrap();
        let mut stdout = process.stdout().unwrap();
        stdin.write_all(b"echo test string 1\n").await.unwrap();
        let mut line = [0u8; 14];
        stdout.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"test string 1\n");
        stdin.write_all(b"exit 1\n").await.unwrap();
        let status = process.take_status().unwrap().await.unwrap();
        assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));

        let mut logs = kubelet.kubelet_node_logs(&pod, "box", &LogParams::default()).await.unwrap();
        let mut log = String::new();
        futures::AsyncReadExt::read_to_string(&mut logs, &mut log).await.unwrap();
        assert_eq!(log, "started\n");

        // Someone the cluster does not know, and someone without nodes/proxy.
        let mut stranger = config.clone();
        stranger.auth_info =
            kube::config::AuthInfo { token: Some("nonsense".to_string().into()), ..Default::default() };
        let error =
            kube::Client::try_from(stranger).unwrap().kubelet_node_logs(&pod, "box", &LogParams::default()).await;
        assert!(error.err().unwrap().to_string().contains("401"), "unauthenticated");
        let mut limited = config;
        limited.auth_info =
            kube::config::AuthInfo { token: Some(token.trim().to_string().into()), ..Default::default() };
        let error =
            kube::Client::try_from(limited).unwrap().kubelet_node_logs(&pod, "box", &LogParams::default()).await;
        assert!(error.err().unwrap().to_string().contains("403"), "not allowed nodes/proxy");
    });
}

#[test]
fn python_client_exec_gets_output_and_the_exit_code() {
    let python = std::env::var("VKUBE_PYTHON").unwrap_or_else(|_| "/tmp/vkube-ci-venv/bin/python".into());
    let up = start();
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
out = stream(v1.connect_get_namespaced_pod_exec, 'web', 'default', container='c',
             command=['sh', '-c', 'cat /etc/config/app.conf'], stderr=True, stdin=False, stdout=True, tty=False)
print('output=' + out.strip())
resp = stream(v1.connect_get_namespaced_pod_exec, 'web', 'default', container='c', command=['sh', '-c', 'exit 4'],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=10)
print('code=%s' % resp.returncode)
"#;
    let output = std::process::Command::new(&python)
        .args(["-c", script, up.up.kubeconfig.to_str().unwrap()])
        .output()
        .expect("the Python kubernetes client (run .ci/run once, or set VKUBE_PYTHON)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("output=x=1") && stdout.contains("code=4"), "{stdout}");
}

/// A running `kubectl port-forward` and the local port it listens on.
struct PortForward {
    child: std::process::Child,
    port: u16,
    output: std::sync::mpsc::Receiver<String>,
}

impl PortForward {
    fn start(k: &common::Kubectl, target: &str, remote: u16) -> Self {
        use std::io::BufRead;
        let mut child = k
            .command(&["port-forward", target, &format!(":{remote}")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, output) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        let mut port = 0;
        let mut seen = Vec::new();
        wait_until(Duration::from_secs(15), "kubectl port-forward to listen", || {
            while let Ok(line) = output.try_recv() {
                // "Forwarding from 127.0.0.1:40521 -> 80"
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                    port = rest.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
                }
                seen.push(line);
            }
            port != 0
        });
        PortForward { child, port, output }
    }

    /// Sends an HTTP request through the forward and returns the whole answer.
    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// Everything kubectl printed so far.
    fn printed(&self) -> String {
        self.output.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_port_forward_reaches_the_pods_port() {
    let up = start();
    // kubectl 1.33 tunnels SPDY through a WebSocket; to a pod, and to a service's target port.
    let forward = PortForward::start(&up.k, "pod/web", 80);
    let answer = forward.get("/hello");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("web port 80: GET /hello\n"), "the virtual pod answered: {answer}");
    assert!(forward.get("/again").ends_with("web port 80: GET /again\n"), "a second connection");
    let service = PortForward::start(&up.k, "svc/web", 8080);
    assert!(service.get("/svc").ends_with("web port 80: GET /svc\n"));
    // kubectl 1.29 speaks SPDY itself.
    let home = tempfile::tempdir().unwrap();
    let old = common::Kubectl::new(29, &up.up.kubeconfig, home.path());
    let forward = PortForward::start(&old, "pod/web", 80);
    assert!(forward.get("/old").ends_with("web port 80: GET /old\n"));
    // A port nothing listens on: the connection is refused and kubectl says why.
    let refused = PortForward::start(&up.k, "pod/web", 9999);
    assert_eq!(refused.get("/"), "", "no answer");
    let mut printed = String::new();
    wait_until(Duration::from_secs(10), "kubectl to report the refusal", || {
        printed.push_str(&refused.printed());
        printed.contains("error forwarding port 9999 to pod web")
    });
    assert!(printed.contains("connection refused"), "{printed}");
}

#[test]
fn kube_rs_port_forward_reaches_the_pods_port() {
    let up = start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::Api;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let kubeconfig = kube::config::Kubeconfig::read_from(&up.up.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let pods: Api<Pod> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
        let mut forwarder = pods.portforward("web", &[80]).await.unwrap();
        let mut stream = forwarder.take_stream(80).unwrap();
        stream.write_all(b"GET /rs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("web port 80: GET /rs\n"), "{answer}");
        // The pod's side closed, so the server closed the socket, as the kubelet does (kube-rs's
        // own close then fails with SendAfterClosing, against a kubelet too).
        drop(stream);
        let _ = forwarder.join().await;
    });
}

#[test]
fn kubectl_debug_adds_a_container_and_attaches_to_it() {
    let up = start();
    let k = &up.k;
    let debug = k.output_with_stdin(
        &["debug", "-i", "web", "--image=busybox", "-c", "dbg", "--profile=general"],
        "echo in-debug $HOSTNAME; exit\n",
    );
    assert!(debug.status.success(), "{}", String::from_utf8_lossy(&debug.stderr));
    assert_eq!(String::from_utf8_lossy(&debug.stdout), "in-debug web\n", "a shell in the debug container");
    let state = k.ok(&["get", "pod", "web", "-o", "jsonpath={.status.ephemeralContainerStatuses[0].state}"]);
    assert!(state.contains("running"), "{state}");
    let host = up.host.ok(&[
        "get",
        "pod",
        "-n",
        "vcluster-vc1",
        "web-x-default-x-vc1",
        "-o",
        "jsonpath={.spec.ephemeralContainers[*].name}",
    ]);
    assert_eq!(host, "dbg", "the host pod has the debug container");
}

#[test]
fn pod_and_service_proxies_reach_the_pods_port() {
    let up = start();
    let k = &up.k;
    let raw = |path: &str| k.ok(&["get", "--raw", path]);
    assert_eq!(raw("/api/v1/namespaces/default/pods/web:80/proxy/hello?x=1"), "web port 80: GET /hello?x=1\n");
    let index = raw("/api/v1/namespaces/default/pods/web/proxy/");
    assert!(index.contains("<h1>Welcome to nginx!</h1>"), "the first declared port, nginx's page at /: {index}");
    assert_eq!(raw("/api/v1/namespaces/default/services/web:8080/proxy/svc"), "web port 80: GET /svc\n");
    assert_eq!(raw("/api/v1/namespaces/default/services/web/proxy/first"), "web port 80: GET /first\n");
    let error = k.fails(&["get", "--raw", "/api/v1/namespaces/default/pods/nope:80/proxy/"]);
    assert!(error.contains("pods \"nope\" not found"), "{error}");
}

#[test]
fn kubectl_top_shows_the_tenants_pods_and_nodes() {
    let up = start();
    let k = &up.k;
    let pods = k.ok(&["top", "pod", "--no-headers"]);
    let line = pods.lines().find(|l| l.starts_with("web ")).unwrap_or_else(|| panic!("{pods}"));
    let cpu: Vec<&str> = line.split_whitespace().collect();
    assert!(cpu[1].ends_with('m') && cpu[2].ends_with("Mi"), "usage of the virtual pod: {line}");
    assert_eq!(k.ok(&["top", "pod", "--no-headers"]), pods, "stable from one call to the next");
    let containers = k.ok(&["top", "pod", "web", "--containers", "--no-headers"]);
    assert!(
        containers.contains("web ") && containers.contains(" c ") && containers.contains(" sidecar "),
        "{containers}"
    );
    let filtered = k.output(&["top", "pod", "-l", "app=nothing"]);
    assert!(String::from_utf8_lossy(&filtered.stdout).trim().is_empty(), "a label selector filters");
    assert!(String::from_utf8_lossy(&filtered.stderr).contains("No resources found"));
    assert!(k.ok(&["top", "pod", "-l", "app=web", "--no-headers"]).starts_with("web "), "virtual labels select");
    let node = k.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.nodeName}"]);
    let nodes = k.ok(&["top", "node", "--no-headers"]);
    let names: Vec<&str> = nodes.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, [node.as_str()], "only the nodes the virtual cluster shows");
    let millicores = |text: &str| text.trim_end_matches('m').parse::<u64>().unwrap();
    let node_cpu = millicores(nodes.split_whitespace().nth(1).unwrap());
    assert!(
        node_cpu.abs_diff(millicores(cpu[1])) <= 1,
        "a fake node shows the tenant's pods on it (web alone), not the whole host node: {nodes} / {line}"
    );
}

#[test]
fn kubectl_top_without_a_metrics_source_says_the_api_is_not_available() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = common::ApiServerProcess::start(dir.path(), &[]);
    let k = common::Kubectl::new(33, &server.kubeconfig, home.path());
    let error = k.fails(&["top", "pod"]);
    assert!(error.contains("Metrics API not available"), "{error}");
}

on_both_hosts! {
/// The same streams through a real kube-apiserver: it calls the simulated kubelet's API (SPDY for
/// exec from a v5 client, kubectl's port-forward tunnel unwrapped to SPDY).
fn exec_attach_and_port_forward_reach_the_host_pod(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let k = &cluster.k;
    let applied = k.output_with_stdin(&["apply", "-f", "-"], POD);
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    assert_eq!(k.ok(&["exec", "web", "-c", "c", "--", "cat", "/etc/config/app.conf"]), "x=1\n");
    let piped = k.output_with_stdin(&["exec", "-i", "web", "-c", "c", "--", "sh", "-c", "cat; exit 4"], "typed\n");
    assert_eq!((String::from_utf8_lossy(&piped.stdout).as_ref(), piped.status.code()), ("typed\n", Some(4)));
    let home = tempfile::tempdir().unwrap();
    let old = common::Kubectl::new(29, &cluster.serving.kubeconfig, home.path());
    assert_eq!(old.ok(&["exec", "web", "-c", "c", "--", "sh", "-c", "echo $HOSTNAME"]), "web\n", "kubectl 1.29 (SPDY)");
    let forward = PortForward::start(k, "pod/web", 80);
    assert!(forward.get("/both").ends_with("web port 80: GET /both\n"));
    let logs = k.ok(&["logs", "web", "-c", "c", "--tail=1"]);
    assert!(logs.contains("simulated container c"), "{logs}");
    // `kubectl top`: the host's metrics API (on the real host the aggregated one `vkube host
    // --attach` registers behind kube-apiserver), read with the syncer's derived permissions.
    let mut top = String::new();
    wait_until(Duration::from_secs(30), "kubectl top pod", || {
        let output = k.output(&["top", "pod", "web", "--no-headers"]);
        top = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        output.status.success()
    });
    assert!(top.starts_with("web "), "{top}");
    let node = k.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.nodeName}"]);
    let nodes = k.ok(&["top", "node", "--no-headers"]);
    let names: Vec<&str> = nodes.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, [node.as_str()], "the virtual cluster's (fake) node: {nodes}");
    if kind == HostKind::Real {
        // The simulated kubelet runs commands only for the API server, not for a user (here the
        // host's admin) calling its port directly.
        let node = host_node(&cluster);
        let port = cluster.host.ok(&["get", "node", &node, "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}"]);
        let refused = direct_kubelet_call(&cluster.host.kubeconfig, &port, "/exec/vcluster-vc1/web-x-default-x-vc1/c?command=true&output=1");
        assert!(refused.contains("exec into simulated containers runs only for the API server"), "{refused}");
    }
    // Service proxy: the syncer may proxy to its host service. A real kube-apiserver then refuses
    // to dial the simulated pod's address (loopback), which is past its authorization.
    let proxied = k.output(&["get", "--raw", "/api/v1/namespaces/default/services/web:8080/proxy/svc"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&proxied.stdout), String::from_utf8_lossy(&proxied.stderr));
    match kind {
        HostKind::Simulated => assert_eq!(stdout, "web port 80: GET /svc\n", "{stderr}"),
        HostKind::Real => assert!(stderr.contains("resolve_deny: denied destination"), "{stdout}{stderr}"),
    }
}
}

/// The host node the virtual pod `web` runs on.
fn host_node(cluster: &VirtualCluster) -> String {
    cluster.host.ok(&["get", "pod", "web-x-default-x-vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.nodeName}"])
}

/// GET `path` of the kubelet API on `port` of this machine with `kubeconfig`'s credentials; the
/// error it answers.
fn direct_kubelet_call(kubeconfig: &std::path::Path, port: &str, path: &str) -> String {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        config.accept_invalid_certs = true;
        config.cluster_url = format!("https://127.0.0.1:{port}").parse().unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let request = http::Request::get(path).body(Vec::new()).unwrap();
        match client.request_text(request).await {
            Ok(text) => format!("answered: {text}"),
            Err(error) => error.to_string(),
        }
    })
}

#[test]
fn kubectl_1_27_1_30_and_1_33_exec_copy_forward_follow_and_top() {
    let up = start();
    let local = up.dir.path().join("local.txt");
    std::fs::write(&local, "copied\n").unwrap();
    for minor in [27, 30, 33] {
        let home = tempfile::tempdir().unwrap();
        let k = common::Kubectl::new(minor, &up.up.kubeconfig, home.path());
        let failed = k.output(&["exec", "web", "-c", "c", "--", "sh", "-c", "cat /etc/config/app.conf; exit 6"]);
        assert_eq!(String::from_utf8_lossy(&failed.stdout), "x=1\n", "kubectl 1.{minor} exec");
        assert_eq!(failed.status.code(), Some(6), "kubectl 1.{minor}: the exit code");
        // cp both ways (an exec of tar in each direction).
        let remote = format!("web:/data/in-{minor}.txt");
        k.ok(&["cp", "-c", "c", local.to_str().unwrap(), &remote]);
        assert_eq!(k.ok(&["exec", "web", "-c", "c", "--", "cat", &format!("/data/in-{minor}.txt")]), "copied\n");
        let back = up.dir.path().join(format!("back-{minor}.txt"));
        k.ok(&["cp", "-c", "c", &remote, back.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied\n", "kubectl 1.{minor} cp from the pod");
        // port-forward to a pod and to a service.
        let forward = PortForward::start(&k, "pod/web", 80);
        assert!(forward.get(&format!("/v{minor}")).ends_with(&format!("web port 80: GET /v{minor}\n")), "1.{minor}");
        let service = PortForward::start(&k, "svc/web", 8080);
        assert!(service.get("/svc").ends_with("web port 80: GET /svc\n"), "kubectl 1.{minor} to a service");
        // logs -f follows the host pod's log.
        let mut follow = k
            .command(&["logs", "-f", "web", "-c", "c", "--tail=1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = follow.stdout.take().unwrap();
        let mut first = [0u8; 64];
        let n = std::io::Read::read(&mut out, &mut first).unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).contains("simulated container c"), "kubectl 1.{minor} logs -f");
        let _ = follow.kill();
        let _ = follow.wait();
        // top.
        assert!(k.ok(&["top", "pod", "--no-headers"]).starts_with("web "), "kubectl 1.{minor} top pod");
        assert!(!k.ok(&["top", "node", "--no-headers"]).trim().is_empty(), "kubectl 1.{minor} top node");
    }
}

#[test]
fn exec_can_be_switched_off_on_the_simulated_host() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let up = common::ApiServerProcess::up_with(&dir.path().join("state"), &["--exec", "off"]);
    let k = common::Kubectl::new(33, &up.kubeconfig, home.path());
    k.ok(&["run", "web", "--image=nginx"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let error = k.fails(&["exec", "web", "--", "echo", "should not run"]);
    assert!(error.contains("exec is switched off on this simulated host"), "{error}");
    // Logs still work; nothing ran.
    assert!(k.ok(&["logs", "web"]).contains("simulated container web"));
}
