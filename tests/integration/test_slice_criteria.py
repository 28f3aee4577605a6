"""Slice criteria and behavioural tests end to end: the real operator and API server, real S3, real training.

The clinic table is breast_cancer (bundled with scikit-learn) with two added columns: `region`, in which the
labels of one region (west) are flipped at random for 45% of its rows, so a model is fine overall and on
three regions but fails the fourth; and `group`, drawn at random, with a second target `biased` that always
says 1 for group M: a model trained on it uses a column it should ignore.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_sources import put, ready as dataset_ready
from tests.integration.test_modelpackage import packaged, s3_text
from tests.integration.test_trainingrun import succeeded

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["radius", "texture", "smoothness", "concavity", "symmetry"]
RUN = {"datasetRef": {"name": "clinic"}, "target": "diagnosis", "features": FEATURES,
       "estimator": {"name": "LogisticRegression", "params": {"max_iter": 500}},
       "split": {"testFraction": 0.3, "seed": 7}, "cv": {"folds": 3}}


def clinic_frame() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(3)
    out = pd.DataFrame({name: data[f"mean {name}"] for name in FEATURES})
    n = len(out)
    out["region"] = np.array(["north", "south", "east", "west"])[np.arange(n) % 4]
    out["group"] = rng.choice(["F", "M"], n)
    y = data["target"].to_numpy()
    flipped = (out["region"] == "west").to_numpy() & (rng.random(n) < 0.45)
    out["diagnosis"] = np.where(flipped, 1 - y, y)
    out["biased"] = np.where(out["group"] == "M", 1, y)
    return out


def clinic(kubectl, api_client, namespace: str, s3) -> None:
    uri = put(s3, f"raw/{namespace}/clinic.csv", clinic_frame().to_csv(index=False).encode())
    apply_object(kubectl, namespace, "Dataset", "clinic", {"source": {"s3": {"uri": uri}}})
    dataset_ready(api_client, namespace, "clinic")


def results(obj: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in obj["status"].get("requirements") or []:
        out.setdefault(r["criterion"], []).append(r)
    return out


def test_slice_criterion_refuses_the_model_that_fails_one_slice(kubectl, api_client, namespace, operator, s3) -> None:
    clinic(kubectl, api_client, namespace, s3)
    apply_object(kubectl, namespace, "Requirement", "fair", {"title": "Good in every region", "metrics": [
        {"metric": "accuracy", "min": 0.8, "primary": True},
        {"metric": "accuracy", "min": 0.8, "slice": {"column": "region", "minRows": 20}},
        {"metric": "recall", "slice": {"column": "group", "minRows": 20, "maxGap": 0.15}},
        {"metric": "recall", "slice": {"column": "region", "minRows": 20, "maxGap": 0.1}}]})
    apply_object(kubectl, namespace, "TrainingRun", "clinic-lr", {**RUN, "requirementRefs": [{"name": "fair"}]})
    run = succeeded(api_client, namespace, "clinic-lr")
    judged = results(run)

    assert judged["metric:accuracy"][0]["passed"] is True  # fine overall
    [by_region] = judged["slice:accuracy:region"]
    assert by_region["passed"] is False and by_region["worst"] == "region=west", by_region
    assert {s["slice"]: s["passed"] for s in by_region["slices"]} == {
        "region=east": True, "region=north": True, "region=south": True, "region=west": False}
    assert all(s["rows"] >= 20 for s in by_region["slices"])
    assert by_region["message"].startswith(f"worst slice region=west: {by_region['value']:.4g} < 0.8")
    # the fairness bound: recall is even across the random groups, not across regions
    [group_gap], [region_gap] = judged["slice-gap:recall:group"], judged["slice-gap:recall:region"]
    assert group_gap["passed"] is True and group_gap["value"] <= 0.15, group_gap
    assert region_gap["passed"] is False and region_gap["value"] > 0.1 and region_gap["worst"] == "region=west"
    met = condition(run, "RequirementsMet")
    assert met["status"] == "False" and "fair/slice:accuracy:region: worst slice region=west" in met["message"]
    assert [c["key"].startswith("slice-") for c in run["status"]["checks"]] == [True, True, True]

    apply_object(kubectl, namespace, "ModelPackage", "clinic-1", {"model": "clinic", "trainingRunRef": {"name": "clinic-lr"},
                                                                    "stage": "Production"})
    package = packaged(api_client, namespace, "clinic-1")
    promoted = condition(package, "Promoted")
    assert package["status"]["stage"] == "None" and promoted["reason"] == "CriterionFailed"
    assert "Production refused: fair/slice:accuracy:region is worst slice region=west" in promoted["message"]
    report = json.loads(s3_text(s3, package["status"]["uri"], "requirements.json"))
    sliced = next(r for r in report[0]["results"] if r["criterion"] == "slice:accuracy:region")
    assert sliced["worst"] == "region=west" and len(sliced["slices"]) == 4
    assert "slice:accuracy:region" in s3_text(s3, package["status"]["uri"], "modelcard.md")

    req = wait_for(lambda: (o := get_object(api_client, namespace, "requirements", "fair"))["status"].get("candidate") and o)
    candidate = {r["criterion"]: r for r in req["status"]["candidate"]["results"]}
    assert req["status"]["candidate"]["satisfied"] is False
    assert candidate["slice:accuracy:region"]["worst"] == "region=west"


def test_invariance_catches_a_model_that_uses_a_column_it_should_ignore(kubectl, api_client, namespace, operator,
                                                                         s3) -> None:
    clinic(kubectl, api_client, namespace, s3)
    apply_object(kubectl, namespace, "Requirement", "blind", {"title": "Group plays no part", "tests": [
        {"name": "ignores-group", "invariance": {"column": "group", "change": "swap", "maxChangedFraction": 0.05}},
        {"name": "group-neutral", "invariance": {"column": "group", "change": "neutral", "value": "F",
                                                 "maxChangedFraction": 0.05}}]})
    features = [*FEATURES, "group"]
    apply_object(kubectl, namespace, "TrainingRun", "plain", {**RUN, "features": features,
                                                              "requirementRefs": [{"name": "blind"}]})
    apply_object(kubectl, namespace, "TrainingRun", "leaning", {**RUN, "features": features, "target": "biased",
                                                                "requirementRefs": [{"name": "blind"}]})
    plain, leaning = succeeded(api_client, namespace, "plain"), succeeded(api_client, namespace, "leaning")

    for name in ("test:ignores-group", "test:group-neutral"):
        [ok] = results(plain)[name]
        assert ok["passed"] is True and ok["value"] <= 0.05, ok
    [caught] = results(leaning)["test:ignores-group"]
    assert caught["passed"] is False and caught["value"] > 0.05
    assert "predictions changed with only group changed (swap)" in caught["message"]
    assert "changed the prediction" in caught["message"], caught["message"]
    assert condition(leaning, "RequirementsMet")["status"] == "False"

    apply_object(kubectl, namespace, "ModelPackage", "leaning-1", {"model": "clinic", "trainingRunRef": {"name": "leaning"},
                                                                     "stage": "Production"})
    package = packaged(api_client, namespace, "leaning-1")
    refused = condition(package, "Promoted")
    assert refused["reason"] == "CriterionFailed" and "blind/test:ignores-group" in refused["message"]
    report = json.loads(s3_text(s3, package["status"]["uri"], "requirements.json"))
    assert {r["criterion"]: r["passed"] for r in report[0]["results"]} == {"test:ignores-group": False,
                                                                          "test:group-neutral": False}
    assert "blind test:ignores-group: FAIL" in s3_text(s3, package["status"]["uri"], "modelcard.md")


def test_directional_expectation_on_a_regression(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "diabetes", {"source": {"builtin": {"name": "diabetes"}}})
    apply_object(kubectl, namespace, "Requirement", "monotone", {"title": "Progression rises with BMI", "tests": [
        {"name": "bmi-up", "directional": {"column": "bmi", "direction": "increasing"}},
        {"name": "bmi-down", "directional": {"column": "bmi", "direction": "decreasing", "delta": 0.01}}]})
    apply_object(kubectl, namespace, "TrainingRun", "diabetes-lr", {
        "datasetRef": {"name": "diabetes"}, "target": "target", "estimator": {"name": "LinearRegression"},
        "requirementRefs": [{"name": "monotone"}]})
    judged = results(succeeded(api_client, namespace, "diabetes-lr"))
    [up], [down] = judged["test:bmi-up"], judged["test:bmi-down"]
    assert up["passed"] is True and up["value"] == 0
    assert down["passed"] is False and down["value"] == 1  # a linear model with a positive BMI weight: every row
    assert "raising bmi raised the score on 100.00% of" in down["message"] and "bmi" in down["message"]


def test_minimum_functionality_inline_and_from_a_dataset(kubectl, api_client, namespace, operator, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    cases = [[5.1, 3.5, 1.4, 0.2, "setosa"], [6.3, 3.3, 6.0, 2.5, "setosa"], [5.9, 3.0, 5.1, 1.8, "virginica"]]
    apply_object(kubectl, namespace, "Dataset", "iris-cases", {"source": {"inline": {
        "columns": ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"], "rows": cases}}})
    apply_object(kubectl, namespace, "Requirement", "basics", {"title": "Textbook flowers", "tests": [
        {"name": "textbook", "minimumFunctionality": {"rows": [
            {"sepal_length": 5.0, "sepal_width": 3.4, "petal_length": 1.5, "petal_width": 0.2, "species": "setosa"},
            {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3, "species": "virginica"}]}},
        {"name": "curated", "minimumFunctionality": {"datasetRef": {"name": "iris-cases"}}}]})
    version = dataset_ready(api_client, namespace, "iris-cases")["status"]["version"]
    apply_object(kubectl, namespace, "TrainingRun", "iris-lr", {
        "datasetRef": {"name": "iris"}, "target": "species", "estimator": {"name": "LogisticRegression",
                                                                           "params": {"max_iter": 500}},
        "requirementRefs": [{"name": "basics"}]})
    run = succeeded(api_client, namespace, "iris-lr")
    judged = results(run)
    [textbook], [curated] = judged["test:textbook"], judged["test:curated"]
    assert textbook["passed"] is True and textbook["value"] == 1
    assert curated["passed"] is False and curated["value"] == round(2 / 3, 6)
    assert "row 1: predicted virginica, expected setosa (1 wrong)" in curated["message"]
    spec = json.loads(s3.client.get_object(Bucket=s3.bucket, Key="/".join(
        run["status"]["modelUri"].split("/")[3:-1]) + "/spec.json")["Body"].read())
    pinned = [t["dataset"] for t in spec["checks"]["tests"] if "dataset" in t]
    assert [(p["name"], p["version"]) for p in pinned] == [("iris-cases", version)]


def test_the_breast_cancer_example_refuses_a_model_that_misses_mid_size_tumours(kubectl, api_client, namespace,
                                                                                 operator) -> None:
    example = ROOT / "examples" / "slices" / "breast-cancer.yaml"
    kubectl("apply", "-n", namespace, "-f", str(example), check=True)
    run = succeeded(api_client, namespace, "screening-lr")
    judged = results(run)
    assert judged["metric:accuracy"][0]["passed"] is True
    [recall] = judged["slice:recall:mean_radius"]
    assert recall["passed"] is False and recall["worst"] == "mean_radius=[12, 15)", recall
    assert [s["slice"] for s in recall["slices"]] == ["mean_radius<12", "mean_radius=[12, 15)", "mean_radius>=15"]
    assert judged["test:concave-points-raise-risk"][0]["passed"] is True
    refused = condition(packaged(api_client, namespace, "screening-lr-1"), "Promoted")
    assert refused["reason"] == "CriterionFailed"
    assert "screening/slice:recall:mean_radius is worst slice mean_radius=[12, 15)" in refused["message"]
