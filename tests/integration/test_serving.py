"""The model server over real HTTP: OIP v2 checked with tritonclient, bad requests, collection, S3 outage."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mloop.localcluster.stack import free_port
from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_modelpackage import IRIS_DS, REQUIREMENT, packaged
from tests.integration.test_trainingrun import IRIS_RUN, succeeded

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def post(url: str, body: object, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:  # not listening (yet)
        return 0, ""


def metric(endpoint: str, name: str) -> float:
    text = get(f"{endpoint}/metrics")[1]
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])]


def rows_under(s3, prefix: str) -> list[dict]:
    rows = []
    for key in keys(s3, prefix):
        body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
        rows += pq.read_table(io.BytesIO(body)).to_pylist()
    return rows


@pytest.fixture
def served(kubectl, api_client, namespace, operator) -> dict:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "Requirement", "iris-req", REQUIREMENT)
    apply_object(kubectl, namespace, "TrainingRun", "iris-lr", {**IRIS_RUN, "requirementRefs": [{"name": "iris-req"}]})
    succeeded(api_client, namespace, "iris-lr")
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "iris-lr"},
                                                                  "stage": "Production", "formats": ["skops", "onnx"],
                                                                  "serve": {"samplingRate": 1.0}})
    packaged(api_client, namespace, "iris-1")
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1")) and
                   (c := condition(o, "Serving")) and c["status"] == "True" and o, timeout=60)
    return obj


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_open_inference_protocol_with_tritonclient(served, binary) -> None:
    """tritonclient sends binary tensors by default; JSON tensors when asked. Both must give the same answer."""
    import tritonclient.http as triton

    endpoint = served["status"]["endpoint"]
    client = triton.InferenceServerClient(url=endpoint.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime" and meta["parameters"]["runtime"] == "onnx"
    assert [i["name"] for i in meta["inputs"]] == list(ROW)
    inputs = []
    for name, values in (("sepal_length", [5.1, 6.7]), ("sepal_width", [3.5, 3.0]), ("petal_length", [1.4, 5.2]),
                         ("petal_width", [0.2, 2.3])):
        tensor = triton.InferInput(name, [2, 1], "FP64")
        tensor.set_data_from_numpy(np.array(values).reshape(2, 1), binary_data=binary)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput("predict", binary_data=binary),
               triton.InferRequestedOutput("predict_proba", binary_data=binary)]
    result = client.infer("iris", inputs, outputs=outputs)
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")] == ["setosa", "virginica"]
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (2, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    everything = client.infer("iris", inputs)  # no outputs named: tritonclient asks for all of them in binary
    assert [v.decode() for v in everything.as_numpy("predict")] == ["setosa", "virginica"]
    with pytest.raises(triton.InferenceServerException, match="Content-Encoding gzip is not supported"):
        client.infer("iris", inputs, outputs=outputs, request_compression_algorithm="gzip")
    assert client.get_server_metadata() == {"name": "mloop", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    for call, says in ((lambda: client.get_inference_statistics("iris"), "statistics extension is not supported"),
                       (client.get_model_repository_index, "model repository extension is not supported"),
                       (lambda: client.get_model_config("iris"), "model configuration is not supported"),
                       (client.unregister_system_shared_memory, "shared-memory tensors are not supported")):
        with pytest.raises(triton.InferenceServerException, match=says):
            call()


def test_status_says_which_runtime_serves(served, kubectl, api_client, namespace) -> None:
    """What the local server reports: the package's ONNX model passed its parity check, so onnxruntime serves."""
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1"))["status"].get("serving")
                   and o, timeout=60)
    assert obj["status"]["onnxParity"] == "exact" and obj["status"]["serving"]["runtime"] == "onnx"
    assert obj["status"]["serving"]["reason"].startswith("ONNX parity exact (labels agree on 100%")
    wide = kubectl("get", "modelpackage", "iris-1", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert "RUNTIME" in wide[0].split() and "onnx" in wide[1].split()
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=iris-1",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "ServingRuntime" in events


def test_bad_requests_get_4xx_json_naming_the_column(served) -> None:
    endpoint = served["status"]["endpoint"]
    cases = [
        ({"instances": [{k: v for k, v in ROW.items() if k != "petal_width"}]}, None, 400, "petal_width"),
        ({"instances": [{**ROW, "sepal_length": "long"}]}, None, 400, "sepal_length"),
        ({"instances": [{**ROW, "sepal_length": 99}]}, None, 400, "sepal_length"),
        ({"instances": [{**ROW, "colour": "blue"}]}, None, 400, "colour"),
        (None, b"{not json", 400, None),
        ({"rows": []}, None, 400, None),
    ]
    for body, raw, status, column in cases:
        code, answer = post(f"{endpoint}/predict", body, raw)
        assert code == status and "error" in answer, (body, answer)
        assert answer.get("column") == column
    code, answer = post(f"{endpoint}/v2/models/iris/infer", {"inputs": [{"name": "sepal_length", "shape": [1, 1],
                                                                          "datatype": "FP64", "data": [5.0]}]})
    assert code == 400 and answer["column"] == "sepal_width"
    code, answer = post(f"{endpoint}/v2/models/other/infer", {"inputs": []})
    assert code == 404 and "this server serves 'iris'" in answer["error"]
    assert post(f"{endpoint}/predict", {"instances": [ROW]})[0] == 200  # still serving
    assert metric(endpoint, 'mloop_requests_total{code="400",route="predict"}') == 6


def test_predictions_and_feedback_land_in_s3(served, s3, namespace) -> None:
    endpoint = served["status"]["endpoint"]
    code, answer = post(f"{endpoint}/predict", {"instances": [ROW, {**ROW, "petal_length": 5.0, "petal_width": 2.0}]})
    assert code == 200 and answer["predictions"][0] == "setosa" and len(answer["ids"]) == 2
    code, ack = post(f"{endpoint}/feedback", {"feedback": [{"id": answer["ids"][0], "label": "setosa"},
                                                           {"id": answer["ids"][1], "label": "virginica"}]})
    assert code == 202 and ack == {"accepted": 2}
    # a caller's unicode row id and a null input reach the Parquet file as sent (rows wait as bytes in the server)
    code, other = post(f"{endpoint}/predict", {"instances": [{**ROW, "sepal_width": None}], "ids": ["ünï-✓-1"]})
    assert code == 200 and other["ids"] == ["ünï-✓-1"]
    collected = wait_for(lambda: (c := rows_under(s3, f"collected/{namespace}/iris/1/")) and len(c) == 3 and c,
                         timeout=30)
    assert {r["row_id"] for r in collected} == {*answer["ids"], "ünï-✓-1"}
    assert collected[0]["package"] == "iris-1" and json.loads(collected[0]["inputs"])["sepal_length"] == 5.1
    unicode = next(r for r in collected if r["row_id"] == "ünï-✓-1")
    assert unicode["request_id"] == "ünï-✓-1" and json.loads(unicode["prediction"]) == other["predictions"][0]
    assert json.loads(unicode["inputs"]) == {**ROW, "sepal_width": None}
    assert datetime.fromisoformat(unicode["served_at"]).utcoffset() == timedelta(0)
    feedback = wait_for(lambda: rows_under(s3, f"feedback/{namespace}/iris/"), timeout=30)
    assert {r["row_id"]: json.loads(r["label"]) for r in feedback} == {answer["ids"][0]: "setosa",
                                                                        answer["ids"][1]: "virginica"}


def start_server(package: dict, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mloop.serving.server", "--package", package["status"]["uri"],
                             "--digest", package["status"]["digest"], "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(lambda: get(f"{endpoint}/v2/health/ready")[0] == 200 if proc.poll() is None else True, timeout=60)
    return proc, endpoint


def test_digest_mismatch_is_refused(served) -> None:
    tampered = {"status": {**served["status"], "digest": "sha256:" + "0" * 64}}
    proc, _ = start_server(tampered)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "refusing to serve it" in output


def test_s3_outage_keeps_serving_counts_drops_and_flushes_on_recovery(served, stack, s3, namespace) -> None:
    """Two workers, each with half of the 50-row bound: wherever the kernel sends each request, nothing is
    lost silently: every row is written or counted as dropped in the one metric."""
    proc, endpoint = start_server(served, "--buffer", "50", "--flush-seconds", "0.5", "--s3-timeout", "1",
                                  "--workers", "2")
    before = len(rows_under(s3, f"collected/{namespace}/iris/1/"))
    try:
        stack.stop_s3()
        try:
            for _ in range(8):
                code, _ = post(f"{endpoint}/predict", {"instances": [ROW] * 10})
                assert code == 200
            dropped = metric(endpoint, 'mloop_collection_dropped_total{stream="predictions"}')
            # the gauge is set at each flush attempt (every 0.5 s here)
            buffered = wait_for(lambda: (b := metric(endpoint, 'mloop_collection_buffered{stream="predictions"}'))
                                + dropped == 80 and b, timeout=20)
            assert 25 <= buffered <= 50 and dropped >= 30
            wait_for(lambda: metric(endpoint, "mloop_collection_write_failures_total") >= 1, timeout=20)
        finally:
            stack.start_s3()
        wait_for(lambda: metric(endpoint, 'mloop_collection_buffered{stream="predictions"}') == 0, timeout=60)
        assert metric(endpoint, 'mloop_collection_written_total{stream="predictions"}') == buffered
        assert len(rows_under(s3, f"collected/{namespace}/iris/1/")) == before + buffered
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert re.search(r"predictions buffer full \(25 rows\): dropped \d+ rows", output)
    assert sum(int(line.split("predictions: ")[1].split()[0]) for line in output.splitlines()
               if "rows dropped in total" in line) == dropped


def test_onnx_and_scikit_learn_runtimes_answer_alike_and_nulls_go_to_scikit_learn(served) -> None:
    rows = [ROW, {**ROW, "petal_length": 5.0, "petal_width": 2.0}, {**ROW, "petal_length": 4.1, "petal_width": 1.3},
            {**ROW, "sepal_width": None}]
    sklearn, endpoint = start_server(served, "--runtime", "sklearn", "--workers", "1")
    try:
        assert json.loads(get(f"{endpoint}/v2/models/iris")[1])["parameters"]["runtime"] == "sklearn"
        code, reference = post(f"{endpoint}/predict", {"instances": rows})
        assert code == 200
    finally:
        sklearn.terminate()
        sklearn.communicate(timeout=30)
    code, answer = post(f"{served['status']['endpoint']}/predict", {"instances": rows})
    assert code == 200 and answer["predictions"] == reference["predictions"]
    assert np.allclose(answer["probabilities"], reference["probabilities"], atol=1e-6)


def libraries(pid: int) -> set[str]:
    """Which of scikit-learn, scipy and pandas a server (parent and workers) has imported: each maps its compiled
    modules when imported, so the processes' memory maps show it from outside."""
    pids = [pid] + [int(c) for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]
    maps = "".join(Path(f"/proc/{p}/maps").read_text() for p in pids)
    return {lib for lib in ("sklearn", "scipy", "pandas") if f"/site-packages/{lib}/" in maps}


def test_onnx_runtime_loads_no_scikit_learn_until_a_row_with_a_null(served, s3, namespace) -> None:
    """Under ONNX the server neither imports scikit-learn, scipy nor pandas (about 150 MB) while it serves, collects
    and writes Parquet; the first row with a null loads the scikit-learn model to answer it."""
    before = len(rows_under(s3, f"collected/{namespace}/iris/1/"))
    proc, endpoint = start_server(served, "--workers", "2", "--flush-seconds", "0.5")
    try:
        assert json.loads(get(f"{endpoint}/v2/models/iris")[1])["parameters"]["runtime"] == "onnx"
        for _ in range(6):
            code, answer = post(f"{endpoint}/predict", {"instances": [ROW, {**ROW, "petal_length": 5.0}]})
            assert code == 200 and answer["predictions"][0] == "setosa"
        code, _ = post(f"{endpoint}/feedback", {"id": answer["ids"][0], "label": "setosa"})
        assert code == 202
        wait_for(lambda: len(rows_under(s3, f"collected/{namespace}/iris/1/")) == before + 12, timeout=30)
        assert libraries(proc.pid) == set()
        code, answer = post(f"{endpoint}/predict", {"instances": [{**ROW, "sepal_width": None}]})
        assert code == 200 and answer["predictions"] == ["setosa"]
        assert "sklearn" in libraries(proc.pid)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def established(pid: int, port: int) -> int:
    """TCP connections on `port` that a process holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def test_workers_take_equal_shares_of_keep_alive_connections(served) -> None:
    """The kernel's SO_REUSEPORT hash split 8 connections 1/7 or 2/6 in 8 of 20 tries: the parent deals them in turn."""
    import http.client

    proc, endpoint = start_server(served, "--workers", "2")
    port = int(endpoint.rsplit(":", 1)[1])
    try:
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(8)]
        for _ in range(3):
            for conn in connections:
                conn.request("POST", "/predict", body=json.dumps({"instances": [ROW]}),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                assert resp.status == 200 and json.loads(resp.read())["predictions"] == ["setosa"]
        workers = [int(c) for task in Path(f"/proc/{proc.pid}/task").glob("*/children") for c in task.read_text().split()]
        assert len(workers) == 2 and sorted(established(w, port) for w in workers) == [4, 4]
        for conn in connections:
            conn.close()
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output


def test_graceful_shutdown_flushes_the_buffer(served, s3, namespace) -> None:
    proc, endpoint = start_server(served, "--flush-seconds", "600")
    before = len(rows_under(s3, f"collected/{namespace}/iris/1/"))
    code, _ = post(f"{endpoint}/predict", {"instances": [ROW] * 7})
    assert code == 200
    time.sleep(0.5)
    assert len(rows_under(s3, f"collected/{namespace}/iris/1/")) == before
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert len(rows_under(s3, f"collected/{namespace}/iris/1/")) == before + 7


def test_local_server_is_restarted_when_it_dies(served, api_client, namespace) -> None:
    from mloop.serving.local import LocalServers

    state = LocalServers().state(namespace, "iris", "Production")
    os.killpg(state["pid"], signal.SIGKILL)
    restarted = wait_for(lambda: (s := LocalServers().state(namespace, "iris", "Production")) and
                         s["pid"] != state["pid"] and s, timeout=30)
    assert restarted["port"] == state["port"]  # the endpoint stays the same
    wait_for(lambda: get(f"{served['status']['endpoint']}/v2/health/ready")[0] == 200, timeout=60)


def test_a_server_whose_state_was_never_written_is_replaced_not_left_beside_the_new_one(served, namespace) -> None:
    """An operator killed between starting a server and writing its state file: the next pass finds the stray by
    its command line, stops it, and serves on its port, so exactly one server answers the endpoint."""
    from mloop.localcluster.stack import _alive
    from mloop.serving.local import LocalServers

    servers = LocalServers()
    state = servers.state(namespace, "iris", "Production")
    wait_for(lambda: get(f"{served['status']['endpoint']}/v2/health/ready")[0] == 200, timeout=60)
    servers._state_path(namespace, "iris", "Production").unlink()  # the write that the kill prevented
    fresh = wait_for(lambda: (s := servers.state(namespace, "iris", "Production")) and s["pid"] != state["pid"] and s,
                     timeout=60)
    assert fresh["port"] == state["port"]  # the endpoint stays the same
    wait_for(lambda: not _alive(state["pid"]), timeout=30)  # the stray is gone, not serving beside the new one
    wait_for(lambda: get(f"{served['status']['endpoint']}/v2/health/ready")[0] == 200, timeout=60)


def test_server_stops_when_the_package_leaves_serving(served, kubectl, api_client, namespace) -> None:
    from mloop.localcluster.stack import _alive
    from mloop.serving.local import LocalServers

    state = LocalServers().state(namespace, "iris", "Production")
    spec = {**served["spec"], "stage": "Archived"}
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", spec)
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1"))["status"].get("stage")
                   == "Archived" and "endpoint" not in o["status"] and o, timeout=60)
    assert condition(obj, "Serving")["status"] == "False"
    wait_for(lambda: not _alive(state["pid"]), timeout=30)
    # stop() removes the state file once the process has exited: a moment after the pid is gone
    wait_for(lambda: LocalServers().state(namespace, "iris", "Production") is None, timeout=30)
    assert get(f"{served['status']['endpoint']}/v2/health/live")[0] == 0  # nothing listens any more


def test_a_deleted_package_takes_its_local_server_with_it(served, kubectl, api_client, namespace) -> None:
    """As the garbage collector takes an owned Deployment. The passes that the deletion's own events bring (the
    package is still there, deleting, until kopf lets go of its timer's finalizer) must not start it again."""
    from mloop.localcluster.stack import _alive
    from mloop.serving.local import LocalServers

    state = LocalServers().state(namespace, "iris", "Production")
    kubectl("delete", "modelpackage", "iris-1", "-n", namespace, "--wait=true", check=True)
    wait_for(lambda: not _alive(state["pid"]), timeout=30)
    time.sleep(3)  # a restart by a late pass would be up by now
    assert LocalServers().state(namespace, "iris", "Production") is None
    assert get(f"{served['status']['endpoint']}/v2/health/live")[0] == 0  # nothing listens any more
