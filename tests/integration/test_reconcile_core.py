"""The reconcile core against the real API server: preconditioned status writes, the outbox, and no finalizer at rest."""

from __future__ import annotations

from typing import Any

from tests.helpers import apply_object, condition, get_object, k8s_events, wait_for


def _dataset(kubectl: Any, api_client: Any, namespace: str, name: str) -> dict:
    apply_object(kubectl, namespace, "Dataset", name, {"source": {"builtin": {"name": "iris"}}})
    return get_object(api_client, namespace, "datasets", name)


def test_a_status_write_on_a_stale_body_changes_nothing(kubectl, api_client, namespace) -> None:
    from mloop.handlers.common import patch_status

    obj = _dataset(kubectl, api_client, namespace, "stale")
    stale = obj["metadata"]["resourceVersion"]
    assert patch_status("datasets", namespace, "stale", {"phase": "Pending"}, stale) is not None
    assert patch_status("datasets", namespace, "stale", {"phase": "Failed"}, stale) is None  # 409: moved on
    assert get_object(api_client, namespace, "datasets", "stale")["status"]["phase"] == "Pending"


def test_two_passes_on_one_body_write_once_and_post_one_event(kubectl, api_client, namespace) -> None:
    from mloop.handlers.common import commit
    from mloop.reconcile.outcome import Event, Outcome

    body = _dataset(kubectl, api_client, namespace, "twice")
    outcome = Outcome({"phase": "Pending"}, [Event("Normal", "Probe", "decided once")])
    assert commit(body, outcome) is not None
    assert commit(body, outcome) is None  # the same decision on the same (now stale) body: refused
    assert [r for r, _ in k8s_events(api_client, namespace, "twice")] == ["Probe"]
    assert not get_object(api_client, namespace, "datasets", "twice")["status"].get("outbox")


def test_events_owed_by_a_write_are_sent_once_after_a_crash(kubectl, api_client, namespace) -> None:
    """A kill after the status write and before the events went out leaves them in status.outbox: the next
    operator sends them, once, however often it starts."""
    from kopf.testing import KopfRunner

    from mloop.handlers.common import drain, patch_status

    obj = _dataset(kubectl, api_client, namespace, "owed")
    owed = [{"id": "a1", "type": "Normal", "reason": "Owed", "message": "written before the crash"}]
    written = patch_status("datasets", namespace, "owed", {"outbox": owed}, obj["metadata"]["resourceVersion"])
    assert written is not None
    drain(written)
    drain(written)  # a second sender of the same entry: refused by name
    assert k8s_events(api_client, namespace, "owed") == [("Owed", "written before the crash")]

    obj = get_object(api_client, namespace, "datasets", "owed")
    again = [{"id": "b2", "type": "Warning", "reason": "OwedToo", "message": "left for the next operator"}]
    assert patch_status("datasets", namespace, "owed", {"outbox": again}, obj["metadata"]["resourceVersion"])
    for _ in range(2):
        with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"], timeout=120):
            wait_for(lambda: condition(get_object(api_client, namespace, "datasets", "owed"), "Ready") and
                     not get_object(api_client, namespace, "datasets", "owed")["status"].get("outbox"), timeout=90)
    reasons = sorted(r for r, _ in k8s_events(api_client, namespace, "owed"))
    assert reasons.count("OwedToo") == 1 and reasons.count("Owed") == 1


def test_an_object_at_rest_has_no_finalizer_and_deletes_while_the_operator_is_down(kubectl, api_client,
                                                                                     namespace) -> None:
    from kopf.testing import KopfRunner

    with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"], timeout=120):
        apply_object(kubectl, namespace, "Dataset", "rest", {"source": {"builtin": {"name": "iris"}}})
        wait_for(lambda: (condition(get_object(api_client, namespace, "datasets", "rest"), "Ready") or {})
                 .get("status") == "True", timeout=90)
        wait_for(lambda: not get_object(api_client, namespace, "datasets", "rest")["metadata"].get("finalizers"),
                 timeout=30)
    done = kubectl("delete", "dataset", "rest", "-n", namespace, "--wait=true", "--timeout=20s")
    assert done.returncode == 0, done.stderr


def test_a_team_namespace_at_rest_deletes_while_the_operator_is_down(kubectl, api_client) -> None:
    """A platform team's teardown: `kubectl delete namespace` with a Dataset, a run and a package at rest in it
    completes with no operator running, and takes them with it."""
    import uuid

    from kopf.testing import KopfRunner
    from kubernetes import client

    team = f"team-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api_client).create_namespace({"metadata": {"name": team}})
    settled = {"datasets": ("iris", "Ready"), "trainingruns": ("fit", "Succeeded"),
               "modelpackages": ("iris-1", "Packaged")}
    try:
        with KopfRunner(["run", "--standalone", "--namespace", team, "-m", "mloop.handlers"], timeout=120):
            apply_object(kubectl, team, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
            apply_object(kubectl, team, "TrainingRun", "fit", {"datasetRef": {"name": "iris"}, "target": "species",
                                                               "estimator": {"name": "LogisticRegression"}})
            apply_object(kubectl, team, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "fit"}})
            for plural, (name, phase) in settled.items():
                wait_for(lambda: (o := get_object(api_client, team, plural, name)).get("status", {}).get("phase")
                         == phase and not o["metadata"].get("finalizers"), timeout=120)
        done = kubectl("delete", "namespace", team, "--wait=true", "--timeout=60s")
        assert done.returncode == 0, done.stderr
        assert kubectl("get", "namespace", team).returncode != 0  # gone, with everything in it
    finally:  # after a failure: no namespace left for later tests
        kubectl("delete", "namespace", team, "--wait=false", "--ignore-not-found")


def test_a_null_grid_candidate_is_kept_and_does_not_block_status_writes(kubectl, api_client, namespace) -> None:
    """None is a real candidate (max_depth: null); a schema that called it invalid data failed every status write."""
    from mloop.handlers.common import patch_status

    apply_object(kubectl, namespace, "TrainingRun", "grid", {
        "datasetRef": {"name": "iris"}, "target": "species", "estimator": {"name": "RandomForestClassifier"},
        "search": {"type": "grid", "parameters": {"max_depth": [2, None]}}})
    obj = get_object(api_client, namespace, "trainingruns", "grid")
    assert obj["spec"]["search"]["parameters"]["max_depth"] == [2, None]
    written = patch_status("trainingruns", namespace, "grid", {"phase": "Pending"}, obj["metadata"]["resourceVersion"])
    assert written is not None and written["status"]["phase"] == "Pending"


def test_an_object_in_flight_leaves_its_posted_events_for_its_next_write(kubectl, api_client, namespace) -> None:
    """No write of their own for events posted while a timer is sure to come back: the next transition's write
    drops them, and the one that brings the object to rest takes what is left. Each event is posted once."""
    from mloop.handlers.common import commit
    from mloop.reconcile.outcome import Event, Outcome

    def in_flight(status: Any) -> bool:
        return status.get("phase") != "Ready"

    body = _dataset(kubectl, api_client, namespace, "inflight")
    first = commit(body, Outcome({"phase": "Pending"}, [Event("Normal", "Started", "one")]), in_flight)
    assert first is not None
    fresh = get_object(api_client, namespace, "datasets", "inflight")
    assert fresh["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]  # no write to take it out
    assert [e["reason"] for e in fresh["status"]["outbox"]] == ["Started"]
    assert commit(fresh, Outcome({"phase": "Pending"}, []), in_flight) == fresh  # a pass with nothing to do: no write
    second = commit(fresh, Outcome({"phase": "Ingesting"}, [Event("Normal", "Next", "two")]), in_flight)
    assert second is not None and [e["reason"] for e in second["status"]["outbox"]] == ["Next"]
    assert commit(second, Outcome({"phase": "Ready"}, []), in_flight) is not None
    assert not get_object(api_client, namespace, "datasets", "inflight")["status"].get("outbox")
    assert sorted(k8s_events(api_client, namespace, "inflight")) == [("Next", "two"), ("Started", "one")]


def test_a_write_that_lost_only_to_kopfs_metadata_still_stands(kubectl, api_client, namespace) -> None:
    """kopf adds its timer's finalizer just as a first pass writes: that 409 is not a move of what the pass decided
    on, so the write is made on the fresh resourceVersion rather than the step redone. A body written over is
    known stale; a change of status by anyone else still wins."""
    from kubernetes import client

    from mloop.handlers.common import commit, known_stale
    from mloop.reconcile.outcome import Event, Outcome

    body = _dataset(kubectl, api_client, namespace, "kopfmoved")
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "mloop.dev", "v1alpha1", namespace, "datasets", "kopfmoved", {"metadata": {"finalizers": ["mloop.dev/finalizer"]}})
    written = commit(body, Outcome({"phase": "Pending"}, [Event("Normal", "Decided", "on the older body")]))
    assert written is not None and written["status"]["phase"] == "Pending"
    assert known_stale(body) and not known_stale(written)
    assert commit(body, Outcome({"phase": "Failed"}, [])) is None  # its status moved: the stale pass changes nothing
    obj = get_object(api_client, namespace, "datasets", "kopfmoved")
    assert obj["status"]["phase"] == "Pending" and k8s_events(api_client, namespace, "kopfmoved") == [
        ("Decided", "on the older body")]
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "mloop.dev", "v1alpha1", namespace, "datasets", "kopfmoved", {"metadata": {"finalizers": None}})


def test_a_run_in_flight_has_no_finalizer_and_a_deleted_one_is_left_alone(kubectl, api_client, s3, namespace) -> None:
    """A run waiting for its Dataset is in flight (its timer visits it), yet holds no finalizer: deleted while the
    operator runs, its timer stops, so when the Dataset appears nothing is started for it (no spec.json in S3, no
    Job); deleted while the operator is down, the delete completes at once."""
    from kopf.testing import KopfRunner

    from mloop.storage.layout import run_prefix

    spec = {"datasetRef": {"name": "later"}, "target": "species", "estimator": {"name": "LogisticRegression"},
            "executor": "kubernetes"}

    def waiting(name: str) -> bool:
        return (condition(get_object(api_client, namespace, "trainingruns", name), "Succeeded") or {}).get(
            "reason") == "WaitingForDataset"

    with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"], timeout=120) as runner:
        apply_object(kubectl, namespace, "TrainingRun", "gone", spec)
        apply_object(kubectl, namespace, "TrainingRun", "kept", spec)
        wait_for(lambda: waiting("gone") and waiting("kept"), timeout=60)
        gone = get_object(api_client, namespace, "trainingruns", "gone")
        assert not gone["metadata"].get("finalizers")
        done = kubectl("delete", "trainingrun", "gone", "-n", namespace, "--wait=true", "--timeout=20s")
        assert done.returncode == 0, done.stderr
        apply_object(kubectl, namespace, "Dataset", "later", {"source": {"builtin": {"name": "iris"}}})
        wait_for(lambda: get_object(api_client, namespace, "trainingruns", "kept")["status"].get("task"), timeout=90)
        jobs = kubectl("get", "jobs", "-n", namespace, "-o", "name", check=True).stdout.split()
        assert len(jobs) == 1, jobs  # the kept run's only
        prefix = run_prefix(namespace, "gone", gone["metadata"]["uid"])
        assert not s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents")
        assert not get_object(api_client, namespace, "trainingruns", "kept")["metadata"].get("finalizers")
    assert runner.exception is None, runner.output[-3000:]
    done = kubectl("delete", "trainingrun", "kept", "-n", namespace, "--wait=true", "--timeout=20s")
    assert done.returncode == 0, done.stderr
