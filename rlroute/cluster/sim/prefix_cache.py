"""Per-instance prefix KV cache over chained token blocks, with LRU / LFU / TTL eviction.

Blocks are identified by chained hashes (Mooncake ``hash_ids`` or hashed token-id blocks): a block id
names its whole prefix, so it always sits at the same depth. Like SGLang's radix tree, the cache stores
*segments*: a run of consecutive blocks inserted by one request is one node, split in two when a later
request matches only part of it. ``nodes`` maps every cached block id to its segment, so the longest
prefix match is one dict lookup plus one tuple comparison per segment, and inserting or evicting a
segment costs C-level dict updates instead of Python work per block.

Pinning: a running request pins the segments of its path (``ref > 0``); only unreferenced segments are
evicted, whole, like SGLang's leaf nodes. A request records ``(segment, blocks)`` pairs; when a pinned
segment is split, the tail inherits the pins and ``seg.next`` links head to tail so the release walks
both.

Eviction order is leaf-first without storing the tree: a child segment is only ever touched together
with its parent, so its last use and use count never exceed its parent's, and ties go deepest first
(``-depth`` in the key). Hence the smallest key among unreferenced segments is always a leaf.

* ``lru`` (recency): heap keyed by (last use, -depth).
* ``lfu`` (frequency): heap keyed by (use count, last use, -depth).
* ``ttl``: LRU order plus expiry of unreferenced segments ``ttl_s`` after their last use; ``ttl_s`` also
  combines with ``lru``/``lfu`` (the seed's presets: recency + 4 h, frequency + 30 min). Expiry is lazy
  (:meth:`PrefixCache.expire` runs before every lookup), so expired blocks are never matched.

Heaps use lazy invalidation: an entry is live while its ``ver`` equals the segment's.
"""

from __future__ import annotations

import heapq
from itertools import count
from typing import Any

EVICTION_POLICIES: tuple[str, ...] = ("lru", "lfu", "ttl")


class Seg:
    """A cached run of blocks starting at prefix depth ``depth`` (its last block may be partial)."""

    __slots__ = ("blocks", "depth", "detached", "freq", "last", "next", "ref", "tokens", "ver")

    def __init__(self, blocks: tuple[int, ...], tokens: int, depth: int, now: float) -> None:
        self.blocks = blocks
        self.tokens = tokens
        self.depth = depth
        self.ref = 0
        self.freq = 0
        self.last = now
        self.ver = 0
        self.detached = False  # flushed or lost while pinned: freed on release instead of cached
        self.next: Seg | None = None  # tail split off this segment (pins cover both)

    def __reduce__(self) -> tuple[Any, ...]:
        # Positional state for copying (rlroute.cluster.sim.fork): ~2x faster to load than a slots dict.
        return _seg, (self.blocks, self.tokens, self.depth, self.ref, self.freq, self.last, self.ver,
                      self.detached, self.next)


def _seg(blocks: tuple[int, ...], tokens: int, depth: int, ref: int, freq: int, last: float, ver: int,
         detached: bool, nxt: Seg | None) -> Seg:
    seg = Seg(blocks, tokens, depth, last)
    seg.ref, seg.freq, seg.ver, seg.detached, seg.next = ref, freq, ver, detached, nxt
    return seg


Pin = tuple[Seg, int]  # (segment, number of its blocks pinned, following seg.next when split)


class PrefixCache:
    """Prefix cache of one instance.

    Args:
        policy: ``lru``, ``lfu`` or ``ttl``.
        ttl_s: expiry of unreferenced blocks in seconds (required for ``ttl``; optional otherwise).
        block_size: tokens per block (all requests on one cache share it).
        log_evictions: keep evicted block ids, in eviction order, in ``eviction_log``.

    Cumulative accounting: ``hit_tokens``/``miss_tokens`` (prompt tokens served from cache / computed at
    admission) and ``hit_blocks``/``miss_blocks`` are updated by the instance; ``evicted_blocks`` and
    ``evicted_tokens`` count capacity and TTL evictions, ``expired_blocks`` the TTL share.
    """

    def __init__(self, policy: str = "lru", ttl_s: float | None = None, block_size: int | None = None,
                 log_evictions: bool = False) -> None:
        if policy not in EVICTION_POLICIES:
            raise ValueError(f"cache eviction policy must be one of {EVICTION_POLICIES}, got {policy!r}")
        if policy == "ttl" and not ttl_s:
            raise ValueError("cache eviction policy 'ttl' needs ttl_s > 0")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"cache ttl_s must be > 0 or null, got {ttl_s}")
        self.policy = policy
        self.ttl = float(ttl_s) if ttl_s else None
        self.lfu = policy == "lfu"
        self.bs = block_size
        self.nodes: dict[int, Seg] = {}
        self.heap: list[tuple[Any, ...]] = []
        self.theap: list[tuple[Any, ...]] = []  # expiry order, only for lfu + ttl (lru's heap is that order)
        self._tick = count()
        self.total_tokens = 0  # tokens held by all segments (pinned + evictable + detached-but-pinned)
        self.free_tokens = 0  # tokens in unreferenced (evictable) segments
        self.n_free = 0
        self.hit_tokens = self.miss_tokens = 0
        self.hit_blocks = self.miss_blocks = 0
        self.evicted_blocks = self.evicted_tokens = self.expired_blocks = 0
        self.eviction_log: list[int] | None = [] if log_evictions else None
        self.expire_at = float("inf")  # no unreferenced block can expire before this time

    # -- copying (rlroute.cluster.sim.fork) ------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Compact state: ``nodes`` as its distinct segments (rebuilt from their blocks) and the heaps
        without stale entries (never popped as victims, so dropping them changes no eviction)."""
        state = self.__dict__.copy()
        state["nodes"] = list(dict.fromkeys(self.nodes.values()))
        for key in ("heap", "theap"):
            state[key] = [e for e in state[key] if (s := e[-2]).ver == e[-1] and s.ref == 0 and not s.detached]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        segs: list[Seg] = state["nodes"]
        nodes: dict[int, Seg] = {}
        for seg in segs:
            nodes.update(dict.fromkeys(seg.blocks, seg))
        self.__dict__.update(state)
        self.nodes = nodes
        heapq.heapify(self.heap)
        heapq.heapify(self.theap)

    # -- lookup ---------------------------------------------------------------------------------------
    def probe(self, blocks: tuple[int, ...]) -> tuple[int, int]:
        """Matched leading blocks and how many of their tokens are currently evictable (no side effects;
        call :meth:`expire` first)."""
        nodes = self.nodes
        n = len(blocks)
        i = 0
        free = 0
        while i < n:
            seg = nodes.get(blocks[i])
            if seg is None or seg.depth != i:
                break
            sb = seg.blocks
            L = len(sb)
            if blocks[i:i + L] == sb:
                if seg.ref == 0:
                    free += seg.tokens
                i += L
                continue
            j = 1
            lim = min(L, n - i)
            while j < lim and blocks[i + j] == sb[j]:
                j += 1
            if seg.ref == 0:
                free += seg.tokens if j == L else j * (self.bs or 0)
            i += j
            break
        return i, free

    def match_len(self, blocks: tuple[int, ...]) -> int:
        """Number of leading ``blocks`` cached."""
        return self.probe(blocks)[0]

    # -- pin / release / insert -----------------------------------------------------------------------
    def _descend(self, blocks: tuple[int, ...], pin_at: float | None = None) -> tuple[list[Pin], int]:
        """Walk the cached prefix of ``blocks``, splitting a partly matched segment (and pinning each
        segment at time ``pin_at`` when given); returns the path ``(segment, blocks used)`` and the number
        of blocks matched."""
        nodes = self.nodes
        n = len(blocks)
        i = 0
        path: list[Pin] = []
        while i < n:
            seg = nodes.get(blocks[i])
            if seg is None or seg.depth != i:
                break
            sb = seg.blocks
            L = len(sb)
            full = blocks[i:i + L] == sb
            if not full:
                j = 1
                lim = min(L, n - i)
                while j < lim and blocks[i + j] == sb[j]:
                    j += 1
                if j < L:
                    self._split(seg, j)
                    L = j
            if pin_at is not None:
                self._pin(seg, pin_at)
            path.append((seg, L))
            i += L
            if not full:
                break
        return path, i

    def _check_bs(self, bs: int) -> None:
        if self.bs is None:
            self.bs = bs
        elif bs != self.bs:
            raise ValueError(f"block_size {bs} differs from this cache's block size {self.bs}")

    def _new_seg(self, rest: tuple[int, ...], tokens: int, depth: int, now: float) -> Seg:
        nodes = self.nodes
        if not nodes.keys().isdisjoint(rest):
            self._drop_orphans(rest, depth)
        seg = Seg(rest, tokens, depth, now)
        seg.freq = 1
        for b in rest:  # a loop of stores beats dict.update(dict.fromkeys(...)) for these sizes (no temporary dict)
            nodes[b] = seg
        self.total_tokens += tokens
        return seg

    def _drop_orphans(self, rest: tuple[int, ...], depth: int) -> None:
        """Evict the cached segments holding ids of ``rest`` that sit at their own position but below a hole:
        evicting a segment can leave its descendants cached but unreachable (matching stops at the hole), and
        the path being filled in again must not meet them. An id cached at another position, or pinned, is a
        broken chain: ``ValueError``."""
        nodes = self.nodes
        for k, b in enumerate(rest):
            seg = nodes.get(b)
            if seg is None:
                continue
            if seg.ref or seg.detached or seg.depth + seg.blocks.index(b) != depth + k:
                raise ValueError("block ids must be chained hashes (an id of this prompt is cached at another "
                                 "prefix position)")
            self._drop(seg)

    def acquire(self, blocks: tuple[int, ...], bs: int, covered: int, now: float) -> tuple[list[Pin], int, int]:
        """Pin the matched prefix and insert the rest of ``blocks`` as one new pinned segment.

        Args:
            blocks: the prompt's chained block ids.
            bs: tokens per block; the blocks cover ``covered`` prompt tokens (the last may be partial).
            covered: prompt tokens the blocks cover.
            now: cluster time.

        Returns:
            The pins, the number of blocks matched and the tokens inserted. The caller checks capacity
            beforehand and calls :meth:`make_room` afterwards.
        """
        self._check_bs(bs)
        pins, i = self._descend(blocks, now)
        new_tokens = 0
        if i < len(blocks):
            rest = blocks[i:]
            new_tokens = covered - i * bs
            seg = self._new_seg(rest, new_tokens, i, now)
            seg.ref = 1
            pins.append((seg, len(rest)))
        return pins, i, new_tokens

    def insert(self, blocks: tuple[int, ...], bs: int, now: float, depth: int = 0) -> int:
        """SGLang ``RadixCache.cache_finished_req``: cache a finished sequence's full blocks, unpinned.

        ``blocks`` are the chained ids of the full blocks of prompt + output (SGLang inserts only whole
        pages); the part not cached yet (the output, and the prompt too if it was flushed meanwhile) becomes
        one evictable segment used at ``now``. ``depth``: blocks before it are known to be the cached path
        (the finished request pinned them), which allows skipping the walk. The caller calls
        :meth:`make_room` afterwards. Returns the tokens inserted."""
        self._check_bs(bs)
        n = len(blocks)
        nodes = self.nodes
        # fast path: nothing past ``depth`` cached and the segment holding block depth-1 ends there
        parent = nodes.get(blocks[depth - 1]) if depth else None
        if (depth and parent is not None and parent.depth + len(parent.blocks) == depth
                and blocks[depth] not in nodes and parent.blocks[-1] == blocks[depth - 1]):
            i = depth
        else:
            i = self._descend(blocks)[1]
        if i >= n:
            return 0
        seg = self._new_seg(blocks[i:], (n - i) * bs, i, now)
        self.free_tokens += seg.tokens
        self.n_free += 1
        self._push(seg)
        return int(seg.tokens)

    def _pin(self, seg: Seg, now: float) -> None:
        if seg.ref == 0:
            self.free_tokens -= seg.tokens
            self.n_free -= 1
            seg.ver += 1
        seg.ref += 1
        seg.freq += 1
        seg.last = now

    def _split(self, seg: Seg, j: int) -> None:
        bs = self.bs or 0
        tail = Seg(seg.blocks[j:], seg.tokens - j * bs, seg.depth + j, seg.last)
        tail.ref, tail.freq, tail.detached, tail.next = seg.ref, seg.freq, seg.detached, seg.next
        seg.blocks = seg.blocks[:j]
        seg.tokens = j * bs
        seg.next = tail
        if not seg.detached:
            nodes = self.nodes
            for b in tail.blocks:
                nodes[b] = tail
        if seg.ref == 0 and not seg.detached:
            self.n_free += 1
            seg.ver += 1  # re-key both halves
            self._push(seg)
            self._push(tail)

    def _push(self, seg: Seg) -> None:
        tick = next(self._tick)
        if self.ttl is not None and seg.last + self.ttl < self.expire_at:
            self.expire_at = seg.last + self.ttl
        if self.lfu:
            heapq.heappush(self.heap, (seg.freq, seg.last, -seg.depth, tick, seg, seg.ver))
            if self.ttl is not None:
                heapq.heappush(self.theap, (seg.last, -seg.depth, tick, seg, seg.ver))
        else:
            heapq.heappush(self.heap, (seg.last, -seg.depth, tick, seg, seg.ver))

    def release(self, pins: list[Pin], now: float) -> None:
        """Unpin the segments of a finished request (following splits made while it ran)."""
        for seg, k in pins:
            x: Seg | None = seg
            while k > 0 and x is not None:
                k -= len(x.blocks)
                x.ref -= 1
                if x.ref == 0:
                    if x.detached:
                        self.total_tokens -= x.tokens
                    else:
                        x.last = now
                        x.ver += 1
                        self.free_tokens += x.tokens
                        self.n_free += 1
                        self._push(x)
                x = x.next
        if len(self.heap) > 4 * self.n_free + 1024:
            self._compact()

    # -- eviction -------------------------------------------------------------------------------------
    def _drop(self, seg: Seg) -> None:
        nodes = self.nodes
        for b in seg.blocks:
            del nodes[b]
        seg.ver += 1
        seg.detached = True
        self.n_free -= 1
        self.free_tokens -= seg.tokens
        self.total_tokens -= seg.tokens
        self.evicted_blocks += len(seg.blocks)
        self.evicted_tokens += seg.tokens
        if self.eviction_log is not None:
            self.eviction_log.extend(seg.blocks)

    def evict_one(self) -> int:
        """Evict the policy's victim among unreferenced segments; return its tokens (0 if none)."""
        heap = self.heap
        while heap:
            e = heapq.heappop(heap)
            seg = e[-2]
            if seg.ver == e[-1] and seg.ref == 0 and not seg.detached:
                self._drop(seg)
                return int(seg.tokens)
        return 0

    def make_room(self, tokens: int) -> None:
        """Evict unreferenced segments until ``tokens`` tokens are freed (or none is left)."""
        freed = 0
        while freed < tokens and self.n_free:
            got = self.evict_one()
            if not got:
                break
            freed += got

    def expire(self, now: float) -> None:
        """Drop unreferenced segments unused for ``ttl_s`` (cheap when none are due)."""
        if self.ttl is None or now < self.expire_at:
            return
        limit = now - self.ttl
        heap = self.theap if self.lfu else self.heap
        while heap:
            e = heap[0]
            seg = e[-2]
            if seg.ver != e[-1] or seg.ref or seg.detached:
                heapq.heappop(heap)
                continue
            if e[0] > limit:
                self.expire_at = e[0] + self.ttl
                return
            heapq.heappop(heap)
            self._drop(seg)
            self.expired_blocks += len(seg.blocks)
        self.expire_at = float("inf")

    def flush(self) -> None:
        """SGLang ``flush_cache``: drop every block; pinned ones are detached and freed on release."""
        for seg in set(self.nodes.values()):
            if seg.ref == 0:
                self._drop(seg)
            else:
                seg.detached = True
        self.nodes.clear()
        self.heap.clear()
        self.theap.clear()
        self.n_free = 0
        self.free_tokens = 0
        self.expire_at = float("inf")

    def clear(self) -> None:
        """Instance lost (failure): forget everything without counting evictions."""
        for seg in self.nodes.values():
            seg.detached = True
        self.nodes.clear()
        self.heap.clear()
        self.theap.clear()
        self.total_tokens = self.free_tokens = self.n_free = 0
        self.expire_at = float("inf")

    def _compact(self) -> None:
        def live(e: tuple[Any, ...]) -> bool:
            s = e[-2]
            return bool(s.ver == e[-1] and s.ref == 0 and not s.detached)

        self.heap = [e for e in self.heap if live(e)]
        heapq.heapify(self.heap)
        if self.theap:
            self.theap = [e for e in self.theap if live(e)]
            heapq.heapify(self.theap)

    @property
    def hit_rate(self) -> float:
        """Token-weighted cumulative hit rate of admitted prompts."""
        tot = self.hit_tokens + self.miss_tokens
        return self.hit_tokens / tot if tot else 0.0
