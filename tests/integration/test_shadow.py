"""Shadow evaluation on live traffic, over real HTTP against the real stack: candidates shadow one Production
package, receive its requests under its request ids (only the columns their signatures take), are scored on the
same labelled rows, and the gate grants the better and refuses the worse; a candidate needing an input Production's
requests lack is refused; live scoring reads each collected object once; a hanging or dead shadow leaves the
Production server's answers as they were, and what it could not take is counted."""

from __future__ import annotations

import io
import json
import signal
import socket
import time

import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_iris

from mloop.localcluster.hanging import HangingServer
from tests.helpers import apply_object, condition, get_object, k8s_events, wait_for
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_serving import ROW, get, post, rows_under, served, start_server  # noqa: F401 - a fixture
from tests.integration.test_trainingrun import IRIS_RUN, succeeded

# Production's callers send three columns; the candidates are trained on those (or fewer), so every request they
# are forwarded is one their own servers take.
SENT = ["sepal_length", "sepal_width", "petal_length"]
LIVE_REQ = {"title": "Beat Production on live traffic", "metrics": [{"metric": "accuracy", "min": 0.3, "primary": True}],
            "live": {"minRows": 40, "margin": 0.05}}
TREE_STUMP = {"name": "DecisionTreeClassifier", "params": {"max_depth": 1, "random_state": 0}}
RUNS = {  # Production a stump (about 0.7 on iris), the better a logistic regression on the same columns (about
    # 0.95), the worse a stump on one uninformative column (about 0.5), and one that needs petal_width
    "prod": {"features": SENT, "estimator": TREE_STUMP},
    "good": {"features": SENT},
    "bad": {"features": ["sepal_width"], "estimator": TREE_STUMP},
    "wide": {},
}


def watch_package(api_client, namespace: str, name: str, predicate, timeout: float = 90):
    """The first truthy predicate(object) as the API server's watch delivers the package's changes (no polling)."""
    from kubernetes import client, watch

    api = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + timeout
    obj = get_object(api_client, namespace, "modelpackages", name)
    while True:
        if value := predicate(obj):
            return value
        left = deadline - time.monotonic()
        assert left > 0, f"{name} did not get there within {timeout}s: {json.dumps(obj.get('status'))[:2000]}"
        w = watch.Watch()
        for event in w.stream(api.list_namespaced_custom_object, "mloop.dev", "v1alpha1", namespace, "modelpackages",
                              field_selector=f"metadata.name={name}", resource_version=obj["metadata"]["resourceVersion"],
                              timeout_seconds=max(1, int(left))):
            if event["type"] == "ERROR":  # e.g. 410 Gone: read it afresh and watch again
                obj = get_object(api_client, namespace, "modelpackages", name)
                w.stop()
                break
            obj = event["object"]
            if predicate(obj):
                w.stop()
                break


def iris_rows(n: int) -> list[tuple[dict, str]]:
    """n iris rows in a fixed shuffled order, with their true species."""
    import numpy as np

    data = load_iris(as_frame=True)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    order = np.random.default_rng(3).permutation(len(data.frame))[:n]
    return [({n_: float(data.frame.iloc[i, j]) for j, n_ in enumerate(names)}, str(data.target_names[data.target[i]]))
            for i in order]


def shadow_count(endpoint: str, target: str, outcome: str | None = None) -> float:
    """mloop_shadow_requests_total for one target (and outcome), summed over the server's workers."""
    total = 0.0
    for line in get(f"{endpoint}/metrics")[1].splitlines():
        if line.startswith("mloop_shadow_requests_total{") and f'target="{target}"' in line and (
                outcome is None or f'outcome="{outcome}"' in line):
            total += float(line.split()[-1])
    return total


def shadow_state(state: str):
    return lambda o: (o.get("status") or {}).get("shadow", {}).get("state") == state and o


def test_shadow_evaluation_promotes_the_better_model_and_refuses_the_worse(kubectl, api_client, namespace, operator,
                                                                            s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "live", LIVE_REQ)
    for run, change in RUNS.items():
        apply_object(kubectl, namespace, "TrainingRun", run, {**IRIS_RUN, "requirementRefs": [{"name": "live"}],
                                                              **change})
    for run in RUNS:
        succeeded(api_client, namespace, run, timeout=180)
    apply_object(kubectl, namespace, "ModelPackage", "iris-prod", {
        "model": "iris", "trainingRunRef": {"name": "prod"}, "stage": "Production", "serve": {"samplingRate": 1.0}})
    packaged(api_client, namespace, "iris-prod")
    prod = watch_package(api_client, namespace, "iris-prod",
                         lambda o: (c := condition(o, "Serving")) and c["status"] == "True" and o)
    endpoint = prod["status"]["endpoint"]
    for name in ("good", "bad", "wide"):
        apply_object(kubectl, namespace, "ModelPackage", f"iris-{name}", {
            "model": "iris", "trainingRunRef": {"name": name}, "shadow": {"samplingRate": 1.0}})

    # A candidate that needs petal_width, which Production's callers do not send, is refused and runs no server.
    wide = watch_package(api_client, namespace, "iris-wide", shadow_state("Refused"))
    refusal = condition(wide, "Shadowing")
    assert (refusal["status"], refusal["reason"]) == ("False", "SignatureMismatch")
    assert "input column 'petal_width' is not in the requests iris-prod takes" in refusal["message"]
    assert wide["status"]["shadow"].get("endpoint") is None
    assert refusal["message"].startswith("cannot shadow iris-prod (version 1): ")
    wait_for(lambda: ("ShadowRefused", refusal["message"]) in k8s_events(api_client, namespace, "iris-wide"))

    good = watch_package(api_client, namespace, "iris-good", shadow_state("Shadowing"))
    bad = watch_package(api_client, namespace, "iris-bad", shadow_state("Shadowing"))
    assert good["status"]["shadow"]["production"] == "iris-prod" and good["status"]["shadow"]["productionVersion"] == 1
    assert good["status"]["shadow"]["columns"] == SENT and bad["status"]["shadow"]["columns"] == ["sepal_width"]
    targets = watch_package(api_client, namespace, "iris-prod",
                            lambda o: len(t := o["status"].get("shadowTargets") or []) == 2 and t)
    assert {t["package"]: t.get("columns") for t in targets} == {"iris-bad": ["sepal_width"], "iris-good": SENT}

    # The status names the targets before the server re-reads them (SIGHUP after the write): unlabelled probes
    # until a round of them reaches both candidates from every worker.
    probes = iter(range(10_000))

    def forwarding() -> bool:
        before = [shadow_count(endpoint, t, "sent") for t in ("iris-good", "iris-bad")]
        for _ in range(4):  # connections are dealt to the workers in turn
            body = {"id": f"probe-{next(probes)}", "instances": [{c: ROW[c] for c in SENT}]}
            assert post(f"{endpoint}/predict", body)[0] == 200
        try:
            return wait_for(lambda: [shadow_count(endpoint, t, "sent") for t in ("iris-good", "iris-bad")]
                            == [b + 4 for b in before], timeout=5)
        except AssertionError:
            return False

    wait_for(forwarding, timeout=60)
    base = {t: shadow_count(endpoint, t, "sent") for t in ("iris-good", "iris-bad")}

    # Live traffic to Production only (the three columns its callers send); then the labels, by its request ids.
    served_rows = [({c: row[c] for c in SENT}, species) for row, species in iris_rows(60)]
    answers = {}
    for i, (row, _) in enumerate(served_rows):
        code, answer = post(f"{endpoint}/predict", {"id": f"req-{i}", "instances": [row]})
        assert code == 200 and answer["version"] == 1 and answer["ids"] == [f"req-{i}"], answer
        answers[f"req-{i}"] = answer["predictions"][0]
    code, _ = post(f"{endpoint}/feedback", {"feedback": [{"id": f"req-{i}", "label": species}
                                                         for i, (_, species) in enumerate(served_rows)]})
    assert code == 202
    wait_for(lambda: all(shadow_count(endpoint, t, "sent") == base[t] + 60 for t in base), timeout=30)
    assert shadow_count(endpoint, "iris-good", "failed") == shadow_count(endpoint, "iris-bad", "failed") == 0

    # The candidates recorded their own predictions under Production's request ids, from the columns they take.
    for pkg, columns in ((good, SENT), (bad, ["sepal_width"])):
        version = pkg["status"]["version"]
        def recorded(version=version) -> list[dict]:
            rows = rows_under(s3, f"collected/{namespace}/iris/{version}/")
            return set(answers) <= {r["row_id"] for r in rows} and rows

        collected = wait_for(recorded, timeout=30)
        assert all(r["row_id"].startswith("probe-") for r in collected if r["row_id"] not in answers)
        assert all(sorted(json.loads(r["inputs"])) == sorted(columns) for r in collected)

    # Both models scored on the same labelled rows, shown in each candidate's status and stored in S3.
    def scored(name: str) -> dict:
        return watch_package(api_client, namespace, name,
                             lambda o: o["status"]["shadow"].get("rows") == 60 and o["status"]["shadow"])

    good_shadow, bad_shadow = scored("iris-good"), scored("iris-bad")
    truth = {f"req-{i}": species for i, (_, species) in enumerate(served_rows)}
    production_accuracy = sum(answers[k] == truth[k] for k in truth) / len(truth)
    assert abs(good_shadow["productionValue"] - production_accuracy) < 1e-9
    assert abs(bad_shadow["productionValue"] - production_accuracy) < 1e-9
    assert good_shadow["candidateValue"] > production_accuracy + 0.05 > bad_shadow["candidateValue"]
    good_version = good["status"]["version"]
    record = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"shadow/{namespace}/iris/{good_version}-vs-1.json")
                        ["Body"].read())
    assert record["rows"] == 60 and record["production"]["package"] == "iris-prod"

    # The worse model is refused Production, the refusal says why; the better one is granted it.
    kubectl("patch", "modelpackage", "iris-bad", "-n", namespace, "--type", "merge", "-p",
            json.dumps({"spec": {"stage": "Production"}}), check=True)
    refused = watch_package(api_client, namespace, "iris-bad", lambda o: (c := condition(o, "Promoted")) and
                            c["reason"] == "CriterionFailed" and c)
    assert "live/live:accuracy" in refused["message"] and "does not beat it" in refused["message"]
    assert "on 60 live rows" in refused["message"] and "margin 0.05 needed" in refused["message"]
    kubectl("patch", "modelpackage", "iris-good", "-n", namespace, "--type", "merge", "-p",
            json.dumps({"spec": {"stage": "Production"}}), check=True)
    granted = watch_package(api_client, namespace, "iris-good", lambda o: o["status"].get("stage") == "Production" and o)
    live = next(r for r in granted["status"]["requirements"] if r["criterion"] == "live:accuracy")
    assert live["passed"] is True
    watch_package(api_client, namespace, "iris-prod", lambda o: o["status"].get("stage") == "Archived")
    stopped = watch_package(api_client, namespace, "iris-good", shadow_state("Stopped"))
    assert stopped["status"]["shadow"]["rows"] == 60


def batch(s3, key: str, column: str, values: dict[str, str]) -> None:
    """One collection or feedback batch as the server writes it: row_id and the JSON of the value."""
    out = io.BytesIO()
    pq.write_table(pa.table({"row_id": list(values), column: [json.dumps(v) for v in values.values()]}), out)
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=out.getvalue())


def test_live_scoring_reads_each_collected_object_once(s3, namespace) -> None:
    """Each pass reads only the batches written since the last one; the score equals a full re-read."""
    from mloop.serving.livescore import joined, score
    from mloop.storage.artifacts import Store

    class Counting(Store):  # the real store; it only counts which objects are read
        def __init__(self) -> None:
            super().__init__(s3.client, s3.bucket)
            self.read: list[str] = []

        def get(self, key: str, expected_sha256: str | None = None) -> bytes:
            self.read.append(key)
            return super().get(key, expected_sha256)

    store = Counting()
    base = f"{namespace}/iris"
    batch(s3, f"feedback/{base}/2026/11/28/a.parquet", "label", {"r1": "a", "r2": "b", "r3": "a"})
    batch(s3, f"collected/{base}/1/2026/11/28/a.parquet", "prediction", {"r1": "a", "r2": "a", "r3": "a"})
    batch(s3, f"collected/{base}/2/2026/11/28/a.parquet", "prediction", {"r1": "a", "r2": "b"})
    assert score(store, namespace, "iris", 1, 2, "accuracy") == (2, 0.5, 1.0)

    # A later pass with one new candidate batch reads that batch (and the stored join) only.
    store.read.clear()
    batch(s3, f"collected/{base}/2/2026/11/28/b.parquet", "prediction", {"r3": "b", "r4": "a"})
    assert score(store, namespace, "iris", 1, 2, "accuracy") == (3, 2 / 3, 2 / 3)
    assert [k for k in store.read if not k.startswith("shadow/")] == [f"collected/{base}/2/2026/11/28/b.parquet"]

    # Nothing new: nothing but the stored join is read, and nothing is written.
    store.read.clear()
    before = s3.client.head_object(Bucket=s3.bucket, Key=f"shadow/{base}/2-vs-1.rows.parquet")["ETag"]
    assert score(store, namespace, "iris", 1, 2, "accuracy") == (3, 2 / 3, 2 / 3)
    assert store.read == [f"shadow/{base}/2-vs-1.rows.parquet"]
    assert s3.client.head_object(Bucket=s3.bucket, Key=f"shadow/{base}/2-vs-1.rows.parquet")["ETag"] == before

    # The same answer as reading everything afresh (a join stored under another pair of versions).
    batch(s3, f"feedback/{base}/2026/11/28/b.parquet", "label", {"r4": "a"})
    incremental = joined(store, namespace, "iris", 1, 2)
    s3.client.delete_object(Bucket=s3.bucket, Key=f"shadow/{base}/2-vs-1.rows.parquet")
    assert joined(Store(s3.client, s3.bucket), namespace, "iris", 1, 2) == incremental
    assert incremental == (["a", "b", "a"], ["a", "a", "a"], ["a", "b", "b"])


def test_a_hanging_or_dead_shadow_never_changes_the_callers_answers(served, tmp_path) -> None:
    """Production's answers with a hanging shadow and a dead one equal its answers without; the requests the
    hanging shadow's bounded queue could not take are counted as dropped, the dead one's as failed."""
    baseline, baseline_endpoint = start_server(served, "--workers", "1", "--sampling-rate", "0")
    # Forwarded batches name each row's id; ids that do not match the rows are refused, naming the field.
    code, refused = post(f"{baseline_endpoint}/predict", {"ids": ["a"], "instances": [ROW, ROW]})
    assert code == 400 and "'ids' must be a list of 2 row ids" in refused["error"]
    hanging = HangingServer()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there
    targets = tmp_path / "shadows.json"
    targets.write_text("[]")
    shadowed, endpoint = start_server(served, "--workers", "1", "--sampling-rate", "0", "--shadow-file", str(targets),
                                      "--shadow-buffer", "5")
    try:
        targets.write_text(json.dumps([{"package": "hangs", "url": hanging.url, "samplingRate": 1.0},
                                       {"package": "dead", "url": dead_url, "samplingRate": 1.0}]))
        shadowed.send_signal(signal.SIGHUP)  # what the operator does when a candidate starts shadowing
        sent = 0

        def retargeted() -> bool:
            nonlocal sent
            sent += 1
            assert post(f"{endpoint}/predict", {"instances": [ROW]})[0] == 200
            return shadow_count(endpoint, "dead") > 0

        wait_for(retargeted, timeout=30)
        for i, (row, _) in enumerate(iris_rows(50)):
            body = {"id": f"h-{i}", "instances": [row]}
            expected, shadowed_answer = post(f"{baseline_endpoint}/predict", body), post(f"{endpoint}/predict", body)
            sent += 1
            assert shadowed_answer == expected
        wait_for(lambda: shadow_count(endpoint, "hangs", "dropped") > 0, timeout=10)  # on the metric within 0.5 s
        for target in ("hangs", "dead"):  # every copy accounted for: timed out, refused or dropped, none sent
            wait_for(lambda: shadow_count(endpoint, target, "failed") + shadow_count(endpoint, target, "dropped")
                     == sent, timeout=30)
            assert shadow_count(endpoint, target, "sent") == 0
        assert get(f"{endpoint}/v2/health/ready")[0] == 200
    finally:
        for proc in (baseline, shadowed):
            proc.terminate()
            proc.wait(timeout=30)
        hanging.close()
