"""The OOD guard through the real router: ``rlroute serve`` + emulated workers on loopback.

The policy is the parity bench's (``experiments/parity/policy``): its guard's statistics come from the
simulator's ``train`` split of the bench's setting and its thresholds from the ``val`` split — the
env's observations, which the router's now are (schema v2, ``rlroute bench parity``). The router runs on
the bench's pools (1 large + 2 small emulated workers, :class:`rlroute.bench.parity._Server`):

* a replayed window of held-out conversations (the ``all`` split) is mostly decided by the policy: the
  guard's refusals are counted exactly in ``/metrics``, and bounded loosely here (the false-positive rate
  is measured by ``experiments/parity/ood.py``: 0.8 %, 2.2 % and 1.07 % of 1,500 replayed decisions in
  three runs on a loaded host; a test asserts no rate);
* prompts repeated to ~40k and ~80k pseudo-tokens — length statistics unlike training (longest ~9k) —
  fall back with ``out_of_distribution``, counted in ``/metrics``, with the per-block drift gauges
  exported. Both lie beyond ``request.input_tokens``' cap (32,768), where the feature saturates: with
  training lengths up to ~9k the widened range reaches past the cap, and only the guard's saturation limit
  (``rlroute/export/ood.py``) tells them from typical prompts (without it neither was refused);
* ``ood.enabled=false`` serves the same long prompt with the policy;
* ``ood.enforce=false`` scores it (drift gauges) and counts the refusal it would have made
  (``rlroute_router_ood_unenforced_total``) but lets the policy decide; a bad value is named;
* a trace whose prompts are all repeated 8 times (each in range, their mean far from training's) is decided
  by the policy at first and refused once the guard's request window has filled, with the window's gauge
  (``rlroute_router_ood_drift{block="request_window"}``) above 1.

Slow (about a minute: 4 processes, ~70 requests). Every process is stopped by PID in a ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rlroute.bench import parity as P
from tests.test_serve import metric

N_TYPICAL, N_LONG, N_SHIFTED = 60, 6, 300
LONG_CHARS = (160_000, 320_000)  # ~40k and ~80k pseudo-tokens (4 bytes each), beyond the cap of 32,768
REASON = "out_of_distribution"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[P._Server]:
    s = P._Server(P.DEFAULT_POLICY, 10.0, tmp_path_factory.mktemp("ood-router"), None, guard=True)
    try:
        yield s
    finally:
        s.close()


def long_bodies(n: int) -> list[dict]:
    """``n`` held-out prompts, each repeated to at least ``LONG_CHARS`` characters (alternately)."""
    out = []
    for i, r in enumerate(P._window(n, 9.6, 21)):
        chars = LONG_CHARS[i % len(LONG_CHARS)]
        text = " ".join([r.prompt] * (chars // (len(r.prompt) + 1) + 1))
        out.append({"text": text, "sampling_params": {"max_new_tokens": 8}})
    return out


@pytest.mark.slow
def test_typical_traffic_is_decided_and_long_prompts_fall_back(server: P._Server) -> None:
    status = httpx.get(server.router.admin_url + "/admin/status", headers=server.auth, timeout=10).json()
    assert status["policy"]["ood"]["guarded"] is True
    reqs = P._client_requests(P._window(N_TYPICAL, 9.6, 11), exact=True)
    decided, _, _, _ = P._replay(server, reqs, 10.0)
    flagged = sum(d["reason"] == REASON for d in decided.values())
    assert metric(server.router.url, "rlroute_router_fallbacks_total", reason=REASON) == flagged
    assert sum(d["source"] == "policy" for d in decided.values()) >= 0.9 * N_TYPICAL, decided
    for body in long_bodies(N_LONG):
        resp = httpx.post(server.router.url + "/generate", json=body, timeout=120)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-rlroute-source"] == "fallback"
        assert resp.headers["x-rlroute-fallback-reason"] == REASON
    assert metric(server.router.url, "rlroute_router_fallbacks_total", reason=REASON) == flagged + N_LONG
    assert metric(server.router.url, "rlroute_router_ood_drift", block="request") > 0.0  # exported per block


@pytest.mark.slow
def test_guard_can_be_switched_off(server: P._Server, tmp_path: Path) -> None:
    """``ood.enabled=false`` serves a long prompt with the policy (no OOD fallback counted)."""
    from rlroute.serve.launch import RouterProc

    r = RouterProc(server.fleet.urls("large"), server.fleet.urls("small"), tmp_path / "router.log",
                   [f"policy.path={P.DEFAULT_POLICY}", "speedup=10.0", "ood.enabled=false"])
    try:
        resp = httpx.post(r.url + "/generate", json=long_bodies(1)[0], timeout=120)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-rlroute-source"] == "policy", resp.headers
        assert metric(r.url, "rlroute_router_fallbacks_total", reason=REASON) == 0
    finally:
        r.stop()


@pytest.mark.slow
def test_an_unenforced_guard_counts_its_refusals_and_lets_the_policy_decide(server: P._Server, tmp_path: Path) -> None:
    from rlroute.serve.launch import RouterProc

    r = RouterProc(server.fleet.urls("large"), server.fleet.urls("small"), tmp_path / "router.log",
                   [f"policy.path={P.DEFAULT_POLICY}", "speedup=10.0", "ood.enforce=false"])
    try:
        for body in long_bodies(2):
            resp = httpx.post(r.url + "/generate", json=body, timeout=120)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-rlroute-source"] == "policy", resp.headers
            assert "x-rlroute-fallback-reason" not in resp.headers
        assert metric(r.url, "rlroute_router_ood_unenforced_total") == 2
        assert metric(r.url, "rlroute_router_fallbacks_total", reason=REASON) == 0
        assert metric(r.url, "rlroute_router_ood_drift", block="request") > 0.0  # scored
    finally:
        r.stop()


def test_ood_enforce_must_be_a_bool() -> None:
    from rlroute.serve.config import ServeConfigError, parse_config

    base = {"pools": {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}}}
    assert parse_config(base).ood.enforce is True
    assert parse_config({**base, "ood": {"enforce": False}}).ood.enforce is False
    with pytest.raises(ServeConfigError, match="serve.ood.enforce: expected true or false"):
        parse_config({**base, "ood": {"enforce": "no"}})


@pytest.mark.slow
def test_a_shifted_trace_is_refused_once_the_request_window_fills(server: P._Server) -> None:
    status = httpx.get(server.router.admin_url + "/admin/status", headers=server.auth, timeout=10).json()
    if status["policy"]["ood"].get("request_window") is None and not status["policy"]["ood"]["calibration"].get(
            "window"):
        pytest.skip(f"{P.DEFAULT_POLICY} was exported without the guard's request window")
    before = metric(server.router.url, "rlroute_router_fallbacks_total", reason=REASON)
    shifted = []
    for r in P._window(N_SHIFTED, 9.6, 31):
        r.prompt = " ".join([r.prompt] * 8)
        shifted.append(r)
    decided, _, _, _ = P._replay(server, P._client_requests(shifted, exact=True), 10.0)
    reasons = [decided[i]["reason"] for i in range(N_SHIFTED)]
    late = reasons[2 * N_SHIFTED // 3:]  # a fresh window is damped until it holds ~180 decisions (ood.py)
    assert sum(r == REASON for r in late) >= 0.9 * len(late), [i for i, r in enumerate(reasons) if r != REASON]
    flagged = sum(r == REASON for r in reasons)
    assert metric(server.router.url, "rlroute_router_fallbacks_total", reason=REASON) == before + flagged
    assert metric(server.router.url, "rlroute_router_ood_drift", block="request_window") > 1.0
