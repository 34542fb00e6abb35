"""Serving profiles: per model x GPU step-time and memory coefficients, stored as YAML data files.

The file format is agreed in ``/work/coord/PROFILE_FORMAT.md``: one file per model x GPU named
``<stem>.<status>.yaml`` with status ``estimate`` (roofline/public-figure estimates written by hand),
``measured`` (fitted to GPU measurements by ``experiments/profiling``) or ``derived``.

:func:`load_profile` resolves a name to a file by an explicit preference order,
:data:`STATUS_PREFERENCE` = measured > derived > estimate: when a measured file exists for a stem it wins
over the estimate, so dropping a ``*.measured.yaml`` beside an estimate upgrades every simulation
without a config change. A name that already ends in a status (``qwen3-4b__h100.estimate``) or a path
to a ``.yaml`` file loads exactly that file.
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


class ProfileError(ValueError):
    """A profile file is missing or malformed; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class ServingProfile:
    """Step-time and memory model of one serving instance (one SGLang server, ``num_gpus`` GPUs).

    Step time of one continuous-batching engine step is
    ``a + b * prefill_tokens + c * decode_seqs + d * context_tokens`` seconds.
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

    def step_time(self, prefill_tokens: int, decode_seqs: int, context_tokens: int) -> float:
        """Seconds for one engine step with this batch composition."""
        return self.a + self.b * prefill_tokens + self.c * decode_seqs + self.d * context_tokens

    def prefill_time(self, tokens: int) -> float:
        """Seconds to prefill ``tokens`` new tokens on an idle instance (chunked, one chunk per step)."""
        chunk = self.chunked_prefill_tokens
        steps = max(1, -(-tokens // chunk))
        return steps * self.a + self.b * tokens

    def kv_capacity_tokens(self, mem_fraction_static: float) -> int:
        """KV pool size in tokens: SGLang's ``mem_fraction_static`` covers weights + KV pool."""
        if not 0.0 < mem_fraction_static <= 1.0:
            raise ProfileError(f"{self.name}: mem_fraction_static must be in (0, 1], got {mem_fraction_static}")
        free_gb = self.gpu_memory_gb * self.num_gpus * mem_fraction_static - self.weights_gb
        if free_gb <= 0:
            raise ProfileError(
                f"{self.name}: mem_fraction_static={mem_fraction_static} leaves no KV memory "
                f"({self.gpu_memory_gb}GB x {self.num_gpus} x {mem_fraction_static} <= weights {self.weights_gb}GB)"
            )
        return int(free_gb * 1e9 / self.kv_bytes_per_token)


def _need(d: dict[str, Any], key: str, path: Path, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise ProfileError(f"{path}: missing field {key!r}")
    val = d[key]
    if not isinstance(val, kind) or isinstance(val, bool):
        raise ProfileError(f"{path}: field {key!r} must be {kind}, got {val!r}")
    return val


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
        path=str(path),
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


__all__ = ["PROFILE_DIR", "STATUS_PREFERENCE", "ProfileError", "ServingProfile", "load_profile", "parse_profile",
           "resolve_profile_path"]
