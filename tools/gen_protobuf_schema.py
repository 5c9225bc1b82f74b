#!/usr/bin/env python3
"""Generates crates/apiserver/src/protobuf_schema.json: the field table the API server uses to decode
Kubernetes protobuf request bodies (what kubectl's typed clients send).

Field numbers and types come from the prost code of the `k8s-pb` crate; JSON field names from the
serde code of `k8s-openapi` (the proto field names are the JSON names; both crates snake-case
them, so they are matched on the lower-cased name without underscores).

Which scalar fields are pointers in Go (`*bool`, `*int32` ...: an explicit zero is meaningful and
kept; Go's encoding writes every other scalar, so their zeros mean "unset") is read from the Go
sources of k8s.io/api, apimachinery and apiextensions-apiserver in the Go module cache
($GOMODCACHE, default ~/go/pkg/mod; `go mod download` in tools/k8s fetches them).

Usage: tools/gen_protobuf_schema.py [CARGO_REGISTRY_SRC_DIR]
"""
import glob
import json
import os
import re
import sys

src_root = sys.argv[1] if len(sys.argv) > 1 else glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))[0]
pb = os.path.join(src_root, "k8s-pb-0.9.0", "src")
openapi = os.path.join(src_root, "k8s-openapi-0.29.0", "src", "v1_33")

def wanted(module):
    parts = module.split(".")
    if parts[0] == "apimachinery":
        return True
    if module == "apiextensions_apiserver.pkg.apis.apiextensions.v1":
        return True
    return parts[0] == "api" and (parts[-1] == "v1" or module == "api.autoscaling.v2")

def norm(name):
    return name.replace("r#", "").replace("_", "").lower()

# JSON names per (module, struct) from k8s-openapi's Deserialize impls.
json_names = {}
for path in glob.glob(os.path.join(openapi, "**", "*.rs"), recursive=True):
    rel = os.path.relpath(os.path.dirname(path), openapi).replace(os.sep, ".")
    text = open(path).read()
    for struct in re.findall(r"pub struct (\w+)", text):
        table = json_names.setdefault((rel, struct.lower()), {})
        for json_name, field in re.findall(r'"([A-Za-z0-9_$\-]+)" => Field::Key_(\w+)', text):
            table[norm(field)] = json_name

def camel(snake):
    snake = snake.replace("r#", "")
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)

def resolve(module, rust_type):
    rust_type = rust_type.strip().rstrip(",").strip()
    parts = rust_type.split("::")
    mod_parts = module.split(".")
    while parts and parts[0] == "super":
        parts.pop(0)
        mod_parts.pop()
    if len(parts) == 1:
        return ".".join(mod_parts + parts)
    return ".".join(mod_parts + parts)

def prost_fields(body):
    """(attribute, field name, rust type) for each prost field of a struct body."""
    pieces = re.split(r"#\[prost\(", body)[1:]
    for piece in pieces:
        attr, rest = piece.split(")]", 1)
        m = re.search(r"pub (r#\w+|\w+):\s*(.*?),\s*(?:$|///|#\[|pub )", rest, re.S)
        yield attr, m.group(1), " ".join(m.group(2).split())
# Go pointer scalars: (message, protobuf tag) of fields declared `*T` with a scalar wire type.
gomod = os.environ.get("GOMODCACHE", os.path.expanduser("~/go/pkg/mod"))
go_sources = [
    (os.path.join(gomod, "k8s.io", "api@v0.33.13"), "api"),
    (os.path.join(gomod, "k8s.io", "apimachinery@v0.33.13", "pkg", "apis", "meta", "v1"), "apimachinery.pkg.apis.meta.v1"),
    (os.path.join(gomod, "k8s.io", "apiextensions-apiserver@v0.33.13", "pkg", "apis", "apiextensions", "v1"),
     "apiextensions_apiserver.pkg.apis.apiextensions.v1"),
]
pointers = set()
for root, prefix in go_sources:
    assert os.path.isdir(root), f"{root} missing: run `go mod download` in tools/k8s"
    for path in glob.glob(os.path.join(root, "**", "types*.go"), recursive=True):
        if path.endswith("_test.go"):
            continue
        rel = os.path.relpath(os.path.dirname(path), root).replace(os.sep, ".")
        module = prefix if rel == "." else prefix + "." + rel
        text = open(path).read()
        for m in re.finditer(r"type (\w+) struct \{(.*?)\n\}", text, re.S):
            for line in m.group(2).split("\n"):
                f = re.match(r'\s*\w+\s+\*[\w.]+\s+`.*protobuf:"(varint|bytes|fixed64|fixed32),(\d+),', line)
                if f:
                    pointers.add(((module + "." + m.group(1)).lower(), int(f.group(2))))

messages = {}
kinds = {}
for path in glob.glob(os.path.join(pb, "**", "mod.rs"), recursive=True):
    module = os.path.relpath(os.path.dirname(path), pb).replace(os.sep, ".")
    if not wanted(module):
        continue
    text = open(path).read()
    for m in re.finditer(r"pub struct (\w+) \{(?:\}|(.*?)\n\})", text, re.S):
        name, body = m.group(1), m.group(2) or ""
        names = json_names.get((module, name.lower()), {})
        fields = []
        for attr, field, rust_type in prost_fields(body + "\n"):
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            repeated = 1 if "repeated" in attr else 0
            json_name = names.get(norm(field), camel(field))
            if name == "JsonSchemaProps" and norm(field) == "ref":
                json_name = "$ref"  # k8s-openapi calls the field ref_path
            mp = re.search(r'btree_map = "string, (\w+)"', attr)
            if mp:
                value = mp.group(1)
                if value == "message":
                    inner = re.search(r"BTreeMap<[^,]+,\s*(.+)>$", rust_type).group(1)
                    value = "message:" + resolve(module, inner.strip().rstrip(","))
                fields.append([tag, json_name, "map", value, 0])
                continue
            kind = attr.split(",")[0].strip()
            if kind.startswith("bytes"):
                kind = "bytes"
            ref = ""
            if kind == "message":
                inner = re.search(r"(?:Option|Vec|Box)<(?:::prost::alloc::boxed::Box<)?(.+?)>+$", rust_type).group(1)
                ref = resolve(module, inner)
            pointer = 1 if ((module + "." + name).lower(), tag) in pointers and kind not in ("message", "bytes") else 0
            fields.append([tag, json_name, kind, ref, repeated, pointer])
        messages[module + "." + name] = fields
    for m in re.finditer(r'impl crate::Resource for (\w+) \{\s*const API_VERSION: &\'static str = "([^"]+)";.*?const KIND: &\'static str = "([^"]+)";', text, re.S):
        kinds[m.group(2) + "/" + m.group(3)] = module + "." + m.group(1)

# Kinds without a Resource impl in k8s-pb that kubectl still posts as protobuf.
for api_version_kind, message in {
    "authentication.k8s.io/v1/TokenRequest": "api.authentication.v1.TokenRequest",
    "policy/v1/Eviction": "api.policy.v1.Eviction",
    "autoscaling/v1/Scale": "api.autoscaling.v1.Scale",
    "meta.k8s.io/v1/DeleteOptions": "apimachinery.pkg.apis.meta.v1.DeleteOptions",
}.items():
    assert message in messages, message
    kinds[api_version_kind] = message

missing = sorted({f[3].split(":")[-1] for fs in messages.values() for f in fs
                  if (f[2] == "message" or f[3].startswith("message:")) and f[3].split("message:")[-1] not in messages})
assert not missing, missing

out = os.path.join(os.path.dirname(__file__), "..", "crates", "apiserver", "src", "protobuf_schema.json")
with open(out, "w") as f:
    json.dump({"source": "generated by tools/gen_protobuf_schema.py from k8s-pb 0.9.0 and k8s-openapi 0.29.0 (v1_33)",
               "kinds": dict(sorted(kinds.items())), "messages": dict(sorted(messages.items()))}, f, separators=(",", ":"))
print(f"{len(messages)} messages, {len(kinds)} kinds -> {os.path.normpath(out)} ({os.path.getsize(out)} bytes)")
