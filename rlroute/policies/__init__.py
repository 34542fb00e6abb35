"""Routing policies: one :class:`~rlroute.policies.base.Policy` interface for env, evaluator and server.

Build one with :func:`rlroute.policies.registry.make_policy` (``"heuristic"``, a Hydra ``cfg.policy`` or
an instance); names are listed in :data:`rlroute.policies.registry.POLICIES`, each with
``conf/policy/<name>.yaml``. Adding a policy is a new class plus a config with ``_target_`` (and, for a
short name, an entry in the registry or :func:`~rlroute.policies.registry.register`).

Every policy subclasses :class:`~rlroute.policies.base.Policy`: ``act(ctx)`` is required; the hooks the
evaluator and the router call (``reset``, ``prepare(cfg)``, ``score(ctx)``, ``bind_env(env)``,
``observe(credits)``) are declared there with their defaults and documented on the class.
"""
