"""Where things live. Everything is derived from two environment variables with embedded defaults:

- ``FRAUDCD_HOME``: the data folder (event logs, snapshots, models, reports, the SQLite state store).
  Default: ``<project>/var`` in a checkout; ``$XDG_DATA_HOME/fraud-cd`` (``~/.local/share/fraud-cd``) when the
  package is installed from a wheel, so nothing is ever written inside site-packages.
- ``FRAUDCD_STATE_URL``: the state store's SQLAlchemy URL. Default: the data folder's choice of stores, which
  `fraudcd up` records in ``FRAUDCD_HOME/stores.json`` (a local PostgreSQL started from a wheel, or SQLite:
  release/core/local_postgres.py); with no choice made, a SQLite file in ``FRAUDCD_HOME``.
- ``FRAUDCD_SOURCE``: a column-mapping YAML for a team's own transaction log (see
  ``config/source.example.yaml``); the daily training-set DAG ingests its data interval from it.
- ``FRAUDCD_EVENTS_URL``: where the event logs are read from, when not ``FRAUDCD_HOME/events``: a local folder,
  or an fsspec URL such as ``s3://bucket/fraud/events`` (``gs://``, ``abfs://``: any protocol fsspec has an
  installed implementation for; s3:// needs the ``s3`` extra, ``pip install 'fraud-cd[s3]'``). Unset: the local
  folder. ``paths().events`` is then a ``upath.UPath`` (``/``, ``glob``, ``exists``, ``open`` as on a local path);
  every reader of the event logs reads through it (release/core/io.py: ``list_partitions``, ``file_sha256``,
  the Parquet readers; DuckDB scans their local copies: ``local_copy``, the input cache under
  ``FRAUDCD_HOME/cache/events``, ``FRAUDCD_EVENTS_CACHE_MB`` at most). The writers (`fraudcd
  simulate`, `fraudcd ingest`, the daily DAG's ingest) write a local folder only, each day landing whole by a
  rename: with a URL set they refuse, writing nothing (``release.core.io.local_events``).
  How to reach the storage (endpoint, credentials, region) is fsspec's own configuration, never ours:
  ``FSSPEC_<PROTOCOL>_<KWARG>`` variables (``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_KEY``, ``FSSPEC_S3_SECRET``,
  ``FSSPEC_S3_CLIENT_KWARGS='{"region_name": "eu-west-1"}'``; a value is read as JSON when it parses) or files in
  ``FSSPEC_CONFIG_DIR`` (fsspec.config), or the storage's own (``AWS_ACCESS_KEY_ID``, an instance role). They are
  read when the location is resolved, and every process `fraudcd up` starts (the Airflow components, the Celery
  workers, the scoring service) inherits its environment, so all of them read the same bucket the same way.

Configuration (training workflows, contracts, ramp plan) is YAML in ``<project>/config`` and
``<project>/contracts``; ``FRAUDCD_CONFIG`` points elsewhere. The package carries ``config/`` as
``release/core/defaults`` (a link in the checkout, copied files in a wheel), so the embedded defaults are found in
any install: a checkout, an editable install or a wheel. It is read strictly (release/core/config.py: no
duplicate keys, no aliases, no type coercion, only true/false are booleans).

Everything under ``FRAUDCD_HOME`` follows one permission policy (release/core/io.py): files 0640, folders
0750, narrowed by the umask: the owner writes, the owner's group (the people who receive reports) reads,
other users get nothing.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from release.core import home as _home
from release.core.home import PROJECT_ROOT, data_home

in_checkout, default_home = _home.in_checkout, _home.default_home  # defined in release.core.home, read here too

# The embedded configuration (a link to <project>/config in a checkout; the files themselves in a wheel).
EMBEDDED_CONFIG = Path(__file__).parent / "defaults"


@dataclass(frozen=True)
class Paths:
    home: Path
    events_url: str | None = None  # FRAUDCD_EVENTS_URL

    @property
    def events(self):
        """The event logs: ``FRAUDCD_EVENTS_URL`` resolved (release.core.io.events_location), else
        ``home/events``. A ``pathlib.Path`` for a local folder, a ``upath.UPath`` for an fsspec URL."""
        if not self.events_url:
            return self.home / "events"
        from release.core.io import events_location

        return events_location(self.events_url)

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


# Which names in ``paths().reports`` are reports (``index.html`` and ``<release id>.html``, as analysis.report
# writes them): the only names the report servers (the Airflow plugin, `fraudcd report serve`) give out, matched
# whole (``REPORT_NAME.fullmatch(name)``). No separator, no leading dot (the atomic writes' ``.tmp-*`` files),
# nothing but ``.html``: a path such as ``../state.db`` is never a report.
REPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.html")


def paths() -> Paths:
    return Paths(home=data_home(), events_url=os.environ.get("FRAUDCD_EVENTS_URL") or None)


def state_url() -> str:
    """The state store: ``FRAUDCD_STATE_URL``; else the data folder's choice of stores (release/core/
    local_postgres.py: `fraudcd up` records it, for every process and shell): its local PostgreSQL's
    ``fraudcd_state`` database, started if it is not running; else ``FRAUDCD_HOME/state.db``."""
    url = os.environ.get("FRAUDCD_STATE_URL")
    if url:
        return url
    home = paths().home
    from release.core import local_postgres

    if local_postgres.stores_kind(home) == "postgres":
        return local_postgres.url(home, local_postgres.STATE_DB)
    return sqlite_state_url(home)


def sqlite_state_url(home: Path) -> str:
    """The SQLite state store of a data folder (the default where no other store was chosen)."""
    return f"sqlite:///{home / 'state.db'}"


def config_dir() -> Path:
    return Path(os.environ.get("FRAUDCD_CONFIG") or EMBEDDED_CONFIG).resolve()


def contracts_file() -> Path:
    return Path(os.environ.get("FRAUDCD_CONTRACTS", PROJECT_ROOT / "contracts" / "release.yaml")).resolve()


CONTRACTS_KEPT = "contracts.yaml"  # in a release's folder: the contracts file in force at its evaluation, which judges it


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


# How often the release DAG's rollout task looks at the evidence, unless config/ramp.yaml says
# (``poll_seconds``; release.rollout.ramp.RampPlan validates it with the rest of the plan).
DEFAULT_POLL_SECONDS = 60.0


def state_url_named() -> bool:
    """Whether the state store's URL was named (``FRAUDCD_STATE_URL``), not the project's default."""
    return bool(os.environ.get("FRAUDCD_STATE_URL"))


def alert_webhook() -> str | None:
    """Where every alert is also POSTed as JSON, if anywhere: ``FRAUDCD_ALERT_WEBHOOK``."""
    return os.environ.get("FRAUDCD_ALERT_WEBHOOK") or None


def scoring_token() -> str | None:
    """The bearer token `fraudcd replay` sends to the scoring service: ``FRAUDCD_SCORING_TOKEN``."""
    return os.environ.get("FRAUDCD_SCORING_TOKEN") or None


@dataclass(frozen=True)
class AirflowAPISettings:
    """How the CLI reaches a running Airflow's REST API, and as whom (release.orchestration.airflow_api)."""
    url: str | None  # FRAUDCD_AIRFLOW_URL; None: the API server `fraudcd up` runs here, if it is running
    token: str | None  # FRAUDCD_AIRFLOW_TOKEN: a bearer token issued to the person
    user: str | None  # FRAUDCD_AIRFLOW_USER and FRAUDCD_AIRFLOW_PASSWORD: a login exchanged for a token
    password: str | None


def airflow_api() -> AirflowAPISettings:
    url = os.environ.get("FRAUDCD_AIRFLOW_URL") or None
    if url is not None and not url.startswith(("http://", "https://")):
        from release.core.config import ConfigError

        raise ConfigError(f"FRAUDCD_AIRFLOW_URL={url!r}: give the Airflow API server's address, "
                          "http://host:port or https://host")
    return AirflowAPISettings(url=url, token=os.environ.get("FRAUDCD_AIRFLOW_TOKEN") or None,
                              user=os.environ.get("FRAUDCD_AIRFLOW_USER") or None,
                              password=os.environ.get("FRAUDCD_AIRFLOW_PASSWORD") or None)


@dataclass(frozen=True)
class Waits:
    """How long the release DAG waits for people and for a rollout, in seconds. Bounded on purpose."""
    approval_s: int  # the threshold approval (FRAUDCD_APPROVAL_TIMEOUT_S): unanswered, the release stops
    decision_s: int  # a rollout question (FRAUDCD_DECISION_TIMEOUT_S): unanswered, the candidate is rolled back
    rollout_s: int  # a whole rollout (FRAUDCD_ROLLOUT_TIMEOUT_S): past it the task fails, the deployment stays


WAIT_DEFAULTS = {"FRAUDCD_APPROVAL_TIMEOUT_S": 3 * 24 * 3600, "FRAUDCD_DECISION_TIMEOUT_S": 3 * 24 * 3600,
                 "FRAUDCD_ROLLOUT_TIMEOUT_S": 30 * 24 * 3600}


def _seconds(name: str, environ: Mapping[str, str] | None = None) -> int:
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return WAIT_DEFAULTS[name]
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name} must be a whole number of seconds greater than 0 (default "
                         f"{WAIT_DEFAULTS[name]}); got {raw!r}.")
    return value


def waits(environ: Mapping[str, str] | None = None) -> Waits:
    """The DAG's bounded waits, from the environment (``environ``: another process's; a bad value is an error
    naming the variable)."""
    return Waits(approval_s=_seconds("FRAUDCD_APPROVAL_TIMEOUT_S", environ),
                 decision_s=_seconds("FRAUDCD_DECISION_TIMEOUT_S", environ),
                 rollout_s=_seconds("FRAUDCD_ROLLOUT_TIMEOUT_S", environ))
