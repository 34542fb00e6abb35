"""The scalers on the router's live metrics: a recommendation published as Prometheus gauges.

The router runs the configured scaler (``conf/serve.yaml``'s ``scaler`` group, the same ``conf/scaler/`` files
as the simulator) every ``interval_s`` on its live :class:`~rlroute.cluster.base.ClusterState` (the state the
policy decides on) and on its own decision counters, and sets ``rlroute_router_recommended_instances{pool}``.
A Kubernetes autoscaler acts on it (KEDA's ``prometheus`` scaler or an HPA external metric, ``docs/operate.md``);
rlroute starts and stops nothing itself.

What the router cannot see: instances still starting (a new pod joins the router's worker list only once it is
configured and healthy), so ``starting`` is 0 and the recommendation is compared with the ready workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlroute.cluster.base import ClusterState
from rlroute.scaling.base import Scaler, Signals, pool_signals

# which pools an action's stages run on (rlroute.cluster.base.ACTION_POOLS, by the decision counter's label)
_STAGES = {"large": ("large",), "small": ("small",), "hybrid": ("large", "small")}


class LiveScaling:
    """Runs ``scaler`` on live state and sets the recommendation gauges.

    Args:
        scaler: any :class:`~rlroute.scaling.base.Scaler`.
        recommended: the ``rlroute_router_recommended_instances`` gauge (labels: pool).
        forecast: the ``rlroute_router_forecast_arrival_rate`` gauge (no labels).
    """

    def __init__(self, scaler: Scaler, recommended: Any, forecast: Any) -> None:
        self.scaler = scaler
        scaler.reset()
        self.recommended = recommended
        self.forecast_gauge = forecast
        self._last_t: float | None = None
        self._last: dict[str, float] = {}
        self.last: dict[str, int] = {}

    def tick(self, now: float, state: ClusterState, decisions: Mapping[str, float]) -> dict[str, int]:
        """One decision at ``now`` from the state and the cumulative decision counts by action name."""
        delta = {a: max(0.0, float(decisions.get(a, 0.0)) - self._last.get(a, 0.0)) for a in _STAGES}
        self._last = {a: float(decisions.get(a, 0.0)) for a in _STAGES}
        dt = self.scaler.interval_s if self._last_t is None else max(1e-9, now - self._last_t)
        self._last_t = now
        stages = {p: sum(n for a, n in delta.items() if p in _STAGES[a]) for p in state.pools}
        total = sum(stages.values())
        shares = {p: (n / total if total else None) for p, n in stages.items()}
        sig = Signals(now, pool_signals(state, {}, shares), int(round(sum(delta.values()))), dt)
        rec = self.scaler.recommend(sig)
        for pool, n in rec.items():
            self.recommended.labels(pool).set(n)
        fc = self.scaler.forecast()
        if fc is not None:
            self.forecast_gauge.set(fc)
        self.last = rec
        return rec


def decision_counts(registry: Any) -> dict[str, float]:
    """Cumulative ``rlroute_router_decisions`` by action (policy and fallback summed) from a registry."""
    out: dict[str, float] = {}
    for metric in registry.collect():
        if metric.name != "rlroute_router_decisions":
            continue
        for s in metric.samples:
            if s.name.endswith("_total"):
                a = s.labels.get("action", "")
                out[a] = out.get(a, 0.0) + s.value
    return out
