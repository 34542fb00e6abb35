"""rlroute.env: the Gymnasium routing environment (``rlroute/Routing-v1``, registered by ``import rlroute``).

``gymnasium.make("rlroute/Routing-v1")`` builds it from ``conf/config.yaml`` (entry point
:func:`~rlroute.env.build.make_routing_env`); :func:`build_env` builds it from an already composed Hydra
config (``rlroute train`` / ``eval``).
"""

from __future__ import annotations

from rlroute import ENV_ID
from rlroute.env.build import build_env, default_config, make_routing_env
from rlroute.env.reward import RewardConfig
from rlroute.env.routing import RoutingEnv

__all__ = ["ENV_ID", "RewardConfig", "RoutingEnv", "build_env", "default_config", "make_routing_env"]
