"""What every handler does after deciding: patch status, post events."""

from __future__ import annotations

import kopf

from mloop.reconcile.outcome import Outcome


def apply_outcome(outcome: Outcome, patch: kopf.Patch, body: kopf.Body) -> None:
    for key, value in outcome.status.items():
        patch.status[key] = value
    for event in outcome.events:
        if event.type == "Warning":
            kopf.warn(body, reason=event.reason, message=event.message)
        else:
            kopf.info(body, reason=event.reason, message=event.message)
