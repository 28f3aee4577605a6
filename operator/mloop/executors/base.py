"""The executor interface: reconcile code cannot tell a Job from a subprocess."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Phase = Literal["Missing", "Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class Task:
    """A command plus environment plus a spec object in S3, run on behalf of one owner object."""

    name: str
    namespace: str
    kind: str  # ingest, train, package
    command: list[str]
    prefix: str  # the task's folder in the bucket: spec.json in, result.json out
    owner: dict[str, Any]  # apiVersion, kind, name, uid
    deadline_seconds: int = 3600
    backoff_limit: int = 0
    resources: dict[str, Any] | None = None
    completions: int | None = None  # an Indexed Job when set
    parallelism: int = 1
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskState:
    phase: Phase
    reason: str = ""
    message: str = ""
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


class Executor(Protocol):
    name: str

    def submit(self, task: Task) -> None:
        """Start the task unless a task of that name exists already (idempotent)."""

    def state(self, task: Task) -> TaskState:
        """Where the task is now."""


def task_name(kind: str, owner: str, *key: object) -> str:
    """Deterministic and at most 63 characters: the same intent always names the same task."""
    digest = hashlib.sha256(":".join(str(k) for k in key).encode()).hexdigest()[:8]
    return f"{kind}-{owner[: 63 - len(kind) - 10].rstrip('-.')}-{digest}"
