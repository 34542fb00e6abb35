"""The decision path's garbage-collector settings (rlroute.gcsettings): what tune_gc sets, and its bad input."""

from __future__ import annotations

import gc

import pytest

from rlroute.gcsettings import GEN0_THRESHOLD, tune_gc


def test_tune_gc_freezes_and_raises_the_young_threshold() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        alive = [[i] for i in range(1000)]  # tracked containers alive at "startup"
        assert tune_gc() == (GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() >= frozen + len(alive)
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tune_gc_rejects_a_non_positive_threshold() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(ValueError, match="gen0"):
        tune_gc(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_tune_gc_can_leave_the_objects_unfrozen() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    try:
        assert tune_gc(5000, freeze=False) == (5000, before[1], before[2])
        assert gc.get_freeze_count() == frozen
    finally:
        gc.set_threshold(*before)
