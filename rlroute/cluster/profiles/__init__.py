"""Serving profiles: per model x GPU step-time and memory coefficients, stored as YAML data files.

The file format is agreed in ``/work/coord/PROFILE_FORMAT.md``: one file per model x GPU named
``<stem>.<status>.yaml`` with status ``estimate`` (roofline/public-figure estimates written by hand),
``measured`` (fitted to GPU measurements by ``experiments/profiling``) or ``derived``.

:func:`load_profile` resolves a name to a file by an explicit preference order,
:data:`STATUS_PREFERENCE` = measured > derived > estimate: when a measured file exists for a stem it wins
over the estimate, so dropping a ``*.measured.yaml`` beside an estimate upgrades every simulation
without a config change. A name that already ends in a status (``qwen3-4b__h100.estimate``) or a path
to a ``.yaml`` file loads exactly that file.

Step-time model. Every file carries the agreed 4-term block ``step_time`` (``a + b*P + c*D + d*C`` with
P = new prompt tokens computed in the step, D = decoding sequences, C = context tokens they attend). A
measured/derived file may add ONE optional extended block, fitted to the same measurements by
``experiments/profiling/fit_profiles.py``; when present, :meth:`ServingProfile.step_time` (and so the
simulator and the worker) uses it instead of the 4-term block:

* ``step_time_moe`` (mixture-of-experts models): ``a + b*P + c*D + d*C + e*X + f*Q + g*S`` where
  ``X = num_experts * (1 - (1 - top_k/num_experts)**(P + D))`` is the expected number of distinct experts
  the step's P + D tokens route to under uniform routing (a decode step reads only the experts its tokens
  touch: ``top_k`` at batch 1, nearly all by batch ~64), and ``Q``, ``S`` count prefill attention pairs
  (below). Required: ``num_experts`` (int >= 1), ``top_k`` (int, 1..num_experts), ``coeffs: {a, b, c, d,
  e}`` (numbers >= 0, seconds per unit) and ``source`` (text); ``f`` is optional (0), ``g`` too (= f).
* ``step_time_attn`` (dense models): ``a + b*P + c*D + d*C + f*Q + g*S``; required ``coeffs: {a, b, c, d,
  f}`` and ``source``; ``g`` optional (= f).

Causal prefill attention is quadratic. A chunk of ``t`` new tokens of a prompt whose first ``s`` tokens are
already in the KV cache (cached prefix or earlier chunks) attends ``t*(t+1)/2`` pairs among themselves
(``Q``, :func:`chunk_pairs`) and ``t*s`` pairs to the earlier KV (``S``); both are summed over the prompts in
the chunk. The measurements only have ``s = 0`` chunks, so ``f`` is fitted and ``g`` is set from the
attention kernel's measured time per pair (see experiments/profiling/README.md). Other keys of the
blocks (formula, fit errors) are documentation. Without an extended block the model is exactly the
4-term one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parent
STATUS_PREFERENCE: tuple[str, ...] = ("measured", "derived", "estimate")
_COEFFS = ("a", "b", "c", "d")
# extended blocks: name -> (kind, required coefficients, optional coefficients)
_EXT_BLOCKS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "step_time_moe": ("moe", ("a", "b", "c", "d", "e"), ("f", "g")),
    "step_time_attn": ("attn", ("a", "b", "c", "d", "f"), ("g",)),
}


class ProfileError(ValueError):
    """A profile file is missing or malformed; the message names the file and field."""


def chunk_pairs(take: int) -> float:
    """Causal-attention (query, key) pairs among the ``take`` new tokens of one prompt in a prefill chunk
    (``Q`` of the module doc); the pairs to ``s`` earlier tokens of the prompt are ``take * s`` (``S``)."""
    return take * (take + 1) * 0.5


@dataclass(frozen=True, slots=True)
class StepTimeExtension:
    """Extended step-time model of an optional ``step_time_moe`` / ``step_time_attn`` block (module doc).

    ``a + b*P + c*D + d*C + e*experts_touched(P + D) + f*Q + g*S`` seconds; ``e`` is 0 for ``attn`` blocks.
    """

    kind: str
    a: float
    b: float
    c: float
    d: float
    e: float = 0.0
    f: float = 0.0
    g: float = 0.0
    num_experts: int = 0
    top_k: int = 0

    def experts_touched(self, tokens: int) -> float:
        """Expected distinct experts that ``tokens`` tokens route to (uniform top-k routing)."""
        if self.num_experts == 0 or tokens <= 0:
            return 0.0
        return self.num_experts * (1.0 - (1.0 - self.top_k / self.num_experts) ** tokens)

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int, prefill_pairs: float,
                  prefix_pairs: float = 0.0) -> float:
        """Seconds for one engine step (``prefill_pairs`` = Q, ``prefix_pairs`` = S of the module doc)."""
        t = self.a + self.b * prefill_tokens + self.c * decode_seqs + self.d * context_tokens
        if self.e:
            t += self.e * self.experts_touched(prefill_tokens + decode_seqs)
        return t + self.f * prefill_pairs + self.g * prefix_pairs


@dataclass(frozen=True, slots=True)
class ServingProfile:
    """Step-time and memory model of one serving instance (one SGLang server, ``num_gpus`` GPUs).

    Step time of one continuous-batching engine step is
    ``a + b * prefill_tokens + c * decode_seqs + d * context_tokens`` seconds, or the extended model
    ``ext`` when the file has a ``step_time_moe`` / ``step_time_attn`` block (module doc). ``a..d`` are
    always the 4-term block's values (a linear approximation, e.g. for the GPU-seconds cost model).
    """

    name: str
    model: str
    gpu: str
    num_gpus: int
    dtype: str
    status: str
    source: str
    a: float
    b: float
    c: float
    d: float
    gpu_memory_gb: float
    weights_gb: float
    kv_bytes_per_token: int
    max_running_requests: int
    chunked_prefill_tokens: int
    path: str = ""
    ext: StepTimeExtension | None = None
    overhead_gb_per_gpu: float = 0.0

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int,
                  prefill_pairs: float | None = None, prefix_pairs: float = 0.0) -> float:
        """Seconds for one engine step with this batch composition.

        Args:
            prefill_tokens: new prompt tokens computed in the step.
            decode_seqs: sequences generating one token in the step.
            context_tokens: context tokens those sequences attend.
            prefill_pairs: attention pairs among each prompt's new tokens (:func:`chunk_pairs`, summed over
                the chunk's prompts); only the extended model uses it. ``None``: one prompt, ``chunk_pairs(P)``.
            prefix_pairs: pairs between the new tokens and their prompt's earlier KV (``sum t*s``).
        """
        x = self.ext
        if x is None:
            return self.a + self.b * prefill_tokens + self.c * decode_seqs + self.d * context_tokens
        if prefill_pairs is None:
            prefill_pairs = chunk_pairs(prefill_tokens)
        return x.step_time(prefill_tokens, decode_seqs, context_tokens, prefill_pairs, prefix_pairs)

    def prefill_time(self, tokens: int) -> float:
        """Seconds to prefill ``tokens`` new tokens on an idle instance (chunked, one chunk per step)."""
        chunk = self.chunked_prefill_tokens
        steps = max(1, -(-tokens // chunk))
        if self.ext is None:
            return steps * self.a + self.b * tokens
        total = 0.0
        for i in range(steps):
            take = min(chunk, tokens - i * chunk)
            total += self.ext.step_time(take, 0, 0, chunk_pairs(take), take * i * chunk)
        return total

    def kv_capacity_tokens(self, mem_fraction_static: float) -> int:
        """KV pool size in tokens, as SGLang sizes it (``ModelRunner.profile_max_num_token``): the memory
        still free after loading the weights minus ``(1 - mem_fraction_static)`` of the GPU, i.e.
        ``gpu_memory * mem_fraction_static - weights - overhead`` per GPU (``overhead_gb_per_gpu``: CUDA
        context and communication buffers allocated before the KV pool; 0 when the file gives none)."""
        if not 0.0 < mem_fraction_static <= 1.0:
            raise ProfileError(f"{self.name}: mem_fraction_static must be in (0, 1], got {mem_fraction_static}")
        free_gb = ((self.gpu_memory_gb * mem_fraction_static - self.overhead_gb_per_gpu) * self.num_gpus
                   - self.weights_gb)
        if free_gb <= 0:
            raise ProfileError(
                f"{self.name}: mem_fraction_static={mem_fraction_static} leaves no KV memory "
                f"({self.gpu_memory_gb}GB x {mem_fraction_static} - {self.overhead_gb_per_gpu}GB overhead, x "
                f"{self.num_gpus} GPUs <= weights {self.weights_gb}GB)"
            )
        return int(free_gb * 1e9 / self.kv_bytes_per_token)


def _need(d: dict[str, Any], key: str, path: Path, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise ProfileError(f"{path}: missing field {key!r}")
    val = d[key]
    if not isinstance(val, kind) or isinstance(val, bool):
        raise ProfileError(f"{path}: field {key!r} must be {kind}, got {val!r}")
    return val


def _overhead(mem: dict[str, Any], path: Path) -> float:
    v = mem.get("overhead_gb_per_gpu", 0.0)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        raise ProfileError(f"{path}: memory.overhead_gb_per_gpu must be a number >= 0 (GB), got {v!r}")
    return float(v)


def _parse_extension(raw: dict[str, Any], path: Path) -> StepTimeExtension | None:
    """The optional extended step-time block, validated (module doc); ``None`` when there is none."""
    present = [k for k in _EXT_BLOCKS if raw.get(k) is not None]
    if not present:
        return None
    if len(present) > 1:
        raise ProfileError(f"{path}: at most one extended step-time block allowed, got {present}")
    name = present[0]
    kind, required, optional = _EXT_BLOCKS[name]
    blk = raw[name]
    if not isinstance(blk, dict):
        raise ProfileError(f"{path}: {name} must be a mapping, got {blk!r}")
    if not isinstance(blk.get("source"), str) or not blk["source"]:
        raise ProfileError(f"{path}: {name}.source is empty: the extended coefficients need a source")
    co = blk.get("coeffs")
    if not isinstance(co, dict):
        raise ProfileError(f"{path}: {name}.coeffs must be a mapping {{{', '.join(required)}}}, got {co!r}")
    unknown = set(co) - set(required) - set(optional)
    if unknown:
        raise ProfileError(f"{path}: {name}.coeffs has unknown keys {sorted(unknown)}; "
                           f"expected {list(required)} (+ optional {list(optional)})")
    vals: dict[str, float] = {}
    for k in required + optional:
        if k not in co:
            if k in required:
                raise ProfileError(f"{path}: {name}.coeffs.{k} is missing")
            continue
        v = co[k]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ProfileError(f"{path}: {name}.coeffs.{k} must be a number >= 0, got {v!r}")
        vals[k] = float(v)
    if kind == "moe":
        e_num, top_k = blk.get("num_experts"), blk.get("top_k")
        if not isinstance(e_num, int) or isinstance(e_num, bool) or e_num < 1:
            raise ProfileError(f"{path}: {name}.num_experts must be an integer >= 1, got {e_num!r}")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= e_num:
            raise ProfileError(f"{path}: {name}.top_k must be an integer in [1, num_experts={e_num}], got {top_k!r}")
    else:
        e_num = top_k = 0
    f = vals.get("f", 0.0)
    return StepTimeExtension(kind=kind, a=vals["a"], b=vals["b"], c=vals["c"], d=vals["d"], e=vals.get("e", 0.0),
                             f=f, g=vals.get("g", f), num_experts=e_num, top_k=top_k)


def parse_profile(path: Path) -> ServingProfile:
    """Read and validate one profile file (memoised per file version: clusters are rebuilt per episode)."""
    st = path.stat()
    return _parse_cached(str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _parse_cached(name: str, mtime_ns: int, size: int) -> ServingProfile:
    return _parse(Path(name))


def _parse(path: Path) -> ServingProfile:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    num = (int, float)
    st = _need(raw, "step_time", path, dict)
    coeffs: dict[str, float] = {}
    for k in _COEFFS:
        entry = st.get(k)
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), num):
            raise ProfileError(f"{path}: step_time.{k} must be {{value: <number>, source: <text>}}, got {entry!r}")
        if not entry.get("source"):
            raise ProfileError(f"{path}: step_time.{k}.source is empty: every coefficient needs a source")
        if entry["value"] < 0:
            raise ProfileError(f"{path}: step_time.{k}.value must be >= 0, got {entry['value']}")
        coeffs[k] = float(entry["value"])
    mem = _need(raw, "memory", path, dict)
    lim = _need(raw, "limits", path, dict)
    status = _need(raw, "status", path, str)
    if status not in STATUS_PREFERENCE:
        raise ProfileError(f"{path}: status must be one of {STATUS_PREFERENCE}, got {status!r}")
    return ServingProfile(
        name=_need(raw, "name", path, str),
        model=_need(raw, "model", path, str),
        gpu=_need(raw, "gpu", path, str),
        num_gpus=int(_need(raw, "num_gpus", path, int)),
        dtype=str(raw.get("dtype", "")),
        status=status,
        source=str(raw.get("source", "")),
        gpu_memory_gb=float(_need(mem, "gpu_memory_gb", path, num)),
        weights_gb=float(_need(mem, "weights_gb", path, num)),
        kv_bytes_per_token=int(_need(mem, "kv_bytes_per_token", path, int)),
        max_running_requests=int(_need(lim, "max_running_requests", path, int)),
        chunked_prefill_tokens=int(_need(lim, "chunked_prefill_tokens", path, int)),
        overhead_gb_per_gpu=_overhead(mem, path),
        path=str(path),
        ext=_parse_extension(raw, path),
        **coeffs,
    )


def resolve_profile_path(name: str, directory: Path | None = None) -> Path:
    """The file :func:`load_profile` would read for ``name`` (measured > derived > estimate)."""
    if name.endswith(".yaml"):
        p = Path(name)
        if not p.is_file():
            raise ProfileError(f"profile file {name!r} not found")
        return p
    directory = directory or PROFILE_DIR
    if name.rsplit(".", 1)[-1] in STATUS_PREFERENCE:
        p = directory / f"{name}.yaml"
        if not p.is_file():
            raise ProfileError(f"profile {name!r} not found at {p}")
        return p
    for status in STATUS_PREFERENCE:
        p = directory / f"{name}.{status}.yaml"
        if p.is_file():
            return p
    known = sorted({f.name.split(".")[0] for f in directory.glob("*.yaml")})
    raise ProfileError(f"no serving profile {name!r} in {directory}; known: {known}")


def load_profile(name: str, directory: Path | None = None) -> ServingProfile:
    """Load a serving profile by stem, preferring ``measured`` over ``derived`` over ``estimate``.

    Args:
        name: file stem (``qwen3-4b__h100``), stem with status (``qwen3-4b__h100.estimate``) or a path.
        directory: where to look; defaults to this package's folder.
    """
    return parse_profile(resolve_profile_path(name, directory))


__all__ = ["PROFILE_DIR", "STATUS_PREFERENCE", "ProfileError", "ServingProfile", "StepTimeExtension",
           "chunk_pairs", "load_profile", "parse_profile", "resolve_profile_path"]
