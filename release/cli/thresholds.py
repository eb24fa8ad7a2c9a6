"""`fraudcd thresholds ...`: show, approve, edit, reject, export/import, roll back per-merchant thresholds."""
from __future__ import annotations

import sys
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from release.cli.common import (AS_HELP, _actor_or_login, _airflow_identity, _emit, _fail, _fmt, _note, _now, _out,
                                _reason_given, _row, _store, console, err)

thresholds_app = typer.Typer(no_args_is_help=True, help="Show, approve, edit, reject, export/import, roll back "
                                                      "per-merchant thresholds.")


def _thresholds_set(release: str) -> dict:
    from release.state import approvals

    s = approvals.latest_set(release)
    if s is None:
        _fail(f"release {release!r} has no threshold suggestions (is the release id right? see `fraudcd status`)", 2)
    return s


def _airflow_request(release: str) -> dict | None:
    """The release's approval task waiting in Airflow, if any (None when Airflow cannot be read)."""
    from release.orchestration import hitl

    try:
        return hitl.open_request(release)
    except Exception as e:  # noqa: BLE001 - the state store decision stands without Airflow
        _note("note", f"could not read Airflow's waiting requests: {e}")
        return None


def _answer_airflow(release: str, s: dict, who: str) -> str:
    """Answer the release's waiting Airflow approval task with the decision recorded in the state store:
    through the REST API as the caller's Airflow user when Airflow runs for real, through Airflow's own
    response handler in the `dags test` harness."""
    from release.state import approvals
    from release.orchestration import hitl

    if s["status"] not in (approvals.APPROVED, approvals.REJECTED):
        return ""
    items = approvals.set_items(s["id"])
    some = s["status"] == approvals.APPROVED and (items["outcome"] == approvals.NOT_APPROVED).any()
    option = hitl.REJECT if s["status"] == approvals.REJECTED else hitl.APPROVE_SOME if some else hitl.APPROVE_ALL
    merchants = items.loc[items["outcome"] == approvals.APPROVED, "merchant_id"].tolist() if some else []
    try:
        r = hitl.respond(release, option, user=who, reason=s["reason"] or "", merchants=merchants)
    except Exception as e:  # noqa: BLE001
        return (f"warning: the decision is recorded, but answering the waiting Airflow task failed "
                f"({type(e).__name__}: {e}); run the same command again to retry")
    if r is None:
        return ("no Airflow approval task is waiting for this release; its approve_thresholds task takes the "
                "recorded decision when it runs")
    return f"answered Airflow task {r['dag_id']}.{r['task_id']} (run {r['run_id']}) as {r['responded_by']}: {option}"


@thresholds_app.command("show")
def thresholds_show(release: str = typer.Option(..., help="release id, e.g. rel-2026-05-17"),
                    limit: int = typer.Option(20, help="rows shown, largest merchants first"),
                    merchant: Optional[List[str]] = typer.Option(None, "--merchant", help="only these merchants"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """The release's suggested thresholds: current, suggested, expected block rate, recall before/after,
    whether edited, and what became of each; whether Airflow's approval task is waiting."""
    import pandas as pd

    from release.state import approvals
    from release.core.settings import paths

    _store("read")
    s = _thresholds_set(release)
    items = approvals.set_items(s["id"])
    detail = paths().releases / release / "suggestions.parquet"
    if detail.exists():
        extra = pd.read_parquet(detail)
        keep = [c for c in extra.columns if c not in items.columns or c == "merchant_id"]
        items = items.merge(extra[keep], on="merchant_id", how="left")
    if merchant:
        unknown = sorted(set(merchant) - set(items["merchant_id"]))
        if unknown:
            _fail(f"not among the suggestions of {release}: {', '.join(unknown)}", 2)
        items = items[items["merchant_id"].isin(merchant)]
    items = items.sort_values(["support", "merchant_id"], ascending=[False, True])
    live = approvals.live_thresholds(s["model_id"]) if s["status"] == approvals.APPROVED else None
    if live:  # each merchant's threshold in force: its own, else the global one
        from analysis.metrics import thresholds_for

        items["live"] = thresholds_for(items["merchant_id"], live[1], live[0])
    else:
        items["live"] = float("nan")
    counts = {k: int(v) for k, v in items["outcome"].value_counts().items()}
    req = _airflow_request(release) if s["status"] == approvals.PENDING else None
    if as_json:
        rows = items.astype(object).where(items.notna(), None).to_dict("records")
        return _emit({"set": s, "outcomes": counts, "edited": int(items["edited"].sum()), "airflow_request": req,
                      "thresholds": rows}, True)
    by = f" by {s['decided_by']} at {s['decided_at']} ({s['reason']})" if s["decided_by"] else ""
    console.print(Text.assemble(f"{release}: threshold set {s['id']} for model {s['model_id']}: ",
                                (str(s["status"]), "bold"),
                                f"{by}; global threshold {s['global_threshold']:.4f}; {len(items):,} merchants ("
                                + ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in counts.items())
                                + f", {int(items['edited'].sum()):,} edited)"), highlight=False)
    if req:
        _out(f"Airflow: task {req['dag_id']}.{req['task_id']} is waiting for a decision"
             + (f" until {req['deadline']}" if req["deadline"] else ""))
    t = Table()
    for c in ("merchant", "segment", "transactions", "current", "suggested", "block rate now -> expected",
              "recall before -> after", "status", "reason"):
        t.add_column(c)
    for r in items.head(limit).to_dict("records"):
        proposed = _fmt(r["proposed"]) + (f" (edited; suggested {_fmt(r['suggested'])})" if r["edited"] else "")
        if r["live"] == r["live"] and r["live"] != r["proposed"]:
            proposed += f"; live now {_fmt(r['live'])}"
        rate = (f"{_fmt(100 * r.get('incumbent_block_rate', float('nan')), '.2f')}% -> "
                f"{_fmt(100 * r.get('expected_block_rate', float('nan')), '.2f')}%")
        rec = (f"{_fmt(100 * r.get('recall_before', float('nan')), '.0f')}% -> "
               f"{_fmt(100 * r.get('recall_after', float('nan')), '.0f')}% "
               f"[{_fmt(100 * r.get('recall_after_lo', float('nan')), '.0f')}, "
               f"{_fmt(100 * r.get('recall_after_hi', float('nan')), '.0f')}]")
        cur = _fmt(r["current"])
        if cur == "-" and r.get("threshold_in_force") == r.get("threshold_in_force") and "threshold_in_force" in r:
            cur = f"{_fmt(r['threshold_in_force'])} (global)"  # it had none of its own
        _row(t, r["merchant_id"], r["segment"], f"{int(r['support'] or 0):,}", cur, proposed,
             rate, rec, str(r["outcome"]).replace("_", " ") + (" (thin)" if r["shrunk"] else ""), r["reason"])
    console.print(t)
    if len(items) > limit:
        _out(f"... {len(items) - limit:,} more (--limit, --json, or `fraudcd thresholds export`)")


def _decide(release: str, decision: str, actor: Optional[str], reason: str, merchants: Optional[List[str]] = None,
            as_json: bool = False) -> None:
    from release.state import approvals

    who = _actor_or_login(actor, airflow=True)
    why = _reason_given(reason)
    _store("write")
    _thresholds_set(release)
    _airflow_identity()
    try:
        out = approvals.decide(release, decision, actor=who, reason=why, at=_now(), merchants=merchants or None)
    except approvals.ThresholdInputError as e:
        _fail(str(e), 2)
    except approvals.ApprovalError as e:
        s = approvals.latest_set(release)
        note = _answer_airflow(release, s, s["decided_by"] or who) if _airflow_request(release) else ""
        _fail(str(e) + (f"\n{note}" if note else ""), 1)
    airflow = _answer_airflow(release, approvals.latest_set(release), who)
    if as_json:
        return _emit({**out, "release": release, "by": who, "airflow": airflow}, True)
    if decision == approvals.APPROVED:
        _out(f"thresholds of {release} approved by {who}: {out['approved']:,} merchants approved"
             + (f" ({out['edited']:,} edited)" if out["edited"] else "")
             + (f", {out['auto_approved']:,} auto-approved" if out["auto_approved"] else "")
             + (f", {out['not_approved']:,} not approved (the global threshold applies to them)"
                if out["not_approved"] else ""))
    else:
        _out(f"thresholds of {release} rejected by {who}: nothing goes live, the release stops")
    _out(airflow)


@thresholds_app.command("approve")
def thresholds_approve(release: str = typer.Option(..., help="release id"),
                       actor: Optional[str] = typer.Option(None, "--as", help=AS_HELP),
                       reason: str = typer.Option(..., help="why (recorded)"),
                       merchant: Optional[List[str]] = typer.Option(
                           None, "--merchant", help="approve only these (repeat the option); the others get no "
                                                    "threshold of their own: the global one applies"),
                       as_json: bool = typer.Option(False, "--json")) -> None:
    """Approve the release's suggested (or edited) thresholds as NAME: all, or only --merchant ones."""
    _decide(release, "approved", actor, reason, merchant, as_json)


@thresholds_app.command("reject")
def thresholds_reject(release: str = typer.Option(..., help="release id"),
                      actor: Optional[str] = typer.Option(None, "--as", help=AS_HELP),
                      reason: str = typer.Option(..., help="why (recorded)"),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Reject the release's suggested thresholds as NAME; nothing goes live and the release stops."""
    _decide(release, "rejected", actor, reason, None, as_json)


def _edited(release: str, out: dict, who: str, as_json: bool) -> None:
    if as_json:
        return _emit({**out, "release": release, "by": who}, True)
    where = "live (new versions of the model's thresholds)" if out["live"] else "in the pending set"
    _out(f"{out['changed']:,} threshold(s) of {release} changed {where} by {who}"
         + (f"; {out['unchanged']:,} already had that value" if out["unchanged"] else "")
         + (f"; change id {out['change_id']} (`fraudcd thresholds rollback --change {out['change_id']}`)"
            if out["change_id"] else ""))
    for m, e in list(out["edits"].items())[:20]:
        _out(f"  {m}: {_fmt(e['before'])} -> {_fmt(e['after'])}")
    j = out.get("judgement")
    if j and out["changed"]:
        if not j["judged"]:
            _out(f"not judged ({j['why']}): applied unjudged, on the record (--unjudged)")
        else:
            counts = {}
            for v in j["verdicts"]:
                counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
            _out(f"judged by the contracts of {release} on the live policy as edited: "
                 + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                 + (f"; applied despite {', '.join(j['despite'])} (on the record)" if j["despite"] else ""))
    if out.get("report_rewrite"):
        _out(f"its report is being rewritten with this change (`fraudcd report {release}` writes it again)")


DESPITE_HELP = ("a live edit only: apply it although this contract of the release stops it (repeatable; recorded "
                "with the edit)")
UNJUDGED_HELP = "a live edit only: apply it although the release kept nothing to judge it on (recorded)"


@thresholds_app.command("edit")
def thresholds_edit(release: str = typer.Option(..., help="release id"),
                    merchant: List[str] = typer.Option(..., "--merchant", help="merchant id (repeatable)"),
                    threshold: List[str] = typer.Option(..., "--threshold",
                                                        help="its new threshold in [0, 1], one per --merchant"),
                    actor: Optional[str] = typer.Option(None, "--as", help=AS_HELP),
                    reason: str = typer.Option(..., help="why (recorded)"),
                    despite: Optional[List[str]] = typer.Option(None, "--despite", help=DESPITE_HELP),
                    unjudged: bool = typer.Option(False, "--unjudged", help=UNJUDGED_HELP),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """Change merchants' thresholds: in a pending set before approval (judged with the approved policy), or live
    in an approved one, judged first by the release's contracts on the live policy as edited: refused (exit 1,
    nothing applied) where a gate stops it."""
    who = _actor_or_login(actor, airflow=True)
    why = _reason_given(reason)
    if len(merchant) != len(threshold):
        _fail(f"give one --threshold per --merchant; got {len(merchant)} merchant(s) and {len(threshold)} "
              "threshold(s)", 2)
    dup = sorted({m for m in merchant if merchant.count(m) > 1})
    if dup:
        _fail(f"each merchant at most once; repeated: {', '.join(dup)}", 2)
    _store("write")
    _thresholds_set(release)
    _edit(release, dict(zip(merchant, threshold)), who, why, despite, unjudged, "cli", as_json)


def _edit(release: str, edits, who: str, why: str, despite, unjudged: bool, source: str, as_json: bool,
          where: str = "") -> None:
    """``fraudcd thresholds edit`` and ``import``: release.orchestration.live_edits.edit_thresholds, its refusals
    as exit codes (2: bad input; 1: refused)."""
    from release.state import approvals
    from release.orchestration.live_edits import LiveEditRefused, edit_thresholds

    try:
        out = edit_thresholds(release, edits, actor=who, reason=why, at=_now(), despite=despite or (),
                              unjudged=unjudged, source=source)
    except approvals.ThresholdInputError as e:
        _fail(f"{where}{e}", 2)
    except (approvals.ApprovalError, LiveEditRefused) as e:
        _fail(str(e), 1)
    _edited(release, out, who, as_json)


@thresholds_app.command("export")
def thresholds_export(release: str = typer.Option(..., help="release id"),
                      out: str = typer.Option("-", "--out", help="CSV file to write; '-' for standard output")) -> None:
    """Write the release's suggestions as CSV: edit the `threshold` column in a spreadsheet, then import."""
    from pathlib import Path

    from release.state import approvals
    from release.core.io import atomic_write_text

    _store("read")
    _thresholds_set(release)
    text = approvals.export_csv(release)
    if out == "-":
        sys.stdout.write(text)
        return
    atomic_write_text(text, Path(out))
    import csv
    import io

    rows = sum(1 for _ in csv.reader(io.StringIO(text, newline=""))) - 1  # a cell may hold a newline
    _out(f"wrote {rows:,} merchants of {release} to {out}; edit the threshold column, then "
         f"`fraudcd thresholds import --release {release} --file {out} --as NAME --reason ...`", err)


@thresholds_app.command("import")
def thresholds_import(release: str = typer.Option(..., help="release id"),
                      file: str = typer.Option(..., "--file", help="an edited export (CSV)"),
                      actor: Optional[str] = typer.Option(None, "--as", help=AS_HELP),
                      reason: str = typer.Option(..., help="why (recorded)"),
                      despite: Optional[List[str]] = typer.Option(None, "--despite", help=DESPITE_HELP),
                      unjudged: bool = typer.Option(False, "--unjudged", help=UNJUDGED_HELP),
                      as_json: bool = typer.Option(False, "--json")) -> None:
    """Apply an edited CSV export: every row checked first; any problem and nothing is applied. Into an approved
    set, a live edit: judged first, as `edit` is."""
    from pathlib import Path

    from release.state import approvals

    who = _actor_or_login(actor, airflow=True)
    why = _reason_given(reason)
    _store("write")
    _thresholds_set(release)
    try:
        # a spreadsheet may add a byte-order mark; newline="" keeps a carriage return inside a quoted cell
        with open(Path(file), encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {file}: {e}", 2)
    try:
        values = approvals.csv_edits(release, text)
    except approvals.ThresholdInputError as e:
        _fail(f"{file}: {e}", 2)
    except approvals.ApprovalError as e:
        _fail(str(e), 1)
    _edit(release, values, who, why, despite, unjudged, "csv", as_json, where=f"{file}: ")


def _model_or_production(model: Optional[str]) -> str:
    from release.state import registry

    if model:
        return model
    prod = registry.tagged("production")
    if prod is None:
        _fail("no production model; name one with --model", 2)
    return prod.id


@thresholds_app.command("rollback")
def thresholds_rollback(merchant: Optional[List[str]] = typer.Option(
                            None, "--merchant", help="put this merchant's threshold back to before its last change"),
                        change: Optional[int] = typer.Option(None, "--change", help="undo one change (see history)"),
                        model: Optional[str] = typer.Option(None, help="default: the production model"),
                        actor: Optional[str] = typer.Option(None, "--as", help=AS_HELP),
                        reason: str = typer.Option(..., help="why (recorded)"),
                        as_json: bool = typer.Option(False, "--json")) -> None:
    """Roll back live thresholds (not the model: that is `fraudcd rollback`)."""
    from release.state import approvals

    who = _actor_or_login(actor, airflow=True)
    why = _reason_given(reason)
    if bool(merchant) == (change is not None):
        _fail("name the merchants to roll back (--merchant, repeatable) or one --change, not both", 2)
    _store("write")
    mid = _model_or_production(model)
    try:
        out = approvals.rollback(mid, merchants=merchant or None, change_id=change, actor=who, reason=why, at=_now())
    except approvals.ThresholdInputError as e:
        _fail(str(e), 2)
    except approvals.ApprovalError as e:
        _fail(str(e), 1)
    if as_json:
        return _emit(out, True)
    _out(f"thresholds of model {mid} rolled back by {who} (change {out['change_id']}):")
    for m, e in list(out["merchants"].items())[:20]:
        _out(f"  {m}: {_fmt(e['before'])} -> {_fmt(e['after'])}")


@thresholds_app.command("history")
def thresholds_history(merchant: Optional[str] = typer.Option(None, "--merchant", help="one merchant's versions"),
                       model: Optional[str] = typer.Option(None, help="default: the production model"),
                       limit: int = typer.Option(30, help="most recent versions shown"),
                       as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version of a model's live thresholds: who changed what, when, why, and the change id."""
    from release.state import approvals

    _store("read")
    mid = _model_or_production(model)
    h = approvals.history(mid, merchant).tail(limit)
    if as_json:
        return _emit(h.astype(object).where(h.notna(), None).to_dict("records"), True)
    t = Table(title=Text(f"threshold versions of model {mid}"))
    for c in ("change", "merchant", "version", "before", "after", "what"):
        t.add_column(c, no_wrap=True)
    for c in ("at", "who", "why"):
        t.add_column(c)
    for r in h.to_dict("records"):
        _row(t, r["change_id"], r["merchant_id"], r["version"], _fmt(r["previous_value"]), _fmt(r["value"]),
             r["change"] + (" (automatic)" if r["automatic"] else ""), r["at"], r["actor"], r["reason"])
    console.print(t)


@thresholds_app.command("readiness")
def thresholds_readiness(as_json: bool = typer.Option(False, "--json")) -> None:
    """Automation readiness per merchant segment: the share of suggestions accepted unedited over the
    last releases, the streak of unedited releases, and whether opt-in auto-approval would fire."""
    from analysis.thresholds import load_threshold_config
    from release.state import approvals

    _store("read")
    auto = load_threshold_config().automation
    r = approvals.readiness(auto.readiness_releases, auto.auto_approve.after_unedited_releases)
    ready = set(approvals.segments_ready(r, auto.auto_approve))
    r["auto_approve"] = [("on: approves next release" if s in ready else "on: not yet") if auto.auto_approve.enabled
                         else "off" for s in r["segment"]]
    if as_json:
        return _emit({"auto_approve": auto.auto_approve.model_dump(), "readiness_releases": auto.readiness_releases,
                      "segments": r.to_dict("records")}, True)
    t = Table(title=f"automation readiness (last {auto.readiness_releases} releases; auto-approve after "
                    f"{auto.auto_approve.after_unedited_releases} unedited, "
                    f"{'enabled' if auto.auto_approve.enabled else 'off'})")
    for c in ("segment", "releases", "suggestions", "accepted unedited", "streak", "auto-approve"):
        t.add_column(c)
    for x in r.to_dict("records"):
        _row(t, x["segment"], x["releases"], f"{x['suggestions']:,}",
             f"{x['accepted_unedited']:,} ({_fmt(100 * x['share_unedited'], '.0f')}%)", x["streak"], x["auto_approve"])
    console.print(t)
