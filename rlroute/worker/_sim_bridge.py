"""TEMPORARY bridge until the simulator's profile loader and prefix cache land (replaced by imports)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import yaml

from rlroute.worker.model import InstanceModel


class _TmpLRU:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.blocks: OrderedDict[int, int] = OrderedDict()

    def match(self, blocks: tuple[int, ...]) -> int:
        n = 0
        for b in blocks:
            if b not in self.blocks:
                break
            n += 1
        return n

    def acquire(self, blocks: tuple[int, ...]) -> None:
        for b in blocks[: self.match(blocks)]:
            self.blocks[b] += 1

    def release(self, blocks: tuple[int, ...]) -> None:
        for b in blocks:
            if self.blocks.get(b, 0) > 0:
                self.blocks[b] -= 1

    def insert(self, blocks: tuple[int, ...]) -> None:
        for b in blocks:
            self.blocks.setdefault(b, 0)
            self.blocks.move_to_end(b)

    def evict(self, tokens: int) -> int:
        freed = 0
        for b in [b for b, r in self.blocks.items() if r == 0]:
            if freed >= tokens:
                break
            del self.blocks[b]
            freed += self.block_size
        return freed

    def flush(self) -> int:
        return self.evict(1 << 62)

    @property
    def tokens(self) -> int:
        return len(self.blocks) * self.block_size


def bridge(profile: str, cache: dict[str, Any], mem_fraction_static: float, block_size: int) -> InstanceModel:
    p = yaml.safe_load((Path(__file__).parents[1] / "cluster" / "profiles" / f"{profile}.yaml").read_text())
    st = {k: float(v["value"]) for k, v in p["step_time"].items()}
    mem = p["memory"]
    cap = int((mem["gpu_memory_gb"] * p["num_gpus"] * mem_fraction_static - mem["weights_gb"]) * 1e9
              / mem["kv_bytes_per_token"])
    return InstanceModel(
        step_time_fn=lambda pf, dec, ctx: st["a"] + st["b"] * pf + st["c"] * dec + st["d"] * ctx,
        cache=_TmpLRU(block_size),
        block_size=block_size,
        kv_capacity_tokens=cap,
        max_running_requests=int(p["limits"]["max_running_requests"]),
        chunked_prefill_tokens=int(p["limits"]["chunked_prefill_tokens"]),
        profile_name=profile,
    )
