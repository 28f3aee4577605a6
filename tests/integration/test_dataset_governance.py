"""Governance tags on Datasets: the GovernanceOK condition, PII detection, and retention in S3."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_dataset_failures import finished
from tests.integration.test_dataset_sources import ready

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
    # Time cannot be made to pass here: age the first version in status, as two days would.
    versions = current["versions"]
    versions[0]["createdAt"] = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    kubectl("patch", "datasets", "short", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"versions": versions}}), check=True)
    status = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "short")["status"]).get("expired") and s)
    assert status["expired"] == [old["version"]]
    assert [v.get("expired", False) for v in status["versions"]] == [True, False]
    old_prefix = f"datasets/{namespace}/short/{old['digest'][7:]}/"
    assert s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=old_prefix).get("KeyCount", 0) == 0
    current_prefix = f"datasets/{namespace}/short/{current['digest'][7:]}/"
    assert s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=current_prefix)["KeyCount"] == 3
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=short",
                     "-o", "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}").stdout
    assert f"VersionExpired: deleted expired version {old['version']} from storage (retention)" in events
