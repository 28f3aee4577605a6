"""The kubernetes executor: each task a batch/v1 Job; its outcome from the Job's conditions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mloop.builders.job import build_job
from mloop.config import Settings, get_settings
from mloop.executors.base import Task, TaskState


class KubernetesExecutor:
    name = "kubernetes"

    def __init__(self, api_client: Any, settings: Settings | None = None):
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.settings = settings or get_settings()

    def submit(self, task: Task) -> None:
        try:
            # The answer is not decoded: into a V1Job that cost more than the request itself in a fan-out.
            answer = self.batch.create_namespaced_job(task.namespace, build_job(task, self.settings),
                                                      _preload_content=False)
            answer.drain_conn()
            answer.release_conn()
        except ApiException as err:
            if err.status != 409:  # 409: it exists already, which is the point of deterministic names
                raise

    def state(self, task: Task, seen: TaskState | None = None) -> TaskState:
        """seen: the Job's state as the jobs watch last showed it (handlers/jobs.py), which spares the GET. A failed
        Job's pod is read all the same, for its container's exit code (75 means retry) and reason."""
        state = seen if seen is not None else self._read(task)
        if state.phase != "Failed":
            return state
        code, container_reason = self._termination(task)
        message = state.message
        if container_reason and container_reason not in ("Error", "Completed"):
            message = f"{message} (container {container_reason})".strip()  # e.g. OOMKilled
        # The kernel's verdict says more than the Job's BackoffLimitExceeded: the user must raise the limit.
        reason = "OOMKilled" if container_reason == "OOMKilled" else state.reason
        return TaskState("Failed", reason, message, code)

    def _read(self, task: Task) -> TaskState:
        try:
            # Read as plain JSON: decoding a V1Job (every timestamp through dateutil) cost more than the request.
            answer = self.batch.read_namespaced_job_status(task.name, task.namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return TaskState("Missing")
            raise
        return job_state(json.loads(answer.data).get("status") or {})

    def _termination(self, task: Task) -> tuple[int | None, str | None]:
        """Exit code and reason of the task's container, while its pod still exists."""
        pods = self.core.list_namespaced_pod(task.namespace, label_selector=f"job-name={task.name}").items
        for pod in pods:
            for status in pod.status.container_statuses or []:
                if status.state and status.state.terminated:
                    return status.state.terminated.exit_code, status.state.terminated.reason
        return None, None


def job_state(status: Mapping[str, Any]) -> TaskState:
    """A Job's state from its status alone (no exit code): what the jobs watch can tell without a request."""
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions:
        return TaskState("Succeeded", "Completed")
    if "Failed" in conditions:
        cond = conditions["Failed"]
        return TaskState("Failed", cond.get("reason") or "Failed", cond.get("message") or "")
    if status.get("active"):
        return TaskState("Running")
    return TaskState("Pending")
