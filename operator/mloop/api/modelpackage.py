"""ModelPackage: one immutable, versioned model of a registered model, with a promotion gate."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from mloop.api.common import (
    ApiModel,
    Condition,
    CriterionResult,
    MetricName,
    DIGEST_PATTERN,
    Name,
    ObjectRef,
    OUTBOX_DESCRIPTION,
    OutboxEntry,
    Resources,
    Stage,
    UNIQUE,
)


class ServeSpec(ApiModel):
    """Serve the package behind a stable endpoint and collect what it predicts."""

    enabled: bool = Field(default=True, description="Serve this package.")
    replicas: Annotated[int, Field(ge=0, le=100)] = Field(default=1, description="Server replicas.")
    resources: Resources | None = Field(default=None, description="Resources of each server pod.")
    sampling_rate: Annotated[float, Field(ge=0, le=1)] = Field(
        default=1.0, description="Fraction of predictions logged to S3 for collection; 0 turns collection off."
    )
    runtime: Literal["auto", "onnx", "sklearn"] = Field(
        default="auto",
        description="Which model the server runs: auto runs the ONNX model with onnxruntime when the package's "
        "parity check passed exactly (every held-out label equal), else scikit-learn; onnx requires that "
        "ONNX model (the server refuses to start without it); sklearn always runs the scikit-learn model.",
    )


class ShadowSpec(ApiModel):
    """Shadow the model's Production package: its server also sends sampled requests to this package's own server."""

    sampling_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="Fraction of the Production server's requests sent to this package as well.")


class ModelPackageSpec(ApiModel):
    """A package of one succeeded TrainingRun under a registered model name."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.model == oldSelf.model", "message": "model is immutable"},
                {"rule": "self.trainingRunRef == oldSelf.trainingRunRef", "message": "trainingRunRef is immutable"},
            ]
        }
    )

    model: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = Field(
        description="Registered model name; versions count up per model."
    )
    training_run_ref: ObjectRef = Field(description="The succeeded TrainingRun to package.")
    requirement_refs: Annotated[list[ObjectRef], Field(max_length=16)] | None = Field(
        default=None, description="Requirements that gate promotion; default the TrainingRun's own."
    )
    formats: Annotated[list[Literal["skops", "onnx"]], Field(max_length=2, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Formats to write; skops is always written, onnx is optional."
    )
    stage: Stage = Field(default="None", description="Desired stage: None, Staging, Production or Archived.")
    serve: ServeSpec | None = Field(default=None, description="Serve this package.")
    require_improvement: bool = Field(
        default=False,
        description="Grant Production only if this package beats the current Production package on the primary metric.",
    )
    shadow: ShadowSpec | None = Field(
        default=None,
        description="While this package is not in Production, run a shadow server for it and have the Production "
        "server send it sampled requests, off the caller's path; its predictions are collected under the same "
        "request ids and scored against Production's when labels come back.",
    )


class ShadowTarget(ApiModel):
    """A candidate package that shadows this one."""

    package: Name = Field(description="The shadowing ModelPackage.")
    url: Annotated[str, Field(max_length=512)] = Field(description="Its shadow server.")
    sampling_rate: Annotated[float, Field(gt=0, le=1)] = Field(description="Fraction of requests it is sent.")
    columns: Annotated[list[Annotated[str, Field(max_length=253)]], Field(max_length=512)] | None = Field(
        default=None, description="The input columns it is sent (its signature's); empty: every column.")


class ShadowStatus(ApiModel):
    """A shadowing package: its server and how it compares with Production on the same labelled live rows."""

    state: Literal["Starting", "Shadowing", "Stopped", "Refused"] = Field(
        default="Starting", description="Starting its server, Shadowing (receiving Production's requests), Stopped, "
                                        "or Refused: its signature needs an input Production's requests lack.")
    endpoint: Annotated[str, Field(max_length=512)] | None = Field(
        default=None, description="URL of this package's shadow server, once it is ready.")
    production: Name | None = Field(default=None, description="The Production package shadowed.")
    production_version: Annotated[int, Field(ge=1)] | None = Field(default=None, description="Its version.")
    metric: MetricName | None = Field(default=None, description="The metric both are scored on.")
    rows: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Live rows that both models answered and that have a label.")
    candidate_value: float | None = Field(default=None, description="This package's metric on those rows.")
    production_value: float | None = Field(default=None, description="The Production package's metric on them.")
    record: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="s3:// URI of the scored comparison.")
    columns: Annotated[list[Annotated[str, Field(max_length=253)]], Field(max_length=512)] | None = Field(
        default=None, description="The input columns Production's server forwards: this package's signature, all "
                                  "of them in Production's; empty until both signatures were compared.")


class ServingStatus(ApiModel):
    """Which runtime the package's server runs, and why."""

    runtime: Literal["onnx", "sklearn"] = Field(
        description="onnx: the ONNX model in onnxruntime; sklearn: the scikit-learn model.")
    reason: Annotated[str, Field(max_length=1024)] = Field(
        default="", description="Why: the parity verdict of the package's ONNX model, or spec.serve.runtime.")


class ModelPackageStatus(ApiModel):
    """Observed state of a ModelPackage."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(default=None, description="The metadata.generation last reconciled.")
    phase: Literal["Pending", "Packaging", "Packaged", "Failed"] | None = Field(default=None, description="Pending, Packaging, Packaged or Failed.")
    version: Annotated[int, Field(ge=1)] | None = Field(default=None, description="Version number within the registered model.")
    uri: Annotated[str, Field(max_length=1024)] | None = Field(default=None, description="s3:// prefix of the package.")
    digest: Annotated[str, Field(max_length=71, pattern=DIGEST_PATTERN)] | None = Field(default=None, description="Digest of manifest.json.")
    formats: Annotated[list[Literal["skops", "onnx"]], Field(max_length=2)] | None = Field(default=None, description="Formats written.")
    onnx_parity: Literal["exact", "approximate", "failed", "unavailable"] | None = Field(
        default=None, description="The ONNX model's parity with the scikit-learn model on held-out rows: exact (every "
        "label equal) lets onnxruntime serve it under runtime auto.")
    stage: Stage | None = Field(default=None, description="Stage actually granted by the promotion gate.")
    endpoint: Annotated[str, Field(max_length=512)] | None = Field(default=None, description="URL of the model server.")
    serving: ServingStatus | None = Field(default=None, description="The runtime the model server runs.")
    training_run: Name | None = Field(default=None, description="The packaged TrainingRun.")
    primary_metric: Annotated[str, Field(max_length=80)] | None = Field(
        default=None, description="The packaged run's primary metric as name=value.")
    task: Annotated[str, Field(max_length=253)] | None = Field(default=None, description="Name of the package task in flight.")
    requirements: Annotated[list[CriterionResult], Field(max_length=64)] | None = Field(
        default=None, description="Each criterion of each gating Requirement."
    )
    shadow: ShadowStatus | None = Field(default=None, description="Shadow evaluation against Production.")
    shadow_targets: Annotated[list[ShadowTarget], Field(max_length=8)] | None = Field(
        default=None, description="Candidates this package's server sends sampled requests to.")
    outbox: Annotated[list[OutboxEntry], Field(max_length=64)] | None = Field(
        default=None, description=OUTBOX_DESCRIPTION)
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(
        default_factory=list, description="Conditions: Packaged, Promoted, Serving, Ready, and Shadowing with spec.shadow."
    )


class ModelPackage(ApiModel):
    spec: ModelPackageSpec
    status: ModelPackageStatus | None = None
