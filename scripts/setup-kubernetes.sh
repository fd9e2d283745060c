#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubectl v1.20.2 from Debian's
# own `kubernetes` source package with Go 1.15 from Debian bullseye (Go 1.19 builds an apiserver
# that crashes on the first custom-resource write). Cached: a second run does nothing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K8S_VERSION="v1.20.2"
BIN="$KONTRAST_CACHE/kubernetes/bin"
WANT=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

have_all() {
  for b in "${WANT[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  "$BIN/kube-apiserver" --version 2>/dev/null | grep -q "Kubernetes $K8S_VERSION"
}

if have_all; then
  log "kubernetes $K8S_VERSION binaries cached in $BIN"
  exit 0
fi

command -v dpkg-source >/dev/null || die "dpkg-source missing: run scripts/setup-packages.sh first"
command -v rsync >/dev/null || die "rsync missing: run scripts/setup-packages.sh first"

work="$KONTRAST_CACHE/kubernetes/work"
rm -rf "$work" && mkdir -p "$work"
log "fetching package lists for Debian's kubernetes source and bullseye's Go 1.15 (private apt lists)"
private_apt update >"$work/apt-update.log" 2>&1 || { cat "$work/apt-update.log"; die "apt-get update (private lists) failed"; }

log "downloading Go 1.15 (golang-1.15-go, golang-1.15-src from bullseye)"
(cd "$work" && private_apt download golang-1.15-go golang-1.15-src >apt-download.log 2>&1) \
  || { cat "$work/apt-download.log"; die "downloading golang-1.15 failed"; }
mkdir -p "$work/go-root"
for deb in "$work"/golang-1.15-*.deb; do dpkg -x "$deb" "$work/go-root"; done
GOROOT="$work/go-root/usr/lib/go-1.15"
[ -x "$GOROOT/bin/go" ] || die "Go 1.15 not found after extraction at $GOROOT"
log "Go: $("$GOROOT/bin/go" version)"

log "downloading Debian's kubernetes source package (34 MB orig tarball)"
(cd "$work" && private_apt source --download-only kubernetes=1.20.5+really1.20.2-1 >apt-source.log 2>&1) \
  || (cd "$work" && private_apt source --download-only kubernetes >>apt-source.log 2>&1) \
  || { cat "$work/apt-source.log"; die "apt-get source kubernetes failed"; }
dsc=$(ls "$work"/kubernetes_*.dsc | head -n1)
(cd "$work" && dpkg-source --no-check -x "$dsc" src >dpkg-source.log 2>&1) \
  || { cat "$work/dpkg-source.log"; die "unpacking $dsc failed"; }

log "building ${WANT[*]} with Go 1.15 (about 7-9 minutes on 2 cores)"
gopath="$work/gopath"
mkdir -p "$gopath/src/k8s.io"
ln -sfn "$work/src" "$gopath/src/k8s.io/kubernetes"
(
  cd "$gopath/src/k8s.io/kubernetes"
  export GOROOT GOPATH="$gopath" PATH="$GOROOT/bin:$PATH" CGO_ENABLED=0 GO111MODULE=off
  export KUBE_GIT_VERSION="$K8S_VERSION" KUBE_GIT_TREE_STATE=clean
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubectl" >"$work/make.log" 2>&1
) || { tail -40 "$work/make.log"; die "kubernetes build failed (log: $work/make.log)"; }

mkdir -p "$BIN"
for b in "${WANT[@]}"; do
  install -m 0755 "$work/src/_output/bin/$b" "$BIN/$b"
done
have_all || die "built kube-apiserver does not report $K8S_VERSION: $("$BIN/kube-apiserver" --version)"
log "built: $("$BIN/kube-apiserver" --version)"
rm -rf "$work"
