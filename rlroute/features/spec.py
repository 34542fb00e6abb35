"""The feature list (schema version 5, :data:`rlroute.features.schema.SCHEMA_VERSION`): 128 request + 64 system
+ 32 cache = 224 indices.

The request block is computed from what a client sends — the bytes of its text (or the ids it sends), its
token cap, its chat turns or session —, identically in training and in the router (v2); for a workload
request that is the body :mod:`rlroute.workload.client` builds (v4: filler standing for a trace's context,
then the prompt text; text dims and cues on the body's last 4,096 characters); the category dims are
reserved (a router sees no category unless a client names one).

Scales (``unit``/``cap``) are chosen so the values a 2-pool SGLang deployment produces spread over
[0, 1]: e.g. queue lengths up to a few hundred requests per instance, TTFT 0.05 s-2 min, prompts of
16-32k tokens (Mooncake's longest are ~100k and saturate at 1). Anything beyond a cap saturates at the
bound; the transforms are part of the schema hash.
"""

from __future__ import annotations

from rlroute.features.schema import SCHEMA_VERSION, Feature, FeatureSchema, lin, log
from rlroute.types import POOLS

TEXT_DIMS = 112  # hashed text (or projected sentence-encoder) dimensions of the request block
RESERVED_DIMS = 6  # request dims kept at 0 (v1's category features), so the blocks stay 128/64/32
SGLANG_CACHE_THRESHOLD = 0.3  # sglang-router cache_aware default (--cache-threshold)


def _request() -> list[Feature]:
    b = "request"
    feats = [
        lin(
            f"request.text_{i:03d}",
            b,
            "signed feature hash of what the client sends, L2-normalised over the text dims: byte 3/5-grams of "
            "the last 4,096 characters of its text (a trace's context is filler), else uni+bigrams of its last "
            "1,024 input_ids; or a projected sentence embedding of that text (text=minilm)",
            low=-1.0,
            high=1.0,
        )
        for i in range(TEXT_DIMS)
    ]
    feats += [
        log("request.input_tokens", b, "prompt length as the router counts it: UTF-8 bytes / 4 of the whole text "
            "the client sends (a trace's context included), else the ids sent", cap=32768, unit=16),
        log(
            "request.output_tokens",
            b,
            "the client's output cap (max_new_tokens / max_tokens; 0 if none), never the true output length",
            cap=8192,
            unit=16,
        ),
        log("request.turn", b, "0-based conversation turn (earlier assistant messages, or the session's count)",
            cap=32),
        lin("request.in_session", b, "1 if the request continues a conversation (turn > 0) or names a session"),
        lin(
            "request.has_code",
            b,
            "1 if the text's last 4,096 characters show code cues (fences, def/class/import, braces+semicolons)",
        ),
        lin(
            "request.has_math",
            b,
            "1 if the text's last 4,096 characters show math cues (LaTeX, equations, arithmetic, math words)",
        ),
        log("request.questions", b, "number of question marks in the text's last 4,096 characters", cap=16),
        log(
            "request.reasoning_cues", b, "reasoning keywords (explain, prove, step by step, why, ...)", cap=8
        ),
        lin("request.has_text", b, "1 if the client sends text or token ids (every workload request: a trace's "
            "context is sent as filler text)"),
        lin(
            "request.complexity",
            b,
            "the seed's complexity score in [0, 1] (rlroute.features.text.complexity)",
        ),
    ]
    feats += [
        lin(f"request.reserved_{k}", b, "reserved: always 0 (no category is visible to a router)")
        for k in range(RESERVED_DIMS)
    ]
    return feats


# Per-pool system features in extraction order (rlroute.features.state relies on this order).
POOL_SYSTEM = (
    ("instances", "log", "instances in the pool", 64, 1),
    ("healthy_frac", "lin", "share of instances that are healthy", 0, 0),
    ("paused_frac", "lin", "share of instances that are paused", 0, 0),
    ("available", "lin", "1 if at least one instance is healthy and not paused", 0, 0),
    ("queued_mean", "log", "queued requests per healthy instance, mean", 256, 1),
    ("queued_max", "log", "queued requests, max over healthy instances", 256, 1),
    ("queued_min", "log", "queued requests, min over healthy instances", 256, 1),
    ("running_mean", "log", "running requests per healthy instance, mean", 256, 1),
    ("running_max", "log", "running requests, max over healthy instances", 256, 1),
    ("running_min", "log", "running requests, min over healthy instances", 256, 1),
    ("queued_total", "log", "queued requests in the pool", 2048, 1),
    ("running_total", "log", "running requests in the pool", 2048, 1),
    ("load_per_available", "log", "(queued+running) per available instance (cap if none available)", 256, 1),
    ("kv_usage_mean", "lin", "KV tokens used / capacity, mean over healthy instances", 0, 0),
    ("kv_usage_max", "lin", "KV usage, max over healthy instances", 0, 0),
    ("kv_usage_min", "lin", "KV usage, min over healthy instances", 0, 0),
    ("kv_free_tokens", "log", "free KV tokens summed over available instances", 1e7, 1000),
    ("ttft", "log", "recent TTFT of the pool, seconds", 120, 0.05),
    ("ttft_max", "log", "recent TTFT, max over healthy instances, seconds", 120, 0.05),
    ("tpot", "log", "recent time per output token of the pool, seconds", 2, 0.01),
    ("tpot_max", "log", "recent TPOT, max over healthy instances, seconds", 2, 0.01),
    ("e2e", "log", "recent end-to-end latency of the pool, seconds", 3600, 1),
    ("throughput", "log", "output tokens per second of the pool, recent window", 1e5, 10),
    ("reply_tokens", "log", "recent output tokens per completed request of the pool (EWMA of completions): the "
     "traffic's reply length, which sets a token-priced call's price and which no request shows", 8192, 16),
    ("slo_violation_rate", "lin", "share of recent completions that missed an SLO", 0, 0),
    ("cost_rate", "log", "cost per second of the pool, recent window (cost-model units)", 10, 0.001),
    ("since_weight_update", "log", "seconds since the last weight update (cap if never)", 86400, 1),
    ("weights_updated", "lin", "1 if the pool's weights were ever updated", 0, 0),
)

GLOBAL_SYSTEM = (
    ("arrival_rate", "log", "arrival rate estimate, requests per second", 1000, 0.1),
    ("time_of_day_sin", "lin", "sin(2*pi*t/86400), t = day_offset + cluster time: the wall clock's time of day "
     "for live pools, trace time from midnight in the simulator", -1, 1),
    ("time_of_day_cos", "lin", "cos(2*pi*t/86400)", -1, 1),
    ("in_system", "log", "queued + running requests over all pools", 4096, 1),
    ("large_share", "lin", "share of in-system requests that sit in the large pool", 0, 0),
    ("cost_rate_total", "log", "cost per second over all pools", 10, 0.001),
    ("kv_usage_diff", "lin", "kv_usage_mean(large) - kv_usage_mean(small)", -1, 1),
    (
        "load_diff",
        "lin",
        "(L_large - L_small) / (L_large + L_small + 1), L = load per available instance",
        -1,
        1,
    ),
)

POOL_CACHE = (
    ("best_match_ratio", "lin", "max over healthy instances of matched prompt tokens / input tokens", 0, 0),
    ("best_match_tokens", "log", "max over healthy instances of matched prompt tokens", 32768, 16),
    ("mean_match_ratio", "lin", "match ratio averaged over healthy instances", 0, 0),
    ("best_available_match_ratio", "lin", "best match ratio over available (unpaused) instances", 0, 0),
    ("above_threshold", "lin", "1 if best_available_match_ratio > 0.3 (sglang-router cache_threshold)", 0, 0),
    (
        "least_loaded_match_ratio",
        "lin",
        "match ratio on the available instance with least queued+running",
        0,
        0,
    ),
    ("least_loaded_match_tokens", "log", "matched tokens on that least-loaded instance", 32768, 16),
    ("best_match_load", "log", "queued+running on the best-matching instance", 256, 1),
    ("matched_frac", "lin", "share of healthy instances with a non-zero match", 0, 0),
    ("cache_util_mean", "lin", "prefix-cache tokens / KV capacity, mean over healthy instances", 0, 0),
    ("cache_util_max", "lin", "prefix-cache tokens / KV capacity, max over healthy instances", 0, 0),
    ("hit_rate", "lin", "pool's recent token-weighted cache hit rate", 0, 0),
    ("hit_rate_max", "lin", "recent cache hit rate, max over healthy instances", 0, 0),
    ("eviction_rate", "log", "evicted tokens per second summed over instances", 1e6, 100),
    ("eviction_rate_max", "log", "evicted tokens per second, max over instances", 1e6, 100),
    ("cache_tokens", "log", "prefix-cache tokens summed over healthy instances", 1e8, 1000),
)


def _rows(prefix: str, block: str, rows: tuple[tuple[str, str, str, float, float], ...]) -> list[Feature]:
    out = []
    for name, kind, doc, a, b in rows:
        full = f"{prefix}.{name}"
        if kind == "log":
            out.append(log(full, block, doc, cap=a, unit=b))
        elif (a, b) == (0, 0):
            out.append(lin(full, block, doc))
        else:
            out.append(lin(full, block, doc, low=a, high=b))
    return out


def build_schema(text: str = "hash") -> FeatureSchema:
    """Build the schema (224 features) for the text representation ``text``."""
    feats = _request()
    for pool in POOLS:
        feats += _rows(f"system.{pool}", "system", POOL_SYSTEM)
    feats += _rows("system", "system", GLOBAL_SYSTEM)
    for pool in POOLS:
        feats += _rows(f"cache.{pool}", "cache", POOL_CACHE)
    schema = FeatureSchema(feats, version=SCHEMA_VERSION, text=text)
    sizes = {k: s.stop - s.start for k, s in schema.slices.items()}
    if sizes != {"request": 128, "system": 64, "cache": 32}:
        raise AssertionError(f"schema blocks must be 128/64/32, got {sizes}")
    return schema


SCHEMA = build_schema()
