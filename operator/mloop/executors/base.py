"""The executor interface: reconcile code cannot tell a Job from a subprocess."""

from __future__ import annotations

from typing import Protocol

from mloop.api.tasks import Phase, Task, TaskState, task_name

__all__ = ["Executor", "Phase", "Task", "TaskState", "task_name"]


class Executor(Protocol):
    name: str

    def submit(self, task: Task) -> None:
        """Start the task unless a task of that name exists already (idempotent)."""

    def state(self, task: Task, seen: TaskState | None = None) -> TaskState:
        """Where the task is now. seen: what a watch last showed of it, if the executor has one to use."""
