"""Where rlroute's own files are: the repository root and the one Hydra config folder.

``conf/`` sits at the repository root next to ``rlroute/`` (an editable install reads it there); every
module that composes or reads a config takes :data:`CONF_DIR` from here, so moving the configs (e.g. into
the package, for a wheel) is a change to this file.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"  # absolute: Hydra reads a relative config_path as a module path

__all__ = ["CONF_DIR", "REPO"]
