"""Hybrid modes and the labelled quality model."""

from __future__ import annotations

import numpy as np
import pytest

from rlroute.quality.hybrid import Cascade, PlanAndExecute
from rlroute.quality.labelled import LabelledQuality
from rlroute.types import QualityDraw, Request


def _joint_draws(p_s: float, p_l: float, mode, n: int = 40_000):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    ok_s, ok_l = rng.random(n) < p_s, rng.random(n) < p_l
    return [mode.draw(bool(l_), bool(s), rng) for l_, s in zip(ok_l, ok_s, strict=True)]


@pytest.mark.parametrize("share", [0.0, 0.3, 0.6, 1.0])
@pytest.mark.parametrize(("p_s", "p_l"), [(0.4, 0.9), (0.8, 0.6)])
def test_plan_and_execute_marginal(share: float, p_s: float, p_l: float) -> None:
    m = PlanAndExecute(plan_tokens=64, share=share)
    assert m.prob(p_l, p_s) == pytest.approx(p_s + share * (p_l - p_s))
    draws = _joint_draws(p_s, p_l, m)
    assert np.mean([d[0] for d in draws]) == pytest.approx(m.prob(p_l, p_s), abs=0.012)
    assert not any(d[1] for d in draws)


def test_plan_and_execute_agreeing_outcomes_pass_through() -> None:
    m, rng = PlanAndExecute(share=0.5), np.random.default_rng(0)
    assert all(m.draw(True, True, rng) == (True, False) for _ in range(20))
    assert all(m.draw(False, False, rng) == (False, False) for _ in range(20))


@pytest.mark.parametrize(("recall", "fe"), [(0.8, 0.1), (1.0, 0.0), (0.5, 0.5)])
def test_cascade_marginal(recall: float, fe: float) -> None:
    m = Cascade(recall=recall, false_escalation=fe)
    p_s, p_l = 0.6, 0.85
    draws = _joint_draws(p_s, p_l, m)
    assert np.mean([d[0] for d in draws]) == pytest.approx(m.prob(p_l, p_s), abs=0.012)
    assert np.mean([d[1] for d in draws]) == pytest.approx(m.escalation_prob(p_s), abs=0.012)


@pytest.mark.parametrize(
    ("cls", "kw"),
    [(PlanAndExecute, {"share": 1.5}), (PlanAndExecute, {"plan_tokens": 0}), (Cascade, {"recall": -0.1})],
)
def test_hybrid_bad_parameters(cls, kw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="must be"):
        cls(**kw)


def _req(labels: dict[str, bool] | None) -> Request:
    return Request(
        id=1, arrival=0.0, input_len=10, output_len=5, prompt="Q?", labels=labels, category="anatomy"
    )


@pytest.mark.parametrize(("large", "small"), [(True, True), (True, False), (False, True), (False, False)])
def test_labelled_outcomes_equal_labels(large: bool, small: bool) -> None:
    q = LabelledQuality(hybrid=PlanAndExecute(share=0.6))
    d = q.draw(_req({"large": large, "small": small}), np.random.default_rng(0))
    assert isinstance(d, QualityDraw)
    assert d.ok[:2] == (large, small)
    assert d.p[:2] == (float(large), float(small))
    if large == small:
        assert d.ok[2] == large


def test_labelled_missing_labels() -> None:
    with pytest.raises(ValueError, match="has no 'large'/'small' labels"):
        LabelledQuality().probs(_req(None))

    class Const:
        def probs(self, request: Request) -> tuple[float, float, float]:
            return (0.9, 0.5, 0.7)

        def draw(self, request: Request, rng: np.random.Generator) -> QualityDraw:
            return QualityDraw(p=(0.9, 0.5, 0.7), ok=(True, False, True))

    q = LabelledQuality(fallback=Const())
    assert q.probs(_req({"large": True})) == (0.9, 0.5, 0.7)


def test_label_noise_flips_at_its_rate() -> None:
    q = LabelledQuality(label_noise=0.2)
    rng = np.random.default_rng(0)
    oks = [q.draw(_req({"large": True, "small": True}), rng).ok for _ in range(5000)]
    assert np.mean([o[0] for o in oks]) == pytest.approx(0.8, abs=0.02)
    assert q.probs(_req({"large": True, "small": False}))[:2] == (0.8, 0.2)


@pytest.mark.parametrize(
    ("name", "mode"),
    [("latent", "plan_and_execute"), ("cascade", "cascade"), ("labelled", "plan_and_execute")],
)
def test_quality_configs_instantiate(name: str, mode: str) -> None:
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rlroute.quality.base import QualityModel

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose(
            "config",
            overrides=[f"quality={name}", "workload=synthetic", "quality.reference_requests=300"]
            if name != "labelled"
            else [f"quality={name}"],
        )
    q = instantiate(cfg.quality)
    assert isinstance(q, QualityModel)
    assert q.hybrid.mode == mode == cfg.quality.hybrid.mode  # the simulator may read either


def test_mode_must_match_class() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Cascade(mode="plan_and_execute")
