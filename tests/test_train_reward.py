"""The quickstart's reward treatment of hybrid: a separate TTFT SLO for plan-and-execute completions."""

from __future__ import annotations

import pytest

from rlroute.env.reward import RewardConfig
from rlroute.types import Action, Completion


def _completion(action: Action, ttft: float) -> Completion:
    return Completion(request_id=0, action=action, arrival=0.0, finish=10.0, queue_time=0.0, ttft=ttft,
                      tpot=0.01, e2e=10.0, prompt_tokens=10, cached_tokens=0, output_tokens=10, cost=0.0,
                      quality_ok=True, pools=("large", "small"), instances=(0, 0))


@pytest.mark.parametrize(
    ("hybrid_slo", "action", "ttft", "violates"),
    [
        (None, Action.HYBRID, 3.0, True),    # default: hybrid judged by the 2 s TTFT SLO
        (4.0, Action.HYBRID, 3.0, False),    # its own target
        (4.0, Action.HYBRID, 4.5, True),
        (4.0, Action.LARGE, 3.0, True),      # other actions keep slo_ttft_s
        (4.0, Action.SMALL, 1.0, False),
    ],
)
def test_hybrid_ttft_slo(hybrid_slo: float | None, action: Action, ttft: float, violates: bool) -> None:
    rc = RewardConfig.from_mapping({"slo_ttft_s": 2.0, "slo_ttft_hybrid_s": hybrid_slo})
    assert rc.violates(_completion(action, ttft)) is violates


def test_hybrid_ttft_slo_rejects_negative() -> None:
    with pytest.raises(ValueError, match="slo_ttft_hybrid_s"):
        RewardConfig.from_mapping({"slo_ttft_hybrid_s": -1.0})


def test_quickstart_reward_composes() -> None:
    from rlroute.train.quickstart import compose

    rc = RewardConfig.from_mapping(dict(compose([]).reward))
    assert rc.slo_ttft_hybrid_s is not None and rc.slo_ttft_hybrid_s > rc.slo_ttft_s


def test_quality_baseline_pays_each_request_its_gain_over_small_and_only_in_training() -> None:
    """``reward.quality_baseline: small`` credits q(action) - q(small) of the same request: over a drained
    episode the credited rewards fall by exactly the sum of the small model's quality, whatever the actions
    (so every policy's return moves alike); ``agent.quality_baseline`` reaches only the training envs."""
    import numpy as np

    from rlroute.env.build import build_env, default_config
    from rlroute.train.envs import training_env_cfg

    def credited(cfg: object) -> tuple[float, float]:
        env = build_env(cfg, split="train")
        env.reset(seed=3)
        total, q_small, done, k = 0.0, 0.0, False, 0
        while not done:
            q_small += env.unwrapped._pending.quality.p[Action.SMALL]  # type: ignore[attr-defined]
            _, _, term, trunc, info = env.step([0, 1, 1][k % 3])  # large, small, small, ...
            total += sum(c.reward for c in info["credits"])
            k, done = k + 1, term or trunc
        env.close()
        return total, q_small

    base = default_config(["episode_length=64", "agent.quality_baseline=small"])
    train_cfg = training_env_cfg(base)
    assert train_cfg.reward.quality_baseline == "small"
    assert base.reward.get("quality_baseline", "none") == "none"  # the scenario's own reward is untouched
    plain, _ = credited(base)
    shifted, q_small = credited(train_cfg)
    assert q_small > 10 and np.isclose(plain - shifted, q_small)
    with pytest.raises(ValueError, match="reward.quality_baseline"):
        RewardConfig.from_mapping({"quality_baseline": "large"})
