"""The pipelined hybrid through the real router over emulated workers on loopback (2 large + 2 small worker
processes, stopped by PID): the prompt is prefilled (``max_new_tokens: 0``) on a small worker while the
large pool plans, and the answer, sent to that worker, hits the warmed prefix.

Every prompt here is new to the fleet (a per-test salt), so a cached token on the answer can only come from
the warm-up.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rlroute.cluster.live.launch import WorkerFleet
from rlroute.serve.proxy import _last_data
from rlroute.worker.tokens import BYTES_PER_TOKEN
from tests.fleet import four_workers
from tests.test_serve import in_process

BLOCK = 64  # the router's and the workers' block size (defaults)
WORDS = 1000  # a ~4,900-byte prompt: ~1,200 pseudo-tokens, 19 full blocks
_SALT = itertools.count()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFleet]:
    yield from four_workers(tmp_path_factory, 500.0)


def long_text() -> str:
    salt = next(_SALT)
    return f"case {salt}: " + " ".join(f"w{salt}x{i}" for i in range(WORDS // 2))


def bodies() -> dict[str, dict[str, Any]]:
    return {
        "/generate": {"text": long_text(), "sampling_params": {"max_new_tokens": 6}},
        "/v1/chat/completions": {"messages": [{"role": "user", "content": long_text()}], "max_tokens": 6},
        "/v1/completions": {"prompt": long_text(), "max_tokens": 6},
    }


def prompt_bytes(path: str, body: dict[str, Any]) -> int:
    """UTF-8 bytes of the prompt as the worker renders it (chat: ``role: content`` lines, then ``assistant: ``)."""
    if path == "/v1/chat/completions":
        return len(f"user: {body['messages'][0]['content']}\nassistant: ".encode())
    return len((body.get("text") or body.get("prompt") or "").encode())


def route(fleet: WorkerFleet, mode: str, path: str, body: dict[str, Any], stream: bool) -> tuple[Any, float]:
    """One hybrid request through an in-process router in ``mode``: the answer's usage (or meta_info) and the
    router's count of successful warm-ups."""
    from rlroute.serve.app import ROUTER, create_app
    from rlroute.serve.config import parse_config
    from rlroute.serve.decision import Outcome
    from rlroute.types import Action

    cfg = parse_config({"pools": {"large": {"workers": fleet.urls("large")}, "small": {"workers": fleet.urls("small")}},
                        "hybrid": {"plan_tokens": 12, "mode": mode}})
    app = create_app(cfg)
    router = app[ROUTER]
    router.slot.decide = lambda *a: Outcome(Action.HYBRID, "policy", None, 0.0)

    async def run() -> httpx.Response:
        async with in_process(app) as c:
            r = await c.post(path, json={**body, "stream": stream}, timeout=30)
            await asyncio.gather(*router.warming)  # the warm-up has answered long before; nothing left behind
            return r

    r = asyncio.run(run())
    assert r.status_code == 200, r.text
    assert r.headers["x-rlroute-action"] == "hybrid" and r.headers["x-rlroute-pool"] == "small"
    answer = json.loads(_last_data(r.content)) if stream else r.json()
    warm = router.metrics.registry.get_sample_value("rlroute_router_hybrid_warmups_total", {"outcome": "ok"})
    return answer, warm or 0.0


def cached(path: str, answer: dict[str, Any]) -> int:
    if path == "/generate":
        return int(answer["meta_info"]["cached_tokens"])
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions", "/v1/completions"])
def test_pipelined_answer_hits_the_warmed_prefix(fleet: WorkerFleet, path: str, stream: bool) -> None:
    body = bodies()[path]
    answer, warm = route(fleet, "pipelined", path, body, stream)
    full_blocks = prompt_bytes(path, body) // (BLOCK * BYTES_PER_TOKEN)
    assert warm == 1
    assert cached(path, answer) == full_blocks * BLOCK > 0  # every full block of the prompt, from the warm-up


@pytest.mark.parametrize("path", ["/generate", "/v1/chat/completions"])
def test_serial_answer_on_a_new_prompt_is_cold(fleet: WorkerFleet, path: str) -> None:
    answer, warm = route(fleet, "plan_and_execute", path, bodies()[path], False)
    assert warm == 0 and cached(path, answer) == 0


def test_worker_honours_prefill_only_and_caches_the_prompt(fleet: WorkerFleet) -> None:
    """``max_new_tokens: 0`` on the emulated worker: nothing generated, the prompt cached for the next request."""
    url = fleet.urls("small")[0]
    text = long_text()
    first = httpx.post(url + "/generate", json={"text": text, "sampling_params": {"max_new_tokens": 0}}, timeout=30)
    assert first.status_code == 200, first.text
    meta = first.json()["meta_info"]
    assert meta["completion_tokens"] == 0 and first.json()["text"] == "" and meta["cached_tokens"] == 0
    again = httpx.post(url + "/generate", json={"text": text + " more", "sampling_params": {"max_new_tokens": 3}},
                       timeout=30).json()["meta_info"]
    assert again["completion_tokens"] == 3
    assert again["cached_tokens"] == len(text.encode()) // (BLOCK * BYTES_PER_TOKEN) * BLOCK


def test_bad_serve_hybrid_mode_is_named() -> None:
    from rlroute.serve.config import ServeConfigError, parse_config

    with pytest.raises(ServeConfigError, match="serve.hybrid.mode"):
        parse_config({"pools": {"large": {"workers": ["http://127.0.0.1:1"]}, "small": {"workers": ["http://127.0.0.1:2"]}},
                      "hybrid": {"mode": "cascade"}})
