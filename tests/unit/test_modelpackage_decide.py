"""ModelPackage decisions in tables: waiting, packaging, its results and retries, promotion, serving."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from mloop.api.dataset import DatasetStatus
from mloop.api.modelpackage import ModelPackageSpec, ModelPackageStatus
from mloop.api.requirement import RequirementSpec
from mloop.api.tasks import EXIT_STORAGE, PackageResult, TaskState
from mloop.reconcile.modelpackage import (
    MAX_STORAGE_RETRIES,
    ApplyServer,
    ArchivePackage,
    ClaimVersion,
    ClusterServer,
    DeleteServer,
    EnsureLocalServer,
    LocalServer,
    PackageId,
    RunView,
    SiblingView,
    StopLocalServer,
    SubmitTask,
    World,
    WriteSpec,
    archived,
    attempt_of,
    decide,
    in_flight,
    invalid_spec,
    package_task,
)

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
ME = PackageId("ns", "iris-2", "uid-2", 1)
DIGEST = "sha256:" + "ab" * 32
OLD_DIGEST = "sha256:" + "cd" * 32
RUN = RunView(name="lr", uid="run-uid", phase="Succeeded", metrics={"accuracy": 0.95}, model_digest=DIGEST,
              model_uri="s3://b/runs/ns/lr/run-uid/model.skops", dataset_digest=DIGEST, requirement_refs=("req",))
REQ = RequirementSpec.model_validate({"title": "t", "metrics": [{"metric": "accuracy", "min": 0.9, "primary": True}]})
STRICT = RequirementSpec.model_validate({"title": "t", "metrics": [{"metric": "accuracy", "min": 0.99}]})
ROWS = RequirementSpec.model_validate({"title": "t", "data": {"minRows": 100}})
TASK = package_task(ME.name, ME.uid, 0)
PACKAGED = {"phase": "Packaged", "version": 2, "uri": "s3://b/packages/ns/iris/2/", "digest": DIGEST,
            "formats": ["skops"], "stage": "None"}
OK = PackageResult(status="Succeeded", reason="Packaged", message="iris v2: skops, onnx", uri="s3://b/packages/ns/iris/2/",
                   digest=DIGEST, formats=["skops", "onnx"], onnx="ONNX parity: labels agree on 100% of 38 rows")


def spec(**kw) -> ModelPackageSpec:
    return ModelPackageSpec.model_validate({"model": "iris", "trainingRunRef": {"name": "lr"}, **kw})


def status(**kw) -> ModelPackageStatus:
    return ModelPackageStatus.model_validate(kw)


def world(**kw) -> World:
    return World(**{"package": ME, "run": RUN, "requirements": {"req": REQ}, "dataset": None, **kw})


def sibling(name: str = "iris-1", version: int = 1, desired: str = "Production", granted: str | None = "Production",
            eligible: bool = True, accuracy: float | None = 0.9) -> SiblingView:
    return SiblingView(name, version, desired, granted, eligible, {} if accuracy is None else {"accuracy": accuracy})


def condition(decision, type_: str) -> tuple[str, str, str]:
    found = next(c for c in decision.status["conditions"] if c["type"] == type_)
    return found["status"], found["reason"], found["message"]


def kinds(decision) -> list[str]:
    return [type(a).__name__ for a in decision.actions]


def reasons(decision) -> list[str]:
    return [e.reason for e in decision.events]


# (id, spec, status, world, phase written, Packaged condition (status, reason), actions, events)
TRANSITIONS = [
    ("run-missing", spec(), status(), world(run=None), "Pending", ("Unknown", "WaitingForTrainingRun"), [],
     ["WaitingForTrainingRun"]),
    ("run-running", spec(), status(phase="Pending"), world(run=replace(RUN, phase="Running")), "Pending",
     ("Unknown", "WaitingForTrainingRun"), [], ["WaitingForTrainingRun"]),
    ("run-failed", spec(), status(phase="Pending"), world(run=replace(RUN, phase="Failed", failure="TargetNotFound: x")),
     "Failed", ("False", "TrainingRunFailed"), [], ["TrainingRunFailed"]),
    ("requirement-missing", spec(), status(), world(requirements={"req": None}), "Pending",
     ("Unknown", "WaitingForRequirement"), [], ["WaitingForRequirement"]),
    ("claim-first", spec(), status(), world(siblings=(sibling(),)), None, None, ["ClaimVersion"], []),
    ("version-claimed-starts-packaging", spec(), status(), world(claimed_version=2), "Packaging",
     ("Unknown", "Packaging"), ["WriteSpec", "SubmitTask"], ["Packaging"]),
    ("storage-down-before-start", spec(), status(), world(storage_ok=False), "Pending",
     ("Unknown", "StorageUnavailable"), [], ["StorageUnavailable"]),
    ("task-running", spec(), status(phase="Packaging", task=TASK, version=2), world(task=TaskState("Running")),
     None, None, [], []),
    ("task-succeeded", spec(formats=["onnx"]), status(phase="Packaging", task=TASK, version=2),
     world(task=TaskState("Succeeded", exit_code=0), result=OK), "Packaged", ("True", "Packaged"), [],
     ["Packaged"]),
    ("task-refused-model", spec(), status(phase="Packaging", task=TASK, version=2),
     world(task=TaskState("Succeeded", exit_code=0),
           result=PackageResult(status="Failed", reason="DigestMismatch", message="does not match the recorded")),
     "Failed", ("False", "DigestMismatch"), [], ["DigestMismatch"]),
    ("task-crashed-without-result", spec(), status(phase="Packaging", task=TASK, version=2),
     world(task=TaskState("Failed", "Error", "exit 1", 1)), "Failed", ("False", "PackagingFailed"), [],
     ["PackagingFailed"]),
    ("exit-75-retries", spec(), status(phase="Packaging", task=TASK, version=2),
     world(task=TaskState("Failed", "Error", "", EXIT_STORAGE)), "Packaging", ("Unknown", "Packaging"),
     ["WriteSpec", "SubmitTask"], ["Packaging"]),
    ("storage-down-after-task-waits", spec(), status(phase="Packaging", task=TASK, version=2),
     world(task=TaskState("Failed", "Error", "", EXIT_STORAGE), storage_ok=False), "Packaging",
     ("Unknown", "StorageUnavailable"), [], ["StorageUnavailable"]),
    ("task-lost-resubmitted", spec(), status(phase="Packaging", task=TASK, version=2),
     world(task=TaskState("Missing")), None, None, ["SubmitTask"], []),
    ("failed-stays-failed", spec(), status(phase="Failed", observedGeneration=1), world(), None, None, [], []),
]


@pytest.mark.parametrize("case,sp,st,w,phase,packaged,actions,events", TRANSITIONS, ids=[t[0] for t in TRANSITIONS])
def test_transitions(case, sp, st, w, phase, packaged, actions, events) -> None:
    decision = decide(sp, st, w, NOW)
    assert decision.status.get("phase") == phase
    if packaged is not None:
        assert condition(decision, "Packaged")[:2] == packaged
    assert kinds(decision) == actions
    assert reasons(decision)[:len(events)] == events


def test_a_claimed_version_is_written_into_the_task_spec_with_the_judged_criteria() -> None:
    decision = decide(spec(), status(), world(claimed_version=3), NOW)
    write, submit = decision.actions
    assert isinstance(write, WriteSpec) and isinstance(submit, SubmitTask) and write.task == submit.task == TASK
    assert write.version == 3 and decision.status["version"] == 3 and decision.status["task"] == TASK
    assert write.requirements[0].name == "req" and write.requirements[0].results[0]["passed"] is True


def test_the_claim_skips_versions_siblings_show() -> None:
    decision = decide(spec(), status(), world(siblings=(sibling(version=1), sibling("iris-3", 3))), NOW)
    assert decision.actions == (ClaimVersion(frozenset({1, 3})),)
    assert "phase" not in decision.status and "version" not in decision.status


def test_exit_75_retries_under_a_new_deterministic_name_and_gives_up_in_the_end() -> None:
    lost = world(task=TaskState("Failed", "Error", "", EXIT_STORAGE))
    first = decide(spec(), status(phase="Packaging", task=TASK, version=2), lost, NOW)
    again = decide(spec(), status(phase="Packaging", task=TASK, version=2), lost, NOW)
    retry = first.status["task"]
    assert retry != TASK and retry == again.status["task"] and attempt_of(retry, ME.name, ME.uid) == 1
    assert first.status["version"] == 2
    last = package_task(ME.name, ME.uid, MAX_STORAGE_RETRIES)
    given_up = decide(spec(), status(phase="Packaging", task=last, version=2), lost, NOW)
    assert given_up.status["phase"] == "Failed" and condition(given_up, "Packaged")[1] == "StorageUnavailable"


def test_packaging_succeeded_records_formats_onnx_and_promotes() -> None:
    decision = decide(spec(formats=["onnx"], stage="Staging"), status(phase="Packaging", task=TASK, version=2),
                      world(task=TaskState("Succeeded", exit_code=0), result=OK), NOW)
    assert decision.status["formats"] == ["skops", "onnx"] and decision.status["task"] is None
    assert decision.status["digest"] == DIGEST and decision.status["stage"] == "Staging"
    assert condition(decision, "OnnxAvailable")[:2] == ("True", "ParityChecked")
    assert reasons(decision) == ["Packaged", "PromotionGranted"]


def test_onnx_unavailable_is_a_condition_not_a_failure() -> None:
    result = OK.model_copy(update={"formats": ["skops"], "onnx": "no ONNX converter for this pipeline"})
    decision = decide(spec(formats=["onnx"]), status(phase="Packaging", task=TASK, version=2),
                      world(task=TaskState("Succeeded", exit_code=0), result=result), NOW)
    assert decision.status["phase"] == "Packaged"
    assert condition(decision, "OnnxAvailable") == ("False", "OnnxUnavailable", "no ONNX converter for this pipeline")


def test_invalid_spec_fails_with_the_message() -> None:
    decision = invalid_spec(status(), "spec.model: field required", 1, NOW)
    assert decision.status["phase"] == "Failed"
    assert condition(decision, "Packaged") == ("False", "InvalidSpec", "spec.model: field required")


# (id, desired stage, requirement, siblings, granted, Promoted reason, events, archived)
PROMOTIONS = [
    ("staging-granted", "Staging", REQ, (), "Staging", "CriteriaMet", ["PromotionGranted"], []),
    ("production-granted-archives-older", "Production", REQ, (sibling(),), "Production", "CriteriaMet",
     ["PromotionGranted"], ["iris-1"]),
    ("refused-names-the-criterion", "Production", STRICT, (), "None", "CriterionFailed", ["PromotionRefused"], []),
    ("newer-holder-archives-me", "Production", REQ, (sibling("iris-3", 3),), "Archived", "Superseded", ["Archived"], []),
    ("never-held-and-refused-though-a-newer-holds-it", "Production", STRICT, (sibling("iris-3", 3),), "None",
     "CriterionFailed", ["PromotionRefused"], []),
    ("not-requested", "None", REQ, (), "None", "NotRequested", [], []),
    ("archived-on-request", "Archived", REQ, (), "Archived", "Archived", ["Archived"], []),
]


@pytest.mark.parametrize("case,desired,req,siblings,granted,reason,events,archive", PROMOTIONS,
                         ids=[p[0] for p in PROMOTIONS])
def test_promotion(case, desired, req, siblings, granted, reason, events, archive) -> None:
    decision = decide(spec(stage=desired), status(**PACKAGED), world(requirements={"req": req}, siblings=siblings), NOW)
    assert decision.status["stage"] == granted
    promoted = condition(decision, "Promoted")
    assert promoted[1] == reason
    assert reasons(decision) == events
    assert [a.name for a in decision.actions if isinstance(a, ArchivePackage)] == archive
    if reason == "CriterionFailed":
        assert promoted[2].startswith("Production refused: req/metric:accuracy is 0.95 < 0.99")


def test_a_refusal_is_announced_once() -> None:
    first = decide(spec(stage="Production"), status(**PACKAGED), world(requirements={"req": STRICT}), NOW)
    again = decide(spec(stage="Production"), status(**PACKAGED, conditions=first.status["conditions"]),
                   world(requirements={"req": STRICT}), NOW)
    assert reasons(first) == ["PromotionRefused"] and reasons(again) == []


def test_archiving_an_older_package_keeps_its_generation_and_says_who() -> None:
    decision = archived(status(**{**PACKAGED, "stage": "Production"}), 4, "superseded by iris-2 (version 2)", NOW)
    assert decision.status["stage"] == "Archived" and "observedGeneration" not in decision.status
    assert condition(decision, "Promoted") == ("False", "Superseded", "superseded by iris-2 (version 2)")
    assert reasons(decision) == ["Archived"]


def test_archiving_a_package_that_no_longer_holds_production_changes_nothing() -> None:
    """The successor's archive lands after the older package archived itself (it saw the successor first): one
    Archived event for the transition, not two."""
    already = archived(status(**{**PACKAGED, "stage": "Production"}), 1, "superseded by iris-3 (version 3)", NOW)
    again = archived(status(**PACKAGED | already.status), 1, "superseded by iris-3 (version 3)", NOW)
    assert again.status == {} and again.events == ()


def test_the_packaged_runs_primary_metric_is_in_the_status_for_kubectl_get() -> None:
    decision = decide(spec(), status(**PACKAGED), world(), NOW)
    assert decision.status["primaryMetric"] == "accuracy=0.9500"
    log_loss_first = RequirementSpec.model_validate({"title": "t", "metrics": [{"metric": "log_loss", "max": 1,
                                                                            "primary": True}]})
    run = replace(RUN, metrics={"accuracy": 0.95, "log_loss": 0.2})
    assert decide(spec(), status(**PACKAGED), world(run=run, requirements={"req": log_loss_first}), NOW).status[
        "primaryMetric"] == "log_loss=0.2000"


def test_a_superseded_package_stays_superseded_when_its_criteria_fail_against_the_new_holder() -> None:
    """The demo's old Production package: archived by its successor, then judged again. Criteria that compare it
    with Production (live rows, beats-production) now compare it with its successor and fail; that is no refusal
    to announce, nor advice to shadow its successor."""
    old = archived(status(**{**PACKAGED, "stage": "Production"}), 1, "superseded by iris-3 (version 3)", NOW)
    again = decide(spec(stage="Production"), status(**PACKAGED | old.status), world(
        requirements={"req": STRICT}, siblings=(sibling("iris-3", 3, accuracy=0.99),)), NOW)
    assert again.status["stage"] == "Archived"
    assert condition(again, "Promoted") == ("False", "Superseded", "iris-3 (version 3) holds Production for this model")
    assert reasons(again) == []


# (id, siblings, my accuracy, passed, message fragment)
IMPROVEMENT = [
    ("better", (sibling(accuracy=0.9),), 0.95, True, "0.95 > 0.9 of iris-1 in Production"),
    ("worse", (sibling(accuracy=0.97),), 0.95, False, "0.95 <= 0.97 of iris-1 in Production"),
    ("no-production-yet", (sibling(granted="Staging"),), 0.95, True, "no package is in Production yet"),
    ("not-measured", (sibling(accuracy=None),), 0.95, None, "not measured"),
]


@pytest.mark.parametrize("case,siblings,mine,passed,message", IMPROVEMENT, ids=[i[0] for i in IMPROVEMENT])
def test_require_improvement_against_the_production_sibling(case, siblings, mine, passed, message) -> None:
    run = replace(RUN, metrics={"accuracy": mine})
    decision = decide(spec(stage="Production", requireImprovement=True), status(**PACKAGED),
                      world(run=run, siblings=siblings), NOW)
    judged = next(r for r in decision.status["requirements"] if r["criterion"] == "beats-production:accuracy")
    assert judged.get("passed") == passed and message in judged["message"]
    if passed is False:
        assert decision.status["stage"] == "None" and condition(decision, "Promoted")[1] == "CriterionFailed"
        assert "beats-production:accuracy" in condition(decision, "Promoted")[2]


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    req = RequirementSpec.model_validate({"title": "t", "metrics": [{"metric": "rmse", "max": 100, "primary": True}]})
    run = replace(RUN, metrics={"rmse": 40.0, "r2": 0.5})
    holder = SiblingView("old", 1, "Production", "Production", True, {"rmse": 50.0})
    decision = decide(spec(stage="Production", requireImprovement=True), status(**PACKAGED),
                      world(run=run, requirements={"req": req}, siblings=(holder,), lower_is_better=frozenset({"rmse"})),
                      NOW)
    judged = next(r for r in decision.status["requirements"] if r["criterion"] == "beats-production:rmse")
    assert judged["passed"] is True and judged["operator"] == "<"


def test_data_criteria_judge_the_version_the_run_pinned() -> None:
    pinned = DatasetStatus.model_validate({"version": "ab" * 6, "digest": DIGEST, "rows": 150})
    decision = decide(spec(), status(**PACKAGED), world(requirements={"req": ROWS}, dataset=pinned), NOW)
    rows = next(r for r in decision.status["requirements"] if r["criterion"] == "data:minRows")
    assert rows["passed"] is True and rows["value"] == 150


SERVE = {"serve": {"replicas": 2, "samplingRate": 0.5}}
CLUSTER = {st: ClusterServer(f"iris-{st.lower()}", f"http://iris-{st.lower()}.ns.svc.cluster.local")
           for st in ("Staging", "Production")}


def cluster(stage: str, **kw) -> dict[str, ClusterServer]:
    return {**CLUSTER, stage: replace(CLUSTER[stage], exists=True, **kw)}


# (id, desired stage, serve, executor, servers, actions, Serving (status, reason), events)
SERVING = [
    ("local-start", "Staging", SERVE, "local", {}, ["EnsureLocalServer"], ("Unknown", "Starting"), ["ServerStarted"]),
    ("local-ready", "Staging", SERVE, "local", {"Staging": LocalServer("http://127.0.0.1:9", DIGEST, True, True)}, [],
     ("True", "Ready"), []),
    ("local-not-ready-yet", "Staging", SERVE, "local", {"Staging": LocalServer("http://127.0.0.1:9", DIGEST, True)}, [],
     ("Unknown", "Starting"), []),
    ("local-other-version-rolls", "Staging", SERVE, "local",
     {"Staging": LocalServer("http://127.0.0.1:9", OLD_DIGEST, True)}, ["EnsureLocalServer"], ("Unknown", "Starting"),
     ["ServerRolled"]),
    ("local-died-restarts", "Staging", SERVE, "local",
     {"Staging": LocalServer("http://127.0.0.1:9", DIGEST, False)}, ["EnsureLocalServer"], ("Unknown", "Starting"),
     ["ServerRestarted"]),
    ("local-newer-version-kept", "Staging", SERVE, "local",
     {"Staging": LocalServer("http://127.0.0.1:9", OLD_DIGEST, True, True, version=3)}, [], ("False", "Superseded"), []),
    ("local-not-wanted-stops", "None", SERVE, "local", {"Staging": LocalServer("http://127.0.0.1:9", DIGEST, True)},
     ["StopLocalServer"], None, ["ServerStopped"]),
    ("local-no-serve-spec", "Staging", {}, "local", {}, [], None, []),
    ("cluster-create", "Production", SERVE, "kubernetes", CLUSTER, ["ApplyServer"], ("Unknown", "Rolling"),
     ["ServerStarted"]),
    ("cluster-roll", "Production", SERVE, "kubernetes", cluster("Production", owner_uid="uid-1", digest=OLD_DIGEST),
     ["ApplyServer"], ("Unknown", "Rolling"), ["ServerRolled"]),
    ("cluster-available", "Production", SERVE, "kubernetes",
     cluster("Production", owner_uid=ME.uid, digest=DIGEST, available=2), ["ApplyServer"], ("True", "Available"), []),
    ("cluster-left-stage-deletes-own", "None", SERVE, "kubernetes", cluster("Production", owner_uid=ME.uid, digest=DIGEST),
     ["DeleteServer"], None, ["ServerDeleted"]),
    ("cluster-left-stage-keeps-newer-owner", "None", SERVE, "kubernetes",
     cluster("Production", owner_uid="uid-3", digest=OLD_DIGEST), [], None, []),
    ("cluster-moved-stage", "Staging", SERVE, "kubernetes", cluster("Production", owner_uid=ME.uid, digest=DIGEST),
     ["DeleteServer", "ApplyServer"], ("Unknown", "Rolling"), ["ServerDeleted", "ServerStarted"]),
]


@pytest.mark.parametrize("case,desired,serve,executor,servers,actions,serving,events", SERVING,
                         ids=[s[0] for s in SERVING])
def test_serving(case, desired, serve, executor, servers, actions, serving, events) -> None:
    w = world(executor=executor, **({"local": servers} if executor == "local" else {"cluster": servers}))
    running = [s.endpoint for s in servers.values() if s.alive] if executor == "local" else [
        s.url for s in servers.values() if s.exists]
    decision = decide(spec(stage=desired, **serve), status(**PACKAGED, endpoint=next(iter(running), None)), w, NOW)
    assert kinds(decision) == actions
    if serving is not None:
        assert condition(decision, "Serving")[:2] == serving
    assert [r for r in reasons(decision) if r.startswith("Server")] == events


@pytest.mark.parametrize("executor,servers,stop", [
    ("local", {"Staging": LocalServer("http://127.0.0.1:9", DIGEST, True, True)}, "StopLocalServer"),
    ("kubernetes", cluster("Staging", owner_uid=ME.uid, digest=DIGEST), "DeleteServer")])
def test_a_server_left_is_announced_once_though_later_passes_still_see_it(executor, servers, stop) -> None:
    """The pass that takes the endpoint out of the status announces the stop; a pass that still sees the server (a
    local server flushes its collection for seconds before it exits; the index lags a delete) stops it silently."""
    w = world(executor=executor, **({"local": servers} if executor == "local" else {"cluster": servers}))
    endpoint = servers["Staging"].endpoint if executor == "local" else servers["Staging"].url
    serving = status(**{**PACKAGED, "stage": "Staging", "endpoint": endpoint})
    first = decide(spec(stage="None", **SERVE), serving, w, NOW)
    assert kinds(first) == [stop] and first.status["endpoint"] is None
    again = decide(spec(stage="None", **SERVE), status(**{**PACKAGED, **first.status}), w, NOW)
    assert kinds(again) == [stop]
    assert [r for r in reasons(first) if r.startswith("Server")] and not reasons(again)


@pytest.mark.parametrize("owner_version,rolls", [(3, False), (1, True)])
def test_a_deployment_a_newer_version_took_is_never_rolled_back(owner_version, rolls) -> None:
    """The newer package writes its stage, then applies its Deployment; an index that shows the Deployment first
    must not make this (older) Production package apply its own version over it."""
    owner = replace(sibling(f"iris-{owner_version}", owner_version, granted=None), eligible=False)  # stale: packaging
    servers = cluster("Production", owner_uid=f"uid-{owner_version}", owner_package=owner.name, digest=OLD_DIGEST)
    decision = decide(spec(stage="Production", **SERVE), status(**{**PACKAGED, "stage": "Production"}),
                      world(executor="kubernetes", cluster=servers, siblings=(owner,)), NOW)
    assert ("ApplyServer" in kinds(decision)) is rolls
    if rolls:
        assert [r for r in reasons(decision) if r.startswith("Server")] == ["ServerRolled"]
    else:
        assert not [r for r in reasons(decision) if r.startswith("Server")]
        assert condition(decision, "Serving")[:2] == ("False", "Superseded")
        assert "iris-3" in condition(decision, "Serving")[2] and "endpoint" not in decision.status


def test_served_endpoints_and_server_parameters() -> None:
    local = decide(spec(stage="Staging", **SERVE), status(**PACKAGED),
                   world(local={"Staging": LocalServer("http://127.0.0.1:9", DIGEST, True, True)}), NOW)
    assert local.status["endpoint"] == "http://127.0.0.1:9"
    starting = decide(spec(stage="Staging", **SERVE), status(**PACKAGED), world(), NOW)
    assert starting.actions == (EnsureLocalServer("Staging", PACKAGED["uri"], DIGEST, 0.5, version=2),)
    assert "endpoint" not in starting.status and in_flight(starting.status)  # the timer comes back for it
    rolling = decide(spec(stage="Staging", **SERVE), status(**PACKAGED),
                     world(local={"Staging": LocalServer("http://127.0.0.1:9", OLD_DIGEST, True)}), NOW)
    assert rolling.status["endpoint"] == "http://127.0.0.1:9"  # a stage keeps its port across versions
    applying = decide(spec(stage="Production", **SERVE), status(**PACKAGED), world(executor="kubernetes",
                      cluster=CLUSTER), NOW)
    assert "endpoint" not in applying.status  # published once the Deployment is there
    assert applying.actions[0] == ApplyServer("Production", PACKAGED["uri"], DIGEST, 2, 0.5, None)
    applied = decide(spec(stage="Production", **SERVE), status(**PACKAGED), world(
        executor="kubernetes", cluster=cluster("Production", owner_uid=ME.uid, digest=DIGEST)), NOW)
    assert applied.status["endpoint"] == "http://iris-production.ns.svc.cluster.local"


def test_leaving_the_stage_says_not_serving_and_clears_the_endpoint() -> None:
    serving = status(**PACKAGED, endpoint="http://x", conditions=[
        {"type": "Serving", "status": "True", "reason": "Available", "lastTransitionTime": NOW}])
    decision = decide(spec(stage="None", **SERVE), serving, world(executor="kubernetes", cluster=CLUSTER), NOW)
    assert decision.status["endpoint"] is None and condition(decision, "Serving")[:2] == ("False", "NotServing")
    assert not any(isinstance(a, (DeleteServer, StopLocalServer)) for a in decision.actions)


@pytest.mark.parametrize("st,expected", [
    ({}, False),
    ({"task": TASK}, True),
    ({"phase": "Packaged", "endpoint": "http://127.0.0.1:8123"}, True),
    ({"phase": "Packaged", "endpoint": "http://iris-production.ns.svc.cluster.local"}, False),
    ({"conditions": [{"type": "Packaged", "reason": "StorageUnavailable"}]}, True),
    ({"phase": "Packaged", "stage": "Production"}, False),
])
def test_only_packages_in_flight_keep_a_timer(st, expected) -> None:
    assert in_flight(st) is expected


def test_the_runtime_asked_for_reaches_the_deployment() -> None:
    from mloop.builders.server import build_deployment
    from mloop.config import Settings

    serve = {"serve": {**SERVE["serve"], "runtime": "sklearn"}}
    applying = decide(spec(stage="Production", **serve), status(**PACKAGED), world(executor="kubernetes",
                      cluster=CLUSTER), NOW)
    action = applying.actions[0]
    assert action.runtime == "sklearn"
    deployment = build_deployment("ns", "iris", "Production", "iris-1", action.uri, action.digest, 1, 0.5, None,
                                  Settings(), {"apiVersion": "mloop.dev/v1alpha1", "kind": "ModelPackage",
                                               "name": "iris-1", "uid": "u-1"}, action.runtime)
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOOP_SERVE_RUNTIME"] == "sklearn"


def test_packaging_records_the_onnx_parity_verdict() -> None:
    result = OK.model_copy(update={"onnx_parity": "exact"})
    decision = decide(spec(formats=["onnx"]), status(phase="Packaging", task=TASK, version=2),
                      world(task=TaskState("Succeeded", exit_code=0), result=result), NOW)
    assert decision.status["onnxParity"] == "exact"


# (id, formats, ONNX parity, spec.serve.runtime, runtime in status.serving or None when none can serve)
RUNTIMES = [
    ("exact-auto", ["skops", "onnx"], "exact", "auto", "onnx"),
    ("approximate-auto", ["skops", "onnx"], "approximate", "auto", "sklearn"),
    ("exact-but-sklearn-asked", ["skops", "onnx"], "exact", "sklearn", "sklearn"),
    ("no-onnx-file-auto", ["skops"], "failed", "auto", "sklearn"),
    ("exact-onnx-asked", ["skops", "onnx"], "exact", "onnx", "onnx"),
    ("approximate-onnx-asked", ["skops", "onnx"], "approximate", "onnx", None),
    ("not-recorded-onnx-asked", ["skops", "onnx"], None, "onnx", None),
]


@pytest.mark.parametrize("case,formats,parity,requested,runtime", RUNTIMES, ids=[r[0] for r in RUNTIMES])
def test_the_status_says_which_runtime_a_deployment_runs(case, formats, parity, requested, runtime) -> None:
    """The rule the server applies to its manifest, applied to the parity verdict in status."""
    packaged = status(**{**PACKAGED, "formats": formats, "onnxParity": parity})
    serve = {"serve": {**SERVE["serve"], "runtime": requested}}
    decision = decide(spec(stage="Production", **serve), packaged, world(
        executor="kubernetes", cluster=cluster("Production", owner_uid=ME.uid, digest=DIGEST, available=2)), NOW)
    if runtime is not None:
        assert kinds(decision) == ["ApplyServer"] and decision.status["serving"]["runtime"] == runtime
        assert "ServingRuntime" in reasons(decision)
    else:  # the server would refuse to start: the operator says so and runs none
        assert kinds(decision) == ["DeleteServer"] and decision.status["serving"] is None
        state, reason, message = condition(decision, "Serving")
        assert (state, reason) == ("False", "RuntimeUnavailable") and "runtime onnx asked for" in message
        assert "RuntimeUnavailable" in reasons(decision)


def test_a_local_server_reports_its_runtime_in_status() -> None:
    reported = ("onnx", "ONNX parity exact (labels agree on 100% of 38 held-out rows)")
    ready = LocalServer("http://127.0.0.1:9", DIGEST, True, True, runtime=reported)
    first = decide(spec(stage="Staging", **SERVE), status(**PACKAGED), world(local={"Staging": ready}), NOW)
    assert first.status["serving"] == {"runtime": "onnx", "reason": reported[1]}
    assert "ServingRuntime" in reasons(first)
    again = decide(spec(stage="Staging", **SERVE), status(**PACKAGED, serving=first.status["serving"]),
                   world(local={"Staging": ready}), NOW)
    assert again.status["serving"]["runtime"] == "onnx" and "ServingRuntime" not in reasons(again)
    starting = decide(spec(stage="Staging", **SERVE), status(**PACKAGED, serving=first.status["serving"]),
                      world(local={"Staging": replace(ready, ready=False, runtime=None)}), NOW)
    assert starting.status["serving"] is None
    refused = decide(spec(stage="Staging", serve={**SERVE["serve"], "runtime": "onnx"}), status(**PACKAGED), world(), NOW)
    assert kinds(refused) == [] and condition(refused, "Serving")[1] == "RuntimeUnavailable"
