"""Serving-profile files and their loader: format validation, measured-over-estimate preference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from rlroute.cluster.profiles import PROFILE_DIR, STATUS_PREFERENCE, ProfileError, load_profile, parse_profile

SMALL = "qwen3-4b__h100"


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_profiles_parse_and_cite_sources(path: Path) -> None:
    prof = parse_profile(path)
    raw = yaml.safe_load(path.read_text())
    assert path.name == f"{prof.name}.{prof.status}.yaml"
    assert all(len(raw["step_time"][k]["source"]) > 20 for k in "abcd")
    assert prof.source


def test_measured_file_is_preferred_over_estimate(tmp_path: Path) -> None:
    assert STATUS_PREFERENCE == ("measured", "derived", "estimate")
    shutil.copy(PROFILE_DIR / f"{SMALL}.estimate.yaml", tmp_path / f"{SMALL}.estimate.yaml")
    assert load_profile(SMALL, tmp_path).status == "estimate"
    raw = yaml.safe_load((tmp_path / f"{SMALL}.estimate.yaml").read_text())
    raw["status"] = "derived"
    raw["step_time"]["a"]["value"] = 0.0061
    (tmp_path / f"{SMALL}.derived.yaml").write_text(yaml.safe_dump(raw))
    assert load_profile(SMALL, tmp_path).a == 0.0061
    raw["status"] = "measured"
    raw["step_time"]["a"]["value"] = 0.0062
    (tmp_path / f"{SMALL}.measured.yaml").write_text(yaml.safe_dump(raw))
    prof = load_profile(SMALL, tmp_path)
    assert (prof.status, prof.a) == ("measured", 0.0062)
    # an explicit status still loads exactly that file
    assert load_profile(f"{SMALL}.estimate", tmp_path).status == "estimate"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["step_time"]["b"].pop("source"), "step_time.b.source"),
    (lambda r: r["step_time"].__setitem__("c", 3), "step_time.c"),
    (lambda r: r["memory"].pop("kv_bytes_per_token"), "kv_bytes_per_token"),
    (lambda r: r.__setitem__("status", "guess"), "status"),
    (lambda r: r["step_time"]["d"].__setitem__("value", -1.0), "step_time.d.value"),
])
def test_malformed_profile_names_file_and_field(tmp_path: Path, edit, message: str) -> None:
    raw = yaml.safe_load((PROFILE_DIR / f"{SMALL}.estimate.yaml").read_text())
    edit(raw)
    path = tmp_path / "bad.estimate.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError, match=message) as err:
        parse_profile(path)
    assert str(path) in str(err.value)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ProfileError, match="qwen3-4b__h100"):
        load_profile("no-such-model__h100")


def test_kv_capacity_follows_mem_fraction_static() -> None:
    prof = load_profile(f"{SMALL}.estimate")
    assert prof.kv_capacity_tokens(0.7) == int((80 * 0.7 - 8.05) * 1e9 / 147456)
    assert prof.kv_capacity_tokens(0.9) > prof.kv_capacity_tokens(0.7)
    with pytest.raises(ProfileError, match="leaves no KV memory"):
        prof.kv_capacity_tokens(0.1)
