#!/usr/bin/env bash
# One real pair at its real shape on one GPU: random weights built from the shipped configs (no download),
# vLLM supervision, a few training steps, vLLM evaluation; prints per-phase wall time, tokens/s, MFU and peak
# memory, then the whole device's peak memory sampled by nvidia-smi (a vLLM engine runs in its own process,
# which torch's allocator statistics in the main process do not see).
#   bench/gpu_dry_run.sh [PAIR] [more options of bench/gpu_dry_run.py]      (default pair: deepseek)
# Needs the project's dependencies importable, and vLLM unless BACKEND=transformers (bench/README.md says how on
# a machine with no registry access). Writes under $OUT if set, else /tmp/gpu-dry-run; caches under $HARNESS_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
pair=${1:-deepseek}
shift || true
out=${OUT:-/tmp/gpu-dry-run}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HARNESS_CACHE=${HARNESS_CACHE:-/tmp/kd-dry-run-cache}
backend=${BACKEND:-vllm}
python3 -c "import torch; assert torch.cuda.is_available(), 'no GPU visible to torch'"
if [[ $backend == vllm ]]; then python3 -c "import vllm"; fi
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$out/gpu_memory_mib.csv" &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT
start=$(date +%s)
timeout 570 python3 -m bench.gpu_dry_run --pair "$pair" --scale 1 --backend "$backend" "$@" 2>&1 | tee "$out/gpu_dry_run.log"
kill "$sampler" 2>/dev/null || true
awk '$1 > peak {peak = $1} END {printf "device peak memory (nvidia-smi, all processes): %.1f GiB\n", peak / 1024}' \
  "$out/gpu_memory_mib.csv"
echo "wall: $(($(date +%s) - start)) s"
