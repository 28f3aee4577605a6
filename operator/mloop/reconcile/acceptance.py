"""Acceptance: the first step of every kind, checking the spec against the API models.

The CRD schema refuses most bad input at the API server; this catches what a schema
cannot express and records that the operator has seen this generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mloop.api.common import set_condition
from mloop.api.kinds import KindInfo
from mloop.reconcile.outcome import Event, Outcome, describe_validation_error, dump_conditions, flipped, parse_conditions

ACCEPTED = "Accepted"


def accept(kind: KindInfo, spec: Mapping[str, Any], status: Mapping[str, Any], generation: int,
           now: datetime | None = None) -> Outcome:
    before = parse_conditions(status.get("conditions"))
    try:
        kind.spec.model_validate(dict(spec))
    except ValidationError as err:
        message = describe_validation_error(err)
        after = set_condition(before, ACCEPTED, "False", "InvalidSpec", message, generation, now)
        events = [Event("Warning", "InvalidSpec", message)] if flipped(before, after, ACCEPTED) else []
        return Outcome({"observedGeneration": generation, "phase": "Failed", "conditions": dump_conditions(after)}, events)
    message = f"{kind.kind} spec accepted at generation {generation}"
    after = set_condition(before, ACCEPTED, "True", "SpecValid", message, generation, now)
    events = [Event("Normal", "SpecValid", message)] if flipped(before, after, ACCEPTED) else []
    result: dict[str, Any] = {"observedGeneration": generation, "conditions": dump_conditions(after)}
    if not status.get("phase"):
        result["phase"] = "Pending"
    return Outcome(result, events)
