"""The task contract shared by the operator and the workloads: what a task is, where it stands, and the typed
spec.json it reads and result.json it writes under its prefix in the bucket.

Plain values only: neither kopf nor the Kubernetes client nor scikit-learn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

Phase = Literal["Missing", "Pending", "Running", "Succeeded", "Failed"]

# Exit codes: the result says what happened, except when storage could not be reached.
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_STORAGE = 75  # EX_TEMPFAIL: nothing was written; the operator retries


@dataclass(frozen=True)
class Task:
    """A command plus environment plus a spec object in S3, run on behalf of one owner object."""

    name: str
    namespace: str
    kind: str  # ingest, trials, train, package
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

    @property
    def storage_lost(self) -> bool:
        """The task said it could not reach storage, so it wrote nothing: worth another try."""
        return self.phase == "Failed" and self.exit_code == EXIT_STORAGE


def task_name(kind: str, owner: str, *key: object) -> str:
    """Deterministic and at most 63 characters: the same intent always names the same task."""
    digest = hashlib.sha256(":".join(str(k) for k in key).encode()).hexdigest()[:8]
    return f"{kind}-{owner[: 63 - len(kind) - 10].rstrip('-.')}-{digest}"


class Wire(BaseModel):
    """camelCase on the wire; unknown keys kept, so an older operator can read a newer task's files."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TaskResult(Wire):
    """What every result.json says: how the task ended, and why in a CamelCase reason and a message."""

    status: Literal["Succeeded", "Failed", "Skipped"]
    reason: str = ""
    message: str = ""
    finished_at: str | None = None
