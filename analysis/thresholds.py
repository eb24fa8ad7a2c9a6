"""Per-merchant threshold suggestions on the candidate's score.

A new model's scores mean something different from the old one's, so every merchant's blocking
threshold is re-chosen with it. The policy is chosen per merchant segment (``config/thresholds.yaml``):

- ``keep_block_rate`` (default): the merchant keeps the block rate it had under the incumbent (it sees
  no shift), as estimated with its segment's help (below); among thresholds that block that many of its
  transactions, a cut on the candidate's score blocks its highest-scored ones, which is what maximises
  recall at that block rate.
- ``target_fpr``: the lowest threshold whose (1/propensity-weighted) false-positive rate on the
  merchant's matured legitimate transactions stays at or below the segment's target.
- ``target_block_rate``: block a fixed share of the merchant's traffic, its highest-scored.
- ``risk_appetite``: a merchant's stated appetite, as the largest false-positive rate it accepts
  (merchants of the segment without a stated appetite use the segment's default).

Every merchant is shrunk toward its segment, by how much data it has (empirical Bayes), continuously in
n: there is no step at ``min_support``, which only flags a merchant as thin in the output and its reason.
Per segment, a beta-binomial prior Beta(mu m, (1 - mu) m) on its merchants' incumbent block rates: mu the
segment's pooled rate, m estimated from how much the merchants' rates really differ beyond binomial noise
(method of moments), or fixed in the configuration (``prior_strength``). Then, per merchant:

1. The block rate to reach. ``keep_block_rate``: the posterior mean (k + mu m) / (n + m) of the
   merchant's rate, k of its n transactions blocked by the incumbent. ``target_block_rate``: the target
   (fixed; only the cut is noisy). FPR policies: the target false-positive rate.
2. The threshold that gives it on the merchant's score distribution shrunk toward its segment's: the
   mixture w F_merchant + (1 - w) F_segment, w = n / (n + min(m, min_support)) (``shrink_weight``): m
   says how alike the merchants' block rates are, not their score distributions, so the segment's scores
   never weigh more than ``min_support`` rows (a segment of merchants with one rate pools the rate, yet a
   merchant the new model scores higher than its peers keeps that rate with its own cut); for FPR policies the
   distributions of matured legitimate scores (1/propensity-weighted), with the Kish effective sample
   size of those weights as n. Block-rate policies take the threshold whose mixture rate is nearest the
   rate (ties: fewer blocks, never more); FPR policies the lowest one whose mixture FPR stays at or below
   the target. ``mixture_rate`` reports the mixture's rate at the threshold.

So a merchant with one row gets about its segment's threshold, and one with much more data than m keeps
its own block count: in count units the threshold solves c_m + m c_s / N = k + m mu to within half a
step (c_m, c_s the merchant's and segment's rows at or above it, N the segment's rows), so its count
moves from k by about m (mu - b_s) rows, b_s its segment's block rate at that threshold: none at all
when that is under half a row, and a share m / (n + m) of (mu - b_s) of its block rate in any case. ``raw_threshold``
is the merchant's own unshrunk cut, ``segment_threshold`` the segment's on its pooled traffic. A merchant
with no matured legitimate rows under an FPR policy takes its segment's threshold (its FPR cannot be
judged). Merchants with no traffic in the window inherit their segment's threshold, or the global one
when their segment is unknown.

Every suggestion carries the current and suggested threshold, the expected block rate, recall and FPR
before and after with Wilson intervals (on the Kish effective sample size of the weights), the paired
changes after - before of block rate, recall and FPR on the same rows (``block_rate_change``,
``recall_change``, ``fpr_change``, each with ``_lo``/``_hi``: McNemar's paired variance from the
discordant rows, on the Kish effective size, with Agresti and Min's half row per cell), the blocked
fraud and false-decline amounts before and after, and one sentence saying why.

Vectorised: one sort of all rows by score, reordered by merchant and by segment (radix sorts of small
integers), cumulative sums, bincounts and one searchsorted; no Python loop over merchants and no search
over thresholds (``benchmarks/bench_thresholds.py`` measures 100k merchants against loops and checks
every suggested threshold against a per-merchant bisection).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from release.core.distributions import norm_ppf

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
    # fewer transactions than this in the window: flagged thin (every merchant is shrunk alike)
    min_support: int = Field(200, ge=1)
    # m: the segment's evidence, in transactions, that a merchant's own is weighed against (its block rate's
    # Beta(mu m, (1 - mu) m) prior and weight 1 - n / (n + m) on the segment's scores); "auto" estimates it
    # per segment (empirical Bayes, method of moments)
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
    from release.core.config import load_yaml_model

    if path is None:
        from release.core.settings import config_dir

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


def _tie_runs(s_sorted: np.ndarray, c_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows in (group, score descending) order: the first and the last position of each row's run of
    equal scores inside its group (a threshold blocks a run whole or not at all)."""
    pos = np.arange(len(s_sorted))
    new = np.ones(len(s_sorted), bool)
    new[1:] = (s_sorted[1:] != s_sorted[:-1]) | (c_sorted[1:] != c_sorted[:-1])
    if new.all():  # no ties (continuous scores): every row is its own run
        return pos, pos
    run = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    return starts[run], (np.append(starts[1:], len(s_sorted)) - 1)[run]


def _mixture_cut(score: np.ndarray, weight: np.ndarray, merchants, segments, seg_of_m: np.ndarray,
                 alpha: np.ndarray, beta: np.ndarray, room: np.ndarray,
                 nearest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per merchant, the threshold of its score distribution shrunk toward its segment's: the lowest
    threshold t (the most blocked) with

        alpha * c_m(t) + beta * c_s(t) <= room,

    where c_m(t) and c_s(t) are the weight of the merchant's and of its segment's rows scoring >= t. With
    alpha = n / W_m, beta = m / W_s and room = (n + m) * rate this says: the mixture
    w * F_merchant + (1 - w) * F_segment, w = n / (n + m), blocks (or falsely declines) at most ``rate``.
    Where ``nearest`` (block-rate policies), the next step down is taken instead when it lands strictly
    closer to ``rate`` (so a merchant with much more data than m blocks exactly its own count, as m / n
    goes to 0); FPR policies stay at or below their target. Returns the thresholds and the left-hand side
    at them (divide by n + m for the mixture's rate).

    Exact, without searching over thresholds: the mixture only steps at the segment's scores, and the
    merchant's own rows are among them. (1) At each of the merchant's scores both cumulative weights are
    known (tie-aware), and the left-hand side never decreases down the merchant's order: the merchant's
    rows that can be blocked are its j highest. (2) Between its j-th and (j+1)-th score only the segment's
    other rows move the mixture: block as many of them as the room left allows (one searchsorted on the
    segment's cumulative weights), never a tie run in part. Where the k-th and (k+1)-th blocked scores
    tie, it blocks fewer, never more, as ``_cut`` does. ``merchants`` and ``segments`` are
    ``(codes, order, start, n)`` from ``_sorted_groups``."""
    codes_m, order_m, start_m, n_m = merchants
    codes_s, order_s, start_s, n_s = segments
    N = len(score)
    ss = score[order_s]
    first_s, last_s = _tie_runs(ss, codes_s[order_s])
    cum_s = np.cumsum(weight[order_s])  # over all segments: monotone, so one searchsorted serves them all
    base_s = np.concatenate([[0.0], cum_s])[start_s]
    pos_s = np.empty(N, np.int64)
    pos_s[order_s] = np.arange(N)  # each row's position in segment order
    cm = codes_m[order_m]
    _, last_m = _tie_runs(score[order_m], cm)
    cum_m = np.cumsum(weight[order_m])
    base_m = np.concatenate([[0.0], cum_m])[start_m]
    seg = seg_of_m
    lo, end = start_s[seg], start_s[seg] + n_s[seg]

    def tol(x):
        return x * (1 + 1e-12) + 1e-12

    # (1) the merchant's own rows
    c_m = cum_m[last_m] - base_m[cm]
    c_s = cum_s[last_s[pos_s[order_m]]] - base_s[seg[cm]]
    ok = alpha[cm] * c_m + beta[cm] * c_s <= tol(room[cm])
    j = np.bincount(cm, weights=ok, minlength=len(n_m)).astype(np.int64)
    blocked = j > 0
    last_blocked = start_m + np.maximum(j - 1, 0)
    C = np.where(blocked, cum_m[last_blocked] - base_m, 0.0)
    floor_ = np.where(blocked, last_s[pos_s[order_m[last_blocked]]] + 1, lo)  # keep its j rows blocked
    first_free = order_m[start_m + np.minimum(j, n_m - 1)]
    ceil_ = np.where(j < n_m, first_s[pos_s[first_free]], end)  # never block its (j + 1)-th row
    # (2) the segment's rows in between
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(beta > 0, (room - alpha * C) / np.where(beta > 0, beta, 1), np.inf)
    p = np.searchsorted(cum_s, base_s[seg] + tol(np.maximum(left, 0)), side="right")
    p = np.minimum(p, end)
    p = np.where((p > lo) & (p < end), first_s[np.minimum(p, N - 1)], p)  # a tie run whole or not at all
    p = np.clip(p, floor_, ceil_)
    c_s_at = np.where(p > lo, cum_s[np.maximum(p - 1, 0)] - base_s[seg], 0.0)
    lhs = alpha * C + beta * c_s_at
    # the next step down blocks the segment's next tie run (the merchant's (j + 1)-th row's, at p == ceil_)
    more = p < end
    p_next = np.where(more, last_s[np.minimum(p, N - 1)] + 1, p)
    C_next = np.where(more & (p == ceil_) & (j < n_m),
                      cum_m[last_m[start_m + np.minimum(j, n_m - 1)]] - base_m, C)
    lhs_next = alpha * C_next + beta * (cum_s[np.maximum(p_next - 1, 0)] - base_s[seg])
    closer = nearest & more & (lhs_next - room < (room - lhs) * (1 - 1e-9))  # ties: fewer, never more
    p, lhs = np.where(closer, p_next, p), np.where(closer, lhs_next, lhs)
    return _cut(ss, lo, n_s[seg], p - lo), lhs


def _paired_change(before: np.ndarray, after: np.ndarray, weights: np.ndarray, codes: np.ndarray, G: int,
                   z: float):
    """Per group, the change after - before of a (weighted) proportion judged on the same rows, with an
    interval that uses the pairing: only discordant rows say anything about the change. With ``up`` and
    ``down`` the shares of weight newly actioned and no longer actioned, d = up - down and
    var(d) = ((up + down) - d^2) / n (McNemar's paired difference), n the Kish effective sample size of
    the weights. The interval is Agresti and Min's (2005): that Wald form on the table with half a row
    added to each of its four cells, so that a group without discordant rows still gets an interval of
    non-zero width. NaN where the group has no weight."""
    W = np.bincount(codes, weights=weights, minlength=G)
    W2 = np.bincount(codes, weights=weights ** 2, minlength=G)
    has = W > 0
    safe = np.where(has, W, 1.0)
    up = np.bincount(codes, weights=weights * (after & ~before), minlength=G) / safe
    down = np.bincount(codes, weights=weights * (before & ~after), minlength=G) / safe
    n = np.where(has, W ** 2 / np.where(W2 > 0, W2, 1.0), np.nan)
    u, v = (up * n + 0.5) / (n + 2), (down * n + 0.5) / (n + 2)
    centre = u - v
    half = z * np.sqrt(np.maximum(u + v - centre ** 2, 0.0) / (n + 2))
    return (np.where(has, up - down, np.nan), np.where(has, np.clip(centre - half, -1, 1), np.nan),
            np.where(has, np.clip(centre + half, -1, 1), np.nan))


def _credibility_prior(seg_of_m: np.ndarray, n_seg: int, n: np.ndarray,
                       k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, the beta-binomial prior Beta(mu m, (1 - mu) m) on its merchants' incumbent block
    rates (method of moments): mu is the segment's pooled rate, m how many transactions' worth of the
    segment's evidence a merchant's own rate is weighed against. The rates' spread beyond binomial
    noise is the real between-merchant variance tau2; m = mu(1 - mu) / tau2 - 1. No real spread (or a
    segment of one merchant): full pooling. Returns (mu, m)."""
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
    return mu, np.where((tau2 > 0) & (count > 1) & np.isfinite(m), np.clip(m, 1.0, MAX_PRIOR_STRENGTH),
                        MAX_PRIOR_STRENGTH)


def _pct(x: pd.Series, digits: int = 1) -> pd.Series:
    """Percentages as text with a fixed number of decimals, for a whole column at once."""
    return pd.Series(np.char.mod(f"%.{digits}f%%", 100 * np.asarray(x, dtype=float)), index=x.index, dtype=object)


# ---- the suggestion -------------------------------------------------------------------------------------
# Four steps, each on the whole window at once: the window as arrays (_window), each merchant's and each
# segment's own threshold under its policy (_own_thresholds), the shrinkage toward the segment
# (_shrink), and the evidence before and after at the suggestion (_evidence).

_POLICY_PARAMS = ("target_fpr", "target_block_rate", "risk_appetite")


@dataclass
class _Window:
    """The evaluation window as arrays: a merchant code per row, a segment per merchant, the labels and
    1/propensity weights of matured rows (zero elsewhere)."""
    cfg: ThresholdConfig
    mcodes: np.ndarray  # per row, its merchant's code
    mids: pd.Index  # per merchant code, its id
    cand: np.ndarray  # the candidate's score
    inc_threshold: np.ndarray  # the incumbent's threshold in force on the row
    inc_block: np.ndarray  # the incumbent blocked it
    labelled: np.ndarray
    lab: np.ndarray  # 1.0 fraud, 0.0 legitimate or unlabelled
    amount: np.ndarray
    negw: np.ndarray  # the weight of a matured legitimate row
    posw: np.ndarray  # the weight of a fraud
    seg_of_m_name: np.ndarray  # per merchant, its segment's name
    scodes_m: np.ndarray  # per merchant, its segment's code
    snames: pd.Index  # per segment code, its name
    seg_rows: np.ndarray  # per row, its segment's code
    kinds: np.ndarray  # per segment, its policy's kind
    kind_m: np.ndarray  # per merchant, its policy's kind

    @property
    def M(self) -> int:
        return len(self.mids)

    @property
    def S(self) -> int:
        return len(self.snames)

    def per_m(self, x) -> np.ndarray:
        return np.bincount(self.mcodes, weights=x, minlength=self.M)

    def targets(self, kind: str, level: str) -> np.ndarray:
        """Per merchant (level 'm') or segment ('s'): the parameter of its policy, NaN if another kind."""
        cfg, snames = self.cfg, self.snames
        vals = np.full(self.S, np.nan)
        for i, s in enumerate(snames):
            p = cfg.policy_for(s)
            if p.kind == kind:
                vals[i] = {"target_fpr": getattr(p, "fpr", np.nan), "target_block_rate":
                           getattr(p, "block_rate", np.nan), "risk_appetite": getattr(p, "default_fpr", np.nan)}[kind]
        if level == "s":
            return vals
        out = vals[self.scodes_m]
        if kind == "risk_appetite":  # merchants' own stated appetites override the segment default
            for s in snames:
                p = cfg.policy_for(s)
                if p.kind == "risk_appetite" and p.appetites:
                    stated = pd.Series(p.appetites, dtype=float)
                    got = pd.Series(self.mids).map(stated).to_numpy()
                    mine = (self.seg_of_m_name == s) & ~np.isnan(got)
                    out = np.where(mine, got, out)
        return out


def _window(scored: pd.DataFrame, inc_threshold: np.ndarray, cfg: ThresholdConfig) -> _Window:
    mcodes, mids = pd.factorize(scored["merchant_id"].astype(str), sort=True)
    M = len(mids)
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
    # one segment per merchant (its most recent row's; segments are per merchant by construction)
    seg_of_m_name = pd.Series(seg_row).groupby(mcodes).last().reindex(range(M)).to_numpy()
    scodes_m, snames = pd.factorize(seg_of_m_name, sort=True)
    # policy of each merchant, from its segment
    kinds = np.array([cfg.policy_for(s).kind for s in snames], dtype=object)
    return _Window(
        cfg=cfg, mcodes=mcodes, mids=mids, cand=scored["candidate_score"].to_numpy(dtype=float),
        inc_threshold=inc_threshold,
        inc_block=scored["incumbent_score"].to_numpy(dtype=float) >= inc_threshold,
        labelled=labelled, lab=lab,
        amount=scored["amount"].to_numpy(dtype=float) if "amount" in scored else np.full(len(scored), np.nan),
        negw=w * (1 - lab) * labelled, posw=w * lab,
        seg_of_m_name=seg_of_m_name, scodes_m=scodes_m, snames=snames, seg_rows=scodes_m[mcodes],
        kinds=kinds, kind_m=kinds[scodes_m] if M else np.array([], dtype=object))


@dataclass
class _Own:
    """Each merchant's own (unshrunk) threshold and each segment's on its pooled traffic."""
    grp_m: tuple  # rows grouped by merchant, each group in descending candidate score
    grp_s: tuple  # the same by segment
    n_m: np.ndarray  # the merchant's rows
    k_inc_m: np.ndarray  # of which the incumbent blocked
    raw: np.ndarray  # its own threshold under its policy
    undefined_m: np.ndarray  # an FPR policy with no matured legitimate rows: its FPR cannot be judged
    fpr_m: np.ndarray  # its FPR target (FPR policies)
    seg_t: np.ndarray  # per segment, the policy's threshold on its pooled rows (the global one if undefined)


def _own_thresholds(win: _Window, global_threshold: float) -> _Own:
    M, S, cand, negw = win.M, win.S, win.cand, win.negw
    by_score = np.argsort(-cand, kind="stable")  # one sort of all rows; each grouping is a radix sort of it
    grp_m = (win.mcodes,) + _sorted_groups(win.mcodes, by_score, M)
    grp_s = (win.seg_rows,) + _sorted_groups(win.seg_rows, by_score, S)

    def thresholds(grp, G, kind_g, k_keep, tparams):
        """Per group, its own threshold under its policy (no shrinkage)."""
        codes, order, start, n = grp
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

    # merchants: their own thresholds, unshrunk (raw_threshold)
    n_m = np.bincount(win.mcodes, minlength=M)
    k_inc_m = np.bincount(win.mcodes, weights=win.inc_block.astype(float), minlength=M).astype(np.int64)
    raw, undefined_m, fpr_m = thresholds(grp_m, M, win.kind_m, k_inc_m,
                                         {k: win.targets(k, "m") for k in _POLICY_PARAMS})
    # segments: the same policy on the segment's pooled traffic
    k_inc_s = np.bincount(win.seg_rows, weights=win.inc_block.astype(float), minlength=S).astype(np.int64)
    seg_t, undefined_s, _ = thresholds(grp_s, S, win.kinds, k_inc_s,
                                       {k: win.targets(k, "s") for k in _POLICY_PARAMS})
    seg_t = np.where(undefined_s | np.isnan(seg_t), global_threshold, seg_t)
    return _Own(grp_m=grp_m, grp_s=grp_s, n_m=n_m, k_inc_m=k_inc_m, raw=raw, undefined_m=undefined_m,
                fpr_m=fpr_m, seg_t=seg_t)


@dataclass
class _Shrunk:
    """The suggestion: each merchant's threshold on its distribution shrunk toward its segment's."""
    suggested: np.ndarray
    weight: np.ndarray  # w = n / (n + m): the merchant's own share of its shrunk distribution
    m_m: np.ndarray  # the prior's strength m, per merchant
    mu_m: np.ndarray  # the prior's mean: its segment's pooled incumbent block rate
    rate: np.ndarray  # the rate reached on the mixture (posterior block rate, target block rate or FPR)
    mixture_rate: np.ndarray  # the mixture's rate at the suggestion
    by_fpr_m: np.ndarray  # the merchant follows an FPR policy
    shrunk: np.ndarray  # thin (or undefined): flagged, not treated differently


def _shrink(win: _Window, own: _Own, min_support: int, prior_strength: float | str,
            global_threshold: float) -> _Shrunk:
    M, S, scodes_m, seg_rows, kinds, kind_m = win.M, win.S, win.scodes_m, win.seg_rows, win.kinds, win.kind_m
    n_m, k_inc_m = own.n_m, own.k_inc_m
    # the prior: Beta(mu m, (1 - mu) m) on block rates, and m pseudo-transactions of the segment's scores
    mu_seg, m_seg = _credibility_prior(scodes_m, S, n_m.astype(float), k_inc_m.astype(float))
    if prior_strength != "auto":
        m_seg = np.full(S, float(prior_strength))
    m_m, mu_m = m_seg[scodes_m], mu_seg[scodes_m]

    # shrinkage, every merchant alike: block-rate policies on all rows, FPR policies on matured legitimate
    # rows (their 1/propensity weights, and the Kish effective sample size as the merchant's n)
    fpr_kinds = np.isin(kinds, ["target_fpr", "risk_appetite"])
    by_fpr_m = fpr_kinds[scodes_m]
    row_w = np.where(fpr_kinds[seg_rows], win.negw, 1.0)
    W_m = np.bincount(win.mcodes, weights=row_w, minlength=M)
    W2_m = np.bincount(win.mcodes, weights=row_w ** 2, minlength=M)
    W_s = np.bincount(seg_rows, weights=row_w, minlength=S)[scodes_m]
    n_e = np.where(W2_m > 0, W_m ** 2 / np.where(W2_m > 0, W2_m, 1), 0.0)  # = n for unit weights
    # the segment's scores weigh m pseudo-rows in the merchant's distribution, but never more than
    # min_support: m says how alike the merchants' block *rates* are, not their score distributions (a
    # segment whose rates do not differ pools the rate, m -> 1e6, yet a merchant the new model scores
    # higher than its peers still needs its own cut to keep that rate)
    m_d = np.minimum(m_m, float(min_support))
    weight = n_e / (n_e + m_d)
    # the rate to reach on the mixture: for keep_block_rate the posterior mean (k + mu m) / (n + m) of the
    # merchant's block rate; the target where the policy fixes one
    keep = kind_m == "keep_block_rate"
    rate = np.where(keep, (k_inc_m + mu_m * m_m) / (n_m + m_m),
                    np.where(kind_m == "target_block_rate", win.targets("target_block_rate", "m"), own.fpr_m))
    room = (n_e + m_d) * rate
    alpha = np.where(W_m > 0, n_e / np.where(W_m > 0, W_m, 1), 0.0)
    beta = np.where(W_s > 0, m_d / np.where(W_s > 0, W_s, 1), 0.0)
    mixed, lhs = _mixture_cut(win.cand, row_w, own.grp_m, own.grp_s, scodes_m, alpha, beta, np.nan_to_num(room),
                              nearest=~by_fpr_m)
    mixture_rate = lhs / (n_e + m_d)
    # no matured legitimate transactions (FPR policies): its FPR cannot be judged; the segment's threshold
    undefined_m = own.undefined_m
    suggested = np.clip(np.where(undefined_m, own.seg_t[scodes_m], mixed), 0.0, 1.0)
    return _Shrunk(suggested=np.where(n_m > 0, suggested, global_threshold),
                   weight=np.where(undefined_m, 0.0, weight), m_m=m_m, mu_m=mu_m, rate=rate,
                   mixture_rate=np.where(undefined_m, np.nan, mixture_rate), by_fpr_m=by_fpr_m,
                   shrunk=(n_m < min_support) | undefined_m)


def _evidence(win: _Window, own: _Own, sh: _Shrunk, current, z: float) -> pd.DataFrame:
    """One row per merchant: the suggestion and the evidence behind it, before (the incumbent at its
    thresholds in force) and after (the candidate at the suggestion)."""
    M, mcodes, mids, scodes_m, kind_m, per_m = win.M, win.mcodes, win.mids, win.scodes_m, win.kind_m, win.per_m
    n_m, k_inc_m, posw, negw = own.n_m, own.k_inc_m, win.posw, win.negw
    inc_block, after_block = win.inc_block, win.cand >= sh.suggested[mcodes]
    pos_tot, neg_tot = per_m(posw), per_m(negw)
    n_eff_pos = np.where(per_m(posw ** 2) > 0, pos_tot ** 2 / np.maximum(per_m(posw ** 2), 1e-300), 0)
    n_eff_neg = np.where(per_m(negw ** 2) > 0, neg_tot ** 2 / np.maximum(per_m(negw ** 2), 1e-300), 0)
    target_block = win.targets("target_block_rate", "m")
    out = pd.DataFrame({
        "merchant_id": np.asarray(mids, dtype=object).astype(str),
        "segment": win.snames[scodes_m].astype(str) if M else np.array([], dtype=str),
        "policy": kind_m.astype(str),
        # the merchant's own threshold under the incumbent (NaN: it had none, the global one applied) ...
        "current_threshold": (pd.Series(mids).map(pd.Series(current, dtype=float).rename(index=str))
                              .to_numpy(dtype=float) if current is not None and len(current) else np.full(M, np.nan)),
        # ... and the one that applied to it either way
        "threshold_in_force": pd.Series(win.inc_threshold).groupby(mcodes).last().reindex(range(M)).to_numpy(),
        "suggested_threshold": sh.suggested,
        "raw_threshold": own.raw,
        "segment_threshold": own.seg_t[scodes_m] if M else np.array([]),
        "shrink_weight": sh.weight,  # w = n / (n + m): the merchant's own share of its shrunk distribution
        "prior_strength": sh.m_m,
        "support": n_m.astype(np.int64),
        "labelled": per_m(win.labelled.astype(float)).astype(np.int64),
        "frauds": per_m(win.lab * win.labelled).astype(np.int64),
        "incumbent_block_rate": k_inc_m / np.maximum(n_m, 1),
        "segment_block_rate": sh.mu_m,  # the segment's pooled incumbent block rate (the prior's mean)
        # the rate the threshold gives on the shrunk distribution: the posterior block rate
        # (keep_block_rate) or the target (target_block_rate); NaN for FPR policies (see target)
        "posterior_block_rate": np.where(sh.by_fpr_m, np.nan, sh.rate),
        # the shrunk distribution's block rate (FPR for FPR policies) at the suggested threshold
        "mixture_rate": sh.mixture_rate,
        "expected_block_rate": per_m(after_block.astype(float)) / np.maximum(n_m, 1),
    })
    # after - before on the same rows, with intervals from the pairing
    ones = np.ones(len(mcodes))
    for name, wts in (("block_rate", ones), ("recall", posw), ("fpr", negw)):
        d, lo, hi = _paired_change(inc_block, after_block, wts, mcodes, M, z)
        out[f"{name}_change"], out[f"{name}_change_lo"], out[f"{name}_change_hi"] = d, lo, hi
    for when, act in (("before", inc_block), ("after", after_block)):
        p, lo, hi = _wilson(per_m(posw * act), pos_tot, n_eff_pos, z)
        out[f"recall_{when}"], out[f"recall_{when}_lo"], out[f"recall_{when}_hi"] = p, lo, hi
        p, lo, hi = _wilson(per_m(negw * act), neg_tot, n_eff_neg, z)
        out[f"fpr_{when}"], out[f"fpr_{when}_lo"], out[f"fpr_{when}_hi"] = p, lo, hi
        out[f"blocked_fraud_amount_{when}"] = per_m(posw * act * win.amount)
        out[f"false_decline_amount_{when}"] = per_m(negw * act * win.amount)
    out["shrunk"] = sh.shrunk
    out["no_data"] = False
    out["target"] = np.where(np.isin(kind_m, ["target_fpr", "risk_appetite"]), own.fpr_m,
                             np.where(kind_m == "target_block_rate", target_block, np.nan)) if M else np.array([])
    return out


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
    z = norm_ppf(0.5 + cfg.confidence / 2)

    inc_threshold = np.asarray(inc_threshold, dtype=float)
    if len(inc_threshold) != len(scored):
        raise ValueError(f"suggest_thresholds needs one incumbent threshold per row of scored; got "
                         f"{len(inc_threshold)} for {len(scored)} rows.")
    named = current is not None or merchants is not None
    if len(scored) == 0:
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY.items()})
        if named:
            empty = pd.concat([empty, _no_data_rows(empty, current, merchants, np.array([], dtype=str),
                                                    np.array([]), global_threshold, cfg)], ignore_index=True)
        empty["reason"] = _reasons(empty) if len(empty) else pd.Series(dtype=str)
        return _tidy(empty)
    win = _window(scored, inc_threshold, cfg)
    own = _own_thresholds(win, global_threshold)
    out = _evidence(win, own, _shrink(win, own, min_support, prior_strength, global_threshold), current, z)
    if named:
        out = pd.concat([out, _no_data_rows(out, current, merchants, win.snames, own.seg_t, global_threshold,
                                            cfg)], ignore_index=True)
    out["reason"] = _reasons(out)
    return _tidy(out)


def _tidy(out: pd.DataFrame) -> pd.DataFrame:
    out = out.drop(columns=["inherits"], errors="ignore")
    return out.sort_values("merchant_id", kind="stable").reset_index(drop=True)


_EMPTY = {"merchant_id": str, "segment": str, "policy": str, "current_threshold": float, "threshold_in_force": float,
          "suggested_threshold": float, "raw_threshold": float, "segment_threshold": float,
          "shrink_weight": float, "support": "int64", "labelled": "int64", "frauds": "int64",
          "incumbent_block_rate": float, "expected_block_rate": float, "shrunk": bool, "no_data": bool,
          "target": float, "prior_strength": float, "segment_block_rate": float, "posterior_block_rate": float,
          "mixture_rate": float}


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
    """One sentence per suggestion, built column-wise (no loop over merchants); each kind of sentence only
    on the rows that get it."""
    def col(o: pd.DataFrame, name: str, fill=np.nan) -> pd.Series:
        return o[name] if name in o else pd.Series(fill, index=o.index)

    def clause(o: pd.DataFrame) -> pd.Series:  # what the policy asks, lower case
        c = pd.Series("", index=o.index, dtype=object)
        pol, seg, target = o["policy"], o["segment"].astype(str), _pct(col(o, "target"), 2)
        own = _pct(o["incumbent_block_rate"].fillna(0), 2)
        c[pol == "keep_block_rate"] = "keeps the merchant's block rate of " + own + " under the new model"
        c[pol == "target_fpr"] = ("holds its false-positive rate at or below the " + seg + " segment's target of "
                                  + target)
        c[pol == "target_block_rate"] = "blocks " + target + " of its traffic, the " + seg + " segment's target"
        c[pol == "risk_appetite"] = "follows its stated risk appetite of at most " + target + " false positives"
        return c

    def first(o):
        c = clause(o)
        return c.str[:1].str.upper() + c.str[1:]

    def recall(o):
        return pd.Series(np.where(o["frauds"].fillna(0) > 0, "; recall " + _pct(col(o, "recall_before").fillna(0))
                                  + " -> " + _pct(col(o, "recall_after").fillna(0)), ""), index=o.index, dtype=object)

    def toward(o):  # its distribution shrunk toward the segment's
        dist = np.where(o["policy"].isin(["target_fpr", "risk_appetite"]), "legitimate-score", "score")
        return ("its " + pd.Series(dist, index=o.index, dtype=object) + " distribution shrunk "
                + (100 * (1 - o["shrink_weight"].fillna(0))).round(0).astype(int).astype(str)
                + "% of the way toward the segment's")

    def expected(o):
        return (", for an expected block rate of " + _pct(o["expected_block_rate"].fillna(0), 2)
                + " on its own transactions")

    def n(o):
        return o["support"].astype(int).astype(str)

    def own_rate_shrunk(o):  # keep_block_rate: its own k of n, shrunk to the posterior, and the threshold
        post = _pct(col(o, "posterior_block_rate").fillna(0), 2)
        k = (o["incumbent_block_rate"].fillna(0) * o["support"]).round(0).astype(int).astype(str)
        return ("its block rate under the incumbent, " + _pct(o["incumbent_block_rate"].fillna(0), 2) + " (" + k
                + " of " + n(o) + "), is shrunk toward the " + o["segment"].astype(str) + " segment's "
                + _pct(col(o, "segment_block_rate").fillna(0), 2) + " to " + post + "; the threshold is the one "
                "that blocks " + post + " of " + toward(o) + expected(o) + recall(o) + ".")

    reason = pd.Series("", index=out.index, dtype=object)

    def put(mask: pd.Series, build) -> None:
        if mask.any():
            reason[mask] = build(out[mask]).to_numpy()

    nd = out["no_data"].astype(bool)
    thin = out["shrunk"].astype(bool) & ~nd
    seg = out["segment"].astype(str)
    alone = seg.map(seg[~nd].value_counts()).fillna(0) <= 1  # the only merchant of its segment
    worth_a_word = ((1 - out["shrink_weight"].fillna(0)) >= 0.005) & ~alone  # shrunk a whole percent or more
    keep = out["policy"] == "keep_block_rate"
    big = ~thin & ~nd
    put(big & ~worth_a_word, lambda o: first(o) + recall(o) + ".")
    put(big & worth_a_word & keep, lambda o: "I" + own_rate_shrunk(o).str[1:])
    put(big & worth_a_word & ~keep, lambda o: first(o) + ", on " + toward(o) + expected(o) + recall(o) + ".")
    put(thin & ~alone & keep, lambda o: "Thin merchant (" + n(o) + " transactions): " + own_rate_shrunk(o))
    put(thin & ~alone & ~keep, lambda o: ("Thin merchant (" + n(o) + " transactions): the threshold that "
                                          + clause(o) + " is the one doing so on " + toward(o) + expected(o)
                                          + recall(o) + "."))
    put(thin & alone, lambda o: ("Thin merchant (" + n(o) + " transactions; the only one of the "
                                 + o["segment"].astype(str) + " segment, so nothing to shrink it toward): the "
                                 "threshold " + clause(o) + expected(o) + recall(o) + "."))
    no_labels = thin & out["policy"].isin(["target_fpr", "risk_appetite"]) & (out["labelled"] - out["frauds"] <= 0)
    put(no_labels, lambda o: ("No matured legitimate transactions to judge its false-positive rate (" + n(o)
                              + " transactions): takes the " + o["segment"].astype(str) + " segment's threshold."))
    if nd.any():
        inherits = out.get("inherits", pd.Series("global", index=out.index))
        put(nd & (inherits == "segment"), lambda o: ("No transactions in the evaluation window: inherits the "
                                                     + o["segment"].astype(str) + " segment's threshold."))
        put(nd & (inherits != "segment"), lambda o: pd.Series("No transactions in the evaluation window and no "
                                                              "known segment: inherits the global threshold.",
                                                              index=o.index, dtype=object))
    return reason
