"""Prefix reuse of ``mmlu_mooncake`` as the replay client sends it: does the question at the end of each body
cost the live workers cache hits that the simulator's trace blocks keep?

An infinite cache (every block seen is kept) over the first ``--n`` requests of the test split (trace
order, no random start): the token hit rate on the simulator's 512-token trace blocks, on the workers'
64-token blocks of the body the client sends (:func:`rlroute.workload.client.client_text`: filler for the
context, then the question), and on the body before schema v4 (filler for the whole prompt, no question).

Usage::

    RLROUTE_SHARED_DATA=/work/shared/data .venv/bin/python experiments/vs_sglang_router/question_reuse.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence

from rlroute.bench.replay import load_requests
from rlroute.worker.tokens import text_blocks
from rlroute.workload.client import client_text


def _hits(blocks: Sequence[int], seen: set[int]) -> int:
    """Leading blocks already in the cache; then the cache holds them all."""
    k = 0
    while k < len(blocks) and blocks[k] in seen:
        k += 1
    seen.update(blocks)
    return k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    reqs = load_requests(["workload=mmlu_mooncake", "workload.arrivals.random_start=false"], "test", a.n, 0)
    seen: dict[str, set[int]] = {"simulator": set(), "client": set(), "before_v4": set()}
    hits = dict.fromkeys(seen, 0)
    for r in reqs:
        hits["simulator"] += _hits(r.blocks[: r.input_len // r.block_size], seen["simulator"]) * r.block_size
        hits["client"] += _hits(text_blocks(client_text(r), 64), seen["client"]) * 64
        bare = dataclasses.replace(r, prompt=None, token_ids=None, cache={})  # all filler, as before v4
        hits["before_v4"] += _hits(text_blocks(client_text(bare), 64), seen["before_v4"]) * 64
    total = sum(r.input_len for r in reqs)
    print(json.dumps({"requests": len(reqs), "prompt_tokens": total,
                      "hit_rate": {k: round(v / total, 4) for k, v in hits.items()}}))


if __name__ == "__main__":
    main()
