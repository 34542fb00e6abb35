"""Profile Qwen3 serving step times on one GPU, operator by operator and as CUDA-graph model steps.

For each model (random bf16 weights, real architecture from its config; see ``qwen3_ops.py``) and each
shape (prefill: n_seqs x prompt tokens; decode: batch x context tokens) it records

* ``ops``: per-stage GPU time (Vidur-style), each stage captured ``--reps`` times in one CUDA graph,
  cycling over ``--distinct`` different layers' weights / KV caches so the 50 MB L2 can't hold them;
* ``composed_ms``: embed + num_layers x sum(layer stages) + head stages (the per-operator prediction);
* ``step_ms``: the whole step (embed, all num_layers layers, final norm, LM head, sampling) captured in
  one CUDA graph and replayed: what an engine with CUDA graphs (SGLang decode) pays on the GPU;
* ``eager_step_ms``: the same Python op sequence run eagerly (includes kernel-launch overhead).

Medians over ``--runs`` replays after warm-up, timed with CUDA events. Shapes are split into ``fit``
and ``heldout`` sets; ``fit_profiles.py`` fits the simulator's step-time model on ``fit`` only.

Run (on the GPU machine)::

    PYTHONUNBUFFERED=1 python3 experiments/profiling/profile_models.py --out $OUT

``--tiny`` runs a miniature MoE on the CPU (no CUDA graphs) to test the pipeline.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qwen3_ops as q3  # noqa: E402

PREFILL_FIT = [(1, 128), (1, 256), (1, 512), (1, 1024), (1, 2048), (1, 4096), (1, 8192),
               (4, 256), (4, 1024), (16, 512)]
PREFILL_HELDOUT = [(1, 384), (1, 768), (1, 1536), (1, 3072), (1, 6144), (2, 2048), (8, 256)]
DECODE_FIT = [(b, c) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) for c in (256, 1024, 4096)] + [
    (1, 16384), (4, 16384), (16, 16384)]
DECODE_HELDOUT = [(3, 700), (6, 12000), (12, 3000), (24, 1500), (48, 600), (96, 2000), (160, 1200),
                  (200, 400)]
# Mixed steps (prefill chunk + running decodes in one batch, SGLang's --enable-mixed-chunk): validation
# only, to test that the fitted prefill and decode terms add up. (n_seqs, seq_len, ctx, decode seqs)
MIXED_VALIDATION = [(1, 512, 1024, 32), (1, 2048, 1024, 64), (1, 4096, 4096, 16), (2, 1024, 512, 128),
                    (1, 256, 2048, 8), (1, 8000, 1024, 192)]
# KV budget per instance: SGLang's mem_fraction_static 0.88 of 80 GB minus the weights, so decode shapes
# stay within what a real server could hold (batch x context tokens).
# The same 80 GB budget is kept on an H200 so that both GPUs are measured on identical shapes.
MEM_FRACTION, GPU_GB = 0.88, 80.0
# Bytes per weight as a model is deployed, for that KV budget (default 2: bf16). The TP4 rank serves the FP8
# checkpoint (1 B/param; Qwen3-235B-A22B-FP8): in bf16 its 58.8e9 parameters would fill more than the 80 GB and
# leave no decode shape. It is still *timed* in bf16 (see qwen3_ops.py).
DEPLOYED_WEIGHT_BYTES = {"qwen3-235b-a22b-tp4-rank": 1}


def kv_bytes_per_token(spec: dict[str, Any]) -> int:
    """K+V bytes per token over all layers in bf16."""
    return 2 * 2 * spec["num_hidden_layers"] * spec["num_key_value_heads"] * spec["head_dim"]


def weight_params(spec: dict[str, Any]) -> int:
    """Total parameter count from the architecture (embeddings + layers + LM head)."""
    h, nh, nkv, hd = (spec[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim"))
    attn = h * (nh + 2 * nkv) * hd + nh * hd * h + 2 * hd + 2 * h
    if q3.is_moe(spec):
        mlp = spec["num_experts"] * 3 * h * spec["moe_intermediate_size"] + spec["num_experts"] * h
    else:
        mlp = 3 * h * spec["intermediate_size"]
    emb = spec["vocab_size"] * h * (1 if spec["tie_word_embeddings"] else 2)
    return spec["num_hidden_layers"] * (attn + mlp) + emb + h


def kv_capacity_tokens(spec: dict[str, Any], weight_bytes: int = 2) -> int:
    """Tokens of KV cache an 80 GB GPU holds at SGLang's default memory fraction (weights at ``weight_bytes``/param)."""
    free = GPU_GB * MEM_FRACTION * 1e9 - weight_bytes * weight_params(spec)
    return max(int(free // kv_bytes_per_token(spec)), 0)


class Timer:
    """Times callables with CUDA events over CUDA-graph replays (CPU: perf_counter, no graphs)."""

    def __init__(self, device: torch.device, runs: int) -> None:
        self.device, self.runs = device, runs
        self.cuda = device.type == "cuda"

    def _measure(self, fn: Callable[[], Any], runs: int) -> float:
        times = []
        for _ in range(runs):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def graph(self, body: Callable[[int], None], reps: int) -> float:
        """Median ms of one ``body(r)`` call, from a graph holding ``reps`` calls (r = 0..reps-1)."""
        def eager() -> None:
            for r in range(reps):
                body(r)

        if not self.cuda:
            eager()
            return self._measure(eager, max(1, self.runs // 2)) / reps
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside capture: lazy inits, cuBLAS handles, autotuning
            body(0)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            eager()
        g.replay()
        ms = self._measure(g.replay, self.runs) / reps
        del g
        return ms

    def eager(self, fn: Callable[[], None]) -> float:
        """Median ms of an eager call (launch overhead included), after one warm-up call."""
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return self._measure(fn, min(self.runs, 3))


def sdpa_context(backend: str) -> Callable[[], Any]:
    """A context-manager factory that pins SDPA to one backend ("default" lets torch choose)."""
    if backend == "default":
        return contextlib.nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]
    return lambda: sdpa_kernel([chosen])


class ModelProfiler:
    """Holds a few distinct random layers of one model and profiles step shapes against them."""

    def __init__(self, name: str, device: torch.device, distinct: int, timer: Timer, args: argparse.Namespace):
        self.name, self.device, self.timer, self.args = name, device, timer, args
        self.spec = q3.MODEL_SPECS[name]
        self.cfg = q3.build_config(name)
        self.layers = [q3.build_hf_layer(self.cfg, i, device, seed=1000 + i) for i in range(distinct)]
        self.weights = [q3.weights_from_hf_layer(layer) for layer in self.layers]
        gen = torch.Generator(device=device).manual_seed(7)
        h, v = self.spec["hidden_size"], self.spec["vocab_size"]
        self.embed_w = torch.randn(v, h, generator=gen, device=device, dtype=torch.bfloat16)
        self.lm_head_w = self.embed_w if self.spec["tie_word_embeddings"] else (
            torch.randn(v, h, generator=gen, device=device, dtype=torch.bfloat16) * 0.02)
        self.final_norm_w = torch.ones(h, device=device, dtype=torch.bfloat16)
        self.cos, self.sin = q3.rope_tables(self.spec["head_dim"], 32768, device)

    def _caches(self, n_seqs: int, cache_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Random K/V caches [n_seqs, Hkv, cache_len, D]: one per distinct layer while small, else one shared.

        Distinct caches per layer defeat L2 reuse; once one layer's cache is far above the 50 MB L2,
        layers can share one without caching effects (and the memory is needed elsewhere).
        """
        nkv, hd = self.spec["num_key_value_heads"], self.spec["head_dim"]
        n_caches = len(self.weights) if 2 * n_seqs * nkv * cache_len * hd * 2 < 256e6 else 1
        out = []
        for _ in range(n_caches):
            k = torch.randn(n_seqs, nkv, cache_len, hd, device=self.device, dtype=torch.bfloat16)
            out.append((k, torch.randn_like(k)))
        return out

    def _env(self, mode: str, n_seqs: int, seq_len: int, ctx: int, dec_b: int = 0) -> dict[str, Any]:
        """Inputs and KV caches for one shape.

        decode: ``n_seqs`` sequences, seq_len == 1, ``ctx`` tokens already cached; prefill: ``n_seqs`` x
        ``seq_len`` new tokens; mixed: that prefill plus ``dec_b`` decoding sequences at context ``ctx``.
        """
        dev = self.device
        extra: dict[str, Any] = {}
        if mode == "decode":
            pos, kv = torch.full((n_seqs,), ctx, device=dev), self._caches(n_seqs, ctx + 1)
        elif mode == "prefill":
            pos, kv = torch.arange(seq_len, device=dev).repeat(n_seqs), self._caches(n_seqs, seq_len)
        else:
            pos = torch.cat([torch.arange(seq_len, device=dev).repeat(n_seqs), torch.full((dec_b,), ctx, device=dev)])
            kv, extra["kv_pre"] = self._caches(dec_b, ctx + 1), self._caches(n_seqs, seq_len)
        ids = torch.randint(0, self.spec["vocab_size"], (pos.numel(),), device=dev)
        return dict(ids=ids, cos=self.cos[pos], sin=self.sin[pos], n_seqs=n_seqs, seq_len=seq_len, kv=kv,
                    layer=0, **extra, embed_w=self.embed_w, lm_head_w=self.lm_head_w, final_norm_w=self.final_norm_w,
                    sdpa_ctx=sdpa_context(self.args.decode_sdpa if mode == "decode" else self.args.prefill_sdpa))

    def profile_shape(self, mode: str, n_seqs: int, seq_len: int, ctx: int, dec_b: int = 0) -> dict[str, Any]:
        """Measure one shape: per-op times, composed prediction, graph step and eager step."""
        env = self._env(mode, n_seqs, seq_len, ctx, dec_b)
        stages = q3.make_layer_stages(self.spec, mode)
        head = q3.make_head_stages(self.spec, mode)
        n_w = n_kv = len(self.weights)  # stages take env["layer"] modulo their own number of cache sets
        n_layers = self.spec["num_hidden_layers"]

        def step() -> None:
            q3.embed(env)
            for li in range(n_layers):
                env["layer"] = li % n_kv
                for _, st in stages:
                    st(env, self.weights[li % n_w])
            for _, hst in head:
                hst(env)

        with torch.no_grad():
            step()  # populates env with every intermediate, so each stage can be timed alone
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            ops: dict[str, float] = {}
            base = dict(env)
            for sname, st in [("embed", lambda e, w: q3.embed(e))] + stages:
                def body(r: int, st: Any = st) -> None:
                    e = dict(base)  # private copy: the timed stage must not overwrite its own inputs
                    e["layer"] = r % n_kv
                    st(e, self.weights[r % n_w])
                ops[sname] = self.timer.graph(body, self.args.reps)
            for hname, hst in head:
                def head_body(r: int, hst: Callable[[q3.Env], None] = hst) -> None:
                    hst(dict(base))
                ops[hname] = self.timer.graph(head_body, self.args.reps)
            layer_ms = sum(ops[s] for s, _ in stages)
            composed = ops["embed"] + n_layers * layer_ms + sum(ops[h] for h, _ in head)
            step_ms = self.timer.graph(lambda r: step(), 1)
            eager_ms = self.timer.eager(step) if self.args.eager else None
            finite = bool(torch.isfinite(env["logits"]).all())
        dec = n_seqs if mode == "decode" else dec_b
        return dict(mode=mode, n_seqs=n_seqs, seq_len=seq_len, ctx=ctx, dec_b=dec_b,
                    prefill_tokens=n_seqs * seq_len if mode != "decode" else 0,
                    decode_seqs=dec, context_tokens=dec * ctx,
                    step_ms=step_ms, composed_ms=composed, eager_step_ms=eager_ms, layer_ms=layer_ms,
                    ops=ops, finite_logits=finite)

    def hf_eager_prefill(self, tokens: int) -> float:
        """Plain transformers layer forward (eager, launch-bound) x num_layers, for one prompt."""
        x = torch.randn(1, tokens, self.spec["hidden_size"], device=self.device, dtype=torch.bfloat16)
        pe = (self.cos[:tokens][None], self.sin[:tokens][None])
        layer = self.layers[0]
        with torch.no_grad():
            ms = self.timer.eager(lambda: layer(x, attention_mask=None, position_embeddings=pe))
        return ms * self.spec["num_hidden_layers"]


Shape = tuple[str, str, int, int, int, int]  # split, mode, n_seqs, seq_len, ctx, decode seqs (mixed)


def shapes_for(spec: dict[str, Any], shape_set: str, weight_bytes: int = 2) -> list[Shape]:
    """Every shape to measure for ``shape_set`` in {all, smoke, mixed}, decode ones within KV capacity."""
    if shape_set == "smoke":
        return [("fit", "prefill", 1, 1024, 0, 0), ("fit", "decode", 1, 1, 1024, 0),
                ("fit", "decode", 64, 1, 1024, 0), ("mixed", "mixed", 1, 512, 1024, 16)]
    cap = kv_capacity_tokens(spec, weight_bytes)
    if shape_set == "mixed":
        return [("mixed", "mixed", n, s, c, b) for n, s, c, b in MIXED_VALIDATION if b * (c + 1) + n * s <= cap]
    out: list[Shape] = [("fit", "prefill", n, s, 0, 0) for n, s in PREFILL_FIT]
    out += [("heldout", "prefill", n, s, 0, 0) for n, s in PREFILL_HELDOUT]
    out += [("fit", "decode", b, 1, c, 0) for b, c in DECODE_FIT if b * (c + 1) <= cap]
    out += [("heldout", "decode", b, 1, c, 0) for b, c in DECODE_HELDOUT if b * (c + 1) <= cap]
    return out


def environment_info(device: torch.device) -> dict[str, Any]:
    """GPU name, driver, library versions and the command, for the profile files."""
    import transformers

    info: dict[str, Any] = dict(date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                                torch=torch.__version__, transformers=transformers.__version__,
                                python=platform.python_version(), command=" ".join(sys.argv))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as exc:
            info["driver"] = f"unavailable: {exc}"
    return info


def sdpa_comparison(prof: ModelProfiler) -> dict[str, float | str]:
    """Time the attention stage of a 4k prefill and a batch-64 x 4k decode under each SDPA backend."""
    out: dict[str, float | str] = {}
    for mode, n, s, c in (("prefill", 1, 4096, 0), ("decode", 64, 1, 4096)):
        for backend in ("flash", "cudnn", "efficient"):
            args = prof.args
            saved = args.prefill_sdpa, args.decode_sdpa
            args.prefill_sdpa = args.decode_sdpa = backend
            try:
                env = prof._env(mode, n, s, c)
                stages = q3.make_layer_stages(prof.spec, mode)
                with torch.no_grad():
                    q3.embed(env)
                    for _, st in stages[:4]:
                        st(env, prof.weights[0])
                    att = dict(stages)["attention"]

                    def body(r: int, att: q3.Stage = att, env: dict[str, Any] = env) -> None:
                        att(dict(env), prof.weights[0])

                    out[f"{mode}_{backend}_ms"] = prof.timer.graph(body, 5)
            except RuntimeError as exc:  # a backend may reject the shape/dtype
                out[f"{mode}_{backend}_ms"] = f"unsupported: {str(exc).splitlines()[0][:120]}"
            finally:
                args.prefill_sdpa, args.decode_sdpa = saved
    return out


def write_outputs(out_dir: Path, result: dict[str, Any]) -> None:
    """Write the full JSON and a flat CSV (one row per model x shape)."""
    (out_dir / "measurements.json").write_text(json.dumps(result, indent=1))
    rows = []
    for model, m in result["models"].items():
        for r in m["shapes"]:
            row = {k: v for k, v in r.items() if k != "ops"}
            row["model"] = model
            row.update({f"op_{k}_ms": v for k, v in r["ops"].items()})
            rows.append(row)
    if rows:
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("op_"), k))
        with (out_dir / "measurements.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    """Profile the requested models and write measurements.json / measurements.csv under --out."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="qwen3-4b,qwen3-8b,qwen3-30b-a3b")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--distinct", type=int, default=8, help="distinct layers' weights cycled (defeats L2 reuse)")
    p.add_argument("--reps", type=int, default=10, help="stage calls per CUDA graph for per-op timing")
    p.add_argument("--runs", type=int, default=7, help="timed replays; the median is kept")
    p.add_argument("--prefill-sdpa", default="default", choices=["default", "flash", "cudnn", "efficient", "math"])
    p.add_argument("--decode-sdpa", default="default", choices=["default", "flash", "cudnn", "efficient", "math"])
    p.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the op sequence eagerly (launch overhead included)")
    p.add_argument("--compile", action="store_true", help="torch.compile the pointwise stages (fused kernels)")
    p.add_argument("--smoke", action="store_true", help="four shapes per model, plus an SDPA backend comparison")
    p.add_argument("--shapes", default="all", choices=["all", "mixed"], help="shape set (mixed: validation only)")
    p.add_argument("--tiny", action="store_true", help="CPU test mode: the tiny-moe model, tiny shapes")
    p.add_argument("--budget-s", type=float, default=1e9,
                   help="per model: skip its remaining shapes after this many seconds")
    args = p.parse_args(argv)
    t_start = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("profile_models.py needs a CUDA GPU (use --tiny for a CPU pipeline test)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compile:
        q3.enable_compile()
    torch.backends.cuda.matmul.allow_tf32 = True
    result: dict[str, Any] = dict(env=environment_info(device), args={k: str(v) for k, v in vars(args).items()},
                                  models={})
    print(json.dumps(result["env"]), flush=True)
    models = ["tiny-moe"] if args.tiny else args.models.split(",")
    for name in models:
        t0 = time.time()
        prof = ModelProfiler(name, device, 2 if args.tiny else args.distinct, Timer(device, args.runs), args)
        wbytes = DEPLOYED_WEIGHT_BYTES.get(name, 2)
        entry: dict[str, Any] = dict(spec=prof.spec, params=weight_params(prof.spec),
                                     kv_bytes_per_token=kv_bytes_per_token(prof.spec),
                                     kv_capacity_tokens=kv_capacity_tokens(prof.spec, wbytes), shapes=[], skipped=[])
        entry["hf_check_rel_err"] = q3.check_against_hf(prof.spec, prof.layers[0], prof.weights[0], 64,
                                                        sdpa_context(args.prefill_sdpa))
        print(f"[{name}] built in {time.time() - t0:.1f}s; explicit-vs-transformers rel err "
              f"{entry['hf_check_rel_err']:.2e}", flush=True)
        if device.type == "cuda":
            entry["hf_eager_prefill_ms"] = {str(t): prof.hf_eager_prefill(t) for t in (128, 1024)}
            if args.smoke:
                entry["sdpa_backends"] = sdpa_comparison(prof)
                print(f"[{name}] sdpa: {entry['sdpa_backends']}", flush=True)
        shapes: list[Shape] = ([("fit", "prefill", 1, 16, 0, 0), ("heldout", "prefill", 2, 8, 0, 0),
                                ("fit", "decode", 1, 1, 32, 0), ("fit", "decode", 4, 1, 8, 0),
                                ("heldout", "decode", 2, 1, 16, 0), ("mixed", "mixed", 2, 8, 16, 3)]
                               if args.tiny else shapes_for(prof.spec, "smoke" if args.smoke else args.shapes, wbytes))
        for split, mode, n, s, c, b in shapes:
            if time.time() - t0 > args.budget_s:
                entry["skipped"].append([split, mode, n, s, c, b])
                continue
            try:
                rec = prof.profile_shape(mode, n, s, c, b)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:  # keep the run going; record why
                entry["skipped"].append([split, mode, n, s, c, b, str(exc).splitlines()[0][:200]])
                print(f"[{name}] FAILED {mode} n={n} len={s} ctx={c}: {exc}", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            rec["split"] = split
            entry["shapes"].append(rec)
            eager = rec["eager_step_ms"]
            print(f"[{name}] {split:7s} {mode:7s} n={n:4d} len={s:5d} ctx={c:6d} dec={b:4d}  step {rec['step_ms']:9.3f} ms"
                  f"  composed {rec['composed_ms']:9.3f}  eager {eager if eager is None else round(eager, 3)}",
                  flush=True)
        entry["seconds"] = time.time() - t0
        result["models"][name] = entry
        write_outputs(args.out, result)
        del prof
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["total_seconds"] = time.time() - t_start
    write_outputs(args.out, result)
    print(f"done in {result['total_seconds']:.1f}s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
