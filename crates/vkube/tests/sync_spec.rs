//! The syncer's details as sync-behavior.md describes them, checked with kubectl against
//! `vkube up` (default vcluster.yaml).

mod common;

use common::VirtualCluster;

on_both_hosts! {
/// §4.5 rewriteHosts (on by default) and §4.8 the downward API: a pod with a subdomain gets the
/// init container that writes its virtual FQDN into /etc/hosts, and fields a container reads about
/// its own pod name the virtual pod, not the host one.
fn host_pods_see_their_virtual_identity(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let (k, host) = (&cluster.k, &cluster.host);
    let pod = r#"apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers:
  - name: db
    image: postgres:16
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    volumeMounts: [{name: info, mountPath: /info}]
  volumes:
  - name: info
    downwardAPI:
      items: [{path: name, fieldRef: {fieldPath: metadata.name}}]
"#;
    let created = k.output_with_stdin(&["create", "-f", "-"], pod);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    k.ok(&["wait", "--for=condition=Ready", "pod/db-0", "--timeout=30s"]);
    let get = |jsonpath: &str| {
        host.ok(&["get", "pod", "db-0-x-default-x-vc1", "-n", "vcluster-vc1", "-o", &format!("jsonpath={jsonpath}")])
    };
    assert_eq!(get("{.spec.initContainers[0].name}"), "vcluster-rewrite-hosts");
    assert_eq!(get("{.spec.initContainers[0].image}"), "mirror.gcr.io/library/alpine:3.20");
    let script = get("{.spec.initContainers[0].args[1]}");
    assert!(script.contains("db-0.db.default.svc.cluster.local db-0/"), "{script}");
    assert_eq!(get("{.spec.containers[0].volumeMounts[?(@.mountPath=='/etc/hosts')].subPath}"), "hosts");
    assert_eq!(get("{.metadata.annotations.vcluster\\.loft\\.sh/hosts-rewritten}"), "true");
    assert_eq!(
        get("{.spec.containers[0].env[?(@.name=='POD_NAME')].valueFrom.fieldRef.fieldPath}"),
        "metadata.annotations['vcluster.loft.sh/name']"
    );
    assert_eq!(
        get("{.spec.containers[0].env[?(@.name=='POD_NAMESPACE')].valueFrom.fieldRef.fieldPath}"),
        "metadata.annotations['vcluster.loft.sh/namespace']"
    );
    assert_eq!(
        get("{.spec.containers[0].env[?(@.name=='APP')].valueFrom.fieldRef.fieldPath}"),
        "metadata.labels['app']"
    );
    assert_eq!(
        get("{.spec.volumes[?(@.name=='info')].downwardAPI.items[0].fieldRef.fieldPath}"),
        "metadata.annotations['vcluster.loft.sh/name']"
    );
    assert_eq!(get("{.metadata.annotations.vcluster\\.loft\\.sh/name}"), "db-0");
    // The virtual pod shows no trace of the host-only init container.
    let inits = k.ok(&[
        "get",
        "pod",
        "db-0",
        "-o",
        "jsonpath={.spec.initContainers[*].name} {.status.initContainerStatuses[*].name}",
    ]);
    assert_eq!(inits.trim(), "");
    // A pod without a subdomain is left alone.
    k.ok(&["run", "plain", "--image=nginx:1.27"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/plain", "--timeout=30s"]);
    let plain = host.ok(&[
        "get",
        "pod",
        "plain-x-default-x-vc1",
        "-n",
        "vcluster-vc1",
        "-o",
        "jsonpath={.spec.initContainers}",
    ]);
    assert_eq!(plain, "");

    // §4.2: host tooling can tell which workload set a pod belongs to.
    k.ok(&["create", "job", "once", "--image=busybox:1.36"]);
    let daemon = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: agent, image: busybox:1.36}]}\n";
    assert!(k.output_with_stdin(&["create", "-f", "-"], daemon).status.success());
    let annotation = |selector: &str, key: &str| {
        host.ok(&[
            "get",
            "pods",
            "-n",
            "vcluster-vc1",
            "-l",
            selector,
            "-o",
            &format!("jsonpath={{.items[0].metadata.annotations.{key}}}"),
        ])
    };
    common::wait_until(std::time::Duration::from_secs(30), "the job's and the daemon set's pods on the host", || {
        annotation("batch.kubernetes.io/job-name=once", "vcluster\\.loft\\.sh/owner-set-kind") == "Job"
            && annotation("app=agent", "vcluster\\.loft\\.sh/owner-set-kind") == "DaemonSet"
    });
    assert_eq!(annotation("app=agent", "cluster-autoscaler\\.kubernetes\\.io/daemonset-pod"), "true");
    assert_eq!(
        annotation("batch.kubernetes.io/job-name=once", "cluster-autoscaler\\.kubernetes\\.io/daemonset-pod"),
        ""
    );
    // §4.6: affinity terms and spread constraints match only this virtual cluster's pods of the
    // pod's namespace (or the namespaces the term names).
    let spread = r#"apiVersion: v1
kind: Pod
metadata: {name: cache, labels: {app: cache}}
spec:
  containers: [{name: cache, image: redis:7}]
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - {labelSelector: {matchLabels: {app: cache}}, topologyKey: kubernetes.io/hostname}
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 10
        podAffinityTerm: {labelSelector: {matchLabels: {app: db}}, topologyKey: zone, namespaces: [default, data]}
  topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: cache}}}
"#;
    assert!(k.output_with_stdin(&["create", "-f", "-"], spread).status.success());
    common::wait_until(std::time::Duration::from_secs(20), "the cache pod on the host", || {
        host.output(&["get", "pod", "cache-x-default-x-vc1", "-n", "vcluster-vc1"]).status.success()
    });
    let host_cache = |jsonpath: &str| {
        host.ok(&["get", "pod", "cache-x-default-x-vc1", "-n", "vcluster-vc1", "-o", &format!("jsonpath={jsonpath}")])
    };
    let required =
        host_cache("{.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector}");
    assert_eq!(
        required,
        r#"{"matchLabels":{"app":"cache","vcluster.loft.sh/managed-by":"vc1","vcluster.loft.sh/namespace":"default"}}"#
    );
    let preferred = host_cache(
        "{.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm}",
    );
    assert!(
        preferred.contains(r#"{"key":"vcluster.loft.sh/namespace","operator":"In","values":["default","data"]}"#),
        "{preferred}"
    );
    assert!(!preferred.contains(r#""namespaces""#), "{preferred}");
    let constraint = host_cache("{.spec.topologySpreadConstraints[0].labelSelector.matchLabels}");
    assert_eq!(
        constraint,
        r#"{"app":"cache","vcluster.loft.sh/managed-by":"vc1","vcluster.loft.sh/namespace":"default"}"#
    );

    // §4.8: service links of the pod's namespace (virtual services, host addresses) and
    // KUBERNETES_* for the virtual API, the pod's own variables winning.
    k.ok(&["create", "service", "clusterip", "db", "--tcp=5432:5432"]);
    let client = "apiVersion: v1\nkind: Pod\nmetadata: {name: client}\nspec:\n  containers:\n  - {name: c, image: busybox:1.36, env: [{name: DB_SERVICE_HOST, value: custom}]}\n";
    assert!(k.output_with_stdin(&["create", "-f", "-"], client).status.success());
    common::wait_until(std::time::Duration::from_secs(20), "the client pod on the host", || {
        host.output(&["get", "pod", "client-x-default-x-vc1", "-n", "vcluster-vc1"]).status.success()
    });
    let env = |name: &str| {
        host.ok(&[
            "get",
            "pod",
            "client-x-default-x-vc1",
            "-n",
            "vcluster-vc1",
            "-o",
            &format!("jsonpath={{.spec.containers[0].env[?(@.name=='{name}')].value}}"),
        ])
    };
    let db_ip = k.ok(&["get", "service", "db", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(env("DB_SERVICE_PORT"), "5432");
    assert_eq!(env("DB_PORT_5432_TCP_ADDR"), db_ip);
    assert_eq!(env("DB_SERVICE_HOST"), "custom", "the pod's own variable wins, once");
    let api_ip = host.ok(&["get", "service", "vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(env("KUBERNETES_SERVICE_HOST"), api_ip);
    assert_eq!(env("KUBERNETES_SERVICE_PORT"), "443");
    assert!(cluster.stop().success());
}
}

on_both_hosts! {
/// §4.8 at scale: in a namespace with more services than fit into each container (60 services,
/// 420 variables), the service links reach containers through a host config map (`envFrom`),
/// so the host pod stays small, and a container still reads them (`kubectl exec ... printenv`).
fn many_service_links_reach_containers_through_a_config_map(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let (k, host) = (&cluster.k, &cluster.host);
    let services: Vec<String> = (0..60)
        .map(|i| format!("{{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {{\"name\": \"svc-{i}\"}}, \"spec\": {{\"ports\": [{{\"port\": 80}}]}}}}"))
        .collect();
    let list = format!("{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{}]}}", services.join(","));
    let created = k.output_with_stdin(&["create", "-f", "-"], &list);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    k.ok(&["run", "client", "--image=busybox:1.36", "--", "sleep", "3600"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/client", "--timeout=60s"]);
    let sources = host.ok(&["get", "pod", "client-x-default-x-vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.containers[0].envFrom[*].configMapRef.name}"]);
    assert_eq!(sources, "vc-service-links-0.default.vc1");
    let inline = host.ok(&["get", "pod", "client-x-default-x-vc1", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.containers[0].env[*].name}"]);
    assert!(inline.split(' ').all(|n| n.starts_with("KUBERNETES_")), "{inline}");
    let ip = k.ok(&["get", "service", "svc-42", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(k.ok(&["exec", "client", "--", "printenv", "SVC_42_SERVICE_HOST"]).trim(), ip);
    assert!(cluster.stop().success());
}
}

on_both_hosts! {
/// §4.3: `sync.toHost.pods.runtimeClassName` is forced on every host pod and
/// `sync.toHost.pods.priorityClassName` given to those without a class.
fn configured_classes_reach_host_pods(kind: HostKind) {
    let config =
        "sync:\n  toHost:\n    pods:\n      runtimeClassName: sandboxed\n      priorityClassName: tenant-low\n";
    let cluster = VirtualCluster::start(kind, Some(config));
    let (k, host) = (&cluster.k, &cluster.host);
    // The platform engineer provides the classes on the host (a real host refuses pods naming
    // classes it does not have).
    let classes = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: tenant-low}\nvalue: 100\n---\napiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: sandboxed}\nhandler: runsc\n";
    let created = host.output_with_stdin(&["apply", "-f", "-"], classes);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    k.ok(&["run", "web", "--image=nginx:1.27"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let classes = host.ok(&[
        "get",
        "pod",
        "web-x-default-x-vc1",
        "-n",
        "vcluster-vc1",
        "-o",
        "jsonpath={.spec.runtimeClassName} {.spec.priorityClassName}",
    ]);
    assert_eq!(classes, "sandboxed tenant-low");
    assert!(cluster.stop().success());
}
}

/// §3.4, end to end on a real host: a NodePort service shows the node port the host allocated,
/// and after its host copy was deleted and made again while `vkube serve` was down (another
/// cluster IP), the virtual service is re-created with the host's new address.
#[test]
fn services_take_their_host_addresses_after_the_host_copy_was_made_again() {
    let mut cluster = common::VirtualCluster::start(common::HostKind::Real, None);
    let host_service = ["get", "service", "web-x-default-x-vc1", "-n", "vcluster-vc1", "-o"];
    cluster.k.ok(&["create", "service", "clusterip", "web", "--tcp=80"]);
    cluster.k.ok(&["patch", "service", "web", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    common::wait_until(std::time::Duration::from_secs(30), "the host's node port in the virtual service", || {
        let host_port = cluster.host.ok(&[&host_service[..], &["jsonpath={.spec.ports[0].nodePort}"]].concat());
        !host_port.is_empty()
            && cluster.k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]) == host_port
    });
    let old_ip = cluster.k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    cluster.restart_serving(|host| {
        host.ok(&["delete", "service", "web-x-default-x-vc1", "-n", "vcluster-vc1"]);
    });
    common::wait_until(std::time::Duration::from_secs(30), "the virtual service with the new host address", || {
        let host_ip = cluster.host.output(&[&host_service[..], &["jsonpath={.spec.clusterIP}"]].concat());
        let host_ip = String::from_utf8_lossy(&host_ip.stdout).to_string();
        !host_ip.is_empty()
            && host_ip != old_ip
            && cluster.k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]) == host_ip
    });
    assert_eq!(cluster.k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.type}"]), "NodePort");
    assert!(cluster.stop().success());
}

/// §4.1 through `vkube up` and kubectl: with `policies.podSecurityStandard: baseline` a
/// privileged pod stays virtual and `kubectl get events` says why; an ordinary pod runs.
#[test]
fn the_pod_security_standard_keeps_privileged_pods_off_the_host() {
    let config = "policies:\n  podSecurityStandard: baseline\n";
    let cluster = common::VirtualCluster::start(common::HostKind::Simulated, Some(config));
    let (k, host) = (&cluster.k, &cluster.host);
    k.ok(&["run", "root", "--image=nginx:1.27", "--privileged"]);
    k.ok(&["run", "web", "--image=nginx:1.27"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let mut message = String::new();
    common::wait_until(std::time::Duration::from_secs(20), "the SyncError event", || {
        message = k.ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=SyncError,involvedObject.name=root",
            "-o",
            "jsonpath={.items[0].message}",
        ]);
        !message.is_empty()
    });
    assert_eq!(
        message,
        "Pod root is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"root\" must not set securityContext.privileged=true)"
    );
    assert!(!host.output(&["get", "pod", "root-x-default-x-vc1", "-n", "vcluster-vc1"]).status.success());
    assert_eq!(k.ok(&["get", "pod", "root", "-o", "jsonpath={.status.phase}"]), "Pending");
    assert!(cluster.stop().success());
}

/// §5.5 through `vkube up` and kubectl: a host secret named in `sync.fromHost.secrets.mappings`
/// shows in the virtual namespace the mapping names (made for it), and goes with its source.
#[test]
fn host_secrets_named_in_the_mappings_show_in_the_virtual_cluster() {
    let config = "sync:\n  fromHost:\n    secrets:\n      enabled: true\n      mappings:\n        byName:\n          \"/registry-creds\": \"ci/*\"\n";
    let cluster = common::VirtualCluster::start(common::HostKind::Simulated, Some(config));
    let (k, host) = (&cluster.k, &cluster.host);
    host.ok(&["create", "secret", "generic", "registry-creds", "-n", "vcluster-vc1", "--from-literal=token=s3cr3t"]);
    common::wait_until(std::time::Duration::from_secs(20), "the copy in namespace ci", || {
        k.output(&["get", "secret", "registry-creds", "-n", "ci"]).status.success()
    });
    assert_eq!(k.ok(&["get", "secret", "registry-creds", "-n", "ci", "-o", "jsonpath={.data.token}"]), "czNjcjN0");
    host.ok(&["delete", "secret", "registry-creds", "-n", "vcluster-vc1"]);
    common::wait_until(std::time::Duration::from_secs(20), "the copy to go", || {
        !k.output(&["get", "secret", "registry-creds", "-n", "ci"]).status.success()
    });
    assert!(cluster.stop().success());
}

/// §12.4 through `vkube up` and kubectl: a host service named in
/// `networking.replicateServices.fromHost` (by its plain name: the host namespace) shows in the
/// virtual cluster, its endpoints reaching the host service's address.
#[test]
fn replicated_host_services_show_in_the_virtual_cluster() {
    let config = "networking:\n  replicateServices:\n    fromHost:\n      - {from: billing, to: default/billing}\n";
    let cluster = common::VirtualCluster::start(common::HostKind::Simulated, Some(config));
    let (k, host) = (&cluster.k, &cluster.host);
    host.ok(&["create", "service", "clusterip", "billing", "--tcp=443", "-n", "vcluster-vc1"]);
    let host_ip = host.ok(&["get", "service", "billing", "-n", "vcluster-vc1", "-o", "jsonpath={.spec.clusterIP}"]);
    let mut ip = String::new();
    common::wait_until(std::time::Duration::from_secs(20), "the replica's endpoints", || {
        ip = String::from_utf8_lossy(
            &k.output(&["get", "endpoints", "billing", "-o", "jsonpath={.subsets[0].addresses[0].ip}"]).stdout,
        )
        .to_string();
        !ip.is_empty()
    });
    assert_eq!(ip, host_ip);
    assert_eq!(
        k.ok(&["get", "service", "billing", "-o", "jsonpath={.spec.clusterIP} {.spec.ports[0].port}"]),
        "None 443"
    );
    assert!(cluster.stop().success());
}

/// §11.1: `controlPlane.advanced.workloadServiceAccount.name` is the account host pods run under,
/// and `defaultImageRegistry` the registry of the rewrite-hosts image; §4.1: the labels of
/// `sync.fromHost.nodes.selector` pin every host pod.
#[test]
fn advanced_settings_reach_host_pods() {
    let config = "controlPlane:\n  advanced:\n    defaultImageRegistry: registry.corp:5000\n    workloadServiceAccount: {name: tenant-runner}\nsync:\n  fromHost:\n    nodes:\n      enabled: true\n      selector:\n        labels: {type: vkube-simulated}\n";
    let cluster = common::VirtualCluster::start(common::HostKind::Simulated, Some(config));
    let (k, host) = (&cluster.k, &cluster.host);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0}\nspec:\n  hostname: db-0\n  subdomain: db\n  containers: [{name: db, image: postgres:16}]\n";
    assert!(k.output_with_stdin(&["create", "-f", "-"], pod).status.success());
    common::wait_until(std::time::Duration::from_secs(20), "the host pod", || {
        host.output(&["get", "pod", "db-0-x-default-x-vc1", "-n", "vcluster-vc1"]).status.success()
    });
    let spec = host.ok(&[
        "get",
        "pod",
        "db-0-x-default-x-vc1",
        "-n",
        "vcluster-vc1",
        "-o",
        "jsonpath={.spec.serviceAccountName} {.spec.initContainers[0].image} {.spec.nodeSelector.type}",
    ]);
    // §4.1: the node selector labels pin the host pod.
    assert_eq!(spec, "tenant-runner registry.corp:5000/library/alpine:3.20 vkube-simulated");
    k.ok(&["wait", "--for=condition=Ready", "pod/db-0", "--timeout=30s"]);
    assert!(host.output(&["get", "serviceaccount", "tenant-runner", "-n", "vcluster-vc1"]).status.success());
    assert!(cluster.stop().success());
}

on_both_hosts! {
/// §4.7: a generic ephemeral volume becomes the claim `<pod>-<volume>` in the virtual cluster
/// (made by its ephemeral-volume controller, owned by the pod), synced like any claim; the host
/// pod mounts the claim's host copy; both claims go with the pod.
fn ephemeral_volumes_are_claims_of_the_virtual_cluster(kind: HostKind) {
    let cluster = VirtualCluster::start(kind, None);
    let (k, host) = (&cluster.k, &cluster.host);
    let pod = r#"apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - {name: c, image: nginx, volumeMounts: [{name: scratch, mountPath: /scratch}]}
  volumes:
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        metadata: {labels: {kept: "yes"}}
        spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#;
    let created = k.output_with_stdin(&["create", "-f", "-"], pod);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    common::wait_until(std::time::Duration::from_secs(30), "the virtual claim", || {
        k.output(&["get", "pvc", "web-scratch"]).status.success()
    });
    assert_eq!(
        k.ok(&["get", "pvc", "web-scratch", "-o", "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.labels.kept}"]),
        "Pod/web yes"
    );
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let claim = host.ok(&[
        "get", "pod", "web-x-default-x-vc1", "-n", "vcluster-vc1", "-o",
        "jsonpath={.spec.volumes[?(@.name=='scratch')].persistentVolumeClaim.claimName}",
    ]);
    assert_eq!(claim, "web-scratch-x-default-x-vc1");
    assert!(host.output(&["get", "pvc", &claim, "-n", "vcluster-vc1"]).status.success(), "the claim's host copy");
    k.ok(&["delete", "pod", "web", "--wait=true"]);
    common::wait_until(std::time::Duration::from_secs(60), "both claims to go with the pod", || {
        !k.output(&["get", "pvc", "web-scratch"]).status.success()
            && !host.output(&["get", "pvc", &claim, "-n", "vcluster-vc1"]).status.success()
    });
}
}

on_both_hosts! {
/// §4.9 `syncBackChanges` and §3.13 priority classes to the host, as the conformance suite's
/// preemption tests use them: a resource the tenant advertises on a node's status reaches the
/// host node; the host's scheduler preempts the tenant's low-priority pod for its high-priority
/// one; the virtual victim shows `DisruptionTarget` and terminates while its finalizer holds it.
fn the_hosts_scheduler_preempts_by_the_tenants_priorities(kind: HostKind) {
    let config = "sync:\n  toHost:\n    priorityClasses: {enabled: true}\n  fromHost:\n    nodes: {enabled: true, syncBackChanges: true, selector: {all: true}}\n";
    let cluster = VirtualCluster::start(kind, Some(config));
    let (k, host) = (&cluster.k, &cluster.host);
    common::wait_until(std::time::Duration::from_secs(60), "a virtual node", || {
        !k.ok(&["get", "nodes", "-o", "name"]).trim().is_empty()
    });
    let node = k.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let resource = r#"{"status": {"capacity": {"example.com/foo": "1"}, "allocatable": {"example.com/foo": "1"}}}"#;
    k.ok(&["patch", "node", &node, "--subresource=status", "-p", resource]);
    common::wait_until(std::time::Duration::from_secs(30), "the resource on the host node", || {
        host.ok(&["get", "node", &node, "-o", r"jsonpath={.status.allocatable.example\.com/foo}"]) == "1"
    });
    let classes = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: low}\nvalue: 1\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n";
    let created = k.output_with_stdin(&["create", "-f", "-"], classes);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let pod = |name: &str, class: &str, finalizer: bool| {
        let finalizers = if finalizer { r#""finalizers": ["example.com/hold"],"# } else { "" };
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", {finalizers} "labels": {{"app": "p"}}}},
              "spec": {{"priorityClassName": "{class}", "nodeSelector": {{"kubernetes.io/hostname": "{hostname}"}},
              "containers": [{{"name": "c", "image": "registry.k8s.io/pause:3.10",
                "resources": {{"requests": {{"example.com/foo": "1"}}, "limits": {{"example.com/foo": "1"}}}}}}]}}}}"#,
            hostname = k.ok(&["get", "node", &node, "-o", r"jsonpath={.metadata.labels.kubernetes\.io/hostname}"]),
        )
    };
    let created = k.output_with_stdin(&["create", "-f", "-"], &pod("victim", "low", true));
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    k.ok(&["wait", "--for=condition=Ready", "pod/victim", "--timeout=60s"]);
    assert_eq!(k.ok(&["get", "pod", "victim", "-o", "jsonpath={.spec.priority}"]), "1");
    let created = k.output_with_stdin(&["create", "-f", "-"], &pod("preemptor", "high", false));
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    common::wait_until(std::time::Duration::from_secs(60), "the victim terminating", || {
        !k.ok(&["get", "pod", "victim", "-o", "jsonpath={.metadata.deletionTimestamp}"]).is_empty()
    });
    let reason = k.ok(&["get", "pod", "victim", "-o", r#"jsonpath={.status.conditions[?(@.type=="DisruptionTarget")].reason}"#]);
    assert_eq!(reason, "PreemptionByScheduler");
    k.ok(&["wait", "--for=condition=Ready", "pod/preemptor", "--timeout=60s"]);
    assert_eq!(k.ok(&["get", "pod", "preemptor", "-o", "jsonpath={.spec.nodeName}"]), node);
    k.ok(&["patch", "pod", "victim", "--type=json", "-p", r#"[{"op": "remove", "path": "/metadata/finalizers"}]"#]);
    k.ok(&["wait", "--for=delete", "pod/victim", "--timeout=30s"]);
    // The tenant takes the resource back: the host node no longer has it.
    k.ok(&["patch", "node", &node, "--subresource=status", "--type=json", "-p",
        r#"[{"op": "remove", "path": "/status/capacity/example.com~1foo"}, {"op": "remove", "path": "/status/allocatable/example.com~1foo"}]"#]);
    common::wait_until(std::time::Duration::from_secs(30), "the resource gone from the host node", || {
        host.ok(&["get", "node", &node, "-o", r"jsonpath={.status.capacity.example\.com/foo}"]).is_empty()
    });
    assert!(cluster.stop().success());
}
}
