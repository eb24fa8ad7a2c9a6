"""Where things live. Everything is derived from two environment variables with embedded defaults:

- ``FRAUDCD_HOME``: the data folder (event logs, snapshots, models, reports, the SQLite state store).
  Default: ``<project>/var``.
- ``FRAUDCD_STATE_URL``: the state store's SQLAlchemy URL. Default: SQLite file in ``FRAUDCD_HOME``.
- ``FRAUDCD_SOURCE``: a column-mapping YAML for a team's own transaction log (see
  ``config/source.example.yaml``); the daily training-set DAG ingests its data interval from it.

Configuration (training workflows, contracts, ramp plan) is YAML in ``<project>/config`` and
``<project>/contracts``; ``FRAUDCD_CONFIG`` points elsewhere. It is read strictly (release/core/config.py: no
duplicate keys, no aliases, no type coercion, only true/false are booleans).

Everything under ``FRAUDCD_HOME`` follows one permission policy (release/core/io.py): files 0640, folders
0750, narrowed by the umask: the owner writes, the owner's group (the people who receive reports) reads,
other users get nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def events(self) -> Path:
        return self.home / "events"

    @property
    def snapshots(self) -> Path:
        return self.home / "snapshots"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def releases(self) -> Path:
        return self.home / "releases"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def traffic(self) -> Path:
        return self.home / "traffic"


def paths() -> Paths:
    home = Path(os.environ.get("FRAUDCD_HOME", PROJECT_ROOT / "var")).resolve()
    return Paths(home=home)


def state_url() -> str:
    url = os.environ.get("FRAUDCD_STATE_URL")
    if url:
        return url
    return f"sqlite:///{paths().home / 'state.db'}"


def config_dir() -> Path:
    return Path(os.environ.get("FRAUDCD_CONFIG", PROJECT_ROOT / "config")).resolve()


def contracts_file() -> Path:
    return Path(os.environ.get("FRAUDCD_CONTRACTS", PROJECT_ROOT / "contracts" / "release.yaml")).resolve()


def code_version() -> str:
    """The package version plus the git commit when the code runs from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("fraud-cd")
    except PackageNotFoundError:  # pragma: no cover - running from a bare tree
        v = "0+unknown"
    head = PROJECT_ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = PROJECT_ROOT / ".git" / ref[5:]
            ref = ref_file.read_text().strip() if ref_file.exists() else ""
        if ref:
            v = f"{v}+g{ref[:10]}"
    except OSError:
        pass
    return v


# How often the release DAG's rollout sensors look at the evidence, unless config/ramp.yaml says
# (``poll_seconds``; release.rollout.ramp.RampPlan validates it with the rest of the plan).
DEFAULT_POLL_SECONDS = 60.0


def rollout_poll_seconds() -> float:
    """The ramp plan's ``poll_seconds``, read without loading the plan's models (the DAG file needs only
    this, and the scheduler parses it every few seconds); the whole plan is validated when the rollout runs."""
    from release.core.config import load_yaml

    path = config_dir() / "ramp.yaml"
    plan = load_yaml(path.read_text(), path) or {}
    value = plan.get("poll_seconds", DEFAULT_POLL_SECONDS) if isinstance(plan, dict) else DEFAULT_POLL_SECONDS
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
        else DEFAULT_POLL_SECONDS
