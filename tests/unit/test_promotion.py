"""The promotion gate in a table: criteria decide the stage; one Production per model, the newest eligible wins."""

from __future__ import annotations

import pytest

from mloop.api.common import CriterionResult
from mloop.reconcile.promotion import Sibling, decide

PASS = [CriterionResult(requirement="r", criterion="metric:accuracy", passed=True, value=0.95, threshold=0.9)]
FAIL = [CriterionResult(requirement="r", criterion="metric:accuracy", passed=False, value=0.6, threshold=0.9,
                        message="0.6 < 0.9")]
UNMEASURED = PASS + [CriterionResult(requirement="r", criterion="serving:p95LatencyMs", passed=None)]


@pytest.mark.parametrize(
    "desired,results,siblings,current,stage,reason,archive",
    [
        ("None", PASS, [], None, "None", "NotRequested", ()),
        ("Staging", PASS, [], None, "Staging", "CriteriaMet", ()),
        ("Staging", FAIL, [], None, "None", "CriterionFailed", ()),
        ("Production", FAIL, [], "Archived", "Archived", "CriterionFailed", ()),
        ("Production", UNMEASURED, [], None, "Production", "CriteriaMet", ()),
        ("Production", PASS, [Sibling("old", 1, "Production", "Production", True)], None, "Production", "CriteriaMet",
         ("old",)),
        ("Production", PASS, [Sibling("new", 3, "Production", "Production", True)], None, "Archived", "Superseded", ()),
        ("Production", FAIL, [Sibling("new", 3, "Production", "Production", True)], "Archived", "Archived",
         "Superseded", ()),
        ("Production", FAIL, [Sibling("new", 3, "Production", "Production", True)], "Production", "Archived",
         "Superseded", ()),
        ("Production", FAIL, [Sibling("new", 3, "Production", "Production", True)], None, "None", "CriterionFailed",
         ()),
        ("Production", PASS, [Sibling("new", 3, "Production", "None", False)], None, "Production", "CriteriaMet", ()),
        ("Archived", PASS, [], "Production", "Archived", "Archived", ()),
    ],
)
def test_gate(desired, results, siblings, current, stage, reason, archive) -> None:
    decision = decide(desired, 2, results, siblings, current)
    assert (decision.stage, decision.reason, decision.archive) == (stage, reason, archive)


def test_refusal_names_the_criterion_and_its_value() -> None:
    assert decide("Production", 1, FAIL, [], None).message == "Production refused: r/metric:accuracy is 0.6 < 0.9"
