"""Bring your own data: a team's log, with its own column names, becomes canonical event logs."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from release.data.features import compute_features
from release.core.io import file_sha256, list_partitions
from release.data.source import SourceError, SourceMapping, ingest_source, load_mapping

START = dt.date(2026, 1, 1)
DAYS = 6
BASE = """\
path: {path}
timezone: Europe/Berlin
columns:
  tx_id: txn_ref
  ts: event_time
  card_id: pan_hash
  amount: amt_eur
  fraud_flag: chargeback_flag
merchant_stand_in: terminal_id
label_delay_days: 30
"""


def team_log(n_per_day: int = 40, seed: int = 1) -> pd.DataFrame:
    """A team's export: text ids, naive local (Berlin) times, its own names, no country, no merchant id."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(DAYS):
        secs = np.sort(rng.integers(0, 86400, size=n_per_day))
        local = pd.Timestamp(START) + pd.Timedelta(days=d) + pd.to_timedelta(secs, unit="s")
        rows.append(pd.DataFrame({
            "txn_ref": [f"TX-{d:02d}-{i:04d}" for i in range(n_per_day)],
            "event_time": local.strftime("%Y-%m-%d %H:%M:%S"),
            "pan_hash": [f"c{x:03x}" for x in rng.integers(0, 60, size=n_per_day)],
            "amt_eur": np.round(rng.lognormal(3.5, 0.8, size=n_per_day), 2),
            "terminal_id": [f"T{x}" for x in rng.integers(0, 8, size=n_per_day)],
            "mcc_group": rng.choice(["grocery", "fuel", "Travel", "pets"], size=n_per_day),
            "decision": rng.choice(["APPROVED", "DECLINED", "declined_soft"], size=n_per_day, p=[0.8, 0.1, 0.1]),
            "chargeback_flag": (rng.random(n_per_day) < 0.1).astype(int),
        }))
    return pd.concat(rows, ignore_index=True)


def setup(tmp_path: Path, df: pd.DataFrame | None = None, yaml: str = BASE, fmt: str = "csv", **kw) -> Path:
    """Write the team's log (split over two files) under tmp_path/team and a mapping YAML next to it."""
    df = team_log() if df is None else df
    (tmp_path / "team").mkdir(exist_ok=True)
    half = len(df) // 2
    for i, part in enumerate((df.iloc[:half], df.iloc[half:])):
        f = tmp_path / "team" / f"log-{i}.{fmt}"
        part.to_csv(f, index=False) if fmt == "csv" else part.to_parquet(f, index=False)
    m = tmp_path / "source.yaml"
    m.write_text(yaml.format(path=f"team/log-*.{fmt}", **kw))
    return m


def read(events: Path, table: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in list_partitions(events / table)], ignore_index=True)


def all_files(events: Path) -> dict[str, str]:
    return {str(f.relative_to(events)): file_sha256(f) for f in sorted(events.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def sim_schemas(tmp_path_factory) -> dict:
    """The simulator's canonical schemas, to compare dtypes with."""
    from simulation.world import WorldConfig, simulate

    out = tmp_path_factory.mktemp("sim") / "events"
    simulate(WorldConfig(days=3, tx_per_day=50, n_merchants=5, n_cards=40, dispute_median_days=1.0, friendly_rate=0.2,
                         dispute_max_days=1), out)
    return {t: pq.read_schema(list_partitions(out / t)[0]).remove_metadata()
            for t in ("transactions", "decisions", "disputes")}


def test_team_csv_becomes_canonical_partitions(tmp_path, sim_schemas):
    df = team_log()
    m = setup(tmp_path, df)
    events = tmp_path / "events"
    out = ingest_source(m, events)
    assert out["rows"] == len(df) and out["days"] == DAYS + 1 and out["source_rows"] == len(df) and out["files"] == 2
    assert out["first_day"] == "2025-12-31"  # the first hour of Jan 1 in Berlin is Dec 31 in UTC
    assert out["ids"] == {"tx_id": "hashed text", "card_id": "hashed text"}
    assert out["missing"]["card_country"] == out["missing"]["merchant_country"] == "ALL (one slice)"
    assert out["missing"]["merchant_id"] == "stand-in column 'terminal_id'"
    assert out["missing"]["action"].startswith("allow") and out["missing"]["merchant_category"] == "unknown"
    for t in ("transactions", "decisions", "disputes"):
        for f in list_partitions(events / t):
            assert pq.read_schema(f).remove_metadata() == sim_schemas[t], (t, f)
    tx = read(events, "transactions")
    assert tx["tx_id"].is_unique and len(tx) == len(df)
    assert set(tx["card_country"]) == set(tx["merchant_country"]) == {"ALL"}
    assert set(tx["merchant_id"]) == set(df["terminal_id"]) and set(tx["merchant_category"]) == {"unknown"}
    # naive local times were read in Europe/Berlin (UTC+1 in January)
    assert tx["ts"].min() == (pd.Timestamp(df["event_time"].min(), tz="Europe/Berlin").tz_convert("UTC"))
    assert np.isclose(tx["amount"].sum(), df["amt_eur"].sum())
    # each partition holds its own UTC day, sorted by time
    for f in list_partitions(events / "transactions"):
        part = pd.read_parquet(f)
        assert (part["ts"].dt.date.astype(str) == f.parent.name.removeprefix("day=")).all()
        assert part["ts"].is_monotonic_increasing
    dec = read(events, "decisions")
    assert (dec["action"] == "allow").all() and (dec["propensity"] == 1.0).all() and not dec["explored"].any()
    assert dec["score"].isna().all() and (dec["policy"] == "source").all()
    # card ids: same pan_hash, same int64 card id
    j = tx.sort_values("ts").reset_index(drop=True)
    src = df.assign(ts=pd.to_datetime(df["event_time"]).dt.tz_localize("Europe/Berlin").dt.tz_convert("UTC"))
    src = src.sort_values(["ts"], kind="stable").reset_index(drop=True)
    pairs = pd.DataFrame({"pan": src["pan_hash"], "card": j["card_id"]}).drop_duplicates()
    assert pairs["pan"].is_unique and pairs["card"].is_unique
    # features run on the result
    feats = compute_features(events, START, START + dt.timedelta(days=DAYS - 1))
    assert len(feats) > 0 and (feats["cross_border"] == 0).all() and feats["category_code"].isna().all()


def test_fraud_flag_with_label_delay_gives_dispute_ts(tmp_path):
    df = team_log()
    events = tmp_path / "events"
    out = ingest_source(setup(tmp_path, df), events)
    flagged = int(df["chargeback_flag"].sum())
    assert out["disputes"] == flagged > 0 and "ts + 30 days" in out["labels"]
    tx, dis = read(events, "transactions"), read(events, "disputes")
    j = dis.merge(tx[["tx_id", "ts"]], on="tx_id")
    assert len(j) == flagged and (j["dispute_ts"] - j["ts"] == pd.Timedelta(days=30)).all()
    for f in list_partitions(events / "disputes"):  # partitioned by the dispute's day
        assert (pd.read_parquet(f)["dispute_ts"].dt.date.astype(str) == f.parent.name.removeprefix("day=")).all()


def test_parquet_with_country_merchant_action_and_dispute_ts(tmp_path, sim_schemas):
    df = team_log().drop(columns="chargeback_flag")
    df["txn_ref"] = np.arange(len(df), dtype=np.int64) + 1000  # integer ids stay as they are
    df["event_time"] = pd.to_datetime(df["event_time"]).dt.tz_localize("UTC")
    df["ctry"] = np.where(np.arange(len(df)) % 3 == 0, "DE", "FR")
    df["merchant"] = df["terminal_id"].str.replace("T", "M")
    df["prob"] = 1.0
    disputed = (np.arange(len(df)) % 9 == 0) & (df["decision"] == "APPROVED").to_numpy()
    df["cb_time"] = (df["event_time"] + pd.Timedelta(days=12)).where(disputed)
    yaml = """\
path: {path}
columns: {{tx_id: txn_ref, ts: event_time, card_id: pan_hash, amount: amt_eur, country: ctry,
          merchant_id: merchant, merchant_category: mcc_group, action: decision, propensity: prob,
          dispute_ts: cb_time}}
block_values: [declined, Declined_Soft]
"""
    events = tmp_path / "events"
    out = ingest_source(setup(tmp_path, df, yaml, fmt="parquet"), events)
    assert out["ids"] == {"tx_id": "integer", "card_id": "hashed text"}
    assert out["disputes"] == int(disputed.sum()) and "card_country" not in out["missing"]
    tx, dec = read(events, "transactions"), read(events, "decisions")
    for t in ("transactions", "decisions", "disputes"):
        assert pq.read_schema(list_partitions(events / t)[0]).remove_metadata() == sim_schemas[t]
    assert sorted(tx["tx_id"]) == sorted(df["txn_ref"])
    assert set(tx["card_country"]) == {"DE", "FR"} and (tx["card_country"] == tx["merchant_country"]).all()
    assert set(tx["merchant_id"]) == set(df["merchant"])
    j = dec.merge(df[["txn_ref", "decision"]], left_on="tx_id", right_on="txn_ref")
    assert ((j["action"] == "block") == (j["decision"] != "APPROVED")).all()  # block_values are case-blind
    assert out["blocked"] == int((df["decision"] != "APPROVED").sum()) > 0
    dis = read(events, "disputes").merge(tx[["tx_id", "ts"]], on="tx_id")
    assert (dis["dispute_ts"] - dis["ts"] == pd.Timedelta(days=12)).all()
    feats = compute_features(events, START, START + dt.timedelta(days=DAYS))
    assert set(feats["category_code"].dropna().astype(int)) == {0, 1}  # grocery, fuel; Travel/pets: no code
    assert len(feats) == len(df) and (feats["action"] == "block").sum() == out["blocked"]


def test_no_merchant_at_all_is_one_merchant_and_one_country_alone_is_ignored(tmp_path):
    yaml = """\
path: {path}
columns: {{tx_id: txn_ref, ts: event_time, card_id: pan_hash, amount: amt_eur, card_country: mcc_group}}
"""
    events = tmp_path / "events"
    out = ingest_source(setup(tmp_path, yaml=yaml), events)
    tx = read(events, "transactions")
    assert set(tx["merchant_id"]) == {"ALL"} and out["missing"]["merchant_id"] == "ALL"
    assert set(tx["card_country"]) == {"ALL"} and "map it as columns.country" in out["notes"][0]
    assert out["labels"] == "none" and out["disputes"] == 0 and not (events / "disputes").exists()


def test_rerun_is_byte_identical_and_a_window_writes_only_its_days(tmp_path):
    m = setup(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    ingest_source(m, a)
    first = all_files(a)
    ingest_source(m, a)
    assert all_files(a) == first and len(first) > 2 * DAYS
    out = ingest_source(m, b, START + dt.timedelta(days=1), START + dt.timedelta(days=3))
    assert out["days"] == 2
    got = all_files(b)
    assert sorted({k.split("/")[1] for k in got if k.startswith("transactions")}) == ["day=2026-01-02", "day=2026-01-03"]
    assert all(first[k] == v for k, v in got.items())  # same bytes as the full ingest


def _broken(df: pd.DataFrame, case: str) -> pd.DataFrame:
    df = df.copy()
    if case == "amount":
        df["amt_eur"] = df["amt_eur"].astype(str)
        df.loc[3, "amt_eur"] = "12,50 EUR"
    elif case == "ts":
        df.loc[5, "event_time"] = "yesterday noon"
    elif case == "dup":
        df.loc[7, "txn_ref"] = df.loc[6, "txn_ref"]
    elif case == "null":
        df.loc[[2, 9], "pan_hash"] = None
    return df


@pytest.mark.parametrize("case, message", [
    ("amount", r"non-numeric amount \('amt_eur'\): 1 row\(s\), e\.g\. \{.*amt_eur: '12,50 EUR'"),
    ("ts", r"unparseable timestamps in ts \('event_time'\).*: 1 row\(s\), e\.g\. \{.*'yesterday noon'"),
    ("dup", r"duplicate tx_id \('txn_ref'\): 1 id\(s\) on 2 rows, e\.g\. \{txn_ref: 'TX-00-0006'"),
    ("null", r"card_id \('pan_hash'\) is empty: 2 row\(s\), e\.g\. \{txn_ref: "),
])
def test_bad_data_is_refused_with_a_clear_message_and_nothing_written(tmp_path, case, message):
    m = setup(tmp_path, _broken(team_log(), case))
    with pytest.raises(SourceError, match=message) as ei:
        ingest_source(m, tmp_path / "events")
    assert "nothing written" in str(ei.value) and "log-0.csv" in str(ei.value)  # the example names its file
    assert not (tmp_path / "events").exists()


def test_all_problems_are_listed_together(tmp_path):
    df = _broken(_broken(team_log(), "amount"), "dup")
    with pytest.raises(SourceError) as ei:
        ingest_source(setup(tmp_path, df), tmp_path / "events")
    assert "non-numeric amount" in str(ei.value) and "duplicate tx_id" in str(ei.value)


def test_a_mapped_column_not_found_lists_what_was_found(tmp_path):
    m = setup(tmp_path, yaml=BASE.replace("amt_eur", "Amt_EUR").replace("chargeback_flag", "cb"))
    with pytest.raises(SourceError, match=r"amount -> 'Amt_EUR' \(did you mean 'amt_eur'\?\); fraud_flag -> 'cb'\. "
                                          r"Columns found: txn_ref, event_time, pan_hash, amt_eur, terminal_id"):
        ingest_source(m, tmp_path / "events")
    assert not (tmp_path / "events").exists()


@pytest.mark.parametrize("edit, message", [
    (("  card_id: pan_hash\n", ""), r"source\.yaml: columns\.card_id: Field required"),
    (("  tx_id:", "  merchent_id: m\n  tx_id:"), r"source\.yaml: columns\.merchent_id: Extra inputs are not permitted"),
    (("label_delay_days: 30\n", "label_delay_days: 30\nlabel_delay: 3\n"), r"source\.yaml: label_delay: Extra inputs"),
    (("label_delay_days: 30\n", ""), r"fraud_flag and label_delay_days go together"),
    (("label_delay_days: 30", "label_delay_days: 0"), r"label_delay_days: Input should be greater than 0"),
    (("Europe/Berlin", "Mars/Olympus"), r"timezone: Value error, not an IANA time zone"),
    (("merchant_stand_in: terminal_id\n", "merchant_stand_in: terminal_id\ncolumns_x: 1\n"), r"columns_x: Extra"),
    (("  amount: amt_eur\n", "  amount: amt_eur\n  action: decision\n"), r"columns\.action and block_values go together"),
])
def test_bad_mapping_names_the_file_and_key(tmp_path, edit, message):
    m = setup(tmp_path, yaml=BASE.replace(*edit))
    with pytest.raises(SourceError, match=message):
        ingest_source(m, tmp_path / "events")
    assert not (tmp_path / "events").exists()


def test_relative_path_is_resolved_against_the_yaml_folder(tmp_path, monkeypatch):
    m = setup(tmp_path)
    monkeypatch.chdir(Path("/"))
    assert load_mapping(m).path == str(tmp_path / "team" / "log-*.csv")
    assert SourceMapping.model_validate({"path": "x.parquet", "columns": {
        "tx_id": "a", "ts": "b", "card_id": "c", "amount": "d"}}).format == "parquet"
    with pytest.raises(SourceError, match="No files match"):
        ingest_source(SourceMapping.model_validate({"path": str(tmp_path / "nope-*.csv"), "columns": {
            "tx_id": "a", "ts": "b", "card_id": "c", "amount": "d"}}), tmp_path / "events")


def test_cli_ingest(tmp_path, home):
    import json

    from typer.testing import CliRunner

    from release.cli.main import app

    (tmp_path / "good").mkdir()
    r = CliRunner().invoke(app, ["ingest", "--mapping", str(setup(tmp_path / "good")), "--start", "2026-01-02",
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["first_day"] == "2026-01-02" and out["events"] == str(home / "events")
    assert not (home / "events" / "transactions" / "day=2026-01-01").exists()
    (tmp_path / "bad").mkdir()
    bad = setup(tmp_path / "bad", _broken(team_log(), "ts"))
    r = CliRunner().invoke(app, ["ingest", "--mapping", str(bad)])
    assert r.exit_code == 2 and "unparseable timestamps" in r.output


def test_the_example_mapping_is_valid():
    from release.core.settings import PROJECT_ROOT

    m = load_mapping(PROJECT_ROOT / "config" / "source.example.yaml")
    assert m.format == "csv" and m.path == str(PROJECT_ROOT / "config" / "exports" / "txlog-*.csv")
    assert m.columns.fraud_flag == "chargeback_flag" and m.label_delay_days == 30
