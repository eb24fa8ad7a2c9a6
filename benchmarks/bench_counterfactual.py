"""Benchmark: do the counterfactual figures recover what censoring hides, and at what exploration rate?

The simulated world knows every transaction's label, blocked or not. One realistic evaluation window is
simulated with the project's own world (``simulation.world``: entities, fraud scenarios, the legacy-rules
logging policy and its score, the same per-day seeds as ``simulate``), 21 days at 5,000 transactions a
day. A fixed *evaluated* policy is judged on it: a LightGBM model trained on 60 earlier days of the same
world, thresholded at the logging policy's block rate. By default it learns from what the pipeline sees
(dispute labels of allowed rows, explored rows weighted, history logged at 0.5% exploration);
``--policy-labels truth`` trains it on every row's true label instead. The figure is genuinely
counterfactual: the policy blocks rows the logging policy let through and lets through rows it blocked.

The window is split as the release gates split it (``analysis.evaluation.split_fit_judge``, ``FIT_SHARE``):
the earlier half of its days (10 of 21) are *fitting rows*, the later half *judging rows*. Every estimator
is judged on the judging rows only, against the judging rows' target; the direct method's outcome model
alone is fitted, on the fitting rows only. ``--judge window`` judges every estimator but dm on the whole
window instead (the benchmark as it was before the gates split the window).

Each draw, for every exploration rate (common random numbers: a higher rate explores a superset):

- a new window from the same population: the window's cards resampled Poisson(1) times (the sampling
  model of the project's bootstrap; without it a fixed window's intervals would cover its own sampling
  variance that the draws never vary, and coverage would flatter every estimator);
- the dispute process redrawn on every row (frauds disputed at the world's rate, friendly disputes,
  lognormal delays, disputes later than the 60-day maturity unknown), which of the logging policy's
  would-be blocks were explored, and the other blocked rows censored (unlabelled);
- recall, FPR and precision of the evaluated policy on the judging rows by: plain (labelled rows as they
  are: the naive baseline, run beside the others), ipw (clipped weights, ``analysis.weighting``), dm (the
  direct method the release gates judge on, exactly as ``analysis.evaluation`` computes it: the logging
  policy's score calibrated by ``outcome_probability`` on the fitting rows with their clipped IPW weights,
  then every judging row counted as its label when labelled and as the outcome probability when
  censored, ``fraud_mass``) and doubly robust (``analysis.weighting.dr_metrics`` on the judging rows, its
  outcome model calibrated on them) with outcome models: dr (the logging policy's score), dr_both (the
  logging and evaluated policies' scores), and on request dr_ipwfit (dr, calibration weighted by
  1/propensity) and dr_evaluated (the evaluated policy's score).

Plain and IPW intervals are the project's own paired card bootstrap (``analysis.stats.slice_intervals``,
all-traffic slice); DM's are the same bootstrap of the fraud mass (weight 1, no clip, its "ipw" rows, as
``analysis.evaluation.judge_policy`` calls it: the outcome model held fixed); DR's are
``analysis.weighting.dr_metrics``'s card bootstrap. The *target* is the
judging rows' figure with nothing censored, in expectation over disputes (every row labelled by the
dispute process); bias, RMSE and coverage are against it. ``rmse_cens`` is against the same draw's figure with
nothing censored: the error censoring alone causes. The *truth* (the world's is_fraud) is shown beside
the target; the gap is dispute noise (undisputed and friendly fraud, late disputes), which no weighting
can remove. The script also checks that ``slice_intervals`` and ``analysis.weighting.ipw_metrics`` give
the same IPW point estimate on every draw, and that DM's bootstrap point estimate is ``rates`` of the
fraud mass.

    .venv/bin/python benchmarks/bench_counterfactual.py             # 100 draws x 5 rates, ~2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_counterfactual.py --draws 100 --rates 0.005,0.02,0.05   # ~1.3 minutes
    .venv/bin/python benchmarks/bench_counterfactual.py --quick     # 30 draws, 3,000 tx/day: a quick look
    .venv/bin/python benchmarks/bench_counterfactual.py --draws 200 --rates 0.005,0.02,0.05
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.evaluation import FIT_SHARE, fraud_mass, outcome_probability, split_fit_judge  # noqa: E402
from analysis.stats import poisson1, slice_intervals  # noqa: E402
from analysis.weighting import (CounterfactualConfig, counterfactual_support, dr_metrics, ipw_metrics,  # noqa: E402
                                ipw_weights, rates)
from simulation.world import (CAT_MEDIAN_AMOUNT, CATEGORIES, WorldConfig, _decide, _one_day,  # noqa: E402
                              _world_entities)


# ---- the direct method recalibrated per action cell (dmc): investigated here, not used by the gates (README) ----
CELL_PRIOR_FRAUDS = 0.25  # pseudo explored frauds pulling a ratio toward the one a level up (1 kept half of DM's
# recall bias, 0 none of it but a cell of a few explored rows then swings freely)
SLICE_PRIOR_FRAUDS = 2.0  # the same for a slice's cell pulled toward the cell's ratio over all traffic


def action_cells(actions: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's cell: the models' joint 0/1 actions as bits. One cell code for all models, so every
    model is judged on the same fraud mass (a recall difference keeps one denominator)."""
    cells = np.zeros(len(next(iter(actions.values()))), dtype=np.int64)
    for k, a in enumerate(actions.values()):
        cells |= (np.asarray(a) > 0).astype(np.int64) << k
    return cells


def cell_ratios(sums: np.ndarray, prior: float = CELL_PRIOR_FRAUDS, slice_prior: float | None = None) -> np.ndarray:
    """Each slice's and cell's recalibration of the outcome model: observed over predicted fraud of its
    explored rows, (..., slices, cells) from (..., 4, slices, cells) sums of (w y, w m, w, rows).

    Three levels of gamma-Poisson shrinkage, ``prior`` pseudo explored frauds each: the censored region's
    ratio pulled toward 1 (DM's calibration), each cell's (all slices) toward the region's, each slice's
    cell toward the cell's. A cell with no explored row keeps the level above."""
    wy, wm, w, n = (sums[..., k, :, :] for k in range(4))
    wbar = w.sum(axis=(-2, -1)) / np.maximum(n.sum(axis=(-2, -1)), 1)  # one explored row's weight
    a = (prior * wbar)[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        r0 = (a + wy.sum(axis=(-2, -1))[..., None]) / (a + wm.sum(axis=(-2, -1))[..., None])
        r0 = np.where(np.isfinite(r0) & (r0 > 0), r0, 1.0)  # (..., 1)
        rc = (a + wy.sum(axis=-2)) / (a / r0 + wm.sum(axis=-2))
        rc = np.where(np.isfinite(rc), rc, r0)  # (..., cells)
        if sums.shape[-2] == 1:
            return rc[..., None, :]
        a_s = ((SLICE_PRIOR_FRAUDS if slice_prior is None else slice_prior) * wbar)[..., None, None]
        rs = (a_s + wy) / (a_s / rc[..., None, :] + wm)
    return np.where(np.isfinite(rs), rs, rc[..., None, :])

METRICS = ("recall", "fpr", "precision")
# the direct method recalibrated per cell of the evaluated policy's action (cell_ratios above):
# name -> (explored rows the ratios are fitted on, prior pseudo frauds, interval). dmc: the judging rows'
# explored rows, CELL_PRIOR_FRAUDS, "delta". Intervals: "refit" refits the ratios in every bootstrap replicate
# (the card bootstrap of both halves jointly), "fixed" holds them at the point estimate (as judge_policy holds
# DM's outcome model), "delta" widens the fixed interval by the ratios' own replicate variance with the
# judging sums held at the point
DMC = {"dmc": ("judging", CELL_PRIOR_FRAUDS, "delta"), "dmc_refit": ("judging", CELL_PRIOR_FRAUDS, "refit"),
       "dmc_fixed": ("judging", CELL_PRIOR_FRAUDS, "fixed"), "dmc_p0": ("judging", 0.0, "refit"),
       "dmc_p1": ("judging", 1.0, "delta"), "dmc_fit": ("fitting", CELL_PRIOR_FRAUDS, "refit"),
       "dmc_both": ("both", CELL_PRIOR_FRAUDS, "refit")}
ESTIMATORS = ("plain", "ipw", "dm", *DMC, "dr", "dr_both", "dr_ipwfit", "dr_evaluated")
DEFAULT_ESTIMATORS = "plain,ipw,dm,dr,dr_both"
# DR outcome models: (scores calibrated, their scales, calibration rows weighted by 1/propensity?). The legacy
# rules' score is not a probability. dr: the logging policy's score (analysis.weighting's definition);
# dr_both: the logging and the evaluated policies' scores; dr_ipwfit: dr with an IPW-weighted calibration;
# dr_evaluated: the evaluated policy's score alone
DR_MODELS = {"dr": (("logging",), ["raw"], False), "dr_both": (("logging", "evaluated"), ["raw", "probability"], False),
             "dr_ipwfit": (("logging",), ["raw"], True), "dr_evaluated": (("evaluated",), ["probability"], False)}
MATURITY_DAYS = 60


def simulate_days(cfg: WorldConfig, days: range) -> pd.DataFrame:
    """The world's transactions and the logging policy's decisions for ``days``, exactly as
    ``simulation.world.simulate`` draws them (same per-day seeds), kept in memory."""
    rng = np.random.default_rng(cfg.seed)
    merchants, cards = _world_entities(cfg, rng)
    parts = []
    for day in days:
        day_rng = np.random.default_rng([cfg.seed, day])
        df = _one_day(cfg, day, merchants, cards, day_rng)
        dec = _decide(cfg, df, day_rng)
        df["day"] = day
        df["logging_score"] = dec["score"].to_numpy()
        df["would_block"] = (dec["action"].eq("block") | dec["explored"]).to_numpy()
        parts.append(df)
    out = pd.concat(parts, ignore_index=True)
    out["t"] = out["day"].to_numpy(np.int64) * 86400 + out["seconds"].to_numpy(np.int64)
    out["card_age"] = out["day"] - out["card_id"].map(cards.set_index("card_id")["issued_day"])
    return out


def features(df: pd.DataFrame) -> pd.DataFrame:
    """Features a fraud model would have: amount against the category's median, cross-border, hour, card
    age, and card velocity (this card's transactions in the past hour and day)."""
    cat = pd.Categorical(df["merchant_category"], categories=CATEGORIES).codes
    order = np.lexsort((df["t"].to_numpy(), df["card_id"].to_numpy()))
    key = df["card_id"].to_numpy(np.int64)[order] * 10**9 + df["t"].to_numpy(np.int64)[order]
    vel = {}
    for name, span in (("card_1h", 3600), ("card_24h", 86400)):
        v = np.empty(len(df))
        v[order] = np.arange(len(key)) - np.searchsorted(key, key - span, side="left")
        vel[name] = v
    return pd.DataFrame({
        "amount": df["amount"].to_numpy(), "amount_ratio": np.log(df["amount"].to_numpy() / CAT_MEDIAN_AMOUNT[cat]),
        "cross": (df["card_country"] != df["merchant_country"]).to_numpy(float), "hour": df["seconds"] // 3600,
        "category": cat, "card_age": df["card_age"].to_numpy(float), **vel})


def evaluated_policy(train: pd.DataFrame, window: pd.DataFrame, cfg: WorldConfig, labels: str,
                     seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A LightGBM model trained on earlier days, thresholded at the logging policy's block rate on those
    days. ``labels="censored"`` (the default) trains it on what the pipeline sees: dispute labels of the
    rows the logging policy allowed, explored rows weighted 1/propensity, blocked rows absent, so the model
    knows the blocked region only through the explored rows. ``"truth"`` trains it on the world's is_fraud
    everywhere (a candidate better informed than any real one)."""
    import lightgbm as lgb

    xt, xw = features(train), features(window)
    if labels == "truth":
        y, w, keep = train["is_fraud"].to_numpy(int), None, np.ones(len(train), bool)
    else:
        rng = np.random.default_rng([seed, 99])
        e = cfg.exploration
        explored = train["would_block"].to_numpy() & (rng.random(len(train)) < e)
        keep = ~train["would_block"].to_numpy() | explored
        u = rng.random(len(train))
        y = np.where(train["is_fraud"].to_numpy(), u < cfg.dispute_rate, u < cfg.friendly_rate).astype(int)[keep]
        w = np.where(explored, 1 / e, 1.0)[keep]
    model = lgb.train({"objective": "binary", "num_leaves": 31, "learning_rate": 0.08, "min_data_in_leaf": 50,
                       "num_threads": 2, "verbose": -1, "seed": seed},
                      lgb.Dataset(xt[keep], y, weight=w, categorical_feature=["category"]), num_boost_round=150)
    st, sw = model.predict(xt), model.predict(xw)
    thr = float(np.quantile(st, 1 - train["would_block"].mean()))
    return sw, (sw >= thr).astype(float), thr


def resample(n_rows: int, card: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A new window from the same population: every card of the window taken Poisson(1) times (the
    sampling model of the project's bootstrap), each copy its own card. Returns row indices into the
    window and the copies' card codes."""
    code, _ = pd.factorize(card)
    k = rng.poisson(1.0, int(code.max()) + 1)
    reps = k[code]
    idx = np.repeat(np.arange(n_rows), reps)
    copy = np.arange(len(idx)) - np.repeat(np.cumsum(reps) - reps, reps)  # 0, 1, ... within a row's copies
    return idx, code[idx].astype(np.int64) * (int(k.max()) + 1) + copy


def dispute_draw(fraud: np.ndarray, age_s: np.ndarray, cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
    """The label each transaction would carry once matured had it been allowed: the world's dispute
    process (frauds disputed at ``dispute_rate``, friendly disputes at ``friendly_rate``, lognormal delays;
    a dispute later than the row's age at as-of is not known)."""
    u = rng.random(len(fraud))
    disputed = np.where(fraud, u < cfg.dispute_rate, u < cfg.friendly_rate)
    delay = np.clip(rng.lognormal(np.log(cfg.dispute_median_days), cfg.dispute_sigma, len(fraud)), 1.0,
                    cfg.dispute_max_days)
    return (disputed & (delay * 86400 <= age_s)).astype(float)


def expected_label(fraud: np.ndarray, age_s: np.ndarray, cfg: WorldConfig) -> np.ndarray:
    """E[label if allowed] per row: the dispute probability times the chance it is known by as-of."""
    from scipy.stats import lognorm

    delay = lognorm(s=cfg.dispute_sigma, scale=cfg.dispute_median_days)
    days = age_s / 86400
    known = np.where(days >= cfg.dispute_max_days, 1.0, np.where(days < 1, 0.0, delay.cdf(days)))
    return np.where(fraud, cfg.dispute_rate, cfg.friendly_rate) * known


def dmc_intervals(label, w_clip, outcome, action, judge, rows, card, prior, n_boot, seed, level=0.95) -> dict:
    """The cell-recalibrated direct method on the ``judge`` rows, its ratios fitted on the explored ``rows``:
    point and percentile intervals of recall, FPR and precision with the ratios refitted in every replicate
    ("refit"), held fixed ("fixed"), or fixed and widened by their own replicate variance ("delta"). One
    Poisson(1) weight per card per replicate across both halves (the card bootstrap)."""
    cells = action_cells({"policy": action})
    y = np.where(np.isnan(label), 0.0, label)
    cens = np.isnan(label) & judge
    lab_j = ~np.isnan(label) & judge
    a = action * judge
    cols = [judge.astype(float), y * lab_j, y * lab_j * a, a,
            outcome * cens * (cells == 0), outcome * cens * (cells == 1)]
    lab_r = np.where(rows, label, np.nan)
    e = ~np.isnan(lab_r) & (w_clip > 1)
    for c in (0, 1):
        in_c = e & (cells == c)
        cols += [w_clip * y * in_c, w_clip * outcome * in_c, w_clip * in_c, in_c.astype(float)]
    X = np.column_stack(cols)
    code, _ = pd.factorize(card)
    V = np.zeros((int(code.max()) + 1, X.shape[1]))
    for k in range(X.shape[1]):
        V[:, k] = np.bincount(code, weights=X[:, k], minlength=V.shape[0])
    active = np.abs(V[:, 1:]).sum(axis=1) > 0
    Va, quiet = V[active], float(V[~active, 0].sum())

    def ratios(S):  # (..., columns) -> (..., 2 cells)
        c = S[..., 6:].reshape(S.shape[:-1] + (2, 4))  # cell, (wy, wm, w, n)
        return cell_ratios(np.swapaxes(c, -1, -2)[..., None, :], prior)[..., 0, :]  # one slice: all traffic

    def metrics(S, R):
        tp = S[..., 2] + R[..., 1] * S[..., 5]
        f = S[..., 1] + R[..., 0] * S[..., 4] + R[..., 1] * S[..., 5]
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"recall": tp / f, "fpr": (S[..., 3] - tp) / (S[..., 0] - f), "precision": tp / S[..., 3]}

    point = V.sum(axis=0)
    rng = np.random.default_rng(seed)
    rep = poisson1(rng, (n_boot, len(Va))).astype(np.float64) @ Va
    rep[:, 0] += rng.poisson(quiet, size=n_boot)
    r_point = ratios(point)
    est = metrics(point, r_point)
    refit, fixed = metrics(rep, ratios(rep)), metrics(rep, np.broadcast_to(r_point, (n_boot, 2)))
    r_only = metrics(np.broadcast_to(point, rep.shape), ratios(rep))
    q = ((1 - level) / 2, 1 - (1 - level) / 2)
    out = {}
    for m in METRICS:
        lo_r, hi_r = np.nanquantile(refit[m], q)
        lo_f, hi_f = np.nanquantile(fixed[m], q)
        k = np.sqrt(1 + np.nanvar(r_only[m]) / max(np.nanvar(fixed[m]), 1e-300))
        out[m] = {"estimate": float(est[m]), "refit": (lo_r, hi_r), "fixed": (lo_f, hi_f),
                  "delta": (est[m] - k * (est[m] - lo_f), est[m] + k * (hi_f - est[m]))}
    return out


def run(args) -> dict:
    t0 = time.time()
    cfg = WorldConfig(seed=args.seed, days=150, tx_per_day=args.tx_per_day, n_cards=10 * args.tx_per_day)
    w0 = 100
    window_days, train_days = range(w0, w0 + args.days), range(w0 - 7 - args.train_days, w0 - 7)
    data = simulate_days(cfg, range(train_days.start, window_days.stop))
    train, win = data[data["day"] < train_days.stop], data[data["day"] >= w0].reset_index(drop=True)
    # the evaluated policy learnt from history logged at the old 0.5% exploration (the world's transactions do
    # not depend on the rate; only which would-be blocks were labelled)
    score, action, thr = evaluated_policy(train, win, cfg.model_copy(update={"exploration": args.train_exploration}),
                                          args.policy_labels, args.seed)
    t_world = time.time() - t0
    n = len(win)
    wb = win["would_block"].to_numpy()
    fraud = win["is_fraud"].to_numpy()
    card, amount = win["card_id"].to_numpy(), win["amount"].to_numpy()
    logging_score = win["logging_score"].to_numpy()
    age_s = (window_days.stop + MATURITY_DAYS) * 86400 - win["t"].to_numpy()  # as-of: window end + maturity
    # fitting rows (the earlier half of the window's days) and judging rows, split as the release gates split
    days = pd.Timestamp(cfg.start) + pd.to_timedelta(win["day"].to_numpy(), unit="D")
    fit, split = split_fit_judge(pd.DataFrame({"day": days, "label": fraud.astype(float)}), FIT_SHARE)
    judge = ~fit if args.judge == "judging" else np.ones(n, dtype=bool)
    truth = rates(fraud[judge].astype(float), 1.0 - fraud[judge], action[judge])
    p_all = expected_label(fraud, age_s, cfg)
    p_lab = p_all[judge]
    population = rates(p_lab, 1 - p_lab, action[judge])  # the judging rows' uncensored figure, in expectation
    cf_cfg = CounterfactualConfig()
    records, supports, uncensored, dm_mass = [], [], [], []
    for r in range(args.draws):
        rng = np.random.default_rng([args.seed, 1000 + r])
        idx, card_r = resample(n, card, rng)
        a_r, wb_r, amount_r = action[idx], wb[idx], amount[idx]
        scores_r = {"logging": logging_score[idx], "evaluated": score[idx]}
        y_star = dispute_draw(fraud[idx], age_s[idx], cfg, rng)
        u_explore = rng.random(len(idx))  # common to every rate: a higher rate explores a superset
        fit_r = fit[idx]
        j = judge[idx]  # the judging rows of this draw: every estimator is judged here
        a_j, amount_j, card_j = a_r[j], amount_r[j], card_r[j]
        target = rates(y_star[j], 1 - y_star[j], a_j)  # this draw's judging figure with nothing censored
        uncensored.append(target)
        keys = {"all": np.zeros(int(j.sum()), dtype=np.int8)}
        for e in args.rates:
            explored = wb_r & (u_explore < e)
            allowed = ~wb_r | explored
            label = np.where(allowed, y_star, np.nan)
            weight = np.where(allowed, np.where(explored, 1 / e, 1.0), np.nan)
            label_j, weight_j = label[j], weight[j]
            si = slice_intervals(label_j, weight_j, amount_j, {"policy": a_j}, keys, card_j, baseline="policy",
                                 n_boot=args.n_boot, seed=r, max_weight=cf_cfg.max_weight)
            si = si[si["metric"].isin(METRICS) & (si["model"] == "policy")]
            # the project's bootstrap and analysis.weighting agree on the IPW point estimate (one definition)
            ipw_point = ipw_metrics(label_j, weight_j, a_j, max_weight=cf_cfg.max_weight)
            for m in METRICS:
                got = si[(si.metric == m) & (si.estimator == "ipw")].estimate.iloc[0]
                assert np.isclose(got, ipw_point[m], rtol=1e-6, equal_nan=True), (m, got, ipw_point[m])
            extra = []
            if args.estimators & ({"dm"} | set(DMC)):
                w_clip = ipw_weights(label, weight, max_weight=cf_cfg.max_weight)
                outcome = outcome_probability(scores_r["logging"][:, None], fit_r, pd.Series(label), pd.Series(w_clip))
            done = {}
            for name in sorted(args.estimators & set(DMC)):
                rows_of, prior, how = DMC[name]
                rows = {"judging": j, "fitting": fit_r, "both": np.ones(len(j), dtype=bool)}[rows_of]
                if (rows_of, prior) not in done:
                    done[rows_of, prior] = dmc_intervals(label, w_clip, outcome, a_r, j, rows, card_r, prior,
                                                         args.n_boot, seed=r + 2)
                got = done[rows_of, prior]
                extra.append(pd.DataFrame([{"metric": m, "estimator": name, "estimate": got[m]["estimate"],
                                            "lo": got[m][how][0], "hi": got[m][how][1]} for m in METRICS]))
            if "dm" in args.estimators:
                # the direct method exactly as analysis.evaluation: clipped IPW weights made once on every row,
                # the logging policy's score calibrated on the fitting rows only (outcome_probability), each
                # judging row's fraud mass its label or, censored, its outcome probability; intervals from the
                # project's bootstrap of that mass at weight 1, no clip, its "ipw" rows (as judge_policy)
                w_clip = ipw_weights(label, weight, max_weight=cf_cfg.max_weight)
                outcome = outcome_probability(scores_r["logging"][:, None], fit_r, pd.Series(label), pd.Series(w_clip))
                mass = fraud_mass(label_j, outcome[j])
                dm = slice_intervals(mass, np.ones(len(mass)), amount_j, {"policy": a_j}, keys, card_j,
                                     baseline="policy", n_boot=args.n_boot, seed=r + 1, max_weight=np.inf,
                                     estimators=("ipw",))
                dm = dm[dm["metric"].isin(METRICS) & (dm["model"] == "policy") & (dm["estimator"] == "ipw")]
                dm_point = rates(mass, 1 - mass, a_j)
                for m in METRICS:
                    got = dm[dm.metric == m].estimate.iloc[0]
                    assert np.isclose(got, dm_point[m], rtol=1e-6, equal_nan=True), (m, got, dm_point[m])
                extra.append(dm.assign(estimator="dm"))
                # where DM's bias comes from: the censored judging rows' fraud mass by DM against their expected
                # dispute label (the oracle), for the rows the evaluated policy acts on and for the others
                cens, acted, p_j = np.isnan(label_j), a_j > 0, p_all[idx][j]
                ca, co = cens & acted, cens & ~acted
                dm_mass.append({"rate": e, "draw": r, "censored_acted": int(ca.sum()),
                                "acted_expected": float(p_j[ca].sum()), "acted_dm": float(mass[ca].sum()),
                                "censored_other": int(co.sum()),
                                "other_expected": float(p_j[co].sum()), "other_dm": float(mass[co].sum())})
            for name, (cols, scale, ipw_fit) in DR_MODELS.items():
                if name in args.estimators:
                    x = np.column_stack([scores_r[c][j] for c in cols])
                    d = dr_metrics(label_j, weight_j, x, a_j, card=card_j, n_boot=args.n_boot, seed=r, scale=scale,
                                   max_weight=cf_cfg.max_weight, calibration="ipw" if ipw_fit else "labelled")
                    extra.append(d.assign(estimator=name))
            sup = counterfactual_support(label_j, weight_j, explored[j], config=cf_cfg)
            supports.append({"rate": e, "draw": r, **{k: v for k, v in sup.as_dict().items() if k != "sentence"},
                             "fit_explored_frauds": int((explored & fit_r & (label == 1)).sum())})
            for row in pd.concat([si, *extra], ignore_index=True).itertuples():
                records.append({"rate": e, "draw": r, "estimator": row.estimator, "metric": row.metric,
                                "estimate": row.estimate, "lo": row.lo, "hi": row.hi,
                                "uncensored": target[row.metric], "population": population[row.metric],
                                "explored_frauds": sup.explored_frauds, "ess_frauds": sup.ess_frauds,
                                "sufficient": sup.sufficient})
        if args.progress and (r + 1) % max(1, args.draws // 10) == 0:
            print(f"  draw {r + 1}/{args.draws}  ({time.time() - t0:.0f} s)", file=sys.stderr)
    res = pd.DataFrame(records)
    res["err"] = res["estimate"] - res["population"]
    res["err_censoring"] = res["estimate"] - res["uncensored"]
    res["covered"] = (res["lo"] <= res["population"]) & (res["population"] <= res["hi"])  # NaN: not covered
    res["width"] = res["hi"] - res["lo"]
    blocked_fraud = wb & fraud
    world = {"rows": n, "days": args.days, "tx_per_day": n / args.days, "frauds": int(fraud.sum()), "split": split,
             "judging": {"rows": int(judge.sum()), "frauds": int(fraud[judge].sum()),
                         "would_block": int(wb[judge].sum()), "blocked_frauds": int(blocked_fraud[judge].sum()),
                         "policy_actions": int(action[judge].sum()),
                         "policy_actions_in_block_region": int((action * wb)[judge].sum())},
             "outcome_scale": "probability" if ((logging_score >= 0) & (logging_score <= 1)).all() else "raw",
             "would_block": int(wb.sum()), "blocked_frauds": int(blocked_fraud.sum()),
             "blocked_fraud_amount": float(amount[blocked_fraud].sum()),
             "policy_actions": int(action.sum()), "policy_actions_in_block_region": int((action * wb).sum()),
             "threshold": thr, "truth": truth, "population": population,
             "uncensored": pd.DataFrame(uncensored).mean().to_dict(),
             "seconds_world": t_world, "seconds": time.time() - t0}
    return {"res": res, "support": pd.DataFrame(supports), "world": world, "dm_mass": pd.DataFrame(dm_mass)}


def rmse(x: pd.Series) -> float:
    return float(np.sqrt(np.nanmean(np.square(x))))


def summary(res: pd.DataFrame) -> pd.DataFrame:
    g = res.groupby(["metric", "rate", "estimator"], sort=False)
    out = g.agg(target=("population", "mean"), bias=("err", "mean"),
                bias_se=("err", lambda x: float(x.std() / np.sqrt(x.notna().sum()))),
                rmse=("err", rmse), rmse_cens=("err_censoring", rmse), coverage=("covered", "mean"),
                width=("width", "mean")).reset_index()
    for base in ("plain", "ipw"):
        ref = out[out.estimator == base].set_index(["metric", "rate"])["rmse_cens"]
        out[f"cens/{base}"] = out["rmse_cens"].to_numpy() / ref.loc[list(zip(out.metric, out.rate))].to_numpy()
    order = {m: i for i, m in enumerate(METRICS)}
    est = {e: i for i, e in enumerate(ESTIMATORS)}
    return out.sort_values(["metric", "rate", "estimator"], key=lambda c: c.map(order) if c.name == "metric" else
                           c.map(est) if c.name == "estimator" else c).reset_index(drop=True)


def coverage_by_gate(res: pd.DataFrame) -> pd.DataFrame:
    """Per rate: the share of windows the support gate passes, and coverage on the windows it passes and
    on the ones it does not."""
    r = res[res.estimator.isin(["ipw", "dm", "dr"])].copy()
    r["gate"] = np.where(r["sufficient"], "sufficient", "insufficient")
    t = r.groupby(["rate", "estimator", "gate", "metric"]).covered.mean().unstack("metric")[list(METRICS)]
    t.insert(0, "windows", r.groupby(["rate", "estimator", "gate"]).draw.nunique())
    return t


def coverage_by(res: pd.DataFrame, column: str, bins: list[float], labels: list[str]) -> pd.DataFrame:
    r = res[(res.metric == "recall") & (res.estimator != "plain")].copy()
    r["bin"] = pd.cut(r[column], bins, labels=labels, right=False)
    t = r.groupby(["bin", "estimator"], observed=True).agg(draws=("covered", "size"), coverage=("covered", "mean"),
                                                           bias=("err", "mean"))
    return t.unstack("estimator")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--rates", default="0.005,0.01,0.02,0.05,0.10", help="exploration rates, comma-separated")
    ap.add_argument("--tx-per-day", type=int, default=5000)
    ap.add_argument("--days", type=int, default=21, help="evaluation window, days")
    ap.add_argument("--train-days", type=int, default=60)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--judge", choices=["judging", "window"], default="judging",
                    help="rows every estimator is judged on: judging (the later half, as the release gates; default) "
                         "or window (all 21 days, as before the gates split the window; no dm)")
    ap.add_argument("--policy-labels", choices=["censored", "truth"], default="censored",
                    help="what the evaluated policy was trained on (censored: what the pipeline sees)")
    ap.add_argument("--train-exploration", type=float, default=0.005,
                    help="exploration in force while the evaluated policy's training history was logged")
    ap.add_argument("--quick", action="store_true", help="30 draws, 3,000 tx/day, 100 replicates, 30 training days")
    ap.add_argument("--estimators", default=DEFAULT_ESTIMATORS,
                    help="plain and ipw always run; dm: the direct method of the release gates; dmc: dm "
                         "recalibrated per cell of the evaluated policy's action (variants: " + ", ".join(DMC)
                         + "); DR outcome models: "
                         "dr (the logging policy's score), dr_both (the "
                         "logging and evaluated policies' scores), dr_ipwfit (dr, calibration weighted by "
                         "1/propensity), dr_evaluated (the evaluated policy's score)")
    ap.add_argument("--csv", help="write every draw's estimates here")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.draws, args.tx_per_day, args.n_boot, args.train_days = min(args.draws, 30), 3000, 100, 30
    args.rates = [float(x) for x in args.rates.split(",")]
    args.estimators = set(args.estimators.split(",")) | {"plain", "ipw"}
    if args.judge == "window":
        args.estimators.discard("dm")  # DM is defined with the split: fitted on one half, judged on the other
    out = run(args)
    res, sup, w = out["res"], out["support"], out["world"]
    if args.csv:
        res.to_csv(args.csv, index=False)
    pd.set_option("display.width", 160)
    print(f"Window: {w['rows']:,} transactions over {w['days']} days ({w['tx_per_day']:,.0f}/day), {w['frauds']} "
          f"frauds; the logging policy (legacy rules) would block {w['would_block']:,} of them, "
          f"{w['blocked_frauds']} frauds ({w['blocked_frauds'] / w['frauds']:.0%} of all fraud).")
    print(f"Evaluated policy: LightGBM trained on {args.policy_labels} labels ({args.train_days} days, exploration "
          f"{args.train_exploration:g}), threshold {w['threshold']:.3f}, {w['policy_actions']:,} actions, "
          f"{w['policy_actions_in_block_region']:,} of them in the logging policy's block region.")
    jd, sp = w["judging"], w["split"]
    if args.judge == "judging":
        print(f"Split as the release gates split (analysis.evaluation.split_fit_judge): fitting rows "
              f"{sp['fitting_rows']:,} (days {sp['fitting']}), judging rows {jd['rows']:,} (days {sp['judging']}): "
              f"{jd['frauds']} frauds, {jd['would_block']:,} would-be blocks holding {jd['blocked_frauds']} frauds, "
              f"{jd['policy_actions']:,} policy actions ({jd['policy_actions_in_block_region']:,} in the block "
              f"region). "
              f"Every estimator and target below is on the judging rows; DM's outcome model (logging score, "
              f"{w['outcome_scale']} scale) is fitted on the fitting rows.")
    else:
        print("--judge window: every estimator and target below is on the whole window (no fitting/judging split, "
              "no dm); the release gates judge only the later half.")
    cf = CounterfactualConfig()
    print(f"{args.draws} draws per rate, {args.n_boot} bootstrap replicates, max_weight {cf.max_weight:g}."
          f" World and model {w['seconds_world']:.0f} s; total {w['seconds']:.0f} s.\n")
    print("Oracle figures of the evaluated policy on the judged rows: truth (the world's is_fraud), the target "
          "(every row labelled by the dispute process, in expectation) and the mean uncensored figure of the draws")
    print(pd.DataFrame({"truth": w["truth"], "target": w["population"], "uncensored (mean of draws)": w["uncensored"]})
          .T.round(4).to_string(), "\n")
    per_day = w["blocked_frauds"] / w["days"]
    s = sup.groupby("rate").agg(explored_rows=("explored_rows", "mean"), explored_frauds=("explored_frauds", "mean"),
                                no_explored_fraud=("explored_frauds", lambda x: float((x == 0).mean())),
                                ess_frauds=("ess_frauds", "mean"), ess_legit=("ess_legit", "mean"),
                                sufficient=("sufficient", "mean"),
                                fit_explored_frauds=("fit_explored_frauds", "mean"),
                                fit_no_explored_fraud=("fit_explored_frauds", lambda x: float((x == 0).mean())))
    s["fraud_let_through_per_day"] = [e * per_day for e in s.index]
    s["fraud_amount_per_day"] = [e * w["blocked_fraud_amount"] / w["days"] for e in s.index]
    print("Support per exploration rate on the judged rows (means over draws; sufficient = share of draws meeting "
          f"CounterfactualConfig min_explored_frauds={cf.min_explored_frauds}, min_ess={cf.min_ess:g}; fit_*: explored "
          "frauds in the fitting rows, which DM's outcome model rests on; cost = extra fraud allowed by exploration, "
          "whole window)")
    print(s.round(3).to_string(), "\n")
    tab = summary(res)
    print("Per metric, rate and estimator: bias (bias_se: its Monte Carlo standard error) and RMSE against the "
          "target; rmse_cens against the same draw's "
          "uncensored figure (the error censoring alone causes), and as a ratio to plain's and IPW's; 95% interval "
          "coverage of the target and its mean width")
    print(tab.round(4).to_string(index=False), "\n")
    print(f"Coverage by the support gate (min_explored_frauds={cf.min_explored_frauds}, min_ess={cf.min_ess:g}): "
          "windows and coverage per metric")
    print(coverage_by_gate(res).round(3).to_string(), "\n")
    print("Coverage of recall intervals by explored frauds in the window (all rates pooled)")
    print(coverage_by(res, "explored_frauds", [0, 1, 3, 6, 10, 15, 20, 30, 1e9],
                      ["0", "1-2", "3-5", "6-9", "10-14", "15-19", "20-29", "30+"]).round(3).to_string(), "\n")
    if len(out["dm_mass"]):
        print("DM's fraud mass on the censored judging rows (means over draws): the rows the evaluated policy acts on "
              "and the others, their expected dispute labels (the oracle) against DM's outcome probabilities")
        print(out["dm_mass"].drop(columns="draw").groupby("rate").mean().round(2).to_string(), "\n")
    print("Coverage of recall intervals by ESS of the fraud weights (all rates pooled)")
    print(coverage_by(res, "ess_frauds", [0, 30, 60, 100, 200, 400, 1e9],
                      ["<30", "30-59", "60-99", "100-199", "200-399", "400+"]).round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
