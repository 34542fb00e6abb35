"""LinUCB: updates only when a request's credit arrives, learns a known linear reward, runs in the evaluator."""

from __future__ import annotations

import numpy as np

from rlroute.env.build import default_config
from rlroute.eval.run import evaluate
from rlroute.policies.bandit import LinUCB
from rlroute.policies.registry import make_policy
from rlroute.types import Action, Credit
from tests.test_policies import ctx


def test_update_waits_for_the_requests_credit() -> None:
    pol = LinUCB(alpha=0.0, warm_episodes=0)
    c = ctx()
    c.obs = np.ones(224, dtype=np.float32)
    a = pol.act(c)
    assert pol.updates.sum() == 0
    pol.observe([Credit(request_id=999, step=0, reward=1.0)])  # another request: nothing learned
    assert pol.updates.sum() == 0
    pol.observe([Credit(request_id=c.request.id, step=0, reward=1.0)])
    assert pol.updates[a] == 1 and pol.updates.sum() == 1
    pol.observe([Credit(request_id=c.request.id, step=0, reward=1.0)])  # credited once
    assert pol.updates.sum() == 1


def test_learns_a_linear_reward_and_respects_the_mask() -> None:
    rng = np.random.default_rng(0)
    pol = LinUCB(alpha=0.3, warm_episodes=0)
    truth = rng.normal(size=(3, 224)) * 0.2  # reward of action a = truth[a] . obs

    def context(rid: int) -> tuple:
        c = ctx()
        c.request.id = rid
        c.obs = rng.uniform(-1, 1, 224).astype(np.float32)
        return c, truth @ c.obs

    for rid in range(1500):
        c, r = context(rid)
        a = pol.act(c)
        pol.observe([Credit(rid, rid, float(r[a] + rng.normal(scale=0.05)))])
    pol.alpha = 0.0
    hits = 0
    for rid in range(1500, 1700):
        c, r = context(rid)
        hits += pol.act(c) == int(np.argmax(r))
    assert hits >= 180  # >= 90 % of greedy choices are the best action
    c, _ = context(5000)
    c.mask = np.array([False, True, False])
    assert pol.act(c) == Action.SMALL


def test_linucb_warm_starts_and_learns_online_in_the_evaluator() -> None:
    cfg = default_config(["episode_length=64"])
    pol = make_policy("linucb", warm_episodes=1)
    res = evaluate(pol, cfg, seeds=[0], reference_cost={0: 1.0})
    assert isinstance(pol, LinUCB) and pol.learning
    assert pol.updates.sum() == 64 + 64  # every request of the warm episode and of the test episode
    assert len(res.records) == 64
    frozen = make_policy("linucb", warm_episodes=1, online=False)
    evaluate(frozen, cfg, seeds=[0], reference_cost={0: 1.0})
    assert isinstance(frozen, LinUCB) and frozen.updates.sum() == 64
