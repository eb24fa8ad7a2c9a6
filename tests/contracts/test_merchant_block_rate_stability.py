"""contracts.merchant_block_rate_stability: the share of merchants whose block rate moves is bounded."""
from __future__ import annotations

import pandas as pd

from contracts.base import FAIL, INSUFFICIENT, PASS
from contracts.merchant_block_rate_stability import MerchantBlockRateStability


def merchants(moves: dict[str, tuple[float, float]], n: int = 500, at: str = "suggested") -> pd.DataFrame:
    return pd.DataFrame([{"at": at, "slice_type": "merchant", "slice": m, "transactions": n,
                          "incumbent_action_rate": a, "candidate_action_rate": b} for m, (a, b) in moves.items()])


def contract(**kw):
    base = {"name": "merchant_block_rate_stability", "kind": "merchant_block_rate_stability",
            "max_change": 0.005, "max_share": 0.05, "min_merchant_support": 200, "min_support": 20}
    base.update(kw)
    return MerchantBlockRateStability(**base)


def test_no_merchant_moves_passes_and_says_so():
    (v,) = contract().check(merchants({f"m{i:02d}": (0.01, 0.01) for i in range(40)}))
    assert v.verdict == PASS and v.candidate_value == 0.0 and v.support == 40
    assert v.sentence == ("0 of 40 merchants (0.0%) would see their block rate move by more than 0.50 points; "
                          "at most 5.0% may.")


def test_too_many_moving_merchants_fails_and_names_the_largest_moves():
    moves = {f"m{i:02d}": (0.01, 0.01) for i in range(37)}
    moves.update({"big": (0.01, 0.05), "mid": (0.02, 0.01), "small": (0.01, 0.0161)})
    (v,) = contract().check(merchants(moves))
    assert v.verdict == FAIL and v.candidate_value == 3 / 40
    assert v.sentence == ("3 of 40 merchants (7.5%) would see their block rate move by more than 0.50 points; "
                          "at most 5.0% may. Largest moves: big 1.00% -> 5.00%, mid 2.00% -> 1.00%, "
                          "small 1.00% -> 1.61%.")


def test_a_move_within_the_limit_is_not_counted():
    moves = {f"m{i:02d}": (0.01, 0.014) for i in range(30)}  # 0.4 points each
    assert contract().check(merchants(moves))[0].verdict == PASS


def test_thin_merchants_are_left_out_and_too_few_merchants_is_insufficient_data():
    moves = {f"m{i:02d}": (0.01, 0.09) for i in range(30)}
    (v,) = contract().check(merchants(moves, n=150))  # all below min_merchant_support
    assert v.verdict == INSUFFICIENT and v.support == 0
    assert v.sentence == "Only 0 merchants have 200 transactions or more; 20 are needed to judge."


def test_only_the_configured_point_is_judged():
    rows = pd.concat([merchants({f"m{i:02d}": (0.01, 0.01) for i in range(25)}),
                      merchants({f"m{i:02d}": (0.01, 0.05) for i in range(25)}, at="operating_point")])
    assert contract().check(rows)[0].verdict == PASS
    assert contract(at="operating_point").check(rows)[0].verdict == FAIL
