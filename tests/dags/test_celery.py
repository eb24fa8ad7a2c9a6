"""Past one machine, for real: `fraudcd up --executor celery --workers 2` starts a redis-server (the broker), the
four Airflow components on the CeleryExecutor and two `airflow celery worker` processes, with the metadata
database and the state store on PostgreSQL (a server from the pgserver wheel), and the data on an fsspec URL: the
event logs are in an S3 bucket (moto's S3 server, a real HTTP server on loopback), named by FRAUDCD_EVENTS_URL, reached
through fsspec's own FSSPEC_S3_* variables, which `fraudcd up` hands to every worker. The training_set_backfill DAG,
triggered over the REST API, backfills two weeks of training sets (a release cycle's) as day-partitioned mapped
tasks reading the bucket; the task instances (REST API v2, their `hostname`) show both workers ran some; the
snapshots equal, hash for hash and row for row, the daily build's in one process on a local copy of the same
events. The workers read the bucket through the input cache of their FRAUDCD_HOME (release.core.io.local_copy: each
file version downloaded once on this machine, whichever worker asked first; DuckDB scans the copies). `fraudcd down`
leaves no process alive.

`make test` installs what it needs (`make celery-deps`: Debian's redis-server, the `celery` extra)."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import uuid

import pytest

from tests.dags.test_up_down import _alive, _free_port, _fraudcd, _request, _session_members

pytestmark = [pytest.mark.slow, pytest.mark.celery]

MATURITY, HISTORY = 5, 8  # small windows: 3 days a snapshot, so two weeks of snapshots are 16 days of work
AS_OF_DATES = 14  # a biweekly cycle's training sets (a month measured the same, at twice the time: 2026-12-02)
FIRST = dt.date(2026, 1, 1) + dt.timedelta(days=70)  # the first as-of date: 70 days into the world
LAST = FIRST + dt.timedelta(days=AS_OF_DATES - 1)
BUCKET = "fraudcd-celery"  # the event logs: s3://fraudcd-celery/events on moto's S3 server


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port with an empty bucket; yields fsspec's options for it."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "celery-test-key", "secret": "celery-test-secret"}
    s3fs.S3FileSystem(**options).mkdir(BUCKET)
    try:
        yield options
    finally:
        server.stop()


@pytest.fixture(scope="module")
def celery_up(tmp_path_factory, pg_server, s3_server):
    root = tmp_path_factory.mktemp("celery")
    home = root / "home"
    (home / "airflow").mkdir(parents=True)
    # short reaches back (the shortest lookback, a week's merchant fraud rate): each day task reads ~80 partitions
    # instead of ~400, on two cores shared with the rest of the suite
    (root / "pipeline.yaml").write_text(json.dumps(
        {"labels": {"maturity_days": MATURITY}, "training_set": {"history_days": HISTORY},
         "features": {"lookback_days": 31, "risk": [{"rate": "merchant_fraud_rate", "count": "merchant_matured_tx",
                                                     "window_days": 7, "prior_tx": 200}]}}))
    urls = {}
    for what in ("airflow", "state"):
        name = f"{what}_{uuid.uuid4().hex[:10]}"
        pg_server.psql(f"CREATE DATABASE {name};")
        urls[what] = pg_server.get_uri(name).replace("postgresql://", "postgresql+psycopg://")
    port, redis_port = _free_port(), _free_port()
    env = dict(os.environ, FRAUDCD_HOME=str(home), FRAUDCD_PIPELINE=str(root / "pipeline.yaml"),
               FRAUDCD_STATE_URL=urls["state"], AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=urls["airflow"],
               AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "airflow" / "logs"),
               FRAUDCD_EVENTS_URL=f"s3://{BUCKET}/events",
               **{f"FSSPEC_S3_{k.upper()}": v for k, v in s3_server.items()})
    for var in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__CORE__EXECUTOR",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"):
        env.pop(var, None)
    t0 = time.monotonic()
    try:
        # --paused: the daily DAGs stay paused (this world has no day of today); the test unpauses the backfill
        done = _fraudcd(env, "up", "--executor", "celery", "--workers", "2", "--port", str(port), "--redis-port",
                        str(redis_port), "--paused", "--timeout", "240", timeout=420)
        yield home, root, port, redis_port, env, done, time.monotonic() - t0
    finally:  # whatever failed, nothing outlives the tests
        _fraudcd(env, "down", "--timeout", "20")


def _seconds(run: dict) -> float:
    start, end = (dt.datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


def _logs(home) -> str:
    return "".join(f"---- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                   for p in sorted((home / "airflow" / "run").glob("*.log")))


def test_two_weeks_of_training_sets_spread_over_two_celery_workers(celery_up, s3_server, monkeypatch):
    import pandas as pd
    import pyarrow.parquet as pq
    import s3fs

    from simulation.world import WorldConfig, simulate

    home, root, port, redis_port, env, done, took = celery_up
    assert done.returncode == 0, done.stdout + done.stderr + _logs(home)
    print(f"fraudcd up --executor celery --workers 2: healthy in {took:.1f}s")
    said = " ".join(done.stdout.split())
    assert f"2 Celery workers ready (broker: redis://127.0.0.1:{redis_port}/0)" in said, said
    run_dir = home / "airflow" / "run"
    assert {p.stem for p in run_dir.glob("*.pid")} == {"redis", "api-server", "scheduler", "dag-processor",
                                                        "triggerer", "celery-worker-1", "celery-worker-2"}
    # `up` hands the workers its environment: where the event logs are and fsspec's settings to reach them. Not read
    # from /proc/<pid>/environ (Celery's setproctitle overwrites it): the backfill below shows it, reading the
    # bucket (there is no local copy where the workers look, and moto's endpoint is known only from the variables)
    # and naming the URL in the manifests its tasks write
    events_url = f"s3://{BUCKET}/events"

    # the world arrives after `up` (so the scoring service, which seeds from it, stays out of this test): simulated
    # locally (writers stay local), then uploaded to the bucket, where the workers read it
    t0 = time.monotonic()
    local = root / "events"
    simulate(WorldConfig(days=100, tx_per_day=200, n_merchants=25, n_cards=1200, dispute_median_days=2.0,
                         dispute_max_days=5), local)
    s3fs.S3FileSystem(**s3_server).put(str(local), f"{BUCKET}/events", recursive=True)

    base = f"http://127.0.0.1:{port}"
    token = _request(f"{base}/auth/token", {"username": "admin", "password": json.loads(
        (home / "airflow" / "passwords.json").read_text())["admin"]})["access_token"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the DAG processor has parsed the backfill DAG
        try:
            _request(f"{base}/api/v2/dags/training_set_backfill", token=token)
            break
        except OSError:
            time.sleep(1)
    _request(f"{base}/api/v2/dags/training_set_backfill", {"is_paused": False}, token, method="PATCH")
    run = _request(f"{base}/api/v2/dags/training_set_backfill/dagRuns",
                   {"logical_date": None, "conf": {"from_date": FIRST.isoformat(), "to_date": LAST.isoformat()}},
                   token)
    url = f"{base}/api/v2/dags/training_set_backfill/dagRuns/{run['dag_run_id']}"
    state, deadline = run["state"], time.monotonic() + 600
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(2)
        state = _request(url, token=token)["state"]
    took_backfill = time.monotonic() - t0
    assert state == "success", f"the backfill ended {state}\n{_logs(home)}"
    print(f"backfill of {(LAST - FIRST).days + 1} training sets through Celery: {took_backfill:.1f}s "
          "(simulation and upload included)")
    assert not (home / "events").exists()  # the workers read the bucket: there is no local folder to read
    # through one input cache: a copy per file they read, however many tasks on either worker read it
    copies = [f for f in (home / "cache" / "events").glob("*/*") if not f.name.startswith(".tmp-")]
    in_bucket = sum(1 for _ in local.glob("*/day=*/*.parquet"))
    print(f"input cache: {len(copies)} copies of the bucket's {in_bucket} files")
    assert 0 < len(copies) <= in_bucket

    tis = _request(f"{url}/taskInstances?limit=1000", token=token)["task_instances"]
    days = [t for t in tis if t["task_id"] == "build_day"]
    assert len(days) == (LAST - FIRST).days + HISTORY - MATURITY and all(t["state"] == "success" for t in days)
    assert sorted(t["map_index"] for t in days) == list(range(len(days)))  # mapped: one task instance a day
    host = socket.gethostname()
    by_worker = pd.Series([t["hostname"] for t in days]).value_counts().to_dict()
    durations = sorted(t["duration"] for t in days)
    print(f"build_day task instances per worker: {by_worker}; each ran {durations[0]:.1f}..{durations[-1]:.1f}s "
          f"(median {durations[len(durations) // 2]:.1f}s, {sum(durations):.0f}s in all)")
    assert set(by_worker) == {f"worker-1@{host}", f"worker-2@{host}"}, by_worker  # both workers ran some
    others = {t["task_id"]: t for t in tis if t["task_id"] != "build_day"}
    assert {k: t["state"] for k, t in others.items()} == {"plan": "success", "assemble": "success"}
    print(f"plan ran {others['plan']['duration']:.1f}s, assemble {others['assemble']['duration']:.1f}s "
          f"({AS_OF_DATES} snapshots); the DAG run took {_seconds(_request(url, token=token)):.1f}s from start to end")

    # the same dates, built one snapshot at a time in one process (the daily DAG's function), on a local copy of the
    # same events: URL-read snapshots against local-read ones
    from release.orchestration.cycle import build_snapshot

    manifests = {m.parent.name: json.loads(m.read_text()) for m in (home / "snapshots").glob("*/manifest.json")}
    assert sorted(m["config"]["as_of"] for m in manifests.values()) == [
        (FIRST + dt.timedelta(days=i)).isoformat() for i in range(AS_OF_DATES)]
    single = root / "single"
    single.mkdir()
    os.symlink(local, single / "events")
    monkeypatch.delenv("FRAUDCD_EVENTS_URL", raising=False)
    monkeypatch.setenv("FRAUDCD_HOME", str(single))
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(root / "pipeline.yaml"))
    hashes = [build_snapshot(pd.Timestamp(FIRST + dt.timedelta(days=i), tz="UTC")) for i in range(AS_OF_DATES)]
    assert set(hashes) == set(manifests)
    for h in hashes:
        theirs = (single / "snapshots" / h / "manifest.json").read_text()
        mine = json.dumps(manifests[h])
        assert f"{events_url}/transactions" in mine and events_url not in theirs  # where each build read its events
        # equal apart from where the events were read (a label-completeness reason names the folder it looked in)
        assert json.loads(mine.replace(events_url, str(single / "events"))) == json.loads(theirs)
        assert pq.read_table(home / "snapshots" / h / "data.parquet").equals(
            pq.read_table(single / "snapshots" / h / "data.parquet")), h
    assert not any((home / "snapshots" / ".days").glob("*/*.parquet"))  # the day partitions went

    # down: nothing of what up started is left
    leaders = [json.loads(p.read_text())["pid"] for p in run_dir.glob("*.pid")]
    started = set(leaders).union(*(_session_members(pid) for pid in leaders))
    stopped = _fraudcd(env, "down", "--timeout", "20")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "redis" in stopped.stdout and "celery-worker-2" in stopped.stdout
    assert [pid for pid in started if _alive(pid)] == []
    assert list(run_dir.glob("*.pid")) == []


def test_celery_refuses_what_workers_cannot_share(tmp_path):
    """SQLite cannot be shared by workers on other machines: refused before anything starts, saying what to set."""
    env = dict(os.environ, FRAUDCD_HOME=str(tmp_path / "home"),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}")
    env.pop("FRAUDCD_STATE_URL", None)
    r = _fraudcd(env, "up", "--executor", "celery", "--port", str(_free_port()))
    assert r.returncode == 2 and "metadata database must be PostgreSQL" in " ".join(r.stderr.split()), r.stderr
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "postgresql+psycopg://u:secret@127.0.0.1:1/airflow"
    r = _fraudcd(env, "up", "--executor", "celery", "--port", str(_free_port()))
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "state store must be PostgreSQL (FRAUDCD_STATE_URL=" in said, r.stderr
    assert "secret" not in r.stderr  # a URL's password is never printed
    r = _fraudcd(env, "up", "--executor", "threads")
    assert r.returncode == 2 and "allowed: local, celery" in " ".join(r.stderr.split()), r.stderr
    r = _fraudcd(env, "up", "--workers", "3")
    assert r.returncode == 2 and "go with --executor celery" in " ".join(r.stderr.split()), r.stderr
    r = _fraudcd(dict(env, FRAUDCD_STATE_URL="postgresql+psycopg://u:secret@127.0.0.1:1/state"), "up",
                 "--executor", "celery", "--workers", "0")
    assert r.returncode == 2 and "must be an int in [1, 16]" in " ".join(r.stderr.split()), r.stderr
    assert not list((tmp_path / "home" / "airflow" / "run").glob("*.pid"))  # nothing was started
