"""contracts.slice_recall_regression: a slice fails when the whole interval of its recall change lies below
-max_drop, passes when the whole interval lies above it; thin slices are pooled; a slice without enough
counterfactual support is insufficient data with the plain figure beside it, unless the plain figure itself
shows a fall on real frauds."""
from __future__ import annotations

import re

import pytest

from contracts.base import FAIL, INSUFFICIENT, PASS, POINTS
from contracts.slice_recall_regression import SliceRecallRegression

from tidy import interval_rule, slice_rows, table

T = "country|frauds>=30"
NAN = float("nan")


def contract(**kw):
    return SliceRecallRegression(**{"name": "country_recall", "kind": "slice_recall_regression", "slice": "country",
                                    "max_drop": 0.05, "min_support": 30, **kw})


def recall(slice_, inc, d, lo, hi, slice_type=T, estimator="dm", **kw):
    return slice_rows(slice_type, slice_, "recall", estimator,
                      {"incumbent": inc, "candidate": inc + d, "candidate-incumbent": (d, lo, hi)}, **kw)


def window(explored_frauds=25, censored=300, estimator="dm"):
    return recall("all", 0.4, 0.02, 0.0, 0.04, slice_type="all", estimator=estimator,
                  explored_frauds=explored_frauds, censored=censored)


def check(c, *groups):
    return {v.slice: v for v in c.check(table(*groups))}


def test_a_fall_whose_whole_interval_is_below_the_limit_fails_with_the_numbers():
    v = check(contract(), window(), recall("GB", 0.552, -0.142, -0.210, -0.074, frauds=87, explored_frauds=12,
                                           ess_frauds=41.0))["GB"]
    assert v.verdict == FAIL and v.stops
    assert v.sentence == ("GB: the candidate catches 41.0% of fraud vs 55.2% (-14.2 pts, 95% CI -21.0..-7.4), limit "
                          "-5.0 pts, 87 matured frauds (12 explored, ESS 41): the whole interval is below the limit.")


def test_a_gain_passes_and_a_fall_whose_interval_reaches_the_limit_is_insufficient():
    got = check(contract(), window(), recall("US", 0.4, 0.03, 0.01, 0.05), recall("FR", 0.4, -0.02, -0.06, 0.01))
    assert got["US"].verdict == PASS
    assert got["FR"].verdict == INSUFFICIENT and got["FR"].stops and "would decide it" in got["FR"].sentence
    assert not check(contract(on_insufficient="warn"), window(), recall("FR", 0.4, -0.02, -0.06, 0.01))["FR"].stops


def test_the_direct_method_needs_enough_explored_frauds_in_the_window_and_plain_shows_a_real_fall():
    rows = [recall("DE", 0.4, 0.0, -0.02, 0.02, explored_frauds=0),  # a slice's own explored frauds do not matter
            recall("DE", 0.1, -0.09, -0.12, -0.07, estimator="plain"),
            recall("IT", 0.4, 0.0, -0.02, 0.02), recall("IT", 0.1, 0.01, -0.01, 0.03, estimator="plain")]
    got = check(contract(), window(), *rows)
    assert got["DE"].verdict == PASS and got["IT"].verdict == PASS
    got = check(contract(), window(explored_frauds=0), *rows)  # the outcome model rests on nothing
    assert got["IT"].verdict == INSUFFICIENT and "biased by censoring" in got["IT"].sentence
    # on the labelled frauds alone DE falls 9 points, wholly beyond the limit: a fall on real frauds fails
    assert got["DE"].verdict == FAIL and "a fall beyond the limit on real frauds" in got["DE"].sentence
    # with nothing censored the labelled rows are everything
    assert check(contract(), window(explored_frauds=0, censored=0), *rows)["IT"].verdict == PASS


def test_the_direct_method_is_supported_by_the_rows_its_model_was_fitted_on():
    """The outcome model is fitted on the fitting rows, so its support is counted there (the evaluation
    records it in ``windows["outcome_model"]``), not on the judging rows it is applied to."""
    rows = [recall("IT", 0.4, 0.0, -0.02, 0.02), recall("IT", 0.1, 0.01, -0.01, 0.03, estimator="plain")]
    fitted_on = lambda n: {"outcome_model": {"explored_frauds": n, "ess_frauds": 200.0}}  # noqa: E731
    c = contract()
    # 25 explored frauds in the judging window, none where the model was fitted: the model rests on nothing
    got = {v.slice: v for v in c.check(table(window(), *rows), fitted_on(0))}
    assert got["IT"].verdict == INSUFFICIENT and "biased by censoring" in got["IT"].sentence
    # none in the judging window, 12 where the model was fitted: judged
    got = {v.slice: v for v in c.check(table(window(explored_frauds=0), *rows), fitted_on(12))}
    assert got["IT"].verdict == PASS
    # with nothing censored in the judged rows no model is needed, whatever it was fitted on
    got = {v.slice: v for v in c.check(table(window(censored=0), *rows), fitted_on(0))}
    assert got["IT"].verdict == PASS


def test_ipw_needs_explored_frauds_in_the_slice_itself():
    c = contract(estimator="ipw")
    got = check(c, window(estimator="ipw"), recall("DE", 0.4, 0.0, -0.02, 0.02, estimator="ipw", explored_frauds=1),
                recall("DE", 0.1, 0.0, -0.02, 0.02, estimator="plain"))
    assert got["DE"].verdict == INSUFFICIENT and "too few explored frauds" in got["DE"].sentence


def test_a_pooled_slice_with_a_collapse_of_its_own_still_fails():
    pooled = recall("other countries", 0.4, -0.01, -0.03, 0.01, members="2: LU, MT", frauds=60)
    own = recall("LU", 0.4, -0.35, -0.45, -0.25, slice_type="country", frauds=200)
    got = check(contract(), window(), pooled, own, recall("MT", 0.4, 0.05, -0.2, 0.3, slice_type="country", frauds=35))
    assert got["other countries"].verdict == PASS and "other countries (2: LU, MT)" in got["other countries"].sentence
    assert got["LU"].verdict == FAIL and "judged on its own" in got["LU"].sentence
    assert "MT" not in got or not got["MT"].stops
    # a member with fewer than half the pool's support (30 / 2 = 15 frauds here) is left to the pool
    thin = recall("LU", 0.4, -0.35, -0.45, -0.25, slice_type="country", frauds=14)
    assert "LU" not in check(contract(), window(), pooled, thin)


def test_per_slice_limits_nan_figures_and_no_slices():
    got = check(contract(limits={"US": 0.01, "USA": 0.01}), window(), recall("US", 0.4, -0.02, -0.035, -0.015, frauds=1000),
                recall("LU", NAN, NAN, NAN, NAN))
    assert got["US"].verdict == FAIL and got["US"].limit_value == 0.01
    assert got["LU"].verdict == INSUFFICIENT and got["LU"].stops and "no recall could be measured" in got["LU"].sentence
    assert got["USA"].verdict == INSUFFICIENT and "check its spelling" in got["USA"].sentence
    (v,) = contract(slice="merchant_size").check(table(window()))
    assert v.verdict == INSUFFICIENT and "nothing to judge" in v.sentence


def test_one_fraud_never_decides_a_slice():
    """Both models catching the single fraud of a slice gives a zero-width bootstrap interval; one more
    fraud could always go either way, so no interval is narrower than that."""
    v = check(contract(), window(), recall("LU", 0.0, 1.0, 1.0, 1.0, frauds=1))["LU"]
    assert v.verdict == INSUFFICIENT


def test_limits_must_be_fractions():
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\]"):
        contract(limits={"GB": 5})


# ---- the effect a report draws: the recall change in points against -max_drop


def printed_points(sentence: str, nth: int = 0) -> tuple[float, float, float]:
    """(point, lo, hi) in points of the ``nth`` figure a sentence prints: "(-14.2 pts, 95% CI -21.0..-7.4)"."""
    m = re.findall(r"\(([+-][\d.]+) pts, (?:[\d.]+% )?CI ([+-][\d.]+)\.\.([+-][\d.]+)\)", sentence)[nth]
    return tuple(float(x) for x in m)


@pytest.mark.parametrize("slice_, d, lo, hi, want", [
    ("US", 0.03, 0.01, 0.05, PASS),  # a gain: wholly above -5 pts
    ("FR", -0.02, -0.06, 0.01, INSUFFICIENT),  # reaches below -5 pts
    ("GB", -0.142, -0.210, -0.074, FAIL),  # wholly below
])
def test_a_slice_passes_exactly_when_its_recall_change_interval_lies_above_minus_the_limit(slice_, d, lo, hi, want):
    v = check(contract(), window(), recall(slice_, 0.5, d, lo, hi, frauds=87))[slice_]
    assert v.verdict == want == interval_rule(v)
    # the interval judged is at least one more disagreement among 87 frauds wide (1.96 / 87 = 2.3 pts each side)
    lo, hi = min(lo, d - 1.96 / 87), max(hi, d + 1.96 / 87)
    assert (v.effect, v.effect_lo, v.effect_hi) == (pytest.approx(d), pytest.approx(lo, abs=1e-4),
                                                    pytest.approx(hi, abs=1e-4))
    assert printed_points(v.sentence) == pytest.approx((100 * d, 100 * v.effect_lo, 100 * v.effect_hi), abs=0.051)
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (pytest.approx(-0.05), None, POINTS)


def test_a_fall_decided_on_the_labelled_rows_carries_their_interval_and_a_per_slice_limit_its_region():
    rows = [recall("DE", 0.4, 0.0, -0.02, 0.02), recall("DE", 0.1, -0.09, -0.12, -0.07, estimator="plain"),
            recall("IT", 0.4, 0.0, -0.02, 0.02), recall("IT", 0.1, 0.01, -0.01, 0.03, estimator="plain")]
    got = check(contract(limits={"DE": 0.02}), window(explored_frauds=0), *rows)
    de, it = got["DE"], got["IT"]
    # DE failed on the plain figure, the sentence's second: that is the interval stored
    assert de.verdict == FAIL == interval_rule(de)
    assert (de.effect, de.effect_lo, de.effect_hi) == (pytest.approx(-0.09), pytest.approx(-0.12), pytest.approx(-0.07))
    assert printed_points(de.sentence, 1) == pytest.approx((-9.0, -12.0, -7.0))
    assert (de.allowed_lo, de.allowed_hi) == (pytest.approx(-0.02), None)
    # IT was not judged: the counterfactual figure it computed is kept, inside the region though unjudged
    assert it.verdict == INSUFFICIENT and interval_rule(it) == PASS
    assert (it.effect_lo, it.effect_hi, it.allowed_lo) == (pytest.approx(-0.02), pytest.approx(0.02),
                                                           pytest.approx(-0.05))
