"""contracts.action_rate_shift: the policy's action-rate change per slice, judged by its interval against
the limit (max of the relative limit times the incumbent's rate and the absolute floor): inside passes,
beyond fails, reaching both sides is insufficient data that stops by default. Thin slices are pooled,
and a pooled slice whose own interval is wholly beyond the limit still fails on its own."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from contracts.action_rate_shift import ActionRateShift
from contracts.base import FAIL, INSUFFICIENT, PASS, POINTS, RELATIVE

from tidy import interval_rule, shift, table

T = "country|actions>=500"  # the pooled slice type this contract reads


def contract(**kw) -> ActionRateShift:
    base = {"name": "country_action_rate_shift", "kind": "action_rate_shift", "slice": "country",
            "max_relative_shift": 0.25, "min_absolute_shift": 0.002, "min_support": 500}
    return ActionRateShift(**{**base, **kw})


def check(c, *groups):
    return {v.slice: v for v in c.check(table(*groups))}


def test_an_interval_inside_the_limit_passes_with_the_numbers_and_the_raw_shift_in_the_sentence():
    # incumbent 2.00%, policy 2.20% (+10%, CI +5%..+15%), limit ±25% of 2% = ±0.50 pts; the candidate
    # at one global threshold would have blocked 3.00% (+50%): the thresholds absorbed 40 points
    v = check(contract(), shift(T, "FR", 0.02, 0.022, 0.001, 0.003, raw=0.03, transactions=50_000))["FR"]
    assert v.verdict == PASS and not v.stops
    assert v.sentence == ("FR: the policy blocks 2.20% vs 2.00% (+10%, 95% CI +5%..+15%), limit ±25%, 50,000 judging "
                          "transactions: within the limit. At one global threshold the candidate would block 3.00% "
                          "(+50%); the per-merchant thresholds absorb 40 pts of it.")
    assert (v.candidate_value, v.incumbent_value, v.limit_value, v.support) == (
        pytest.approx(0.022), pytest.approx(0.02), 0.25, 50_000)


def test_an_interval_wholly_beyond_the_limit_fails_either_way():
    got = check(contract(), shift(T, "BR", 0.02, 0.028, 0.006, 0.010), shift(T, "MX", 0.02, 0.012, -0.010, -0.006))
    assert got["BR"].verdict == FAIL and got["BR"].stops and "beyond the limit" in got["BR"].sentence
    assert got["MX"].verdict == FAIL


def test_a_large_slice_whose_interval_still_reaches_inside_the_limit_is_insufficient_not_a_failure():
    # point +30% is beyond ±25%, but the interval +20%..+40% reaches inside: not judged
    v = check(contract(), shift(T, "US", 0.02, 0.026, 0.004, 0.008, transactions=400_000))["US"]
    assert v.verdict == INSUFFICIENT and v.stops
    assert "reaches both sides of the limit" in v.sentence and "would decide it" in v.sentence


def test_a_thin_interval_wide_enough_to_hold_forty_percent_never_passes():
    # point +5%, interval -30%..+40%: the old point-plus-significance test passed it
    v = check(contract(), shift(T, "other countries", 0.02, 0.021, -0.006, 0.008))["other countries"]
    assert v.verdict == INSUFFICIENT and v.stops


def test_the_relative_change_is_judged_by_its_own_interval_when_the_evaluation_gives_one():
    """The limit is relative to the incumbent's rate, itself estimated: the bootstrap interval of
    policy / incumbent carries that noise, where the difference's interval divided by the judged rate
    would not. A difference wholly beyond 25% of the judged rate, whose ratio interval still reaches
    inside the limit, is not a failure."""
    rows = shift(T, "LU", 0.02, 0.027, 0.0055, 0.0085)  # +0.55..+0.85 pts: beyond ±0.50 pts
    assert check(contract(), rows)["LU"].verdict == FAIL
    ratio = {"slice_type": T, "slice": "LU", "metric": "action_rate", "estimator": "all", "model": "policy/incumbent",
             "estimate": 1.35, "lo": 1.10, "hi": 1.70, "transactions": 10_000, "labelled": 9_800, "frauds": 100}
    v = check(contract(), rows + [ratio])["LU"]
    assert v.verdict == INSUFFICIENT and "95% CI +10%..+70%" in v.sentence
    ratio.update(lo=1.28, hi=1.45)
    assert check(contract(), rows + [ratio])["LU"].verdict == FAIL
    ratio.update(estimate=1.05, lo=0.95, hi=1.15)
    assert check(contract(), rows + [ratio])["LU"].verdict == PASS


def test_the_contracts_confidence_sets_the_interval_it_judges():
    """The evaluation's intervals are at 95%; a contract at another confidence rescales each side about the
    estimate by the ratio of normal quantiles (1.645 / 1.960 at 90%, 2.576 / 1.960 at 99%). Before, the
    field only named the level in the sentence."""
    # +16% with a 95% CI of +6%..+26% (10 pts each side): reaches past +25%, undecided at 95%;
    # at 90% it is +7.6..+24.4%: inside; at 99% it is +2.9..+29.1%: still undecided
    rows = shift(T, "MX", 0.02, 0.0232, 0.0012, 0.0052)
    assert check(contract(), rows)["MX"].verdict == INSUFFICIENT
    v = check(contract(confidence=0.90), rows)["MX"]
    assert v.verdict == PASS and "90% CI" in v.sentence
    assert check(contract(confidence=0.99), rows)["MX"].verdict == INSUFFICIENT
    # a failure at 95% (+30%..+40%) that reaches inside the limit at 99.99% (z 3.89: +25.1..+44.9%) stays
    # beyond, one whose lower side is nearer (+27%) does not
    beyond = shift(T, "BR", 0.02, 0.0270, 0.0060, 0.0080)
    assert check(contract(confidence=0.9999), beyond)["BR"].verdict == FAIL
    near = shift(T, "BR", 0.02, 0.0264, 0.0054, 0.0074)
    assert check(contract(), near)["BR"].verdict == FAIL
    assert check(contract(confidence=0.9999), near)["BR"].verdict == INSUFFICIENT


def test_on_insufficient_warn_reports_without_stopping():
    v = check(contract(on_insufficient="warn"), shift(T, "US", 0.02, 0.026, 0.004, 0.008))["US"]
    assert v.verdict == INSUFFICIENT and not v.stops


def test_the_absolute_floor_widens_the_limit_for_tiny_rates():
    # incumbent 0.40%: 25% of it is 0.10 pts, the floor 0.20 pts; a move of +0.15 pts (+38%) is within
    v = check(contract(), shift(T, "NL", 0.004, 0.0055, 0.0010, 0.0019))["NL"]
    assert v.verdict == PASS and "(±0.20 pts)" in v.sentence


def test_per_slice_limits_and_a_misspelt_one_is_reported():
    data = [shift(T, "GB", 0.02, 0.023, 0.0025, 0.004)]
    assert check(contract(), *data)["GB"].verdict == PASS  # +0.25..+0.40 pts, inside ±0.50
    got = check(contract(limits={"GB": 0.10, "UK": 0.1}), *data)
    assert got["GB"].verdict == FAIL and got["GB"].limit_value == 0.10  # ±0.20 pts: wholly beyond
    assert got["UK"].verdict == INSUFFICIENT and "check its spelling" in got["UK"].sentence


def test_a_slice_the_incumbent_never_blocked_is_judged_on_the_absolute_floor():
    got = check(contract(), shift(T, "NZ", 0.0, 0.01, 0.008, 0.012), shift(T, "AU", 0.0, 0.0, 0.0, 0.0))
    assert got["NZ"].verdict == FAIL and got["AU"].verdict == PASS


def test_no_figure_and_no_slices_are_insufficient_never_a_pass_or_nothing():
    nan = float("nan")
    got = check(contract(), shift(T, "LU", 0.02, nan, nan, nan))
    assert got["LU"].verdict == INSUFFICIENT and got["LU"].stops
    (v,) = contract().check(table(shift("merchant", "m1", 0.02, 0.02, -0.001, 0.001)))  # no country slice at all
    assert v.verdict == INSUFFICIENT and "nothing to judge" in v.sentence


def test_a_pooled_slice_fails_on_its_own_when_its_whole_interval_is_beyond_and_warns_when_undecided():
    pooled = shift(T, "other countries", 0.02, 0.021, -0.001, 0.003, members="3: LU, MT, IS")
    own = [shift("country", "LU", 0.02, 0.08, 0.04, 0.08, transactions=900),  # +300%, wholly beyond
           shift("country", "MT", 0.02, 0.03, -0.002, 0.022, transactions=400),  # +50%, undecided
           shift("country", "IS", 0.02, 0.02, -0.004, 0.004, transactions=300)]  # nothing to see
    got = contract().check(table(pooled, *own))
    by = {v.slice: v for v in got}
    assert by["other countries"].verdict == PASS and "other countries (3: LU, MT, IS)" in by["other countries"].sentence
    assert by["LU"].verdict == FAIL and by["LU"].stops and "judged on its own" in by["LU"].sentence
    assert by["MT"].verdict == INSUFFICIENT and not by["MT"].stops and "too thin to decide" in by["MT"].sentence
    assert "IS" not in by
    # each sentence names the level its interval is at: the pool the contract's, a member its own
    assert "90% CI" in contract(confidence=0.90).check(table(pooled, *own))[0].sentence
    assert "99.99% CI" in by["LU"].sentence and "99.99% CI" in by["MT"].sentence


def test_judges_the_table_the_evaluation_produces():
    """End to end on analysis.evaluation: the candidate blocks twice what the incumbent blocks in FR
    on every day, so no per-merchant threshold fitted on earlier days can hold it in DE's place."""
    from analysis.evaluation import evaluate

    rng = np.random.default_rng(0)
    n = 40_000
    day = pd.Timestamp("2026-03-01") + pd.to_timedelta(rng.integers(0, 10, n), unit="D")
    country = rng.choice(["FR", "DE"], n)
    inc = rng.random(n)
    cand = np.where(country == "FR", inc ** 0.5, inc)  # FR: the candidate scores higher at any threshold
    df = pd.DataFrame({"day": day, "merchant_id": "M" + pd.Series(rng.integers(0, 3, n)).astype(str) + country,
                       "merchant_country": country, "merchant_category": "grocery", "card_country": country,
                       "card_id": rng.integers(0, 20_000, n), "amount": 10.0, "label": (rng.random(n) < 0.01) * 1.0,
                       "weight": 1.0, "incumbent_score": inc, "candidate_score": cand})
    c = contract(min_support=100)
    ev = evaluate(df, {}, 0.97, slice_names=["country"], n_boot=200, pools={c.pool()}, ranking=False)
    got = {v.slice: v for v in c.check(ev.metrics)}
    # the per-merchant thresholds keep each merchant's block rate: FR's shift is absorbed at the policy ...
    assert got["FR"].verdict == PASS and got["DE"].verdict == PASS and "absorb" in got["FR"].sentence
    # ... while one global threshold at the incumbent's FPR moves both: FR up, and DE down as the
    # threshold rises to pay for FR's extra blocks
    op = {v.slice: v for v in contract(min_support=100, at="operating_point").check(ev.metrics)}
    assert op["FR"].verdict == FAIL and op["FR"].candidate_value > op["FR"].incumbent_value
    assert op["DE"].verdict == FAIL and op["DE"].candidate_value < op["DE"].incumbent_value


# ---- the effect a report draws: the relative shift, the interval that decided it, the region that passes


def printed_relative(sentence: str) -> tuple[int, int, int]:
    """(point, lo, hi) in whole percent as the sentence prints them: "(+10%, 95% CI +5%..+15%)"."""
    m = re.search(r"\(([+-]\d+)%, [\d.]+% CI ([+-]\d+)%\.\.([+-]\d+)%\)", sentence)
    return int(m[1]), int(m[2]), int(m[3])


def test_the_verdict_carries_the_relative_shift_and_the_interval_its_sentence_prints():
    v = check(contract(), shift(T, "FR", 0.02, 0.022, 0.001, 0.003, raw=0.03, transactions=50_000))["FR"]
    assert (v.effect, v.effect_lo, v.effect_hi) == (pytest.approx(0.10), pytest.approx(0.05), pytest.approx(0.15))
    assert printed_relative(v.sentence) == (10, 5, 15)
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (pytest.approx(-0.25), pytest.approx(0.25), RELATIVE)


def ratio_row(slice_, estimate, lo, hi, transactions=50_000):
    return {"slice_type": T, "slice": slice_, "metric": "action_rate", "estimator": "all", "model": "policy/incumbent",
            "estimate": estimate, "lo": lo, "hi": hi, "transactions": transactions, "labelled": 9_800, "frauds": 100}


@pytest.mark.parametrize("by_ratio", [False, True], ids=["by the difference", "by the ratio"])
@pytest.mark.parametrize("pol, lo, hi, want", [
    (0.022, 0.001, 0.003, PASS),  # +5%..+15%: inside ±25%
    (0.028, 0.006, 0.010, FAIL),  # +30%..+50%: wholly beyond
    (0.012, -0.010, -0.006, FAIL),  # -50%..-30%: wholly beyond, downwards
    (0.026, 0.004, 0.008, INSUFFICIENT),  # +20%..+40%: reaches both sides
])
def test_a_relative_shift_passes_exactly_when_its_interval_lies_inside_the_allowed_region(by_ratio, pol, lo, hi, want):
    """Without an absolute floor the relative limit is the only criterion: the stored interval against the
    stored region gives the verdict, judged by the difference over the incumbent's rate or by the ratio's
    own interval (the same figures here)."""
    inc = 0.02
    rows = shift(T, "FR", inc, pol, lo, hi, transactions=50_000)
    if by_ratio:
        rows.append(ratio_row("FR", pol / inc, 1 + lo / inc, 1 + hi / inc))
    v = check(contract(min_absolute_shift=0.0), rows)["FR"]
    assert v.verdict == want == interval_rule(v)
    assert (v.effect, v.effect_lo, v.effect_hi) == (pytest.approx((pol - inc) / inc), pytest.approx(lo / inc),
                                                    pytest.approx(hi / inc))
    assert (v.allowed_lo, v.allowed_hi) == (pytest.approx(-0.25), pytest.approx(0.25))
    assert printed_relative(v.sentence) == tuple(round(100 * x) for x in (v.effect, v.effect_lo, v.effect_hi))


def test_the_region_is_the_floor_where_it_decides_the_ratio_limit_beside_it_and_points_with_no_blocks_before():
    # incumbent 0.40%: the floor of 0.20 pts is 50% of it, and the difference is judged against it
    v = check(contract(), shift(T, "NL", 0.004, 0.0055, 0.0010, 0.0019))["NL"]
    assert v.verdict == PASS == interval_rule(v) and v.effect_unit == RELATIVE
    assert (v.effect, v.effect_lo, v.effect_hi) == (pytest.approx(0.375), pytest.approx(0.25), pytest.approx(0.475))
    assert (v.allowed_lo, v.allowed_hi) == (pytest.approx(-0.5), pytest.approx(0.5))
    # judged by the ratio's own interval, the region is the relative limit; the floor on the difference is
    # a second way to pass (the sentence's "(±0.20 pts)"), so this pass has its interval beyond ±25%
    ratio = ratio_row("NL", 1.375, 1.28, 1.475, transactions=10_000)
    v = check(contract(), shift(T, "NL", 0.004, 0.0055, 0.0010, 0.0019) + [ratio])["NL"]
    assert v.verdict == PASS and interval_rule(v) == FAIL and "(±0.20 pts)" in v.sentence
    assert (v.effect_lo, v.effect_hi, v.allowed_lo, v.allowed_hi) == (
        pytest.approx(0.28), pytest.approx(0.475), pytest.approx(-0.25), pytest.approx(0.25))
    # nothing blocked before: the change in points against the floor, as the sentence prints it
    v = check(contract(), shift(T, "NZ", 0.0, 0.01, 0.008, 0.012))["NZ"]
    assert v.verdict == FAIL == interval_rule(v) and v.effect_unit == POINTS
    assert "95% CI +0.80..+1.20 pts" in v.sentence
    assert (v.effect, v.effect_lo, v.effect_hi, v.allowed_lo, v.allowed_hi) == (
        pytest.approx(0.01), pytest.approx(0.008), pytest.approx(0.012), pytest.approx(-0.002), pytest.approx(0.002))


def test_a_pooled_slices_own_failure_keeps_the_interval_it_was_judged_by_and_no_figure_keeps_the_region():
    pooled = shift(T, "other countries", 0.02, 0.021, -0.001, 0.003, members="2: LU, IS")
    own = [shift("country", "LU", 0.02, 0.08, 0.04, 0.08, transactions=900),
           shift("country", "IS", 0.02, 0.02, -0.004, 0.004, transactions=300)]
    lu = {v.slice: v for v in contract().check(table(pooled, *own))}["LU"]
    assert lu.verdict == FAIL == interval_rule(lu) and "99.99% CI" in lu.sentence
    # the member's interval at 99.99% (wider than the evaluation's 95%), as its sentence prints it
    assert lu.effect_hi - lu.effect_lo > (0.08 - 0.04) / 0.02
    assert printed_relative(lu.sentence) == tuple(round(100 * x) for x in (lu.effect, lu.effect_lo, lu.effect_hi))
    nan = float("nan")
    v = check(contract(), shift(T, "LU", 0.02, nan, nan, nan))["LU"]
    assert (v.effect, v.effect_lo, v.effect_hi) == (None, None, None)
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (pytest.approx(-0.25), pytest.approx(0.25), RELATIVE)
