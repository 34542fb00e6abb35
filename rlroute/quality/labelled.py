"""Labelled quality: outcomes from per-prompt correctness labels (RouteLLM sets).

A request carrying ``labels = {"large": bool, "small": bool}`` (e.g. RouteLLM MMLU: GPT-4-1106 = large,
Mixtral-8x7B = small) gets those outcomes. ``label_noise`` optionally flips each label with a small
probability (an assumption for "the label is one sampled answer, not the model's true accuracy"); at its
default 0 outcomes are deterministic and equal to the labels. The hybrid outcome follows the hybrid mode.
Requests without both labels (later turns, unlabelled sets) go to ``fallback`` or raise a clear error.
"""

from __future__ import annotations

import numpy as np

from rlroute.quality.base import QualityModel
from rlroute.quality.hybrid import HybridMode, PlanAndExecute
from rlroute.types import QualityDraw, Request


class LabelledQuality:
    """Per-prompt labels as outcomes.

    Args:
        hybrid: the hybrid mode (default plan-and-execute).
        label_noise: probability that each model's outcome differs from its label (assumption; 0 = exact).
        fallback: model for requests without labels; ``None`` raises ``ValueError`` for them.
    """

    def __init__(
        self, hybrid: HybridMode | None = None, label_noise: float = 0.0, fallback: QualityModel | None = None
    ) -> None:
        if not 0.0 <= label_noise < 0.5:
            raise ValueError(f"label_noise must be in [0, 0.5), got {label_noise}")
        self.hybrid: HybridMode = hybrid or PlanAndExecute()
        self.label_noise = float(label_noise)
        self.fallback = fallback

    def _labels(self, request: Request) -> tuple[bool, bool] | None:
        lab = request.labels
        if lab is None or "large" not in lab or "small" not in lab:
            if self.fallback is None:
                raise ValueError(
                    f"request {request.id} (category {request.category!r}, turn {request.turn}) has no "
                    f"'large'/'small' labels (got {lab!r}); use a labelled workload (e.g. workload=mmlu) "
                    "or set quality.fallback"
                )
            return None
        return bool(lab["large"]), bool(lab["small"])

    def probs(self, request: Request) -> tuple[float, float, float]:
        """Label (softened by ``label_noise``) for large and small; hybrid from the hybrid mode."""
        lab = self._labels(request)
        if lab is None:
            assert self.fallback is not None
            return self.fallback.probs(request)
        e = self.label_noise
        p_l, p_s = (1 - e if lab[0] else e), (1 - e if lab[1] else e)
        return p_l, p_s, self.hybrid.prob(p_l, p_s)

    def draw(self, request: Request, rng: np.random.Generator) -> QualityDraw:
        """Outcomes = labels (each flipped with ``label_noise``), hybrid consistent with them."""
        lab = self._labels(request)
        if lab is None:
            assert self.fallback is not None
            return self.fallback.draw(request, rng)
        ok_l, ok_s = lab
        if self.label_noise > 0:
            flips = rng.random(2) < self.label_noise
            ok_l, ok_s = ok_l ^ bool(flips[0]), ok_s ^ bool(flips[1])
        ok_h, escalated = self.hybrid.draw(ok_l, ok_s, rng)
        return QualityDraw(p=self.probs(request), ok=(ok_l, ok_s, ok_h), escalated=escalated)
