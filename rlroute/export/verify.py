"""Export self-check: ONNX (onnxruntime) and torch (SB3) must choose the same actions on recorded observations.

Observations are recorded from the real environment (:func:`rlroute.env.build_env`) driven by a uniformly
random policy over the allowed actions, or loaded from a ``.npy`` file (e.g. a run's saved observations).
The torch side is SB3's own path — ``VecNormalize``-style normalisation in NumPy, then
``model.predict(deterministic=True)`` for actions and the policy's feature extractor, actor MLP and action
net for logits — so the check covers the wrapper and the exporter, not just the exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlroute.export.graph import ObsNorm

LOGIT_ATOL = 1e-5


class ExportVerificationError(RuntimeError):
    """ONNX and torch disagree: the exported graph must not be used."""


@dataclass(slots=True)
class Recorded:
    """Observations (raw features) and action masks recorded from an environment."""

    obs: np.ndarray  # float32[n, obs_dim]
    masks: np.ndarray | None  # bool[n, n_actions] or None when the env has no masks


@dataclass(slots=True)
class VerifyReport:
    """What the export self-check measured (stored in the manifest's ``verification``)."""

    n_obs: int
    obs_source: str
    action_agreement: float
    n_disagree: int
    max_abs_logit_diff: float
    max_abs_logprob_diff: float
    logit_atol: float
    masked: bool
    action_counts: list[int]
    passed: bool

    def to_json(self) -> dict[str, Any]:
        """Plain-dict form for the manifest."""
        return asdict(self)


def record_observations(env: Any, n: int, seed: int,
                        act: Callable[[np.ndarray, np.ndarray], int] | None = None) -> Recorded:
    """Step ``env`` with random allowed actions (or ``act``'s) until ``n`` observations are recorded.

    Args:
        env: a Gymnasium env with a ``Box`` observation (e.g. ``RoutingEnv``); ``action_masks()`` is used
            when the env has it.
        n: observations to record.
        seed: seeds ``env.reset`` and the random actions.
        act: ``(obs, mask) -> action``: drive the env with this policy instead (e.g. the exported one).
    """
    rng = np.random.default_rng(seed)
    has_masks = callable(getattr(env, "action_masks", None))
    n_actions = int(env.action_space.n)
    obs_list: list[np.ndarray] = []
    mask_list: list[np.ndarray] = []
    obs, _ = env.reset(seed=seed)
    episode = 0
    while len(obs_list) < n:
        mask = np.asarray(env.action_masks(), dtype=bool) if has_masks else np.ones(n_actions, dtype=bool)
        obs_list.append(np.asarray(obs, dtype=np.float32))
        mask_list.append(mask)
        allowed = np.flatnonzero(mask) if mask.any() else np.arange(n_actions)
        action = int(rng.choice(allowed)) if act is None else int(act(obs_list[-1], mask))
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return Recorded(np.stack(obs_list), np.stack(mask_list) if has_masks else None)


def torch_reference(model: Any, norm: ObsNorm, rec: Recorded, algo: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SB3's own deterministic actions, raw logits and log-probabilities for the recorded observations."""
    policy = model.policy
    policy.set_training_mode(False)
    normed = norm.apply(rec.obs)
    if algo == "MaskablePPO":
        actions, _ = model.predict(normed, deterministic=True, action_masks=rec.masks)
    else:
        actions, _ = model.predict(normed, deterministic=True)
    with torch.no_grad():
        obs_t = torch.as_tensor(normed)
        features = policy.extract_features(obs_t, policy.pi_features_extractor)
        logits = policy.action_net(policy.mlp_extractor.forward_actor(features)).numpy()
        logprobs = torch.log_softmax(torch.as_tensor(logits), dim=-1).numpy()
    return np.asarray(actions, dtype=np.int64), logits, logprobs


def verify(
    onnx_path: Path,
    model: Any,
    norm: ObsNorm,
    rec: Recorded,
    algo: str,
    obs_source: str,
    atol: float = LOGIT_ATOL,
) -> VerifyReport:
    """Run the ONNX graph and SB3 on the same observations and compare actions and logits.

    Raises:
        ExportVerificationError: any action differs or any logit differs by more than ``atol``.
    """
    import onnxruntime as ort

    from rlroute.export.manifest import INPUT_NAME
    from rlroute.policies.onnx import masked_argmax

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits = np.asarray(sess.run(None, {INPUT_NAME: rec.obs})[0])
    ref_actions, ref_logits, ref_logprobs = torch_reference(model, norm, rec, algo)
    masks = rec.masks if (algo == "MaskablePPO" and rec.masks is not None) else None
    onnx_actions = masked_argmax(onnx_logits, masks)
    onnx_logprobs = onnx_logits - np.logaddexp.reduce(onnx_logits.astype(np.float64), axis=-1, keepdims=True)
    n_disagree = int((onnx_actions != ref_actions).sum())
    max_logit = float(np.max(np.abs(onnx_logits - ref_logits)))
    max_lp = float(np.max(np.abs(onnx_logprobs - ref_logprobs)))
    report = VerifyReport(
        n_obs=int(len(rec.obs)),
        obs_source=obs_source,
        action_agreement=1.0 - n_disagree / len(rec.obs),
        n_disagree=n_disagree,
        max_abs_logit_diff=max_logit,
        max_abs_logprob_diff=max_lp,
        logit_atol=atol,
        masked=masks is not None,
        action_counts=np.bincount(onnx_actions, minlength=onnx_logits.shape[1]).tolist(),
        passed=n_disagree == 0 and max_logit <= atol and bool(np.isfinite(onnx_logits).all()),
    )
    if not report.passed:
        raise ExportVerificationError(
            f"{onnx_path}: ONNX and torch disagree on {n_disagree}/{len(rec.obs)} actions, "
            f"max |logit diff| {max_logit:.3g} (tolerance {atol:g}); the export is not usable"
        )
    return report
