"""Dataset: a named, versioned table with schema, rules, profile and governance."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from mloop.api.common import (
    ADMISSION_RULES,
    ApiModel,
    ColumnName,
    Condition,
    DIGEST_PATTERN,
    DURATION_PATTERN,
    Executor,
    GovernanceTags,
    Name,
    ObjectRef,
    OUTBOX_DESCRIPTION,
    OutboxEntry,
    PiiLevel,
    S3_URI_PATTERN,
    UNIQUE,
    Stage,
    VERSION_PATTERN,
    VersionedRef,
)

BUILTIN_DATASETS = ("iris", "wine", "breast_cancer", "diabetes", "digits")
ColumnType = Literal["integer", "float", "string", "boolean", "datetime", "category"]


class S3Source(ApiModel):
    """A table stored in S3-compatible storage, as one object or every object under a prefix."""

    uri: Annotated[str, Field(max_length=1024, pattern=S3_URI_PATTERN)] = Field(
        description="s3://bucket/key of one object, or s3://bucket/prefix/ (ending in /) for every object under it."
    )
    format: Literal["auto", "csv", "parquet", "jsonl"] = Field(
        default="auto", description="File format; auto decides from the file extension."
    )
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] | None = Field(
        default=None, description="CSV field delimiter; default comma."
    )


class BuiltinSource(ApiModel):
    """A table that ships with scikit-learn; no network needed."""

    name: Literal["iris", "wine", "breast_cancer", "diabetes", "digits"] = Field(
        description="One of iris, wine, breast_cancer, diabetes, digits."
    )


_ROW_FITS = "self.rows.map(r, size(r) == size(self.columns))"


class InlineSource(ApiModel):
    """A small table written in the resource itself."""

    # The CRD's CEL cannot see rows of untyped cells, so the admission policy checks the row width.
    model_config = ConfigDict(json_schema_extra={ADMISSION_RULES: [{
        "expression": "self.rows.all(r, size(r) == size(self.columns))",
        "messageExpression": f"'.rows[' + string({_ROW_FITS}.indexOf(false)) + ']: ' + "
                             f"string(size(self.rows[{_ROW_FITS}.indexOf(false)])) + ' values for ' + "
                             "string(size(self.columns)) + ' columns; give one value per column, null for a missing one'",
    }]})

    columns: Annotated[list[ColumnName], Field(min_length=1, max_length=64, json_schema_extra=UNIQUE)] = Field(
        description="Column names.")
    rows: Annotated[
        list[Annotated[list[Any], Field(max_length=64)]],
        Field(min_length=1, max_length=1000),
    ] = Field(description="Rows of values, one value per column; null for a missing value.")

    # The same check for a cluster without the policy: the error's location is the row, rows[i].
    @field_validator("rows")
    @classmethod
    def _rows_match_columns(cls, rows: list[list[Any]], info: ValidationInfo) -> list[list[Any]]:
        width = len(info.data.get("columns") or [])
        errors = [InitErrorDetails(type=PydanticCustomError(
            "row_width", "{values} values for {columns} columns; give one value per column, null for a missing one",
            {"values": len(row), "columns": width}), loc=(i,), input=row)
            for i, row in enumerate(rows) if width and len(row) != width]
        if errors:
            raise ValidationError.from_exception_data("rows", errors)
        return rows


class SampleTransform(ApiModel):
    """Keep a random sample of rows."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.fraction) != has(self.rows)", "message": "give exactly one of fraction or rows"}
            ]
        }
    )

    fraction: Annotated[float, Field(gt=0, le=1)] | None = Field(default=None, description="Fraction of rows to keep.")
    rows: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = Field(default=None, description="Number of rows to keep.")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(default=0, description="Random seed.")


class SplitTransform(ApiModel):
    """Keep one side of a seeded train/test split."""

    part: Literal["train", "test"] = Field(description="Which side to keep.")
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(default=0.2, description="Fraction of rows in the test side.")
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(default=0, description="Random seed.")


class Transform(ApiModel):
    """A declarative transform, applied in this order: filter, select/drop, sample, split."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!(has(self.select) && has(self.drop))", "message": "give select or drop, not both"}
            ]
        }
    )

    select: Annotated[list[ColumnName], Field(min_length=1, max_length=256, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Keep only these columns, in this order."
    )
    drop: Annotated[list[ColumnName], Field(min_length=1, max_length=256, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Remove these columns."
    )
    filter: Annotated[str, Field(min_length=1, max_length=512)] | None = Field(
        default=None,
        description="Keep rows matching a simple expression: comparisons of columns with literals joined by and/or, e.g. \"age >= 18 and country == 'NL'\".",
    )
    sample: SampleTransform | None = Field(default=None, description="Keep a random sample.")
    split: SplitTransform | None = Field(default=None, description="Keep one side of a split.")


MAX_PARENTS = 8


class UnionSpec(ApiModel):
    """The rows of several Datasets, one after another, in the order given."""

    datasets: Annotated[list[VersionedRef], Field(min_length=2, max_length=MAX_PARENTS)] = Field(
        description="The parent Datasets, each optionally pinned to a version.")
    columns: Annotated[list[ColumnName], Field(min_length=1, max_length=256, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Take these columns, in this order, from every parent. Empty: every parent must "
                                  "have the same columns, and the first parent's order is kept.")


class JoinSpec(ApiModel):
    """Two Datasets side by side, matched on key columns; each left row meets at most one right row."""

    left: VersionedRef = Field(description="The left Dataset: its rows and their order are kept.")
    right: VersionedRef = Field(description="The right Dataset: its key must be unique.")
    on: Annotated[list[ColumnName], Field(min_length=1, max_length=8, json_schema_extra=UNIQUE)] = Field(
        description="Key columns, present in both; every other column must be in only one of them.")
    how: Literal["inner", "left"] = Field(
        default="inner", description="inner keeps left rows with a match; left keeps every left row (nulls where none).")


class DerivedSource(ApiModel):
    """Other Datasets at a version (one, a union, or a join), plus a transform applied to the combined rows."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "[has(self.datasetRef), has(self.union), has(self.join)].filter(x, x).size() == 1",
         "message": "give exactly one of datasetRef, union or join"}]})

    dataset_ref: VersionedRef | None = Field(default=None, description="The parent Dataset, optionally pinned to a version.")
    union: UnionSpec | None = Field(default=None, description="The rows of several parents with the same columns.")
    join: JoinSpec | None = Field(default=None, description="Two parents matched on key columns.")
    transform: Transform = Field(default_factory=Transform, description="What to do to the parent's (or combined) rows.")

    @model_validator(mode="after")
    def _one_way(self) -> DerivedSource:
        if sum(x is not None for x in (self.dataset_ref, self.union, self.join)) != 1:
            raise ValueError("give exactly one of datasetRef, union or join")
        return self

    def parents(self) -> list[VersionedRef]:
        """Every parent, in the order the combination reads them (a join: left, right)."""
        if self.union is not None:
            return list(self.union.datasets)
        if self.join is not None:
            return [self.join.left, self.join.right]
        assert self.dataset_ref is not None
        return [self.dataset_ref]


class CollectionSource(ApiModel):
    """Predictions a served model made, joined with the labels that came back."""

    model: Name = Field(description="Registered model name whose predictions are collected.")
    stage: Stage | None = Field(default=None, description="Only predictions served from this stage. Empty: any stage.")
    min_new_rows: Annotated[int, Field(ge=1, le=1_000_000_000)] = Field(
        default=100, description="Cut a new version once at least this many new labelled rows have arrived."
    )
    interval: Annotated[str, Field(max_length=32, pattern=DURATION_PATTERN)] = Field(
        default="1m", description="How often to look for new labelled rows."
    )


class DatasetSource(ApiModel):
    """Where the rows come from: exactly one of s3, builtin, inline, derived, collection."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.s3), has(self.builtin), has(self.inline), has(self.derived), has(self.collection)]"
                    ".filter(x, x).size() == 1",
                    "message": "exactly one source must be set: s3, builtin, inline, derived or collection",
                }
            ]
        }
    )

    s3: S3Source | None = Field(default=None, description="A CSV, Parquet or JSON-lines object or prefix in S3.")
    builtin: BuiltinSource | None = Field(default=None, description="A table bundled with scikit-learn.")
    inline: InlineSource | None = Field(default=None, description="Rows written in the resource.")
    derived: DerivedSource | None = Field(default=None, description="Other Datasets (one, a union or a join) plus a transform.")
    collection: CollectionSource | None = Field(default=None, description="Served predictions joined with feedback.")


class ColumnSpec(ApiModel):
    """A declared column: type, role, PII level and allowed values."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": "min must not exceed max",
                },
                {
                    "rule": "!has(self.allowedValues) || !(has(self.min) || has(self.max))",
                    "message": "give allowedValues or a range, not both",
                },
            ]
        }
    )

    name: ColumnName = Field(description="Column name.")
    type: ColumnType = Field(description="integer, float, string, boolean, datetime or category.")
    nullable: bool = Field(default=True, description="Whether missing values are allowed.")
    role: Literal["feature", "target", "id", "timestamp"] = Field(
        default="feature", description="feature, target, id or timestamp."
    )
    pii: PiiLevel = Field(default="none", description="PII level: none, quasi, direct or sensitive.")
    allowed_values: Annotated[list[Annotated[str, Field(max_length=256)]],
                              Field(min_length=1, max_length=256, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="The only values allowed (compared as strings)."
    )
    min: float | None = Field(default=None, description="Smallest allowed value.")
    max: float | None = Field(default=None, description="Largest allowed value.")


class SchemaSpec(ApiModel):
    """Declared columns. Without a declaration the schema is inferred."""

    columns: Annotated[list[ColumnSpec], Field(min_length=1, max_length=512, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] = Field(
        description="Declared columns, one per name.")
    allow_extra_columns: bool = Field(default=False, description="Accept columns that are not declared.")


class ValidationRules(ApiModel):
    """Rules every new version must pass before it becomes the current version."""

    min_rows: Annotated[int, Field(ge=0, le=10_000_000_000)] | None = Field(default=None, description="Minimum row count.")
    max_null_fraction: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="Largest allowed null fraction in any column."
    )
    unique: Annotated[list[ColumnName], Field(max_length=16, json_schema_extra=UNIQUE)] | None = Field(
        default=None, description="Columns whose values must be unique (ids)."
    )


class RefreshPolicy(ApiModel):
    """Re-ingest on a schedule."""

    interval: Annotated[str, Field(max_length=32, pattern=DURATION_PATTERN)] = Field(
        description="How often to re-read the source, e.g. 10m or 1h."
    )


class DatasetSpec(ApiModel):
    """A named, versioned table."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.refresh) || has(self.source.s3)", "fieldPath": ".refresh",
                 "message": "refresh re-reads an s3 source; the other sources never need it"}
            ]
        }
    )

    source: DatasetSource = Field(description="Where the rows come from.")
    schema_: SchemaSpec | None = Field(
        default=None, alias="schema", description="Declared columns; inferred when absent."
    )
    validation: ValidationRules | None = Field(default=None, description="Rules a version must pass.")
    governance: GovernanceTags | None = Field(default=None, description="Licence, classification, owner, retention.")
    refresh: RefreshPolicy | None = Field(default=None, description="Re-ingest an s3 source on a schedule.")
    executor: Executor | None = Field(default=None, description="Where ingestion runs; default from operator settings.")
    requirement_refs: Annotated[list[ObjectRef], Field(max_length=16)] | None = Field(
        default=None, description="Requirements whose data criteria this Dataset is meant to meet."
    )


class DatasetVersion(ApiModel):
    """One immutable snapshot."""

    version: Annotated[str, Field(max_length=12, pattern=VERSION_PATTERN)] = Field(description="Version id: first 12 hex digits of the digest.")
    digest: Annotated[str, Field(max_length=71, pattern=DIGEST_PATTERN)] = Field(description="sha256 of the canonical content.")
    rows: Annotated[int, Field(ge=0)] = Field(description="Row count.")
    created_at: datetime = Field(description="When the version was cut.")
    uri: Annotated[str, Field(max_length=1024)] = Field(description="s3:// prefix holding data.parquet, profile.json, manifest.json.")
    expired: bool = Field(default=False, description="Deleted from storage by the retention policy.")
    erased_by: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="The ErasureRequest that deleted this version's data; a tombstone.json stays in its folder.")


class ColumnStatus(ApiModel):
    """A column as found in the current version."""

    name: ColumnName = Field(description="Column name.")
    type: ColumnType = Field(description="Declared or inferred type.")
    role: Literal["feature", "target", "id", "timestamp"] = Field(default="feature", description="Role.")
    pii: PiiLevel = Field(default="none", description="PII level.")


class ColumnProfile(ApiModel):
    """A short profile of one column; the full one is in profile.json."""

    name: ColumnName = Field(description="Column name.")
    nulls: Annotated[int, Field(ge=0)] = Field(description="Number of missing values.")
    distinct: Annotated[int, Field(ge=0)] = Field(description="Number of distinct values.")
    min: float | None = Field(default=None, description="Smallest value (numeric columns).")
    max: float | None = Field(default=None, description="Largest value (numeric columns).")
    mean: float | None = Field(default=None, description="Mean (numeric columns).")


class RuleResult(ApiModel):
    """The outcome of one validation rule."""

    rule: Annotated[str, Field(max_length=64)] = Field(description="Rule name, e.g. minRows, maxNullFraction, schema.")
    column: Annotated[str, Field(max_length=128)] | None = Field(default=None, description="Column the rule applies to.")
    passed: bool = Field(description="Whether the rule passed.")
    message: Annotated[str, Field(max_length=512)] = Field(default="", description="Detail, with offending rows.")


class ColumnDrift(ApiModel):
    """Drift of one column against the previous version."""

    column: ColumnName = Field(description="Column name.")
    method: Literal["psi", "tvd"] = Field(description="psi for numeric columns, tvd (total variation distance) for categorical ones.")
    value: float = Field(description="Drift score.")


class ParentVersion(ApiModel):
    """A parent Dataset version a derived version was made from."""

    name: Name = Field(description="Parent Dataset name.")
    namespace: Annotated[str, Field(max_length=63)] = Field(description="Parent Dataset namespace.")
    version: Annotated[str, Field(max_length=12)] = Field(description="Parent version id.")
    digest: Annotated[str, Field(max_length=71)] = Field(description="Digest of the parent version.")


class DatasetStatus(ApiModel):
    """Observed state of a Dataset."""

    observed_generation: Annotated[int, Field(ge=0)] | None = Field(default=None, description="The metadata.generation last reconciled.")
    phase: Literal["Pending", "Ingesting", "Ready", "Failed"] | None = Field(default=None, description="Pending, Ingesting, Ready or Failed.")
    version: Annotated[str, Field(max_length=12)] | None = Field(default=None, description="Current version id.")
    digest: Annotated[str, Field(max_length=71)] | None = Field(default=None, description="Digest of the current version.")
    rows: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Rows in the current version.")
    source_version: Annotated[str, Field(max_length=2200)] | None = Field(
        default=None, description="For derived and collection sources: what the current version was made from."
    )
    parents: Annotated[list[ParentVersion], Field(max_length=MAX_PARENTS)] | None = Field(
        default=None, description="For derived sources: the parent versions the current version was made from."
    )
    tried_source: Annotated[str, Field(max_length=2200)] | None = Field(
        default=None, description="For derived sources: the parent versions (name@version, comma-separated) the last "
        "ingestion read, whether it cut a version or failed. Each set of parent versions is tried once."
    )
    versions: Annotated[list[DatasetVersion], Field(max_length=20)] | None = Field(
        default=None, description="The last 20 versions, oldest first."
    )
    columns: Annotated[list[ColumnStatus], Field(max_length=512)] | None = Field(default=None, description="Schema of the current version.")
    profile: Annotated[list[ColumnProfile], Field(max_length=64)] | None = Field(
        default=None, description="Profile summary of the first 64 columns."
    )
    validation: Annotated[list[RuleResult], Field(max_length=128)] | None = Field(default=None, description="Result of each rule.")
    drift: Annotated[list[ColumnDrift], Field(max_length=64)] | None = Field(default=None, description="Drift against the previous version.")
    expired: Annotated[list[Annotated[str, Field(max_length=12)]], Field(max_length=100)] | None = Field(
        default=None, description="Versions deleted by the retention policy."
    )
    task: Annotated[str, Field(max_length=253)] | None = Field(default=None, description="Name of the ingestion task in flight.")
    retries: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Ingestion attempts lost to storage outages for this generation.")
    ingest_key: Annotated[str, Field(max_length=16)] | None = Field(
        default=None, description="Hash of source, schema and rules of the last ingestion; governance-only changes keep it."
    )
    last_ingested_at: datetime | None = Field(default=None, description="When the source was last read.")
    outbox: Annotated[list[OutboxEntry], Field(max_length=64)] | None = Field(
        default=None, description=OUTBOX_DESCRIPTION)
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(
        default_factory=list, description="Conditions: Ready, Validated, GovernanceOK."
    )


class Dataset(ApiModel):
    spec: DatasetSpec
    status: DatasetStatus | None = None
