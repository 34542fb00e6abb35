"""Why a policy trained on some workloads misjudges another under the latent quality model (train split only).

The latent model (``conf/quality/latent.yaml``) standardises each request's observable difficulty score
against **the run's own workload** and fits ``a_small``, ``a_large``, ``tau`` so that every workload
reproduces MMLU's joint (small, large) success table. The same request therefore has a different P(ok) —
and a different large-model gain — depending on the workload it is sampled in. This script measures, on the
**train** split of every LOWO member with latent quality: the raw observable score (mean, sd), the fitted
parameters, and the large-model gain ``E[p_large - p_small]`` of each member's requests scored under each
member's calibration (rows: requests of; columns: calibrated on). Diagonal = what the env rewards; off-
diagonal = what a policy that learned the gain on the column's workload would believe about the row's.
Column ``shared``: the one calibration LOWO run 4 gives every latent member (``quality.reference=null``, the
built-in synthetic set; ``conf/study.yaml``).

    RLROUTE_SHARED_DATA=/work/shared/data python experiments/scenarios/lowo4/calibration.py \
        --out experiments/scenarios/lowo4/calibration.json
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np
from hydra.utils import instantiate

from rlroute.eval.baselines import compose
from rlroute.quality.difficulty import observable_score, request_properties

MEMBERS = {"azure_code": ["workload=azure_code"], "synthetic": ["workload=synthetic"],
           "sharegpt": ["workload=sharegpt"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    reqs, models, stats = {}, {}, {}
    for name, ov in MEMBERS.items():
        cfg = compose([*ov, "quality=latent"])
        wl = instantiate(cfg.workload, split="train")
        reqs[name] = list(itertools.islice(wl.requests(np.random.default_rng(1)), a.n))
        q = instantiate(cfg.quality)
        models[name] = q
        raw = np.array([observable_score(request_properties(r), q.weights, q.categories) for r in reqs[name]])
        stats[name] = {"raw_mean": float(raw.mean()), "raw_sd": float(raw.std()), "a_small": q.a_small,
                       "a_large": q.a_large, "tau": q.tau,
                       "input_len_median": float(np.median([r.input_len for r in reqs[name]]))}
    models["shared"] = instantiate(compose(["quality=latent", "quality.reference=null"]).quality)
    gain = {}
    for rows, cols in itertools.product(MEMBERS, models):
        q = models[cols]
        p = np.array([q.probs(r)[:2] for r in reqs[rows]])  # (p_large, p_small)
        gain[f"{rows}|{cols}"] = {"p_large": float(p[:, 0].mean()), "p_small": float(p[:, 1].mean()),
                                  "gain": float((p[:, 0] - p[:, 1]).mean())}
    out = {"members": stats, "gain_rows_requests_cols_calibration": gain, "n": a.n}
    print(json.dumps(out, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
