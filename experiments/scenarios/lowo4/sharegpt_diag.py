"""After LOWO run 4 (post hoc, VALIDATION split only): what sets the large share of the policies trained
without sharegpt — the request's true large-model gain or the large pool's load? Each run of
``<runs>/without_sharegpt`` drives sharegpt's val episodes (seeds 1000-1001) and, for comparison, a member it
was trained on (synthetic); per decision it records the action, the request's gain ``p_large - p_small`` (the
quality model's, never observed by the policy), the large pool's load per available instance and the prompt's
length in tokens (both observed). Printed: the large share by gain quartile, load tercile and length quartile,
per member.

    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/lowo4/sharegpt_diag.py \
        --runs /work/wt/lowo4/outputs/study/lowo4 --out experiments/scenarios/lowo4/sharegpt_diag.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from rlroute.env import build_env
from rlroute.paths import CONF_DIR
from rlroute.policies.sb3 import SB3Policy
from rlroute.study.lowo import available_members
from rlroute.types import Action

STUDY = ["total_timesteps=200000", "dr.cost_scale=[1.0,1.0]", "dr.instances.large=[2,4,6]",
         'overrides=["agent.quality_baseline=small"]']  # LOWO run 4's command


def episode(env, pol, seed: int) -> list[tuple[int, float, float, int]]:  # type: ignore[no-untyped-def]
    env.reset(seed=seed)
    pol.reset(np.random.default_rng(seed))
    load_i = env.schema.names.index("system.large.load_per_available")
    out, done = [], False
    while not done:
        ctx = env.decision_context()
        a = int(pol.act(ctx))
        p = ctx.request.quality.p
        out.append((a, float(p[0] - p[1]), float(ctx.obs[load_i]), ctx.request.input_len))
        _, _, term, trunc, _ = env.step(a)
        done = bool(term or trunc)
    return out


def shares(rows: np.ndarray, col: int, q: list[float]) -> list[float]:
    edges = np.quantile(rows[:, col], q)
    bins = np.digitize(rows[:, col], edges[1:-1])
    return [round(float((rows[bins == b, 0] == int(Action.LARGE)).mean()), 3) for b in range(len(edges) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        study = hydra_compose("study", overrides=STUDY)
    members, _ = available_members(study)
    out: dict[str, dict[str, object]] = {}
    for member in ("sharegpt", "synthetic"):
        env = build_env(members[member], split="val")
        rows = np.array([r for run in sorted((args.runs / "without_sharegpt").glob("seed*"))
                         for s in (1000, 1001) for r in episode(env, SB3Policy(run, name="ppo"), s)])
        env.close()
        out[member] = {"decisions": len(rows), "large_share": round(float((rows[:, 0] == int(Action.LARGE)).mean()), 3),
                       "large_share_by_gain_quartile": shares(rows, 1, [0, .25, .5, .75, 1]),
                       "large_share_by_load_tercile": shares(rows, 2, [0, 1 / 3, 2 / 3, 1]),
                       "large_share_by_input_len_quartile": shares(rows, 3, [0, .25, .5, .75, 1]),
                       "input_len_quartiles": [int(x) for x in np.quantile(rows[:, 3], [.25, .5, .75])],
                       "gain_mean": round(float(rows[:, 1].mean()), 3),
                       "load_terciles": [round(float(x), 3) for x in np.quantile(rows[:, 2], [1 / 3, 2 / 3])]}
        print(member, out[member], flush=True)
    args.out.write_text(json.dumps({"study": STUDY, "runs": str(args.runs), "val_seeds": [1000, 1001],
                                    "members": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
