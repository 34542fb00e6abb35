"""The evaluation harness: run a policy through the routing env for several seeds and measure it.

One episode per seed: ``env.reset(seed=seed)``, then at every step the policy acts on
``env.decision_context()`` (the same typed context the serving router builds), the env steps, and the
step's ``info["completions"]`` are collected; the env drains the requests still in flight at truncation
(``env.drain()`` is called again for envs that do not), so every decision has its latency and cost, and
the episode return is the sum of every request's own reward (``reward.credit: request``, the accounting
training uses; :mod:`rlroute.env.reward`). Decisions and completions are joined by
request id into per-request records (see :mod:`rlroute.eval.metrics`), metrics are computed per seed and
summarised with a confidence interval over seeds (:mod:`rlroute.eval.stats`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlroute.eval.metrics import ROUTING_KEYS, Record, episode_metrics, pooled_routing_arrays, routing_metrics
from rlroute.eval.stats import Interval, bootstrap_interval, t_interval
from rlroute.policies.base import Policy
from rlroute.policies.registry import make_policy, policy_name
from rlroute.types import ACTION_NAMES, Action, Completion
from rlroute.workload.base import Window
from rlroute.workload.tokens import stable_hash

log = logging.getLogger(__name__)

EnvFactory = Callable[[Any, str], Any]
RECORD_FIELDS: tuple[str, ...] = (
    "policy", "split", "seed", "request_id", "arrival", "action", "action_name", "pools", "category", "turn",
    "input_len", "ttft", "tpot", "e2e", "queue_time", "cost", "quality_ok", "ok_large", "ok_small",
    "ok_hybrid", "prompt_tokens", "cached_tokens", "output_tokens", "failed", "fail_reason", "score",
    "prompt_id", "reward",
)
# Per-request metrics that a bootstrap over requests can resample (the others are per-episode ratios).
BOOTSTRAP_KEYS = ("quality", "cost", "cache_hit_rate", "slo_attainment", "ttft_p50", "ttft_p99", "e2e_p50", "e2e_p99")


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: per-request records, per-seed metrics and their summary."""

    policy: str
    split: str
    records: list[Record]
    per_seed: list[dict[str, float]]
    summary: dict[str, Interval] = field(default_factory=dict)
    workload: str = ""


def default_env_factory(cfg: Any, split: str) -> Any:
    """The routing env of ``cfg`` for ``split`` (:func:`rlroute.env.build_env`)."""
    from rlroute.env import build_env

    return build_env(cfg, split=split)


def slo_targets(cfg: Any) -> tuple[float | None, float | None, float | None]:
    """TTFT, TPOT and hybrid-TTFT SLOs (seconds) from ``cfg.reward`` (``slo_ttft_s`` / ``slo_tpot_s`` /
    ``slo_ttft_hybrid_s``, conf/reward/), so SLO attainment counts what the reward counts."""
    reward = cfg.get("reward") if hasattr(cfg, "get") else None
    if not reward:
        return None, None, None
    slo = reward.get("slo") or {}

    def pick(*vals: Any) -> float | None:
        for v in vals:
            if v is not None:
                return float(v)
        return None

    return (pick(reward.get("slo_ttft_s"), reward.get("slo_ttft"), slo.get("ttft") if slo else None),
            pick(reward.get("slo_tpot_s"), reward.get("slo_tpot"), slo.get("tpot") if slo else None),
            pick(reward.get("slo_ttft_hybrid_s")))


def _record(decision: dict[str, Any], done: Completion | None) -> Record:
    rec = dict(decision)
    if done is None:  # never completed, even after drain: counted as failed
        rec.update(pools="", ttft=math.nan, tpot=math.nan, e2e=math.nan, queue_time=math.nan, cost=0.0,
                   quality_ok=False, prompt_tokens=decision["input_len"], cached_tokens=0, output_tokens=0,
                   failed=True, fail_reason="no completion")
        return rec
    rec.update(
        pools="+".join(done.pools), ttft=done.ttft, tpot=done.tpot, e2e=done.e2e, queue_time=done.queue_time,
        cost=done.cost, quality_ok=bool(done.quality_ok) and not done.failed, prompt_tokens=done.prompt_tokens,
        cached_tokens=done.cached_tokens, output_tokens=done.output_tokens, failed=done.failed,
        fail_reason=done.fail_reason or "",
    )
    return rec


def run_episode(
    env: Any, policy: Policy, seed: int, split: str = "test", window: Window | None = None
) -> tuple[list[Record], float]:
    """One episode of ``policy`` in ``env`` (on ``window`` of the split when given); returns its
    per-request records and undiscounted return."""
    name = policy_name(policy)
    env.reset(seed=seed, options={"window": window} if window is not None else None)
    policy.reset(np.random.default_rng(seed))
    policy.bind_env(env)  # e.g. the oracle prices actions as the env's reward does
    decisions: list[dict[str, Any]] = []
    completions: dict[int, Completion] = {}
    credits: dict[int, float] = {}  # each request's own reward (reward.credit: request), NaN otherwise
    total_reward, done = 0.0, False
    while not done:
        ctx = env.decision_context()
        req = ctx.request
        action = Action(int(policy.act(ctx)))
        draw = req.quality
        ok = draw.ok if draw is not None else (False, False, False)
        decisions.append({
            "policy": name, "split": split, "seed": seed, "request_id": req.id, "arrival": req.arrival,
            "action": int(action), "action_name": ACTION_NAMES[action], "category": req.category or "",
            "turn": req.turn, "input_len": req.input_len, "ok_large": bool(ok[0]), "ok_small": bool(ok[1]),
            "ok_hybrid": bool(ok[2]), "score": float(policy.score(ctx)),
            "prompt_id": f"{stable_hash(req.prompt):x}" if req.prompt else "",
        })
        _, reward, terminated, truncated, info = env.step(int(action))
        total_reward += float(reward)
        policy.observe(info.get("credits", ()))  # online learners get each request's credit at completion
        for c in info.get("completions", ()):
            completions[c.request_id] = c
        for credit in info.get("credits", ()):
            credits[credit.request_id] = float(credit.reward)
        done = bool(terminated or truncated)
    for c in env.drain():
        completions[c.request_id] = c
    records = [_record(d, completions.get(d["request_id"])) for d in decisions]
    for rec in records:
        rec["reward"] = credits.get(rec["request_id"], math.nan)
    return records, total_reward


def summarise(
    per_seed: Sequence[dict[str, float]],
    records: Sequence[Record] | None = None,
    ci: str = "t",
    confidence: float = 0.95,
    n_boot: int = 1000,
    slo: tuple[float | None, float | None, float | None] = (None, None, None),
) -> dict[str, Interval]:
    """Mean and CI of every metric over seeds (``ci="t"``) or, for per-request metrics, by bootstrapping
    the pooled requests (``ci="bootstrap"``; see :mod:`rlroute.eval.stats` for why it is optimistic).

    PGR / APGR / CPT are always computed on the pooled requests of all seeds (a per-seed ratio is unstable
    when its gap q_strong − q_weak is near zero), with a bootstrap interval that resamples whole seeds
    (test windows) when there are several, else requests (then optimistic: requests share a cluster)."""
    if ci not in ("t", "bootstrap"):
        raise ValueError(f"eval.ci: expected 't' or 'bootstrap', got {ci!r}")
    keys = list(per_seed[0]) if per_seed else []
    out = {k: t_interval([m[k] for m in per_seed], confidence) for k in keys}
    if records:
        # RouteLLM's ratios on the pooled requests (see rlroute.eval.metrics), bootstrap interval.
        action, ok, scores = pooled_routing_arrays(records)
        seeds = np.array([r.get("seed", 0) for r in records])
        clusters = seeds if np.unique(seeds).size > 1 else None
        rng = np.random.default_rng(0)
        for key in ROUTING_KEYS:

            def ratio(idx: np.ndarray, k: str = key) -> float:
                return routing_metrics(action[idx], ok[idx], scores[idx])[k]

            out[key] = bootstrap_interval(len(action), ratio, rng, min(n_boot, 300), confidence, clusters)
    if ci == "bootstrap" and records:
        rows = list(records)
        rng = np.random.default_rng(0)
        # One metrics pass per resample serves every key (episode_metrics is the costly part).
        draws = [episode_metrics([rows[i] for i in rng.integers(0, len(rows), len(rows))], *slo)
                 for _ in range(n_boot)]
        point = episode_metrics(rows, *slo)
        for key in BOOTSTRAP_KEYS:
            vals = np.array([d[key] for d in draws], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            lo, hi = np.quantile(vals, [0.5 - confidence / 2, 0.5 + confidence / 2]) if vals.size else (np.nan,) * 2
            out[key] = Interval(point[key], float(lo), float(hi), len(rows))
    return out


def evaluate(
    policy: Policy | str | Any,
    cfg: Any,
    split: str = "test",
    seeds: Sequence[int] = (0, 1, 2),
    reference_cost: dict[int, float] | None = None,
    env_factory: EnvFactory = default_env_factory,
    ci: str = "t",
    env: Any | None = None,
    windows: int | None = None,
) -> EvalResult:
    """Evaluate ``policy`` on ``cfg``'s workload/cluster for ``split`` over ``seeds``.

    Args:
        policy: a policy, a registry name or a ``cfg.policy``-style config.
        cfg: a composed rlroute config (workload, quality, cluster, reward, episode_length).
        split: workload split (``test``, ``test_xdomain``, ...).
        seeds: one episode per seed.
        reference_cost: total all-large cost per seed for ``cost_saving``; ``None`` runs all-large on the
            same seeds to get it (skipped when the policy is all-large itself).
        env_factory: builds the env from ``(cfg, split)``; defaults to :func:`rlroute.env.build_env`.
        ci: ``"t"`` over seeds or ``"bootstrap"`` over requests.
        env: an already built env of ``cfg``/``split`` to reuse (building one fits the quality model and
            loads the workload, which costs seconds); ``reset(seed=...)`` makes episodes independent of
            what ran before. Left open; otherwise one is built and closed.
        windows: cut the split into this many disjoint windows and make test seed ``i`` window ``i``
            (:class:`~rlroute.workload.base.Window`; seeds must then be ``0 <= i < windows``; the env's
            randomness is still seeded with ``i``). ``None``: every seed replays the whole split with its
            own random stream (draws that may overlap).

    Returns:
        An :class:`EvalResult` whose ``records`` can be written with :func:`rlroute.eval.report.write_records`.
        For a policy that counts its refusals (``OnnxPolicy.fallbacks``), the metrics include
        ``fallback_rate`` (decisions the fallback made) and ``ood_rate`` (of them, refused as out of
        distribution); for a batch of observations without an env, see
        :func:`rlroute.export.ood.fallback_rate`.
    """
    if not seeds:
        raise ValueError("evaluate: expected at least one seed")
    pol = make_policy(policy)
    pol.prepare(cfg)
    own_env = env is None
    if env is None:
        env = env_factory(cfg, split)
    slo = slo_targets(cfg)
    records: list[Record] = []
    per_seed: list[dict[str, float]] = []
    episodes: list[tuple[int, list[Record], float]] = []
    fallbacks = pol.fallbacks  # a guarded policy (OnnxPolicy): decisions the guard refused, by reason
    refused: dict[int, dict[str, float]] = {}
    for seed in seeds:
        before = dict(fallbacks) if fallbacks is not None else {}
        recs, ret = run_episode(env, pol, int(seed), split, window_of(int(seed), windows))
        episodes.append((int(seed), recs, ret))
        if fallbacks is not None:
            n = max(len(recs), 1)
            delta = {k: v - before.get(k, 0) for k, v in fallbacks.items()}
            refused[int(seed)] = {"fallback_rate": sum(delta.values()) / n,
                                  "ood_rate": delta.get("out_of_distribution", 0) / n}
    is_large = policy_name(pol) == "all_large"
    if reference_cost is None:
        if is_large:
            reference_cost = {s: float(sum(r["cost"] for r in recs)) for s, recs, _ in episodes}
        else:
            reference_cost = all_large_costs(cfg, split, seeds, env_factory, env, windows)
    for seed, recs, ret in episodes:
        m = episode_metrics(recs, *slo, reference_cost=reference_cost.get(seed))
        m["reward"] = ret / max(len(recs), 1)
        m["return"] = ret
        m.update(refused.get(seed, {}))  # a guarded policy's figures carry its fallback rate beside them
        per_seed.append(m)
        records.extend(recs)
    if own_env:
        env.close()
    log.info("evaluated %s on %s over seeds %s", policy_name(pol), split, list(seeds))
    return EvalResult(policy_name(pol), split, records, per_seed, summarise(per_seed, records, ci, slo=slo),
                      workload_name(cfg))


def workload_name(cfg: Any) -> str:
    """A short name of ``cfg.workload``: its ``name`` key, else the class of its ``_target_``."""
    wl = cfg.get("workload") if hasattr(cfg, "get") else None
    if not wl:
        return ""
    return str(wl.get("name") or str(wl.get("_target_", "")).rsplit(".", 1)[-1])


def window_of(seed: int, windows: int | None) -> Window | None:
    """Test seed ``seed`` as window ``seed`` of ``windows`` (None without windows); a clear error when out of
    range."""
    if windows is None:
        return None
    if not 0 <= seed < windows:
        raise ValueError(f"eval seeds: with windows={windows}, a seed is a window index 0..{windows - 1}, "
                         f"got {seed}")
    return Window(seed, windows)


def all_large_costs(
    cfg: Any, split: str, seeds: Sequence[int], env_factory: EnvFactory = default_env_factory,
    env: Any | None = None, windows: int | None = None,
) -> dict[int, float]:
    """Total cost of the all-large policy per seed (the reference of ``cost_saving``); reuses ``env``."""
    run_env = env if env is not None else env_factory(cfg, split)
    out = {}
    for seed in seeds:
        recs, _ = run_episode(run_env, make_policy("all_large"), int(seed), split, window_of(int(seed), windows))
        out[int(seed)] = float(sum(r["cost"] for r in recs))
    if env is None:
        run_env.close()
    return out
