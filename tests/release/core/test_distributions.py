"""release.core.distributions gives scipy.stats' numbers, bit for bit, on grids of the arguments the project
uses (interval confidences, quantile levels, counts from a handful to millions), at the domain's ends and
outside it; and the modules that judge and report a release import neither scipy.stats nor LightGBM."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from release.core import distributions as d

LEVELS = [0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995, 0.99995]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_normal_quantile_is_scipys():
    q = np.concatenate([LEVELS, 1 - np.array(LEVELS), np.random.default_rng(0).uniform(size=2000), [0.0, 1.0]])
    for x in q:
        assert _same(d.norm_ppf(x), float(stats.norm.ppf(x))), x
    assert d.norm_ppf(0.975) == pytest.approx(1.959964, abs=1e-6)


def test_beta_quantile_is_scipys_as_clopper_pearson_asks_it():
    rng = np.random.default_rng(1)
    for _ in range(3000):
        n = int(rng.choice([rng.integers(1, 50), rng.integers(50, 5000), rng.integers(5000, 3_000_000)]))
        k = int(rng.integers(0, n + 1))
        a = (1 - float(rng.choice(LEVELS))) / 2
        for q, x, y in ((a, k, n - k + 1), (1 - a, k + 1, n - k)):
            assert _same(d.beta_ppf(q, x, y), float(stats.beta.ppf(q, x, y))), (q, x, y)
    for q, x, y in ((0, 3, 4), (1, 3, 4), (0.5, 0, 1), (1.5, 2, 2), (-0.1, 2, 2)):
        assert _same(d.beta_ppf(q, x, y), float(stats.beta.ppf(q, x, y))), (q, x, y)


def test_chi2_quantile_is_scipys():
    for q in [*LEVELS, 0.0, 1.0, 0.01, 0.5]:
        for df in [0.5, 1, 2, 3, 9, 19, 49, 99, 1000]:
            assert _same(d.chi2_ppf(q, df), float(stats.chi2.ppf(q, df))), (q, df)
    assert math.isnan(d.chi2_ppf(0.5, 0)) and math.isnan(stats.chi2.ppf(0.5, 0))


def test_binomial_quantile_is_scipys_for_order_statistic_intervals():
    """quantile_ci's use: binom.ppf(alpha / 2, n, q) and binom.ppf(1 - alpha / 2, n, q) for the p50 .. p99.9 of
    n latencies, n from one to millions; and the ends (q = 0: -1, q = 1: n) and degenerate p."""
    rng = np.random.default_rng(2)
    for _ in range(2500):
        n = int(rng.choice([rng.integers(0, 100), rng.integers(100, 20_000), rng.integers(20_000, 3_000_000)]))
        p = float(rng.choice([0.5, 0.9, 0.95, 0.99, 0.999, 0.001, rng.uniform()]))
        a = (1 - float(rng.choice(LEVELS))) / 2
        for q in (a, 1 - a, float(rng.uniform())):
            assert _same(d.binom_ppf(q, n, p), float(stats.binom.ppf(q, n, p))), (q, n, p)
    for q, n, p in ((0, 10, 0.5), (1, 10, 0.5), (0.5, 10, 0.0), (0.5, 10, 1.0), (0.3, 0, 0.5), (0.5, 10.5, 0.5),
                    (0.5, -1, 0.5), (1.2, 10, 0.5)):
        assert _same(d.binom_ppf(q, n, p), float(stats.binom.ppf(q, n, p))), (q, n, p)


def test_poisson_cdf_is_scipys():
    k = np.arange(40)
    for mu in (0.5, 1.0, 3.0):
        assert np.array_equal(d.poisson_cdf(k, mu), stats.poisson.cdf(k, mu))
    assert np.array_equal(d.poisson_cdf(k + 0.5, 1.0), stats.poisson.cdf(k + 0.5, 1.0))


def test_judging_and_reporting_a_release_import_neither_scipy_stats_nor_lightgbm():
    """What the gates, the online guardrails and the report import stays off scipy.stats (its import builds the
    docs of every distribution it has: most of a second of CPU in every process) and off LightGBM (which imports
    scikit-learn, which imports scipy.stats: two seconds more). The report is rewritten in a process of its own
    after every rollout stage; it reads models' scores, it never loads a model."""
    code = ("import sys\n"
            "sys.modules['lightgbm'] = None\n"  # an import of LightGBM fails here
            "import contracts.base, release.rollout.guardrails, release.rollout.monitoring, analysis.stats, "
            "analysis.thresholds, analysis.report, release.orchestration.cycle, release.cli.report\n"
            "print(sorted(m for m in ('scipy.stats', 'sklearn') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
