"""The OOD guard through the real router: ``rlroute serve`` + emulated workers on loopback.

A policy is exported from the synthetic workload (``rlroute export fresh=true``) with its guard's
statistics taken from what the router computes for that workload's prompts: the router's observations of
a served prompt are not yet the env's (issue 12 items 1–2: text path, live state), so statistics from env
rollouts would call every served request out of distribution. Those observations are recorded by real
``rlroute serve`` processes (guard off, ``ood.record``) over several router sessions — a router's first
decisions after start see cold live statistics — and the export's ``ood.obs_file`` turns them into
statistics and a calibration. Then a new ``rlroute serve`` with the guard on gets new prompts of the same
workload and the same prompts repeated to ~40k tokens — length statistics unlike training —
which must fall back with ``out_of_distribution``, counted in ``/metrics``, with the per-block drift gauges
exported; the long prompts lie beyond the training range of the length features.

Not asserted: that typical prompts are not flagged. Against a reference of 480 served observations, a new
router session on this shared 2-core machine flagged 7-65 % of typical prompts in our runs (the live
system and cache features of one session drift beyond a few hundred recorded ones; the calibration's
<= 1 % holds on thousands of env observations, test_ood.py and every export's manifest). The test counts
them exactly in ``/metrics`` instead; a served reference large enough to assert it is future work with
the router's observations made the env's (issue 12 items 1-3).
Slow (several minutes: ~500 requests through four router processes).

Every process a test starts is stopped by PID in a ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from rlroute.cluster.live.launch import WorkerFleet
from tests.fleet import four_workers
from tests.test_serve import metric, start_router

N_RECORD = 480  # router observations: half statistics, a quarter thresholds, a quarter false positives
N_IN, N_LONG = 30, 8
LONG_CHARS = 160_000  # ~40k pseudo-tokens (4 bytes each): beyond the longest synthetic prompt (~6k)


def prompts(n: int, seed: int) -> list[tuple[str, int]]:
    """``(prompt, max_new_tokens)`` of the synthetic workload's test split."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rlroute.cluster.live.launch import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config")
    out = []
    for r in instantiate(cfg.workload, split="test").requests(np.random.default_rng(seed)):
        out.append((str(r.prompt), int(min(r.output_len, 16))))
        if len(out) >= n:
            return out
    raise AssertionError("the synthetic workload ran out of requests")


def send(url: str, bodies: list[tuple[str, int]], min_chars: int = 0) -> list[httpx.Response]:
    """POST each prompt (repeated up to ``min_chars`` characters) to ``/generate`` in turn; each must be a 200."""
    out = []
    for text, max_new in bodies:
        body = {"text": " ".join([text] * (min_chars // (len(text) + 1) + 1)), "sampling_params": {"max_new_tokens": max_new}}
        resp = httpx.post(url + "/generate", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        out.append(resp)
    return out


def flush(fleet: WorkerFleet) -> None:
    """Empty every worker's prefix cache: each router session starts over the same worker state (the
    cache features would otherwise drift with the fleet's age, beyond the recorded reference)."""
    for url in fleet.urls("large") + fleet.urls("small"):
        assert httpx.post(url + "/flush_cache", timeout=10).status_code == 200


def router_observations(fleet: WorkerFleet, bodies: list[tuple[str, int]], folder: Path, sessions: int) -> np.ndarray:
    """Serve ``bodies`` through ``sessions`` consecutive ``rlroute serve`` processes (guard off) that record
    every observation they decide on (``ood.record``, written when the router stops)."""
    k = -(-len(bodies) // sessions)
    parts = []
    for i in range(0, len(bodies), k):
        path = folder / f"served-{i}.npy"
        flush(fleet)
        r = start_router(fleet, folder / f"record-{i}.log", "ood.enabled=false", f"ood.record={path}")
        try:
            send(r.url, bodies[i:i + k])
        finally:
            r.stop()
        parts.append(np.load(path))
        assert len(parts[-1]) == len(bodies[i:i + k])
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    yield from four_workers(tmp_path_factory, 500.0)


@pytest.fixture(scope="module")
def guarded_policy(fleet: WorkerFleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hydra import compose, initialize_config_dir

    from rlroute.cluster.live.launch import REPO
    from rlroute.export.cli import export_policy

    base = tmp_path_factory.mktemp("ood-policy")
    np.save(base / "served.npy", router_observations(fleet, prompts(N_RECORD, 0), base, sessions=4))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config")
    export_policy(base / "policy", cfg, fresh=True, n_verify=200, seed=0,
                  ood={"n_train": 500, "obs_file": str(base / "served.npy")})
    return base / "policy"


@pytest.mark.slow
def test_long_prompts_fall_back_as_out_of_distribution(fleet: WorkerFleet, guarded_policy: Path,
                                                       tmp_path: Path) -> None:
    import json

    manifest = json.loads((guarded_policy / "manifest.json").read_text())
    cal = manifest["ood"]["calibration"]
    assert cal["n_holdout"] == N_RECORD // 4 and cal["fpr_fit"] <= 0.01, cal
    flush(fleet)
    r = start_router(fleet, tmp_path / "router.log", f"policy.path={guarded_policy}")
    try:
        typical = prompts(N_IN, 1)  # other requests of the same workload
        flags = [x.headers.get("x-rlroute-fallback-reason") == "out_of_distribution" for x in send(r.url, typical)]
        flagged = sum(flags)
        assert metric(r.url, "rlroute_router_fallbacks_total", reason="out_of_distribution") == flagged
        for resp in send(r.url, typical[:N_LONG], min_chars=LONG_CHARS):
            assert resp.headers["x-rlroute-source"] == "fallback"
            assert resp.headers["x-rlroute-fallback-reason"] == "out_of_distribution"
        assert metric(r.url, "rlroute_router_fallbacks_total", reason="out_of_distribution") == flagged + N_LONG
        assert metric(r.url, "rlroute_router_ood_drift", block="request") > 0.0  # exported per block
        status = httpx.get(r.url + "/admin/status", headers={"Authorization": "Bearer test-admin-token"}, timeout=10)
        assert status.json()["policy"]["ood"]["guarded"] is True
    finally:
        r.stop()


@pytest.mark.slow
def test_guard_threshold_is_configurable(fleet: WorkerFleet, guarded_policy: Path, tmp_path: Path) -> None:
    """``ood.enabled=false`` serves the same long prompts with the policy (no OOD fallback counted)."""
    r = start_router(fleet, tmp_path / "router.log", f"policy.path={guarded_policy}", "ood.enabled=false")
    try:
        resp = send(r.url, prompts(1, 2), min_chars=LONG_CHARS)[0]
        assert resp.headers["x-rlroute-source"] == "policy", resp.headers
        assert metric(r.url, "rlroute_router_fallbacks_total", reason="out_of_distribution") == 0
    finally:
        r.stop()
