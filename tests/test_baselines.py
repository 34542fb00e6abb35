"""The baseline suite file and the workload selection with and without ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlroute.eval.baselines import REPO, load_suite, select_workloads
from rlroute.policies.registry import BASELINES, policy_config


def test_suite_lists_every_baseline_with_a_config() -> None:
    suite = load_suite(REPO / "baselines" / "suite.yaml")
    assert set(suite["policies"]) == set(BASELINES)
    assert all(policy_config(p) is not None for p in suite["policies"])
    assert len(suite["seeds"]) >= 3
    names = {w["name"] for w in suite["workloads"]}
    assert {"mmlu_mooncake", "sharegpt", "azure_code"} <= names
    for wl in suite["workloads"] + suite["fallback"]:
        name = next(o for o in wl["overrides"] if o.startswith("workload=")).split("=", 1)[1]
        assert (REPO / "conf" / "workload" / f"{name}.yaml").exists(), name


def no_data_roots(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Every data root (``$RLROUTE_DATA``, the cache folder, the shared folder) under ``root``."""
    for var, sub in (("RLROUTE_DATA", "data"), ("XDG_CACHE_HOME", "cache"), ("RLROUTE_SHARED_DATA", "shared")):
        monkeypatch.setenv(var, str(root / sub))


def test_fallback_when_shared_data_is_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    suite = load_suite(REPO / "baselines" / "suite.yaml")
    no_data_roots(monkeypatch, tmp_path)
    chosen, notes = select_workloads(suite, None)
    names = [w["name"] for w in chosen]
    assert "mmlu_mooncake" not in names and "azure_code" not in names
    assert "sharegpt" in names and "synthetic" in names
    assert any("data set(s) mmlu, mooncake absent (`rlroute data download mmlu mooncake`)" in n for n in notes)


def test_all_workloads_when_shared_data_is_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rlroute.datasets import registry

    suite = load_suite(REPO / "baselines" / "suite.yaml")
    no_data_roots(monkeypatch, tmp_path)
    (azure,) = registry()["azure_code"].files
    (tmp_path / "cache" / "rlroute" / "data" / azure.path).parent.mkdir(parents=True)
    (tmp_path / "cache" / "rlroute" / "data" / azure.path).write_bytes(b"x" * azure.size)  # the listing checks sizes
    chosen, notes = select_workloads(suite, ["sharegpt", "azure_code"])
    assert [w["name"] for w in chosen] == ["sharegpt", "azure_code"] and notes == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- just a list", "mapping"),
        ("policies: heuristic\nseeds: [0]\nworkloads: []\nepisode_length: 8", "`policies` must be a list"),
        ("policies: [a]\nseeds: [0]\nworkloads: [{name: x}]\nepisode_length: 8", r"workloads\[0\] needs"),
    ],
)
def test_bad_suite_files_are_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_suite(path)
