"""The emulated worker's ``/metrics``: Prometheus text with SGLang's ``sglang:`` metric names.

Gauges and counters are read from the engine at scrape time by a custom collector (no background
thread, no duplicated state); latency histograms are observed as requests finish. Names and labels follow
SGLang's ``sglang/srt/metrics/collector.py`` (``model_name`` label); ``rlroute_*`` extras carry what the
router's state needs and SGLang does not export (pause flag, KV capacity in tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from rlroute.worker.engine import Engine, Job

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _EngineCollector:
    def __init__(self, engine: Engine, model: str) -> None:
        self.engine = engine
        self.model = model

    def collect(self) -> Iterator[Metric]:
        e = self.engine
        st, m = e.stats, e.model
        labels = ["model_name"]
        v = [self.model]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(v, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(v, value)
            return c

        cap = max(1, m.kv_capacity_tokens)
        yield gauge("sglang:num_running_reqs", "The number of running requests.", len(e.running))
        yield gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", len(e.waiting))
        yield gauge("sglang:num_used_tokens", "The number of used tokens.", e.kv_used_tokens)
        yield gauge("sglang:token_usage", "The token usage (share of the KV pool).", e.kv_used_tokens / cap)
        hit = st.cached_tokens_total / st.prompt_tokens_total if st.prompt_tokens_total else 0.0
        yield gauge("sglang:cache_hit_rate", "The prefix cache hit rate (token-weighted).", hit)
        yield gauge("sglang:gen_throughput", "The generation throughput (token/s).", st.recent_gen_throughput)
        yield gauge("sglang:max_total_num_tokens", "KV pool capacity in tokens.", cap)
        yield counter("sglang:prompt_tokens", "Number of prefill tokens processed.", st.prompt_tokens_total)
        yield counter("sglang:generation_tokens", "Number of generation tokens processed.", st.generation_tokens_total)
        yield counter("sglang:cached_tokens", "Number of cached prompt tokens.", st.cached_tokens_total)
        yield counter("sglang:num_requests", "Number of requests processed.", st.requests_total)
        yield counter("sglang:evicted_tokens", "Number of tokens evicted from the prefix cache.",
                      m.cache.evicted_tokens)
        yield gauge("rlroute_worker_paused", "1 while generation is paused.", 1.0 if e.paused else 0.0)
        yield gauge("rlroute_worker_cache_tokens", "Tokens held by the prefix cache.", m.cache.total_tokens)


class WorkerMetrics:
    """A per-worker registry (never the global default one, so tests can run many apps in one process)."""

    def __init__(self, engine: Engine, model: str) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine, model))  # type: ignore[arg-type]
        self.ttft = Histogram("sglang:time_to_first_token_seconds", "Time to first token (modelled s).",
                              labelnames=["model_name"], registry=self.registry, buckets=_LATENCY_BUCKETS)
        self.e2e = Histogram("sglang:e2e_request_latency_seconds", "End-to-end latency (modelled s).",
                             labelnames=["model_name"], registry=self.registry, buckets=_LATENCY_BUCKETS)
        self.tpot = Histogram(
            "sglang:time_per_output_token_seconds", "Time per output token (modelled s).",
            labelnames=["model_name"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.5, 1.0),
        )
        self.model = model

    def observe(self, job: Job) -> None:
        """Record a finished request's modelled latencies (aborted ones are skipped)."""
        if job.finish is None or job.first_token is None:
            return
        self.ttft.labels(self.model).observe(job.first_token - job.arrival)
        self.e2e.labels(self.model).observe(job.finish - job.arrival)
        if job.generated > 1:
            self.tpot.labels(self.model).observe((job.finish - job.first_token) / (job.generated - 1))

    def render(self) -> tuple[bytes, str]:
        """Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
