"""The client's output cap (``max_new_tokens`` / ``max_tokens``) a workload reports with each request.

A router sees the cap a client sends, never how long the answer will be, so the request block's
``output_tokens`` feature reads the cap only. Workloads draw it *independently of the true output
length* and the engine stops there, as a real one does: ``output_len = min(natural length, cap)``.

The draw is a deterministic function of the request id and its arrival time (splitmix64), so it consumes
nothing from the workload's random stream (every other draw stays as it was) and a request replayed
twice gets the same cap.

``DEFAULT_CAPS`` is an ASSUMPTION (no public measurement of client caps was found offline): a mix of the
settings common in SDK examples and applications — 512 (15 %), 1024 (25 %), 2048 (35 %), 4096 (25 %).
Configure a workload's ``max_new_tokens`` with an int (one fixed cap) or ``{caps: [...], weights: [...]}``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

DEFAULT_CAPS: dict[int, float] = {512: 0.15, 1024: 0.25, 2048: 0.35, 4096: 0.25}
_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


class ClientCaps:
    """The distribution of client caps of one workload.

    Args:
        spec: an int (every client asks for that cap), ``{caps: [...], weights: [...]}``, or None for
            :data:`DEFAULT_CAPS`.
    """

    def __init__(self, spec: int | Mapping[str, Any] | None = None) -> None:
        if spec is None:
            caps, weights = list(DEFAULT_CAPS), list(DEFAULT_CAPS.values())
        elif isinstance(spec, int) and not isinstance(spec, bool):
            caps, weights = [spec], [1.0]
        elif isinstance(spec, Mapping) and set(spec) == {"caps", "weights"}:
            caps, weights = [int(c) for c in spec["caps"]], [float(w) for w in spec["weights"]]
        else:
            raise ValueError(f"workload max_new_tokens: expected an int, {{caps: [...], weights: [...]}} or null, "
                             f"got {spec!r}")
        if not caps or len(caps) != len(weights) or min(caps) < 1 or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"workload max_new_tokens: caps must be >= 1 with as many weights >= 0 (not all 0), "
                             f"got caps={caps} weights={weights}")
        total = sum(weights)
        self.caps = caps
        acc, self._cum = 0.0, []
        for w in weights:
            acc += w / total
            self._cum.append(acc)

    def draw(self, rid: int, arrival: float) -> int:
        """The cap of request ``rid`` arriving at ``arrival`` (deterministic, independent of its output)."""
        if len(self.caps) == 1:
            return self.caps[0]
        bits = struct.unpack("<Q", struct.pack("<d", float(arrival)))[0]
        u = _mix((rid * 0x9E3779B97F4A7C15 ^ bits) & _MASK) / 2.0**64
        for cap, c in zip(self.caps, self._cum, strict=True):
            if u < c:
                return cap
        return self.caps[-1]
