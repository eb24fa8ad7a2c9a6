"""The daily monitoring of the deployed model (the ``monitoring`` DAG, `fraudcd monitor`): reads what it needs,
judges it with ``release.rollout.monitoring``, keeps the day's findings and raises an alert for each one that fires.

For a day D, over the trailing window [D - window_days + 1, D] (the day's own traffic alone is too little to
judge a country's action rate):

- live traffic: the decision log's requests with a transaction time in the window (the production policy's
  score and decision on every request, whichever model served it);
- the deployed model: the production tag; the release that shipped it (its candidate) gives the reference
  scores (its judging rows), the action rate judged for its policy per country, and the limit
  (``country_action_rate_shift`` of the release contracts);
- features: the model's features recomputed from the event logs for the window (the one feature definition)
  against its training snapshot (merchant-level features compared over merchant-days);
- performance as labels mature: the production model's decisions of the last ``PERFORMANCE_WEEKS`` cohort
  weeks whose labels can have matured (and the younger weeks, said as not yet judged), labelled from the event
  logs' disputes known by the end of D, against the recall the release that shipped it promised (its approved
  policy's re-judgement when there is one), with the label completeness estimated from the event logs. Every
  cohort's figures land beside the findings in ``FRAUDCD_HOME/monitoring/performance/day=D.parquet``.

Findings land in ``FRAUDCD_HOME/monitoring/day=D.parquet`` (temp then rename; a rerun of the day replaces it).
Each alert says what moved, by how much, since when (the first day of the current run of days on which the
same check of the same slice alerted) and what to do; a rerun of the day does not raise it again. Nothing
deployed, or no traffic in the window: said, nothing judged, no alert.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from release.state.store import utc_now
from release.core.io import atomic_write_parquet, json_value
from release.core.settings import contracts_file, paths
from release.rollout import monitoring as checks
from release.state.alerts import notify_once

WINDOW_DAYS = 7
TODO = {
    "score_drift": "the model sees traffic unlike what it was judged on: read the latest release report, check "
                   "the data feed, and consider a release now (`fraudcd release --as-of DAY`)",
    "feature_drift": "a feature no longer looks as in training: check its source and the event logs first (a "
                     "broken feed looks like drift); if the world moved, train on fresh data (`fraudcd release`)",
    "action_rate": "the live policy blocks at a rate the release did not judge: look at the slice's merchants "
                   "(`fraudcd thresholds show`), and roll back (`fraudcd ramp rollback`) if it costs money",
    checks.PERFORMANCE: None,  # its sentence says what to do (release.rollout.monitoring.PERFORMANCE_TODO)
}


def folder() -> Path:
    return paths().home / "monitoring"


def findings_of(day: dt.date) -> pd.DataFrame | None:
    f = folder() / f"day={day.isoformat()}.parquet"
    return pd.read_parquet(f) if f.exists() else None


def _shipped_by(model_id: str) -> dict | None:
    from release.state.releases import releases_newest_first

    return next((r for r in releases_newest_first() if r.get("candidate_model_id") == model_id), None)


def _limit() -> tuple[float, float]:
    from contracts.evaluator import load_contracts

    for c in load_contracts(contracts_file()).contracts:
        if getattr(c, "name", None) == "country_action_rate_shift":
            return float(c.max_relative_shift), float(c.min_absolute_shift)
    return 0.25, 0.002


def _since(day: dt.date, key: tuple[str, str, str], alerted: dict) -> dt.date:
    """The first day of the run of consecutive days, ending with ``day``, on which ``key`` alerted. ``alerted``:
    day -> the (check, feature, slice) keys that alerted on it, filled as days are read (each day's findings
    are read once per run, whatever the number of alerts)."""
    first = day
    while True:
        prev = first - dt.timedelta(days=1)
        if prev not in alerted:
            f = findings_of(prev)
            alerted[prev] = set() if f is None else set(
                f.loc[f["status"] == checks.ALERT, ["check", "feature", "slice"]].itertuples(index=False, name=None))
        if key not in alerted[prev]:
            return first
        first = prev


def _drift_features(features: list[str], spec) -> tuple[list[str], set[str]]:
    """The model's features whose drift is judged (quantities, not codes), and those that are one value per
    merchant and day (compared over merchant-days, not rows)."""
    merchant_level = {w.name for w in spec.windows if w.entity == "merchant"} | {
        c for r in spec.risk for c in (r.rate, r.count)}
    return [f for f in features if f != "category_code"], merchant_level


def snapshot_drift(candidate_model_id: str, incumbent_model_id: str) -> pd.DataFrame:
    """Feature drift of the candidate's training snapshot against the incumbent's (the last training
    snapshot): each feature the candidate reads, over all traffic, by the monitoring's own drift check
    (PSI with its noise floor). Empty when either snapshot is gone; every row says so when they are the same
    snapshot (PSI 0)."""
    from release.core.pipeline import pipeline
    from release.state import registry

    cand, inc = registry.get_model(candidate_model_id), registry.get_model(incumbent_model_id)
    snaps = [paths().snapshots / m.snapshot_hash / "data.parquet" for m in (cand, inc)]
    if not all(p.exists() for p in snaps):
        return checks.findings_frame([])
    feats, merchant_level = _drift_features(cand.features, pipeline().features)
    import pyarrow.parquet as pq

    have = [set(pq.read_schema(p).names) for p in snaps]
    feats = [f for f in feats if f in have[0] and f in have[1]]  # a feature the incumbent lacked is not compared
    new, old = (pd.read_parquet(p, columns=["day", "merchant_id", *feats]) for p in snaps)
    found = checks.drift("feature_drift", new, _halves(old), feats, period="period",
                         per_entity={c: "merchant_id" for c in feats if c in merchant_level})
    return checks.findings_frame(found)


def _halves(ref: pd.DataFrame) -> pd.DataFrame:
    """The reference with ``period``: 0 for its earlier days, 1 for its later ones (the design effect)."""
    day = pd.to_datetime(ref["day"])
    return ref.assign(period=(day >= day.min() + (day.max() - day.min()) / 2).astype(int))


def live_traffic(start: dt.date, end: dt.date, log: pd.DataFrame | None = None) -> pd.DataFrame:
    """Decision-log rows (of ``log``, read when not given) of transactions with start <= day < end (one row per
    request)."""
    from release.serving.decision_log import read_decision_log

    log = read_decision_log() if log is None else log
    if log.empty:
        return log
    ts = pd.to_datetime(log["ts"], utc=True)
    return log[(ts >= pd.Timestamp(start, tz="UTC")) & (ts < pd.Timestamp(end, tz="UTC"))]


def _segments(live: pd.DataFrame, ev, judged_on) -> dict:
    """The merchant segments whose live action rates are held against the release's: each live merchant's
    size as the release judged it (its judging rows), "new" for merchants the release never saw (no rate
    was judged for them: said as insufficient, never an alert)."""
    if ev.judging is None or "merchant_size" not in ev.judging:
        return {}
    size = ev.judging.drop_duplicates("merchant_id").set_index("merchant_id")["merchant_size"].astype(str)
    return {"merchant_size": (live["merchant_id"].astype(str).map(size).fillna("new"), judged_on("merchant_size"))}


def promised(rel: dict, ev) -> checks.Promise | None:
    """What the release that shipped the model promised for the policy that went live: the approved policy's
    re-judgement when there is one (``approved/metrics.parquet``), else the suggested policy's (``ev``, the
    release's own evaluation), as ``release.rollout.monitoring.promised_performance`` reads it."""
    approved = paths().releases / rel["id"] / "approved" / "metrics.parquet"
    metrics = pd.read_parquet(approved) if approved.exists() else ev.metrics if ev is not None else None
    return checks.promised_performance(metrics, rel["id"])


def _disputes(start: dt.date, end: dt.date) -> pd.DataFrame:
    """The event logs' disputes that arrived on days start <= day < end (tx_id, dispute_ts)."""
    from release.core.io import list_partitions, read_parquet_frame

    files = list_partitions(paths().events / "disputes", start, end)
    if not files:
        return pd.DataFrame({"tx_id": pd.Series([], dtype=str),
                             "dispute_ts": pd.Series([], dtype="datetime64[us, UTC]")})
    return pd.concat([read_parquet_frame(f, columns=["tx_id", "dispute_ts"]) for f in files], ignore_index=True)


def matured_performance(day: dt.date, prod, rel: dict | None, ev, log: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The production model's performance per cohort week as labels mature (``release.rollout.monitoring
    .cohort_performance``), judged at the end of ``day``, and a line saying what was read."""
    from release.data.label_completeness import read_delay_distribution
    from release.data.training_set import model_settings

    maturity_days = model_settings(prod.snapshot_hash)[1]
    start, end = checks.performance_window(day, maturity_days)
    decisions = live_traffic(start, end, log)
    if not decisions.empty:
        decisions = decisions[decisions["production_model_id"] == prod.id]
    if decisions.empty:
        return (pd.DataFrame(columns=checks.PERFORMANCE_COLUMNS),
                f"not judged: the decision log has no request scored by {prod.id} with a transaction time in "
                f"{start} .. {day}")
    delays = read_delay_distribution(paths().events, end)
    table = checks.cohort_performance(decisions, _disputes(start, end), end, promised(rel, ev) if rel else None,
                                      maturity_days=maturity_days, delays=delays)
    return table, (f"{len(decisions):,} decisions of {start} .. {day}, labels as of the end of {day} "
                   f"({maturity_days}-day maturity)")


def _jsonable_rows(table: pd.DataFrame) -> list[dict]:
    cols = ["cohort_week", "status", "rows", "recall", "recall_lo", "recall_hi", "fpr", "fpr_lo", "fpr_hi",
            "precision", "precision_lo", "precision_hi", "level", "completeness", "explored_frauds", "ess_frauds",
            "promised_recall", "promised_lo", "alert_below", "since", "sentence"]
    return [{c: json_value(v) for c, v in zip(cols, row)} for row in table[cols].itertuples(index=False)]


def monitor(day: dt.date, *, window_days: int = WINDOW_DAYS) -> dict:
    """Judge the deployed model on the window ending with ``day``; returns a summary (what was judged, the
    findings' counts, the alerts raised)."""
    from analysis.evaluation import Evaluation
    from release.core.pipeline import pipeline
    from release.data.features import compute_features
    from release.state import registry

    start, end = day - dt.timedelta(days=window_days - 1), day + dt.timedelta(days=1)
    summary = {"day": day.isoformat(), "window": [start.isoformat(), (end - dt.timedelta(days=1)).isoformat()]}
    prod = registry.tagged("production")
    if prod is None:
        return {**summary, "judged": False, "why": "no production model is deployed: nothing to monitor"}
    summary["model"] = prod.id
    from release.serving.decision_log import read_decision_log

    log = read_decision_log()
    live = live_traffic(start, end, log)
    live = live[live["production_model_id"] == prod.id] if not live.empty else live
    rel = _shipped_by(prod.id)
    summary["release"] = rel["id"] if rel else None  # None: deployed by hand, nothing judged to hold it against
    ev = Evaluation.load(paths().releases / rel["id"]) if rel is not None else None
    found: list[checks.Finding] = []
    if live.empty:
        summary["decisions"] = (f"not judged: the decision log has no request scored by {prod.id} with a transaction "
                                f"time in {start} .. {day}")
    elif rel is not None:
        summary["release"] = rel["id"]
        ref = ev.judging.rename(columns={"candidate_score": "score"}) if ev.judging is not None else None
        if ref is not None:
            found += checks.drift("score_drift", live.rename(columns={"production_score": "score"}),
                                  _halves(ref), ["score"], by="merchant_country", period="period")
        pol = ev.slices[ev.slices["at"] == "policy"]

        def judged_on(*types: str) -> dict[str, float]:
            p = pol[pol["slice_type"].isin(types)]
            return dict(zip(p["slice"].astype(str), p["candidate_action_rate"].astype(float)))

        rel_shift, abs_shift = _limit()
        found += checks.action_rates(live["production_block"].astype(bool), live["merchant_country"],
                                     judged_on("all", "country"), max_relative_shift=rel_shift,
                                     min_absolute_shift=abs_shift, segments=_segments(live, ev, judged_on))
    snap = paths().snapshots / prod.snapshot_hash / "data.parquet"
    spec = pipeline().features
    feats, merchant_level = _drift_features(prod.features, spec)
    if snap.exists():
        ref = pd.read_parquet(snap, columns=["day", "merchant_id", "merchant_country", *feats])
        try:
            now = compute_features(paths().events, start, end, features=spec)
        except FileNotFoundError as e:
            summary["features"] = f"not judged: {e}"
        else:
            cols = [f for f in feats if f in now]
            found += checks.drift("feature_drift", now, _halves(ref), cols, by="merchant_country", period="period",
                                  per_entity={c: "merchant_id" for c in cols if c in merchant_level})
    else:
        summary["features"] = f"not judged: the model's training snapshot {snap} is not there"
    perf, said = matured_performance(day, prod, rel, ev, log)
    found += checks.performance_findings(perf)
    summary["performance_read"] = said
    summary["performance"] = _jsonable_rows(perf)
    table = checks.findings_frame(found).assign(day=day.isoformat(), model=prod.id)
    folder().mkdir(parents=True, exist_ok=True)
    at = utc_now()
    raised, alerted = [], {}
    for f in found:
        if f.status != checks.ALERT:
            continue
        key = (f.check, f.feature, f.slice)
        since = _since(day, key, alerted)
        run = since.isoformat() + (" (today)" if since == day else f" ({(day - since).days + 1} days running)")
        todo = TODO[f.check]  # None: the sentence already ends with what to do
        msg = f"{f.sentence} Since {run}. What to do: {todo}." if todo else f"{f.sentence} Alerting since {run}."
        a = notify_once(f"monitoring_{f.check}", f"{day.isoformat()}:{':'.join(key)}", msg, at=at,
                        severity="warning", key_field="key",
                        details={"day": day.isoformat(), "model": prod.id, "since": since.isoformat(),
                                 **{k: v for k, v in f.as_dict().items() if k != "sentence"}})
        if a is not None:
            raised.append(a)
    atomic_write_parquet(perf, folder() / "performance" / f"day={day.isoformat()}.parquet")
    atomic_write_parquet(table, folder() / f"day={day.isoformat()}.parquet")
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    if not found:
        summary["why"] = "; ".join(summary[k] for k in ("decisions", "features", "performance_read")
                                   if k in summary) or "nothing to judge"
    return {**summary, "judged": bool(found), "rows": int(len(live)), "findings": counts,
            "firing": [f.sentence for f in found if f.status == checks.ALERT],  # the day's, raised before or not
            "alerts": [a["message"] for a in raised]}  # raised by this run (a rerun of the day raises none)


def monitor_interval(start, end, run_after=None) -> dict:
    """The monitoring DAG's task: judge the window ending with the last day of the run's period (a data
    interval, a zero-length one, or none: ``release.core.pipeline.run_period``)."""
    from release.core.pipeline import pipeline, run_period

    first, stop = run_period(start, end, run_after, pipeline().schedule.monitoring.every_days)
    return monitor(stop - dt.timedelta(days=1))


def latest_summary() -> dict | None:
    """The last day monitored: its findings' counts and the alerts that fired on it (`fraudcd status`)."""
    days = sorted(folder().glob("day=*.parquet")) if folder().exists() else []
    if not days:
        return None
    f = pd.read_parquet(days[-1])
    fired = f[f["status"] == checks.ALERT]
    return {"day": days[-1].stem.removeprefix("day="), "findings": f["status"].value_counts().to_dict(),
            "alerts": fired["sentence"].tolist()}
