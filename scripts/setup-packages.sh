#!/usr/bin/env bash
# Installs the Debian packages the project needs: etcd and Prometheus for the local cluster,
# rsync and dpkg-dev for building Kubernetes from Debian's source package, cmake and nasm for the
# SIMD JPEG decoder, iproute2/util-linux for per-pod namespaces, and the real Fashion-MNIST data.
# Idempotent: only missing packages are installed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
  etcd-server prometheus prometheus-pushgateway
  rsync dpkg-dev cmake nasm
  iproute2 util-linux procps curl ca-certificates openssl
  dataset-fashion-mnist
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  log "Debian packages present"
  exit 0
fi
log "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get -q update >/dev/null
# The prometheus package would start its own service where systemd runs; the harness starts its
# own Prometheus on free ports, so policy-rc.d keeps services from starting during the install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod +x "$policy"
  created_policy=1
fi
status=0
as_root apt-get -q install -y --no-install-recommends "${missing[@]}" || status=$?
[ "$created_policy" = 1 ] && as_root rm -f "$policy"
[ "$status" = 0 ] || die "apt-get install failed"
log "Debian packages installed"
