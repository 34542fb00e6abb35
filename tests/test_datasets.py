"""``rlroute data``: the registry, the loaders' search order, and downloads from a real local HTTP server
(``tests/rangeserver.py`` on 127.0.0.1, stopped by PID): verified download, resume after a cut or from an
earlier run's partial file, a checksum mismatch refused, and the offline import (``--from DIR``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rlroute.datasets import DataMissing, registry, require, resolve
from rlroute.datasets.cli import main as data_main
from rlroute.datasets.fetch import FetchFailed, fetch
from rlroute.datasets.registry import Dataset, RegistryError, parse_registry
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def roots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """The three data roots, each an empty folder of its own."""
    out = {"env": tmp_path / "env", "cache": tmp_path / "xdg" / "rlroute" / "data", "shared": tmp_path / "shared"}
    monkeypatch.setenv("RLROUTE_DATA", str(out["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("RLROUTE_SHARED_DATA", str(out["shared"]))
    return out


def put(root: Path, rel: str, text: str = "x") -> Path:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
    return root / rel


def test_search_order_explicit_env_cache_shared(roots: dict[str, Path], tmp_path: Path) -> None:
    rel = "mooncake/conversation_trace.jsonl"
    for name in ("shared", "cache", "env"):  # each added root takes precedence over the ones before
        put(roots[name], rel)
        assert resolve(rel) == roots[name] / rel
    explicit = put(tmp_path / "mine", "trace.jsonl")
    assert require(explicit) == explicit
    put(roots["cache"], "routellm/mmlu/mmlu_x.csv")
    (roots["env"] / "routellm" / "mmlu").mkdir(parents=True)  # a folder without the files does not count
    assert require("routellm/mmlu", "mmlu_*.csv") == roots["cache"] / "routellm/mmlu"


def test_missing_data_names_the_data_set_and_the_command(roots: dict[str, Path]) -> None:
    from rlroute.workload.prompts import RouteLLMPrompts
    from rlroute.workload.traces import load_trace

    with pytest.raises(DataMissing, match=r"data set 'mooncake' is missing: .*`rlroute data download mooncake`"):
        load_trace("mooncake/conversation_trace.jsonl")
    with pytest.raises(DataMissing, match=r"data set 'mmlu' is missing: routellm/mmlu \(files 'mmlu_\*\.csv'\)"):
        RouteLLMPrompts().conversations("all")
    with pytest.raises(DataMissing, match=r"data file nowhere\.jsonl not found"):
        require("nowhere.jsonl")


def test_loaders_read_from_the_download_folder(roots: dict[str, Path]) -> None:
    from rlroute.workload.traces import load_trace

    rows = [{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]},
            {"timestamp": 1500, "input_length": 10, "output_length": 3, "hash_ids": [3]}]
    put(roots["cache"], "mooncake/conversation_trace.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    trace = load_trace("mooncake/conversation_trace.jsonl")
    assert len(trace) == 2 and trace.path.startswith(str(roots["cache"]))


def test_registry_lists_exactly_the_shared_data_files() -> None:
    reg = registry()
    assert set(reg) == {"mooncake", "azure_code", "mmlu", "mt_bench"}
    paths = [f.path for ds in reg.values() for f in ds.files]
    assert len(paths) == len(set(paths)) == 1 + 1 + 46 + 3
    assert all(f.url.startswith("https://raw.githubusercontent.com/") for ds in reg.values() for f in ds.files)
    if SHARED_DATA.is_dir():  # every file the shared folder holds is in the registry, with its size
        on_disk = {p.relative_to(SHARED_DATA).as_posix(): p.stat().st_size
                   for p in SHARED_DATA.rglob("*") if p.is_file() and p.name != "README.md"}
        assert on_disk == {f.path: f.size for ds in reg.values() for f in ds.files}


@pytest.mark.parametrize(("entry", "match"), [
    ({"files": []}, "field 'description' must be a str"),
    ({"description": "d", "source": "s", "licence": "l", "files": [{"path": "../x", "remote": "x", "size": 1,
                                                                     "sha256": "0" * 64}]}, "relative without"),
    ({"description": "d", "source": "s", "licence": "l", "files": [{"path": "x", "remote": "x", "size": 1,
                                                                     "sha256": "abc"}]}, "64 hex digits"),
])
def test_registry_errors_name_the_field(entry: dict, match: str) -> None:
    with pytest.raises(RegistryError, match=match):
        parse_registry({"toy": entry})


def test_data_import_does_not_load_an_http_client() -> None:
    code = ("import sys, rlroute.datasets, rlroute.datasets.cli, rlroute.workload.traces, rlroute.workload.prompts; "
            "print('httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


# ---- downloads from a local server -------------------------------------------------------------------

PAYLOAD = {"traces/big.bin": bytes(range(256)) * 800, "small.txt": b"a,b\n1,2\n"}  # 204,800 and 8 bytes


def toy(port: int, digests: dict[str, str] | None = None) -> Dataset:
    files = [{"path": f"toy/{name}", "remote": name, "size": len(body),
              "sha256": (digests or {}).get(name, hashlib.sha256(body).hexdigest())}
             for name, body in PAYLOAD.items()]
    return parse_registry({"toy": {"description": "d", "source": "s", "licence": "l",
                                   "url_base": f"http://127.0.0.1:{port}/", "files": files}})["toy"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Path]]]:
    """Start ``tests/rangeserver.py`` over the payload; returns (port, request log). Killed by PID."""
    procs: list[subprocess.Popen[str]] = []

    def start(*flags: str) -> tuple[int, Path]:
        site = tmp_path / "site" / "root"
        for name, body in PAYLOAD.items():
            (site / name).parent.mkdir(parents=True, exist_ok=True)
            (site / name).write_bytes(body)
        proc = subprocess.Popen([sys.executable, "-m", "tests.rangeserver", str(site), *flags], cwd=REPO,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        return int(proc.stdout.readline()), site.parent / "requests.log"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def check(dest: Path) -> None:
    for name, body in PAYLOAD.items():
        assert (dest / "toy" / name).read_bytes() == body
    assert not list(dest.rglob("*.part"))


def test_download_verifies_and_skips_what_is_there(serve: Callable[..., tuple[int, Path]], tmp_path: Path) -> None:
    port, log = serve()
    dest = tmp_path / "dest"
    fetch([toy(port)], dest)
    check(dest)
    assert sorted(log.read_text().splitlines()) == ["/small.txt -", "/traces/big.bin -"]
    fetch([toy(port)], dest)  # verified in place: nothing requested again
    assert len(log.read_text().splitlines()) == 2


def test_resume_after_a_cut_and_from_a_partial_file(serve: Callable[..., tuple[int, Path]], tmp_path: Path) -> None:
    port, log = serve("--cut-after", "50000")
    dest = tmp_path / "dest"
    fetch([toy(port)], dest)  # the first response of each file breaks off after 50,000 bytes
    check(dest)
    asked = log.read_text().splitlines()
    assert "/traces/big.bin -" in asked and "/traces/big.bin bytes=50000-" in asked, asked

    port, log = serve()  # an earlier run left 1,000 bytes
    dest = tmp_path / "dest2"
    (dest / "toy" / "traces").mkdir(parents=True)
    (dest / "toy" / "traces" / "big.bin.part").write_bytes(PAYLOAD["traces/big.bin"][:1000])
    fetch([toy(port)], dest)
    check(dest)
    assert "/traces/big.bin bytes=1000-" in log.read_text().splitlines()


def test_server_ignoring_range_restarts_the_file(serve: Callable[..., tuple[int, Path]], tmp_path: Path) -> None:
    port, _ = serve("--no-range")
    dest = tmp_path / "dest"
    (dest / "toy" / "traces").mkdir(parents=True)
    (dest / "toy" / "traces" / "big.bin.part").write_bytes(b"\0" * 1000)  # garbage that must not survive
    fetch([toy(port)], dest)
    check(dest)


def test_checksum_mismatch_is_refused(serve: Callable[..., tuple[int, Path]], tmp_path: Path) -> None:
    port, _ = serve()
    dest = tmp_path / "dest"
    with pytest.raises(FetchFailed, match=r"toy: toy/small\.txt from http://127\.0\.0\.1:\d+/small\.txt: expected 8 "
                                          r"bytes with sha256 0{64}, got sha256 [0-9a-f]{64}; the file was not kept"):
        fetch([toy(port, {"small.txt": "0" * 64})], dest)
    assert not (dest / "toy" / "small.txt").exists() and not list(dest.rglob("*.part"))


def test_offline_import_from_a_folder(tmp_path: Path) -> None:
    ds = toy(9)  # port 9 (discard): nothing may be fetched over the network
    flat = tmp_path / "copies"  # copies by file name, as a user might have them
    flat.mkdir()
    for name, body in PAYLOAD.items():
        (flat / Path(name).name).write_bytes(body)
    dest = tmp_path / "dest"
    fetch([ds], dest, source_dir=flat)
    check(dest)
    (flat / "small.txt").write_bytes(b"tampered")
    with pytest.raises(FetchFailed, match=r"toy/small\.txt from .*copies/small\.txt: expected 8 bytes"):
        fetch([ds], tmp_path / "dest2", source_dir=flat)
    with pytest.raises(FetchFailed, match=r"no copy in"):
        fetch([ds], tmp_path / "dest3", source_dir=tmp_path / "empty")


@pytest.mark.data
def test_cli_imports_the_shared_copies_and_lists_them(roots: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``rlroute data download all --from ../shared/data``: the registry's size and sha256 of every file
    checked against the project's copies, end to end through the CLI; ``list`` before and after."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA} (set RLROUTE_SHARED_DATA)")
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at 80 columns when not on a terminal
    assert data_main(["list"]) == 0
    before = capsys.readouterr().out
    assert before.count("absent") == 4 and "present in" not in before
    assert data_main(["download", "all", "--from", str(SHARED_DATA)]) == 0
    assert "51 files of mooncake, azure_code, mmlu, mt_bench verified in" in " ".join(capsys.readouterr().out.split())
    assert (roots["env"] / "routellm" / "mmlu" / "mmlu_anatomy.csv").is_file()
    assert data_main(["list"]) == 0
    after = capsys.readouterr().out
    assert after.count(f"present in {roots['env']}") == 4 and "absent" not in after
    assert data_main(["download", "nosuch"]) == 2
