"""Export a trained policy for serving: ``rlroute export run_dir=<run> out=<folder>``.

The folder holds ``policy.onnx`` (deterministic actor: raw 224-dim features -> 3 logits, with the run's
``VecNormalize`` observation normalisation baked into the graph in float64, exactly as SB3 computes it) and
``manifest.json`` (schema version/hash/text representation, normalisation statistics — for audit, never
to be re-applied —, action map, env id/version, training config, evaluation metrics, creation time, the
ONNX file's SHA-256, and the export's own verification). :mod:`rlroute.export.manifest` defines and
validates the format; :mod:`rlroute.export.graph` builds the graph; :mod:`rlroute.export.verify` checks
that onnxruntime and SB3 choose the same actions (logits within 1e-5) on >= 10,000 observations recorded
from the real env, and the export fails, writing nothing, if they do not. The serving side is
:class:`rlroute.policies.onnx.OnnxPolicy`.
"""
