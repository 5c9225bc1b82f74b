#!/usr/bin/env bash
# Runs the Kubernetes conformance tests against a vkube virtual cluster (`vkube up`, simulated
# host), or with KUBECONFIG set against any cluster, and prints
# `conformance: N passed, M failed, K skipped`. The JUnit report and the suite's log go to
# $REPORT_DIR (default target/conformance).
#
#   tools/conformance/run.sh                    # every [Conformance] test but the skip list
#   FOCUS='sig-api-machinery' tools/conformance/run.sh
#   SUBSET=fast tools/conformance/run.sh        # the subset CI runs (tools/conformance/fast.txt)
#   KUBECONFIG=~/.kube/config tools/conformance/run.sh   # another cluster, e.g. tools/k8s's
#   PROCS=1 tools/conformance/run.sh           # one test at a time (default 6 processes)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
e2e="$("$here/build.sh")"
report="${REPORT_DIR:-$root/target/conformance}"
rm -rf "$report"; mkdir -p "$report"
vkube="${VKUBE:-$root/target/release/vkube}"

if [ -z "${KUBECONFIG:-}" ]; then
  [ -x "$vkube" ] || (cd "$root" && cargo build --release -p vkube >&2)
  state="$(mktemp -d)"
  port=$((20000 + RANDOM % 20000))
  "$vkube" up --dir "$state" --nodes 3 --config "${VCLUSTER_YAML:-$here/vcluster.yaml}" --listen "127.0.0.1:$port" --host-listen "127.0.0.1:$((port + 1))" \
    --kubelet-listen off > "$report/vkube.log" 2>&1 &
  up=$!
  trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$state"' EXIT
  for _ in $(seq 1 600); do
    [ -f "$state/vc1/vc1.kubeconfig" ] && grep -q '^ready' "$report/vkube.log" 2>/dev/null && break
    kill -0 $up 2>/dev/null || { cat "$report/vkube.log" >&2; exit 1; }
    sleep 0.1
  done
  export KUBECONFIG="$state/vc1/vc1.kubeconfig"
fi

# Skips: one regular expression per line, `#` and what follows it is the reason.
patterns() { { grep -v '^\s*#' "$1" || true; } | sed 's/\s*#.*$//' | { grep -v '^\s*$' || true; } | paste -sd'|' -; }
skip="$(patterns "$here/skip.txt")"
focus='\[Conformance\]'
if [ "${SUBSET:-}" = fast ]; then
  focus="$(patterns "$here/fast.txt")"
fi
[ -n "${FOCUS:-}" ] && focus="$focus.*(${FOCUS})|(${FOCUS}).*$focus"

started=$SECONDS
set +e
# PROCS test processes at once (ginkgo's parallel mode; [Serial] tests run alone at the end).
"$(dirname "$e2e")/ginkgo" --procs="${PROCS:-6}" --focus="$focus" ${skip:+--skip="$skip"} --no-color -v \
  --timeout="${TIMEOUT:-4h}" --junit-report=junit.xml --output-dir="$report" \
  "$e2e" -- --kubeconfig="$KUBECONFIG" --provider=skeleton --report-dir="$report" \
  --e2e-output-dir="$report" --dump-logs-on-failure=false > "$report/e2e.log" 2>&1
set -e
elapsed=$((SECONDS - started))
python3 - "$report/junit.xml" "$elapsed" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
passed = failed = skipped = 0
failures = []
suite = []
for case in root.iter("testcase"):
    name = case.get("name", "")
    if "[Conformance]" not in name:
        if case.find("failure") is not None or case.find("error") is not None:
            suite.append(name)
        continue
    if case.find("skipped") is not None:
        skipped += 1
    elif case.find("failure") is not None or case.find("error") is not None:
        failed += 1
        failures.append(name)
    else:
        passed += 1
for name in failures:
    print("FAILED:", name)
for name in suite:
    print("SUITE FAILED:", name)
print(f"conformance: {passed} passed, {failed} failed, {skipped} skipped ({sys.argv[2]} s)")
sys.exit(1 if suite else 0)
PY
