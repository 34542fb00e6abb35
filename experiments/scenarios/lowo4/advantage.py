"""What a request's advantage of large over small is made of, per latent LOWO member (train split; no policy).

Per request: the large model's quality gain ``p_large - p_small`` (the shared calibration of LOWO run 4) and
the price difference ``lambda * (cost_large - cost_small)`` at list prices with the request's **realised** output
length (no cache, no latency: the static part of the reward). Printed: both terms' mean and sd, how much of the
price term the prompt length alone explains (R^2 of a quadratic fit: the router sees the prompt, never the reply),
the share of requests where large pays, and how the advantage correlates with the gain and with a short prompt.

    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/lowo4/advantage.py \
        --out experiments/scenarios/lowo4/advantage.json
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from hydra.utils import instantiate

from rlroute.env import build_env
from rlroute.eval.baselines import compose

MEMBERS = ("synthetic", "sharegpt", "azure_code")


def member(name: str, n: int) -> dict[str, float]:
    cfg = compose([f"workload={name}", "quality.reference=null"])
    env = build_env(cfg, split="train")
    env.reset(seed=5)  # builds the cluster whose cost model prices the requests
    price = env.unwrapped.cluster.cost_model.request_cost
    lam = float(cfg.reward.cost_weight)
    quality = instantiate(cfg.quality)
    reqs = list(itertools.islice(instantiate(cfg.workload, split="train").requests(np.random.default_rng(1)), n))
    env.close()
    gain = np.array([quality.probs(r)[0] - quality.probs(r)[1] for r in reqs])
    dcost = np.array([lam * (price("large", r.input_len, 0, r.output_len) - price("small", r.input_len, 0, r.output_len))
                      for r in reqs])
    x = np.array([r.input_len for r in reqs], float)
    design = np.stack([np.ones_like(x), x, x**2], 1)
    resid = dcost - design @ np.linalg.lstsq(design, dcost, rcond=None)[0]
    adv = gain - dcost
    r = {"cost_weight": lam, "gain_mean": gain.mean(), "gain_sd": gain.std(), "price_term_mean": dcost.mean(),
         "price_term_sd": dcost.std(), "r2_price_term_from_prompt_len": 1 - resid.var() / dcost.var(),
         "share_large_pays": float(np.mean(adv > 0)), "corr_adv_gain": np.corrcoef(adv, gain)[0, 1],
         "corr_adv_short_prompt": np.corrcoef(adv, -x)[0, 1]}
    return {k: round(float(v), 3) for k, v in r.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = {m: member(m, a.n) for m in MEMBERS}
    for m, r in out.items():
        print(m, r, flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"n": a.n, "split": "train", "members": out}, f, indent=1)


if __name__ == "__main__":
    main()
