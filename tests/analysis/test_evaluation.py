"""analysis.evaluation: the candidate compared with the incumbent at the incumbent's operating point and
at the suggested per-merchant thresholds; Evaluation saved and loaded."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from synthetic_window import INC_DEFAULT, INC_PER_MERCHANT, make_scored

from analysis.evaluation import Evaluation, evaluate


def _thr(df):
    return df["merchant_id"].map(INC_PER_MERCHANT).fillna(INC_DEFAULT).to_numpy()


def _wfpr(df, score_col, thr):
    lab = df["label"].notna().to_numpy()
    neg = lab & (df["label"].to_numpy() == 0)
    w = df["weight"].to_numpy()
    blocked = df[score_col].to_numpy() >= thr
    return (w[neg] * blocked[neg]).sum() / w[neg].sum()


def _wrecall(df, score_col, thr):
    pos = df["label"].to_numpy() == 1
    w = df["weight"].to_numpy()
    blocked = df[score_col].to_numpy() >= thr
    return (w[pos] * blocked[pos]).sum() / w[pos].sum()


@pytest.fixture(scope="module")
def scored():
    return make_scored()


@pytest.fixture(scope="module")
def ev(scored):
    return evaluate(scored, INC_PER_MERCHANT, INC_DEFAULT, slice_names=["country", "merchant"], n_boot=200)


def test_operating_point_is_the_incumbent_fpr_and_the_candidate_never_exceeds_it(scored, ev):
    op = _wfpr(scored, "incumbent_score", _thr(scored))
    assert ev.operating_fpr == pytest.approx(op)
    t = ev.candidate_threshold
    assert _wfpr(scored, "candidate_score", t) <= op + 1e-12
    assert _wfpr(scored, "candidate_score", np.nextafter(t, -np.inf)) > op  # lowest such threshold
    assert ev.overall["incumbent_fpr"] == pytest.approx(op)
    assert ev.overall["candidate_fpr"] <= ev.overall["incumbent_fpr"] + 1e-12


def test_overall_metrics_at_the_operating_point(scored, ev):
    o = ev.overall
    assert o["slice_type"] == "all" and o["slice"] == "all"
    assert o["transactions"] == len(scored)
    assert o["labelled"] == scored["label"].notna().sum()
    assert o["frauds"] == (scored["label"] == 1).sum()
    assert o["incumbent_recall"] == pytest.approx(_wrecall(scored, "incumbent_score", _thr(scored)))
    assert o["candidate_recall"] == pytest.approx(_wrecall(scored, "candidate_score", ev.candidate_threshold))
    assert o["candidate_action_rate"] == pytest.approx((scored["candidate_score"] >= ev.candidate_threshold).mean())
    assert o["candidate_recall"] > o["incumbent_recall"]  # the candidate separates better by construction
    assert 0.5 < o["incumbent_roc_auc"] < o["candidate_roc_auc"] <= 1.0
    assert all(isinstance(v, (float, str)) for v in o.values())
    # the bootstrap's point estimate is the same recall gain
    assert ev.recall_diff["diff"] == pytest.approx(o["candidate_recall"] - o["incumbent_recall"])
    assert ev.recall_diff["lo"] <= ev.recall_diff["diff"] <= ev.recall_diff["hi"]
    assert ev.recall_diff["n_boot"] == 200


def test_slices_at_both_points_named_as_in_contracts(scored, ev):
    s = ev.slices
    assert set(s["at"]) == {"operating_point", "suggested"}
    for at in ("operating_point", "suggested"):
        part = s[s["at"] == at]
        assert sorted(part["slice_type"].unique()) == ["all", "country", "merchant"]
        assert sorted(part.loc[part["slice_type"] == "country", "slice"]) == ["DE", "FR"]
        assert sorted(part.loc[part["slice_type"] == "merchant", "slice"]) == ["M1", "M2", "M3", "M4"]
    # at the operating point the candidate uses one global threshold: per-country action rate by hand
    op = s[(s["at"] == "operating_point") & (s["slice_type"] == "country")].set_index("slice")
    for c, g in scored.groupby("merchant_country"):
        cand_rate = (g["candidate_score"] >= ev.candidate_threshold).mean()
        assert op.loc[c, "candidate_action_rate"] == pytest.approx(cand_rate)
        assert op.loc[c, "incumbent_action_rate"] == pytest.approx((g["incumbent_score"] >= _thr(g)).mean())


def test_suggested_thresholds_keep_large_merchants_block_rates(scored, ev):
    sug = ev.suggestions.set_index("merchant_id")
    assert sug.loc["M1", "current_threshold"] == 0.55
    assert sug.loc["M2", "current_threshold"] == 0.6
    assert math.isnan(sug.loc["M3", "current_threshold"])
    assert bool(sug.loc["M4", "shrunk"]) and not sug.loc[["M1", "M2", "M3"], "shrunk"].any()
    at_sug = ev.slices[(ev.slices["at"] == "suggested") & (ev.slices["slice_type"] == "merchant")].set_index("slice")
    for m in ("M1", "M2", "M3"):
        g = scored[scored["merchant_id"] == m]
        blocks_inc = int((g["incumbent_score"] >= _thr(g)).sum())
        blocks_cand = int((g["candidate_score"] >= sug.loc[m, "suggested_threshold"]).sum())
        assert blocks_cand == blocks_inc
        assert at_sug.loc[m, "candidate_action_rate"] == pytest.approx(at_sug.loc[m, "incumbent_action_rate"])


def test_without_per_merchant_thresholds_the_default_applies_everywhere(scored):
    ev = evaluate(scored, {}, 0.5, slice_names=[], n_boot=50)
    assert ev.operating_fpr == pytest.approx(_wfpr(scored, "incumbent_score", 0.5))
    assert ev.suggestions["current_threshold"].isna().all()
    assert set(ev.slices["slice_type"]) == {"all"}


def test_evaluation_round_trips_through_its_folder(ev, tmp_path):
    folder = tmp_path / "rel"
    ev.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["evaluation.json", "metrics.parquet", "slices.parquet",
                                                        "suggestions.parquet"]
    json.loads((folder / "evaluation.json").read_text())  # plain JSON
    back = Evaluation.load(folder)
    assert back.operating_fpr == ev.operating_fpr
    assert back.candidate_threshold == ev.candidate_threshold
    assert back.recall_diff == ev.recall_diff
    pd.testing.assert_frame_equal(back.metrics, ev.metrics)
    assert back.overall.keys() == ev.overall.keys()
    for k, v in ev.overall.items():
        if isinstance(v, float):
            assert back.overall[k] == pytest.approx(v, nan_ok=True)
        else:
            assert back.overall[k] == v
    pd.testing.assert_frame_equal(back.slices, ev.slices, check_dtype=False)
    pd.testing.assert_frame_equal(back.suggestions, ev.suggestions, check_dtype=False)


def test_the_tidy_metrics_carry_an_interval_for_every_metric_model_and_difference(ev):
    m = ev.metrics
    assert set(m.model) == {"incumbent", "candidate", "suggested", "candidate-incumbent", "suggested-incumbent"}
    assert {"all", "country", "merchant"} <= set(m.slice_type)
    overall = m[(m.slice_type == "all") & (m.metric == "recall") & (m.estimator == "ipw")].set_index("model")
    assert overall.loc["incumbent", "estimate"] == pytest.approx(ev.overall["incumbent_recall"])
    assert overall.loc["candidate", "estimate"] == pytest.approx(ev.overall["candidate_recall"])
    d = overall.loc["candidate-incumbent"]
    assert (d.estimate, d.lo, d.hi) == pytest.approx((ev.recall_diff["diff"], ev.recall_diff["lo"], ev.recall_diff["hi"]))
    rates = m[(m.slice_type == "country") & (m.metric == "action_rate") & (m.model == "candidate")].set_index("slice")
    op = ev.slices[(ev.slices["at"] == "operating_point") & (ev.slices.slice_type == "country")].set_index("slice")
    for country, row in rates.iterrows():
        assert row.estimate == pytest.approx(op.loc[country, "candidate_action_rate"])
        assert row.transactions == op.loc[country, "transactions"]


def test_ranking_metrics_have_intervals_and_agree_with_the_exact_overall_figures(ev, tmp_path):
    m = ev.metrics
    rank = m[(m.slice_type == "all") & m.metric.isin(["roc_auc", "pr_auc"]) & (m.estimator == "ipw")]
    assert set(rank.model) == {"incumbent", "candidate", "candidate-incumbent"}  # thresholds don't move ranking
    for metric in ("roc_auc", "pr_auc"):
        r = rank[rank.metric == metric].set_index("model")
        for model in ("incumbent", "candidate"):
            # binned scores (65,536 bins for a window this small) against scikit-learn's figure on raw scores
            assert r.loc[model, "estimate"] == pytest.approx(ev.overall[f"{model}_{metric}"], abs=5e-4)
            assert r.loc[model, "lo"] <= r.loc[model, "estimate"] <= r.loc[model, "hi"]
        d = r.loc["candidate-incumbent"]
        assert ev.ranking_diff[metric] == pytest.approx({"diff": d.estimate, "lo": d.lo, "hi": d.hi, "n_boot": 200})
    ev.save(tmp_path)
    assert Evaluation.load(tmp_path).ranking_diff == ev.ranking_diff
