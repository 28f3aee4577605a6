"""Which version of a combined Dataset a retraining pins: the one made from the collection version that fired it."""

from __future__ import annotations

import pytest

from mloop.api.dataset import DatasetStatus
from mloop.reconcile.requirements import including_version

NEW, OLD = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def union(version: str | None, feedback_digest: str, phase: str = "Ready") -> DatasetStatus:
    parents = [{"name": "iris", "namespace": "ns", "version": "a" * 12, "digest": "sha256:" + "a" * 64},
               {"name": "feedback", "namespace": "ns", "version": feedback_digest[7:19], "digest": feedback_digest}]
    return DatasetStatus.model_validate({"phase": phase, "version": version, "parents": parents})


@pytest.mark.parametrize("combined, expected", [
    (union("c" * 12, NEW), "c" * 12),          # made from the new collection version: pin it
    (union("c" * 12, OLD), None),              # still the union of the previous collection version: wait
    (union("c" * 12, NEW, "Failed"), None),    # the union could not be cut: wait (its status says why)
    (union(None, NEW), None),
    (None, None),                              # no such Dataset yet
])
def test_the_union_version_holding_the_new_rows_is_pinned(combined, expected) -> None:
    assert including_version(combined, "ns", "feedback", NEW) == expected


def test_a_parent_of_the_same_name_in_another_namespace_is_not_it() -> None:
    assert including_version(union("c" * 12, NEW), "other", "feedback", NEW) is None
