"""Drive a workload through a cluster with a fixed routing rule (no features, no learning).

Used by ``rlroute sim`` (with any registry policy, :func:`rlroute.eval.simulate.deciding`), ``rlroute
bench sim``, the simulator tests and the latency-vs-load study. The fixed rules here are context-free
(no state, no features) so the simulator benchmark times the simulator alone; they carry the names of the
registry's policies that do the same (``rlroute.policies.simple``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from rlroute.cluster.sim.cluster import SimCluster
from rlroute.types import Action, Completion, Request

FixedPolicy = Callable[[Request], int]


def _constant(a: Action) -> Callable[[np.random.Generator], FixedPolicy]:
    return lambda rng: (lambda req: int(a))


def _random(rng: np.random.Generator) -> FixedPolicy:
    draws = iter(())  # draw actions in blocks of 4096: one numpy call instead of one per decision

    def act(req: Request) -> int:
        nonlocal draws
        try:
            return next(draws)
        except StopIteration:
            draws = iter(rng.integers(0, 3, 4096).tolist())
            return next(draws)

    return act


def _round_robin(rng: np.random.Generator) -> FixedPolicy:
    state = {"i": -1}

    def act(req: Request) -> int:
        state["i"] = (state["i"] + 1) % 3
        return state["i"]

    return act


SIM_POLICIES: dict[str, Callable[[np.random.Generator], FixedPolicy]] = {
    "all_large": _constant(Action.LARGE),
    "all_small": _constant(Action.SMALL),
    "all_hybrid": _constant(Action.HYBRID),
    "random": _random,
    "round_robin": _round_robin,
}


def fixed_policy(name: str, rng: np.random.Generator) -> FixedPolicy:
    """A fixed routing rule by name (:data:`SIM_POLICIES`)."""
    if name not in SIM_POLICIES:
        raise ValueError(f"sim_policy must be one of {sorted(SIM_POLICIES)}, got {name!r}")
    return SIM_POLICIES[name](rng)


def run(cluster: SimCluster, requests: Iterable[Request], policy: FixedPolicy, quality: Any = None,
        rng: np.random.Generator | None = None, drain: bool = True) -> list[Completion]:
    """Advance to each arrival, route it with ``policy``, submit; optionally drain at the end.

    Args:
        cluster: the simulator.
        requests: in arrival order.
        policy: request -> action index.
        quality: optional ``QualityModel``; when given, ``request.quality`` is drawn before routing (it
            decides cascade escalation and ``Completion.quality_ok``).
        rng: generator for quality draws.
        drain: finish in-flight requests after the last arrival.
    """
    out: list[Completion] = []
    advance, submit = cluster.advance, cluster.submit
    if quality is not None and rng is None:
        rng = np.random.default_rng(0)
    for req in requests:
        out += advance(req.arrival)
        if quality is not None and req.quality is None:
            req.quality = quality.draw(req, rng)
        submit(req, policy(req))
    if drain:
        out += cluster.drain()
    return out
