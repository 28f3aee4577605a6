"""The operator's diff base is kopf's own essence, built without deep-copying the status and metadata it drops."""

from __future__ import annotations

import copy

import kopf
import pytest

from mloop.constants import ANNOTATION_PREFIX
from mloop.handlers.lifecycle import LeanDiffBaseStorage

BODY = {
    "apiVersion": "mloop.dev/v1alpha1", "kind": "TrainingRun",
    "metadata": {"name": "a", "namespace": "n", "uid": "u", "resourceVersion": "5", "labels": {"team": "x"},
                 "annotations": {"mloop.dev/last-handled-configuration": "{}", "note": "kept",
                                 "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                 "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                 "ownerReferences": [{"kind": "Requirement", "name": "r", "uid": "r-1"}]},
    "spec": {"datasetRef": {"name": "iris"}, "estimator": {"params": {"C": [1, 2]}}},
    "status": {"phase": "Pending", "task": "train-a-1"},
}


@pytest.mark.parametrize("extra", [None, [("spec",)], ["status.phase"], [("status", "task")]])
def test_the_essence_is_kopfs(extra) -> None:
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    lean = LeanDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    ours = lean.build(body=kopf.Body(copy.deepcopy(BODY)), extra_fields=extra)
    assert ours == kopfs.build(body=kopf.Body(copy.deepcopy(BODY)), extra_fields=extra)
    assert "managedFields" not in ours.get("metadata", {})


def test_the_essence_is_a_copy() -> None:
    body = copy.deepcopy(BODY)
    essence = LeanDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration").build(body=kopf.Body(body))
    body["spec"]["estimator"]["params"]["C"].append(3)
    body["metadata"]["labels"]["team"] = "y"
    assert essence["spec"]["estimator"]["params"]["C"] == [1, 2] and essence["metadata"]["labels"]["team"] == "x"
