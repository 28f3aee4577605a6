"""Shadow evaluation on live traffic, over real HTTP against the real stack: the Production server sends sampled
requests to candidate packages under the caller's request ids; labels score both; the gate judges the live margin.
A hanging or dead shadow leaves the caller's answers as they were, and what it could not take is counted."""

from __future__ import annotations

import json
import signal
import socket
import threading

from sklearn.datasets import load_iris

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_serving import ROW, get, post, rows_under, served, start_server  # noqa: F401
from tests.integration.test_trainingrun import IRIS_RUN, succeeded

LIVE_REQ = {"title": "Beat Production on live traffic", "metrics": [{"metric": "accuracy", "min": 0.3, "primary": True}],
            "live": {"minRows": 40, "margin": 0.05}}


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


def shadowing(api_client, namespace: str, name: str) -> dict:
    return wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", name)).get("status", {}).get(
        "shadow", {}).get("state") == "Shadowing" and o, timeout=90)


def test_shadow_evaluation_promotes_the_better_model_and_refuses_the_worse(kubectl, api_client, namespace, operator,
                                                                            s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "live", LIVE_REQ)
    for run, features in (("prod", ["sepal_length"]), ("good", None), ("bad", ["sepal_width"])):
        apply_object(kubectl, namespace, "TrainingRun", run, {**IRIS_RUN, "requirementRefs": [{"name": "live"}],
                                                              **({"features": features} if features else {})})
    for run in ("prod", "good", "bad"):
        succeeded(api_client, namespace, run, timeout=180)
    apply_object(kubectl, namespace, "ModelPackage", "iris-prod", {
        "model": "iris", "trainingRunRef": {"name": "prod"}, "stage": "Production", "serve": {"samplingRate": 1.0}})
    packaged(api_client, namespace, "iris-prod")
    prod = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-prod")) and
                    (c := condition(o, "Serving")) and c["status"] == "True" and o, timeout=60)
    endpoint = prod["status"]["endpoint"]
    for name, run in (("iris-good", "good"), ("iris-bad", "bad")):
        apply_object(kubectl, namespace, "ModelPackage", name, {"model": "iris", "trainingRunRef": {"name": run},
                                                                "shadow": {"samplingRate": 1.0}})
    good, bad = shadowing(api_client, namespace, "iris-good"), shadowing(api_client, namespace, "iris-bad")
    assert good["status"]["shadow"]["production"] == "iris-prod" and good["status"]["shadow"]["productionVersion"] == 1
    wait_for(lambda: len(get_object(api_client, namespace, "modelpackages", "iris-prod")["status"].get(
        "shadowTargets") or []) == 2, timeout=60)

    # Live traffic to Production only; then its labels, by the ids Production answered with.
    served_rows = iris_rows(60)
    answers = {}
    for i, (row, _) in enumerate(served_rows):
        code, answer = post(f"{endpoint}/predict", {"id": f"req-{i}", "instances": [row]})
        assert code == 200 and answer["version"] == 1 and answer["ids"] == [f"req-{i}"]
        answers[f"req-{i}"] = answer["predictions"][0]
    code, _ = post(f"{endpoint}/feedback", {"feedback": [{"id": f"req-{i}", "label": species}
                                                         for i, (_, species) in enumerate(served_rows)]})
    assert code == 202
    wait_for(lambda: shadow_count(endpoint, "iris-good", "sent") == shadow_count(endpoint, "iris-bad", "sent") == 60,
             timeout=30)

    # The candidates recorded their own predictions under Production's request ids.
    good_version, bad_version = good["status"]["version"], bad["status"]["version"]
    for version in (good_version, bad_version):
        collected = wait_for(lambda: len(rows := rows_under(s3, f"collected/{namespace}/iris/{version}/")) >= 60 and rows,
                             timeout=30)
        assert {r["row_id"] for r in collected} == set(answers)

    # Both models scored on the same labelled rows, shown in each candidate's status and stored in S3.
    def scored(name: str) -> dict:
        return wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", name))["status"]["shadow"].get(
            "rows") == 60 and o["status"]["shadow"], timeout=60)

    good_shadow, bad_shadow = scored("iris-good"), scored("iris-bad")
    truth = {f"req-{i}": species for i, (_, species) in enumerate(served_rows)}
    production_accuracy = sum(answers[k] == truth[k] for k in truth) / len(truth)
    assert abs(good_shadow["productionValue"] - production_accuracy) < 1e-9
    assert abs(bad_shadow["productionValue"] - production_accuracy) < 1e-9
    assert good_shadow["candidateValue"] > production_accuracy + 0.05 > bad_shadow["candidateValue"]
    record = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"shadow/{namespace}/iris/{good_version}-vs-1.json")
                        ["Body"].read())
    assert record["rows"] == 60 and record["production"]["package"] == "iris-prod"

    # The worse model is refused Production, the refusal says why; the better one is granted it.
    kubectl("patch", "modelpackage", "iris-bad", "-n", namespace, "--type", "merge", "-p",
            json.dumps({"spec": {"stage": "Production"}}), check=True)
    refused = wait_for(lambda: (c := condition(get_object(api_client, namespace, "modelpackages", "iris-bad"),
                                               "Promoted")) and c["reason"] == "CriterionFailed" and c, timeout=60)
    assert "live/live:accuracy" in refused["message"] and "does not beat it" in refused["message"]
    assert "on 60 live rows" in refused["message"] and "margin 0.05 needed" in refused["message"]
    kubectl("patch", "modelpackage", "iris-good", "-n", namespace, "--type", "merge", "-p",
            json.dumps({"spec": {"stage": "Production"}}), check=True)
    granted = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-good"))["status"].get(
        "stage") == "Production" and o, timeout=60)
    live = next(r for r in granted["status"]["requirements"] if r["criterion"] == "live:accuracy")
    assert live["passed"] is True
    wait_for(lambda: get_object(api_client, namespace, "modelpackages", "iris-prod")["status"].get("stage") == "Archived",
             timeout=60)
    stopped = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-good"))["status"]["shadow"][
        "state"] == "Stopped" and o, timeout=60)
    assert stopped["status"]["shadow"]["rows"] == 60


class Hanging:
    """A TCP server that accepts connections and never answers: a shadow that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_hanging_or_dead_shadow_never_changes_the_callers_answers(served, tmp_path) -> None:
    """Production's answers with a hanging shadow and a dead one equal its answers without; the requests the
    hanging shadow's bounded queue could not take are counted as dropped, the dead one's as failed."""
    baseline, baseline_endpoint = start_server(served, "--workers", "1", "--sampling-rate", "0")
    hanging = Hanging()
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
        assert shadow_count(endpoint, "hangs", "dropped") > 0
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
