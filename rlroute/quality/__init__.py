"""rlroute.quality: per-request outcome models (each implements :class:`~rlroute.quality.base.QualityModel`).

- :mod:`~rlroute.quality.latent`: item-response latent-difficulty model fitted to a joint outcome table
  (default: RouteLLM MMLU's), the default (``conf/quality/latent.yaml``).
- :mod:`~rlroute.quality.labelled`: outcomes from per-prompt labels (``conf/quality/labelled.yaml``).
- :mod:`~rlroute.quality.hybrid`: plan-and-execute and cascade hybrid modes.
- :mod:`~rlroute.quality.difficulty`: observable difficulty cues of a request (usable by features).
"""
