"""The operator skeleton runs against the real API server, watches the four kinds and exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

from kopf.testing import KopfRunner

from mloop.localcluster.stack import free_port
from tests.helpers import apply_object as apply, condition, get_object as get, wait_for

SPECS = {
    "Requirement": ("requirements", {"title": "Good enough"}),
    "Dataset": ("datasets", {"source": {"builtin": {"name": "iris"}}}),
    "TrainingRun": ("trainingruns", {"datasetRef": {"name": "watched"}, "target": "species",
                                     "estimator": {"name": "LogisticRegression"}}),
    "ModelPackage": ("modelpackages", {"model": "iris", "trainingRunRef": {"name": "watched"}}),
}


def test_kopf_runner_watches_all_four_kinds_and_exits_cleanly(kubectl, api_client, namespace) -> None:
    port = free_port()
    args = ["run", "--standalone", "--all-namespaces", "--liveness", f"http://127.0.0.1:{port}/healthz",
            "-m", "mloop.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        for kind, (_, spec) in SPECS.items():
            apply(kubectl, namespace, kind, "watched", spec)
        for kind, (plural, _) in SPECS.items():
            obj = wait_for(lambda: (o := get(api_client, namespace, plural, "watched"))
                           and (c := condition(o, "Ready")) and c["status"] == "True" and o, timeout=90)
            assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 1
            assert obj["status"]["phase"] == {"Dataset": "Ready", "TrainingRun": "Succeeded",
                                              "ModelPackage": "Packaged", "Requirement": "Pending"}[kind]
            annotations = obj["metadata"].get("annotations", {})
            # kopf keeps its bookkeeping under mloop.dev/, never under kopf.zalando.org.
            assert not any(k.startswith("kopf.zalando.org") for k in annotations)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
        events = kubectl("get", "events", "-n", namespace, "-o",
                         "jsonpath={range .items[*]}{.involvedObject.kind}/{.reason} {end}").stdout.split()
        assert {"Requirement/NoCandidate", "Dataset/VersionCut", "TrainingRun/RunSucceeded",
                "ModelPackage/Packaged"} <= set(events)
    assert runner.exception is None
    assert runner.exit_code == 0
    from mloop.handlers.metrics import DURATION, RECONCILES

    for kind in SPECS:
        assert RECONCILES.labels(kind)._value.get() > 0
    assert DURATION.labels("TrainingRun")._sum.get() > 0


def test_python_m_mloop_serves_liveness_and_stops_on_sigterm(stack, kubeconfig) -> None:
    port = free_port()
    metrics = free_port()
    env = {**os.environ, "KUBECONFIG": kubeconfig, "MLOOP_LIVENESS_PORT": str(port), "MLOOP_METRICS_PORT": str(metrics)}
    proc = subprocess.Popen([sys.executable, "-m", "mloop"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(healthy, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
            exposed = resp.read().decode()
        for name in ("mloop_reconciles_total", "mloop_reconcile_errors_total", "mloop_reconcile_seconds",
                     "mloop_tasks_running"):
            assert f"# TYPE {name.removesuffix('_total')}" in exposed
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
