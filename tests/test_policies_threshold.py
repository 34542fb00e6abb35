"""The RouteLLM-style threshold router learns a real signal on a tiny labelled workload and caches it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rlroute.cluster.base import ClusterState, InstanceState, PoolState
from rlroute.policies.base import DecisionContext
from rlroute.policies.threshold import ThresholdModel, ThresholdRouter, train_threshold_model
from rlroute.types import Action, QualityDraw, Request

WORDS = ["apple", "river", "table", "cloud", "green", "music", "stone", "paper"]


class ToyWorkload:
    """Prompts mentioning 'integral' need the large model; others are fine on the small one."""

    name = "toy"

    def __init__(self, split: str = "all", n: int = 400) -> None:
        self.split, self.n = split, n

    def requests(self, rng: np.random.Generator) -> Iterator[Request]:
        for i in range(self.n):
            hard = bool(rng.random() < 0.3)
            words = list(rng.choice(WORDS, 6)) + (["integral", "proof"] if hard else ["hello"])
            yield Request(id=i, arrival=float(i), input_len=50, output_len=20, prompt=" ".join(words),
                          labels={"large": True, "small": not hard})


class ToyQuality:
    """Outcomes straight from the labels (hybrid = large)."""

    def probs(self, request: Request) -> tuple[float, float, float]:
        assert request.labels is not None
        lg, sm = float(request.labels["large"]), float(request.labels["small"])
        return (lg, sm, lg)

    def draw(self, request: Request, rng: np.random.Generator) -> QualityDraw:
        p = self.probs(request)
        return QualityDraw(p=p, ok=(p[0] > 0.5, p[1] > 0.5, p[2] > 0.5))


def toy_cfg() -> object:
    return OmegaConf.create({
        "seed": 0,
        "workload": {"_target_": f"{__name__}.ToyWorkload", "n": 400},
        "quality": {"_target_": f"{__name__}.ToyQuality"},
    })


def ctx_for(prompt: str) -> DecisionContext:
    pools = {p: PoolState(p, [InstanceState(0)]) for p in ("large", "small")}
    req = Request(id=0, arrival=0.0, input_len=50, output_len=20, prompt=prompt)
    return DecisionContext(req, ClusterState(0.0, pools), {"large": [0], "small": [0]}, np.zeros(224, np.float32))


def test_trains_learns_and_caches(tmp_path: Path) -> None:
    model = train_threshold_model(toy_cfg(), cache_dir=tmp_path, max_requests=300, n_hash=1024)
    files = list(tmp_path.glob("threshold_*.npz"))
    assert len(files) == 1 and 0.2 < model.positive_rate < 0.4
    again = train_threshold_model(toy_cfg(), cache_dir=tmp_path, max_requests=300, n_hash=1024)
    assert np.array_equal(model.weights, again.weights)  # loaded from the cache file

    router = ThresholdRouter(threshold=0.5, model_path=str(files[0]))
    hard, easy = ctx_for("apple river integral proof"), ctx_for("apple river hello")
    assert router.score(hard) > 0.5 > router.score(easy)
    assert router.act(hard) == Action.LARGE and router.act(easy) == Action.SMALL


def test_prepare_calibrates_threshold_to_the_large_share(tmp_path: Path) -> None:
    router = ThresholdRouter(large_share=0.3, cache_dir=str(tmp_path), max_train_requests=300, n_hash=1024)
    router.prepare(toy_cfg())
    assert router.model is not None and router.threshold is not None
    share = float(np.mean(router.model.train_scores > router.threshold))
    assert share == pytest.approx(0.3, abs=0.05)


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no model"):
        ThresholdRouter().score(ctx_for("x"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a threshold-router model file"):
        ThresholdModel.load(bad)
    with pytest.raises(ValueError, match="threshold.large_share"):
        ThresholdRouter(large_share=2.0)
