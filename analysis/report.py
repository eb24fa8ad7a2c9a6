"""The release report: one self-contained HTML file per release (inline CSS and SVG, autoescaped
Jinja2), plus an index of releases. The first screen answers: ship or not, and why.

What it reads: the release view from the state store (release.state.releases.release_view: the release's
row, its verdicts (stage "offline": the suggested policy; "approved": the re-judgement of the policy people
approved; "shadow", "ramp"), overrides, threshold set, ramp steps and the audit rows about it); and the release folder's saved Evaluation (``evaluation.json`` with
its fitting/judging ``windows``, ``slices.parquet``, the tidy ``metrics.parquet``, ``suggestions.parquet``)
and, once the approved policy was re-judged, the same files under ``approved/``."""
from __future__ import annotations

import collections
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, Undefined, select_autoescape
from markupsafe import escape

from analysis.weighting import CounterfactualConfig
from contracts.base import FAIL, INSUFFICIENT, PASS, stops, wide_metric
from release.core.io import atomic_write_text, json_value
from release.core.settings import CONTRACTS_KEPT
from release.state.status import Status
from release.state.releases import record_report, release_view, releases_newest_first


def _missing(x) -> bool:
    return x is None or isinstance(x, Undefined) or (not isinstance(x, str) and pd.isna(x))


_env = Environment(loader=PackageLoader("analysis", "templates"), autoescape=select_autoescape(["html", "j2"]))
_env.filters["pct"] = lambda x, d=2: "n/a" if _missing(x) else f"{100 * float(x):.{d}f}%"
_env.filters["pts"] = lambda x, d=2: "n/a" if _missing(x) else f"{100 * float(x):+.{d}f} pts"
_env.filters["num"] = lambda x: "n/a" if _missing(x) else f"{float(x):,.0f}"
_env.filters["money"] = lambda x: "n/a" if _missing(x) else f"{float(x):,.2f}"
_env.filters["reason_head"] = lambda t: (t[:t.index(":")] if 0 < t.find(":") < 80 else t[:60] + "…")  # as merchants.js
_env.filters["thr"] = lambda x: "n/a" if _missing(x) else f"{float(x):.4f}"

# the judgements a release gets before traffic moves, and what the report calls them
STAGES = {"offline": "suggested policy (offline judgement)", "approved": "approved policy (re-judgement)",
          "backtest": "backtest (recent history, offline)", "shadow": "shadow (live traffic)",
          "ramp": "ramp guardrail (live traffic)"}
JUDGED = ("offline", "approved")  # the stages whose unjudged gates obey on_insufficient
# the estimators of the counterfactual table, in the order a reader should meet them
ESTIMATORS = {
    "plain": ("plain", "labelled rows only: biased by censoring (blocked rows never get a label, so the "
                       "frauds the policy of the day blocked are missing)"),
    "ipw": ("IPW", "inverse-propensity weighted: each explored row stands for the blocked rows like it"),
    "dm": ("DM", "direct method: each censored row counted with the outcome model's fraud probability; "
                 "what the gates judge"),
    "dr": ("DR", "doubly robust: the direct method corrected by the explored rows' residuals (all traffic "
                 "only; not bounded to 0..100%)"),
}
CF_METRICS = [("recall", "recall"), ("fpr", "false-positive rate"), ("precision", "precision")]
CF_MODELS = [("incumbent", "incumbent (thresholds in force)"),
             ("candidate", "candidate at its operating threshold"),
             ("policy", "policy that would go live"),
             ("candidate-incumbent", "candidate − incumbent"),
             ("policy-incumbent", "policy − incumbent")]
SUPPORT_COLUMNS = ("transactions", "labelled", "frauds", "censored", "explored", "explored_frauds", "ess_frauds",
                   "ess_legit")
MEASURE_WORDS = {"actions": "incumbent blocks", "transactions": "judging transactions", "frauds": "matured frauds"}
FEATURE_DRIFT = "feature_drift.parquet"  # in the release folder: the candidate's snapshot against the incumbent's
POOLED_ROWS_SHOWN = 25  # per pooled slice type: the largest slices, and every pooled one


def _bar_svg(rows: list[dict], a: str, b: str, width: int = 560) -> str:
    """A small inline SVG of paired bars (incumbent vs policy action rate) per slice."""
    rows = [r for r in rows if not (_missing(r[a]) or _missing(r[b]))]
    if not rows:
        return ""
    top = max(max(r[a], r[b]) for r in rows) or 1.0
    h = 18 * len(rows) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
             f'aria-label="action rate by slice">']
    for i, r in enumerate(rows):
        y = 20 + 18 * i
        wa, wb = (width - 160) * r[a] / top, (width - 160) * r[b] / top
        parts.append(f'<text x="0" y="{y + 11}" font-size="11">{escape(str(r["slice"]))}</text>')
        parts.append(f'<rect x="90" y="{y}" width="{wa:.1f}" height="7" fill="#8a8f98"/>')
        parts.append(f'<rect x="90" y="{y + 7}" width="{wb:.1f}" height="7" fill="#2f6fde"/>')
        parts.append(f'<text x="{95 + max(wa, wb):.1f}" y="{y + 11}" font-size="10">'
                     f'{100 * r[a]:.2f}% → {100 * r[b]:.2f}%</text>')
    parts.append('<text x="90" y="12" font-size="10" fill="#8a8f98">■ incumbent</text>'
                 '<text x="170" y="12" font-size="10" fill="#2f6fde">■ policy</text></svg>')
    return "".join(parts)


def _read_evaluation(folder: Path) -> tuple[dict | None, pd.DataFrame | None, pd.DataFrame | None]:
    """(evaluation.json, slices, metrics) of a saved Evaluation; a table saved before "suggested" was
    renamed "policy" is read with the new name."""
    ev = json.loads((folder / "evaluation.json").read_text()) if (folder / "evaluation.json").exists() else None
    slices = pd.read_parquet(folder / "slices.parquet") if (folder / "slices.parquet").exists() else None
    metrics = pd.read_parquet(folder / "metrics.parquet") if (folder / "metrics.parquet").exists() else None
    if slices is not None:
        slices["at"] = slices["at"].replace({"suggested": "policy"})
    if metrics is not None:
        metrics["model"] = metrics["model"].replace({"suggested": "policy", "suggested-incumbent": "policy-incumbent"})
    return ev, slices, metrics


def render_report(release_id: str, folder: Path) -> str:
    view = release_view(release_id)  # the state store's side of the release, read in one place
    rel, vs, tset, steps = view["release"], view["verdicts"], view["threshold_set"], view["ramp_steps"]
    folder = Path(folder)
    ev, slices, metrics = _read_evaluation(folder)
    approved_ev, _, approved_metrics = _read_evaluation(folder / "approved")
    sugg = pd.read_parquet(folder / "suggestions.parquet") if (folder / "suggestions.parquet").exists() else None
    backtest = (pd.read_parquet(folder / "backtest_diffs.parquet") if (folder / "backtest_diffs.parquet").exists()
                else None)
    waivers = view["overrides"]
    waived = {o["contract"] for o in waivers}  # the same as waived_contracts(), without a second query
    vs = _with_consequences(vs, waived)
    stopping = _ordered([v for v in vs if v["consequence"] == "stops" and v["stage"] != "ramp"])
    warnings = _ordered([v for v in vs if v["consequence"] == "warns" and v["stage"] in JUDGED])
    status = rel["status"]
    ship = status == Status.PROMOTED
    stopped = status in (Status.STOPPED, Status.ROLLED_BACK)
    headline = _headline(rel, waived, stopping)
    rejudge_note = _rejudge_note(status, approved_ev is not None, any(v["stage"] == "approved" for v in vs))
    windows = (ev or {}).get("windows") or {}
    by_at = {}
    if slices is not None:
        for at in ("operating_point", "policy"):
            # merchants have their own section (threshold suggestions); here every other slice type
            by_at[at] = slices[(slices["at"] == at) & (slices["slice_type"] != "merchant")].to_dict("records")
    _add_support(by_at.get("policy", []), metrics)
    country = [] if slices is None else slices[(slices["slice_type"] == "country")
                                               & (slices["at"] == "policy")].to_dict("records")
    merchants, decision, readiness = _threshold_section(sugg, tset)
    judging = pd.read_parquet(folder / "judging.parquet") if (folder / "judging.parquet").exists() else None
    cf_min = CounterfactualConfig()
    kept = folder / CONTRACTS_KEPT
    contracts_kept = hashlib.sha256(kept.read_bytes()).hexdigest()[:12] if kept.exists() else None
    html = _env.get_template("report.html.j2").render(
        rel=rel, headline=headline, ship=ship, stopped=stopped, stopping=stopping, warnings=warnings,
        mismatch=bool([v for v in stopping if v["stage"] in JUDGED]) and not stopped,
        judgements=_judgements(vs), rejudge_note=rejudge_note, stages=STAGES,
        waivers=waivers, waived=waived, verdicts=vs, ev=ev, windows=windows,
        completeness=_completeness(windows), by_at=by_at,
        counterfactual=_counterfactual(metrics), estimators=ESTIMATORS, cf_metrics=CF_METRICS, cf_models=CF_MODELS,
        cf_min=cf_min, pooled=_pooled(metrics, cf_min),
        rejudgement=_rejudgement(metrics, approved_ev, approved_metrics),
        ranking=_ranking_rows(metrics),
        country_svg=_bar_svg(country, "incumbent_action_rate", "candidate_action_rate"),
        merchants=None if merchants is None else merchants.head(MERCHANT_ROWS_IN_HTML).astype(object).where(
            merchants.head(MERCHANT_ROWS_IN_HTML).notna(), None).to_dict("records"),
        merchant_columns=MERCHANT_COLUMNS, merchant_json=merchant_data(merchants),
        segments=[] if merchants is None else sorted(merchants["segment"].dropna().astype(str).unique()),
        decision=decision, readiness=readiness, live_changes=_live_changes(view["live_changes"]),
        n_suggestions=0 if sugg is None else len(sugg), n_shrunk=0 if sugg is None else int(sugg["shrunk"].sum()),
        tset=tset, next_steps=_next_steps(rel), feature_drift=_feature_drift(folder / FEATURE_DRIFT),
        charts=_charts(rel, folder, judging, metrics, approved_metrics, merchants, vs, steps),
        backtest=None if backtest is None else backtest.to_dict("records"), steps=_steps(steps), trail=view["trail"],
        contracts_kept=contracts_kept, contracts_kept_name=CONTRACTS_KEPT)
    return html


def _points(metrics: pd.DataFrame | None, models: dict[str, str]) -> dict[str, dict]:
    """All-traffic IPW recall, FPR and precision of each model named in ``models`` ({name in the picture:
    model in the table}), for the operating points on the curves."""
    if metrics is None:
        return {}
    a = metrics[(metrics["slice_type"] == "all") & (metrics["estimator"] == "ipw")]
    out = {}
    for name, model in models.items():
        p = {}
        for m in ("recall", "fpr", "precision"):
            r = a[(a["metric"] == m) & (a["model"] == model)]
            p[m] = None if r.empty or _missing(r["estimate"].iloc[0]) else float(r["estimate"].iloc[0])
        out[name] = p
    return out


CHARTS_CACHE = "charts-cache.json"  # in the release folder: the pictures that do not change during the rollout


def _charts(rel: dict, folder: Path, judging, metrics, approved_metrics, merchants, vs: list[dict],
            steps: list[dict]) -> dict:
    """Every picture of the report (analysis.charts), by name; an empty string where there is nothing to draw.

    The pictures of the evaluation (curves, scores, calibration, importance, the forests of the offline and
    re-judged verdicts, the threshold changes) are kept in ``CHARTS_CACHE`` under a key of everything they
    are drawn from (the files' sizes and times, the models, the verdicts' figures, the thresholds, the
    drawing code): the report is rewritten at each rollout stage, and only the rollout's picture changes."""
    from analysis import charts

    forest_groups = _by_contract(vs)
    thr = None if merchants is None else merchants.rename(columns={"in_force": "current_threshold",
                                                                   "suggested": "suggested_threshold"})
    key = _charts_key(rel, folder, forest_groups, thr)
    cache = folder / CHARTS_CACHE
    static = None
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
            static = stored["charts"] if stored.get("key") == key else None
        except (ValueError, KeyError):  # a cache that cannot be read is drawn again
            static = None
    if static is None:
        points = _points(metrics, {"incumbent": "incumbent", "candidate": "candidate", "policy": "policy"})
        points.update(_points(approved_metrics, {"approved": "policy"}))
        forests = []
        for (stage, contract, unit), group in forest_groups.items():
            what = QUANTITY.get((group[0]["kind"], group[0]["slice"])) if len(group) == 1 else None
            svg = charts.forest(group, f"{contract} ({STAGES.get(stage, stage)})" + (f": {what}" if what else ""))
            if svg:
                forests.append({"stage": stage, "contract": contract, "unit": unit, "svg": svg})
        static = {"curves": charts.curves(judging, points), "scores": charts.score_distributions(judging),
                  "importance": charts.importance(_importance(rel)), "calibration": charts.calibration(judging),
                  "forests": forests, "thresholds": charts.threshold_changes(thr)}
        if folder.is_dir():
            atomic_write_text(json.dumps({"key": key, "charts": static}), cache)
    return {**static, "rollout": charts.guardrails_over_rollout(_steps(steps), _live_limits(vs))}


def _charts_key(rel: dict, folder: Path, forest_groups: dict, thr: pd.DataFrame | None) -> str:
    """What the evaluation's pictures are drawn from, as one digest."""
    import hashlib

    from analysis import charts

    def stat(p: Path):
        return [p.stat().st_size, p.stat().st_mtime_ns] if p.exists() else None

    parts = {"files": {n: stat(folder / n) for n in ("judging.parquet", "metrics.parquet", "approved/metrics.parquet")},
             "code": stat(Path(charts.__file__)), "models": [rel.get("candidate_model_id"), rel.get("incumbent_model_id")],
             "verdicts": [[k, [[v.get(c) for c in ("id", "verdict", "effect", "effect_lo", "effect_hi", "allowed_lo",
                                                  "allowed_hi", "effect_unit", "slice")] for v in g]]
                          for k, g in forest_groups.items()],
             "thresholds": None if thr is None else int(pd.util.hash_pandas_object(
                 thr[["segment", "current_threshold", "suggested_threshold", "proposed"]], index=False).sum())}
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()


# the live guardrails' verdict kinds and their keys in a ramp step's details
LIVE_KINDS = {"score_shift": "score_shift", "latency": "latency_p99", "error_rate": "error_rate"}


def _live_limits(vs: list[dict]) -> dict[str, float]:
    """Each live guardrail's limit as its newest verdict recorded it."""
    out = {}
    for v in vs:
        if v["stage"] in ("shadow", "ramp") and v["kind"] in LIVE_KINDS and not _missing(v.get("limit_value")):
            out[LIVE_KINDS[v["kind"]]] = float(v["limit_value"])
    return out


def _importance(rel: dict) -> pd.DataFrame | None:
    """Each feature's share of total split gain in the candidate and the incumbent (from the registered
    models), or None when the candidate is not registered."""
    from release.state import registry

    from lightgbm.basic import LightGBMError

    shares = {}
    for role in ("candidate", "incumbent"):
        m = registry.get_model(rel.get(f"{role}_model_id") or "", missing_ok=True)
        if m is None:
            continue
        try:
            b = m.booster()
        except (LightGBMError, registry.RegistryError):  # not a LightGBM model, or its bytes changed: no picture
            continue
        gain = pd.Series(b.feature_importance(importance_type="gain"), index=b.feature_name(), dtype=float)
        shares[role] = gain / gain.sum() if gain.sum() > 0 else gain
    if "candidate" not in shares:
        return None
    out = pd.DataFrame(shares).rename_axis("feature").reset_index()
    return out.assign(incumbent=out.get("incumbent"))


def _feature_drift(path: Path) -> list[dict]:
    """The candidate's training snapshot against the incumbent's, feature by feature (all traffic), largest
    PSI first, with the drift check's own sentence."""
    if not path.exists():
        return []
    d = pd.read_parquet(path)
    d = d[(d["slice_type"] == "all") & d["value"].notna()].sort_values("value", ascending=False)
    return [{"feature": r.feature, "psi": float(r.value), "status": r.status, "reading": r.sentence}
            for r in d.itertuples()]


FOREST_STAGES = ("offline", "approved")  # the judgements drawn as forest plots (the live ones have their own picture)


# contract kinds whose slices judge different quantities (the operating point's recall gain, the policy's FPR
# change): each slice is its own picture, never two quantities on one axis
ONE_SLICE_A_FIGURE = {"fixed_fpr_higher_recall"}
QUANTITY = {("fixed_fpr_higher_recall", "operating point"): "the candidate's recall gain at the incumbent's FPR",
            ("fixed_fpr_higher_recall", "policy"): "the policy's FPR change, against its tolerance"}


def _by_contract(vs: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """The offline and re-judged verdicts that carry an effect (contracts.base: the interval that decided
    them), grouped by (stage, contract, unit); the offline judgement first, then the re-judgement, each with
    its contracts that failed or could not be judged first; within a group failures and unjudged slices first."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for v in _ordered([v for v in vs if v["stage"] in FOREST_STAGES and not _missing(v.get("effect"))]):
        unit = v.get("effect_unit") or ""
        if v["kind"] in ONE_SLICE_A_FIGURE:
            unit = f"{unit}: {v['slice']}"
        groups.setdefault((v["stage"], v["contract"], unit), []).append(v)
    rank = {FAIL: 0, INSUFFICIENT: 1}
    order = sorted(groups, key=lambda k: (FOREST_STAGES.index(k[0]), min(rank.get(v["verdict"], 2) for v in groups[k]),
                                          k[1], k[2]))
    return {k: groups[k] for k in order}


def _next_steps(rel: dict) -> list[dict]:
    """What a person can do now, with the exact command (the same state machine as the DAG and the UI)."""
    rid, status = rel["id"], rel["status"]
    steps = []
    if status == Status.AWAITING_APPROVAL:
        steps += [{"what": "review the merchant thresholds below, then approve (with any edits) or reject them",
                   "command": f"fraudcd thresholds show --release {rid} --limit 50"},
                  {"what": "approve", "command": f"fraudcd thresholds approve --release {rid} --reason \"...\""},
                  {"what": "or reject (the release stops; nothing changes live)",
                   "command": f"fraudcd thresholds reject --release {rid} --reason \"...\""}]
    if status in (Status.STOPPED,) and rel.get("stop_reason"):
        steps.append({"what": "if a person judges a stopping contract wrong for this release, waive it on the record, "
                              "then rerun the release for its date to go on",
                      "command": f"fraudcd override --release {rid} --contract NAME --reason \"...\""})
    if status in (Status.SHADOW, Status.RAMPING, Status.PAUSED, Status.AWAITING_DECISION, Status.READY_TO_PROMOTE):
        steps.append({"what": "see the rollout and its evidence", "command": "fraudcd ramp status"})
        steps.append({"what": "roll back at once (production serves everything again)",
                      "command": "fraudcd ramp rollback --reason \"...\""})
    if status in (Status.SHADOW, Status.RAMPING):
        steps.append({"what": "pause the rollout (guarded, not advanced)", "command": "fraudcd ramp pause --reason \"...\""})
    if status == Status.AWAITING_DECISION:
        steps += [{"what": "wait longer for evidence", "command": "fraudcd ramp extend --reason \"...\""},
                  {"what": "promote anyway, on the record", "command": "fraudcd ramp promote --anyway --reason \"...\""}]
    if status == Status.READY_TO_PROMOTE:
        steps.append({"what": "promote", "command": "fraudcd ramp promote --reason \"...\""})
    if status == Status.PROMOTED:
        steps.append({"what": "if production misbehaves, go back to the previous model",
                      "command": "fraudcd rollback --reason \"...\""})
    return steps


# ---- verdicts ---------------------------------------------------------------------------------------

def _with_consequences(vs: list[dict], waived: set[str]) -> list[dict]:
    """Each stored verdict with its consequence, what it did: "stops" (it stopped, or stops, the release), "waived" (it
    would stop, a named person waived its contract for this release), "warns" (a failure or an unjudged
    figure that does not stop: not a gate, or ``on_insufficient: warn``; online, only a failure rolls
    back), or "passes"; and the words the report prints for it."""
    out = []
    for v in vs:
        v = {**v, "stage_label": STAGES.get(v["stage"], v["stage"])}
        if v["verdict"] == PASS:
            v["consequence"], v["consequence_words"] = "passes", "passes"
            out.append(v)
            continue
        would_stop = stops(v) if v["stage"] in JUDGED else (bool(v["gate"]) and v["verdict"] == FAIL)
        if would_stop and v["contract"] in waived:
            v["consequence"], v["consequence_words"] = "waived", "would stop the release; waived for it by a named person"
        elif would_stop:
            v["consequence"] = "stops"
            v["consequence_words"] = ("stops the release" if v["verdict"] == FAIL else
                                 "stops the release: a gate that could not be judged (on_insufficient: stop)")
        else:
            v["consequence"] = "warns"
            v["consequence_words"] = ("warns: not a gate" if not v["gate"] else
                                 "waits: online, an unjudged stage does not pass (it waits for evidence, then asks a "
                                 "person)" if v["stage"] in ("shadow", "ramp") else
                                 "warns: the backtest stops only on a failure" if v["stage"] not in JUDGED else
                                 "warns (on_insufficient: warn)")
        out.append(v)
    return out


def _ordered(vs: list[dict]) -> list[dict]:
    """Failures first, then unjudged ones; the offline judgement before the re-judgement; as stored."""
    rank = {FAIL: 0, INSUFFICIENT: 1}
    stage = {"offline": 0, "approved": 1, "backtest": 2, "shadow": 3, "ramp": 4}
    return sorted(vs, key=lambda v: (rank.get(v["verdict"], 2), stage.get(v["stage"], 9), v["id"]))


def _judgements(vs: list[dict]) -> list[dict]:
    """Per judgement of the policy (offline, re-judged): verdict counts and what they did, with the
    verdicts in reading order (stopping failures, stopping unjudged gates, waived, warnings, passes)."""
    order = {"stops": 0, "waived": 1, "warns": 2, "passes": 3}
    out = []
    for stage in ("offline", "approved", "backtest", "shadow"):
        s = [v for v in vs if v["stage"] == stage]
        if not s and stage in ("backtest", "shadow"):
            continue
        counts = {k: sum(v["verdict"] == k for v in s) for k in (PASS, FAIL, INSUFFICIENT)}
        counts.update({k: sum(v["consequence"] == k for v in s) for k in order})
        rows = sorted(_ordered(s), key=lambda v: order[v["consequence"]])
        out.append({"stage": stage, "label": STAGES[stage], "n": len(s), "counts": counts, "rows": rows})
    return out


def _steps(steps: list[dict]) -> list[dict]:
    """The rollout's stages as recorded (shadow is step 0), with why each ended as it did."""
    out = []
    for st in steps:
        d = json.loads(st.get("details_json") or "{}")
        why = d.get("breaches") or (d.get("missing") if st["outcome"] == "inconclusive" else None) or []
        out.append({**st, "stage": "shadow" if st["step"] == 0 else f"step {st['step']}",
                    "event_hours": (d.get("event_seconds") or 0) / 3600, "why": "; ".join(why)})
    return out


def _headline(rel: dict, waived: set[str], stopping: list[dict]) -> str:
    """The first line of the report: ship, stop (and by how many verdicts, failed or unjudged), or where
    the release is."""
    status = rel["status"]
    if status == Status.PROMOTED:
        if waived:
            return (f"SHIP, with {len(waived)} contract(s) waived by a named person: {', '.join(sorted(waived))}. "
                    "The candidate now serves all traffic.")
        return "SHIP: the candidate passed every gate and now serves all traffic."
    if status in (Status.STOPPED, Status.ROLLED_BACK):
        if stopping:  # the verdicts that stopped it, counted; each with its sentence under "Why it stopped"
            n, failed = len(stopping), sum(v["verdict"] == FAIL for v in stopping)
            unjudged = n - failed
            stages = " and the ".join(dict.fromkeys(v["stage_label"].split(" (")[0] for v in stopping))
            return (f"STOP: {n} gating verdict{'s' if n > 1 else ''} of the {stages} stop{'' if n > 1 else 's'} "
                    f"this release: {failed or 'none'} failed"
                    + (f", {unjudged} could not be judged (insufficient data, and the contract stops when it "
                       "cannot judge)." if unjudged else "."))
        return "STOP: " + (rel["stop_reason"] or "stopped")
    nxt = {Status.CONTRACTS_PASSED: "no gate stopped the suggested policy; its thresholds go to a person next, and the "
                               "policy they approve is judged again before any traffic moves.",
           Status.AWAITING_APPROVAL: "no gate stopped the suggested policy; waiting for a person to approve its "
                                "thresholds.",
           Status.APPROVED: "thresholds approved; the approved policy has not been re-judged yet.",
           Status.REJUDGED: "the approved policy passed its re-judgement; the backtest on recent history is next.",
           Status.BACKTESTED: "the backtest passed; the candidate goes into shadow in the scoring service next.",
           Status.SHADOW: "the candidate scores live traffic beside production, serving nothing.",
           Status.RAMPING: "the candidate serves a share of live traffic; each step waits on its evidence.",
           Status.PAUSED: "a person paused the rollout; it is guarded, not advanced.",
           Status.AWAITING_DECISION: "the evidence stayed inconclusive past its bound; a person decides (extend, "
                                "promote anyway, roll back).",
           Status.READY_TO_PROMOTE: "every stage passed on live traffic; a person promotes."}.get(status)
    return f"IN PROGRESS: {status.replace('_', ' ')}" + (f". {nxt[0].upper()}{nxt[1:]}" if nxt else "")


def _rejudge_note(status: str, saved: bool, has_verdicts: bool) -> str | None:
    """Why the approved policy has no re-judgement on record (None when it has one)."""
    if saved or has_verdicts:
        return None
    if status in (Status.STARTED, Status.TRAINED, Status.EVALUATED, Status.CONTRACTS_PASSED, Status.AWAITING_APPROVAL):
        return ("Not re-judged yet: no thresholds are approved. Once a person approves them (with any edits), the "
                "approved policy is judged again on the same judging rows before any traffic moves.")
    if status == Status.APPROVED:
        return "Not re-judged yet: the thresholds are approved; the approved policy is judged again before shadow."
    if status in ("stopped", "rolled_back"):
        return "Not re-judged: the release stopped before the approved policy could be judged again."
    return "Not re-judged: this release has no re-judgement of the approved policy on record."


# ---- evidence -----------------------------------------------------------------------------------------

def _completeness(windows: dict) -> list[dict]:
    """Each window's label completeness: its sentence (which says why when there is no estimate)."""
    lc = windows.get("label_completeness") or {}
    out = []
    for name, c in lc.items() if isinstance(lc, dict) else []:
        c = c if isinstance(c, dict) else {}
        sentence = c.get("sentence") or (f"Label completeness of the {name} not estimated: {c['reason']}"
                                         if c.get("reason") else f"Label completeness of the {name}: no figure.")
        out.append({"name": name, "completeness": c.get("completeness"), "missing_share": c.get("missing_share"),
                    "disputes_used": c.get("disputes_used"), "sentence": sentence})
    return out


def _cell(rows: pd.DataFrame, metric: str, estimator: str, model: str) -> dict | None:
    r = rows[(rows["metric"] == metric) & (rows["estimator"] == estimator) & (rows["model"] == model)]
    if r.empty:
        return None
    r = r.iloc[0]
    est, lo, hi = (None if _missing(r[k]) else float(r[k]) for k in ("estimate", "lo", "hi"))
    return {"estimate": est, "lo": lo, "hi": hi,
            # a rate outside 0..100% (the doubly robust figure can be): its correction outweighs the model
            "out_of_range": "-" not in model and est is not None and not 0 <= est <= 1}


def _support(rows: pd.DataFrame) -> dict:
    if rows.empty:
        return {}
    r = rows.iloc[0]
    return {k: (None if k not in rows.columns or _missing(r[k]) else float(r[k])) for k in SUPPORT_COLUMNS}


def _counterfactual(metrics: pd.DataFrame | None) -> dict | None:
    """All-traffic recall, FPR and precision of each model by each estimator (plain, IPW, DM, DR) with
    their 95% intervals, the action rate (every row, no label needed) and the counterfactual support."""
    if metrics is None:
        return None
    a = metrics[metrics["slice_type"] == "all"]
    if a.empty:
        return None
    present = set(a["estimator"])
    return {"estimators": [e for e in ESTIMATORS if e in present],
            "cells": {m: {mod: {e: _cell(a, m, e, mod) for e in ESTIMATORS} for mod, _ in CF_MODELS}
                      for m, _ in CF_METRICS},
            "action_rate": {mod: _cell(a, "action_rate", "all", mod) for mod, _ in CF_MODELS},
            "support": _support(a)}


def _pooled(metrics: pd.DataFrame | None, cf_min: CounterfactualConfig) -> list[dict]:
    """The pooled slice types the contracts judge (e.g. "country|actions>=500"): per slice, its members
    when pooled, support and counterfactual support, the action rate (incumbent → policy) and the
    direct-method recall (incumbent → candidate, → policy), each change with its interval. The largest
    slices of a type and every pooled one."""
    if metrics is None or "members" not in metrics.columns:
        return []
    out = []
    for t in sorted(x for x in metrics["slice_type"].unique() if "|" in str(x)):
        base, rule = str(t).split("|", 1)
        measure, _, n = rule.partition(">=")
        m = metrics[metrics["slice_type"] == t]
        est = "dm" if (m["estimator"] == "dm").any() else "ipw"
        models = ["incumbent", "candidate", "policy", "candidate-incumbent", "policy-incumbent"]
        act = wide_metric(m, t, "action_rate", "all", models)
        rec = wide_metric(m, t, "recall", est, models)
        if act.empty:
            continue
        act = act.sort_values("transactions", ascending=False)
        pooled = act["members"].notna() if "members" in act else pd.Series(False, index=act.index)
        keep = act.index[:POOLED_ROWS_SHOWN].union(act.index[pooled.to_numpy()])
        rows = []
        for s in [x for x in act.index if x in keep]:
            a = act.loc[s]
            r = rec.loc[s] if s in rec.index else None
            sup = {k: (None if k not in a or _missing(a[k]) else float(a[k])) for k in SUPPORT_COLUMNS}
            rows.append({"slice": s, "members": None if _missing(a.get("members")) else str(a["members"]), **sup,
                         "thin": (sup.get("explored_frauds") is not None
                                  and (sup["explored_frauds"] < cf_min.min_explored_frauds
                                       or (sup.get("ess_frauds") or 0) < cf_min.min_ess)),
                         "act": _wide_cells(a, ["incumbent", "policy", "policy-incumbent"]),
                         "rec": None if r is None else _wide_cells(r, models)})
        out.append({"type": t, "base": base, "measure": MEASURE_WORDS.get(measure, measure),
                    "min_support": n, "estimator": est, "rows": rows, "hidden": len(act) - len(rows),
                    "id": "pooled-" + "".join(c if c.isalnum() else "-" for c in str(t))})
    return out


def _add_support(rows: list[dict], metrics: pd.DataFrame | None) -> None:
    """Add each slice's counterfactual support (censored rows, explored frauds, ESS of the frauds) from the
    tidy metrics to the slice table's rows, in place."""
    cols = ["censored", "explored_frauds", "ess_frauds"]
    if not rows or metrics is None or not set(cols) <= set(metrics.columns):
        return
    m = metrics[metrics["slice_type"].isin({r["slice_type"] for r in rows})]
    sup = m.groupby(["slice_type", "slice"])[cols].first()
    for r in rows:
        key = (r["slice_type"], str(r["slice"]))
        if key in sup.index:
            r.update({c: None if _missing(x) else float(x) for c, x in sup.loc[key].items()})


def _wide_cells(row: pd.Series, models: list[str]) -> dict:
    def f(k):
        return None if k not in row or _missing(row[k]) else float(row[k])
    return {mod: {"estimate": f(mod), "lo": f(f"{mod}_lo"), "hi": f(f"{mod}_hi")} for mod in models}


def _rejudgement(metrics: pd.DataFrame | None, approved_ev: dict | None,
                 approved_metrics: pd.DataFrame | None) -> dict | None:
    """The re-judged approved policy beside the suggested one, on the same judging rows: all-traffic
    action rate and (direct-method) recall, FPR and precision, each against the incumbent."""
    if approved_ev is None:
        return None
    rows = []
    if approved_metrics is not None:
        a = approved_metrics[approved_metrics["slice_type"] == "all"]
        s = None if metrics is None else metrics[metrics["slice_type"] == "all"]
        est = "dm" if (a["estimator"] == "dm").any() else "ipw"
        for metric, label, e in [("action_rate", "action rate", "all")] + [(m, l, est) for m, l in CF_METRICS]:
            rows.append({"metric": metric, "label": label, "estimator": e,
                         "incumbent": _cell(a, metric, e, "incumbent"),
                         "suggested": None if s is None else _cell(s, metric, e, "policy"),
                         "approved": _cell(a, metric, e, "policy"),
                         "change": _cell(a, metric, e, "policy-incumbent")})
    return {"global_threshold": approved_ev.get("policy_global_threshold"), "rows": rows,
            "support": None if approved_metrics is None else _support(
                approved_metrics[approved_metrics["slice_type"] == "all"])}


def _ranking_rows(metrics: pd.DataFrame | None) -> list[dict]:
    """ROC-AUC and PR-AUC (IPW) per slice with enough frauds to have them, merchants and the contracts'
    pooled slice types aside: both models and the candidate's gain with its 95% interval, from the
    release's tidy metrics."""
    if metrics is None:
        return []
    m = metrics[metrics["metric"].isin(["roc_auc", "pr_auc"]) & (metrics["estimator"] == "ipw")
                & (metrics["slice_type"] != "merchant") & ~metrics["slice_type"].astype(str).str.contains("|",
                                                                                                  regex=False)
                & metrics["estimate"].notna()]
    if m.empty:
        return []
    wide = m.pivot_table(index=["slice_type", "slice", "frauds"], columns=["metric", "model"],
                         values=["estimate", "lo", "hi"], aggfunc="first")
    wide.columns = [f"{metric}_{model}_{v}".replace("candidate-incumbent", "gain") for v, metric, model in wide.columns]
    order = {t: i for i, t in enumerate(["all", "country", "merchant_size", "category", "card_segment", "amount_band",
                                         "card_country"])}
    out = wide.reset_index()
    out = out.sort_values(["slice_type", "slice"],
                          key=lambda c: c.map(order).fillna(99) if c.name == "slice_type" else c)
    return out.astype(object).where(out.notna(), None).to_dict("records")


MERCHANT_ROWS_IN_HTML = 100  # the largest merchants written as table rows (printed, read without script); the
# page's script shows every merchant from the embedded data

# the merchant table's columns: (key, heading, kind); kind says how the page's script formats and sorts it
MERCHANT_COLUMNS = [
    ("merchant_id", "merchant", "text"), ("segment", "segment", "text"), ("support", "transactions", "int"),
    ("in_force", "in force", "thr"), ("suggested", "suggested", "thr"), ("proposed", "goes live", "thr"),
    ("block_now", "block rate now", "pct"), ("block_after", "block rate expected", "pct"),
    ("recall_before", "recall before", "pct1"), ("recall_after", "recall after", "pct1"),
    ("recall_after_lo", "", "hidden"), ("recall_after_hi", "", "hidden"),
    ("fpr_before", "FPR before", "pct"), ("fpr_after", "FPR after", "pct"),
    ("fpr_after_lo", "", "hidden"), ("fpr_after_hi", "", "hidden"),
    ("blocked_fraud_after", "blocked fraud (after)", "money"), ("false_declines_after", "false declines (after)", "money"),
    ("outcome", "status", "text"), ("edited_by", "edited by", "text"), ("reason", "reason", "text"),
]


def _threshold_section(sugg: pd.DataFrame | None, tset) -> tuple[pd.DataFrame | None, dict | None, dict]:
    """Every merchant's suggestion with what became of it (edited and by whom, approved, ...) in the
    merchant table's columns (``MERCHANT_COLUMNS``), largest first; the counts of the decision; and
    automation readiness per segment (from the state store)."""
    from analysis.thresholds import load_threshold_config
    from release.state import approvals

    table, decision = None, None
    if sugg is not None:
        s = sugg.sort_values(["support", "merchant_id"], ascending=[False, True])
        outcome = pd.Series(None, index=s.index, dtype=object)
        proposed = s["suggested_threshold"]
        edited = pd.Series(False, index=s.index)
        if tset is not None:
            items = approvals.set_items(tset["id"]).set_index("merchant_id")
            outcome = s["merchant_id"].map(items["outcome"])
            proposed = s["merchant_id"].map(items["proposed"]).fillna(s["suggested_threshold"])
            edited = s["merchant_id"].map(items["edited"]).fillna(False).astype(bool)
            counts = items["outcome"].value_counts()
            decision = {k: int(counts.get(k, 0)) for k in (approvals.APPROVED, approvals.AUTO_APPROVED,
                                                          approvals.NOT_APPROVED, approvals.REJECTED,
                                                          approvals.EXPIRED, approvals.PENDING)}
            decision["edited"] = int(items["edited"].sum())
        who = (tset or {}).get("decided_by")
        table = pd.DataFrame({
            "merchant_id": s["merchant_id"].astype(str), "segment": s["segment"],
            "support": s["support"], "in_force": s["current_threshold"].fillna(s["threshold_in_force"]),
            "suggested": s["suggested_threshold"], "proposed": proposed,
            "block_now": s["incumbent_block_rate"], "block_after": s["expected_block_rate"],
            "recall_before": s["recall_before"], "recall_after": s["recall_after"],
            "recall_after_lo": s["recall_after_lo"], "recall_after_hi": s["recall_after_hi"],
            "fpr_before": s["fpr_before"], "fpr_after": s["fpr_after"],
            "fpr_after_lo": s["fpr_after_lo"], "fpr_after_hi": s["fpr_after_hi"],
            "blocked_fraud_after": s["blocked_fraud_amount_after"],
            "false_declines_after": s["false_decline_amount_after"],
            "outcome": (outcome.fillna("suggested").astype(str).str.replace("_", " ")
                        + np.where(s["shrunk"].fillna(False).to_numpy(dtype=bool), " (thin)", "")),
            "edited_by": np.where(edited.to_numpy(), who or "a person", ""),
            "reason": s["reason"]}).reset_index(drop=True)
    auto = load_threshold_config().automation
    ready = approvals.readiness(auto.readiness_releases, auto.auto_approve.after_unedited_releases)
    segments = set(approvals.segments_ready(ready, auto.auto_approve))
    readiness = {"window": auto.readiness_releases, "enabled": auto.auto_approve.enabled,
                 "after": auto.auto_approve.after_unedited_releases,
                 "rows": [{**r, "ready": r["segment"] in segments} for r in ready.to_dict("records")]}
    return table, decision, readiness


LIVE_CHANGE_MERCHANTS = 5  # merchants named per live change in its row (the audit log has every one)


def _live_changes(changes: list[dict]) -> list[dict]:
    """The live changes of the release's thresholds once approved (release.state.approvals.live_changes), as
    the report's rows: when, who, what (edit or rollback), the merchants' values before and after, whether
    the release's contracts judged it (and what it went ahead despite), and why."""
    def fmt(x):
        return "global" if x is None else f"{float(x):.4f}"

    rows = []
    for c in changes:
        items = list(c["merchants"].items())
        shown = ", ".join(f"{m} {fmt(v['before'])} → {fmt(v['after'])}" for m, v in items[:LIVE_CHANGE_MERCHANTS])
        if len(items) > LIVE_CHANGE_MERCHANTS:
            shown += f" and {len(items) - LIVE_CHANGE_MERCHANTS} more"
        j = c["judgement"]
        if c["action"] == "thresholds_rollback":
            what, judged = f"rollback of change {c['undoes']}" if c["undoes"] else "rollback", \
                "not judged: a rollback puts back earlier values"
        elif j is None:
            what, judged = "edit", "not judged: made before live edits were judged"
        elif not j["judged"]:
            what, judged = "edit", f"not judged ({j['why']}): applied unjudged, on the record"
        else:
            counts = collections.Counter(v["verdict"] for v in j["verdicts"])
            what = "edit"
            judged = "judged: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            if j["despite"]:
                judged += "; went ahead despite " + ", ".join(j["despite"])
        rows.append({"at": c["at"], "actor": c["actor"], "what": what, "change_id": c["change_id"],
                     "merchants": shown, "judged": judged, "despite": bool(j and j.get("despite")),
                     "reason": c["reason"]})
    return rows


def merchant_data(table: pd.DataFrame | None) -> str:
    """The merchant table as compact JSON for the page's script (column names once, then one array per
    merchant; numbers rounded to what the table shows), safe inside a ``<script>`` element: ``<``, ``>`` and
    ``&`` are written as JSON escapes, so a hostile merchant name cannot close the element."""
    if table is None:
        return "null"
    keys = [k for k, _, _ in MERCHANT_COLUMNS]
    t = table[keys].copy()
    for k, _, kind in MERCHANT_COLUMNS:
        if kind in ("pct", "pct1", "hidden"):
            t[k] = t[k].astype(float).round(5)  # shown as a percent with 2 decimals at most
        elif kind == "thr":
            t[k] = t[k].astype(float).round(4)  # shown with 4 decimals
        elif kind == "money":
            t[k] = t[k].astype(float).round(2)
    columns = [{"key": k, "label": lab, "kind": kind} for k, lab, kind in MERCHANT_COLUMNS]
    for c in columns:  # repeated words (segment, status, reason, who) once each, the rows holding their index
        if c["key"] == "reason":  # a reason is a sentence with its merchant's numbers: the sentence once, the
            # numbers per row ([template index, number, ...]; the page puts them back in their places)
            text = t["reason"].astype(object).where(t["reason"].notna(), None)
            templates = text.map(lambda r: None if r is None else _NUMBER.sub(_HOLE, r))
            codes, uniques = pd.factorize(templates)
            c["templates"] = [str(u) for u in uniques]
            t["reason"] = [None if code < 0 else [int(code), *_NUMBER.findall(r)]
                           for code, r in zip(codes, text)]
        elif c["kind"] == "text" and c["key"] != "merchant_id":
            codes, uniques = pd.factorize(t[c["key"]])
            c["values"] = [str(u) for u in uniques]
            t[c["key"]] = pd.Series(codes, index=t.index).where(codes >= 0, None)
    rows = t.astype(object).where(t.notna(), None).to_numpy().tolist()
    text = json.dumps({"columns": columns, "rows": rows}, separators=(",", ":"), allow_nan=False,
                      default=json_value)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")  # a number as a reason prints it (1,234; -0.43; 24)
_HOLE = "\u0001"  # where a number was, in a reason's template


def write_report(release_id: str, folder: Path, reports_dir: Path) -> Path:
    html = render_report(release_id, folder)
    target = Path(reports_dir) / f"{release_id}.html"
    atomic_write_text(html, target)
    record_report(release_id, str(target))
    write_index(reports_dir)
    return target


INDEX_ALERTS = 50  # the newest alerts shown in the index
TREND_FIGURES = [("recall", "dm"), ("fpr", "dm"), ("action_rate", "all")]  # what the index's trends draw


def release_trends(rels: list[dict]) -> list[dict]:
    """Per evaluated release, oldest first: the incumbent's and the policy's all-traffic recall and FPR
    (direct method, what the gates judge) and action rate, each with its 95% interval, as the release judged
    them (the approved policy's re-judgement where there is one, else the suggested policy's)."""
    from release.core.settings import paths

    out = []
    for rel in sorted(rels, key=lambda r: (str(r["as_of"]), r["id"])):
        folder = paths().releases / rel["id"]
        f = folder / "approved" / "metrics.parquet"
        f = f if f.exists() else folder / "metrics.parquet"
        if not f.exists():
            continue
        m = pd.read_parquet(f, columns=["slice_type", "metric", "estimator", "model", "estimate", "lo", "hi"])
        m = m[m["slice_type"] == "all"]
        row = {"id": rel["id"], "status": rel["status"]}
        for metric, est in TREND_FIGURES:
            for model in ("incumbent", "policy"):
                c = _cell(m, metric, est, model) or {}
                row.update({f"{metric}_{model}": c.get("estimate"), f"{metric}_{model}_lo": c.get("lo"),
                            f"{metric}_{model}_hi": c.get("hi")})
        out.append(row)
    return out


def write_index(reports_dir: Path) -> Path:
    """Every release with its status and reason, and the newest alerts (release.state.alerts: approval requests,
    outcomes, the rollout's breaches and questions), newest first."""
    from release.state.alerts import count_alerts, read_alerts

    from analysis import charts

    rels = releases_newest_first()
    alerts = read_alerts(INDEX_ALERTS, newest_first=True)
    trend = release_trends(rels)
    counts = pd.Series([r["status"] for r in rels], dtype=object).value_counts().to_dict() if rels else {}
    html = _env.get_template("index.html.j2").render(releases=rels, alerts=alerts, n_alerts=count_alerts(),
                                                     trends_svg=charts.trends(trend), counts=counts,
                                                     closed_loop=(Path(reports_dir) / "closed-loop.html").exists())
    target = Path(reports_dir) / "index.html"
    atomic_write_text(html, target)
    return target
