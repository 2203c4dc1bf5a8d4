#!/usr/bin/env bash
# scripts/bench_vs_trl.py on one CUDA GPU (issue 5): bf16 autocast on both sides, a random-init Qwen2-shaped
# 0.49 B model, GRPO with 8 prompts × K 8 × 256 new tokens, DPO with 8 pairs of 256 + 256 tokens, TRL beside purld.
#
#   pip install -e ".[bench]"          # purld + TRL on a machine with a CUDA build of torch
#   pip install -e ".[bench,vllm]"     # the same with vLLM: adds the rollout=vllm row (vLLM brings its own torch)
#   bash scripts/gpu_bench.sh [OUT.json]
#
# One round, 1 warm-up + 2 measured steps per row: it must fit in 5 minutes of device time, so the harness stops at
# --time-budget (270 s after its start) and records the rows it did not finish. The rows, the telling ones first:
# purld with its own decoder (rollout=static: a CUDA graph per token step, captured in the warm-up step), plain
# `generate`, purld with `rollout=vllm` (where vLLM is installed), TRL's GRPO, purld's and TRL's DPO, purld's decoder checkpointed (memory), then the hand-written
# floors and purld's default rollout (`generate`).
# Each row runs in its own process (its peak GPU memory is its own); a failed row is recorded, the rest go on.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/bench/gpu.json}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
python3 -c "import importlib.util, torch, transformers, trl, lightning; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'lightning', lightning.__version__, 'vllm', importlib.util.find_spec('vllm') is not None)"
time python3 scripts/bench_vs_trl.py --device cuda --precision bf16 --sizes qwen05b --new-tokens 256 \
  --steps 2 --warmup 1 --rounds 1 --threads 8 --retries 0 --max-outside-load 16 --keep-going \
  --time-budget 270 --out "$out"
