"""Live-cluster parts without processes: Prometheus/get_load parsing, prefix estimates, prompt payloads."""

from __future__ import annotations

import orjson
import pytest

from rlroute.cluster.live.client import block_token_ids, generate_body, prompt_field
from rlroute.cluster.live.scrape import ScrapeError, WorkerStats, apply_load, parse_metrics
from rlroute.types import Request

SGLANG_METRICS = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="Qwen/Qwen3-4B"} 3.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="Qwen/Qwen3-4B"} 2.0
# TYPE sglang:num_used_tokens gauge
sglang:num_used_tokens{model_name="Qwen/Qwen3-4B"} 4096.0
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="Qwen/Qwen3-4B"} 0.25
# TYPE sglang:max_total_num_tokens gauge
sglang:max_total_num_tokens{model_name="Qwen/Qwen3-4B"} 500000.0
# TYPE sglang:prompt_tokens counter
sglang:prompt_tokens_total{model_name="Qwen/Qwen3-4B"} 1000.0
# TYPE sglang:cached_tokens counter
sglang:cached_tokens_total{model_name="Qwen/Qwen3-4B"} 250.0
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="0.1",model_name="Qwen/Qwen3-4B"} 1.0
"""


def test_parse_sglang_metrics_into_typed_stats() -> None:
    s = parse_metrics(SGLANG_METRICS)
    assert (s.running, s.queued, s.kv_used_tokens, s.kv_capacity_tokens) == (3, 2, 4096, 500000)
    assert s.cache_hit_rate == 0.25 and s.prompt_tokens_total == 1000 and s.cached_tokens_total == 250
    assert s.paused is False and s.cache_tokens is None  # real SGLang has no rlroute_worker_* extras
    extra = parse_metrics(SGLANG_METRICS + "rlroute_worker_paused 1\nrlroute_worker_cache_tokens 640\n")
    assert extra.paused and extra.cache_tokens == 640


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ({"num_running_reqs": 4, "num_waiting_reqs": 1, "num_tokens": 77}, (4, 1, 77)),
        ([{"num_running_reqs": 1, "num_waiting_reqs": 2, "num_tokens": 10},
          {"num_running_reqs": 3, "num_waiting_reqs": 0, "num_tokens": 5}], (4, 2, 15)),
        ({"num_reqs": 9}, (3, 2, 4096)),  # unknown shape: keeps the /metrics values
    ],
)
def test_get_load_overlays_metrics(body: object, expect: tuple[int, int, int]) -> None:
    s = apply_load(body, parse_metrics(SGLANG_METRICS))
    assert (s.running, s.queued, s.kv_used_tokens) == expect


@pytest.mark.parametrize("body", [[], "busy", [1, 2], {"num_running_reqs": "many"}])
def test_bad_get_load_is_a_scrape_error(body: object) -> None:
    with pytest.raises(ScrapeError, match="/get_load"):
        apply_load(body, WorkerStats())


def test_bad_metrics_text_is_a_scrape_error() -> None:
    with pytest.raises(ScrapeError, match="/metrics"):
        parse_metrics("sglang:num_running_reqs{model_name=} not-a-number\n")


def _req(rid: int, blocks: tuple[int, ...], input_len: int, prompt: str | None = None) -> Request:
    return Request(id=rid, arrival=0.0, input_len=input_len, output_len=8, blocks=blocks, block_size=16,
                   prompt=prompt)


def test_synthesised_token_ids_keep_the_prefix_structure() -> None:
    a, b = _req(1, (11, 12, 13), 40), _req(2, (11, 12, 99), 48)
    ia, ib = block_token_ids(a), block_token_ids(b)
    assert len(ia) == 40 and len(ib) == 48
    assert ia[:32] == ib[:32] and ia[32:40] != ib[32:40]
    tail_a, tail_b = block_token_ids(_req(3, (11,), 20)), block_token_ids(_req(4, (11,), 20))
    assert tail_a[:16] == tail_b[:16] and tail_a[16:] != tail_b[16:]  # beyond the blocks: request-unique
    plan = block_token_ids(a, extra_tokens=5)
    assert plan[:40] == ia and len(plan) == 45


def test_payload_uses_text_only_when_there_is_nothing_else() -> None:
    text = orjson.loads(generate_body(7, prompt_field(_req(1, (), 5, prompt="hello world"))))
    assert text == {"sampling_params": {"max_new_tokens": 7, "temperature": 0.0}, "stream": False,
                    "text": "hello world"}
    req = _req(1, (5, 6), 32, prompt="hi")
    body = orjson.loads(generate_body(7, prompt_field(req)))
    assert body["input_ids"] == block_token_ids(req) and "text" not in body
    assert body["sampling_params"]["max_new_tokens"] == 7 and body["stream"] is False
    plan = orjson.loads(generate_body(3, prompt_field(req, extra_tokens=5)))
    assert plan["input_ids"] == block_token_ids(req, extra_tokens=5)


def test_a_body_without_prometheus_text_is_a_scrape_error() -> None:
    with pytest.raises(ScrapeError, match="/metrics"):
        parse_metrics("<html><body>not a metrics page</body></html>\n")  # none of the read metrics: parsed whole


def test_only_the_read_metrics_are_parsed_and_dp_ranks_add_up() -> None:
    """Lines of other metrics (a malformed one included) are skipped before parsing; a read metric's label
    values may hold spaces and braces; its label sets (DP ranks) are summed."""
    queue = 'sglang:num_queue_reqs{model_name="Qwen/Qwen3-4B"} 2.0'
    ranks = 'sglang:num_queue_reqs{model_name="a {b} c",dp="0"} 2.0\nsglang:num_queue_reqs{model_name="a {b} c",dp="1"} 5.0'
    text = 'sglang:e2e_request_latency_seconds_bucket{le="0.5"} not-parsed\n' + SGLANG_METRICS.replace(queue, ranks)
    s = parse_metrics(text)
    assert (s.running, s.queued, s.prompt_tokens_total) == (3, 7, 1000)
