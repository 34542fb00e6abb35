#!/usr/bin/env bash
# The H100 TP4-rank session of issue 13 (brief `fidelity`, 2026-12-05): measures the TP4 rank of
# Qwen3-235B-A22B that the default large pool runs on ONE H100, so the H100 TP4 profile no longer rests on
# derive_deployments.py's TP8 -> TP4 stage rescaling (TP4_SCALE), which the H200 session found ~1.27x slow.
# Also re-measures the TP8 rank on the same machine (repeatability against run 2, and the TP4_SCALE check
# on the H100). Same flags as gpu_session.sh (H200, run 4). Run on the device machine (kind nvidia-h100-x1)
# from the repository root, as one `run` call; outputs go under $OUT and are copied into
# experiments/profiling/results/run5_h100_* . Then, locally: fit_profiles.py, derive_deployments.py,
# compare_gpus.py, and make derive_deployments.DEPLOYMENTS["tp4"] read the measured rank (drop to_h100).
# RAN 2026-12-05 12:10 UTC on nvidia-h100-x1 as one `run` call by the lead (the eighth request; the first seven,
# 09:49-10:43, got no machine: 406 s of device time): env 10 s, step 1 202 s, step 2 55 s (267 s of command time,
# ~715 s held with start-up). Outputs: results/run5_h100_*, results/run5_mixed_h100_*. README "H100 session".
# The fit (fit_profiles.py / derive_deployments.py reading the measured rank) is NOT done yet.
set -euo pipefail
FLAGS="--compile --prefill-sdpa cudnn --decode-sdpa cudnn"
MODELS=qwen3-235b-a22b-tp4-rank,qwen3-235b-a22b-tp8-rank
t0=$(date +%s)
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory --format=csv
  python3 -c "import torch, transformers, platform; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory, transformers.__version__, platform.python_version())"
  uname -r; nproc; echo "env wall_s=$(( $(date +%s) - t0 ))"; } > "$OUT/run5_h100_env.txt" 2>&1
# 1. All fit / held-out shapes of both ranks (--budget-s per model).
t1=$(date +%s)
PYTHONUNBUFFERED=1 timeout 330 python3 -W ignore experiments/profiling/profile_models.py \
  --models $MODELS $FLAGS --budget-s 150 --out "$OUT/run5" > "$OUT/run5_h100_profile_run.log" 2>&1 || echo "run5 rc=$?" >> "$OUT/run5_h100_env.txt"
echo "run5 wall_s=$(( $(date +%s) - t1 ))" >> "$OUT/run5_h100_env.txt"
# 2. Mixed prefill+decode validation shapes of the same ranks (validation only, never fitted).
t2=$(date +%s)
PYTHONUNBUFFERED=1 timeout 100 python3 -W ignore experiments/profiling/profile_models.py --shapes mixed \
  --models $MODELS $FLAGS --budget-s 40 --out "$OUT/run5_mixed" > "$OUT/run5_mixed_h100_run.log" 2>&1 || echo "run5_mixed rc=$?" >> "$OUT/run5_h100_env.txt"
echo "run5_mixed wall_s=$(( $(date +%s) - t2 ))" >> "$OUT/run5_h100_env.txt"
