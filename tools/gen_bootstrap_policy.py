#!/usr/bin/env python3
"""Generates crates/apiserver/src/bootstrap_policy.json: the RBAC objects kube-apiserver creates at
start (its bootstrap policy: default ClusterRoles, ClusterRoleBindings, and the Roles and
RoleBindings of kube-system and kube-public), read from a running upstream API server.

Usage: tools/gen_bootstrap_policy.py [KUBECONFIG]
Without KUBECONFIG it starts tools/k8s/control-plane.sh --api-only in a temporary folder.
"""
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
out_path = os.path.join(here, "..", "crates", "apiserver", "src", "bootstrap_policy.json")


def dump(kubeconfig):
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    version = json.loads(subprocess.check_output(["kubectl", "get", "--raw", "/version"], env=env))
    objects = []
    for kind in ["clusterroles", "clusterrolebindings", "roles", "rolebindings"]:
        listed = json.loads(subprocess.check_output(["kubectl", "get", kind, "-A", "-o", "json"], env=env))
        for item in listed["items"]:
            annotations = item["metadata"].get("annotations", {})
            # Only what the bootstrap policy made (it marks its objects autoupdate).
            if "rbac.authorization.kubernetes.io/autoupdate" not in annotations:
                continue
            meta = {k: v for k, v in item["metadata"].items() if k in ("name", "namespace", "labels", "annotations")}
            item["metadata"] = meta
            objects.append(item)
    objects.sort(key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    return {"source": f"kube-apiserver {version['gitVersion']} bootstrap policy, via tools/gen_bootstrap_policy.py", "objects": objects}


def main():
    if len(sys.argv) > 1:
        policy = dump(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as directory:
            script = os.path.join(here, "k8s", "control-plane.sh")
            subprocess.check_call([script, "start", directory, "--api-only"], stdout=subprocess.DEVNULL)
            try:
                policy = dump(os.path.join(directory, "admin.kubeconfig"))
            finally:
                subprocess.call([script, "stop", directory])
    with open(out_path, "w") as out:
        json.dump(policy, out, indent=1, sort_keys=True)
        out.write("\n")
    print(f"{len(policy['objects'])} objects written to {os.path.relpath(out_path)}")


main()
