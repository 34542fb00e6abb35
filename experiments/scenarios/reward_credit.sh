#!/usr/bin/env bash
# Per-request credit vs the v0 Park-style credit on scenario=provisioned_fleet (experiments/scenarios/reward_credit.md).
# Trains PPO (gamma 0) with each scheme on the train split (training seeds $SEEDS_TRAIN, all runs in parallel),
# then evaluates every run and the fixed baselines on the validation split (seeds 1000-1004) with the
# per-request accounting (drained episodes; reward.credit=request is the scenario default for evaluation).
#   bash experiments/scenarios/reward_credit.sh            # OUT=/tmp/reward_credit STEPS=40960 SEEDS_TRAIN="0 1"
set -euo pipefail
OUT=${OUT:-/tmp/reward_credit}
STEPS=${STEPS:-40960}
SEEDS_TRAIN=${SEEDS_TRAIN:-"0 1"}
mkdir -p "$OUT"
COMMON=(scenario=provisioned_fleet agent.algo.gamma=0 agent.algo.learning_rate=1e-3 agent.algo.n_epochs=5
        agent.algo.ent_coef=0 agent.n_envs=2 agent.total_timesteps="$STEPS" agent.eval.freq=0 "agent.eval.seeds=[1000]"
        agent.checkpoint_freq=0 agent.progress_bar=false)
SEEDS="[1000,1001,1002,1003,1004]"
for credit in request park; do
  for seed in $SEEDS_TRAIN; do
    nice -n 10 .venv/bin/rlroute train "${COMMON[@]}" reward.credit="$credit" seed="$seed" \
      hydra.run.dir="$OUT/$credit-seed$seed" > "$OUT/$credit-seed$seed.log" 2>&1 &
  done
done
nice -n 10 .venv/bin/rlroute eval scenario=provisioned_fleet splits=[val] seeds="$SEEDS" \
  "policies=[all_small,all_large,threshold,heuristic]" hydra.run.dir="$OUT/eval-baselines" > "$OUT/eval-baselines.log" 2>&1 &
wait
for credit in request park; do
  runs=$(for seed in $SEEDS_TRAIN; do printf '%s,' "$OUT/$credit-seed$seed"; done)
  nice -n 10 .venv/bin/rlroute eval scenario=provisioned_fleet splits=[val] seeds="$SEEDS" \
    "runs=[${runs%,}]" hydra.run.dir="$OUT/eval-$credit"
done
