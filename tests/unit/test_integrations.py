"""The background sender and the transition rules that decide what gets sent."""

from __future__ import annotations

import threading

from openlineage.client.event_v2 import RunState

from mloop.integrations.cloudevents_sink import transitions
from mloop.integrations.dispatch import Dispatcher
from mloop.integrations.lineage import _terminal, s3_path
from mloop.reconcile.outcome import Event


def test_dispatcher_retries_with_backoff_keeps_order_and_drops_the_oldest_when_full() -> None:
    dispatcher = Dispatcher("unit", capacity=2, first_backoff=0.01, max_backoff=0.02)
    gate, sent, tries = threading.Event(), [], {"flaky": 0}

    def send(label: str):
        def go() -> None:
            if label == "first":
                gate.wait(10)
            if label == "flaky" and tries["flaky"] < 2:
                tries["flaky"] += 1
                raise ConnectionError("sink down")
            sent.append(label)
        return go

    dispatcher.submit("first", send("first"), attempts=1)
    while dispatcher.queue.qsize():  # the worker has taken "first" and waits on the gate
        pass
    for label in ("dropped", "flaky", "last"):
        dispatcher.submit(label, send(label), attempts=3)
    gate.set()
    assert dispatcher.drain(timeout=10)
    assert sent == ["first", "flaky", "last"] and tries["flaky"] == 2


def test_dispatcher_gives_up_after_its_attempts_without_raising() -> None:
    dispatcher = Dispatcher("unit-fail", first_backoff=0.001)
    calls = []
    dispatcher.submit("doomed", lambda: calls.append(1) or (_ for _ in ()).throw(OSError("refused")), attempts=3)
    assert dispatcher.drain(timeout=10) and len(calls) == 3


def test_a_run_finishes_once_whatever_its_reason() -> None:
    failed = transitions("TrainingRun", {"phase": "Running"}, {"phase": "Failed", "failure": "TrialFailed: x"},
                         [Event("Warning", "TrialFailed", "x")])
    assert [(t, e.reason) for t, e in failed] == [("trainingrun.finished", "TrialFailed")]
    assert transitions("TrainingRun", {"phase": "Succeeded"}, {"phase": "Succeeded"}, []) == []
    assert [t for t, _ in transitions("Dataset", {}, {}, [Event("Normal", "VersionCut", "v")])] == ["dataset.version.cut"]
    assert transitions("Dataset", {}, {}, [Event("Normal", "Unchanged", "same")]) == []


def test_lineage_end_states() -> None:
    ready = {"task": None, "conditions": [{"type": "Ready", "status": "True", "reason": "VersionCut"}]}
    storage = {"task": None, "conditions": [{"type": "Ready", "status": "Unknown", "reason": "StorageUnavailable"}]}
    waiting = {"task": None, "conditions": [{"type": "Ready", "status": "Unknown", "reason": "NotEnoughRows"}]}
    assert _terminal("Dataset", {"task": "ingest-x"}, ready) == RunState.COMPLETE
    assert _terminal("Dataset", {"task": "ingest-x"}, storage) == RunState.FAIL
    assert _terminal("Dataset", {"task": "ingest-x"}, waiting) == RunState.COMPLETE
    assert _terminal("Dataset", {}, ready) is None  # no task ended: a governance-only edit
    assert _terminal("ModelPackage", {"phase": "Packaging"}, {"phase": "Packaged"}) == RunState.COMPLETE
    assert _terminal("ModelPackage", {"phase": "Packaged"}, {"phase": "Packaged"}) is None
    assert _terminal("TrainingRun", {}, {"phase": "Failed"}) == RunState.FAIL
    assert s3_path("s3://b/datasets/ns/iris/abc/") == ("s3://b", "datasets/ns/iris/abc")


def test_openlineage_http_transport_posts_the_event_with_its_api_key() -> None:
    """A real loopback HTTP endpoint stands in for Marquez: the path, the bearer key and the event body."""
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from mloop.config import Settings
    from mloop.integrations.lineage import build, client

    received: list[tuple[str, str, dict]] = []

    class Lineage(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append((self.path, self.headers.get("Authorization", ""), body))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Lineage)
    threading.Thread(target=server.handle_request, daemon=True).start()
    settings = Settings(openlineage_transport="http", openlineage_url=f"http://127.0.0.1:{server.server_port}",
                        openlineage_api_key="k-123", bucket="lake")
    meta = {"namespace": "team-a", "name": "iris", "uid": "0b6c1a56-3f7e-4a3e-9c55-1f0d1d2b3c4d"}
    status = {"digest": "sha256:" + "ab" * 32, "rows": 150, "columns": [{"name": "species", "type": "category"}]}
    event = build("Dataset", meta, {"source": {"builtin": {"name": "iris"}}}, status, RunState.COMPLETE,
                  "ingest-iris-1", "2026-11-27T00:00:00+00:00", settings)
    client(settings).emit(event)
    server.server_close()
    [(path, auth, body)] = received
    assert path == "/api/v1/lineage" and auth == "Bearer k-123"
    assert body["eventType"] == "COMPLETE" and body["job"]["name"] == "team-a/datasets/iris"
    assert body["inputs"][0]["namespace"] == "builtin://scikit-learn"
    assert body["outputs"][0]["namespace"] == "s3://lake"


def test_a_pass_writes_only_when_its_patch_changes_the_object() -> None:
    from mloop.handlers.common import changes

    body = {"status": {"phase": "Running", "task": "train-x", "conditions": [{"type": "Succeeded"}]}}
    assert not changes(body, {"status": {"phase": "Running", "conditions": [{"type": "Succeeded"}]}})
    assert not changes(body, {"status": {"cacheSource": None}})
    assert changes(body, {"status": {"task": None}})
    assert changes(body, {"status": {"phase": "Succeeded"}})
    assert changes(body, {"metadata": {"labels": {"mloop.dev/experiment": "iris"}}})


def test_what_a_transition_owes_is_named_by_the_version_it_was_decided_on() -> None:
    """Two passes on the same body owe the same entries (one write can win); a later body owes new ones."""
    from mloop.handlers.common import owed
    from mloop.reconcile.outcome import Event, Outcome

    outcome = Outcome({"phase": "Running"}, [Event("Normal", "RunStarted", "train task on iris@abc")])
    meta = {"uid": "u-1", "resourceVersion": "41", "namespace": "ns", "name": "r"}
    first, again = owed("TrainingRun", meta, {}, outcome), owed("TrainingRun", meta, {}, outcome)
    later = owed("TrainingRun", {**meta, "resourceVersion": "42"}, {}, outcome)
    assert first == again and [e["reason"] for e in first] == ["RunStarted"]
    assert first[0]["id"] != later[0]["id"]
