#!/usr/bin/env bash
# Creates the project's Python virtualenv under the cache with torch 2.13.0 (the libtorch tch 0.26
# links against) and the reference-script dependencies. Re-installs only when requirements change.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$KONTRAST_CACHE/venv"
REQ="$REPO_ROOT/scripts/requirements.txt"
STAMP="$VENV/.kontrast-requirements"

# Cargo finds libtorch through these links (see .cargo/config.toml).
link_libtorch() {
  ln -sfn "$VENV" "$REPO_ROOT/.venv"
  ln -sfn "$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')" "$REPO_ROOT/.libtorch"
}

# Header-only CUDA wheels for `cargo build -p kontrast-worker --features nccl`: torch's CUDA
# dependencies ship the runtime and NCCL headers but not crt/ and nv/, which the c10d NCCL headers
# include. Pinned to what cuda-toolkit 13.0.3 (torch 2.13's cu130 toolkit) lists.
HEADER_WHEELS=(nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85)
HEADER_STAMP="$VENV/.kontrast-header-wheels"
install_header_wheels() {
  [ -f "$HEADER_STAMP" ] && [ "$(cat "$HEADER_STAMP")" = "${HEADER_WHEELS[*]}" ] && return 0
  log "installing CUDA header wheels: ${HEADER_WHEELS[*]}"
  "$VENV/bin/python" -m pip install -q --progress-bar off --no-deps "${HEADER_WHEELS[@]}"
  printf '%s' "${HEADER_WHEELS[*]}" > "$HEADER_STAMP"
}

if [ -f "$STAMP" ] && cmp -s "$STAMP" "$REQ" && "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  log "python venv up to date: $VENV (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
  install_header_wheels
  link_libtorch
  exit 0
fi
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || die "python3 not found"
[ -x "$VENV/bin/python" ] || { log "creating virtualenv $VENV"; "$PY" -m venv "$VENV"; }
log "installing $(grep -cv '^#' "$REQ") Python requirements into $VENV (torch is ~5 GB with its CUDA wheels; cached after the first run)"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --progress-bar off -r "$REQ"
"$VENV/bin/python" -c 'import torch, sys; assert torch.__version__.startswith("2.13.0"), torch.__version__; print("torch", torch.__version__, file=sys.stderr)'
cp "$REQ" "$STAMP"
install_header_wheels
log "python venv ready: $VENV"

link_libtorch
