"""Governance tags on Datasets: the GovernanceOK condition, PII detection, and retention in S3."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_failures import finished
from tests.integration.test_dataset_sources import ready
from tests.integration.test_modelpackage import packaged
from tests.integration.test_trainingrun import succeeded

PEOPLE = {"columns": ["id", "email", "age"], "rows": [[1, "ann@example.com", 31], [2, "bob@example.org", 45],
                                                      [3, "cy@example.net", 29]]}


def test_tags_complete_and_consistent(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "tagged", {
        "source": {"inline": PEOPLE},
        "schema": {"columns": [{"name": "id", "type": "integer", "role": "id"},
                               {"name": "email", "type": "string", "pii": "direct"},
                               {"name": "age", "type": "integer", "pii": "quasi"}]},
        "governance": {"license": "CC0-1.0", "classification": "confidential", "owner": "crm", "purposes": ["training"]},
    })
    cond = condition(ready(api_client, namespace, "tagged"), "GovernanceOK")
    assert (cond["status"], cond["reason"]) == ("True", "Tagged")
    assert "email (direct)" in cond["message"] and "age (quasi)" in cond["message"]


def test_undeclared_email_column_is_detected_and_public_pii_refused(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "leaky", {
        "source": {"inline": PEOPLE}, "governance": {"license": "CC0-1.0", "classification": "public"}})
    obj = ready(api_client, namespace, "leaky")
    assert {c["name"]: c["pii"] for c in obj["status"]["columns"]}["email"] == "direct"
    cond = condition(obj, "GovernanceOK")
    assert (cond["status"], cond["reason"]) == ("False", "PIIInPublicData")
    assert "'email'" in cond["message"]
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=leaky",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "PIIInPublicData" in events


def test_missing_licence_is_named(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "anon", {"source": {"builtin": {"name": "iris"}}})
    cond = condition(ready(api_client, namespace, "anon"), "GovernanceOK")
    assert (cond["status"], cond["reason"]) == ("False", "LicenseMissing")
    assert "spec.governance.license" in cond["message"]


def test_retention_deletes_old_versions_from_s3_and_says_so(kubectl, api_client, namespace, operator, s3) -> None:
    spec = {"source": {"inline": {"columns": ["x"], "rows": [[1], [2]]}},
            "governance": {"license": "CC0-1.0", "classification": "internal", "retentionDays": 1}}
    apply_object(kubectl, namespace, "Dataset", "short", spec)
    old = ready(api_client, namespace, "short")["status"]
    spec["source"]["inline"]["rows"].append([3])
    apply_object(kubectl, namespace, "Dataset", "short", spec)
    current = wait_for(lambda: (s := finished(api_client, namespace, "short")["status"])["rows"] == 3 and s)
    assert len(current["versions"]) == 2
    age_first_version(kubectl, api_client, namespace, "short")
    status = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "short")["status"]).get("expired") and s)
    assert status["expired"] == [old["version"]]
    assert [v.get("expired", False) for v in status["versions"]] == [True, False]
    # Erasure's deletion path: the data goes, a tombstone and the manifest stay, an audit record is written.
    old_prefix = f"datasets/{namespace}/short/{old['digest'][7:]}/"
    assert keys_under(s3, old_prefix) == {"manifest.json", "tombstone.json"}
    stone = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=old_prefix + "tombstone.json")["Body"].read())
    assert (stone["digest"], stone["rows"], stone["reason"]) == (old["digest"], 2, "retention: older than 1 days")
    audit = f"erasure/{namespace}/retention/short/{old['digest'][7:]}.json"
    assert json.loads(s3.client.get_object(Bucket=s3.bucket, Key=audit)["Body"].read())["version"] == old["version"]
    current_prefix = f"datasets/{namespace}/short/{current['digest'][7:]}/"
    assert s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=current_prefix)["KeyCount"] == 3
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=short",
                     "-o", "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}").stdout
    assert f"VersionExpired: deleted expired version {old['version']} from storage (retention of 1 days)" in events


def keys_under(s3, prefix: str) -> set[str]:
    return {o["Key"][len(prefix):] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])}


def age_first_version(kubectl, api_client, namespace: str, name: str) -> None:
    """Time cannot be made to pass here: age the first version in status, as two days would."""
    versions = get_object(api_client, namespace, "datasets", name)["status"]["versions"]
    versions[0]["createdAt"] = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubectl("patch", "datasets", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"versions": versions}}), check=True)


def test_retention_keeps_a_version_a_production_package_depends_on(kubectl, api_client, namespace, operator,
                                                                  s3) -> None:
    """The Production model was trained on a derived Dataset's version cut from the expiring one: kept, and the
    Dataset says which version for which package; once the package leaves Production, it goes."""
    spec = {"source": {"inline": {"columns": ["size", "kind"], "rows": [[i, "a" if i % 2 else "b"] for i in range(12)]}},
            "governance": {"license": "CC0-1.0", "classification": "internal", "retentionDays": 1}}
    apply_object(kubectl, namespace, "Dataset", "base", spec)
    old = ready(api_client, namespace, "base")["status"]
    apply_object(kubectl, namespace, "Dataset", "picked", {"source": {"derived": {"datasetRef": {"name": "base"},
                                                                                 "transform": {"filter": "size >= 0"}}}})
    child = wait_for(lambda: (s := ready(api_client, namespace, "picked")["status"]).get("sourceVersion", "").endswith(
        old["version"]) and s)
    apply_object(kubectl, namespace, "TrainingRun", "on-picked", {
        "datasetRef": {"name": "picked"}, "target": "kind", "features": ["size"], "estimator": {"name": "GaussianNB"},
        "split": {"testFraction": 0.25, "seed": 1}})
    assert succeeded(api_client, namespace, "on-picked")["status"]["dataset"] == f"picked@{child['version']}"
    apply_object(kubectl, namespace, "ModelPackage", "picked-1", {"model": "picked", "stage": "Production",
                                                                  "trainingRunRef": {"name": "on-picked"}})
    assert packaged(api_client, namespace, "picked-1")["status"]["stage"] == "Production"
    spec["source"]["inline"]["rows"].append([12, "a"])
    apply_object(kubectl, namespace, "Dataset", "base", spec)
    wait_for(lambda: finished(api_client, namespace, "base")["status"]["rows"] == 13)
    age_first_version(kubectl, api_client, namespace, "base")

    held = wait_for(lambda: (c := condition(get_object(api_client, namespace, "datasets", "base"), "RetentionHeld"))
                    and c, timeout=60)
    assert held["status"] == "True" and held["reason"] == "ProductionDependsOn"
    assert f"version {old['version']} is past the retention of 1 days but kept" in held["message"]
    assert "Production ModelPackage picked-1" in held["message"] and f"picked@{child['version']}" in held["message"]
    prefix = f"datasets/{namespace}/base/{old['digest'][7:]}/"
    assert "data.parquet" in keys_under(s3, prefix)
    assert not get_object(api_client, namespace, "datasets", "base")["status"].get("expired")

    kubectl("patch", "modelpackage", "picked-1", "-n", namespace, "--type=merge", "-p",
            '{"spec": {"stage": "Archived"}}', check=True)
    status = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "base")["status"]).get("expired")
                      and s, timeout=60)
    assert status["expired"] == [old["version"]] and keys_under(s3, prefix) == {"manifest.json", "tombstone.json"}
    assert condition({"status": status}, "RetentionHeld")["status"] == "False"
