"""Offline datasets: decision logs (``rlroute.decision_log/1``) as the arrays offline learners train on.

Two sources, one schema (``docs/decision_log.md``):

* **a router's decision log** (``rlroute serve decision_file.path=...``): each answered record with its stored
  observation — the router's ``FeatureExtractor`` output, the very vector the served policy decided on — its
  executed action, the propensity it was drawn with and its outcome;
* **a simulator-generated log** (:func:`simulate`): a behaviour policy (by default the seed heuristic) with an
  exploration floor ``epsilon`` (:class:`rlroute.offline.behaviour.EpsilonFloor`, the floor ``rlroute bench ope``
  logs with) routes episodes of the scenario's ``train`` split in the routing env; each record stores the env's
  own observation (``env.decision_context().obs``), never a re-derived vector.

**Reward of a record** (:func:`rlroute.eval.ope.observed_reward`, the same function ``rlroute ope`` scores with):
``quality_weight * quality_label - cost_weight * cost - latency_weight * e2e_s - slo_weight * [SLO missed]``,
weights from the scenario's ``reward`` group. Quality is not observed in serving: a router's log counts it
only where an external grade was joined as ``quality_label``. A simulator log fills ``quality_label`` with the
env's quality term of the executed action (``reward.quality``: the success probability ``p`` by default; a
failed request scores ``-baseline`` as the env pays it) and ``slo_ok`` with the env's own SLO rule, so the
record's reward *is* the env's per-request credit (``reward.credit: request``) — :func:`simulate` checks that
on every record and refuses a log where it does not hold.

**Transitions.** ``next_obs`` is the next record's observation in log order and ``done`` marks the last record;
a log is one stream (a simulator log concatenates its episodes, and the transition across an episode boundary
is then wrong: only a learner with ``gamma > 0`` reads it). The default learners use ``gamma = 0``
(``conf/offline/``): see :mod:`rlroute.offline.learners` for why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.eval.ope import RewardSpec, observed_reward
from rlroute.offline.behaviour import EpsilonFloor, sim_record, write_records
from rlroute.serve.decisionlog import DecisionLogError, read_log

N_ACTIONS = 3


@dataclass(slots=True)
class Dataset:
    """Logged transitions as arrays (module doc)."""

    obs: np.ndarray  # float32[n, dim]
    action: np.ndarray  # int64[n]
    propensity: np.ndarray  # float64[n]
    reward: np.ndarray  # float32[n]
    next_obs: np.ndarray  # float32[n, dim]
    done: np.ndarray  # bool[n]
    skipped: int  # records without a decision or an answer (refused, unanswered)
    source: str

    def __len__(self) -> int:
        return len(self.action)

    def subset(self, idx: np.ndarray) -> Dataset:
        """The records at ``idx`` (their transitions as stored)."""
        return Dataset(self.obs[idx], self.action[idx], self.propensity[idx], self.reward[idx], self.next_obs[idx],
                       self.done[idx], 0, f"{self.source} [subset of {len(idx)}]")

    def split(self, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
        """A random ``(1 - fraction, fraction)`` split of the records (``seed`` fixes it)."""
        perm = np.random.default_rng(seed).permutation(len(self))
        k = int(round(len(self) * fraction))
        return self.subset(np.sort(perm[k:])), self.subset(np.sort(perm[:k]))


def reward_spec(reward: Any) -> RewardSpec:
    """The scenario's ``reward`` group as the per-record reward weights (module doc)."""
    from rlroute.env.reward import RewardConfig

    rc = reward if isinstance(reward, RewardConfig) else RewardConfig.from_mapping(dict(reward or {}))
    return RewardSpec(cost_weight=rc.cost_weight, latency_weight=rc.latency_weight, slo_penalty=rc.slo_weight,
                      quality_weight=rc.quality_weight)


def _field_error(path: Any, i: int, rec: dict[str, Any], name: str, expected: str, got: Any) -> DecisionLogError:
    return DecisionLogError(f"{path}: record {i} (request_id {rec.get('request_id')!r}): field {name!r}: expected "
                            f"{expected}, got {got!r}"[:400])


def from_log(path: str | Path, spec: RewardSpec, dim: int, schema_hash: str | None = None) -> Dataset:
    """The answered records of the decision log at ``path`` (rotated files included) as a :class:`Dataset`.

    Records without an executed action (refused) or an answer (``outcome`` null or without ``e2e_s``) are
    skipped and counted; anything else that does not fit is an error.

    Raises:
        DecisionLogError: not a decision log (:func:`~rlroute.serve.decisionlog.read_log`), or a record whose
            ``obs`` is missing or not ``dim`` finite floats, whose ``feature_schema`` is not ``schema_hash``,
            whose ``action`` is not 0/1/2, ``propensity`` not in (0, 1], or ``outcome`` lacks ``cost`` /
            ``slo_ok`` — naming the file, the record and the field.
    """
    xs: list[Any] = []
    acts: list[int] = []
    props: list[float] = []
    rs: list[float] = []
    skipped = 0
    for i, rec in enumerate(read_log(path)):
        out = rec.get("outcome")
        if rec.get("action") is None or not isinstance(out, dict) or out.get("e2e_s") is None:
            skipped += 1
            continue
        a = rec["action"]
        if not isinstance(a, int) or isinstance(a, bool) or not 0 <= a < N_ACTIONS:
            raise _field_error(path, i, rec, "action", "0 (large), 1 (small) or 2 (hybrid)", a)
        obs = rec.get("obs")
        if not isinstance(obs, list) or len(obs) != dim:
            got = f"{len(obs)} values" if isinstance(obs, list) else obs
            raise _field_error(path, i, rec, "obs", f"the {dim}-float observation the policy decided on (serve "
                               "with decision_file.observations=true)", got)
        fs = rec.get("feature_schema")
        if schema_hash is not None and fs is not None and fs != schema_hash:
            raise _field_error(path, i, rec, "feature_schema", f"this build's feature schema {schema_hash!r}", fs)
        p = rec.get("propensity")
        if not isinstance(p, int | float) or not 0.0 < float(p) <= 1.0:
            raise _field_error(path, i, rec, "propensity", "a probability in (0, 1]", p)
        for key in ("cost", "slo_ok"):
            if out.get(key) is None:
                raise _field_error(path, i, rec, f"outcome.{key}", "a value for an answered request", None)
        try:
            row = np.asarray(obs, dtype=np.float32)
            r = observed_reward(rec, spec)
        except (TypeError, ValueError) as e:
            raise _field_error(path, i, rec, "obs/outcome/quality_label", "numbers", str(e)) from e
        if not np.isfinite(row).all() or not np.isfinite(r):
            raise _field_error(path, i, rec, "obs/outcome", "finite numbers", "NaN or inf")
        xs.append(row)
        acts.append(int(a))
        props.append(float(p))
        rs.append(r)
    if not xs:
        raise DecisionLogError(f"{path}: no answered record with an observation to learn from ({skipped} skipped)")
    obs_a = np.stack(xs)
    done = np.zeros(len(xs), dtype=bool)
    done[-1] = True
    next_obs = np.concatenate([obs_a[1:], obs_a[-1:]])
    return Dataset(obs_a, np.asarray(acts, dtype=np.int64), np.asarray(props), np.asarray(rs, dtype=np.float32),
                   next_obs, done, skipped, f"log:{path}")


def simulate(cfg: Any, path: str | Path, episodes: int, epsilon: float, seed: int, behaviour: str = "heuristic",
             split: str = "train") -> dict[str, Any]:
    """Write a decision log of ``behaviour`` with an ``epsilon`` floor over ``episodes`` episodes of ``cfg``'s
    env on ``split`` (seeds ``seed``, ``seed + 1``, ...) to ``path``; return a summary (module doc).

    Raises:
        RuntimeError: a record's reward differs from the env's credit for that request (the contract above).
    """
    from rlroute.env import build_env
    from rlroute.features import build_schema
    from rlroute.policies.registry import make_policy

    if episodes < 1:
        raise ValueError(f"dataset.episodes: expected >= 1, got {episodes}")
    env = build_env(cfg, split=split)
    rc, spec = env.reward_cfg, reward_spec(env.reward_cfg)
    schema_hash = build_schema(str(cfg.get("features", {}).get("text", "hash"))).hash
    policy = make_policy(behaviour)
    policy.prepare(cfg)
    floor = EpsilonFloor(policy, epsilon, np.random.default_rng(seed))
    records: list[dict[str, Any]] = []
    worst = 0.0
    try:
        for k in range(episodes):
            s = seed + k
            env.reset(seed=s)
            policy.reset(np.random.default_rng(s))
            policy.bind_env(env)
            decided: dict[int, tuple[Any, int, float, float, float]] = {}
            comps, credits = {}, {}
            done = False
            while not done:
                ctx = env.decision_context()
                a, p, _ = floor.draw(ctx)
                _, _, term, trunc, info = env.step(a)
                q = ctx.request.quality
                base = 0.0
                if rc.quality_baseline == "small" and q is not None:
                    base = float(q.p[1] if rc.quality == "p" else q.ok[1])
                decided[ctx.request.id] = (ctx, a, p, float(info["quality"]), base)
                comps.update({c.request_id: c for c in info["completions"]})
                credits.update({c.request_id: float(c.reward) for c in info["credits"]})
                done = bool(term or trunc)
            comps.update({c.request_id: c for c in env.drain()})
            for rid, (ctx, a, p, q_term, base) in decided.items():
                c = comps[rid]
                rec = sim_record(f"{s}-{rid}", ctx.obs, a, p, c, not rc.violates(c), -base if c.failed else q_term,
                                 ctx.request.arrival, ctx.request.input_len, schema_hash, f"{behaviour}+eps{epsilon}")
                if rid in credits:
                    worst = max(worst, abs(observed_reward(rec, spec) - credits[rid]))
                records.append(rec)
    finally:
        env.close()
    if worst > 1e-6:
        raise RuntimeError(f"simulated log: a record's reward differs from the env's credit by {worst:.3g}")
    n = write_records(path, records)
    acts = np.bincount([r["action"] for r in records], minlength=N_ACTIONS)
    return {"path": str(path), "records": n, "episodes": episodes, "epsilon": epsilon, "behaviour": behaviour,
            "split": split, "seed": seed, "action_shares": (acts / max(n, 1)).tolist(),
            "max_abs_reward_minus_credit": worst}
