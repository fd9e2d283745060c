#!/usr/bin/env bash
# The demo, the way a cluster user meets Kontrast: a local Kubernetes cluster; the Helm chart
# installed with helm (CRD, RBAC, the operator Deployment running under the chart's
# ServiceAccount); Prometheus scraping the operator and the worker pods through the cluster's HTTP
# service discovery, relabelled as the chart's ServiceMonitor and PodMonitor do; then
# examples/local/demo.yaml — two worker pods running the real `kontrast` binary (libtorch, Gloo) on
# real Fashion-MNIST images, a checkpoint per epoch, a kNN and a linear-SVM evaluation — followed
# to the end, with a summary of the results, the checkpoints, the dashboards and Prometheus.
# Everything started here is stopped on exit (also on Ctrl-C or an error).
#
# Environment: KONTRAST_STATE (state directory, default .state/demo), KONTRAST_DEMO_WAIT
# (1: keep the cluster and Prometheus up until Enter is pressed; default: 1 on a terminal).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
export LC_ALL=C  # printf's %f reads the status's decimal points
STATE="${KONTRAST_STATE:-$REPO_ROOT/.state/demo}"
DEV="$REPO_ROOT/target/debug/kontrast-dev"
KUBECTL="$KONTRAST_CACHE/kubernetes/bin/kubectl"
HELM="$KONTRAST_CACHE/tools/bin/helm"
PYTHON="$KONTRAST_CACHE/venv/bin/python"
RUN=demo
NS=default
RELEASE_NS=kontrast-system
TRAIN_IMAGES=8192
TEST_IMAGES=1024
export KUBECONFIG="$STATE/kubeconfig.yaml"
# helm keeps its configuration and caches with the demo, not in the user's home.
export HELM_CONFIG_HOME="$STATE/helm/config" HELM_CACHE_HOME="$STATE/helm/cache" HELM_DATA_HOME="$STATE/helm/data"

for tool in "$DEV" "$REPO_ROOT/target/debug/kontrast-node" "$REPO_ROOT/target/debug/kontrast-operator" "$REPO_ROOT/target/debug/kontrast"; do
  [ -x "$tool" ] || die "$tool is missing: run \`make demo\` (or cargo build --workspace --bins)"
done
for tool in "$KUBECTL" "$HELM" "$PYTHON"; do
  [ -x "$tool" ] || die "$tool is missing: run scripts/setup.sh (or make setup)"
done

phase_started=$(date +%s)
demo_started=$phase_started
# Prints how long the phase that just ended took.
phase_done() {
  local now
  now=$(date +%s)
  log "$1 ($((now - phase_started)) s)"
  phase_started=$now
}

cleanup() {
  log "stopping the cluster (operator, pods, Prometheus and the control plane)"
  "$DEV" cluster down --state-dir "$STATE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "starting the local cluster in $STATE (Prometheus scrapes every second, like the chart's monitors)"
"$DEV" cluster up --state-dir "$STATE" --scrape-interval 1s --chart-monitors
PROMETHEUS=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["prometheus"])' "$STATE/cluster.json")
"$KUBECTL" get nodes -o wide
phase_done "cluster up"

# The operator pod shares the node's (the host's) network and binds 0.0.0.0: a free port for it.
PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])')
log "helm install kontrast charts/kontrast into $RELEASE_NS (operator metrics on port $PORT)"
"$HELM" install kontrast charts/kontrast --namespace "$RELEASE_NS" --create-namespace \
  --wait --timeout 120s \
  --set "metrics.port=$PORT" \
  --set-json "podAnnotations={\"prometheus.io/scrape\":\"true\",\"prometheus.io/port\":\"$PORT\"}" \
  >"$STATE/helm-install.txt" || die "helm install failed (see $STATE/helm-install.txt)"
"$KUBECTL" -n "$RELEASE_NS" get deploy,pods -o wide
sa=$("$KUBECTL" -n "$RELEASE_NS" get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].spec.serviceAccountName}')
holder=$("$KUBECTL" -n "$RELEASE_NS" get lease kontrast -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
log "the operator runs as ServiceAccount $RELEASE_NS/$sa${holder:+ and holds Lease kontrast ($holder)}"
phase_done "chart installed"

# The run's hostPath /var/lib/kontrast/fashion-mnist-demo maps under the node's state directory.
DATA="$STATE/node/volumes/host/var/lib/kontrast/fashion-mnist-demo"
log "writing $TRAIN_IMAGES training and $TEST_IMAGES test images of Fashion-MNIST to the run's hostPath"
"$PYTHON" scripts/fashion-mnist-subset.py --train "$TRAIN_IMAGES" --test "$TEST_IMAGES" --out "$DATA"

log "applying examples/local/demo.yaml: two worker pods train together over Gloo, then kNN and linear-SVM evaluations"
"$KUBECTL" apply -n "$NS" -f examples/local/demo.yaml
phase=""
last=""
deadline=$(($(date +%s) + 30 * 60))
while [ "$(date +%s)" -lt "$deadline" ]; do
  line=$("$KUBECTL" get crun "$RUN" -n "$NS" -o jsonpath='{.status.phase}|{.status.progress.epoch}|{.status.progress.step}|{.status.progress.totalSteps}|{.status.progress.loss}|{.status.progress.imagesPerSecond}|{.status.progress.knnMonitor.top1}|{range .status.evaluations[*]}{.name}={.phase} {end}' 2>/dev/null || true)
  IFS='|' read -r phase epoch step total loss ips knn evals <<<"$line"
  if [ -n "$line" ] && [ "$line" != "$last" ]; then
    case "$phase" in
      Training|Restarting)
        if [ -z "$total" ]; then
          printf '  %-10s pods starting\n' "$phase"
        else
          monitor=""
          [ -n "$knn" ] && monitor=$(printf '  kNN monitor top-1 %.1f %%' "$knn")
          printf '  %-10s epochs done %s  step %s/%s  loss %.3f  %.0f images/s%s\n' \
            "$phase" "${epoch:-0}" "$step" "$total" "${loss:-0}" "${ips:-0}" "$monitor"
        fi ;;
      Evaluating) printf '  %-10s %s\n' "$phase" "${evals:-Jobs starting}" ;;
      *) printf '  %s\n' "${phase:-Pending}" ;;
    esac
    last=$line
  fi
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 2
done
phase_done "run finished: ${phase:-no phase}"

"$KUBECTL" get crun "$RUN" -n "$NS"
if [ "$phase" != Succeeded ]; then
  "$KUBECTL" get crun "$RUN" -n "$NS" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'
  die "the run ended ${phase:-without finishing} (pod logs: $STATE/node/pods/, operator: kubectl -n $RELEASE_NS logs deploy/kontrast)"
fi

# Prometheus: the operator exports the results; wait until a scrape has seen them.
query() { curl -fsS --get "$PROMETHEUS/api/v1/query" --data-urlencode "query=$1"; }
for _ in $(seq 1 30); do
  n=$(query "count(kontrast_run_evaluation_result{run=\"$RUN\"})" | "$PYTHON" -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' || echo 0)
  [ "$n" -ge 2 ] && break
  sleep 1
done

echo
log "summary ($(( $(date +%s) - demo_started )) s in all)"
"$KUBECTL" get crun "$RUN" -n "$NS" -o json >"$STATE/run.json"
"$PYTHON" - "$STATE/run.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["status"]
p = s.get("progress", {})
print("  training: {} epochs, {} steps, final loss {:.3f}, {:.0f} images/s, {} restarts".format(
    p.get("epoch"), p.get("step"), p.get("loss", float("nan")), p.get("imagesPerSecond", 0),
    s.get("restarts", 0)))
m = p.get("knnMonitor")
if m:
    print("  kNN monitor after epoch {}: top-1 {:.2f} %, top-5 {:.2f} %".format(m["epoch"], m["top1"], m["top5"]))
print()
print("  {:<12} {:<8} {:>8}   {}".format("evaluation", "metric", "value", "job"))
jobs = {e["name"]: e.get("job", "") for e in s.get("evaluations", [])}
for name, metrics in sorted(s.get("results", {}).items()):
    for metric, value in sorted(metrics.items()):
        print("  {:<12} {:<8} {:>8.2f}   {}".format(name, metric, value, jobs.get(name, "")))
print()
c = s.get("lastCheckpoint", {})
print("  last checkpoint: epoch {}, {} (path inside the pods)".format(c.get("epoch"), c.get("path")))
PY
echo "  checkpoints on the node: $STATE/node/volumes/host/var/lib/kontrast/checkpoints/$RUN/"
ls "$STATE/node/volumes/host/var/lib/kontrast/checkpoints/$RUN/" 2>/dev/null | sed 's/^/    /' || true
cat <<EOF

  Prometheus: $PROMETHEUS  (targets: $PROMETHEUS/targets)
  Example queries (the first two were answered just now):
EOF
for q in "kontrast_run_evaluation_result{run=\"$RUN\"}" \
         "max_over_time(kontrast_train_images_per_second{run=\"$RUN\"}[30m])"; do
  echo "    $q"
  query "$q" | "$PYTHON" -c 'import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    m = r["metric"]
    keys = ("evaluation", "metric") if "evaluation" in m else ("pod",)
    labels = ", ".join(k + "=" + m[k] for k in keys if k in m)
    print("      {}: {:.2f}".format(labels or m.get("run", ""), float(r["value"][1])))'
done
cat <<EOF
  and two to graph over the run's minutes in Prometheus's Graph tab (the workers' series exist only
  while they train):
    histogram_quantile(0.95, sum by (le) (rate(kontrast_train_step_seconds_bucket{run="$RUN"}[1m])))
    max by (phase) (kontrast_run_phase{run="$RUN"}) == 1

  Dashboards: $REPO_ROOT/charts/kontrast/dashboards/training.json and evaluation.json.
  In Grafana: Dashboards → New → Import → upload the JSON file, pick a Prometheus data source
  (here: $PROMETHEUS), then choose namespace "$NS" and run "$RUN". On a cluster, the chart ships
  them as ConfigMaps for Grafana's dashboard sidecar: helm install ... --set monitoring.dashboards.enabled=true
  (docs/deploy.md).
EOF

wait_default=0
[ -t 0 ] && wait_default=1
if [ "${KONTRAST_DEMO_WAIT:-$wait_default}" = 1 ]; then
  echo
  read -r -p "The cluster and Prometheus stay up (export KUBECONFIG=$KUBECONFIG); press Enter to stop everything. " _ || true
fi
log "demo succeeded"
