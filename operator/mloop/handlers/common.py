"""What every handler shares: one pass per object at a time; after deciding, patch status, post events, notify."""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable

import kopf
from pydantic import BaseModel

from mloop.api.common import set_condition, utcnow
from mloop.config import get_settings
from mloop.integrations import cloudevents_sink, lineage
from mloop.reconcile.outcome import Event, Outcome, dump_conditions

log = logging.getLogger("mloop.integrations")

# kopf runs an object's change handler and its timer concurrently, and hands either the body it last saw,
# which may predate the status the previous pass wrote (kopf's own finalizer patch can even give that old
# status a new resourceVersion). Either would let two passes take the same step (finish a cache-hit run
# twice, post its events twice). So: per object, the resourceVersion a pass patched and the phase/task it
# wrote, the fields that decide the next step; only this object's own passes write those.
STEPS = ("phase", "task")
_busy: set[str] = set()
_written: dict[str, tuple[str, dict[str, Any], float]] = {}
_guard = threading.Lock()
STALE_SECONDS = 30.0  # after this, a body that never changed is taken as it is (a lost patch, say)


def _changes(current: Any, patch: Any) -> bool:
    """Would this merge patch change the object? (An unchanged object keeps its resourceVersion.)"""
    for key, value in patch.items():
        old = current.get(key) if hasattr(current, "get") else None
        if isinstance(value, dict) and hasattr(old, "get"):
            if _changes(old, value):
                return True
        elif value is None:
            if old is not None:
                return True
        elif old != value:
            return True
    return False


def _behind(body: Any, written: tuple[str, dict[str, Any], float] | None) -> bool:
    if written is None or time.monotonic() - written[2] >= STALE_SECONDS:
        return False  # nothing written lately, or a patch that was lost: take the body as it is
    version, steps, _ = written
    status = body.get("status") or {}
    return body["metadata"].get("resourceVersion", "") == version or any(
        status.get(key) != value for key, value in steps.items())


def serialized(fn: Callable[..., None]) -> Callable[..., None]:
    """One reconcile pass per object at a time, and none on a body older than the status this process wrote."""

    @functools.wraps(fn)
    def inner(body: Any, patch: Any, *args: Any, **kwargs: Any) -> None:
        meta = body["metadata"]
        uid, version = meta["uid"], meta.get("resourceVersion", "")
        with _guard:
            if uid in _busy:
                return  # another pass over this object is running; the next tick comes soon
            if _behind(body, _written.get(uid)):
                return  # the body does not show what the last pass wrote yet: wait for the one that does
            _busy.add(uid)
        try:
            fn(body, patch, *args, **kwargs)
        finally:
            with _guard:
                _busy.discard(uid)
                if _changes(body, patch):
                    wrote = patch.get("status") or {}
                    _written[uid] = (version, {k: wrote[k] for k in STEPS if k in wrote}, time.monotonic())
                if len(_written) > 10_000:  # forget what is long settled
                    cutoff = time.monotonic() - STALE_SECONDS
                    for key in [k for k, (_, _, at) in _written.items() if at < cutoff]:
                        del _written[key]

    return inner


def apply_outcome(outcome: Outcome, patch: kopf.Patch, body: kopf.Body) -> None:
    for key, value in outcome.status.items():
        patch.status[key] = value
    for event in outcome.events:
        if event.type == "Warning":
            kopf.warn(body, reason=event.reason, message=event.message)
        else:
            kopf.info(body, reason=event.reason, message=event.message)
    notify(body, outcome)


def notify(body: kopf.Body, outcome: Outcome) -> None:
    """Hand the pass's transitions to the configured sinks; they send on their own threads, and a sink's
    trouble is logged, never raised into reconciliation."""
    settings = get_settings()
    if not (settings.cloudevents_sink or settings.openlineage_transport):
        return
    kind, meta, old = body["kind"], dict(body["metadata"]), dict(body.get("status") or {})
    try:
        cloudevents_sink.publish(kind, meta, old, outcome.status, outcome.events)
        lineage.observe(kind, meta, dict(body.get("spec") or {}), old, outcome.status)
    except Exception:
        log.exception("could not queue notifications for %s %s/%s", kind, meta.get("namespace"), meta.get("name"))


class ReconcilePass:
    """One reconcile pass over one object: its parsed status, the conditions it sets, the events it posts.

    `main` is the kind's own progress condition (Succeeded, Packaged); Ready mirrors it for GitOps tools.
    """

    main = "Ready"

    def __init__(self, body: kopf.Body, patch: kopf.Patch, status_model: type[BaseModel]):
        meta = body["metadata"]
        self.body, self.patch = body, patch
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.generation = meta.get("generation", 1)
        self.labels = dict(meta.get("labels") or {})
        self.now = utcnow()
        self.status: Any = status_model.model_validate(dict(body.get("status") or {}))
        self.conditions = list(self.status.conditions)
        self.update: dict[str, Any] = {}
        self.events: list[Event] = []

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = set_condition(self.conditions, type_, status, reason, message, self.generation, self.now)

    def reason_of(self, type_: str) -> str | None:
        return next((c.reason for c in self.conditions if c.type == type_), None)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

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

    def commit(self) -> None:
        self.update.setdefault("observedGeneration", self.generation)
        self.update["conditions"] = dump_conditions(self.conditions)
        apply_outcome(Outcome(self.update, self.events), self.patch, self.body)
