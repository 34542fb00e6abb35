#!/usr/bin/env bash
# Run 4 of the scenario study (README "Run 4"): two chains, one per core, filling experiments/scenarios/results.json.
# Run from a detached checkout (helpers landing on main must not change files mid-run):
#   git worktree add --detach /work/wt/study4 <commit> && cd /work/wt/study4 && RLROUTE=... bash experiments/scenarios/run4.sh
set -u
RL=${RLROUTE:-rlroute}
PF=("scenarios=[provisioned_fleet]" total_timesteps=245760 "references=[quality_oracle]" "overrides=['agent.quality_baseline=small']")
WS=(total_timesteps=40960 "references=[reward_oracle,quality_oracle]" "overrides=['agent.warm_start.teacher=supervised']")
COMMON=(train_seeds=5 test_windows=10 runs_dir=outputs/study/run4)
# A `regimes={...}` override is merged into conf/study.yaml's regimes by Hydra (it does not replace them):
# `~regimes.colocated` drops the colocated regime, `~regimes.dedicated` the dedicated one.
D="~regimes.colocated"; C="~regimes.dedicated"
mkdir -p outputs/study/run4
(
  $RL study "${PF[@]}" "$D" "${COMMON[@]}"
  $RL study "scenarios=[multiturn_cache]" "${WS[@]}" "$D" "${COMMON[@]}"
  $RL study "${PF[@]}" "$C" "${COMMON[@]}"
  $RL study "scenarios=[multiturn_cache]" "${WS[@]}" "$C" "${COMMON[@]}"
) > outputs/study/run4/chain1.log 2>&1 &
(
  $RL study "scenarios=[budgeted,token_api]" "${WS[@]}" "regimes={dedicated: [], colocated: ['cluster=colocated']}" "${COMMON[@]}"
) > outputs/study/run4/chain2.log 2>&1 &
wait
