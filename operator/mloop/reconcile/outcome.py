"""What a reconcile step decided: a status patch and the events to post."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from mloop.api.common import Condition


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def parse_conditions(raw: Any) -> list[Condition]:
    return [Condition.model_validate(c) for c in (raw or [])]


def dump_conditions(conditions: list[Condition]) -> list[dict[str, Any]]:
    return [c.to_wire() for c in conditions]


def flipped(before: list[Condition], after: list[Condition], type_: str) -> bool:
    """True when a condition appeared or changed status: the moments worth an event."""
    old = next((c.status for c in before if c.type == type_), None)
    new = next((c.status for c in after if c.type == type_), None)
    return old != new


def describe_validation_error(err: ValidationError, root: str = "spec") -> str:
    """'spec.source.inline.rows[1]: 1 values for 2 columns' style messages (the API server's paths), first three."""
    parts = []
    for e in err.errors()[:3]:
        path = root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        parts.append(f"{path}: {e['msg']}")
    more = len(err.errors()) - 3
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def camel_reason(text: str) -> str:
    """A condition reason from free text such as a Job's failure reason: CamelCase, no spaces."""
    return "".join(p[:1].upper() + p[1:] for p in text.replace("-", " ").replace("_", " ").split()) or "Failed"
