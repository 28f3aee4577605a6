"""MLflow export of succeeded TrainingRuns, against a real MLflow tracking server started as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import apply_object, condition, get_object, operator_settings, wait_for
from tests.integration.test_trainingrun import IRIS_RUN, succeeded

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` with a SQLite backend and local proxied artifacts, in its own process group."""

    def __init__(self, port: int, root: Path):
        self.port, self.root = port, root
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
            cwd=self.root, stdout=(self.root / "server.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = started + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"mlflow server not ready within {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server, its uvicorn worker and its job runner
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def mlflow_port() -> int:
    return free_port()


@pytest.fixture
def mlflow_settings(monkeypatch: pytest.MonkeyPatch, mlflow_port: int) -> Iterator[str]:
    """The operator exports to 127.0.0.1:<mlflow_port>, retrying at most 2s apart; list it before `operator`."""
    uri = f"http://127.0.0.1:{mlflow_port}"
    # MLFLOW_ALLOW_PICKLE_DESERIALIZATION: for the test's own load of the model
    with operator_settings(monkeypatch, MLOOP_MLFLOW_TRACKING_URI=uri, MLOOP_MLFLOW_RETRY_MAX_SECONDS="2",
                           MLFLOW_ALLOW_PICKLE_DESERIALIZATION="true"):
        yield uri


@pytest.fixture
def mlflow_server(mlflow_port: int, tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(mlflow_port, tmp_path / "mlflow")
    server.start()
    yield server
    server.stop()


def export_condition(api_client: Any, namespace: str, name: str, status: str) -> dict | None:
    obj = get_object(api_client, namespace, "trainingruns", name)
    found = condition(obj, "MLflowExported")
    return obj if found and found["status"] == status else None


def event_reasons(api_client: Any, namespace: str, name: str) -> list[str]:
    from kubernetes import client

    found = client.CoreV1Api(api_client).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in found.items]


def runs_of(mlflow_client: Any, uid: str) -> list[Any]:
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    return mlflow_client.search_runs(experiments, filter_string=f"tags.`mloop.k8s.uid` = '{uid}'")


def iris_rows(features: list[str]) -> tuple[Any, Any]:
    from mloop.api.dataset import BuiltinSource
    from mloop.data.tables import load_builtin

    frame = load_builtin(BuiltinSource(name="iris"))
    return frame[features], frame["species"]


def test_succeeded_run_is_exported_with_a_signed_skops_model(mlflow_server, mlflow_settings, kubectl, api_client,
                                                             namespace, operator, tmp_path) -> None:
    import mlflow
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.uri)
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    apply_object(kubectl, namespace, "Requirement", "good-iris", {"title": "Good iris", "metrics": [
        {"metric": "accuracy", "min": 0.8, "primary": True}]})
    apply_object(kubectl, namespace, "TrainingRun", "iris-lr", {**IRIS_RUN, "requirementRefs": [{"name": "good-iris"}]})
    apply_object(kubectl, namespace, "TrainingRun", "opted-out", {**IRIS_RUN, "mlflow": {"enabled": False}})
    # An earlier attempt that died after creating the MLflow run and logging one param: the export must
    # finish that run, not start a second one. (The run is still training: ingest and fit take seconds.)
    obj = get_object(api_client, namespace, "trainingruns", "iris-lr")
    uid = obj["metadata"]["uid"]
    assert (obj.get("status") or {}).get("phase") != "Succeeded"
    earlier = client.create_run(client.create_experiment("iris"), run_name="iris-lr", tags={"mloop.k8s.uid": uid})
    client.log_param(earlier.info.run_id, "max_iter", "500")

    obj = succeeded(api_client, namespace, "iris-lr")
    obj = wait_for(lambda: export_condition(api_client, namespace, "iris-lr", "True"), timeout=60)
    status = obj["status"]
    assert condition(obj, "Ready")["status"] == "True"
    exported = condition(obj, "MLflowExported")
    assert exported["reason"] == "Exported" and status["mlflow"]["runId"] in exported["message"]
    assert status["mlflow"]["state"] == "Exported" and status["mlflow"]["attempts"] == 1
    assert status["mlflow"]["runId"] == earlier.info.run_id
    assert [r.info.run_id for r in runs_of(client, uid)] == [earlier.info.run_id]

    run = client.get_run(earlier.info.run_id)
    assert run.info.status == "FINISHED" and run.info.experiment_id == status["mlflow"]["experimentId"]
    assert run.data.params == {"max_iter": "500", "estimator": "LogisticRegression"}
    assert run.data.metrics == pytest.approx(status["metrics"])
    tags = run.data.tags
    assert tags["mloop.dataset.digest"] == status["datasetDigest"] and tags["mloop.dataset"] == status["dataset"]
    assert tags["mloop.requirements"] == "good-iris" and tags["mloop.requirementsMet"] == "true"
    assert (tags["mloop.k8s.namespace"], tags["mloop.k8s.name"]) == (namespace, "iris-lr")
    assert tags["mloop.model.digest"] == status["modelDigest"]
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "iris" and dataset_input.dataset.digest == status["datasetVersion"]

    logged = client.get_logged_model(status["mlflow"]["modelUri"].removeprefix("models:/"))
    assert logged.status.name == "READY" and logged.source_run_id == earlier.info.run_id
    # By the artifact location, with the server named: a models:/ URI would resolve against the global tracking URI.
    local = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, tracking_uri=mlflow_server.uri,
                                                dst_path=str(tmp_path / "model"))
    meta = Model.load(local)
    assert meta.flavors["sklearn"]["serialization_format"] == "skops"
    features = meta.signature.inputs.input_names()
    assert features == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert meta.signature.outputs.input_names() == ["species"]
    x, y = iris_rows(features)
    model = mlflow.sklearn.load_model(local)
    assert (model.predict(x) == y).mean() > 0.9
    assert list(mlflow.pyfunc.load_model(local).predict(x.head(5))) == list(model.predict(x.head(5)))

    wait_for(lambda: "Exported" in event_reasons(api_client, namespace, "iris-lr"))
    # A cache hit trains nothing: its export takes the model, features and params of the run it reuses.
    apply_object(kubectl, namespace, "TrainingRun", "reused", {**IRIS_RUN, "cachePolicy": "reuse"})
    reused = wait_for(lambda: export_condition(api_client, namespace, "reused", "True"), timeout=60)
    source = reused["status"]["cacheSource"]  # iris-lr or opted-out, whichever finished first: the same spec
    [copy] = runs_of(client, reused["metadata"]["uid"])
    assert copy.info.run_id != earlier.info.run_id and copy.data.params == run.data.params
    assert copy.data.tags["mloop.model.s3"] == reused["status"]["modelUri"]
    assert f"/{namespace}/{source}/" in reused["status"]["modelUri"]
    opted_out = succeeded(api_client, namespace, "opted-out")
    assert "mlflow" not in opted_out["status"] and condition(opted_out, "MLflowExported") is None
    assert runs_of(client, opted_out["metadata"]["uid"]) == []
    # A run may not point the operator at a server of its choosing (credentials, internal addresses).
    apply_object(kubectl, namespace, "TrainingRun", "elsewhere", {
        **IRIS_RUN, "cachePolicy": "reuse", "mlflow": {"trackingUri": "http://169.254.169.254/latest"}})
    refused = wait_for(lambda: export_condition(api_client, namespace, "elsewhere", "False"), timeout=60)
    assert condition(refused, "MLflowExported")["reason"] == "TrackingUriNotAllowed"
    assert refused["status"]["phase"] == "Succeeded" and refused["status"]["mlflow"]["state"] == "Failed"


def test_unreachable_mlflow_leaves_the_run_succeeded_and_the_export_is_retried(
        mlflow_port, mlflow_settings, kubectl, api_client, namespace, operator, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    apply_object(kubectl, namespace, "TrainingRun", "iris-lr", {**IRIS_RUN, "mlflow": {"experiment": "retried"}})
    obj = succeeded(api_client, namespace, "iris-lr")
    assert condition(obj, "Ready")["status"] == "True"
    obj = wait_for(lambda: export_condition(api_client, namespace, "iris-lr", "False"), timeout=30)
    pending = condition(obj, "MLflowExported")
    assert pending["reason"] == "ExportPending" and "connection refused" in pending["message"]
    assert len(pending["message"]) < 300
    assert obj["status"]["phase"] == "Succeeded" and obj["status"]["mlflow"]["state"] == "Pending"

    server = MlflowServer(mlflow_port, tmp_path / "mlflow")
    server.start()
    try:
        obj = wait_for(lambda: export_condition(api_client, namespace, "iris-lr", "True"), timeout=60)
        status = obj["status"]
        assert status["phase"] == "Succeeded" and condition(obj, "Ready")["status"] == "True"
        assert status["mlflow"]["attempts"] >= 2 and "retryAt" not in status["mlflow"]
        client = MlflowClient(server.uri)
        [run] = runs_of(client, obj["metadata"]["uid"])
        assert run.info.run_id == status["mlflow"]["runId"]
        assert client.get_experiment(run.info.experiment_id).name == "retried"
        reasons = wait_for(lambda: "Exported" in (r := event_reasons(api_client, namespace, "iris-lr")) and r)
        assert "ExportPending" in reasons
    finally:
        server.stop()
