//! The semantic rules (sync-behavior.md 11.3 and 7.1), run on the typed config after the schema
//! pass. Every rule adds problems; none stops the others.

use crate::{AutoSwitch, ClassSelector, Config, Problem, Translate, paths, tolerations};

pub(crate) fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |path: String, message: String| problems.push(Problem::new(path, message));
    vkube_settings(config, &mut add);
    control_plane(config, &mut add);
    pods(config, &mut add);
    cross_rules(config, &mut add);
    custom_resources(config, &mut add);
    data_from_host(config, &mut add);
    replicated_services(config, &mut add);
    class_selectors(config, &mut add);
    for (path, list, custom) in translate_lists(config) {
        translate(&path, list, custom, &mut add);
    }
    problems
}

type Add<'a> = dyn FnMut(String, String) + 'a;

use crate::mappings::dns_label;

fn vkube_settings(config: &Config, add: &mut Add<'_>) {
    let name = &config.vkube.name;
    if !name.is_empty() && (!dns_label(name) || name.len() > 52) {
        add(
            "vkube.name".into(),
            format!(
                "{name:?} is not a valid virtual cluster name (lower-case letters, digits and '-', at most 52 characters)"
            ),
        );
    }
    let namespace = &config.vkube.host_namespace;
    if !namespace.is_empty() && !dns_label(namespace) {
        add(
            "vkube.hostNamespace".into(),
            format!(
                "{namespace:?} is not a valid namespace name (lower-case letters, digits and '-', at most 63 characters)"
            ),
        );
    }
}

fn control_plane(config: &Config, add: &mut Add<'_>) {
    let store = &config.control_plane.backing_store;
    let embedded = store.database.embedded.enabled;
    let etcd = store.etcd.external.enabled;
    if embedded && etcd {
        add(
            "controlPlane.backingStore".into(),
            "both the embedded database and an external etcd are enabled; set controlPlane.backingStore.database.embedded.enabled to false to use etcd".into(),
        );
    }
    if !embedded && !etcd {
        add(
            "controlPlane.backingStore".into(),
            "no store is enabled; enable controlPlane.backingStore.database.embedded or controlPlane.backingStore.etcd.external".into(),
        );
    }
    let external = &store.etcd.external;
    if etcd && external.all_endpoints().is_empty() {
        add(
            "controlPlane.backingStore.etcd.external.endpoints".into(),
            "at least one endpoint is required, e.g. http://127.0.0.1:2379".into(),
        );
    }
    let tls = &external.tls;
    if tls.cert_file.is_empty() != tls.key_file.is_empty() {
        add(
            "controlPlane.backingStore.etcd.external.tls".into(),
            "certFile and keyFile go together: set both for a client certificate, or neither".into(),
        );
    }
    if !external.endpoint.is_empty() {
        for endpoint in external.endpoint.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let host = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.contains('/') && !h.ends_with('/')) {
                add(
                    "controlPlane.backingStore.etcd.external.endpoint".into(),
                    format!("{endpoint:?} is not an etcd client URL (expected http://HOST:PORT or https://HOST:PORT)"),
                );
            }
        }
    }
    for (i, endpoint) in store.etcd.external.endpoints.iter().enumerate() {
        let host = endpoint.strip_prefix("http://").or_else(|| endpoint.strip_prefix("https://"));
        if host.is_none_or(|h| h.is_empty() || h.contains('/') && !h.ends_with('/')) {
            add(
                format!("controlPlane.backingStore.etcd.external.endpoints[{i}]"),
                format!("{endpoint:?} is not an etcd client URL (expected http://HOST:PORT or https://HOST:PORT)"),
            );
        }
    }
    let ha = &config.control_plane.stateful_set.high_availability;
    let path = "controlPlane.statefulSet.highAvailability";
    if ha.replicas == 0 {
        add(format!("{path}.replicas"), "must be at least 1".into());
    }
    if ha.replicas > 1 && !etcd {
        add(
            format!("{path}.replicas"),
            format!(
                "{} replicas need a store they share; enable controlPlane.backingStore.etcd.external (the embedded database belongs to one process)",
                ha.replicas
            ),
        );
    }
    // client-go's rules: the leader must give up before a standby may take over, and retry
    // (with up to 20% jitter) more often than it must renew.
    if ha.retry_period == 0 {
        add(format!("{path}.retryPeriod"), "must be at least 1 second".into());
    } else if ha.renew_deadline as f64 <= ha.retry_period as f64 * 1.2 {
        add(
            format!("{path}.renewDeadline"),
            format!(
                "{} s must be longer than 1.2 x retryPeriod ({} s), or the leader cannot retry before it gives up",
                ha.renew_deadline, ha.retry_period
            ),
        );
    }
    if ha.lease_duration <= ha.renew_deadline {
        add(
            format!("{path}.leaseDuration"),
            format!(
                "{} s must be longer than renewDeadline ({} s), or a standby could take over while the leader still syncs",
                ha.lease_duration, ha.renew_deadline
            ),
        );
    }
    let standard = &config.policies.pod_security_standard;
    if !["", "privileged", "baseline", "restricted"].contains(&standard.as_str()) {
        // The reference's own words (its flag is `enforce-pod-security-standard`).
        add(
            "policies.podSecurityStandard".into(),
            format!(
                "invalid argument enforce-pod-security-standard={standard}, must be one of: privileged, baseline, restricted"
            ),
        );
    }
    let advanced = &config.control_plane.advanced;
    if advanced.virtual_scheduler.enabled && !config.sync.from_host.nodes.enabled {
        add(
            "controlPlane.advanced.virtualScheduler.enabled".into(),
            "a virtual scheduler places pods on the host nodes the virtual cluster shows; it needs sync.fromHost.nodes.enabled: true".into(),
        );
    }
    let account = &advanced.workload_service_account.name;
    if !account.is_empty() && (account.len() > 253 || !account.split('.').all(dns_label)) {
        add(
            "controlPlane.advanced.workloadServiceAccount.name".into(),
            format!("{account:?} is not a valid service account name (lower-case letters, digits, '-' and '.')"),
        );
    }
    let registry = &advanced.default_image_registry;
    if registry.contains("://") || registry.ends_with('/') || registry.contains(char::is_whitespace) {
        add(
            "controlPlane.advanced.defaultImageRegistry".into(),
            format!("{registry:?} is not a registry host (e.g. registry.example.com or registry.example.com:5000)"),
        );
    }
    let proxy = &config.control_plane.proxy;
    if proxy.bind_address.parse::<std::net::IpAddr>().is_err() {
        add(
            "controlPlane.proxy.bindAddress".into(),
            format!("{:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)", proxy.bind_address),
        );
    }
    for (i, san) in proxy.extra_sans.iter().enumerate() {
        let dns = !san.is_empty() && san.split('.').all(|l| dns_label(l) || l == "*");
        if san.parse::<std::net::IpAddr>().is_err() && !dns {
            add(
                format!("controlPlane.proxy.extraSANs[{i}]"),
                format!("{san:?} is neither an IP address nor a DNS name"),
            );
        }
    }
}

fn is_quantity(text: &str) -> bool {
    let number_end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    let number_ok = !digits.is_empty() && digits != "." && digits.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u"
    ) || (suffix.starts_with(['e', 'E'])
        && suffix[1..].trim_start_matches(['+', '-']).parse::<u32>().is_ok());
    number_ok && suffix_ok
}

fn pods(config: &Config, add: &mut Add<'_>) {
    let pods = &config.sync.to_host.pods;
    for (i, spec) in pods.enforce_tolerations.iter().enumerate() {
        if let Err(message) = tolerations::parse(spec) {
            add(format!("sync.toHost.pods.enforceTolerations[{i}]"), message);
        }
    }
    for (from, to) in &pods.translate_image {
        if from.is_empty() || to.is_empty() {
            add(
                format!("sync.toHost.pods.translateImage[{from:?}]"),
                "image names may not be empty (map the exact virtual image string to its host image)".into(),
            );
        }
    }
    let init = &pods.rewrite_hosts.init_container;
    if pods.rewrite_hosts.enabled && init.image.trim().is_empty() {
        add(
            "sync.toHost.pods.rewriteHosts.initContainer.image".into(),
            "an image is required while rewriteHosts is enabled".into(),
        );
    }
    for (kind, map) in [("limits", &init.resources.limits), ("requests", &init.resources.requests)] {
        for (resource, quantity) in map {
            let quantity = &quantity.0;
            if !is_quantity(quantity) {
                add(
                    format!("sync.toHost.pods.rewriteHosts.initContainer.resources.{kind}.{resource}"),
                    format!("{quantity:?} is not a quantity (e.g. 30m, 0.5, 64Mi, 1G)"),
                );
            }
        }
    }
}

fn cross_rules(config: &Config, add: &mut Add<'_>) {
    let (to, from) = (&config.sync.to_host, &config.sync.from_host);
    if to.priority_classes.enabled && from.priority_classes.enabled {
        add(
            "sync.fromHost.priorityClasses.enabled".into(),
            "cannot sync priorityclasses to and from host at the same time; disable sync.toHost.priorityClasses or sync.fromHost.priorityClasses".into(),
        );
    }
    if from.storage_classes.enabled == AutoSwitch::True && to.storage_classes.enabled {
        add(
            "sync.fromHost.storageClasses.enabled".into(),
            "you cannot enable both sync.fromHost.storageClasses.enabled and sync.toHost.storageClasses.enabled at the same time. Choose only one of them".into(),
        );
    }
    let nodes = &from.nodes;
    if !nodes.enabled {
        let fix =
            "has no effect while sync.fromHost.nodes.enabled is false (fake nodes); enable real node sync or remove it";
        if nodes.selector.all || !nodes.selector.labels.is_empty() {
            add("sync.fromHost.nodes.selector".into(), format!("a node selector {fix}"));
        }
        if nodes.sync_back_changes {
            add("sync.fromHost.nodes.syncBackChanges".into(), format!("syncBackChanges {fix}"));
        }
        if nodes.clear_image_status {
            add("sync.fromHost.nodes.clearImageStatus".into(), format!("clearImageStatus {fix}"));
        }
    }
    if nodes.selector.all && !nodes.selector.labels.is_empty() {
        add("sync.fromHost.nodes.selector".into(), "set either all: true or labels, not both".into());
    }
    for (key, value) in &nodes.selector.labels {
        if !tolerations::valid_key(key) || !tolerations::valid_value(value) {
            add(format!("sync.fromHost.nodes.selector.labels[{key:?}]"), format!("{key}={value} is not a valid label"));
        }
    }
}

/// Checks `<plural>.<group>[/<version>]`.
fn resource_key(key: &str) -> Result<(), String> {
    let (resource, version) = match key.split_once('/') {
        Some((resource, version)) => (resource, Some(version)),
        None => (key, None),
    };
    let Some((plural, group)) = resource.split_once('.') else {
        return Err(format!(
            "{key:?} must be <plural>.<group>[/<version>], e.g. widgets.example.com or certificates.cert-manager.io/v1"
        ));
    };
    if !dns_label(plural) || group.split('.').any(|l| !dns_label(l)) {
        return Err(format!("{key:?} must be <plural>.<group>[/<version>] in lower case, e.g. widgets.example.com"));
    }
    if let Some(version) = version {
        let ok =
            version.starts_with('v') && version[1..].starts_with(|c: char| c.is_ascii_digit()) && dns_label(version);
        if !ok {
            return Err(format!("{version:?} in {key:?} is not an API version such as v1 or v1beta1"));
        }
    }
    Ok(())
}

fn custom_resources(config: &Config, add: &mut Add<'_>) {
    for (key, entry) in &config.sync.to_host.custom_resources {
        let path = format!("sync.toHost.customResources[{key:?}]");
        if let Err(message) = resource_key(key) {
            add(path.clone(), message);
        }
        if !entry.scope.is_empty() && entry.scope != "Namespaced" {
            add(
                format!("{path}.scope"),
                format!("unsupported scope {} for {path}.scope. Only 'Namespaced' is allowed", entry.scope),
            );
        }
    }
    for (key, entry) in &config.sync.from_host.custom_resources {
        let path = format!("sync.fromHost.customResources[{key:?}]");
        if let Err(message) = resource_key(key) {
            add(path.clone(), message);
        }
        match entry.scope.as_str() {
            "" | "Cluster" if !entry.mappings.is_empty() => add(
                format!("{path}.mappings"),
                format!("mappings are only supported for {path} with scope 'Namespaced'"),
            ),
            "" | "Cluster" => {}
            "Namespaced" if entry.mappings.is_empty() => add(
                format!("{path}.mappings"),
                format!(
                    "mappings are required for {path} with scope 'Namespaced' (which host objects appear where: byName: {{\"my-namespace/*\": \"default/*\"}})"
                ),
            ),
            "Namespaced" => mappings(&format!("{path}.mappings"), &entry.mappings, add),
            other => add(
                format!("{path}.scope"),
                format!("unsupported scope {other} for {path}.scope. Only 'Cluster' and 'Namespaced' are allowed"),
            ),
        }
    }
    for key in config.sync.to_host.custom_resources.keys() {
        if config.sync.from_host.custom_resources.contains_key(key) {
            add(
                format!("sync.fromHost.customResources[{key:?}]"),
                format!("{key} is synced both to and from the host; choose one direction"),
            );
        }
    }
}

/// `sync.fromHost.configMaps|secrets` and namespaced custom resources: `mappings.byName` (§11.3).
fn mappings(path: &str, mappings: &crate::Mappings, add: &mut Add<'_>) {
    if let Err(problems) = crate::mappings::ByName::parse(path, &mappings.by_name) {
        for problem in problems {
            add(path.to_string(), problem);
        }
    }
}

fn data_from_host(config: &Config, add: &mut Add<'_>) {
    let from = &config.sync.from_host;
    for (kind, entry) in [("configMaps", &from.config_maps), ("secrets", &from.secrets)] {
        if entry.enabled {
            mappings(&format!("sync.fromHost.{kind}.mappings"), &entry.mappings, add);
        }
    }
}

/// `networking.replicateServices` (§12.4): host services come in as `ns/name` (from: `name` or
/// `ns/name`), virtual services go out under a plain name (from: `ns/name`).
fn replicated_services(config: &Config, add: &mut Add<'_>) {
    let replicate = &config.networking.replicate_services;
    let name_ok = |name: &str| crate::mappings::dns_label(name);
    let qualified = |value: &str| value.split_once('/').is_some_and(|(ns, n)| name_ok(ns) && name_ok(n));
    let mut seen = std::collections::BTreeSet::new();
    for (i, mapping) in replicate.from_host.iter().enumerate() {
        let from_ok = qualified(&mapping.from) || name_ok(&mapping.from);
        if !from_ok || !qualified(&mapping.to) {
            add(
                format!("networking.replicateServices.fromHost[{i}]"),
                format!(
                    "invalid service mapping {:?} → {:?}, please use from: namespace1/service1 (or service1 in the host namespace), to: namespace2/service2",
                    mapping.from, mapping.to
                ),
            );
        } else if !seen.insert(mapping.to.clone()) {
            add(
                format!("networking.replicateServices.fromHost[{i}].to"),
                format!("{:?} is the target of two mappings", mapping.to),
            );
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, mapping) in replicate.to_host.iter().enumerate() {
        if !qualified(&mapping.from) || !name_ok(&mapping.to) {
            add(
                format!("networking.replicateServices.toHost[{i}]"),
                format!(
                    "invalid service mapping {:?} → {:?}, please use from: namespace1/service1, to: service2 (a service of the host namespace)",
                    mapping.from, mapping.to
                ),
            );
        } else if !seen.insert(mapping.to.clone()) {
            add(
                format!("networking.replicateServices.toHost[{i}].to"),
                format!("{:?} is the target of two mappings", mapping.to),
            );
        }
    }
}

/// The label selectors of classes from the host: operators as Kubernetes has them.
fn class_selectors(config: &Config, add: &mut Add<'_>) {
    let from = &config.sync.from_host;
    let selectors: [(&str, &ClassSelector); 4] = [
        ("ingressClasses", &from.ingress_classes.selector),
        ("runtimeClasses", &from.runtime_classes.selector),
        ("priorityClasses", &from.priority_classes.selector),
        ("storageClasses", &from.storage_classes.selector),
    ];
    for (key, selector) in selectors {
        for (i, requirement) in selector.match_expressions.iter().enumerate() {
            let path = format!("sync.fromHost.{key}.selector.matchExpressions[{i}]");
            if requirement.key.is_empty() {
                add(format!("{path}.key"), "a key is required".into());
            }
            match requirement.operator.as_str() {
                "In" | "NotIn" if requirement.values.is_empty() => add(
                    format!("{path}.values"),
                    format!("values must be non-empty when operator is {}", requirement.operator),
                ),
                "Exists" | "DoesNotExist" if !requirement.values.is_empty() => add(
                    format!("{path}.values"),
                    format!("values must be empty when operator is {}", requirement.operator),
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => add(
                    format!("{path}.operator"),
                    format!("{other:?} is not a valid label selector operator: use In, NotIn, Exists or DoesNotExist"),
                ),
            }
        }
    }
}

fn translate_lists(config: &Config) -> Vec<(String, &[Translate], bool)> {
    let to = &config.sync.to_host;
    let mut lists: Vec<(String, &[Translate], bool)> = vec![
        ("sync.toHost.pods.translate".into(), &to.pods.translate, false),
        ("sync.toHost.secrets.translate".into(), &to.secrets.translate, false),
        ("sync.toHost.configMaps.translate".into(), &to.config_maps.translate, false),
        ("sync.toHost.ingresses.translate".into(), &to.ingresses.translate, false),
        ("sync.toHost.services.translate".into(), &to.services.translate, false),
        ("sync.toHost.endpoints.translate".into(), &to.endpoints.translate, false),
        ("sync.toHost.endpointSlices.translate".into(), &to.endpoint_slices.translate, false),
        ("sync.toHost.networkPolicies.translate".into(), &to.network_policies.translate, false),
        ("sync.toHost.persistentVolumeClaims.translate".into(), &to.persistent_volume_claims.translate, false),
        ("sync.toHost.persistentVolumes.translate".into(), &to.persistent_volumes.translate, false),
        ("sync.toHost.volumeSnapshots.translate".into(), &to.volume_snapshots.translate, false),
        ("sync.toHost.storageClasses.translate".into(), &to.storage_classes.translate, false),
        ("sync.toHost.serviceAccounts.translate".into(), &to.service_accounts.translate, false),
        ("sync.toHost.podDisruptionBudgets.translate".into(), &to.pod_disruption_budgets.translate, false),
        ("sync.toHost.priorityClasses.translate".into(), &to.priority_classes.translate, false),
    ];
    for (key, entry) in &to.custom_resources {
        lists.push((format!("sync.toHost.customResources[{key:?}].translate"), &entry.translate, true));
    }
    for (key, entry) in &config.sync.from_host.custom_resources {
        lists.push((format!("sync.fromHost.customResources[{key:?}].translate"), &entry.translate, true));
    }
    lists
}

fn translate(list_path: &str, list: &[Translate], custom: bool, add: &mut Add<'_>) {
    let mut seen = std::collections::HashMap::new();
    for (i, entry) in list.iter().enumerate() {
        let here = format!("{list_path}[{i}]");
        if let Some(first) = seen.insert(entry.path.clone(), i) {
            add(
                format!("{here}.path"),
                format!(
                    "{list_path}[{first}] and {list_path}[{i}] have the same path {:?}; merge them into one entry",
                    entry.path
                ),
            );
        }
        if let Err(message) = paths::parse(&entry.path) {
            add(format!("{here}.path"), format!("{:?} is not a valid path: {message}", entry.path));
        }
        if matches!(entry.path.as_str(), "metadata.name" | "metadata.namespace") {
            add(
                format!("{here}.path"),
                format!("{} cannot be translated: vkube owns host names and namespaces", entry.path),
            );
        }
        let expression_mode = entry.expression.is_some() || entry.reverse_expression.is_some();
        let modes =
            usize::from(expression_mode) + usize::from(entry.reference.is_some()) + usize::from(entry.labels.is_some());
        if modes > 1 {
            add(here.clone(), "can only use one of: expression, labels or reference".into());
        } else if modes == 0 {
            add(here.clone(), "need to use one of: expression (and/or reverseExpression), labels or reference".into());
        }
        for (field, source) in [("expression", &entry.expression), ("reverseExpression", &entry.reverse_expression)] {
            if let Some(source) = source
                && let Err(message) = crate::js::check_expression(source)
            {
                add(format!("{here}.{field}"), format!("the JavaScript does not compile: {message}"));
            }
        }
        if let Some(reference) = &entry.reference {
            if reference.api_version.is_empty() {
                add(format!("{here}.reference.apiVersion"), "required (e.g. v1)".into());
            }
            if reference.kind.is_empty() {
                add(format!("{here}.reference.kind"), "required (e.g. Secret)".into());
            }
            let relative = [&reference.namespace_path, &reference.kind_path, &reference.api_version_path];
            if reference.name_path.is_empty() && relative.iter().any(|p| !p.is_empty()) {
                add(
                    format!("{here}.reference.namePath"),
                    "required when namespacePath, kindPath or apiVersionPath is set".into(),
                );
            }
            for (field, value) in [
                ("namePath", &reference.name_path),
                ("namespacePath", &reference.namespace_path),
                ("kindPath", &reference.kind_path),
                ("apiVersionPath", &reference.api_version_path),
            ] {
                if !value.is_empty()
                    && let Err(message) = paths::parse(value)
                {
                    add(format!("{here}.reference.{field}"), format!("{value:?} is not a valid path: {message}"));
                }
            }
        }
        if entry.labels.is_some() && !custom {
            add(format!("{here}.labels"), "labels translation is only available for custom resources".into());
        }
    }
}
