"""Router-side approximate prefix caches: which prompt blocks each live worker probably still holds.

A router cannot read a worker's radix tree, so, like sglang-router's ``cache_aware`` policy, it keeps its
own approximation: every block sent to an instance is recorded there, and least-recently-used blocks are
dropped once the recorded tokens exceed the instance's KV capacity (scraped ``max_total_num_tokens``).
The estimate is optimistic under memory pressure (the worker may evict earlier, while requests run) and
is reset when the worker's cache is flushed.
"""

from __future__ import annotations

from collections import OrderedDict


class BlockLRU:
    """Approximate prefix cache of one instance: chained block ids in LRU order.

    Args:
        capacity_tokens: tokens the instance can hold (0: unbounded until told).
    """

    def __init__(self, capacity_tokens: int = 0) -> None:
        self.capacity_tokens = int(capacity_tokens)
        self._blocks: OrderedDict[int, int] = OrderedDict()  # block id -> tokens in it
        self.total_tokens = 0

    def match(self, blocks: tuple[int, ...], block_size: int, covered: int) -> int:
        """Prompt tokens of the leading blocks present here, at most ``covered``."""
        n = 0
        have = self._blocks
        for b in blocks:
            if b not in have:
                break
            n += 1
        return min(n * block_size, covered)

    def insert(self, blocks: tuple[int, ...], block_size: int) -> None:
        """Record that ``blocks`` were sent here (most recently used), then evict to capacity."""
        have = self._blocks
        for b in blocks:
            if b in have:
                have.move_to_end(b)
            else:
                have[b] = block_size
                self.total_tokens += block_size
        if self.capacity_tokens > 0:
            while self.total_tokens > self.capacity_tokens and have:
                _, size = have.popitem(last=False)
                self.total_tokens -= size

    def clear(self) -> None:
        """Forget everything (the worker's cache was flushed or it restarted)."""
        self._blocks.clear()
        self.total_tokens = 0

    def __len__(self) -> int:
        return len(self._blocks)
