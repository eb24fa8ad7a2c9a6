"""data_contract: the training-set build's data checks, referenced by name, as release verdicts.

The daily build refuses a snapshot that breaks any check (the last good one stays), so a release only
ever sees snapshots that passed; this contract puts the observed values of the named checks on the
release's record and fails if the snapshot carries no record of a check (an older or foreign build).
Check names: schema, min_rows, both_labels, fraud_rate_band, no_null_features, volume_change.

YAML::

    - name: training_set_data_contract
      kind: data_contract
      checks: [schema, min_rows, both_labels, fraud_rate_band, no_null_features, volume_change]
      gate: true

Sentence on failure::

    fraud_rate_band: the matured fraud rate is 31.0000%, outside the allowed band 0.0100% .. 20.0000%.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.base import FAIL, PASS, Verdict

DataCheck = Literal["schema", "min_rows", "both_labels", "fraud_rate_band", "no_null_features", "volume_change"]


class DataContract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["data_contract"]
    checks: list[DataCheck] = Field(min_length=1)
    gate: bool = True

    def check(self, manifest: dict | None) -> list[Verdict]:
        recorded = {c["name"]: c for c in (manifest or {}).get("data_contract", [])}
        out = []
        for name in self.checks:
            c = recorded.get(name)
            if c is None:
                verdict, sentence, observed = FAIL, (f"{name}: the snapshot records no result for this check; "
                                                     "rebuild it with the current training-set code."), None
            else:
                verdict, sentence = (PASS if c["passed"] else FAIL), f"{name}: {c['sentence']}."
                observed = c["observed"] if isinstance(c["observed"], (int, float)) else None
            # no effect fields: a check is passed or not by the build, with no interval, and the snapshot's
            # record holds the observed value but not, as numbers, the band or limit it was held to
            out.append(Verdict(self.name, self.kind, self.gate, "data", name, verdict, observed, None, None,
                               (manifest or {}).get("rows"), sentence, None))
        return out
