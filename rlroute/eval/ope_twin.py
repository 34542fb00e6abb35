"""The twin-corrected doubly robust estimator of ``rlroute ope`` (``dr_twin``): the interference between
requests seen through a simulator twin of the logged deployment (issue 17 item 4).

**Why.** IPS, SNIPS and DR take each logged request's situation as given. A candidate that sends more of the
traffic to a pool makes the later requests there wait longer (and changes which prefixes are cached where);
no per-request estimator sees that (``experiments/rollout`` run 2: their bias grows with load). The twin
replays the logged requests through the simulator twice — with the logged actions, and with the candidate
deciding on the twin's own state — so that each request meets the load the candidate would have made.

**Estimator.** With ``rt_pi[i]`` request i's reward in the twin's candidate run, ``rt_mu[i]`` its reward in the
twin's replay of the logged actions and ``w[i] = [pi(x_i) == a_i] / p_i`` as for DR::

    dr_twin = mean_i( rt_pi[i] + w[i] * (r[i] - rt_mu[i]) )

i.e. DR with the twin as its reward model: the direct term carries the candidate's load; the importance-weighted
residual corrects the twin's per-request misfit on the requests where the candidate agrees with the log (as DR,
the per-request part is unbiased whatever the twin; the interference part is as right as the twin's response
to load). The twin predicts no quality: a joined ``quality_label`` enters through the residual only (IPS).

**What the twin takes from where** (:func:`twin_runs`):

- *the log*: the requests — arrival, prompt length, the client's cap, the answer's length, prefix blocks,
  session and turn (:mod:`rlroute.workload.replay`; a later turn's answer blocks are inferred there) — the
  logged actions, and the request block of each logged observation (the candidate decides on the twin's
  cluster state and prefix matches with the request as the router saw it, text features included);
- *the deployment's config*, which a deployer knows: the pools, their instance counts, each pool's model x
  GPU for memory (KV capacity) and limits (max running requests, chunked prefill), the cache (mem ``auto``, LRU),
  the in-pool policy (cache_aware), token prices and the SLO (the simulator's defaults, 2 s TTFT / 0.1 s TPOT);
- *the latencies*: a 4-term step time ``a + b*P + c*D + d*C`` per pool (:mod:`rlroute.cluster.profiles`)
  **fitted on the logged requests' TTFT and TPOT** (:func:`fit_step_time`) — not the profile's own
  coefficients, nor its extended MoE/attention block. Two more things from the config: a hybrid record's
  logged answer counts the plan (``Hybrid.plan_tokens``, 64), which is taken off the replayed request's
  answer; and the twin's clock starts at the log's first arrival (time-of-day features as the router saw them). ``TwinSpec.oracle`` takes the named profiles as they are
  instead: in ``rlroute bench ope`` that is the ground truth's own model, a perfectly specified twin, reported
  only as an upper bound.

**Fit** (approximations, each stated): per pool, from the answered single-stage records routed there. A
request decodes over ``[arrival + ttft, arrival + e2e]`` (a hybrid's answer on the small pool; its plan stage on
the large pool is not counted); the decoding batch an instance runs is the overlapping decodes divided by the
pool's instances (the in-pool policy assumed to balance); a request's context is its prompt plus half its
answer. TPOT rows: ``tpot = a + b*P + c*D + d*C`` with D, C averaged over the request's decode and P the
uncached prompt tokens of the prefills that started on the pool meanwhile, per instance and decode step. TTFT
rows: ``ttft = k*(a + c*D0 + d*C0) + b*U`` for its ``U`` uncached tokens in ``k`` chunks beside the ``D0``
decodes (context ``C0``) running at its arrival (queueing ignored: it inflates ``a`` at high load). Each
block of rows is divided by its median target (TTFT and TPOT count alike); non-negative least squares.

**How the candidate decides in the twin** (``TwinSpec.loop``). *Closed loop*: on the twin's own state (its
cluster and cache features; the request block from the log) — the candidate reacts to the load it makes, but
also to what the twin gets wrong (the answer blocks a later turn carries are inferred, so its prefix matches
differ). *Open loop*: on the logged observation — the actions a per-request estimator assumes; the twin adds
the load they make. ``both`` (the default) averages the two point estimates and draws its replicates from the
two alternately, so that its interval spans that uncertainty. Chosen on the validation split only (10 seeds
100-109 at 2 req/s, ``rlroute bench ope``'s scenario, 16 replicates; relative error of the mean difference,
coverage of its 95 % interval): open 0.21 / 0.60, closed 0.11 / 1.00, both 0.05 / 1.00 with the judged reward
(``-cost - 0.001 e2e``); cost only: open 0.09 / 1.00, closed 0.17 / 0.40, both 0.04 / 1.00 (plain DR there:
0.25 / 0.90 and 0.19 / 0.90). An oracle twin (``TwinSpec.oracle``, both loops): 0.09 / 1.00 and 0.04 / 1.00.

**Interval.** ``TwinSpec.reps`` twin replicates, each refitted on a bootstrap resample of the fitting rows and
run with its own seed; bootstrap resample ``b`` of the records uses replicate ``b mod reps``, so the interval
includes the twin's fit, its randomness and (``both``) the loop. The point estimate uses the fits on all rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import nnls

from rlroute.types import Action, Completion, Request

STEP_TERMS = ("a", "b", "c", "d")
DECODES_ON = {0: "large", 1: "small", 2: "small"}  # the pool an action's answer decodes on
MIN_ROWS = 8
LOOPS = ("open", "closed", "both")


@dataclass(frozen=True, slots=True)
class TwinPool:
    """One pool of the deployment: its profile (model x GPU) and instance count."""

    profile: str
    instances: int


@dataclass(slots=True)
class TwinSpec:
    """The twin's deployment config (module doc); ``reps`` replicates for the interval."""

    pools: dict[str, TwinPool]
    reps: int = 16
    oracle: bool = False
    loop: str = "both"

    @classmethod
    def parse(cls, items: list[str], reps: int = 16, oracle: bool = False, loop: str = "both") -> TwinSpec:
        """From ``POOL=PROFILE:INSTANCES`` items (``large=qwen3-235b-a22b-fp8__h100x8:1``)."""
        pools = {}
        for it in items:
            name, _, rest = it.partition("=")
            prof, _, n = rest.rpartition(":")
            if name not in ("large", "small") or not prof or not n.isdigit() or int(n) < 1:
                raise ValueError(f"--twin-pool {it!r}: expected large|small=PROFILE:INSTANCES (INSTANCES >= 1)")
            pools[name] = TwinPool(prof, int(n))
        if set(pools) != {"large", "small"}:
            raise ValueError(f"--twin-pool: expected both pools, large and small; got {sorted(pools)}")
        if reps < 2:
            raise ValueError(f"twin reps: expected >= 2 replicates, got {reps}")
        if loop not in LOOPS:
            raise ValueError(f"twin loop: expected one of {LOOPS}, got {loop!r}")
        return cls(pools, reps, oracle, loop)


@dataclass(slots=True)
class TwinRuns:
    """Per twin run (row: the first ``n_point`` fitted on all rows, then the replicates) and logged request
    (column; ``ids``), the twin's outcomes with the candidate's actions (``pi``) and with the logged actions
    (``mu``): cost, e2e, SLO missed; ``fits``: each run's step-time coefficients per pool (none for an oracle)."""

    ids: list[str]
    pi: dict[str, np.ndarray]
    mu: dict[str, np.ndarray]
    fits: list[dict[str, list[float]]] = field(default_factory=list)
    candidate_large_share: float = 0.0
    n_point: int = 1  # the first n_point runs (fits on all rows) give the point estimate, the rest the interval

    def rewards(self, cost_w: float, latency_w: float, slo_penalty: float) -> tuple[np.ndarray, np.ndarray]:
        """``(rt_pi, rt_mu)``, ``[n_point + reps, n]`` each."""
        def r(d: dict[str, np.ndarray]) -> np.ndarray:
            return -cost_w * d["cost"] - latency_w * d["e2e"] - slo_penalty * d["miss"]
        return r(self.pi), r(self.mu)


def drive(cluster: Any, reqs: list[Request], decide: Callable[[Request, Any, Any, np.ndarray], int]
          ) -> dict[int, Completion]:
    """Route ``reqs`` through ``cluster`` (``decide(request, state, matches, observation) -> action``); the
    completions by request id after draining."""
    from rlroute.features import FeatureExtractor

    fx, done = FeatureExtractor(), {}
    for r in reqs:
        for c in cluster.advance(r.arrival):
            done[c.request_id] = c
        st = cluster.state()
        m = cluster.prefix_match(r)
        cluster.submit(r, Action(decide(r, st, m, fx.extract(r, st, m))))
    for c in cluster.drain():
        done[c.request_id] = c
    return done


def sim_pools(pools: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """SimCluster pools (mem auto, LRU, cache_aware) from ``name -> (profile, instances)``."""
    ca = {"_target_": "rlroute.cluster.inpool.CacheAware"}
    cache = {"mem_fraction_static": "auto", "eviction": "lru"}
    return {p: {"profile": prof, "instances": n, "cache": cache, "in_pool": ca} for p, (prof, n) in pools.items()}


def design(log: Any, pool: str, instances: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitting rows of ``pool`` (module doc): ``(X [m, 4], y [m])``, already divided by each block's median."""
    tr = log.trace
    t = np.asarray(tr.timestamps, float)
    act = np.asarray(log.actions)
    got = [(o["ttft_s"], o["e2e_s"], o["tpot_s"], o["cached_tokens"]) for o in log.logged]
    ok = np.array([g[0] is not None and g[1] is not None for g in got])
    ttft = np.array([g[0] if g[0] is not None else np.nan for g in got], float)
    e2e = np.array([g[1] if g[1] is not None else np.nan for g in got], float)
    tpot = np.array([g[2] if g[2] is not None else np.nan for g in got], float)
    cached = np.array([g[3] or 0 for g in got], float)
    inp, out = np.asarray(tr.input_len, float), np.asarray(tr.output_len, float)
    unc = np.maximum(inp - cached, 1.0)
    on = ok & np.array([DECODES_ON[int(a)] == pool for a in act])
    s, e, ctx = t + ttft, t + e2e, inp + out / 2.0
    single = ok & (act == (0 if pool == "large" else 1))
    rows_tp, y_tp, rows_tf, y_tf = [], [], [], []
    ds, de, dc = s[on], e[on], ctx[on]
    ps, pu = t[single], unc[single]
    for i in np.flatnonzero(single):
        live = (ds <= t[i]) & (de > t[i])
        k = max(1.0, np.ceil(unc[i] / chunk))
        rows_tf.append([k, unc[i], k * live.sum() / instances, k * dc[live].sum() / instances])
        y_tf.append(ttft[i])
        span = e[i] - s[i]
        if out[i] < 2 or span <= 0 or not np.isfinite(tpot[i]):
            continue
        ov = np.clip(np.minimum(de, e[i]) - np.maximum(ds, s[i]), 0.0, None) / span
        pre = pu[(ps >= s[i]) & (ps < e[i])].sum() / instances / (out[i] - 1)
        # the request's own decode overlaps itself fully: 1 sequence and its context, not divided
        rows_tp.append([1.0, pre, 1.0 + (ov.sum() - 1.0) / instances, ctx[i] + (ov @ dc - ctx[i]) / instances])
        y_tp.append(tpot[i])
    if len(y_tp) < MIN_ROWS:
        raise ValueError(f"twin: pool {pool!r} has {len(y_tp)} answered single-stage records with >= 2 output "
                         f"tokens in the log; at least {MIN_ROWS} are needed to fit its step time")
    xs, ys = [], []
    for rows, y in ((rows_tp, y_tp), (rows_tf, y_tf)):
        scale = max(float(np.median(y)), 1e-9)
        xs.append(np.asarray(rows) / scale)
        ys.append(np.asarray(y) / scale)
    return np.vstack(xs), np.concatenate(ys)


def fit_step_time(x: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None) -> list[float]:
    """NNLS ``(a, b, c, d)`` on the rows of :func:`design` (``rng``: on a bootstrap resample of them)."""
    if rng is not None:
        i = rng.integers(0, len(y), len(y))
        x, y = x[i], y[i]
    coef, _ = nnls(x, y)
    return [float(v) for v in coef]


def write_profile(base_name: str, coef: list[float], path: Path) -> str:
    """A profile file with ``base_name``'s model, memory and limits (deployment config) and the fitted step
    time; its path."""
    from rlroute.cluster.profiles import load_profile

    b = load_profile(base_name)
    src = "NNLS fit on the decision log's TTFT and TPOT (rlroute.eval.ope_twin)"
    raw = {"name": f"{b.name}-twin", "model": b.model, "gpu": b.gpu, "num_gpus": b.num_gpus, "dtype": b.dtype,
           "status": "derived", "source": f"twin of {b.name}: memory and limits from its config, step time {src}",
           "step_time": {k: {"value": v, "source": src} for k, v in zip(STEP_TERMS, coef, strict=True)},
           "memory": {"gpu_memory_gb": b.gpu_memory_gb, "weights_gb": b.weights_gb,
                      "kv_bytes_per_token": b.kv_bytes_per_token, "overhead_gb_per_gpu": b.overhead_gb_per_gpu},
           "limits": {"max_running_requests": b.max_running_requests,
                      "chunked_prefill_tokens": b.chunked_prefill_tokens}}
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def twin_runs(log_path: str | Path, policy: str | Path, obs_by_id: dict[str, np.ndarray], spec: TwinSpec,
              seed: int = 0) -> TwinRuns:
    """Fit the twin on the log and run it ``spec.reps + 1`` times with the candidate's and the logged actions."""
    from rlroute.cluster.base import Hybrid
    from rlroute.cluster.profiles import load_profile
    from rlroute.cluster.sim.cluster import SimCluster
    from rlroute.cluster.sim.run import run
    from rlroute.features import SCHEMA
    from rlroute.policies.onnx import OnnxPolicy
    from rlroute.workload.replay import ReplayWorkload

    wl = ReplayWorkload(str(log_path))
    log = wl.log
    # a hybrid's logged answer counts its plan (rlroute.cluster.base.Hybrid): the request's own answer is shorter
    plan_tokens = Hybrid.of(None).plan_tokens
    reqs = [replace(r, output_len=max(1, r.output_len - plan_tokens)) if log.actions[r.id] == 2 else r
            for r in wl.requests(np.random.default_rng(0))]
    cand = OnnxPolicy(str(policy), ood=False)
    req_dims = np.array([n.startswith("request.") for n in SCHEMA.names])
    logged_obs = [obs_by_id.get(i) for i in log.ids]
    rng = np.random.default_rng(seed)
    designs = {} if spec.oracle else {
        p: design(log, p, tp.instances, load_profile(tp.profile).chunked_prefill_tokens) for p, tp in spec.pools.items()}
    # per twin run: (refit on a resample, closed loop); the first n_point runs (all rows) give the point estimate
    todo = ([(False, False), (False, True)] + [(True, k % 2 == 1) for k in range(spec.reps)] if spec.loop == "both"
            else [(False, spec.loop == "closed")] + [(True, spec.loop == "closed")] * spec.reps)
    n_point = 2 if spec.loop == "both" else 1
    n, k_all = len(reqs), len(todo)
    pi = {k: np.zeros((k_all, n)) for k in ("cost", "e2e", "miss")}
    mu = {k: np.zeros((k_all, n)) for k in ("cost", "e2e", "miss")}
    fits: list[dict[str, list[float]]] = []
    large = ncand = 0
    closed = False  # the current run's loop (read by decide)

    def decide(r: Request, st: Any, m: Any, obs: np.ndarray) -> int:
        nonlocal large, ncand
        x = logged_obs[r.id]
        if x is not None and len(x) == len(obs):
            if closed:
                obs = obs.copy()
                obs[req_dims] = x[req_dims]
            else:
                obs = x
        a = int(np.argmax(cand.logits(obs)))
        large += a == 0
        ncand += 1
        return a

    with tempfile.TemporaryDirectory(prefix="rlroute-twin-") as tmp:
        for k, (resample, closed) in enumerate(todo):  # noqa: B007 (decide reads closed)
            if spec.oracle:
                prof = {p: tp.profile for p, tp in spec.pools.items()}
            else:
                coefs = {p: fit_step_time(*designs[p], rng if resample else None) for p in spec.pools}
                fits.append(coefs)
                prof = {p: write_profile(tp.profile, coefs[p], Path(tmp) / f"{p}-{k}.yaml")
                        for p, tp in spec.pools.items()}
            pools = sim_pools({p: (prof[p], tp.instances) for p, tp in spec.pools.items()})
            # the log's clock: time-of-day features as the router saw them
            cl = SimCluster(pools=pools, seed=seed + k, day_offset=log.start_s)
            got_pi = drive(cl, reqs, decide)
            cl_mu = SimCluster(pools=pools, seed=seed + k, day_offset=log.start_s)
            got_mu = {c.request_id: c for c in run(cl_mu, reqs, lambda r: log.actions[r.id], drain=True)}
            for out, got, c0 in ((pi, got_pi, cl), (mu, got_mu, cl_mu)):
                for r in reqs:
                    c = got[r.id]
                    out["cost"][k, r.id], out["e2e"][k, r.id] = c.cost, c.e2e
                    out["miss"][k, r.id] = float(c.ttft > c0.slo_ttft or c.tpot > c0.slo_tpot)
    return TwinRuns(list(log.ids), pi, mu, fits, large / max(ncand, 1), n_point)


def dr_twin(r: np.ndarray, w: np.ndarray, rt_pi: np.ndarray, rt_mu: np.ndarray, n_boot: int,
            rng: np.random.Generator, n_point: int = 1) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The estimate and the logged mean on all records, and on ``n_boot`` bootstrap resamples (each with its
    twin replicate, module doc): ``(value, logged, boot_values, boot_logged)``."""
    n, reps = len(r), rt_pi.shape[0] - n_point
    if reps < 1 or rt_pi.shape[1] != n or rt_mu.shape != rt_pi.shape:
        raise ValueError(f"dr_twin: expected twin rewards of shape (n_point + reps, {n}), got {rt_pi.shape}, "
                         f"{rt_mu.shape} with n_point {n_point}")

    def point(i: np.ndarray, k: int) -> float:
        return float((rt_pi[k, i] + w[i] * (r[i] - rt_mu[k, i])).mean())

    boots, logged = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        i = rng.integers(0, n, size=n)
        boots[b], logged[b] = point(i, n_point + b % reps), r[i].mean()
    every = np.arange(n)
    return float(np.mean([point(every, k) for k in range(n_point)])), float(r.mean()), boots, logged
