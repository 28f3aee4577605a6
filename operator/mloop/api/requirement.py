"""Requirement: a product owner's acceptance criteria and loop policy."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from mloop.api.common import (
    ApiModel,
    Classification,
    ColumnName,
    Condition,
    CriterionResult,
    DURATION_PATTERN,
    MetricName,
    Name,
    ObjectRef,
    OUTBOX_DESCRIPTION,
    OutboxEntry,
    PiiLevel,
    SPDX_PATTERN,
    Stage,
    UNIQUE,
)


class MetricCriterion(ApiModel):
    """A threshold on one metric of a candidate model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.min) || has(self.max)", "message": "a metric criterion needs min or max"},
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "min must not exceed max",
                },
            ]
        }
    )

    metric: MetricName = Field(description="Metric name as the trainer reports it, e.g. accuracy, f1_macro, rmse, r2.")
    min: float | None = Field(default=None, description="The metric must be at least this.")
    max: float | None = Field(default=None, description="The metric must be at most this.")
    # Not called `on`: YAML 1.1 reads that key as the boolean true.
    scope: Literal["heldout", "cv"] = Field(
        default="heldout", description="Judge the held-out test score or the cross-validation mean."
    )
    primary: bool = Field(
        default=False, description="The metric that ranks candidates and decides whether a model beats production."
    )


class DataCriteria(ApiModel):
    """What the training data must look like."""

    min_rows: Annotated[int, Field(ge=1, le=10_000_000_000)] | None = Field(
        default=None, description="Minimum number of rows in the dataset version used for training."
    )
    required_columns: Annotated[list[ColumnName], Field(max_length=256, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Columns that must be present."
    )
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="Largest allowed fraction of nulls in any used column."
    )
    max_age: Annotated[str, Field(max_length=32, pattern=DURATION_PATTERN)] | None = Field(
        default=None, description="Largest allowed age of the dataset version, e.g. 30d or 12h."
    )


class GovernanceLimits(ApiModel):
    """Which data may be used at all; a run that breaks these is refused before it starts."""

    allowed_licenses: Annotated[
        list[Annotated[str, Field(max_length=128, pattern=SPDX_PATTERN)]], Field(max_length=64, json_schema_extra=UNIQUE)
    ] | None = Field(default=None, description="SPDX licence ids the data may carry. Empty allows any licence.")
    max_classification: Classification | None = Field(
        default=None, description="Highest data classification allowed."
    )
    allowed_pii_levels: Annotated[list[PiiLevel], Field(max_length=4, json_schema_extra=UNIQUE)] | None = Field(
        default=None,
        description="PII levels a feature column may have. Columns of other levels may exist but not be used as features.",
    )


class ServingLimits(ApiModel):
    """Limits measured on the packaged and served model."""

    p95_latency_ms: Annotated[float, Field(gt=0, le=600_000)] | None = Field(
        default=None, description="Largest allowed 95th-percentile prediction latency in milliseconds."
    )
    max_model_size_mb: Annotated[float, Field(gt=0, le=100_000)] | None = Field(
        default=None, description="Largest allowed size of the serialized model in MB."
    )


class RetrainTrigger(ApiModel):
    """When collected data justifies a new training run."""

    min_new_rows: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = Field(
        default=None, description="Retrain once this many new labelled rows have arrived."
    )
    drift_threshold: Annotated[float, Field(gt=0, le=100)] | None = Field(
        default=None,
        description="Retrain when drift (PSI) of any feature against the production model's training data exceeds this.",
    )


class RetrainPolicy(ApiModel):
    """How the loop closes: which run to repeat on which new data, and what to do with the result."""

    enabled: bool = Field(default=True, description="Turn automatic retraining on or off.")
    template_run_ref: ObjectRef = Field(description="A TrainingRun whose spec is copied for each retraining.")
    dataset_ref: ObjectRef = Field(description="The collection Dataset whose new versions trigger retraining.")
    trigger: RetrainTrigger = Field(
        default_factory=RetrainTrigger, description="Conditions under which a new version triggers retraining."
    )
    promote_to: Stage = Field(
        default="Production",
        description="Stage to request when the new run meets every criterion and beats production.",
    )


class RequirementSpec(ApiModel):
    """What 'good enough' means for a model, criterion by criterion."""

    title: Annotated[str, Field(min_length=1, max_length=200)] = Field(description="One-line statement of the need.")
    owner: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="Product owner accountable for this requirement."
    )
    description: Annotated[str, Field(max_length=4096)] | None = Field(
        default=None, description="Intended use and context; copied into model cards."
    )
    priority: Literal["low", "medium", "high", "critical"] = Field(default="medium", description="Priority.")
    metrics: Annotated[list[MetricCriterion], Field(min_length=1, max_length=32, json_schema_extra={
        "x-kubernetes-validations": [{"rule": "self.filter(m, has(m.primary) && m.primary).size() <= 1",
                                      "message": "at most one metric criterion is primary"}]})] | None = Field(
        default=None, description="Thresholds on held-out or cross-validation metrics; leave out rather than empty."
    )
    data: DataCriteria | None = Field(default=None, description="Criteria on the training data.")
    governance: GovernanceLimits | None = Field(default=None, description="Licence, classification and PII limits.")
    serving: ServingLimits | None = Field(default=None, description="Latency and size limits of the served model.")
    retrain: RetrainPolicy | None = Field(default=None, description="When and how to retrain on collected data.")


class TraceEntry(ApiModel):
    """An object that references this Requirement."""

    kind: Literal["Dataset", "TrainingRun", "ModelPackage"] = Field(description="Kind of the referencing object.")
    name: Name = Field(description="Name of the referencing object.")
    namespace: Annotated[str, Field(max_length=63)] | None = Field(default=None, description="Its namespace.")
    phase: Annotated[str, Field(max_length=32)] | None = Field(default=None, description="Its phase when last seen.")


class Evaluation(ApiModel):
    """Every criterion evaluated against one candidate."""

    subject: Annotated[str, Field(max_length=300)] = Field(
        description="The evaluated object, e.g. trainingrun/iris-rf or modelpackage/iris-3."
    )
    satisfied: bool = Field(description="True when every criterion passed.")
    results: Annotated[list[CriterionResult], Field(max_length=64)] = Field(
        default_factory=list, description="One entry per criterion."
    )


class RetrainRecord(ApiModel):
    """One retraining the policy started."""

    run: Name = Field(description="The TrainingRun created.")
    dataset_version: Annotated[str, Field(max_length=12)] = Field(description="Dataset version it was pinned to.")
    reason: Annotated[str, Field(max_length=256)] = Field(description="What triggered it.")
    package: Name | None = Field(default=None, description="The ModelPackage created from it, once there is one.")
    outcome: Annotated[str, Field(max_length=256)] | None = Field(default=None, description="Promoted, refused, or pending.")
    created_at: datetime = Field(description="When the retraining started.")


class RequirementStatus(ApiModel):
    """Observed state of a Requirement."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="The metadata.generation last reconciled."
    )
    phase: Literal["Pending", "Satisfied", "Unsatisfied"] | None = Field(
        default=None, description="Pending until a candidate is evaluated, then Satisfied or Unsatisfied."
    )
    candidate: Evaluation | None = Field(default=None, description="Evaluation of the best candidate run.")
    production: Evaluation | None = Field(default=None, description="Evaluation of the production package.")
    trace: Annotated[list[TraceEntry], Field(max_length=200)] | None = Field(
        default=None, description="Datasets, runs and packages that reference this Requirement."
    )
    retrains: Annotated[list[RetrainRecord], Field(max_length=50)] | None = Field(
        default=None, description="Retrainings started by the retrain policy, newest last."
    )
    outbox: Annotated[list[OutboxEntry], Field(max_length=64)] | None = Field(
        default=None, description=OUTBOX_DESCRIPTION)
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(
        default_factory=list, description="Conditions: Satisfied, Ready."
    )


class Requirement(ApiModel):
    spec: RequirementSpec
    status: RequirementStatus | None = None
