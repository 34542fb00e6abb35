"""Shared record types and aliases: the vocabulary every layer of rlroute speaks.

One decision path runs from a workload's :class:`Request` through the features and a policy to an
:class:`Action`, into a cluster (simulated or live) and back as a :class:`Completion`. These types are
the contract between those layers; they hold data only and import nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

POOLS: tuple[str, str] = ("large", "small")


class Action(IntEnum):
    """Routing action; the integer is the Gymnasium ``Discrete(3)`` index."""

    LARGE = 0
    SMALL = 1
    HYBRID = 2  # plan on the large pool, execute on the small pool (or cascade, per quality config)


ACTION_NAMES: tuple[str, str, str] = ("large", "small", "hybrid")


@dataclass(slots=True)
class QualityDraw:
    """Quality of one request under each action, drawn once when the request is materialised.

    ``p`` and ``ok`` are indexed by :class:`Action`. ``escalated`` is only meaningful in cascade mode
    (the modelled verifier sent the request on to the large pool).
    """

    p: tuple[float, float, float]
    ok: tuple[bool, bool, bool]
    escalated: bool = False


@dataclass(slots=True)
class Request:
    """One LLM request as every workload yields it.

    Attributes:
        id: unique within a workload stream.
        arrival: arrival time in seconds from the start of the stream.
        input_len: prompt length in tokens.
        output_len: tokens the request will generate (trace ground truth or sampled).
        blocks: chained hashes of the prompt's KV blocks, ``block_size`` tokens each; equal ids mean equal
            prefixes (Mooncake ``hash_ids`` or hashed token-id blocks for text prompts).
        block_size: tokens per block in ``blocks``.
        output_blocks: chained ids of the full blocks of prompt + output past the prompt's full blocks, i.e.
            the ids the next turn's prompt carries for this answer (``blocks[:input_len // block_size] +
            output_blocks`` are the full blocks of the finished sequence); ``()`` when unknown. Instances
            insert them into the cache when the request finishes (SGLang ``cache_finished_req``).
        prompt: prompt text when the workload has it (prompt sets, ShareGPT), else ``None`` (traces). For a
            trace joined with a prompt set, only the newest message (see ``context_tokens``).
        token_ids: prompt token ids when tokenised, else ``None``.
        session_id: conversation id for multi-turn workloads, else ``None``.
        turn: 0-based turn within the session.
        category: e.g. the MMLU subject, ``None`` when unknown.
        labels: per-model correctness from a labelled set, keyed by model role ("large", "small").
        max_new_tokens: what the client asked for (>= output_len); features use it, not output_len.
        context_tokens: tokens before ``prompt`` known only by their length and ``blocks`` (a trace's
            context): a client sends filler text standing for them, then ``prompt``
            (:mod:`rlroute.workload.client`). 0 when ``prompt`` is the whole prompt; a request with neither
            prompt nor ``token_ids`` (timing-only traces) is all context whatever this says.
        quality: outcome draw attached by the quality model; ``None`` until drawn.
        cache: per-request memo used by feature extraction (request block is computed once).
    """

    id: int
    arrival: float
    input_len: int
    output_len: int
    blocks: tuple[int, ...] = ()
    block_size: int = 64
    output_blocks: tuple[int, ...] = ()
    prompt: str | None = None
    token_ids: tuple[int, ...] | None = None
    session_id: int | None = None
    turn: int = 0
    category: str | None = None
    labels: dict[str, bool] | None = None
    max_new_tokens: int | None = None
    context_tokens: int = 0
    quality: QualityDraw | None = None
    cache: dict[str, object] = field(default_factory=dict, repr=False, compare=False)


@dataclass(slots=True)
class Completion:
    """What the cluster reports for a finished (or failed) request; one per submitted request.

    For hybrid requests the two linked sub-requests are reported as one completion: TTFT is the time to
    the first token of the final answer, cost and tokens are summed, ``instances`` lists both placements.
    Times are in seconds of cluster time.
    """

    request_id: int
    action: Action
    arrival: float
    finish: float
    queue_time: float
    ttft: float
    tpot: float
    e2e: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    cost: float
    quality_ok: bool | None
    pools: tuple[str, ...]
    instances: tuple[int, ...]
    failed: bool = False
    fail_reason: str | None = None
    retries: int = 0


class Credit(NamedTuple):
    """One request's own reward, paid in the step where the request completed (``info["credits"]``).

    ``step`` is the episode step (0-based) of the request's routing decision, the step the reward belongs
    to; ``reward`` is :meth:`rlroute.env.reward.RewardConfig.request_reward` of its quality, billed cost
    and completion.
    """

    request_id: int
    step: int
    reward: float
