"""The official Python `kubernetes` client against vkube: list, create, strategic patch, watch."""
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()

# list
names = [ns.metadata.name for ns in core.list_namespace().items]
assert "kube-system" in names, names

# create without apiVersion/kind in the body (the client omits them)
cm = core.create_namespaced_config_map("default", {"metadata": {"name": "pycm", "labels": {"app": "py"}}, "data": {"k": "v"}})
assert cm.metadata.uid and cm.api_version == "v1" and cm.kind == "ConfigMap", cm

# strategic merge patch (what patch_* sends for a dict body)
patched = core.patch_namespaced_config_map("pycm", "default", {"data": {"extra": "1"}})
assert patched.data == {"k": "v", "extra": "1"}, patched.data

# typed objects with defaulted fields decode (the client validates required fields)
deployment = apps.create_namespaced_deployment("default", {
    "metadata": {"name": "pyweb"},
    "spec": {"selector": {"matchLabels": {"app": "pyweb"}},
             "template": {"metadata": {"labels": {"app": "pyweb"}},
                          "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
assert deployment.spec.strategy.type == "RollingUpdate", deployment.spec.strategy
patched = apps.patch_namespaced_deployment("pyweb", "default",
    {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.28"}]}}}})
assert [c.image for c in patched.spec.template.spec.containers] == ["nginx:1.28"]

# errors
try:
    core.read_namespaced_config_map("missing", "default")
    raise AssertionError("expected 404")
except ApiException as e:
    assert e.status == 404, e

# watch with timeoutSeconds: the initial ADDED events, then the stream ends by itself
w = watch.Watch()
seen = []
for event in w.stream(core.list_namespaced_config_map, "default", label_selector="app=py", timeout_seconds=2):
    seen.append((event["type"], event["object"].metadata.name))
assert seen == [("ADDED", "pycm")], seen

# delete
core.delete_namespaced_config_map("pycm", "default")
print("python client ok")
