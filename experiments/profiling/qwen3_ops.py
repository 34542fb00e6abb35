"""Qwen3 / Qwen3-MoE decoder layers written as explicit, separately timeable operators.

The profiler (``profile_models.py``) times these stages one by one (Vidur-style) and as a whole
CUDA-graph-captured model step. Architectures come from transformers' ``Qwen3Config`` /
``Qwen3MoeConfig`` built from the public ``config.json`` values below; weights are random bf16
tensors taken from a real ``Qwen3DecoderLayer`` / ``Qwen3MoeDecoderLayer`` instance, and
``check_against_hf`` verifies that the explicit stages compute the same function as that layer.

The stage split mirrors what an optimised engine (SGLang) runs per layer: fused QKV projection,
per-head q/k RMSNorm + rotary, KV-cache write, attention (SDPA: FlashAttention-2 / cuDNN on H100),
output projection, residual add + RMSNorm, and either a fused gate/up MLP or a routed MoE with
grouped GEMMs over the experts (``torch._grouped_mm``, the analogue of SGLang's fused_moe kernel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Values copied from the public Hugging Face config.json files:
#   https://huggingface.co/Qwen/Qwen3-4B/blob/main/config.json
#   https://huggingface.co/Qwen/Qwen3-8B/blob/main/config.json
#   https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
#   https://huggingface.co/Qwen/Qwen3-235B-A22B/blob/main/config.json  (used only for the derived profile)
# All use head_dim 128, rms_norm_eps 1e-6, rope_theta 1e6, vocab 151936, hidden_act silu.
MODEL_SPECS: dict[str, dict[str, Any]] = {
    "qwen3-4b": dict(
        arch="Qwen3-4B", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen3-8b": dict(
        arch="Qwen3-8B", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False,
    ),
    "qwen3-30b-a3b": dict(
        arch="Qwen3-30B-A3B", hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False, num_experts=128, num_experts_per_tok=8,
        moe_intermediate_size=768, norm_topk_prob=True,
    ),
    "qwen3-235b-a22b": dict(
        arch="Qwen3-235B-A22B", hidden_size=4096, intermediate_size=12288, num_hidden_layers=94,
        num_attention_heads=64, num_key_value_heads=4, head_dim=128, vocab_size=151936,
        tie_word_embeddings=False, num_experts=128, num_experts_per_tok=8,
        moe_intermediate_size=1536, norm_topk_prob=True,
    ),
    # One tensor-parallel rank of Qwen3-235B-A22B at TP8 (what SGLang --tp 8 runs on each GPU): 64/8 query
    # heads, the 4 KV heads replicated so each rank holds 1, every expert's intermediate 1536/8 = 192
    # columns, vocab-parallel LM head 151936/8 = 18992 rows; hidden size and depth unchanged. Timed in bf16
    # on one GPU; fit_profiles.py adds the FP8 GEMM speed-up and the TP all-reduces to derive the 8xH100
    # profile (communication is not part of this single-GPU measurement).
    "qwen3-235b-a22b-tp8-rank": dict(
        arch="Qwen3-235B-A22B (one TP8 rank)", hidden_size=4096, intermediate_size=12288 // 8,
        num_hidden_layers=94, num_attention_heads=8, num_key_value_heads=1, head_dim=128,
        vocab_size=151936 // 8, tie_word_embeddings=False, num_experts=128, num_experts_per_tok=8,
        moe_intermediate_size=1536 // 8, norm_topk_prob=True,
    ),
    # One rank of the deployable TP4 layout of Qwen3-235B-A22B-FP8 (issue 13; measured in bf16 on an H200,
    # run 4; the H100 TP4 profile is still derived from the TP8 rank by derive_deployments.py): 64/4 query
    # heads, 1 of the 4 KV heads, every expert's intermediate 1536/4 = 384 (a multiple of the FP8
    # checkpoint's 128 blocks), vocab / 4.
    "qwen3-235b-a22b-tp4-rank": dict(
        arch="Qwen3-235B-A22B (one TP4 rank)", hidden_size=4096, intermediate_size=12288 // 4,
        num_hidden_layers=94, num_attention_heads=16, num_key_value_heads=1, head_dim=128,
        vocab_size=151936 // 4, tie_word_embeddings=False, num_experts=128, num_experts_per_tok=8,
        moe_intermediate_size=1536 // 4, norm_topk_prob=True,
    ),
    # Test-only miniatures (not real models): let the whole pipeline run on a CPU in seconds.
    "tiny-dense": dict(
        arch="tiny", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256,
        tie_word_embeddings=True,
    ),
    "tiny-moe": dict(
        arch="tiny", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=256,
        tie_word_embeddings=False, num_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=32, norm_topk_prob=True,
    ),
}
RMS_EPS = 1e-6
ROPE_THETA = 1_000_000.0


def is_moe(spec: dict[str, Any]) -> bool:
    """Whether a model spec describes a mixture-of-experts model."""
    return int(spec.get("num_experts", 0)) > 0


def build_config(name: str) -> Any:
    """Build the transformers config (Qwen3Config or Qwen3MoeConfig) for a model in MODEL_SPECS."""
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model {name!r}; expected one of {sorted(MODEL_SPECS)}")
    from transformers import Qwen3Config, Qwen3MoeConfig

    spec: dict[str, Any] = {k: v for k, v in MODEL_SPECS[name].items() if k != "arch"}
    common: dict[str, Any] = dict(rms_norm_eps=RMS_EPS, rope_theta=ROPE_THETA, max_position_embeddings=40960,
                  hidden_act="silu", attention_bias=False)
    cls: Any = Qwen3MoeConfig if is_moe(spec) else Qwen3Config
    cfg = cls(**spec, **common)
    cfg._attn_implementation = "sdpa"
    return cfg


@dataclass
class LayerWeights:
    """One decoder layer's weights in the fused layouts an inference engine uses."""

    in_norm: torch.Tensor
    post_norm: torch.Tensor
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    qkv: torch.Tensor  # [(H + 2*Hkv) * D, hidden]: q, k and v projections concatenated
    o: torch.Tensor
    gate_up: torch.Tensor | None = None  # dense: [2*I, hidden]
    down: torch.Tensor | None = None  # dense: [hidden, I]
    router: torch.Tensor | None = None  # moe: [E, hidden]
    e_gate_up: torch.Tensor | None = None  # moe: [E, 2*I, hidden]
    e_down: torch.Tensor | None = None  # moe: [E, hidden, I]


def build_hf_layer(cfg: Any, layer_idx: int, device: torch.device, seed: int) -> torch.nn.Module:
    """Instantiate one real transformers decoder layer with random bf16 weights (std 0.02)."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeDecoderLayer

    layer_cls: Any = Qwen3MoeDecoderLayer if getattr(cfg, "num_experts", 0) else Qwen3DecoderLayer
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            layer = layer_cls(cfg, layer_idx)
    finally:
        torch.set_default_dtype(old)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            if p.dim() >= 2:  # matrices random; RMSNorm gains stay at their init (ones)
                p.copy_(torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32) * 0.02)
    return layer.eval()


def weights_from_hf_layer(hf_layer: torch.nn.Module) -> LayerWeights:
    """Extract (and fuse) a transformers Qwen3 layer's weights into LayerWeights."""
    layer: Any = hf_layer
    att: Any = layer.self_attn
    w = LayerWeights(
        in_norm=layer.input_layernorm.weight.data, post_norm=layer.post_attention_layernorm.weight.data,
        q_norm=att.q_norm.weight.data, k_norm=att.k_norm.weight.data,
        qkv=torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]).detach().contiguous(),
        o=att.o_proj.weight.data,
    )
    mlp: Any = layer.mlp
    if hasattr(mlp, "experts"):
        experts: Any = mlp.experts
        if isinstance(experts, torch.nn.ModuleList):  # older per-expert module layout
            mods: list[Any] = list(experts)
            w.e_gate_up = torch.stack([torch.cat([e.gate_proj.weight, e.up_proj.weight]) for e in mods])
            w.e_down = torch.stack([e.down_proj.weight for e in mods])
        else:
            w.e_gate_up, w.e_down = experts.gate_up_proj.data, experts.down_proj.data
        w.router = mlp.gate.weight.data
    else:
        w.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach().contiguous()
        w.down = mlp.down_proj.weight.data
    return w


def rope_tables(head_dim: int, max_pos: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Default Qwen3 rotary cos/sin tables [max_pos, head_dim] (bf16), as transformers computes them."""
    inv = 1.0 / ROPE_THETA ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float32, device=device), inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(torch.bfloat16), emb.sin().to(torch.bfloat16)


def qk_norm_rope_eager(qkv: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor, cos: torch.Tensor,
                       sin: torch.Tensor, nh: int, nkv: int, hd: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head RMSNorm of q and k, then rotary (rotate-half convention), on q and k together.

    Normalising q and k in one pass (gains applied after) and rotating them together halves the number
    of small kernels compared with transformers' per-tensor code; same function.
    """
    t = qkv.shape[0]
    qk = F.rms_norm(qkv[:, : (nh + nkv) * hd].view(t, nh + nkv, hd), (hd,), None, RMS_EPS)
    qk = qk * torch.cat([q_norm.expand(nh, hd), k_norm.expand(nkv, hd)])
    half = hd // 2
    rot = torch.cat([-qk[..., half:], qk[..., :half]], dim=-1)
    qk = qk * cos.unsqueeze(1) + rot * sin.unsqueeze(1)
    return qk[:, :nh], qk[:, nh:], qkv[:, (nh + nkv) * hd:].view(t, nkv, hd)


def silu_mul_eager(gu: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation on a fused [gate | up] tensor."""
    inter = gu.shape[-1] // 2
    return F.silu(gu[:, :inter]) * gu[:, inter:]


# Pointwise kernels; ``enable_compile`` swaps in torch.compile'd (Triton-fused) versions, the analogue of
# the fused norm/rope/activation kernels an engine like SGLang ships.
POINTWISE: dict[str, Callable[..., Any]] = {"qk_norm_rope": qk_norm_rope_eager, "silu_mul": silu_mul_eager}


def enable_compile() -> None:
    """Replace the SwiGLU activation by a torch.compile'd (one fused Triton kernel) version.

    qk_norm_rope stays eager: on the H100 smoke run (torch 2.11) its dynamic-shape compiled kernel was
    slower than eager (177 vs ~120 us at 1024 tokens for Qwen3-4B), while silu_mul went 62 -> 38 us.
    """
    POINTWISE["silu_mul"] = torch.compile(silu_mul_eager, dynamic=True, fullgraph=True)


Env = dict[str, Any]
Stage = Callable[[Env, LayerWeights], None]


def make_layer_stages(spec: dict[str, Any], mode: str) -> list[tuple[str, Stage]]:
    """The ordered stages of one decoder layer for ``mode`` in {"prefill", "decode", "mixed"}.

    Each stage reads its inputs from, and writes its outputs to, the ``env`` dict. Shape information
    lives in env: ``n_seqs``, ``seq_len`` (prefill: new tokens per sequence), ``cos``/``sin`` [T, D]
    for the tokens' positions, ``layer`` (which cache set to use), and the KV caches: decode ``kv`` ->
    list of (k_cache, v_cache) [B, Hkv, ctx+1, D]; prefill ``kv`` (or ``kv_pre`` in mixed mode) ->
    [n_seqs, Hkv, seq_len, D]. Mixed steps hold the prefill rows first, then the decode rows.
    """
    nh, nkv, hd, hs = (spec[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size"))

    def input_norm(env: Env, w: LayerWeights) -> None:
        env["h"] = F.rms_norm(env["x"], (hs,), w.in_norm, RMS_EPS)

    def qkv_proj(env: Env, w: LayerWeights) -> None:
        env["qkv"] = F.linear(env["h"], w.qkv)

    def qk_norm_rope(env: Env, w: LayerWeights) -> None:
        q, k, v = POINTWISE["qk_norm_rope"](env["qkv"], w.q_norm, w.k_norm, env["cos"], env["sin"], nh, nkv, hd)
        env["q"], env["k"], env["v"] = q, k, v

    def write_prefill(env: Env, k: torch.Tensor, v: torch.Tensor, key: str) -> None:
        kc, vc = env[key][env["layer"] % len(env[key])]
        n, s = env["n_seqs"], env["seq_len"]
        kc[:, :, :s].copy_(k.view(n, s, nkv, hd).transpose(1, 2))
        vc[:, :, :s].copy_(v.view(n, s, nkv, hd).transpose(1, 2))

    def write_decode(env: Env, k: torch.Tensor, v: torch.Tensor) -> None:
        # the new token goes into the last slot of each sequence's cache
        kc, vc = env["kv"][env["layer"] % len(env["kv"])]
        kc.select(2, kc.shape[2] - 1).copy_(k)
        vc.select(2, vc.shape[2] - 1).copy_(v)

    def attend_prefill(env: Env, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n, s = env["n_seqs"], env["seq_len"]
        out = F.scaled_dot_product_attention(
            q.view(n, s, nh, hd).transpose(1, 2), k.view(n, s, nkv, hd).transpose(1, 2),
            v.view(n, s, nkv, hd).transpose(1, 2), is_causal=True, enable_gqa=True)
        return out.transpose(1, 2).reshape(n * s, nh * hd)

    def attend_decode(env: Env, q: torch.Tensor) -> torch.Tensor:
        kc, vc = env["kv"][env["layer"] % len(env["kv"])]
        out = F.scaled_dot_product_attention(q.unsqueeze(2), kc, vc, enable_gqa=True)  # q: [B, H, 1, D]
        return out.reshape(q.shape[0], nh * hd)

    def kv_write(env: Env, w: LayerWeights) -> None:
        if mode == "decode":
            write_decode(env, env["k"], env["v"])
        elif mode == "prefill":
            write_prefill(env, env["k"], env["v"], "kv")
        else:  # mixed: prefill rows first, then one row per decoding sequence (SGLang's mixed chunk)
            p = env["n_seqs"] * env["seq_len"]
            write_prefill(env, env["k"][:p], env["v"][:p], "kv_pre")
            write_decode(env, env["k"][p:], env["v"][p:])

    def attention(env: Env, w: LayerWeights) -> None:
        with env["sdpa_ctx"]():
            if mode == "decode":
                env["attn"] = attend_decode(env, env["q"])
            elif mode == "prefill":
                env["attn"] = attend_prefill(env, env["q"], env["k"], env["v"])
            else:
                p = env["n_seqs"] * env["seq_len"]
                env["attn"] = torch.cat([attend_prefill(env, env["q"][:p], env["k"][:p], env["v"][:p]),
                                         attend_decode(env, env["q"][p:])])

    def o_proj(env: Env, w: LayerWeights) -> None:
        env["attn_o"] = F.linear(env["attn"], w.o)

    def post_norm(env: Env, w: LayerWeights) -> None:
        env["x2"] = env["x"] + env["attn_o"]
        env["h2"] = F.rms_norm(env["x2"], (hs,), w.post_norm, RMS_EPS)

    def residual_add(env: Env, w: LayerWeights) -> None:
        env["x"] = env["x2"] + env["mlp"]

    stages: list[tuple[str, Stage]] = [
        ("input_norm", input_norm), ("qkv_proj", qkv_proj), ("qk_norm_rope", qk_norm_rope),
        ("kv_write", kv_write), ("attention", attention), ("o_proj", o_proj), ("post_norm", post_norm),
    ]
    stages += moe_stages(spec) if is_moe(spec) else dense_mlp_stages(spec)
    stages.append(("residual_add", residual_add))
    return stages


def dense_mlp_stages(spec: dict[str, Any]) -> list[tuple[str, Stage]]:
    """SwiGLU MLP as fused gate/up GEMM, activation, down GEMM."""

    def gate_up_proj(env: Env, w: LayerWeights) -> None:
        assert w.gate_up is not None
        env["gu"] = F.linear(env["h2"], w.gate_up)

    def act(env: Env, w: LayerWeights) -> None:
        env["act"] = POINTWISE["silu_mul"](env["gu"])

    def down_proj(env: Env, w: LayerWeights) -> None:
        assert w.down is not None
        env["mlp"] = F.linear(env["act"], w.down)

    return [("mlp_gate_up", gate_up_proj), ("mlp_act", act), ("mlp_down", down_proj)]


def moe_stages(spec: dict[str, Any]) -> list[tuple[str, Stage]]:
    """Routed MoE: softmax top-k router, token permutation, grouped expert GEMMs, weighted un-permute."""
    n_exp, top_k = spec["num_experts"], spec["num_experts_per_tok"]

    def router(env: Env, w: LayerWeights) -> None:
        assert w.router is not None
        probs = torch.softmax(F.linear(env["h2"], w.router).float(), dim=-1)
        top_w, top_i = torch.topk(probs, top_k, dim=-1)
        env["top_w"] = (top_w / top_w.sum(dim=-1, keepdim=True)).to(env["h2"].dtype)
        env["top_i"] = top_i

    def dispatch(env: Env, w: LayerWeights) -> None:
        flat = env["top_i"].flatten()
        order = torch.argsort(flat)
        counts = torch.zeros(n_exp, dtype=torch.int32, device=flat.device)
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        env["offs"] = torch.cumsum(counts, 0, dtype=torch.int32)
        # inverse permutation, so the combine step is a gather rather than a scatter
        env["inv"] = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        env["xs"] = env["h2"].index_select(0, order // top_k)

    def experts(env: Env, w: LayerWeights) -> None:
        assert w.e_gate_up is not None and w.e_down is not None
        gu = torch._grouped_mm(env["xs"], w.e_gate_up.transpose(1, 2), offs=env["offs"])
        a = POINTWISE["silu_mul"](gu)
        env["ys"] = torch._grouped_mm(a, w.e_down.transpose(1, 2), offs=env["offs"])

    def combine(env: Env, w: LayerWeights) -> None:
        t = env["top_i"].shape[0]
        y = env["ys"].index_select(0, env["inv"]).view(t, top_k, -1)
        env["mlp"] = torch.bmm(env["top_w"].unsqueeze(1), y).squeeze(1)  # weighted sum over the top-k

    return [("moe_router", router), ("moe_dispatch", dispatch), ("moe_experts", experts), ("moe_combine", combine)]


def make_head_stages(spec: dict[str, Any], mode: str) -> list[tuple[str, Callable[[Env], None]]]:
    """Final norm, LM head (only on the rows that sample: last prompt token / every decode row), sampling."""
    hs = spec["hidden_size"]

    def final_norm(env: Env) -> None:
        x = env["x"]
        if mode != "decode":
            p = env["n_seqs"] * env["seq_len"]
            last = x[:p].view(env["n_seqs"], env["seq_len"], hs)[:, -1]
            x = last if mode == "prefill" else torch.cat([last, x[p:]])
        env["hf"] = F.rms_norm(x, (hs,), env["final_norm_w"], RMS_EPS)

    def lm_head(env: Env) -> None:
        env["logits"] = F.linear(env["hf"], env["lm_head_w"])

    def sample(env: Env) -> None:
        # SGLang samples from fp32 softmax probabilities; greedy argmax over them costs the same passes.
        env["next_ids"] = torch.argmax(torch.softmax(env["logits"].float(), dim=-1), dim=-1)

    return [("final_norm", final_norm), ("lm_head", lm_head), ("sample", sample)]


def embed(env: Env) -> None:
    """Token embedding lookup (the step's first op)."""
    env["x"] = F.embedding(env["ids"], env["embed_w"])


def check_against_hf(spec: dict[str, Any], layer: torch.nn.Module, w: LayerWeights, tokens: int,
                     sdpa_ctx: Callable[[], Any]) -> float:
    """Relative L2 error of the explicit prefill stages' layer update (output - input) vs transformers'.

    The residual stream dominates a layer's output, so the update is compared, not the output.
    """
    dev = w.qkv.device
    x = torch.randn(tokens, spec["hidden_size"], device=dev, dtype=torch.bfloat16)
    cos, sin = rope_tables(spec["head_dim"], tokens, dev)
    nkv, hd = spec["num_key_value_heads"], spec["head_dim"]
    cache = torch.empty(1, nkv, tokens, hd, device=dev, dtype=torch.bfloat16)
    env: Env = dict(x=x, cos=cos, sin=sin, n_seqs=1, seq_len=tokens, kv=[(cache, cache.clone())], layer=0,
                    sdpa_ctx=sdpa_ctx)
    with torch.no_grad():
        for _, stage in make_layer_stages(spec, "prefill"):
            stage(env, w)
        ref = layer(x.unsqueeze(0), attention_mask=None, position_embeddings=(cos[None], sin[None]))
        ref = ref[0] if isinstance(ref, tuple) else ref
    ref_delta = ref.reshape(tokens, -1).float() - x.float()
    return float((env["x"].float() - x.float() - ref_delta).norm() / ref_delta.norm())
