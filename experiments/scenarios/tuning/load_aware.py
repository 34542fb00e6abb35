"""Validation-only diagnostic (issue 11): is there value in following the load on a scenario?

A *load-aware threshold router* — the study's threshold classifier with two large shares, one while the
large pool's queue is short and one while it is long — is scored on validation against the static
threshold router. If no such two-share rule beats the best static share on ``val``, the scenario gives a
state-aware policy little to win; if one does, that is headroom a learned router should reach (and a
stronger non-learned rule it has to beat). Never touches the test split. Appends one JSON line per
configuration to ``--out``; shares are calibrated on the classifier's training scores exactly as the
threshold router's are (:class:`rlroute.policies.threshold.ThresholdRouter`).

    python experiments/scenarios/tuning/load_aware.py --scenario provisioned_fleet \
        --idle 0.6 0.7 0.8 0.9 --busy 0.3 0.45 0.6 --queue 1 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from rlroute.policies.base import DecisionContext
from rlroute.policies.common import choose_allowed
from rlroute.policies.threshold import ThresholdRouter
from rlroute.types import Action

HERE = Path(__file__).parent


class LoadAwareThreshold(ThresholdRouter):
    """Large when P(needed) exceeds the ``idle`` share's threshold while the large pool's mean queue per
    healthy instance is below ``queue``, else the ``busy`` share's threshold."""

    name = "load_aware_threshold"

    def __init__(self, idle: float, busy: float, queue: float) -> None:
        super().__init__(large_share=idle)
        self.idle, self.busy, self.queue = idle, busy, queue
        self.t_idle = self.t_busy = 0.0

    def _calibrate(self) -> None:
        assert self.model is not None
        self.t_idle = float(np.quantile(self.model.train_scores, 1.0 - self.idle))
        self.t_busy = float(np.quantile(self.model.train_scores, 1.0 - self.busy))
        self.threshold = self.t_idle

    def act(self, ctx: DecisionContext) -> Action:
        large = [i for i in ctx.state.pools["large"].instances if i.healthy and not i.paused]
        queued = sum(i.queued for i in large) / max(len(large), 1)
        t = self.t_idle if queued < self.queue else self.t_busy
        return choose_allowed(Action.LARGE if self.score(ctx) > t else Action.SMALL, ctx)


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE))
    from pilot_val import SCORE, compose, score

    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--idle", type=float, nargs="+", required=True)
    ap.add_argument("--busy", type=float, nargs="+", required=True)
    ap.add_argument("--queue", type=float, nargs="+", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=SCORE)
    ap.add_argument("--out", default=str(HERE / "load_aware.jsonl"))
    a = ap.parse_args()
    cfg = compose(a.scenario, [], 1, None)
    for idle, busy, q in itertools.product(a.idle, a.busy, a.queue):
        if busy > idle:
            continue
        t0 = time.perf_counter()
        r = score(LoadAwareThreshold(idle, busy, q), cfg, a.seeds)
        rec = {"scenario": a.scenario, "policy": f"load_aware@idle={idle},busy={busy},queue={q}", "seeds": a.seeds,
               "val_rewards": r, "mean": float(np.mean(r)), "seconds": time.perf_counter() - t0}
        print(json.dumps(rec), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
