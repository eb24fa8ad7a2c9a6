"""The few quantiles and distribution functions the project uses, from ``scipy.special``: the same numbers as
``scipy.stats``' (its distributions call these functions; tests/release/core/test_distributions.py checks
them against scipy.stats on grids of the arguments used here), without importing ``scipy.stats``.

Why not ``scipy.stats``: importing it builds the documentation of every distribution it defines, about
0.8 s of CPU in every process that imports it, against ~0.35 s for ``scipy.special``. A process that trains or
scores imports it anyway (LightGBM imports scikit-learn, which imports scipy.stats); one that only reads and
judges (a report rewrite after each rollout stage, most `fraudcd` commands) no longer does.

Scalars in, floats out (arrays where noted); arguments outside a function's domain give NaN, as scipy.stats'.
"""
from __future__ import annotations

import math

import numpy as np


def _special():
    """scipy.special, imported on first use (~0.35 s of CPU): a process that never asks for a quantile, such as
    `fraudcd ramp show`, does not pay for it."""
    from scipy import special

    return special


def norm_ppf(q: float) -> float:
    """``scipy.stats.norm.ppf(q)``: the standard normal quantile (``norm_ppf(0.975)`` = 1.95996...)."""
    return float(_special().ndtri(q))


def beta_ppf(q: float, a: float, b: float) -> float:
    """``scipy.stats.beta.ppf(q, a, b)``: the Beta(a, b) quantile (0 at q = 0, 1 at q = 1)."""
    if not (a > 0 and b > 0 and 0 <= q <= 1):
        return math.nan
    return 0.0 if q == 0 else 1.0 if q == 1 else float(_special().betaincinv(a, b, q))


def chi2_ppf(q: float, df: float) -> float:
    """``scipy.stats.chi2.ppf(q, df)``: the chi-squared quantile with ``df`` degrees of freedom."""
    if not (df > 0 and 0 <= q <= 1):
        return math.nan
    return math.inf if q == 1 else float(2 * _special().gammaincinv(df / 2, q))


def binom_ppf(q: float, n: int, p: float) -> float:
    """``scipy.stats.binom.ppf(q, n, p)``: the smallest k in [0, n] with P(X <= k) >= q for X ~ Binomial(n, p)
    (-1 at q = 0, n at q = 1), by bisection on the binomial CDF (``special.bdtr``; ~log2(n) evaluations)."""
    if not (n >= 0 and float(n).is_integer() and 0 <= p <= 1 and 0 <= q <= 1):
        return math.nan
    if q == 0:
        return -1.0
    if q == 1:
        return float(n)
    lo, hi = 0, int(n)
    while lo < hi:
        mid = (lo + hi) // 2
        if _special().bdtr(mid, n, p) >= q:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


def poisson_cdf(k, mu: float) -> np.ndarray:
    """``scipy.stats.poisson.cdf(k, mu)`` for an array of ``k`` >= 0: P(X <= floor(k)) for X ~ Poisson(mu)."""
    return _special().pdtr(np.floor(np.asarray(k, dtype=float)), mu)
