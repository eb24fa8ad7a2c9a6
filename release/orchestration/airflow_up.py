"""`make up` / `make down`: run Airflow for real on this machine, on the project's configuration.

Four detached processes (each its own process group and session): the API server (UI, REST API and the
execution API the tasks talk to, on 127.0.0.1), the scheduler (LocalExecutor), the DAG processor and the
triggerer; and a fifth beside them, the scoring service (`fraudcd serve` on 127.0.0.1, default port 8000),
which the release DAG's shadow and ramp drive through the state store. The service seeds its card and
merchant history from the event logs, so it is started once they hold transactions (ingest or simulate,
then `fraudcd up` again); its bearer tokens, unless set in the environment, are generated once into
``FRAUDCD_HOME/service/tokens.json`` (0600). Logs and pidfiles of all five are in ``FRAUDCD_HOME/airflow/run``.

Shared secrets: ``FRAUDCD_HOME/airflow/secrets.json`` (0600, written once, temp file then link, reused by
every later `up`) holds the JWT secret every component signs and checks task tokens with
(``[api_auth] jwt_secret``: without one each process invents its own and every task fails with
``Invalid auth token``) and the Fernet key (``[core] fernet_key``). release.orchestration.airflow_env exports both to
every Airflow process it starts; a value set in the environment wins.

Users: ``[core] simple_auth_manager_users`` in airflow.cfg; Airflow generates their passwords into
``FRAUDCD_HOME/airflow/passwords.json`` (0600) when the API server first starts.

Past one machine (``--executor celery --workers N``): the scheduler hands tasks to Celery through Redis (a
``redis-server`` started here on 127.0.0.1 with no persistence, unless ``AIRFLOW__CELERY__BROKER_URL`` names
another broker) and N ``airflow celery worker`` processes run them (one task at a time each, unless
``AIRFLOW__CELERY__WORKER_CONCURRENCY`` says otherwise). The workers of another machine are the same command with
the same configuration. The metadata database and the state store must then be servers every worker reaches
(PostgreSQL URLs in ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` and ``FRAUDCD_STATE_URL``); SQLite is refused. Each
worker here records its own name as the host of the tasks it runs (``worker-N@host``), so a task instance says
which worker ran it even when the workers share a machine.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from pathlib import Path
from typing import Callable

from release.orchestration.airflow_env import SECRETS_FILE, airflow_bin, airflow_env, migrate_airflow_db
from release.core import local_postgres
from release.core.io import atomic_write_text
from release.core.procs import proc_stat
from release.core.settings import paths, state_url

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")  # Airflow's
SERVICE = "scoring-service"  # `fraudcd serve`, started and stopped with them
MANAGED = COMPONENTS + (SERVICE,)
# --executor celery: the broker and the workers (celery-worker-1, celery-worker-2, ...)
REDIS = "redis"
WORKER_PREFIX = "celery-worker-"
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
DEFAULT_REDIS_PORT = 6379
MAX_WORKERS = 16
DEFAULT_SERVICE_PORT = 8000
# the health endpoint's keys -> the component whose log says why it is not healthy
HEALTH = {"metadatabase": "api-server", "scheduler": "scheduler", "triggerer": "triggerer",
          "dag_processor": "dag-processor"}
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
PARSE_WAIT_S = 60.0


class UpError(RuntimeError):
    """`up`/`down` could not do what was asked; ``code`` is the exit code (1 failed, 2 bad input)."""

    def __init__(self, msg: str, code: int = 1):
        super().__init__(msg)
        self.code = code


def airflow_dir() -> Path:
    return paths().home / "airflow"


def run_dir() -> Path:
    return airflow_dir() / "run"


def passwords_file(env: dict[str, str] | None = None) -> Path:
    return Path((env or airflow_env())["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])


# ---- secrets ---------------------------------------------------------------------------------------------

def ensure_secrets(folder: Path | None = None) -> Path:
    """``folder/secrets.json`` (default FRAUDCD_HOME/airflow): made once with a fresh JWT secret and Fernet
    key, mode 0600, written to a temp file and linked into place (two `up`s at once: the first one's
    file stays, the other's is dropped); an existing file is reused as it is."""
    from cryptography.fernet import Fernet

    folder = folder or airflow_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SECRETS_FILE
    if target.exists():
        return target
    tmp = folder / f".{SECRETS_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        data = {"jwt_secret": secrets.token_urlsafe(48), "fernet_key": Fernet.generate_key().decode()}
        os.write(fd, (json.dumps(data, indent=2) + "\n").encode())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, target)  # never replaces a file another `up` linked first
        except FileExistsError:
            pass
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
    return target


def _ensure_private_file(path: Path) -> None:
    """An empty 0600 file where Airflow will write the generated passwords (it appends to what exists, so
    the file keeps this mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)


# ---- processes -------------------------------------------------------------------------------------------

def _is_ours(pid: int, component: str) -> bool:
    """The pid is alive (not a zombie) and is still that component (not a reused pid). Airflow retitles
    its processes (`airflow api_server -- host:...`), so the command line is matched as text."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    if component == SERVICE:
        return b"fraudcd" in text and b" serve " in text + b" "
    if component == REDIS:  # redis retitles itself `redis-server 127.0.0.1:PORT`
        return b"redis-server" in text
    if component.startswith(WORKER_PREFIX):  # Celery retitles its processes `[celeryd: worker-1@host:...]`
        return b"celery" in text
    return b"airflow" in text and (component.encode() in text or component.replace("-", "_").encode() in text)


def _session(leader: int) -> list[int]:
    """Every live process in ``leader``'s session (the component and whatever it started, even in
    process groups of their own)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = proc_stat(int(entry.name))
            if st and st[1] == leader and st[0] not in ("Z", "X"):
                out.append(int(entry.name))
    return out


def _pidfile(component: str) -> Path:
    return run_dir() / f"{component}.pid"


def _log(component: str) -> Path:
    return run_dir() / f"{component}.log"


def _order(component: str) -> tuple[int, str]:
    """Start order: Airflow's components, the workers, the scoring service; the broker first of all."""
    if component == REDIS:
        return (0, "")
    if component.startswith(WORKER_PREFIX):
        return (2, component.removeprefix(WORKER_PREFIX).zfill(3))
    return (1 if component in COMPONENTS else 3, str(MANAGED.index(component)) if component in MANAGED else component)


def _managed() -> list[str]:
    """Every component that may be running: the fixed ones, the broker and the workers with a pidfile."""
    extra = [f.stem for f in run_dir().glob("*.pid") if f.stem == REDIS or f.stem.startswith(WORKER_PREFIX)]
    return sorted(set(MANAGED) | set(extra), key=_order)


def running() -> dict[str, dict]:
    """component -> its pidfile's record, for components alive now; pidfiles of dead processes (or of a
    pid reused by another program) are removed."""
    alive = {}
    for c in _managed():
        f = _pidfile(c)
        try:
            rec = json.loads(f.read_text())
        except FileNotFoundError:
            continue
        except ValueError:
            rec = {}
        if isinstance(rec.get("pid"), int) and _is_ours(rec["pid"], c):
            alive[c] = rec
        else:
            f.unlink(missing_ok=True)
    return alive


def _write_pidfile(component: str, rec: dict) -> None:
    atomic_write_text(json.dumps(rec) + "\n", _pidfile(component))


def _command(component: str, port: int) -> list[str]:
    if component == SERVICE:
        return [str(Path(sys.executable).with_name("fraudcd")), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if component == REDIS:  # a broker for this machine's workers: loopback only, nothing written to disk
        return [redis_bin(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", str(run_dir())]
    if component.startswith(WORKER_PREFIX):
        # no log server per worker (port 8793 would clash on one machine): the API server reads the task logs
        # from the shared log folder
        return [airflow_bin(), "celery", "worker", "--celery-hostname",
                f"worker-{component.removeprefix(WORKER_PREFIX)}@%h", "--skip-serve-logs"]
    cmd = [airflow_bin(), component]
    if component == "api-server":
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
    if component in ("scheduler", "triggerer"):
        # no log server on all interfaces (ports 8793/8794): the API server reads the task logs from
        # the shared log folder on this machine
        cmd += ["--skip-serve-logs"]
    return cmd


def _start(component: str, port: int, env: dict[str, str], record: dict | None = None) -> subprocess.Popen:
    # 0600: the API server prints the generated passwords to its log on first start
    with os.fdopen(os.open(_log(component), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        log.write(f"\n---- fraudcd up: {component} starting at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        log.flush()
        proc = subprocess.Popen(_command(component, port), env=env, cwd=run_dir(), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _write_pidfile(component, {"pid": proc.pid, "component": component, "port": port,
                               "started": time.time(), **(record or {})})
    return proc


def _signal(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop(records: dict[str, dict], timeout_s: float, popens: dict[str, subprocess.Popen] | None = None) -> list[str]:
    """SIGTERM each component (it stops what it started: the scheduler waits for its running tasks), wait
    up to ``timeout_s`` until nothing of its session is left, then SIGKILL the rest of the session.
    Pidfiles removed. Returns the components that needed SIGKILL."""
    leaders = {c: r["pid"] for c, r in records.items()}
    _signal(leaders.values(), signal.SIGTERM)

    def left() -> dict[str, list[int]]:
        for p in (popens or {}).values():
            p.poll()  # reap our own children, so they do not linger as zombies
        return {c: pids for c, leader in leaders.items() if (pids := _session(leader))}

    deadline = time.monotonic() + timeout_s
    while (remaining := left()) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = sorted(remaining, key=_order)
    if remaining:
        _signal([pid for pids in remaining.values() for pid in pids], signal.SIGKILL)
        end = time.monotonic() + 10
        while left() and time.monotonic() < end:
            time.sleep(0.1)
    for c in records:
        _pidfile(c).unlink(missing_ok=True)
    return killed


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except FileNotFoundError:
        return "(no log)\n"


# ---- the API ---------------------------------------------------------------------------------------------

def call_json(url: str, method: str = "GET", body: dict | None = None, tok: str | None = None,
              timeout_s: float = 15.0) -> dict:
    """One JSON call to an Airflow API server or the scoring service (``url`` whole); urllib's errors as they
    come. The one HTTP client of the Airflow glue: `fraudcd up` here (the API server, the service's probe), the
    CLI's REST client (release.orchestration.airflow_api)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"} | (
        {"Authorization": f"Bearer {tok}"} if tok else {})
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read() or b"{}")


def _call(port: int, path: str, method: str = "GET", body: dict | None = None, tok: str | None = None,
          timeout_s: float = 15.0) -> dict:
    """One JSON call to the API server on 127.0.0.1 (``path`` from the root, e.g. ``/auth/token``)."""
    return call_json(f"http://127.0.0.1:{port}{path}", method, body, tok, timeout_s)


def health(port: int, timeout_s: float = 3.0) -> dict | None:
    """`GET /api/v2/monitor/health`, None when the API server does not answer."""
    try:
        return _call(port, "/api/v2/monitor/health", timeout_s=timeout_s)
    except (OSError, ValueError):
        return None


def unhealthy(h: dict | None) -> list[str]:
    """The health keys that are not healthy (all of them when there is no answer)."""
    if h is None:
        return list(HEALTH)
    return [k for k in HEALTH if (h.get(k) or {}).get("status") != "healthy"]


def _port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def users(env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, role) of the simple auth manager's users: ``[core] simple_auth_manager_users`` (airflow.cfg,
    or the environment)."""
    import configparser

    env = env or airflow_env()
    value = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS")
    if value is None:
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.read(Path(env["AIRFLOW_HOME"]) / "airflow.cfg")
        value = cfg.get("core", "simple_auth_manager_users", fallback="")
    out = []
    for item in value.split(","):
        parts = item.strip().split(":")
        if len(parts) >= 2:
            out.append((parts[0], parts[1].lower()))
    return out


def token(port: int, user: str, password: str) -> str:
    """A bearer token from the simple auth manager (`POST /auth/token`)."""
    return _call(port, "/auth/token", "POST", {"username": user, "password": password})["access_token"]


def api(port: int, tok: str, method: str, path: str, body: dict | None = None) -> dict:
    """One REST API call (`/api/v2/...`) with a bearer token; the JSON answer."""
    return _call(port, f"/api/v2/{path}", method, body, tok)


def admin_token(port: int, env: dict[str, str]) -> str:
    admins = [u for u, role in users(env) if role == "admin"]
    if not admins:
        raise UpError("no admin in [core] simple_auth_manager_users (airflow.cfg): cannot unpause the DAGs; "
                      "add one or use --paused", 2)
    pw = json.loads(passwords_file(env).read_text() or "{}")
    return token(port, admins[0], pw[admins[0]])


def _dag_files(folder: Path) -> set[str]:
    """The files of the DAGs folder Airflow parses (its safe-mode heuristic: the text says `airflow` and
    `dag`), relative to the folder."""
    out = set()
    for p in folder.rglob("*.py"):
        if any(part.startswith((".", "__")) for part in p.relative_to(folder).parts):
            continue
        try:
            text = p.read_bytes().lower()
        except OSError:
            continue
        if b"airflow" in text and b"dag" in text:
            out.add(str(p.relative_to(folder)))
    return out


def unpause_dags(port: int, env: dict[str, str], wait_s: float, say: Callable[[str], None]) -> list[str]:
    """Wait (up to ``wait_s``) until the DAG processor has parsed every DAG file once, report import
    errors, then unpause every paused DAG. Returns the DAGs unpaused."""
    tok = admin_token(port, env)
    folder = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    expected = _dag_files(folder)
    deadline = time.monotonic() + wait_s
    while True:
        dags = api(port, tok, "GET", "dags?limit=1000")["dags"]
        errors = api(port, tok, "GET", "importErrors?limit=1000")["import_errors"]
        seen = {d.get("relative_fileloc") for d in dags} | {e.get("filename") for e in errors}
        missing = expected - seen
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    for e in errors:
        last = ((e.get("stack_trace") or "").strip().splitlines() or [""])[-1]
        say(f"warning: import error in {e.get('filename')}: {last}")
    if missing:
        say(f"warning: not parsed within {wait_s:.0f}s: {', '.join(sorted(missing))} (left as they are)")
    done = []
    for d in dags:
        if d.get("is_paused"):
            api(port, tok, "PATCH", f"dags/{urllib.parse.quote(d['dag_id'], safe='')}", {"is_paused": False})
            done.append(d["dag_id"])
    return sorted(done)


# ---- up / down -------------------------------------------------------------------------------------------

def _lock():
    run_dir().mkdir(parents=True, exist_ok=True)
    run_dir().chmod(0o700)
    f = open(run_dir() / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UpError(f"another `fraudcd up` or `fraudcd down` is running on {run_dir()}", 1)
    return f


# ---- the scoring service ---------------------------------------------------------------------------------

def service_tokens_file() -> Path:
    return paths().home / "service" / "tokens.json"


def service_env() -> dict[str, str]:
    """The scoring service's environment: this one, plus a bearer token for every token of the service
    configuration whose variable is not set here, generated once into ``service_tokens_file()`` (0600)
    and reused by every later `up` (a variable set in the environment wins)."""
    from release.serving.service import load_service_config

    cfg = load_service_config()
    wanted = [t.env for t in cfg.auth.tokens if t.env] if cfg.auth.enabled else []
    f = service_tokens_file()
    have = json.loads(f.read_text()) if f.exists() else {}
    new = {e: secrets.token_urlsafe(32) for e in wanted if e not in have and not os.environ.get(e)}
    if new:
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps({**have, **new}, indent=2) + "\n", f)
        os.chmod(f, 0o600)
    env = dict(os.environ)
    env.update({e: os.environ.get(e) or {**have, **new}[e] for e in wanted})
    return env


def service_blocker() -> str | None:
    """Why the scoring service cannot start now, or None: it needs the state store (the project's default
    one is started here, as a pipeline task would; a named one must exist) and transactions in the event
    logs, from which it seeds the card and merchant history."""
    from release.core.config import EventsLocationError
    from release.core.io import partition_days
    from release.state.store import StoreError, engine

    try:
        engine()
    except StoreError as e:
        return str(e)
    try:
        tx = paths().events / "transactions"
        days = partition_days(tx)
    except EventsLocationError as e:  # a URL (FRAUDCD_EVENTS_URL) that cannot be read: said, Airflow still starts
        return str(e)
    if not days:
        return (f"no transactions in {tx} yet (it seeds card and merchant history from them): ingest or simulate, "
                "then `fraudcd up` again")
    return None


def service_health(port: int, timeout_s: float = 2.0) -> dict | None:
    """The service's /healthz answer once it listens: ``{"ok": bool, "version": int}`` (a 503 with ok false
    while it has no production model); None while nothing answers."""
    try:
        return call_json(f"http://127.0.0.1:{port}/healthz", timeout_s=timeout_s)
    except urllib.error.HTTPError as e:
        try:
            return json.loads(e.read() or b"{}")
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def _ensure_service(port: int, alive: dict[str, dict], deadline: float, say: Callable[[str], None]) -> None:
    """Start the scoring service when it is not running and can start, and wait until /healthz answers."""
    rec = alive.get(SERVICE)
    if rec:
        if rec.get("port") != port:
            raise UpError(f"the scoring service already runs on port {rec.get('port')} (pid {rec['pid']}); "
                          f"`fraudcd down` first to move it to {port}", 2)
        say(f"scoring service: already running, http://127.0.0.1:{port}")
        return
    why = service_blocker()
    if why is not None:
        say(f"scoring service: not started: {why}")
        return
    if not _port_free(port):
        raise UpError(f"port {port} on 127.0.0.1 is in use by another program; choose another for the scoring "
                      "service with --service-port (or FRAUDCD_SERVICE_PORT). Airflow is up; `fraudcd down` "
                      "stops it", 2)
    proc = _start(SERVICE, port, service_env())
    while (h := service_health(port)) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            what = (f"exited with code {proc.returncode}" if proc.poll() is not None else
                    "does not answer /healthz in time")
            _stop({SERVICE: {"pid": proc.pid}}, STOP_TIMEOUT_S, {SERVICE: proc})
            raise UpError(f"the scoring service {what} (Airflow is up; `fraudcd down` stops it); the end of "
                          f"{_log(SERVICE)}:\n{tail(_log(SERVICE))}")
        time.sleep(0.5)
    say(f"scoring service: http://127.0.0.1:{port} (tokens: {service_tokens_file()})" + (
        "" if h.get("ok") else "; no production model yet: /score answers 503 until a release is promoted"))


def up_env(port: int, executor: str = "local", redis_port: int = DEFAULT_REDIS_PORT) -> dict[str, str]:
    """The environment of the four components: airflow_env (with the shared secrets) and the API server's
    address, which the scheduler gives the tasks to talk to; with the Celery executor, its broker (this
    machine's redis unless AIRFLOW__CELERY__BROKER_URL is set)."""
    env = airflow_env()
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://127.0.0.1:{port}/execution/")
    env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    env.setdefault("AIRFLOW__API__PORT", str(port))
    env.setdefault("AIRFLOW__API__WORKERS", "1")  # 2 cores: one API worker is plenty for a team's UI
    if executor == "celery":
        env["AIRFLOW__CORE__EXECUTOR"] = EXECUTORS["celery"]
        env.setdefault("AIRFLOW__CELERY__BROKER_URL", f"redis://127.0.0.1:{redis_port}/0")
        env.setdefault("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1")
    return env


def redis_bin() -> str:
    import shutil

    return shutil.which("redis-server") or "redis-server"


def _redacted(url: str) -> str:
    """A database URL without its password, to be printed."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"


def celery_blocker(env: dict[str, str]) -> str | None:
    """Why the Celery executor cannot run with ``env`` (the environment `up` was given), or None: its provider
    installed, its broker (redis-server on this machine unless a broker URL is set), and a metadata database and a
    state store every worker reaches, named in ``env`` (the data folder's own local PostgreSQL listens on a Unix
    socket of this machine only)."""
    from importlib.metadata import PackageNotFoundError, version

    try:  # asked of the installed packages: importing Airflow here would read this process's configuration
        version("apache-airflow-providers-celery")
    except PackageNotFoundError:
        return ("the Celery executor's provider is not installed: pip install -e '.[celery]' (or `make celery-deps`, "
                "which also installs redis-server)")
    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if not conn.startswith("postgresql"):
        return ("the Celery executor runs tasks in workers that may be on other machines: the metadata database "
                "must be PostgreSQL (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg://user:pass@host/db); "
                f"got {_redacted(conn) or 'nothing (the local stores listen on this machine only)'}")
    store = env.get("FRAUDCD_STATE_URL") or "nothing (the local stores listen on this machine only)"
    if not store.startswith("postgresql"):
        return ("the Celery executor runs tasks in workers that may be on other machines: the state store must be "
                "PostgreSQL (FRAUDCD_STATE_URL=postgresql+psycopg://user:pass@host/db); "
                f"got {_redacted(store)}")
    if "AIRFLOW__CELERY__BROKER_URL" not in os.environ and redis_bin() == "redis-server":
        return ("no redis-server on this machine for the Celery broker: `make celery-deps` installs it (Debian's "
                "redis-server), or set AIRFLOW__CELERY__BROKER_URL to a broker of your own")
    return None


def redis_ready(port: int, timeout_s: float = 1.0) -> bool:
    """Whether a redis server answers PING on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _worker_env(env: dict[str, str], component: str) -> dict[str, str]:
    """A worker's environment: the components' own, and its name as the host of the tasks it runs (Airflow
    records ``[core] hostname_callable``'s answer on each task instance)."""
    return {**env, "FRAUDCD_WORKER_NAME": f"worker-{component.removeprefix(WORKER_PREFIX)}@{socket.gethostname()}",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "release.orchestration.airflow_env.worker_hostname"}


def _log_since(component: str, offset: int) -> str:
    try:
        with open(_log(component), "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def choose_stores(asked: str | None, say: Callable[[str], None]) -> str:
    """The data folder's stores for this `up` (release/core/local_postgres.py): ``asked`` (--store), else the
    choice recorded before, else the local PostgreSQL. Choosing PostgreSQL where a SQLite state store holds a
    store moves it there first (every row, the audit log included, one transaction, audited as "store_moved");
    the SQLite file is left as it was, unread from then on. Moving back to SQLite is refused (exit 2). A store
    named in the environment is not touched. Returns the kind."""
    from release.core.settings import sqlite_state_url
    from release.state.store import StoreError, copy_store, os_user, store_revision

    home = paths().home
    try:
        recorded = local_postgres.stores_kind(home)
    except local_postgres.LocalPostgresError as e:
        raise UpError(str(e), 2) from None
    if asked is not None and asked not in local_postgres.KINDS:
        raise UpError(f"--store {asked!r}: allowed: {', '.join(local_postgres.KINDS)}", 2)
    kind = asked or recorded or "postgres"
    if recorded == "postgres" and kind == "sqlite":
        raise UpError(f"this data folder's stores are in its local PostgreSQL ({local_postgres.pgdata(home)}, chosen "
                      f"in {local_postgres.stores_file(home)}); fraud-cd does not move them back to SQLite. Leave "
                      "--store out, or name the stores with FRAUDCD_STATE_URL and AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", 2)
    if kind == recorded:
        return kind
    actor = f"{os_user()} (fraudcd up)"
    if kind == "postgres":
        sqlite = sqlite_state_url(home)
        try:
            if not os.environ.get("FRAUDCD_STATE_URL") and store_revision(sqlite) is not None:
                rows = copy_store(sqlite, local_postgres.url(home, local_postgres.STATE_DB), actor=actor,
                                  reason="fraudcd up: the data folder's stores move to its local PostgreSQL")
                say(f"state store moved from {home / 'state.db'} into the local PostgreSQL: "
                    + ", ".join(f"{t} {n}" for t, n in rows.items() if n) + " rows (the file is left as it was)")
        except (StoreError, local_postgres.LocalPostgresError) as e:
            raise UpError(str(e), 1) from None
        if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in os.environ and (airflow_dir() / "airflow.db").exists():
            say(f"Airflow's run history stays in {airflow_dir() / 'airflow.db'}: its metadata database in the local "
                "PostgreSQL starts empty (Airflow has no copy between databases)")
    local_postgres.record_choice(home, kind, actor, "fraudcd up" + (f" --store {asked}" if asked else ""))
    return kind


def up(port: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, paused: bool = False,
       say: Callable[[str], None] = print, service_port: int | None = None, executor: str = "local",
       workers: int | None = None, redis_port: int | None = None, store: str | None = None) -> None:
    """Start what is not running, wait until healthy, unpause the DAGs, then start the scoring service if it
    can start. Raises UpError. ``port`` None: the running API server's, else DEFAULT_PORT; ``service_port``
    None: the running service's, else DEFAULT_SERVICE_PORT. ``executor`` "celery": also the broker (redis on
    ``redis_port``, default DEFAULT_REDIS_PORT) and ``workers`` Celery workers (default 2)."""
    for name, value in (("--port", port), ("--service-port", service_port), ("--redis-port", redis_port)):
        if value is not None and not 0 < value < 65536:
            raise UpError(f"{name} {value}: not a TCP port", 2)
    if port is not None and port == service_port:
        raise UpError(f"--port and --service-port are both {port}: the API server and the scoring service need "
                      "a port each", 2)
    if timeout_s <= 0:
        raise UpError(f"--timeout {timeout_s}: must be > 0", 2)
    if executor not in EXECUTORS:
        raise UpError(f"--executor {executor!r}: not an executor fraudcd starts; allowed: {', '.join(EXECUTORS)}", 2)
    if executor != "celery" and (workers is not None or redis_port is not None):
        raise UpError("--workers and --redis-port go with --executor celery (the local executor runs tasks in the "
                      "scheduler's own processes)", 2)
    workers = 2 if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        raise UpError(f"--workers {workers!r}: must be an int in [1, {MAX_WORKERS}] (more machines: start "
                      "`airflow celery worker` there with the same configuration)", 2)
    t0 = time.monotonic()
    lock = _lock()
    try:
        ensure_secrets()
        alive = running()
        api_rec = alive.get("api-server")
        if port is None:
            port = api_rec["port"] if api_rec and isinstance(api_rec.get("port"), int) else DEFAULT_PORT
        if redis_port is None:
            redis_port = alive[REDIS]["port"] if REDIS in alive else DEFAULT_REDIS_PORT
        if api_rec and api_rec.get("port") != port:
            raise UpError(f"the API server already runs on port {api_rec.get('port')} (pid {api_rec['pid']}); "
                          f"`fraudcd down` first to move it to {port}", 2)
        if api_rec and api_rec.get("executor", "local") != executor:
            raise UpError(f"Airflow already runs with --executor {api_rec.get('executor', 'local')} (API server pid "
                          f"{api_rec['pid']}); `fraudcd down` first to switch to {executor}", 2)
        if executor == "celery" and (why := celery_blocker(dict(os.environ))):
            raise UpError(why, 2)
        own_broker = executor == "celery" and "AIRFLOW__CELERY__BROKER_URL" not in os.environ
        worker_names = [f"{WORKER_PREFIX}{i}" for i in range(1, workers + 1)] if executor == "celery" else []
        have = sorted((c for c in alive if c.startswith(WORKER_PREFIX)), key=_order)
        if set(have) - set(worker_names):
            raise UpError(f"{len(have)} Celery workers run ({', '.join(have)}); `fraudcd down` first to run "
                          f"{workers}", 2)
        wanted = ([REDIS] if own_broker else []) + list(COMPONENTS) + worker_names
        svc = alive.get(SERVICE)
        if service_port is None:
            service_port = svc["port"] if svc and isinstance(svc.get("port"), int) else DEFAULT_SERVICE_PORT
        if service_port == port:
            raise UpError(f"the scoring service's port would be the API server's ({port}); choose another with "
                          "--service-port (or FRAUDCD_SERVICE_PORT)", 2)
        if "api-server" not in alive and not _port_free(port):
            raise UpError(f"port {port} on 127.0.0.1 is in use by another program; choose another with --port "
                          "(or FRAUDCD_AIRFLOW_PORT)", 2)
        if own_broker and REDIS not in alive and not _port_free(redis_port):
            raise UpError(f"port {redis_port} on 127.0.0.1 is in use by another program; choose another for the "
                          "Celery broker with --redis-port, or set AIRFLOW__CELERY__BROKER_URL to a broker of your "
                          "own", 2)
        # what was asked is checked: now the stores (the local PostgreSQL starts here when it is the choice)
        kind = choose_stores(store, say)
        env = up_env(port, executor, redis_port)
        _ensure_private_file(passwords_file(env))
        if all(c in alive for c in wanted) and not unhealthy(health(port)):
            say("Airflow is already up and healthy")
            _ensure_service(service_port, alive, t0 + timeout_s, say)
            say(f"Airflow UI: http://127.0.0.1:{port}")
            return
        migrate_airflow_db(env)
        started: dict[str, subprocess.Popen] = {}
        deadline = t0 + timeout_s
        try:
            if own_broker and REDIS not in alive:
                started[REDIS] = _start(REDIS, redis_port, env)
                while not redis_ready(redis_port):
                    if started[REDIS].poll() is not None or time.monotonic() > deadline:
                        raise UpError(f"redis-server did not answer on 127.0.0.1:{redis_port}; the end of "
                                      f"{_log(REDIS)}:\n{tail(_log(REDIS))}")
                    time.sleep(0.2)
            offsets = {c: _size(_log(c)) for c in worker_names}
            for c in COMPONENTS:
                if c not in alive:
                    started[c] = _start(c, port, env, {"executor": executor} if c == "api-server" else None)
            for c in worker_names:
                if c not in alive:
                    started[c] = _start(c, port, _worker_env(env, c))
            say(f"started {', '.join(started) or 'nothing'}" + (f"; already running: {', '.join(alive)}"
                                                                  if alive else ""))
            h = None
            while True:
                dead = [c for c, p in started.items() if p.poll() is not None]
                if dead:
                    c = dead[0]
                    raise UpError(f"{c} exited with code {started[c].returncode} while starting; the end of "
                                  f"{_log(c)}:\n{tail(_log(c))}")
                h = health(port)
                bad = unhealthy(h)
                # a Celery worker is ready once it says so (Airflow's health endpoint does not cover workers)
                waiting = [c for c in worker_names if c in started and " ready." not in _log_since(c, offsets[c])]
                if not bad and not waiting:
                    break
                if time.monotonic() > deadline:
                    if bad:
                        what = "the API server does not answer" if h is None else "not healthy: " + ", ".join(bad)
                        logs = sorted({HEALTH[k] for k in bad}, key=COMPONENTS.index) if h else ["api-server"]
                    else:
                        what, logs = "workers not ready: " + ", ".join(waiting), waiting
                    raise UpError(f"Airflow is not healthy after {timeout_s:.0f}s ({what})\n" + "".join(
                        f"---- the end of {_log(c)}:\n{tail(_log(c))}" for c in logs))
                time.sleep(1)
        except BaseException:
            if started:
                recs = {c: {"pid": p.pid} for c, p in started.items()}
                _stop_in_order(recs, STOP_TIMEOUT_S, started)
                say(f"stopped what this `up` started: {', '.join(started)}")
            raise
        say(f"healthy after {time.monotonic() - t0:.0f}s: metadatabase, scheduler, triggerer, dag_processor"
            + (f"; {len(worker_names)} Celery workers ready (broker: "
               f"{_redacted(env['AIRFLOW__CELERY__BROKER_URL'])})" if worker_names else ""))
        _ensure_service(service_port, alive, max(deadline, time.monotonic() + 60), say)
        if not paused:
            try:
                done = unpause_dags(port, env, min(PARSE_WAIT_S, max(10.0, deadline - time.monotonic())), say)
            except (OSError, ValueError, KeyError) as e:  # the REST API refused or failed: Airflow stays up
                raise UpError(f"Airflow is up (http://127.0.0.1:{port}) but unpausing the DAGs failed: {e!r}; "
                              "unpause them in the UI, or `fraudcd down`", 1) from e
            say(f"unpaused: {', '.join(done)}" if done else "no paused DAG to unpause")
        say(f"Airflow UI: http://127.0.0.1:{port}")
        say("users: " + ", ".join(f"{u} ({r})" for u, r in users(env)))
        say(f"passwords: {passwords_file(env)}")
        say(f"stores ({kind}): Airflow's metadata {_redacted(env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'])}; the state "
            f"store {_redacted(env.get('FRAUDCD_STATE_URL') or state_url())}")
        say(f"logs and pidfiles: {run_dir()}")
        say("stop: fraudcd down (make down)")
    finally:
        lock.close()


def _stop_in_order(records: dict[str, dict], timeout_s: float,
                   popens: dict[str, subprocess.Popen] | None = None) -> list[str]:
    """``_stop`` everything but the broker, then the broker: Celery workers finish and acknowledge their tasks
    while it still answers."""
    first = {c: r for c, r in records.items() if c != REDIS}
    killed = _stop(first, timeout_s, popens) if first else []
    if REDIS in records:
        killed += _stop({REDIS: records[REDIS]}, timeout_s, popens)
    return killed


def down(timeout_s: float = STOP_TIMEOUT_S, say: Callable[[str], None] = print) -> None:
    """Stop every running component, the scoring service included (SIGTERM, then SIGKILL after ``timeout_s``);
    nothing running is fine."""
    if not run_dir().exists():
        say("Airflow is not running (nothing was started here)")
        _stop_local_postgres(timeout_s, say)
        return
    lock = _lock()
    try:
        alive = running()
        if not alive:
            say(f"Airflow is not running (no live process in {run_dir()})")
        else:
            killed = _stop_in_order(alive, timeout_s)
            say(f"stopped {', '.join(sorted(alive, key=_order))}" + (
                f" (killed after {timeout_s:.0f}s: {', '.join(killed)})" if killed else ""))
        _stop_local_postgres(timeout_s, say)
    finally:
        lock.close()


def _stop_local_postgres(timeout_s: float, say: Callable[[str], None]) -> None:
    """Last: the data folder's local PostgreSQL, once nothing that `up` started uses it (a command run later
    starts it again when it needs the store)."""
    if local_postgres.stop(paths().home, timeout_s):
        say(f"stopped the local PostgreSQL ({local_postgres.pgdata(paths().home)})")
