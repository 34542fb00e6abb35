"""A small synthetic conversation workload with chained prefix blocks, for simulator tests and the
``rlroute bench sim`` fallback when ``../shared/data`` (the Mooncake trace) is absent.

This is not the project's workload layer (``rlroute.workload`` owns that); it only has to give the
simulator Mooncake-like requests: multi-turn sessions whose turn k+1 prompt extends turn k's prompt and
answer, a handful of shared system prompts, Poisson session arrivals. Shapes are ASSUMPTIONS chosen to
resemble the Mooncake conversation trace (mean prompt ~12k tokens, mean output ~340 tokens, 512-token
blocks): system prompt 1-4 blocks, first user turn lognormal(mean ~4k), later turns add the previous
answer plus lognormal(mean ~1.5k) tokens, outputs lognormal(mean ~340) capped at 2000, geometric turns
(mean 3), think time exponential (mean 30 s).
"""

from __future__ import annotations

import numpy as np

from rlroute.types import Request


def _lognormal(rng: np.random.Generator, mean: float, sigma: float) -> float:
    return float(rng.lognormal(np.log(mean) - sigma * sigma / 2, sigma))


def conversation_requests(n: int, rate: float, rng: np.random.Generator, block_size: int = 512,
                          n_system: int = 8, mean_turns: float = 3.0, think_s: float = 30.0,
                          max_input: int = 100_000) -> list[Request]:
    """``n`` requests (sorted by arrival, ids 0..n-1) from sessions arriving at ``rate`` requests/s.

    Args:
        n: number of requests.
        rate: mean request rate (sessions arrive at ``rate / mean_turns``).
        rng: all randomness.
        block_size: tokens per block.
        n_system: shared system prompts (Zipf-like popularity).
        mean_turns: mean turns per session (geometric).
        think_s: mean user think time between turns.
        max_input: cap on prompt length (tokens).
    """
    if n < 1 or rate <= 0:
        raise ValueError(f"conversation_requests: need n >= 1 and rate > 0, got n={n}, rate={rate}")
    next_id = [0]

    def new_ids(k: int) -> list[int]:
        start = next_id[0]
        next_id[0] += k
        return list(range(start, start + k))

    sys_blocks = [new_ids(int(rng.integers(1, 5))) for _ in range(n_system)]
    pop = 1.0 / np.arange(1, n_system + 1)
    pop /= pop.sum()
    rows: list[tuple[float, int, int, tuple[int, ...], int, int, tuple[int, ...]]] = []
    t = 0.0
    session = 0
    while len(rows) < n:
        t += float(rng.exponential(mean_turns / rate))
        s = int(rng.choice(n_system, p=pop))
        full = list(sys_blocks[s])  # ids of the full blocks of the conversation so far
        length = len(full) * block_size
        turns = int(rng.geometric(1.0 / mean_turns))
        at = t
        for k in range(turns):
            length += int(_lognormal(rng, 4000.0 if k == 0 else 1500.0, 0.8)) + 1
            length = min(length, max_input)
            nb = -(-length // block_size)
            if nb > len(full):
                full += new_ids(nb - len(full))
            blocks = tuple(full[:nb])
            out = max(1, min(2000, int(_lognormal(rng, 340.0, 0.9))))
            # the next turn re-sends this prompt and the answer: the last (partial) block changes, and the
            # answer's full blocks get ids now, so the request can carry them (Request.output_blocks)
            lo, hi = length // block_size, (length + out) // block_size
            full = full[:lo] + new_ids(hi - lo)
            rows.append((at, length, out, blocks, session, k, tuple(full[lo:hi])))
            length += out
            at += 0.02 * out + float(rng.exponential(think_s))
        session += 1
    rows.sort(key=lambda r: r[0])
    return [Request(id=i, arrival=r[0], input_len=r[1], output_len=r[2], blocks=r[3], block_size=block_size,
                    session_id=r[4], turn=r[5], output_blocks=r[6]) for i, r in enumerate(rows[:n])]
