"""Routing policies: one :class:`~rlroute.policies.base.Policy` interface for env, evaluator and server.

Build one with :func:`rlroute.policies.registry.make_policy` (``"heuristic"``, a Hydra ``cfg.policy`` or
an instance); names are listed in :data:`rlroute.policies.registry.POLICIES`, each with
``conf/policy/<name>.yaml``. Adding a policy is a new class plus a config with ``_target_`` (and, for a
short name, an entry in the registry or :func:`~rlroute.policies.registry.register`).

Optional hooks the evaluator uses when a policy has them (duck-typed, not part of the protocol):

* ``prepare(cfg)`` — called once before evaluation with the composed config (the threshold router
  trains or loads its classifier here, on the workload's *train* split).
* ``score(ctx) -> float`` — the policy's propensity to need the large model; when present the evaluator
  records it per request and computes APGR / CPT over a threshold sweep (RouteLLM's method) instead of at
  the single operating point.
* ``bind_env(env)`` — called after each ``reset`` with the env: the simulator references
  (``reward_oracle``, ``lookahead``; :mod:`rlroute.policies.forked`) fork its cluster at every decision;
  the quality oracle prices actions as the env does.
* ``observe(credits)`` — called after each step with ``info["credits"]`` (the requests that completed in
  that step and their own rewards): online learners (``linucb``) update when a request completes.
"""
