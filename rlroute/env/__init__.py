"""rlroute.env: the Gymnasium routing environment, registered as ``rlroute/Routing-v1`` on import.

``gymnasium.make("rlroute/Routing-v1")`` builds it from ``conf/config.yaml`` (entry point
:func:`~rlroute.env.build.make_routing_env`); :func:`build_env` builds it from an already composed Hydra
config (``rlroute train`` / ``eval``).
"""

from __future__ import annotations

import gymnasium

from rlroute.env.build import build_env, default_config, make_routing_env
from rlroute.env.reward import RewardConfig
from rlroute.env.routing import RoutingEnv

ENV_ID = "rlroute/Routing-v1"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="rlroute.env.build:make_routing_env")

__all__ = ["ENV_ID", "RewardConfig", "RoutingEnv", "build_env", "default_config", "make_routing_env"]
