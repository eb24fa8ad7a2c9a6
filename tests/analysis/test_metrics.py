"""analysis.metrics: thresholds, IPW-weighted rates, slices, ranking metrics and the paired bootstrap.

Expected values come from hand computations on tiny tables, from brute-force scans, or from
scikit-learn with ``sample_weight`` (an independent implementation of the same weighted metrics).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, precision_score, recall_score

from analysis.metrics import (
    by_value,
    prepare,
    ranking_metrics,
    slice_metrics,
    threshold_at_fpr,
    thresholds_for,
    weighted_fpr,
)

NAN = float("nan")


# --------------------------------------------------------------------------------------------------
# thresholds_for / weighted_fpr
# --------------------------------------------------------------------------------------------------

def test_thresholds_for_uses_the_merchant_threshold_or_the_default():
    merchants = pd.Series(["A", "B", "C", "A"])
    got = thresholds_for(merchants, {"A": 0.7, "C": 0.9}, default=0.5)
    np.testing.assert_array_equal(got, [0.7, 0.5, 0.9, 0.7])


@pytest.mark.parametrize("per_merchant", [None, {}, pd.Series(dtype=float)])
def test_thresholds_for_without_per_merchant_thresholds_is_the_default_everywhere(per_merchant):
    got = thresholds_for(pd.Series(["A", "B", "C"]), per_merchant, default=0.25)
    np.testing.assert_array_equal(got, [0.25, 0.25, 0.25])


@pytest.mark.parametrize("keys", [
    pd.Series(["m7", "m1", None, "m7", "商户-é", "0", "00", "m1"], index=[10, 3, 5, 7, 1, 2, 4, 0], name="merchant_id"),
    pd.Series([7, 1, 7, 3], name="merchant_id", dtype=object),  # integer ids, as some logs have them
    pd.Series([np.nan, 2.5, np.nan, 2.5]),
    pd.Series([], dtype="str"),
])
def test_by_value_is_pandas_own_map_and_astype_row_for_row(keys):
    """by_value computes an element-wise function on a column's distinct values (missing ones included) and
    spreads it back: what pandas' own map and astype give, in values, dtype, index and name."""
    table = pd.Series({"m7": "large", "0": "small", 7: 0.25, 2.5: 1.0, "商户-é": "medium"})
    for fn in (lambda c: c.map(table), lambda c: c.astype(str), lambda c: c.map(table).fillna(0.5)):
        pd.testing.assert_series_equal(by_value(keys, fn), fn(keys))
    cut = pd.cut(pd.Series([1.0, np.nan, 50.0, 1e4, 20.0]), [0, 20, 100, np.inf], labels=["<20", "20-100", "100+"],
                 right=False)
    pd.testing.assert_series_equal(by_value(cut, lambda c: c.astype(str)), cut.astype(str))


def test_thresholds_for_reads_arrow_strings_and_leaves_unknown_or_missing_merchants_at_the_default():
    merchants = pd.Series(["m2", None, "m10", "m2", "ünï"], dtype="str")
    got = thresholds_for(merchants, pd.Series({"m2": 0.7, "ünï": np.nan, "m3": 0.1}), 0.9)
    assert got.tolist() == [0.7, 0.9, 0.9, 0.7, 0.9]


def test_weighted_fpr_by_hand():
    score = np.array([0.9, 0.8, 0.3, 0.6, 0.1])
    label = np.array([0, 0, 0, 1, 0])
    weight = np.array([1.0, 3.0, 2.0, 7.0, 4.0])
    # negatives: weights 1, 3, 2, 4 (total 10); at 0.5 the blocked ones are 0.9 (w 1) and 0.8 (w 3)
    assert weighted_fpr(score, label, weight, 0.5) == pytest.approx(4 / 10)
    # per-row thresholds: the 0.8 row is no longer blocked (threshold 0.85), the 0.3 row is (0.2)
    thr = np.array([0.5, 0.85, 0.2, 0.5, 0.5])
    assert weighted_fpr(score, label, weight, thr) == pytest.approx((1 + 2) / 10)


# --------------------------------------------------------------------------------------------------
# threshold_at_fpr
# --------------------------------------------------------------------------------------------------

def _brute_force_lowest_threshold(score, label, weight, target):
    """Scan every threshold that can change the decision set: each negative's score and the float just
    above it. Return the lowest one whose weighted FPR is <= target."""
    neg_scores = np.unique(score[label == 0])
    candidates = np.concatenate([neg_scores, np.nextafter(neg_scores, np.inf)])
    ok = [t for t in candidates if weighted_fpr(score, label, weight, t) <= target + 1e-12]
    return min(ok)


def _weighted_recall(score, label, weight, t):
    pos = label == 1
    return (weight * pos * (score >= t)).sum() / (weight * pos).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.0, 0.003, 0.01, 0.05, 0.2, 0.5])
def test_threshold_at_fpr_is_the_lowest_threshold_within_the_target(seed, target):
    rng = np.random.default_rng(seed)
    n = 300
    label = (rng.random(n) < 0.15).astype(int)
    score = np.round(np.clip(rng.normal(0.3 + 0.3 * label, 0.15), 0, 1), 2)  # rounded: many ties
    weight = np.where(rng.random(n) < 0.2, 20.0, 1.0)  # IPW weights of explored rows
    t = threshold_at_fpr(score, label, weight, target)

    assert weighted_fpr(score, label, weight, t) <= target + 1e-12
    assert t == _brute_force_lowest_threshold(score, label, weight, target)
    # anything lower admits more false positives than allowed
    assert weighted_fpr(score, label, weight, np.nextafter(t, -np.inf)) > target
    # and no threshold that respects the target catches more fraud
    for other in np.unique(score):
        if weighted_fpr(score, label, weight, other) <= target:
            assert _weighted_recall(score, label, weight, other) <= _weighted_recall(score, label, weight, t)


def test_threshold_at_fpr_zero_target_sits_just_above_the_highest_legitimate_score():
    score = np.array([0.2, 0.4, 0.7, 0.95, 0.8])
    label = np.array([0, 0, 0, 1, 1])
    weight = np.ones(5)
    t = threshold_at_fpr(score, label, weight, 0.0)
    assert t > 0.7
    assert np.nextafter(t, -np.inf) == 0.7
    assert weighted_fpr(score, label, weight, t) == 0.0


def test_threshold_at_fpr_respects_weights():
    # two legitimate rows: 0.9 (weight 1) and 0.5 (weight 9). Blocking only 0.9 gives FPR 0.1, both 1.0.
    score = np.array([0.9, 0.5, 0.6])
    label = np.array([0, 0, 1])
    weight = np.array([1.0, 9.0, 1.0])
    t = threshold_at_fpr(score, label, weight, 0.1)
    assert 0.5 < t <= 0.6  # blocks the 0.9 legitimate row and the 0.6 fraud, not the heavy 0.5 row
    assert weighted_fpr(score, label, weight, t) == pytest.approx(0.1)
    # with the weights swapped, 0.1 of FPR cannot afford the 0.9 row any more
    t2 = threshold_at_fpr(score, label, np.array([9.0, 1.0, 1.0]), 0.1)
    assert t2 > 0.9


def test_threshold_at_fpr_without_legitimate_rows_fails_clearly():
    with pytest.raises(ValueError, match="needs at least one labelled legitimate row; got none"):
        threshold_at_fpr(np.array([0.3, 0.9]), np.array([1, 1]), np.ones(2), 0.01)
    with pytest.raises(ValueError, match="needs at least one labelled legitimate row"):
        threshold_at_fpr(np.array([0.3, 0.9]), np.array([0, 1]), np.array([0.0, 1.0]), 0.01)


# --------------------------------------------------------------------------------------------------
# prepare / slice_metrics: a hand-computed table
# --------------------------------------------------------------------------------------------------

def _hand_table() -> pd.DataFrame:
    rows = [
        # country, label, weight, incumbent, candidate, amount
        ("FR", 1, 1.0, 0.9, 0.8, 100.0),   # both block: TP for both
        ("FR", 1, 4.0, 0.2, 0.7, 50.0),    # candidate only: TP for the candidate (weight 4)
        ("FR", 0, 1.0, 0.6, 0.1, 20.0),    # incumbent only: FP for the incumbent
        ("FR", 0, 2.0, 0.1, 0.2, 30.0),    # neither
        ("FR", 0, 1.0, 0.1, 0.9, 10.0),    # candidate only: FP for the candidate
        ("FR", NAN, NAN, 0.9, 0.9, 500.0),  # unlabelled (blocked by the policy of the day): both block
        ("DE", 1, 1.0, 0.7, 0.3, 40.0),    # incumbent only: TP for the incumbent
        ("DE", 0, 1.0, 0.2, 0.2, 5.0),     # neither
        ("DE", NAN, NAN, 0.1, 0.6, 70.0),  # unlabelled, candidate only
        ("DE", 0, 5.0, 0.55, 0.65, 60.0),  # both: FP for both (weight 5)
        ("IT", 0, 1.0, 0.1, 0.1, 8.0),     # no fraud, no action
    ]
    df = pd.DataFrame(rows, columns=["merchant_country", "label", "weight", "incumbent_score",
                                     "candidate_score", "amount"])
    df["card_id"] = np.arange(len(df))
    return df


def _prepared_hand_table() -> pd.DataFrame:
    df = _hand_table()
    return prepare(df, np.full(len(df), 0.5), np.full(len(df), 0.5))


def test_prepare_marks_actions_and_zeroes_unlabelled_weights():
    p = _prepared_hand_table()
    np.testing.assert_array_equal(p["incumbent_action"], [1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(p["candidate_action"], [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(p["_labelled"], [1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(p["_lab"], [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(p["_w"], [1, 4, 1, 2, 1, 0, 1, 1, 0, 5, 1])


def test_prepare_uses_per_row_thresholds():
    df = _hand_table()
    inc_thr = np.full(len(df), 0.5)
    inc_thr[0] = 0.95  # row 0 (incumbent score 0.9) is no longer blocked
    p = prepare(df, inc_thr, np.full(len(df), 0.5))
    assert p["incumbent_action"].iloc[0] == 0
    assert p["incumbent_action"].iloc[2] == 1


def test_slice_metrics_per_country_by_hand():
    out = slice_metrics(_prepared_hand_table(), "merchant_country").set_index("slice")
    assert set(out["slice_type"]) == {"merchant_country"}
    assert sorted(out.index) == ["DE", "FR", "IT"]

    fr = out.loc["FR"]
    assert (fr["transactions"], fr["labelled"], fr["frauds"]) == (6, 5, 2)
    # fraud weight 1 + 4 = 5; incumbent catches the weight-1 one, the candidate both
    assert fr["incumbent_recall"] == pytest.approx(1 / 5)
    assert fr["candidate_recall"] == pytest.approx(5 / 5)
    # legitimate weight 1 + 2 + 1 = 4; each model blocks one weight-1 row
    assert fr["incumbent_fpr"] == pytest.approx(1 / 4)
    assert fr["candidate_fpr"] == pytest.approx(1 / 4)
    # action rate over all 6 rows, the unlabelled one included
    assert fr["incumbent_action_rate"] == pytest.approx(3 / 6)
    assert fr["candidate_action_rate"] == pytest.approx(4 / 6)
    assert fr["incumbent_precision"] == pytest.approx(1 / (1 + 1))
    assert fr["candidate_precision"] == pytest.approx(5 / (5 + 1))
    assert fr["incumbent_blocked_fraud_amount"] == pytest.approx(1 * 100)
    assert fr["candidate_blocked_fraud_amount"] == pytest.approx(1 * 100 + 4 * 50)
    assert fr["incumbent_false_decline_amount"] == pytest.approx(1 * 20)
    assert fr["candidate_false_decline_amount"] == pytest.approx(1 * 10)
    assert (fr["candidate_only_actions"], fr["incumbent_only_actions"]) == (2, 1)

    de = out.loc["DE"]
    assert (de["transactions"], de["labelled"], de["frauds"]) == (4, 3, 1)
    assert de["incumbent_recall"] == pytest.approx(1.0)
    assert de["candidate_recall"] == pytest.approx(0.0)
    assert de["incumbent_fpr"] == pytest.approx(5 / 6)
    assert de["candidate_fpr"] == pytest.approx(5 / 6)
    assert de["incumbent_action_rate"] == pytest.approx(2 / 4)
    assert de["candidate_action_rate"] == pytest.approx(2 / 4)
    assert de["incumbent_precision"] == pytest.approx(1 / 6)
    assert de["candidate_precision"] == pytest.approx(0.0)
    assert de["incumbent_false_decline_amount"] == pytest.approx(5 * 60)
    assert (de["candidate_only_actions"], de["incumbent_only_actions"]) == (1, 1)

    it = out.loc["IT"]
    assert (it["transactions"], it["labelled"], it["frauds"]) == (1, 1, 0)
    assert np.isnan(it["incumbent_recall"]) and np.isnan(it["candidate_recall"])  # no fraud to catch
    assert np.isnan(it["candidate_precision"])  # nothing blocked
    assert it["candidate_fpr"] == 0.0


def test_slice_metrics_without_a_slice_is_one_all_row():
    out = slice_metrics(_prepared_hand_table(), None)
    assert len(out) == 1
    r = out.iloc[0]
    assert (r["slice_type"], r["slice"]) == ("all", "all")
    assert (r["transactions"], r["labelled"], r["frauds"]) == (11, 9, 3)
    # frauds: weights 1 (both), 4 (candidate), 1 (incumbent) -> 6
    assert r["incumbent_recall"] == pytest.approx(2 / 6)
    assert r["candidate_recall"] == pytest.approx(5 / 6)
    # legitimate weights 1 + 2 + 1 + 1 + 5 + 1 = 11
    assert r["incumbent_fpr"] == pytest.approx((1 + 5) / 11)
    assert r["candidate_fpr"] == pytest.approx((1 + 5) / 11)
    assert r["candidate_action_rate"] == pytest.approx(6 / 11)
    assert (r["candidate_only_actions"], r["incumbent_only_actions"]) == (3, 2)


def _random_scored(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.12).astype(float)
    explored = rng.random(n) < 0.1
    labelled = rng.random(n) < 0.75
    df = pd.DataFrame({
        "merchant_id": rng.choice(["M1", "M2", "M3", "M4"], n),
        "merchant_country": rng.choice(["FR", "DE", "US"], n),
        "card_id": rng.integers(0, n // 2, n),
        "amount": np.round(rng.gamma(2.0, 40.0, n), 2),
        "label": np.where(labelled, label, np.nan),
        "weight": np.where(labelled, np.where(explored, 1 / 0.05, 1.0), np.nan),
        "incumbent_score": np.clip(rng.normal(0.3 + 0.25 * label, 0.15), 0, 1),
        "candidate_score": np.clip(rng.normal(0.3 + 0.35 * label, 0.15), 0, 1),
    })
    return df


@pytest.mark.parametrize("seed", [3, 4])
def test_weighted_rates_match_sklearn_with_sample_weight(seed):
    df = _random_scored(seed)
    inc_t, cand_t = 0.45, 0.5
    p = prepare(df, np.full(len(df), inc_t), np.full(len(df), cand_t))
    for by in (None, "merchant_country"):
        out = slice_metrics(p, by)
        groups = [("all", df)] if by is None else list(df.groupby(by))
        for name, g in groups:
            r = out[out["slice"] == str(name)].iloc[0]
            lab = g[g["label"].notna()]
            y, w = lab["label"].astype(int), lab["weight"]
            for model, t in (("incumbent", inc_t), ("candidate", cand_t)):
                pred = (lab[f"{model}_score"] >= t).astype(int)
                tn, fp, _fn, _tp = confusion_matrix(y, pred, sample_weight=w, labels=[0, 1]).ravel()
                assert r[f"{model}_recall"] == pytest.approx(recall_score(y, pred, sample_weight=w))
                assert r[f"{model}_precision"] == pytest.approx(
                    precision_score(y, pred, sample_weight=w, zero_division=np.nan))
                assert r[f"{model}_fpr"] == pytest.approx(fp / (fp + tn))
                assert r[f"{model}_action_rate"] == pytest.approx((g[f"{model}_score"] >= t).mean())
            assert r["transactions"] == len(g)
            assert r["labelled"] == len(lab)
            assert r["frauds"] == int(y.sum())


# --------------------------------------------------------------------------------------------------
# ranking_metrics against hand-rolled weighted ROC-AUC and average precision
# --------------------------------------------------------------------------------------------------

def _weighted_auc(y, s, w):
    pos, neg = y == 1, y == 0
    sp, wp, sn, wn = s[pos], w[pos], s[neg], w[neg]
    gt = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])
    return float((wp[:, None] * wn[None, :] * gt).sum() / (wp.sum() * wn.sum()))


def _weighted_ap(y, s, w):
    """Average precision as a step sum over distinct thresholds, highest first: sum (R_k - R_{k-1}) P_k."""
    total_pos = (w * (y == 1)).sum()
    ap, prev_r = 0.0, 0.0
    for t in np.sort(np.unique(s))[::-1]:
        sel = s >= t
        tp = (w * (y == 1) * sel).sum()
        fp = (w * (y == 0) * sel).sum()
        r = tp / total_pos
        ap += (r - prev_r) * (tp / (tp + fp))
        prev_r = r
    return float(ap)


def test_ranking_metrics_match_hand_rolled_weighted_auc_and_ap():
    df = _random_scored(5, n=250)
    df["incumbent_score"] = df["incumbent_score"].round(2)  # ties, to exercise the half-credit rule
    # unlabelled rows must not count: give them scores that would wreck both metrics if they did
    df.loc[df["label"].isna(), ["incumbent_score", "candidate_score"]] = 0.999
    p = prepare(df, np.full(len(df), 0.5), np.full(len(df), 0.5))
    got = ranking_metrics(p)
    lab = df[df["label"].notna()]
    y, w = lab["label"].to_numpy().astype(int), lab["weight"].to_numpy()
    for m in ("incumbent", "candidate"):
        s = lab[f"{m}_score"].to_numpy()
        assert got[f"{m}_roc_auc"] == pytest.approx(_weighted_auc(y, s, w))
        assert got[f"{m}_pr_auc"] == pytest.approx(_weighted_ap(y, s, w))
    assert got["candidate_roc_auc"] > got["incumbent_roc_auc"]  # the candidate separates better by design


def test_ranking_metrics_are_nan_with_one_class():
    df = _hand_table()
    df["label"] = df["label"].where(df["label"].isna(), 0.0)
    p = prepare(df, np.full(len(df), 0.5), np.full(len(df), 0.5))
    got = ranking_metrics(p)
    assert all(np.isnan(v) for v in got.values())
    assert set(got) == {"incumbent_roc_auc", "incumbent_pr_auc", "candidate_roc_auc", "candidate_pr_auc"}


# --------------------------------------------------------------------------------------------------
# the paired, card-resampled bootstrap of the recall difference (analysis.stats.slice_intervals)
# --------------------------------------------------------------------------------------------------

def paired_bootstrap_recall_diff(p: pd.DataFrame, n_boot: int = 400, seed: int = 0) -> dict:
    """The all-traffic IPW recall difference and its interval, as the evaluation reports it."""
    from analysis.stats import slice_intervals

    res = slice_intervals(p["label"], p["weight"], p["amount"],
                          {"incumbent": p["incumbent_action"], "candidate": p["candidate_action"]},
                          {"all": np.full(len(p), "all")}, p["card_id"], baseline="incumbent", n_boot=n_boot,
                          seed=seed)
    row = res[(res.metric == "recall") & (res.estimator == "ipw") & (res.model == "candidate-incumbent")].iloc[0]
    return {"diff": float(row.estimate), "lo": float(row.lo), "hi": float(row.hi), "n_boot": n_boot}


def _frauds(card_id, inc_caught, cand_caught, weight=None) -> pd.DataFrame:
    """Prepared frame of fraud rows with the given decisions (threshold 0.5 on 0/1 scores)."""
    n = len(card_id)
    df = pd.DataFrame({
        "card_id": np.asarray(card_id),
        "label": np.ones(n),
        "weight": np.ones(n) if weight is None else np.asarray(weight, dtype=float),
        "incumbent_score": np.asarray(inc_caught, dtype=float),
        "candidate_score": np.asarray(cand_caught, dtype=float),
        "amount": np.ones(n),
    })
    return prepare(df, np.full(n, 0.5), np.full(n, 0.5))


def test_bootstrap_identical_models_give_zero_difference():
    rng = np.random.default_rng(0)
    caught = rng.random(200) < 0.5
    p = _frauds(rng.integers(0, 80, 200), caught, caught)
    r = paired_bootstrap_recall_diff(p, n_boot=300, seed=1)
    assert r["diff"] == 0.0
    assert r["lo"] <= 0.0 <= r["hi"]
    assert r["lo"] == r["hi"] == 0.0  # paired: every replicate sees the same decisions for both models
    assert r["n_boot"] == 300


def test_bootstrap_clearly_better_candidate_has_interval_above_zero():
    rng = np.random.default_rng(1)
    n = 200
    inc = rng.random(n) < 0.4
    cand = inc | (rng.random(n) < 0.5)  # catches everything the incumbent does, and more
    w = np.where(rng.random(n) < 0.1, 10.0, 1.0)
    p = _frauds(rng.integers(0, 120, n), inc, cand, w)
    r = paired_bootstrap_recall_diff(p, n_boot=400, seed=0)
    expected = (w * cand).sum() / w.sum() - (w * inc).sum() / w.sum()
    assert r["diff"] == pytest.approx(expected)
    assert r["lo"] > 0
    assert r["lo"] <= r["diff"] <= r["hi"]


def test_bootstrap_uses_only_labelled_frauds_and_is_reproducible():
    base = _frauds([1, 2, 3, 4], [1, 0, 1, 0], [1, 1, 1, 0])
    extra = _hand_table()  # legitimate and unlabelled rows with disagreeing decisions
    extra = prepare(extra, np.full(len(extra), 0.5), np.full(len(extra), 0.5))
    extra = extra[extra["_lab"] == 0]
    mixed = pd.concat([base, extra], ignore_index=True)
    a = paired_bootstrap_recall_diff(mixed, n_boot=200, seed=7)
    b = paired_bootstrap_recall_diff(base, n_boot=200, seed=7)
    assert a["diff"] == b["diff"] == pytest.approx(3 / 4 - 2 / 4)
    assert paired_bootstrap_recall_diff(mixed, n_boot=200, seed=7) == a  # same seed, same interval


def test_bootstrap_without_frauds_is_nan():
    p = prepare(_hand_table().assign(label=0.0, weight=1.0), np.full(11, 0.5), np.full(11, 0.5))
    r = paired_bootstrap_recall_diff(p, n_boot=50)
    assert np.isnan(r["diff"]) and np.isnan(r["lo"]) and np.isnan(r["hi"])


def test_bootstrap_resamples_cards_not_rows():
    """Same 200 fraud rows and the same 20 disagreements; clustered on 2 cards the gain is far less
    certain than spread over 20 cards. A row-level bootstrap could not tell the two apart."""
    card = np.repeat(np.arange(20), 10)
    inc = np.zeros(200, dtype=bool)
    spread = inc.copy()
    spread[::10] = True  # one extra catch on each of the 20 cards
    clustered = inc.copy()
    clustered[:20] = True  # all 20 extra catches on cards 0 and 1
    r_spread = paired_bootstrap_recall_diff(_frauds(card, inc, spread), n_boot=400, seed=0)
    r_clust = paired_bootstrap_recall_diff(_frauds(card, inc, clustered), n_boot=400, seed=0)
    assert r_spread["diff"] == r_clust["diff"] == pytest.approx(0.1)
    assert r_spread["lo"] > 0.05  # spread: every card carries the gain
    assert r_clust["lo"] < 0.05  # clustered: replicates that miss cards 0 and 1 see little or no gain
    assert (r_clust["hi"] - r_clust["lo"]) > 3 * (r_spread["hi"] - r_spread["lo"])


def test_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    """200 draws from a population with a known recall gain of 0.10 (card-clustered frauds, IPW weights);
    the 95% interval should cover 0.10 in roughly 88-99% of the draws."""
    rng = np.random.default_rng(2024)
    truth, covered, reps = 0.10, 0, 200
    for _ in range(reps):
        n_cards = 120
        sizes = rng.integers(1, 4, n_cards)  # 1-3 frauds per card
        card = np.repeat(np.arange(n_cards), sizes)
        u = np.repeat(rng.random(n_cards), sizes)  # a card's frauds are alike: both models agree on a card
        inc = u < 0.60  # incumbent recall 0.60 ...
        cand = u < 0.70  # ... candidate 0.70, on the same frauds plus more
        w = np.where(rng.random(len(card)) < 0.1, 5.0, 1.0)  # weights independent of the decisions
        r = paired_bootstrap_recall_diff(_frauds(card, inc, cand, w), n_boot=300,
                                         seed=int(rng.integers(1 << 31)))
        covered += r["lo"] <= truth <= r["hi"]
    assert 0.88 * reps <= covered <= 0.99 * reps


@pytest.mark.parametrize("seed", range(6))
def test_exact_ranking_is_scikit_learns_roc_auc_and_average_precision(seed):
    """The one-sort figures against scikit-learn's own, on weighted rows with many tied scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from analysis.metrics import exact_ranking

    rng = np.random.default_rng(seed)
    n = 5000
    y = (rng.random(n) < 0.05).astype(float)
    score = np.round(rng.random(n) * 0.6 + 0.4 * y * rng.random(n), 2 + seed % 3)  # ties at every seed
    w = np.where(rng.random(n) < 0.02, 50.0, 1.0) * rng.choice([1.0, 0.5], n)
    roc, ap = exact_ranking(y, score, w)
    assert roc == pytest.approx(roc_auc_score(y, score, sample_weight=w), rel=1e-10)
    assert ap == pytest.approx(average_precision_score(y, score, sample_weight=w), rel=1e-10)
