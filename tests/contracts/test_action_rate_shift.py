"""contracts.action_rate_shift: a slice fails only when its action-rate shift is beyond the limit AND
significant (exact McNemar on the disagreements, Benjamini-Hochberg over the contract's slices)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from analysis.metrics import prepare, slice_metrics
from contracts.action_rate_shift import ActionRateShift
from contracts.base import FAIL, INSUFFICIENT, PASS


def row(slice_, n, inc_blocks, cand_only, inc_only, slice_type="country", at="suggested"):
    """One slice row as analysis.evaluation produces it; the candidate blocks what the incumbent blocks,
    plus ``cand_only``, minus ``inc_only``."""
    cand_blocks = inc_blocks + cand_only - inc_only
    return {"at": at, "slice_type": slice_type, "slice": slice_, "transactions": n,
            "incumbent_action_rate": inc_blocks / n, "candidate_action_rate": cand_blocks / n,
            "candidate_only_actions": cand_only, "incumbent_only_actions": inc_only}


def ci(cand_only, inc_only, n, inc_blocks, z=1.959964):
    """The paired 95% interval of the relative shift, by hand: var(d) = ((b + c)/n - d^2)/n."""
    d = (cand_only - inc_only) / n
    half = z * (((cand_only + inc_only) / n - d * d) / n) ** 0.5
    inc = inc_blocks / n
    return f"95% CI {(d - half) / inc:+.0%}..{(d + half) / inc:+.0%}"


def contract(**kw) -> ActionRateShift:
    base = {"name": "country_action_rate_shift", "kind": "action_rate_shift", "slice": "country",
            "at": "suggested", "max_relative_shift": 0.25, "min_absolute_shift": 0.002, "min_support": 1000,
            "confidence": 0.95}
    base.update(kw)
    return ActionRateShift(**base)


def check(c, *rows):
    return {v.slice: v for v in c.check(pd.DataFrame(list(rows)))}


def test_within_the_limit_passes_with_the_numbers_in_the_sentence():
    v = check(contract(), row("FR", 5000, 100, 15, 5))["FR"]
    assert v.verdict == PASS
    # d = 10/5000 = 0.002, var = (0.004 - 0.002^2)/5000, half = 1.96 * 0.000894 = 0.00175 -> +1%..+19% of 2%
    assert ci(15, 5, 5000, 100) == "95% CI +1%..+19%"
    assert v.sentence == (f"FR: candidate blocks 2.20% vs 2.00% (+10%, {ci(15, 5, 5000, 100)}), limit ±25%, 5,000 transactions: "
                          "within the limit.")
    assert (v.candidate_value, v.incumbent_value) == (pytest.approx(0.022), pytest.approx(0.02))
    assert (v.limit_value, v.support) == (0.25, 5000)
    assert v.p_value == pytest.approx(binomtest(5, 20, 0.5).pvalue)
    assert (v.contract, v.kind, v.slice_type, v.gate) == ("country_action_rate_shift", "action_rate_shift",
                                                          "country", True)


def test_beyond_the_limit_and_significant_fails():
    v = check(contract(), row("BR", 10000, 200, 120, 20))["BR"]
    p = binomtest(20, 140, 0.5).pvalue
    assert v.verdict == FAIL
    assert v.sentence == (f"BR: candidate blocks 3.00% vs 2.00% (+50%, {ci(120, 20, 10000, 200)}), limit ±25%, 10,000 transactions; "
                          f"significant (adjusted p={p:.2g}).")
    assert v.p_value == pytest.approx(p)


def test_a_significant_drop_beyond_the_limit_fails_too():
    v = check(contract(), row("DE", 10000, 300, 20, 120))["DE"]
    assert v.verdict == FAIL
    assert v.sentence.startswith(f"DE: candidate blocks 2.00% vs 3.00% (-33%, {ci(20, 120, 10000, 300)}), limit ±25%")


def test_below_min_support_is_insufficient_data_never_a_pass_or_fail():
    v = check(contract(), row("LU", 500, 10, 30, 0))["LU"]
    assert v.verdict == INSUFFICIENT
    assert v.sentence == (f"LU: candidate blocks 8.00% vs 2.00% (+300%, {ci(30, 0, 500, 10)}), limit ±25%, 500 transactions; "
                          "fewer than the 1,000 needed to judge.")
    assert v.p_value is None


def test_beyond_the_limit_but_not_significant_is_insufficient_data():
    # 10 vs 3 disagreements: exact two-sided p = 2 * (1 + 13 + 78 + 286) / 2**13 = 0.0923
    v = check(contract(), row("US", 2000, 20, 10, 3))["US"]
    assert v.verdict == INSUFFICIENT
    assert v.p_value == pytest.approx(2 * 378 / 2**13)
    assert v.sentence == (f"US: candidate blocks 1.35% vs 1.00% (+35%, {ci(10, 3, 2000, 20)}), limit ±25%, 2,000 transactions: beyond the "
                          "limit but not significant (adjusted p=0.092): more traffic is needed to judge.")
    # a looser confidence makes the same evidence enough to fail
    assert check(contract(confidence=0.9), row("US", 2000, 20, 10, 3))["US"].verdict == FAIL


def test_a_move_below_the_absolute_floor_passes_even_if_large_in_relative_terms():
    r = row("IS", 100_000, 10, 20, 0)  # 0.01% -> 0.03%: +200%, but only 0.02 points
    assert check(contract(), r)["IS"].verdict == PASS
    assert check(contract(min_absolute_shift=0.0), r)["IS"].verdict == FAIL


def test_per_slice_limits_override_the_default():
    rows = [row("US", 10000, 200, 60, 30), row("FR", 10000, 200, 60, 30)]  # both +15%, p ~ 0.002
    default = check(contract(), *rows)
    assert default["US"].verdict == default["FR"].verdict == PASS
    tight = check(contract(limits={"US": 0.10}), *rows)
    assert tight["US"].verdict == FAIL
    assert tight["US"].limit_value == 0.10
    assert "limit ±10%" in tight["US"].sentence
    assert tight["FR"].verdict == PASS and tight["FR"].limit_value == 0.25
    loose = check(contract(max_relative_shift=0.1, limits={"FR": 0.2}), *rows)
    assert loose["US"].verdict == FAIL and loose["FR"].verdict == PASS


def test_benjamini_hochberg_turns_a_borderline_failure_into_insufficient_data_over_many_slices():
    # 12 vs 3 disagreements: raw p = 2 * 576 / 2**15 = 0.0352 < 0.05
    borderline = row("PT", 2000, 30, 12, 3)  # 1.50% -> 1.95%: +30%
    raw_p = 2 * 576 / 2**15
    alone = check(contract(), borderline)["PT"]
    assert alone.verdict == FAIL
    assert alone.p_value == pytest.approx(raw_p)
    quiet = [row(c, 2000, 30, 5, 5) for c in ("ES", "IT", "NL")]  # no shift: raw p = 1
    many = check(contract(), borderline, *quiet)
    # BH with 4 tests: the smallest p-value is multiplied by 4 / 1
    assert many["PT"].p_value == pytest.approx(raw_p * 4)
    assert many["PT"].verdict == INSUFFICIENT
    assert "adjusted p=0.14" in many["PT"].sentence
    assert all(many[c].verdict == PASS and many[c].p_value == 1.0 for c in ("ES", "IT", "NL"))


def test_only_the_contracts_slice_type_and_point_are_judged():
    rows = [row("FR", 5000, 100, 15, 5), row("FR", 5000, 100, 300, 0, at="operating_point"),
            row("travel", 5000, 100, 300, 0, slice_type="category")]
    vs = contract().check(pd.DataFrame(rows))
    assert [(v.slice, v.verdict) for v in vs] == [("FR", PASS)]
    vs = contract(at="operating_point").check(pd.DataFrame(rows))
    assert [(v.slice, v.verdict) for v in vs] == [("FR", FAIL)]
    vs = contract(slice="category").check(pd.DataFrame(rows))
    assert [(v.slice_type, v.slice, v.verdict) for v in vs] == [("category", "travel", FAIL)]


def test_a_slice_the_incumbent_never_blocked_fails_when_the_candidate_blocks_it():
    v = check(contract(), row("NZ", 5000, 0, 50, 0))["NZ"]
    assert v.verdict == FAIL
    assert v.incumbent_value == 0.0 and v.candidate_value == pytest.approx(0.01)
    # neither model blocks anything: no shift
    assert check(contract(), row("NZ", 5000, 0, 0, 0))["NZ"].verdict == PASS


def test_judges_the_slice_table_that_analysis_produces():
    n = 2000
    df = pd.DataFrame({
        "merchant_country": np.repeat(["FR", "DE"], n),
        "label": np.nan, "weight": np.nan, "amount": 1.0, "card_id": np.arange(2 * n),
        "incumbent_score": 0.0, "candidate_score": 0.0,
    })
    idx = np.arange(2 * n)
    df.loc[idx < 40, ["incumbent_score", "candidate_score"]] = 1.0  # FR: both block the same 40 rows ...
    df.loc[idx < 80, "candidate_score"] = 1.0  # ... and the candidate 40 more (2% -> 4%)
    de = (idx >= n) & (idx < n + 40)
    df.loc[de, ["incumbent_score", "candidate_score"]] = 1.0  # DE: the same 40 rows for both
    p = prepare(df, np.full(2 * n, 0.5), np.full(2 * n, 0.5))
    slices = slice_metrics(p, "merchant_country").assign(slice_type="country", at="suggested")
    got = {v.slice: v for v in contract().check(slices)}
    assert got["FR"].verdict == FAIL
    assert got["FR"].sentence.startswith(f"FR: candidate blocks 4.00% vs 2.00% (+100%, {ci(40, 0, 2000, 40)}), limit ±25%, 2,000 transactions")
    assert got["FR"].p_value == pytest.approx(min(1.0, 2 * binomtest(40, 40, 0.5).pvalue))  # BH: 2 tests, rank 1
    assert got["DE"].verdict == PASS and got["DE"].p_value == 1.0


def test_an_impossible_per_slice_limit_fails_on_load_with_file_and_key(tmp_path):
    from contracts.evaluator import load_contracts
    from release.config import ConfigError

    p = tmp_path / "c.yaml"
    p.write_text("contracts:\n  - {name: s, kind: action_rate_shift, max_relative_shift: 0.2, limits: {US: -0.1}}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: contracts\.0\.action_rate_shift\.limits: .*fraction in \[0, 1\]"):
        load_contracts(p)


def test_a_limit_for_a_slice_not_in_the_window_is_reported_not_ignored():
    got = check(contract(limits={"UK": 0.1}), row("GB", 5000, 100, 15, 5))
    assert got["GB"].verdict == PASS and got["UK"].verdict == INSUFFICIENT
    assert "check its spelling" in got["UK"].sentence
