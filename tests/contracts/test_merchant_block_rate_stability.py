"""contracts.merchant_block_rate_stability: on judging rows, a merchant moved when the interval of its block-
rate change lies wholly beyond max_change, held when wholly inside; the share that moved fails the contract
beyond max_share, and undecided merchants make it insufficient data unless even counting them all it holds."""
from __future__ import annotations

import re

import pytest

from contracts.base import FAIL, INSUFFICIENT, PASS, RATE
from contracts.merchant_block_rate_stability import MerchantBlockRateStability

from tidy import interval_rule, shift, table

T = "merchant|transactions>=200"


def merchants(moves: dict, model="policy"):
    """merchant -> (incumbent rate, policy rate, lo, hi) of the change."""
    return table(*[shift(T, m, a, b, lo, hi, model=model) for m, (a, b, lo, hi) in moves.items()])


def contract(**kw):
    return MerchantBlockRateStability(**{"name": "merchant_block_rate_stability", "kind": "merchant_block_rate_stability",
                                         "max_change": 0.005, "max_share": 0.05, "min_merchant_support": 200,
                                         "min_support": 20, **kw})


HELD = (0.01, 0.011, -0.002, 0.004)


def test_every_merchant_held_passes_and_says_so():
    (v,) = contract().check(merchants({f"m{i}": HELD for i in range(40)}))
    assert v.verdict == PASS and v.candidate_value == 0.0 and v.support == 40
    assert v.sentence.startswith("0 of 40 merchant slices (0.0%) moved their block rate by more than 0.50 points")
    assert "Largest moves" not in v.sentence and "nan" not in v.sentence  # none moved: none named


def test_with_none_moved_no_merchant_is_named_as_a_move():
    """Undecided merchants and none moved: the sentence names no "largest move" (it once named three unmoved
    merchants with "nan% -> nan%", from an empty selection given a full-length column)."""
    moves = {f"m{i}": HELD for i in range(30)}
    moves.update({f"u{i}": (0.01, 0.012, -0.004, 0.008) for i in range(10)})
    (v,) = contract().check(merchants(moves))
    assert v.verdict == INSUFFICIENT and v.candidate_value == 0.0
    assert "Largest moves" not in v.sentence and "nan" not in v.sentence


def test_too_many_moved_fails_and_names_the_largest_moves():
    moves = {f"m{i}": HELD for i in range(36)}
    moves.update({"m90": (0.01, 0.03, 0.015, 0.025), "m91": (0.02, 0.01, -0.014, -0.006),
                  "m92": (0.01, 0.02, 0.006, 0.014), "m93": (0.03, 0.02, -0.012, -0.008)})
    (v,) = contract().check(merchants(moves))
    assert v.verdict == FAIL and v.stops is False  # warn-only by default (gate: false)
    assert v.candidate_value == 0.1 and "Largest moves: m90 1.00% -> 3.00%" in v.sentence


def test_undecided_merchants_make_it_insufficient_unless_they_cannot_matter():
    moves = {f"m{i}": HELD for i in range(37)}
    moves.update({f"u{i}": (0.01, 0.012, -0.004, 0.008) for i in range(3)})  # 3 of 40 undecided: 7.5% at most
    (v,) = contract().check(merchants(moves))
    assert v.verdict == INSUFFICIENT and "up to 7.5% may have moved" in v.sentence
    (v,) = contract(max_share=0.1).check(merchants(moves))
    assert v.verdict == PASS


def test_too_few_merchant_slices_is_insufficient_and_the_configured_point_is_read():
    (v,) = contract().check(merchants({f"m{i}": HELD for i in range(5)}))
    assert v.verdict == INSUFFICIENT and "Only 5 merchant slices" in v.sentence
    moved = {f"m{i}": (0.01, 0.03, 0.015, 0.025) for i in range(30)}
    assert contract().check(merchants(moved, model="candidate"))[0].verdict == INSUFFICIENT  # no policy rows
    assert contract(at="operating_point").check(merchants(moved, model="candidate"))[0].verdict == FAIL


@pytest.mark.parametrize("moved, undecided, want", [(0, 0, PASS), (0, 3, INSUFFICIENT), (4, 0, FAIL), (4, 3, FAIL),
                                                    (1, 1, PASS)])
def test_the_share_that_moved_lies_between_the_moved_and_the_moved_or_undecided_and_is_judged_as_an_interval(
        moved, undecided, want):
    """Of 40 merchants, the share that moved is at least those whose whole interval moved and at most those
    plus the undecided: that range against max_share decides, as an interval against a ceiling."""
    moves = {f"m{i}": HELD for i in range(40 - moved - undecided)}
    moves.update({f"x{i}": (0.01, 0.03, 0.015, 0.025) for i in range(moved)})
    moves.update({f"u{i}": (0.01, 0.012, -0.004, 0.008) for i in range(undecided)})
    (v,) = contract().check(merchants(moves))
    assert v.verdict == want == interval_rule(v)
    assert (v.effect, v.effect_lo, v.effect_hi) == (moved / 40, moved / 40, (moved + undecided) / 40)
    assert (v.allowed_lo, v.allowed_hi, v.effect_unit) == (None, 0.05, RATE)
    printed = re.match(r"(\d+) of 40 merchant slices \(([\d.]+)%\) moved .*, (\d+) undecided", v.sentence)
    assert (int(printed[1]), float(printed[2]), int(printed[3])) == (moved, 100 * v.effect, undecided)
    if want == INSUFFICIENT:
        assert f"up to {v.effect_hi:.1%} may have moved" in v.sentence


def test_too_few_merchant_slices_keep_the_region_and_no_figure():
    (v,) = contract().check(merchants({f"m{i}": HELD for i in range(5)}))
    assert (v.effect, v.effect_lo, v.effect_hi, v.allowed_lo, v.allowed_hi) == (None, None, None, None, 0.05)
