"""analysis.evaluation: thresholds fitted on one part of the window, the policy judged on the other. The
candidate is compared with the incumbent at the operating point (its threshold fitted to the incumbent's FPR
on the fitting rows) and at the policy (per-merchant suggestions, the global threshold elsewhere), on the
judging rows; counterfactual figures carry their support; Evaluation saved and loaded."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from synthetic_window import INC_DEFAULT, INC_PER_MERCHANT, make_scored

from analysis.evaluation import Evaluation, evaluate, fraud_mass, outcome_probability, pooled_slices, split_fit_judge
from analysis.metrics import slice_codes

POOLS = {("country", "actions", 100), ("country", "frauds", 30), ("all", "frauds", 30)}


def _thr(df):
    return df["merchant_id"].map(INC_PER_MERCHANT).fillna(INC_DEFAULT).to_numpy()


@pytest.fixture(scope="module")
def scored():
    df = make_scored(n=6000)
    df["day"] = pd.Timestamp("2026-03-01") + pd.to_timedelta(np.arange(len(df)) % 10, unit="D")
    return df


@pytest.fixture(scope="module")
def ev(scored):
    return evaluate(scored, INC_PER_MERCHANT, INC_DEFAULT, slice_names=["country", "merchant"], n_boot=200, pools=POOLS)


def test_the_direct_methods_support_is_counted_on_the_rows_that_fitted_its_model(scored, ev):
    fit = scored["day"] < "2026-03-06"
    explored_frauds = int(((scored["label"] == 1) & (scored["weight"] > 1) & fit).sum())
    om = ev.windows["outcome_model"]
    assert om["rows"] == "fitting" and om["explored_frauds"] == explored_frauds
    assert 0 < explored_frauds < int(((scored["label"] == 1) & (scored["weight"] > 1)).sum())  # not the whole window
    assert "fitted on the fitting rows" in om["sentence"]


def test_the_earlier_days_fit_and_the_later_days_judge(scored, ev):
    w = ev.windows
    assert w["method"] == "time" and w["fitting"] == "2026-03-01..2026-03-05" and w["judging"] == "2026-03-06..2026-03-10"
    assert (w["fitting_rows"], w["judging_rows"]) == (3000, 3000)
    assert w["judging_frauds"] == int((scored.loc[scored["day"] >= "2026-03-06", "label"] == 1).sum())
    assert w["sentence"].startswith("Thresholds fitted on 3,000 rows (2026-03-01..2026-03-05")
    assert len(ev.judging) == 3000 and (pd.to_datetime(ev.judging["day"]) >= "2026-03-06").all()


def test_a_window_of_one_day_is_split_by_card_never_the_same_card_on_both_sides():
    df = make_scored(n=2000)
    fit, w = split_fit_judge(df)
    assert w["method"] == "card" and 0.35 < fit.mean() < 0.65
    assert not set(df.loc[fit, "card_id"]) & set(df.loc[~fit, "card_id"])
    with pytest.raises(ValueError, match=r"'fit_share' parameter of split_fit_judge must be a float in \(0, 1\)"):
        split_fit_judge(df, fit_share=1.0)


def test_the_operating_point_is_fitted_on_the_fitting_rows_in_the_estimand_the_gates_judge(scored, ev):
    """The direct method: a labelled legitimate row counts 1, a censored row 1 - its fraud probability."""
    from analysis.metrics import threshold_at_fpr
    from analysis.weighting import ipw_weights

    fit = (scored["day"] < "2026-03-06").to_numpy()
    w = pd.Series(ipw_weights(scored["label"], scored["weight"]))
    outcome = outcome_probability(scored["incumbent_score"].to_numpy()[:, None], fit, scored["label"], w)
    np.testing.assert_allclose(outcome[~fit], ev.judging["outcome"])  # fitted on the fitting rows only
    f = scored[fit]
    legit = fraud_mass(f["label"], outcome[fit], legit=True)
    op = (legit * (f["incumbent_score"].to_numpy() >= _thr(f))).sum() / legit.sum()
    assert ev.operating_fpr == pytest.approx(op)
    t = ev.candidate_threshold
    assert t == threshold_at_fpr(f["candidate_score"].to_numpy(), np.zeros(len(f)), legit, op)
    cand = f["candidate_score"].to_numpy()
    assert (legit * (cand >= t)).sum() / legit.sum() <= op + 1e-12  # never above the incumbent's FPR ...
    assert (legit * (cand >= np.nextafter(t, -np.inf))).sum() / legit.sum() > op  # ... the lowest such threshold


def test_every_figure_is_judged_on_the_judging_rows(scored, ev):
    j = ev.judging
    o = ev.overall
    assert o["transactions"] == len(j) and o["frauds"] == int((j["label"] == 1).sum())
    assert o["candidate_action_rate"] == pytest.approx((j["candidate_score"] >= ev.candidate_threshold).mean())
    assert o["incumbent_action_rate"] == pytest.approx((j["incumbent_score"] >= j["incumbent_threshold"]).mean())
    lab = j["label"].notna()
    assert o["incumbent_roc_auc"] == pytest.approx(roc_auc_score(j.loc[lab, "label"], j.loc[lab, "incumbent_score"],
                                                                 sample_weight=j.loc[lab, "weight"]))


def test_the_policy_holds_block_rates_on_the_rows_that_fitted_it_but_is_judged_on_others(scored, ev):
    """Out-of-sample judgement: on the fitting rows a keep-block-rate suggestion reproduces (about) the
    incumbent's count by construction; on the judging rows the count differs by what the threshold did
    not know, which is what the gates see."""
    sug = ev.suggestions.set_index("merchant_id")
    assert sug.loc["M1", "current_threshold"] == 0.55 and np.isnan(sug.loc["M3", "current_threshold"])
    fit = scored[scored["day"] < "2026-03-06"]
    for m in ("M1", "M2", "M3"):
        g = fit[fit["merchant_id"] == m]
        inc = int((g["incumbent_score"] >= _thr(g)).sum())
        cand = int((g["candidate_score"] >= sug.loc[m, "suggested_threshold"]).sum())
        assert abs(cand - inc) <= max(3, 0.1 * inc), (m, cand, inc)
    pol = ev.slices[(ev.slices["at"] == "policy") & (ev.slices["slice_type"] == "merchant")].set_index("slice")
    j = ev.judging
    for m in ("M1", "M2", "M3"):
        g = j[j["merchant_id"] == m]
        assert pol.loc[m, "candidate_action_rate"] == pytest.approx((g["candidate_score"] >= sug.loc[m, "suggested_threshold"]).mean())


def test_merchants_never_seen_in_the_fitting_rows_get_the_global_threshold(scored):
    df = scored.copy()
    late = df["day"] >= "2026-03-06"
    df.loc[late & (df["merchant_id"] == "M4"), "merchant_id"] = "NEW"
    ev = evaluate(df, INC_PER_MERCHANT, INC_DEFAULT, slice_names=["merchant"], n_boot=50, pools=set(), ranking=False)
    assert "NEW" not in set(ev.suggestions["merchant_id"])
    pol = ev.slices[(ev.slices["at"] == "policy") & (ev.slices["slice_type"] == "merchant")].set_index("slice")
    g = ev.judging[ev.judging["merchant_id"] == "NEW"]
    assert pol.loc["NEW", "candidate_action_rate"] == pytest.approx((g["candidate_score"] >= ev.candidate_threshold).mean())


def test_the_tidy_metrics_carry_every_estimator_model_difference_and_their_support(ev):
    m = ev.metrics
    assert set(m.model) == {"incumbent", "candidate", "policy", "candidate-incumbent", "policy-incumbent",
                            "candidate/incumbent", "policy/incumbent",
                            "anchor", "policy-anchor", "policy/anchor"}  # a drift budget is in force
    assert set(m.loc[m.model.str.contains("anchor"), "slice_type"]) == {"all"}
    assert set(m.estimator) == {"all", "ipw", "plain", "dm", "dr"}
    assert set(m.loc[m.estimator == "dr", "slice_type"]) == {"all"}  # doubly robust: all traffic only
    assert {"all", "country", "merchant", "country|actions>=100", "country|frauds>=30"} <= set(m.slice_type)
    overall = m[(m.slice_type == "all") & (m.metric == "recall") & (m.estimator == "ipw")].set_index("model")
    assert overall.loc["candidate", "estimate"] == pytest.approx(ev.overall["candidate_recall"])
    d = overall.loc["candidate-incumbent"]
    assert (d.estimate, d.lo, d.hi) == pytest.approx((ev.recall_diff["diff"], ev.recall_diff["lo"], ev.recall_diff["hi"]))
    j = ev.judging
    row = m[(m.slice_type == "all") & (m.metric == "recall") & (m.model == "incumbent")].iloc[0]
    explored = j["label"].notna() & (j["weight"] > 1)
    assert row.explored == int(explored.sum()) and row.explored_frauds == int((explored & (j["label"] == 1)).sum())
    assert row.censored == int(j["label"].isna().sum())
    w = j.loc[j["label"] == 1, "weight"].to_numpy()
    assert row.ess_frauds == pytest.approx(w.sum() ** 2 / (w ** 2).sum())


def test_without_an_anchor_of_its_own_the_drift_anchor_is_the_incumbent(ev):
    """No release shipped in the window (no anchor columns): the policy against the anchor is the policy
    against the incumbent, on every metric and estimator, point for point."""
    m = ev.metrics[ev.metrics.slice_type == "all"]
    for (metric, est), g in m.groupby(["metric", "estimator"]):
        by = g.set_index("model")["estimate"]
        if "anchor" not in by:
            continue
        assert by["anchor"] == pytest.approx(by["incumbent"], nan_ok=True), (metric, est)
        assert by["policy-anchor"] == pytest.approx(by["policy-incumbent"], nan_ok=True), (metric, est)


def test_an_anchor_that_declined_fewer_is_judged_on_the_same_rows(ev):
    """The anchor's own scores and thresholds (production before a window's releases): its FPR is what its
    own decisions give on the judging rows, and the policy's drift over it is the paired difference."""
    from analysis.evaluation import judge_policy

    j = ev.judging.copy()
    j["anchor_score"] = j["incumbent_score"]
    j["anchor_threshold"] = j["incumbent_threshold"] * 1.3  # declined fewer: a higher threshold everywhere
    per = ev.suggestions.set_index("merchant_id")["suggested_threshold"]
    judged = judge_policy(j, ev.candidate_threshold, ev.candidate_threshold, per, n_boot=50, pools=set(),
                          ranking=False, anchored=True, windows=ev.windows)
    m = judged.metrics
    ar = m[(m.slice_type == "all") & (m.metric == "action_rate")].set_index("model")
    acted = (j["anchor_score"] >= j["anchor_threshold"]).mean()
    assert ar.loc["anchor", "estimate"] == pytest.approx(acted)
    assert ar.loc["anchor", "estimate"] < ar.loc["incumbent", "estimate"]
    assert ar.loc["policy-anchor", "estimate"] == pytest.approx(ar.loc["policy", "estimate"] - acted)
    assert ar.loc["policy-anchor", "lo"] <= ar.loc["policy-anchor", "estimate"] <= ar.loc["policy-anchor", "hi"]
    plain = m[(m.slice_type == "all") & (m.metric == "fpr") & (m.estimator == "plain")].set_index("model")
    legit = j["label"] == 0
    assert plain.loc["anchor", "estimate"] == pytest.approx(
        (j.loc[legit, "anchor_score"] >= j.loc[legit, "anchor_threshold"]).mean())


def test_the_direct_method_counts_censored_rows_with_their_fraud_probability(ev):
    j = ev.judging
    m = ev.metrics
    dm = m[(m.slice_type == "all") & (m.metric == "recall") & (m.estimator == "dm")].set_index("model")
    mass = fraud_mass(j["label"], j["outcome"])
    inc = (j["incumbent_score"] >= j["incumbent_threshold"]).to_numpy()
    assert dm.loc["incumbent", "estimate"] == pytest.approx((mass * inc).sum() / mass.sum())


def test_pooled_slices_keep_big_slices_and_name_the_members_of_the_pool():
    labels = pd.Series(["FR"] * 50 + ["DE"] * 30 + ["LU"] * 3 + ["MT"] * 2)
    codes, names, members = pooled_slices(*slice_codes(labels), np.ones(len(labels)), 10, "country")
    got = names[codes]
    assert sorted(set(got)) == ["DE", "FR", "other countries"] and members == {"other countries": "2: LU, MT"}
    assert list(got) == ["FR"] * 50 + ["DE"] * 30 + ["other countries"] * 5
    codes, names, members = pooled_slices(*slice_codes(labels), np.ones(len(labels)), 1, "country")
    assert members == {} and list(names[codes]) == list(labels)


def test_evaluation_round_trips_through_its_folder(ev, tmp_path):
    folder = tmp_path / "rel"
    ev.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["evaluation.json", "judging.parquet", "metrics.parquet",
                                                        "slices.parquet", "suggestions.parquet"]
    json.loads((folder / "evaluation.json").read_text())  # plain JSON
    back = Evaluation.load(folder)
    assert (back.operating_fpr, back.candidate_threshold, back.recall_diff, back.windows, back.policy_source) == (
        ev.operating_fpr, ev.candidate_threshold, ev.recall_diff, json.loads(json.dumps(ev.windows)), "suggested")
    pd.testing.assert_frame_equal(back.metrics, ev.metrics)
    pd.testing.assert_frame_equal(back.judging, ev.judging, check_dtype=False)
    pd.testing.assert_frame_equal(back.slices, ev.slices, check_dtype=False)
    pd.testing.assert_frame_equal(back.suggestions, ev.suggestions, check_dtype=False)


def test_merchant_slices_carry_action_rates_only_unless_a_contract_reads_more_there(scored, ev):
    """The contracts in force read merchants' block rates only: that is what the thousands of merchant
    slices get (the slices table keeps every metric). A contract reading merchant recall brings it back."""
    from analysis.evaluation import judge_policy
    from contracts.evaluator import ContractSet

    m = ev.metrics
    merchant = m[m.slice_type == "merchant"]
    assert set(merchant.estimator) == {"all"} and set(merchant.metric) == {"action_rate"}
    assert {"ipw", "plain", "dm"} <= set(m.loc[m.slice_type == "country", "estimator"])
    assert {"candidate_recall", "candidate_fpr"} <= set(ev.slices.columns)  # every merchant's, in the table
    # money with intervals on all traffic (the report's); each slice's money stays in the slices table
    assert set(m.loc[m.metric.isin(["blocked_fraud_amount", "false_decline_amount"]), "slice_type"]) == {"all"}
    assert set(m.loc[m.metric == "blocked_fraud_amount", "estimator"]) == {"ipw", "plain", "dm", "dr"}
    country = ev.slices[(ev.slices["at"] == "policy") & (ev.slices["slice_type"] == "country")]
    assert country["candidate_blocked_fraud_amount"].notna().all()
    cs = ContractSet.model_validate({"contracts": [
        {"name": "merchant_recall", "kind": "slice_recall_regression", "slice": "merchant", "min_support": 1,
         "max_drop": 0.1},
        {"name": "shift", "kind": "action_rate_shift", "slice": "country", "max_relative_shift": 0.25}]})
    assert cs.detailed_slices() == {"merchant"}
    judged = judge_policy(ev.judging, ev.candidate_threshold, ev.candidate_threshold, None, n_boot=50,
                          slice_names=["country", "merchant"], pools=POOLS, detailed=cs.detailed_slices())
    jm = judged.metrics
    assert {"ipw", "plain", "dm"} <= set(jm.loc[jm.slice_type == "merchant", "estimator"])
    assert set(jm.loc[jm.slice_type == "merchant", "metric"]) >= {"recall", "fpr", "action_rate"}
