"""``rlroute tune``: sweeps of ``rlroute train`` on Ray Tune -- a scenario x seed x agent grid, or a
hyper-parameter search (Optuna's TPE through Ray Tune's ``OptunaSearch``, or random) with ASHA early
stopping -- locally with no set-up or on a running Ray cluster (``conf/tune.yaml``). This is the project's
one hyper-parameter search: Hydra's Optuna sweeper (sequential, and pinning optuna < 3, which Ray's searcher
refuses) is not used.

Every trial composes ``conf/train.yaml`` with the command line's overrides plus its own (``scenario=...``,
``seed=...``, ``agent.algo.learning_rate=...``), trains with :func:`rlroute.train.trainer.train_run` into an
ordinary run folder ``<sweep>/<trial>`` and reports each validation (``eval/reward``; ASHA stops the weak
trials early), so ``rlroute eval runs=[...]`` aggregates any of them. With ``logger=wandb`` the trials of one
sweep share a W&B group (the sweep's name). The sweep writes ``sweep.json`` (one row per trial: overrides,
status, best validation reward, run folder) and prints a table and the ``rlroute eval`` command per grid cell.

Ray is an optional dependency (``pip install 'rlroute[ray]'``), imported only here.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rlroute.paths import CONF_DIR

TUNE_KEYS = ("tune.", "hydra.")


def trial_overrides(cfg: DictConfig) -> list[dict[str, Any]]:
    """The grid's trials: one ``{key: value}`` per combination of ``tune.grid`` (``None`` values dropped)."""
    grid = {str(k): list(v) for k, v in cfg.tune.grid.items()}
    for key, values in grid.items():
        if not values:
            raise ValueError(f"tune.grid.{key} must list at least one value, got {values!r}")
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def search_space(cfg: DictConfig) -> dict[str, Any]:
    """``tune.space`` as Ray Tune distributions; errors name the key and what was expected."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in cfg.tune.space.items():
        kind = spec.get("type")
        if kind == "loguniform":
            out[str(key)] = tune.loguniform(float(spec.low), float(spec.high))
        elif kind == "uniform":
            out[str(key)] = tune.uniform(float(spec.low), float(spec.high))
        elif kind == "choice":
            out[str(key)] = tune.choice(list(spec["values"]))
        else:
            raise ValueError(f"tune.space.{key}.type must be loguniform, uniform or choice, got {kind!r}")
    return out


def searcher(cfg: DictConfig) -> Any:
    """The search algorithm of ``tune.search``: Optuna's TPE sampler seeded with ``tune.seed`` (Ray Tune's
    ``OptunaSearch``, at most ``tune.max_concurrent`` trials at once so each suggestion sees the finished
    ones; ``tune.points_to_evaluate`` -- e.g. the current settings -- run first), or random sampling."""
    t = cfg.tune
    if t.search == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        given = t.get("points_to_evaluate")
        points = OmegaConf.to_container(given, resolve=True) if given else []
        assert isinstance(points, list)
        return ConcurrencyLimiter(OptunaSearch(seed=int(t.seed), points_to_evaluate=points or None),
                                  max_concurrent=int(t.max_concurrent))
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=int(t.seed))


def trial_name(params: dict[str, Any]) -> str:
    """A folder name from a trial's overrides, e.g. ``scenario-token_api+seed-1+agent-ppo`` (no ``=`` or
    ``,``: the name goes into ``rlroute eval runs=[...]`` unquoted)."""
    text = "+".join(f"{k.split('.')[-1]}-{v:.4g}" if isinstance(v, float) else f"{k.split('.')[-1]}-{v}"
                    for k, v in params.items() if v is not None)
    return re.sub(r"[^A-Za-z0-9+._-]", "_", text) or "default"


def _override(key: str, value: Any) -> str | None:
    if value is None:
        return None
    return f"{key}={json.dumps(value) if isinstance(value, str) and ' ' in value else value}"


def run_trial(config: dict[str, Any], base: list[str], sweep_dir: str, name: str, metric: str,
              wandb_group: bool) -> None:
    """One trial, inside a Ray worker: compose, train into ``<sweep_dir>/<trial>``, report validations."""
    from hydra import compose, initialize_config_dir
    from ray import tune

    from rlroute.train.trainer import train_run

    params = _unwrap(config)
    overrides = [o for o in (_override(k, v) for k, v in params.items()) if o is not None]
    if wandb_group:
        overrides.append(f"logger.wandb.group={name}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*base, *overrides])
    trial = tune.get_context().get_trial_id()
    run_dir = Path(sweep_dir) / f"{trial_name(params)}-{trial}"

    def report(metrics: dict[str, float]) -> None:
        tune.report({"val_reward": float(metrics.get(metric, float("nan"))),
                     "best_val_reward": float(metrics["eval/best_reward"]),
                     "timesteps": float(metrics["time/total_timesteps"]), "run_dir": str(run_dir)})

    train_run(cfg, run_dir, on_validation=report)


def run_tune(cfg: DictConfig, base: list[str]) -> list[dict[str, Any]]:
    """Run the sweep of ``cfg.tune`` over trials composed from ``base`` overrides; returns one row per trial."""
    import ray
    from ray import tune

    t = cfg.tune
    sweep_dir = Path(str(t.out)).expanduser().resolve() / str(t.name)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if t.address:
        ray.init(address=str(t.address), log_to_driver=False)
    else:
        ray.init(num_cpus=None if t.num_cpus is None else int(t.num_cpus), include_dashboard=False,
                 log_to_driver=False)
    try:
        wandb_group = str(cfg.logger.get("name")) == "wandb"
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=base, sweep_dir=str(sweep_dir), name=str(t.name),
                                 metric=str(t.metric), wandb_group=wandb_group),
            {"cpu": float(t.cpus_per_trial)})
        if t.search == "grid":
            grid = trial_overrides(cfg)
            space: dict[str, Any] = {"params": tune.grid_search(grid)}
            tune_config = tune.TuneConfig(num_samples=1)
        elif t.search in ("optuna", "random"):
            from ray.tune.schedulers import ASHAScheduler

            space = search_space(cfg)
            # Validations a full trial reports: one per eval.freq, the final one, and the warm start's at step 0.
            # ASHA stops a trial when it reaches max_t reports, so max_t is above that count: a trial that runs
            # to the end is never cut before it writes metrics.json.
            rounds = max(1, int(cfg.agent.total_timesteps) // max(1, int(cfg.agent.eval.freq or 1))) + 2
            tune_config = tune.TuneConfig(
                metric="val_reward", mode="max", num_samples=int(t.num_samples), search_alg=searcher(cfg),
                scheduler=ASHAScheduler(max_t=rounds + 1, grace_period=int(t.asha.grace_period),
                                        reduction_factor=float(t.asha.reduction_factor)))
        else:
            raise ValueError(f"tune.search must be grid, optuna or random, got {t.search!r}")
        tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                           run_config=tune.RunConfig(name=str(t.name), storage_path=str(sweep_dir / "ray"),
                                                     verbose=0))
        results = tuner.fit()
    finally:
        ray.shutdown()
    rows = []
    for res in (results[i] for i in range(len(results))):  # ResultGrid: indexable, not iterable
        params = _unwrap(res.config or {})
        last = res.metrics or {}
        # done = train_run returned and wrote its metrics; a trial ASHA stopped (even at its last
        # validation) has none
        full = bool(last.get("run_dir")) and (Path(str(last["run_dir"])) / "metrics.json").is_file()
        rows.append({"params": params, "status": "error" if res.error else "done" if full else "stopped early",
                     "best_val_reward": last.get("best_val_reward"), "timesteps": last.get("timesteps"),
                     "run_dir": last.get("run_dir"), "error": str(res.error) if res.error else None})
    (sweep_dir / "sweep.json").write_text(json.dumps({"search": str(t.search), "base_overrides": base,
                                                      "trials": rows}, indent=2, default=str) + "\n")
    return rows


def _unwrap(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's overrides: the grid nests its combination under ``params``, Optuna samples keys directly."""
    return dict(config.get("params", config))


def eval_commands(rows: list[dict[str, Any]]) -> list[str]:
    """One ``rlroute eval runs=[...]`` per grid cell (the trials that differ only by seed)."""
    cells: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        if row["status"] == "done" and row["run_dir"]:
            key = trial_name({k: v for k, v in row["params"].items() if k != "seed"})
            cells[key].append(str(row["run_dir"]))
    return [f"rlroute eval runs=[{','.join(sorted(dirs))}]  # {key}" for key, dirs in sorted(cells.items())]



@hydra.main(config_path=str(CONF_DIR), config_name="tune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console entry (``rlroute tune``)."""
    from hydra.core.hydra_config import HydraConfig
    from rich.console import Console
    from rich.table import Table

    # optuna (imported by Ray Tune's search package) logs its alembic migrations at INFO under Hydra's root
    # logger: a page of lines that say nothing about the sweep
    logging.getLogger("alembic").setLevel(logging.WARNING)
    base = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(TUNE_KEYS)]
    rows = run_tune(cfg, base)
    table = Table(title=f"rlroute tune {cfg.tune.name} ({cfg.tune.search}, {len(rows)} trials)")
    for col in ("trial", "status", "best val reward", "decisions", "run folder"):
        table.add_column(col, overflow="fold")
    for row in sorted(rows, key=lambda r: -(r["best_val_reward"] or float("-inf"))):
        best = row["best_val_reward"]
        table.add_row(trial_name(row["params"]), row["status"], "" if best is None else f"{best:.4f}",
                      "" if row["timesteps"] is None else f"{int(row['timesteps']):,}", str(row["run_dir"]))
    console = Console()
    console.print(table)
    for line in eval_commands(rows):
        console.print(line, soft_wrap=True, markup=False)
    OmegaConf.save(cfg, Path(str(cfg.tune.out)).expanduser().resolve() / str(cfg.tune.name) / "tune.yaml")
