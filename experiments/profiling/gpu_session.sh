#!/usr/bin/env bash
# The H200 GPU session of issue 13 (written 2026-12-04 without a GPU; run 2026-12-05 on nvidia-h200, see
# README "H200 session"). Run on the device machine from the repository root (`run` tool); each command
# writes under $OUT. Afterwards, locally: copy the outputs into experiments/profiling/results/ as
# run4_h200_* and run4_mixed_h200_*, then `fit_profiles.py` writes the *__h200 profiles.
set -euo pipefail
FLAGS="--compile --prefill-sdpa cudnn --decode-sdpa cudnn"
# 1. H200 (nvidia-h200): the small models, the TP4 rank that the default large pool runs, and the TP8 rank
#    (measured on the H100 too: GPU ratio on a 235B rank, and a check of derive_deployments.py's TP8 -> TP4
#    stage rescaling against the measured TP4 rank). --budget-s is per model.
PYTHONUNBUFFERED=1 timeout 580 python3 -W ignore experiments/profiling/profile_models.py \
  --models qwen3-4b,qwen3-8b,qwen3-235b-a22b-tp4-rank,qwen3-235b-a22b-tp8-rank $FLAGS --budget-s 150 \
  --out "$OUT/run4" 2>&1 | tee "$OUT/run4_h200_profile_run.log"
# 2. Mixed prefill+decode validation shapes of the same models (validation only, never fitted).
PYTHONUNBUFFERED=1 timeout 300 python3 -W ignore experiments/profiling/profile_models.py --shapes mixed \
  --models qwen3-4b,qwen3-8b,qwen3-235b-a22b-tp4-rank,qwen3-235b-a22b-tp8-rank $FLAGS --budget-s 60 \
  --out "$OUT/run4_mixed" 2>&1 | tee "$OUT/run4_mixed_h200_run.log"
# 3. NOT RUN (needs nvidia-h200-x4, withheld in that session, and SGLang, which the image lacks and cannot
#    fetch): the end-to-end check the TP4 profile's assumed all-reduce and FP8 factor stand in for --
#    launch_server --tp 4 on the FP8 checkpoint and bench_serving at the experiments/sim_fidelity/points.json
#    setups; compare with the simulator as experiments/sim_fidelity does.
