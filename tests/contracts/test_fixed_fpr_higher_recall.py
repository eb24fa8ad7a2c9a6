"""contracts.fixed_fpr_higher_recall: at the operating point (the candidate's threshold fitted to the
incumbent's FPR on fitting rows) the recall gain's interval must lie above the minimum gain; the policy
that would go live may not raise FPR beyond the tolerance. Point and interval from the same estimator."""
from __future__ import annotations

import re

import pytest

from contracts.base import FAIL, INSUFFICIENT, PASS, POINTS
from contracts.fixed_fpr_higher_recall import FixedFprHigherRecall

from tidy import interval_rule, slice_rows, table

NAN = float("nan")


def contract(**kw) -> FixedFprHigherRecall:
    return FixedFprHigherRecall(**{"name": "fixed_fpr", "kind": "fixed_fpr_higher_recall", "fpr_tolerance": 0.0002,
                                   "min_support": 30, **kw})


def metrics(gain=(0.05, 0.02, 0.08), fpr=(0.0, -0.0001, 0.0001), policy_fpr=(-0.0005, -0.0008, -0.0002),
            frauds=500, estimator="dm", explored_frauds=25, ess=80.0, censored=300, plain_gain=0.03):
    inc_r, inc_f = 0.40, 0.004
    rec = {"incumbent": inc_r, "candidate": inc_r + gain[0], "candidate-incumbent": gain,
           "policy": inc_r + 0.02, "policy-incumbent": 0.02}
    f = {"incumbent": inc_f, "candidate": inc_f + fpr[0], "candidate-incumbent": fpr,
         "policy": inc_f + policy_fpr[0], "policy-incumbent": policy_fpr}
    kw = dict(frauds=frauds, explored_frauds=explored_frauds, ess_frauds=ess, censored=censored)
    return table(slice_rows("all", "all", "recall", estimator, rec, **kw),
                 slice_rows("all", "all", "fpr", estimator, f, **kw),
                 slice_rows("all", "all", "recall", "plain",
                            {"incumbent": 0.1, "candidate": 0.1 + plain_gain, "candidate-incumbent": plain_gain}, **kw))


def verdicts(c, m, windows=None):
    return {v.slice: v for v in c.check(m, windows)}


def test_a_gain_whose_whole_interval_is_above_zero_passes_and_the_sentence_says_which_rows_judged():
    got = verdicts(contract(), metrics(), {"fitting": "2026-03-01..2026-03-10", "judging": "2026-03-11..2026-03-21"})
    op = got["operating point"]
    assert op.verdict == PASS and got["policy"].verdict == PASS
    assert op.sentence == ("At the incumbent's FPR (the candidate's threshold fitted on 2026-03-01..2026-03-10), on 500 "
                           "matured frauds (25 explored, ESS 80) judged 2026-03-11..2026-03-21, where the incumbent's "
                           "FPR is 0.40%: the candidate catches 45.0% vs 40.0% (+5.0 pts, 95% CI +2.0..+8.0) at FPR "
                           "0.40% (+0.00 pts, CI -0.01..+0.01).")
    assert (op.candidate_value, op.incumbent_value, op.support) == (pytest.approx(0.45), 0.40, 500)


def test_a_neutral_model_is_no_gain_shown_and_stops():
    op = verdicts(contract(), metrics(gain=(0.001, -0.01, 0.012)))["operating point"]
    assert op.verdict == INSUFFICIENT and op.stops and "No gain shown" in op.sentence
    assert "would decide it" in op.sentence


def test_a_loss_whose_whole_interval_is_below_fails():
    op = verdicts(contract(), metrics(gain=(-0.04, -0.07, -0.01)))["operating point"]
    assert op.verdict == FAIL and "It must catch more: the whole interval is below +0.0 pts." in op.sentence


def test_a_minimum_gain_moves_the_floor():
    assert verdicts(contract(min_recall_gain=0.03), metrics())["operating point"].verdict == INSUFFICIENT
    assert verdicts(contract(min_recall_gain=0.01), metrics())["operating point"].verdict == PASS


def test_without_the_interval_requirement_the_point_decides_but_a_missing_gain_never_passes():
    c = contract(require_ci_above_zero=False)
    assert verdicts(c, metrics(gain=(0.01, -0.02, 0.04)))["operating point"].verdict == PASS
    op = verdicts(c, metrics(gain=(NAN, NAN, NAN)))["operating point"]
    assert op.verdict == INSUFFICIENT and op.stops and "never a pass" in op.sentence


def test_an_fpr_wholly_above_the_tolerance_fails_whatever_the_recall():
    op = verdicts(contract(), metrics(fpr=(0.002, 0.0015, 0.0025)))["operating point"]
    assert op.verdict == FAIL and "FPR is never traded for recall" in op.sentence


def test_the_relative_tolerance():
    # incumbent FPR 0.40%: 5% of it is 0.02 pts, as the absolute tolerance; 50% of it is 0.20 pts
    m = metrics(policy_fpr=(0.0015, 0.0010, 0.0018))
    assert verdicts(contract(), m)["policy"].verdict == FAIL
    assert verdicts(contract(fpr_tolerance_relative=0.5), m)["policy"].verdict == PASS


def test_a_policy_that_trades_fpr_for_recall_fails():
    v = verdicts(contract(), metrics(policy_fpr=(0.002, 0.0016, 0.0024)))["policy"]
    assert v.verdict == FAIL and v.stops and v.sentence.endswith("it trades FPR for recall.")


def test_too_few_frauds_or_explored_frauds_is_insufficient_with_the_plain_figure_labelled_biased():
    assert verdicts(contract(), metrics(frauds=29))["operating point"].verdict == INSUFFICIENT
    assert verdicts(contract(), metrics(frauds=30, gain=(0.2, 0.15, 0.25)))["operating point"].verdict == PASS
    # no interval is narrower than one more fraud caught or missed: +5 pts (CI +2..+8) on 30 frauds is
    # widened by 1.96/30 either side and reaches below zero
    assert verdicts(contract(), metrics(frauds=30))["operating point"].verdict == INSUFFICIENT
    op = verdicts(contract(), metrics(explored_frauds=0))["operating point"]
    assert op.verdict == INSUFFICIENT and "too few explored frauds" in op.sentence
    assert "biased by censoring" in op.sentence and "(+3.0 pts)" in op.sentence
    # nothing censored (no policy blocked anything): the labelled rows are the whole population
    assert verdicts(contract(), metrics(explored_frauds=0, censored=0))["operating point"].verdict == PASS


def test_the_direct_method_is_supported_by_the_rows_its_model_was_fitted_on():
    fitted_on = lambda n: {"outcome_model": {"explored_frauds": n, "ess_frauds": 200.0}}  # noqa: E731
    op = verdicts(contract(), metrics(explored_frauds=25), fitted_on(0))["operating point"]
    assert op.verdict == INSUFFICIENT and "too few explored frauds" in op.sentence
    op = verdicts(contract(), metrics(explored_frauds=0), fitted_on(12))["operating point"]
    assert op.verdict == PASS and "the outcome model fitted on 12 explored frauds" in op.sentence


def test_no_metrics_is_insufficient_data_never_nothing():
    (v,) = contract().check(None)
    assert v.verdict == INSUFFICIENT and v.stops
    (v,) = contract().check(metrics(estimator="ipw"))  # the estimator it reads is missing
    assert v.verdict == INSUFFICIENT


# ---- the effect a report draws: the recall gain against the minimum gain, the policy's FPR change
#      against the tolerance, both in points


def printed(sentence: str, nth: int = 0) -> tuple[float, float, float]:
    """(point, lo, hi) in points of the ``nth`` figure with a 95% CI a sentence prints."""
    m = re.findall(r"\(([+-][\d.]+) pts, 95% CI ([+-][\d.]+)\.\.([+-][\d.]+)\)", sentence)[nth]
    return tuple(float(x) for x in m)


@pytest.mark.parametrize("gain, want", [((0.05, 0.02, 0.08), PASS), ((0.001, -0.01, 0.012), INSUFFICIENT),
                                        ((-0.04, -0.07, -0.01), FAIL)])
def test_the_operating_point_passes_exactly_when_the_gain_interval_lies_above_the_minimum_gain(gain, want):
    op = verdicts(contract(), metrics(gain=gain))["operating point"]
    assert op.verdict == want == interval_rule(op)
    assert (op.effect, op.effect_lo, op.effect_hi) == tuple(pytest.approx(x) for x in gain)
    assert printed(op.sentence) == pytest.approx(tuple(100 * x for x in gain))
    assert (op.allowed_lo, op.allowed_hi, op.effect_unit) == (0.0, None, POINTS)
    op = verdicts(contract(min_recall_gain=0.03), metrics(gain=gain))["operating point"]
    assert op.allowed_lo == pytest.approx(0.03) and op.verdict == interval_rule(op)


@pytest.mark.parametrize("policy_fpr, want", [((-0.0005, -0.0008, -0.0002), PASS), ((0.002, 0.0016, 0.0024), FAIL),
                                              ((0.0001, -0.0002, 0.0004), INSUFFICIENT)])
def test_the_policy_passes_exactly_when_its_fpr_change_interval_lies_below_the_tolerance(policy_fpr, want):
    v = verdicts(contract(), metrics(policy_fpr=policy_fpr))["policy"]
    assert v.verdict == want == interval_rule(v)
    assert (v.effect, v.effect_lo, v.effect_hi) == tuple(pytest.approx(x) for x in policy_fpr)
    assert printed(v.sentence) == pytest.approx(tuple(100 * x for x in policy_fpr))
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (None, pytest.approx(0.0002), POINTS)
    # the relative tolerance: 50% of the incumbent's 0.40% FPR
    v = verdicts(contract(fpr_tolerance_relative=0.5), metrics(policy_fpr=policy_fpr))["policy"]
    assert v.allowed_hi == pytest.approx(0.002) and v.verdict == interval_rule(v)


def test_a_point_judgement_stores_no_interval_and_an_fpr_failure_keeps_the_recall_it_leads_with():
    op = verdicts(contract(require_ci_above_zero=False), metrics(gain=(0.01, -0.02, 0.04)))["operating point"]
    assert op.verdict == PASS and (op.effect, op.effect_lo, op.effect_hi) == (pytest.approx(0.01), None, None)
    # failed by its FPR, said in the sentence's tail: the stored gain is inside its region
    op = verdicts(contract(), metrics(fpr=(0.002, 0.0015, 0.0025)))["operating point"]
    assert op.verdict == FAIL and interval_rule(op) == PASS and "FPR is never traded" in op.sentence
    (v,) = contract().check(None)
    assert (v.effect, v.effect_lo, v.effect_hi, v.allowed_lo, v.effect_unit) == (None, None, None, 0.0, POINTS)
