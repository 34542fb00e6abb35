"""Measure the FP8-vs-bf16 speed-up of the GEMMs of one Qwen3-235B-A22B TP8 rank on one H100.

``fit_profiles.py`` derives the FP8 8xH100 profile from a bf16 measurement of one TP8 rank; this script
replaces the assumed FP8 factor by measured ones, per GEMM stage and token count:

* dense stages (qkv_proj, o_proj, lm_head): bf16 ``F.linear`` vs dynamic per-token FP8 quantisation of
  the activations + ``torch._scaled_mm`` (e4m3, row-wise activation scales x per-channel weight scales);
* MoE experts: bf16 ``torch._grouped_mm`` (gate/up + down) vs FP8 ``torch._scaled_grouped_mm``.

Row-wise scaling stands in for the 128x128 block scaling of the released FP8 checkpoint (SGLang runs it
with DeepGEMM / Triton block kernels); both read one byte per weight. Each case is CUDA-graph captured
with ``REPS`` calls cycling over 8 weight copies (so L2 can't hold them), median of 7 replays.

Run (GPU)::

    python3 experiments/profiling/fp8_gemm_bench.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
REPS, COPIES = 8, 8
TOKENS = [1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
# One TP8 rank of Qwen3-235B-A22B: (K, N) of each dense GEMM; experts: 128 x gate_up (4096 -> 2*192), down (192 -> 4096)
DENSE = {"qkv_proj": (4096, (8 + 2) * 128), "o_proj": (8 * 128, 4096), "lm_head": (4096, 151936 // 8)}
N_EXP, TOP_K, HID, INTER = 128, 8, 4096, 1536 // 8


def time_graph(fn: Callable[[int], Any]) -> float:
    """Median ms of one fn(r) call from a CUDA graph of REPS calls."""
    fn(0)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for r in range(REPS):
            fn(r)
    g.replay()
    times = []
    for _ in range(7):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / REPS)
    return statistics.median(times)


def quant_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-row FP8 quantisation (what the engine does to activations before each FP8 GEMM)."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-6) / FP8_MAX
    return (x / scale).to(FP8), scale


def dense_case(k: int, n: int, t: int) -> dict[str, Any]:
    """bf16 linear vs quant + _scaled_mm for [t, k] x [k, n]."""
    m = max(16, -(-t // 16) * 16)  # FP8 GEMMs want 16-aligned rows; engines pad the same way
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(COPIES)]
    w8 = [(wi / (wi.abs().amax(dim=1, keepdim=True).float() / FP8_MAX)).to(FP8) for wi in w]
    ws = [wi.abs().amax(dim=1, keepdim=True).float().t().contiguous() / FP8_MAX for wi in w]  # [1, n]
    bf16 = time_graph(lambda r: F.linear(x[:t], w[r % COPIES]))

    def fp8(r: int) -> torch.Tensor:
        xq, xs = quant_rows(x)
        return torch._scaled_mm(xq, w8[r % COPIES].t(), scale_a=xs, scale_b=ws[r % COPIES], out_dtype=torch.bfloat16)

    ref = F.linear(x, w[0]).float()
    err = float((fp8(0).float() - ref).norm() / ref.norm())
    return dict(bf16_ms=bf16, fp8_ms=time_graph(fp8), fp8_rel_err=err)


def moe_case(t: int) -> dict[str, Any]:
    """bf16 grouped experts (gate_up + down) vs FP8 scaled grouped GEMMs, uniform random routing."""
    rows = t * TOP_K
    idx = torch.randint(0, N_EXP, (rows,), device="cuda")
    counts = torch.bincount(idx, minlength=N_EXP)
    # _scaled_grouped_mm wants 16-aligned group sizes: pad each expert's rows up (engines align blocks too)
    padded = ((counts + 15) // 16) * 16
    offs_b = torch.cumsum(counts, 0, dtype=torch.int32)
    offs_8 = torch.cumsum(padded, 0, dtype=torch.int32)
    xb = torch.randn(rows, HID, device="cuda", dtype=torch.bfloat16)
    x8 = torch.randn(int(padded.sum()), HID, device="cuda", dtype=torch.bfloat16)
    gu = [torch.randn(N_EXP, 2 * INTER, HID, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(COPIES)]
    dn = [torch.randn(N_EXP, HID, INTER, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(COPIES)]

    def bf16(r: int) -> torch.Tensor:
        h = torch._grouped_mm(xb, gu[r % COPIES].transpose(1, 2), offs=offs_b)
        a = F.silu(h[:, :INTER]) * h[:, INTER:]
        return torch._grouped_mm(a, dn[r % COPIES].transpose(1, 2), offs=offs_b)

    out: dict[str, Any] = dict(bf16_ms=time_graph(bf16))
    gu8 = [(g / 0.02 * 50).to(FP8) for g in gu]  # ~N(0, 50): inside e4m3 range (448)
    dn8 = [(d / 0.02 * 50).to(FP8) for d in dn]
    s_gu = torch.full((N_EXP, 2 * INTER), 0.02 / 50, device="cuda")
    s_dn = torch.full((N_EXP, HID), 0.02 / 50, device="cuda")

    def fp8(r: int) -> torch.Tensor:
        xq, xs = quant_rows(x8)
        h = torch._scaled_grouped_mm(xq, gu8[r % COPIES].transpose(1, 2), xs.squeeze(1), s_gu, offs=offs_8,
                                     out_dtype=torch.bfloat16)
        a = F.silu(h[:, :INTER]) * h[:, INTER:]
        aq, as_ = quant_rows(a)
        return torch._scaled_grouped_mm(aq, dn8[r % COPIES].transpose(1, 2), as_.squeeze(1), s_dn, offs=offs_8,
                                        out_dtype=torch.bfloat16)

    try:
        out["fp8_ms"] = time_graph(fp8)
    except (RuntimeError, TypeError) as exc:  # API or alignment constraints differ across torch versions
        out["fp8_error"] = str(exc).splitlines()[0][:300]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run every case and write fp8_gemm.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("fp8_gemm_bench.py needs a CUDA GPU with FP8 tensor cores (H100)")
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, cases={})
    for t in TOKENS:
        row: dict[str, Any] = {}
        for name, (k, n) in DENSE.items():
            try:
                row[name] = dense_case(k, n, t)
            except (RuntimeError, TypeError) as exc:
                row[name] = dict(error=str(exc).splitlines()[0][:300])
        row["moe_experts"] = moe_case(t)
        res["cases"][str(t)] = row
        torch.cuda.empty_cache()
        print(t, json.dumps({k: {kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                             for k, v in row.items()}), flush=True)
    (args.out / "fp8_gemm.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
