"""Slice metrics with bootstrap intervals on aggregated counts: point estimates against scikit-learn,
inverse-propensity estimates on a censored fixture with a known answer, and interval coverage."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.stats import norm
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from analysis.stats import poisson1, score_bins, slice_intervals


def _get(res, slice_type, slice_, metric, estimator, model):
    row = res[(res.slice_type == slice_type) & (res.slice == slice_) & (res.metric == metric)
              & (res.estimator == estimator) & (res.model == model)]
    assert len(row) == 1, (slice_type, slice_, metric, estimator, model)
    return row.iloc[0]


def test_poisson_weights_have_mean_and_variance_one():
    w = poisson1(np.random.default_rng(0), (400, 1000))
    assert w.dtype == np.float32 and w.min() == 0
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02
    # P(0) = P(1) = 1/e for Poisson(1)
    assert abs((w == 0).mean() - np.exp(-1)) < 0.005 and abs((w == 1).mean() - np.exp(-1)) < 0.005


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(3)
    n = 6000
    label = (rng.random(n) < 0.08).astype(float)
    label[rng.random(n) < 0.05] = np.nan  # blocked by the policy of the day: never labelled
    weight = np.where(rng.random(n) < 0.1, 4.0, 1.0)
    inc = (rng.random(n) + 0.5 * np.nan_to_num(label)) > 0.9
    cand = (rng.random(n) + 0.7 * np.nan_to_num(label)) > 0.9
    return pd.DataFrame({"label": label, "weight": weight, "amount": rng.gamma(2.0, 30.0, n),
                         "country": rng.choice(["DE", "FR", "US"], n), "card": rng.integers(0, 1500, n),
                         "inc": inc.astype(float), "cand": cand.astype(float)})


@pytest.fixture(scope="module")
def result(scored):
    df = scored
    return slice_intervals(df["label"], df["weight"], df["amount"], {"incumbent": df["inc"], "candidate": df["cand"]},
                           {"all": np.zeros(len(df)), "country": df["country"]}, df["card"],
                           baseline="incumbent", n_boot=300)


@pytest.mark.parametrize("country", ["DE", "FR", "US"])
def test_point_estimates_match_scikit_learn_per_slice(scored, result, country):
    g = scored[(scored.country == country)]
    lab = g[g.label.notna()]
    y, w = lab.label.astype(int), lab.weight
    for model, col in (("incumbent", "inc"), ("candidate", "cand")):
        pred = lab[col].astype(int)
        assert _get(result, "country", country, "recall", "ipw", model).estimate == pytest.approx(
            recall_score(y, pred, sample_weight=w))
        assert _get(result, "country", country, "recall", "plain", model).estimate == pytest.approx(recall_score(y, pred))
        assert _get(result, "country", country, "precision", "ipw", model).estimate == pytest.approx(
            precision_score(y, pred, sample_weight=w))
        fpr = (w * (y == 0) * pred).sum() / (w * (y == 0)).sum()
        assert _get(result, "country", country, "fpr", "ipw", model).estimate == pytest.approx(fpr)
        # action rate counts every transaction, labelled or not
        assert _get(result, "country", country, "action_rate", "all", model).estimate == pytest.approx(g[col].mean())
        money = (lab.weight * lab.label * lab[col] * lab.amount).sum()
        assert _get(result, "country", country, "blocked_fraud_amount", "ipw", model).estimate == pytest.approx(money)
    diff = _get(result, "country", country, "recall", "ipw", "candidate-incumbent")
    assert diff.estimate == pytest.approx(recall_score(y, lab.cand.astype(int), sample_weight=w)
                                          - recall_score(y, lab.inc.astype(int), sample_weight=w))
    assert diff.transactions == len(g) and diff.labelled == len(lab) and diff.frauds == int(lab.label.sum())


def test_every_metric_and_difference_has_an_interval_around_its_estimate(result):
    assert set(result.model) == {"incumbent", "candidate", "candidate-incumbent", "candidate/incumbent"}
    # the relative change of the action rate, with its own interval (only for the action rate)
    ratio = result[result.model == "candidate/incumbent"]
    assert set(ratio.metric) == {"action_rate"}
    ar = result[result.metric == "action_rate"].pivot_table(index=["slice_type", "slice"], columns="model",
                                                             values="estimate")
    np.testing.assert_allclose(ar["candidate/incumbent"], ar["candidate"] / ar["incumbent"])
    assert (ratio.lo <= ratio.estimate).all() and (ratio.estimate <= ratio.hi).all()
    assert set(result.metric) == {"action_rate", "recall", "fpr", "precision", "blocked_fraud_amount",
                                  "false_decline_amount"}
    assert result[["lo", "hi"]].notna().all().all()
    assert ((result.lo <= result.estimate + 1e-9) & (result.estimate <= result.hi + 1e-9)).mean() > 0.97
    assert (result.hi > result.lo).all()


def test_ipw_recall_recovers_the_censored_truth_where_the_plain_estimate_is_biased():
    # 1000 transactions. The policy of the day allowed 800 (8 frauds) and would have blocked 200 (100 frauds);
    # it let 10% of those through (exploration), 20 rows with propensity 0.1 and weight 10, 10 of them fraud.
    # The candidate catches 4 of the 8 allowed frauds and every fraud in the would-be-blocked group, so its
    # true recall is (4 + 100) / (8 + 100).
    allowed = pd.DataFrame({"label": [1.0] * 8 + [0.0] * 792, "weight": 1.0, "cand": [1.0] * 4 + [0.0] * 796})
    explored = pd.DataFrame({"label": [1.0] * 10 + [0.0] * 10, "weight": 10.0, "cand": [1.0] * 10 + [0.0] * 10})
    blocked = pd.DataFrame({"label": [np.nan] * 180, "weight": np.nan, "cand": 1.0})
    df = pd.concat([allowed, explored, blocked], ignore_index=True)
    df["amount"] = 10.0
    df["inc"] = 0.0
    res = slice_intervals(df["label"], df["weight"], df["amount"], {"incumbent": df["inc"], "candidate": df["cand"]},
                          {"all": np.zeros(len(df))}, np.arange(len(df)), baseline="incumbent", n_boot=100)
    assert _get(res, "all", "0.0", "recall", "ipw", "candidate").estimate == pytest.approx(104 / 108)
    assert _get(res, "all", "0.0", "recall", "plain", "candidate").estimate == pytest.approx(14 / 18)
    # weight clipping bounds a single row's influence: at 5 the explored frauds count for 50, not 100
    clipped = slice_intervals(df["label"], df["weight"], df["amount"], {"incumbent": df["inc"], "candidate": df["cand"]},
                              {"all": np.zeros(len(df))}, np.arange(len(df)), baseline="incumbent", n_boot=100,
                              max_weight=5.0)
    assert _get(clipped, "all", "0.0", "recall", "ipw", "candidate").estimate == pytest.approx(54 / 58)


def test_the_95_percent_interval_of_a_recall_difference_covers_the_truth_about_95_percent_of_the_time():
    # a population of cards, fraud clustered on cards; the truth is the population's recall difference
    rng = np.random.default_rng(11)
    cards, per_card = 600, 8
    card = np.repeat(np.arange(cards), per_card)
    fraud_card = rng.random(cards) < 0.08
    label = (fraud_card[card] & (rng.random(len(card)) < 0.7)).astype(float)
    p_inc, p_cand = 0.55, 0.70  # chance each model catches a fraud; legit rows blocked at 1%
    true_diff = p_cand - p_inc
    covered = 0
    draws = 120
    for i in range(draws):
        inc = np.where(label > 0, rng.random(len(card)) < p_inc, rng.random(len(card)) < 0.01).astype(float)
        cand = np.where(label > 0, rng.random(len(card)) < p_cand, rng.random(len(card)) < 0.01).astype(float)
        res = slice_intervals(label, np.ones(len(card)), np.ones(len(card)), {"incumbent": inc, "candidate": cand},
                              {"all": np.zeros(len(card))}, card, baseline="incumbent", n_boot=300, seed=i)
        d = _get(res, "all", "0.0", "recall", "ipw", "candidate-incumbent")
        covered += d.lo <= true_diff <= d.hi
    assert 0.88 <= covered / draws <= 0.99


def test_a_slice_with_no_frauds_has_no_recall_and_says_so_with_nan(scored):
    df = scored.assign(label=np.where(scored.country == "FR", 0.0, scored.label))
    res = slice_intervals(df["label"], df["weight"], df["amount"], {"incumbent": df["inc"], "candidate": df["cand"]},
                          {"country": df["country"]}, df["card"], baseline="incumbent", n_boot=50)
    fr = _get(res, "country", "FR", "recall", "ipw", "candidate")
    assert np.isnan(fr.estimate) and np.isnan(fr.lo) and fr.frauds == 0


def test_an_unknown_baseline_is_a_clear_error(scored):
    with pytest.raises(ValueError, match=r"The 'baseline' parameter of slice_intervals must be one of \['a'\]"):
        slice_intervals(scored["label"], scored["weight"], scored["amount"], {"a": scored["inc"]},
                        {"all": np.zeros(len(scored))}, scored["card"], baseline="b")


# ROC-AUC and PR-AUC


@pytest.fixture(scope="module")
def ranked():
    """A scored window: 40 merchants in 4 countries (a country is a function of the merchant), two models'
    scores with frauds higher, censored labels and exploration weights."""
    rng = np.random.default_rng(21)
    n = 40_000
    merchant = rng.integers(0, 40, n)
    label = (rng.random(n) < 0.03).astype(float)
    base = rng.normal(size=n)
    inc = norm.cdf(base + rng.normal(0, 0.6, n) + 2.0 * label - 2.5)
    cand = norm.cdf(base + rng.normal(0, 0.6, n) + 2.6 * label - 2.5)
    label[(inc > np.quantile(inc, 0.98)) & (rng.random(n) < 0.9)] = np.nan  # blocked, never labelled
    weight = np.where(~np.isnan(label) & (inc > np.quantile(inc, 0.98)), 10.0, 1.0)  # explored blocks
    return pd.DataFrame({"label": label, "weight": weight, "amount": rng.gamma(2.0, 30.0, n), "inc": inc, "cand": cand,
                         "merchant": merchant, "country": np.array(["DE", "FR", "IT", "US"])[merchant % 4],
                         "card": rng.integers(0, 12_000, n)})


def _ranking(df, keys, **kw):
    return slice_intervals(df["label"], df["weight"], df["amount"],
                           {"incumbent": (df["inc"] > 0.5).astype(float), "candidate": (df["cand"] > 0.5).astype(float)},
                           keys, df["card"], baseline="incumbent", n_boot=200,
                           scores={"incumbent": df["inc"].to_numpy(), "candidate": df["cand"].to_numpy()},
                           **{"n_bins": 2048, **kw})


@pytest.fixture(scope="module")
def ranked_result(ranked):
    return _ranking(ranked, {"all": np.zeros(len(ranked)), "merchant": ranked["merchant"], "country": ranked["country"]})


@pytest.mark.parametrize("country", ["DE", "FR", "IT", "US"])
def test_ranking_metrics_are_scikit_learns_on_binned_scores_and_within_two_thousandths_of_it_on_raw_ones(
        ranked, ranked_result, country):
    g = ranked[(ranked.country == country) & ranked.label.notna()]
    y = g.label.astype(int)
    for model, col in (("incumbent", "inc"), ("candidate", "cand")):
        binned = score_bins(g[col].to_numpy(), 2048)
        for estimator, w in (("ipw", g.weight), ("plain", None)):
            roc = _get(ranked_result, "country", country, "roc_auc", estimator, model).estimate
            ap = _get(ranked_result, "country", country, "pr_auc", estimator, model).estimate
            assert roc == pytest.approx(roc_auc_score(y, binned, sample_weight=w), abs=1e-12)
            assert ap == pytest.approx(average_precision_score(y, binned, sample_weight=w), abs=1e-12)
            assert roc == pytest.approx(roc_auc_score(y, g[col], sample_weight=w), abs=1e-3)
            assert ap == pytest.approx(average_precision_score(y, g[col], sample_weight=w), abs=2e-3)
    d = _get(ranked_result, "country", country, "roc_auc", "ipw", "candidate-incumbent")
    assert d.estimate == pytest.approx(_get(ranked_result, "country", country, "roc_auc", "ipw", "candidate").estimate
                                       - _get(ranked_result, "country", country, "roc_auc", "ipw", "incumbent").estimate)
    assert d.lo < d.estimate < d.hi


def test_a_coarse_slice_type_summed_from_a_finer_ones_histograms_equals_its_own(ranked, ranked_result):
    alone = _ranking(ranked, {"country": ranked["country"]})
    for t in (alone, ranked_result):
        assert t[t.metric == "roc_auc"].estimate.notna().any()
    key = ["slice", "metric", "estimator", "model"]
    a = alone[alone.metric.isin(["roc_auc", "pr_auc"])].set_index(key)["estimate"]
    b = ranked_result[(ranked_result.slice_type == "country") & ranked_result.metric.isin(["roc_auc", "pr_auc"])]
    pd.testing.assert_series_equal(a.sort_index(), b.set_index(key)["estimate"].sort_index(), rtol=1e-12)


def test_slices_with_too_few_frauds_for_a_ranking_metric_say_so_with_nan_and_their_support(ranked):
    df = ranked.assign(label=np.where((ranked.merchant == 7) & (ranked.label == 1), 0.0, ranked.label))
    df.loc[df.index[(df.merchant == 7)][:3], "label"] = 1.0  # three frauds: fewer than the ten needed
    res = _ranking(df, {"merchant": df["merchant"]})
    m7 = _get(res, "merchant", "7", "roc_auc", "ipw", "candidate")
    assert np.isnan(m7.estimate) and np.isnan(m7.lo) and m7.frauds == 3
    assert np.isfinite(_get(res, "merchant", "8", "roc_auc", "ipw", "candidate").estimate)
    assert not np.isnan(_get(res, "merchant", "7", "recall", "plain", "candidate").estimate)  # counts still there


def test_scores_outside_0_1_keep_their_order_and_scores_that_are_not_numbers_are_a_clear_error(ranked):
    # a margin instead of a probability: binned on its logistic transform, so the same ranking figures
    margin = ranked.assign(inc=np.log(ranked.inc) - np.log1p(-ranked.inc))
    a, b = _ranking(ranked, {"all": np.zeros(len(ranked))}), _ranking(margin, {"all": np.zeros(len(ranked))})
    for metric in ("roc_auc", "pr_auc"):
        assert _get(a, "all", "0.0", metric, "ipw", "incumbent").estimate == pytest.approx(
            _get(b, "all", "0.0", metric, "ipw", "incumbent").estimate, abs=1e-9)
    bad = ranked.assign(inc=ranked.inc.where(ranked.index != 5, np.nan))
    with pytest.raises(ValueError, match=r"Scores must be finite numbers: row 5 has nan \(1 rows are not finite\)"):
        _ranking(bad, {"all": np.zeros(len(bad))})


def test_ranking_intervals_cover_the_population_truth_about_95_percent_of_the_time():
    # frauds cluster on cards (a card effect shared by both models); the truth is the population's
    # ROC-AUC (closed form, normal scores) and average precision (numerical integral)
    cards, per_card, p_card, p_row = 3000, 10, 0.03, 0.6
    mu = {"incumbent": 2.0, "candidate": 2.5}
    sd_l, sd_f, pi = np.sqrt(1.25), np.sqrt(1.25 + 0.64), p_card * p_row

    def ap(m):
        def f(t):
            tp, fp = pi * norm.sf(t, mu[m], sd_f), (1 - pi) * norm.sf(t, 0, sd_l)
            return tp / (tp + fp) * norm.pdf(t, mu[m], sd_f)
        return quad(f, -10, 15, limit=200)[0]

    truth = {("roc_auc", m): norm.cdf(mu[m] / np.hypot(sd_l, sd_f)) for m in mu} | {("pr_auc", m): ap(m) for m in mu}
    for metric in ("roc_auc", "pr_auc"):
        truth[metric, "candidate-incumbent"] = truth[metric, "candidate"] - truth[metric, "incumbent"]
    rng = np.random.default_rng(5)
    card = np.repeat(np.arange(cards), per_card)
    n, draws, covered = len(card), 150, {k: 0 for k in truth}
    for i in range(draws):
        label = ((rng.random(cards) < p_card)[card] & (rng.random(n) < p_row)).astype(float)
        effect, base = rng.normal(0, 0.8, cards)[card], rng.normal(size=n)
        sc = {m: norm.cdf(base + rng.normal(0, 0.5, n) + label * (mu[m] + effect) - 4) for m in mu}
        res = slice_intervals(label, np.ones(n), np.ones(n), {m: (s > np.quantile(s, 0.985)).astype(float)
                                                              for m, s in sc.items()},
                              {"all": np.zeros(n)}, card, baseline="incumbent", n_boot=300, seed=i, scores=sc)
        for metric, model in truth:
            r = _get(res, "all", "0.0", metric, "plain", model)
            covered[metric, model] += r.lo <= truth[metric, model] <= r.hi
    rates = {k: v / draws for k, v in covered.items()}
    assert all(0.88 <= r <= 0.99 for r in rates.values()), rates


# --------------------------------------------------------------------------------------------------
# mass estimators (the direct method, doubly robust) in the same pass; per-type estimators; the threads
# --------------------------------------------------------------------------------------------------

def _masses_call(df, **kw):
    rng = np.random.default_rng(11)
    prob = rng.uniform(0.05, 0.6, len(df))  # the outcome model's fraud probability of each row
    dm = np.where(df["label"].isna(), prob, df["label"].fillna(0))
    return dm, slice_intervals(df["label"], df["weight"], df["amount"], {"incumbent": df["inc"], "candidate": df["cand"]},
                               {"all": np.zeros(len(df)), "country": df["country"]}, df["card"], baseline="incumbent",
                               n_boot=300, masses={"dm": (dm, None), "dr": (dm * 0.5, {"all"})}, **kw)


def test_a_mass_estimator_counts_each_rows_mass_as_fraud_and_the_rest_as_legitimate(scored):
    """recall_dm = sum(mass * action) / sum(mass), FPR_dm = sum((1 - mass) * action) / sum(1 - mass), on every
    row, labelled or not, worked out by hand; reported on the slice types named (dr: all traffic only)."""
    dm, res = _masses_call(scored)
    for country in ("DE", "FR", "US"):
        g = (scored["country"] == country).to_numpy()
        for model, col in (("incumbent", "inc"), ("candidate", "cand")):
            a = scored[col].to_numpy()
            m = dm[g]
            assert _get(res, "country", country, "recall", "dm", model).estimate == pytest.approx(
                (m * a[g]).sum() / m.sum())
            assert _get(res, "country", country, "fpr", "dm", model).estimate == pytest.approx(
                ((1 - m) * a[g]).sum() / (1 - m).sum())
            assert _get(res, "country", country, "false_decline_amount", "dm", model).estimate == pytest.approx(
                ((1 - m) * a[g] * scored["amount"].to_numpy()[g]).sum(), rel=1e-5)
    half = dm * 0.5
    a = scored["cand"].to_numpy()
    assert _get(res, "all", "0.0", "recall", "dr", "candidate").estimate == pytest.approx((half * a).sum() / half.sum())
    assert set(res[res.estimator == "dr"].slice_type) == {"all"}
    row = _get(res, "country", "DE", "recall", "dm", "candidate-incumbent")
    assert row.lo < row.estimate < row.hi  # an interval from the same replicates as every other estimator


def test_a_slice_type_narrowed_to_action_rates_reports_them_alone_with_the_same_figures(scored, result):
    _, narrowed = _masses_call(scored, estimators_by_type={"country": ("all",)})
    country = narrowed[narrowed.slice_type == "country"]
    assert set(country.estimator) == {"all"} and set(country.metric) == {"action_rate"}
    assert not country.metric.isin(["roc_auc", "pr_auc"]).any()
    for c in ("DE", "FR", "US"):
        assert _get(narrowed, "country", c, "action_rate", "all", "candidate").estimate == pytest.approx(
            _get(result, "country", c, "action_rate", "all", "candidate").estimate)
        assert _get(narrowed, "country", c, "action_rate", "all", "candidate").transactions == (
            scored.country == c).sum()
    assert {"ipw", "plain", "dm", "dr"} <= set(narrowed[narrowed.slice_type == "all"].estimator)


def test_the_products_give_the_same_replicates_on_one_thread_as_on_several(scored, monkeypatch):
    """The slices' products are shared among threads: the figures are the same whatever the number."""
    import analysis.stats as stats

    _, several = _masses_call(scored)
    monkeypatch.setattr(stats, "MAX_WORKERS", 1)
    _, one = _masses_call(scored)
    pd.testing.assert_frame_equal(several, one)
