"""Env step cost and where it goes: ``python -m rlroute.env.profile [--overrides ...]``.

Runs ``--episodes`` episodes of ``rlroute/Routing-v1`` (built with :func:`rlroute.env.build.build_env` from
``conf/config.yaml`` plus overrides) under a uniformly random policy, and reports CPU time
(``time.process_time``: the machine is shared, so wall time would count other processes):

* ``steps_per_s``: decisions per CPU second over whole episodes, resets included (what training pays);
* ``warm_steps_per_s``: the same once every episode's stream has been seen once (a second pass over the
  same seeds: process-level caches of tokens, request blocks and quality inputs are then warm);
* ``split_wall_us_per_step``: a third (warm) pass with timers around the env's calls into the workload
  stream, ``quality.draw``, ``extractor.extract``, the cluster (``advance``/``submit``/``state``/
  ``prefix_match`` and construction at reset) and the env's decision-time pricing
  (``expected_cost``), plus the rest (env bookkeeping, reward, timer overhead ~0.1 us per call).
  Wall time, so it also counts time the process waited for a core: read it as proportions;
* with ``--warmup-episodes N``: ``steady_steps_per_s`` over ``--episodes`` episodes on seeds never run
  before, after ``N`` warm-up episodes on other seeds -- the state of a training run some way in, where
  a workload's finite prompt pool has been seen but each episode's stream is new;
* with ``--profile``, a cProfile split of the warm pass into workload (materialising requests),
  quality, features, simulator and the rest (reward bookkeeping, Gymnasium), by the module whose
  function is on the stack (cumulative time of the outermost call into each area).

The first pass pays for every prompt the process has not seen (text generation, tokenisation, text
hashing, cue scans); a training run pays that once per prompt of the workload's pool, so the steady
figure is what most of a long run costs per step. ``--cold-split`` splits the first pass instead.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

AREAS = {
    "workload": ("rlroute/workload/",),
    "quality": ("rlroute/quality/",),
    "features": ("rlroute/features/",),
    "simulator": ("rlroute/cluster/",),
}
# The env's own calls into each area: cumulative time of these is the area's cost per step.
_ENTRY = {
    "workload": ("routing.py", "_pull"),
    "features": ("extract.py", "extract"),
}


def _episodes(env: Any, seeds: list[int], rng: np.random.Generator) -> int:
    steps = 0
    for s in seeds:
        env.reset(seed=s)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(int(rng.integers(0, 3)))
            done = term or trunc
            steps += 1
    return steps


class _Timer:
    """Accumulates wall time (``perf_counter``, ~50 ns per read) of wrapped calls, by area."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def wrap(self, area: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        totals = self.totals
        totals.setdefault(area, 0.0)
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[area] += clock() - t

        return timed


def instrument(env: Any) -> _Timer:
    """Wrap the env's calls into workload, quality, features and simulator with timers (in place)."""
    timer = _Timer()
    workload = env.workload
    requests = workload.requests

    def timed_requests(rng: np.random.Generator) -> Iterator[Any]:
        it = iter(requests(rng))
        nxt = timer.wrap("workload", lambda: next(it, None))
        while (r := nxt()) is not None:
            yield r

    workload.requests = timed_requests
    env.quality.draw = timer.wrap("quality", env.quality.draw)
    env.extractor.extract = timer.wrap("features", env.extractor.extract)
    factory = env.cluster_factory

    def timed_factory(rng: np.random.Generator) -> Any:
        cluster = factory(rng)
        for name in ("advance", "submit", "state", "prefix_match"):
            setattr(cluster, name, timer.wrap("simulator", getattr(cluster, name)))
        return cluster

    env.cluster_factory = timer.wrap("simulator", timed_factory)
    env.expected_cost = timer.wrap("reward_cost", env.expected_cost)
    return timer


def _split(prof: cProfile.Profile, steps: int) -> dict[str, float]:
    """Microseconds per step by area, from the outermost call into each area's files."""
    st = pstats.Stats(prof)
    stats: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for area, prefixes in AREAS.items():
        total = 0.0
        for (fname, _line, func), (_cc, _nc, _tt, ct, callers) in stats.items():
            if not any(p in fname for p in prefixes):
                continue
            # outermost: no caller inside the same area
            if any(any(p in c[0] for p in prefixes) for c in callers):
                continue
            del func
            total += ct
        out[area] = round(total / steps * 1e6, 1)
    total_ct = sum(v[2] for v in stats.values())
    out["total_profiled"] = round(total_ct / steps * 1e6, 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run and print the JSON result."""
    ap = argparse.ArgumentParser(prog="python -m rlroute.env.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. workload=mmlu_mooncake")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--episode-length", type=int, default=512)
    ap.add_argument("--profile", action="store_true", help="cProfile split of the warm pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-episodes", type=int, default=0,
                    help="episodes on other seeds before a steady-state pass on unseen seeds")  # fmt: skip
    ap.add_argument("--cold-split", action="store_true", help="only the first pass, split by timed calls")
    args = ap.parse_args(argv)

    from rlroute.env.build import build_env, default_config

    cpu = time.process_time
    t = cpu()
    cfg = default_config([*args.overrides, f"episode_length={args.episode_length}"])
    env = build_env(cfg, split="train")
    build_s = cpu() - t
    seeds = [args.seed + k for k in range(args.episodes)]
    cold_timer = instrument(env) if args.cold_split else None
    t, w = cpu(), time.perf_counter()
    n1 = _episodes(env, seeds, np.random.default_rng(0))
    first_s, first_wall = cpu() - t, time.perf_counter() - w
    if cold_timer is not None:
        result_cold = {k: round(v / n1 * 1e6, 1) for k, v in cold_timer.totals.items()}
        result_cold["env_and_rest"] = round(first_wall / n1 * 1e6 - sum(result_cold.values()), 1)
        print(json.dumps({"cold_split_wall_us_per_step": result_cold, "cold_cpu_us_per_step": first_s / n1 * 1e6}))
        return {"cold_split_wall_us_per_step": result_cold}
    prof = cProfile.Profile() if args.profile else None
    t = cpu()
    if prof is not None:
        prof.enable()
    n2 = _episodes(env, seeds, np.random.default_rng(0))
    if prof is not None:
        prof.disable()
    warm_s = cpu() - t
    steady: dict[str, Any] = {}
    if args.warmup_episodes:
        # Training-like steady state: caches warmed on other seeds, measured on seeds never run before.
        t = cpu()
        _episodes(env, [10_000 + k for k in range(args.warmup_episodes)], np.random.default_rng(1))
        steady["warmup_cpu_s"] = round(cpu() - t, 2)
        t = cpu()
        n4 = _episodes(env, [20_000 + k for k in range(args.episodes)], np.random.default_rng(2))
        steady_s = cpu() - t
        steady["steady_steps_per_s"] = round(n4 / steady_s, 1)
        steady["steady_us_per_step"] = round(steady_s / n4 * 1e6, 1)
    result: dict[str, Any] = {
        "overrides": args.overrides,
        "episodes": args.episodes,
        "steps": n1,
        "build_cpu_s": round(build_s, 2),
        "steps_per_s": round(n1 / first_s, 1),
        "us_per_step": round(first_s / n1 * 1e6, 1),
        "warm_steps_per_s": round(n2 / warm_s, 1),
        "warm_us_per_step": round(warm_s / n2 * 1e6, 1),
        **steady,
    }
    if prof is not None:
        result["profiled_us_per_step"] = _split(prof, n2)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    # Split of a third pass (warm) by timed calls: wall time, so repeat on a loaded machine.
    timer = instrument(env)
    t, w = cpu(), time.perf_counter()
    n3 = _episodes(env, seeds, np.random.default_rng(0))
    cpu3, wall3 = cpu() - t, time.perf_counter() - w
    split = {k: round(v / n3 * 1e6, 1) for k, v in timer.totals.items()}
    split["env_and_rest"] = round(wall3 / n3 * 1e6 - sum(split.values()), 1)
    result["split_wall_us_per_step"] = split
    result["split_pass_cpu_us_per_step"] = round(cpu3 / n3 * 1e6, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
