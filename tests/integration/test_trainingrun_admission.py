"""TrainingRun admission and bad input: refused before any Job, with a reason that names the cause."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_trainingrun import IRIS_RUN, finished, succeeded

ROOT = Path(__file__).resolve().parents[2]


def local_tasks(namespace: str, run: str) -> list[str]:
    return sorted(p.name for p in Path(os.environ["MLOOP_LOCAL_DIR"]).glob(f"{namespace}.*-{run}-*.json"))


def test_governance_refusal_then_the_same_data_without_the_pii_column(kubectl, api_client, namespace, operator) -> None:
    kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "governance-refusal" / "refusal.yaml"), check=True)
    refused = finished(api_client, namespace, "churn-with-email")
    blocked = condition(refused, "GovernanceBlocked")
    assert refused["status"]["phase"] == "Failed"
    assert (blocked["status"], blocked["reason"]) == ("True", "PIIFeature")
    assert "feature column 'email' holds direct PII" in blocked["message"] and "churn-no-pii" in blocked["message"]
    assert local_tasks(namespace, "churn-with-email") == []  # no task, no Job
    allowed = succeeded(api_client, namespace, "churn-without-email")
    assert condition(allowed, "GovernanceBlocked")["status"] == "False"
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=churn-with-email",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "GovernanceBlocked" in events


@pytest.mark.parametrize(
    "limits,tags,reason,words",
    [
        ({"allowedLicenses": ["CC0-1.0"]}, {"license": "CC-BY-NC-4.0", "classification": "public"}, "LicenseNotAllowed",
         "licence CC-BY-NC-4.0 of Dataset flowers is not allowed"),
        ({"maxClassification": "internal"}, {"license": "MIT", "classification": "restricted"}, "ClassificationTooHigh",
         "classified restricted; Requirement strict allows at most internal"),
    ],
)
def test_licence_and_classification_limits(kubectl, api_client, namespace, operator, limits, tags, reason, words) -> None:
    apply_object(kubectl, namespace, "Dataset", "flowers", {"source": {"builtin": {"name": "iris"}}, "governance": tags})
    apply_object(kubectl, namespace, "Requirement", "strict", {"title": "Strict", "governance": limits})
    apply_object(kubectl, namespace, "TrainingRun", "run", {**IRIS_RUN, "datasetRef": {"name": "flowers"},
                                                             "requirementRefs": [{"name": "strict"}]})
    blocked = condition(finished(api_client, namespace, "run"), "GovernanceBlocked")
    assert blocked["reason"] == reason and words in blocked["message"]


BAD = [
    ("bad-param-value", {"estimator": {"name": "LogisticRegression", "params": {"C": -1}}},
     "InvalidParameter", "The 'C' parameter of LogisticRegression must be"),
    ("bad-search-value", {"search": {"type": "grid", "parameters": {"penalty": ["l2", "l7"]}}},
     "InvalidParameter", "'penalty' parameter"),
    ("no-target", {"target": "colour"}, "TargetNotFound", "target 'colour' is not a column"),
    ("no-feature", {"features": ["petal_length", "stem_length"]}, "FeatureNotFound", "'stem_length'"),
]


@pytest.mark.parametrize("name,change,reason,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_fails_with_a_reason_before_any_task(kubectl, api_client, namespace, operator,
                                                       name, change, reason, words) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    apply_object(kubectl, namespace, "TrainingRun", name, {**IRIS_RUN, **change})
    obj = finished(api_client, namespace, name)
    cond = condition(obj, "Succeeded")
    assert obj["status"]["phase"] == "Failed"
    assert cond["reason"] == reason and words in cond["message"], cond
    assert local_tasks(namespace, name) == []


def test_empty_feature_set(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "labels-only", {"source": {"inline": {
        "columns": ["id", "label"], "rows": [[1, "a"], [2, "b"], [3, "a"]]}}})
    apply_object(kubectl, namespace, "TrainingRun", "nothing", {**IRIS_RUN, "datasetRef": {"name": "labels-only"},
                                                                 "target": "label"})
    cond = condition(finished(api_client, namespace, "nothing"), "Succeeded")
    assert cond["reason"] == "NoFeatures" and "only the target, ids and timestamps" in cond["message"]


def test_a_run_waits_for_its_dataset_then_runs(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "TrainingRun", "patient", IRIS_RUN)
    waiting = wait_for(lambda: (c := condition(get_object(api_client, namespace, "trainingruns", "patient"),
                                               "Succeeded")) and c["reason"] == "WaitingForDataset" and c)
    assert waiting["status"] == "Unknown" and "Dataset iris does not exist yet" in waiting["message"]
    assert get_object(api_client, namespace, "trainingruns", "patient")["status"]["phase"] == "Pending"
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    succeeded(api_client, namespace, "patient")


def test_cache_hit_reuses_a_succeeded_run(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    apply_object(kubectl, namespace, "TrainingRun", "original", IRIS_RUN)
    original = succeeded(api_client, namespace, "original")
    apply_object(kubectl, namespace, "TrainingRun", "again", {**IRIS_RUN, "cachePolicy": "reuse",
                                                               "executor": "local", "deadlineSeconds": 600})
    again = succeeded(api_client, namespace, "again")
    cond = condition(again, "Succeeded")
    assert cond["reason"] == "CacheHit" and "no Job ran" in cond["message"]
    assert again["status"]["cacheSource"] == "original"
    assert again["status"]["metrics"] == original["status"]["metrics"]
    assert again["status"]["modelDigest"] == original["status"]["modelDigest"]
    assert local_tasks(namespace, "again") == []
    # Any change to the computation misses the cache.
    apply_object(kubectl, namespace, "TrainingRun", "other-seed", {**IRIS_RUN, "cachePolicy": "reuse",
                                                                    "split": {"testFraction": 0.25, "seed": 8}})
    other = succeeded(api_client, namespace, "other-seed")
    assert "cacheSource" not in other["status"] and len(local_tasks(namespace, "other-seed")) == 1


def test_trainer_crash_is_reported_with_its_exit_code(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "digits", {"source": {"builtin": {"name": "digits"}}})
    apply_object(kubectl, namespace, "TrainingRun", "doomed", {"datasetRef": {"name": "digits"}, "target": "digit",
        "estimator": {"name": "RandomForestClassifier", "params": {"n_estimators": 3000}}})
    task = wait_for(lambda: local_tasks(namespace, "doomed"), timeout=60)[0]
    record = Path(os.environ["MLOOP_LOCAL_DIR"]) / task
    supervisor = __import__("json").loads(record.read_text())["pid"]
    children = wait_for(lambda: Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split())
    os.kill(int(children[0]), signal.SIGKILL)  # what the kernel's OOM killer does to a trainer
    obj = finished(api_client, namespace, "doomed")
    assert obj["status"]["phase"] == "Failed"
    assert "exited with code -9" in obj["status"]["failure"]


def test_deadline_is_enforced(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "digits", {"source": {"builtin": {"name": "digits"}}})
    apply_object(kubectl, namespace, "TrainingRun", "slow", {"datasetRef": {"name": "digits"}, "target": "digit",
        "estimator": {"name": "RandomForestClassifier", "params": {"n_estimators": 3000}}, "deadlineSeconds": 10})
    obj = finished(api_client, namespace, "slow", timeout=90)
    assert condition(obj, "Succeeded")["reason"] == "DeadlineExceeded"
