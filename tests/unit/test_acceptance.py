"""The acceptance step: valid specs are acknowledged, others fail with the field path; events only on flips."""

from __future__ import annotations

from datetime import datetime, timezone

from mloop.api.kinds import kind_by_name
from mloop.reconcile.acceptance import accept

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
DATASET = kind_by_name("dataset")


def test_valid_spec_is_accepted_with_an_event() -> None:
    outcome = accept(DATASET, {"source": {"builtin": {"name": "iris"}}}, {}, 1, NOW)
    assert outcome.status["observedGeneration"] == 1
    assert outcome.status["phase"] == "Pending"
    assert outcome.status["conditions"][0]["status"] == "True"
    assert [(e.type, e.reason) for e in outcome.events] == [("Normal", "SpecValid")]


def test_accepting_again_posts_no_second_event_and_keeps_phase() -> None:
    first = accept(DATASET, {"source": {"builtin": {"name": "iris"}}}, {}, 1, NOW)
    again = accept(DATASET, {"source": {"builtin": {"name": "iris"}}}, {**first.status, "phase": "Ready"}, 2, NOW)
    assert again.events == []
    assert "phase" not in again.status
    assert again.status["observedGeneration"] == 2


def test_invalid_spec_names_the_field() -> None:
    spec = {"source": {"inline": {"columns": ["a", "b"], "rows": [[1, 2], [3]]}}}
    outcome = accept(DATASET, spec, {}, 4, NOW)
    cond = outcome.status["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert cond["message"].startswith("spec.source.inline:")
    assert outcome.status["phase"] == "Failed"
    assert outcome.events[0].type == "Warning"


def test_kind_lookup_by_any_name() -> None:
    assert kind_by_name("tr").kind == kind_by_name("trainingruns").kind == "TrainingRun"
    assert kind_by_name("dset").kind == "Dataset"
