#!/usr/bin/env bash
# Per-request credit vs the v0 Park-style credit on scenario=provisioned_fleet (experiments/scenarios/reward_credit.md).
# Train PPO (gamma 0) with each scheme on the train split, 3 training seeds; evaluate every run and the fixed
# baselines on the validation split (seeds 1000-1004) with the per-request accounting (drained episodes).
#   bash experiments/scenarios/reward_credit.sh [OUT=/tmp/reward_credit] [STEPS=40960]
set -euo pipefail
OUT=${OUT:-/tmp/reward_credit}
STEPS=${STEPS:-40960}
COMMON=(scenario=provisioned_fleet agent.algo.gamma=0 agent.algo.learning_rate=1e-3 agent.algo.n_epochs=5
        agent.algo.ent_coef=0 agent.n_envs=2 agent.total_timesteps="$STEPS" agent.eval.freq=0 "agent.eval.seeds=[1000]"
        agent.checkpoint_freq=0 agent.progress_bar=false)
lane() {  # one credit scheme, seeds 0-2, one after another
  for seed in 0 1 2; do
    nice -n 10 .venv/bin/rlroute train "${COMMON[@]}" reward.credit="$1" seed="$seed" hydra.run.dir="$OUT/$1-seed$seed"
  done
}
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  lane request > "$OUT.request.log" 2>&1 &
  lane park > "$OUT.park.log" 2>&1 &
  wait
fi
# Evaluation: the same per-request accounting for all (reward.credit=request is the scenario default).
SEEDS="[1000,1001,1002,1003,1004]"
nice -n 10 .venv/bin/rlroute eval scenario=provisioned_fleet splits=[val] seeds="$SEEDS" \
  "policies=[all_small,all_large,threshold,heuristic]" hydra.run.dir="$OUT/eval-baselines"
for credit in request park; do
  nice -n 10 .venv/bin/rlroute eval scenario=provisioned_fleet splits=[val] seeds="$SEEDS" \
    "runs=[$OUT/$credit-seed0,$OUT/$credit-seed1,$OUT/$credit-seed2]" hydra.run.dir="$OUT/eval-$credit"
done
