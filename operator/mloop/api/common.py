"""Shared building blocks of every kind: the base model, references, conditions, bounds."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Kubernetes object names (RFC 1123 subdomain) and label-safe names.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# s3://bucket/key: bucket names follow the S3 rules, the key is optional.
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_ .()/-]*$"
METRIC_PATTERN = r"^[a-z][a-z0-9_]*$"
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = r"^[A-Z][A-Za-z0-9]*$"
# A version id is the first 12 hex digits of a content digest.
VERSION_PATTERN = r"^[0-9a-f]{12}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(s|m|h|d))+$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"
SPDX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.+-]*( (AND|OR|WITH) [A-Za-z0-9][A-Za-z0-9.+-]*)*$"

# json_schema_extra key: CEL rules (`expression`, `messageExpression` giving the text after the field path,
# optional `variables`) on data the CRD's own CEL cannot see; `self` is the node. crdgen puts them in an
# admission policy.
ADMISSION_RULES = "x-mloop-admission"

# A list whose items must differ: the API server refuses a duplicate with its index.
UNIQUE: dict[str, Any] = {"x-kubernetes-list-type": "set"}

Name = Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN)]
ColumnName = Annotated[str, Field(min_length=1, max_length=128, pattern=COLUMN_PATTERN)]
MetricName = Annotated[str, Field(min_length=1, max_length=64, pattern=METRIC_PATTERN)]
ShortText = Annotated[str, Field(max_length=256)]

Executor = Literal["kubernetes", "local"]
Classification = Literal["public", "internal", "confidential", "restricted"]
PiiLevel = Literal["none", "quasi", "direct", "sensitive"]
Stage = Literal["None", "Staging", "Production", "Archived"]
ConditionStatus = Literal["True", "False", "Unknown"]

# Ordered from least to most sensitive, so limits compare by index.
CLASSIFICATION_ORDER: tuple[str, ...] = ("public", "internal", "confidential", "restricted")
PII_ORDER: tuple[str, ...] = ("none", "quasi", "direct", "sensitive")


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are the API server's business."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_attribute_docstrings=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON the API server stores: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectRef(ApiModel):
    """A reference to another mloop object, in the same namespace unless one is spelled out."""

    name: Name = Field(description="Name of the referenced object.")
    namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL_PATTERN)] | None = Field(
        default=None,
        description="Namespace of the referenced object. Empty means the referring object's own namespace.",
    )


class VersionedRef(ObjectRef):
    """A reference to a Dataset, optionally pinned to one version."""

    version: Annotated[str, Field(max_length=12, pattern=VERSION_PATTERN)] | None = Field(
        default=None,
        description="Version id (first 12 hex digits of the content digest). Empty means the latest Ready version at start.",
    )


class ResourceList(ApiModel):
    """CPU and memory quantities, as in a container's resources."""

    cpu: Annotated[str, Field(max_length=32, pattern=QUANTITY_PATTERN)] | None = Field(
        default=None, description="CPU quantity, e.g. 500m or 2."
    )
    memory: Annotated[str, Field(max_length=32, pattern=QUANTITY_PATTERN)] | None = Field(
        default=None, description="Memory quantity, e.g. 512Mi or 2Gi."
    )


class Resources(ApiModel):
    """Requests and limits for a task or server pod."""

    requests: ResourceList | None = Field(default=None, description="Resources the scheduler reserves.")
    limits: ResourceList | None = Field(default=None, description="Resources the container may not exceed.")


class Condition(ApiModel):
    """A Kubernetes-style condition: one aspect of an object's state."""

    type: Annotated[str, Field(max_length=64, pattern=CONDITION_TYPE_PATTERN)] = Field(
        description="Condition type in CamelCase, e.g. Ready or Validated."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(max_length=64, pattern=REASON_PATTERN)] = Field(
        description="Machine-readable CamelCase reason for the last transition."
    )
    message: Annotated[str, Field(max_length=2048)] = Field(
        default="", description="Human-readable detail: what happened and what to do about it."
    )
    last_transition_time: datetime = Field(
        description="When the status last changed between True, False and Unknown."
    )
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The metadata.generation this condition was computed from."
    )


class OutboxEntry(ApiModel):
    """A side effect a status write owes: a Kubernetes event, a CloudEvent or a lineage event. It is written in
    the same status update as the transition that causes it and removed once sent, under a name derived from
    its id, so a crash or a second replica can neither lose nor repeat it."""

    id: Annotated[str, Field(max_length=32, pattern=r"^[a-z0-9]+$")] = Field(
        description="Deterministic id: the object's uid, the resourceVersion the transition was decided on, its index.")
    type: Literal["Normal", "Warning"] | None = Field(
        default=None, description="Kubernetes event type; empty when the entry is a notification only.")
    reason: Annotated[str, Field(max_length=128)] = Field(default="", description="CamelCase reason.")
    message: Annotated[str, Field(max_length=1024)] = Field(default="", description="What happened.")
    cloud_event: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="CloudEvent type suffix to send, e.g. dataset.version.cut.")
    lineage: Literal["START", "COMPLETE", "FAIL"] | None = Field(
        default=None, description="OpenLineage run state to send.")
    task: Annotated[str, Field(max_length=63)] | None = Field(default=None, description="The task a lineage event is about.")


OUTBOX_DESCRIPTION = ("Events and notifications this object's last transitions still owe; the operator sends "
                      "them and clears the list.")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def iso(moment: datetime) -> str:
    """RFC 3339 with a Z, as Kubernetes writes times."""
    return moment.isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    generation: int | None = None,
    now: datetime | None = None,
) -> list[Condition]:
    """Return conditions with one set; lastTransitionTime moves only when the status really flips."""
    now = now or utcnow()
    old = next((c for c in conditions if c.type == type_), None)
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:2048],
        last_transition_time=old.last_transition_time if old is not None and old.status == status else now,
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


class GovernanceTags(ApiModel):
    """What a data set may be used for and by whom; checked before any training starts."""

    license: Annotated[str, Field(max_length=128, pattern=SPDX_PATTERN)] | None = Field(
        default=None, description="SPDX licence expression of the data, e.g. CC-BY-4.0 or BSD-3-Clause."
    )
    classification: Classification | None = Field(
        default=None, description="Data classification: public, internal, confidential or restricted."
    )
    owner: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="Accountable owner: a team, a person or an e-mail address."
    )
    purposes: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=16, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Purposes the data may be used for, e.g. training, evaluation."
    )
    retention_days: Annotated[int, Field(ge=1, le=36500)] | None = Field(
        default=None, description="Versions older than this many days are deleted from storage."
    )


class SliceResult(ApiModel):
    """One slice of the held-out rows under a slice criterion."""

    slice: Annotated[str, Field(max_length=160)] = Field(description="The slice, as column=value or column=[lo, hi).")
    rows: Annotated[int, Field(ge=0)] = Field(description="Held-out rows in the slice.")
    value: float | None = Field(default=None, description="The metric on the slice; empty when undefined.")
    passed: bool | None = Field(default=None, description="Met or not; empty when the slice has too few rows.")


class CheckMeasurement(ApiModel):
    """What the training task measured for one slice criterion or behavioural test; judged in requirements."""

    key: Annotated[str, Field(max_length=128)] = Field(
        description="Which check: derived from its definition, so an edited definition is not judged on old values.")
    value: float | None = Field(default=None, description="A behavioural test's measure, e.g. the changed fraction.")
    rows: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Rows the test ran on.")
    slices: Annotated[list[SliceResult], Field(max_length=64)] | None = Field(
        default=None, description="A slice criterion's metric on each slice of the held-out rows.")
    message: Annotated[str, Field(max_length=512)] = Field(
        default="", description="A detail (the first wrong row), or why it could not be measured.")
    error: bool = Field(default=False, description="True when the check could not be measured at all.")


class CriterionResult(ApiModel):
    """The evaluation of one requirement criterion against one candidate."""

    requirement: Name = Field(description="Name of the Requirement the criterion belongs to.")
    criterion: Annotated[str, Field(max_length=128)] = Field(
        description="The criterion, e.g. metric:accuracy, data:minRows or serving:p95LatencyMs."
    )
    passed: bool | None = Field(default=None, description="True when met, False when not, empty when not yet measured.")
    value: float | None = Field(default=None, description="The measured value.")
    threshold: float | None = Field(default=None, description="The limit it was compared with.")
    operator: Literal[">=", "<=", ">", "<", "in", "=="] | None = Field(
        default=None, description="How the value was compared with the threshold."
    )
    message: Annotated[str, Field(max_length=512)] = Field(default="", description="Why it passed or failed.")
    worst: Annotated[str, Field(max_length=160)] | None = Field(
        default=None, description="A slice criterion's worst judged slice, as column=value.")
    slices: Annotated[list[SliceResult], Field(max_length=64)] | None = Field(
        default=None, description="A slice criterion's value on each slice of the held-out rows.")
