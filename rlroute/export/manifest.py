"""The exported policy folder's contract: ``manifest.json`` beside ``policy.onnx``, and its validation.

A policy folder is everything the router needs to trust a learned policy::

    <folder>/policy.onnx     actor only, deterministic: raw observation float32[batch, 224] -> logits[batch, 3]
    <folder>/manifest.json   what the graph expects and where it came from (fields below)

Observation normalisation (SB3 ``VecNormalize``) is **baked into the graph**: ``policy.onnx`` takes the raw
224-dim feature vector from :func:`rlroute.features.extract`, so a caller can never forget to normalise.
The statistics are also shipped in the manifest (``obs_norm``) so the graph can be audited and rebuilt,
and ``obs_norm.baked_into_graph`` says the caller must NOT apply them again.

Manifest fields (``format_version`` 1):

================  ==========================================================================================
field             meaning
================  ==========================================================================================
format_version    version of this manifest layout (bump on incompatible changes)
created_at        UTC creation time, ISO 8601
rlroute_version   package version that wrote the folder
feature_schema    ``{version, hash, dim, text}`` of the training run's feature schema (``features.text``)
obs_norm          ``{enabled, baked_into_graph, mean[224], var[224], clip, epsilon, range_clip, low, high}``;
                  ``low``/``high`` (null for runs without): the training range each raw feature is clipped
                  to before standardising, in training and in the graph (``rlroute.train.normalize``)
action_map        ``{"0": "large", "1": "small", "2": "hybrid"}`` (logit index -> action name)
env               ``{id, version}`` of the Gymnasium env the policy was trained on
onnx              ``{file, sha256, opset, input, output, obs_dim, n_actions}``
source            ``{run_dir, algo, masked}`` (``run_dir`` is null for a freshly initialised policy)
training_config   the run's composed Hydra config (``config.yaml``), or the config used for a fresh policy
metrics           the run's ``metrics.json`` (evaluation at training end), ``{}`` when there is none
verification      ONNX-vs-torch check at export: ``{n_obs, action_agreement, max_abs_logit_diff, ...}``
ood               optional: the out-of-distribution guard (``rlroute.export.ood``): training statistics
                  ``stats{mean, var, low, high, count, source, at_low}``, per-block ``thresholds``,
                  ``range_margin``, ``range_factor``, ``range_exempt``, ``ignored``, ``log_norm``,
                  ``saturation`` (``[[feature, value at the cap], ...]``: the capped features; absent before
                  the saturation limit, such a guard is scored as calibrated), and ``calibration{fpr_fit,
                  fpr_holdout, target_fpr, n_fit, n_holdout, split, ...}`` measured on the validation split;
                  absent in folders exported before the guard
action_bias       optional: ``{"large": x, "small": y, "hybrid": z}`` added to the graph's logits before the
                  action is picked, everywhere the folder is loaded (router, evaluation, OPE propensities): a
                  deployment calibration of the policy's large share to a traffic it was not trained on,
                  tuned on that traffic's validation split by ``rlroute.export.bias`` (``rlroute calibrate``, which records
                  the sweep in ``action_bias_tuning``); absent = no bias
fallback          optional: the rule deciding what the folder's guard refuses, one of ``FALLBACK_RULES`` (a
                  policy registry name), chosen with ``action_bias`` on the traffic's validation split by
                  ``rlroute calibrate``; it takes precedence over the caller's fallback (the router's
                  ``policy@fallback``, which still decides when no folder is loaded); absent = the caller's
================  ==========================================================================================
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlroute.types import ACTION_NAMES

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "policy.onnx"
FORMAT_VERSION = 1
INPUT_NAME = "obs"
OUTPUT_NAME = "logits"
ACTION_MAP: dict[str, str] = {str(i): name for i, name in enumerate(ACTION_NAMES)}

# Rules ``manifest.fallback`` may name: the non-learned policies that need no fitting (the router's default, the
# seed heuristic, first). A fitted rule (threshold) would need its own artefact in the folder.
FALLBACK_RULES: tuple[str, ...] = ("heuristic", "all_small", "cache_aware", "all_large")

# Reasons a policy folder is refused; the router counts its fallbacks under these labels.
REASON_MISSING = "policy_missing"
REASON_CORRUPT = "policy_corrupt"
REASON_SCHEMA = "schema_mismatch"
LOAD_REASONS: tuple[str, ...] = (REASON_MISSING, REASON_CORRUPT, REASON_SCHEMA)

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "created_at": str,
    "rlroute_version": str,
    "feature_schema": dict,
    "obs_norm": dict,
    "action_map": dict,
    "env": dict,
    "onnx": dict,
    "source": dict,
    "training_config": dict,
    "metrics": dict,
    "verification": dict,
}


class PolicyLoadError(RuntimeError):
    """An exported policy folder cannot be trusted; ``reason`` is one of :data:`LOAD_REASONS`.

    Args:
        reason: machine-readable label the router's fallback counter uses.
        detail: human-readable explanation naming the file and field at fault.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in LOAD_REASONS:
            raise ValueError(f"unknown PolicyLoadError reason {reason!r}; expected one of {LOAD_REASONS}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SchemaId:
    """Identity of a feature schema: what an exported policy and the running features must agree on."""

    version: int | str
    hash: str
    dim: int
    text: str = "hash"  # the request block's text representation (``features.text``), part of the hash


def current_schema(text: str = "hash") -> SchemaId:
    """The schema the running features code builds for text representation ``text``."""
    from rlroute.features import build_schema

    schema = build_schema(text)
    return SchemaId(version=schema.version, hash=str(schema.hash), dim=int(len(schema.names)), text=text)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (detects truncated or altered ``policy.onnx``)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename) so a reader never sees half a file."""
    check_fields(manifest, folder / MANIFEST_FILE)
    path = folder / MANIFEST_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
    return path


def check_fields(manifest: Any, where: Path) -> None:
    """Raise :class:`PolicyLoadError` (corrupt) unless ``manifest`` has every field with the right type."""
    if not isinstance(manifest, dict):
        raise PolicyLoadError(REASON_CORRUPT, f"{where}: expected a JSON object, got {type(manifest).__name__}")
    for key, typ in _REQUIRED.items():
        if key not in manifest:
            raise PolicyLoadError(REASON_CORRUPT, f"{where}: missing field {key!r}")
        if not isinstance(manifest[key], typ):
            raise PolicyLoadError(
                REASON_CORRUPT, f"{where}: field {key!r} should be {typ}, got {type(manifest[key]).__name__}"
            )
    if manifest["format_version"] != FORMAT_VERSION:
        raise PolicyLoadError(
            REASON_CORRUPT, f"{where}: format_version {manifest['format_version']} != supported {FORMAT_VERSION}"
        )
    for key in ("version", "hash", "dim"):
        if key not in manifest["feature_schema"]:
            raise PolicyLoadError(REASON_CORRUPT, f"{where}: feature_schema lacks {key!r}")
    for key in ("file", "sha256", "input", "output", "obs_dim", "n_actions"):
        if key not in manifest["onnx"]:
            raise PolicyLoadError(REASON_CORRUPT, f"{where}: onnx lacks {key!r}")
    if manifest["action_map"] != ACTION_MAP:
        raise PolicyLoadError(
            REASON_CORRUPT, f"{where}: action_map {manifest['action_map']} != this rlroute's {ACTION_MAP}"
        )
    bias = manifest.get("action_bias")
    if bias is not None:
        ok = isinstance(bias, dict) and set(bias) <= set(ACTION_NAMES) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bias.values())
        if not ok:
            raise PolicyLoadError(REASON_CORRUPT, f"{where}: action_bias should map action names "
                                  f"{list(ACTION_NAMES)} to finite numbers, got {bias!r}")
    fallback = manifest.get("fallback")
    if fallback is not None and fallback not in FALLBACK_RULES:
        raise PolicyLoadError(REASON_CORRUPT, f"{where}: fallback should be one of {list(FALLBACK_RULES)}, "
                              f"got {fallback!r}")


def action_bias(manifest: dict[str, Any]) -> list[float] | None:
    """The manifest's ``action_bias`` as one number per logit (``ACTION_MAP`` order), or None when absent."""
    bias = manifest.get("action_bias")
    if not bias:
        return None
    return [float(bias.get(name, 0.0)) for name in ACTION_NAMES]


def read_manifest(folder: str | Path, schema: SchemaId | None = None) -> dict[str, Any]:
    """Load and validate a policy folder's manifest against the running feature schema.

    Args:
        folder: the exported policy folder.
        schema: schema to check against; defaults to what the running features code builds for the
            manifest's ``feature_schema.text`` (so a change in the features code is caught).

    Returns:
        The manifest dict.

    Raises:
        PolicyLoadError: ``policy_missing`` (folder/file absent), ``policy_corrupt`` (unreadable JSON,
            missing fields, ONNX bytes not matching the recorded SHA-256) or ``schema_mismatch``.
    """
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise PolicyLoadError(REASON_MISSING, f"policy folder {folder} does not exist")
    if not path.is_file():
        raise PolicyLoadError(REASON_MISSING, f"{path} does not exist")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyLoadError(REASON_CORRUPT, f"{path}: not valid JSON ({e})") from e
    check_fields(manifest, path)
    onnx_path = folder / str(manifest["onnx"]["file"])
    if not onnx_path.is_file():
        raise PolicyLoadError(REASON_MISSING, f"{onnx_path} does not exist (named by {path}: onnx.file)")
    digest = sha256_file(onnx_path)
    if digest != manifest["onnx"]["sha256"]:
        raise PolicyLoadError(
            REASON_CORRUPT, f"{onnx_path}: sha256 {digest[:12]}… != manifest onnx.sha256 {manifest['onnx']['sha256'][:12]}…"
        )
    got = manifest["feature_schema"]
    want = schema or current_schema(str(got.get("text", "hash")))
    if str(got["hash"]) != want.hash or int(got["dim"]) != want.dim:
        raise PolicyLoadError(
            REASON_SCHEMA,
            f"{path}: policy trained on feature schema {got['version']} (hash {got['hash']}, dim {got['dim']}); "
            f"running features are {want.version} (hash {want.hash}, dim {want.dim})",
        )
    return manifest
