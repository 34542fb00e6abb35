"""A 2 large + 2 small emulated-worker fleet on loopback, shared by the router test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec

LARGE, SMALL = "qwen3-235b-a22b-fp8__h100x8", "qwen3-4b__h100"


def four_workers(tmp_path_factory: pytest.TempPathFactory, speedup: float) -> Iterator[WorkerFleet]:
    """Start 2 large + 2 small workers; stop them (by PID) when the generator is closed, even on failure."""
    specs = [WorkerSpec("large", LARGE, speedup), WorkerSpec("large", LARGE, speedup),
             WorkerSpec("small", SMALL, speedup), WorkerSpec("small", SMALL, speedup)]
    fleet = WorkerFleet(specs, tmp_path_factory.mktemp("fleet"))
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


def worker_id(fleet: WorkerFleet, i: int) -> str:
    """The id ``rlroute serve`` gives worker ``i`` of ``fleet`` (``x-rlroute-worker``: pool and index within it)."""
    w = fleet.workers[i]
    return f"{w.spec.pool}-{fleet.urls(w.spec.pool).index(w.url)}"
