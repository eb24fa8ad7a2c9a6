"""The release report: one self-contained HTML file per release (inline CSS and SVG, autoescaped
Jinja2), plus an index of releases. The first screen answers: ship or not, and why."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from jinja2 import Environment, PackageLoader, select_autoescape

from release.io import atomic_write_text
from release.store import audit, engine, ramp_steps, releases, threshold_sets, verdicts

_env = Environment(loader=PackageLoader("analysis", "templates"), autoescape=select_autoescape(["html", "j2"]))
_env.filters["pct"] = lambda x, d=2: "n/a" if x is None or pd.isna(x) else f"{100 * float(x):.{d}f}%"
_env.filters["num"] = lambda x: "n/a" if x is None or pd.isna(x) else f"{float(x):,.0f}"
_env.filters["money"] = lambda x: "n/a" if x is None or pd.isna(x) else f"{float(x):,.2f}"


def _bar_svg(rows: list[dict], a: str, b: str, width: int = 560) -> str:
    """A small inline SVG of paired bars (incumbent vs candidate action rate) per slice."""
    if not rows:
        return ""
    top = max(max(r[a], r[b]) for r in rows) or 1.0
    h = 18 * len(rows) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
             f'aria-label="action rate by slice">']
    for i, r in enumerate(rows):
        y = 20 + 18 * i
        wa, wb = (width - 160) * r[a] / top, (width - 160) * r[b] / top
        label = str(r["slice"]).replace("&", "&amp;").replace("<", "&lt;")
        parts.append(f'<text x="0" y="{y + 11}" font-size="11">{label}</text>')
        parts.append(f'<rect x="90" y="{y}" width="{wa:.1f}" height="7" fill="#8a8f98"/>')
        parts.append(f'<rect x="90" y="{y + 7}" width="{wb:.1f}" height="7" fill="#2f6fde"/>')
        parts.append(f'<text x="{95 + max(wa, wb):.1f}" y="{y + 11}" font-size="10">'
                     f'{100 * r[a]:.2f}% → {100 * r[b]:.2f}%</text>')
    parts.append('<text x="90" y="12" font-size="10" fill="#8a8f98">■ incumbent</text>'
                 '<text x="170" y="12" font-size="10" fill="#2f6fde">■ candidate</text></svg>')
    return "".join(parts)


def render_report(release_id: str, folder: Path) -> str:
    with engine().connect() as conn:
        rel = dict(conn.execute(sa.select(releases).where(releases.c.id == release_id)).first()._mapping)
        vs = [dict(r._mapping) for r in conn.execute(
            sa.select(verdicts).where(verdicts.c.release_id == release_id).order_by(verdicts.c.id))]
        tset = conn.execute(sa.select(threshold_sets).where(threshold_sets.c.release_id == release_id)
                            .order_by(threshold_sets.c.id.desc())).first()
        steps = [dict(r._mapping) for r in conn.execute(
            sa.select(ramp_steps).where(ramp_steps.c.release_id == release_id).order_by(ramp_steps.c.step))]
        trail = [dict(r._mapping) for r in conn.execute(sa.select(audit).order_by(audit.c.id))]
    folder = Path(folder)
    ev = json.loads((folder / "evaluation.json").read_text()) if (folder / "evaluation.json").exists() else None
    slices = pd.read_parquet(folder / "slices.parquet") if (folder / "slices.parquet").exists() else None
    sugg = pd.read_parquet(folder / "suggestions.parquet") if (folder / "suggestions.parquet").exists() else None
    shadow = pd.read_parquet(folder / "shadow_diffs.parquet") if (folder / "shadow_diffs.parquet").exists() else None
    from release.overrides import overrides_for

    waivers = overrides_for(release_id)
    waived = {o["contract"] for o in waivers}  # the same as waived_contracts(), without a second query
    gating_fail = [v for v in vs if v["gate"] and v["verdict"] == "fail" and v["contract"] not in waived]
    status = rel["status"]
    ship = status in ("promoted", "ramped")
    if ship:
        headline = "SHIP: the candidate passed every gate and now serves all traffic."
        if waived:
            headline = (f"SHIP, with {len(waived)} contract(s) waived by a named person: "
                        f"{', '.join(sorted(waived))}. The candidate now serves all traffic.")
    elif status in ("stopped", "rolled_back"):
        headline = "STOP: " + (rel["stop_reason"] or "stopped")
    else:
        headline = f"IN PROGRESS: {status.replace('_', ' ')}"
    country = []
    if slices is not None:
        c = slices[(slices["slice_type"] == "country") & (slices["at"] == "suggested")]
        country = c.to_dict("records")
    by_at = {}
    if slices is not None:
        for at in ("operating_point", "suggested"):
            # merchants have their own section (threshold suggestions); here every other slice type
            by_at[at] = slices[(slices["at"] == at) & (slices["slice_type"] != "merchant")].to_dict("records")
    metrics = pd.read_parquet(folder / "metrics.parquet") if (folder / "metrics.parquet").exists() else None
    ranking = _ranking_rows(metrics)
    sugg_rows, decision, readiness = _threshold_section(sugg, tset)
    relevant = [t for t in trail if release_id in (t["entity"] + (t["reason"] or "") + (t["after_json"] or ""))
                or (rel["candidate_model_id"] and rel["candidate_model_id"] in (t["entity"] + (t["after_json"] or "")))]
    html = _env.get_template("report.html.j2").render(
        rel=rel, headline=headline, ship=ship, gating_fail=gating_fail, waivers=waivers, waived=waived, verdicts=vs, ev=ev, by_at=by_at,
        ranking=ranking,
        country_svg=_bar_svg(country, "incumbent_action_rate", "candidate_action_rate"),
        suggestions=sugg_rows, decision=decision, readiness=readiness,
        n_suggestions=0 if sugg is None else len(sugg), n_shrunk=0 if sugg is None else int(sugg["shrunk"].sum()),
        tset=None if tset is None else dict(tset._mapping),
        shadow=None if shadow is None else shadow.to_dict("records"), steps=steps, trail=relevant)
    return html


def _ranking_rows(metrics: pd.DataFrame | None) -> list[dict]:
    """ROC-AUC and PR-AUC (IPW) per slice with enough frauds to have them, merchants aside: both models and
    the candidate's gain with its 95% interval, from the release's tidy metrics."""
    if metrics is None:
        return []
    m = metrics[metrics["metric"].isin(["roc_auc", "pr_auc"]) & (metrics["estimator"] == "ipw")
                & (metrics["slice_type"] != "merchant") & metrics["estimate"].notna()]
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


def _threshold_section(sugg: pd.DataFrame | None, tset) -> tuple[list[dict] | None, dict | None, dict]:
    """The largest merchants' suggestions with what became of each (edited, approved, ...), the counts of
    the decision, and automation readiness per segment (from the state store)."""
    from analysis.thresholds import load_threshold_config
    from release import approvals

    rows, decision = None, None
    if sugg is not None:
        top = sugg.sort_values(["support", "merchant_id"], ascending=[False, True]).head(25)
        if tset is not None:
            items = approvals.set_items(tset.id).set_index("merchant_id")
            top = top.assign(outcome=top["merchant_id"].map(items["outcome"]),
                             proposed=top["merchant_id"].map(items["proposed"]),
                             edited=top["merchant_id"].map(items["edited"]).fillna(False).astype(bool))
            counts = items["outcome"].value_counts()
            decision = {k: int(counts.get(k, 0)) for k in (approvals.APPROVED, approvals.AUTO_APPROVED,
                                                          approvals.NOT_APPROVED, approvals.REJECTED,
                                                          approvals.EXPIRED, approvals.PENDING)}
            decision["edited"] = int(items["edited"].sum())
        rows = top.astype(object).where(top.notna(), None).to_dict("records")
    auto = load_threshold_config().automation
    ready = approvals.readiness(auto.readiness_releases, auto.auto_approve.after_unedited_releases)
    segments = set(approvals.segments_ready(ready, auto.auto_approve))
    readiness = {"window": auto.readiness_releases, "enabled": auto.auto_approve.enabled,
                 "after": auto.auto_approve.after_unedited_releases,
                 "rows": [{**r, "ready": r["segment"] in segments} for r in ready.to_dict("records")]}
    return rows, decision, readiness


def write_report(release_id: str, folder: Path, reports_dir: Path) -> Path:
    html = render_report(release_id, folder)
    target = Path(reports_dir) / f"{release_id}.html"
    atomic_write_text(html, target)
    with engine().begin() as conn:
        conn.execute(releases.update().where(releases.c.id == release_id).values(report_path=str(target)))
    write_index(reports_dir)
    return target


def write_index(reports_dir: Path) -> Path:
    with engine().connect() as conn:
        rels = [dict(r._mapping) for r in conn.execute(sa.select(releases).order_by(releases.c.as_of.desc()))]
    html = _env.get_template("index.html.j2").render(releases=rels)
    target = Path(reports_dir) / "index.html"
    atomic_write_text(html, target)
    return target
