"""Where task pods run: `kubernetes` (batch/v1 Jobs) or `local` (subprocesses). Same interface for both."""

from mloop.executors.base import Executor, Task, TaskState

__all__ = ["Executor", "Task", "TaskState"]
