"""The router's view of a pool's prefix caches: sglang-router's approximate trees, one class for sim and serving.

A router cannot read its workers' radix caches. sglang-router's ``cache_aware`` policy therefore keeps an
approximate tree per worker (``sgl-router/src/policies/tree.rs``, one multi-tenant radix tree with a
tenant per worker) with three properties this class reproduces:

* **fed only by what was routed**: the prompt of every request sent to a worker is inserted under that
  worker (``Tree::insert``), whichever branch of the policy chose it (``cache_aware.rs`` inserts in the
  imbalanced branch too);
* **never sees evictions**: a worker evicting, restarting or failing changes nothing here; only the
  router's own actions do (a flush it orchestrates, :meth:`RouterView.clear`);
* **trimmed periodically**: every ``eviction_interval_s`` the least recently used leaves of each worker
  whose tree exceeds ``max_tree_tokens`` are removed until it fits (``Tree::evict_tenant_by_size``, run by
  ``CacheAwarePolicy``'s background thread every ``eviction_interval_secs``).

Defaults are sglang-router's launcher defaults (``sgl-router/py_src/sglang_router/router_args.py``):
``eviction_interval_secs = 120`` and ``max_tree_size = 2**26``. ``max_tree_size`` counts characters (the
tree stores raw text); here trees hold prompt blocks, so it is converted at an ASSUMED 4 characters per
token (the rule of thumb :mod:`rlroute.worker.tokens` uses for pseudo-tokens): ``2**24`` tokens per worker.

Granularity: blocks of ``block_size`` tokens keyed by chained ids (an id names its whole prefix:
:func:`rlroute.workload.tokens.chain_blocks`, :func:`rlroute.worker.tokens.text_blocks`, Mooncake's
``hash_ids``), where sglang-router matches characters. Recency: a worker's blocks are refreshed when a
prompt is inserted under it; sglang-router also refreshes the path of the tenant a lookup returns. Times
are the caller's clock in modelled seconds (the simulator's time; the live monitor's clock, which equals
wall seconds for real SGLang).

Because every insert carries a prompt's whole path and trims remove leaves first, the blocks held for a
worker are closed under prefixes, so a match is found by bisection over the prompt's blocks.

The simulator uses this class when ``router_view.enabled`` (the default, so training sees the signal the
router will compute); the live monitor (``rlroute.cluster.live.monitor``) always does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

EVICTION_INTERVAL_S = 120.0  # sglang-router --eviction-interval-secs default (router_args.py)
MAX_TREE_SIZE_CHARS = 2**26  # sglang-router --max-tree-size default, characters per tenant (router_args.py)
CHARS_PER_TOKEN = 4  # ASSUMED: ~4 characters per BPE token in English (rlroute.worker.tokens.BYTES_PER_TOKEN)
MAX_TREE_TOKENS = MAX_TREE_SIZE_CHARS // CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class RouterViewConfig:
    """``router_view`` settings (``conf/cluster/router_view/``).

    Attributes:
        enabled: the simulator's prefix matches (cache features, cache_aware's choice) come from the
            router's trees; False: from the engines' real caches (hit accounting uses those either way).
        eviction_interval_s: seconds between two trims.
        max_tree_tokens: tokens a worker's tree may hold after a trim.
    """

    enabled: bool = True
    eviction_interval_s: float = EVICTION_INTERVAL_S
    max_tree_tokens: int = MAX_TREE_TOKENS

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, where: str = "cluster.router_view") -> RouterViewConfig:
        """Parse ``{enabled, eviction_interval_s, max_tree_tokens}`` (missing keys: the defaults)."""
        if cfg is None:
            return cls()
        if isinstance(cfg, RouterViewConfig):
            return cfg
        if not isinstance(cfg, Mapping):
            raise ValueError(f"{where}: expected a mapping {{enabled, eviction_interval_s, max_tree_tokens}}, got {cfg!r}")
        unknown = set(cfg) - {"enabled", "eviction_interval_s", "max_tree_tokens"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected enabled, eviction_interval_s, "
                             "max_tree_tokens")
        out = cls(enabled=bool(cfg.get("enabled", True)),
                  eviction_interval_s=float(cfg.get("eviction_interval_s", EVICTION_INTERVAL_S)),
                  max_tree_tokens=int(cfg.get("max_tree_tokens", MAX_TREE_TOKENS)))
        if out.eviction_interval_s <= 0:
            raise ValueError(f"{where}.eviction_interval_s must be > 0, got {out.eviction_interval_s}")
        if out.max_tree_tokens < 0:
            raise ValueError(f"{where}.max_tree_tokens must be >= 0, got {out.max_tree_tokens}")
        return out

    @classmethod
    def for_router(cls, cfg: Mapping[str, Any] | None, where: str) -> RouterViewConfig:
        """Parse the settings of a live router's trees: it has no other view, so ``enabled`` must not be false."""
        out = cls.from_config(cfg, where)
        if not out.enabled:
            raise ValueError(f"{where}.enabled: a live router only has its own trees (it cannot read the "
                             "workers' caches); remove the key or set it true")
        return out


class RouterView:
    """Approximate prefix trees of one pool's workers, by worker index (see the module docstring).

    Args:
        n: workers in the pool.
        cfg: trim settings.
    """

    def __init__(self, n: int, cfg: RouterViewConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else RouterViewConfig()
        # per worker: block id -> last time a prompt through it was routed there (insertion order = depth
        # order along each path, which the leaf-first trim relies on)
        self.trees: list[dict[int, float]] = [{} for _ in range(n)]
        self.tokens = [0] * n  # tokens each tree holds: sglang's tenant_char_count (see insert)
        self.block_size = 0
        self.next_trim = self.cfg.eviction_interval_s
        self.trims = 0

    def __len__(self) -> int:
        return len(self.trees)

    # -- reads ----------------------------------------------------------------------------------------------
    def match(self, blocks: Sequence[int], block_size: int, covered: int, now: float) -> list[int]:
        """Prompt tokens the router believes each worker holds: leading blocks in its tree, at most ``covered``."""
        if now >= self.next_trim:
            self._trim(now)
        nb = len(blocks)
        if not nb:
            return [0] * len(self.trees)
        b0, last = blocks[0], blocks[-1]
        b1 = blocks[1] if nb > 1 else last
        full = min(nb * block_size, covered)
        one = min(block_size, covered)
        out = []
        for tree in self.trees:
            if b0 not in tree:
                out.append(0)
            elif last in tree:
                out.append(full)
            elif b1 not in tree:  # most trees share only a system prompt's first block: no bisection
                out.append(one)
            else:
                out.append(min(_depth(tree, blocks) * block_size, covered))
        return out

    # -- writes ---------------------------------------------------------------------------------------------
    def insert(self, k: int, blocks: Sequence[int], block_size: int, now: float, prompt_tokens: int = 0) -> None:
        """A prompt of ``prompt_tokens`` tokens with ``blocks`` was routed to worker ``k`` at ``now``.

        The tree's size grows by the prompt tokens it did not match (sglang-router's ``Tree::insert`` adds
        the unmatched characters to the tenant's count), at least by the blocks it adds: a prompt's tail
        shorter than a block counts although only whole blocks are keyed (so short prompts still grow the
        tree that ``cache_aware``'s "smallest tree" rule reads; sent twice, such a tail counts twice).
        """
        if now >= self.next_trim:
            self._trim(now)
        tree = self.trees[k]
        matched = 0
        if blocks and blocks[0] in tree:
            matched = len(blocks) if blocks[-1] in tree else _depth(tree, blocks) if blocks[1] in tree else 1
        before = len(tree)
        for b in blocks:  # what tree.update(dict.fromkeys(blocks, now)) does, without the temporary dict
            tree[b] = now
        self.tokens[k] += max(prompt_tokens - matched * block_size, (len(tree) - before) * block_size)
        self.block_size = block_size

    def clear(self, k: int | None = None) -> None:
        """Forget worker ``k``'s tree (every worker's when None): the router flushed its cache."""
        for i in range(len(self.trees)) if k is None else (k,):
            self.trees[i].clear()
            self.tokens[i] = 0

    def reset(self) -> None:
        """Forget everything and restart the trim timer at time 0 (a new episode, a restarted clock)."""
        self.clear()
        self.next_trim = self.cfg.eviction_interval_s

    def add(self) -> None:
        """A worker was appended to the pool."""
        self.trees.append({})
        self.tokens.append(0)

    def pop(self) -> None:
        """The pool's last worker was removed."""
        self.trees.pop()
        self.tokens.pop()

    def _trim(self, now: float) -> None:
        """``Tree::evict_tenant_by_size``: least recently used leaves first until each tree fits."""
        interval = self.cfg.eviction_interval_s
        self.next_trim = (now // interval + 1) * interval
        self.trims += 1
        cap, bs = self.cfg.max_tree_tokens, self.block_size
        for k, tree in enumerate(self.trees):
            if self.tokens[k] <= cap or not bs:
                continue
            # oldest first; among equal times the later inserted (deeper) block first, so leaves go before
            # their ancestors (reverse, then a stable sort on time). Only blocks no newer than the excess-th
            # oldest time can be among the victims: those are sorted (the same victims, in the same order, as
            # sorting every item; a C-level sort of the bare times finds that time).
            excess = -(-(self.tokens[k] - cap) // bs)
            if excess >= len(tree):
                tree.clear()
            else:
                newest = sorted(tree.values())[excess - 1]
                items = [kv for kv in tree.items() if kv[1] <= newest]
                items.reverse()
                items.sort(key=itemgetter(1))
                for block, _ in items[:excess]:
                    del tree[block]
            self.tokens[k] = len(tree) * bs  # what the trim leaves is counted in whole blocks


def _depth(tree: dict[int, float], blocks: Sequence[int]) -> int:
    """Leading blocks present, knowing ``blocks[1]`` is and ``blocks[-1]`` is not (prefix-closed trees)."""
    lo, hi = 2, len(blocks) - 1  # blocks[lo - 1] present, blocks[hi] absent
    while lo < hi:
        mid = (lo + hi) // 2
        if blocks[mid] in tree:
            lo = mid + 1
        else:
            hi = mid
    return lo


__all__ = ["EVICTION_INTERVAL_S", "MAX_TREE_TOKENS", "RouterView", "RouterViewConfig"]
