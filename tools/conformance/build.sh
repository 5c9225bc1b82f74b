#!/usr/bin/env bash
# Builds the upstream end-to-end suite (`e2e.test`, the conformance tests' binary) at the release
# tools/k8s pins, from the Go module proxy, into a cache folder outside the repository, and prints
# the binary's path. A second run with the same pins reuses it.
#
#   tools/conformance/build.sh        # prints e.g. /root/.cache/vkube-k8s/e2e-v1.33.13-.../e2e.test
#                                     # (the ginkgo CLI is built beside it)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
release="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit } $1 == "require" && $2 == "k8s.io/kubernetes" { print $3; exit }' go.mod)"
recipe=1
pins="$( (cat go.mod go.sum e2e_test.go; echo "recipe=$recipe") | sha256sum | cut -c1-16)"
cache="${VKUBE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vkube-k8s}"
out="$cache/e2e-$release-$pins"
if [ ! -x "$out/e2e.test" ]; then
  mkdir -p "$out"
  echo "building e2e.test ($release)" >&2
  started=$SECONDS
  CGO_ENABLED=0 go test -c -trimpath -ldflags "-s -w" -o "$out/e2e.test.partial" .
  mv "$out/e2e.test.partial" "$out/e2e.test"
  echo "built e2e.test in $((SECONDS - started)) s" >&2
fi
# The ginkgo CLI (same version as the suite's library) runs the suite on several processes.
if [ ! -x "$out/ginkgo" ]; then
  CGO_ENABLED=0 go build -trimpath -o "$out/ginkgo.partial" github.com/onsi/ginkgo/v2/ginkgo
  mv "$out/ginkgo.partial" "$out/ginkgo"
fi
echo "$out/e2e.test"
