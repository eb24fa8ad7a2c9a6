"""The event logs read from an fsspec URL (``FRAUDCD_EVENTS_URL=s3://...``) give what the same logs give read from
a local folder: the same snapshot (hash, manifest, rows), the same features online and offline, the same seed day,
label completeness, replayed requests and monitoring disputes. The storage is moto's S3 server, a real HTTP server
on loopback; the connection comes from fsspec's own variables (``FSSPEC_S3_ENDPOINT_URL``, ``FSSPEC_S3_KEY``, ...),
as in a deployment. Bad configurations (an unknown protocol, a missing implementation, a bucket that does not exist,
an endpoint nobody answers at) and writers pointed at the URL fail with a sentence saying what, where and what is
allowed, and write nothing."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

BUCKET = "fraudcd-events"


@pytest.fixture(scope="module")
def s3(tiny_events):
    """moto's S3 server on a free loopback port, with the tiny world uploaded to s3://fraudcd-events/events.
    Yields (the fsspec options of the server, the filesystem)."""
    import logging

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "test-key", "secret": "test-secret"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(BUCKET)
    fs.put(str(tiny_events), f"{BUCKET}/events", recursive=True)
    fs.invalidate_cache()
    try:
        yield options, fs
    finally:
        server.stop()


@pytest.fixture
def at_url(s3, monkeypatch, home):
    """FRAUDCD_EVENTS_URL at the bucket's copy and fsspec's variables for the server, set as a deployment sets them.
    Returns the URL."""
    options, _ = s3
    url = f"s3://{BUCKET}/events"
    monkeypatch.setenv("FRAUDCD_EVENTS_URL", url)
    for k, v in options.items():
        monkeypatch.setenv(f"FSSPEC_S3_{k.upper()}", v)
    return url


def _events():
    from release.core.settings import paths

    return paths().events


def test_the_setting_gives_a_url_path_and_unset_the_local_folder(at_url, home, monkeypatch):
    from upath import UPath

    events = _events()
    assert isinstance(events, UPath) and not isinstance(events, Path) and str(events) == at_url
    assert events.storage_options["endpoint_url"] == os.environ["FSSPEC_S3_ENDPOINT_URL"]  # fsspec's own settings
    monkeypatch.delenv("FRAUDCD_EVENTS_URL")
    assert _events() == home.resolve() / "events" and type(_events()) is type(Path())
    monkeypatch.setenv("FRAUDCD_EVENTS_URL", f"file://{home}/elsewhere")  # a local URL stays a local path
    assert _events() == home.resolve() / "elsewhere" and isinstance(_events(), Path)


def test_partitions_listed_at_the_url_are_the_local_ones(at_url, tiny, tiny_events, s3):
    from release.core.io import file_sha256, list_partitions, partition_days, relative_name

    _, fs = s3
    events = _events()
    start, end = tiny.cfg.start + dt.timedelta(days=3), tiny.cfg.start + dt.timedelta(days=9)
    for table in ("transactions", "decisions", "disputes"):
        remote, local = (list_partitions(e / table, start, end) for e in (events, tiny_events))
        assert len(remote) == len(local) > 0
        assert [relative_name(f, events) for f in remote] == [relative_name(f, tiny_events) for f in local]
        assert str(remote[0]).startswith(f"{at_url}/{table}/day=")
    assert [file_sha256(f) for f in list_partitions(events / "disputes")] == \
        [file_sha256(f) for f in list_partitions(tiny_events / "disputes")]
    assert partition_days(events / "transactions") == partition_days(tiny_events / "transactions")
    # an in-flight write's temp file, and a partition that arrives later, as a local listing treats them
    day = tiny.cfg.start + dt.timedelta(days=4)
    hidden = f"{BUCKET}/events/transactions/day={day}/.tmp-abc.parquet"
    fs.pipe(hidden, b"not parquet")
    try:
        assert [f.name for f in list_partitions(events / "transactions", day, day + dt.timedelta(days=1))] == \
            ["part-0.parquet"]
        fs.copy(f"{BUCKET}/events/transactions/day={day}/part-0.parquet",
                f"{BUCKET}/events/transactions/day={day}/part-1.parquet")
        assert [f.name for f in list_partitions(events / "transactions", day, day + dt.timedelta(days=1))] == \
            ["part-0.parquet", "part-1.parquet"]  # no stale listing
    finally:
        fs.rm([hidden, f"{BUCKET}/events/transactions/day={day}/part-1.parquet"])


def _same_manifest(remote: dict, local: dict, url: str, folder: Path) -> None:
    """Equal, apart from where the events were read (a label-completeness reason names the folder it looked in)."""
    import json

    assert json.loads(json.dumps(remote).replace(url, str(folder))) == local


def test_a_snapshot_built_from_the_url_is_the_local_one(at_url, tiny, tiny_events, tmp_path):
    from release.data.training_set import build_training_set

    kw = dict(maturity_days=tiny.maturity_days, history_days=tiny.history_days)
    remote = build_training_set(_events(), tmp_path / "url", tiny.as_of, **kw)
    local = build_training_set(tiny_events, tmp_path / "local", tiny.as_of, **kw)
    assert remote.hash == local.hash
    _same_manifest(remote.manifest, local.manifest, at_url, tiny_events)
    assert remote.manifest["rows"] > 1000 and len(remote.manifest["inputs"]) > 40
    assert at_url in remote.manifest["label_completeness"]["delay_distribution"]["reason"]  # read there
    assert pq.read_table(remote.data).equals(pq.read_table(local.data))


def test_a_day_partitioned_build_from_the_url_is_the_local_single_process_one(at_url, tiny, tiny_events, tmp_path):
    from release.data.training_set import (assemble_snapshot, build_day_partition, build_training_set,
                                           plan_snapshot)

    kw = dict(maturity_days=tiny.maturity_days, history_days=tiny.history_days)
    events, snaps = _events(), tmp_path / "url"
    plan = plan_snapshot(events, snaps, tiny.as_of, **kw)
    assert len(plan.days) == tiny.history_days - tiny.maturity_days
    for d in plan.days:
        assert build_day_partition(events, snaps, tiny.as_of, d, plan=plan) is not None
    remote = assemble_snapshot(events, snaps, tiny.as_of, plan=plan)
    local = build_training_set(tiny_events, tmp_path / "local", tiny.as_of, **kw)
    assert remote.hash == local.hash
    _same_manifest(remote.manifest, local.manifest, at_url, tiny_events)
    assert pq.read_table(remote.data).equals(pq.read_table(local.data))


def test_features_seed_day_and_online_tables_from_the_url_are_the_local_ones(at_url, tiny, tiny_events):
    from release.data.features import compute_features
    from release.data.online_features import OnlineFeatures, merchant_fraud_rates
    from release.serving.replay import day_requests
    from release.serving.service import default_seed_day

    events = _events()
    assert default_seed_day(events) == default_seed_day(tiny_events) == tiny.cfg.start + dt.timedelta(
        days=tiny.cfg.days)
    start, end = tiny.cfg.start + dt.timedelta(days=12), tiny.cfg.start + dt.timedelta(days=14)
    remote = compute_features(events, start, end, maturity_days=tiny.maturity_days)
    assert len(remote) > 400
    pd.testing.assert_frame_equal(remote, compute_features(tiny_events, start, end, maturity_days=tiny.maturity_days))
    day = tiny.cfg.start + dt.timedelta(days=15)
    rates = merchant_fraud_rates(events, day, tiny.maturity_days)
    assert rates == merchant_fraud_rates(tiny_events, day, tiny.maturity_days) and rates[0][0]
    a = OnlineFeatures(events, day, tiny.maturity_days, prepare_ahead=False)
    b = OnlineFeatures(tiny_events, day, tiny.maturity_days, prepare_ahead=False)
    assert a.seeded_rows == b.seeded_rows > 1000
    body = day_requests(events, day, limit=50)
    assert body == day_requests(tiny_events, day, limit=50) and len(body) == 50


def test_label_completeness_and_monitoring_disputes_from_the_url_are_the_local_ones(at_url, tiny, tiny_events,
                                                                                  monkeypatch):
    from release.data.label_completeness import read_delay_distribution, window_completeness
    from release.orchestration.monitoring import _disputes

    events, as_of = _events(), tiny.as_of
    kw = dict(horizon_days=6, cohort_days=8)  # a world of 20 days: cohorts whose disputes have all arrived
    remote = read_delay_distribution(events, as_of, **kw)
    assert remote.disputes_used > 10 and remote.summary() == read_delay_distribution(tiny_events, as_of, **kw).summary()
    windows = {"last_week": (as_of - dt.timedelta(days=7), as_of)}
    assert window_completeness(events, as_of, windows, **kw) == window_completeness(tiny_events, as_of, windows, **kw)
    start, end = tiny.cfg.start + dt.timedelta(days=5), tiny.cfg.start + dt.timedelta(days=12)
    remote_disputes = _disputes(start, end)
    monkeypatch.delenv("FRAUDCD_EVENTS_URL")
    monkeypatch.setenv("FRAUDCD_HOME", str(tiny_events.parent))  # <home>/events is the local copy
    local_disputes = _disputes(start, end)
    assert len(remote_disputes) > 20
    pd.testing.assert_frame_equal(remote_disputes, local_disputes)


def _fraudcd(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("fraudcd")), *args], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=300)


def test_a_fresh_process_reads_the_url_from_its_environment_alone(at_url, tiny, tiny_events, home, tmp_path,
                                                                  monkeypatch):
    """What an Airflow worker does: a new process, the setting and fsspec's variables in its environment, nothing
    else. `fraudcd training-set` builds from the bucket the snapshot the local copy gives; a bad URL is exit 2."""
    import json

    from release.data.training_set import plan_snapshot

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(json.dumps({"labels": {"maturity_days": tiny.maturity_days},
                                    "training_set": {"history_days": tiny.history_days}}))
    monkeypatch.setenv("FRAUDCD_PIPELINE", str(pipeline))
    r = _fraudcd("training-set", "--as-of", tiny.as_of.isoformat())
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[-1] == plan_snapshot(tiny_events, tmp_path, tiny.as_of).hash
    assert (home / "snapshots" / r.stdout.split()[-1] / "manifest.json").exists() and not (home / "events").exists()
    assert _cached(home), "the process read the bucket through the input cache of its FRAUDCD_HOME"
    r = _fraudcd("training-set", "--as-of", tiny.as_of.isoformat(), FRAUDCD_EVENTS_URL="s3://no-such-bucket/events")
    assert r.returncode == 2 and "the bucket 'no-such-bucket' does not exist at endpoint http://127.0.0.1:" in \
        " ".join(r.stderr.split()), r.stderr


# ---- the input cache: each version of a file downloaded once, a rewritten object read again ------------------

def _cached(home: Path) -> dict[Path, int]:
    """The input cache's copies (not a download in flight) and their inodes."""
    return {f: f.stat().st_ino for f in (home / "cache" / "events").glob("*/*") if not f.name.startswith(".tmp-")}


def test_a_file_at_the_url_is_downloaded_once_per_version_and_again_when_rewritten(at_url, s3, home):
    """Readers of a URL read local copies (release.core.io.local_copy): the first read of a file downloads it into
    FRAUDCD_HOME/cache/events (0640 or narrower: it holds what the event logs hold); the next reads open that copy
    (the same file, not downloaded again: its inode stays); the object rewritten in the bucket (a new ETag) is
    downloaded again, and its new bytes are what every reader gets."""
    import pyarrow as pa

    from release.core.io import list_partitions, local_copy, parquet_num_rows, read_parquet_frame

    _, fs = s3
    key = f"{BUCKET}/cache-test/transactions/day=2026-01-01/part-0.parquet"
    table = _events().parent / "cache-test" / "transactions"
    fs.pipe(key, _parquet_bytes(pa.table({"tx_id": [1, 2, 3]})))
    try:
        (f,) = list_partitions(table)
        first = local_copy(f)
        assert first.is_relative_to(home / "cache" / "events") and first.stat().st_mode & 0o037 == 0
        assert read_parquet_frame(f)["tx_id"].tolist() == [1, 2, 3] and parquet_num_rows(f) == 3
        assert _cached(home) == {first: first.stat().st_ino}  # three reads, one download
        fs.pipe(key, _parquet_bytes(pa.table({"tx_id": [7, 8]})))  # rewritten: a new version
        (f,) = list_partitions(table)  # a reader lists before it reads
        second = local_copy(f)
        assert second != first and read_parquet_frame(f)["tx_id"].tolist() == [7, 8] and parquet_num_rows(f) == 2
        assert set(_cached(home)) == {first, second}
    finally:
        fs.rm(key)


def _parquet_bytes(table) -> bytes:
    import io

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_the_cache_evicts_the_least_recently_used_copies_beyond_its_size_never_a_fresh_one(at_url, home,
                                                                                           monkeypatch):
    """FRAUDCD_EVENTS_CACHE_MB=0: a copy last used over ten minutes ago goes when another lands; copies used within
    ten minutes stay (a reader may be about to open them), over the size or not; a download killed an hour ago (its
    temp file) goes. A size that is not a whole number of MB is said."""
    import os

    from release.core.io import evict_cache, list_partitions, local_copy

    monkeypatch.setenv("FRAUDCD_EVENTS_CACHE_MB", "0")
    f1, f2, f3 = list_partitions(_events() / "disputes")[:3]
    c1 = local_copy(f1)
    hour_ago = time.time() - 3600
    os.utime(c1, (hour_ago, hour_ago))
    killed = c1.parent / ".tmp-killed.part"
    killed.write_bytes(b"half a download")
    os.utime(killed, (hour_ago - 1, hour_ago - 1))
    c2 = local_copy(f2)
    assert not c1.exists() and not killed.exists() and c2.exists()
    c3 = local_copy(f3)
    assert set(_cached(home)) == {c2, c3}  # both used just now: kept, over the size
    assert local_copy(f1) == c1 and c1.exists()  # read again: downloaded again
    monkeypatch.setenv("FRAUDCD_EVENTS_CACHE_MB", "lots")
    from release.core.config import EventsLocationError

    with pytest.raises(EventsLocationError, match="FRAUDCD_EVENTS_CACHE_MB='lots': give the input cache's size in MB"):
        evict_cache()


# ---- bad configurations and writers: said, nothing written ---------------------------------------------------

def test_an_unknown_protocol_or_a_missing_implementation_is_said(monkeypatch, home):
    from release.core.config import EventsLocationError

    monkeypatch.setenv("FRAUDCD_EVENTS_URL", "s4://bucket/events")
    with pytest.raises(EventsLocationError, match=r"FRAUDCD_EVENTS_URL='s4://bucket/events': fsspec knows no "
                                                  r"protocol 's4'\. Give a local folder, s3://bucket/prefix"):
        _events()
    monkeypatch.setenv("FRAUDCD_EVENTS_URL", "gs://bucket/events")  # gcsfs is not installed here
    with pytest.raises(EventsLocationError, match=r"reading gs:// needs the package gcsfs, which is not installed "
                                                  r"in .*Install it: pip install gcsfs"):
        _events()
    monkeypatch.setenv("FRAUDCD_EVENTS_URL", "s3://")
    with pytest.raises(EventsLocationError, match="is not a location of event logs"):
        _events()


def test_a_bucket_that_does_not_exist_is_said(at_url, monkeypatch, tiny, tmp_path):
    from release.core.config import EventsLocationError
    from release.data.training_set import build_training_set

    monkeypatch.setenv("FRAUDCD_EVENTS_URL", "s3://no-such-bucket/events")
    said = (r"Cannot read the event logs at s3://no-such-bucket/events/transactions: the bucket 'no-such-bucket' "
            r"does not exist at endpoint http://127\.0\.0\.1:\d+ .*Point FRAUDCD_EVENTS_URL at the bucket")
    with pytest.raises(EventsLocationError, match=said):
        build_training_set(_events(), tmp_path / "snapshots", tiny.as_of, maturity_days=tiny.maturity_days,
                           history_days=tiny.history_days)
    assert not (tmp_path / "snapshots").exists()


def test_an_endpoint_nobody_answers_at_is_said(at_url, monkeypatch):
    import socket

    from release.core.config import EventsUnreachable
    from release.core.io import list_partitions

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    # fsspec's variables reach s3fs (a JSON value is parsed): botocore's retries off, so it fails fast
    monkeypatch.setenv("FSSPEC_S3_CONFIG_KWARGS", '{"retries": {"max_attempts": 1}}')
    t0 = time.monotonic()
    with pytest.raises(EventsUnreachable, match=rf"Cannot read the event logs at {at_url}/transactions: "
                                                rf"EndpointConnectionError: .*Check FRAUDCD_EVENTS_URL and how "
                                                rf"endpoint http://127\.0\.0\.1:{port} \(fsspec's settings: "
                                                r"FSSPEC_S3_ENDPOINT_URL, FSSPEC_S3_KEY"):
        list_partitions(_events() / "transactions")
    assert time.monotonic() - t0 < 30
    assert isinstance(EventsUnreachable("x"), ConnectionError) and isinstance(EventsUnreachable("x"), ValueError)


def _keys(fs) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.find(BUCKET))


def test_writers_refuse_the_url_and_write_nothing(at_url, s3, home, tmp_path):
    """`fraudcd simulate` and `fraudcd ingest` write a local folder only (a day lands whole by a rename): pointed at
    a URL they say so, exit 2 and leave the bucket and the local folder as they were."""
    from tests.release.cli.runner import fraudcd, said

    _, fs = s3
    before = _keys(fs)
    r = _fraudcd("simulate", "--days", "3", "--tx-per-day", "50")
    text = " ".join(r.stderr.split())
    assert r.returncode == 2, r.stdout + r.stderr
    assert (f"error: fraudcd simulate writes event logs to a local folder only (each day lands whole by a rename, "
            f"which object storage cannot do), and FRAUDCD_EVENTS_URL points at {at_url}; nothing was written. "
            "Unset FRAUDCD_EVENTS_URL to write under FRAUDCD_HOME/events") in text, text
    src = tmp_path / "log.csv"
    src.write_text("id,when,card,amount\n1,2026-01-01T00:00:00Z,c1,10.0\n")
    (tmp_path / "map.yaml").write_text(f"path: {src}\nformat: csv\ncolumns: {{tx_id: id, ts: when, card_id: card, "
                                       "amount: amount}\n")
    r = fraudcd("ingest", "--mapping", str(tmp_path / "map.yaml"))
    assert r.exit_code == 2 and "fraudcd ingest writes event logs to a local folder only" in said(r), said(r)
    assert _keys(fs) == before and not (home / "events").exists()
