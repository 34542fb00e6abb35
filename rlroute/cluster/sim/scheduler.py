"""Scheduler options of a simulated instance: SGLang's scheduler (default) or the seed's legacy model.

``cluster.pools.<name>.scheduler`` selects the instance model (``conf/cluster/scheduler/``):

* ``kind: sglang`` (default) — SGLang's scheduler (:mod:`rlroute.cluster.sim.sglang_instance`): prefill
  steps run alone unless ``mixed_chunk``; admission by ``new_token_ratio`` reservation; ``retract_decode``
  when the KV pool runs out during decode; ``fcfs`` or ``lpm`` queue order.
* ``kind: legacy`` — the first simulator's vLLM-V1-like model (:mod:`rlroute.cluster.sim.legacy_instance`):
  every step mixes prefill and decode, admission reserves each request's true output length, nothing is
  preempted, FIFO.

Every default below is SGLang's, with the file it comes from (sgl-project/sglang, ``python/sglang/srt/``):

* ``chunked_prefill_size``: ``server_args.py`` (``ServerArgs._handle_gpu_memory_settings``) picks it from
  the GPU memory — 2048 below 35 GB, 4096 below 60 GB (A100 40GB), 8192 below 160 GB (H100, H200, H20),
  16384 above (B200, MI300). ``null`` here applies that rule to the profile's ``gpu_memory_gb`` (so the
  H100 and H200 profiles get 8192, the value they were profiled with).
* ``max_prefill_tokens``: 16384 (``server_args.py``).
* ``schedule_policy``: ``fcfs`` (``server_args.py``); ``lpm`` sorts by longest cached prefix and falls
  back to FCFS above 128 waiting requests (``managers/schedule_policy.py``,
  ``SchedulePolicy._determine_active_policy``).
* ``enable_mixed_chunk``: false (``server_args.py``).
* ``new_token_ratio``: starts at ``SGLANG_INIT_NEW_TOKEN_RATIO`` = 0.7, decays each decode step by
  ``(init - min) / SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS`` (600) down to ``init *
  SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR`` (0.14) = 0.098 (``global_config.py``; ``Scheduler.__init__`` and
  ``Scheduler.update_running_batch`` in ``managers/scheduler.py``); ``schedule_conservativeness`` 1.0.
* ``clip_max_new_tokens``: ``CLIP_MAX_NEW_TOKENS`` = 4096 (``managers/schedule_policy.py``).
* ``retract_decode_steps``: 20 (``global_config.retract_decode_steps``; ``ScheduleBatch.retract_decode``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

SCHEDULERS: tuple[str, ...] = ("sglang", "legacy")
QUEUE_POLICIES: tuple[str, ...] = ("fcfs", "lpm")
LPM_MAX_QUEUE = 128  # SchedulePolicy._determine_active_policy: lpm turns into fcfs above this queue length


def sglang_chunked_prefill_size(gpu_memory_gb: float) -> int:
    """SGLang's default ``chunked_prefill_size`` for a GPU of ``gpu_memory_gb`` (module doc)."""
    if gpu_memory_gb < 35:
        return 2048
    if gpu_memory_gb < 60:
        return 4096
    if gpu_memory_gb < 160:
        return 8192
    return 16384


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """One pool's scheduler options (module doc for each default's source).

    Attributes:
        kind: ``sglang`` or ``legacy``.
        mixed_chunk: SGLang ``--enable-mixed-chunk``: a prefill step also decodes the running batch.
        chunked_prefill_size: prefill tokens per step at most; ``None`` = SGLang's GPU-memory rule (sglang)
            or the profile's ``chunked_prefill_tokens`` (legacy).
        max_prefill_tokens: prompt tokens one prefill batch may admit (a first request may exceed it).
        schedule_policy: ``fcfs`` or ``lpm``.
        init_new_token_ratio, min_new_token_ratio_factor, new_token_ratio_decay_steps: the reservation ratio.
        clip_max_new_tokens: cap of a request's ``max_new_tokens`` in the reservation.
        retract_decode_steps: decode steps of headroom a retraction frees for the requests kept.
    """

    kind: str = "sglang"
    mixed_chunk: bool = False
    chunked_prefill_size: int | None = None
    max_prefill_tokens: int = 16384
    schedule_policy: str = "fcfs"
    init_new_token_ratio: float = 0.7
    min_new_token_ratio_factor: float = 0.14
    new_token_ratio_decay_steps: float = 600.0
    clip_max_new_tokens: int = 4096
    retract_decode_steps: int = 20

    @property
    def min_new_token_ratio(self) -> float:
        """Floor of the decaying ratio (``Scheduler.__init__``)."""
        return min(self.init_new_token_ratio * self.min_new_token_ratio_factor, 1.0)

    @property
    def new_token_ratio_decay(self) -> float:
        """Ratio decrement per decode step (``Scheduler.__init__``)."""
        return (self.init_new_token_ratio - self.min_new_token_ratio) / self.new_token_ratio_decay_steps

    def chunk_size(self, gpu_memory_gb: float, profile_chunk: int) -> int:
        """Prefill tokens per step for a profile: the configured value, else the kind's default."""
        if self.chunked_prefill_size is not None:
            return self.chunked_prefill_size
        return sglang_chunked_prefill_size(gpu_memory_gb) if self.kind == "sglang" else profile_chunk


def parse_scheduler(cfg: Mapping[str, Any] | None, where: str) -> SchedulerConfig:
    """Validate a ``scheduler`` mapping (``None`` = all defaults); errors name ``where`` and the key."""
    raw = dict(cfg or {})
    known = {f.name for f in fields(SchedulerConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(known)}")
    raw = {k: v for k, v in raw.items() if v is not None or k == "chunked_prefill_size"}
    try:
        sc = SchedulerConfig(**raw)
    except TypeError as exc:  # pragma: no cover - unknown keys are caught above
        raise ValueError(f"{where}: {exc}") from exc
    if sc.kind not in SCHEDULERS:
        raise ValueError(f"{where}.kind must be one of {SCHEDULERS}, got {sc.kind!r}")
    if sc.schedule_policy not in QUEUE_POLICIES:
        raise ValueError(f"{where}.schedule_policy must be one of {QUEUE_POLICIES}, got {sc.schedule_policy!r}")
    if sc.chunked_prefill_size is not None and int(sc.chunked_prefill_size) < 1:
        raise ValueError(f"{where}.chunked_prefill_size must be >= 1 or null, got {sc.chunked_prefill_size}")
    if int(sc.max_prefill_tokens) < 1:
        raise ValueError(f"{where}.max_prefill_tokens must be >= 1, got {sc.max_prefill_tokens}")
    if not 0.0 < float(sc.init_new_token_ratio) <= 1.0:
        raise ValueError(f"{where}.init_new_token_ratio must be in (0, 1], got {sc.init_new_token_ratio}")
    if not 0.0 <= float(sc.min_new_token_ratio_factor) <= 1.0:
        raise ValueError(f"{where}.min_new_token_ratio_factor must be in [0, 1], got {sc.min_new_token_ratio_factor}")
    if float(sc.new_token_ratio_decay_steps) <= 0:
        raise ValueError(f"{where}.new_token_ratio_decay_steps must be > 0, got {sc.new_token_ratio_decay_steps}")
    if int(sc.clip_max_new_tokens) < 1:
        raise ValueError(f"{where}.clip_max_new_tokens must be >= 1, got {sc.clip_max_new_tokens}")
    if int(sc.retract_decode_steps) < 0:
        raise ValueError(f"{where}.retract_decode_steps must be >= 0, got {sc.retract_decode_steps}")
    return sc
