"""Requirement: a product owner's acceptance criteria and loop policy."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from mloop.api.common import (
    ApiModel,
    Classification,
    ColumnName,
    Condition,
    CriterionResult,
    DNS_LABEL_PATTERN,
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
from mloop.api.metrics import UNIT_INTERVAL


class SliceSpec(ApiModel):
    """How held-out rows are grouped for a slice criterion: by a column's values or by numeric buckets."""

    column: ColumnName = Field(description="The slicing column; it need not be a feature (e.g. a protected attribute).")
    bins: Annotated[list[float], Field(min_length=1, max_length=32, json_schema_extra=UNIQUE)] | None = Field(
        default=None,
        description="Bucket a numeric column at these edges (any order): n edges make n+1 slices, [lo, hi).",
    )
    min_rows: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=30, description="Slices with fewer held-out rows are listed but not judged.")
    max_gap: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Largest allowed difference between the best and the worst judged slice "
                                  "(a fairness criterion, e.g. recall across groups).")


class MetricCriterion(ApiModel):
    """A threshold on one metric of a candidate model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.min) || has(self.max) || (has(self.slice) && has(self.slice.maxGap))",
                 "message": "a metric criterion needs min or max (or slice.maxGap)"},
                {"rule": "!has(self.slice) || !has(self.scope) || self.scope == 'heldout'",
                 "message": "slices are judged on held-out rows: scope must be heldout"},
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "min must not exceed max",
                },
                {"rule": f"!(self.metric in {list(UNIT_INTERVAL)}) || ((!has(self.min) || self.min <= 1.0) && "
                         "(!has(self.max) || self.max >= 0.0))",
                 "message": "this metric is a fraction between 0 and 1: a min above 1 or a max below 0 can never "
                            "be met (0.9, not 90)"},
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
    slice: SliceSpec | None = Field(
        default=None,
        description="Judge the metric on every slice of the held-out rows by this column: min and max must hold on "
                    "each slice with enough rows, and maxGap bounds the best minus the worst slice.",
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


class Invariance(ApiModel):
    """Changing only one column must leave (almost) every held-out prediction as it was."""

    column: ColumnName = Field(description="The column the model should ignore.")
    change: Literal["swap", "neutral"] = Field(
        default="swap", description="swap: each row takes the column's next distinct value (M becomes F, F becomes "
                                    "M); neutral: every row takes `value`.")
    value: Any = Field(default=None, description="The neutral value, for change neutral; null (the default) makes "
                                                 "it missing, for the pipeline's imputer to fill.")
    max_changed_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.0, description="Largest allowed fraction of held-out predictions that change.")


class Directional(ApiModel):
    """Raising one numeric feature must move the predicted score one way only."""

    column: ColumnName = Field(description="A numeric feature.")
    direction: Literal["increasing", "decreasing"] = Field(
        description="increasing: raising the feature never lowers the score; decreasing: never raises it.")
    delta: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="How much to add; default one standard deviation of the held-out column.")
    label: Annotated[str, Field(max_length=128)] | None = Field(
        default=None, description="Class whose probability is the score (classification); default the last class "
                                  "in sorted order (1 or True of a binary target). Regression scores the prediction.")
    max_violation_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.0, description="Largest allowed fraction of held-out rows whose score moves the wrong way.")


class MinimumFunctionality(ApiModel):
    """A small table of rows with expected labels that the model must predict right."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.rows) != has(self.datasetRef)", "message": "give exactly one of rows or datasetRef"}]})

    rows: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="The rows inline, as column: value maps; the run's target column holds the "
                                  "expected label. A feature left out is missing (null).")
    dataset_ref: ObjectRef | None = Field(
        default=None, description="A Dataset holding the rows and the target column; its current version when the "
                                  "run starts is pinned.")
    min_accuracy: Annotated[float, Field(ge=0, le=1)] = Field(
        default=1.0, description="Fraction of the rows that must be predicted right.")


class BehaviouralTest(ApiModel):
    """One behavioural test, run by the training task on the fitted model; judged like a metric criterion."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "[has(self.invariance), has(self.directional), has(self.minimumFunctionality)]"
                 ".filter(x, x).size() == 1",
         "message": "give exactly one of invariance, directional or minimumFunctionality"}]})

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)] = Field(
        description="Names the test in status, requirements.json and the gate's refusal.")
    invariance: Invariance | None = Field(default=None, description="Predictions must not depend on a column.")
    directional: Directional | None = Field(default=None, description="The score must move one way with a feature.")
    minimum_functionality: MinimumFunctionality | None = Field(
        default=None, description="Rows with expected labels must be predicted right.")


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
    training_dataset_ref: ObjectRef | None = Field(
        default=None,
        description="A derived Dataset that combines the original data with datasetRef (a union): the run trains on "
                    "its version made from the new collection version. Empty: train on datasetRef alone.",
    )
    trigger: RetrainTrigger = Field(
        default_factory=RetrainTrigger, description="Conditions under which a new version triggers retraining."
    )
    promote_to: Stage = Field(
        default="Production",
        description="Stage to request when the new run meets every criterion and beats production.",
    )


class LiveComparison(ApiModel):
    """Before Production: the candidate must beat the Production package on live traffic it shadowed."""

    metric: MetricName | None = Field(
        default=None, description="Metric both models are scored on; default the primary metric (accuracy or r2).")
    margin: Annotated[float, Field(ge=0, le=1_000_000)] = Field(
        default=0.0, description="How much better the candidate must be: candidate minus Production (Production "
                                 "minus candidate for rmse, mae) must be at least this, and above 0.")
    min_rows: Annotated[int, Field(ge=1, le=1_000_000_000)] = Field(
        default=100, description="Labelled live rows both models answered, at least.")


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
    tests: Annotated[list[BehaviouralTest], Field(min_length=1, max_length=32, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] | None = Field(
        default=None, description="Behavioural tests the training task runs on the fitted model: invariance, "
                                  "directional expectation, minimum functionality.")
    data: DataCriteria | None = Field(default=None, description="Criteria on the training data.")
    governance: GovernanceLimits | None = Field(default=None, description="Licence, classification and PII limits.")
    serving: ServingLimits | None = Field(default=None, description="Latency and size limits of the served model.")
    retrain: RetrainPolicy | None = Field(default=None, description="When and how to retrain on collected data.")
    live: LiveComparison | None = Field(
        default=None, description="Promotion to Production needs the candidate (spec.shadow) to beat the Production "
                                  "package on labelled live traffic.")


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
    dataset_version: Annotated[str, Field(max_length=12)] = Field(description="Collection Dataset version that triggered it.")
    trained_on: Annotated[str, Field(max_length=300)] | None = Field(
        default=None, description="The Dataset version the run was pinned to, as name@version.")
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
