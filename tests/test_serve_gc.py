"""``serve.gc``: the serving process freezes its start-up objects out of the garbage collector's generations
(``gc.freeze``, :func:`rlroute.gcsettings.tune_gc`) unless told not to, through a real ``rlroute serve``
process on loopback (its workers unreachable: only ``/metrics`` is read); the settings are parsed and bad
values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlroute.gcsettings import GEN0_THRESHOLD
from rlroute.serve.config import ServeConfigError, parse_config
from rlroute.serve.launch import RouterProc
from tests.test_serve import metric

NOWHERE = ["http://127.0.0.1:1"], ["http://127.0.0.1:2"]


@pytest.mark.parametrize("freeze", [True, False])
def test_the_router_freezes_its_start_up_objects_unless_told_not_to(tmp_path: Path, freeze: bool) -> None:
    with RouterProc(*NOWHERE, tmp_path / "router.log", ["log_level=error", f"gc.freeze={str(freeze).lower()}"]) as r:
        frozen = metric(r.url, "rlroute_router_gc_frozen_objects")
    assert (frozen > 10_000) if freeze else (frozen == 0), frozen


def test_gc_settings_are_parsed_and_bad_ones_named() -> None:
    base = {"pools": {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}}}
    cfg = parse_config(base)
    assert (cfg.gc_freeze, cfg.gc_gen0_threshold) == (True, GEN0_THRESHOLD)
    cfg = parse_config({**base, "gc": {"freeze": False, "gen0_threshold": 5000}})
    assert (cfg.gc_freeze, cfg.gc_gen0_threshold) == (False, 5000)
    with pytest.raises(ServeConfigError, match="serve.gc.freeze: expected true or false"):
        parse_config({**base, "gc": {"freeze": "yes"}})
    with pytest.raises(ServeConfigError, match="serve.gc.gen0_threshold: expected >= 1"):
        parse_config({**base, "gc": {"gen0_threshold": 0}})
    with pytest.raises(ServeConfigError, match="serve.gc: expected"):
        parse_config({**base, "gc": {"threshold": 5}})
