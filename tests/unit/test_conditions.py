"""Conditions keep their lastTransitionTime unless the status really flips."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mloop.api.common import Condition, get_condition, set_condition

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


def ready(status: str, reason: str = "Old") -> Condition:
    return Condition(type="Ready", status=status, reason=reason, last_transition_time=T0)


@pytest.mark.parametrize(
    "before,status,expected_time",
    [
        ([], "True", T1),                      # new condition: now
        ([ready("True")], "True", T0),         # same status, new reason: time kept
        ([ready("True")], "False", T1),        # flip: now
        ([ready("Unknown")], "True", T1),      # Unknown -> True is a transition
        ([ready("False")], "False", T0),
    ],
)
def test_transition_time(before, status, expected_time) -> None:
    after = set_condition(before, "Ready", status, "New", "msg", generation=3, now=T1)
    cond = get_condition(after, "Ready")
    assert cond is not None
    assert cond.last_transition_time == expected_time
    assert (cond.status, cond.reason, cond.observed_generation) == (status, "New", 3)


def test_other_conditions_are_left_alone_and_order_is_kept() -> None:
    other = Condition(type="Validated", status="False", reason="MinRows", last_transition_time=T0)
    after = set_condition([other, ready("True")], "Ready", "False", "Broken", now=T1)
    assert [c.type for c in after] == ["Validated", "Ready"]
    assert after[0] == other


def test_long_messages_are_truncated_to_the_schema_bound() -> None:
    after = set_condition([], "Ready", "False", "Broken", "x" * 5000, now=T1)
    assert len(after[0].message) == 2048


def test_wire_form_is_camel_case() -> None:
    wire = set_condition([], "Ready", "True", "Done", generation=2, now=T1)[0].to_wire()
    assert wire == {"type": "Ready", "status": "True", "reason": "Done", "message": "",
                    "lastTransitionTime": "2026-01-01T00:05:00Z", "observedGeneration": 2}
