"""The predictive scaler: a seasonal forecast of the arrival rate, acted on one start-up delay ahead.

Each tick feeds the arrivals of the interval that just ended to a forecaster
(:mod:`rlroute.scaling.forecast`, Holt-Winters by default) and reads its forecast over the pool's lead time
(``startup_s + warmup_s``, plus one tick: an instance asked for now serves from then on). A pool needs
``ceil(rate * share * (1 + headroom) / capacity_rps)`` instances for a rate, where ``share`` is the pool's
smoothed share of the routed stages (the routing policy decides it: a learned policy shifts it with the load)
and ``capacity_rps`` what one instance carries within the SLO. The recommendation is that count for the
*highest* rate forecast between now and the lead time: capacity needed before a new instance could arrive
must already be there, and an instance removed now could not come back in time.

With ``reactive_floor`` (default) the reactive scaler's desire is a floor under the forecast's, so load the
forecast did not see (a burst, a routing shift) is still met; cooldowns are the reactive scaler's, except
that a forecast-driven scale-up is never delayed (it is already late by design if it waits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rlroute.scaling.base import Signals
from rlroute.scaling.forecast import Forecaster, build_forecaster
from rlroute.scaling.reactive import ReactiveScaler


class PredictiveScaler(ReactiveScaler):
    """See the module doc.

    Args:
        pools: pool name -> limits (with ``capacity_rps``).
        interval_s: seconds between ticks (= the forecast's bucket).
        forecast: ``{method: holt_winters|seasonal_naive, season_s, refit_s}``.
        headroom: capacity margin over the forecast (relative).
        share_smoothing: weight of the newest interval in the pools' smoothed routing shares.
        reactive_floor: never recommend less than the reactive rule would.
        **reactive: the :class:`~rlroute.scaling.reactive.ReactiveScaler` settings (tolerance, cooldowns, ...).
    """

    kind = "predictive"

    def __init__(self, pools: Mapping[str, Any], interval_s: float = 30.0, forecast: Mapping[str, Any] | None = None,
                 headroom: float = 0.1, share_smoothing: float = 0.3, reactive_floor: bool = True,
                 **reactive: Any) -> None:
        super().__init__(pools, interval_s, **reactive)
        fc = dict(forecast or {})
        method = str(fc.pop("method", "holt_winters"))
        if "season_s" not in fc:
            raise ValueError("scaler.forecast.season_s is missing (seconds per season, e.g. 86400 for a day)")
        season = float(fc.pop("season_s"))
        self.forecaster: Forecaster = build_forecaster(method, self.interval_s, season, **fc)
        if headroom < 0 or not 0 < share_smoothing <= 1:
            raise ValueError(f"scaler: headroom must be >= 0 and share_smoothing in (0, 1], got {headroom}, "
                             f"{share_smoothing}")
        self.headroom = float(headroom)
        self.alpha = float(share_smoothing)
        self.reactive_floor = bool(reactive_floor)
        self.shares: dict[str, float] = {}
        self.last_forecast: float | None = None  # the rate forecast at the first pool's lead time
        self.last_horizon_s = 0.0

    def reset(self) -> None:
        super().reset()
        self.forecaster.reset()
        self.shares.clear()
        self.last_forecast = None

    def forecast(self) -> float | None:
        return self.last_forecast

    def steps_ahead(self, lead_s: float) -> int:
        """Buckets from now to when an instance asked for now would serve (at least one)."""
        return max(1, math.ceil(lead_s / self.interval_s) + 1)

    def recommend(self, signals: Signals) -> dict[str, int]:
        self.forecaster.observe(signals.arrivals)
        horizon = max(self.steps_ahead(lim.lead_s) for lim in self.limits.values())
        rates = self.forecaster.predict(horizon)
        out = {}
        t = signals.time
        first = True
        for name, lim in self.limits.items():
            sig = signals.pools.get(name)
            if sig is None:
                continue
            share = self.shares.get(name)
            if sig.share is not None:
                share = sig.share if share is None else share + self.alpha * (sig.share - share)
                self.shares[name] = share
            h = self.steps_ahead(lim.lead_s)
            if first:
                self.last_forecast, self.last_horizon_s = float(rates[h - 1]), h * self.interval_s
                first = False
            peak = float(rates[:h].max())
            need = math.ceil(peak * (share if share is not None else 1.0) * (1 + self.headroom) / lim.capacity_rps)
            want = lim.clamp(need)
            if self.reactive_floor:
                want = max(want, self.desired(lim, sig))
            cur = lim.clamp(sig.provisioned)
            if want > cur and lim.clamp(need) > cur:  # forecast-driven: no cooldown
                self._last_up[name] = self._last_change[name] = t
                out[name] = want
            else:
                out[name] = self.step(name, lim, sig, want, t)
        return out
