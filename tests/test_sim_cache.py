"""Exact prefix-cache accounting on handmade prefix workloads: hits, misses, evictions and their order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.prefix_cache import PrefixCache
from rlroute.types import Action, Request

BS = 10


def use(cache: PrefixCache, blocks: tuple[int, ...], t_in: float, t_out: float) -> int:
    """Pin ``blocks`` (all full blocks) at ``t_in``, release at ``t_out``; return blocks matched."""
    pins, m, _ = cache.acquire(blocks, BS, BS * len(blocks), t_in)
    cache.release(pins, t_out)
    return m


def history(cache: PrefixCache) -> list[int]:
    """A=(1,2) used twice, B=(3,4) once (older), C=(5,6) once (newest); returns the matches seen."""
    return [use(cache, (1, 2), 0, 1), use(cache, (3, 4), 2, 3), use(cache, (1, 2), 4, 5), use(cache, (5, 6), 6, 7)]


@pytest.mark.parametrize(
    ("policy", "ttl", "victims"),
    [
        ("lru", None, [3, 4, 1, 2]),  # least recently used: B (last 3), then A (last 5)
        ("lfu", None, [3, 4, 5, 6]),  # least frequently used: B and C once; B older first
        ("ttl", 100.0, [3, 4, 1, 2]),  # ttl falls back to recency under capacity pressure
    ],
)
def test_capacity_eviction_order(policy: str, ttl: float | None, victims: list[int]) -> None:
    cache = PrefixCache(policy, ttl, log_evictions=True)
    assert history(cache) == [0, 0, 2, 0]
    assert cache.total_tokens == cache.free_tokens == 60
    cache.make_room(1)  # one whole segment goes
    cache.make_room(1)
    assert cache.eviction_log == victims
    assert cache.evicted_blocks == 4 and cache.evicted_tokens == 40
    assert cache.total_tokens == 20
    remaining = ({1, 2, 3, 4, 5, 6} - set(victims))
    assert set(cache.nodes) == remaining


@pytest.mark.parametrize(("policy", "ttl"), [("ttl", 3.0), ("lru", 3.0), ("lfu", 3.0)])
def test_ttl_expiry_order_and_no_match_after_expiry(policy: str, ttl: float) -> None:
    cache = PrefixCache(policy, ttl, log_evictions=True)
    history(cache)  # releases: B at 3, A at 5, C at 7
    cache.expire(7.9)  # limit 4.9: only B is 3 s old
    assert cache.eviction_log == [3, 4] and cache.expired_blocks == 2
    cache.expire(8.0)  # limit 5.0: A (released at 5) expires too
    assert cache.eviction_log == [3, 4, 1, 2]
    assert cache.match_len((1, 2)) == 0 and cache.match_len((5, 6)) == 2
    cache.expire(100.0)
    assert cache.total_tokens == 0 and cache.expired_blocks == 6


def test_pinned_blocks_are_never_evicted_or_expired() -> None:
    cache = PrefixCache("ttl", 1.0, log_evictions=True)
    pins, m, new = cache.acquire((1, 2, 3), BS, 25, 0.0)  # last block partial: 5 tokens
    assert (m, new, cache.total_tokens, cache.free_tokens) == (0, 25, 25, 0)
    cache.make_room(10**6)
    cache.expire(10**6)
    assert cache.eviction_log == [] and cache.match_len((1, 2, 3)) == 3
    cache.release(pins, 5.0)
    assert cache.free_tokens == 25
    assert cache.probe((1, 2, 3)) == (3, 25)


def test_partial_match_splits_segment_and_evicts_leaves_first() -> None:
    cache = PrefixCache("lru", log_evictions=True)
    use(cache, (1, 2, 3, 4), 0, 1)
    pins, m, new = cache.acquire((1, 2, 7), BS, 30, 2.0)  # shares 2 blocks, then diverges
    assert (m, new) == (2, 10)
    assert cache.probe((1, 2, 3, 4)) == (4, 20)  # (3,4) tail is evictable, (1,2) is pinned
    cache.make_room(1)
    assert cache.eviction_log == [3, 4]  # the stale branch goes first; the pinned prefix stays
    cache.release(pins, 3.0)
    cache.make_room(1)
    cache.make_room(1)
    assert cache.eviction_log == [3, 4, 7, 1, 2]  # leaf (7) before its parent (1,2)


def test_release_follows_splits_made_while_pinned() -> None:
    cache = PrefixCache("lru")
    p1, _, _ = cache.acquire((1, 2, 3, 4), BS, 40, 0.0)
    p2, m, _ = cache.acquire((1, 2, 9), BS, 30, 1.0)  # splits the pinned (1,2,3,4)
    assert m == 2
    cache.release(p1, 2.0)
    assert cache.free_tokens == 20  # (3,4) is free, (1,2) is still pinned by the second request
    cache.release(p2, 3.0)
    assert cache.free_tokens == cache.total_tokens == 50


def test_flush_detaches_pinned_blocks() -> None:
    cache = PrefixCache("lru")
    use(cache, (1, 2), 0, 1)
    pins, _, _ = cache.acquire((5, 6), BS, 20, 2.0)
    cache.flush()
    assert cache.match_len((1, 2)) == 0 and cache.match_len((5, 6)) == 0
    assert cache.total_tokens == 20  # the running request still holds its KV
    cache.release(pins, 3.0)
    assert cache.total_tokens == 0 and cache.free_tokens == 0


def one_instance(eviction: str, kv_tokens: int, ttl: float | None = None) -> SimCluster:
    return SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 1,
                                       "cache": {"eviction": eviction, "ttl_s": ttl, "kv_capacity_tokens": kv_tokens}}},
                      log_evictions=True)


@pytest.mark.parametrize("eviction", ["lru", "lfu"])
def test_cluster_cached_tokens_are_exact(eviction: str) -> None:
    """Requests one after another on one instance: each completion's cached tokens follow the blocks."""
    cl = one_instance(eviction, kv_tokens=10_000)
    reqs = [((1, 2, 3), 30), ((1, 2, 4), 30), ((1, 2, 3), 30), ((1, 2, 3, 5), 35), ((8,), 10)]
    expected = [0, 20, 29, 30, 0]  # a full match still recomputes the last prompt token
    got = []
    for k, (blocks, n) in enumerate(reqs):
        cl.submit(Request(id=k, arrival=10.0 * k, input_len=n, output_len=4, blocks=blocks, block_size=BS),
                  Action.SMALL)
        got += cl.advance(10.0 * k + 9.0)
    assert [c.cached_tokens for c in got] == expected
    cache = cl.pools["small"].instances[0].cache
    assert cache.hit_tokens == sum(expected)
    assert cache.miss_tokens == sum(n for _, n in reqs) - sum(expected)
    assert cache.hit_blocks == 0 + 2 + 3 + 3 + 0
    assert cache.evicted_blocks == 0


def test_cluster_evicts_under_kv_pressure_in_lru_order() -> None:
    """KV pool of 48 tokens: each request needs 20 prompt + 4 output tokens; old prefixes make room."""
    cl = one_instance("lru", kv_tokens=48)
    for k, blocks in enumerate([(1, 2), (3, 4), (5, 6), (1, 2), (7, 8)]):
        cl.submit(Request(id=k, arrival=10.0 * k, input_len=20, output_len=4, blocks=blocks, block_size=BS),
                  Action.SMALL)
        cl.advance(10.0 * k + 9.0)
    cache = cl.pools["small"].instances[0].cache
    # (1,2),(3,4) fit (44 of 48); (5,6) -> evict (1,2); (1,2) again misses -> evict (3,4);
    # (7,8) -> evict (5,6) (released before the second (1,2))
    assert cache.eviction_log == [1, 2, 3, 4, 5, 6]
    assert cache.hit_tokens == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_match_agrees_with_cache_probe(seed: int) -> None:
    """The pool's inlined multi-instance match equals each cache's probe on random chained prefixes."""
    import numpy as np

    from rlroute.cluster.sim.synthetic import conversation_requests

    rng = np.random.default_rng(seed)
    reqs = conversation_requests(300, 20.0, rng, block_size=BS * 50)
    cl = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 4,
                                     "in_pool": {"_target_": "rlroute.cluster.inpool.RoundRobin"}}},
                    router_view={"enabled": False})  # matches from the engines' caches
    pool = cl.pools["small"]
    for r in reqs:
        cl.advance(r.arrival)
        got = cl.prefix_match(r)["small"]
        covered = min(len(r.blocks) * r.block_size, r.input_len)
        want = []
        for inst in pool.instances:
            m = inst.cache.probe(r.blocks)[0]
            want.append(covered if m == len(r.blocks) else m * r.block_size)
        assert got == want
        cl.submit(r, Action.SMALL)
    assert any(max(cl.prefix_match(r)["small"]) > 0 for r in reqs[-50:])


@pytest.mark.parametrize("router_view", [False, True])
@pytest.mark.parametrize("kind", ["sglang", "legacy"])
@pytest.mark.parametrize("insert", [True, False])
def test_next_turn_hits_its_own_previous_answer(kind: str, insert: bool, router_view: bool) -> None:
    """Turn 1 (1000-token prompt, 200-token answer, 64-token blocks) finishes; its answer's full blocks
    (depths 15-17) enter the cache, so turn 2 (prompt = turn 1 + answer + 100 new tokens) matches 18
    blocks, not only turn 1's 15 full prompt blocks. The router's view never sees answers (it records
    prompts it routed): it matches 15 blocks while the engine's hit is the same."""
    bs = 64
    prompt1 = tuple(range(1, 17))  # 15 full blocks + the partial block 16 (1000 = 15 * 64 + 40)
    answer = (100, 101, 102)  # (1000 + 200) // 64 = 18 full blocks of prompt + answer
    t1 = Request(id=0, arrival=0.0, input_len=1000, output_len=200, blocks=prompt1, block_size=bs,
                 output_blocks=answer)
    t2 = Request(id=1, arrival=100.0, input_len=1300, output_len=5, block_size=bs,
                 blocks=prompt1[:15] + answer + (200, 201, 202))  # ceil(1300 / 64) = 21 blocks
    cl = SimCluster(pools={"small": {"profile": "qwen3-4b__h100", "instances": 1, "scheduler": {"kind": kind},
                                     "cache": {"insert_outputs": insert}}}, router_view={"enabled": router_view})
    cl.submit(t1, Action.SMALL)
    assert cl.advance(t2.arrival)
    want = 18 * bs if insert else 15 * bs
    assert cl.prefix_match(t2)["small"] == [15 * bs if router_view else want]
    cl.submit(t2, Action.SMALL)
    (c,) = cl.drain()
    assert c.cached_tokens == want
    cache = cl.pools["small"].instances[0].cache
    # prompt blocks (1000 tokens incl. the partial one) + the answer's 3 blocks, then turn 2's new blocks
    assert cache.total_tokens == 1000 + (3 * bs if insert else 0) + (1300 - want)


def test_workload_output_blocks_are_the_next_turns_prompt_blocks() -> None:
    """Synthetic conversations, Mooncake-like generator and text workload at token-level pages."""
    import itertools

    import numpy as np

    from rlroute.cluster.sim.synthetic import conversation_requests
    from rlroute.workload.arrivals import PoissonArrivals
    from rlroute.workload.compose import PromptWorkload
    from rlroute.workload.synthetic import SyntheticPrompts

    streams = [conversation_requests(400, 5.0, np.random.default_rng(0))]
    for bs in (64, 1):
        wl = PromptWorkload(SyntheticPrompts(pool_size=50), PoissonArrivals(2.0), block_size=bs)
        streams.append(list(itertools.islice(wl.requests(np.random.default_rng(1)), 150)))
    for reqs in streams:
        last: dict[int, Request] = {}
        pairs = 0
        for r in reqs:
            prev = last.get(r.session_id)  # type: ignore[arg-type]
            if prev is not None and prev.turn == r.turn - 1:
                bs = r.block_size
                lo, hi = prev.input_len // bs, (prev.input_len + prev.output_len) // bs
                assert len(prev.output_blocks) == hi - lo
                assert r.blocks[lo:hi] == prev.output_blocks
                pairs += int(hi > lo)
            last[r.session_id] = r  # type: ignore[index]
        assert pairs > 5


def test_trace_output_blocks_follow_the_next_turns_hash_ids(tmp_path: Path) -> None:
    from rlroute.workload.traces import parse_mooncake

    rows = [
        {"timestamp": 0, "input_length": 1100, "output_length": 600, "hash_ids": [0, 1, 2]},
        {"timestamp": 5, "input_length": 600, "output_length": 10, "hash_ids": [0, 9]},  # another session
        {"timestamp": 9, "input_length": 2000, "output_length": 5, "hash_ids": [0, 1, 3, 4]},  # turn 2 of row 0
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    tr = parse_mooncake(str(path))
    # row 0: 2 full prompt blocks; (1100 + 600) // 512 = 3 -> the next turn's block at depth 2
    assert tr.output_blocks == [(3,), (), ()]


def test_refilling_a_path_drops_descendants_orphaned_by_an_eviction() -> None:
    """Evicting a segment can leave its descendants cached below a hole (found with the autoscaler's
    scale-downs: a repeated prompt's answer re-inserted over its own orphaned tail); filling the path in again
    replaces them instead of failing. An id at another position is still refused."""
    c = PrefixCache("lru")
    c.insert((1, 2, 3), 64, 0.0)
    c.insert((1, 2, 3, 4, 5), 64, 1.0, depth=3)
    assert c.evict_one() == 3 * 64  # the parent (least recently used) goes, (4, 5) stays, unreachable
    assert c.match_len((1, 2, 3, 4, 5)) == 0 and 4 in c.nodes
    c.insert((1, 2, 3, 4, 5, 6), 64, 2.0)
    assert c.match_len((1, 2, 3, 4, 5, 6)) == 6 and c.total_tokens == 6 * 64 == c.free_tokens
    with pytest.raises(ValueError, match="chained hashes"):
        c.insert((7, 5), 64, 3.0)  # id 5 cached at position 4, offered at position 1
