"""The TrainingRun timer holds no finalizer: it stops when the run leaves the runs_in_flight view (deletion); it
leaves a run whose Job is in flight to the jobs watch. Indexes are filled here by kopf's own indexer, which also
shows that an object leaves an index it no longer belongs in."""

from __future__ import annotations

from typing import Any


def run(phase: str, task: str | None = None, **status: Any) -> dict:
    return {"apiVersion": "mloop.dev/v1alpha1", "kind": "TrainingRun",
            "metadata": {"namespace": "ns", "name": "a", "uid": "u", "resourceVersion": "1", "generation": 1},
            "spec": {"datasetRef": {"name": "iris"}},
            "status": {"phase": phase, **({"task": task} if task else {}), **status}}


def kopf_index(handler_id: str, fn: Any, *events: dict) -> Any:
    """The index kopf's own indexer keeps from these bodies (one event each), with this handler."""
    import asyncio
    import inspect

    import kopf
    from kopf._cogs.structs.ids import HandlerId
    from kopf._core.actions.execution import Outcome
    from kopf._core.engines.indexing import OperatorIndexer, OperatorIndexers

    indexers = OperatorIndexers()
    indexers[HandlerId(handler_id)] = OperatorIndexer()
    for event in events:
        body = kopf.Body(event)
        meta = body.metadata
        result = fn(body=body, spec=body.spec, status=body.status, uid=meta.uid, namespace=meta.namespace,
                    name=meta.name)
        result = asyncio.run(result) if inspect.iscoroutine(result) else result
        indexers.replace(body, {HandlerId(handler_id): Outcome(final=True, result=result)})
    return indexers[HandlerId(handler_id)].index


def indexed(*events: dict) -> dict[str, Any]:
    """The handler kwargs holding the TrainingRun views once kopf's indexer took these bodies."""
    import mloop.handlers  # noqa: F401 - registers every view
    from mloop.handlers.views import TRAININGRUNS

    return {TRAININGRUNS.kwarg: kopf_index(TRAININGRUNS.kwarg, TRAININGRUNS.entries, *events)}


def test_the_timer_is_registered_without_a_finalizer() -> None:
    import kopf

    import mloop.handlers  # noqa: F401 - registers the handlers
    from mloop.handlers.trainingrun import trainingrun_tick

    timers = [h for h in kopf.get_default_registry()._spawning.get_all_handlers() if h.fn is trainingrun_tick]
    assert len(timers) == 1 and timers[0].requires_finalizer is False


def test_the_timer_visits_runs_in_flight_that_are_still_indexed() -> None:
    from mloop.handlers.trainingrun import _timer_visits

    def visits(body: dict, still_indexed: bool = True) -> bool:
        return _timer_visits(uid="u", namespace="ns", status=body["status"], task_jobs={},
                             **indexed(*[body] if still_indexed else []))

    assert visits(run("Pending"))
    assert not visits(run("Pending"), still_indexed=False)  # deleted: out of the index
    assert not visits(run("Succeeded"))
    assert visits(run("Succeeded", mlflow={"state": "Pending"}))


def test_a_finished_run_leaves_the_views_of_runs_in_flight() -> None:
    """kopf keeps an object's old index entries when its handler returns None: a finished run stayed in
    runs_in_flight and runs_by_task (its Job's later deletion then woke a pass on a stale body)."""
    from mloop.handlers.modelpackage import trainingruns_by_name
    from mloop.handlers.trainingrun import runs_by_task, runs_in_flight

    running = indexed(run("Running", "train-a-1"))
    assert "u" in runs_in_flight.of(running) and len(runs_by_task.of(running).get(("ns", "train-a-1"))) == 1
    done = indexed(run("Running", "train-a-1"), run("Succeeded", "train-a-1"))
    assert "u" not in runs_in_flight.of(done) and not runs_by_task.of(done).get(("ns", "train-a-1"))
    assert [r["phase"] for r in trainingruns_by_name.of(done).get(("ns", "a"))] == ["Succeeded"]


def test_a_failing_view_drops_the_object_from_that_view_only() -> None:
    """As kopf does with a failing index handler, but the object stays in the kind's other views."""
    import kopf

    from mloop.handlers.views import Views

    views = Views("trainingruns", "trainingrun", registry=kopf.OperatorRegistry())

    @views.view
    def by_uid(uid: str, **_: Any) -> dict:
        return {uid: True}

    @views.view
    def by_task(status: dict, **_: Any) -> dict:
        return {status["task"]: True}  # a KeyError without a task

    kwargs = {views.kwarg: kopf_index(views.kwarg, views.entries, run("Running", "t-1"), run("Running"))}
    assert "u" in by_uid.of(kwargs) and "t-1" not in by_task.of(kwargs)


def test_datasets_packages_and_retrain_policies_leave_the_indexes_they_no_longer_belong_in() -> None:
    """The same for plain kopf indexes: a Dataset or package whose task ended (its task cleared) no longer
    answers to that task's Job events; a Requirement whose retrain policy was removed no longer follows it."""
    from mloop.handlers.dataset import datasets_by_task
    from mloop.handlers.modelpackage import packages_by_task
    from mloop.handlers.requirement import requirements_by_retrain_dataset

    def obj(spec: dict, status: dict) -> dict:
        return {"metadata": {"namespace": "ns", "name": "a", "uid": "u"}, "spec": spec, "status": status}

    for fn in (datasets_by_task, packages_by_task):
        index = kopf_index(fn.__name__, fn, obj({}, {"task": "t-1"}), obj({}, {"task": None}))
        assert ("ns", "t-1") not in index, fn.__name__
    retrain = {"retrain": {"datasetRef": {"name": "live"}}}
    assert ("ns", "live") in kopf_index("r", requirements_by_retrain_dataset, obj(retrain, {}))
    assert ("ns", "live") not in kopf_index("r", requirements_by_retrain_dataset, obj(retrain, {}), obj({}, {}))


def test_a_run_on_a_job_in_flight_is_left_to_the_jobs_watch() -> None:
    """No timer GETs a Job the watch shows running; the timer still comes when the watch shows no Job (just
    created, or gone) or a finished one (a result S3 could not give yet)."""
    from mloop.api.tasks import TaskState
    from mloop.handlers.trainingrun import _news_for_its_run, _timer_visits

    def visits(job: TaskState | None) -> bool:
        jobs = {("ns", "train-a-1"): [job]} if job else {}
        body = run("Running", "train-a-1")
        return _timer_visits(uid="u", namespace="ns", status=body["status"], task_jobs=jobs, **indexed(body))

    assert not visits(TaskState("Pending")) and not visits(TaskState("Running"))
    assert visits(None) and visits(TaskState("Succeeded")) and visits(TaskState("Failed"))

    def news(job: TaskState | None, run_phase: str = "Pending", type: str = "MODIFIED") -> bool:
        return _news_for_its_run(type=type, namespace="ns", name="train-a-1", **indexed(run(run_phase, "train-a-1")),
                                 task_jobs={("ns", "train-a-1"): [job]} if job else {})

    assert news(TaskState("Running")) and not news(TaskState("Running"), run_phase="Running")
    assert not news(TaskState("Pending"))
    assert news(TaskState("Succeeded"), run_phase="Running") and news(TaskState("Failed"))
    assert news(None, type="DELETED")
    assert not _news_for_its_run(type="MODIFIED", namespace="ns", name="other", **indexed(run("Pending", "train-a-1")),
                                 task_jobs={("ns", "other"): [TaskState("Succeeded")]})  # no run follows it


def test_datasets_and_packages_are_woken_by_their_finished_jobs_and_keep_no_timer_for_one_in_flight() -> None:
    from mloop.api.tasks import TaskState
    from mloop.handlers.dataset import _dataset_job_news, _in_flight
    from mloop.handlers.modelpackage import _package_job_news, _ticks

    for news, owners in ((_dataset_job_news, "datasets_by_task"), (_package_job_news, "packages_by_task")):
        def woken(job: TaskState | None, type: str = "MODIFIED", owned: bool = True) -> bool:
            return news(type=type, namespace="ns", name="ingest-a-1", task_jobs={("ns", "ingest-a-1"): [job]} if job else {},
                        **{owners: {("ns", "ingest-a-1"): [{}]} if owned else {}})

        assert woken(TaskState("Succeeded")) and woken(TaskState("Failed")) and woken(None, type="DELETED")
        assert not woken(TaskState("Running")) and not woken(TaskState("Succeeded"), owned=False)

    ingesting = {"task": "ingest-a-1", "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Ingesting"}]}
    spec = {"source": {"builtin": {"name": "iris"}}}
    running = {("ns", "ingest-a-1"): [TaskState("Running")]}
    assert not _in_flight(spec=spec, status=ingesting, namespace="ns", datasets_by_name={}, task_jobs=running)
    assert _in_flight(spec=spec, status=ingesting, namespace="ns", datasets_by_name={}, task_jobs={})  # local task
    packaging = {"task": "package-a-1"}
    assert not _ticks(namespace="ns", status=packaging, task_jobs={("ns", "package-a-1"): [TaskState("Running")]})
    assert _ticks(namespace="ns", status=packaging, task_jobs={})
