"""The closed loop's summary page (``reports/closed-loop.html``, linked from the report index): one row per cycle
of `fraudcd simulate-cycles` (release.orchestration.closed_loop), with plots of what the deployed model did (the
simulation's truth) beside what the releases estimated, the releases' outcomes and why, the planted cases, the
fraud exploration let through, and automation readiness per merchant segment at the end."""
from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from release.core.io import atomic_write_text

_env = Environment(loader=PackageLoader("analysis", "templates"), autoescape=select_autoescape(["html", "j2"]))
SUMMARY = "closed-loop.html"
# the new pattern counts as learned from the first cycle whose deployed decisions block at least this share of its
# frauds (the policies before it block none: it is domestic, modest and on fresh cards, where no rule looked)
LEARNED_SHARE = 0.15


def _pct(x, digits: int = 1) -> str:
    return "" if x is None else f"{100 * float(x):.{digits}f}%"


def summary_figures(rows: list[dict]) -> dict:
    """Across the run: outcomes, the planted cases and what stopped them, the first cycle whose deployed
    decisions block at least ``LEARNED_SHARE`` of the new pattern's frauds, exploration's cost, the estimates' gap
    to the truth."""
    from collections import Counter

    out = {"outcomes": dict(Counter(r["status"] for r in rows))}
    out["planted"] = [{"cycle": r["cycle"], "planted": r["planted"], "status": r["status"], "reason": r["reason"]}
                      for r in rows if r.get("planted")]
    appear = next((r["cycle"] for r in rows if r.get("new_pattern_frauds")), None)
    learned = next((r["cycle"] for r in rows if (r.get("new_pattern_blocked") or 0) >= LEARNED_SHARE), None)
    out["new_pattern"] = {"first_seen_cycle": appear, "learned_cycle": learned, "learned_share": LEARNED_SHARE,
                          "cycles_to_learn": None if appear is None or learned is None else learned - appear}
    out["explored_frauds"] = sum(r.get("explored_frauds") or 0 for r in rows)
    out["explored_fraud_amount"] = round(sum(r.get("explored_fraud_amount") or 0 for r in rows), 2)
    gaps = {}
    for est in ("ipw", "plain"):
        d = [abs(r[f"est_incumbent_recall_{est}"] - r["true_incumbent_recall"]) for r in rows
             if r.get(f"est_incumbent_recall_{est}") is not None and r.get("true_incumbent_recall") is not None]
        gaps[est] = round(sum(d) / len(d), 4) if d else None
    out["mean_abs_recall_gap"] = gaps
    for k in ("recall", "fpr", "action_rate"):
        v = [r[f"true_{k}"] for r in rows if r.get(f"true_{k}") is not None]
        out[f"deployed_{k}"] = round(sum(v) / len(v), 4) if v else None
    return out


def write_summary(rows: list[dict], loop, reports_dir: Path, compare: dict[str, list[dict]] | None = None) -> Path:
    """``compare``: other runs of the same world ({label: their rows}, e.g. exploration off), shown beside this one:
    how far each run's estimates drift from the truth, and what its exploration let through."""
    from analysis import charts
    from analysis.report import write_index

    reports_dir = Path(reports_dir)
    figures = summary_figures(rows)
    runs = {f"this run (exploration {loop.exploration:g})": rows, **(compare or {})}
    html = _env.get_template("closed_loop.html.j2").render(
        rows=rows, run=json.loads(loop.model_dump_json()), figures=figures, pct=_pct, svg=charts.closed_loop(rows),
        readiness=rows[-1].get("readiness", []) if rows else [],
        compared={label: summary_figures(rs) for label, rs in runs.items()} if compare else None,
        gap_svg=charts.estimate_gaps(runs) if compare else "")
    target = reports_dir / SUMMARY
    atomic_write_text(html, target)
    write_index(reports_dir)
    return target
