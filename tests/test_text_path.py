"""One text path (issue 12, deliverable 2): for every shipped workload, the request block the env extracts
from a workload request is bit-identical to the one the router extracts from the body a client sends for it
(:func:`rlroute.workload.client.client_body`, what the replay client and the parity bench send)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from rlroute.bench.parity import _body as parity_body
from rlroute.bench.replay import load_requests, request_body
from rlroute.features import SCHEMA, FeatureExtractor
from rlroute.features import text as text_mod
from rlroute.paths import CONF_DIR
from rlroute.serve.intake import SessionTable, client_request
from rlroute.types import Request
from rlroute.worker.tokens import count_tokens
from rlroute.workload.client import SESSION_HEADER, client_body, client_tail, client_text, client_tokens

WORKLOADS = sorted(p.stem for p in (CONF_DIR / "workload").glob("*.yaml"))
SHARED_PATHS = ("routellm/", "mooncake/", "azure_llm/")  # config paths that live under ../shared/data
N = 60


def _requests(name: str, n: int) -> list[Request]:
    return load_requests([f"workload={name}"], "all", n, 7)


def _clear_memos() -> None:
    """Both sides compute their blocks from scratch (the process memos key on content)."""
    importlib.import_module("rlroute.features.extract")._BLOCK_MEMO.clear()
    text_mod._CUES_MEMO.clear()


@pytest.mark.parametrize("name", WORKLOADS)
def test_env_and_router_request_blocks_are_bit_identical(name: str, request: pytest.FixtureRequest) -> None:
    if name == "replay":
        pytest.skip("workload=replay needs a decision log (workload.path): tested in tests/test_replay_twin.py")
    if any(p in (CONF_DIR / "workload" / f"{name}.yaml").read_text() for p in SHARED_PATHS):
        request.getfixturevalue("shared_data")  # skips with a clear message when ../shared/data is absent
    reqs = _requests(name, N)
    fx = FeatureExtractor()
    _clear_memos()
    env = np.stack([fx.request_block(r) for r in reqs])
    _clear_memos()
    table = SessionTable()
    served = []
    for r in reqs:
        body, headers = request_body(r, stream=False, caps=True)  # the replay client's body (HTTP arm, fidelity)
        assert parity_body(r) == client_body(r) and body["text"] == client_body(r)[0]["text"]  # the parity bench's
        c = client_request(r.id, r.arrival, body["text"], None, body["sampling_params"]["max_new_tokens"], 64, table,
                           headers.get(SESSION_HEADER))
        served.append(fx.request_block(c))
    router = np.stack(served)
    diff = np.flatnonzero((env != router).any(axis=0))
    assert diff.size == 0, f"{name}: features differ: {[SCHEMA.names[i] for i in diff[:10]]}"
    # not vacuous: the text dims carry content and the lengths are what the client sends
    assert np.abs(env[:, : text_mod.TEXT_DIMS]).sum(axis=1).min() > 0
    for r in reqs[:10]:
        assert text_mod.prompt_tokens(r) == count_tokens(client_text(r))


def test_trace_context_is_exactly_the_traces_length(shared_data: object) -> None:
    """mmlu_mooncake: the client sends the trace's context as filler and the question as its newest message;
    the env counts the whole text (was the question alone: request.input_tokens 0.26 vs 0.78 served)."""
    col = SCHEMA.names.index("request.input_tokens")
    fx = FeatureExtractor()
    for r in _requests("mmlu_mooncake", 40):
        text = client_text(r)
        assert r.prompt and text.endswith(r.prompt) and r.context_tokens > 0
        if count_tokens(r.prompt) <= r.input_len:
            assert count_tokens(text) == r.input_len
        assert fx.request_block(r)[col] == pytest.approx(SCHEMA.features[col].apply(r.input_len), abs=1e-6)


def _req(i: int, blocks: tuple[int, ...], n: int, prompt: str | None = None, context: int = 0,
         bs: int = 4) -> Request:
    return Request(id=i, arrival=0.0, input_len=n, output_len=4, blocks=blocks, block_size=bs, prompt=prompt,
                   context_tokens=context)


def test_filler_keeps_lengths_and_prefix_structure() -> None:
    a, b = client_text(_req(1, (11, 12, 13 << 60), 10)), client_text(_req(2, (11, 12, 9 << 60), 12))
    assert count_tokens(a) == 10 and count_tokens(b) == 12  # 4 ASCII bytes per pseudo-token
    assert a[:32] == b[:32] and a[32:40] != b[32:40]  # equal leading blocks, equal leading text
    assert client_text(_req(3, (), 3, prompt="real text")) == "real text"
    # a trace's context, then the question; past the blocks, filler unique to the request
    t = client_text(_req(4, (11,), 16, prompt="question?", context=6))
    assert t == a[:16] + f"r{4:015x}"[:8] + "question?" and client_tokens(_req(4, (11,), 16, "question?", 6)) == 9


@pytest.mark.parametrize("chars", [0, 1, 7, 16, 33, 100, 4096])
def test_tail_is_the_texts_tail_without_building_it(chars: int) -> None:
    rng = np.random.default_rng(chars)
    for k in range(20):
        blocks = tuple(int(x) for x in rng.integers(0, 2**63, int(rng.integers(0, 6))))
        prompt = None if k % 3 == 0 else "Ünïcode q?" * int(rng.integers(0, 5))
        r = _req(k, blocks, int(rng.integers(1, 40)), prompt, int(rng.integers(0, 30)), bs=int(rng.integers(1, 9)))
        full = client_text(r)
        assert client_tail(r, chars) == (full[-chars:] if chars else "")
        assert client_tokens(r) == count_tokens(full)
