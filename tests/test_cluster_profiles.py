"""Serving-profile files and their loader: format validation, measured-over-estimate preference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from rlroute.cluster.profiles import (
    PROFILE_DIR,
    STATUS_PREFERENCE,
    ProfileError,
    chunk_pairs,
    load_profile,
    parse_profile,
)

SMALL = "qwen3-4b__h100"
LARGE = "qwen3-235b-a22b-fp8__h100x8"


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


def test_without_extended_block_the_model_is_exactly_four_term(tmp_path: Path) -> None:
    raw = yaml.safe_load((PROFILE_DIR / f"{SMALL}.measured.yaml").read_text())
    raw.pop("step_time_attn")
    path = tmp_path / "plain.measured.yaml"
    path.write_text(yaml.safe_dump(raw))
    p = parse_profile(path)
    assert p.ext is None
    for shape in [(0, 1, 1024), (8192, 0, 0), (512, 32, 32768)]:
        pp, d, c = shape
        assert p.step_time(*shape) == p.a + p.b * pp + p.c * d + p.d * c
    assert p.prefill_time(20000) == 3 * p.a + p.b * 20000


@pytest.mark.parametrize(("stem", "kind"), [(SMALL, "attn"), ("qwen3-8b__h100", "attn"),
                                            ("qwen3-30b-a3b__h100", "moe"), (LARGE, "moe")])
def test_measured_profiles_carry_an_extended_block(stem: str, kind: str) -> None:
    p = load_profile(stem)
    blk = yaml.safe_load(Path(p.path).read_text())[f"step_time_{kind}"]
    assert p.ext is not None and p.ext.kind == kind
    assert (p.ext.a, p.ext.b, p.ext.c, p.ext.d, p.ext.f, p.ext.g) == tuple(blk["coeffs"][k] for k in "abcdfg")
    assert p.ext.e == blk["coeffs"].get("e", 0.0) and p.ext.num_experts == blk.get("num_experts", 0)
    # attention is quadratic in a prompt's chunk; a packed chunk of 8 prompts attends 8x fewer pairs
    assert p.ext.f > 0 and 0 < p.ext.g < p.ext.f
    quad = p.step_time(8192, 0, 0) - p.step_time(8192, 0, 0, prefill_pairs=0.0)
    assert quad == pytest.approx(p.ext.f * 8192 * 8193 / 2, rel=1e-9)
    assert p.step_time(8192, 0, 0, prefill_pairs=8 * chunk_pairs(1024)) < p.step_time(8192, 0, 0)
    # idle prefill: one step per chunk, the second chunk attends to the first (g per pair)
    chunk = p.chunked_prefill_tokens
    want = p.step_time(chunk, 0, 0) + p.step_time(100, 0, 0, prefill_pairs=chunk_pairs(100), prefix_pairs=100 * chunk)
    assert p.prefill_time(chunk + 100) == pytest.approx(want, rel=1e-12)


def test_chunk_pairs_counts_causal_query_key_pairs() -> None:
    assert chunk_pairs(1) == 1 and chunk_pairs(4) == 10  # 1 + 2 + 3 + 4


def test_g_defaults_to_f(tmp_path: Path) -> None:
    raw = yaml.safe_load((PROFILE_DIR / f"{SMALL}.measured.yaml").read_text())
    raw["step_time_attn"]["coeffs"].pop("g")
    path = tmp_path / "nog.measured.yaml"
    path.write_text(yaml.safe_dump(raw))
    ext = parse_profile(path).ext
    assert ext is not None and ext.g == ext.f == raw["step_time_attn"]["coeffs"]["f"]


def _large_raw() -> dict:
    return yaml.safe_load((PROFILE_DIR / f"{LARGE}.derived.yaml").read_text())


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["step_time_moe"].pop("num_experts"), "step_time_moe.num_experts"),
    (lambda r: r["step_time_moe"].__setitem__("top_k", 999), "step_time_moe.top_k"),
    (lambda r: r["step_time_moe"]["coeffs"].pop("e"), "step_time_moe.coeffs.e is missing"),
    (lambda r: r["step_time_moe"]["coeffs"].__setitem__("e", -1.0), "step_time_moe.coeffs.e must be a number >= 0"),
    (lambda r: r["step_time_moe"]["coeffs"].__setitem__("h", 1.0), "unknown keys"),
    (lambda r: r["step_time_moe"].pop("source"), "step_time_moe.source"),
    (lambda r: r.__setitem__("step_time_moe", [1, 2]), "step_time_moe must be a mapping"),
    (lambda r: r.__setitem__("step_time_attn", {"source": "x", "coeffs": {}}), "at most one extended"),
])
def test_malformed_extended_block_names_file_and_field(tmp_path: Path, edit, message: str) -> None:
    raw = _large_raw()
    edit(raw)
    path = tmp_path / "bad.derived.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError, match=message) as err:
        parse_profile(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("mib", "tp", "want"), [(81559, 1, 0.835), (81559, 4, 0.824), (81559, 8, 0.818),
                                                  (143771, 4, 0.9)])
def test_sglang_default_mem_fraction_static(mib: int, tp: int, want: float) -> None:
    from rlroute.cluster.profiles.sglang_defaults import sglang_mem_fraction_static

    # reserved = 512 + 8192 x 1.5 + cuda_graph_max_bs x 2 + tp / 8 x 1024 MiB (max_bs 256 below TP4, else 512)
    reserved = 512 + 12288 + (256 if tp < 4 else 512) * 2 + tp / 8 * 1024
    assert sglang_mem_fraction_static(mib, tp) == want == round((mib - reserved) / mib, 3)


def test_kv_capacity_subtracts_the_per_gpu_overhead() -> None:
    prof = load_profile("qwen3-235b-a22b-fp8__h100x4")
    assert prof.overhead_gb_per_gpu == 1.0 and prof.num_gpus == 4
    assert prof.kv_capacity_tokens(0.824) == int(((prof.gpu_memory_gb * 0.824 - 1.0) * 4 - prof.weights_gb) * 1e9
                                                 / prof.kv_bytes_per_token)
    with pytest.raises(ProfileError, match="leaves no KV memory"):
        prof.kv_capacity_tokens(0.5)  # TP4 at the seed's colocated 0.5: 59 GB of weights per GPU do not fit
