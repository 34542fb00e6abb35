"""The twin-corrected DR (rlroute/eval/ope_twin.py): on a bandit with known interference plain DR is biased and
``dr_twin`` is not; the step-time fit recovers a known profile from a log; the twin replays a log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlroute.eval.ope import estimate, main
from rlroute.eval.ope_twin import TwinSpec, design, dr_twin, fit_step_time, twin_runs

D = 4
THETA = np.array([[0.8, -0.5, 0.0, 0.3], [-0.2, 0.6, 0.4, 0.0], [0.1, 0.1, -0.6, 0.0]])
DELTA = 2.0  # reward lost per request for each unit of the share of traffic on action 0 (the one large pool)


def world(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Mean reward of each request when the whole stream is routed by ``a``: its own term, minus the
    interference of everyone's share on action 0 (the same request, same action, waits longer there)."""
    own = (x * THETA[a]).sum(axis=1)
    return own - DELTA * float((a == 0).mean()) * (a == 0)


def test_dr_twin_sees_interference_plain_dr_does_not() -> None:
    """A candidate that sends 3x the logged share to action 0; rewards carry that interference. Over 20 logs
    plain DR's interval of the difference misses the true difference on most logs (biased by the interference);
    dr_twin with a twin that predicts each request's reward in both worlds up to a level error the log can
    correct (its replay of the logged run is off by the same constant) centres on it and covers."""
    eps, n, draws, level = 0.3, 800, 20, 0.4
    rng = np.random.default_rng(0)
    dr_hit = tw_hit = 0
    dr_err, tw_err, dm_err = [], [], []
    for _ in range(draws):
        x = rng.normal(size=(n, D))
        base = np.where(x[:, 0] > 1.0, 0, 1)  # ~16 % on action 0
        a = np.where(rng.random(n) < eps, rng.integers(0, 3, n), base)
        p = (1 - eps) * (a == base) + eps / 3
        r = world(x, a) + rng.normal(0, 0.3, n)
        t = np.where(x[:, 0] > 0.0, 0, 1)  # ~50 % on action 0
        truth = float(world(x, t).mean() - r.mean())
        est = estimate(r, a, p, t, x, n_boot=200, rng=rng)["dr"]
        dr_hit += est["diff_lo"] <= truth <= est["diff_hi"]
        dr_err.append(est["diff"] - truth)
        # the twin: each request's mean reward under the candidate's stream and under the logged one, both off
        # by ``level`` (a misfit the residual corrects), 3 replicates with a little fit noise
        reps = 3
        noise = rng.normal(0, 0.02, (reps + 1, 1))
        rt_pi = world(x, t)[None, :] + level + noise
        rt_mu = world(x, a)[None, :] + level + noise
        w = (t == a) / p
        v, lv, boots, blog = dr_twin(r, w, rt_pi, rt_mu, 200, rng)
        lo, hi = np.percentile(boots - blog, [2.5, 97.5])
        tw_hit += lo <= truth <= hi
        tw_err.append(v - lv - truth)
        dm_err.append(float(rt_pi[0].mean()) - lv - truth)
    assert abs(np.mean(dr_err)) > 0.15 and dr_hit / draws < 0.5
    assert abs(np.mean(tw_err)) < 0.03 and tw_hit / draws >= 0.85
    assert np.mean(dm_err) == pytest.approx(level, abs=0.05)  # the direct term alone keeps the twin's misfit


def _log(tmp_path: Path, rate: float, n: int, large: str, small: str, seed: int = 0) -> Path:
    """A decision log of a random large/small router (ε = 1 over two actions) on the synthetic workload."""
    from rlroute.bench.replay import load_requests
    from rlroute.cluster.sim.cluster import SimCluster
    from rlroute.eval.ope_twin import drive, sim_pools
    from rlroute.offline.behaviour import sim_record, write_records

    reqs = load_requests(["workload=synthetic", f"workload.rate={rate}"], "val", n, seed)
    rng = np.random.default_rng(seed)
    rows: dict[int, tuple[np.ndarray, int]] = {}

    def decide(r, st, m, obs):  # type: ignore[no-untyped-def]
        a = int(rng.integers(0, 2))
        rows[r.id] = (obs.copy(), a)
        return a

    done = drive(SimCluster(pools=sim_pools({"large": (large, 1), "small": (small, 2)}), seed=0), reqs, decide)
    path = tmp_path / "log.jsonl"
    write_records(path, (sim_record(r.id, rows[r.id][0], rows[r.id][1], 0.5, done[r.id], True, request=r)
                         for r in reqs))
    return path


def test_fit_recovers_a_known_step_time(tmp_path: Path) -> None:
    """A log of a cluster whose pools run 4-term profiles: the step time fitted on the log's TTFT and TPOT
    predicts the true one within 25 % for decode batches of 1-8 sequences of 2k context on both pools."""
    from rlroute.cluster.profiles import load_profile
    from rlroute.workload.replay import load_log

    names = {"large": "qwen3-235b-a22b-fp8__h100x8.estimate", "small": "qwen3-4b__h100.estimate"}
    log = load_log(_log(tmp_path, 3.0, 400, names["large"], names["small"]))
    for pool, inst in (("large", 1), ("small", 2)):
        prof = load_profile(names[pool])
        a, b, c, d = fit_step_time(*design(log, pool, inst, prof.chunked_prefill_tokens))
        for batch in (1, 4, 8):
            fitted = a + c * batch + d * 2000 * batch
            assert fitted == pytest.approx(prof.step_time(0, batch, 2000 * batch), rel=0.25), (pool, batch)


def test_twin_replays_a_log_and_cli_reports_dr_twin(tmp_path: Path) -> None:
    """An oracle twin replays the logged actions close to the logged e2e (median per-request error < 5 %);
    ``rlroute ope --twin-pool`` reports dr_twin with an interval, the fitted twin's replicates included."""
    from rlroute.bench.ope import LARGE, SMALL
    from rlroute.bench.parity import DEFAULT_POLICY
    from rlroute.eval.ope import RewardSpec, load

    path = _log(tmp_path, 2.0, 200, LARGE, SMALL)
    lg = load(path, RewardSpec())
    pools = [f"large={LARGE}:1", f"small={SMALL}:2"]
    tw = twin_runs(path, DEFAULT_POLICY, dict(zip(lg.ids, lg.obs, strict=True)),
                   TwinSpec.parse(pools, 2, oracle=True, loop="open"))
    logged = {json.loads(line)["request_id"]: json.loads(line)["outcome"]["e2e_s"] for line in path.open()}
    e2e = np.array([logged[i] for i in tw.ids])
    assert np.median(np.abs(tw.mu["e2e"][0] / e2e - 1)) < 0.05
    out = main(["--log", str(path), "--policy", str(DEFAULT_POLICY), "--out", str(tmp_path / "rep"),
                "--bootstrap", "50", "--twin-pool", *pools, "--twin-reps", "2"])
    d = out["dr_twin"]
    assert d["difference_lo"] <= d["difference"] <= d["difference_hi"]
    res = json.loads((tmp_path / "rep" / "ope.json").read_text())
    assert res["twin"]["dr_twin"]["reps"] == 2 and set(res["twin"]["dr_twin"]["fit"]) == {"large", "small"}
    assert "dr_twin" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.parametrize(("items", "reps", "loop", "match"), [
    (["large=x:1"], 4, "both", "both pools"),
    (["large=x", "small=y:2"], 4, "both", "PROFILE:INSTANCES"),
    (["medium=x:1", "small=y:2"], 4, "both", "large|small"),
    (["large=x:1", "small=y:2"], 1, "both", "replicates"),
    (["large=x:1", "small=y:2"], 4, "half", "loop"),
])
def test_twin_spec_names_what_is_wrong(items: list[str], reps: int, loop: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TwinSpec.parse(items, reps, loop=loop)
