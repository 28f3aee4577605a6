"""The CRDs on a real API server: they install, list, explain, and refuse bad input with a field path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

DS_OK = {"source": {"builtin": {"name": "iris"}}}
TR_OK = {"datasetRef": {"name": "iris"}, "target": "species", "estimator": {"name": "LogisticRegression"}}
MP_OK = {"model": "iris", "trainingRunRef": {"name": "iris-lr"}}
REQ_OK = {"title": "Good enough"}


def doc(kind: str, spec: dict, name: str = "x") -> str:
    return yaml.safe_dump({"apiVersion": "mloop.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})


# (case id, manifest, the field path and words the refusal must contain)
INVALID = [
    ("two-sources", doc("Dataset", {"source": {"builtin": {"name": "iris"}, "s3": {"uri": "s3://b/k.csv"}}}),
     ["spec.source", "exactly one source"]),
    ("no-source", doc("Dataset", {"source": {}}), ["spec.source", "exactly one source"]),
    ("unknown-builtin", doc("Dataset", {"source": {"builtin": {"name": "titanic"}}}),
     ["spec.source.builtin.name", "Unsupported value"]),
    ("bad-s3-uri", doc("Dataset", {"source": {"s3": {"uri": "http://bucket/key.csv"}}}), ["spec.source.s3.uri"]),
    ("empty-inline", doc("Dataset", {"source": {"inline": {"columns": ["a"], "rows": []}}}),
     ["spec.source.inline.rows"]),
    ("bad-column-type", doc("Dataset", {**DS_OK, "schema": {"columns": [{"name": "a", "type": "text"}]}}),
     ["spec.schema.columns[0].type"]),
    ("column-min-over-max", doc("Dataset", {**DS_OK, "schema": {"columns": [{"name": "a", "type": "float", "min": 5, "max": 1}]}}),
     ["spec.schema.columns[0]", "min must not exceed max"]),
    ("bad-classification", doc("Dataset", {**DS_OK, "governance": {"classification": "secret"}}),
     ["spec.governance.classification"]),
    ("zero-retention", doc("Dataset", {**DS_OK, "governance": {"retentionDays": 0}}),
     ["spec.governance.retentionDays"]),
    ("select-and-drop", doc("Dataset", {"source": {"derived": {"datasetRef": {"name": "iris"},
                                                               "transform": {"select": ["a"], "drop": ["b"]}}}}),
     ["spec.source.derived.transform", "select or drop"]),
    ("bad-refresh-interval", doc("Dataset", {**DS_OK, "refresh": {"interval": "every hour"}}),
     ["spec.refresh.interval"]),
    ("criterion-without-bound", doc("Requirement", {**REQ_OK, "metrics": [{"metric": "accuracy"}]}),
     ["spec.metrics[0]", "needs min or max"]),
    ("criterion-bad-metric-name", doc("Requirement", {**REQ_OK, "metrics": [{"metric": "Accuracy!", "min": 0.9}]}),
     ["spec.metrics[0].metric"]),
    ("requirement-without-title", doc("Requirement", {"priority": "high"}), ["spec.title", "Required"]),
    ("bad-pii-level", doc("Requirement", {**REQ_OK, "governance": {"allowedPiiLevels": ["secret"]}}),
     ["spec.governance.allowedPiiLevels[0]"]),
    ("unknown-estimator", doc("TrainingRun", {**TR_OK, "estimator": {"name": "SuperNet"}}),
     ["spec.estimator.name", "Unsupported value"]),
    ("test-fraction-too-big", doc("TrainingRun", {**TR_OK, "split": {"testFraction": 0.99}}),
     ["spec.split.testFraction"]),
    ("target-is-feature", doc("TrainingRun", {**TR_OK, "features": ["species", "petal_width"]}),
     ["spec", "target cannot also be a feature"]),
    ("bad-dataset-version", doc("TrainingRun", {**TR_OK, "datasetRef": {"name": "iris", "version": "latest"}}),
     ["spec.datasetRef.version"]),
    ("random-search-without-trials", doc("TrainingRun", {**TR_OK, "search": {"type": "random", "parameters": {"c": [1, 2]}}}),
     ["spec.search", "needs trials"]),
    ("too-many-retries", doc("TrainingRun", {**TR_OK, "retries": 50}), ["spec.retries"]),
    ("bad-stage", doc("ModelPackage", {**MP_OK, "stage": "Prod"}), ["spec.stage", "Unsupported value"]),
    ("sampling-over-one", doc("ModelPackage", {**MP_OK, "serve": {"samplingRate": 1.5}}),
     ["spec.serve.samplingRate"]),
    ("bad-model-name", doc("ModelPackage", {**MP_OK, "model": "Iris_Model"}), ["spec.model"]),
    ("name-too-long", doc("Requirement", REQ_OK, name="r" * 64), ["metadata.name", "at most 63"]),
]


@pytest.mark.parametrize("manifest,expected", [(m, e) for _, m, e in INVALID], ids=[c for c, _, _ in INVALID])
def test_invalid_resource_is_refused_with_field_path(kubectl, namespace, manifest, expected) -> None:
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest)
    assert result.returncode != 0, result.stdout
    for words in expected:
        assert words in result.stderr, result.stderr


def test_at_least_fifteen_refusals_are_covered() -> None:
    assert len(INVALID) >= 15


@pytest.mark.parametrize(
    "kind,spec,change,expected",
    [
        ("TrainingRun", TR_OK, {"target": "petal_width"}, "a TrainingRun's spec is immutable"),
        ("ModelPackage", MP_OK, {"model": "other"}, "model is immutable"),
        ("ModelPackage", MP_OK, {"trainingRunRef": {"name": "other"}}, "trainingRunRef is immutable"),
    ],
)
def test_immutable_fields_refuse_updates(kubectl, namespace, kind, spec, change, expected) -> None:
    assert kubectl("apply", "-n", namespace, "-f", "-", input=doc(kind, spec)).returncode == 0
    result = kubectl("apply", "-n", namespace, "-f", "-", input=doc(kind, {**spec, **change}))
    assert result.returncode != 0
    assert "spec" in result.stderr and expected in result.stderr, result.stderr


def test_mutable_fields_still_update(kubectl, namespace) -> None:
    assert kubectl("apply", "-n", namespace, "-f", "-", input=doc("ModelPackage", MP_OK)).returncode == 0
    result = kubectl("apply", "-n", namespace, "-f", "-", input=doc("ModelPackage", {**MP_OK, "stage": "Staging"}))
    assert result.returncode == 0, result.stderr


def test_every_crd_is_established(kubectl) -> None:
    result = kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=mloop", "-o",
                     "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=='Established')].status} {end}")
    assert sorted(result.stdout.split()) == [
        "datasets.mloop.dev=True", "erasurerequests.mloop.dev=True", "modelpackages.mloop.dev=True",
        "requirements.mloop.dev=True", "trainingruns.mloop.dev=True",
    ]


def test_kubectl_get_mloop_lists_all_four_kinds(kubectl, namespace) -> None:
    for kind, spec in (("Requirement", REQ_OK), ("Dataset", DS_OK), ("TrainingRun", TR_OK), ("ModelPackage", MP_OK)):
        kubectl("apply", "-n", namespace, "-f", "-", input=doc(kind, spec, name="one"), check=True)
    result = kubectl("get", "mloop", "-n", namespace, "-o", "name")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == [
        "dataset.mloop.dev/one", "modelpackage.mloop.dev/one", "requirement.mloop.dev/one", "trainingrun.mloop.dev/one",
    ]


def test_short_names_work(kubectl, namespace) -> None:
    for kind, spec, short in (("Requirement", REQ_OK, "req"), ("Dataset", DS_OK, "dset"),
                              ("TrainingRun", TR_OK, "tr"), ("ModelPackage", MP_OK, "mp")):
        kubectl("apply", "-n", namespace, "-f", "-", input=doc(kind, spec, name="short"), check=True)
        assert kubectl("get", short, "short", "-n", namespace, "-o", "name").stdout.strip().startswith(kind.lower())


def test_ds_is_ambiguous_with_daemonsets(kubectl, namespace) -> None:
    """`ds` is also the DaemonSet short name and kubectl prefers the built-in; `dset` is unambiguous."""
    kubectl("apply", "-n", namespace, "-f", "-", input=doc("Dataset", DS_OK, name="amb"), check=True)
    result = kubectl("get", "ds", "-n", namespace)
    assert "could also match lower priority resource datasets.mloop.dev" in result.stderr


def test_kubectl_explain_shows_descriptions(kubectl) -> None:
    result = kubectl("explain", "trainingrun.spec")
    assert result.returncode == 0, result.stderr
    assert "One immutable execution" in result.stdout
    assert "cachePolicy" in result.stdout and "take the result of an identical succeeded run" in result.stdout
    nested = kubectl("explain", "dataset.spec.source.builtin.name")
    assert "One of iris, wine, breast_cancer, diabetes, digits." in nested.stdout


def test_printer_columns_show_phase_and_key_fields(kubectl, namespace) -> None:
    expected = {
        ("tr", "TrainingRun"): ["NAME", "PHASE", "DATASET", "METRIC", "AGE"],
        ("datasets", "Dataset"): ["NAME", "VERSION", "ROWS", "PHASE", "AGE"],
        ("mp", "ModelPackage"): ["NAME", "MODEL", "VERSION", "STAGE", "METRIC", "PHASE", "AGE"],
        ("req", "Requirement"): ["NAME", "PHASE", "SATISFIED", "CANDIDATE", "PRODUCTION", "AGE"],
    }
    specs = {"TrainingRun": TR_OK, "Dataset": DS_OK, "ModelPackage": MP_OK, "Requirement": REQ_OK}
    for (short, kind), columns in expected.items():
        kubectl("apply", "-n", namespace, "-f", "-", input=doc(kind, specs[kind], name="cols"), check=True)
        listing = kubectl("get", short, "-n", namespace)
        assert listing.stdout, (short, listing.stderr)
        assert listing.stdout.splitlines()[0].split() == columns, listing.stderr


def test_every_example_passes_server_side_dry_run(kubectl, namespace) -> None:
    files = sorted((ROOT / "examples").rglob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path))
        assert result.returncode == 0, f"{path}: {result.stderr}"
