"""Routing policies: one :class:`~rlroute.policies.base.Policy` interface for env, evaluator and server.

Build one with :func:`rlroute.policies.registry.make_policy` (``"heuristic"``, a Hydra ``cfg.policy`` or
an instance); names are listed in :data:`rlroute.policies.registry.POLICIES`.
"""
