"""Where the code runs from and where its data folder is: the one definition that ``settings`` (every path and
table) and ``io`` (the input cache under the data folder) both use; ``io`` cannot import ``settings``, which
resolves the event logs' location through ``io``.

- ``FRAUDCD_HOME``: the data folder. Default: ``<project>/var`` in a checkout; ``$XDG_DATA_HOME/fraud-cd``
  (``~/.local/share/fraud-cd``) when the package is installed from a wheel, so nothing is ever written inside
  site-packages.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def in_checkout() -> bool:
    """True when the code runs from the project's own tree (a clone, an editable install), not from a wheel."""
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "release" / "core").is_dir()


def default_home() -> Path:
    if in_checkout():
        return PROJECT_ROOT / "var"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "fraud-cd"


def data_home() -> Path:
    """``FRAUDCD_HOME``, resolved, else ``default_home()``."""
    return Path(os.environ.get("FRAUDCD_HOME") or default_home()).resolve()
