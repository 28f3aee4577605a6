"""ONNX fast path: the server's answers equal the scikit-learn model's on the package's held-out rows.

Real packages from the operator (iris, wine, diabetes, and a pipeline with categorical encoding), served by
the real server over HTTP, compared with the package's own skops model run by scikit-learn.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from tests.helpers import apply_object
from tests.integration.test_dataset_sources import ready as dataset_ready
from tests.integration.test_modelpackage import packaged, s3_text
from tests.integration.test_serving import get, post, start_server
from tests.integration.test_trainingrun import succeeded

SPLIT = {"testFraction": 0.25, "seed": 7}


def categorical_rows() -> tuple[list[str], list[list]]:
    rng = np.random.default_rng(3)
    sizes = rng.normal(10, 3, 400).round(3)
    colours = rng.choice(["red", "green", "blue"], 400)
    shapes = rng.choice(["round", "square"], 400)
    labels = ["yes" if (s > 10) != (c == "red") else "no" for s, c in zip(sizes, colours)]
    return ["size", "colour", "shape", "label"], [[float(s), str(c), str(h), y]
                                                  for s, c, h, y in zip(sizes, colours, shapes, labels)]


def table(source: dict) -> pd.DataFrame:
    """The dataset as the ingest task reads it: bundled tables by the same loader, inline rows as given."""
    from mloop.api.dataset import BuiltinSource
    from mloop.data.tables import load_builtin

    if "builtin" in source:
        return load_builtin(BuiltinSource.model_validate(source["builtin"]))
    return pd.DataFrame(source["inline"]["rows"], columns=source["inline"]["columns"])


CASES = {
    "iris": ({"builtin": {"name": "iris"}}, "species", "classification", "LogisticRegression", {"max_iter": 500}),
    "wine": ({"builtin": {"name": "wine"}}, "cultivar", "classification", "LogisticRegression", {"max_iter": 2000}),
    "diabetes": ({"builtin": {"name": "diabetes"}}, "target", "regression", "Ridge", {}),
    "shapes": ({"inline": dict(zip(("columns", "rows"), categorical_rows()))}, "label", "classification",
               "LogisticRegression", {}),
}


def package(kubectl, api_client, namespace: str, name: str, source: dict, target: str, estimator: str,
            params: dict) -> dict:
    apply_object(kubectl, namespace, "Dataset", name, {"source": source})
    dataset_ready(api_client, namespace, name)
    apply_object(kubectl, namespace, "TrainingRun", name, {
        "datasetRef": {"name": name}, "target": target, "estimator": {"name": estimator, "params": params},
        "split": SPLIT, "cv": {"folds": 2}})
    succeeded(api_client, namespace, name, timeout=240)
    apply_object(kubectl, namespace, "ModelPackage", f"{name}-1", {"model": name, "trainingRunRef": {"name": name},
                                                                  "formats": ["skops", "onnx"]})
    return packaged(api_client, namespace, f"{name}-1", timeout=240)


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_serves_the_same_predictions_as_scikit_learn(case, kubectl, api_client, namespace, operator, s3) -> None:
    from mloop.storage.models import load_model

    source, target, task, estimator, params = CASES[case]
    obj = package(kubectl, api_client, namespace, case, source, target, estimator, params)
    uri = obj["status"]["uri"]
    manifest = json.loads(s3_text(s3, uri, "manifest.json"))
    assert manifest["onnx"]["parity"] == "exact" and manifest["onnx"]["inputType"] == "float64"
    assert "ONNX (exact parity, float64 inputs)" in s3_text(s3, uri, "modelcard.md")
    frame = table(source)
    x, y = frame.drop(columns=[target]), frame[target]
    _, x_test, _, _ = train_test_split(x, y, test_size=SPLIT["testFraction"], random_state=SPLIT["seed"],
                                       stratify=y if task == "classification" else None)
    key = uri.split("/", 3)[3] + "model.skops"
    model = load_model(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read(),
                       manifest["files"]["model.skops"]["sha256"])
    expected = model.predict(x_test)
    proc, endpoint = start_server(obj, "--workers", "1")
    try:
        meta = json.loads(get(f"{endpoint}/v2/models/{case}")[1])
        assert meta["platform"] == "onnxruntime" and meta["parameters"]["runtime"] == "onnx"
        code, answer = post(f"{endpoint}/predict", {"inputs": {c: x_test[c].tolist() for c in x_test.columns},
                                                    "probabilities": False})
        assert code == 200, answer
        if task == "classification":
            assert answer["predictions"] == [str(v) for v in expected]
        else:  # float64 all the way; summation order may differ in the last bits
            np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-9, atol=1e-12)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_pipeline_without_exact_parity_is_served_by_scikit_learn(kubectl, api_client, namespace, operator,
                                                                 s3) -> None:
    """A forest regressor: onnxruntime has no float64 tree kernel here, and float32 moves its answers."""
    obj = package(kubectl, api_client, namespace, "forest", {"builtin": {"name": "diabetes"}}, "target",
                  "RandomForestRegressor", {"n_estimators": 20})
    uri = obj["status"]["uri"]
    manifest = json.loads(s3_text(s3, uri, "manifest.json"))
    assert manifest["onnx"]["parity"] != "exact" and manifest["onnx"]["inputType"] == "float32"
    card = s3_text(s3, uri, "modelcard.md")
    assert "The converter needs float32 for this pipeline" in card
    assert "the server runs the scikit-learn" in card.lower()
    proc, endpoint = start_server(obj, "--workers", "1")
    try:
        meta = json.loads(get(f"{endpoint}/v2/models/forest")[1])
        assert meta["platform"] == "scikit-learn" and meta["parameters"]["runtime"] == "sklearn"
        assert meta["parameters"]["runtime_reason"].startswith("ONNX parity failed")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    refused, _ = start_server(obj, "--runtime", "onnx")
    output, _ = refused.communicate(timeout=60)
    assert refused.returncode == 3 and "runtime onnx asked for, but ONNX parity failed" in output
