"""``rlroute bench <name>``: benchmarks that print one JSON object as their last line and save it.

Each benchmark is a module ``rlroute.bench.<name>`` exposing ``main(argv: list[str]) -> dict``; the
result dict must hold ``value`` (headline figure) and ``unit``; :func:`emit` adds the machine details,
prints the JSON as the last line and writes it to ``bench-results/<name>.json`` (or ``--out``).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

BENCHES = {
    "sim": "simulated routing decisions per second on one core",
    "features": "feature extraction time per request (2k-token prompt)",
    "train": "PPO env steps/s on the real env vs a trivial env",
    "decision": "features + ONNX + guard latency per request",
    "router": "side by side in one run: direct, rlroute serve and sglang-router (added latency, sustained rates)",
    "replay": "open-loop trace replay against an endpoint",
    "workload": "workload materialisation time (cold, warm, reseeded)",
    "fork": "simulator fork time mid-episode; decisions/s of the fork references",
    "parity": "env vs rlroute serve observations and actions: frozen inputs and a timed replay",
    "ope": "rlroute ope's estimate of a candidate vs its on-policy run in the simulator (IPS, SNIPS, DR)",
}


def machine() -> dict[str, Any]:
    """Where a benchmark ran."""
    return {
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def emit(name: str, result: dict[str, Any], out: str | Path | None = None) -> dict[str, Any]:
    """Print ``result`` (with machine and timestamp) as the last JSON line and write it to a file."""
    if "value" not in result or "unit" not in result:
        raise ValueError(f"bench {name!r} result must hold 'value' and 'unit', got keys {sorted(result)}")
    full = {"bench": name, **result, "machine": machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = Path(out) if out else Path("bench-results") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(full, indent=2, default=str) + "\n")
    full["written_to"] = str(path)
    sys.stdout.flush()
    print(json.dumps(full, default=str), flush=True)
    return full


def main(argv: list[str]) -> int:
    """Dispatch ``rlroute bench <name> [args]``."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: rlroute bench <name> [options]\n\nbenchmarks:")
        for k, v in BENCHES.items():
            print(f"  {k:<10} {v}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHES:
        print(f"unknown bench {name!r}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    mod = importlib.import_module(f"rlroute.bench.{name}")
    mod.main(rest)
    return 0
