"""What the simulator moves through its instances: a :class:`Job` (one routed request, one or two stages)
and a :class:`Seq` (one placement of one stage on an instance). Kept apart from the cluster and the
instances so that both can name them without importing each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlroute.cluster.base import Stage
from rlroute.types import Action, Request

if TYPE_CHECKING:
    from rlroute.cluster.sim.prefix_cache import Pin


class Job:
    """A submitted request on its way through one or two stages.

    A pipelined hybrid adds a warm-up: a job of its own (``warms`` = the job it warms, one prefill-only
    stage) that never yields a completion; the warmed job keeps the chosen small instance in ``pin`` until
    its answer stage is placed there."""

    __slots__ = ("action", "cached", "cost", "insts", "out", "pin", "pools", "prompt", "queue", "req", "retries",
                 "stage", "stages", "t0", "warms")

    def __init__(self, req: Request, action: Action, stages: list[Stage], t0: float) -> None:
        self.req = req
        self.action = action
        self.stages = stages
        self.stage = 0
        self.t0 = t0
        self.retries = 0
        self.queue = self.cost = 0.0
        self.prompt = self.cached = self.out = 0
        self.pools: list[str] = []
        self.insts: list[int] = []
        self.pin: object | None = None  # the warmed Instance (typed loosely: instance.py imports this module)
        self.warms: Job | None = None


class Seq:
    """One placement of one stage of a job on an instance (a retry or a hybrid stage is a new Seq).

    ``max_new`` is what the scheduler may read about the output (the client's ``max_new_tokens``);
    ``output`` is the true length, used only to know when the sequence finishes. ``gen`` counts tokens
    generated before its current prefill (non-zero after a retraction)."""

    __slots__ = ("blocks", "bs", "c0", "cached", "clip", "covered", "gen", "job", "join", "max_new", "nblocks", "output",
                 "pinned", "prefill_left", "private", "prompt", "t_admit", "t_enq", "t_first", "uid")

    def __init__(self, job: Job, prompt: int, output: int, blocks: tuple[int, ...], bs: int, uid: int,
                 max_new: int | None = None) -> None:
        self.job = job
        self.prompt = prompt
        self.output = output
        self.max_new = max(output, max_new) if max_new is not None else output
        covered = min(len(blocks) * bs, job.req.input_len, prompt)
        nb = -(-covered // bs)
        self.blocks = blocks if nb == len(blocks) else blocks[:nb]
        self.nblocks = nb
        self.bs = bs
        self.covered = covered
        self.uid = uid
        self.cached = 0
        self.prefill_left = 0
        self.private = 0
        self.gen = 0
        self.join = 0
        self.clip = 0
        self.pinned: list[Pin] = []
        self.c0 = 0
        self.t_enq = self.t_admit = self.t_first = -1.0
