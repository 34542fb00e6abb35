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
