"""Governance of a Dataset's own tags: complete and consistent with its columns."""

from __future__ import annotations

from mloop.api.common import GovernanceTags
from mloop.api.dataset import ColumnStatus


def check_tags(tags: GovernanceTags | None, columns: list[ColumnStatus]) -> tuple[bool, str, str]:
    """(ok, reason, message) for the GovernanceOK condition."""
    if tags is None or not tags.license:
        return False, "LicenseMissing", "declare spec.governance.license as an SPDX id, e.g. CC-BY-4.0"
    if not tags.classification:
        return False, "ClassificationMissing", "declare spec.governance.classification (public, internal, confidential, restricted)"
    personal = [c.name for c in columns if c.pii in ("direct", "sensitive")]
    if tags.classification == "public" and personal:
        return False, "PIIInPublicData", (f"column {personal[0]!r} holds {next(c.pii for c in columns if c.name == personal[0])}"
                                          f" PII but the data is classified public")
    pii = [f"{c.name} ({c.pii})" for c in columns if c.pii != "none"]
    return True, "Tagged", (f"licence {tags.license}, {tags.classification}"
                            + (f"; PII columns: {', '.join(pii)}" if pii else "; no PII columns"))
