"""The ``rlroute`` console script: ``rlroute <subcommand> [hydra overrides | options]``.

Subcommands are looked up in :data:`COMMANDS` and imported lazily, so ``rlroute --help`` and
``import rlroute`` stay free of torch, wandb and server libraries. Hydra subcommands receive the rest of
the command line as overrides (``key=value``, ``-m`` for multirun).
"""

from __future__ import annotations

import importlib
import sys

from rlroute import __version__

# name -> (module, function, help). Each function takes no arguments and reads sys.argv (Hydra style)
# or takes argv explicitly when its signature has one parameter.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "quickstart": ("rlroute.train.quickstart", "main", "train + evaluate the quickstart policy, write a report"),
    "sim": ("rlroute.eval.simulate", "main", "run a workload through the simulator with any registry policy"),
    "train": ("rlroute.train.cli", "main", "train a PPO routing policy (Hydra; -m for sweeps)"),
    "eval": ("rlroute.eval.cli", "main", "evaluate policies x workloads x seeds, write a report"),
    "baselines": ("rlroute.eval.baselines", "main", "evaluate every baseline, write baselines/results/"),
    "study": ("rlroute.study.cli", "main", "the scenario study: train seeds x test windows, results.json"),
    "train-offline": ("rlroute.offline.trainer", "main", "train a routing policy from a decision log (BC, CQL)"),
    "tune": ("rlroute.train.tune", "main", "sweeps on Ray Tune: scenario x seed x agent grid, or Optuna + ASHA"),
    "export": ("rlroute.export.cli", "main", "export a trained policy to ONNX + manifest"),
    "calibrate": ("rlroute.export.bias", "main", "tune an exported policy's large share on a traffic's val split"),
    "serve": ("rlroute.serve.cli", "main", "run the serving router"),
    "worker": ("rlroute.worker.cli", "main", "run an emulated SGLang-protocol worker"),
    "bench": ("rlroute.bench", "main", "benchmarks (rlroute bench --help)"),
    "ope": ("rlroute.eval.ope", "main", "off-policy evaluation of an exported policy from a decision log"),
    "data": ("rlroute.datasets.cli", "main", "list / download the public data sets the real workloads read"),
}


def _usage() -> str:
    lines = ["usage: rlroute <subcommand> [overrides ...] | rlroute --version", "", "subcommands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Hydra subcommands take key=value overrides and -m for multirun; `rlroute <sub> --help`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"rlroute {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rlroute: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    fn = getattr(importlib.import_module(module), func)
    if name == "bench":
        return int(fn(rest) or 0)
    # Hydra reads sys.argv; present the subcommand as the program name.
    sys.argv = [f"rlroute {name}", *rest]
    result = fn()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
