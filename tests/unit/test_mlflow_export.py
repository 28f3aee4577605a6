"""The pure pieces of the MLflow export: where a run goes, how long to wait, the signature, the error line."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from mloop.api.trainingrun import MlflowSpec, TrainingRunStatus
from mloop.config import Settings
from mloop.handlers.trainingrun import _export_due, _needs_visit
from mloop.integrations.mlflow_export import (
    ExportRefused,
    RunRecord,
    backoff_seconds,
    export_run,
    short_error,
    signature_for,
    target_for,
)


def test_backoff_doubles_from_the_poll_interval_up_to_the_cap() -> None:
    waits = [backoff_seconds(n, base=2.0, cap=300.0) for n in range(1, 11)]
    assert waits == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_seconds(0, 2.0, 300.0) == 0.0
    assert backoff_seconds(10_000, 0.5, 5.0) == 5.0  # no overflow after many attempts


@pytest.mark.parametrize(
    "block,operator_uri,operator_experiment,run_experiment,expected",
    [
        (None, "", "", "iris", None),  # off by default
        (None, "http://mlflow:5000/", "", "iris", ("http://mlflow:5000", "iris")),
        (None, "http://mlflow:5000", "", None, ("http://mlflow:5000", "team-a")),  # the namespace
        (None, "http://mlflow:5000", "shared", None, ("http://mlflow:5000", "shared")),
        (MlflowSpec(enabled=False), "http://mlflow:5000", "", "iris", None),  # a run opts out
        (MlflowSpec(tracking_uri="https://other"), "", "", "iris", ("https://other", "iris")),  # a run opts in
        (MlflowSpec(experiment="mine"), "http://mlflow:5000", "shared", "iris", ("http://mlflow:5000", "mine")),
        (MlflowSpec(), "", "", "iris", None),  # enabled, but no tracking server anywhere
    ],
)
def test_target(block, operator_uri, operator_experiment, run_experiment, expected) -> None:
    settings = Settings(mlflow_tracking_uri=operator_uri, mlflow_experiment=operator_experiment)
    target = target_for(block, run_experiment, "team-a", settings)
    assert (target and (target.tracking_uri, target.experiment)) == expected


def test_credentials_go_only_to_the_operators_own_server(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(mlflow_tracking_uri="http://mlflow:5000/")
    assert target_for(MlflowSpec(experiment="x"), None, "ns", settings).operators
    elsewhere = target_for(MlflowSpec(tracking_uri="http://elsewhere"), None, "ns", settings)
    assert not elsewhere.operators
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret")
    record = RunRecord(namespace="ns", name="r", uid="u", estimator="Ridge", model_uri="s3://b/k", model_digest="",
                       metrics={})
    with pytest.raises(ExportRefused, match="credentials"):
        export_run(elsewhere, record, store=None)  # refused before any request or read


def test_signature_from_the_recorded_features_and_types() -> None:
    types = {"age": "integer", "income": "float", "member": "boolean", "city": "category", "note": "string",
             "joined": "datetime", "label": "string"}
    features = ["age", "income", "member", "city", "note", "joined"]
    sig = signature_for(features, types, "label", "classification", np.array(["no", "yes"], dtype=object))
    assert sig.inputs.input_names() == features
    assert [t.name for t in sig.inputs.input_types()] == ["double", "double", "boolean", "string", "string",
                                                          "datetime"]
    assert sig.outputs.input_names() == ["label"] and sig.outputs.input_types()[0].name == "string"
    assert signature_for(["x"], {"x": "float"}, "digit", "classification", np.array([0, 1])).outputs \
        .input_types()[0].name == "long"
    assert signature_for(["x"], {"x": "float"}, "y", "regression").outputs.input_types()[0].name == "double"


def test_short_error() -> None:
    refused = Exception("API request to http://127.0.0.1:5/api/2.0/mlflow/experiments/get-by-name failed with "
                        "exception HTTPConnectionPool(...): Max retries exceeded (Caused by NewConnectionError("
                        "'[Errno 111] Connection refused'))")
    assert short_error(refused) == "connection refused"
    assert short_error(RuntimeError("first line\nsecond")) == "RuntimeError: first line"
    assert len(short_error(RuntimeError("x" * 1000))) == 200


def test_only_pending_exports_keep_a_finished_run_visited() -> None:
    assert _needs_visit({"phase": "Running"})
    assert not _needs_visit({"phase": "Succeeded"})
    assert _needs_visit({"phase": "Succeeded", "mlflow": {"state": "Pending"}})
    assert not _needs_visit({"phase": "Succeeded", "mlflow": {"state": "Exported"}})
    assert not _needs_visit({"phase": "Failed"})


def test_a_pending_export_is_due_at_its_retry_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def status(retry_at):
        return TrainingRunStatus.model_validate({"phase": "Succeeded", "mlflow": {"state": "Pending", "retryAt": retry_at}})

    assert _export_due(status((now - timedelta(seconds=1)).isoformat()), now)
    assert not _export_due(status((now + timedelta(seconds=1)).isoformat()), now)
    assert _export_due(status(None), now)
    assert not _export_due(TrainingRunStatus.model_validate({"phase": "Succeeded"}), now)


def test_a_run_names_only_allowed_tracking_servers() -> None:
    from mloop.integrations.mlflow_export import allowed

    settings = Settings(mlflow_tracking_uri="http://mlflow:5000",
                        mlflow_allowed_uris="https://mlflow.team-a.example, http://10.0.0.7:5000/")
    for uri, ok in (("http://mlflow:5000", True), ("https://mlflow.team-a.example", True),
                    ("https://mlflow.team-a.example/sub", True), ("http://10.0.0.7:5000", True),
                    ("https://mlflow.team-a.example.evil.test", False), ("http://169.254.169.254", False)):
        target = target_for(MlflowSpec(tracking_uri=uri), None, "ns", settings)
        assert allowed(target, settings) is ok, uri
    assert not allowed(target_for(MlflowSpec(tracking_uri="http://x"), None, "ns", Settings()), Settings())


def test_credentials_in_a_tracking_uri_never_reach_status_or_events() -> None:
    from pydantic import ValidationError

    from mloop.integrations.mlflow_export import shown

    assert shown("https://ops:s3cret@mlflow.example:5000/base") == "https://mlflow.example:5000/base"
    assert shown("http://mlflow:5000") == "http://mlflow:5000"
    with pytest.raises(ValidationError):  # and a run may not write them into its spec
        MlflowSpec(tracking_uri="https://ops:s3cret@mlflow.example")
