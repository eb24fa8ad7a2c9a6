"""What every contract kind shares: the verdict it returns and the slice names it understands."""
from __future__ import annotations

from dataclasses import asdict, dataclass

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient data"

# slice name in contracts and reports -> column in the scored data
SLICE_COLUMNS = {
    "all": None,
    "country": "merchant_country",
    "merchant": "merchant_id",
    "category": "merchant_category",
    "card_country": "card_country",
}


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

    def as_dict(self) -> dict:
        return asdict(self)


def pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"
