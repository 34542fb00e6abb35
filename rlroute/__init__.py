"""rlroute: learning to route LLM requests between large and small SGLang pools.

Importing the package is cheap: no torch, wandb or server library is imported here. Importing
``rlroute.env`` registers ``rlroute/Routing-v1`` with Gymnasium.
"""

__version__ = "0.1.0"
