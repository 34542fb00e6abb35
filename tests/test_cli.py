"""The console script, the cheap package import and the bench JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlroute import cli
from rlroute.bench import emit


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import rlroute

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"rlroute {rlroute.__version__}\n"
    out = subprocess.run([sys.executable, "-m", "rlroute.cli", "-V"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"rlroute {rlroute.__version__}"


def test_unknown_subcommand_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["no-such-thing"]) == 2
    assert "unknown subcommand 'no-such-thing'" in capsys.readouterr().err


def test_import_is_cheap() -> None:
    code = (
        "import sys, rlroute, rlroute.cli, rlroute.types, rlroute.cluster.base, rlroute.policies.base;"
        "heavy = [m for m in ('torch', 'wandb', 'fastapi', 'uvicorn', 'httpx', 'onnxruntime', 'aiohttp')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_import_rlroute_registers_the_env_without_building_it() -> None:
    """The Gymnasium convention, exactly as a user writes it, in a fresh interpreter: ``import rlroute``
    registers the env by string entry point (nothing heavy imported), ``gymnasium.make`` then builds it."""
    code = (
        "import sys, json\n"
        "import rlroute\n"
        "heavy = [m for m in ('torch', 'rlroute.env', 'rlroute.cluster.sim', 'hydra') if m in sys.modules]\n"
        "import gymnasium\n"
        "env = gymnasium.make('rlroute/Routing-v1', episode_length=4)\n"
        "obs, _ = env.reset(seed=0)\n"
        "steps = [env.step(1)[3] for _ in range(4)]\n"
        "print(json.dumps({'heavy': heavy, 'id': rlroute.ENV_ID, 'shape': list(obs.shape), 'trunc': steps}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"heavy": [], "id": "rlroute/Routing-v1", "shape": [224], "trunc": [False, False, False, True]}


def test_bench_emit_prints_json_last_and_writes_file(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "b.json"
    emit("demo", {"value": 1.5, "unit": "x/s", "raw": [1, 2]}, out=path)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    parsed = json.loads(last)
    assert parsed["value"] == 1.5 and parsed["unit"] == "x/s" and "machine" in parsed
    assert json.loads(path.read_text())["raw"] == [1, 2]


def test_bench_emit_requires_value_and_unit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="'value' and 'unit'"):
        emit("demo", {"value": 1}, out=tmp_path / "x.json")
