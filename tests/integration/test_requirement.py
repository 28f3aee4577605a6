"""Requirement status follows the objects that reference it, through kopf indexes."""

from __future__ import annotations

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_modelpackage import IRIS_DS, REQUIREMENT, packaged
from tests.integration.test_trainingrun import IRIS_RUN, succeeded


def requirement(api_client, namespace: str) -> dict:
    return get_object(api_client, namespace, "requirements", "iris-req")


def traced(api_client, namespace: str) -> set[str]:
    return {f"{t['kind']}/{t['name']}" for t in requirement(api_client, namespace).get("status", {}).get("trace", [])}


def test_status_follows_creations_and_deletions(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Requirement", "iris-req", REQUIREMENT)
    first = wait_for(lambda: (o := requirement(api_client, namespace)).get("status", {}).get("phase") and o)
    assert first["status"]["phase"] == "Pending" and condition(first, "Satisfied")["reason"] == "NoCandidate"

    apply_object(kubectl, namespace, "Dataset", "iris", {**IRIS_DS, "requirementRefs": [{"name": "iris-req"}]})
    apply_object(kubectl, namespace, "TrainingRun", "weak", {**IRIS_RUN, "requirementRefs": [{"name": "iris-req"}],
                 "estimator": {"name": "DecisionTreeClassifier", "params": {"max_depth": 1}}})
    apply_object(kubectl, namespace, "TrainingRun", "strong", {**IRIS_RUN, "requirementRefs": [{"name": "iris-req"}]})
    wait_for(lambda: traced(api_client, namespace) == {"Dataset/iris", "TrainingRun/weak", "TrainingRun/strong"})
    succeeded(api_client, namespace, "weak"), succeeded(api_client, namespace, "strong")
    status = wait_for(lambda: (s := requirement(api_client, namespace)["status"]).get("candidate", {}) and
                      s["candidate"]["subject"] == "trainingrun/strong" and s)
    assert status["candidate"]["satisfied"] is True
    assert status["candidate"]["results"][0]["criterion"] == "metric:accuracy"
    assert condition(requirement(api_client, namespace), "Satisfied")["reason"] == "NoProductionModel"

    apply_object(kubectl, namespace, "ModelPackage", "strong-1", {"model": "iris", "trainingRunRef": {"name": "strong"},
                                                                    "stage": "Production"})
    packaged(api_client, namespace, "strong-1")
    obj = wait_for(lambda: (o := requirement(api_client, namespace))["status"].get("phase") == "Satisfied" and o)
    assert obj["status"]["production"]["subject"] == "modelpackage/strong-1"
    assert condition(obj, "Satisfied")["status"] == "True"
    assert "ModelPackage/strong-1" in traced(api_client, namespace)

    kubectl("delete", "modelpackage", "strong-1", "-n", namespace, check=True)
    kubectl("delete", "trainingrun", "weak", "-n", namespace, check=True)
    obj = wait_for(lambda: (o := requirement(api_client, namespace))["status"].get("phase") == "Unsatisfied"
                   and "TrainingRun/weak" not in traced(api_client, namespace) and o)
    assert traced(api_client, namespace) == {"Dataset/iris", "TrainingRun/strong"}
    assert obj["status"].get("production") is None
    assert condition(obj, "Satisfied")["reason"] == "NoProductionModel"
