"""Each baseline decides what its definition says on handmade decision contexts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlroute.cluster.base import ClusterState, InstanceState, PoolState
from rlroute.policies.base import DecisionContext
from rlroute.policies.common import allowed_actions, cache_score
from rlroute.policies.heuristic import CacheAwarePolicy, SeedHeuristic
from rlroute.policies.oracle import HindsightOracle
from rlroute.policies.registry import BASELINES, POLICIES, POLICY_CONF_DIR, make_policy, policy_config
from rlroute.policies.simple import AllHybrid, AllLarge, AllSmall, LengthCut, RandomPolicy, RoundRobinPolicy
from rlroute.types import Action, QualityDraw, Request

L, S, H = Action.LARGE, Action.SMALL, Action.HYBRID


def ctx(
    *,
    complexity: float = 0.0,
    match_large: tuple[int, ...] = (0, 0),
    match_small: tuple[int, ...] = (0, 0, 0, 0),
    load_large: tuple[int, ...] = (0, 0),
    load_small: tuple[int, ...] = (0, 0, 0, 0),
    large_up: bool = True,
    small_up: bool = True,
    ok: tuple[bool, bool, bool] = (True, True, True),
    mask: tuple[bool, bool, bool] | None = None,
    input_len: int = 1000,
) -> DecisionContext:
    """A context with the given per-instance prefix matches and loads (queued requests)."""
    req = Request(id=7, arrival=0.0, input_len=input_len, output_len=100, prompt="q")
    req.cache["complexity"] = complexity
    req.quality = QualityDraw(p=tuple(float(o) for o in ok), ok=ok)  # type: ignore[arg-type]
    pools = {
        "large": PoolState("large", [InstanceState(i, paused=not large_up, queued=q) for i, q in enumerate(load_large)]),
        "small": PoolState("small", [InstanceState(i, healthy=small_up, queued=q) for i, q in enumerate(load_small)]),
    }
    return DecisionContext(
        request=req,
        state=ClusterState(time=0.0, pools=pools),
        matches={"large": list(match_large), "small": list(match_small)},
        obs=np.zeros(224, dtype=np.float32),
        mask=None if mask is None else np.array(mask),
    )


def fake_complexity(req: Request) -> float:
    return float(req.cache["complexity"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"complexity": 0.9}, L),  # complex → large
        ({"complexity": 0.7}, S),  # not strictly above 0.7
        ({"complexity": 0.2}, S),  # simple, no cache difference → small
        ({"complexity": 0.2, "match_large": (0, 500)}, L),  # large cache 0.5 beats small 0 by > 0.3
        ({"complexity": 0.2, "match_large": (0, 500), "match_small": (0, 300, 0, 0)}, S),  # 0.5 - 0.3 < 0.3
        ({"complexity": 0.9, "large_up": False}, S),  # large paused → small
        ({"complexity": 0.1, "small_up": False}, L),  # small unhealthy → large
        ({"complexity": 0.9, "mask": (False, True, False)}, S),  # the env's mask wins
    ],
)
def test_seed_heuristic(kwargs: dict, expected: Action) -> None:
    assert SeedHeuristic(complexity_fn=fake_complexity).act(ctx(**kwargs)) == expected


def test_cache_score_skips_paused_instances() -> None:
    c = ctx(match_large=(900, 0), large_up=False)
    assert cache_score(c, "large") == 0.0
    assert cache_score(ctx(match_small=(0, 250, 0, 0)), "small") == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, S),  # no affinity, equal load → cheaper pool
        ({"match_large": (600, 0)}, L),  # affinity to large
        ({"match_small": (0, 0, 0, 800)}, S),
        ({"load_small": (20, 20, 20, 20)}, L),  # small pool overloaded → large
        ({"load_large": (30, 30), "match_large": (900, 900)}, S),  # imbalance overrides affinity
        ({"load_large": (2, 2), "match_large": (100, 0)}, S),  # no affinity: less-loaded pool
        ({"match_large": (900, 0), "large_up": False}, S),
    ],
)
def test_cache_aware(kwargs: dict, expected: Action) -> None:
    assert CacheAwarePolicy().act(ctx(**kwargs)) == expected


@pytest.mark.parametrize(
    ("ok", "expected"),
    [
        ((True, True, True), S),
        ((True, False, True), H),
        ((True, False, False), L),
        ((False, False, False), L),  # nothing acceptable → large
        ((False, False, True), H),
    ],
)
def test_oracle_cheapest_acceptable(ok: tuple[bool, bool, bool], expected: Action) -> None:
    assert HindsightOracle().act(ctx(ok=ok)) == expected


def test_oracle_prices_actions_when_it_can() -> None:
    # Input-heavy request: hybrid (large prefill + small) costs more than large.
    prices = {L: 4.0, S: 1.0, H: 5.0}
    oracle = HindsightOracle(price_fn=lambda req, a: prices[a])
    assert oracle.act(ctx(ok=(True, False, True))) == L
    assert oracle.act(ctx(ok=(True, True, True))) == S
    assert HindsightOracle(priced=False, price_fn=lambda req, a: prices[a]).act(ctx(ok=(True, False, True))) == H

    class Env:
        def expected_cost(self, req: Request, a: Action) -> float:
            return prices[a]

    bound = HindsightOracle()
    bound.bind_env(Env())
    assert bound.act(ctx(ok=(True, False, True))) == L


def test_oracle_respects_availability_and_needs_draw() -> None:
    assert HindsightOracle().act(ctx(ok=(True, False, True), large_up=False)) == S  # hybrid needs large
    assert HindsightOracle(use_hybrid=False).act(ctx(ok=(True, False, True))) == L
    c = ctx()
    c.request.quality = None
    with pytest.raises(ValueError, match="no quality draw"):
        HindsightOracle().act(c)


@pytest.mark.parametrize(
    ("policy", "kwargs", "expected"),
    [
        (AllLarge(), {}, L),
        (AllSmall(), {}, S),
        (AllHybrid(), {}, H),
        (AllLarge(), {"large_up": False}, S),
        (AllSmall(), {"small_up": False}, L),
        (AllHybrid(), {"small_up": False}, L),
        (AllHybrid(), {"large_up": False}, S),
    ],
)
def test_fixed_policies(policy: object, kwargs: dict, expected: Action) -> None:
    assert policy.act(ctx(**kwargs)) == expected  # type: ignore[attr-defined]


def test_round_robin_alternates_and_skips() -> None:
    rr = RoundRobinPolicy()
    rr.reset(np.random.default_rng(0))
    assert [rr.act(ctx()) for _ in range(4)] == [L, S, L, S]
    assert [rr.act(ctx(large_up=False)) for _ in range(3)] == [S, S, S]


def test_random_is_seeded_and_respects_mask() -> None:
    def draws(seed: int, **kw: object) -> list[Action]:
        p = RandomPolicy()
        p.reset(np.random.default_rng(seed))
        return [p.act(ctx(**kw)) for _ in range(300)]  # type: ignore[arg-type]

    a = draws(1)
    assert a == draws(1) and set(a) == {L, S, H}
    assert abs(a.count(L) / 300 - 1 / 3) < 0.1
    assert set(draws(2, large_up=False)) == {S}


def test_mask_shape_is_checked() -> None:
    c = ctx()
    c.mask = np.array([True, False])
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        allowed_actions(c)


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_has_a_config_and_builds(name: str) -> None:
    cfg = policy_config(name)
    assert cfg is not None and cfg["_target_"].startswith("rlroute.policies.")
    policy = make_policy(name)
    assert policy.name == name
    assert name in POLICIES


def test_length_cut_routes_one_side_of_the_cut_large_and_respects_availability() -> None:
    short, long_ = LengthCut(cut_tokens=512, large_when="short"), LengthCut(cut_tokens=512, large_when="long")
    assert [short.act(ctx(input_len=n)) for n in (100, 512, 513, 4000)] == [L, L, S, S]  # the cut is inclusive
    assert [long_.act(ctx(input_len=n)) for n in (100, 512, 513, 4000)] == [S, S, L, L]
    assert short.act(ctx(input_len=100, large_up=False)) == S  # the large pool down: moved, not lost
    for bad, match in (({"cut_tokens": -1}, "cut_tokens"), ({"large_when": "both"}, "large_when"),
                       ({"cut_tokens": float("nan")}, "cut_tokens")):
        with pytest.raises(ValueError, match=f"length_cut.{match}"):
            LengthCut(**bad)  # type: ignore[arg-type]


def test_make_policy_overrides_and_errors() -> None:
    p = make_policy("heuristic", complexity_threshold=0.5)
    assert isinstance(p, SeedHeuristic) and p.complexity_threshold == 0.5
    assert make_policy({"_target_": "rlroute.policies.simple.FixedPolicy", "action": 1}).act(ctx()) == S
    with pytest.raises(KeyError, match="unknown policy 'nope'"):
        make_policy("nope")
    with pytest.raises(Exception, match="heuristic.complexity_threshold"):  # Hydra wraps the ValueError
        make_policy("heuristic", complexity_threshold=3)
    assert Path(POLICY_CONF_DIR / "heuristic.yaml").exists()


@pytest.mark.parametrize(("input_len", "max_new", "expected"), [(30000, 4000, L), (100, 50, S)])
def test_seed_heuristic_uses_the_features_complexity(input_len: int, max_new: int, expected: Action) -> None:
    from rlroute.features import complexity

    c = ctx(input_len=input_len)
    c.request.prompt, c.request.token_ids = None, tuple(range(input_len))  # input_ids only: lengths alone
    c.request.cache.clear()
    c.request.max_new_tokens = max_new
    assert (complexity(c.request) > 0.7) == (expected == L)
    assert SeedHeuristic().act(c) == expected


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_registry_entry_resolves_and_has_a_config(name: str) -> None:
    from rlroute.policies.registry import policy_class

    cls = policy_class(name)
    assert callable(getattr(cls, "act", None)) and callable(getattr(cls, "reset", None))
    cfg = policy_config(name)
    assert cfg is not None and cfg["_target_"] == f"{cls.__module__}.{cls.__qualname__}"
