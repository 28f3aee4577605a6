"""The live criterion: a candidate must beat the Production package on labelled live traffic it shadowed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mloop.api.common import CriterionResult
from mloop.api.requirement import LiveComparison


@dataclass(frozen=True)
class LiveScore:
    """Both models scored on the same labelled live rows (serving/livescore), as the gatherer found them."""

    production: str  # the Production package's name
    production_version: int
    metric: str
    rows: int
    candidate: float | None
    production_value: float | None
    record: str | None = None  # where the comparison is stored


def criterion(requirement: str, live: LiveComparison, metric: str, desired: str, holds_production: bool,
              holder: str | None, score: LiveScore | None, lower_is_better: bool) -> CriterionResult:
    """Judged when Production is requested; a package that already holds it keeps it."""
    name = f"live:{metric}"

    def result(passed: bool | None, message: str, **values: Any) -> CriterionResult:
        return CriterionResult(requirement=requirement, criterion=name, passed=passed, message=message[:512],
                               **values)

    if holds_production:
        return result(True, "holds Production")
    if holder is None:
        return result(True, "no package is in Production yet")
    if score is None or score.production != holder:
        return result(False if desired == "Production" else None,
                      f"no live rows scored against {holder}: set spec.shadow so its server sends this package "
                      f"traffic, then send labels to {holder}'s /feedback")
    if score.rows < live.min_rows or score.candidate is None or score.production_value is None:
        return result(False if desired == "Production" else None,
                      f"{score.rows} labelled live rows, {live.min_rows} needed",
                      value=float(score.rows), threshold=float(live.min_rows), operator=">=")
    gain = (score.production_value - score.candidate) if lower_is_better else (score.candidate - score.production_value)
    passed = gain >= live.margin and gain > 0
    verb = "beats" if passed else "does not beat"
    message = (f"{score.candidate:.4g} vs {score.production_value:.4g} of {holder} on {score.rows} live rows: "
               f"{verb} it by {gain:+.4g}, margin {live.margin:g} needed")
    return result(passed if desired == "Production" else None, message, value=round(gain, 6),
                  threshold=live.margin, operator=">=")
