"""analysis.thresholds.suggest_thresholds: per-merchant candidate thresholds under each policy, thin
merchants shrunk toward their segment (empirical Bayes), merchants without traffic inheriting, and the
evidence each suggestion carries (CIs, amounts, one sentence)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import thresholds_for
from analysis.thresholds import (KeepBlockRate, RiskAppetite, Shrinkage, TargetBlockRate, TargetFPR,
                                 ThresholdConfig, load_threshold_config, suggest_thresholds)

GLOBAL_T = 0.8
INC_THRESHOLDS = {"BIG1": 0.9, "BIG2": 0.7, "THIN": 0.9, "NEVER": 0.9, "ALL": 0.9}


def cfg(prior_strength="auto", min_support=200, **kw) -> ThresholdConfig:
    return ThresholdConfig(shrinkage=Shrinkage(min_support=min_support, prior_strength=prior_strength), **kw)


def _merchant(rng, name: str, n: int, blocked: int) -> pd.DataFrame:
    """``n`` rows of which exactly ``blocked`` have an incumbent score above the 0.9 / 0.7 thresholds."""
    inc = rng.uniform(0.0, 0.6, n)
    inc[:blocked] = rng.uniform(0.95, 1.0, blocked)
    return pd.DataFrame({"merchant_id": name, "incumbent_score": inc,
                         "candidate_score": rng.uniform(0.0, 0.999, n)})  # continuous: no ties


@pytest.fixture
def scored() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    parts = [
        _merchant(rng, "BIG1", 400, 26),    # 6.5% blocked
        _merchant(rng, "BIG2", 300, 12),    # 4% blocked
        _merchant(rng, "THIN", 50, 5),      # 10% blocked, but only 50 transactions
        _merchant(rng, "NEVER", 250, 0),    # the incumbent blocked none of it
        _merchant(rng, "ALL", 210, 210),    # the incumbent blocked all of it
    ]
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=3).reset_index(drop=True)


def _suggest(scored, config=None, **kw):
    inc_thr = thresholds_for(scored["merchant_id"], INC_THRESHOLDS, 0.5)
    return suggest_thresholds(scored, inc_thr, GLOBAL_T, config=config or cfg(200.0), **kw).set_index("merchant_id")


def _desc_scores(scored, merchant):
    return np.sort(scored.loc[scored["merchant_id"] == merchant, "candidate_score"].to_numpy())[::-1]


def _cut_between(s_desc, k):
    return (s_desc[k - 1] + s_desc[k]) / 2


# ---- keep_block_rate (the default) -----------------------------------------------------------------------

def test_one_row_per_merchant_with_support_and_incumbent_block_rate(scored):
    out = _suggest(scored)
    assert sorted(out.index) == ["ALL", "BIG1", "BIG2", "NEVER", "THIN"]
    assert out["support"].to_dict() == {"ALL": 210, "BIG1": 400, "BIG2": 300, "NEVER": 250, "THIN": 50}
    assert out.loc["BIG1", "incumbent_block_rate"] == pytest.approx(26 / 400)
    assert out.loc["BIG2", "incumbent_block_rate"] == pytest.approx(12 / 300)
    assert out.loc["THIN", "incumbent_block_rate"] == pytest.approx(5 / 50)
    assert out.loc["NEVER", "incumbent_block_rate"] == 0.0
    assert out.loc["ALL", "incumbent_block_rate"] == 1.0
    assert out["shrunk"].to_dict() == {"ALL": False, "BIG1": False, "BIG2": False, "NEVER": False, "THIN": True}
    assert set(out["policy"]) == {"keep_block_rate"} and set(out["segment"]) == {"all"}


@pytest.mark.parametrize("merchant,blocked", [("BIG1", 26), ("BIG2", 12)])
def test_large_merchant_keeps_exactly_its_number_of_blocks(scored, merchant, blocked):
    out = _suggest(scored)
    t = out.loc[merchant, "suggested_threshold"]
    s = _desc_scores(scored, merchant)
    assert int((s >= t).sum()) == blocked  # the candidate blocks exactly as many rows as the incumbent did
    assert t == pytest.approx(_cut_between(s, blocked))  # between the k-th and (k+1)-th highest scores
    assert out.loc[merchant, "expected_block_rate"] == pytest.approx(blocked / len(s))
    assert out.loc[merchant, "expected_block_rate"] == pytest.approx(out.loc[merchant, "incumbent_block_rate"])


def test_current_threshold_is_the_merchants_own_and_the_one_in_force_is_reported_too(scored):
    out = _suggest(scored, current={"BIG1": 0.9, "BIG2": 0.7})
    assert out["threshold_in_force"].to_dict() == INC_THRESHOLDS
    assert out.loc[["BIG1", "BIG2"], "current_threshold"].tolist() == [0.9, 0.7]
    assert out.drop(["BIG1", "BIG2"])["current_threshold"].isna().all()  # they had none of their own
    assert _suggest(scored)["current_threshold"].isna().all()


def test_merchant_the_incumbent_never_blocked_stays_unblocked(scored):
    out = _suggest(scored)
    s = _desc_scores(scored, "NEVER")
    t = out.loc["NEVER", "suggested_threshold"]
    assert t > s[0] and np.nextafter(t, -np.inf) == s[0]  # just above its highest candidate score
    assert out.loc["NEVER", "expected_block_rate"] == 0.0
    assert out.loc["NEVER", "reason"] == "Keeps the merchant's block rate of 0.00% under the new model."


def test_merchant_the_incumbent_blocked_entirely_stays_blocked(scored):
    out = _suggest(scored)
    assert out.loc["ALL", "suggested_threshold"] == _desc_scores(scored, "ALL")[-1]
    assert out.loc["ALL", "expected_block_rate"] == 1.0


def test_ties_never_block_more_than_the_incumbent_did():
    """Scores tied across the cut: the threshold blocks fewer rows, never more."""
    df = pd.DataFrame({"merchant_id": "T", "incumbent_score": [1.0, 1.0, 0.0, 0.0, 0.0],
                       "candidate_score": [0.9, 0.5, 0.5, 0.5, 0.1]})
    out = suggest_thresholds(df, np.full(5, 0.9), GLOBAL_T, config=cfg(min_support=1)).set_index("merchant_id")
    t = out.loc["T", "suggested_threshold"]
    assert int((df["candidate_score"] >= t).sum()) == 1 and t > 0.5


# ---- shrinkage toward the segment -------------------------------------------------------------------------

def test_thin_merchant_is_shrunk_toward_its_segment_threshold(scored):
    out = _suggest(scored, config=cfg(200.0))
    s = _desc_scores(scored, "THIN")
    raw = _cut_between(s, 5)  # would keep its 5 blocks
    pooled = np.sort(scored["candidate_score"].to_numpy())[::-1]
    seg = _cut_between(pooled, 26 + 12 + 5 + 0 + 210)  # the segment keeps its pooled block count
    w = 50 / (50 + 200)
    t = out.loc["THIN", "suggested_threshold"]
    assert out.loc["THIN", "raw_threshold"] == pytest.approx(raw)
    assert out.loc["THIN", "segment_threshold"] == pytest.approx(seg)
    assert out.loc["THIN", "shrink_weight"] == pytest.approx(w)
    assert t == pytest.approx(w * raw + (1 - w) * seg)
    assert out.loc["THIN", "expected_block_rate"] == pytest.approx((s >= t).mean())  # what it really blocks
    assert out.loc["THIN", "reason"] == (
        "Thin merchant (50 transactions): the threshold that keeps the merchant's block rate of 10.00% under the "
        f"new model is shrunk 80% of the way toward the all segment's threshold, for an expected block rate of "
        f"{100 * (s >= t).mean():.2f}%.")


def test_more_prior_strength_pulls_a_thin_merchant_closer_to_its_segment(scored):
    weak = _suggest(scored, config=cfg(10.0)).loc["THIN"]
    strong = _suggest(scored, config=cfg(1000.0)).loc["THIN"]
    assert abs(strong["suggested_threshold"] - strong["segment_threshold"]) < \
        abs(weak["suggested_threshold"] - weak["segment_threshold"])


def test_min_support_decides_who_is_thin(scored):
    out = _suggest(scored, config=cfg(200.0, min_support=10))
    assert not out["shrunk"].any()
    t = out.loc["THIN", "suggested_threshold"]
    assert int((_desc_scores(scored, "THIN") >= t).sum()) == 5  # not shrunk any more: keeps its 5 blocks
    out = _suggest(scored, config=cfg(200.0, min_support=301))
    assert out["shrunk"].to_dict() == {"ALL": True, "BIG1": False, "BIG2": True, "NEVER": True, "THIN": True}


def _segment_world(rates_and_sizes, thin=(40, 8)):
    """One segment 'S': merchants with given (n, blocked) and one thin merchant; scores continuous."""
    rng = np.random.default_rng(5)
    parts = [_merchant(rng, f"M{i}", n, k) for i, (n, k) in enumerate(rates_and_sizes)]
    parts.append(_merchant(rng, "THIN", *thin))
    df = pd.concat(parts, ignore_index=True)
    df["merchant_size"] = "S"
    return df


def test_empirical_bayes_prior_strength_comes_from_the_real_spread_of_block_rates():
    sizes = [(1000, 10), (1000, 30), (1000, 50), (1000, 70)]
    df = _segment_world(sizes)
    out = suggest_thresholds(df, np.full(len(df), 0.9), GLOBAL_T, config=cfg("auto")).set_index("merchant_id")
    n = np.array([n for n, _ in sizes] + [40.0])
    k = np.array([k for _, k in sizes] + [8.0])
    mu = k.sum() / n.sum()
    spread = (n * (k / n - mu) ** 2).sum() / n.sum()
    tau2 = spread - mu * (1 - mu) * len(n) / n.sum()
    m = mu * (1 - mu) / tau2 - 1
    assert 1 < m < 1000
    assert out.loc["THIN", "shrink_weight"] == pytest.approx(40 / (40 + m))
    assert out.loc["M0", "shrink_weight"] == 1.0 and not out.loc["M0", "shrunk"]


def test_a_segment_whose_merchants_do_not_really_differ_pools_a_thin_merchant_fully():
    df = _segment_world([(1000, 30)] * 4, thin=(40, 1))
    out = suggest_thresholds(df, np.full(len(df), 0.9), GLOBAL_T, config=cfg("auto")).set_index("merchant_id")
    assert out.loc["THIN", "shrink_weight"] < 1e-4
    assert out.loc["THIN", "suggested_threshold"] == pytest.approx(out.loc["THIN", "segment_threshold"], abs=1e-5)
    assert "shrunk 100% of the way toward the S segment's threshold" in out.loc["THIN", "reason"]


# ---- other policies, per segment --------------------------------------------------------------------------

@pytest.fixture
def labelled() -> pd.DataFrame:
    """Two segments. Merchant A (segment 'big'): 10 legit and 4 fraud rows with known scores; merchant B
    (segment 'small'): 20 rows."""
    a_scores = [0.99, 0.97, 0.95, 0.93, 0.90, 0.85, 0.80, 0.75, 0.70, 0.65, 0.60, 0.55, 0.50, 0.45]
    a_label = [1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    a = pd.DataFrame({"merchant_id": "A", "merchant_size": "big", "candidate_score": a_scores, "label": a_label,
                      "incumbent_score": [0.99, 0.0, 0.97, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                      "amount": [100.0, 10, 200, 20, 300, 30, 40, 400, 50, 60, 70, 80, 90, 95], "weight": 1.0})
    rng = np.random.default_rng(2)
    b = pd.DataFrame({"merchant_id": "B", "merchant_size": "small", "candidate_score": rng.uniform(0, 1, 20),
                      "incumbent_score": rng.uniform(0, 1, 20), "label": 0.0, "amount": 10.0, "weight": 1.0})
    return pd.concat([a, b], ignore_index=True)


def _run(df, **segments):
    c = ThresholdConfig(segments=segments, shrinkage=Shrinkage(min_support=1, prior_strength=1.0))
    return suggest_thresholds(df, np.full(len(df), 0.95), GLOBAL_T, config=c).set_index("merchant_id")


def test_target_fpr_blocks_as_much_as_the_target_allows(labelled):
    # 10 legit rows in A: an FPR target of 20% allows 2 of them blocked. In score order the 2nd legit is
    # at 0.93 and the 3rd at 0.85: block everything down to 0.90 (3 frauds + 2 legit), not 0.85.
    out = _run(labelled, big=TargetFPR(kind="target_fpr", fpr=0.2))
    t = out.loc["A", "suggested_threshold"]
    assert t == pytest.approx((0.90 + 0.85) / 2)
    assert out.loc["A", "fpr_after"] == pytest.approx(0.2)
    assert out.loc["A", "recall_after"] == pytest.approx(3 / 4)
    assert out.loc["A", "policy"] == "target_fpr" and out.loc["B", "policy"] == "keep_block_rate"
    assert out.loc["A", "reason"] == ("Holds its false-positive rate at or below the big segment's target of "
                                      "20.00%; recall 50.0% -> 75.0%.")


def test_target_block_rate(labelled):
    out = _run(labelled, big=TargetBlockRate(kind="target_block_rate", block_rate=0.5))
    t = out.loc["A", "suggested_threshold"]
    assert t == pytest.approx((0.80 + 0.75) / 2)  # 7 of 14 rows
    assert out.loc["A", "expected_block_rate"] == pytest.approx(0.5)


def test_risk_appetite_uses_the_merchants_own_statement_or_the_segment_default(labelled):
    pol = RiskAppetite(kind="risk_appetite", default_fpr=0.05, appetites={"A": 0.3})
    out = _run(labelled, big=pol)
    # 3 of 10 legit allowed (0.97, 0.93, 0.85); the 4th legit is at 0.80
    assert out.loc["A", "suggested_threshold"] == pytest.approx((0.85 + 0.80) / 2)
    assert "stated risk appetite of at most 30.00% false positives" in out.loc["A", "reason"]
    out = _run(labelled, big=RiskAppetite(kind="risk_appetite", default_fpr=0.05))
    assert out.loc["A", "suggested_threshold"] == pytest.approx((0.99 + 0.97) / 2)  # no legit may be blocked


def test_recall_and_fpr_before_after_with_wilson_intervals_and_amounts(labelled):
    out = _run(labelled, big=TargetFPR(kind="target_fpr", fpr=0.2)).loc["A"]
    # before: the incumbent (0.95) blocks rows 1 and 3: two frauds (100 + 200), no legit
    assert (out["recall_before"], out["fpr_before"]) == (pytest.approx(0.5), 0.0)
    assert out["blocked_fraud_amount_before"] == 300.0 and out["false_decline_amount_before"] == 0.0
    # after: 0.99, 0.95, 0.90 frauds (100 + 200 + 300) and 0.97, 0.93 legit (10 + 20)
    assert out["blocked_fraud_amount_after"] == 600.0 and out["false_decline_amount_after"] == 30.0
    # Wilson 95% for 3 of 4 and 2 of 10 (unit weights: the effective sample size is the count)
    assert (out["recall_after_lo"], out["recall_after_hi"]) == (pytest.approx(0.3006, abs=1e-4),
                                                                pytest.approx(0.9544, abs=1e-4))
    assert (out["fpr_after_lo"], out["fpr_after_hi"]) == (pytest.approx(0.0567, abs=1e-4),
                                                          pytest.approx(0.5098, abs=1e-4))
    assert out["frauds"] == 4 and out["labelled"] == 14


def test_weights_shrink_the_effective_sample_size(labelled):
    heavy = labelled.copy()
    heavy.loc[(heavy["merchant_id"] == "A") & (heavy["candidate_score"] == 0.99), "weight"] = 20.0
    a = _run(labelled, big=TargetFPR(kind="target_fpr", fpr=0.2)).loc["A"]
    b = _run(heavy, big=TargetFPR(kind="target_fpr", fpr=0.2)).loc["A"]
    assert b["recall_after"] > a["recall_after"]
    assert b["recall_after_hi"] - b["recall_after_lo"] > 0  # still an interval, on fewer effective rows


def test_fpr_policy_without_matured_legitimate_rows_takes_the_segment_threshold(labelled):
    df = labelled.copy()
    df.loc[df["merchant_id"] == "A", "label"] = np.nan  # nothing matured
    out = _run(df, big=TargetFPR(kind="target_fpr", fpr=0.2))
    assert out.loc["A", "shrunk"]
    assert out.loc["A", "suggested_threshold"] == GLOBAL_T  # and the segment itself cannot judge: global
    assert out.loc["A", "reason"].startswith("No matured legitimate transactions to judge its false-positive rate")


def test_a_segment_policy_needs_the_segment_column(scored):
    with pytest.raises(ValueError, match="sets policies per 'merchant_size' segment .* has no 'merchant_size' column"):
        _suggest(scored, config=ThresholdConfig(segments={"large": TargetFPR(kind="target_fpr", fpr=0.01)}))


# ---- merchants without traffic ----------------------------------------------------------------------------

def test_merchants_without_traffic_inherit_their_segment_or_the_global_threshold(labelled):
    c = ThresholdConfig(shrinkage=Shrinkage(min_support=1, prior_strength=1.0))
    out = suggest_thresholds(labelled, np.full(len(labelled), 0.95), GLOBAL_T, config=c,
                             current={"A": 0.95, "GHOST": 0.6},
                             merchants={"QUIET": "small", "GHOST": "nowhere"}).set_index("merchant_id")
    assert sorted(out.index) == ["A", "B", "GHOST", "QUIET"]
    assert out.loc["QUIET", "suggested_threshold"] == out.loc["B", "segment_threshold"]
    assert out.loc["QUIET", "reason"] == "No transactions in the evaluation window: inherits the small segment's threshold."
    assert out.loc["GHOST", "suggested_threshold"] == GLOBAL_T and out.loc["GHOST", "current_threshold"] == 0.6
    assert out.loc["GHOST", "reason"] == ("No transactions in the evaluation window and no known segment: "
                                          "inherits the global threshold.")
    assert out.loc[["QUIET", "GHOST"], "no_data"].all() and not out.loc[["A", "B"], "no_data"].any()
    assert (out.loc[["QUIET", "GHOST"], "support"] == 0).all()


def test_an_empty_window_suggests_only_for_named_merchants():
    empty = pd.DataFrame({"merchant_id": [], "incumbent_score": [], "candidate_score": []})
    out = suggest_thresholds(empty, np.array([]), GLOBAL_T, config=cfg(), current={"X": 0.4})
    assert out["merchant_id"].tolist() == ["X"] and out["suggested_threshold"].tolist() == [GLOBAL_T]


# ---- configuration ----------------------------------------------------------------------------------------

def test_the_shipped_configuration_loads_with_automation_off():
    c = load_threshold_config()
    assert c.default_policy == KeepBlockRate() and c.automation.auto_approve.enabled is False


@pytest.mark.parametrize("yaml_text,message", [
    ("segments:\n  large: {kind: target_fpr, fpr: 1.5}\n", r"segments\.large\.target_fpr\.fpr: Input should be less than 1"),
    ("default_policy: {kind: maximise_profit}\n", r"default_policy: Input tag 'maximise_profit' found using 'kind'"),
    ("shrinkage: {prior_strength: lots}\n", r"shrinkage\.prior_strength"),
    ("automation: {auto_approve: {enabled: true, after_unedited_releases: 0}}\n",
     r"automation\.auto_approve\.after_unedited_releases: Input should be greater than or equal to 1"),
    ("segmnets: {}\n", r"segmnets: Extra inputs are not permitted"),
])
def test_a_bad_configuration_names_the_file_the_key_and_what_is_allowed(tmp_path, yaml_text, message):
    from release.config import ConfigError

    p = tmp_path / "thresholds.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as e:
        load_threshold_config(p)
    assert str(p) in str(e.value)
