"""Every mistake the resource alone reveals is refused by the real API server at admission, with its field path.

The table holds one realistic mistake per row, for every kind; each is applied with `kubectl apply
--dry-run=server` and the refusal must name the field path and say what is wrong. Rules the CRD's own CEL
cannot see (estimator parameter names, inline row width) come from the generated admission policy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import condition, get_object, wait_for

ROOT = Path(__file__).resolve().parents[2]

DS = {"source": {"builtin": {"name": "iris"}}}
INLINE = {"source": {"inline": {"columns": ["id", "age", "label"], "rows": [[1, 30, "a"], [2, 41, "b"]]}}}
DERIVED = {"source": {"derived": {"datasetRef": {"name": "iris"}, "transform": {}}}}
COLLECTION = {"source": {"collection": {"model": "iris"}}}
TR = {"datasetRef": {"name": "iris"}, "target": "species", "estimator": {"name": "LogisticRegression"}}
GRID = {**TR, "search": {"type": "grid", "parameters": {"C": [0.1, 1.0]}}}
REQ = {"title": "Good enough", "metrics": [{"metric": "accuracy", "min": 0.9}]}
MP = {"model": "iris", "trainingRunRef": {"name": "iris-lr"}}


def at(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of base with the dotted path set to value (None removes the key)."""
    spec = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


def manifest(kind: str, spec: dict[str, Any], name: str = "mistake") -> str:
    return yaml.safe_dump({"apiVersion": "mloop.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})


# (id, kind, spec, the field path the refusal names, words it must also hold)
MISTAKES: list[tuple[str, str, dict[str, Any], str, str]] = [
    # Dataset
    ("row-too-short", "Dataset", at(INLINE, "source.inline.rows", [[1, 30, "a"], [2, 41]]),
     "spec.source.inline.rows[1]", "2 values for 3 columns"),
    ("row-too-long", "Dataset", at(INLINE, "source.inline.rows", [[1, 30, "a", "x"]]),
     "spec.source.inline.rows[0]", "4 values for 3 columns"),
    ("inline-column-twice", "Dataset", at(INLINE, "source.inline.columns", ["id", "age", "id"]),
     "spec.source.inline.columns[2]", 'Duplicate value: "id"'),
    ("schema-column-twice", "Dataset",
     at(DS, "schema", {"columns": [{"name": "a", "type": "float"}, {"name": "a", "type": "string"}]}),
     "spec.schema.columns[1]", "Duplicate value"),
    ("inline-no-columns", "Dataset", at(INLINE, "source.inline.columns", []), "spec.source.inline.columns",
     "at least 1 items"),
    ("inline-no-rows", "Dataset", at(INLINE, "source.inline.rows", []), "spec.source.inline.rows", "at least 1 items"),
    ("inline-bad-column-name", "Dataset", at(INLINE, "source.inline.columns", ["id", "1st", "label"]),
     "spec.source.inline.columns[1]", "should match"),
    ("two-sources", "Dataset", at(DS, "source.s3", {"uri": "s3://data/iris.csv"}), "spec.source",
     "exactly one source"),
    ("no-source", "Dataset", {"source": {}}, "spec.source", "exactly one source"),
    ("unknown-builtin", "Dataset", at(DS, "source.builtin.name", "titanic"), "spec.source.builtin.name",
     "Unsupported value"),
    ("s3-http-uri", "Dataset", {"source": {"s3": {"uri": "https://data.example/iris.csv"}}}, "spec.source.s3.uri",
     "should match"),
    ("s3-excel", "Dataset", {"source": {"s3": {"uri": "s3://data/iris.xlsx", "format": "xlsx"}}},
     "spec.source.s3.format", "Unsupported value"),
    ("s3-two-char-delimiter", "Dataset", {"source": {"s3": {"uri": "s3://data/iris.csv", "delimiter": ";;"}}},
     "spec.source.s3.delimiter", "may not be more than 1"),
    ("select-and-drop", "Dataset", at(DERIVED, "source.derived.transform", {"select": ["a"], "drop": ["b"]}),
     "spec.source.derived.transform", "select or drop, not both"),
    ("empty-select", "Dataset", at(DERIVED, "source.derived.transform", {"select": []}),
     "spec.source.derived.transform.select", "at least 1 items"),
    ("sample-fraction-and-rows", "Dataset",
     at(DERIVED, "source.derived.transform", {"sample": {"fraction": 0.5, "rows": 10}}),
     "spec.source.derived.transform.sample", "exactly one of fraction or rows"),
    ("sample-fraction-over-one", "Dataset", at(DERIVED, "source.derived.transform", {"sample": {"fraction": 1.5}}),
     "spec.source.derived.transform.sample.fraction", "less than or equal to 1"),
    ("split-part-validation", "Dataset", at(DERIVED, "source.derived.transform", {"split": {"part": "validation"}}),
     "spec.source.derived.transform.split.part", "Unsupported value"),
    ("split-fraction-one", "Dataset",
     at(DERIVED, "source.derived.transform", {"split": {"part": "test", "testFraction": 1}}),
     "spec.source.derived.transform.split.testFraction", "less than 1"),
    ("derived-version-latest", "Dataset", at(DERIVED, "source.derived.datasetRef.version", "latest"),
     "spec.source.derived.datasetRef.version", "should match"),
    ("derived-without-parent", "Dataset", at(DERIVED, "source.derived.datasetRef", None),
     "spec.source.derived", "exactly one of datasetRef, union or join"),
    ("derived-ref-and-union", "Dataset",
     at(DERIVED, "source.derived.union", {"datasets": [{"name": "a"}, {"name": "b"}]}),
     "spec.source.derived", "exactly one of datasetRef, union or join"),
    ("union-of-one", "Dataset", at(DERIVED, "source.derived", {"union": {"datasets": [{"name": "a"}]}}),
     "spec.source.derived.union.datasets", "at least 2 items"),
    ("union-column-twice", "Dataset", at(DERIVED, "source.derived", {"union": {
        "datasets": [{"name": "a"}, {"name": "b"}], "columns": ["x", "x"]}}),
     "spec.source.derived.union.columns[1]", 'Duplicate value: "x"'),
    ("join-without-key", "Dataset", at(DERIVED, "source.derived", {"join": {"left": {"name": "a"},
                                                                             "right": {"name": "b"}}}),
     "spec.source.derived.join.on", "Required value"),
    ("join-outer", "Dataset", at(DERIVED, "source.derived", {"join": {"left": {"name": "a"}, "right": {"name": "b"},
                                                                       "on": ["id"], "how": "outer"}}),
     "spec.source.derived.join.how", "Unsupported value"),
    ("collection-interval-words", "Dataset", at(COLLECTION, "source.collection.interval", "5 minutes"),
     "spec.source.collection.interval", "should match"),
    ("collection-zero-rows", "Dataset", at(COLLECTION, "source.collection.minNewRows", 0),
     "spec.source.collection.minNewRows", "greater than or equal to 1"),
    ("collection-stage-prod", "Dataset", at(COLLECTION, "source.collection.stage", "prod"),
     "spec.source.collection.stage", "Unsupported value"),
    ("column-type-text", "Dataset", at(DS, "schema", {"columns": [{"name": "a", "type": "text"}]}),
     "spec.schema.columns[0].type", "Unsupported value"),
    ("column-min-over-max", "Dataset", at(DS, "schema", {"columns": [{"name": "a", "type": "float", "min": 5, "max": 1}]}),
     "spec.schema.columns[0]", "min must not exceed max"),
    ("column-values-and-range", "Dataset",
     at(DS, "schema", {"columns": [{"name": "a", "type": "integer", "allowedValues": ["1"], "min": 0}]}),
     "spec.schema.columns[0]", "allowedValues or a range"),
    ("column-role-label", "Dataset", at(DS, "schema", {"columns": [{"name": "a", "type": "string", "role": "label"}]}),
     "spec.schema.columns[0].role", "Unsupported value"),
    ("column-pii-high", "Dataset", at(DS, "schema", {"columns": [{"name": "a", "type": "string", "pii": "high"}]}),
     "spec.schema.columns[0].pii", "Unsupported value"),
    ("schema-no-columns", "Dataset", at(DS, "schema", {"columns": []}), "spec.schema.columns", "at least 1 items"),
    ("null-fraction-percent", "Dataset", at(DS, "validation", {"maxNullFraction": 5}),
     "spec.validation.maxNullFraction", "less than or equal to 1"),
    ("negative-min-rows", "Dataset", at(DS, "validation", {"minRows": -1}), "spec.validation.minRows",
     "greater than or equal to 0"),
    ("classification-secret", "Dataset", at(DS, "governance", {"classification": "secret"}),
     "spec.governance.classification", "Unsupported value"),
    ("retention-zero", "Dataset", at(DS, "governance", {"retentionDays": 0}), "spec.governance.retentionDays",
     "greater than or equal to 1"),
    ("licence-not-spdx", "Dataset", at(DS, "governance", {"license": "Apache 2.0"}), "spec.governance.license",
     "should match"),
    ("refresh-hourly", "Dataset", at(DS, "refresh", {"interval": "hourly"}), "spec.refresh.interval", "should match"),
    ("refresh-of-builtin", "Dataset", at(DS, "refresh", {"interval": "1h"}), "spec.refresh",
     "refresh re-reads an s3 source"),
    ("executor-docker", "Dataset", at(DS, "executor", "docker"), "spec.executor", "Unsupported value"),
    ("requirement-ref-uppercase", "Dataset", at(DS, "requirementRefs", [{"name": "Iris"}]),
     "spec.requirementRefs[0].name", "should match"),
    # TrainingRun
    ("param-of-another-estimator", "TrainingRun", at(TR, "estimator.params", {"n_estimators": 100}),
     "spec.estimator.params.n_estimators", "LogisticRegression has no parameter of that name; it takes C,"),
    ("param-hyphenated", "TrainingRun", at(TR, "estimator.params", {"max-iter": 500}),
     "spec.estimator.params.max-iter", "a key must match"),
    ("param-camel-case", "TrainingRun", at(TR, "estimator.params", {"maxIter": 500}),
     "spec.estimator.params.maxIter", "LogisticRegression has no parameter"),
    ("param-misspelt", "TrainingRun", at(TR, "estimator.params", {"max_iterations": 500}),
     "spec.estimator.params.max_iterations", "it takes C, class_weight"),
    ("param-naive-bayes-alpha", "TrainingRun", {**TR, "estimator": {"name": "GaussianNB", "params": {"alpha": 1}}},
     "spec.estimator.params.alpha", "GaussianNB has no parameter of that name; it takes priors, var_smoothing"),
    ("param-managed", "TrainingRun", at(TR, "estimator.params", {"n_jobs": 4}), "spec.estimator.params.n_jobs",
     "mloop sets this parameter"),
    ("param-dotted", "TrainingRun", at(TR, "estimator.params", {"estimator.C": 1}), "spec.estimator.params.estimator.C",
     "a key must match"),
    ("grid-over-missing-param", "TrainingRun", at(GRID, "search.parameters", {"n_estimators": [10, 50]}),
     "spec.search.parameters.n_estimators", "LogisticRegression has no parameter of that name"),
    ("grid-over-empty-list", "TrainingRun", at(GRID, "search.parameters", {"C": []}), "spec.search.parameters.C",
     "at least 1 items"),
    ("grid-hyphenated", "TrainingRun", at(GRID, "search.parameters", {"max-depth": [2, 4]}),
     "spec.search.parameters.max-depth", "a key must match"),
    ("grid-managed", "TrainingRun", at(GRID, "search.parameters", {"verbose": [0, 1]}),
     "spec.search.parameters.verbose", "mloop sets this parameter"),
    ("grid-without-parameters", "TrainingRun", at(GRID, "search.parameters", {}), "spec.search.parameters",
     "at least 1 properties"),
    ("grid-value-not-a-list", "TrainingRun", at(GRID, "search.parameters", {"C": 1.0}), "spec.search.parameters.C",
     "must be of type array"),
    ("random-without-trials", "TrainingRun", at(GRID, "search.type", "random"), "spec.search", "needs trials"),
    ("search-bayes", "TrainingRun", at(GRID, "search.type", "bayes"), "spec.search.type", "Unsupported value"),
    ("search-zero-trials", "TrainingRun", at(GRID, "search.trials", 0), "spec.search.trials",
     "greater than or equal to 1"),
    ("scoring-capitalised", "TrainingRun", at(GRID, "search.scoring", "Accuracy"), "spec.search.scoring",
     "should match"),
    ("unknown-estimator", "TrainingRun", at(TR, "estimator.name", "XGBClassifier"), "spec.estimator.name",
     "Unsupported value"),
    ("params-not-a-map", "TrainingRun", at(TR, "estimator.params", ["C=1"]), "spec.estimator.params",
     "must be of type object"),
    ("no-estimator", "TrainingRun", at(TR, "estimator", None), "spec.estimator", "Required value"),
    ("no-target", "TrainingRun", at(TR, "target", None), "spec.target", "Required value"),
    ("target-is-feature", "TrainingRun", at(TR, "features", ["species", "petal_width"]), "spec",
     "the target cannot also be a feature"),
    ("feature-twice", "TrainingRun", at(TR, "features", ["petal_width", "sepal_width", "petal_width"]),
     "spec.features[2]", 'Duplicate value: "petal_width"'),
    ("no-features", "TrainingRun", at(TR, "features", []), "spec.features", "at least 1 items"),
    # The API server prints the float bound 0.9 as 0 in this message (kube-openapi formats it as an integer).
    ("test-fraction-percent", "TrainingRun", at(TR, "split", {"testFraction": 20}), "spec.split.testFraction",
     "should be less than or equal to"),
    ("one-fold", "TrainingRun", at(TR, "cv", {"folds": 1}), "spec.cv.folds", "greater than or equal to 2"),
    ("fifty-retries", "TrainingRun", at(TR, "retries", 50), "spec.retries", "less than or equal to 10"),
    ("deadline-five-seconds", "TrainingRun", at(TR, "deadlineSeconds", 5), "spec.deadlineSeconds",
     "greater than or equal to 10"),
    ("dataset-version-latest", "TrainingRun", at(TR, "datasetRef.version", "latest"), "spec.datasetRef.version",
     "should match"),
    ("task-not-the-estimators", "TrainingRun", at(TR, "task", "regression"), "spec.task",
     "the task must be the estimator's"),
    ("task-clustering", "TrainingRun", at(TR, "task", "clustering"), "spec.task", "Unsupported value"),
    ("scale-zscore", "TrainingRun", at(TR, "preprocessing", {"numeric": {"scale": "zscore"}}),
     "spec.preprocessing.numeric.scale", "Unsupported value"),
    ("cache-always", "TrainingRun", at(TR, "cachePolicy", "always"), "spec.cachePolicy", "Unsupported value"),
    ("experiment-with-spaces", "TrainingRun", at(TR, "experiment", "My Experiment"), "spec.experiment",
     "should match"),
    ("mlflow-ftp", "TrainingRun", at(TR, "mlflow", {"trackingUri": "ftp://mlflow:5000"}), "spec.mlflow.trackingUri",
     "should match"),
    ("cpu-in-words", "TrainingRun", at(TR, "resources", {"requests": {"cpu": "two"}}), "spec.resources.requests.cpu",
     "should match"),
    # Requirement
    ("no-metrics", "Requirement", at(REQ, "metrics", []), "spec.metrics", "at least 1 items"),
    ("criterion-without-bound", "Requirement", at(REQ, "metrics", [{"metric": "accuracy"}]), "spec.metrics[0]",
     "needs min or max"),
    ("criterion-min-over-max", "Requirement", at(REQ, "metrics", [{"metric": "rmse", "min": 9, "max": 1}]),
     "spec.metrics[0]", "min must not exceed max"),
    ("metric-name-shouted", "Requirement", at(REQ, "metrics", [{"metric": "Accuracy!", "min": 0.9}]),
     "spec.metrics[0].metric", "should match"),
    ("criterion-scope-test", "Requirement", at(REQ, "metrics", [{"metric": "accuracy", "min": 0.9, "scope": "test"}]),
     "spec.metrics[0].scope", "Unsupported value"),
    ("two-primary-metrics", "Requirement",
     at(REQ, "metrics", [{"metric": "accuracy", "min": 0.9, "primary": True}, {"metric": "f1_macro", "min": 0.8, "primary": True}]),
     "spec.metrics", "at most one metric criterion is primary"),
    ("pii-level-twice", "Requirement", at(REQ, "governance", {"allowedPiiLevels": ["none", "none"]}),
     "spec.governance.allowedPiiLevels[1]", "Duplicate value"),
    ("no-title", "Requirement", at(REQ, "title", None), "spec.title", "Required value"),
    ("priority-urgent", "Requirement", at(REQ, "priority", "urgent"), "spec.priority", "Unsupported value"),
    ("data-zero-rows", "Requirement", at(REQ, "data", {"minRows": 0}), "spec.data.minRows",
     "greater than or equal to 1"),
    ("data-age-in-words", "Requirement", at(REQ, "data", {"maxAge": "30 days"}), "spec.data.maxAge", "should match"),
    ("governance-secret", "Requirement", at(REQ, "governance", {"maxClassification": "secret"}),
     "spec.governance.maxClassification", "Unsupported value"),
    ("pii-level-secret", "Requirement", at(REQ, "governance", {"allowedPiiLevels": ["secret"]}),
     "spec.governance.allowedPiiLevels[0]", "Unsupported value"),
    ("zero-latency", "Requirement", at(REQ, "serving", {"p95LatencyMs": 0}), "spec.serving.p95LatencyMs",
     "greater than 0"),
    ("retrain-without-template", "Requirement", at(REQ, "retrain", {"datasetRef": {"name": "feedback"}}),
     "spec.retrain.templateRunRef", "Required value"),
    ("retrain-to-prod", "Requirement",
     at(REQ, "retrain", {"templateRunRef": {"name": "r"}, "datasetRef": {"name": "f"}, "promoteTo": "Prod"}),
     "spec.retrain.promoteTo", "Unsupported value"),
    ("negative-drift", "Requirement",
     at(REQ, "retrain", {"templateRunRef": {"name": "r"}, "datasetRef": {"name": "f"}, "trigger": {"driftThreshold": -1}}),
     "spec.retrain.trigger.driftThreshold", "greater than 0"),
    ("accuracy-in-percent", "Requirement", at(REQ, "metrics", [{"metric": "accuracy", "min": 90}]),
     "spec.metrics[0]", "a fraction between 0 and 1"),
    ("slice-recall-over-one", "Requirement",
     at(REQ, "metrics", [{"metric": "recall", "min": 1.5, "slice": {"column": "sex"}}]), "spec.metrics[0]",
     "(0.9, not 90)"),
    ("slice-without-bound", "Requirement", at(REQ, "metrics", [{"metric": "recall", "slice": {"column": "sex"}}]),
     "spec.metrics[0]", "needs min or max (or slice.maxGap)"),
    ("slice-on-cv", "Requirement",
     at(REQ, "metrics", [{"metric": "accuracy", "min": 0.8, "scope": "cv", "slice": {"column": "sex"}}]),
     "spec.metrics[0]", "slices are judged on held-out rows"),
    ("slice-bin-twice", "Requirement",
     at(REQ, "metrics", [{"metric": "accuracy", "min": 0.8, "slice": {"column": "age", "bins": [30, 30]}}]),
     "spec.metrics[0].slice.bins[1]", "Duplicate value"),
    ("slice-negative-gap", "Requirement",
     at(REQ, "metrics", [{"metric": "recall", "slice": {"column": "sex", "maxGap": -0.1}}]),
     "spec.metrics[0].slice.maxGap", "greater than or equal to 0"),
    ("test-two-kinds", "Requirement", at(REQ, "tests", [{"name": "t", "invariance": {"column": "sex"},
                                                         "directional": {"column": "age", "direction": "increasing"}}]),
     "spec.tests[0]", "exactly one of invariance, directional or minimumFunctionality"),
    ("test-name-twice", "Requirement", at(REQ, "tests", [{"name": "t", "invariance": {"column": "a"}},
                                                          {"name": "t", "invariance": {"column": "b"}}]),
     "spec.tests[1]", "Duplicate value"),
    ("changed-fraction-over-one", "Requirement",
     at(REQ, "tests", [{"name": "t", "invariance": {"column": "sex", "maxChangedFraction": 2}}]),
     "spec.tests[0].invariance.maxChangedFraction", "less than or equal to 1"),
    ("direction-up", "Requirement", at(REQ, "tests", [{"name": "t", "directional": {"column": "a", "direction": "up"}}]),
     "spec.tests[0].directional.direction", "Unsupported value"),
    ("functionality-rows-and-dataset", "Requirement",
     at(REQ, "tests", [{"name": "t", "minimumFunctionality": {"rows": [{"a": 1}], "datasetRef": {"name": "d"}}}]),
     "spec.tests[0].minimumFunctionality", "give exactly one of rows or datasetRef"),
    # ModelPackage
    ("stage-prod", "ModelPackage", at(MP, "stage", "Prod"), "spec.stage", "Unsupported value"),
    ("sampling-over-one", "ModelPackage", at(MP, "serve", {"samplingRate": 1.5}), "spec.serve.samplingRate",
     "less than or equal to 1"),
    ("model-name-underscore", "ModelPackage", at(MP, "model", "Iris_Model"), "spec.model", "should match"),
    ("format-pickle", "ModelPackage", at(MP, "formats", ["pickle"]), "spec.formats[0]", "Unsupported value"),
    ("format-twice", "ModelPackage", at(MP, "formats", ["onnx", "onnx"]), "spec.formats[1]", "Duplicate value"),
    ("negative-replicas", "ModelPackage", at(MP, "serve", {"replicas": -1}), "spec.serve.replicas",
     "greater than or equal to 0"),
    ("no-training-run", "ModelPackage", at(MP, "trainingRunRef", None), "spec.trainingRunRef", "Required value"),
    ("requirement-namespace-spaces", "ModelPackage", at(MP, "requirementRefs", [{"name": "r", "namespace": "Prod NS"}]),
     "spec.requirementRefs[0].namespace", "should match"),
    ("memory-in-words", "ModelPackage", at(MP, "serve", {"resources": {"limits": {"memory": "lots"}}}),
     "spec.serve.resources.limits.memory", "should match"),
]


def wait_for_policies(dry_run: Any) -> None:
    for kind, spec in (("Dataset", at(INLINE, "source.inline.rows", [[1]])), ("TrainingRun", at(TR, "estimator.params", {"n_estimators": 1}))):
        wait_for(lambda: "ValidatingAdmissionPolicy" in dry_run(manifest(kind, spec)).stderr)


@pytest.fixture(scope="module")
def checked(kubectl: Any, stack: Any) -> Any:
    """kubectl dry-run in a namespace of its own, once the admission policies are in force (they take effect a
    moment after they are created)."""
    namespace = "admission"
    kubectl("create", "namespace", namespace)

    def dry_run(text: str) -> Any:
        return kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=text)

    wait_for_policies(dry_run)
    yield dry_run
    kubectl("delete", "namespace", namespace, "--wait=false")


def test_the_table_covers_every_kind_with_at_least_sixty_mistakes() -> None:
    assert len(MISTAKES) >= 60
    assert len({m[0] for m in MISTAKES}) == len(MISTAKES)
    assert {m[1] for m in MISTAKES} == {"Dataset", "TrainingRun", "Requirement", "ModelPackage"}


@pytest.mark.parametrize("kind,spec,path,words", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_is_refused_with_its_field_path(checked, kind, spec, path, words) -> None:
    result = checked(manifest(kind, spec))
    assert result.returncode != 0, result.stdout
    assert f"{path}: " in result.stderr or f"{path} " in result.stderr, result.stderr
    assert words in result.stderr, result.stderr


@pytest.mark.parametrize("kind,spec", [("Dataset", INLINE), ("Dataset", DERIVED), ("Dataset", COLLECTION),
                                       ("TrainingRun", GRID), ("Requirement", REQ), ("ModelPackage", MP)])
def test_the_bases_of_the_mistakes_are_valid(checked, kind, spec) -> None:
    result = checked(manifest(kind, spec))
    assert result.returncode == 0, result.stderr


def test_every_parameter_of_every_estimator_is_admitted(checked) -> None:
    """The allow-list admits what the trainer accepts: each estimator with all of its parameters, as params and
    as a grid."""
    from mloop.api.params import ESTIMATOR_PARAMS

    docs = []
    for i, (name, params) in enumerate(ESTIMATOR_PARAMS.items()):
        values = {p: 1 for p in params}  # names are what is judged here; the trainer judges values
        docs.append(yaml.safe_load(manifest("TrainingRun", {**TR, "estimator": {"name": name, "params": values}},
                                            name=f"params-{i}")))
        grid = {p: [1] for p in params[:16]}
        docs.append(yaml.safe_load(manifest("TrainingRun", {**TR, "estimator": {"name": name},
                                                            "search": {"type": "grid", "parameters": grid}},
                                            name=f"grid-{i}")))
    result = checked(yaml.safe_dump_all(docs))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("created (server dry run)") == len(docs)


def test_largest_resources_are_judged_within_the_cel_cost_budget(checked) -> None:
    """At the schema's bounds the policy still answers with its own verdict, not a cost-budget error."""
    rows = [list(range(64))] * 999 + [list(range(63))]
    wide = {"source": {"inline": {"columns": [f"c{i}" for i in range(64)], "rows": rows}}}
    refused = checked(manifest("Dataset", wide))
    assert "spec.source.inline.rows[999]: 63 values for 64 columns" in refused.stderr, refused.stderr[-2000:]
    allowed = checked(manifest("Dataset", at(wide, "source.inline.rows", rows[:999])))
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    many = {f"unknown_{i}": i for i in range(64)}
    params = checked(manifest("TrainingRun", at(TR, "estimator.params", many)))
    assert "spec.estimator.params.unknown_" in params.stderr and "has no parameter" in params.stderr, params.stderr
    grid = {f"p{i}": list(range(64)) for i in range(16)}
    search = checked(manifest("TrainingRun", at(GRID, "search.parameters", grid)))
    assert "spec.search.parameters.p" in search.stderr and "has no parameter" in search.stderr, search.stderr


def test_without_the_policy_the_operator_refuses_a_short_row_with_the_same_path(
        kubectl, kubeconfig, api_client, namespace, operator) -> None:
    """A cluster where the admission policy is missing: the Dataset fails with InvalidSpec naming the row."""
    from mloop.k8s.crds import install_crds

    ragged = manifest("Dataset", at(INLINE, "source.inline.rows", [[1, 30, "a"], [2, 41]]), name="ragged")
    kubectl("delete", "validatingadmissionpolicybinding", "datasets.mloop.dev", check=True)
    try:
        wait_for(lambda: kubectl("apply", "-n", namespace, "-f", "-", input=ragged).returncode == 0)
        obj = wait_for(lambda: (o := get_object(api_client, namespace, "datasets", "ragged")) and condition(o, "Ready") and o)
    finally:
        install_crds(kubeconfig)
        wait_for_policies(lambda text: kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=text))
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"], obj["status"]["phase"]) == ("False", "InvalidSpec", "Failed")
    assert "spec.source.inline.rows[1]: 2 values for 3 columns" in ready["message"], ready["message"]


@pytest.mark.parametrize("change,words", [
    ({"estimator": {"name": "LogisticRegression", "params": {"C": -1}}},
     "spec.estimator.params.C: The 'C' parameter of LogisticRegression must be"),
    ({"search": {"type": "grid", "parameters": {"penalty": ["l2", "l7"]}}},
     "spec.search.parameters.penalty: The 'penalty' parameter of LogisticRegression must be"),
], ids=["value", "search-value"])
def test_parameter_values_no_cel_rule_carries_are_refused_by_the_operator_with_their_path(
        kubectl, api_client, namespace, operator, change, words) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("Dataset", DS, name="iris"), check=True)
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest("TrainingRun", {**TR, **change}, name="run"), check=True)
    run = wait_for(lambda: (o := get_object(api_client, namespace, "trainingruns", "run"))
                   and (o.get("status") or {}).get("phase") == "Failed" and o, timeout=60)
    failed = condition(run, "Succeeded")
    assert failed["reason"] == "InvalidParameter" and words in failed["message"], failed


def test_an_object_admitted_before_the_policy_takes_metadata_patches_but_not_a_bad_spec_change(
        kubectl, kubeconfig, namespace) -> None:
    """Policies do not ratchet: an object from before a rule must still take the operator's annotations."""
    from mloop.k8s.crds import install_crds

    legacy = manifest("Dataset", at(INLINE, "source.inline.rows", [[1, 30, "a"], [2, 41]]), name="legacy")
    kubectl("delete", "validatingadmissionpolicybinding", "datasets.mloop.dev", check=True)
    try:
        wait_for(lambda: kubectl("apply", "-n", namespace, "-f", "-", input=legacy).returncode == 0)
    finally:
        install_crds(kubeconfig)
        wait_for_policies(lambda text: kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=text))
    annotated = kubectl("annotate", "-n", namespace, "dataset", "legacy", "mloop.dev/note=kept")
    assert annotated.returncode == 0, annotated.stderr
    changed = kubectl("patch", "-n", namespace, "dataset", "legacy", "--type=merge", "-p",
                      '{"spec": {"source": {"inline": {"rows": [[1, 30, "a"], [2]]}}}}')
    assert changed.returncode != 0 and "spec.source.inline.rows[1]: 1 values for 3 columns" in changed.stderr, changed.stderr
