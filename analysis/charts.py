"""The release report's pictures: matplotlib figures rendered to inline SVG (text kept as text, so a page
search finds a label; deterministic ids, so the same release renders the same bytes).

Each function takes plain tables and returns an ``<svg>`` string (empty when there is nothing to draw) that
scales to its container (the fixed width and height are dropped; the viewBox stays). Colours are one
definition: ``COLOURS`` (incumbent grey, candidate blue, policy amber, approved green), the same as the
report's legend and its CSS.

What each picture reads is said in its docstring; none computes a figure the report's tables do not also
hold, except the curves (ROC, PR, calibration, score distributions), which are drawn from the release's
judging rows (``judging.parquet``) inverse-propensity weighted, as the ranking figures are."""
from __future__ import annotations

import io
import math
import re

import numpy as np
import pandas as pd

COLOURS = {"incumbent": "#6b7280", "candidate": "#2f6fde", "policy": "#d97706", "approved": "#15803d",
           "fail": "#b91c1c", "insufficient": "#a16207", "pass": "#15803d", "allowed": "#dcfce7"}
CURVE_POINTS = 400  # points per drawn curve at most: enough for the eye, small in the page


def _figure(w: float, h: float):
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    rcParams["svg.fonttype"] = "none"  # text stays text: searchable, small
    rcParams["svg.hashsalt"] = "fraud-cd"  # deterministic ids
    rcParams["font.size"] = 9
    rcParams["axes.spines.top"] = False
    rcParams["axes.spines.right"] = False
    return Figure(figsize=(w, h), layout=None)  # margins set per picture (_margins): a layout engine doubles the cost


def _margins(fig, left: float, bottom: float, top: float = 0.32, right: float = 0.15, wspace: float | None = None):
    """Fixed margins in inches (the tick labels' room), so drawing needs one pass."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace)


def _label_room(labels, per_char: float = 0.062) -> float:
    """Inches of left margin for y tick labels this long (8-point text)."""
    return 0.25 + per_char * max((len(str(x)) for x in labels), default=4)


_SIZE = re.compile(r'(<svg[^>]*?)\s(?:width|height)="[^"]*"\s(?:width|height)="[^"]*"')


def _svg(fig, label: str) -> str:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buf = io.StringIO()
    FigureCanvasSVG(fig).print_svg(buf, metadata={"Date": None, "Creator": None})
    s = buf.getvalue()
    s = s[s.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML
    s = re.sub(r"<!--.*?-->", "", s, flags=re.S)
    s = re.sub(r"<metadata>.*?</metadata>", "", s, flags=re.S)
    s = _SIZE.sub(r"\1", s, count=1)  # scale to the container; the viewBox keeps the shape
    lab = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return s.replace("<svg ", f'<svg role="img" aria-label="{lab}" class="chart" ', 1)


def _thin(x: np.ndarray, y: np.ndarray, n: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= n:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))
    return x[keep], y[keep]


def _labelled(judging: pd.DataFrame) -> pd.DataFrame:
    """Judging rows with a matured label and a positive weight (explored rows weighted 1/propensity)."""
    j = judging[judging["label"].notna()]
    w = j["weight"] if "weight" in j else pd.Series(1.0, index=j.index)
    return j[w > 0]


def curves(judging: pd.DataFrame | None, points: dict[str, dict]) -> str:
    """ROC and precision-recall curves of both models on the labelled judging rows (IPW), with each
    operating point marked: ``points`` maps a name ("incumbent", "candidate", "policy", "approved") to
    {"fpr", "recall", "precision"} (the release's all-traffic IPW figures)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if judging is None:
        return ""
    j = _labelled(judging)
    y, w = j["label"].to_numpy() > 0.5, j["weight"].to_numpy(dtype=float)
    if y.sum() == 0 or (~y).sum() == 0:
        return ""
    fig = _figure(8.4, 3.4)
    roc, pr = fig.subplots(1, 2)
    _margins(fig, 0.6, 0.5, wspace=0.25)
    for model in ("incumbent", "candidate"):
        col = f"{model}_score"
        if col not in j:
            continue
        s = j[col].to_numpy(dtype=float)
        fpr, tpr, _ = roc_curve(y, s, sample_weight=w)
        roc.plot(*_thin(fpr, tpr), color=COLOURS[model], lw=1.4, label=model)
        prec, rec, _ = precision_recall_curve(y, s, sample_weight=w)
        pr.plot(*_thin(rec[::-1], prec[::-1]), color=COLOURS[model], lw=1.4, label=model)
    markers = {"incumbent": "s", "candidate": "o", "policy": "D", "approved": "^"}
    for name, p in points.items():
        if p.get("fpr") is not None and p.get("recall") is not None:
            roc.plot([p["fpr"]], [p["recall"]], markers.get(name, "o"), color=COLOURS.get(name, "#000"), ms=6,
                     mec="white", label=f"{name} operating point")
        if p.get("precision") is not None and p.get("recall") is not None:
            pr.plot([p["recall"]], [p["precision"]], markers.get(name, "o"), color=COLOURS.get(name, "#000"), ms=6,
                    mec="white")
    top = max([0.05] + [3 * p["fpr"] for p in points.values() if p.get("fpr") is not None])
    roc.set_xlim(0, min(1.0, top))
    roc.set_xlabel("false-positive rate (zoomed to the operating region)")
    roc.set_ylabel("recall (true-positive rate)")
    roc.set_title("ROC, judging rows (IPW)")
    roc.legend(loc="lower right", fontsize=7, frameon=False)
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    pr.set_xlim(0, 1)
    pr.set_ylim(0, 1.02)
    pr.set_title("precision-recall, judging rows (IPW)")
    for ax in (roc, pr):
        ax.grid(alpha=0.25)
    return _svg(fig, "ROC and precision-recall curves of the incumbent and the candidate with operating points")


def score_distributions(judging: pd.DataFrame | None) -> str:
    """Each model's score distribution on the judging rows, frauds and legitimate rows apart (labelled
    rows, IPW), on a log scale of the score: where the two classes sit, and how far apart."""
    if judging is None:
        return ""
    j = _labelled(judging)
    if j.empty:
        return ""
    fig = _figure(8.4, 2.8)
    axes = fig.subplots(1, 2, sharey=True)
    _margins(fig, 0.6, 0.5, wspace=0.1)
    bins = np.logspace(-4, 0, 41)
    for ax, model in zip(axes, ("incumbent", "candidate")):
        col = f"{model}_score"
        if col not in j:
            continue
        for cls, colour, name in ((0, "#9ca3af", "legitimate"), (1, COLOURS["fail"], "fraud")):
            part = j[(j["label"] > 0.5) == bool(cls)]
            if part.empty:
                continue
            s = np.clip(part[col].to_numpy(dtype=float), 1e-4, 1.0)
            density, _ = np.histogram(s, bins=bins, weights=part["weight"].to_numpy(dtype=float), density=True)
            ax.stairs(density, bins, fill=True, alpha=0.35 if cls == 0 else 0.45, color=colour, label=name)
        ax.set_xscale("log")
        ax.set_title(f"{model} scores")
        ax.set_xlabel("score (log scale)")
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylabel("density")
    return _svg(fig, "score distributions of frauds and legitimate transactions, both models")


def calibration(judging: pd.DataFrame | None, bins: int = 10) -> str:
    """Calibration: in each score decile of a model, the mean score against the observed (IPW) fraud rate
    of the labelled judging rows; on the diagonal a score means what it says."""
    if judging is None:
        return ""
    j = _labelled(judging)
    if j.empty or (j["label"] > 0.5).sum() == 0:
        return ""
    fig = _figure(4.2, 3.2)
    ax = fig.subplots()
    _margins(fig, 0.6, 0.5)
    hi = 0.0
    for model in ("incumbent", "candidate"):
        col = f"{model}_score"
        if col not in j:
            continue
        q = pd.qcut(j[col], bins, duplicates="drop")
        w = j["weight"].astype(float)
        g = pd.DataFrame({"s": j[col] * w, "y": (j["label"] > 0.5) * w, "w": w, "q": q}).groupby("q", observed=True).sum()
        g = g[g["w"] > 0]
        x, yv = (g["s"] / g["w"]).to_numpy(), (g["y"] / g["w"]).to_numpy()
        hi = max(hi, float(np.nanmax(x)), float(np.nanmax(yv)))
        ax.plot(x, yv, "o-", color=COLOURS[model], ms=3.5, lw=1.2, label=model)
    top = min(1.0, hi * 1.1 or 1.0)
    ax.plot([0, top], [0, top], ls="--", color="#9ca3af", lw=0.8, label="perfect")
    ax.set_xlabel("mean score in the decile")
    ax.set_ylabel("observed fraud rate (IPW)")
    ax.set_title("calibration, score deciles")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.25)
    return _svg(fig, "calibration of both models by score decile")


def forest(rows: list[dict], title: str) -> str:
    """A forest plot of one contract's verdicts in one unit: each slice's effect with the interval the
    contract judged, against the region that passes for that slice (shaded green: a slice may have its own
    limit); coloured by verdict. ``rows``: dicts with ``slice``, ``verdict``, ``effect``, ``effect_lo``,
    ``effect_hi``, ``allowed_lo``, ``allowed_hi`` and ``effect_unit`` (contracts.base: "relative" and "rate"
    drawn as %, "points" as percentage points)."""
    rows = [r for r in rows if not _nan(r.get("effect"))]
    if not rows:
        return ""
    unit = rows[0].get("effect_unit") or ""
    scale, suffix = {"relative": (100, "%"), "rate": (100, "%"), "points": (100, " pts")}.get(unit, (1, ""))

    def sc(x):
        return None if _nan(x) else float(x) * scale

    vals = [v for r in rows for v in (sc(r["effect"]), sc(r.get("effect_lo")), sc(r.get("effect_hi")),
                                      sc(r.get("allowed_lo")), sc(r.get("allowed_hi"))) if v is not None]
    lo_all, hi_all = min(vals + [0.0]), max(vals + [0.0])
    pad = 0.08 * ((hi_all - lo_all) or 1.0)
    x0, x1 = lo_all - pad, hi_all + pad
    fig = _figure(8.4, 0.85 + 0.24 * len(rows))
    ax = fig.subplots()
    _margins(fig, _label_room(_short(r["slice"]) for r in rows), 0.45, top=0.25)
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        a, b = sc(r.get("allowed_lo")), sc(r.get("allowed_hi"))
        if a is not None or b is not None:
            ax.fill_betweenx([y - 0.42, y + 0.42], x0 if a is None else a, x1 if b is None else b,
                             color=COLOURS["allowed"], lw=0, zorder=0)
        colour = COLOURS.get(str(r["verdict"]).split()[0], "#374151")
        lo, hi = sc(r.get("effect_lo")), sc(r.get("effect_hi"))
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color=colour, lw=2, solid_capstyle="butt")
        ax.plot([sc(r["effect"])], [y], "o", color=colour, ms=4.5)
    ax.axvline(0, color="#9ca3af", lw=0.6)
    ax.set_xlim(x0, x1)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(range(len(rows)), [_short(r["slice"]) for r in rows][::-1], fontsize=8)
    ax.set_xlabel(f"{_UNIT_WORDS.get(unit, unit)}{' (' + suffix.strip() + ')' if suffix else ''}; "
                  "green: what passes")
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(axis="x", alpha=0.25)
    return _svg(fig, f"forest plot: {title}")


_UNIT_WORDS = {"relative": "relative change", "points": "change in percentage points", "rate": "rate",
               "auc": "AUC change", "ms": "milliseconds", "psi": "PSI"}


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _short(s, n: int = 28) -> str:
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def threshold_changes(sugg: pd.DataFrame | None) -> str:
    """Per merchant segment, how many merchants' thresholds go up, down or stay (suggested against the
    threshold in force, after any edit a person made), as stacked horizontal bars; with the median change."""
    if sugg is None or sugg.empty:
        return ""
    s = sugg.copy()
    before = s["current_threshold"].fillna(s.get("threshold_in_force"))
    after = s["proposed"].where(s["proposed"].notna(), s["suggested_threshold"]) if "proposed" in s \
        else s["suggested_threshold"]
    d = (after - before).astype(float)
    s["move"] = np.select([d > 1e-6, d < -1e-6, d.notna()], ["raised", "lowered", "unchanged"], "no threshold before")
    seg = s["segment"].fillna("none").astype(str)
    t = pd.crosstab(seg, s["move"])
    order = [c for c in ("lowered", "unchanged", "raised", "no threshold before") if c in t.columns]
    t = t[order].sort_index()
    med = d.groupby(seg).median()
    fig = _figure(8.4, 0.95 + 0.32 * len(t))
    ax = fig.subplots()
    _margins(fig, _label_room([f"{i}  (median -0.000)" for i in t.index]), 0.45, top=0.25)
    colours = {"lowered": COLOURS["fail"], "unchanged": "#9ca3af", "raised": COLOURS["candidate"],
               "no threshold before": "#e5e7eb"}
    left = np.zeros(len(t))
    for c in order:
        ax.barh(range(len(t)), t[c].to_numpy(), left=left, color=colours[c], label=f"{c} (blocks {'more' if c == 'lowered' else 'less' if c == 'raised' else 'the same'})" if c in ("lowered", "raised") else c)
        left += t[c].to_numpy()
    ax.set_yticks(range(len(t)), [f"{i}  (median {med.get(i, float('nan')):+.3f})" for i in t.index], fontsize=8)
    ax.set_xlabel("merchants")
    ax.set_title("threshold changes by merchant segment (suggested or edited vs in force)", fontsize=9, loc="left")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return _svg(fig, "threshold changes by merchant segment")


def guardrails_over_rollout(steps: list[dict], limits: dict[str, float] | None = None) -> str:
    """The live guardrails at each rollout stage (shadow, then each ramp step): score shift (PSI), latency
    p99 and error rate, each with its interval where it has one, coloured by its verdict; ``limits``
    (guardrail -> limit, from the stored verdicts) named in each panel's title (drawn, a limit far above
    the figures would flatten them)."""
    limits = limits or {}
    import json

    rows = []
    for st in steps:
        d = json.loads(st.get("details_json") or "{}")
        rows.append((st["stage"], d.get("guardrails") or {}))
    if not rows:
        return ""
    panels = [("score_shift", "score shift (PSI)", 1.0), ("latency_p99", "latency p99 (ms)", 1.0),
              ("error_rate", "error rate (%)", 100.0)]
    panels = [p for p in panels if any(p[0] in g for _, g in rows)]
    if not panels:
        return ""
    fig = _figure(8.4, 2.4)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    _margins(fig, 0.5, 0.6, wspace=0.35)
    for ax, (key, title, scale) in zip(axes, panels):
        for i, (stage, g) in enumerate(rows):
            v = g.get(key) or {}
            if v.get("value") is None:
                continue
            colour = COLOURS.get(v.get("status"), "#374151")
            if v.get("lo") is not None and v.get("hi") is not None:
                ax.plot([i, i], [v["lo"] * scale, v["hi"] * scale], color=colour, lw=2)
            ax.plot([i], [v["value"] * scale], "o", color=colour, ms=4)
        ax.set_xticks(range(len(rows)), [s for s, _ in rows], fontsize=7, rotation=30)
        lim = limits.get(key)
        ax.set_title(title + ("" if lim is None else f", limit {lim * scale:g}"), fontsize=9)
        ax.grid(alpha=0.25)
    return _svg(fig, "live guardrails at each rollout stage")


def trends(rows: list[dict]) -> str:
    """Across releases (oldest first): the policy's and the incumbent's recall, FPR and action rate as the
    release judged them (direct method for recall and FPR; every row for the action rate), with 95%
    intervals; each release's outcome as the marker (filled: shipped; cross: stopped or rolled back)."""
    if not rows:
        return ""
    fig = _figure(8.4, 2.6)
    axes = fig.subplots(1, 3)
    _margins(fig, 0.45, 0.75, wspace=0.3)
    x = np.arange(len(rows))
    for ax, (metric, title) in zip(axes, (("recall", "recall (DM)"), ("fpr", "false-positive rate (DM)"),
                                          ("action_rate", "action rate"))):
        for model in ("incumbent", "policy"):
            est = [r.get(f"{metric}_{model}") for r in rows]
            lo = [r.get(f"{metric}_{model}_lo") for r in rows]
            hi = [r.get(f"{metric}_{model}_hi") for r in rows]
            ok = [i for i, e in enumerate(est) if e is not None]
            if not ok:
                continue
            ax.plot([x[i] for i in ok], [100 * est[i] for i in ok], "-", color=COLOURS[model], lw=1, label=model)
            for i in ok:
                shipped = rows[i].get("status") == "promoted"
                if lo[i] is not None and hi[i] is not None and model == "policy":
                    ax.plot([x[i], x[i]], [100 * lo[i], 100 * hi[i]], color=COLOURS[model], lw=1.5, alpha=0.6)
                ax.plot([x[i]], [100 * est[i]], "o" if shipped or model == "incumbent" else "x", color=COLOURS[model],
                        ms=4, mfc=COLOURS[model] if shipped or model == "incumbent" else "none")
        ax.set_title(title + " (%)", fontsize=9)
        ax.set_xticks(x, [r["id"].replace("rel-", "") for r in rows], fontsize=7, rotation=35)
        ax.grid(alpha=0.25)
    axes[0].legend(fontsize=7, frameon=False)
    return _svg(fig, "recall, false-positive rate and action rate across releases")


def importance(features: pd.DataFrame | None) -> str:
    """Each feature's share of the model's total split gain, candidate beside incumbent (``features``:
    feature, candidate, incumbent), largest first."""
    if features is None or features.empty:
        return ""
    f = features.sort_values("candidate", ascending=True)
    fig = _figure(8.4, 0.85 + 0.22 * len(f))
    ax = fig.subplots()
    _margins(fig, _label_room(f["feature"]), 0.45, top=0.25)
    y = np.arange(len(f))
    ax.barh(y + 0.2, 100 * f["incumbent"].fillna(0), height=0.4, color=COLOURS["incumbent"], label="incumbent")
    ax.barh(y - 0.2, 100 * f["candidate"].fillna(0), height=0.4, color=COLOURS["candidate"], label="candidate")
    ax.set_yticks(y, f["feature"].astype(str), fontsize=8)
    ax.set_xlabel("share of total split gain (%)")
    ax.set_title("feature importance", fontsize=9, loc="left")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return _svg(fig, "feature importance of both models")


def closed_loop(rows: list[dict]) -> str:
    """A closed-loop run's cycles (oldest first): recall, false-positive rate and action rate of the deployed
    decisions over each cycle's days from the simulation's truth (black), beside the releases' own estimates of
    the incumbent's policy on their judging rows (IPW and plain) and the truth of those rows (dashed); the new
    fraud pattern's share blocked. A filled marker: the cycle's release shipped; a cross: it did not."""
    if not rows:
        return ""
    fig = _figure(8.4, 5.0)
    axes = fig.subplots(2, 2)
    _margins(fig, 0.5, 0.55, wspace=0.25)
    fig.subplots_adjust(hspace=0.55)
    x = np.array([r["cycle"] for r in rows])
    shipped = np.array([r.get("status") == "promoted" for r in rows])

    def line(ax, key, colour, label, style="-"):
        y = np.array([np.nan if r.get(key) is None else 100 * r[key] for r in rows], dtype=float)
        if np.isnan(y).all():
            return
        ax.plot(x, y, style, color=colour, lw=1.2, label=label, marker="." if style == "-" else None, ms=5)
        return y

    for ax, metric, title in ((axes[0, 0], "recall", "recall (%)"), (axes[0, 1], "fpr", "false-positive rate (%)"),
                              (axes[1, 0], "action_rate", "action rate (%)")):
        y = line(ax, f"true_{metric}", "#111827", "deployed, truth of its days")
        if y is not None:
            ax.plot(x[shipped], y[shipped], "o", color="#111827", ms=4)
            ax.plot(x[~shipped], y[~shipped], "x", color="#111827", ms=5)
        if metric != "action_rate":
            line(ax, f"est_incumbent_{metric}_ipw", COLOURS["candidate"], "incumbent, estimated (IPW)")
            line(ax, f"est_incumbent_{metric}_plain", COLOURS["policy"], "incumbent, estimated (plain)")
            line(ax, f"true_incumbent_{metric}", COLOURS["incumbent"], "incumbent, truth of the judging rows", "--")
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(alpha=0.25)
        ax.set_xticks(x)
    axes[0, 0].legend(fontsize=6.5, frameon=False)
    ax = axes[1, 1]
    y = line(ax, "new_pattern_blocked", COLOURS["fail"], "new pattern: share blocked")
    if y is not None:
        ax.plot(x[shipped], y[shipped], "o", color=COLOURS["fail"], ms=4)
    ax.set_title("the new fraud pattern blocked (%)", fontsize=9, loc="left")
    ax.set_xticks(x)
    ax.set_xlabel("cycle")
    ax.grid(alpha=0.25)
    axes[1, 0].set_xlabel("cycle")
    return _svg(fig, "closed loop: recall, false-positive rate, action rate and the new pattern over cycles")


def estimate_gaps(runs: dict[str, list[dict]]) -> str:
    """Each run's releases' estimate of their incumbent's recall minus the truth of the same judging rows, IPW (solid)
    and plain (dotted), by cycle: the censoring's bias, with and without exploration."""
    if not runs:
        return ""
    fig = _figure(8.4, 2.6)
    ax = fig.subplots()
    _margins(fig, 0.55, 0.5, right=2.6)
    palette = [COLOURS["candidate"], COLOURS["policy"], COLOURS["incumbent"], COLOURS["approved"]]
    for i, (label, rows) in enumerate(runs.items()):
        colour = palette[i % len(palette)]
        for est, style in (("ipw", "-"), ("plain", ":")):
            pts = [(r["cycle"], 100 * (r[f"est_incumbent_recall_{est}"] - r["true_incumbent_recall"])) for r in rows
                   if r.get(f"est_incumbent_recall_{est}") is not None and r.get("true_incumbent_recall") is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=colour, marker=".", lw=1.2, label=f"{label}, {est}")
    ax.axhline(0, color="#111827", lw=0.8)
    ax.set_title("estimated minus true recall of the incumbent (points)", fontsize=9, loc="left")
    ax.set_xlabel("cycle")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=6.5, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _svg(fig, "the releases' recall estimates against the truth, runs side by side")
