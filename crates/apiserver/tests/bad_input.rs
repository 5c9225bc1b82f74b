// Bad input gets the right Status and leaves nothing behind.

mod common;

use common::TestServer;
use serde_json::Value;

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn assert_status(reply: &common::reqwest_like::Reply, code: u16, reason: &str) -> Value {
    let status = reply.json();
    assert_eq!(reply.status, code, "{status}");
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["code"], code);
    assert_eq!(status["reason"], reason, "{status}");
    assert!(reply.content_type.starts_with("application/json"));
    status
}

#[tokio::test]
async fn each_bad_request_gets_its_status_and_stores_nothing() {
    let server = TestServer::start().await;
    let http = server.http();
    let json = "application/json";

    let reply = http.send("POST", CM, json, "{\"metadata\": {\"name\": ").await;
    let status = assert_status(&reply, 400, "BadRequest");
    assert!(status["message"].as_str().unwrap().contains("error decoding JSON"));

    let reply = http.send("POST", CM, "application/yaml", "metadata: [unclosed").await;
    assert_status(&reply, 400, "BadRequest");

    let reply = http.send("POST", CM, json, r#"{"metadata": {"name": "Bad_Name", "labels": {"ok": "-nope-"}}}"#).await;
    let status = assert_status(&reply, 422, "Invalid");
    assert_eq!(status["details"]["kind"], "ConfigMap");
    let fields: Vec<&str> =
        status["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["metadata.name", "metadata.labels.ok"]);
    assert!(status["message"].as_str().unwrap().starts_with("ConfigMap \"Bad_Name\" is invalid: ["));

    let reply = http.send("POST", CM, json, r#"{"metadata": {}}"#).await;
    let status = assert_status(&reply, 422, "Invalid");
    assert_eq!(status["details"]["causes"][0]["message"], "Required value: name or generateName is required");

    let big = format!(r#"{{"metadata": {{"name": "big"}}, "data": {{"x": "{}"}}}}"#, "a".repeat(3 * 1024 * 1024 + 10));
    let reply = http.send("POST", CM, json, &big).await;
    assert_status(&reply, 413, "RequestEntityTooLarge");

    let reply =
        http.send("POST", CM, json, r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}"#).await;
    assert_status(&reply, 400, "BadRequest");
    let reply = http.send("POST", CM, json, r#"{"metadata": {"name": "x", "namespace": "other"}}"#).await;
    let status = assert_status(&reply, 400, "BadRequest");
    assert_eq!(
        status["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    let reply = http.send("POST", CM, json, r#"{"metadata": {"name": "x", "resourceVersion": "5"}}"#).await;
    assert_status(&reply, 400, "BadRequest");
    let reply = http.send("POST", CM, json, "[1, 2]").await;
    assert_status(&reply, 400, "BadRequest");
    let reply = http.send("POST", CM, "application/vnd.kubernetes.protobuf", "k8s\0garbage").await;
    assert_status(&reply, 400, "BadRequest");

    // Under a group kube-apiserver serves: a Status; anywhere else, its mux's plain-text 404.
    for path in ["/api/v1/namespaces/default/widgets", "/api/v2/pods"] {
        let reply = http.get(path).await;
        let status = assert_status(&reply, 404, "NotFound");
        assert_eq!(status["message"], "the server could not find the requested resource", "{path}");
        assert_eq!(status["details"], serde_json::json!({}), "{path}");
    }
    for path in ["/apis/nope.example.com/v1/things", "/apis/nope.example.com", "/random"] {
        let reply = http.get(path).await;
        assert_eq!(
            (reply.status, String::from_utf8_lossy(&reply.body).as_ref()),
            (404, "404 page not found\n"),
            "{path}"
        );
    }
    let reply = http.get("/api/v1/namespaces/default/configmaps/missing").await;
    let status = assert_status(&reply, 404, "NotFound");
    assert_eq!(status["message"], "configmaps \"missing\" not found");
    assert_eq!(status["details"]["name"], "missing");
    let reply = http.send("PUT", CM, json, "{}").await;
    assert_status(&reply, 405, "MethodNotAllowed");

    let reply = http.get("/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20b").await;
    assert_status(&reply, 400, "BadRequest");
    let reply = http.get("/api/v1/namespaces/default/configmaps?fieldSelector=spec.nodeName%3Dx").await;
    let status = assert_status(&reply, 400, "BadRequest");
    assert_eq!(
        status["message"],
        "\"spec.nodeName\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    );
    let reply = http.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dx").await;
    assert_eq!(reply.status, 200, "pods support spec.nodeName");

    // A valid object, then stale and mismatched updates against it.
    let reply = http.send("POST", CM, json, r#"{"metadata": {"name": "good"}, "data": {"a": "1"}}"#).await;
    assert_eq!(reply.status, 201);
    let rv = reply.json()["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let ok = http
        .send(
            "PUT",
            &format!("{CM}/good"),
            json,
            &format!(r#"{{"metadata": {{"name": "good", "resourceVersion": "{rv}"}}, "data": {{"a": "2"}}}}"#),
        )
        .await;
    assert_eq!(ok.status, 200);
    let stale = http
        .send(
            "PUT",
            &format!("{CM}/good"),
            json,
            &format!(r#"{{"metadata": {{"name": "good", "resourceVersion": "{rv}"}}, "data": {{"a": "3"}}}}"#),
        )
        .await;
    let status = assert_status(&stale, 409, "Conflict");
    assert!(status["message"].as_str().unwrap().contains("the object has been modified"));
    let renamed = http.send("PUT", &format!("{CM}/good"), json, r#"{"metadata": {"name": "other"}}"#).await;
    assert_status(&renamed, 400, "BadRequest");
    let patch = http.send("PATCH", &format!("{CM}/good"), "text/plain", "x").await;
    assert_status(&patch, 415, "UnsupportedMediaType");
    let patch = http
        .send(
            "PATCH",
            &format!("{CM}/good"),
            "application/json-patch+json",
            r#"[{"op": "remove", "path": "/data/missing"}]"#,
        )
        .await;
    assert_status(&patch, 422, "Invalid");
    let apply = http.send("PATCH", &format!("{CM}/good"), "application/apply-patch+yaml", "data: {a: x}").await;
    let status = assert_status(&apply, 422, "Invalid");
    assert!(status["message"].as_str().unwrap().contains("fieldManager: Required value"));
    let delete = http.send("DELETE", &format!("{CM}/good"), json, r#"{"preconditions": {"uid": "not-the-uid"}}"#).await;
    assert_status(&delete, 409, "Conflict");

    // Without credentials a request is system:anonymous, which (as on kube-apiserver) may read
    // only the public health and version paths; a bad token is refused outright.
    let unauthenticated = http.request("GET", CM, &[], Vec::new(), false).await;
    let status = assert_status(&unauthenticated, 403, "Forbidden");
    assert_eq!(
        status["message"],
        "configmaps is forbidden: User \"system:anonymous\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(status["details"], serde_json::json!({"kind": "configmaps"}));
    let discovery = http.request("GET", "/api", &[], Vec::new(), false).await;
    let status = assert_status(&discovery, 403, "Forbidden");
    assert_eq!(status["message"], "forbidden: User \"system:anonymous\" cannot get path \"/api\"");
    assert_eq!(status["details"], serde_json::json!({}));
    assert_eq!(http.request("GET", "/version", &[], Vec::new(), false).await.status, 200, "the version is public");
    let wrong_token = http.request("GET", CM, &[("authorization", "Bearer wrong")], Vec::new(), false).await;
    assert_status(&wrong_token, 401, "Unauthorized");
    assert_eq!(http.request("GET", "/readyz", &[], Vec::new(), false).await.status, 200, "health is public");

    // Nothing but the valid object was stored, and it holds the last accepted write.
    let list = http.get(CM).await.json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["data"]["a"], "2");
}

#[tokio::test]
async fn fields_given_twice_are_refused_in_strict_mode_and_the_last_wins_otherwise() {
    let server = TestServer::start().await;
    let http = server.http();
    let deployment = r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dup"},
        "spec": {"unknownField": "foo", "replicas": 2, "replicas": 3, "selector": {"matchLabels": {"app": "x"}},
        "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}"#;
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let reply = http.send("POST", &format!("{path}?fieldValidation=Strict"), "application/json", deployment).await;
    let status = assert_status(&reply, 400, "BadRequest");
    assert_eq!(
        status["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
         unknown field \"spec.unknownField\", duplicate field \"spec.replicas\""
    );
    assert_eq!(http.send("GET", &format!("{path}/dup"), "application/json", "").await.status, 404);
    // Without Strict the last value wins.
    let reply = http.send("POST", path, "application/json", deployment).await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["spec"]["replicas"], 3);

    // A YAML apply names the line of the repeated key.
    let apply =
        "\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup-yaml\ndata:\n  a: one\n  foo: foo1\n  foo: foo2\n";
    let cm = "/api/v1/namespaces/default/configmaps/dup-yaml?fieldManager=test";
    let reply =
        http.send("PATCH", &format!("{cm}&fieldValidation=Strict"), "application/apply-patch+yaml", apply).await;
    let status = assert_status(&reply, 400, "BadRequest");
    assert!(
        status["message"].as_str().unwrap().contains(r#"line 9: key "foo" already set in map"#),
        "{}",
        status["message"]
    );
    let reply = http.send("PATCH", cm, "application/apply-patch+yaml", apply).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["data"]["foo"], "foo2");
}

#[tokio::test]
async fn an_apply_patch_with_fields_the_schema_lacks_is_refused_as_upstream_does() {
    let server = TestServer::start().await;
    let http = server.http();
    let apply = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d1\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata:\n      labels: {a: b}\n      unknownSubMeta: x\n    spec:\n      containers: [{name: c, image: nginx, bogus: 1}]\n";
    let path = "/apis/apps/v1/namespaces/default/deployments/d1?fieldManager=m";
    let reply = http.send("PATCH", path, "application/apply-patch+yaml", apply).await;
    let status = reply.json();
    assert_eq!(reply.status, 500, "{status}");
    assert_eq!(
        status["message"],
        "failed to create typed patch object (/d1; apps/v1, Kind=Deployment): errors:\n  \
         .spec.template.metadata.unknownSubMeta: field not declared in schema\n  \
         .spec.template.spec.containers[name=\"c\"].bogus: field not declared in schema"
    );
    assert_eq!(
        http.send("GET", "/apis/apps/v1/namespaces/default/deployments/d1", "application/json", "").await.status,
        404
    );
}

#[tokio::test]
async fn reviews_cannot_be_answered_as_tables() {
    let server = TestServer::start().await;
    let http = server.http();
    let review = r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}}"#;
    let headers = [("content-type", "application/json"), ("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")];
    let reply = http
        .request(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &headers,
            review.as_bytes().to_vec(),
            true,
        )
        .await;
    let status = assert_status(&reply, 406, "NotAcceptable");
    assert_eq!(
        status["message"],
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    );
}

#[tokio::test]
async fn an_expired_continue_token_offers_an_inconsistent_continuation() {
    let server = TestServer::start_with(|c| c.compaction_interval = std::time::Duration::from_millis(300)).await;
    let http = server.http();
    let templates = "/api/v1/namespaces/default/podtemplates";
    for i in 0..6 {
        let body = format!(
            r#"{{"metadata": {{"name": "template-{i:04}"}}, "template": {{"spec": {{"containers": [{{"name": "c", "image": "i"}}]}}}}}}"#
        );
        assert_eq!(http.send("POST", templates, "application/json", &body).await.status, 201);
    }
    let first = http.get(&format!("{templates}?limit=2")).await.json();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // Writes after the first page, then two compaction ticks: the token's revision is gone.
    http.send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata": {"name": "later"}}"#,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let expired = http.get(&format!("{templates}?limit=2&continue={token}")).await;
    let status = assert_status(&expired, 410, "Expired");
    let inconsistent = status["metadata"]["continue"].as_str().expect("an inconsistent continue token").to_string();
    let second = http.get(&format!("{templates}?limit=2&continue={inconsistent}")).await.json();
    let names: Vec<&str> =
        second["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["template-0002", "template-0003"]);
    assert_ne!(second["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"]);
    assert_eq!(second["metadata"]["remainingItemCount"], 2);
}

#[tokio::test]
async fn unknown_metadata_fields_of_custom_resources_are_found_at_the_root_and_in_embedded_objects() {
    let server = TestServer::start().await;
    let http = server.http();
    let crd = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "noxus.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "noxus", "singular": "noxu", "kind": "Noxu"},
        "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {
                    "metadata": {"type": "object", "properties": {"name": {"type": "string"}}}, "spec": {"type": "object"}}}}}}}}}]}}"#;
    assert_eq!(
        http.send("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", crd)
            .await
            .status,
        201
    );
    let path = "/apis/example.com/v1/noxus";
    let mut ready = false;
    for _ in 0..50 {
        if http.get(path).await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "the CRD is served");
    let body = r#"{"apiVersion": "example.com/v1", "kind": "Noxu", "metadata": {"name": "n1", "unknownMeta": "x"},
        "spec": {"anything": 1, "template": {"apiVersion": "v1", "kind": "Sub", "metadata": {"name": "s", "unknownSubMeta": "y"}}}}"#;
    let reply = http.send("POST", &format!("{path}?fieldValidation=Strict"), "application/json", body).await;
    let status = assert_status(&reply, 400, "BadRequest");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains(r#"unknown field "metadata.unknownMeta""#), "{message}");
    assert!(message.contains(r#"unknown field "spec.template.metadata.unknownSubMeta""#), "{message}");
    assert!(!message.contains("anything"), "kept by x-kubernetes-preserve-unknown-fields: {message}");
    let apply = "apiVersion: example.com/v1\nkind: Noxu\nmetadata:\n  name: n2\nspec:\n  template:\n    apiVersion: v1\n    kind: Sub\n    metadata:\n      unknownSubMeta: y\n";
    let reply = http.send("PATCH", &format!("{path}/n2?fieldManager=m"), "application/apply-patch+yaml", apply).await;
    assert_eq!(reply.status, 500);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .ends_with(".spec.template.metadata.unknownSubMeta: field not declared in schema"),
        "{}",
        reply.json()
    );
}

/// Secret `data` and ConfigMap `binaryData` are `[]byte` in Go: values that are not base64 (or
/// not strings) are refused at decoding, in kube-apiserver 1.33's words, and nothing is stored.
#[tokio::test]
async fn byte_fields_that_are_not_base64_are_refused_as_upstream_refuses_them() {
    let server = TestServer::start().await;
    let http = server.http();
    let json = "application/json";
    let secrets = "/api/v1/namespaces/default/secrets";
    let joined = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=".repeat(2);
    for (data, problem) in [
        (format!(r#"{{"a": "{joined}"}}"#), "illegal base64 data at input byte 36"),
        (r#"{"a": "YQ"}"#.to_string(), "illegal base64 data at input byte 0"),
        (r#"{"a": 5}"#.to_string(), "json: cannot unmarshal number into Go struct field Secret.data of type []uint8"),
    ] {
        let body = format!(r#"{{"metadata": {{"name": "s"}}, "data": {data}}}"#);
        let status = assert_status(&http.send("POST", secrets, json, &body).await, 400, "BadRequest");
        assert_eq!(
            status["message"],
            format!("Secret in version \"v1\" cannot be handled as a Secret: {problem}"),
            "{data}"
        );
    }
    assert_eq!(http.send("GET", &format!("{secrets}/s"), json, "").await.status, 404, "nothing stored");
    let created = http.send("POST", secrets, json, r#"{"metadata": {"name": "s"}, "data": {"a": "YWJj\nZA=="}}"#).await;
    assert_eq!(created.status, 201, "newlines inside base64 are skipped, as Go does");
    assert_eq!(
        http.send("POST", CM, json, r#"{"metadata": {"name": "c"}, "binaryData": {"b": "YWJj"}}"#).await.status,
        201
    );
    let replaced =
        http.send("PUT", &format!("{CM}/c"), json, r#"{"metadata": {"name": "c"}, "binaryData": {"b": "YWJ"}}"#).await;
    let status = assert_status(&replaced, 400, "BadRequest");
    assert_eq!(
        status["message"],
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: illegal base64 data at input byte 0"
    );
    assert_eq!(http.send("GET", &format!("{CM}/c"), json, "").await.json()["binaryData"]["b"], "YWJj", "unchanged");
}

/// A Deployment / Pod / Service body with `spec` merged in (JSON text, fields in this order).
fn deployment(spec: &str) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "d"}}, "spec": {{"selector": {{"matchLabels": {{"a": "b"}}}}, "template": {{"metadata": {{"labels": {{"a": "b"}}}}, "spec": {{"containers": [{{"name": "c", "image": "i"}}]}}}}{spec}}}}}"#
    )
}

fn pod(container: &str, spec: &str, meta: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p"{meta}}}, "spec": {{"containers": [{{"name": "c", "image": "i"{container}}}]{spec}}}}}"#
    )
}

// Each expected message is kube-apiserver 1.33.13's answer to the same body
// (`tools/k8s/control-plane.sh start DIR --api-only`, `kubectl create --raw PATH -f -`).
#[tokio::test]
async fn values_of_the_wrong_type_are_refused_as_go_decodes_them() {
    let server = TestServer::start().await;
    let http = server.http();
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let pods = "/api/v1/namespaces/default/pods";
    let services = "/api/v1/namespaces/default/services";
    let service = |port: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "s"}}, "spec": {{"ports": [{port}]}}}}"#
        )
    };
    let quantity = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
    let cases = [
        (
            deployments,
            deployment(r#", "replicas": "three""#),
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            deployments,
            deployment(r#", "replicas": 3.5"#),
            "json: cannot unmarshal number 3.5 into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            deployments,
            deployment(r#", "replicas": 3.0"#),
            "json: cannot unmarshal number 3.0 into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            deployments,
            deployment(r#", "replicas": 99999999999"#),
            "json: cannot unmarshal number 99999999999 into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            deployments,
            deployment(r#", "replicas": true"#),
            "json: cannot unmarshal bool into Go struct field DeploymentSpec.spec.replicas of type int32",
        ),
        (
            deployments,
            deployment(r#", "paused": "yes""#),
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.paused of type bool",
        ),
        (
            deployments,
            r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": []}"#.to_string(),
            "json: cannot unmarshal array into Go struct field Deployment.spec of type v1.DeploymentSpec",
        ),
        (
            pods,
            pod(r#", "ports": [{"containerPort": "80"}]"#, "", ""),
            "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32",
        ),
        (
            pods,
            pod(r#", "ports": [{"containerPort": 80, "protocol": 6}]"#, "", ""),
            "json: cannot unmarshal number into Go struct field ContainerPort.spec.containers.ports.protocol of type v1.Protocol",
        ),
        (
            pods,
            pod(r#", "args": [1]"#, "", ""),
            "json: cannot unmarshal number into Go struct field Container.spec.containers.args of type string",
        ),
        (
            pods,
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": {}}}"#.to_string(),
            "json: cannot unmarshal object into Go struct field PodSpec.spec.containers of type []v1.Container",
        ),
        (
            pods,
            pod("", "", r#", "labels": {"a": 1}"#),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string",
        ),
        (
            pods,
            pod("", "", r#", "labels": []"#),
            "json: cannot unmarshal array into Go struct field ObjectMeta.metadata.labels of type map[string]string",
        ),
        (pods, pod(r#", "resources": {"limits": {"cpu": true}}"#, "", ""), quantity),
        (pods, pod(r#", "resources": {"limits": {"cpu": "lots"}}"#, "", ""), quantity),
        (pods, pod(r#", "resources": {"limits": {"cpu": {}}}"#, "", ""), quantity),
        (
            services,
            service(r#"{"port": 80, "targetPort": true}"#),
            "json: cannot unmarshal bool into Go struct field ServicePort.spec.ports.targetPort of type int32",
        ),
        (
            services,
            service(r#"{"port": 80, "targetPort": 8.5}"#),
            "json: cannot unmarshal number 8.5 into Go struct field ServicePort.spec.ports.targetPort of type int32",
        ),
        (
            services,
            service(r#"{"port": 80, "targetPort": {}}"#),
            "json: cannot unmarshal object into Go struct field ServicePort.spec.ports.targetPort of type int32",
        ),
        (
            pods,
            pod("", "", r#", "creationTimestamp": 5"#),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.creationTimestamp of type string",
        ),
        (
            pods,
            pod("", "", r#", "creationTimestamp": "yesterday""#),
            r#"parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006""#,
        ),
        (
            pods,
            pod("", r#", "terminationGracePeriodSeconds": true"#, ""),
            "json: cannot unmarshal bool into Go struct field PodSpec.spec.terminationGracePeriodSeconds of type int64",
        ),
        // Two bad values: Go reports the first in the body, not the first in sorted order.
        (
            pods,
            pod(r#", "ports": [{"containerPort": "80"}]"#, r#", "activeDeadlineSeconds": "x""#, ""),
            "json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.ports.containerPort of type int32",
        ),
        (
            CM,
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1}}"#.to_string(),
            "json: cannot unmarshal number into Go struct field ConfigMap.data of type string",
        ),
        (
            CM,
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": "x"}"#.to_string(),
            "json: cannot unmarshal string into Go struct field ConfigMap.metadata of type v1.ObjectMeta",
        ),
        (
            CM,
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}}"#.to_string(),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.name of type string",
        ),
    ];
    for (path, body, problem) in &cases {
        let reply = http.send("POST", path, "application/json", body).await;
        let status = assert_status(&reply, 400, "BadRequest");
        let kind = body.split(r#""kind": ""#).nth(1).and_then(|rest| rest.split('"').next()).unwrap();
        assert_eq!(
            status["message"],
            format!("{kind} in version \"v1\" cannot be handled as a {kind}: {problem}"),
            "{body}"
        );
    }
    for path in [deployments, pods, services, CM] {
        assert_eq!(
            http.send("GET", path, "application/json", "").await.json()["items"],
            serde_json::json!([]),
            "nothing stored"
        );
    }
    // null leaves the zero value, as in Go: accepted.
    assert_eq!(
        http.send("POST", deployments, "application/json", &deployment(r#", "replicas": null"#)).await.status,
        201
    );
    // A patch that makes a value the wrong type: upstream's 422 naming the patched object.
    let patched = http
        .send(
            "PATCH",
            &format!("{deployments}/d"),
            "application/merge-patch+json",
            r#"{"spec": {"replicas": "three"}}"#,
        )
        .await;
    let status = assert_status(&patched, 422, "Invalid");
    let message = status["message"].as_str().unwrap();
    assert!(message.starts_with(r#" "" is invalid: patch: Invalid value: "{"#), "{message}");
    assert!(
        message.ends_with(
            r#": json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"#
        ),
        "{message}"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "patch");
    // A strategic merge patch's result is converted from its map: other words, the patch quoted.
    for (patch, problem) in [
        (r#"{"spec":{"replicas":"three"}}"#, r#""map[spec:map[replicas:three]]": unrecognized type: int32"#),
        (r#"{"spec":{"paused":"yes"}}"#, r#""map[spec:map[paused:yes]]": unrecognized type: bool"#),
        (
            r#"{"metadata":{"labels":{"a":1}}}"#,
            r#""map[metadata:map[labels:map[a:1]]]": cannot convert int64 to string"#,
        ),
        (r#"{"spec":{"replicas":3.5}}"#, r#""map[spec:map[replicas:3.5]]": cannot convert float64 to int32"#),
        (
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","ports":[{"containerPort":"80"}]}]}}}}"#,
            r#""map[spec:map[template:map[spec:map[containers:[map[name:c ports:[map[containerPort:80]]]]]]]]": unrecognized type: int32"#,
        ),
        (r#"{"spec":{"strategy":"x"}}"#, r#""map[spec:map[strategy:x]]": cannot restore struct from: string"#),
    ] {
        let reply =
            http.send("PATCH", &format!("{deployments}/d"), "application/strategic-merge-patch+json", patch).await;
        let status = assert_status(&reply, 422, "Invalid");
        assert_eq!(status["message"], format!(r#" "" is invalid: patch: Invalid value: {problem}"#), "{patch}");
    }
    let stored = http.send("GET", &format!("{deployments}/d"), "application/json", "").await.json();
    assert_eq!(stored["spec"]["replicas"], 1, "the patches changed nothing");
}
