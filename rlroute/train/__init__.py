"""Training routing policies with stable-baselines3 PPO / sb3-contrib MaskablePPO under Hydra.

Modules: ``cli`` (``rlroute train``, a thin ``@hydra.main``), ``trainer`` (``train(cfg) -> float``, the run
folder), ``envs`` (vectorised envs + VecNormalize), ``callbacks`` (``route/``/``cluster/`` metrics,
validation with best-model selection), ``validation`` (the evaluation harness on the ``val`` split),
``tracking`` (CSV/TensorBoard/W&B), ``compare`` (learned policies vs baselines: tables with intervals,
plots) and ``quickstart`` (``rlroute quickstart``). Nothing heavy is imported here.
"""
