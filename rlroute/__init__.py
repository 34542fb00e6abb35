"""rlroute: learning to route LLM requests between large and small SGLang pools.

Importing the package is cheap: it registers the routing environment with Gymnasium by a string entry
point (as highway-env and minigrid do on import), so ``import rlroute; gymnasium.make(rlroute.ENV_ID)``
works, and imports nothing else -- no torch, simulator, wandb or server library until the env is made.
"""

import gymnasium

__version__ = "0.1.0"

ENV_ID = "rlroute/Routing-v1"
"""The routing environment's id; the version goes up when observation, action or reward meaning changes."""

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="rlroute.env.build:make_routing_env")

__all__ = ["ENV_ID", "__version__"]
