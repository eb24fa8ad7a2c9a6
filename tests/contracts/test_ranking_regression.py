"""contracts.ranking_regression: a slice fails only when the whole 95% interval of the candidate-minus-
incumbent ROC-AUC or PR-AUC lies below -max_drop; a fall whose interval reaches the limit is
insufficient data, as is a thin slice."""
from __future__ import annotations

import pandas as pd
import pytest

from contracts.base import AUC, FAIL, INSUFFICIENT, PASS
from contracts.ranking_regression import RankingRegression

from tidy import interval_rule


def rows(slice_, inc, cand, lo, hi, frauds=500, metric="roc_auc", slice_type="country", estimator="ipw"):
    """The tidy metrics rows of one slice: both models and their difference (as analysis.stats writes them)."""
    base = {"slice_type": slice_type, "slice": slice_, "metric": metric, "estimator": estimator,
            "transactions": 100 * frauds, "labelled": 99 * frauds, "frauds": frauds}
    return [{**base, "model": "incumbent", "estimate": inc, "lo": inc - 0.01, "hi": inc + 0.01},
            {**base, "model": "candidate", "estimate": cand, "lo": cand - 0.01, "hi": cand + 0.01},
            {**base, "model": "candidate-incumbent", "estimate": cand - inc, "lo": lo, "hi": hi}]


def contract(**kw):
    return RankingRegression(**{"name": "ranking", "kind": "ranking_regression", "metric": "roc_auc",
                                "slice": "country", "max_drop": 0.005, "min_support": 30, **kw})


def check(c, *slices):
    return {v.slice: v for v in c.check(pd.DataFrame([r for s in slices for r in s]))}


def test_a_fall_whose_whole_interval_is_below_the_limit_fails_with_the_numbers():
    v = check(contract(), rows("GB", 0.8790, 0.8638, -0.0293, -0.0066))["GB"]
    assert v.verdict == FAIL and (v.candidate_value, v.incumbent_value, v.support) == (0.8638, 0.8790, 500)
    assert v.sentence == ("GB: the candidate's ROC-AUC is 0.8638 vs 0.8790 (-0.0152, 95% CI -0.0293..-0.0066), "
                          "limit -0.0050; 500 matured frauds: the whole interval is below the limit.")


def test_a_fall_beyond_the_limit_whose_interval_reaches_it_is_insufficient_and_a_gain_passes():
    got = check(contract(), rows("GB", 0.88, 0.87, -0.03, -0.002), rows("US", 0.90, 0.93, 0.02, 0.04),
                rows("FR", 0.90, 0.897, -0.01, 0.004))
    assert got["GB"].verdict == INSUFFICIENT and "would decide it" in got["GB"].sentence
    assert got["US"].verdict == PASS
    # FR's point falls 0.003, within 0.005, but its interval reaches -0.010: not judged, never a pass
    assert got["FR"].verdict == INSUFFICIENT and "reaches both sides of the limit" in got["FR"].sentence
    assert check(contract(), rows("FR", 0.90, 0.897, -0.004, 0.002))["FR"].verdict == PASS


def test_thin_slices_and_slices_without_a_figure_are_insufficient_data():
    nan = float("nan")
    got = check(contract(), rows("IE", 0.9, 0.8, -0.2, -0.05, frauds=12), rows("LU", nan, nan, nan, nan, frauds=4))
    assert got["IE"].verdict == INSUFFICIENT and "fewer than the 30 needed" in got["IE"].sentence
    assert got["LU"].verdict == INSUFFICIENT and "no ROC-AUC to compare (4 matured frauds" in got["LU"].sentence


def test_per_slice_limits_metric_and_estimator_are_honoured():
    data = [rows("GB", 0.5, 0.45, -0.08, -0.02, metric="pr_auc"), rows("GB", 0.9, 0.95, 0.01, 0.09, metric="roc_auc"),
            rows("GB", 0.5, 0.55, 0.01, 0.09, metric="pr_auc", estimator="plain")]
    assert check(contract(metric="pr_auc"), *data)["GB"].verdict == FAIL
    assert check(contract(metric="pr_auc", limits={"GB": 0.1}), *data)["GB"].verdict == PASS
    assert check(contract(metric="pr_auc", estimator="plain"), *data)["GB"].verdict == PASS
    assert check(contract(metric="roc_auc"), *data)["GB"].verdict == PASS
    typo = check(contract(limits={"GBR": 0.01}), *data)["GBR"]
    assert typo.verdict == INSUFFICIENT and "no such country is in the judging window" in typo.sentence


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match=r"every per-slice limit must be a fraction in \[0, 1\]"):
        contract(limits={"GB": 2.0})


def test_on_a_real_evaluation_the_verdict_reads_the_bootstrapped_difference():
    import importlib.util
    from pathlib import Path

    from analysis.evaluation import evaluate

    spec = importlib.util.spec_from_file_location("synthetic_window",
                                                  Path(__file__).parents[1] / "analysis" / "synthetic_window.py")
    sw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sw)
    INC_DEFAULT, INC_PER_MERCHANT, make_scored = sw.INC_DEFAULT, sw.INC_PER_MERCHANT, sw.make_scored

    ev = evaluate(make_scored(), INC_PER_MERCHANT, INC_DEFAULT, slice_names=["country"], n_boot=200)
    (v,) = contract(slice="all", metric="pr_auc", max_drop=0.0, min_support=10).check(ev.metrics)
    d = ev.ranking_diff["pr_auc"]
    assert f"({d['diff']:+.4f}, 95% CI {d['lo']:+.4f}..{d['hi']:+.4f})" in v.sentence
    assert v.verdict == (FAIL if d["hi"] < 0 else PASS if d["lo"] >= 0 else INSUFFICIENT)
    assert (v.effect, v.effect_lo, v.effect_hi) == tuple(pytest.approx(d[k]) for k in ("diff", "lo", "hi"))
    assert contract().check(None)[0].verdict == INSUFFICIENT


@pytest.mark.parametrize("cand, lo, hi, want", [(0.93, 0.02, 0.04, PASS), (0.897, -0.01, 0.004, INSUFFICIENT),
                                                (0.8638, -0.0293, -0.0066, FAIL)])
def test_a_slice_passes_exactly_when_its_auc_difference_interval_lies_above_minus_the_limit(cand, lo, hi, want):
    inc = 0.8790
    v = check(contract(), rows("GB", inc, cand, lo, hi))["GB"]
    assert v.verdict == want == interval_rule(v)
    assert (v.effect, v.effect_lo, v.effect_hi) == (pytest.approx(cand - inc), lo, hi)
    assert f"({v.effect:+.4f}, 95% CI {v.effect_lo:+.4f}..{v.effect_hi:+.4f}), limit -0.0050" in v.sentence
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (-0.005, None, AUC)
    thin = check(contract(), rows("GB", inc, cand, lo, hi, frauds=12))["GB"]  # below min_support: never judged
    assert thin.verdict == INSUFFICIENT and (thin.effect_lo, thin.effect_hi) == (lo, hi)
