"""The operator's task Jobs, as the watch shows them: a task in flight on Kubernetes costs no request to follow.

Each owner kind wakes its own pass from a Job event (handlers/trainingrun.py); this index tells any pass where a
Job stands. kopf fills every index from its initial listing before any handler runs, so a Job that finished while
the operator was down is seen at start-up like any other.
"""

from __future__ import annotations

from typing import Any

import kopf

from mloop.api.tasks import TaskState
from mloop.constants import LABEL_MANAGED_BY, MANAGER
from mloop.executors.base import Executor, Task
from mloop.executors.kubernetes import job_state

TASK_JOBS = {LABEL_MANAGED_BY: MANAGER}


@kopf.index("batch", "v1", "jobs", labels=TASK_JOBS)
async def task_jobs(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict:
    """Each task Job's state by (namespace, name), the task's deterministic name. Async: pure dict work."""
    return {(namespace, name): job_state(status)}


def seen_job(index: kopf.Index, namespace: str, name: str) -> TaskState | None:
    """The Job's state as last watched; None when the watch shows no such Job (not yet, or no more)."""
    return next(iter(index.get((namespace, name), [])), None)


def job_ended(type: str, index: kopf.Index, namespace: str, name: str) -> bool:
    """A Job event that an owner's pass must take: the Job finished, or it is gone (deleted, or not in the index)."""
    seen = seen_job(index, namespace, name)
    return type == "DELETED" or seen is None or seen.finished


def job_in_flight(index: kopf.Index, namespace: str, name: str | None) -> bool:
    seen = seen_job(index, namespace, name) if name else None
    return seen is not None and not seen.finished


def task_state(executor: Executor, task: Task, index: kopf.Index) -> TaskState:
    """Where a task stands: a Job from the watch (a GET only when the watch shows none, which may be lag just after
    its creation; a 404 then says it is really gone), a local process from its files."""
    if executor.name != "kubernetes":
        return executor.state(task)
    return executor.state(task, seen=seen_job(index, task.namespace, task.name))
