"""ErasureRequest against the real API server, S3 and scikit-learn: a subject's rows go from every version of a
Dataset and of the Dataset derived from it, runs and packages say they were trained on erased data, nothing in
the bucket still holds the subject, and the keys appear nowhere in clear."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from kopf.testing import KopfRunner

from tests.helpers import apply_object, condition, get_object, k8s_events, wait_for
from tests.integration.test_cli_runs import mloop
from tests.integration.test_dataset_sources import ready
from tests.integration.test_modelpackage import packaged
from tests.integration.test_serving import post
from tests.integration.test_trainingrun import succeeded

SUBJECTS = ["cust-0007", "cust-0013"]
ROWS = [[f"cust-{i:04d}", 20 + (i * 7) % 50, 1000.0 + 37 * i, "yes" if (i * 5) % 3 else "no"] for i in range(1, 41)]
CUSTOMERS = {
    "source": {"inline": {"columns": ["customer_id", "age", "income", "bought"], "rows": ROWS}},
    "schema": {"columns": [
        {"name": "customer_id", "type": "string", "role": "id", "pii": "direct"},
        {"name": "age", "type": "integer"}, {"name": "income", "type": "float"},
        {"name": "bought", "type": "category", "role": "target"}]},
}
ADULTS = {"source": {"derived": {"datasetRef": {"name": "customers"}, "transform": {"filter": "age >= 30"}}}}
RUN = {"datasetRef": {"name": "customers"}, "target": "bought", "features": ["age", "income"],
       "estimator": {"name": "GaussianNB"}, "split": {"testFraction": 0.25, "seed": 1}}
REQUEST = {"datasets": ["customers"], "subjectColumn": "customer_id", "keysFrom": {"secretKeyRef": {"key": "case-42"}},
           "reason": "DSR-2026-042"}


def keys_secret(kubectl, namespace: str, keys: list[str] = SUBJECTS, key: str = "case-42") -> None:
    kubectl("create", "secret", "generic", "mloop-erasure-keys", "-n", namespace,
            f"--from-literal={key}=" + "\n".join(keys), check=True)


def settled(api_client, namespace: str, name: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (o := get_object(api_client, namespace, "erasurerequests", name)).get("status", {}).get(
        "phase") in ("Complete", "Failed") and o, timeout=timeout)


def subject_rows(data: bytes) -> int:
    frame = pq.read_table(io.BytesIO(data)).to_pandas()
    return int(frame.isin(SUBJECTS).to_numpy().sum())


def namespace_objects(s3, namespace: str) -> Iterator[tuple[str, bytes]]:
    """(key, content) of every object of the namespace in the bucket (other tests share it)."""
    for page in s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket):
        for item in page.get("Contents", []):
            if item["Key"].split("/")[1:2] == [namespace]:
                yield item["Key"], s3.client.get_object(Bucket=s3.bucket, Key=item["Key"])["Body"].read()


def objects_holding_subjects(s3, namespace: str) -> list[str]:
    """Every object of the namespace with a Parquet cell, or the text, that is a subject key."""
    return [key for key, data in namespace_objects(s3, namespace)
            if key.endswith(".parquet") and subject_rows(data) or any(s.encode() in data for s in SUBJECTS)]


def chain(kubectl, api_client, namespace: str) -> dict:
    """A Dataset holding the subjects, one derived from it, a run on it and a package of the run."""
    apply_object(kubectl, namespace, "Dataset", "customers", CUSTOMERS)
    apply_object(kubectl, namespace, "Dataset", "adults", ADULTS)
    customers = ready(api_client, namespace, "customers")["status"]
    adults = wait_for(lambda: (o := ready(api_client, namespace, "adults"))["status"].get("sourceVersion", "").endswith(
        customers["version"]) and o)["status"]
    apply_object(kubectl, namespace, "TrainingRun", "buyers-nb", RUN)
    succeeded(api_client, namespace, "buyers-nb")
    apply_object(kubectl, namespace, "Requirement", "buyers-req",
                 {"title": "Who buys", "metrics": [{"metric": "accuracy", "min": 0.0, "primary": True}]})
    apply_object(kubectl, namespace, "ModelPackage", "buyers-1", {"model": "buyers", "trainingRunRef": {"name": "buyers-nb"},
                                                                  "stage": "Production",
                                                                  "requirementRefs": [{"name": "buyers-req"}]})
    assert packaged(api_client, namespace, "buyers-1")["status"]["stage"] == "Production"
    return {"customers": customers, "adults": adults}


def test_erasure_everywhere(kubectl, api_client, namespace, operator, s3, caplog, kubeconfig) -> None:
    before = chain(kubectl, api_client, namespace)
    old_customers, old_adults = before["customers"], before["adults"]
    keys_secret(kubectl, namespace)
    apply_object(kubectl, namespace, "ErasureRequest", "dsr-42", REQUEST)
    request = settled(api_client, namespace, "dsr-42")
    status = request["status"]
    assert status["phase"] == "Complete", json.dumps(status, indent=1)
    assert condition(request, "Complete")["status"] == "True"
    adult_subjects = sum(1 for r in ROWS if r[0] in SUBJECTS and r[1] >= 30)
    assert status["subjects"] == 2 and status["rowsErased"] == 2 + adult_subjects
    assert set(status["versionsTombstoned"]) == {f"customers@{old_customers['version']}", f"adults@{old_adults['version']}"}
    assert status["datasets"] == ["customers", "adults"]
    assert status["runsFlagged"] == ["buyers-nb"] and status["packagesFlagged"] == ["buyers-1"]
    assert status["tasksErased"]  # the ingest task's spec.json copied the inline rows

    # The Dataset is recut without the rows; its old version says who erased it; the derived one follows.
    customers = get_object(api_client, namespace, "datasets", "customers")["status"]
    assert customers["rows"] == 38 and customers["version"] != old_customers["version"]
    assert status["datasetsRecut"] == [f"customers@{customers['version']}"]
    old = next(v for v in customers["versions"] if v["version"] == old_customers["version"])
    assert old["erasedBy"] == "dsr-42"
    assert condition({"status": customers}, "SourceHoldsErasedSubjects")["status"] == "True"
    adults = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "adults")["status"]).get(
        "sourceVersion", "").endswith(customers["version"]) and not s.get("task") and s)
    assert adults["rows"] == old_adults["rows"] - adult_subjects

    # The old data objects are gone; a tombstone says what was there and who removed it.
    for name, version in (("customers", old_customers), ("adults", old_adults)):
        prefix = f"datasets/{namespace}/{name}/{version['digest'][7:]}/"
        keys = {o["Key"][len(prefix):] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]}
        assert keys == {"manifest.json", "tombstone.json"}
        stone = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=prefix + "tombstone.json")["Body"].read())
        assert stone["digest"] == version["digest"] and stone["rows"] == version["rows"]
        assert stone["request"]["name"] == "dsr-42"

    # Runs and packages trained on an erased version say so, naming the request.
    for plural, name in (("trainingruns", "buyers-nb"), ("modelpackages", "buyers-1")):
        flagged = condition(get_object(api_client, namespace, plural, name), "TrainedOnErasedData")
        assert flagged["status"] == "True" and "dsr-42" in flagged["message"]

    # The Requirement whose Production package that is asks for a retrain on the cleaned data.
    assert status["requirementsAsked"] == ["buyers-req"]
    asked = condition(get_object(api_client, namespace, "requirements", "buyers-req"), "ProductionTrainedOnErasedData")
    assert asked["status"] == "True" and "dsr-42" in asked["message"] and "no retrain policy" in asked["message"]

    # Lineage still resolves the erased versions, and says why they are gone.
    shown = mloop("lineage", "trainingrun/buyers-nb", "-n", namespace, kubeconfig=kubeconfig).stdout
    assert f"dataset/customers@{old_customers['version']}" in shown and "(erased by erasurerequest/dsr-42)" in shown
    assert "TrainedOnErasedData" in shown

    # No object in the bucket holds a subject any more; the audit record is there, with hashes only.
    assert objects_holding_subjects(s3, namespace) == []
    audit = status["audit"].split("/", 3)[3]
    record = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=audit)["Body"].read())
    assert record["request"]["name"] == "dsr-42" and record["rowsErased"] == status["rowsErased"]

    # The keys are in no status, event or log in clear.
    events = k8s_events(api_client, namespace, "dsr-42")
    assert {"ErasureStarted", "SubjectsErased", "ErasureComplete"} <= {r for r, _ in events}
    local_logs = "".join(p.read_text() for p in Path(os.environ["MLOOP_LOCAL_DIR"]).glob(f"{namespace}.*.log"))
    for text in (json.dumps(request), json.dumps(events), caplog.text, local_logs):
        assert not any(s in text for s in SUBJECTS)

    # A later version of the source with the subject in it again: the standing filter keeps it out.
    again = {**CUSTOMERS, "source": {"inline": {**CUSTOMERS["source"]["inline"],
                                                "rows": ROWS + [["cust-0007", 33, 9.0, "no"], ["cust-0100", 44, 8.0, "yes"]]}}}
    apply_object(kubectl, namespace, "Dataset", "customers", again)
    later = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "customers")["status"]).get(
        "observedGeneration") == 2 and not s.get("task") and s)
    assert later["phase"] == "Ready" and later["rows"] == 39
    data = s3.client.get_object(Bucket=s3.bucket, Key=f"datasets/{namespace}/customers/{later['digest'][7:]}/data.parquet")
    assert subject_rows(data["Body"].read()) == 0
    assert objects_holding_subjects(s3, namespace) == []  # its ingest task's spec.json left the row out too


def test_numeric_ids_are_erased_though_the_recut_profile_counts_as_many_rows_as_one_id(
        kubectl, api_client, namespace, operator, s3) -> None:
    """Integer subject ids: erasing 38 and 39 of 40 leaves 38 rows, a number the new profile and the run's record
    hold as counts. Only values of the subject column count as holding a subject; the request completes and the
    run's task record, which copied no row, is kept."""
    rows = [[i, *row[1:]] for i, row in enumerate(ROWS, start=1)]
    columns = [{**c, "type": "integer"} if c["name"] == "customer_id" else c for c in CUSTOMERS["schema"]["columns"]]
    apply_object(kubectl, namespace, "Dataset", "customers", {
        "source": {"inline": {"columns": ["customer_id", "age", "income", "bought"], "rows": rows}},
        "schema": {"columns": columns}})
    ready(api_client, namespace, "customers")
    apply_object(kubectl, namespace, "TrainingRun", "buyers-nb", RUN)
    succeeded(api_client, namespace, "buyers-nb")
    keys_secret(kubectl, namespace, ["38", "39"])
    apply_object(kubectl, namespace, "ErasureRequest", "dsr-ids", REQUEST)
    status = settled(api_client, namespace, "dsr-ids")["status"]
    assert status["phase"] == "Complete", json.dumps(status, indent=1)
    assert status["rowsErased"] == 2
    assert get_object(api_client, namespace, "datasets", "customers")["status"]["rows"] == 38
    erased = {key for key, data in namespace_objects(s3, namespace) if key.endswith("tombstone.json")}
    assert not any("/train-" in key for key in erased), erased  # the run's record copied no row


def test_erasure_request_cannot_be_edited(kubectl, api_client, namespace) -> None:
    apply_object(kubectl, namespace, "ErasureRequest", "dsr", REQUEST)
    edited = kubectl("patch", "erasurerequest", "dsr", "-n", namespace, "--type=merge", "-p",
                     '{"spec": {"subjectColumn": "other"}}')
    assert edited.returncode != 0 and "an ErasureRequest cannot be edited" in edited.stderr
    other = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "mloop.dev/v1alpha1", "kind": "ErasureRequest", "metadata": {"name": "x"},
        "spec": {**REQUEST, "keysFrom": {"secretKeyRef": {"name": "mloop-s3", "key": "k"}}}}))
    assert other.returncode != 0 and "spec.keysFrom.secretKeyRef.name" in other.stderr


@pytest.mark.parametrize("request_spec,reason,words", [
    ({**REQUEST, "subjectColumn": "email"}, "UnknownColumn", "spec.subjectColumn: Dataset customers has no column email"),
    ({**REQUEST, "subjectColumn": "age"}, "NotAnIdColumn", "role feature, not id"),
    ({**REQUEST, "keysFrom": {"secretKeyRef": {"key": "no-such-key"}}}, "KeyNotInSecret", "has no key no-such-key"),
    ({**REQUEST, "keysFrom": {"s3": {"uri": "s3://mloop/nowhere/keys.txt"}}}, "KeysObjectNotFound", "no object at"),
    ({**REQUEST, "datasets": ["nope"]}, "DatasetNotFound", "Dataset nope does not exist"),
])
def test_bad_requests_fail_with_a_reason(kubectl, api_client, namespace, operator, request_spec, reason, words) -> None:
    apply_object(kubectl, namespace, "Dataset", "customers", CUSTOMERS)
    ready(api_client, namespace, "customers")
    keys_secret(kubectl, namespace)
    apply_object(kubectl, namespace, "ErasureRequest", "bad", request_spec)
    failed = settled(api_client, namespace, "bad")
    assert failed["status"]["phase"] == "Failed"
    complete = condition(failed, "Complete")
    assert complete["reason"] == reason and words in complete["message"], complete
    assert get_object(api_client, namespace, "datasets", "customers")["status"]["rows"] == 40  # nothing touched


def test_missing_secret_fails_with_a_reason(kubectl, api_client, namespace, operator) -> None:
    apply_object(kubectl, namespace, "Dataset", "customers", CUSTOMERS)
    ready(api_client, namespace, "customers")
    apply_object(kubectl, namespace, "ErasureRequest", "dsr", REQUEST)
    failed = condition(settled(api_client, namespace, "dsr"), "Complete")
    assert failed["reason"] == "SecretNotFound" and "Secret mloop-erasure-keys does not exist" in failed["message"]


def test_operator_killed_mid_erasure_completes_once(kubectl, api_client, namespace, stack, s3) -> None:
    args = ["run", "--standalone", "--namespace", namespace, "-m", "mloop.handlers"]
    with KopfRunner(args, timeout=180) as first:
        before = chain(kubectl, api_client, namespace)
        keys_secret(kubectl, namespace)
        apply_object(kubectl, namespace, "ErasureRequest", "dsr-42", REQUEST)
        wait_for(lambda: get_object(api_client, namespace, "erasurerequests", "dsr-42").get("status", {}).get("task"))
    assert first.exit_code == 0
    with KopfRunner(args, timeout=180) as second:
        status = settled(api_client, namespace, "dsr-42")["status"]
        wait_for(lambda: get_object(api_client, namespace, "datasets", "adults")["status"].get(
            "sourceVersion", "").endswith(get_object(api_client, namespace, "datasets", "customers")["status"]["version"]),
            timeout=60)
    assert second.exit_code == 0
    assert status["phase"] == "Complete", status
    tasks = sorted(p.name for p in Path(os.environ["MLOOP_LOCAL_DIR"]).glob(f"{namespace}.erase-*.json"))
    assert len(tasks) == 1
    customers = get_object(api_client, namespace, "datasets", "customers")["status"]
    assert [v["version"] for v in customers["versions"]] == [before["customers"]["version"], customers["version"]]
    reasons = [r for r, _ in k8s_events(api_client, namespace, "dsr-42")]
    # Each transition's event once: a pass decides and writes on the body it read (a live body once posted
    # ErasureStarted twice).
    assert [reasons.count(r) for r in ("ErasureStarted", "SubjectsErased", "ErasureComplete")] == [1, 1, 1], reasons
    assert objects_holding_subjects(s3, namespace) == []
    run = condition(get_object(api_client, namespace, "trainingruns", "buyers-nb"), "TrainedOnErasedData")
    assert run["status"] == "True"


def test_only_data_protection_may_create_erasure_requests(kubectl, namespace) -> None:
    root = Path(__file__).resolve().parents[2]
    kubectl("apply", "-f", str(root / "manifests/base/roles.yaml"), check=True)
    users = {"dpo": "mloop-data-protection", "dana": "mloop-data-editor", "mo": "mloop-ml-editor", "eve": "edit",
             "ada": "admin", "vic": "mloop-viewer"}
    for user, role in users.items():
        kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}", "-n", namespace,
                check=True)
    manifest = yaml.safe_dump({"apiVersion": "mloop.dev/v1alpha1", "kind": "ErasureRequest",
                               "metadata": {"name": "dsr"}, "spec": REQUEST})

    def as_user(user: str, *args: str, input: str | None = None):
        return kubectl(*args, "-n", namespace, f"--as={user}", input=input)

    # Aggregation into edit and admin is asynchronous: wait until edit has taken the mloop roles in.
    wait_for(lambda: as_user("eve", "auth", "can-i", "create", "datasets.mloop.dev").stdout.strip() == "yes", timeout=60)
    for user in ("dana", "mo", "eve", "ada"):
        refused = as_user(user, "create", "-f", "-", input=manifest)
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), (user, refused.stderr)
    assert as_user("dpo", "create", "secret", "generic", "mloop-erasure-keys", "--from-literal=case=a").returncode == 0
    created = as_user("dpo", "create", "-f", "-", input=manifest)
    assert created.returncode == 0, created.stderr
    assert as_user("dpo", "get", "secret", "mloop-erasure-keys").returncode == 0
    assert as_user("dpo", "get", "secrets").returncode != 0  # that one Secret, not the namespace's others
    assert as_user("vic", "get", "erasurerequest", "dsr").returncode == 0  # no key in it: viewers may read it


ACCOUNT_SUBJECTS = ["910007", "910013"]
ACCOUNT_ROWS = [[910000 + i, 20 + (i * 7) % 50, 1000.0 + 37 * i, "yes" if (i * 5) % 3 else "no"] for i in range(1, 41)]
ACCOUNTS = {
    "source": {"inline": {"columns": ["account", "age", "income", "bought"], "rows": ACCOUNT_ROWS}},
    "schema": {"columns": [
        {"name": "account", "type": "integer", "role": "id"}, {"name": "age", "type": "integer"},
        {"name": "income", "type": "float"}, {"name": "bought", "type": "category", "role": "target"}]},
}


def objects_holding(s3, namespace: str, subjects: list[str]) -> list[str]:
    """Every object of the namespace: a Parquet cell, a served row's input (JSON in a cell), or a word of a text
    object equal to a subject key (as an integer or its float text)."""
    wanted = set(subjects) | {f"{s}.0" for s in subjects}
    found = []
    for key, data in namespace_objects(s3, namespace):
        if key.endswith(".parquet"):
            frame = pq.read_table(io.BytesIO(data)).to_pandas()
            cells = {str(v) for column in frame.columns for v in frame[column].tolist()}
            if "inputs" in frame.columns:
                cells |= {str(v) for row in frame["inputs"] for v in json.loads(row).values()}
            held = bool(cells & wanted)
        else:
            held = bool({w.decode() for w in re.findall(rb"[A-Za-z0-9_.-]+", data)} & wanted)
        if held:
            found.append(key)
    return found


def test_served_rows_carrying_the_key_are_erased_and_the_policy_retrains(kubectl, api_client, namespace, operator,
                                                                         s3) -> None:
    """A Production model takes the account as an input, so its collected predictions carry the key: they, the
    labels sent back for them and the collection Dataset's version are cleaned, and the Requirement's retrain
    policy starts a retrain on the cleaned version, once."""
    apply_object(kubectl, namespace, "Dataset", "accounts", ACCOUNTS)
    ready(api_client, namespace, "accounts")
    apply_object(kubectl, namespace, "TrainingRun", "acct-nb", {
        "datasetRef": {"name": "accounts"}, "target": "bought", "features": ["account", "age", "income"],
        "estimator": {"name": "GaussianNB"}, "split": {"testFraction": 0.25, "seed": 1}})
    succeeded(api_client, namespace, "acct-nb")
    apply_object(kubectl, namespace, "Requirement", "acct-req", {
        "title": "Who buys", "metrics": [{"metric": "accuracy", "min": 0.0, "primary": True}],
        "retrain": {"templateRunRef": {"name": "acct-nb"}, "datasetRef": {"name": "served"},
                    "trigger": {"minNewRows": 100000}}})
    apply_object(kubectl, namespace, "ModelPackage", "acct-1", {
        "model": "accounts", "trainingRunRef": {"name": "acct-nb"}, "stage": "Production",
        "requirementRefs": [{"name": "acct-req"}], "serve": {"samplingRate": 1.0}})
    endpoint = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "acct-1")) and
                        (c := condition(o, "Serving")) and c["status"] == "True" and o["status"]["endpoint"], timeout=90)
    apply_object(kubectl, namespace, "Dataset", "served", {"source": {"collection": {
        "model": "accounts", "minNewRows": 8, "interval": "2s"}}})
    rows = ACCOUNT_ROWS[:8] + ACCOUNT_ROWS[12:13]  # accounts 910001..910008 and 910013
    code, answer = post(f"{endpoint}/predict", {"instances": [
        {"account": r[0], "age": r[1], "income": r[2]} for r in rows]})
    assert code == 200, answer
    assert post(f"{endpoint}/feedback", {"feedback": [
        {"id": i, "label": r[3]} for i, r in zip(answer["ids"], rows)]})[0] == 202
    collected = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "served").get("status") or {}).get(
        "version") and not s.get("task") and s, timeout=90)
    assert collected["rows"] == 9 and {c["name"] for c in collected["columns"]} >= {"account", "bought"}

    keys_secret(kubectl, namespace, ACCOUNT_SUBJECTS)
    apply_object(kubectl, namespace, "ErasureRequest", "dsr-7", {
        "datasets": ["accounts"], "subjectColumn": "account", "keysFrom": {"secretKeyRef": {"key": "case-42"}}})
    request = settled(api_client, namespace, "dsr-7")
    status = request["status"]
    assert status["phase"] == "Complete", json.dumps(status, indent=1)
    assert status["datasets"] == ["accounts", "served"]
    assert f"served@{collected['version']}" in status["versionsTombstoned"]
    assert status["collectedCleaned"][0].startswith("accounts: ")
    served = wait_for(lambda: (s := get_object(api_client, namespace, "datasets", "served")["status"])["version"] !=
                      collected["version"] and s, timeout=30)
    assert served["rows"] == 7 and f"served@{served['version']}" in status["datasetsRecut"]

    # The feedback of the erased predictions went with them: the labels left join the predictions left.
    feedback = [pq.read_table(io.BytesIO(s3.client.get_object(Bucket=s3.bucket, Key=o["Key"])["Body"].read()))
                .to_pandas() for o in s3.client.list_objects_v2(
                    Bucket=s3.bucket, Prefix=f"feedback/{namespace}/accounts/").get("Contents", [])]
    assert sum(len(f) for f in feedback) == 7
    assert objects_holding(s3, namespace, ACCOUNT_SUBJECTS) == []

    # The Production model was trained on the subjects: the retrain policy retrains on the cleaned version, once.
    accounts = get_object(api_client, namespace, "datasets", "accounts")["status"]
    retrain = f"acct-req-erasure-{request['metadata']['uid'][:8]}"
    assert status["retrainsStarted"] == [f"acct-req: {retrain} on accounts@{accounts['version']}"]
    asked = condition(get_object(api_client, namespace, "requirements", "acct-req"), "ProductionTrainedOnErasedData")
    assert asked["reason"] == "RetrainStarted" and retrain in asked["message"]
    run = succeeded(api_client, namespace, retrain)
    assert run["status"]["dataset"] == f"accounts@{accounts['version']}" and accounts["rows"] == 38
    package = get_object(api_client, namespace, "modelpackages", retrain)["spec"]
    assert (package["stage"], package["requireImprovement"], package["requirementRefs"]) == (
        "Production", False, [{"name": "acct-req"}])
    runs = client_runs(api_client, namespace)
    assert sorted(r for r in runs if "erasure" in r) == [retrain]


def client_runs(api_client, namespace: str) -> list[str]:
    from kubernetes import client

    found = client.CustomObjectsApi(api_client).list_namespaced_custom_object("mloop.dev", "v1alpha1", namespace,
                                                                             "trainingruns")
    return [o["metadata"]["name"] for o in found["items"]]
