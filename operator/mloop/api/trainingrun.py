"""TrainingRun: one immutable, reproducible scikit-learn training execution."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from mloop.api.common import (
    ADMISSION_RULES,
    ApiModel,
    ColumnName,
    Condition,
    CheckMeasurement,
    CriterionResult,
    DIGEST_PATTERN,
    Executor,
    MetricName,
    ObjectRef,
    OUTBOX_DESCRIPTION,
    OutboxEntry,
    Resources,
    UNIQUE,
    VersionedRef,
)
from mloop.api.params import PARAM_PATTERN, estimator_param_rules

# Estimators a run may name; the trainer checks parameters against each class's own signature.
CLASSIFIERS = (
    "LogisticRegression",
    "RidgeClassifier",
    "SGDClassifier",
    "KNeighborsClassifier",
    "DecisionTreeClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
    "SVC",
    "LinearSVC",
    "GaussianNB",
    "MLPClassifier",
)
REGRESSORS = (
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "SGDRegressor",
    "KNeighborsRegressor",
    "DecisionTreeRegressor",
    "RandomForestRegressor",
    "ExtraTreesRegressor",
    "GradientBoostingRegressor",
    "HistGradientBoostingRegressor",
    "SVR",
    "MLPRegressor",
)
EstimatorName = Literal[CLASSIFIERS + REGRESSORS]  # type: ignore[valid-type]
ParamName = Annotated[str, Field(min_length=1, max_length=64, pattern=PARAM_PATTERN)]


class EstimatorSpec(ApiModel):
    """A scikit-learn estimator from the allow-list, with its parameters."""

    model_config = ConfigDict(
        json_schema_extra={ADMISSION_RULES: estimator_param_rules("params", "name", present="has(self.params)")}
    )

    name: EstimatorName = Field(description="Estimator class name from the allow-list, e.g. RandomForestClassifier.")
    params: Annotated[dict[ParamName, Any], Field(max_length=64)] | None = Field(
        default=None, description="Constructor parameters; names and values are checked against the class's signature."
    )


class NumericPreprocessing(ApiModel):
    """Steps for numeric feature columns."""

    impute: Literal["none", "mean", "median", "most_frequent", "constant"] = Field(
        default="median", description="How to fill missing values."
    )
    scale: Literal["none", "standard", "minmax", "robust"] = Field(default="standard", description="How to scale.")


class CategoricalPreprocessing(ApiModel):
    """Steps for categorical feature columns."""

    impute: Literal["none", "most_frequent", "constant"] = Field(default="most_frequent", description="How to fill missing values.")
    encode: Literal["onehot", "ordinal"] = Field(default="onehot", description="How to encode categories.")


class PreprocessingSpec(ApiModel):
    """Declarative preprocessing compiled into a Pipeline with a ColumnTransformer."""

    numeric: NumericPreprocessing = Field(default_factory=NumericPreprocessing, description="Numeric columns.")
    categorical: CategoricalPreprocessing = Field(default_factory=CategoricalPreprocessing, description="Categorical columns.")


class SplitSpec(ApiModel):
    """How held-out data is set aside."""

    test_fraction: Annotated[float, Field(ge=0.05, le=0.9)] = Field(default=0.2, description="Fraction of rows held out.")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(default=42, description="Seed for the split and the estimator.")
    stratify: bool = Field(default=True, description="Stratify by the target (classification only).")


class CvSpec(ApiModel):
    """Cross-validation on the training split."""

    folds: Annotated[int, Field(ge=2, le=20)] = Field(default=5, description="Number of folds.")


class SearchSpec(ApiModel):
    """Hyper-parameter search, fanned out as an Indexed Job."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.type != 'random' || has(self.trials)", "message": "a random search needs trials"}
            ]
        }
    )

    type: Literal["grid", "random"] = Field(description="grid tries every combination; random samples trials of them.")
    parameters: Annotated[dict[ParamName, Annotated[list[Any], Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=16)] = Field(
        description="Candidate values per estimator parameter."
    )
    trials: Annotated[int, Field(ge=1, le=500)] | None = Field(default=None, description="Number of trials (random search; caps a grid).")
    scoring: Annotated[str, Field(max_length=64, pattern=r"^[a-z][a-z0-9_]*$")] | None = Field(
        default=None, description="scikit-learn scorer name; default accuracy or r2 by task."
    )
    parallelism: Annotated[int, Field(ge=1, le=64)] = Field(default=2, description="Trials running at once.")


class MlflowSpec(ApiModel):
    """Export of the succeeded run (parameters, metrics, tags, the model) to an MLflow tracking server."""

    enabled: bool = Field(
        default=True, description="false: never export this run, even when the operator exports every run."
    )
    tracking_uri: Annotated[str, Field(max_length=512, pattern=r"^https?://[^\s/@]+(/[^\s]*)?$")] | None = Field(
        default=None, description="http(s) URL of the tracking server; default MLOOP_MLFLOW_TRACKING_URI."
    )
    experiment: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="MLflow experiment; default spec.experiment, else the operator's, else the namespace."
    )


class TrainingRunSpec(ApiModel):
    """One immutable execution: data, model, split and where it runs."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "a TrainingRun's spec is immutable: create a new run instead"},
                {
                    "rule": "!has(self.features) || !self.features.exists(f, f == self.target)",
                    "message": "the target cannot also be a feature",
                },
                {
                    "rule": "!has(self.task) || (self.task == 'classification') == (self.estimator.name in "
                            + "[" + ", ".join(f"'{c}'" for c in CLASSIFIERS) + "])",
                    "message": "the task must be the estimator's: classification for a classifier, regression for a regressor",
                    "fieldPath": ".task",
                },
            ],
            # The search's parameters are the estimator's, which only this node sees both of.
            ADMISSION_RULES: estimator_param_rules("search.parameters", "estimator.name", present="has(self.search)"),
        }
    )

    dataset_ref: VersionedRef = Field(description="The Dataset, optionally pinned to a version.")
    target: ColumnName = Field(description="Column to predict.")
    features: Annotated[list[ColumnName], Field(min_length=1, max_length=512, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Feature columns; default every column that is neither the target nor an id."
    )
    preprocessing: PreprocessingSpec | None = Field(default=None, description="Impute, scale and encode.")
    estimator: EstimatorSpec = Field(description="The estimator and its parameters.")
    task: Literal["classification", "regression"] | None = Field(
        default=None, description="Inferred from the estimator when absent."
    )
    split: SplitSpec | None = Field(default=None, description="Held-out split.")
    cv: CvSpec | None = Field(default=None, description="Cross-validation on the training split.")
    search: SearchSpec | None = Field(default=None, description="Hyper-parameter search.")
    resources: Resources | None = Field(default=None, description="Resources of the training pod.")
    deadline_seconds: Annotated[int, Field(ge=10, le=604_800)] = Field(
        default=3600, description="Job activeDeadlineSeconds: the run fails when it takes longer."
    )
    retries: Annotated[int, Field(ge=0, le=10)] = Field(default=0, description="Job backoffLimit.")
    executor: Executor | None = Field(default=None, description="Where the run executes; default from operator settings.")
    experiment: Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")] | None = Field(
        default=None, description="Experiment name; also the mloop.dev/experiment label."
    )
    requirement_refs: Annotated[list[ObjectRef], Field(max_length=16)] | None = Field(
        default=None, description="Requirements to evaluate this run against; their governance limits gate the start."
    )
    cache_policy: Literal["reuse", "never"] = Field(
        default="never", description="reuse: take the result of an identical succeeded run instead of training again."
    )
    mlflow: MlflowSpec | None = Field(
        default=None, description="MLflow export of the succeeded run; on when the operator has a tracking URI."
    )


class TrialResult(ApiModel):
    """The best search trial."""

    index: Annotated[int, Field(ge=0)] = Field(description="Trial index in the Indexed Job.")
    params: Annotated[dict[ParamName, Any], Field(max_length=64)] = Field(description="Parameters of the trial.")
    score: float = Field(description="Mean CV score of the trial.")


class MlflowStatus(ApiModel):
    """Where the run's MLflow export stands."""

    state: Literal["Pending", "Exported", "Failed", "Disabled"] = Field(
        description="Pending (retried with backoff), Exported, Failed (will not be retried) or Disabled."
    )
    tracking_uri: Annotated[str, Field(max_length=512)] | None = Field(default=None, description="The tracking server.")
    experiment: Annotated[str, Field(max_length=256)] | None = Field(default=None, description="MLflow experiment name.")
    experiment_id: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="MLflow experiment id.")
    run_id: Annotated[str, Field(max_length=64)] | None = Field(default=None, description="The MLflow run id.")
    model_uri: Annotated[str, Field(max_length=512)] | None = Field(
        default=None, description="URI of the logged MLflow model (models:/<model id>)."
    )
    attempts: Annotated[int, Field(ge=0)] = Field(default=0, description="Export attempts so far.")
    retry_at: datetime | None = Field(default=None, description="When the next attempt is due (state Pending).")
    exported_at: datetime | None = Field(default=None, description="When the export landed.")


class TrainingRunStatus(ApiModel):
    """Observed state of a TrainingRun."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(default=None, description="The metadata.generation last reconciled.")
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Field(default=None, description="Pending, Running, Succeeded or Failed.")
    started_at: datetime | None = Field(default=None, description="When the run started.")
    finished_at: datetime | None = Field(default=None, description="When the run finished.")
    dataset: Annotated[str, Field(max_length=300)] | None = Field(default=None, description="Pinned dataset as name@version.")
    dataset_version: Annotated[str, Field(max_length=12)] | None = Field(default=None, description="Pinned dataset version.")
    dataset_digest: Annotated[str, Field(max_length=71)] | None = Field(default=None, description="Digest of the pinned version.")
    primary_metric: Annotated[str, Field(max_length=80)] | None = Field(default=None, description="Primary metric as name=value.")
    metrics: Annotated[dict[MetricName, float], Field(max_length=32)] | None = Field(default=None, description="Held-out and CV metrics.")
    model_uri: Annotated[str, Field(max_length=1024)] | None = Field(default=None, description="s3:// URI of model.skops.")
    model_digest: Annotated[str, Field(max_length=71, pattern=DIGEST_PATTERN)] | None = Field(default=None, description="sha256 of model.skops.")
    best_trial: TrialResult | None = Field(default=None, description="Best search trial, when there was a search.")
    trials: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Number of search trials run.")
    checks: Annotated[list[CheckMeasurement], Field(max_length=64)] | None = Field(
        default=None, description="Slice metrics and behavioural tests measured for the referenced Requirements.")
    requirements: Annotated[list[CriterionResult], Field(max_length=64)] | None = Field(
        default=None, description="Each criterion of each referenced Requirement: pass or fail, value and threshold."
    )
    cache_source: Annotated[str, Field(max_length=253)] | None = Field(default=None, description="The run whose result was reused.")
    task: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="Name of the task in flight (the Job, or the local process)."
    )
    retries: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Tasks lost to storage outages (exit code 75), each run again under a new name."
    )
    failure: Annotated[str, Field(max_length=1024)] | None = Field(default=None, description="Why the run failed.")
    mlflow: MlflowStatus | None = Field(default=None, description="The MLflow export, when one is wanted.")
    outbox: Annotated[list[OutboxEntry], Field(max_length=64)] | None = Field(
        default=None, description=OUTBOX_DESCRIPTION)
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(
        default_factory=list, description="Conditions: Succeeded, RequirementsMet, GovernanceBlocked, MLflowExported, Ready."
    )


class TrainingRun(ApiModel):
    spec: TrainingRunSpec
    status: TrainingRunStatus | None = None
