"""The router's approximate prefix trees (``rlroute.cluster.router_view``), the simulator's router-view option
and the one class shared by the simulator and the live router."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rlroute.cluster.inpool import CacheAware
from rlroute.cluster.live.pool import LivePool
from rlroute.cluster.router_view import MAX_TREE_TOKENS, RouterView, RouterViewConfig
from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.serve.config import ServeConfigError, parse_config
from rlroute.types import Action, Request

BS = 16
CA = {"_target_": "rlroute.cluster.inpool.CacheAware"}


def req(rid: int, blocks: tuple[int, ...], arrival: float = 0.0) -> Request:
    return Request(id=rid, arrival=arrival, input_len=len(blocks) * BS, output_len=4, blocks=blocks, block_size=BS)


def test_insert_and_match_count_leading_blocks_per_worker() -> None:
    v = RouterView(2)
    v.insert(0, (1, 2, 3), BS, now=0.0, prompt_tokens=3 * BS)
    assert v.tokens == [3 * BS, 0]
    assert v.match((1, 2, 3, 4), BS, covered=4 * BS, now=0.0) == [3 * BS, 0]
    assert v.match((1, 2, 9, 10, 11), BS, covered=5 * BS, now=0.0) == [2 * BS, 0]
    assert v.match((1, 2, 3), BS, covered=40, now=0.0) == [40, 0]  # capped at the prompt tokens covered
    assert v.match((5, 2), BS, covered=2 * BS, now=0.0) == [0, 0]  # chained ids: another first block
    v.insert(0, (1, 2, 7), BS, now=1.0, prompt_tokens=3 * BS)  # a shared prefix adds only the new block
    assert v.tokens[0] == 4 * BS
    v.insert(1, (), BS, now=1.0, prompt_tokens=5)  # shorter than a block: no block, but the tree grows
    assert v.tokens == [4 * BS, 5] and v.match((), BS, 5, 1.0) == [0, 0]
    # bisection agrees with a linear walk on every prefix length
    path = tuple(range(100, 140))
    v.insert(1, path[:23], BS, now=2.0)
    for n in range(1, 41):
        assert v.match(path[:n], BS, n * BS, 2.0)[1] == min(n, 23) * BS


def test_trim_runs_on_the_interval_and_drops_least_recent_leaves_first() -> None:
    v = RouterView(1, RouterViewConfig(eviction_interval_s=10.0, max_tree_tokens=4 * BS))
    v.insert(0, (1, 2, 3), BS, now=1.0)
    v.insert(0, (1, 2, 4, 5), BS, now=2.0)  # tree: 1, 2, 3, 4, 5 = 5 blocks > 4
    assert v.tokens[0] == 5 * BS and v.trims == 0  # over the limit, but no trim before the interval
    assert v.match((1, 2, 3), BS, 3 * BS, now=9.9) == [3 * BS]
    assert v.match((1, 2, 3), BS, 3 * BS, now=10.0) == [2 * BS]  # the trim at t=10 took leaf 3 (least recent)
    assert v.trims == 1 and v.tokens[0] == 4 * BS and v.next_trim == 20.0
    assert v.match((1, 2, 4, 5), BS, 4 * BS, now=10.0) == [4 * BS]  # the newer path is whole
    v.insert(0, (1, 2, 4, 5, 6, 7), BS, now=11.0)  # 6 blocks, all touched at once: leaves go first
    assert v.match((1,), BS, BS, now=20.0) == [BS] and v.tokens[0] == 4 * BS
    assert v.match((1, 2, 4, 5, 6), BS, 5 * BS, now=20.0) == [4 * BS]


def test_trim_and_match_agree_with_a_plain_sort_and_walk_on_random_trees() -> None:
    """The trim sorts only the candidates and match skips the bisection when the second block is absent: both
    must pick exactly what a full stable sort (reverse insertion order, then time) and a linear walk pick."""
    from operator import itemgetter

    rng = np.random.default_rng(7)
    cfg = RouterViewConfig(eviction_interval_s=5.0, max_tree_tokens=60 * BS)
    v, ref = RouterView(3, cfg), RouterView(3, cfg)
    paths = [tuple(range(b * 1000, b * 1000 + 40)) for b in range(4)]  # chained: an id names its prefix
    removed = 0
    for step in range(600):
        now = float(step // 3)  # equal times within a step: ties between paths and depths
        k = int(rng.integers(3))
        blocks = paths[int(rng.integers(4))][: int(rng.integers(1, 41))]
        ref.tokens = list(v.tokens)  # same trees so far (asserted below): the same sizes
        if now >= ref.next_trim:  # the reference trim: every item sorted
            ref.next_trim = (now // 5.0 + 1) * 5.0
            for j, tree in enumerate(ref.trees):
                if ref.tokens[j] > cfg.max_tree_tokens:
                    items = list(tree.items())
                    items.reverse()
                    items.sort(key=itemgetter(1))
                    for block, _ in items[: -(-(ref.tokens[j] - cfg.max_tree_tokens) // BS)]:
                        del tree[block]
                        removed += 1
        want = [next((i for i, b in enumerate(blocks) if b not in t), len(blocks)) * BS for t in ref.trees]
        assert v.match(blocks, BS, len(blocks) * BS, now) == want
        v.insert(k, blocks, BS, now, len(blocks) * BS)
        ref.trees[k].update(dict.fromkeys(blocks, now))
        assert v.trees == ref.trees and [list(t) for t in v.trees] == [list(t) for t in ref.trees]
    assert v.trims == 39 and removed > 500


def test_defaults_are_sglang_routers() -> None:
    cfg = RouterViewConfig()
    assert cfg.enabled and cfg.eviction_interval_s == 120.0 and cfg.max_tree_tokens == MAX_TREE_TOKENS == 2**24


@pytest.mark.parametrize(("raw", "message"), [
    ({"eviction_interval_s": 0}, "eviction_interval_s must be > 0"),
    ({"max_tree_size": 5}, r"unknown keys \['max_tree_size'\]"),
    ([1], "expected a mapping"),
])
def test_bad_settings_name_the_key(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouterViewConfig.from_config(raw, "cluster.router_view")  # type: ignore[arg-type]


def two_small(router_view: dict | None = None) -> SimCluster:
    # one small instance's KV holds 64 blocks of 16 tokens: a 48-block prompt evicts most of an earlier one
    pools = {"small": {"profile": "qwen3-4b__h100", "instances": 1, "in_pool": CA,
                       "cache": {"kv_capacity_tokens": 64 * BS, "eviction": "lru"}}}
    return SimCluster(pools=pools, router_view=router_view)


@pytest.mark.parametrize("enabled", [True, False])
def test_router_view_never_sees_evictions_while_hits_come_from_the_engine(enabled: bool) -> None:
    cl = two_small({"enabled": enabled})
    a = req(0, tuple(range(1000, 1040)))                    # 40 blocks
    b = req(1, tuple(range(2000, 2048)), arrival=100.0)     # 48 more: the engine must evict most of a
    again = req(2, a.blocks, arrival=200.0)
    for r in (a, b):
        cl.advance(r.arrival)
        cl.submit(r, Action.SMALL)
    cl.advance(again.arrival)
    engine = cl.pools["small"].instances[0].cache.match_len(again.blocks)
    assert engine * BS < 20 * BS, "the engine evicted a's prefix"
    m = cl.prefix_match(again)["small"][0]
    if enabled:
        assert m == again.input_len  # the router still believes a is cached
    else:
        assert m == engine * BS
    cl.submit(again, Action.SMALL)
    done = {c.request_id: c for c in cl.drain()}
    assert done[2].cached_tokens <= engine * BS + BS  # hit accounting: what the engine really held


def test_router_view_on_and_off_change_matches_not_accounting_rules() -> None:
    reqs = conversation_requests(400, 20.0, np.random.default_rng(5))
    out = {}
    for enabled in (True, False):
        cl = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 3, "in_pool": CA}},
                        router_view={"enabled": enabled}, seed=0)
        assert (cl.pools["small"].view is not None) is enabled
        comps = []
        for r in reqs:
            comps += cl.advance(r.arrival)
            m = cl.prefix_match(r)["small"]
            if enabled:
                assert m == cl.pools["small"].view.match(r.blocks, r.block_size, min(len(r.blocks) * r.block_size, r.input_len), cl.now)  # type: ignore[union-attr]
            cl.submit(r, Action.SMALL)
        comps += cl.drain()
        assert len(comps) == len(reqs) and not any(c.failed for c in comps)
        out[enabled] = sum(c.cached_tokens for c in comps)
    assert out[True] > 0 and out[False] > 0


def test_flush_clears_the_view_but_a_failure_does_not() -> None:
    cl = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 2, "in_pool": CA}})
    r = req(0, (1, 2, 3))
    cl.submit(r, Action.SMALL)
    cl.drain()
    view = cl.pools["small"].view
    assert view is not None and sum(view.tokens) == 3 * BS
    cl.fail_instance("small", 0)
    cl.fail_instance("small", 1)
    assert sum(view.tokens) == 3 * BS  # the router never sees what a worker lost
    cl.flush_cache("small")
    assert view.tokens == [0, 0]


def test_live_pool_and_simulator_share_the_class_and_the_settings() -> None:
    rv = RouterViewConfig(eviction_interval_s=30.0, max_tree_tokens=1000)
    live = LivePool("small", {"urls": ["http://127.0.0.1:1", "http://127.0.0.1:2"], "in_pool": CA},
                    np.random.default_rng(0), rv)
    sim = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 2, "in_pool": CA}},
                     router_view={"eviction_interval_s": 30.0, "max_tree_tokens": 1000})
    assert type(live.view) is type(sim.pools["small"].view) is RouterView
    assert live.view.cfg == sim.pools["small"].view.cfg == rv  # type: ignore[union-attr]
    assert isinstance(live.policy, CacheAware) and isinstance(sim.pools["small"].policy, CacheAware)
    # same routed history -> same estimates in both
    r = req(0, (1, 2, 3))
    live.view.insert(1, r.blocks, BS, 0.0)
    sim.submit(r, Action.SMALL)
    k = sim.drain()[0].instances[0]
    assert live.match(r, r.input_len, 0.0)[1] == sim.prefix_match(req(1, r.blocks))["small"][k] == r.input_len


def test_serve_router_view_settings_are_parsed_and_off_is_refused() -> None:
    base = {"pools": {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}}}
    cfg = parse_config({**base, "router_view": {"enabled": True, "eviction_interval_s": 60, "max_tree_tokens": 99}})
    assert cfg.router_view == RouterViewConfig(True, 60.0, 99)
    with pytest.raises(ServeConfigError, match="serve.router_view.enabled"):
        parse_config({**base, "router_view": {"enabled": False}})


@pytest.mark.parametrize("old", [2, 3, 4])
def test_exports_of_older_schemas_are_refused_by_hash(tmp_path: Path, old: int) -> None:
    """Schema v3 changed the cache block's meaning in training (router-view matches), v4 the request block's
    (one text path: features of the body a client sends), v5 one system feature per pool (reply_tokens): a
    policy exported under an older version (here: today's names and transforms, older version) must not load."""
    from rlroute.bench.parity import DEFAULT_POLICY
    from rlroute.features import SCHEMA
    from rlroute.features.schema import SCHEMA_VERSION, FeatureSchema
    from rlroute.policies.onnx import OnnxPolicy, PolicyLoadError

    assert SCHEMA_VERSION == 5
    older = FeatureSchema(list(SCHEMA.features), version=old)
    assert older.hash != SCHEMA.hash
    folder = tmp_path / f"v{old}"
    shutil.copytree(DEFAULT_POLICY, folder)
    OnnxPolicy(folder)  # the committed default export is v5 and loads
    m = json.loads((folder / "manifest.json").read_text())
    m["feature_schema"].update(version=old, hash=older.hash)
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PolicyLoadError) as err:
        OnnxPolicy(folder)
    assert err.value.reason == "schema_mismatch"
