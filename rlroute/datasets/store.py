"""Where data files are looked for, and the error that says how to get a missing one.

A relative data path (``mooncake/conversation_trace.jsonl``, ``routellm/mmlu``) is looked for, in order:

1. as given, when it is absolute or exists relative to the current folder (an explicit path);
2. under ``$RLROUTE_DATA``;
3. under the cache folder, where ``rlroute data download`` puts files: ``$XDG_CACHE_HOME/rlroute/data``
   (``~/.cache/rlroute/data`` when ``XDG_CACHE_HOME`` is unset);
4. under the project's shared data folder: ``$RLROUTE_SHARED_DATA``, else ``../shared/data`` beside the
   repository.

Nothing here touches the network; importing it imports no HTTP library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rlroute.datasets.registry import Dataset, owner_of
from rlroute.paths import REPO


def cache_dir() -> Path:
    """The XDG cache folder for data: ``$XDG_CACHE_HOME/rlroute/data`` or ``~/.cache/rlroute/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rlroute" / "data"


def shared_data_dir() -> Path:
    """``$RLROUTE_SHARED_DATA``, else ``<repo>/../shared/data`` (the project's read-only copies)."""
    env = os.environ.get("RLROUTE_SHARED_DATA")
    return Path(env).expanduser() if env else REPO.parent / "shared" / "data"


def download_dir() -> Path:
    """Where downloads and imports go: ``$RLROUTE_DATA``, else :func:`cache_dir`."""
    env = os.environ.get("RLROUTE_DATA")
    return Path(env).expanduser() if env else cache_dir()


def data_roots() -> list[Path]:
    """The data roots in search order: ``$RLROUTE_DATA`` (if set), the cache folder, the shared folder."""
    env = os.environ.get("RLROUTE_DATA")
    roots = [Path(env).expanduser()] if env else []
    roots += [cache_dir(), shared_data_dir()]
    return list(dict.fromkeys(roots))


class DataMissing(FileNotFoundError):
    """A data file or folder found in no data root; the message names the data set and the command."""

    def __init__(self, path: str | Path, pattern: str | None = None) -> None:
        self.path = Path(path)
        self.dataset: Dataset | None = owner_of(self.path)
        what = f"{self.path}" + (f" (files {pattern!r})" if pattern else "")
        searched = ", ".join(str(r) for r in data_roots())
        if self.dataset is not None:
            name = self.dataset.name
            how = (f"data set {name!r} is missing: {what} is not under any data root ({searched}). Get it with "
                   f"`rlroute data download {name}` (or, offline, `rlroute data download {name} --from DIR` "
                   "with local copies); `rlroute data list` shows what is where")
        else:
            how = (f"data file {what} not found as given nor under any data root ({searched}); "
                   "`rlroute data list` shows the data sets rlroute knows")
        super().__init__(how)


def resolve(path: str | Path, pattern: str | None = None) -> Path:
    """The first existing location of ``path`` (see the module docstring for the order); for a folder
    with ``pattern``, the first that holds a matching file. When none exists, ``path`` under the first
    root, so a caller that tolerates a missing optional file can still test ``is_file()``."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for root in data_roots():
        cand = root / p
        if cand.exists() and (pattern is None or any(cand.glob(pattern))):
            return cand
    return data_roots()[0] / p


def require(path: str | Path, pattern: str | None = None) -> Path:
    """Like :func:`resolve`, but raise :class:`DataMissing` when no location has it."""
    found = resolve(path, pattern)
    if not found.exists() or (pattern is not None and not any(found.glob(pattern))):
        raise DataMissing(path, pattern)
    return found


@dataclass(frozen=True, slots=True)
class Presence:
    """Where a data set's files are: ``present`` of ``total`` found with the right size, and the roots."""

    present: int
    total: int
    roots: tuple[Path, ...]

    @property
    def complete(self) -> bool:
        return self.present == self.total


def presence(ds: Dataset) -> Presence:
    """How many of ``ds``'s files exist (with their registry size) in some data root, and where."""
    found, roots = 0, []
    for f in ds.files:
        for root in data_roots():
            p = root / f.path
            if p.is_file() and p.stat().st_size == f.size:
                found += 1
                roots.append(root)
                break
    return Presence(found, len(ds.files), tuple(dict.fromkeys(roots)))
