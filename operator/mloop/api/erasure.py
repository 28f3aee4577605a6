"""ErasureRequest: remove a data subject's rows from every Dataset version that holds them, and say so everywhere.

The subject keys never sit in the resource: it points at a Secret key or an S3 object holding them, one per line.
The operator turns them into salted hashes (the namespace's salt, written once to S3) and forgets them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from mloop.api.common import (
    ApiModel,
    ColumnName,
    Condition,
    Name,
    OUTBOX_DESCRIPTION,
    OutboxEntry,
    S3_URI_PATTERN,
    UNIQUE,
    Executor,
)
from mloop.api.tasks import TaskResult, Wire

KEYS_SECRET = "mloop-erasure-keys"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the request's namespace."""

    # The operator may read this one Secret name and no other (RBAC resourceNames): least privilege.
    name: Literal["mloop-erasure-keys"] = Field(
        default="mloop-erasure-keys", description="Name of the Secret: always mloop-erasure-keys, the only Secret the "
                                                  "operator may read.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)] = Field(
        description="Key in the Secret whose value lists the subject keys, one per line.")


class S3Keys(ApiModel):
    """An object in S3 listing the subject keys, one per line."""

    uri: Annotated[str, Field(max_length=1024, pattern=S3_URI_PATTERN)] = Field(
        description="s3://bucket/key of a text object with one subject key per line.")


class KeySource(ApiModel):
    """Where the subject keys come from. Never the keys themselves."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.secretKeyRef) != has(self.s3)", "message": "give exactly one of secretKeyRef or s3"}]})

    secret_key_ref: SecretKeyRef | None = Field(default=None, description="A Secret key holding the keys.")
    s3: S3Keys | None = Field(default=None, description="An S3 object holding the keys.")


class ErasureRequestSpec(ApiModel):
    """Which Datasets, which id column, and where the keys of the subjects to erase are."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "an ErasureRequest cannot be edited: create a new one"}]})

    datasets: Annotated[list[Name], Field(min_length=1, max_length=16, json_schema_extra=UNIQUE)] = Field(
        description="Datasets in this namespace to erase from; Datasets derived from them are included.")
    subject_column: ColumnName = Field(description="The column (role id in the Dataset's schema) holding the subject key.")
    keys_from: KeySource = Field(description="Where the subject keys are: a Secret key or an S3 object, one per line.")
    reason: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Why, for the audit record: a ticket or case reference. Not a subject key.")
    executor: Executor | None = Field(default=None, description="Where the erasure task runs; default from operator settings.")


ErasurePhase = Literal["Pending", "Erasing", "Applying", "Complete", "Failed"]
Touched = Annotated[list[Annotated[str, Field(max_length=300)]], Field(max_length=256)]


class ErasureRequestStatus(ApiModel):
    """Where the erasure stands, and everything it touched. Counts and names only: never a key."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(default=None, description="The metadata.generation last reconciled.")
    phase: ErasurePhase | None = Field(default=None, description="Pending, Erasing, Applying, Complete or Failed.")
    task: Annotated[str, Field(max_length=253)] | None = Field(default=None, description="The erasure task in flight.")
    subjects: Annotated[int, Field(ge=0)] | None = Field(default=None, description="How many subject keys were given.")
    rows_erased: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Matching rows found over every version.")
    datasets: Touched | None = Field(default=None, description="Every Dataset looked at: the named ones and those derived from them.")
    versions_tombstoned: Touched | None = Field(
        default=None, description="dataset@version whose data objects were deleted, a tombstone left in their place.")
    datasets_recut: Touched | None = Field(default=None, description="dataset@version cut without the subjects' rows.")
    tasks_erased: Touched | None = Field(default=None, description="Task records (tasks/) that copied the rows, erased.")
    collected_cleaned: Touched | None = Field(
        default=None, description="Served models whose collected predictions (and their feedback) held a subject's "
                                  "rows: model: batches rewritten without them.")
    runs_flagged: Touched | None = Field(default=None, description="TrainingRuns trained on an erased version.")
    packages_flagged: Touched | None = Field(default=None, description="ModelPackages built from such a run.")
    requirements_asked: Touched | None = Field(
        default=None, description="Requirements whose Production package was trained on erased data: asked to retrain.")
    retrains_started: Touched | None = Field(
        default=None, description="Retrainings started by a Requirement's retrain policy on the cleaned data: "
                                  "requirement: run on dataset@version.")
    audit: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="s3:// URI of the audit record (salted hashes only, never the keys).")
    completed_at: datetime | None = Field(default=None, description="When the request reached Complete.")
    outbox: Annotated[list[OutboxEntry], Field(max_length=64)] | None = Field(default=None, description=OUTBOX_DESCRIPTION)
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(
        default_factory=list, description="Complete and Ready.")


class ErasureRequest(ApiModel):
    """An ErasureRequest as a whole."""

    spec: ErasureRequestSpec
    status: ErasureRequestStatus | None = None


# --- the erase task's spec.json and result.json --------------------------------------------------------------------


class EraseTarget(Wire):
    """One Dataset the task looks at; parents first, so a derived version of an erased version is known."""

    name: str
    parents: list[str] = []  # Dataset names this one is derived from
    recut: bool = False  # a named Dataset: cut a new version of its current one without the rows
    current: str | None = None  # hex digest of its current version


class EraseTaskSpec(Wire):
    """spec.json of an erase task: salted hashes only, never a key."""

    namespace: str
    name: str  # the ErasureRequest
    uid: str
    column: str
    salt: str
    hashes: list[str]
    targets: list[EraseTarget]
    models: list[str] = []  # served models whose collected predictions may carry the subject column


class TombstonedVersion(Wire):
    dataset: str
    version: str
    digest: str
    rows: int
    erased_rows: int  # 0 when the version only descends from an erased one


class EraseResult(TaskResult):
    """result.json of an erase task: what it removed and cut, and what a final scan still found (0 to complete)."""

    tombstoned: list[TombstonedVersion] = []
    recut: dict[str, dict[str, Any]] = {}  # dataset -> the new version: version, digest, rows, uri, createdAt
    tasks: list[str] = []
    collected: dict[str, int] = {}  # model -> collected and feedback batches rewritten without the subjects' rows
    rows_erased: int = 0
    remaining: list[str] = []  # objects a final scan still found holding a subject
