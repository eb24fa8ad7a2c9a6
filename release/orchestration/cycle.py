"""The release cycle's stages. Each is a plain function one Airflow task calls; they hand each other
references (a release id; the release row holds snapshot hash and model ids), never data.

What a stage computes comes from the DAG's data interval (``as_of``), never the wall clock: the same
interval gives the same release id, the same snapshot and the same verdicts, so a rerun is idempotent.
The record of when it happened is the exception: audit rows (and the ``at``/``updated_at`` of state
changes) carry the wall clock, the data date beside it as the audit row's ``logical_date``.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from analysis.evaluation import Evaluation, evaluate
from analysis.metrics import thresholds_for
from contracts.base import FAIL, INSUFFICIENT
from contracts.evaluator import evaluate_contracts, gate_failures, load_contracts
from release.state import approvals, registry
from release.rollout import ramp
from release.state.alerts import notify_once
from release.data.features import compute_features
from release.core.dates import as_date, at_of, release_id_for
from release.core.io import atomic_write_parquet
from release.core.settings import CONTRACTS_KEPT, code_version, config_dir, contracts_file, paths
from release.core.pipeline import ramp_file
from release.rollout.shadow import decision_diffs, online_action_rate_verdicts
from release.state.store import (acting, engine, evaluation_summary, logical_date, releases, transaction,
                                 utc_now, verdicts, write_audit)
from release.modeling.training import load_workflow, score, split_windows, train_model
from release.state.overrides import add_override, overrides_for, waived_contracts
from release.state.releases import get_release
from release.state.status import Status, allowed, is_rerun, move_release
from release.data.training_set import (Snapshot, build_training_set, latest_snapshot, resolve_snapshot,
                                  snapshot_settings)

log = logging.getLogger(__name__)
PIPELINE = "fraud-cd pipeline"
BOOTSTRAP_ACTOR = "fraud-cd bootstrap"
# The bootstrap incumbent blocks this share of traffic until a person approves per-merchant thresholds.
BOOTSTRAP_ACTION_RATE = 0.015


class ReleaseStopped(RuntimeError):
    """The release was stopped by a gate (contract, rejection, guardrail); the reason is on the record."""


def _stage(fn):
    """A stage of one release (first argument: the release id): the audit rows it writes record the
    release's data date as their logical date."""
    @functools.wraps(fn)
    def run(release_id: str, *args, **kwargs):
        with logical_date(at_of(as_date(get_release(release_id)["as_of"]))):
            return fn(release_id, *args, **kwargs)
    return run


def release_dir(release_id: str) -> Path:
    return paths().releases / release_id


def release_contracts(release_id: str, keep: bool = False):
    """The release contracts that judge ``release_id``: the file in force (``contracts_file``) when its evaluation
    ran, kept in the release's folder. ``keep`` (the evaluation; a rerun keeps the file in force again): the
    file is read once, validated and written there whole. Every later judgement of the release (the offline gates;
    the re-judgement of the approved policy, perhaps days later; the contract names an override may waive) reads
    that copy, so the set that judges is the set whose slices, pools and anchor the evaluation computed: an edit of
    the file meanwhile applies from the next release. A release evaluated before copies were kept: the file in
    force."""
    from release.core.config import read_config
    from release.core.io import atomic_write_text

    kept = release_dir(release_id) / CONTRACTS_KEPT
    if not keep:
        return load_contracts(kept if kept.exists() else contracts_file())
    source = contracts_file()
    text = read_config(source)
    cs = load_contracts(source, text)  # a file that does not validate is refused before anything is kept
    kept.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(text, kept)
    return cs


def shipped_lineage(incumbent_model_id: str | None, as_of: dt.date, window_days: int, metric: str,
                    estimator: str) -> list[dict]:
    """The releases that made production what it is, newest first, while their data dates are within
    ``window_days`` before ``as_of``: the promoted release whose candidate is ``incumbent_model_id``, then the
    one whose candidate was its incumbent, and so on (a release rolled back after promotion drops out: its
    candidate is no longer in the chain). Each with the ``metric`` change it shipped: its approved policy's
    all-traffic rate over its incumbent's on its own judging rows (the approved re-judgement, or the offline
    evaluation where there is none), None where that was not computed. The chain also ends at a release whose
    incumbent was a bootstrap (a stand-in made because nothing was in production, which never served the
    world): drift is measured from the first production that did. For contracts.drift_budget."""
    from contracts.drift_budget import shipped_ratio

    start = as_of - dt.timedelta(days=window_days)
    with engine().connect() as conn:
        shipped = [dict(r._mapping) for r in conn.execute(
            sa.select(releases).where(releases.c.status == Status.PROMOTED).order_by(releases.c.as_of.desc()))]
    out, model, seen = [], incumbent_model_id, set()
    while model and model not in seen:
        seen.add(model)
        rel = next((r for r in shipped if r["candidate_model_id"] == model and as_date(r["as_of"]) < as_of), None)
        if rel is None or as_date(rel["as_of"]) < start or rel.get("incumbent_bootstrap"):
            break
        folder = release_dir(rel["id"])
        metrics = next((f / "metrics.parquet" for f in (folder / "approved", folder)
                        if (f / "metrics.parquet").exists()), None)
        ratio = shipped_ratio(pd.read_parquet(metrics), metric, estimator) if metrics is not None else None
        out.append({"release_id": rel["id"], "as_of": as_date(rel["as_of"]).isoformat(), "ratio": ratio})
        model = rel["incumbent_model_id"]
    return out


def drift_anchor(cs, rel: dict) -> dict | None:
    """The anchor of the drift budgets in force (contracts.drift_budget) for ``rel``: production before the
    releases shipped in their window (one anchor per evaluation: contracts.evaluator refuses budgets with
    different windows). None: no drift budget in force.
    A dict with model_id (the anchor), since (the oldest shipped release's data date), releases (their ids,
    oldest first), changes (what each shipped, its policy's rate over its incumbent's, by the first
    budget's metric), window_days and over_bootstrap (the release that shipped the anchor over a bootstrap
    stand-in, where the chain ended there; else None)."""
    budgets = cs.drift_budgets()
    if not budgets:
        return None
    b = budgets[0]
    lineage = shipped_lineage(rel.get("incumbent_model_id"), as_date(rel["as_of"]), b.window_days, b.metric,
                              b.estimator)
    anchor = get_release(lineage[-1]["release_id"])["incumbent_model_id"] if lineage else rel.get("incumbent_model_id")
    with engine().connect() as conn:  # the anchor shipped over a bootstrap stand-in: the chain's first release
        first = conn.execute(sa.select(releases.c.id).where(
            (releases.c.candidate_model_id == anchor) & (releases.c.status == Status.PROMOTED)
            & releases.c.incumbent_bootstrap.is_(True))).scalar()
    return {"model_id": anchor, "window_days": b.window_days, "since": lineage[-1]["as_of"] if lineage else None,
            "releases": [h["release_id"] for h in reversed(lineage)],
            "changes": {h["release_id"]: h["ratio"] for h in lineage}, "over_bootstrap": first}


def _update_release(release_id: str, status: str | None = None, reason: str | None = None, **values) -> bool:
    """Write a release's fields; a status change goes through the state machine (release.state.status), audited.
    False when the status did not change (a rerun of a stage the release is already past)."""
    at = values.pop("updated_at", None) or utc_now()
    with transaction() as conn:
        if status is None:
            conn.execute(releases.update().where(releases.c.id == release_id).values(updated_at=at, **values))
            return False
        return move_release(conn, release_id, status, at=at, actor=PIPELINE, reason=reason, **values)


# ---- stages -------------------------------------------------------------------------------------------

def ingest_interval(start, end, run_after=None) -> dict:
    """Normalise the days a run covers (``release.core.pipeline.run_period``: its data interval; a zero-length or
    absent one covers the cadence's days before its end) of a team's own transaction log into the event
    logs, when a column mapping is configured (``FRAUDCD_SOURCE``, the pipeline configuration's ``source``
    or config/source.yaml); otherwise the event logs are used as they are. A configured source with no
    transaction in the period is an error, never a success that ingested nothing. Idempotent: a rerun
    writes the same files."""
    from release.core.pipeline import pipeline, run_period
    from release.core.pipeline import source_mapping
    from release.data.source import SourceError, ingest_source

    first, last = run_period(start, end, run_after, pipeline().schedule.training_set.every_days)
    mapping = source_mapping()
    if mapping is None:
        return {"ingested": False, "period": [first.isoformat(), last.isoformat()],
                "reason": "no source mapping configured: the event logs are read as they are"}
    counts = ingest_source(mapping, paths().events, first, last)
    if not counts["rows"]:
        raise SourceError(f"{mapping}: no transactions in {first} .. {last - dt.timedelta(days=1)} (the run's "
                          f"period); the source holds none for these days. Check the export, or run the DAG for "
                          "dates the log covers (pipeline.yaml schedule.training_set.start_date).")
    return {"ingested": True, "period": [first.isoformat(), last.isoformat()],
            **{k: counts[k] for k in ("source", "rows", "days", "disputes", "labels")}}


def build_snapshot(as_of, maturity_days: int | None = None, history_days: int | None = None,
                   run_after=None) -> str:
    """Build the training-set snapshot as of the end of the run's period (``as_of``; a run without one uses
    ``run_after``), with the pipeline configuration's maturity, history and feature settings unless given.
    Its volume check compares with the latest earlier snapshot of the same lineage."""
    from release.core.pipeline import lineage_key, lineage_of, pipeline, run_period

    _, d = run_period(None, as_of, run_after)
    cfg = pipeline()
    maturity_days = cfg.labels.maturity_days if maturity_days is None else maturity_days
    history_days = cfg.training_set.history_days if history_days is None else history_days
    lineage = lineage_key(lineage_of(maturity_days, history_days, cfg.features))
    prev = latest_snapshot(paths().snapshots, before=d, lineage=lineage)
    snap = build_training_set(paths().events, paths().snapshots, d, maturity_days=maturity_days,
                              history_days=history_days, features=cfg.features,
                              previous_rows=prev.manifest["rows"] if prev else None)
    return snap.hash


def published_extra(as_of, run_after=None, snapshot_hash: str = "") -> dict:
    """What the training_set DAG attaches to the training-set asset event it publishes: the snapshot's date
    (the end of the run's period) and hash (release.orchestration.assets)."""
    from release.core.pipeline import run_period

    return {"as_of": run_period(None, as_of, run_after)[1].isoformat(), "snapshot": snapshot_hash}


class NotDue(Exception):
    """A training set was published on a day the release cadence does not fall on: no release today."""


def release_date(triggering_asset_events=None, data_interval_end=None, run_after=None) -> dt.date:
    """The date a release DAG run is about. A run the training-set asset triggered: the newest published
    snapshot's date (its event's ``as_of``), and only when the release cadence (``schedule.release`` of the
    pipeline configuration, anchored at its start date) falls on it, else NotDue saying when it next does. A
    run a person started (no triggering event): the end of its data interval, or its ``run_after``."""
    from release.core.pipeline import pipeline, run_period

    published = []
    for events in (triggering_asset_events or {}).values():
        for e in events:
            extra = getattr(e, "extra", None) or {}
            if extra.get("as_of"):
                published.append(dt.date.fromisoformat(str(extra["as_of"])[:10]))
    if not published:
        return run_period(None, data_interval_end, run_after)[1]
    day = max(published)
    cadence = pipeline().schedule.release
    if not cadence.due(day):
        raise NotDue(f"The training set of {day} was published, but no release falls on that day: releases run "
                     f"every {cadence.every_days} days from {cadence.start_date} (schedule.release of the "
                     f"pipeline configuration); the next on {cadence.next_due(day)}.")
    return day


def release_day_or_skip(triggering_asset_events=None, data_interval_end=None, run_after=None) -> dt.date:
    """``release_date`` for the release DAG's first task: a day the cadence does not fall on skips the task,
    and with it the whole run, with the sentence saying when the next release is."""
    from airflow.sdk.exceptions import AirflowSkipException

    try:
        return release_date(triggering_asset_events, data_interval_end, run_after)
    except NotDue as not_today:
        raise AirflowSkipException(str(not_today)) from None


def waive_contract(release_id: str, contract: str, *, actor: str, reason: str, at: str) -> dict:
    """Record a named person's override of one contract for one release (CLI and DAG param)."""
    return add_override(release_id, contract, actor=actor, reason=reason, at=at,
                        known_contracts=release_contracts(release_id).names())


def start_release(as_of: str | dt.date, snapshot_hash: str, workflow: str | None = None,
                  overrides: list[dict] | None = None) -> str:
    d = as_date(as_of)
    rid = release_id_for(d)
    from release.core.pipeline import pipeline

    wf = str(Path(workflow) if workflow else pipeline().workflow_path())
    with transaction() as conn:
        cur = conn.execute(sa.select(releases.c.status).where(releases.c.id == rid)).scalar()
        vals = dict(as_of=d.isoformat(), snapshot_hash=snapshot_hash, workflow=wf, stop_reason=None)
        at = utc_now()
        if cur is None:
            conn.execute(releases.insert().values(id=rid, incumbent_bootstrap=False, status=Status.STARTED,
                                                  updated_at=at, **vals))
            write_audit(conn, at=at, actor=PIPELINE, action="release_status", entity=f"release:{rid}", before=None,
                        after={"status": Status.STARTED, "snapshot_hash": snapshot_hash, "workflow": wf},
                        reason=f"release cycle for {d.isoformat()} started", logical_date=at_of(d))
        elif cur == Status.STARTED or allowed(cur, Status.STARTED):  # a rerun of the cycle for this date
            conn.execute(releases.update().where(releases.c.id == rid).values(**vals))
            if cur != Status.STARTED:
                move_release(conn, rid, Status.STARTED, at=at, actor=PIPELINE,
                             reason=f"release cycle for {d.isoformat()} started again (was {cur})")
        # else: approved or further on (live, promoted, rolled back): a rerun of this task changes nothing
    release_dir(rid).mkdir(parents=True, exist_ok=True)
    have = {o["contract"] for o in overrides_for(rid)}
    for o in overrides or []:  # given when the run was triggered (DAG param); reruns do not repeat them
        missing = {"contract", "by", "reason"} - set(o)
        if missing:
            raise ValueError(f"An override needs contract, by and reason; {o!r} lacks {', '.join(sorted(missing))}.")
        if o["contract"] not in have:
            with logical_date(at_of(d)):
                waive_contract(rid, o["contract"], actor=o["by"], reason=o["reason"], at=utc_now())
    return rid


def _snapshot(rel: dict) -> Snapshot:
    return Snapshot(hash=rel["snapshot_hash"], path=paths().snapshots / rel["snapshot_hash"])


def _train_and_register(snap: Snapshot, workflow_path: Path, at: str, actor: str) -> registry.Model:
    wf = load_workflow(workflow_path)
    if wf.snapshot != "latest":  # a workflow pinned to a snapshot trains on it, whatever the release built
        snap = resolve_snapshot(paths().snapshots, wf.snapshot)
    text, info = train_model(snap.data, wf)
    return registry.register_model(text, workflow=wf.model_dump(mode="json"), features=wf.features, snapshot_hash=snap.hash,
                                   code_version=code_version(), metrics={"training": info}, at=at, actor=actor)


def train_workflow(workflow_path: str | Path, *, actor: str, reason: str, at: str) -> registry.Model:
    """`fraudcd train`: train a workflow on the snapshot it selects and register the model (its id is the
    hash of its bytes; the registry records workflow, snapshot, code version and training metrics, and
    the audit log who asked and why). Deterministic: the same workflow on the same snapshot gives the
    same model id, and registering it again changes nothing."""
    wf = load_workflow(workflow_path)
    snap = resolve_snapshot(paths().snapshots, wf.snapshot)
    model = _train_and_register(snap, Path(workflow_path), at, actor)
    with transaction() as conn:
        write_audit(conn, at=at, actor=actor, action="train", entity=f"model:{model.id}",
                    after={"workflow": wf.name, "snapshot": snap.hash}, reason=reason)
    return model


@_stage
def ensure_incumbent(release_id: str) -> str:
    """The production model; on the very first cycle, train a bootstrap incumbent and tag it production,
    so there is always something to compare against (the report says so)."""
    rel = get_release(release_id)
    if rel["incumbent_model_id"] and rel["status"] != Status.STARTED:
        return rel["incumbent_model_id"]  # a rerun on a release further on: its incumbent is what it was judged against
    prod = registry.tagged("production")
    if prod is not None:
        _update_release(release_id, incumbent_model_id=prod.id,
                        incumbent_bootstrap=prod.created_by == BOOTSTRAP_ACTOR)
        return prod.id
    at = utc_now()
    snap = _snapshot(rel)
    model = _train_and_register(snap, config_dir() / "workflows" / "bootstrap.yaml", at, BOOTSTRAP_ACTOR)
    df = pd.read_parquet(snap.data)
    booster = model.booster()
    s = score(booster, df, model.features)
    global_t = float(np.quantile(s, 1 - BOOTSTRAP_ACTION_RATE))
    with transaction() as conn:
        registry.set_tag(conn, "production", model.id, at=at, actor=BOOTSTRAP_ACTOR,
                         reason="first cycle: no production model existed, bootstrap incumbent trained")
    approvals.create_set(model.id, None, pd.DataFrame(columns=["merchant_id", "suggested_threshold"]), global_t,
                         at=at, actor=BOOTSTRAP_ACTOR, status=approvals.APPROVED, automatic=True,
                         reason=f"bootstrap incumbent: one global threshold blocking {BOOTSTRAP_ACTION_RATE:.1%} "
                                "of the snapshot's traffic")
    _update_release(release_id, incumbent_model_id=model.id, incumbent_bootstrap=True)
    return model.id


@_stage
def train_candidate(release_id: str) -> str:
    rel = get_release(release_id)
    if rel["candidate_model_id"] and is_rerun(rel["status"], Status.TRAINED):
        return rel["candidate_model_id"]  # a rerun on a release further on: its candidate (and tags) stay as they are
    at = utc_now()
    model = _train_and_register(_snapshot(rel), Path(rel["workflow"]), at, PIPELINE)
    with transaction() as conn:
        registry.set_tag(conn, "candidate", model.id, at=at, actor=PIPELINE, reason=f"trained for {release_id}")
    _update_release(release_id, candidate_model_id=model.id, status=Status.TRAINED)
    return model.id


def _incumbent_thresholds(model_id: str) -> tuple[float, pd.Series]:
    live = approvals.live_thresholds(model_id)
    if live is None:
        raise ReleaseStopped(f"The production model {model_id} has no approved thresholds; approve a set first.")
    return live


@_stage
def evaluate_release(release_id: str) -> str:
    """Score both models on the snapshot's out-of-time evaluation window and compute slice metrics."""
    rel = get_release(release_id)
    cand = registry.get_model(rel["candidate_model_id"])
    inc = registry.get_model(rel["incumbent_model_id"])
    wf = load_workflow(rel["workflow"])
    _, ev = split_windows(pd.read_parquet(_snapshot(rel).data), wf)
    leak = evaluation_leak(cand, _snapshot(rel).manifest, ev)
    if leak:
        at = utc_now()
        _stop(release_id, leak, at, [])
        raise ReleaseStopped(leak)
    ev = ev.copy()
    ev["incumbent_score"] = score(inc.booster(), ev, inc.features)
    ev["candidate_score"] = score(cand.booster(), ev, cand.features)
    g, per = _incumbent_thresholds(inc.id)
    cs = release_contracts(release_id, keep=True)
    anchor = drift_anchor(cs, rel)
    if anchor is not None and anchor["model_id"] not in (None, inc.id):  # production before the window's releases
        a = registry.get_model(anchor["model_id"])
        missing = sorted(set(a.features) - set(ev.columns))
        if missing:  # its features are not built any more: no drift figure (the budget says so, never a pass)
            anchor["error"] = (f"the anchor {a.id} reads features these rows do not have "
                               f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        else:
            ev["anchor_score"] = score(a.booster(), ev, a.features)
            ag, aper = _incumbent_thresholds(a.id)
            ev["anchor_threshold"] = thresholds_for(ev["merchant_id"], aper, ag)
    # what the contracts read, from the one set loaded above (judge_policy would read the file again otherwise)
    result = evaluate(ev, per, g, pools=cs.pools(), detailed=cs.detailed_slices(), anchored=bool(cs.drift_budgets()))
    if anchor is not None:
        result.windows["drift_anchor"] = anchor
    result.windows["label_completeness"] = _label_completeness(result.windows, as_date(rel["as_of"]))
    folder = release_dir(release_id)
    result.save(folder)
    summary = result.metrics[result.metrics["slice_type"] == "all"]
    with transaction() as conn:  # one transaction: a rerun replaces the summary, never doubles it
        conn.execute(evaluation_summary.delete().where(evaluation_summary.c.release_id == release_id))
        conn.execute(evaluation_summary.insert(), [
            {"release_id": release_id, "metric": r.metric, "estimator": r.estimator, "model": r.model,
             "estimate": _num(r.estimate), "lo": _num(r.lo), "hi": _num(r.hi),
             "transactions": int(r.transactions), "frauds": int(r.frauds)} for r in summary.itertuples()])
    _update_release(release_id, status=Status.EVALUATED)
    return str(folder)


def evaluation_leak(cand: registry.Model, release_manifest: dict, ev: pd.DataFrame) -> str | None:
    """Why the candidate cannot be judged on these evaluation rows, or None: the rows must be out of time
    for the candidate's training window (a workflow may pin another snapshot or its own windows) and share
    its label maturity (rows of another maturity carry other labels and another fraud-rate feature)."""
    if ev.empty:
        return "The evaluation window holds no rows: nothing to judge the candidate on."
    cand_snap = paths().snapshots / cand.snapshot_hash / "manifest.json"
    if cand_snap.exists():
        cand_features, cand_maturity = snapshot_settings(json.loads(cand_snap.read_text()))
        ev_features, ev_maturity = snapshot_settings(release_manifest)
        if cand_maturity != ev_maturity:
            return (f"The candidate {cand.id[:12]} was trained on a snapshot of {cand_maturity}-day label maturity, "
                    f"the evaluation rows come from one of {ev_maturity} days: labels and features would not mean "
                    "the same. Train the candidate on the release's lineage (or change labels.maturity_days for both).")
        if cand_features != ev_features:
            return (f"The candidate {cand.id[:12]} was trained on features computed with other settings "
                    f"({cand_features.model_dump(mode='json')}) than the evaluation rows' "
                    f"({ev_features.model_dump(mode='json')}): it would be scored on features it never saw. "
                    "Train it on the release's lineage.")
    train_end = cand.metrics.get("training", {}).get("train_end")
    first = str(pd.to_datetime(ev["day"]).min().date())
    if train_end and str(train_end)[:10] >= first:
        return (f"Leaky evaluation: the candidate {cand.id[:12]} was trained on rows up to {str(train_end)[:10]}, "
                f"and the evaluation rows start {first}, inside its training window. Evaluation rows must be out "
                "of time for the candidate: unpin the workflow's snapshot or move its train_window before the "
                "evaluation window.")
    return None


def _label_completeness(windows: dict, as_of: dt.date) -> dict:
    """The share of eventual disputes already arrived in the fitting and judging windows at the release's
    date, from the dispute delays of matured history (release.data.label_completeness)."""
    from release.data.label_completeness import window_completeness

    if windows.get("method") != "time":
        return {}
    spans = {"fitting rows": (windows["fitting_start"], windows["judging_start"]),
             "judging rows": (windows["judging_start"], windows["judging_end"])}
    try:
        return window_completeness(paths().events, as_of, spans)
    except (ValueError, FileNotFoundError) as e:  # reported, never a made-up figure
        return {name: {"completeness": None, "sentence": f"Label completeness of the {name} not estimated: {e}"}
                for name in spans}


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _store_verdicts(release_id: str, stage: str, vs, at: str) -> None:
    with transaction() as conn:
        conn.execute(verdicts.delete().where((verdicts.c.release_id == release_id) & (verdicts.c.stage == stage)))
        if vs:
            conn.execute(verdicts.insert(), [{"release_id": release_id, "stage": stage, **v.as_dict()} for v in vs])


@_stage
def check_contracts(release_id: str) -> bool:
    """Judge the evaluation against the contracts in force; True when no gating contract failed."""
    rel = get_release(release_id)
    at = utc_now()
    ev = Evaluation.load(release_dir(release_id))
    snap = _snapshot(rel)
    manifest = snap.manifest if (snap.path / "manifest.json").exists() else None
    vs = evaluate_contracts(release_contracts(release_id), ev, manifest)
    _store_verdicts(release_id, "offline", vs, at)
    waived = waived_contracts(release_id)
    failed = gate_failures(vs, waived)
    if failed:
        _stop(release_id, "Stopped by release contracts: " + " ".join(v.sentence for v in failed), at, failed)
        return False
    used = sorted({v.contract for v in vs if v.stops and v.contract in waived})
    if used:
        with transaction() as conn:
            write_audit(conn, at=at, actor=PIPELINE, action="release_continued_on_override",
                        entity=f"release:{release_id}", after={"waived": used},
                        reason=f"gating failures of {', '.join(used)} waived for this release only")
    _update_release(release_id, status=Status.CONTRACTS_PASSED, stop_reason=None, updated_at=at)
    return True


@_stage
def request_threshold_approval(release_id: str) -> int:
    """Record the candidate's suggested thresholds as a pending set. If the opt-in auto-approval is on
    (config/thresholds.yaml), segments whose recent suggestions were all accepted unedited are approved
    by the automation, recorded as automatic; the rest waits for a person."""
    from analysis.thresholds import load_threshold_config

    rel = get_release(release_id)
    if is_rerun(rel["status"], Status.AWAITING_APPROVAL) and rel["status"] != Status.AWAITING_APPROVAL:
        s = approvals.latest_set(release_id)  # decided (or further on): a rerun asks nobody again
        if s is not None:
            return s["id"]
    at = utc_now()
    ev = Evaluation.load(release_dir(release_id))
    set_id = approvals.create_set(rel["candidate_model_id"], release_id, ev.suggestions, ev.candidate_threshold,
                                  at=at, actor=PIPELINE, reason="suggested per-merchant thresholds for the candidate")
    auto = load_threshold_config().automation
    if auto.auto_approve.enabled:
        ready = approvals.readiness(auto.readiness_releases, auto.auto_approve.after_unedited_releases,
                                    before_set_id=set_id)
        segments = approvals.segments_ready(ready, auto.auto_approve)
        if segments:
            approvals.auto_approve_segments(release_id, segments, after=auto.auto_approve.after_unedited_releases,
                                            at=at)
    _update_release(release_id, status=Status.AWAITING_APPROVAL, updated_at=at)
    if approvals.latest_set(release_id)["status"] == approvals.PENDING:  # not wholly approved by the automation
        notify_once("approval_requested", release_id,
                    f"{release_id}: {len(ev.suggestions):,} suggested per-merchant thresholds await a decision: "
                    "Airflow's Required actions, or `fraudcd thresholds show | edit | approve | reject`.",
                    at=at, severity="warning", details={"set_id": set_id})
    return set_id


def threshold_approval_summary(release_id: str, top: int = 10) -> str:
    """What a person sees in the Airflow approval form (Markdown): the set at a glance and its largest
    merchants."""
    s = approvals.latest_set(release_id)
    items = approvals.set_items(s["id"])
    outcome = items["outcome"].value_counts()
    lines = [f"**{len(items):,} merchants** for candidate `{s['model_id']}`; global threshold "
             f"{s['global_threshold']:.4f}. {int(items['shrunk'].fillna(False).sum()):,} thin merchants shrunk "
             f"toward their segment; {int(outcome.get(approvals.AUTO_APPROVED, 0)):,} already approved by the "
             "opt-in automation.", "",
             "| merchant | segment | transactions | current | suggested | reason |", "|---|---|---:|---:|---:|---|"]
    for r in items.sort_values("support", ascending=False).head(top).itertuples():
        cur = "-" if pd.isna(r.current) else f"{r.current:.4f}"
        lines.append(f"| {r.merchant_id} | {r.segment} | {int(r.support or 0):,} | {cur} | {r.proposed:.4f} | "
                     f"{r.reason} |")
    lines += ["", f"Approve all, approve some (list them in *merchants*; the others get the global threshold) "
              f"or reject; *edits* changes values first. From a terminal: `fraudcd thresholds show --release "
              f"{release_id}`, `fraudcd thresholds export --release {release_id}`."]
    return "\n".join(lines)


@_stage
def apply_threshold_response(release_id: str, option: str, params: dict, *, responder: str, at: str) -> str:
    """A response to the Airflow approval task. If the decision is already recorded (it came from the
    CLI, which answers the task afterwards) nothing changes; otherwise the response from the Airflow UI
    is applied: its edits and decision in one transaction, with the responder as actor. Returns the
    set's status."""
    s = approvals.latest_set(release_id)
    if s is not None and s["status"] == approvals.PENDING:
        _respond_as_airflow_user(release_id, option, params, responder=responder, at=at)
    approval_decided(release_id)
    return approvals.latest_set(release_id)["status"]


def _respond_as_airflow_user(release_id: str, option: str, params: dict, *, responder: str, at: str) -> None:
    """The Airflow UI's response, recorded with the Airflow user beside the stated name."""
    from release.orchestration.hitl import APPROVE_ALL, APPROVE_SOME, REJECT, form_reason

    with acting(None, airflow_user=responder):
        reason = form_reason(params)
        actor = f"{responder} (via Airflow)"
        merchants = list(params.get("merchants") or [])
        edits = dict(params.get("edits") or {})
        if option == REJECT:
            approvals.decide(release_id, approvals.REJECTED, actor=actor, reason=reason, at=at)
        elif option == APPROVE_SOME:
            if not merchants:
                raise approvals.ThresholdInputError([f"'{APPROVE_SOME}' needs the merchants to approve in "
                                                     "'merchants'; none were given"], "Airflow response")
            approvals.decide(release_id, approvals.APPROVED, actor=actor, reason=reason, at=at,
                             merchants=merchants, edits=edits)
        elif option == APPROVE_ALL:
            approvals.decide(release_id, approvals.APPROVED, actor=actor, reason=reason, at=at, edits=edits)
        else:
            raise ValueError(f"Unknown response {option!r}; expected one of {APPROVE_ALL!r}, {APPROVE_SOME!r}, "
                             f"{REJECT!r}.")


@_stage
def expire_threshold_approval(release_id: str, waited: str) -> None:
    """Nobody decided within the approval task's response timeout: nothing goes live, the release stops."""
    get_release(release_id)  # an unknown release raises here, before anything is written
    at = utc_now()
    approvals.expire(release_id, actor=PIPELINE, at=at,
                     reason=f"no decision on the suggested thresholds within {waited}; nothing went live")
    approval_decided(release_id)


@_stage
def approval_decided(release_id: str) -> bool:
    """True once the thresholds were decided (by a person, the automation, or nobody in time). A
    rejection or an expiry stops the release (the report still gets written and says who and why);
    nothing reaches traffic."""
    s = approvals.latest_set(release_id)
    if s is None or s["status"] == approvals.PENDING:
        return False
    rel = get_release(release_id)
    if rel["status"] != Status.AWAITING_APPROVAL:  # a rerun of the task after the decision was recorded
        return True
    at = utc_now()
    if s["status"] in (approvals.REJECTED, approvals.EXPIRED):
        reason = (f"Thresholds rejected by {s['decided_by']}: {s['reason']}" if s["status"] == approvals.REJECTED
                  else f"Thresholds not decided: {s['reason']}.")
        _update_release(release_id, status=Status.STOPPED, stop_reason=reason, updated_at=at)
        with transaction() as conn:
            registry.set_tag(conn, "candidate", None, at=at, actor=PIPELINE, reason=reason[:500])
        return True
    _update_release(release_id, status=Status.APPROVED, updated_at=at)
    return True


@_stage
def rejudge_approved_policy(release_id: str) -> bool:
    """Judge the offline contracts again on the policy people approved (partial approvals, edits: every
    merchant not approved gets the global threshold), on the same judging rows as the suggestions, before
    any traffic moves. A gating failure (or an unjudged gate that stops) stops the release, unless a named
    person waived that contract. True when the approved policy may go on to shadow; the verdicts are
    stored under the stage "approved" and the report shows both judgements."""
    rel = get_release(release_id)
    if rel["status"] not in (Status.APPROVED, Status.REJUDGED):
        return rel["status"] in (Status.REJUDGED, Status.BACKTESTED) or rel["status"] in ramp.LIVE
    at = utc_now()
    folder = release_dir(release_id)
    ev = Evaluation.load(folder)
    live = approvals.live_thresholds(rel["candidate_model_id"])
    if live is None or ev.judging is None:
        reason = ("The approved policy cannot be re-judged: "
                  + ("no approved thresholds for the candidate." if live is None
                     else "the evaluation kept no judging rows (evaluate the release again)."))
        _stop(release_id, reason, at, [])
        return False
    g, per = live
    judged, vs = _judge_policy(release_id, ev, g, per, "approved")
    judged.save(folder / "approved")
    _store_verdicts(release_id, "approved", vs, at)
    failed = gate_failures(vs, waived_contracts(release_id))
    if failed:
        _stop(release_id, "Stopped by re-judging the approved policy: " + " ".join(v.sentence for v in failed), at,
              failed)
        return False
    _update_release(release_id, status=Status.REJUDGED, stop_reason=None, updated_at=at)
    return True


def _judge_policy(release_id: str, ev: Evaluation, g: float, per, source: str, cs=None):
    """(the evaluation of one policy of the release's candidate, its verdicts): ``g`` for every merchant
    without its own threshold in ``per``, judged against the incumbent on the evaluation's judging rows by
    the contracts kept with the release (``cs``: as the caller already read them), the data contracts left
    out (they judged the training set)."""
    from analysis.evaluation import judge_policy

    cs = release_contracts(release_id) if cs is None else cs
    judged = judge_policy(ev.judging, ev.candidate_threshold, g, per, pools=cs.pools(), source=source,
                          detailed=cs.detailed_slices(), anchored=bool(cs.drift_budgets()), windows=ev.windows,
                          n_boot=int(ev.recall_diff.get("n_boot", 1000)))
    judged.operating_fpr, judged.suggestions = ev.operating_fpr, ev.suggestions
    judged.judging = None  # the rows are the evaluation's; one copy
    snap = _snapshot(get_release(release_id))
    manifest = snap.manifest if (snap.path / "manifest.json").exists() else None
    return judged, [v for v in evaluate_contracts(cs, judged, manifest) if v.kind != "data_contract"]


def _stop(release_id: str, reason: str, at: str, failed) -> None:
    _update_release(release_id, status=Status.STOPPED, stop_reason=reason, updated_at=at)
    with transaction() as conn:
        registry.set_tag(conn, "candidate", None, at=at, actor=PIPELINE, reason=reason[:500])
        write_audit(conn, at=at, actor=PIPELINE, action="release_stopped", entity=f"release:{release_id}",
                    after={"failed": [v.contract + ":" + v.slice for v in failed]}, reason=reason)


def _backtest_traffic(release_id: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Recent history [start, end) scored offline by production (with its live thresholds) and by the
    candidate (with its approved thresholds)."""
    rel = get_release(release_id)
    # the same label maturity and feature settings as the training snapshot, so features mean the same online
    features, maturity = snapshot_settings(_snapshot(rel).manifest)
    df = compute_features(paths().events, start, end, maturity_days=maturity, features=features)
    inc = registry.get_model(rel["incumbent_model_id"])
    cand = registry.get_model(rel["candidate_model_id"])
    ig, iper = _incumbent_thresholds(inc.id)
    live = approvals.live_thresholds(cand.id)
    if live is None:
        raise ReleaseStopped(f"The candidate {cand.id} has no approved thresholds; it cannot see traffic.")
    cg, cper = live
    df["production_score"] = score(inc.booster(), df, inc.features)
    df["candidate_score"] = score(cand.booster(), df, cand.features)
    df["production_action"] = df["production_score"] >= thresholds_for(df["merchant_id"], iper, ig)
    df["candidate_action"] = df["candidate_score"] >= thresholds_for(df["merchant_id"], cper, cg)
    return df


@_stage
def run_backtest(release_id: str) -> bool:
    """The backtest: replay the last ``backtest.days`` of history (config/ramp.yaml) through both models
    with the approved policies, offline, before the candidate goes near live traffic. Decision diffs per
    country (files ``backtest_diffs.parquet``, ``backtest_log.parquet`` in the release folder) and the
    action-rate guardrail judged on them (verdicts under the stage "backtest"). It never touches the live
    deployment. A breach stops the release; True when it may go on to shadow."""
    rel = get_release(release_id)
    if rel["status"] not in (Status.REJUDGED, Status.BACKTESTED):  # approved and re-judged, or a rerun
        return rel["status"] == Status.BACKTESTED or rel["status"] in ramp.LIVE
    d = as_date(rel["as_of"])
    at = utc_now()
    plan = ramp.load_plan(ramp_file())
    traffic = _backtest_traffic(release_id, d - dt.timedelta(days=plan.backtest.days), d)
    diffs = decision_diffs(traffic)
    atomic_write_parquet(diffs, release_dir(release_id) / "backtest_diffs.parquet")
    atomic_write_parquet(traffic[["tx_id", "ts", "card_id", "merchant_id", "merchant_country", "amount",
                                  "production_score", "candidate_score", "production_action", "candidate_action"]],
                         release_dir(release_id) / "backtest_log.parquet")
    g = plan.guardrails.action_rate_shift
    vs = online_action_rate_verdicts(diffs, "backtest_country_action_rate_shift", g.max_relative_shift,
                                     g.min_absolute_shift, g.min_support, g.confidence)
    _store_verdicts(release_id, "backtest", vs, at)
    failed, reason = backtest_outcome(vs, len(traffic), plan.backtest.days)
    if failed:
        _stop(release_id, reason, at, failed)
        return False
    _update_release(release_id, status=Status.BACKTESTED, updated_at=at, reason=reason)
    return True


def backtest_outcome(verdicts: list, n_rows: int, days: int) -> tuple[list, str]:
    """(the failed verdicts, the sentence the release records) for a backtest's verdicts. A country
    beyond the limit stops the release. A country the backtest could not judge does not stop it (the
    shadow stage judges every guarded slice on live traffic, and there an unjudged guardrail never
    passes), but the sentence names it: an undecided backtest is not reported as passed."""
    failed = [v for v in verdicts if v.verdict == FAIL]
    if failed:
        return failed, f"Stopped by the backtest on the last {days} days: " + " ".join(v.sentence for v in failed)
    head = f"backtest on {n_rows:,} transactions of the last {days} days"
    if not verdicts:
        return [], f"{head}: nothing to judge, not passed"
    undecided = [v.slice for v in verdicts if v.verdict == INSUFFICIENT]
    if not undecided:
        return [], f"{head} passed: every country ({len(verdicts)}) within the limit"
    return [], (f"{head}: no country beyond the limit, but {len(undecided)} of {len(verdicts)} undecided "
                f"({', '.join(undecided)}): not passed, left to the shadow stage's guardrails on live traffic")


@_stage
def deploy_candidate(release_id: str) -> str:
    """Put the backtested candidate into shadow in the running scoring service (the live deployment, through
    the state machine). Returns the release's status: a release that did not pass the backtest (stopped,
    rejected) never reaches traffic; a rerun on a live or finished release changes nothing."""
    from release.rollout.driver import deploy

    rel = get_release(release_id)
    if rel["status"] == Status.BACKTESTED:
        deploy(release_id, rel["candidate_model_id"], at=utc_now())
    return get_release(release_id)["status"]


def rollout_done(release_id: str, or_needs_person: bool = False) -> bool:
    """Whether the release's rollout is over (promoted, rolled back, stopped, or never deployed), or, with
    ``or_needs_person``, waits for a person: what the DAG's rollout task waits for. Each call looks at
    the evidence once and takes at most one step."""
    from release.rollout.driver import advance, needs_person

    rel = get_release(release_id)
    if rel["status"] in ramp.LIVE:
        with logical_date(at_of(as_date(rel["as_of"]))):
            out = advance(release_id)
        rel = get_release(release_id)
        if out["action"] not in ("none", "waiting"):
            log.warning("rollout of %s: %s", release_id, {k: out.get(k) for k in ("action", "state", "to", "why")})
            _report_stage(release_id)
    return rel["status"] not in ramp.LIVE or (or_needs_person and needs_person(release_id))


def stage_report_log(release_id: str) -> Path:
    """Where a report rewritten after a rollout stage says what went wrong, if anything did."""
    return paths().releases / release_id / "stage-report.log"


def _report_stage(release_id: str):
    """Rewrite the report after a rollout stage changed (a step taken, a pause, a question) or a person changed
    its live thresholds, so people read the rollout as it happens: `fraudcd report RELEASE` in a process of its
    own, in its own session, so the rollout never waits for the pictures (a person's answer, a breach's rollback
    come first) and the process outlives a task that defers. The stage is already committed: a report that
    cannot be written says why in ``stage_report_log`` and undoes nothing (the release's last task writes the
    report again). Returns the process (None when it could not start; logged)."""
    import os
    import subprocess
    import sys

    out = stage_report_log(release_id)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "ab") as f:
            return subprocess.Popen([sys.executable, "-m", "release.cli.main", "report", release_id],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                                    start_new_session=True, env=dict(os.environ))
    except OSError:
        log.exception("the report of %s could not be rewritten after a rollout stage", release_id)
        return None


@_stage
def finish(release_id: str) -> str:
    """The release's end state, once its rollout is over; writes the report."""
    return get_release(release_id)["status"]


def latest_release() -> dict | None:
    with engine().connect() as conn:
        r = conn.execute(sa.select(releases).order_by(releases.c.as_of.desc())).first()
    return dict(r._mapping) if r else None


def write_release_report(release_id: str) -> str:
    """(Re)write the release's report and the index; the first time, the feature drift of the candidate's
    training snapshot against the incumbent's is computed and kept beside the evaluation (both snapshots are
    immutable, so later stages' reports reuse it)."""
    from analysis.report import FEATURE_DRIFT, write_report
    from release.orchestration.monitoring import snapshot_drift

    import fcntl

    folder = release_dir(release_id)
    paths().reports.mkdir(parents=True, exist_ok=True)
    # one writer of a release's report at a time (a stage's rewrite in the background, the DAG's, a person's
    # `fraudcd report`): each reads the state once it holds the lock, so the last to write shows the newest
    with open(paths().reports / f".{release_id}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rel = get_release(release_id)
        if rel and rel.get("candidate_model_id") and rel.get("incumbent_model_id") \
                and not (folder / FEATURE_DRIFT).exists():
            atomic_write_parquet(snapshot_drift(rel["candidate_model_id"], rel["incumbent_model_id"]),
                                 folder / FEATURE_DRIFT)
        return str(write_report(release_id, folder, paths().reports))


# how each end of a release is announced: (alert kind, severity, what happened)
OUTCOMES = {Status.PROMOTED: ("release_shipped", "info", "shipped: the candidate is production"),
            Status.ROLLED_BACK: ("release_rolled_back", "warning", "rolled back: production is unchanged"),
            Status.STOPPED: ("release_stopped", "warning", "stopped before any traffic moved")}


def outcome_reason(rel: dict) -> str:
    """Why a release ended as it did, as a sentence (its stop reason, with a full stop); "" when it shipped or
    no reason is recorded. The alert and the DAG run's note (release.orchestration.run_note) both say it."""
    why = (rel.get("stop_reason") or "").strip() if Status(rel["status"]) != Status.PROMOTED else ""
    return why + "." if why and not why.endswith((".", "!", "?")) else why


def announce_outcome(release_id: str) -> dict | None:
    """Tell people how the release's run ended (an alert: the state store, the log, the webhook), once per
    release: shipped, rolled back or stopped, with the reason and the report's path. A run that ends with
    the release still open (the finish task run by hand while the rollout is live) is announced as
    unfinished. A green
    DAG run says the pipeline worked, not that the release shipped: this says which."""
    rel = get_release(release_id)
    status = Status(rel["status"])
    kind, severity, what = OUTCOMES.get(status, ("release_unfinished", "warning",
                                                 f"its run ended with the release still {status}"))
    why = outcome_reason(rel)
    why = f" {why}" if why else ""
    report = f" Report: {rel['report_path']}" if rel.get("report_path") else ""
    alert = notify_once(kind, release_id, f"{release_id} {what}.{why}{report}", at=utc_now(), severity=severity,
                        details={"status": str(status), "report": rel.get("report_path"),
                                 "candidate_model_id": rel.get("candidate_model_id")})
    if alert is not None:
        from analysis.report import write_index

        write_index(paths().reports)  # the index lists the alerts: this one too
    return alert
