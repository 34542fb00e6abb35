"""The installable package: the wheel's package list, its shipped configs, and a real install.

``conf/`` and ``baselines/suite.yaml`` stay at the repository's top level and ship inside the wheel
(``pyproject.toml`` maps ``rlroute.conf`` and ``rlroute.baselines`` onto them); ``rlroute/paths.py`` finds
them in either place. The slow test builds the wheel, installs it (not editable) into a fresh virtual
environment with the pinned CPU torch, and runs the console script from a folder outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from rlroute import __version__
from rlroute.paths import BASELINE_SUITE, CONF_DIR, IN_CHECKOUT, REPO

TORCH = "2.13.0"  # the pin in pyproject.toml; the machine's local CPU build is 2.13.0+cpu


def setuptools_config() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_package_list_matches_the_source_tree() -> None:
    cfg = setuptools_config()
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "rlroute").rglob("__init__.py")}
    mapped = set(cfg["package-dir"])
    assert set(cfg["packages"]) == on_disk | mapped, (
        "pyproject.toml [tool.setuptools] packages must list every folder of rlroute/ with an __init__.py "
        f"plus the mapped ones; missing {sorted(on_disk | mapped - set(cfg['packages']))}, "
        f"extra {sorted(set(cfg['packages']) - on_disk - mapped)}")
    assert {k: (REPO / v).is_dir() for k, v in cfg["package-dir"].items()} == dict.fromkeys(mapped, True)


def test_checkout_reads_the_top_level_folders() -> None:
    assert IN_CHECKOUT and CONF_DIR == REPO / "conf" and (CONF_DIR / "config.yaml").is_file()
    assert BASELINE_SUITE == REPO / "baselines" / "suite.yaml" and BASELINE_SUITE.is_file()


def run(cmd: list[str], cwd: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist)], tmp_path, 600)
    (wheel,) = dist.glob("rlroute-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"rlroute/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert configs <= names, f"configs missing from the wheel: {sorted(configs - names)}"
    assert {"rlroute/baselines/suite.yaml", "rlroute/py.typed", "rlroute/datasets/registry.yaml"} <= names

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, 300)
    pip, bin_ = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"], venv / "bin"
    run([*pip, f"torch=={TORCH}"], tmp_path, 1200)  # first, as the Makefile does: the local CPU build
    run([*pip, str(wheel)], tmp_path, 1200)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(bin_ / "python"), "-c", "import torch, rlroute, rlroute.paths as p; "
                 "print(torch.__version__, rlroute.__file__, p.CONF_DIR, p.BASELINE_SUITE.is_file(), p.IN_CHECKOUT)"],
                elsewhere, 300).split()
    site = str(venv / "lib")
    assert where[0].startswith(TORCH) and "+cpu" in where[0], f"torch {where[0]}: not the pinned CPU build"
    assert where[1].startswith(site) and where[2].startswith(site), f"not the installed copy: {where}"
    assert where[3:] == ["True", "False"]
    rlroute = str(bin_ / "rlroute")
    assert run([rlroute, "--version"], elsewhere, 120).strip() == f"rlroute {__version__}"
    assert "subcommands:" in run([rlroute, "--help"], elsewhere, 120)
    assert "mt_bench" in run([rlroute, "data", "list"], elsewhere, 120)
    sim = run([rlroute, "sim", "episode_length=64"], elsewhere, 600)
    assert "summary written to" in sim and list((elsewhere / "outputs" / "simulate").glob("*/sim.json"))
    train = run([rlroute, "train", "experiment=tiny"], elsewhere, 600)
    assert "best validation reward" in train, train
    (run_dir,) = (elsewhere / "outputs" / "train" / "tiny").glob("ppo-seed0-*")
    assert {"model.zip", "config.yaml", "metrics.json"} <= {p.name for p in run_dir.iterdir()}
