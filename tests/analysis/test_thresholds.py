"""analysis.thresholds.suggest_thresholds: per-merchant candidate thresholds under each policy, every
merchant's block rate and score distribution shrunk toward its segment's (beta-binomial posterior, then
the threshold of the mixture), merchants without traffic inheriting, and the evidence each suggestion
carries (CIs, paired changes, amounts, one sentence)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import thresholds_for
from analysis.thresholds import (KeepBlockRate, RiskAppetite, Shrinkage, TargetBlockRate, TargetFPR,
                                 ThresholdConfig, load_threshold_config, suggest_thresholds)

GLOBAL_T = 0.8
INC_THRESHOLDS = {"BIG1": 0.9, "BIG2": 0.7, "THIN": 0.9, "NEVER": 0.9, "ALL": 0.9}
WEAK = 0.5  # a prior worth half a transaction: next to a merchant's hundreds, its own data decide
Z95 = 1.959963984540054


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


SEGMENT_BLOCKS = 26 + 12 + 5 + 0 + 210  # the one segment ("all") of ``scored``: 253 of 1210 blocked
MU = SEGMENT_BLOCKS / 1210


def _suggest(scored, config=None, **kw):
    inc_thr = thresholds_for(scored["merchant_id"], INC_THRESHOLDS, 0.5)
    return suggest_thresholds(scored, inc_thr, GLOBAL_T, config=config or cfg(200.0), **kw).set_index("merchant_id")


def _desc_scores(scored, merchant):
    return np.sort(scored.loc[scored["merchant_id"] == merchant, "candidate_score"].to_numpy())[::-1]


def _cut_between(s_desc, k):
    return (s_desc[k - 1] + s_desc[k]) / 2


def _mixture(own, seg, w, t):
    """The block rate at threshold t of w * F_own + (1 - w) * F_segment (unit weights)."""
    return w * (own >= t).mean() + (1 - w) * (seg >= t).mean()


def _reference_threshold(own, seg, w, rate, nearest=True):
    """Brute force, one candidate at a time: block every score >= u for each distinct segment score u
    (the merchant's scores are among them), top down; keep the last whose mixture rate is <= rate, or
    the next one when it lands strictly closer (``nearest``); the threshold halfway to the next score."""
    u = np.unique(seg)[::-1]
    best, got = -1, 0.0
    for i, val in enumerate(u):
        r = _mixture(own, seg, w, val)
        if r <= rate * (1 + 1e-12) + 1e-15:
            best, got = i, r
        else:
            if nearest and r - rate < rate - got:
                best = i
            break
    if best < 0:
        return np.nextafter(u[0], np.inf)
    return u[best] if best == len(u) - 1 else (u[best] + u[best + 1]) / 2


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
    """With much more data than the prior is worth (n >> m), a merchant blocks exactly as many rows as the
    incumbent did: the count moves by about m (mu - b_s(t)) rows (see the next test), under half a row here."""
    out = _suggest(scored, config=cfg(WEAK))
    t = out.loc[merchant, "suggested_threshold"]
    s = _desc_scores(scored, merchant)
    assert int((s >= t).sum()) == blocked  # the candidate blocks exactly as many rows as the incumbent did
    assert s[blocked] < t <= s[blocked - 1]  # inside its own gap: where in it, the segment's scores decide
    assert out.loc[merchant, "raw_threshold"] == pytest.approx(_cut_between(s, blocked))  # its own cut, as before
    assert out.loc[merchant, "expected_block_rate"] == pytest.approx(blocked / len(s))
    assert out.loc[merchant, "expected_block_rate"] == pytest.approx(out.loc[merchant, "incumbent_block_rate"])
    assert out.loc[merchant, "reason"] == (f"Keeps the merchant's block rate of {100 * blocked / len(s):.2f}% under "
                                           "the new model.")  # shrunk less than 1%: no word about it


def test_the_block_count_moves_by_what_the_prior_is_worth(scored):
    """In count units the suggestion solves c_m + m c_s / N = k + m mu (c_m, c_s: the merchant's and the
    segment's rows at or above the threshold) to within half a step: a merchant's count moves from its own
    k by m (mu - b_s(t)), b_s(t) = c_s / N the segment's block rate at its threshold."""
    m, N = 200.0, len(scored)
    out = _suggest(scored, config=cfg(m))
    seg = scored["candidate_score"].to_numpy()
    for merchant, k in {"BIG1": 26, "BIG2": 12, "THIN": 5, "NEVER": 0, "ALL": 210}.items():
        t = out.loc[merchant, "suggested_threshold"]
        c_m, c_s = int((_desc_scores(scored, merchant) >= t).sum()), int((seg >= t).sum())
        assert abs(c_m + m * c_s / N - (k + m * MU)) <= (1 + m / N) / 2 + 1e-9, merchant
    # with this prior the extremes move: NEVER now blocks some of its traffic, ALL no longer all of it
    assert 0 < out.loc["NEVER", "expected_block_rate"] and out.loc["ALL", "expected_block_rate"] < 1


def test_posterior_block_rate_and_the_threshold_that_gives_it_on_the_mixture(scored):
    m = 200.0
    out = _suggest(scored, config=cfg(m))
    seg = scored["candidate_score"].to_numpy()
    for merchant, k in {"BIG1": 26, "BIG2": 12, "THIN": 5, "NEVER": 0, "ALL": 210}.items():
        r = out.loc[merchant]
        n = r["support"]
        w = n / (n + m)
        assert r["prior_strength"] == m and r["segment_block_rate"] == pytest.approx(MU)
        assert r["shrink_weight"] == pytest.approx(w)
        assert r["posterior_block_rate"] == pytest.approx((k + MU * m) / (n + m))  # Beta(mu m, (1 - mu) m) prior
        own = _desc_scores(scored, merchant)
        t = r["suggested_threshold"]
        assert t == _reference_threshold(own, seg, w, r["posterior_block_rate"])
        mixed = _mixture(own, seg, w, t)
        assert r["mixture_rate"] == pytest.approx(mixed)
        # one step (a merchant row, worth 1 / (n + m), with its segment row) away at most, half of one at best
        assert abs(mixed - r["posterior_block_rate"]) <= (1 + m / len(seg)) / (n + m) / 2 + 1e-12
        assert r["expected_block_rate"] == pytest.approx((own >= t).mean())  # what it blocks of its own rows


def test_current_threshold_is_the_merchants_own_and_the_one_in_force_is_reported_too(scored):
    out = _suggest(scored, current={"BIG1": 0.9, "BIG2": 0.7})
    assert out["threshold_in_force"].to_dict() == INC_THRESHOLDS
    assert out.loc[["BIG1", "BIG2"], "current_threshold"].tolist() == [0.9, 0.7]
    assert out.drop(["BIG1", "BIG2"])["current_threshold"].isna().all()  # they had none of their own
    assert _suggest(scored)["current_threshold"].isna().all()


def test_merchant_the_incumbent_never_blocked_stays_unblocked(scored):
    out = _suggest(scored, config=cfg(WEAK))
    s = _desc_scores(scored, "NEVER")
    seg = scored["candidate_score"].to_numpy()
    t = out.loc["NEVER", "suggested_threshold"]
    above = seg[seg > s[0]]  # segment scores above its highest: the threshold stays among them
    assert t > s[0] and (len(above) == 0 or t <= above.min())
    assert out.loc["NEVER", "expected_block_rate"] == 0.0
    assert out.loc["NEVER", "reason"] == "Keeps the merchant's block rate of 0.00% under the new model."


def test_merchant_the_incumbent_blocked_entirely_stays_blocked(scored):
    out = _suggest(scored, config=cfg(WEAK))
    s = _desc_scores(scored, "ALL")
    seg = scored["candidate_score"].to_numpy()
    t = out.loc["ALL", "suggested_threshold"]
    below = seg[seg < s[-1]]
    assert t <= s[-1] and (len(below) == 0 or t > below.max())
    assert out.loc["ALL", "expected_block_rate"] == 1.0


def test_ties_never_block_more_than_the_incumbent_did():
    """Scores tied across the cut: the threshold blocks fewer rows, never more."""
    df = pd.DataFrame({"merchant_id": "T", "incumbent_score": [1.0, 1.0, 0.0, 0.0, 0.0],
                       "candidate_score": [0.9, 0.5, 0.5, 0.5, 0.1]})
    out = suggest_thresholds(df, np.full(5, 0.9), GLOBAL_T, config=cfg(min_support=1)).set_index("merchant_id")
    t = out.loc["T", "suggested_threshold"]
    assert int((df["candidate_score"] >= t).sum()) == 1 and t > 0.5


def test_same_scores_as_the_incumbent_change_no_threshold():
    """The candidate scores exactly as the incumbent did and every merchant had the same threshold: each
    merchant, thin or not, keeps exactly its blocks at the segment's threshold (the mixture hits the
    posterior rate w k / n + (1 - w) mu exactly there)."""
    rng = np.random.default_rng(7)
    parts = [_merchant(rng, name, n, k) for name, n, k in [("A", 500, 10), ("B", 400, 40), ("C", 300, 27),
                                                           ("D", 30, 6), ("E", 1, 1), ("F", 2, 0)]]
    df = pd.concat(parts, ignore_index=True)
    df["candidate_score"] = df["incumbent_score"]
    out = suggest_thresholds(df, np.full(len(df), 0.9), GLOBAL_T, config=cfg("auto")).set_index("merchant_id")
    assert (out["prior_strength"] < 1e6).all()  # the rates really differ: a real prior, not full pooling
    assert (out["suggested_threshold"] == out["segment_threshold"]).all()
    assert (out["expected_block_rate"] == out["incumbent_block_rate"]).all()
    assert (out["block_rate_change"] == 0).all()


# ---- shrinkage toward the segment -------------------------------------------------------------------------

def test_thin_merchant_is_shrunk_toward_its_segment(scored):
    out = _suggest(scored, config=cfg(200.0))
    s = _desc_scores(scored, "THIN")
    seg = scored["candidate_score"].to_numpy()
    pooled = np.sort(seg)[::-1]
    w = 50 / (50 + 200)
    post = (5 + MU * 200) / (50 + 200)  # its 5 of 50, shrunk toward the segment's 253 of 1210
    r = out.loc["THIN"]
    assert r["raw_threshold"] == pytest.approx(_cut_between(s, 5))  # its own cut: would keep its 5 blocks
    assert r["segment_threshold"] == pytest.approx(_cut_between(pooled, SEGMENT_BLOCKS))
    assert r["shrink_weight"] == pytest.approx(w) and r["shrunk"]
    assert r["posterior_block_rate"] == pytest.approx(post)
    t = r["suggested_threshold"]
    assert t == _reference_threshold(s, seg, w, post)
    assert r["expected_block_rate"] == pytest.approx((s >= t).mean())  # what it really blocks
    assert r["reason"] == (
        f"Thin merchant (50 transactions): its block rate under the incumbent, 10.00% (5 of 50), is shrunk toward "
        f"the all segment's {100 * MU:.2f}% to {100 * post:.2f}%; the threshold is the one that blocks "
        f"{100 * post:.2f}% of its score distribution shrunk 80% of the way toward the segment's, for an expected "
        f"block rate of {100 * (s >= t).mean():.2f}% on its own transactions.")


def test_more_prior_strength_pulls_a_thin_merchant_closer_to_its_segment(scored):
    weak = _suggest(scored, config=cfg(10.0)).loc["THIN"]
    strong = _suggest(scored, config=cfg(1000.0)).loc["THIN"]
    assert abs(strong["suggested_threshold"] - strong["segment_threshold"]) < \
        abs(weak["suggested_threshold"] - weak["segment_threshold"])
    assert strong["posterior_block_rate"] > weak["posterior_block_rate"] > 0.1  # toward the segment's 20.9%


def test_min_support_flags_thin_merchants_and_caps_the_segments_weight_in_a_distribution(scored):
    """min_support flags thin merchants; it also caps how many rows' worth of the segment's scores enter a
    merchant's shrunk distribution (m = 200 here, so a cap of 10 lets merchants keep more of their own)."""
    base = _suggest(scored, config=cfg(200.0))
    for min_support, thin in [(10, set()), (301, {"ALL", "BIG2", "NEVER", "THIN"})]:
        out = _suggest(scored, config=cfg(200.0, min_support=min_support))
        assert set(out.index[out["shrunk"]]) == thin
        n = out["support"].astype(float)
        pd.testing.assert_series_equal(out["shrink_weight"], n / (n + min(200.0, min_support)), check_names=False)
    pd.testing.assert_series_equal(_suggest(scored, config=cfg(200.0, min_support=301))["suggested_threshold"],
                                   base["suggested_threshold"])  # a cap above m changes nothing


def _continuity_world(n: int) -> pd.DataFrame:
    """Segment 'S': two merchants scoring low on the candidate (its segment threshold sits low), and X,
    whose ``n`` candidate scores are the uniform quantiles (i + 1/2) / n, the top tenth of them blocked."""
    rng = np.random.default_rng(3)
    others = pd.concat([_merchant(rng, "O1", 800, 80), _merchant(rng, "O2", 800, 160)], ignore_index=True)
    others["candidate_score"] = others["candidate_score"] * 0.5
    q = (np.arange(n)[::-1] + 0.5) / n
    k = int(np.floor(0.1 * n + 0.5))
    x = pd.DataFrame({"merchant_id": "X", "candidate_score": q,
                      "incumbent_score": np.where(np.arange(n) < k, 0.99, 0.1)})
    return pd.concat([others, x], ignore_index=True).assign(merchant_size="S")


def test_no_jump_at_min_support():
    """199 and 200 rows from the same distribution: X is thin at 199 and not at 200, and its suggestion
    moves only as much as one more row moves its data (the old rule jumped from mostly the segment's
    threshold to its own)."""
    c = cfg(200.0, min_support=200)
    at = {n: suggest_thresholds(df := _continuity_world(n), np.full(len(df), 0.9), GLOBAL_T, config=c)
          .set_index("merchant_id").loc["X"] for n in (199, 200)}
    assert at[199]["shrunk"] and not at[200]["shrunk"]
    assert at[199]["shrink_weight"] == pytest.approx(199 / 399) and at[200]["shrink_weight"] == pytest.approx(0.5)
    raw, seg = at[199]["raw_threshold"], at[199]["segment_threshold"]
    old_jump = (1 - 199 / 399) * abs(raw - seg)  # old: w raw + (1 - w) seg at 199, raw at 200
    assert old_jump > 0.1
    moved = abs(at[200]["suggested_threshold"] - at[199]["suggested_threshold"])
    assert moved < 1 / 199  # no more than a one-row step of X's own quantiles
    assert abs(at[200]["posterior_block_rate"] - at[199]["posterior_block_rate"]) < 1e-3


def test_a_one_row_merchant_gets_about_the_segment_threshold(scored):
    """One row against m = 200 pseudo-rows: w = 1/201. Its posterior rate is the segment's, moved by at
    most a row in 201, and the threshold blocks the segment's count of rows, moved by at most N / m."""
    m = 200.0
    one = pd.DataFrame({"merchant_id": ["ONE"], "incumbent_score": [0.99], "candidate_score": [0.5]})
    df = pd.concat([scored, one], ignore_index=True)
    inc_thr = thresholds_for(df["merchant_id"], INC_THRESHOLDS, 0.9)
    out = suggest_thresholds(df, inc_thr, GLOBAL_T, config=cfg(m)).set_index("merchant_id")
    r, N = out.loc["ONE"], len(df)
    mu = (SEGMENT_BLOCKS + 1) / N
    assert r["shrink_weight"] == pytest.approx(1 / 201)
    assert r["posterior_block_rate"] == pytest.approx((1 + mu * m) / (1 + m))
    blocked = int((df["candidate_score"] >= r["suggested_threshold"]).sum())
    assert abs(blocked - (SEGMENT_BLOCKS + 1)) <= 1.5 * N / m + 1
    assert abs(r["suggested_threshold"] - r["segment_threshold"]) < 0.01


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
    assert np.allclose(out["prior_strength"], m) and out.loc["THIN", "shrink_weight"] == pytest.approx(40 / (40 + m))
    assert out.loc["THIN", "posterior_block_rate"] == pytest.approx((8 + mu * m) / (40 + m))
    # every merchant is shrunk, by its own weight; only the thin one is flagged
    assert out.loc["M0", "shrink_weight"] == pytest.approx(1000 / (1000 + m)) and not out.loc["M0", "shrunk"]
    assert out.loc["M0", "posterior_block_rate"] == pytest.approx((10 + mu * m) / (1000 + m))


def test_a_segment_whose_merchants_do_not_really_differ_pools_their_rate_and_each_keeps_it_with_its_own_cut():
    df = _segment_world([(1000, 30)] * 4, thin=(40, 1))
    out = suggest_thresholds(df, np.full(len(df), 0.9), GLOBAL_T, config=cfg("auto")).set_index("merchant_id")
    assert (out["prior_strength"] == 1e6).all()  # the rates do not differ beyond noise: the rate is pooled ...
    mu = 121 / 4040
    assert out["posterior_block_rate"].to_numpy() == pytest.approx(mu, abs=1e-4)
    # ... but the segment's scores weigh at most min_support (200) rows in each merchant's distribution
    assert out.loc["M0", "shrink_weight"] == pytest.approx(1000 / 1200)
    assert out.loc["THIN", "shrink_weight"] == pytest.approx(40 / 240)
    for merchant in ["M0", "M1", "M2", "M3"]:  # each big merchant keeps about the pooled rate with its own scores
        own = df.loc[df["merchant_id"] == merchant, "candidate_score"].to_numpy()
        assert abs(int((own >= out.loc[merchant, "suggested_threshold"]).sum()) - 1000 * mu) <= 3, merchant
    assert "shrunk 83% of the way toward the segment's" in out.loc["THIN", "reason"]


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


def _fpr_reference(own_s, own_w, seg_s, seg_w, w, target):
    """Brute force: the lowest threshold, at a distinct segment score, whose mixture false-positive rate
    w * FPR_own + (1 - w) * FPR_segment (on legitimate weights) stays at or below the target."""
    u = np.unique(seg_s)[::-1]
    best = -1
    for i, val in enumerate(u):
        f = w * own_w[own_s >= val].sum() / own_w.sum() + (1 - w) * seg_w[seg_s >= val].sum() / seg_w.sum()
        if f > target * (1 + 1e-12) + 1e-15:
            break
        best = i
    if best < 0:
        return np.nextafter(u[0], np.inf)
    return u[best] if best == len(u) - 1 else (u[best] + u[best + 1]) / 2


def test_fpr_policy_shrinks_the_legitimate_score_distribution_toward_the_segment(labelled):
    """Segment 'big': A (14 rows, 10 legitimate, thin), C (40 rows: 30 legitimate with weights 1 and 3,
    10 frauds) and D (nothing matured). FPR target 20%, m = 10: each merchant's threshold is the one at
    which w * its FPR + (1 - w) * the segment's FPR is 20%, w from its legitimate effective sample size."""
    a = labelled[labelled["merchant_id"] == "A"]
    rng = np.random.default_rng(4)
    c = pd.DataFrame({"merchant_id": "C", "merchant_size": "big", "candidate_score": rng.uniform(0.3, 0.95, 40),
                      "incumbent_score": rng.uniform(0, 1, 40), "label": [0.0] * 30 + [1.0] * 10,
                      "amount": 10.0, "weight": [1.0, 3.0] * 15 + [1.0] * 10})
    d = pd.DataFrame({"merchant_id": "D", "merchant_size": "big", "candidate_score": [0.9, 0.2],
                      "incumbent_score": [0.0, 0.0], "label": np.nan, "amount": 5.0, "weight": np.nan})
    df = pd.concat([a, c, d], ignore_index=True)
    conf = ThresholdConfig(segments={"big": TargetFPR(kind="target_fpr", fpr=0.2)},
                           shrinkage=Shrinkage(min_support=20, prior_strength=10.0))
    out = suggest_thresholds(df, np.full(len(df), 0.95), GLOBAL_T, config=conf).set_index("merchant_id")
    legit = df["label"].eq(0).to_numpy()
    negw = np.where(legit, df["weight"].fillna(0).to_numpy(), 0.0)
    s = df["candidate_score"].to_numpy()
    n_eff = {"A": 10.0, "C": 60.0 ** 2 / (15 * 1 + 15 * 9)}  # Kish: (sum w)^2 / sum w^2 = 3600 / 150 = 24
    for merchant, ne in n_eff.items():
        r = out.loc[merchant]
        w = ne / (ne + 10)
        mine = (df["merchant_id"] == merchant).to_numpy()
        assert r["shrink_weight"] == pytest.approx(w) and np.isnan(r["posterior_block_rate"]) and r["target"] == 0.2
        t = r["suggested_threshold"]
        assert t == _fpr_reference(s[mine], negw[mine], s, negw, w, 0.2)
        mixed = w * negw[mine][s[mine] >= t].sum() / negw[mine].sum() + (1 - w) * negw[s >= t].sum() / negw.sum()
        assert r["mixture_rate"] == pytest.approx(mixed) and mixed <= 0.2 + 1e-12
    assert out.loc["A", "shrunk"] and not out.loc["C", "shrunk"]
    assert out.loc["A", "reason"] == (
        "Thin merchant (14 transactions): the threshold that holds its false-positive rate at or below the big "
        "segment's target of 20.00% is the one doing so on its legitimate-score distribution shrunk 50% of the "
        f"way toward the segment's, for an expected block rate of {100 * out.loc['A', 'expected_block_rate']:.2f}% "
        f"on its own transactions; recall 50.0% -> {100 * out.loc['A', 'recall_after']:.1f}%.")
    # nothing matured: its FPR cannot be judged, it takes the segment's threshold, as before
    assert out.loc["D", "suggested_threshold"] == out.loc["D", "segment_threshold"]
    assert out.loc["D", "shrink_weight"] == 0.0 and out.loc["D", "shrunk"]
    assert out.loc["D", "reason"].startswith("No matured legitimate transactions to judge its false-positive rate")


# ---- before and after, paired --------------------------------------------------------------------------

def test_paired_changes_with_intervals_from_the_discordant_rows(labelled):
    """A at an FPR target of 20%: before, the incumbent blocks rows 0.99 (fraud) and 0.95 (fraud); after,
    the candidate blocks those and 0.97 (legit), 0.93 (legit) and 0.90 (fraud). Only these three
    discordant rows (all newly blocked, none released) carry the change. Agresti-Min: half a row on each
    cell of the paired table, u = (up + 1/2) / (n + 2), v = (down + 1/2) / (n + 2), centre u - v,
    variance (u + v - (u - v)^2) / (n + 2)."""
    out = _run(labelled, big=TargetFPR(kind="target_fpr", fpr=0.2)).loc["A"]
    # block rate, 14 rows: 3 up, 0 down. u = 3.5/16, v = 0.5/16, centre 0.1875, var = (0.25 - 0.1875^2) / 16
    assert out["block_rate_change"] == pytest.approx(3 / 14)
    assert out["block_rate_change"] == pytest.approx(out["expected_block_rate"] - out["incumbent_block_rate"])
    half = Z95 * np.sqrt((0.25 - 0.1875 ** 2) / 16)
    assert (out["block_rate_change_lo"], out["block_rate_change_hi"]) == (pytest.approx(0.1875 - half),
                                                                          pytest.approx(0.1875 + half))
    assert (out["block_rate_change_lo"], out["block_rate_change_hi"]) == (pytest.approx(-0.03962, abs=1e-5),
                                                                          pytest.approx(0.41462, abs=1e-5))
    # recall, 4 frauds: 1 up (0.90). u = 1.5/6, v = 0.5/6
    assert out["recall_change"] == pytest.approx(0.25) == out["recall_after"] - out["recall_before"]
    assert (out["recall_change_lo"], out["recall_change_hi"]) == (pytest.approx(-0.27563, abs=1e-5),
                                                                  pytest.approx(0.60897, abs=1e-5))
    # FPR, 10 legitimate: 2 up (0.97, 0.93). u = 2.5/12, v = 0.5/12
    assert out["fpr_change"] == pytest.approx(0.2) == out["fpr_after"] - out["fpr_before"]
    assert (out["fpr_change_lo"], out["fpr_change_hi"]) == (pytest.approx(-0.10005, abs=1e-5),
                                                            pytest.approx(0.43338, abs=1e-5))


def test_paired_change_on_weighted_rows_uses_the_kish_effective_size(labelled):
    """The fraud at 0.99 weighs 20: recall's weight is 20 + 1 + 1 + 1 = 23, of which 1 (the fraud at
    0.90) is newly blocked: d = 1/23, on n = 23^2 / (400 + 3) effective rows."""
    heavy = labelled.copy()
    heavy.loc[(heavy["merchant_id"] == "A") & (heavy["candidate_score"] == 0.99), "weight"] = 20.0
    out = _run(heavy, big=TargetFPR(kind="target_fpr", fpr=0.2)).loc["A"]
    n = 23 ** 2 / 403
    u, v = (n / 23 + 0.5) / (n + 2), 0.5 / (n + 2)
    half = Z95 * np.sqrt((u + v - (u - v) ** 2) / (n + 2))
    assert out["recall_change"] == pytest.approx(1 / 23)
    assert (out["recall_change_lo"], out["recall_change_hi"]) == (pytest.approx(u - v - half),
                                                                  pytest.approx(u - v + half))
    assert (out["recall_change_lo"], out["recall_change_hi"]) == (pytest.approx(-0.59080, abs=1e-5),
                                                                  pytest.approx(0.62525, abs=1e-5))


def test_no_discordant_rows_still_leave_an_interval():
    """A one-row merchant blocked before and after: no change, but one row cannot show that for sure;
    u = v = 0.5 / 3, variance (1/3) / 3: 0 +- 1.96 / 3."""
    df = pd.DataFrame({"merchant_id": ["E", "F", "F"], "incumbent_score": [0.99, 0.99, 0.1],
                       "candidate_score": [0.99, 0.99, 0.1]})
    out = suggest_thresholds(df, np.full(3, 0.9), GLOBAL_T, config=cfg(1.0)).set_index("merchant_id").loc["E"]
    assert out["expected_block_rate"] == 1.0 and out["block_rate_change"] == 0.0
    assert (out["block_rate_change_lo"], out["block_rate_change_hi"]) == (pytest.approx(-Z95 / 3),
                                                                          pytest.approx(Z95 / 3))
    assert np.isnan(out["recall_change"]) and np.isnan(out["fpr_change_lo"])  # no labels: nothing to judge


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
    from release.core.config import ConfigError

    p = tmp_path / "thresholds.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as e:
        load_threshold_config(p)
    assert str(p) in str(e.value)
