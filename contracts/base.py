"""What every contract kind shares: the verdict it returns and the slice names it understands."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient data"

# slice name in contracts and reports -> column in the scored data (segments are derived by
# analysis.evaluation.add_segments before slicing)
SLICE_COLUMNS = {
    "all": None,
    "country": "merchant_country",
    "merchant": "merchant_id",
    "category": "merchant_category",
    "card_country": "card_country",
    "merchant_size": "merchant_size",
    "amount_band": "amount_band",
    "card_segment": "card_segment",
}
SliceName = Literal["all", "country", "merchant", "category", "card_country", "merchant_size", "amount_band",
                    "card_segment"]


@dataclass(frozen=True)
class Verdict:
    contract: str
    kind: str
    gate: bool
    slice_type: str
    slice: str
    verdict: str
    candidate_value: float | None
    incumbent_value: float | None
    limit_value: float | None
    support: int | None
    sentence: str
    p_value: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def paired_shift_pvalues(candidate_only, incumbent_only):
    """Two-sided exact McNemar p-values: on the same transactions, is the candidate's action rate
    different from the incumbent's? Only the decisions the two models disagree on carry information:
    ``candidate_only`` rows blocked by the candidate alone, ``incumbent_only`` by the incumbent alone."""
    import numpy as np
    from scipy.stats import binom

    b = np.asarray(candidate_only, dtype=float).round()
    c = np.asarray(incumbent_only, dtype=float).round()
    n = b + c
    p = np.minimum(1.0, 2 * binom.cdf(np.minimum(b, c), n, 0.5))
    return np.where(n > 0, p, 1.0)


def bh_adjusted(pvalues):
    """Benjamini-Hochberg adjusted p-values (false discovery rate over the slices of one contract)."""
    import numpy as np
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=float)
    return false_discovery_control(p, method="bh") if len(p) else p


def shift_ci(candidate_only: int, incumbent_only: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the candidate-minus-incumbent action rate on the same ``n`` transactions
    (paired: the variance comes from the disagreements only; normal approximation)."""
    from scipy.stats import norm

    if n <= 0:
        return float("nan"), float("nan")
    d = (candidate_only - incumbent_only) / n
    var = max((candidate_only + incumbent_only) / n - d * d, 0.0) / n
    z = float(norm.ppf(0.5 + confidence / 2))
    return d - z * var ** 0.5, d + z * var ** 0.5


def limits_in_range(v: dict[str, float]) -> dict[str, float]:
    bad = {k: x for k, x in v.items() if not 0 <= x <= 1}
    if bad:
        raise ValueError(f"every per-slice limit must be a fraction in [0, 1]; got {bad}")
    return v


class SliceContract(BaseModel):
    """What the per-slice contracts share: slice, point, per-slice limits, confidence and gate, the
    Benjamini-Hochberg adjustment over the slices with enough support, and the report of a limit that
    names no slice in the window."""

    model_config = ConfigDict(extra="forbid")

    name: str
    slice: SliceName = "country"
    at: Literal["suggested", "operating_point"] = "suggested"
    confidence: float = Field(0.95, gt=0.5, lt=1)
    limits: dict[str, float] = {}
    gate: bool = True

    @field_validator("limits")
    @classmethod
    def _limits_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        return limits_in_range(v)

    def _rows(self, slices):
        return slices[(slices["slice_type"] == self.slice) & (slices["at"] == self.at)].reset_index(drop=True)

    @staticmethod
    def _adjusted(raw, supported):
        """BH-adjusted p-values over the supported slices; 1.0 elsewhere (those are never tested)."""
        import numpy as np

        p = np.ones(len(raw))
        p[supported] = bh_adjusted(np.asarray(raw)[supported])
        return p

    def _unmatched_limits(self, rows, kind: str) -> list[Verdict]:
        return unmatched_limits(self, {str(x) for x in rows["slice"]}, kind)


def unmatched_limits(contract, known: set[str], kind: str) -> list[Verdict]:
    """A per-slice limit that names no slice in the evaluation window: reported, never silently ignored."""
    return [Verdict(contract.name, kind, contract.gate, contract.slice, name, INSUFFICIENT, None, None,
                    contract.limits[name], 0,
                    f"{name}: a limit is set for this {contract.slice}, but no such {contract.slice} is in the "
                    f"evaluation window; check its spelling.", None)
            for name in sorted(set(contract.limits) - known)]
