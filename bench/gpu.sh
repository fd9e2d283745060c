#!/usr/bin/env bash
# Single-GPU check and benchmark, meant to finish within about 10 minutes on a machine without
# internet access: builds the worker with NCCL (release), checks first-step losses against the
# PyTorch reference on CUDA, times MoCo v2 and Revisiting steps under bf16 autocast and
# channels-last against the reference on the same GPU, and runs the world-size-1 NCCL check.
# Results go to $OUT (if set) or bench/results/, as results.md and results.json.
#
# libtorch and torch come from the project's virtualenv (scripts/setup.sh creates it; offline
# that only works with the Python wheels already cached), found through the repository's .venv
# link or $KONTRAST_CACHE/venv. Every step has its own timeout so that one hang cannot eat the
# budget, and a failed step is recorded and the script goes on.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
RESULTS="${OUT:-$REPO/bench/results}"
mkdir -p "$RESULTS"
MD="$RESULTS/results.md"
JSON_DIR="$RESULTS/json"
mkdir -p "$JSON_DIR"

die() { printf 'gpu.sh: %s\n' "$*" >&2; exit 1; }

# The virtualenv with torch 2.13 (its libtorch is what tch links against).
VENV=""
for candidate in "$REPO/.venv" "${KONTRAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kontrast}/venv"; do
  if [ -x "$candidate/bin/python" ] && "$candidate/bin/python" -c 'import torch' 2>/dev/null; then
    VENV="$candidate"
    break
  fi
done
[ -n "$VENV" ] || die "no virtualenv with torch found (looked at .venv and \$KONTRAST_CACHE/venv).
Run scripts/setup.sh first; without internet it needs the Python wheels already in pip's cache."
PYTHON="$VENV/bin/python"
command -v cargo >/dev/null || die "cargo not found"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs a CUDA machine"

# torch-sys takes libtorch from the interpreter on PATH with LIBTORCH_USE_PYTORCH.
export PATH="$VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
export LIBTORCH_CXX11_ABI=1
# The NCCL build also needs the CUDA header wheels scripts/setup-python.sh installs; a build
# failure below says which headers are missing.

STATUS=()
record() { STATUS+=("| $1 | $2 | $3 |"); }

{
  echo "# GPU benchmark"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  echo "- torch: $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
  echo "- CPU cores: $(nproc)"
  echo
} > "$MD"

# Time limits (seconds): build 240 + 60, checks 2 × 50, benchmarks 2 × 90, collectives 45: at
# most 625 s, usually well under 10 minutes.

# 1. Release build with NCCL: the binary and the bench (the bench shares the release
# dependencies).
start=$(date +%s)
if timeout 240 cargo build --release -p kontrast-worker --features nccl --bin kontrast \
  && timeout 60 cargo bench -p kontrast-worker --features nccl --bench train_step --no-run; then
  record build ok "$(( $(date +%s) - start )) s"
else
  record build FAILED "$(( $(date +%s) - start )) s"
  {
    echo "Build failed; nothing else ran."
  } >> "$MD"
  printf '%s\n' "| step | result | time |" "|---|---|---|" "${STATUS[@]}" >> "$MD"
  exit 1
fi

BENCH=(cargo bench -p kontrast-worker --features nccl --bench train_step --)

# 2. CUDA parity: worker/tests/parity.rs runs on the CPU only, so the bench's check compares the
# first step's losses with the reference on the GPU (fp32: 1e-3 relative; bf16: 5e-2).
start=$(date +%s)
{
  echo "## First-step losses on CUDA (Rust vs reference)"
  echo
  echo '```'
} >> "$MD"
if timeout 50 "${BENCH[@]}" --device cuda --precision fp32 --layout contiguous --check-only \
  --arch resnet50 --size 64 --batch 32 --queue 1024 --small-size 32 --small-crops 2 \
  --json "$JSON_DIR/check-fp32.json" --python "$PYTHON" >> "$MD" 2>&1 \
  && timeout 50 "${BENCH[@]}" --device cuda --precision bf16 --layout channels-last --check-only \
    --arch resnet50 --size 64 --batch 32 --queue 1024 --small-size 32 --small-crops 2 \
    --json "$JSON_DIR/check-bf16.json" --python "$PYTHON" >> "$MD" 2>&1; then
  record "CUDA parity (fp32 and bf16)" ok "$(( $(date +%s) - start )) s"
else
  record "CUDA parity (fp32 and bf16)" FAILED "$(( $(date +%s) - start )) s"
fi
echo '```' >> "$MD"

# 3. Throughput, bf16 autocast + channels-last, Rust vs the reference on the same GPU.
bench_case() { # name, timeout, bench arguments...
  local name=$1 limit=$2
  shift 2
  local start
  start=$(date +%s)
  {
    echo
    echo "## $name"
    echo
    echo "\`cargo bench -p kontrast-worker --features nccl --bench train_step -- $*\`"
    echo
  } >> "$MD"
  if timeout "$limit" "${BENCH[@]}" "$@" --json "$JSON_DIR/$name.json" --python "$PYTHON" >> "$MD" 2>&1; then
    record "$name" ok "$(( $(date +%s) - start )) s"
  else
    record "$name" FAILED "$(( $(date +%s) - start )) s"
  fi
}
COMMON=(--device cuda --precision bf16 --layout channels-last --arch resnet50 --threads 8
  --warmup 3 --steps 8 --phase-steps 2 --rounds 3)
bench_case mocov2-r50-224 90 "${COMMON[@]}" --config moco --size 224 --batch 128 --queue 65536
bench_case revisiting-r50-160-96 90 "${COMMON[@]}" --config revisiting --size 160 \
  --small-size 96 --small-crops 4 --batch 128 --queue 65536

# 4. NCCL at world size 1: the collectives check on one GPU.
start=$(date +%s)
{
  echo
  echo "## kontrast collectives (NCCL, world size 1)"
  echo
  echo '```'
} >> "$MD"
if RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 \
  timeout 45 target/release/kontrast collectives --backend nccl \
  > "$JSON_DIR/collectives.json" 2>> "$MD"; then
  record "NCCL collectives, world size 1" ok "$(( $(date +%s) - start )) s"
else
  record "NCCL collectives, world size 1" FAILED "$(( $(date +%s) - start )) s"
fi
cat "$JSON_DIR/collectives.json" >> "$MD"
echo '```' >> "$MD"

{
  echo
  echo "## Steps"
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
  printf '%s\n' "${STATUS[@]}"
} >> "$MD"

# One JSON file gathering every step's JSON output.
"$PYTHON" - "$JSON_DIR" "$RESULTS/results.json" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
doc = {}
for name in sorted(os.listdir(src)):
    path = os.path.join(src, name)
    try:
        with open(path) as f:
            text = f.read()
        try:
            doc[name[:-5]] = json.loads(text)
        except json.JSONDecodeError:
            doc[name[:-5]] = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        doc[name[:-5]] = {"error": str(e)}
with open(dst, "w") as f:
    json.dump(doc, f, indent=2)
PY
echo "results: $MD and $RESULTS/results.json"
printf '%s\n' "${STATUS[@]}" | grep -q FAILED && exit 1
exit 0
