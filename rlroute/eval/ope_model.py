"""The doubly robust estimator's reward model for ``rlroute ope``: a per-action ridge regression on a few
informative features of the observation, cross-fitted (issue 17 item 4).

The logged per-request reward is ``quality - cost - latency_weight * e2e - slo_penalty * miss``
(:mod:`rlroute.eval.ope`). Its cost is the token cost model's (linear in uncached prompt tokens and output
tokens, per pool) and its e2e grows with the output length and the chosen pool's load, so the model regresses,
per action, on (:data:`REWARD_FEATURES`): the prompt and output-cap token counts (raw, in thousands — the log
transform of the observation is undone so that the model can be linear in tokens), the uncached prompt tokens
per pool (prompt x (1 - best available prefix match)), the seed's complexity score, and each pool's load per
available instance and recent TTFT (as observed). Chosen from the reward's definition, not searched. The
ridge penalty (:data:`L2`, on standardised features: 0.1 / 1 / 10) and the number of folds (:data:`FOLDS`: 2 /
5) were compared on the validation split only (10 seeds 100-109 at 2 req/s, ``experiments/rollout/README.md``
run 2): the differences were within the seeds' noise; 2 folds gave intervals closest to the error's spread,
L2 = 1 is the middle setting. This small model also beat ridge on all 224 dims there (error SD 3.9e-4 vs
4.5e-4 per request).

The first version regressed on all 224 observation dims with ~150 records per action and fold (run 1): the
fit was poor and DR no better than IPS. An observation that is not the 224-dim schema's (a synthetic test's
contexts) is used as it is.
"""

from __future__ import annotations

import numpy as np

Z = 3  # actions
L2 = 1.0
FOLDS = 2
TOKENS = ("request.input_tokens", "request.output_tokens")
AS_IS = ("request.complexity", "system.large.load_per_available", "system.small.load_per_available",
         "system.large.ttft", "system.small.ttft")
MATCH = ("cache.large.best_available_match_ratio", "cache.small.best_available_match_ratio")
REWARD_FEATURES = (*TOKENS, *AS_IS, *(f"uncached_tokens({m})" for m in MATCH))


def reward_features(obs: np.ndarray) -> np.ndarray:
    """``[n, 9]`` (:data:`REWARD_FEATURES`) of ``[n, 224]`` observations; other widths are returned as floats."""
    from rlroute.features import SCHEMA

    x = np.asarray(obs, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(SCHEMA):
        return x
    idx = {n: i for i, n in enumerate(SCHEMA.names)}
    feats = {f.name: f for f in SCHEMA.features}

    def raw_k(name: str) -> np.ndarray:  # undo the log transform: tokens / 1000
        f = feats[name]
        return f.unit * np.expm1(x[:, idx[name]] * np.log1p(f.cap / f.unit)) / 1000.0

    tok = [raw_k(n) for n in TOKENS]
    cols = [*tok, *(x[:, idx[n]] for n in AS_IS), *(tok[0] * (1.0 - x[:, idx[m]]) for m in MATCH)]
    return np.stack(cols, axis=1)


def fit_q(x: np.ndarray, a: np.ndarray, r: np.ndarray, l2: float = L2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-action ridge on standardised ``x`` (intercept unpenalised): ``(coef [Z, d + 1], mean [d], scale [d])``.
    An action with fewer than 2 records predicts the mean reward of all records."""
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    xb = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    coef = np.zeros((Z, xb.shape[1]))
    coef[:, -1] = r.mean() if len(r) else 0.0
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    for k in range(Z):
        sel = a == k
        if sel.sum() < 2:
            continue
        xs = xb[sel]
        coef[k] = np.linalg.solve(xs.T @ xs + reg, xs.T @ r[sel])
    return coef, mu, sd


def q_values(x: np.ndarray, a: np.ndarray, r: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Cross-fitted predictions ``[n, Z]``: each record's from the model fitted on the records of the other
    folds (``folds``: each record's fold index), so no record's own reward fits the model that corrects it."""
    out = np.zeros((len(x), Z))
    for f in np.unique(folds):
        held = folds == f
        coef, mu, sd = fit_q(x[~held], a[~held], r[~held])
        out[held] = np.hstack([(x[held] - mu) / sd, np.ones((int(held.sum()), 1))]) @ coef.T
    return out


def assign_folds(n: int, rng: np.random.Generator, k: int = FOLDS) -> np.ndarray:
    """A random fold index in ``[0, k)`` per record, the folds of (nearly) equal size."""
    return rng.permutation(n) % k
