"""Turn an SB3 (Maskable)PPO actor plus its ``VecNormalize`` statistics into a deterministic ONNX graph.

Follows SB3's ``docs/guide/export.md``: wrap the policy in a ``torch.nn.Module`` whose ``forward`` is the
deterministic actor (features extractor -> policy MLP -> action net), and export that. We additionally bake
the observation normalisation into the graph, computed in float64 exactly as ``VecNormalize._normalize_obs``
does in NumPy (then cast to float32), so ONNX and SB3 see bit-identical normalised inputs — including the
clip of each raw feature to its training range that :class:`rlroute.train.normalize.RangeVecNormalize`
applies first (a feature constant in training stays at its training value instead of becoming ±clip).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlroute.export.manifest import INPUT_NAME, OUTPUT_NAME

MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
OPSET = 20


@dataclass(slots=True)
class ObsNorm:
    """``VecNormalize`` observation statistics; ``enabled=False`` means identity.

    ``low``/``high``: the training range each raw feature is clipped to before standardising
    (:class:`rlroute.train.normalize.RangeVecNormalize`); ``None`` for runs trained with plain
    ``VecNormalize`` (no range recorded: no clip, as they were trained).
    """

    enabled: bool
    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    count: float = 0.0  # observations the statistics were updated with

    @classmethod
    def identity(cls, dim: int) -> ObsNorm:
        """No normalisation (a run trained without ``VecNormalize`` or a fresh policy)."""
        return cls(False, np.zeros(dim), np.ones(dim), float("inf"), 0.0)

    @classmethod
    def from_vecnormalize(cls, vn: Any, dim: int) -> ObsNorm:
        """Read the statistics of an SB3 ``VecNormalize`` (or anything with the same attributes)."""
        if not getattr(vn, "norm_obs", False):
            return cls.identity(dim)
        mean = np.asarray(vn.obs_rms.mean, dtype=np.float64)
        var = np.asarray(vn.obs_rms.var, dtype=np.float64)
        if mean.shape != (dim,) or var.shape != (dim,):
            raise ValueError(f"VecNormalize obs_rms has shape {mean.shape}/{var.shape}, expected ({dim},)")
        from rlroute.train.normalize import RangeRunningMeanStd

        rms = vn.obs_rms
        low: np.ndarray | None = None
        high: np.ndarray | None = None
        if isinstance(rms, RangeRunningMeanStd) and rms.seen:
            low, high = np.asarray(rms.low, dtype=np.float64), np.asarray(rms.high, dtype=np.float64)
        return cls(True, mean, var, float(vn.clip_obs), float(vn.epsilon), low, high, float(rms.count))

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """NumPy reference: exactly ``RangeVecNormalize.normalize_obs`` (float64 maths, float32 result)."""
        if not self.enabled:
            return np.asarray(obs, dtype=np.float32)
        if self.low is not None and self.high is not None:
            obs = np.clip(obs, self.low, self.high)
        out = np.clip((obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip)
        return out.astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        """Manifest form; ``clip`` is null when there is no clipping, ``low``/``high`` when no range clip."""
        return {
            "enabled": self.enabled,
            "baked_into_graph": True,
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "clip": self.clip if np.isfinite(self.clip) else None,
            "epsilon": self.epsilon,
            "range_clip": self.enabled and self.low is not None,
            "low": self.low.tolist() if self.low is not None else None,
            "high": self.high.tolist() if self.high is not None else None,
        }


class OnnxableActor(nn.Module):
    """Deterministic actor: raw observation -> (clip to the training range, normalise) -> SB3 actor -> logits."""

    mean: torch.Tensor
    std: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, policy: Any, norm: ObsNorm) -> None:
        super().__init__()
        self.features_extractor = policy.pi_features_extractor
        self.policy_net = policy.mlp_extractor.policy_net
        self.action_net = policy.action_net
        self.normalise = norm.enabled
        self.clip = float(norm.clip) if norm.enabled else 0.0
        self.register_buffer("mean", torch.as_tensor(norm.mean, dtype=torch.float64))
        # sqrt in NumPy so the divisor is the very float64 VecNormalize divides by.
        self.register_buffer("std", torch.as_tensor(np.sqrt(norm.var + norm.epsilon), dtype=torch.float64))
        self.range_clip = norm.enabled and norm.low is not None and norm.high is not None
        dim = len(norm.mean)
        self.register_buffer("low", torch.as_tensor(norm.low if norm.low is not None else np.zeros(dim),
                                                    dtype=torch.float64))
        self.register_buffer("high", torch.as_tensor(norm.high if norm.high is not None else np.zeros(dim),
                                                     dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of raw observations ``float32[batch, obs_dim]``."""
        x = obs
        if self.normalise:
            x64 = obs.double()
            if self.range_clip:  # np.clip(obs, low, high) = min(max(obs, low), high), as RangeVecNormalize
                x64 = torch.minimum(torch.maximum(x64, self.low), self.high)
            x = ((x64 - self.mean) / self.std).clamp(-self.clip, self.clip).float()
        return self.action_net(self.policy_net(self.features_extractor(x)))


def model_algo(model_zip: Path) -> str:
    """``"MaskablePPO"`` or ``"PPO"``, read from the policy class recorded in an SB3 ``model.zip``."""
    try:
        with zipfile.ZipFile(model_zip) as zf:
            data = zf.read("data").decode()
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{model_zip}: not an SB3 model archive ({e})") from e
    return "MaskablePPO" if "Maskable" in data else "PPO"


def load_run(run_dir: Path) -> tuple[Any, ObsNorm, str]:
    """Load ``model.zip`` (PPO or MaskablePPO) and ``vecnormalize.pkl`` from a training run folder.

    Returns:
        ``(model, obs_norm, algo)``; ``obs_norm`` is identity when the run has no ``vecnormalize.pkl``.
    """
    model_zip = run_dir / MODEL_FILE
    if not model_zip.is_file():
        raise FileNotFoundError(f"{model_zip} not found: expected a training run folder with {MODEL_FILE}")
    algo = model_algo(model_zip)
    if algo == "MaskablePPO":
        from sb3_contrib import MaskablePPO

        model: Any = MaskablePPO.load(model_zip, device="cpu")
    else:
        from stable_baselines3 import PPO

        model = PPO.load(model_zip, device="cpu")
    dim = int(np.prod(model.observation_space.shape))
    vn_path = run_dir / VECNORM_FILE
    if vn_path.is_file():
        # VecNormalize drops its venv when pickled, so it unpickles standalone.
        with vn_path.open("rb") as f:
            norm = ObsNorm.from_vecnormalize(pickle.load(f), dim)
    else:
        norm = ObsNorm.identity(dim)
    return model, norm, algo


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """Silence two messages torch 2.13's exporter prints on every export that say nothing about ours:

    - ``torchvision is not installed. Skipping torchvision::nms`` (and three more ops), logged at WARNING by
      ``torch.onnx._internal.exporter._registration`` while it builds its op registry: our graph is an MLP
      and uses no torchvision op;
    - ``FutureWarning: isinstance(treespec, LeafSpec) is deprecated``, raised inside
      ``torch.export.ExportedProgram.run_decompositions`` when it deep-copies its own module call graph:
      torch's use of its own deprecated API, nothing a caller can change.

    Any other warning or log record of the export still shows.
    """
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def export_onnx(actor: OnnxableActor, obs_dim: int, path: Path, metadata: dict[str, str]) -> Path:
    """Export ``actor`` to a single-file ONNX graph with a dynamic batch axis and metadata props.

    Uses the ``torch.export``-based exporter (the default since torch 2.9) with weights inline.
    """
    import onnx

    actor = actor.eval()
    dummy = torch.zeros(2, obs_dim, dtype=torch.float32)
    with torch.no_grad(), _quiet_torch_export():
        torch.onnx.export(
            actor,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    model = onnx.load(str(path))
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = str(key), str(value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
