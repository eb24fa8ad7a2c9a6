"""contracts.slice_recall_regression: a slice fails only when its recall falls beyond the limit AND the
fall is significant (one-sided exact McNemar on the frauds the models disagree on, BH over slices)."""
from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

from contracts.base import FAIL, INSUFFICIENT, PASS
from contracts.slice_recall_regression import SliceRecallRegression, recall_drop_pvalues


def row(slice_, frauds, both, cand_only, inc_only, slice_type="country", at="operating_point"):
    """Frauds both models catch, plus those only one catches; unweighted recall."""
    return {"at": at, "slice_type": slice_type, "slice": slice_, "transactions": 100 * frauds, "frauds": frauds,
            "incumbent_recall": (both + inc_only) / frauds, "candidate_recall": (both + cand_only) / frauds,
            "candidate_only_catches": cand_only, "incumbent_only_catches": inc_only}


def contract(**kw):
    base = {"name": "country_recall_regression", "kind": "slice_recall_regression", "slice": "country",
            "max_drop": 0.05, "min_support": 30, "confidence": 0.95}
    base.update(kw)
    return SliceRecallRegression(**base)


def check(c, *rows):
    return {v.slice: v for v in c.check(pd.DataFrame(list(rows)))}


def test_p_values_are_one_sided_exact_mcnemar():
    p = recall_drop_pvalues([2, 10, 0], [12, 2, 0])
    assert p[0] == pytest.approx(binomtest(12, 14, 0.5, alternative="greater").pvalue)
    assert p[1] == pytest.approx(binomtest(2, 12, 0.5, alternative="greater").pvalue)  # candidate better
    assert p[2] == 1.0


def test_a_significant_fall_beyond_the_limit_fails_with_the_numbers():
    v = check(contract(), row("GB", 100, 50, 1, 15))["GB"]
    p = binomtest(15, 16, 0.5, alternative="greater").pvalue
    assert v.verdict == FAIL and v.p_value == pytest.approx(p)
    # paired CI of the difference on 100 frauds: d = -0.14, var = (0.16 - 0.0196)/100, half = 1.96 * 0.0375
    assert v.sentence == (f"GB: the candidate catches 51.0% of fraud vs 65.0% (-14.0 pts, 95% CI -21.3..-6.7), "
                          f"limit -5.0 pts, "
                          f"100 matured frauds; significant (adjusted p={p:.2g}).")


def test_a_gain_or_a_small_fall_passes():
    got = check(contract(), row("US", 200, 100, 30, 2), row("FR", 100, 60, 2, 5))
    assert got["US"].verdict == PASS and got["FR"].verdict == PASS  # FR falls 3 pts: within 5


def test_a_thin_slice_is_insufficient_data():
    v = check(contract(), row("NL", 12, 2, 0, 8))["NL"]
    assert v.verdict == INSUFFICIENT and v.p_value is None
    assert v.sentence.endswith("12 matured frauds; fewer than the 30 needed to judge.")


def test_a_fall_beyond_the_limit_that_is_not_significant_is_insufficient_data():
    v = check(contract(), row("MX", 40, 20, 1, 4))["MX"]  # -7.5 pts on 5 disagreements
    assert v.verdict == INSUFFICIENT
    assert "beyond the limit but not significant" in v.sentence


def test_benjamini_hochberg_over_slices():
    raw = binomtest(9, 10, 0.5, alternative="greater").pvalue  # 11/1024 = 0.0107
    assert raw == pytest.approx(11 / 1024)
    alone = check(contract(), row("A", 100, 50, 1, 9))["A"]
    assert alone.verdict == FAIL and alone.p_value == pytest.approx(raw)
    # beside four slices with no evidence (p = 0.62), A's p is the smallest of five: raw * 5 / 1 = 0.054
    neutral = [row(c, 100, 50, 5, 5) for c in ("E", "F", "G", "H")]
    got = check(contract(), row("A", 100, 50, 1, 9), *neutral)
    assert got["A"].p_value == pytest.approx(raw * 5)
    assert got["A"].verdict == INSUFFICIENT
    # thin slices are not tested, so they do not dilute the correction
    thin = [row(c, 10, 5, 0, 0) for c in ("T1", "T2", "T3", "T4")]
    got = check(contract(), row("A", 100, 50, 1, 9), *thin)
    assert got["A"].verdict == FAIL and got["A"].p_value == pytest.approx(raw)


def test_per_slice_limits():
    got = check(contract(limits={"US": 0.2}), row("US", 100, 50, 1, 15), row("GB", 100, 50, 1, 15))
    assert got["US"].verdict == PASS and got["GB"].verdict == FAIL


def test_limits_must_be_fractions_and_a_misspelt_slice_is_reported():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"every per-slice limit must be a fraction in \[0, 1\]"):
        contract(limits={"US": 1.5})
    got = check(contract(limits={"UK": 0.01}), row("GB", 100, 50, 1, 15))
    assert got["UK"].verdict == INSUFFICIENT
    assert got["UK"].sentence == ("UK: a limit is set for this country, but no such country is in the evaluation "
                                  "window; check its spelling.")
