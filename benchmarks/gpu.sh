#!/usr/bin/env bash
# GPU benchmarks on one GPU, the whole script within 10 minutes (budget per part below):
#   0. a real `raydiff sweep` on the GPU: the packaged smoke_cifar space, four CIFAR-size trials
#      (32×32×3) packed at ¼ GPU each, every one run until it memorizes; then `raydiff status`
#      (≤ 4 min: capped by `timeout`, the sweep itself about 3);
#   1-3. benchmarks/gpu.py (≤ 5 min: capped by `timeout`): training steps/s and MFU of the two
#      smaller Marion & Wu presets at B=16 and 128 (bf16; the smallest also compiled at B=16,
#      default and reduce-overhead) ~2 min; cost per evaluation, full count vs the sequential
#      test, ~1.5 min; 1/2/4/8 packed trials with memory caps ~1.5 min.
# Writes benchmarks/RESULTS-gpu.md (+ .json) and the sweep's results under $SWEEP_STORAGE.
# Extra arguments go to gpu.py (e.g. --seconds 5).
# On a machine without a GPU: `bash benchmarks/gpu.sh --cpu` runs the sweep's dry run and gpu.py's
# dry mode at toy sizes (tests/loops/test_benchmarks.py runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP_STORAGE="${SWEEP_STORAGE:-${TMPDIR:-/tmp}/raydiff-gpu-smoke}"
if [[ "${1:-}" == "--cpu" ]]; then
  python -m raydiff.cli sweep smoke_cifar --dry-run
else
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  fi
  start=$(date +%s)
  timeout 240 python -m raydiff.cli sweep smoke_cifar --storage "$SWEEP_STORAGE" --name "smoke_cifar_$(date +%Y%m%d_%H%M%S)" \
    || echo "gpu.sh: the smoke sweep did not finish within 240 s (exit $?)" >&2
  python -m raydiff.cli status "$(ls -td "$SWEEP_STORAGE"/smoke_cifar_* | head -1)" || true
  echo "gpu.sh: smoke sweep $(( $(date +%s) - start )) s"
fi
exec timeout 300 python -m benchmarks.gpu --seconds "${GPU_SECONDS:-3}" --presets marion-2.9m,marion-25.8m "$@"
