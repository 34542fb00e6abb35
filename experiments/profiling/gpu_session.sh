#!/usr/bin/env bash
# The GPU profiling still owed to issue 13 (written 2026-12-04 in a session without a GPU; NOT run yet).
# Run on the device machine from the repository root (`run` tool); each command writes under $OUT.
# Afterwards, locally: copy the JSON files into experiments/profiling/results/ (names below), extend
# fit_profiles.py's MEASURED list with the *__h200 stems, and re-run fit_profiles.py + derive_deployments.py.
set -euo pipefail
FLAGS="--compile --prefill-sdpa cudnn --decode-sdpa cudnn"
# 1. H200 (nvidia-h200): the small models and the TP4 rank that the default large pool runs.
#    -> results/run4_h200_measurements.json ; profiles qwen3-4b__h200, qwen3-8b__h200, and a measured TP4 rank
#       replacing the stage rescaling of derive_deployments.py (TP4_SCALE) for the H200 profile.
PYTHONUNBUFFERED=1 python3 -W ignore experiments/profiling/profile_models.py \
  --models qwen3-4b,qwen3-8b,qwen3-235b-a22b-tp4-rank $FLAGS --budget-s 400 --out "$OUT/run4"
# 2. Mixed prefill+decode validation shapes of the same models (validation only, never fitted).
PYTHONUNBUFFERED=1 python3 -W ignore experiments/profiling/profile_models.py --shapes mixed \
  --models qwen3-4b,qwen3-235b-a22b-tp4-rank $FLAGS --budget-s 120 --out "$OUT/run4_mixed"
# 3. On nvidia-h200-x4 with SGLang installed (not available offline here): the end-to-end check the derived
#    TP4 profile stands in for -- launch_server --tp 4 on the FP8 checkpoint and bench_serving at the
#    experiments/sim_fidelity/points.json setups; compare with the simulator as experiments/sim_fidelity does.
