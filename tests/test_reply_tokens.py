"""``system.<pool>.reply_tokens`` (schema v5): the pool's recent output tokens per completion, an EWMA of its
completions in the simulator and in the live monitor (the router's state keeper) by the same arithmetic."""

from __future__ import annotations

import numpy as np

from rlroute.cluster.base import EWMA
from rlroute.cluster.live.pool import LivePool, StageResult
from rlroute.cluster.sim import SimCluster
from rlroute.cluster.sim.run import run
from rlroute.cluster.sim.synthetic import conversation_requests
from rlroute.features import SCHEMA, FeatureExtractor
from rlroute.types import Action

POOLS = {
    "large": {"profile": "qwen3-235b-a22b-fp8__h100x8", "instances": 1},
    "small": {"profile": "qwen3-4b__h100", "instances": 2},
}


def _fold(outputs: list[int]) -> float:
    x = 0.0
    for o in outputs:
        x += EWMA * (o - x)
    return x


def test_sim_reply_tokens_is_the_ewma_of_the_pools_completed_outputs() -> None:
    reqs = conversation_requests(40, 2.0, np.random.default_rng(3))
    cl = SimCluster(pools=POOLS)  # type: ignore[arg-type]
    assert cl.state().pools["small"].recent_output_tokens == 0.0  # no completion yet
    comps = run(cl, reqs, lambda r: int(Action.SMALL))
    done = sorted((c for c in comps if not c.failed), key=lambda c: c.finish)
    assert len(done) == len(reqs) and len({c.output_tokens for c in done}) > 1
    st = cl.state()
    assert st.pools["small"].recent_output_tokens == _fold([c.output_tokens for c in done])
    assert st.pools["large"].recent_output_tokens == 0.0  # nothing went there
    obs = FeatureExtractor("hash").extract(reqs[-1], st, cl.prefix_match(reqs[-1]))
    i = SCHEMA.names.index("system.small.reply_tokens")
    want = np.log1p(st.pools["small"].recent_output_tokens / 16) / np.log1p(8192 / 16)
    assert abs(float(obs[i]) - want) < 1e-6 and obs[SCHEMA.names.index("system.large.reply_tokens")] == 0.0


def test_live_pool_reply_tokens_follows_the_same_arithmetic() -> None:
    pool = LivePool("small", {"urls": ["http://127.0.0.1:1", "http://127.0.0.1:2"]}, np.random.default_rng(0))
    outputs = [12, 300, 7, 1, 2048]
    for k, o in enumerate(outputs):
        res = StageResult(prompt_tokens=100, cached_tokens=0, output_tokens=o, e2e=1.0, ttft=0.1, tpot=0.01,
                          queue_time=0.0)
        pool.record(res, cost=0.0, now=float(k), slo_miss=False)
    assert pool.snapshot(5.0).recent_output_tokens == _fold(outputs)
