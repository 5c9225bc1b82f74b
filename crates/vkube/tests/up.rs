//! `vkube up` (simulated host + virtual cluster + syncer in one process) driven by kubectl.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::{VirtualCluster, wait_until};

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  imagePullSecrets: [{name: registry}]
  containers:
  - name: web
    image: nginx:1.27
    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: db, key: password}}
    volumeMounts: [{name: files, mountPath: /etc/files}]
  volumes:
  - name: files
    configMap: {name: files}
"#;

on_both_hosts! {
fn a_pod_with_its_config_runs_on_the_host_and_cleans_up(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let (k, host, state) = (&cluster.k, &cluster.host, cluster.state.clone());
    k.ok(&["create", "configmap", "files", "--from-literal=app.conf=x=1"]);
    k.ok(&["create", "configmap", "unrelated", "--from-literal=a=b"]);
    k.ok(&["create", "secret", "generic", "db", "--from-literal=password=hunter2"]);
    k.ok(&["create", "secret", "generic", "unused", "--from-literal=x=y"]);
    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "registry",
        "--docker-server=r.example.com",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    let mut create = k.command(&["create", "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    create.stdin.take().unwrap().write_all(POD.as_bytes()).unwrap();
    assert!(create.wait().unwrap().success());
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let wide = k.ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(wide.contains("Running") && wide.contains("10.244.") && wide.contains("sim-node-"), "{wide}");
    assert!(k.ok(&["get", "nodes"]).contains("sim-node-"), "the pod's node appears in the virtual cluster");
    assert!(k.ok(&["logs", "web"]).contains("simulated container web"), "logs come from the host pod");
    wait_until(Duration::from_secs(10), "host events in describe", || {
        let described = k.ok(&["describe", "pod", "web"]);
        described.contains("Successfully assigned default/web to sim-node-")
            && described.contains("Started container web")
    });

    let host_objects = host.ok(&["get", "pods,configmaps,secrets", "-n", "vcluster-vc1", "-o", "name"]);
    let synced: Vec<&str> = host_objects.lines().filter(|l| l.contains("-x-")).collect();
    assert_eq!(
        synced,
        [
            "pod/web-x-default-x-vc1",
            "configmap/files-x-default-x-vc1",
            "configmap/vcluster-kube-root-ca.crt-x-vc1",
            "secret/db-x-default-x-vc1",
            "secret/registry-x-default-x-vc1"
        ],
        "only the pod and what it references reach the host"
    );
    // The mapping store records the pod's pair and what it uses (read while the cluster runs).
    wait_until(Duration::from_secs(10), "the pod's mapping in `vkube mappings`", || {
        let listed = mappings(&state);
        listed.contains("Pod default/web -> vcluster-vc1/web-x-default-x-vc1")
            && listed.contains("  uses Secret default/db -> vcluster-vc1/db-x-default-x-vc1")
            && listed.contains("  uses Secret default/registry -> vcluster-vc1/registry-x-default-x-vc1")
            && listed.contains("  uses ConfigMap default/files -> vcluster-vc1/files-x-default-x-vc1")
    });
    assert!(!mappings(&state).contains("unused"), "nothing maps what nobody uses");

    // A service gets the host's cluster IP and node port; the host's endpoints find the host pod.
    k.ok(&["expose", "pod", "web", "--port=80", "--type=NodePort"]);
    let virtual_address =
        k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}"]);
    let host_address = host.ok(&[
        "get",
        "service",
        "web-x-default-x-vc1",
        "-n",
        "vcluster-vc1",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    assert_eq!(virtual_address, host_address);
    assert!(virtual_address.starts_with("10."), "{virtual_address}");
    let pod_ip = k.ok(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);
    wait_until(Duration::from_secs(10), "host endpoints", || {
        host.ok(&[
            "get",
            "endpoints",
            "web-x-default-x-vc1",
            "-n",
            "vcluster-vc1",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}",
        ]) == pod_ip
    });
    wait_until(Duration::from_secs(10), "virtual endpoints", || {
        k.ok(&["get", "endpoints", "web", "-o", "jsonpath={.subsets[0].addresses[0].ip}"]) == pod_ip
    });
    wait_until(Duration::from_secs(10), "a virtual endpoint slice", || {
        let slice = "jsonpath={.items[0].endpoints[0].addresses[0]} {.items[0].endpoints[0].conditions.ready}";
        k.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", slice])
            == format!("{pod_ip} true")
    });
    k.ok(&["delete", "service", "web"]);
    wait_until(Duration::from_secs(10), "the slice gone with its service", || {
        k.ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "name"]).is_empty()
    });

    k.ok(&["delete", "pod", "web", "--timeout=30s"]);
    wait_until(Duration::from_secs(15), "the host namespace to be empty again", || {
        host.ok(&["get", "pods,configmaps,secrets", "-n", "vcluster-vc1", "-o", "name"])
            .lines()
            .all(|l| !l.contains("-x-"))
    });
    wait_until(Duration::from_secs(10), "the pod's mapping gone", || !mappings(&state).contains("Pod default/web"));
    assert!(cluster.stop().success());
}
}

/// `vkube mappings --dir STATE` (the default cluster name vc1).
fn mappings(state: &std::path::Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["mappings", "--dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn mappings_of_a_directory_without_a_cluster_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vkube"))
        .args(["mappings", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no virtual cluster store here") && stderr.contains("--dir"), "{stderr}");
}

on_both_hosts! {
fn host_pods_reach_the_virtual_api_with_their_own_token_and_use_the_virtual_dns(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let (k, host) = (&cluster.k, &cluster.host);
    // kube-dns of the virtual cluster (its server comes later): pods created after it use it.
    k.ok(&["create", "service", "clusterip", "kube-dns", "-n", "kube-system", "--tcp=53:53"]);
    wait_until(Duration::from_secs(10), "the default service account", || {
        k.output(&["get", "serviceaccount", "default", "-o", "name"]).status.success()
    });
    k.ok(&["run", "client", "--image=busybox"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/client", "--timeout=30s"]);
    let mounts = k.ok(&["get", "pod", "client", "-o", "jsonpath={.spec.containers[0].volumeMounts[0].mountPath}"]);
    assert_eq!(mounts, "/var/run/secrets/kubernetes.io/serviceaccount", "service account admission");

    let host_pod = |path: &str| {
        host.ok(&["get", "pod", "client-x-default-x-vc1", "-n", "vcluster-vc1", "-o", &format!("jsonpath={path}")])
    };
    let field = host_pod("{.spec.volumes[0].projected.sources[0].downwardAPI.items[0].fieldRef.fieldPath}");
    let key = field.trim_start_matches("metadata.annotations['").trim_end_matches("']").to_string();
    assert!(key.starts_with("vcluster.loft.sh/token-"), "{field}");
    let token = host_pod(&format!("{{.metadata.annotations.{}}}", key.replace('.', "\\.").replace('/', "\\/")));
    // Only the token, no client certificate: what a process in the host pod would present.
    let kubeconfig = std::fs::read_to_string(&cluster.serving.kubeconfig).unwrap();
    let server = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
    let output = std::process::Command::new(&k.binary)
        .args(["--kubeconfig", "/dev/null", "--server", &server, "--insecure-skip-tls-verify", "--token", &token])
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
        .env("HOME", &k.home)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let whoami = String::from_utf8(output.stdout).unwrap();
    assert_eq!(whoami, "system:serviceaccount:default:default", "the host pod's token is the virtual account's");

    let api_ip = host.ok(&["get", "service", "vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(host_pod("{.spec.hostAliases[0].ip}"), api_ip);
    assert!(host_pod("{.spec.hostAliases[0].hostnames}").contains("kubernetes.default.svc"));
    let dns_ip = host.ok(&[
        "get",
        "service",
        "kube-dns-x-kube-system-x-vc1",
        "-n",
        "vcluster-vc1",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(host_pod("{.spec.dnsPolicy}"), "None");
    assert_eq!(host_pod("{.spec.dnsConfig.nameservers[0]}"), dns_ip);
    assert_eq!(host_pod("{.spec.dnsConfig.searches[0]}"), "default.svc.cluster.local");
    assert!(cluster.stop().success());
}
}

on_both_hosts! {
fn optional_kinds_switched_on_in_vcluster_yaml_work_with_kubectl(kind: HostKind) {
    let config = r#"sync:
  toHost:
    ingresses: {enabled: true}
    networkPolicies: {enabled: true}
    podDisruptionBudgets: {enabled: true}
    pods:
      translate:
      - path: spec.containers[*].image
        expression: '"mirror.local/" + value'
  fromHost:
    ingressClasses: {enabled: true}
"#;
    let cluster = VirtualCluster::start(kind, Some(config));
    let (k, host) = (&cluster.k, &cluster.host);
    let class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n";
    let mut create = host.command(&["apply", "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    create.stdin.take().unwrap().write_all(class.as_bytes()).unwrap();
    assert!(create.wait().unwrap().success());
    wait_until(Duration::from_secs(10), "the host's ingress class in the virtual cluster", || {
        k.ok(&["get", "ingressclass", "-o", "name"]).contains("ingressclass.networking.k8s.io/nginx")
    });
    k.ok(&["create", "secret", "generic", "web-tls", "--from-literal=tls.crt=c", "--from-literal=tls.key=k"]);
    k.ok(&["create", "ingress", "web", "--class=nginx", "--rule=shop.example.com/=web:80,tls=web-tls"]);
    k.ok(&["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=1"]);
    wait_until(Duration::from_secs(10), "the host ingress", || {
        host.ok(&["get", "ingress", "-n", "vcluster-vc1", "-o", "name"]).contains("web-x-default-x-vc1")
    });
    let backend = host.ok(&[
        "get",
        "ingress",
        "web-x-default-x-vc1",
        "-n",
        "vcluster-vc1",
        "-o",
        "jsonpath={.spec.rules[0].http.paths[0].backend.service.name} {.spec.tls[0].secretName} {.spec.ingressClassName}",
    ]);
    assert_eq!(backend, "web-x-default-x-vc1 web-tls-x-default-x-vc1 nginx");
    wait_until(Duration::from_secs(10), "the TLS secret and the budget on the host", || {
        let names = host.ok(&["get", "secrets,pdb", "-n", "vcluster-vc1", "-o", "name"]);
        names.contains("secret/web-tls-x-default-x-vc1")
            && names.contains("poddisruptionbudget.policy/web-x-default-x-vc1")
    });
    // The pod's translate rule rewrites its image on the host only.
    k.ok(&["run", "app", "--image=nginx:1.27"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/app", "--timeout=30s"]);
    let image = "jsonpath={.spec.containers[0].image}";
    assert_eq!(
        host.ok(&["get", "pod", "app-x-default-x-vc1", "-n", "vcluster-vc1", "-o", image]),
        "mirror.local/nginx:1.27"
    );
    assert_eq!(k.ok(&["get", "pod", "app", "-o", image]), "nginx:1.27");
    k.ok(&["delete", "ingress", "web"]);
    wait_until(Duration::from_secs(10), "the host ingress and secret gone", || {
        let names = host.ok(&["get", "ingress,secrets", "-n", "vcluster-vc1", "-o", "name"]);
        !names.contains("web-x-default-x-vc1") && !names.contains("web-tls-x-default-x-vc1")
    });
    assert!(cluster.stop().success());
}
}
