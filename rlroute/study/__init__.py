"""The scenario study of issue 11: ``rlroute study`` (design and targets: ``experiments/scenarios/README.md``).

* :mod:`rlroute.study.runner` — per scenario: train PPO seeds, evaluate every policy on disjoint test windows.
* :mod:`rlroute.study.results` — ``results.json`` entries (paired two-way bootstrap), tables, plots.
* :mod:`rlroute.study.randomise` — domain randomisation as an env builder (workload, load, pools, prices).
* :mod:`rlroute.study.lowo` — leave-one-workload-out over the shipped workloads.
* :mod:`rlroute.study.cli` — :func:`~rlroute.study.cli.run_study` (either mode) and its Hydra shell
  (``conf/study.yaml``).
"""
