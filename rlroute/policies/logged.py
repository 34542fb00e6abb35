"""The actions a router logged, replayed: ``rlroute sim workload=replay workload.path=<log> sim_policy=logged``.

The replay twin's reference policy (:mod:`rlroute.workload.replay`): request ``id`` is its row in the
arrival-ordered log, and this policy executes the action the router executed for that row, so the
simulator's latencies can be compared with the logged ones on the same traffic and the same decisions. A
pool that cannot serve in the simulator at that moment gets the usual substitute (:func:`choose_allowed`).
"""

from __future__ import annotations

from typing import Any

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import choose_allowed
from rlroute.types import Action


class LoggedPolicy(Policy):
    """Replays a decision log's executed actions by request id (the row in the log).

    Args:
        path: the decision log; ``None``: the replayed workload's (``workload.path``), read in :meth:`prepare`.
    """

    name = "logged"

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.actions: list[int] | None = None
        if path is not None:
            self._load(path)

    def _load(self, path: str) -> None:
        from rlroute.workload.replay import load_log

        self.actions = load_log(path).actions

    def prepare(self, cfg: Any) -> None:
        """Take the log from ``workload.path`` when no ``path`` was given."""
        if self.actions is None:
            path = (cfg.get("workload") or {}).get("path") if cfg is not None else None
            if not path:
                raise ValueError("policy logged: expected policy.path or a replayed workload (workload=replay "
                                 "workload.path=<decision log>)")
            self._load(str(path))

    def act(self, ctx: DecisionContext) -> Action:
        """The logged action of ``ctx.request`` (by id)."""
        if self.actions is None:
            raise RuntimeError("policy logged: no decision log loaded (call prepare(cfg) or give path)")
        rid = ctx.request.id
        if not 0 <= rid < len(self.actions):
            raise KeyError(f"policy logged: request id {rid} is not a row of the log ({len(self.actions)} rows): "
                           "replay a workload=replay stream of the same log")
        return choose_allowed(Action(self.actions[rid]), ctx)
