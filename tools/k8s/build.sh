#!/usr/bin/env bash
# Builds upstream etcd, kube-apiserver, kube-controller-manager and kube-scheduler at the versions
# go.mod pins, from the Go module proxy, into a cache folder outside the repository, and prints
# that folder. A second run with the same pins reuses the binaries (no Go toolchain work at all).
#
#   tools/k8s/build.sh            # prints e.g. /root/.cache/vkube-k8s/v1.33.13-3f2a.../bin
#   VKUBE_K8S_CACHE=/x tools/k8s/build.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

release="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' go.mod)"
etcd_release="$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' go.mod)"
# Bump when the build flags below change: the cache key is the pins plus this recipe number.
recipe=1
pins="$( (cat go.mod go.sum cmd/*/main.go; echo "recipe=$recipe") | sha256sum | cut -c1-16)"
cache="${VKUBE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vkube-k8s}"
bin="$cache/$release-$pins/bin"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler)

complete=1
for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || complete=0; done
if [ "$complete" = 0 ]; then
  mkdir -p "$bin"
  minor="$(echo "$release" | cut -d. -f2)"
  # What `kubectl version` and /version report, as upstream's release build stamps it.
  version_flags="-X k8s.io/component-base/version.gitVersion=$release \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
    -X k8s.io/client-go/pkg/version.gitVersion=$release \
    -X k8s.io/client-go/pkg/version.gitMajor=1 \
    -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  for b in "${binaries[@]}"; do
    [ -x "$bin/$b" ] && continue
    echo "building $b ($([ "$b" = etcd ] && echo "$etcd_release" || echo "$release"))" >&2
    started=$SECONDS
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $version_flags" -o "$bin/$b.partial" "./cmd/$b"
    mv "$bin/$b.partial" "$bin/$b"
    echo "built $b in $((SECONDS - started)) s" >&2
  done
fi
echo "$bin"
