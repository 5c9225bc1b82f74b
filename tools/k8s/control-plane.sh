#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, from the binaries build.sh makes: etcd,
# kube-apiserver (RBAC and the default admission plugins on, its own CA, service-account issuer
# and keys), kube-controller-manager and kube-scheduler, each on a free port of 127.0.0.1.
#
#   tools/k8s/control-plane.sh start DIR            # prints "kubeconfig: DIR/admin.kubeconfig", then "ready"
#   tools/k8s/control-plane.sh start DIR --api-only # etcd and kube-apiserver only (an API oracle)
#   tools/k8s/control-plane.sh stop DIR             # stops everything started in DIR
#   VKUBE_K8S_ETCD=http://127.0.0.1:2379 tools/k8s/control-plane.sh start DIR --api-only
#                                                   # on an etcd already running (none started)
#
# No kubelet runs: `vkube host --attach DIR/admin.kubeconfig` provides simulated nodes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command="${1:-}"
dir="${2:-}"
api_only="${3:-}"
if [ -z "$command" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi

stop() {
  for component in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    pidfile="$dir/$component.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

if [ "$command" = stop ]; then
  stop
  exit 0
fi
[ "$command" = start ] || { echo "unknown command $command (start or stop)" >&2; exit 2; }

bin="$("$here/build.sh")"
mkdir -p "$dir/pki" "$dir/etcd" "$dir/logs"
dir="$(cd "$dir" && pwd)"
pki="$dir/pki"
trap 'stop' ERR

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Certificates: one CA; the API server's serving certificate; client certificates for the admin
# (system:masters), the controller manager and the scheduler; the service-account key pair.
if [ ! -f "$pki/ca.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=vkube-k8s-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  # The front proxy (aggregation) has a CA of its own, as kubeadm sets it up.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=front-proxy-ca" \
    -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" 2>/dev/null
  client() {
    local name="$1" subject="$2" ca="${3:-ca}"
    openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial \
      -days 3650 -out "$pki/$name.crt" -extfile <(printf "extendedKeyUsage=clientAuth") 2>/dev/null
  }
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3650 \
    -out "$pki/apiserver.crt" -extfile <(printf "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth") 2>/dev/null
  client admin "/O=system:masters/CN=kubernetes-admin"
  client controller-manager "/CN=system:kube-controller-manager"
  client scheduler "/CN=system:kube-scheduler"
  client apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  client front-proxy-client "/CN=front-proxy-client" front-proxy-ca
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi

etcd_client="$(free_port)"
etcd_peer="$(free_port)"
api_port="$(free_port)"

kubeconfig() {
  local name="$1" user="$2"
  cat > "$dir/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vkube-k8s
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 < "$pki/$user.crt")
    client-key-data: $(base64 -w0 < "$pki/$user.key")
contexts:
- name: vkube-k8s
  context: {cluster: vkube-k8s, user: $user}
current-context: vkube-k8s
EOF
  chmod 600 "$dir/$name.kubeconfig"
}
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler

etcd_url="${VKUBE_K8S_ETCD:-http://127.0.0.1:$etcd_client}"
if [ -z "${VKUBE_K8S_ETCD:-}" ]; then
"$bin/etcd" --name vkube-k8s --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "vkube-k8s=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn \
  > "$dir/logs/etcd.log" 2>&1 &
echo $! > "$dir/etcd.pid"
fi

"$bin/kube-apiserver" \
  --etcd-servers "$etcd_url" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/16 --service-node-port-range 30000-32767 \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --enable-admission-plugins NodeRestriction \
  --endpoint-reconciler-type lease --profiling=false \
  > "$dir/logs/kube-apiserver.log" 2>&1 &
echo $! > "$dir/kube-apiserver.pid"

for _ in $(seq 600); do
  if curl -sf --cacert "$pki/ca.crt" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null || { tail -n 30 "$dir/logs/kube-apiserver.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf --cacert "$pki/ca.crt" "https://127.0.0.1:$api_port/readyz" >/dev/null \
  || { echo "kube-apiserver did not become ready; see $dir/logs/kube-apiserver.log" >&2; exit 1; }

if [ "$api_only" != "--api-only" ]; then
"$bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*,bootstrapsigner,tokencleaner' \
  > "$dir/logs/kube-controller-manager.log" 2>&1 &
echo $! > "$dir/kube-controller-manager.pid"

"$bin/kube-scheduler" \
  --kubeconfig "$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
  --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  > "$dir/logs/kube-scheduler.log" 2>&1 &
echo $! > "$dir/kube-scheduler.pid"
fi

trap - ERR
echo "kubeconfig: $dir/admin.kubeconfig"
echo "api: https://127.0.0.1:$api_port"
echo "ready"
