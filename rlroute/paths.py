"""Where rlroute's own files are: the repository (in a checkout), the Hydra configs and the baseline suite.

``conf/`` and ``baselines/suite.yaml`` sit at the repository's top level; a wheel also ships them inside
the package (``pyproject.toml`` maps the packages ``rlroute.conf`` and ``rlroute.baselines`` to those
folders), so an installed rlroute finds them as ``rlroute/conf`` and ``rlroute/baselines``. Every module
that composes or reads a config takes :data:`CONF_DIR` from here, and nothing else looks for these files.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
"""The repository root in a checkout (editable install or ``pythonpath=.``); ``site-packages`` in a wheel."""


def _shipped(folder: str) -> Path:
    """``rlroute/<folder>`` where a wheel installed it, else ``<repo>/<folder>`` of the checkout."""
    inside = PACKAGE / folder
    return inside if inside.is_dir() else REPO / folder


CONF_DIR = _shipped("conf")  # absolute: Hydra reads a relative config_path as a module path
BASELINE_SUITE = _shipped("baselines") / "suite.yaml"
IN_CHECKOUT = not (PACKAGE / "conf").is_dir()
"""True when running from a checkout (results of ``rlroute baselines`` go to ``<repo>/baselines/results``)."""

__all__ = ["BASELINE_SUITE", "CONF_DIR", "IN_CHECKOUT", "PACKAGE", "REPO"]
