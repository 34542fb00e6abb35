"""The data set registry: which public files the shipped workloads read, where each is published, its
licence, size and sha256 (``registry.yaml`` beside this module, read once).

A data set is a named group of files (``mooncake``, ``azure_code``, ``mmlu``, ``mt_bench``); each file
has a ``path`` relative to a data root (the layout of ``../shared/data``), the URL it is downloaded from
and the size and sha256 it must have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REGISTRY_FILE = Path(__file__).resolve().parent / "registry.yaml"


class RegistryError(ValueError):
    """A registry file that does not say what is expected (names the file, data set and field)."""


@dataclass(frozen=True, slots=True)
class DataFile:
    """One published file: ``path`` under a data root, ``url`` to fetch it from, its ``size`` and ``sha256``."""

    path: str
    url: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Dataset:
    """A named group of files with its source, licence and the workloads that read it."""

    name: str
    description: str
    source: str
    licence: str
    workloads: tuple[str, ...]
    files: tuple[DataFile, ...]

    @property
    def size(self) -> int:
        """Bytes of all its files."""
        return sum(f.size for f in self.files)


def _field(where: str, entry: Mapping[str, Any], key: str, kind: type) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RegistryError(f"{where}: field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def parse_registry(raw: Any, origin: str = "registry") -> dict[str, Dataset]:
    """Data sets from the registry's mapping ``name -> {description, source, licence, workloads, url_base,
    files: [{path, remote, size, sha256}]}``; every field is checked, errors name the data set and field."""
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{origin}: expected a mapping of data set names, got {type(raw).__name__}")
    out: dict[str, Dataset] = {}
    for name, entry in raw.items():
        where = f"{origin}: data set {name!r}"
        if not isinstance(entry, Mapping):
            raise RegistryError(f"{where}: expected a mapping, got {entry!r}")
        base = str(entry.get("url_base", ""))
        files = []
        for k, f in enumerate(_field(where, entry, "files", list)):
            at = f"{where} files[{k}]"
            if not isinstance(f, Mapping):
                raise RegistryError(f"{at}: expected a mapping, got {f!r}")
            path = _field(at, f, "path", str)
            if PurePosixPath(path).is_absolute() or ".." in PurePosixPath(path).parts:
                raise RegistryError(f"{at}: field 'path' must be relative without '..', got {path!r}")
            digest = _field(at, f, "sha256", str).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise RegistryError(f"{at}: field 'sha256' must be 64 hex digits, got {digest!r}")
            url = str(f["url"]) if "url" in f else base + _field(at, f, "remote", str)
            files.append(DataFile(path, url, int(_field(at, f, "size", int)), digest))
        out[str(name)] = Dataset(
            name=str(name), description=_field(where, entry, "description", str),
            source=_field(where, entry, "source", str), licence=_field(where, entry, "licence", str),
            workloads=tuple(str(w) for w in entry.get("workloads", ())), files=tuple(files))
    return out


@lru_cache(maxsize=1)
def registry() -> dict[str, Dataset]:
    """The shipped registry (``rlroute/datasets/registry.yaml``)."""
    return parse_registry(yaml.safe_load(REGISTRY_FILE.read_text(encoding="utf-8")), str(REGISTRY_FILE))


def owner_of(path: str | Path, datasets: Mapping[str, Dataset] | None = None) -> Dataset | None:
    """The data set holding ``path`` (a registry file, or a folder some of its files sit in), if any."""
    rel = PurePosixPath(Path(path).as_posix())
    for ds in (registry() if datasets is None else datasets).values():
        for f in ds.files:
            fp = PurePosixPath(f.path)
            if fp == rel or rel in fp.parents:
                return ds
    return None
