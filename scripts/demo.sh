#!/usr/bin/env bash
# The demo: a local cluster, a worker pod running the real `kontrast` binary (libtorch) on it,
# its result read back from the pod's status, and everything stopped again.
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

log "applying examples/local/worker-info.yaml"
"$KUBECTL" apply -f examples/local/worker-info.yaml
for _ in $(seq 1 120); do
  phase=$("$KUBECTL" get pod worker-info -o jsonpath='{.status.phase}')
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 0.5
done
"$KUBECTL" get pod worker-info -o wide
echo "termination message of worker-info:"
"$KUBECTL" get pod worker-info -o jsonpath='{.status.containerStatuses[0].state.terminated.message}'
echo
[ "$phase" = Succeeded ] || die "the worker pod ended $phase (log: $STATE/node/pods/default_worker-info/logs/kontrast.log)"
log "demo succeeded; stopping the cluster"
