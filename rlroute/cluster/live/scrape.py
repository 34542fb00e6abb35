"""Worker statistics, parsed once: SGLang's Prometheus ``/metrics`` text and ``/get_load`` JSON -> dataclass.

As in vLLM production-stack's ``stats/engine_stats.py``, raw text is parsed in one place into a typed
record; everything downstream (the live cluster's state, features, policies) reads the record. Names are
SGLang's (``sglang/srt/metrics/collector.py``); ``rlroute_worker_*`` gauges are the emulated worker's
extras (pause flag, prefix-cache size) and are optional — a real SGLang server lacks them, and the fields
then keep their defaults (``paused=False``, ``cache_tokens=None``: the router's own estimate is used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# Prometheus sample name -> WorkerStats field. Counters appear with a ``_total`` suffix in the text
# format of prometheus_client >= 0.4; both spellings are accepted.
_GAUGES: dict[str, str] = {
    "sglang:num_running_reqs": "running",
    "sglang:num_queue_reqs": "queued",
    "sglang:num_used_tokens": "kv_used_tokens",
    "sglang:token_usage": "token_usage",
    "sglang:cache_hit_rate": "cache_hit_rate",
    "sglang:gen_throughput": "gen_throughput",
    "sglang:max_total_num_tokens": "kv_capacity_tokens",
    "rlroute_worker_paused": "paused",
    "rlroute_worker_cache_tokens": "cache_tokens",
}
_COUNTERS: dict[str, str] = {
    "sglang:prompt_tokens": "prompt_tokens_total",
    "sglang:generation_tokens": "generation_tokens_total",
    "sglang:cached_tokens": "cached_tokens_total",
    "sglang:num_requests": "requests_total",
    "sglang:evicted_tokens": "evicted_tokens_total",
}


class ScrapeError(ValueError):
    """A worker's ``/metrics`` or ``/get_load`` body cannot be understood."""


@dataclass(slots=True)
class WorkerStats:
    """One scrape of one worker (SGLang's metric meanings; counters are cumulative since start)."""

    running: int = 0
    queued: int = 0
    kv_used_tokens: int = 0
    kv_capacity_tokens: int = 0
    token_usage: float = 0.0
    cache_hit_rate: float = 0.0  # cumulative, token-weighted
    gen_throughput: float = 0.0  # tokens per (modelled) second
    prompt_tokens_total: float = 0.0
    generation_tokens_total: float = 0.0
    cached_tokens_total: float = 0.0
    requests_total: float = 0.0
    evicted_tokens_total: float = 0.0  # prefix-cache tokens evicted (SGLang's counter; 0 where not exported)
    paused: bool = False
    cache_tokens: int | None = None


def parse_metrics(text: str, stats: WorkerStats | None = None) -> WorkerStats:
    """Parse Prometheus text exposition into :class:`WorkerStats` (unknown metrics are ignored).

    Values summed over label sets (one ``model_name`` per SGLang server; DP ranks add up).

    Raises:
        ScrapeError: the text is not valid Prometheus exposition format.
    """
    out = stats or WorkerStats()
    seen: dict[str, float] = {}
    # Only the lines of the metrics read here go through prometheus-client's parser (a worker exports ~90
    # lines, ~15 of them read: parsing all of them cost ~0.8 ms per scrape on the router's event loop). A
    # text with none of them is parsed whole, so a body that is not Prometheus text still raises.
    wanted = "".join(line + "\n" for line in text.splitlines() if _name(line) in _WANTED)
    try:
        for family in text_string_to_metric_families(wanted or text):
            for sample in family.samples:
                name = sample.name
                if name.endswith("_total") and name[: -len("_total")] in _COUNTERS:
                    name = name[: -len("_total")]
                if name in _GAUGES or name in _COUNTERS:
                    seen[name] = seen.get(name, 0.0) + float(sample.value)
    except (ValueError, TypeError, IndexError) as e:
        raise ScrapeError(f"/metrics: not Prometheus text exposition ({e})") from e
    for name, value in seen.items():
        field = _GAUGES.get(name) or _COUNTERS[name]
        current = getattr(out, field)
        if field == "paused":
            out.paused = value > 0.5
        elif isinstance(current, int) or field == "cache_tokens":
            setattr(out, field, int(round(value)))
        else:
            setattr(out, field, value)
    return out


_WANTED = frozenset(_GAUGES) | frozenset(_COUNTERS) | frozenset(n + "_total" for n in _COUNTERS)


def _name(line: str) -> str:
    """The metric name a sample line starts with ("" for a comment; a name never holds ``{`` or a space)."""
    if line.startswith("#"):
        return ""
    end = len(line)
    for sep in ("{", " "):
        i = line.find(sep)
        if 0 <= i < end:
            end = i
    return line[:end]


def apply_load(body: Any, stats: WorkerStats) -> WorkerStats:
    """Overlay SGLang's ``/get_load`` answer (fresher than /metrics' gauges, which SGLang logs periodically).

    Accepts the object form ``{num_running_reqs, num_waiting_reqs, num_tokens}`` and SGLang's list-per-DP-rank
    form.

    Raises:
        ScrapeError: the body has neither form.
    """
    rows = body if isinstance(body, list) else [body]
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise ScrapeError(f"/get_load: expected an object or a list of objects, got {type(body).__name__}")
    try:
        if all("num_running_reqs" in r for r in rows):
            stats.running = sum(int(r["num_running_reqs"]) for r in rows)
        if all("num_waiting_reqs" in r for r in rows):
            stats.queued = sum(int(r["num_waiting_reqs"]) for r in rows)
        if all("num_tokens" in r for r in rows):
            stats.kv_used_tokens = sum(int(r["num_tokens"]) for r in rows)
    except (TypeError, ValueError) as e:
        raise ScrapeError(f"/get_load: non-integer load field ({e})") from e
    return stats
