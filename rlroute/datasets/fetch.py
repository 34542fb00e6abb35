"""Getting data sets: resumable HTTP downloads and offline imports, both verified by sha256.

A download writes ``<file>.part`` beside its destination and asks for the rest with an HTTP ``Range``
request when a partial file is there (from an earlier run, or a connection cut in this one: up to
``attempts`` tries per file); a server that ignores the range (200 instead of 206) restarts it. Only a
file whose size and sha256 match the registry is renamed into place; a mismatch deletes the partial
file and raises :class:`ChecksumMismatch`. An import (``--from DIR``) copies local copies the same way.
Files already in place with the right checksum are not fetched again.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from rlroute.datasets.registry import DataFile, Dataset


class ChecksumMismatch(ValueError):
    """A fetched or imported file whose size or sha256 is not the registry's."""


class FetchFailed(RuntimeError):
    """Some data sets could not be fetched; the message has one reason per data set."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified(path: Path, f: DataFile) -> bool:
    """``path`` exists with ``f``'s size and sha256."""
    return path.is_file() and path.stat().st_size == f.size and sha256_of(path) == f.sha256


def _accept(part: Path, dest: Path, f: DataFile, origin: str) -> None:
    """Move ``part`` into place if it is ``f``; else delete it and raise :class:`ChecksumMismatch`."""
    size = part.stat().st_size
    digest = sha256_of(part) if size == f.size else None
    if digest != f.sha256:
        part.unlink()
        got = f"sha256 {digest}" if digest else f"{size} bytes"
        raise ChecksumMismatch(f"{f.path} from {origin}: expected {f.size} bytes with sha256 {f.sha256}, got {got}; "
                               "the file was not kept")
    part.replace(dest)


def _stream(client: httpx.Client, f: DataFile, part: Path, progress: Progress, task: TaskID) -> None:
    """Append the rest of ``f`` to ``part`` (a Range request when ``part`` has bytes already)."""
    have = part.stat().st_size if part.exists() else 0
    if have > f.size:  # not a prefix of this file: start again
        part.unlink()
        progress.advance(task, -have)
        have = 0
    # identity: with a compressed response, Range offsets would count compressed bytes, not the file's
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
    with client.stream("GET", f.url, headers=headers) as resp:
        if resp.status_code == 416 and have == f.size:
            return  # already whole; the checksum decides
        if resp.status_code not in (200, 206):
            raise httpx.HTTPStatusError(f"GET {f.url}: HTTP {resp.status_code}", request=resp.request, response=resp)
        if have and resp.status_code == 200:  # the server ignored the range: start again
            progress.advance(task, -have)
            have = 0
        with open(part, "ab" if have else "wb") as out:
            for block in resp.iter_bytes():  # as it arrives: a cut keeps everything received
                out.write(block)
                progress.advance(task, len(block))


def download_file(client: httpx.Client, f: DataFile, dest: Path, progress: Progress, task: TaskID,
                  attempts: int = 3) -> None:
    """Download ``f`` to ``dest`` (resuming ``dest.part``), verify it, move it into place."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if part.exists():
        progress.advance(task, part.stat().st_size)
    for attempt in range(1, attempts + 1):
        try:
            _stream(client, f, part, progress, task)
            break
        except httpx.TransportError as exc:  # a cut connection: resume from what arrived
            if attempt == attempts:
                raise ConnectionError(f"{f.path}: download from {f.url} failed {attempts} times ({exc!r}); "
                                      f"{part} is kept, run the command again to resume") from exc
    _accept(part, dest, f, f.url)


def import_file(f: DataFile, source: Path, dest: Path) -> None:
    """Copy a local copy of ``f`` to ``dest``, verified like a download."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, part)
    _accept(part, dest, f, str(source))


def local_copy(f: DataFile, folder: Path) -> Path | None:
    """``f`` in ``folder``: at its registry path, or by its file name directly in ``folder``."""
    for cand in (folder / f.path, folder / Path(f.path).name):
        if cand.is_file():
            return cand
    return None


def fetch(datasets: Iterable[Dataset], dest_root: Path, source_dir: Path | None = None,
          console: Console | None = None, client: httpx.Client | None = None) -> list[Path]:
    """Download (or, with ``source_dir``, import) every file of ``datasets`` into ``dest_root``; returns
    the files now in place. A data set stops at its first failure, which is raised after the others ran."""
    console = console or Console()
    own = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0))
    done: list[Path] = []
    errors: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as progress:
            for ds in datasets:
                todo = [f for f in ds.files if not verified(dest_root / f.path, f)]
                task = progress.add_task(f"{ds.name} ({len(ds.files)} files)", total=ds.size,
                                         completed=ds.size - sum(f.size for f in todo))
                try:
                    for f in todo:
                        dest = dest_root / f.path
                        if source_dir is None:
                            download_file(client, f, dest, progress, task)
                        else:
                            src = local_copy(f, source_dir)
                            if src is None:
                                raise FileNotFoundError(f"{f.path}: no copy in {source_dir} (looked for "
                                                        f"{source_dir / f.path} and {source_dir / Path(f.path).name})")
                            import_file(f, src, dest)
                            progress.advance(task, f.size)
                    done += [dest_root / f.path for f in ds.files]
                except (OSError, ValueError, httpx.HTTPError) as exc:
                    errors.append(f"{ds.name}: {exc}")
    finally:
        if own:
            client.close()
    if errors:
        raise FetchFailed("; ".join(errors))
    return done
