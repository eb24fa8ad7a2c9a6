"""contracts.base: the exact McNemar p-values and the Benjamini-Hochberg adjustment the action-rate contract
relies on, checked against scipy's binomial test and a hand-rolled BH."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from contracts.base import Verdict, bh_adjusted, paired_shift_pvalues, pct


@pytest.mark.parametrize("b,c", [(0, 1), (1, 0), (3, 12), (12, 3), (10, 10), (0, 9), (50, 30), (7, 8), (200, 150)])
def test_mcnemar_matches_an_exact_two_sided_binomial_test(b, c):
    got = paired_shift_pvalues([b], [c])
    assert got[0] == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_by_hand_and_vectorised():
    # 3 of 15 disagreements one way: 2 * P(X <= 3), X ~ Bin(15, 1/2) = 2 * (1 + 15 + 105 + 455) / 2**15
    got = paired_shift_pvalues(np.array([12, 0, 5, 4]), np.array([3, 0, 5, 0]))
    assert got[0] == pytest.approx(2 * 576 / 2**15)
    assert got[1] == 1.0  # no disagreement: no evidence of a shift
    assert got[2] == 1.0  # balanced disagreement
    assert got[3] == pytest.approx(2 / 2**4)  # 4 vs 0


def test_mcnemar_accepts_aggregated_float_counts():
    # slice_metrics sums float columns; counts like 12.0000001 must behave as 12
    assert paired_shift_pvalues([12.0000001], [2.9999999])[0] == pytest.approx(binomtest(3, 15, 0.5).pvalue)


def _bh_by_hand(p):
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def test_bh_on_four_p_values_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    # sorted 0.01, 0.03, 0.04, 0.20 -> times 4/rank: 0.04, 0.06, 0.0533, 0.20 -> running min from the top:
    # 0.04, 0.0533, 0.0533, 0.20; back in the original order:
    expected = [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20]
    np.testing.assert_allclose(bh_adjusted(p), expected)
    np.testing.assert_allclose(_bh_by_hand(p), expected)


def test_bh_matches_hand_rolled_version_on_random_p_values():
    rng = np.random.default_rng(5)
    for _ in range(20):
        p = rng.uniform(0, 1, rng.integers(1, 12)) ** 3
        np.testing.assert_allclose(bh_adjusted(p), _bh_by_hand(p))


def test_bh_of_nothing_is_nothing_and_one_p_value_is_unchanged():
    assert len(bh_adjusted(np.array([]))) == 0
    assert bh_adjusted([0.03])[0] == pytest.approx(0.03)


def test_verdict_as_dict_and_pct():
    v = Verdict("c", "k", True, "country", "FR", "pass", 0.02, 0.019, 0.25, 1000, "ok")
    d = v.as_dict()
    assert d["p_value"] is None and d["slice"] == "FR" and d["support"] == 1000
    assert pct(0.0192) == "1.92%"
    assert pct(0.44, 1) == "44.0%"
