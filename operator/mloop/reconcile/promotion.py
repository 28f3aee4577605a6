"""The promotion gate: which stage a package is granted, given its criteria and its siblings."""

from __future__ import annotations

from dataclasses import dataclass

from mloop.api.common import CriterionResult


@dataclass(frozen=True)
class Sibling:
    """Another package of the same registered model, as its status shows it."""

    name: str
    version: int
    desired: str
    granted: str | None
    eligible: bool  # packaged and no failed criterion


@dataclass(frozen=True)
class Decision:
    stage: str
    promoted: str  # condition status: True, False
    reason: str
    message: str
    archive: tuple[str, ...] = ()  # older packages that lose Production to this one


def decide(desired: str, version: int, results: list[CriterionResult], siblings: list[Sibling],
           current: str | None) -> Decision:
    failed = [r for r in results if r.passed is False]
    if desired == "None":
        return Decision("None", "False", "NotRequested", "spec.stage is None")
    if desired == "Archived":
        return Decision("Archived", "False", "Archived", "archived on request")
    newer = [s for s in siblings if s.desired == "Production" and s.eligible and s.version > version]
    # A package that held Production is superseded whatever its criteria: those that compare it with Production
    # (live rows, beats-production) now compare it with its successor, and their failing is no refusal. One that
    # never held it and fails is refused, as before, with the criterion named.
    held = current in ("Production", "Archived")
    if desired == "Production" and newer and (held or not failed):
        holder = max(newer, key=lambda s: s.version)
        return Decision("Archived", "False", "Superseded",
                        f"{holder.name} (version {holder.version}) holds Production for this model")
    if failed:
        first = failed[0]
        lower = "Archived" if current == "Archived" else "None"
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return Decision(lower, "False", "CriterionFailed",
                        f"{desired} refused: {first.requirement}/{first.criterion} is {first.message}{more}")
    if desired == "Staging":
        return Decision("Staging", "True", "CriteriaMet", "every criterion is met; Staging granted")
    older = tuple(s.name for s in siblings if s.granted == "Production" and s.version < version)
    return Decision("Production", "True", "CriteriaMet", "every criterion is met; Production granted", older)
