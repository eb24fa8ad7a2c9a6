"""Load the contracts in force and turn an evaluation into verdicts."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.action_rate_shift import ActionRateShift
from contracts.base import FAIL, Verdict
from contracts.data_contract import DataContract
from contracts.fixed_fpr_higher_recall import FixedFprHigherRecall
from contracts.merchant_block_rate_stability import MerchantBlockRateStability
from contracts.ranking_regression import RankingRegression
from contracts.slice_recall_regression import SliceRecallRegression
from release.config import load_yaml_model

Contract = Annotated[Union[ActionRateShift, FixedFprHigherRecall, SliceRecallRegression,
                           MerchantBlockRateStability, RankingRegression, DataContract], Field(discriminator="kind")]


class ContractSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contracts: list[Contract] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "ContractSet":
        names = [c.name for c in self.contracts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"contract names must be unique; repeated: {dup}")
        return self

    def names(self) -> list[str]:
        return [c.name for c in self.contracts]


def load_contracts(path: str | Path) -> ContractSet:
    return load_yaml_model(path, ContractSet)


def evaluate_contracts(cs: ContractSet, evaluation, manifest: dict | None = None) -> list[Verdict]:
    """``evaluation`` is an analysis.evaluation.Evaluation (overall metrics, slices, recall CI);
    ``manifest`` the training-set snapshot's manifest (for data contracts)."""
    out: list[Verdict] = []
    for c in cs.contracts:
        if isinstance(c, FixedFprHigherRecall):
            out.extend(c.check(evaluation.overall, evaluation.recall_diff))
        elif isinstance(c, DataContract):
            out.extend(c.check(manifest))
        elif isinstance(c, RankingRegression):
            out.extend(c.check(evaluation.metrics))
        else:
            out.extend(c.check(evaluation.slices))
    return out


def gate_failures(verdicts: list[Verdict], waived: set[str] | frozenset[str] = frozenset()) -> list[Verdict]:
    """Gating failures, less those of contracts a named person waived for this release."""
    return [v for v in verdicts if v.gate and v.verdict == FAIL and v.contract not in waived]
