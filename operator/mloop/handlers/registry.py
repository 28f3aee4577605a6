"""The acceptance step for kinds without a controller of their own yet."""

from __future__ import annotations

from typing import Any

import kopf

from mloop.api.kinds import GROUP, KINDS, VERSION, KindInfo
from mloop.reconcile.acceptance import accept
from mloop.handlers.common import apply_outcome


def _register_acceptance(info: KindInfo) -> None:
    def acknowledge(spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, body: kopf.Body,
                    **_: Any) -> None:
        apply_outcome(accept(info, spec, status, meta.get("generation", 0)), patch, body)

    acknowledge.__name__ = f"accept_{info.singular}"
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, info.plural, id="accept", field="spec" if decorator is kopf.on.update else None)(
            acknowledge
        )


# Kinds whose own controller has not landed yet are acknowledged by the acceptance step.
for _info in KINDS:
    if _info.kind not in ("Dataset", "TrainingRun", "ModelPackage"):
        _register_acceptance(_info)
