"""contracts.fixed_fpr_higher_recall: at the incumbent's FPR the candidate must catch more fraud, with the
paired-bootstrap CI of the gain above zero; FPR is never traded for recall."""
from __future__ import annotations

import pytest

from contracts.base import FAIL, INSUFFICIENT, PASS
from contracts.fixed_fpr_higher_recall import FixedFprHigherRecall


def contract(**kw) -> FixedFprHigherRecall:
    base = {"name": "fixed_fpr_higher_recall", "kind": "fixed_fpr_higher_recall", "min_recall_gain": 0.0,
            "require_ci_above_zero": True, "fpr_tolerance": 0.0002, "min_support": 30}
    base.update(kw)
    return FixedFprHigherRecall(**base)


def judge(c, inc_r, cand_r, inc_f, cand_f, frauds, diff, lo, hi):
    overall = {"incumbent_recall": inc_r, "candidate_recall": cand_r, "incumbent_fpr": inc_f,
               "candidate_fpr": cand_f, "frauds": float(frauds)}
    [v] = c.check(overall, {"diff": diff, "lo": lo, "hi": hi, "n_boot": 400})
    return v


def test_higher_recall_with_ci_above_zero_passes():
    v = judge(contract(), 0.48, 0.52, 0.0041, 0.0041, 1250, 0.04, 0.01, 0.07)
    assert v.verdict == PASS
    assert v.sentence == ("At the incumbent's FPR of 0.41%, the candidate catches 52.0% of fraud vs 48.0% "
                          "(+4.0 pts, 95% CI +1.0..+7.0) at FPR 0.41%; 1,250 matured frauds.")
    assert (v.candidate_value, v.incumbent_value, v.support) == (0.52, 0.48, 1250)
    assert (v.slice_type, v.slice, v.limit_value, v.gate) == ("all", "all", 0.0, True)


def test_lower_recall_fails():
    v = judge(contract(), 0.483, 0.44, 0.0041, 0.0041, 1250, -0.043, -0.079, -0.006)
    assert v.verdict == FAIL
    assert v.sentence == ("At the incumbent's FPR of 0.41%, the candidate catches 44.0% of fraud vs 48.3% "
                          "(-4.3 pts, 95% CI -7.9..-0.6) at FPR 0.41%; 1,250 matured frauds. "
                          "It must catch more with the CI above zero.")


@pytest.mark.parametrize("lo", [0.0, -0.001, -0.02])
def test_higher_recall_whose_ci_reaches_zero_fails(lo):
    v = judge(contract(), 0.48, 0.50, 0.0041, 0.0040, 400, 0.02, lo, 0.05)
    assert v.verdict == FAIL
    assert v.sentence.endswith("It must catch more with the CI above zero.")
    assert f"95% CI {100 * lo:+.1f}..+5.0" in v.sentence


def test_without_the_ci_requirement_a_positive_gain_is_enough():
    c = contract(require_ci_above_zero=False)
    assert judge(c, 0.48, 0.50, 0.0041, 0.0040, 400, 0.02, -0.01, 0.05).verdict == PASS
    v = judge(c, 0.48, 0.47, 0.0041, 0.0040, 400, -0.01, -0.03, 0.01)
    assert v.verdict == FAIL and v.sentence.endswith("It must catch more.")


def test_a_minimum_gain_is_required_when_set():
    c = contract(min_recall_gain=0.01)
    v = judge(c, 0.48, 0.485, 0.0041, 0.0041, 1000, 0.005, 0.001, 0.009)
    assert v.verdict == FAIL
    assert v.sentence.endswith("It must catch at least +1.0 pts with the CI above zero.")
    assert v.limit_value == 0.01
    assert judge(c, 0.48, 0.50, 0.0041, 0.0041, 1000, 0.02, 0.005, 0.035).verdict == PASS


def test_higher_fpr_fails_whatever_the_recall():
    # FPR 0.41% -> 0.44%: 0.03 points above, beyond the 0.02-point tolerance, with a huge recall gain
    v = judge(contract(), 0.40, 0.70, 0.0041, 0.0044, 1250, 0.30, 0.25, 0.35)
    assert v.verdict == FAIL
    assert v.sentence == ("At the incumbent's FPR of 0.41%, the candidate catches 70.0% of fraud vs 40.0% "
                          "(+30.0 pts, 95% CI +25.0..+35.0) at FPR 0.44%; 1,250 matured frauds. "
                          "Its FPR is higher than the incumbent's: FPR is never traded for recall.")


def test_fpr_within_the_tolerance_is_accepted():
    # 0.01 points above the incumbent, tolerance 0.02 points
    assert judge(contract(), 0.40, 0.45, 0.0041, 0.0042, 1250, 0.05, 0.02, 0.08).verdict == PASS
    # the same candidate with no tolerance fails on FPR
    v = judge(contract(fpr_tolerance=0.0), 0.40, 0.45, 0.0041, 0.0042, 1250, 0.05, 0.02, 0.08)
    assert v.verdict == FAIL and "never traded" in v.sentence


@pytest.mark.parametrize("frauds", [0, 1, 29])
def test_below_min_support_is_insufficient_data(frauds):
    v = judge(contract(), 0.40, 0.30, 0.0041, 0.0050, frauds, -0.10, -0.3, 0.1)
    assert v.verdict == INSUFFICIENT
    assert v.sentence.endswith(f"; {frauds:,} matured frauds; fewer than the 30 needed to judge.")
    assert v.support == frauds


def test_exactly_min_support_is_judged():
    assert judge(contract(), 0.48, 0.52, 0.0041, 0.0041, 30, 0.04, 0.01, 0.07).verdict == PASS
