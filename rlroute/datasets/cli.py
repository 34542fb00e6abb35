"""``rlroute data``: the public data sets the real-data workloads read.

Usage::

    rlroute data list                          # each data set: source, licence, size, present or not, where
    rlroute data download mooncake mmlu        # download (resumable, verified) into the cache folder
    rlroute data download all
    rlroute data download mmlu --from DIR      # offline: import local copies, verified the same way
    rlroute data download mmlu --to DIR        # another destination than $RLROUTE_DATA / the cache folder

Loaders look for data in this order: an explicit path, ``$RLROUTE_DATA``, the cache folder
(``$XDG_CACHE_HOME/rlroute/data``), ``../shared/data`` (``$RLROUTE_SHARED_DATA``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rlroute.datasets.registry import Dataset, registry
from rlroute.datasets.store import data_roots, download_dir, presence


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def list_table(datasets: dict[str, Dataset]) -> Table:
    """The ``rlroute data list`` table."""
    table = Table(title="rlroute data sets (search order: " + ", ".join(str(r) for r in data_roots()) + ")")
    for col in ("name", "files", "size", "licence", "source", "workloads", "status"):
        table.add_column(col, overflow="fold")
    for ds in datasets.values():
        where = presence(ds)
        status = ("present in " + ", ".join(str(r) for r in where.roots) if where.complete
                  else f"partial ({where.present}/{where.total})" if where.present else "absent")
        table.add_row(ds.name, str(len(ds.files)), _mb(ds.size), ds.licence, ds.source, ", ".join(ds.workloads),
                      status)
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rlroute data``."""
    parser = argparse.ArgumentParser(prog="rlroute data", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="each data set: source, licence, size, present or not, where")
    get = sub.add_parser("download", help="download (or --from DIR: import) data sets, verified by sha256")
    get.add_argument("names", nargs="+", metavar="NAME", help="data set names, or 'all'")
    get.add_argument("--from", dest="source", type=Path, help="import local copies from this folder instead")
    get.add_argument("--to", type=Path, help="destination root (default: $RLROUTE_DATA, else the cache folder)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    known = registry()
    if args.action == "list":
        console.print(list_table(known))
        return 0
    names = list(known) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in known]
    if unknown:
        console.print(f"rlroute data: unknown data set(s) {unknown}; expected some of {list(known)} or 'all'")
        return 2
    from rlroute.datasets.fetch import FetchFailed, fetch  # the HTTP client only when fetching

    dest = (args.to or download_dir()).expanduser()
    try:
        files = fetch([known[n] for n in names], dest, args.source, console)
    except FetchFailed as exc:
        console.print(f"[red]rlroute data: {exc}[/]", soft_wrap=True)
        return 1
    console.print(f"{len(files)} files of {', '.join(names)} verified in {dest}", soft_wrap=True)
    return 0
