"""The supervised full-information router: trains on the train split only (no test prompt in its data),
fits its fork labels, saves/loads, and runs in the evaluator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlroute.env import build_env
from rlroute.env.build import default_config
from rlroute.eval.run import evaluate
from rlroute.policies.registry import make_policy
from rlroute.policies.supervised import (
    Dataset,
    SupervisedRouter,
    TrainSettings,
    collect,
    fit,
    prompt_key,
    save,
    train,
)
from rlroute.policies.whatif import WhatIf

SETTINGS = TrainSettings(iterations=2, episodes=1, episode_length=64, label_every=1, behaviour=["heuristic", "all_large"],
                         epochs=150)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = default_config(["episode_length=64"])
    net, meta = train(cfg, SETTINGS)
    path = tmp_path_factory.mktemp("sup") / "model.pt"
    save(net, meta, path)
    return path


def test_no_prompt_in_both_training_and_test_data(trained: Path) -> None:
    router = SupervisedRouter(model_path=str(trained))
    train_prompts = set(router.meta["train_prompts"])
    assert router.meta["split"] == "train" and len(train_prompts) >= 100
    cfg = default_config(["episode_length=200"])
    for split in ("test", "test_xdomain"):
        env = build_env(cfg, split=split)
        test_prompts: set[str] = set()
        for seed in range(3):
            env.reset(seed=seed)
            done = False
            while not done:
                key = prompt_key(env.decision_context().request)
                assert key is not None
                test_prompts.add(key)
                done = env.step(1)[3]
        env.close()
        assert len(test_prompts) >= 400
        assert not train_prompts & test_prompts, f"{split}: prompts shared with the supervised training data"


def test_fit_learns_the_labels_and_the_model_round_trips(trained: Path) -> None:
    cfg = default_config(["episode_length=64"])
    env = build_env(cfg, split="train")
    data = Dataset()
    collect(env, make_policy("random"), WhatIf("p"), 123, data)
    env.close()
    y = np.stack(data.y)
    net = fit(data, TrainSettings(epochs=300))
    router = SupervisedRouter()
    router.net = net
    pred = np.stack([router.predict(x[:-1]) for x in data.x])
    ok = np.isfinite(y)
    mse, var = float(np.mean((pred[ok] - y[ok]) ** 2)), float(np.var(y[ok]))
    assert mse < 0.5 * var, f"fit MSE {mse:.4g} vs label variance {var:.4g}"
    loaded = SupervisedRouter(model_path=str(trained))
    again = SupervisedRouter(model_path=str(trained))
    assert np.array_equal(loaded.predict(data.x[0][:-1]), again.predict(data.x[0][:-1]))


def test_supervised_runs_in_the_evaluator_and_names_a_missing_file(trained: Path, tmp_path: Path) -> None:
    cfg = default_config(["episode_length=48"])
    res = evaluate(make_policy("supervised", model_path=str(trained)), cfg, seeds=[0], reference_cost={0: 1.0})
    assert len(res.records) == 48 and np.isfinite(res.per_seed[0]["reward"])
    # Its score (predicted strong-model advantage) feeds RouteLLM's APGR sweep.
    assert all(np.isfinite(r["score"]) for r in res.records) and np.isfinite(res.summary["apgr"].mean)
    with pytest.raises(Exception, match="no model file"):
        make_policy("supervised", model_path=str(tmp_path / "none.pt"))


def test_a_model_of_another_feature_schema_is_refused(trained: Path, tmp_path: Path) -> None:
    """A teacher trained on older features (e.g. schema v3 before the one text path) must not score v4
    observations: loading names the file and both hashes."""
    import torch

    blob = torch.load(trained, map_location="cpu", weights_only=False)
    blob["schema_hash"] = "832f0eff5fb17eddf689bad591feaaafd7446a2bbed8260d46b06cb600473ad0"  # schema v3's
    old = tmp_path / "v3.pt"
    torch.save(blob, old)
    with pytest.raises(ValueError, match="v3.pt was trained on feature schema hash 832f0eff"):
        SupervisedRouter(model_path=str(old))


def test_label_every_labels_every_kth_visited_decision() -> None:
    env = build_env(default_config(["episode_length=64"]), split="train")
    for every, expected in ((1, 64), (4, 16), (5, 13)):
        data = Dataset()
        collect(env, make_policy("heuristic"), WhatIf("p"), 20_000, data, every=every)
        assert len(data) + data.excluded == expected
    env.close()
