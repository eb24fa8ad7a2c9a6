"""analysis.weighting: clipped inverse-propensity weights, effective sample size, counterfactual support
and the doubly robust estimator, on windows whose answers are known by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from analysis.stats import slice_intervals
from analysis.weighting import (MAX_WEIGHT, CounterfactualConfig, clip_weights, counterfactual_support,
                                dr_fraud_terms, dr_metrics, effective_sample_size, frame_ipw_weights, ipw_metrics,
                                ipw_weights, outcome_model, plain_metrics)
from release.core.config import ConfigError, load_yaml_model
from tests.analysis.synthetic_window import make_scored


# ---- weights and ESS --------------------------------------------------------------------------------------

def test_effective_sample_size_by_hand():
    assert effective_sample_size([1, 1, 1, 1]) == 4.0
    assert effective_sample_size([1, 1, 2]) == pytest.approx(16 / 6)  # (1+1+2)^2 / (1+1+4)
    assert effective_sample_size([5.0]) == 1.0
    assert effective_sample_size([]) == 0.0 and effective_sample_size([0.0, 0.0]) == 0.0
    # one explored fraud at weight 100 among 900 frauds: (899 + 100)^2 / (899 + 100^2)
    assert effective_sample_size([1.0] * 899 + [100.0]) == pytest.approx(999 ** 2 / 10_899)


def test_ipw_weights_clip_once_and_give_unlabelled_rows_nothing():
    label = [1, 0, np.nan, 0, 1]
    weight = [1.0, 200.0, np.nan, 50.0, 100.0]
    assert MAX_WEIGHT == 100.0
    np.testing.assert_array_equal(ipw_weights(label, weight), [1, 100, 0, 50, 100])
    np.testing.assert_array_equal(ipw_weights(label, weight, max_weight=40), [1, 40, 0, 40, 40])
    # the same from propensities (the probability each row was labelled)
    np.testing.assert_array_equal(ipw_weights(label, propensity=[1.0, 0.005, np.nan, 0.02, 0.01]), [1, 100, 0, 50, 100])
    np.testing.assert_array_equal(clip_weights([1.0, 99.0, 250.0]), [1, 99, 100])
    # the snapshot's nullable columns: Int8 label with NA, Float64 weight with NA
    snap = pd.DataFrame({"label": pd.array([1, None, 0], dtype="Int8"), "weight": pd.array([1.0, None, 200.0],
                                                                                           dtype="Float64")})
    np.testing.assert_array_equal(frame_ipw_weights(snap), [1, 0, 100])
    np.testing.assert_array_equal(frame_ipw_weights(snap.drop(columns="weight").assign(propensity=[1.0, 0.995, 0.02])),
                                  [1, 0, 50])


@pytest.mark.parametrize("kwargs, message", [
    ({"weight": [1.0, np.nan]}, "row 1 has weight nan"),
    ({"weight": [1.0, 0.5]}, "row 1 has weight 0.5"),
    ({"propensity": [1.0, 0.0]}, "row 1"),
    ({"weight": [1.0, 2.0], "propensity": [1.0, 0.5]}, "exactly one"),
    ({}, "exactly one"),
    ({"weight": [1.0, 2.0], "max_weight": 0.5}, "max_weight"),
])
def test_ipw_weights_refuse_what_is_not_an_inverse_propensity(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ipw_weights([0.0, 1.0], **kwargs)


# ---- a window whose truth is known -----------------------------------------------------------------------

def _known_window() -> pd.DataFrame:
    """1,000 transactions. The logging policy allowed 800 (8 frauds) and would have blocked 200 (100 frauds);
    it let 10% of those through, 20 rows with propensity 0.1 and weight 10, half of them fraud. The evaluated
    policy catches 4 of the 8 allowed frauds and every fraud in the would-be-blocked group (and blocks the
    whole group, so 100 legitimate rows too, and 10 allowed legitimate rows). True recall: 104/108; true
    FPR: 110/892; true precision: 104/214."""
    allowed = pd.DataFrame({"label": [1.0] * 8 + [0.0] * 792, "weight": 1.0, "act": [1.0] * 4 + [0.0] * 4 + [1.0] * 10
                            + [0.0] * 782, "truth": [1.0] * 8 + [0.0] * 792, "explored": False})
    explored = pd.DataFrame({"label": [1.0] * 10 + [0.0] * 10, "weight": 10.0, "act": 1.0,
                             "truth": [1.0] * 10 + [0.0] * 10, "explored": True})
    blocked = pd.DataFrame({"label": np.nan, "weight": np.nan, "act": 1.0, "truth": [1.0] * 90 + [0.0] * 90,
                            "explored": False}, index=range(180))
    return pd.concat([allowed, explored, blocked], ignore_index=True)


def test_ipw_recovers_the_known_truth_where_the_plain_figure_is_biased():
    df = _known_window()
    ipw = ipw_metrics(df["label"], df["weight"], df["act"])
    assert ipw["recall"] == pytest.approx(104 / 108)
    assert ipw["fpr"] == pytest.approx(110 / 892)
    assert ipw["precision"] == pytest.approx(104 / 214)
    plain = plain_metrics(df["label"], df["act"])
    assert plain["recall"] == pytest.approx(14 / 18) and plain["fpr"] == pytest.approx(20 / 802)
    # clipping at 5 counts the explored group as 100 rows instead of 200: the known bias of a clip
    assert ipw_metrics(df["label"], df["weight"], df["act"], max_weight=5)["recall"] == pytest.approx(54 / 58)


def test_the_ipw_point_estimate_is_the_one_slice_intervals_reports():
    df = make_scored(seed=3, n=2000)
    act = (df["candidate_score"] >= 0.45).to_numpy(float)
    for max_weight in (100.0, 10.0):  # the synthetic window's explored rows weigh 20: clipped at 10
        res = slice_intervals(df["label"], df["weight"], df["amount"], {"candidate": act},
                              {"all": np.zeros(len(df))}, df["card_id"], baseline="candidate", n_boot=20,
                              max_weight=max_weight)
        mine = ipw_metrics(df["label"], df["weight"], act, max_weight=max_weight)
        for metric in ("recall", "fpr", "precision"):
            got = res[(res.metric == metric) & (res.estimator == "ipw") & (res.model == "candidate")].estimate.iloc[0]
            assert got == pytest.approx(mine[metric], rel=1e-6)


def _population(seed: int = 0, n: int = 4000):
    """A population with its labels known everywhere: a would-be-blocked region of 400 rows with a 30%
    fraud rate, an allowed region with 1%, and an evaluated policy that blocks half the blocked region's
    frauds and some allowed rows."""
    rng = np.random.default_rng(seed)
    wb = np.arange(n) < 400
    y = np.where(wb, rng.random(n) < 0.3, rng.random(n) < 0.01).astype(float)
    act = np.where(wb, (y > 0) & (rng.random(n) < 0.5) | (rng.random(n) < 0.2), rng.random(n) < 0.02).astype(float)
    score = np.clip(0.05 + 0.5 * wb + 0.3 * y + rng.normal(0, 0.1, n), 0.001, 0.999)  # a noisy logging score
    return wb, y, act, score


def _censor(wb, y, e, u):
    explored = wb & (u < e)
    allowed = ~wb | explored
    return np.where(allowed, y, np.nan), np.where(allowed, np.where(explored, 1 / e, 1.0), np.nan), explored


@pytest.mark.parametrize("e, max_weight, blocked_share", [(0.1, 100.0, 1.0), (0.005, 100.0, 0.5)])
def test_ipw_sums_are_unbiased_unclipped_and_a_clip_counts_the_blocked_region_by_e_times_the_clip(
        e, max_weight, blocked_share):
    wb, y, act, _ = _population()
    rng = np.random.default_rng(1)
    draws = 3000
    num, den = np.empty(draws), np.empty(draws)
    for i in range(draws):
        label, weight, _ = _censor(wb, y, e, rng.random(len(y)))
        w = ipw_weights(label, weight, max_weight=max_weight)
        lab = np.nan_to_num(label)
        num[i], den[i] = (lab * w * act).sum(), (lab * w).sum()
    # expectation by linearity: allowed rows count once, blocked ones e * min(1/e, clip) times
    exp_num = (y * act)[~wb].sum() + blocked_share * (y * act)[wb].sum()
    exp_den = y[~wb].sum() + blocked_share * y[wb].sum()
    assert abs(num.mean() - exp_num) < 4 * num.std() / np.sqrt(draws)
    assert abs(den.mean() - exp_den) < 4 * den.std() / np.sqrt(draws)
    if blocked_share == 1.0:  # unclipped: the ratio of the expected sums is the true recall
        assert exp_num / exp_den == pytest.approx((y * act).sum() / y.sum())
        assert np.mean(num / den) == pytest.approx((y * act).sum() / y.sum(), abs=0.01)


def test_dr_is_unbiased_with_a_wrong_outcome_model_and_exact_with_a_perfect_one():
    wb, y, act, _ = _population()
    true_recall = (y * act).sum() / y.sum()
    rng = np.random.default_rng(2)
    e, draws = 0.1, 3000
    wrong = np.full(len(y), 0.05)  # a constant model: far off in the blocked region (30% fraud)
    num, den = np.empty(draws), np.empty(draws)
    for i in range(draws):
        label, weight, _ = _censor(wb, y, e, rng.random(len(y)))
        phi = dr_fraud_terms(label, ipw_weights(label, weight), wrong)
        num[i], den[i] = (phi * act).sum(), phi.sum()
    assert abs(num.mean() - (y * act).sum()) < 4 * num.std() / np.sqrt(draws)
    assert abs(den.mean() - y.sum()) < 4 * den.std() / np.sqrt(draws)
    # a perfect outcome model needs no exploration at all: even with no explored row the sums are exact
    label, weight, _ = _censor(wb, y, e, np.ones(len(y)))
    phi = dr_fraud_terms(label, ipw_weights(label, weight), y)
    assert (phi * act).sum() / phi.sum() == pytest.approx(true_recall)


def test_dr_equals_plain_and_ipw_when_nothing_is_censored():
    rng = np.random.default_rng(4)
    n = 3000
    y = (rng.random(n) < 0.05).astype(float)
    score = np.clip(0.1 + 0.4 * y + rng.normal(0, 0.2, n), 0.001, 0.999)
    act = (score > 0.4).astype(float)
    dr = dr_metrics(y, np.ones(n), score, {"policy": act}, n_boot=50).set_index("metric")
    plain = plain_metrics(y, act)
    for metric in ("recall", "fpr", "precision"):
        assert dr.loc[metric, "estimate"] == pytest.approx(plain[metric])
        assert dr.loc[metric, "lo"] <= dr.loc[metric, "estimate"] <= dr.loc[metric, "hi"]
    assert set(dr["estimator"]) == {"dr"}


def test_dr_precision_counts_every_action_once():
    # DR's fraud and legitimate masses of a row add to 1, so TP + FP is the number of actions, censored or not
    wb, y, act, score = _population()
    label, weight, _ = _censor(wb, y, 0.05, np.random.default_rng(5).random(len(y)))
    res = dr_metrics(label, weight, score, {"a": act, "b": 1 - act}, n_boot=0).set_index(["model", "metric"])
    m = outcome_model(score, label)
    phi = dr_fraud_terms(label, ipw_weights(label, weight), m)
    assert res.loc[("a", "precision"), "estimate"] == pytest.approx((phi * act).sum() / act.sum())
    assert res.loc[("a", "recall"), "estimate"] + res.loc[("b", "recall"), "estimate"] == pytest.approx(1.0)
    assert np.isnan(res.loc[("a", "recall"), "lo"])  # no replicates, no interval


def test_dr_intervals_cover_the_truth_of_a_censored_window_most_of_the_time():
    wb, y, act, score = _population(seed=6, n=6000)
    true_recall = (y * act).sum() / y.sum()
    rng = np.random.default_rng(7)
    covered = []
    for i in range(40):
        label, weight, _ = _censor(wb, y, 0.2, rng.random(len(y)))
        r = dr_metrics(label, weight, score, act, n_boot=200, seed=i).set_index("metric").loc["recall"]
        covered.append(r.lo <= true_recall <= r.hi)
    # conditional on the population the bootstrap also counts its sampling variance: at least nominal
    assert np.mean(covered) >= 0.85


def test_outcome_model_recovers_a_logistic_calibration():
    rng = np.random.default_rng(8)
    x = rng.normal(size=40_000)
    p = 1 / (1 + np.exp(-(-3.0 + 1.5 * x)))
    y = (rng.random(len(x)) < p).astype(float)
    m = outcome_model(x, y, scale="raw")
    assert np.abs(m - p).max() < 0.05
    # as probabilities: the logit of p is linear in itself, so the fit is near the identity
    m2 = outcome_model(p, y)
    assert np.abs(m2 - p).max() < 0.05
    # one class among the labelled rows: the (weighted) rate, no fit
    np.testing.assert_allclose(outcome_model(x[:10], np.zeros(10), scale="raw"), 0.0)
    with pytest.raises(ValueError, match="finite"):
        outcome_model(np.array([0.1, np.nan]), [0.0, 1.0])
    with pytest.raises(ValueError, match="scale"):
        outcome_model(np.ones((3, 2)), [0.0, 1.0, 0.0], scale=["raw"])


# ---- support -----------------------------------------------------------------------------------------------

def test_the_hollow_window_is_flagged_although_its_fraud_ess_is_perfect():
    # the outside review's case: 0.5% exploration, a handful of explored rows, none of them fraud; a fifth of
    # the frauds were blocked and are missing. IPW recall then equals plain recall; ESS cannot tell.
    rng = np.random.default_rng(9)
    allowed_frauds, allowed_legit, explored_legit, blocked = 400, 60_000, 4, 700
    label = np.r_[np.ones(allowed_frauds), np.zeros(allowed_legit), np.zeros(explored_legit), np.full(blocked, np.nan)]
    weight = np.r_[np.ones(allowed_frauds + allowed_legit), np.full(explored_legit, 200.0), np.full(blocked, np.nan)]
    explored = np.r_[np.zeros(allowed_frauds + allowed_legit, bool), np.ones(explored_legit, bool),
                     np.zeros(blocked, bool)]
    act = (rng.random(len(label)) < 0.3).astype(float)
    assert ipw_metrics(label, weight, act)["recall"] == pytest.approx(plain_metrics(label, act)["recall"])
    s = counterfactual_support(label, weight, explored)
    assert (s.explored_rows, s.explored_frauds, s.frauds) == (4, 0, 400)
    assert s.ess_frauds == pytest.approx(400.0)  # the best value it can take
    assert not s.sufficient
    assert "0 explored frauds" in s.sentence and "missing" in s.sentence
    # without the explored column, labelled rows weighing more than 1 count as explored
    assert counterfactual_support(label, weight).explored_rows == 4


def test_support_is_sufficient_with_enough_explored_frauds_and_says_so():
    cfg = CounterfactualConfig(min_explored_frauds=3, min_ess=20)
    label = np.r_[np.ones(300), np.zeros(5000), np.ones(5), np.zeros(40), np.full(900, np.nan)]
    weight = np.r_[np.ones(5300), np.full(45, 50.0), np.full(900, np.nan)]
    s = counterfactual_support(label, weight, config=cfg)
    assert (s.explored_rows, s.explored_frauds) == (45, 5)
    assert s.ess_frauds == pytest.approx(550 ** 2 / (300 + 5 * 2500))
    assert s.sufficient and s.sentence.endswith("counterfactual figures are supported.")
    assert s.as_dict()["min_explored_frauds"] == 3
    # the same window against stricter minimums: each shortfall is named
    s2 = counterfactual_support(label, weight, config=CounterfactualConfig(min_explored_frauds=6, min_ess=30))
    assert not s2.sufficient
    assert "5 explored frauds (at least 6 needed" in s2.sentence
    assert "effective sample size of 24 for the fraud weights (at least 30 needed)" in s2.sentence


def test_counterfactual_config_is_strict_and_loads_from_yaml(tmp_path):
    cfg = CounterfactualConfig()
    assert cfg.max_weight == MAX_WEIGHT and cfg.min_explored_frauds >= 1 and cfg.min_ess > 0
    with pytest.raises(ValidationError):
        CounterfactualConfig(min_explored_fraud=3)  # a misspelt key is an error, not a default
    with pytest.raises(ValidationError):
        CounterfactualConfig(max_weight=0.5)
    f = tmp_path / "counterfactual.yaml"
    f.write_text("min_explored_frauds: 4\nmin_ess: 25\n")
    loaded = load_yaml_model(f, CounterfactualConfig)
    assert (loaded.min_explored_frauds, loaded.min_ess, loaded.max_weight) == (4, 25.0, MAX_WEIGHT)
    f.write_text("min_explored_frauds: 4\nmax_wieght: 10\n")
    with pytest.raises(ConfigError, match="max_wieght"):
        load_yaml_model(f, CounterfactualConfig)
