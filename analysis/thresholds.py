"""Per-merchant threshold suggestions on the candidate's score.

A new model's scores mean something different from the old one's, so every merchant's blocking
threshold is re-chosen with it. The policy is chosen per merchant segment (``config/thresholds.yaml``):

- ``keep_block_rate`` (default): the merchant keeps the block rate it had under the incumbent (it sees
  no shift); among thresholds that block that many of its transactions, a cut on the candidate's score
  blocks its highest-scored ones, which is what maximises recall at that block rate.
- ``target_fpr``: the lowest threshold whose (1/propensity-weighted) false-positive rate on the
  merchant's matured legitimate transactions stays at or below the segment's target.
- ``target_block_rate``: block a fixed share of the merchant's traffic, its highest-scored.
- ``risk_appetite``: a merchant's stated appetite, as the largest false-positive rate it accepts
  (merchants of the segment without a stated appetite use the segment's default).

Thin merchants (fewer than ``min_support`` transactions in the window) are shrunk toward their segment's
threshold with the empirical-Bayes credibility weight n / (n + m), and flagged; ``m`` is estimated per
segment from how much the merchants' incumbent block rates really differ beyond binomial noise
(beta-binomial, method of moments), or fixed in the configuration. Merchants with no traffic in the
window inherit their segment's threshold, or the global one when their segment is unknown.

Every suggestion carries the current and suggested threshold, the expected block rate, recall and FPR
before and after with Wilson intervals (on the Kish effective sample size of the weights), the blocked
fraud and false-decline amounts before and after, and one sentence saying why.

Vectorised: one sort of all rows by (merchant, score) and bincounts over merchant codes; no Python loop
over merchants (``benchmarks/bench_thresholds.py`` measures 100k merchants against a loop).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.stats import norm

GLOBAL = "__global__"
MAX_PRIOR_STRENGTH = 1e6  # "the merchants of this segment do not differ": full pooling


# ---- configuration --------------------------------------------------------------------------------------

class KeepBlockRate(BaseModel):
    """Keep each merchant's block rate under the incumbent; maximise recall at it."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["keep_block_rate"] = "keep_block_rate"


class TargetFPR(BaseModel):
    """The lowest threshold whose false-positive rate stays at or below ``fpr``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["target_fpr"]
    fpr: float = Field(gt=0, lt=1)


class TargetBlockRate(BaseModel):
    """Block ``block_rate`` of the merchant's traffic, its highest-scored transactions."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["target_block_rate"]
    block_rate: float = Field(ge=0, le=1)


class RiskAppetite(BaseModel):
    """Each merchant's stated appetite: the largest false-positive rate it accepts. Merchants without a
    stated appetite use ``default_fpr``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["risk_appetite"]
    default_fpr: float = Field(gt=0, lt=1)
    appetites: dict[str, Annotated[float, Field(gt=0, lt=1)]] = {}


Policy = Annotated[Union[KeepBlockRate, TargetFPR, TargetBlockRate, RiskAppetite], Field(discriminator="kind")]


class Shrinkage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_support: int = Field(200, ge=1)  # fewer transactions than this in the window: a thin merchant
    # pseudo-transactions of the segment's threshold; "auto" estimates it per segment (empirical Bayes)
    prior_strength: Union[Literal["auto"], Annotated[float, Field(gt=0)]] = "auto"


class AutoApprove(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False  # opt-in: off unless a person turns it on
    after_unedited_releases: int = Field(4, ge=1, le=100)
    segments: list[str] = []  # empty: any segment that qualifies


class Automation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    readiness_releases: int = Field(6, ge=1, le=100)  # readiness = unedited share over the last N releases
    auto_approve: AutoApprove = AutoApprove()


class ThresholdConfig(BaseModel):
    """``config/thresholds.yaml``. Field names are the YAML keys."""

    model_config = ConfigDict(extra="forbid")
    segment_by: str = "merchant_size"  # the column of the scored window that names a merchant's segment
    default_policy: Policy = KeepBlockRate()
    segments: dict[str, Policy] = {}
    shrinkage: Shrinkage = Shrinkage()
    confidence: float = Field(0.95, gt=0.5, lt=1)
    automation: Automation = Automation()

    @field_validator("segments")
    @classmethod
    def _names(cls, v: dict) -> dict:
        bad = [k for k in v if not str(k).strip()]
        if bad:
            raise ValueError("segment names must be non-empty")
        return v

    def policy_for(self, segment: str):
        return self.segments.get(segment, self.default_policy)


def load_threshold_config(path: str | Path | None = None) -> ThresholdConfig:
    """The threshold policy configuration; ``path`` None: ``<config>/thresholds.yaml`` when it exists,
    else the built-in defaults (keep every merchant's block rate; auto-approve off)."""
    from release.config import load_yaml_model

    if path is None:
        from release.settings import config_dir

        path = config_dir() / "thresholds.yaml"
        if not path.exists():
            return ThresholdConfig()
    return load_yaml_model(path, ThresholdConfig)


# ---- vectorised building blocks -------------------------------------------------------------------------

def _sorted_groups(codes: np.ndarray, by_score: np.ndarray, n_groups: int):
    """Rows ordered by (group, score descending), from ``by_score`` (all rows by score descending, shared
    by every grouping): a stable sort by group code keeps the score order inside each group, and a
    stable sort of small integers is a radix sort. Returns the order, each group's first position and size."""
    small = np.int32 if n_groups < 2 ** 31 else np.int64
    order = by_score[np.argsort(codes[by_score].astype(small), kind="stable")]
    n = np.bincount(codes, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(n)[:-1]])
    return order, start, n


def _cut(s_sorted: np.ndarray, start: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per group, a threshold that blocks (score >= threshold) exactly its ``k`` highest scores; where the
    k-th and (k+1)-th scores tie, it blocks fewer, never more. ``n`` must be >= 1 everywhere."""
    k = np.clip(k, 0, n)
    kth = s_sorted[start + np.maximum(k - 1, 0)]  # the lowest score still blocked
    nxt = s_sorted[start + np.minimum(k, n - 1)]  # the highest score let through
    out = np.where(kth > nxt, (kth + nxt) / 2, np.nextafter(kth, np.inf))
    out = np.where(k >= n, s_sorted[start + n - 1], out)  # block everything: the lowest score
    top = s_sorted[start]
    return np.where(k <= 0, np.nextafter(top, np.inf), out)  # block nothing: just above the highest


def _k_at_fpr(codes_sorted, negw_sorted, start, n, target) -> np.ndarray:
    """Per group: how many of its highest-scored rows can be blocked with weighted FPR <= target."""
    cum = np.cumsum(negw_sorted)
    before = np.concatenate([[0.0], cum])[start]  # cumulative weight before each group's first row
    within = cum - before[codes_sorted]
    tot = np.bincount(codes_sorted, weights=negw_sorted, minlength=len(n))
    limit = target * tot
    ok = within <= limit[codes_sorted] * (1 + 1e-12) + 1e-15
    return np.bincount(codes_sorted, weights=ok.astype(float), minlength=len(n)).astype(np.int64), tot


def _wilson(successes: np.ndarray, total: np.ndarray, n_eff: np.ndarray, z: float):
    """Wilson interval of a weighted proportion on the Kish effective sample size; NaN where total == 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(total > 0, successes / np.where(total > 0, total, 1), np.nan)
        n = np.where(n_eff > 0, n_eff, np.nan)
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def _credibility_prior(seg_of_m: np.ndarray, n_seg: int, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per segment, the beta-binomial prior strength m (method of moments): how many transactions' worth
    of the segment's evidence a merchant's own rate is weighed against. The rates' spread beyond binomial
    noise is the real between-merchant variance tau2; m = mu(1 - mu) / tau2 - 1. No real spread (or a
    segment of one merchant): full pooling."""
    nn = np.bincount(seg_of_m, weights=n, minlength=n_seg)
    kk = np.bincount(seg_of_m, weights=k, minlength=n_seg)
    count = np.bincount(seg_of_m, minlength=n_seg)
    mu = np.where(nn > 0, kk / np.where(nn > 0, nn, 1), 0.0)
    r = k / n
    spread = np.bincount(seg_of_m, weights=n * (r - mu[seg_of_m]) ** 2, minlength=n_seg) / np.where(nn > 0, nn, 1)
    noise = mu * (1 - mu) * count / np.where(nn > 0, nn, 1)
    tau2 = spread - noise
    with np.errstate(divide="ignore", invalid="ignore"):
        m = mu * (1 - mu) / tau2 - 1
    return np.where((tau2 > 0) & (count > 1) & np.isfinite(m), np.clip(m, 1.0, MAX_PRIOR_STRENGTH),
                    MAX_PRIOR_STRENGTH)


def _pct(x: pd.Series, digits: int = 1) -> pd.Series:
    """Percentages as text with a fixed number of decimals, for a whole column at once."""
    return pd.Series(np.char.mod(f"%.{digits}f%%", 100 * np.asarray(x, dtype=float)), index=x.index, dtype=object)


# ---- the suggestion -------------------------------------------------------------------------------------

def suggest_thresholds(scored: pd.DataFrame, inc_threshold: np.ndarray, global_threshold: float,
                       current: pd.Series | dict | None = None, min_support: int | None = None,
                       prior_strength: float | str | None = None, config: ThresholdConfig | None = None,
                       merchants: pd.Series | dict | None = None) -> pd.DataFrame:
    """One row per merchant: the threshold suggested for the candidate, the evidence behind it, and a
    one-sentence reason.

    ``scored`` has one row per transaction of the evaluation window: merchant_id, incumbent_score,
    candidate_score and, when present, label (NaN: not matured or censored), weight (1/propensity),
    amount and the segment column named by ``config.segment_by``. ``inc_threshold`` is each row's
    incumbent threshold in force; ``global_threshold`` the candidate's threshold for merchants without
    their own (the operating point). ``current`` (merchant -> threshold) and ``merchants`` (merchant ->
    segment) name merchants to suggest for even without traffic in the window. ``min_support`` and
    ``prior_strength`` override the configuration's shrinkage.
    """
    cfg = config if config is not None else load_threshold_config()
    min_support = cfg.shrinkage.min_support if min_support is None else int(min_support)
    prior_strength = cfg.shrinkage.prior_strength if prior_strength is None else prior_strength
    z = float(norm.ppf(0.5 + cfg.confidence / 2))

    inc_threshold = np.asarray(inc_threshold, dtype=float)
    if len(inc_threshold) != len(scored):
        raise ValueError(f"suggest_thresholds needs one incumbent threshold per row of scored; got "
                         f"{len(inc_threshold)} for {len(scored)} rows.")
    if len(scored) == 0:
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY.items()})
        if current is not None or merchants is not None:
            empty = pd.concat([empty, _no_data_rows(empty, current, merchants, np.array([], dtype=str),
                                                    np.array([]), global_threshold, cfg)], ignore_index=True)
        empty["reason"] = _reasons(empty) if len(empty) else pd.Series(dtype=str)
        return _tidy(empty)
    mcodes, mids = pd.factorize(scored["merchant_id"].astype(str), sort=True)
    M = len(mids)
    cand = scored["candidate_score"].to_numpy(dtype=float)
    inc_block = scored["incumbent_score"].to_numpy(dtype=float) >= inc_threshold
    if cfg.segment_by in scored.columns:
        seg_row = scored[cfg.segment_by].astype(str).to_numpy()
    elif cfg.segments:
        raise ValueError(f"The threshold configuration sets policies per '{cfg.segment_by}' segment "
                         f"({', '.join(sorted(cfg.segments))}) but the scored window has no "
                         f"'{cfg.segment_by}' column. Columns: {', '.join(map(str, scored.columns))}.")
    else:
        seg_row = np.full(len(scored), "all", dtype=object)
    labelled = scored["label"].notna().to_numpy() if "label" in scored else np.zeros(len(scored), bool)
    lab = np.where(labelled, scored["label"].fillna(0).to_numpy(dtype=float), 0.0) if "label" in scored \
        else np.zeros(len(scored))
    w = np.where(labelled, scored["weight"].fillna(0).to_numpy(dtype=float), 0.0) if "weight" in scored \
        else labelled.astype(float)
    amount = scored["amount"].to_numpy(dtype=float) if "amount" in scored else np.full(len(scored), np.nan)
    negw = w * (1 - lab) * labelled
    posw = w * lab

    # one segment per merchant (its most recent row's; segments are per merchant by construction)
    seg_of_m_name = pd.Series(seg_row).groupby(mcodes).last().reindex(range(M)).to_numpy()
    scodes_m, snames = pd.factorize(seg_of_m_name, sort=True)
    S = len(snames)
    seg_rows = scodes_m[mcodes]

    # policy of each merchant, from its segment
    kinds = np.array([cfg.policy_for(s).kind for s in snames], dtype=object)
    kind_m = kinds[scodes_m] if M else np.array([], dtype=object)

    def targets(kind: str, level: str) -> np.ndarray:
        """Per merchant (level 'm') or segment ('s'): the parameter of its policy, NaN if another kind."""
        vals = np.full(S, np.nan)
        for i, s in enumerate(snames):
            p = cfg.policy_for(s)
            if p.kind == kind:
                vals[i] = {"target_fpr": getattr(p, "fpr", np.nan), "target_block_rate":
                           getattr(p, "block_rate", np.nan), "risk_appetite": getattr(p, "default_fpr", np.nan)}[kind]
        if level == "s":
            return vals
        out = vals[scodes_m]
        if kind == "risk_appetite":  # merchants' own stated appetites override the segment default
            for s in snames:
                p = cfg.policy_for(s)
                if p.kind == "risk_appetite" and p.appetites:
                    stated = pd.Series(p.appetites, dtype=float)
                    got = pd.Series(mids).map(stated).to_numpy()
                    mine = (seg_of_m_name == s) & ~np.isnan(got)
                    out = np.where(mine, got, out)
        return out

    by_score = np.argsort(-cand, kind="stable")

    def thresholds(codes, G, kind_g, k_keep, tparams):
        order, start, n = _sorted_groups(codes, by_score, G)
        s_sorted, c_sorted = cand[order], codes[order]
        k = np.array(k_keep, dtype=np.int64)
        tb = tparams["target_block_rate"]
        k = np.where(kind_g == "target_block_rate", np.floor(np.nan_to_num(tb) * n + 0.5).astype(np.int64), k)
        fpr_t = np.where(kind_g == "target_fpr", tparams["target_fpr"], tparams["risk_appetite"])
        k_f, tot_neg = _k_at_fpr(c_sorted, negw[order], start, n, np.nan_to_num(fpr_t))
        by_fpr = np.isin(kind_g, ["target_fpr", "risk_appetite"])
        k = np.where(by_fpr, k_f, k)
        undefined = by_fpr & (tot_neg <= 0)  # no matured legitimate transactions: FPR cannot be judged
        safe_n = np.maximum(n, 1)
        t = _cut(s_sorted, start, safe_n, k) if len(s_sorted) else np.full(G, np.nan)
        return np.where(n > 0, t, np.nan), undefined, fpr_t

    # merchants
    n_m = np.bincount(mcodes, minlength=M)
    k_inc_m = np.bincount(mcodes, weights=inc_block.astype(float), minlength=M).astype(np.int64)
    raw, undefined_m, fpr_m = thresholds(mcodes, M, kind_m, k_inc_m,
                                         {k: targets(k, "m") for k in ("target_fpr", "target_block_rate",
                                                                       "risk_appetite")})
    # segments: the same policy on the segment's pooled traffic
    k_inc_s = np.bincount(seg_rows, weights=inc_block.astype(float), minlength=S).astype(np.int64)
    seg_t, undefined_s, _ = thresholds(seg_rows, S, kinds, k_inc_s,
                                       {k: targets(k, "s") for k in ("target_fpr", "target_block_rate",
                                                                     "risk_appetite")})
    seg_t = np.where(undefined_s | np.isnan(seg_t), global_threshold, seg_t)

    if prior_strength == "auto":
        m_seg = _credibility_prior(scodes_m, S, n_m.astype(float), k_inc_m.astype(float))
    else:
        m_seg = np.full(S, float(prior_strength))
    m_m = m_seg[scodes_m]
    weight = n_m / (n_m + m_m)
    shrunk = (n_m < min_support) | undefined_m
    weight = np.where(undefined_m, 0.0, weight)
    raw_filled = np.where(undefined_m, seg_t[scodes_m], raw)
    suggested = np.clip(np.where(shrunk, weight * raw_filled + (1 - weight) * seg_t[scodes_m], raw_filled), 0.0, 1.0)
    suggested = np.where(n_m > 0, suggested, global_threshold)

    # evidence: before (incumbent at its thresholds in force) and after (candidate at the suggestion)
    after_block = cand >= suggested[mcodes]

    def per_m(x):
        return np.bincount(mcodes, weights=x, minlength=M)

    pos_tot, neg_tot = per_m(posw), per_m(negw)
    n_eff_pos = np.where(per_m(posw ** 2) > 0, pos_tot ** 2 / np.maximum(per_m(posw ** 2), 1e-300), 0)
    n_eff_neg = np.where(per_m(negw ** 2) > 0, neg_tot ** 2 / np.maximum(per_m(negw ** 2), 1e-300), 0)
    out = pd.DataFrame({
        "merchant_id": np.asarray(mids, dtype=object).astype(str),
        "segment": snames[scodes_m].astype(str) if M else np.array([], dtype=str),
        "policy": kind_m.astype(str),
        # the merchant's own threshold under the incumbent (NaN: it had none, the global one applied) ...
        "current_threshold": (pd.Series(mids).map(pd.Series(current, dtype=float).rename(index=str))
                              .to_numpy(dtype=float) if current is not None and len(current) else np.full(M, np.nan)),
        # ... and the one that applied to it either way
        "threshold_in_force": pd.Series(inc_threshold).groupby(mcodes).last().reindex(range(M)).to_numpy(),
        "suggested_threshold": suggested,
        "raw_threshold": raw,
        "segment_threshold": seg_t[scodes_m] if M else np.array([]),
        "shrink_weight": np.where(shrunk, weight, 1.0),
        "support": n_m.astype(np.int64),
        "labelled": per_m(labelled.astype(float)).astype(np.int64),
        "frauds": per_m(lab * labelled).astype(np.int64),
        "incumbent_block_rate": k_inc_m / np.maximum(n_m, 1),
        "expected_block_rate": per_m(after_block.astype(float)) / np.maximum(n_m, 1),
    })
    for when, act in (("before", inc_block), ("after", after_block)):
        p, lo, hi = _wilson(per_m(posw * act), pos_tot, n_eff_pos, z)
        out[f"recall_{when}"], out[f"recall_{when}_lo"], out[f"recall_{when}_hi"] = p, lo, hi
        p, lo, hi = _wilson(per_m(negw * act), neg_tot, n_eff_neg, z)
        out[f"fpr_{when}"], out[f"fpr_{when}_lo"], out[f"fpr_{when}_hi"] = p, lo, hi
        out[f"blocked_fraud_amount_{when}"] = per_m(posw * act * amount)
        out[f"false_decline_amount_{when}"] = per_m(negw * act * amount)
    out["shrunk"] = shrunk
    out["no_data"] = False
    out["target"] = np.where(np.isin(kind_m, ["target_fpr", "risk_appetite"]), fpr_m,
                             np.where(kind_m == "target_block_rate", targets("target_block_rate", "m"), np.nan)) \
        if M else np.array([])

    out = pd.concat([out, _no_data_rows(out, current, merchants, snames, seg_t, global_threshold, cfg)],
                    ignore_index=True) if (current is not None or merchants is not None) else out
    out["reason"] = _reasons(out)
    return _tidy(out)


def _tidy(out: pd.DataFrame) -> pd.DataFrame:
    out = out.drop(columns=["inherits"], errors="ignore")
    return out.sort_values("merchant_id", kind="stable").reset_index(drop=True)


_EMPTY = {"merchant_id": str, "segment": str, "policy": str, "current_threshold": float, "threshold_in_force": float,
          "suggested_threshold": float, "raw_threshold": float, "segment_threshold": float,
          "shrink_weight": float, "support": "int64", "labelled": "int64", "frauds": "int64",
          "incumbent_block_rate": float, "expected_block_rate": float, "shrunk": bool, "no_data": bool,
          "target": float}


def _no_data_rows(out: pd.DataFrame, current, merchants, snames, seg_t, global_threshold: float,
                  cfg: ThresholdConfig) -> pd.DataFrame:
    """Merchants named in ``current`` or ``merchants`` with no traffic in the window: they inherit their
    segment's threshold when their segment is known and has traffic, else the global threshold."""
    cur = pd.Series(current if current is not None and len(current) else {}, dtype=float)
    segs = pd.Series(merchants if merchants is not None and len(merchants) else {}, dtype=object)
    names = pd.Index(cur.index.astype(str)).union(pd.Index(segs.index.astype(str))).difference(out["merchant_id"])
    if len(names) == 0:
        return out.iloc[0:0]
    segs.index = segs.index.astype(str)
    cur.index = cur.index.astype(str)
    seg = segs.reindex(names).astype(object).where(lambda s: s.notna(), None)
    known = pd.Series(seg_t, index=pd.Index(snames.astype(str)))
    inherited = seg.map(known)
    rows = pd.DataFrame({
        "merchant_id": names.astype(str),
        "segment": seg.fillna("unknown").astype(str).to_numpy(),
        "policy": "inherit",
        "current_threshold": cur.reindex(names).to_numpy(),
        "threshold_in_force": cur.reindex(names).to_numpy(),
        "suggested_threshold": inherited.fillna(global_threshold).to_numpy(dtype=float),
        "segment_threshold": inherited.to_numpy(dtype=float),
        "shrink_weight": 0.0, "support": 0, "labelled": 0, "frauds": 0,
        "shrunk": False, "no_data": True,
    })
    rows["inherits"] = np.where(inherited.notna(), "segment", "global")
    return rows


def _reasons(out: pd.DataFrame) -> pd.Series:
    """One sentence per suggestion, built column-wise (no loop over merchants)."""
    n = out["support"].astype(int).astype(str)
    rate = _pct(out["incumbent_block_rate"].fillna(0), 2)
    target = out.get("target", pd.Series(np.nan, index=out.index))
    clause = pd.Series("", index=out.index, dtype=object)
    pol = out["policy"]
    clause[pol == "keep_block_rate"] = "keeps the merchant's block rate of " + rate + " under the new model"
    clause[pol == "target_fpr"] = ("holds its false-positive rate at or below the " + out["segment"].astype(str)
                                   + " segment's target of " + _pct(target, 2))
    clause[pol == "target_block_rate"] = ("blocks " + _pct(target, 2) + " of its traffic, the "
                                          + out["segment"].astype(str) + " segment's target")
    clause[pol == "risk_appetite"] = ("follows its stated risk appetite of at most " + _pct(target, 2)
                                      + " false positives")
    recall = np.where(out["frauds"].fillna(0) > 0,
                      "; recall " + _pct(out.get("recall_before", pd.Series(np.nan, index=out.index)).fillna(0))
                      + " -> " + _pct(out.get("recall_after", pd.Series(np.nan, index=out.index)).fillna(0)),
                      "")
    first = clause.str[:1].str.upper() + clause.str[1:]
    toward = ("shrunk " + (100 * (1 - out["shrink_weight"].fillna(0))).round(0).astype(int).astype(str)
              + "% of the way toward the " + out["segment"].astype(str) + " segment's threshold")
    reason = first + recall + "."
    thin = out["shrunk"].astype(bool) & ~out["no_data"].astype(bool)
    expected = _pct(out["expected_block_rate"].fillna(0), 2)
    reason[thin] = ("Thin merchant (" + n + " transactions): the threshold that " + clause + " is " + toward
                    + ", for an expected block rate of " + expected + recall + ".")[thin]
    no_labels = thin & out["policy"].isin(["target_fpr", "risk_appetite"]) & (out["labelled"] - out["frauds"] <= 0)
    reason[no_labels] = ("No matured legitimate transactions to judge its false-positive rate (" + n
                         + " transactions): takes the " + out["segment"].astype(str)
                         + " segment's threshold.")[no_labels]
    nd = out["no_data"].astype(bool)
    if nd.any():
        inherits = out.get("inherits", pd.Series("global", index=out.index))
        reason[nd & (inherits == "segment")] = ("No transactions in the evaluation window: inherits the "
                                                + out["segment"].astype(str) + " segment's threshold.")
        reason[nd & (inherits != "segment")] = ("No transactions in the evaluation window and no known "
                                                "segment: inherits the global threshold.")
    return reason
