"""Pool scaling: one :class:`Scaler` interface (``conf/scaler/``), the reactive and predictive scalers, their
forecasters, the simulator driver (:mod:`rlroute.scaling.sim`) and the router's recommendation gauges
(:mod:`rlroute.scaling.live`)."""

from rlroute.scaling.base import PoolLimits, PoolSignal, Scaler, Signals, build_scaler
from rlroute.scaling.predictive import PredictiveScaler
from rlroute.scaling.reactive import ReactiveScaler, StaticScaler

__all__ = ["PoolLimits", "PoolSignal", "PredictiveScaler", "ReactiveScaler", "Scaler", "Signals", "StaticScaler",
           "build_scaler"]
