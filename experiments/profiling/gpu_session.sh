#!/usr/bin/env bash
# The H200 GPU session of issue 13. Written 2026-12-04 without a GPU; steps 1-2 RAN on 2026-12-05 on
# nvidia-h200 as one `run` call (05:25 UTC; env probe 9 s, step 1 274 s, step 2 79 s; 1,081 s of device time
# spent in all, 470 s of it on the successful call, the rest on calls that got no machine). Outputs are in
# experiments/profiling/results/run4_h200_* and run4_mixed_h200_*. README "H200 session" has the results.
# Run on the device machine from the repository root; each command writes under $OUT. Afterwards, locally:
# copy the outputs into results/ under those names, then run fit_profiles.py, derive_deployments.py and
# compare_gpus.py.
# REMAINS: step 3 (4 GPUs, withheld in that session).
set -euo pipefail
FLAGS="--compile --prefill-sdpa cudnn --decode-sdpa cudnn"
MODELS=qwen3-4b,qwen3-8b,qwen3-235b-a22b-tp4-rank,qwen3-235b-a22b-tp8-rank
# 1. H200 (nvidia-h200): the small models, the TP4 rank that the default large pool runs, and the TP8 rank
#    (measured on the H100 too: GPU ratio on a 235B rank, and a check of derive_deployments.py's TP8 -> TP4
#    stage rescaling against the measured TP4 rank). --budget-s is per model; all 206 shapes fit in 120 s each.
PYTHONUNBUFFERED=1 timeout 430 python3 -W ignore experiments/profiling/profile_models.py \
  --models $MODELS $FLAGS --budget-s 120 --out "$OUT/run4" > "$OUT/run4_h200_profile_run.log" 2>&1
# 2. Mixed prefill+decode validation shapes of the same models (validation only, never fitted).
PYTHONUNBUFFERED=1 timeout 125 python3 -W ignore experiments/profiling/profile_models.py --shapes mixed \
  --models $MODELS $FLAGS --budget-s 40 --out "$OUT/run4_mixed" > "$OUT/run4_mixed_h200_run.log" 2>&1
# 3. NOT RUN: it needs nvidia-h200-x4, which was withheld in that session, and SGLang, which the image lacks
#    and cannot fetch (carry wheels). It is the end-to-end check that the TP4 profile's assumed all-reduce
#    (10 us + 360 GB/s) and FP8 factor (x1.6) stand in for: launch_server --tp 4 on the FP8 checkpoint, then
#    bench_serving at the experiments/sim_fidelity/points.json setups; compare with the simulator as
#    experiments/sim_fidelity does. An H100 TP4 rank (one GPU, profile_models.py) would also replace the
#    rescaled H100 TP4 profile, which the H200 check shows to be ~25 % slow.
