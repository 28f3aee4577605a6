"""What a reconcile step decided: a status patch and the events to post."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from mloop.api.common import Condition, set_condition


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """What one pass decided: the status patch, the events, and the actions the handler carries out."""

    status: dict[str, Any]
    events: tuple[Event, ...] = ()
    actions: tuple[Any, ...] = ()

    def outcome(self) -> Outcome:
        return Outcome(dict(self.status), list(self.events))

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]


class Draft:
    """A decision as it is built: conditions set with the pass's clock, events, actions.

    `main` is the kind's own progress condition (Succeeded, Packaged); Ready mirrors it for GitOps tools.
    """

    main = "Ready"

    def __init__(self, status: Any, generation: int, now: datetime):
        self.status, self.generation, self.now = status, generation, now
        self.conditions: list[Condition] = list(status.conditions)
        self.update: dict[str, Any] = {}
        self.events: list[Event] = []
        self.actions: list[Any] = []

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = set_condition(self.conditions, type_, status, reason, message,  # type: ignore[arg-type]
                                        self.generation, self.now)

    def reason_of(self, type_: str) -> str | None:
        return next((c.reason for c in self.conditions if c.type == type_), None)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))  # type: ignore[arg-type]

    def wait(self, reason: str, message: str) -> None:
        """Waiting on something outside the object: say what, with an event only when the reason changes."""
        if self.reason_of(self.main) != reason:
            self.event("Normal", reason, message)
        self.update.setdefault("phase", self.status.phase or "Pending")
        self.condition(self.main, "Unknown", reason, message)
        self.condition("Ready", "Unknown", reason, message)

    def fail(self, reason: str, message: str) -> None:
        if self.reason_of(self.main) != reason:
            self.event("Warning", reason, message)
        self.update.update(phase="Failed", task=None)
        self.condition(self.main, "False", reason, message)
        self.condition("Ready", "False", reason, message)

    def decision(self) -> Decision:
        status = {"observedGeneration": self.generation, **self.update, "conditions": dump_conditions(self.conditions)}
        return Decision(status, tuple(self.events), tuple(self.actions))


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
