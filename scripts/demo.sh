#!/usr/bin/env bash
# The demo: a local cluster, the CRD and the operator, and a real ContrastiveRun — two worker
# pods running the `kontrast` binary (libtorch, Gloo) on real Fashion-MNIST images — followed to
# the end through its status; then everything is stopped again.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
STATE="${KONTRAST_STATE:-$REPO_ROOT/.state/demo}"
DEV="$REPO_ROOT/target/debug/kontrast-dev"
KUBECTL="$KONTRAST_CACHE/kubernetes/bin/kubectl"
export KUBECONFIG="$STATE/kubeconfig.yaml"

cleanup() { "$DEV" cluster down --state-dir "$STATE" >/dev/null 2>&1 || true; }
trap cleanup EXIT

log "starting the local cluster in $STATE"
"$DEV" cluster up --state-dir "$STATE"
"$KUBECTL" get nodes -o wide

log "installing the ContrastiveRun CRD (without CEL rules: this apiserver is 1.20)"
"$REPO_ROOT/target/debug/crdgen" --without-cel | "$KUBECTL" create -f - >/dev/null

log "starting the operator (log: $STATE/operator.log)"
"$REPO_ROOT/target/debug/kontrast-operator" --metrics-addr 127.0.0.1:0 >"$STATE/operator.log" 2>&1 &
OPERATOR=$!
stop_operator() { kill "$OPERATOR" 2>/dev/null || true; wait "$OPERATOR" 2>/dev/null || true; }
trap 'stop_operator; cleanup' EXIT

# The run's hostPath /var/lib/kontrast/fashion-mnist-demo maps under the node's state directory.
DATA="$STATE/node/volumes/host/var/lib/kontrast/fashion-mnist-demo"
log "writing 1024 training and 512 test images of Fashion-MNIST to the run's hostPath"
"$KONTRAST_CACHE/venv/bin/python" scripts/fashion-mnist-subset.py --train 1024 --test 512 --out "$DATA"

log "applying examples/local/demo.yaml: two worker pods train together over Gloo"
"$KUBECTL" apply -f examples/local/demo.yaml
phase=""
for i in $(seq 1 360); do
  phase=$("$KUBECTL" get crun demo -o jsonpath='{.status.phase}' 2>/dev/null || true)
  case "$phase" in Succeeded|Failed) break ;; esac
  if [ $((i % 10)) -eq 0 ]; then "$KUBECTL" get crun demo --no-headers 2>/dev/null || true; fi
  sleep 2
done
"$KUBECTL" get crun demo
"$KUBECTL" get pods -l kontrast.dev/run=demo -o wide 2>/dev/null || true
echo "status.progress of demo:"
"$KUBECTL" get crun demo -o jsonpath='{.status.progress}'
echo
echo "status.results of demo:"
"$KUBECTL" get crun demo -o jsonpath='{.status.results}'
echo
echo "checkpoints:"
ls -l "$STATE/node/volumes/host/var/lib/kontrast/checkpoints/"* 2>/dev/null || true
if [ "$phase" != Succeeded ]; then
  "$KUBECTL" get crun demo -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
  die "the run ended ${phase:-without finishing} (worker logs: $STATE/node/pods/, operator: $STATE/operator.log)"
fi
log "demo succeeded; stopping the operator and the cluster"
