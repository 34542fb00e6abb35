"""The reactive scaler: load and queue thresholds with hysteresis and cooldowns (Kubernetes HPA's rule).

At each tick, per pool, the load per ready instance (queued + running requests) is compared with the pool's
``target_load``: the desired count is HPA's ``ceil(ready * load / target_load)``, unchanged while the ratio is
within ``tolerance`` of 1 (the hysteresis band; HPA's default tolerance is 0.1). A queue of more than
``queue_per_instance`` waiting requests per ready instance asks for at least one more instance even inside
the band (requests waiting for admission mean the KV cache, not the concurrency, is the limit). Scale-up
waits ``up_cooldown_s`` after the previous scale-up; scale-down never happens while an instance is starting, waits
``down_cooldown_s`` after any change -- counted from when the last started instance became ready, so an instance
that took longer to start than the window is not removed as soon as it serves (HPA's downscale stabilisation
window, 300 s by default) -- and removes at most ``down_step`` instances at a time. The defaults are HPA's (kubernetes.io/docs/tasks/run-application/
horizontal-pod-autoscale); ``target_load`` per pool is an assumption documented in ``conf/scaler/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlroute.scaling.base import PoolLimits, PoolSignal, Scaler, Signals, hpa_desired


class ReactiveScaler(Scaler):
    """See the module doc.

    Args:
        pools: pool name -> :class:`~rlroute.scaling.base.PoolLimits` (or its mapping).
        interval_s: seconds between ticks.
        tolerance: the hysteresis band around ``target_load`` (relative).
        queue_per_instance: queued requests per ready instance that trigger a scale-up.
        up_cooldown_s: seconds between two scale-ups of a pool.
        down_cooldown_s: seconds after any change before a scale-down.
        down_step: instances removed per scale-down at most.
    """

    kind = "reactive"

    def __init__(self, pools: Mapping[str, Any], interval_s: float = 30.0, tolerance: float = 0.1,
                 queue_per_instance: float = 1.0, up_cooldown_s: float = 60.0, down_cooldown_s: float = 300.0,
                 down_step: int = 1) -> None:
        super().__init__(pools, interval_s)
        if tolerance < 0 or queue_per_instance < 0 or up_cooldown_s < 0 or down_cooldown_s < 0:
            raise ValueError("scaler: tolerance, queue_per_instance, up_cooldown_s and down_cooldown_s must be >= 0, "
                             f"got {tolerance}, {queue_per_instance}, {up_cooldown_s}, {down_cooldown_s}")
        if down_step < 1:
            raise ValueError(f"scaler.down_step must be >= 1, got {down_step}")
        self.tolerance = float(tolerance)
        self.queue_per_instance = float(queue_per_instance)
        self.up_cooldown_s = float(up_cooldown_s)
        self.down_cooldown_s = float(down_cooldown_s)
        self.down_step = int(down_step)
        self._last_up: dict[str, float] = {}
        self._last_change: dict[str, float] = {}

    def reset(self) -> None:
        self._last_up.clear()
        self._last_change.clear()

    def desired(self, lim: PoolLimits, sig: PoolSignal) -> int:
        """What the pool's load asks for now, before cooldowns (within the limits)."""
        if sig.ready == 0:
            return lim.clamp(max(sig.provisioned, lim.min_instances))
        want = hpa_desired(sig.ready, sig.load / sig.ready, lim.target_load, self.tolerance)
        if sig.queued > self.queue_per_instance * sig.ready:
            want = max(want, sig.ready + 1)
        return lim.clamp(want)

    def recommend(self, signals: Signals) -> dict[str, int]:
        out = {}
        t = signals.time
        for name, lim in self.limits.items():
            sig = signals.pools.get(name)
            if sig is None:
                continue
            out[name] = self.step(name, lim, sig, self.desired(lim, sig), t)
        return out

    def step(self, name: str, lim: PoolLimits, sig: PoolSignal, want: int, t: float) -> int:
        """Apply the cooldowns to ``want`` for pool ``name``; returns the provisioned count to ask for."""
        cur = lim.clamp(sig.provisioned)
        inf = float("-inf")
        if sig.starting:  # the down cooldown counts from when the last new instance is ready, not from the order
            self._last_change[name] = t
        if want > cur and t - self._last_up.get(name, inf) >= self.up_cooldown_s:
            self._last_up[name] = self._last_change[name] = t
            return want
        if (want < cur and sig.starting == 0
                and t - self._last_change.get(name, inf) >= self.down_cooldown_s):
            self._last_change[name] = t
            return max(want, cur - self.down_step)
        return cur


class StaticScaler(ReactiveScaler):
    """Holds every pool at ``max_instances``: static peak sizing, with the scalers' GPU-seconds accounting and
    timeline (it takes the reactive settings so that it shares ``conf/scaler/reactive.yaml``'s limits)."""

    kind = "static"

    def recommend(self, signals: Signals) -> dict[str, int]:
        return {name: lim.max_instances for name, lim in self.limits.items() if name in signals.pools}
