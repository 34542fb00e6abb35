"""``rlroute bench parity``: does ``rlroute serve`` see, and decide on, what the env trained on?

Every router-side observation is read **from the running server** (``/admin/observe`` answers the vector
and action its decision path computed; ``/admin/decisions`` returns the vectors it decided on while
routing), never recomputed here. Pools: 1 large + 2 small emulated workers (``rlroute worker``, default
profiles, ``mem_fraction_static`` 0.88, LRU, cache_aware inside each pool) started for the run, and the same
instance model in the simulator, whose prefix matches come from the router's approximate trees (its
``router_view`` default, the class the router uses) as in training. Requests: a window of the built-in synthetic workload from the start of
its stream (so every session's earlier turns are in the window), each sent as a client would — the
prompt text, the client's cap, and its session as ``x-rlroute-session`` when it is part of a conversation
(:func:`rlroute.workload.client.client_body`, as the replay client sends it).

* **Tier 1, frozen inputs.** The simulator runs the window with the policy, as the env does; at each
  decision the pool state and prefix matches are recorded. The env's builder computes the observation
  from the workload's own request (as in training); ``rlroute serve`` gets the client body plus the same
  recorded state and matches (``/admin/observe``) and builds its request from the body on its hot path.
  Target: bit-identical vectors and identical actions (agreement 1.0).
* **Tier 2, timed replay.** The window, rescaled to ``--load`` times the pools' knee, goes through the
  simulator and through ``rlroute serve`` over the workers (requests sent at their arrival times, wall =
  modelled / ``--speedup``). The knee is measured on the simulator first: the highest rate of a doubling
  sweep whose p90 TTFT stays within the SLO (2 s). A conversation's next turn is sent once the previous
  answer is back, as a client does. Per block, the mean |router - simulator| difference is compared with
  the jitter between two simulator runs of the window, the second with every arrival shifted by the send
  delay measured for that request in the replay. The replay passes when every request and system
  feature, and the cache block as a whole, differ by at most ``3 x`` their simulator jitter plus the
  block's stated tolerance (request 0: same bytes, same vector; cache 0.05 and system 0.10, as
  ``tests/test_live_cluster.py`` states for the live pools' engine ticks and HTTP timing). Cache features
  are checked as a block: they are correlated views of the same few prefix matches and scraped hit
  counters, and the router's hybrid stages send real plan text where the simulator adds ``plan_tokens``
  (per-feature figures are reported). Action agreement with the simulator is reported for both.

The exported policy must choose each action on at least 10 % of the replay's decisions (checked and
reported). It decides without its OOD guard on both sides (``ood.enabled=false``), so that every decision
compared is the policy's own; the guard's false-positive rate on this replay is
``experiments/parity/ood.py``'s. The last stdout line is JSON: ``value`` = tier-1 action agreement, the per-block figures of
both tiers, the action shares and ``passed``.

Usage::

    rlroute bench parity [--policy FOLDER] [--tier1 200] [--requests 300] [--load 0.6] [--speedup 10]
                         [--launcher "python script.py"] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rlroute.bench import emit
from rlroute.paths import REPO
from rlroute.types import Request

DEFAULT_POLICY = REPO / "experiments" / "parity" / "policy"
LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"
MEM, EVICTION, BLOCK = 0.88, "lru", 64
TOKEN = "rlroute-bench-parity"
TOLERANCE = {"request": 0.0, "system": 0.10, "cache": 0.05}
JITTER_FACTOR = 3.0
MIN_SHARE = 0.10
SLO_TTFT_S = 2.0


def _sim(day_offset: float = 0.0) -> Any:
    from rlroute.cluster.sim import SimCluster

    cache = {"mem_fraction_static": MEM, "eviction": EVICTION}
    ca = {"_target_": "rlroute.cluster.inpool.CacheAware"}
    return SimCluster(pools={"large": {"profile": LARGE, "instances": 1, "cache": cache, "in_pool": ca},
                             "small": {"profile": SMALL, "instances": 2, "cache": cache, "in_pool": ca}},
                      seed=0, day_offset=day_offset)


def _window(n: int, rate: float, seed: int, split: str = "all") -> list[Request]:
    """The first ``n`` requests of the synthetic workload's stream of ``split`` at mean ``rate`` req/s."""
    import hydra

    from rlroute.env.build import default_config

    cfg = default_config([f"workload.rate={rate}", f"workload.split={split}"])
    wl = hydra.utils.instantiate(cfg.workload)
    out = []
    for r in wl.requests(np.random.default_rng(seed)):
        out.append(r)
        if len(out) >= n:
            break
    return out


def _body(r: Request, exact: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """What a client sends for ``r`` (:func:`rlroute.workload.client.client_body`): the text, its cap and its
    session. ``exact``: the cap is the reply's length (a load generator's fixed output, as the emulated
    worker generates exactly the cap)."""
    from rlroute.workload.client import client_body

    return client_body(r, r.output_len if exact else None)


def _client_requests(reqs: list[Request], exact: bool = False) -> list[Request]:
    """The requests as the router builds them from the bodies (same turn counting)."""
    from rlroute.serve.intake import SessionTable, client_request
    from rlroute.workload.client import SESSION_HEADER

    table = SessionTable()
    out = []
    for r in reqs:
        body, headers = _body(r, exact)
        c = client_request(r.id, r.arrival, body["text"], None, body["sampling_params"]["max_new_tokens"], BLOCK,
                           table, headers.get(SESSION_HEADER))
        if not exact:
            c.output_len = r.output_len  # the reply's length (the cap only bounds it)
        out.append(c)
    return out


def _run_sim(reqs: list[Request], slot: Any, day_offset: float = 0.0,
             record: bool = False) -> tuple[np.ndarray, list[int], list[Any], list[Any]]:
    """Decide every request on the simulator with the router's decision code; observations and actions."""
    sim = _sim(day_offset)
    obs, acts, states, matches = [], [], [], []
    for r in reqs:
        sim.advance(r.arrival)
        st, m = sim.state(), sim.prefix_match(r)
        out = slot.decide(r, st, m)
        obs.append(out.obs)
        acts.append(int(out.action))
        if record:
            states.append(copy.deepcopy(st))
            matches.append(copy.deepcopy(m))
        sim.submit(r, out.action)
    comps = sim.drain()
    del comps
    return np.array(obs, dtype=np.float32), acts, states, matches


def _knee(reqs_at: Any, slot: Any) -> tuple[float, list[dict[str, float]]]:
    """Highest rate of a doubling sweep whose p90 TTFT on the simulator stays within the SLO."""
    sweep, knee = [], 0.0
    rate = 1.0
    while rate <= 256.0:
        reqs = reqs_at(rate)
        sim = _sim()
        for r in reqs:
            sim.advance(r.arrival)
            sim.submit(r, slot.decide(r, sim.state(), sim.prefix_match(r)).action)
        ttft = [c.ttft for c in sim.drain() if not c.failed]
        p90 = float(np.percentile(ttft, 90)) if ttft else float("inf")
        sweep.append({"rate": rate, "ttft_p90_s": p90})
        if p90 > SLO_TTFT_S:
            break
        knee = rate
        rate *= 2.0
    if knee == 0.0:
        raise RuntimeError(f"parity: even 1 req/s exceeds the TTFT SLO on the simulator ({sweep})")
    return knee, sweep


def _blocks(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from rlroute.features import SCHEMA

    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {k: float(d[:, s].mean()) for k, s in SCHEMA.slices.items()}


def _shares(acts: list[int]) -> dict[str, float]:
    from rlroute.types import ACTION_NAMES

    n = max(1, len(acts))
    return {name: sum(1 for a in acts if a == i) / n for i, name in enumerate(ACTION_NAMES)}


class _Server:
    """Emulated workers + ``rlroute serve`` with the policy, the decision log and the admin token."""

    def __init__(self, policy: Path, speedup: float, log_dir: Path, launcher: list[str] | None,
                 guard: bool = False) -> None:
        from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
        from rlroute.serve.launch import RouterProc

        flags = [f"mem_fraction_static={MEM}", f"cache.policy={EVICTION}", f"block_size={BLOCK}"]
        specs = [WorkerSpec("large", LARGE, speedup, flags)] + [WorkerSpec("small", SMALL, speedup, flags)
                                                               for _ in range(2)]
        self.fleet = WorkerFleet(specs, log_dir).start()
        try:
            self.router = RouterProc(self.fleet.urls("large"), self.fleet.urls("small"), log_dir / "router.log",
                                     [f"policy.path={policy}", f"speedup={speedup}", "decision_log=100000",
                                      "scrape_interval_s=0.05", "policy.inference_timeout_ms=50",
                                      f"ood.enabled={str(guard).lower()}"],
                                     env={"RLROUTE_ADMIN_TOKEN": TOKEN}, launcher=launcher)
        except BaseException:
            self.fleet.stop()
            raise
        self.auth = {"authorization": f"Bearer {TOKEN}"}

    def observe(self, body: dict[str, Any], headers: dict[str, str], state: dict[str, Any] | None = None,
                matches: Any = None, remember: bool = False) -> dict[str, Any]:
        import httpx

        r = httpx.post(self.router.admin_url + "/admin/observe", headers={**self.auth, **headers}, timeout=30.0,
                       json={"request": body, "state": state, "matches": matches, "remember": remember})
        r.raise_for_status()
        return dict(r.json())

    def close(self) -> None:
        self.router.stop()
        self.fleet.stop()


def _tier1(server: _Server, slot: Any, n: int, rate: float, seed: int) -> dict[str, Any]:
    from rlroute.cluster.base import state_to_json
    from rlroute.features import SCHEMA

    reqs = _window(n, rate, seed)
    _, acts, states, matches = _run_sim(_client_requests(reqs), slot, record=True)
    env_obs, env_acts, srv_obs, srv_acts = [], [], [], []
    for r, st, m in zip(reqs, states, matches, strict=True):
        env = slot.decide(r, st, m)  # the env's builder: the workload's own request, as in training
        env_obs.append(env.obs)
        env_acts.append(int(env.action))
        body, headers = _body(r)
        headers = {k: "t1-" + v for k, v in headers.items()}
        got = server.observe(body, headers, state_to_json(st), m, remember=True)
        srv_obs.append(np.array(got["observation"], dtype=np.float32))
        srv_acts.append(int(got["action"]))
    e, s = np.array(env_obs), np.array(srv_obs)
    identical = int(sum(np.array_equal(a, b) for a, b in zip(e, s, strict=True)))
    worst = np.abs(e.astype(np.float64) - s).max(axis=0)
    agree = float(np.mean(np.array(env_acts) == np.array(srv_acts)))
    return {"decisions": len(reqs), "identical_vectors": identical, "bit_identical": identical == len(reqs),
            "max_abs_diff": {k: float(worst[sl].max()) for k, sl in SCHEMA.slices.items()},
            "differing_features": [SCHEMA.names[i] for i in np.flatnonzero(worst > 0)][:20],
            "action_agreement": agree, "action_shares_env": _shares(env_acts), "sim_actions_match_env":
            float(np.mean(np.array(acts) == np.array(env_acts)))}


def _replay(server: _Server, reqs: list[Request], speedup: float) -> tuple[dict[int, dict[str, Any]], float, float,
                                                                       list[float]]:
    """Send the window at its arrival times; the router's decisions by request index, its clock at the start,
    its day offset, and each request's send delay (modelled seconds)."""
    import httpx

    start = server.observe({"text": "clock", "sampling_params": {"max_new_tokens": 1}}, {})
    t_base, day = float(start["time"]), float(start["day_offset"])
    ids: dict[int, int] = {}
    delay = [0.0] * len(reqs)
    prev: dict[int, int] = {}  # request index -> the index of its session's previous turn
    last: dict[int, int] = {}
    for i, r in enumerate(reqs):
        if r.session_id is not None:
            if r.session_id in last:
                prev[i] = last[r.session_id]
            last[r.session_id] = i

    async def go() -> None:
        done = [asyncio.Event() for _ in reqs]
        async with httpx.AsyncClient(timeout=600.0, limits=httpx.Limits(max_connections=1024)) as c:
            t0 = time.monotonic()

            async def one(i: int, r: Request) -> None:
                await asyncio.sleep(max(0.0, r.arrival / speedup - (time.monotonic() - t0)))
                if i in prev:  # a client sends a conversation's next turn once it has the previous answer
                    await done[prev[i]].wait()
                delay[i] = (time.monotonic() - t0) * speedup - r.arrival
                body, headers = _body(r, exact=True)
                try:
                    resp = await c.post(server.router.url + "/generate", json=body, headers={**headers})
                    resp.raise_for_status()
                    ids[int(resp.headers["x-rlroute-decision-id"])] = i
                finally:
                    done[i].set()

            await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))

    asyncio.run(go())
    log = httpx.get(server.router.admin_url + "/admin/decisions", headers=server.auth, timeout=60.0)
    log.raise_for_status()
    by_index = {ids[d["id"]]: d for d in log.json()["decisions"] if d["id"] in ids}
    if len(by_index) != len(reqs):
        raise RuntimeError(f"parity: the router logged {len(by_index)} of {len(reqs)} replayed decisions")
    return by_index, t_base, day, delay


def _tier2(server: _Server, slot: Any, n: int, load: float, speedup: float, seed: int) -> dict[str, Any]:
    from rlroute.features import SCHEMA

    knee, sweep = _knee(lambda rate: _client_requests(_window(n, rate, seed), exact=True), slot)
    rate = load * knee
    reqs = _client_requests(_window(n, rate, seed), exact=True)
    decided, t_base, day, delay = _replay(server, reqs, speedup)
    router_obs = np.array([decided[i]["obs"] for i in range(n)], dtype=np.float32)
    router_acts = [int(decided[i]["action"]) for i in range(n)]
    sim_obs, sim_acts, _, _ = _run_sim(reqs, slot, day + t_base)
    shifted = [copy.copy(r) for r in reqs]
    for r, d in zip(shifted, delay, strict=True):
        r.arrival += d
        r.cache = {}
    order = sorted(range(n), key=lambda i: shifted[i].arrival)
    jit_obs_sorted, jit_acts_sorted, _, _ = _run_sim([shifted[i] for i in order], slot, day + t_base)
    jit_obs = np.empty_like(jit_obs_sorted)
    jit_acts = [0] * n
    for k, i in enumerate(order):
        jit_obs[i], jit_acts[i] = jit_obs_sorted[k], jit_acts_sorted[k]
    d_rs = np.abs(router_obs.astype(np.float64) - sim_obs).mean(axis=0)
    d_ss = np.abs(jit_obs.astype(np.float64) - sim_obs).mean(axis=0)
    tol = np.empty(len(SCHEMA), dtype=np.float64)
    for name, sl in SCHEMA.slices.items():
        tol[sl] = TOLERANCE[name]
    limit = JITTER_FACTOR * d_ss + tol
    cache = SCHEMA.slices["cache"]
    per_feature = np.ones(len(SCHEMA), dtype=bool)
    per_feature[cache] = False
    bad = np.flatnonzero(per_feature & (d_rs > limit + 1e-7))
    cache_ok = float(d_rs[cache].mean()) <= float(limit[cache].mean()) + 1e-7
    closest = [i for i in np.argsort(limit - d_rs) if d_rs[i] > 0][:8]  # smallest margins among differing features
    shares = _shares(router_acts)
    return {
        "requests": n, "knee_req_s": knee, "knee_sweep": sweep, "rate_req_s": rate, "load_of_knee": load,
        "speedup": speedup, "send_delay_s": {"mean": float(np.mean(delay)), "max": float(np.max(delay))},
        "per_block": {"router_vs_sim": _blocks(router_obs, sim_obs), "sim_vs_sim_jitter": _blocks(jit_obs, sim_obs)},
        "features_beyond_jitter": [{"feature": SCHEMA.names[i], "router_vs_sim": float(d_rs[i]),
                                    "limit": float(limit[i])} for i in bad],
        "closest_to_limit": [{"feature": SCHEMA.names[i], "router_vs_sim": float(d_rs[i]), "limit": float(limit[i])}
                             for i in closest],
        "cache_block": {"router_vs_sim": float(d_rs[cache].mean()), "limit": float(limit[cache].mean()),
                        "within": cache_ok},
        "within_jitter": len(bad) == 0 and cache_ok,
        "action_agreement": {"router_vs_sim": float(np.mean(np.array(router_acts) == np.array(sim_acts))),
                             "sim_vs_sim_jitter": float(np.mean(np.array(jit_acts) == np.array(sim_acts)))},
        "action_shares": {"router": shares, "sim": _shares(sim_acts)},
        "each_action_at_least_10pct": min(shares.values()) >= MIN_SHARE,
    }


def run(policy: Path, tier1: int, requests: int, load: float, speedup: float, seed: int,
        launcher: list[str] | None) -> dict[str, Any]:
    """Both tiers against one server; the result dict (see the module docstring)."""
    from rlroute.policies.registry import make_policy
    from rlroute.serve.decision import OodSettings, PolicySlot

    slot = PolicySlot(str(policy), 0.0, make_policy("heuristic"), OodSettings(enabled=False))
    if slot.current.policy is None:
        raise RuntimeError(f"parity: policy {policy} did not load ({slot.current.reason}: {slot.current.detail})")
    with tempfile.TemporaryDirectory(prefix="rlroute-parity-") as tmp:
        server = _Server(policy, speedup, Path(tmp), launcher)
        try:
            t1 = _tier1(server, slot, tier1, 20.0, seed)
            t2 = _tier2(server, slot, requests, load, speedup, seed + 1)
        finally:
            server.close()
    passed = t1["bit_identical"] and t1["action_agreement"] == 1.0 and t2["within_jitter"] and \
        t2["each_action_at_least_10pct"]
    return {"value": t1["action_agreement"], "unit": "action_agreement_frozen_inputs", "passed": passed,
            "policy": str(policy), "tier1": t1, "tier2": t2, "action_shares": t2["action_shares"],
            "tolerance": TOLERANCE, "jitter_factor": JITTER_FACTOR}


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="rlroute bench parity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default=str(DEFAULT_POLICY), help="exported policy folder")
    ap.add_argument("--tier1", type=int, default=200, help="frozen-input decisions")
    ap.add_argument("--requests", type=int, default=300, help="requests in the timed replay window")
    ap.add_argument("--load", type=float, default=0.6, help="replay rate as a share of the pools' knee (>= 0.5)")
    ap.add_argument("--speedup", type=float, default=10.0, help="modelled seconds per wall second")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--launcher", default=None, help="command that runs the rlroute CLI for the router "
                                                     "(default: python -m rlroute.cli)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.load < 0.5:
        ap.error(f"--load must be >= 0.5 (share of the knee), got {a.load}")
    res = run(Path(a.policy), a.tier1, a.requests, a.load, a.speedup, a.seed,
              shlex.split(a.launcher) if a.launcher else None)
    res["command"] = "rlroute bench parity " + " ".join(argv)
    res["cpu_count"] = os.cpu_count()
    return emit("parity", res, a.out)
