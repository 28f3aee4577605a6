"""Handlers per kind: thin wrappers that parse, ask reconcile/ what to do, and patch status."""

from __future__ import annotations

from typing import Any

import kopf

from mloop.api.kinds import GROUP, KINDS, VERSION, KindInfo
from mloop.reconcile.acceptance import accept
from mloop.reconcile.outcome import Outcome


def apply_outcome(outcome: Outcome, patch: kopf.Patch, body: kopf.Body) -> None:
    for key, value in outcome.status.items():
        patch.status[key] = value
    for event in outcome.events:
        if event.type == "Warning":
            kopf.warn(body, reason=event.reason, message=event.message)
        else:
            kopf.info(body, reason=event.reason, message=event.message)


def _register_acceptance(info: KindInfo) -> None:
    def acknowledge(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, body: kopf.Body,
                    **_: Any) -> None:
        apply_outcome(accept(info, spec, status, meta.get("generation", 0)), patch, body)

    acknowledge.__name__ = f"accept_{info.singular}"
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, info.plural, id="accept", field="spec" if decorator is kopf.on.update else None)(
            acknowledge
        )


for _info in KINDS:
    _register_acceptance(_info)
