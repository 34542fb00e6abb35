"""SGLang's default ``mem_fraction_static`` for a dedicated server, as ``ServerArgs`` computes it.

Source: sgl-project/sglang ``python/sglang/srt/server_args.py``, ``ServerArgs._handle_gpu_memory_settings``
(the v0.5 series; the 2026 refactor at commit 001067ff moves the same arithmetic into a resolver and keeps
it). When ``--mem-fraction-static`` is not given::

    reserved_mem  = 512                                    # MiB: attention-backend metadata
    reserved_mem += max(chunked_prefill_size, 2048) * 1.5  # activations of a prefill chunk
    reserved_mem += cuda_graph_max_bs * 2                  # CUDA graphs
    reserved_mem += tp_size * pp_size / 8 * 1024           # large parallel sizes
    if gpu_mem > 60 * 1024: reserved_mem = max(reserved_mem, 10 * 1024)
    mem_fraction_static = round((gpu_mem - reserved_mem) / gpu_mem, 3)

with ``gpu_mem`` the GPU's total memory in MiB (``nvidia-smi``; an H100 80GB HBM3 reports 81,559 MiB) and,
for GPUs of 60-160 GiB (A100/H100/H200), ``chunked_prefill_size`` 8192 and ``cuda_graph_max_bs`` 256 below
TP4, 512 from TP4 up. Without DP attention, speculative decoding or DeepEP (which reserve more).
Examples: Qwen3-4B TP1 on an H100 -> 0.835; TP4 -> 0.824; TP8 -> 0.818; TP4 on an H200 (143,771 MiB) -> 0.900.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rlroute.cluster.profiles import ServingProfile

MIB = 2**20


def sglang_cuda_graph_max_bs(gpu_mem_mib: float, tp_size: int) -> int:
    """``cuda_graph_max_bs`` default by GPU memory class (same source), for GPUs >= 60 GiB."""
    if gpu_mem_mib < 60 * 1024:
        raise ValueError(f"sglang defaults are modelled for GPUs of >= 60 GiB, got {gpu_mem_mib:.0f} MiB")
    if gpu_mem_mib < 160 * 1024:
        return 256 if tp_size < 4 else 512
    return 512


def sglang_mem_fraction_static(gpu_mem_mib: float, tp_size: int, chunked_prefill_size: int = 8192,
                               pp_size: int = 1) -> float:
    """SGLang's default ``mem_fraction_static`` for one server of ``tp_size`` GPUs (module doc)."""
    if tp_size < 1 or pp_size < 1:
        raise ValueError(f"tp_size and pp_size must be >= 1, got {tp_size}, {pp_size}")
    reserved = 512 + max(chunked_prefill_size, 2048) * 1.5 + sglang_cuda_graph_max_bs(gpu_mem_mib, tp_size) * 2
    reserved += tp_size * pp_size / 8 * 1024
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)


def resolve_mem_fraction(value: Any, profile: ServingProfile, where: str) -> float:
    """A configured ``mem_fraction_static``: a number in (0, 1], or ``auto`` = SGLang's default for a dedicated
    server of ``profile`` (its GPU memory, ``num_gpus`` as the TP size, its chunked-prefill size)."""
    if value == "auto":
        return sglang_mem_fraction_static(profile.gpu_memory_gb * 1e9 / MIB, profile.num_gpus,
                                          profile.chunked_prefill_tokens)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{where}.mem_fraction_static must be a number in (0, 1] or 'auto', got {value!r}")
    return float(value)


__all__ = ["MIB", "resolve_mem_fraction", "sglang_cuda_graph_max_bs", "sglang_mem_fraction_static"]
