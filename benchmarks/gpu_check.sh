#!/usr/bin/env bash
# The GPU checks of issue 23 in one call, for a session lent a GPU:  bash benchmarks/gpu_check.sh
# Runs `python -m benchmarks train_bench --device cuda` (fp32 / bf16 / bf16+compile at batch 64 and
# at the largest batch that fits, peak memory, the CPU figure, bf16-vs-fp32 loss curves), cut at
# 480 s so the whole call stays under 8 minutes; the JSON is rewritten after each part, so a cut
# run still leaves what it measured. Writes $OUT (else benchmarks/results/): train-cuda.json and
# nvidia-smi.csv. Creates nothing outside the repository: torch.compile's and CUDA's caches and
# temp files go to benchmarks/results/.cache (gitignored). PYTHON picks the interpreter (default:
# .venv/bin/python when it exists, else python3).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
dest=${OUT:-$repo/benchmarks/results}
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=$repo/.venv/bin/python; else py=python3; fi
fi
if ! "$py" -c 'import numpy, torch, yaml' 2>/dev/null; then
  echo "gpu_check: $py cannot import numpy, torch and yaml: set PYTHON to an interpreter with the project's dependencies" >&2
  exit 2
fi
cache=$repo/benchmarks/results/.cache
mkdir -p "$dest" "$cache/tmp"
export TMPDIR=$cache/tmp TORCHINDUCTOR_CACHE_DIR=$cache/inductor TRITON_CACHE_DIR=$cache/triton \
  CUDA_CACHE_PATH=$cache/nv XDG_CACHE_HOME=$cache/xdg MPLCONFIGDIR=$cache/mpl
export PYTHONPATH=$repo/src:$repo${PYTHONPATH:+:$PYTHONPATH}
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$dest/nvidia-smi.csv" 2>&1 || true
fi
timeout 480 "$py" -m benchmarks train_bench --device cuda --out "$dest/train-cuda.json"
