"""Validation-only diagnostic (issue 11): how much of the quality signal does each representation carry?

A router can only spend the large model on the right requests if what it sees ranks requests by their
quality gain. In latent-quality scenarios the true gain of a request is known (``p_large - p_small`` of its
quality draw), so each representation's ranking can be scored against it. For one scenario:

* ``threshold``: the study's threshold classifier (logistic regression on 2^14 hashed n-grams + numeric
  features, :mod:`rlroute.policies.threshold`), trained on the train split's "large needed" labels;
* ``block:<text>``: the 128-dim request block of the observation (what PPO and the supervised router see
  of the request), text representation ``hash`` (the default) or ``minilm``, with (i) logistic regression
  on the same labels and (ii) a ridge regression on the true gain (the best a learner with
  full-information labels could extract linearly);
* ``oracle``: the true gain itself.

Scores on the val split: ROC AUC against "large needed", Spearman correlation with the true gain, and at
large shares 0.2 / 0.4 / 0.6 the share of the oracle's quality gain that routing the top-scored requests
to the large model captures. Appends one JSON line per (scenario, representation) to ``--out``.

    python experiments/scenarios/tuning/quality_signal.py --scenario provisioned_fleet budgeted token_api
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

from rlroute.env.build import default_config
from rlroute.features.encoders import MiniLMText
from rlroute.features.extract import FeatureExtractor
from rlroute.policies.textfeat import featurize
from rlroute.policies.threshold import needed_labels, train_threshold_model, training_requests
from rlroute.types import Action, Request

HERE = Path(__file__).parent
SHARES = (0.2, 0.4, 0.6)


def gain(reqs: list[Request]) -> np.ndarray:
    """True quality gain of the large model over the small one, per request."""
    return np.array([r.quality.p[Action.LARGE] - r.quality.p[Action.SMALL] for r in reqs])  # type: ignore[union-attr]


def batched(enc: MiniLMText, reqs: list[Request]) -> Callable[[Request], np.ndarray]:
    """``enc`` with every distinct prompt of ``reqs`` encoded in one batch (the encoder itself runs one
    prompt per call, ~55 ms each here); same projection and normalisation as :class:`MiniLMText`."""
    prompts = sorted({r.prompt for r in reqs if r.prompt})
    emb = np.asarray(enc._load().encode(prompts, batch_size=64, show_progress_bar=False), dtype=np.float64)  # type: ignore[attr-defined]
    v = emb @ enc._proj
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    table = dict(zip(prompts, v, strict=True))
    return lambda r: table[r.prompt] if r.prompt else np.zeros(v.shape[1])


def scores_of(name: str, score: np.ndarray, y: np.ndarray, g: np.ndarray) -> dict[str, object]:
    order = np.argsort(-score, kind="stable")
    best = np.sort(g)[::-1]
    captured = {}
    for s in SHARES:
        k = int(round(s * len(g)))
        captured[str(s)] = float(g[order[:k]].sum() / best[:k].sum())
    return {"representation": name, "auc_needed": float(roc_auc_score(y, score)),
            "spearman_gain": float(spearmanr(score, g).statistic), "gain_captured": captured}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", nargs="+", required=True)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-val", type=int, default=3000)
    ap.add_argument("--text", nargs="+", default=["hash", "minilm"])
    ap.add_argument("--out", default=str(HERE / "quality_signal.jsonl"))
    a = ap.parse_args()
    for scenario in a.scenario:
        t0 = time.perf_counter()
        cfg = default_config([f"scenario={scenario}"])
        train, val = training_requests(cfg, "train", a.n_train), training_requests(cfg, "val", a.n_val, seed=1)
        y_tr, y_va, g_tr, g_va = needed_labels(train), needed_labels(val), gain(train), gain(val)
        print(f"{scenario}: {len(train)} train / {len(val)} val requests drawn ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        thr = train_threshold_model(cfg)
        rows = [scores_of("threshold", thr.predict(featurize(val, thr.n_hash)), y_va, g_va),
                scores_of("oracle", g_va, y_va, g_va)]
        for text in a.text:
            fx = FeatureExtractor(text)
            if isinstance(fx.encoder, MiniLMText):
                fx.encoder = batched(fx.encoder, [*train, *val])
            x_tr = np.stack([fx.request_block(r) for r in train]).astype(np.float64)
            x_va = np.stack([fx.request_block(r) for r in val]).astype(np.float64)
            clf = LogisticRegression(C=1.0, max_iter=2000).fit(x_tr, y_tr)
            rows.append(scores_of(f"block:{text}:logistic", clf.decision_function(x_va), y_va, g_va))
            reg = Ridge(alpha=1.0).fit(x_tr, g_tr)
            rows.append(scores_of(f"block:{text}:ridge_gain", reg.predict(x_va), y_va, g_va))
            print(f"{scenario}: block:{text} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        for row in rows:
            rec = {"scenario": scenario, "n_train": len(train), "n_val": len(val),
                   "needed_rate_val": float(y_va.mean()), **row}
            print(json.dumps(rec), flush=True)
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
