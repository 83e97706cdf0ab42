#!/usr/bin/env bash
# GPU benchmarks on one GPU (a few minutes on an H200): training steps/s and MFU of the Marion & Wu
# presets at B=16 and 128 (bf16; the smallest also with train.compile default / reduce-overhead),
# cost per evaluation with the full count and the sequential test, 1/2/4/8 packed trials with
# memory caps.
# Writes benchmarks/RESULTS-gpu.md (+ .json). Extra arguments go to gpu.py (e.g. --seconds 5).
# On a machine without a GPU: `bash benchmarks/gpu.sh --cpu` runs the same code at toy sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec python -m benchmarks.gpu "$@"
