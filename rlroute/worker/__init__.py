"""Emulated SGLang-protocol worker (``rlroute worker``): SGLang's HTTP endpoints over the simulator's
instance model (serving-profile step time, KV capacity, prefix cache) run in sped-up wall-clock time,
with sglang-router-style fault knobs. Modules: ``engine`` (continuous batching), ``model`` (the
simulator's instance model), ``app`` (HTTP), ``metrics``, ``faults``, ``schemas``, ``tokens``, ``cli``."""
