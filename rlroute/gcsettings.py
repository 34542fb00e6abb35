"""Garbage-collector settings of a process that routes requests, in one place: the router (``rlroute serve``,
once its startup has loaded the policy and the first scrapes are in) and ``rlroute bench decision`` (once its
setup and warm-up are done) both call :func:`tune_gc`, so the bench times a decision as the router runs it.

CPython's collector is on, as it must be (reference cycles are still freed); two settings change:

* :func:`gc.freeze` moves every object alive after startup (imported modules, the loaded policy, the feature
  tables, the config: hundreds of thousands of objects) to the permanent generation, so no later collection
  traverses them again: the oldest generation's collections scan only what was allocated since;
* the youngest generation's threshold goes from CPython's 700 to :data:`GEN0_THRESHOLD` net container
  allocations. A decision leaves a few container objects alive (its request's cached cues, the request-block
  memo's key: in ``rlroute bench decision`` about five per decision, 72 collections in 10,000 decisions), so
  with 700 a collection lands on one decision in ~140, each adding tens of microseconds: 0.7 % of the
  decisions, most of the slowest 1 % — the p99. With 10,000 it lands on one in ~2,000 (under 0.1 %).

Assumption (a parameter, not a fact): ``GEN0_THRESHOLD`` = 10,000 trades rarer collections for longer ones (a
young collection traverses up to that many objects: ~0.3-1 ms on this machine once in ~2,000 decisions, in
the p99.9 rather than the p99); the older generations keep CPython's thresholds (10, 10). Measured in
``experiments/benchmarks/README.md`` (the ``decision`` row).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def tune_gc(gen0: int = GEN0_THRESHOLD, freeze: bool = True) -> tuple[int, int, int]:
    """Freeze what is alive now (unless ``freeze`` is False: ``rlroute serve`` ``gc.freeze``) and raise the
    youngest generation's threshold to ``gen0``; returns the thresholds set. Call once, after startup
    (everything loaded) and before serving."""
    if gen0 < 1:
        raise ValueError(f"tune_gc: gen0 must be a positive number of allocations, got {gen0}")
    gc.collect()  # what startup left as garbage is freed now, not frozen
    if freeze:
        gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(gen0, g1, g2)
    return gen0, g1, g2
