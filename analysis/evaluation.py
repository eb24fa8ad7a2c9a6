"""Evaluate the candidate against the incumbent: every threshold fitted on one part of the window, the
policy that would go live judged on another.

The evaluation window (the snapshot's matured, out-of-time days) is split in two:

- **fitting rows** (the earlier days): the incumbent's operating point (its FPR at the thresholds in
  force), the candidate's global threshold matching it, and the per-merchant threshold suggestions are
  all fitted here;
- **judging rows** (the later days): every figure a contract judges comes from here, for the *policy*
  that would go live: per-merchant thresholds where a merchant has one (suggested, or approved with
  edits at re-judgement), the candidate's global threshold for every other merchant (thin ones shrunk to
  their segment, those not approved, and those never seen in the fitting rows).

A window of a single day (or without dates) is split by card instead (a seeded hash of the card id): the
same card never sits on both sides. ``Evaluation.windows`` says which rows fitted and which judged.

Inverse-propensity weights are made once (analysis.weighting) and every figure uses them: thresholds,
point estimates, intervals and ranking metrics.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.metrics import (by_value, grouped_sum, prepare, ranking_metrics, slice_codes, slice_counts,
                             slice_table, threshold_at_fpr, thresholds_for, weighted_fpr, with_candidate_threshold)
from analysis.stats import slice_intervals
from analysis.thresholds import suggest_thresholds
from analysis.weighting import MAX_WEIGHT, counterfactual_support, dr_fraud_terms, ipw_weights, outcome_model
from contracts.base import SLICE_COLUMNS, other_name, pooled_type
from release.core.io import atomic_write_parquet, atomic_write_text

RATES_ONLY_SLICES = {"merchant"}  # thousands of slices: action rates only, unless a contract reads more there
MONEY_SLICES = {"all"}  # money with intervals on all traffic (the report's); each slice's money is in the slices table
REPORT_SLICES = ["country", "merchant", "category", "card_country", "merchant_size", "amount_band", "card_segment"]
AMOUNT_BANDS = [0.0, 20.0, 100.0, 500.0, float("inf")]
AMOUNT_LABELS = ["<20", "20-100", "100-500", "500+"]
NEW_CARD_DAYS = 30  # a card first seen fewer than this many days ago is "new"
FIT_SHARE = 0.5  # the earlier half of the evaluation window's days fits thresholds, the later half judges
JUDGING_COLUMNS = ["tx_id", "day", "card_id", "merchant_id", "merchant_country", "merchant_category", "card_country",
                   "merchant_size", "amount_band", "card_segment", "amount", "label", "weight",
                   "incumbent_score", "candidate_score", "incumbent_threshold", "outcome",
                   "anchor_score", "anchor_threshold"]  # the last two: a drift budget's anchor, when scored


def add_segments(scored: pd.DataFrame) -> pd.DataFrame:
    """The segment columns slices need: merchant size (large merchants carry the first half of the
    window's traffic, medium the next 40%, small the rest), amount band and new vs returning card."""
    out = scored.copy()
    counts = out["merchant_id"].value_counts()  # sorted by volume, largest first
    share = counts.cumsum() / counts.sum()
    size = pd.Series(np.where(share.shift(fill_value=0) < 0.5, "large",
                              np.where(share.shift(fill_value=0) < 0.9, "medium", "small")), index=counts.index)
    out["merchant_size"] = by_value(out["merchant_id"], lambda c: c.map(size))
    out["amount_band"] = by_value(pd.cut(out["amount"], AMOUNT_BANDS, labels=AMOUNT_LABELS, right=False),
                                  lambda c: c.astype(str))
    if "card_age_days" in out:
        out["card_segment"] = by_value(out["card_age_days"] < NEW_CARD_DAYS,
                                       lambda new: pd.Series(np.where(new, "new card", "returning card")))
    elif "card_segment" not in out:
        out["card_segment"] = "unknown"
    return out


def _days(scored: pd.DataFrame) -> pd.Series | None:
    if "day" in scored:
        return pd.to_datetime(scored["day"]).dt.normalize()
    if "ts" in scored:
        return pd.to_datetime(scored["ts"], utc=True).dt.tz_localize(None).dt.normalize()
    return None


def _span(days: pd.Series) -> str:
    return f"{days.min():%Y-%m-%d}..{days.max():%Y-%m-%d}" if len(days) else "-"


def split_fit_judge(scored: pd.DataFrame, fit_share: float = FIT_SHARE, seed: int = 0) -> tuple[np.ndarray, dict]:
    """(fitting mask, description): the earlier ``fit_share`` of the window's days fit, the later days
    judge; with fewer than two days, cards are split by a seeded hash instead."""
    if not 0 < fit_share < 1:
        raise ValueError(f"The 'fit_share' parameter of split_fit_judge must be a float in (0, 1). Got {fit_share!r}.")
    days = _days(scored)
    uniq = np.sort(days.unique()) if days is not None else np.array([])
    if len(uniq) >= 2:
        k = int(min(max(round(len(uniq) * fit_share), 1), len(uniq) - 1))
        fit = (days < uniq[k]).to_numpy()
        desc = {"method": "time", "fitting": _span(days[fit]), "judging": _span(days[~fit]),
                "fitting_start": f"{days[fit].min():%Y-%m-%d}", "judging_start": f"{pd.Timestamp(uniq[k]):%Y-%m-%d}",
                "judging_end": f"{days.max() + pd.Timedelta(days=1):%Y-%m-%d}"}
    else:
        h = pd.util.hash_pandas_object(scored["card_id"].astype(str), index=False, hash_key=f"fraudcd-{seed:09d}"[:16])
        fit = (h.to_numpy() % 1000) < int(1000 * fit_share)
        span = _span(days) if days is not None else "the window"
        desc = {"method": "card", "fitting": f"{span}, cards of one half (seeded hash)",
                "judging": f"{span}, the other cards"}
    lab = scored["label"]
    desc.update({"fitting_rows": int(fit.sum()), "judging_rows": int((~fit).sum()),
                 "fitting_frauds": int((lab[fit] == 1).sum()), "judging_frauds": int((lab[~fit] == 1).sum())})
    desc["sentence"] = (f"Thresholds fitted on {desc['fitting_rows']:,} rows ({desc['fitting']}, "
                        f"{desc['fitting_frauds']:,} matured frauds); judged on {desc['judging_rows']:,} other rows "
                        f"({desc['judging']}, {desc['judging_frauds']:,} matured frauds)"
                        + (", split by card: the window has a single day." if desc["method"] == "card" else "."))
    return fit, desc


def pooled_slices(codes: np.ndarray, names: np.ndarray, support: np.ndarray, min_support: int,
                  slice_type: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """The slices ``codes`` into ``names`` (as analysis.metrics.slice_codes makes them) with those whose
    summed ``support`` is below ``min_support`` pooled into one "other ..." slice: the pooled (codes,
    names), in the same form, and {pooled slice name: its members}."""
    tot = np.bincount(codes, weights=np.asarray(support, dtype=float), minlength=len(names))
    small = tot < min_support
    if not small.any():
        return codes, names, {}
    name = other_name(slice_type)
    members = sorted(map(str, names[small]))
    shown = ", ".join(members[:6]) + (f" and {len(members) - 6} more" if len(members) > 6 else "")
    pooled, code_of = np.unique(np.where(small, name, names).astype(object), return_inverse=True)
    return code_of[codes].astype(np.int32), pooled, {name: f"{len(members)}: {shown}"}


def slice_counterfactual_support(keys: dict[str, tuple[np.ndarray, np.ndarray]], label: np.ndarray,
                                 weight: np.ndarray) -> pd.DataFrame:
    """analysis.weighting.counterfactual_support for every slice at once (grouped sums, not a loop): per
    (slice_type, slice) of ``keys`` (slice type -> (codes, names) as analysis.metrics.slice_codes makes
    them), censored rows (unlabelled in a matured window: blocked by the policy of the day), explored rows
    and explored frauds (labelled rows carrying a weight above 1), and the Kish effective sample size of the
    frauds' and of the legitimate rows' weights. Row counts are counted; weight sums are pandas' grouped
    sums (compensated, in row order), the frauds' over the fraud rows only."""
    labelled = ~np.isnan(label)
    fraud = labelled & (label == 1)
    legit = labelled & (label == 0)
    explored = labelled & (weight > 1)
    w = np.where(labelled, weight, 0.0)
    counted = {"censored": np.flatnonzero(~labelled), "explored": np.flatnonzero(explored),
               "explored_frauds": np.flatnonzero(explored & fraud)}
    frauds = np.flatnonzero(fraud)
    wf = w[frauds]
    frauds_w = pd.DataFrame({"_wf": wf, "_wf2": wf ** 2})
    wl = w * legit
    legit_w = pd.DataFrame({"_wl": wl, "_wl2": wl ** 2})
    parts = []
    for t, (codes, names) in keys.items():
        n_s = len(names)
        g = pd.DataFrame({c: np.bincount(codes[r], minlength=n_s).astype(np.int64) for c, r in counted.items()})
        f = grouped_sum(frauds_w, codes[frauds], n_s)
        legit_sums = grouped_sum(legit_w, codes, n_s)
        with np.errstate(invalid="ignore", divide="ignore"):
            g["ess_frauds"] = np.where(f["_wf2"] > 0, f["_wf"] ** 2 / f["_wf2"], 0.0)
            g["ess_legit"] = np.where(legit_sums["_wl2"] > 0, legit_sums["_wl"] ** 2 / legit_sums["_wl2"], 0.0)
        g.insert(0, "slice", pd.Index(np.asarray(names).astype(str), dtype=object).astype(str))
        g.insert(0, "slice_type", t)
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


@dataclass
class Evaluation:
    """One policy judged against the incumbent on judging rows that did not fit it.

    ``slices`` has one row per (at, slice_type, slice) of point figures on the judging rows: ``at`` is
    "operating_point" (the candidate at one global threshold fitted to the incumbent's FPR) or "policy"
    (the per-merchant thresholds and the global one elsewhere). ``metrics`` is the tidy table of every
    metric with its 95% interval (analysis.stats.slice_intervals) on the judging rows: one row per
    (slice_type, slice, metric, estimator, model), model being incumbent (thresholds in force), candidate
    (operating point), policy, or a difference against the incumbent; pooled slice types (see
    contracts.base.pooled_type) for the contracts, with counterfactual support columns. ``overall`` is at
    the operating point. ``windows`` says which rows fitted and which judged. ``policy_source`` is
    "suggested" (every suggestion as if approved) or "approved" (the approved thresholds with edits)."""

    overall: dict
    slices: pd.DataFrame
    recall_diff: dict
    operating_fpr: float
    candidate_threshold: float
    suggestions: pd.DataFrame
    metrics: pd.DataFrame | None = None
    ranking_diff: dict | None = None  # metric -> candidate-minus-incumbent diff, lo, hi (all traffic, IPW)
    windows: dict = field(default_factory=dict)
    policy_source: str = "suggested"
    policy_global_threshold: float | None = None
    judging: pd.DataFrame | None = None  # the judging rows (scores, labels, weights, slices), for re-judgement

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        atomic_write_parquet(self.slices, folder / "slices.parquet")
        atomic_write_parquet(self.suggestions, folder / "suggestions.parquet")
        if self.metrics is not None:
            atomic_write_parquet(self.metrics, folder / "metrics.parquet")
        if self.judging is not None:
            atomic_write_parquet(self.judging, folder / "judging.parquet")
        atomic_write_text(json.dumps({"overall": self.overall, "recall_diff": self.recall_diff,
                                      "ranking_diff": self.ranking_diff,
                                      "operating_fpr": self.operating_fpr,
                                      "candidate_threshold": self.candidate_threshold,
                                      "windows": self.windows, "policy_source": self.policy_source,
                                      "policy_global_threshold": self.policy_global_threshold},
                                     indent=2, default=_jsonable), folder / "evaluation.json")

    @classmethod
    def load(cls, folder: Path) -> "Evaluation":
        folder = Path(folder)
        meta = json.loads((folder / "evaluation.json").read_text())
        metrics, judging = folder / "metrics.parquet", folder / "judging.parquet"
        return cls(metrics=pd.read_parquet(metrics) if metrics.exists() else None,
                   overall=meta["overall"], slices=pd.read_parquet(folder / "slices.parquet"),
                   suggestions=pd.read_parquet(folder / "suggestions.parquet"),
                   recall_diff=meta["recall_diff"], operating_fpr=meta["operating_fpr"],
                   candidate_threshold=meta["candidate_threshold"], ranking_diff=meta.get("ranking_diff"),
                   windows=meta.get("windows") or {}, policy_source=meta.get("policy_source", "suggested"),
                   policy_global_threshold=meta.get("policy_global_threshold"),
                   judging=pd.read_parquet(judging) if judging.exists() else None)


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x)
    return str(x)


def all_slices(p: pd.DataFrame, keys: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """analysis.metrics.slice_table of a ``prepare``d frame for every slice type of ``keys`` (slice type ->
    (codes, names)), one after the other."""
    counts = slice_counts(p)
    return pd.concat([slice_table(counts, codes, names, t) for t, (codes, names) in keys.items()], ignore_index=True)


def _contracts_in_force():
    from contracts.evaluator import load_contracts
    from release.core.settings import contracts_file

    return load_contracts(contracts_file())


def evaluate(scored: pd.DataFrame, inc_thresholds: pd.Series | dict, inc_default: float,
             slice_names: list[str] = REPORT_SLICES, n_boot: int = 1000, seed: int = 0,
             max_weight: float = MAX_WEIGHT, fit_share: float = FIT_SHARE,
             pools: set[tuple[str, str, int]] | None = None, threshold_config=None,
             ranking: bool = True, anchored: bool | None = None, detailed: set[str] | None = None) -> Evaluation:
    """Fit thresholds on the earlier rows of ``scored``, judge the suggested policy on the later ones.

    ``scored`` has incumbent_score, candidate_score, label (NaN: unlabelled), weight (1/propensity),
    amount, card_id, merchant_id and slice columns, and ``day`` (or ``ts``) for the time split.
    ``inc_thresholds`` / ``inc_default`` are the incumbent's thresholds in force. ``pools``, ``detailed`` and
    ``anchored``: what the contracts read (``judge_policy``; by default, from the contracts in force: a
    caller judging a release passes all three from the one set it loaded). Intervals come
    from a paired bootstrap resampled by card with ``n_boot`` replicates."""
    scored = add_segments(scored)
    scored["weight"] = ipw_weights(scored["label"], scored["weight"], max_weight=max_weight)
    inc_thr = thresholds_for(scored["merchant_id"], inc_thresholds, inc_default)
    scored["incumbent_threshold"] = inc_thr
    fit, windows = split_fit_judge(scored, fit_share, seed)
    # the outcome model of the counterfactual figures: each row's fraud probability from the logging
    # policy's score, calibrated on the labelled fitting rows (explored rows weighted by 1/propensity stand
    # for the blocked region), applied to every row; judging rows never fit it. Only the logged score: a
    # model that also read the candidate's score would trust it exactly where the candidate goes wrong
    logged = scored["logged_score"] if "logged_score" in scored else scored["incumbent_score"]
    scored["outcome"] = outcome_probability(logged.to_numpy(dtype=float)[:, None], fit, scored["label"],
                                            scored["weight"])
    f = scored[fit]
    # the operating point on the fitting rows, in the estimand the gates judge (direct method): each
    # labelled legitimate row counts 1, each censored row 1 - its fraud probability
    legit = fraud_mass(f["label"], f["outcome"], legit=True)
    op_fpr = weighted_fpr(f["incumbent_score"].to_numpy(), np.zeros(len(f)), legit, inc_thr[fit])
    cand_t = threshold_at_fpr(f["candidate_score"].to_numpy(), np.zeros(len(f)), legit, op_fpr)
    current = pd.Series(inc_thresholds, dtype=float) if len(inc_thresholds) else None
    suggestions = suggest_thresholds(f, inc_thr[fit], cand_t, current=current, config=threshold_config)
    per = suggestions.set_index("merchant_id")["suggested_threshold"]
    judging = scored.loc[~fit, [c for c in JUDGING_COLUMNS if c in scored.columns]].reset_index(drop=True)
    ev = judge_policy(judging, cand_t, cand_t, per, slice_names=slice_names, n_boot=n_boot, seed=seed,
                      pools=pools, source="suggested", ranking=ranking, anchored=anchored, detailed=detailed)
    # the direct method's support is where its outcome model was fitted: the fitting rows' explored frauds
    sup = counterfactual_support(f["label"], f["weight"])
    outcome = {"rows": "fitting", "explored_frauds": sup.explored_frauds, "ess_frauds": float(sup.ess_frauds),
               "sentence": f"The outcome model (direct method) was fitted on the fitting rows: {sup.sentence}"}
    ev.operating_fpr, ev.suggestions = op_fpr, suggestions
    ev.windows = {**windows, "operating_fpr": op_fpr, "outcome_model": outcome}
    return ev


def _against_anchor(judging: pd.DataFrame, policy: np.ndarray, label: np.ndarray, weight: np.ndarray,
                    all_key: tuple[np.ndarray, np.ndarray], n_boot: int, seed: int, masses: dict | None) -> pd.DataFrame:
    """The policy against a drift budget's anchor on all traffic: the tidy rows of models ``anchor`` and
    ``policy-anchor`` (and ``policy/anchor`` where the engine gives ratios), from a paired bootstrap by card
    whose baseline is the anchor. Without anchor columns the anchor is the incumbent."""
    own = "anchor_score" in judging and "anchor_threshold" in judging
    score = judging["anchor_score" if own else "incumbent_score"].to_numpy(dtype=float)
    thr = judging["anchor_threshold" if own else "incumbent_threshold"].to_numpy(dtype=float)
    anchor = (score >= thr).astype(float)
    rows = slice_intervals(label, weight, judging["amount"], {"anchor": anchor, "policy": policy}, {"all": all_key},
                           judging["card_id"], baseline="anchor", n_boot=n_boot, seed=seed, max_weight=np.inf,
                           masses={"dm": masses["dm"]} if masses else None, money=set())
    return rows[rows["model"].isin(["anchor", "policy-anchor", "policy/anchor"])]


def outcome_probability(scores: np.ndarray, fit: np.ndarray, label: pd.Series, weight: pd.Series) -> np.ndarray:
    """Each row's fraud probability from ``scores`` (one column per score): analysis.weighting's
    outcome_model (a weighted logistic calibration) fitted on the ``fit`` rows only, predicted for all."""
    x = np.asarray(scores, dtype=float)
    lab = label.to_numpy(dtype=float, na_value=np.nan).copy()
    lab[~fit] = np.nan  # judging rows do not fit the model
    w = np.where(fit, weight.to_numpy(dtype=float, na_value=0.0), 0.0)
    scale = "probability" if ((x >= 0) & (x <= 1)).all() else "raw"
    return outcome_model(x, lab, w, scale=scale)


def fraud_mass(label, outcome, legit: bool = False) -> np.ndarray:
    """The direct method's fraud mass of each row: its label when labelled, the outcome model's
    probability when censored (``legit``: one minus it)."""
    y = np.asarray(label, dtype=float)
    f = np.where(np.isnan(y), np.asarray(outcome, dtype=float), y)
    return 1 - f if legit else f


def judge_policy(judging: pd.DataFrame, candidate_threshold: float, policy_global: float,
                 policy_per_merchant: pd.Series | dict | None, *, slice_names: list[str] = REPORT_SLICES,
                 n_boot: int = 1000, seed: int = 0, pools: set[tuple[str, str, int]] | None = None,
                 source: str = "suggested", windows: dict | None = None, ranking: bool = True,
                 detailed: set[str] | None = None, anchored: bool | None = None) -> Evaluation:
    """Judge one policy (per-merchant thresholds, ``policy_global`` for every other merchant) and the
    candidate at its operating threshold against the incumbent (``incumbent_threshold`` per row) on
    ``judging`` rows, with weights already made by analysis.weighting.

    ``pools`` and ``detailed`` come from the contracts in force when not given: the pooled slice types
    they read, and the slice types on which they read more than action rates. Merchant slices (thousands)
    get action rates only unless ``detailed`` names them: their only reader is merchant block-rate
    stability, and each merchant's recall and FPR are in the threshold suggestions. The slices table
    keeps every metric of every merchant.

    ``anchored`` (by default: whether a drift budget is in force, contracts.drift_budget) adds the policy
    against the anchor, all traffic only: the models ``anchor`` and ``policy-anchor`` (a second paired
    bootstrap by card on the same rows, its baseline the anchor). The anchor is the production of a drift
    budget's window start (``anchor_score`` and ``anchor_threshold`` per row, scored by the caller), or the
    incumbent where the judging rows carry none (no release shipped in the window)."""
    if pools is None or detailed is None or anchored is None:
        cs = _contracts_in_force()
        pools = cs.pools() if pools is None else pools
        detailed = cs.detailed_slices() if detailed is None else detailed
        anchored = bool(cs.drift_budgets()) if anchored is None else anchored
    pools = set(pools)
    # every slice column hashed once (two at a time: the hashing lets other threads run): the tables, the
    # intervals, the support and the policy's thresholds all read these codes
    needed = sorted({SLICE_COLUMNS[t] for t in ["merchant", *slice_names, *(t for t, _, _ in pools)]} - {None})
    with ThreadPoolExecutor(2) as hashing:
        columns = dict(zip(needed, hashing.map(lambda c: slice_codes(judging[c]), needed)))

    def codes_of(slice_type: str) -> tuple[np.ndarray, np.ndarray]:
        col = SLICE_COLUMNS[slice_type]
        if col not in columns:
            columns[col] = slice_codes(judging[col])
        return columns[col]

    inc_thr = judging["incumbent_threshold"].to_numpy(dtype=float)
    p = prepare(judging, inc_thr, np.full(len(judging), candidate_threshold))
    with ThreadPoolExecutor(2) as background:  # the exact ranking and the policy's slice tables beside the rest
        ranked = background.submit(ranking_metrics, p) if ranking else None
        merchant_codes, merchants = codes_of("merchant")  # each merchant's threshold looked up once, not per row
        pol_thr = thresholds_for(pd.Series(merchants), policy_per_merchant, policy_global)[merchant_codes]
        pol_p = with_candidate_threshold(p, pol_thr)
        keys = {"all": (np.zeros(len(judging), dtype=np.int32), np.array(["all"], dtype=object))}
        keys.update({name: codes_of(name) for name in slice_names})
        pol_future = background.submit(all_slices, pol_p, keys)
        op = all_slices(p, keys)
        pol = pol_future.result()
        op.insert(0, "at", "operating_point")
        pol.insert(0, "at", "policy")
        slices = pd.concat([op, pol], ignore_index=True)
        overall = op[op["slice_type"] == "all"].iloc[0].drop("at").to_dict()
        if ranked is not None:
            overall.update(ranked.result())
    overall = {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v) for k, v in overall.items()}
    # the intervals need only the three models' decisions of the prepared frames: kept, the frames let go
    # before the engine's own arrays are made
    acts = {"incumbent": p["incumbent_action"].to_numpy(dtype=float, copy=True),
            "candidate": p["candidate_action"].to_numpy(dtype=float, copy=True),
            "policy": pol_p["candidate_action"].to_numpy(dtype=float, copy=True)}
    del p, pol_p
    label = judging["label"].astype(float).to_numpy()
    weight = judging["weight"].astype(float).to_numpy()
    members = {}
    lean = RATES_ONLY_SLICES - set(detailed)  # the slice types, pooled or not, reported with action rates only
    rates_only = {t for t in keys if t in lean}
    for slice_type, measure, min_support in sorted(pools):
        name = pooled_type(slice_type, measure, min_support)
        if slice_type in lean:
            rates_only.add(name)
        if name in keys:
            continue
        support = {"transactions": np.ones(len(judging)), "frauds": (label == 1).astype(float),
                   "actions": acts["incumbent"]}[measure]
        codes, names, m = pooled_slices(*codes_of(slice_type), support, min_support, slice_type)
        keys[name] = (codes, names)
        members.update({(name, k): v for k, v in m.items()})
    # the counterfactual estimators beside IPW and plain, in the same pass (one paired bootstrap):
    # direct method (dm), per slice: every labelled row counts as its label, every censored row as the
    # outcome model's fraud probability; one calibration for the window, so a slice's figure does not
    # rest on the few explored frauds that fall in it (its bias is the calibration's, see README);
    # doubly robust (dr), all traffic: m + w (y - m), each explored row correcting the model
    masses = None
    if "outcome" in judging:
        m = judging["outcome"].to_numpy(dtype=float)
        masses = {"dm": (fraud_mass(label, m), None),
                  "dr": (dr_fraud_terms(label, weight, m), {"all"})}
    with ThreadPoolExecutor(1) as background:  # the support's counts beside the engine's single-threaded steps
        support = background.submit(slice_counterfactual_support, keys, label, weight)
        metrics = slice_intervals(
            label, weight, judging["amount"], acts, keys, judging["card_id"], baseline="incumbent", n_boot=n_boot,
            seed=seed, max_weight=np.inf, masses=masses, estimators_by_type={t: ("all",) for t in rates_only},
            money=MONEY_SLICES,
            scores={"incumbent": judging["incumbent_score"].to_numpy(),
                    "candidate": judging["candidate_score"].to_numpy()} if ranking else None)
        if anchored:
            metrics = pd.concat([metrics, _against_anchor(judging, acts["policy"], label, weight, keys["all"],
                                                          n_boot, seed, masses)], ignore_index=True)
    metrics = metrics.merge(support.result(), on=["slice_type", "slice"], how="left")
    pooled = np.full(len(metrics), None, dtype=object)  # the pooled slices' members, None elsewhere
    for (t, s), v in members.items():
        pooled[((metrics["slice_type"] == t) & (metrics["slice"] == s)).to_numpy()] = v
    metrics["members"] = list(pooled)

    def gain(metric: str) -> dict:
        d = metrics[(metrics.slice_type == "all") & (metrics.metric == metric) & (metrics.estimator == "ipw")
                    & (metrics.model == "candidate-incumbent")].iloc[0]
        return {"diff": float(d.estimate), "lo": float(d.lo), "hi": float(d.hi), "n_boot": n_boot}

    recall_diff = gain("recall")
    # ROC-AUC and PR-AUC: the bootstrapped difference on binned scores (the exact point estimates are in overall)
    ranking_diff = ({m: {k: (v if np.isfinite(v) else None) for k, v in gain(m).items()} for m in ("roc_auc", "pr_auc")}
                    if ranking else None)
    return Evaluation(overall=overall, slices=slices, recall_diff=recall_diff, operating_fpr=float("nan"),
                      candidate_threshold=float(candidate_threshold), suggestions=pd.DataFrame(), metrics=metrics,
                      ranking_diff=ranking_diff, windows=dict(windows or {}), policy_source=source,
                      policy_global_threshold=float(policy_global), judging=judging)
