"""Evaluation harness: policies × workloads × seeds → per-request records, metrics with intervals, reports.

* :mod:`rlroute.eval.run` — :func:`~rlroute.eval.run.evaluate` (one episode per seed through the env).
* :mod:`rlroute.eval.metrics` — per-episode metrics incl. RouteLLM's PGR / APGR / CPT.
* :mod:`rlroute.eval.stats` — Student-t intervals over seeds, bootstrap over requests.
* :mod:`rlroute.eval.report` — CSV / JSON / markdown and the Pareto and latency-CDF plots.
* :mod:`rlroute.eval.cli` — ``rlroute eval`` (Hydra, ``conf/eval.yaml``).
* :mod:`rlroute.eval.baselines` — ``rlroute baselines`` (``baselines/suite.yaml`` → ``baselines/results/``).
* :mod:`rlroute.eval.simulate` — ``rlroute sim`` (``conf/sim.yaml``): a workload through the simulator with
  any registry policy, no env (kept out of ``rlroute.cluster`` so the cluster imports no policy).

Fallback rates: evaluating an exported policy (``policy=onnx``) adds ``fallback_rate`` and ``ood_rate``
to its metrics; :func:`ood_fallback_rate` (``rlroute.export.ood.fallback_rate``) gives the share of any
batch of raw observations an exported policy's OOD guard refuses, from its manifest alone — report it
beside every robustness figure.
"""

from rlroute.export.ood import fallback_rate as ood_fallback_rate

__all__ = ["ood_fallback_rate"]
