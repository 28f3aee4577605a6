"""`mloop runs compare` against real runs: only the experiment's runs, best first, as JSON and CSV."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from tests.helpers import apply_object
from tests.integration.test_dataset_sources import ready as dataset_ready
from tests.integration.test_trainingrun import IRIS_RUN, succeeded


def mloop(*args: str, kubeconfig: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mloop.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "KUBECONFIG": kubeconfig}, timeout=60)


def test_compare_sorts_by_the_primary_metric_and_writes_csv(kubectl, api_client, namespace, operator, kubeconfig,
                                                            tmp_path) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", {"source": {"builtin": {"name": "iris"}}})
    dataset_ready(api_client, namespace, "iris")
    runs = {
        "weak": {"estimator": {"name": "DecisionTreeClassifier", "params": {"max_depth": 1}}},
        "strong": {"estimator": {"name": "LogisticRegression", "params": {"max_iter": 500}}},
        "other": {"estimator": {"name": "GaussianNB"}, "experiment": "elsewhere"},
    }
    for name, change in runs.items():
        apply_object(kubectl, namespace, "TrainingRun", name, {**IRIS_RUN, **change})
    accuracy = {name: succeeded(api_client, namespace, name)["status"]["metrics"]["accuracy"] for name in runs}
    out = tmp_path / "runs.csv"
    result = mloop("runs", "compare", "-l", "mloop.dev/experiment=iris", "-n", namespace, "-o", "json",
                   "--csv", str(out), kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["primaryMetric"] == "accuracy"
    assert [r["name"] for r in report["runs"]] == sorted(["weak", "strong"], key=lambda n: -accuracy[n])
    assert report["runs"][0]["metric.accuracy"] == max(accuracy["weak"], accuracy["strong"])
    assert {r["name"]: r.get("param.max_depth") for r in report["runs"]}["weak"] == 1
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == [r["name"] for r in report["runs"]]
    assert "metric.cv_accuracy_mean" in rows[0]
    table = mloop("runs", "compare", "-l", "mloop.dev/experiment=iris", "-n", namespace, kubeconfig=kubeconfig)
    assert table.returncode == 0 and "best accuracy first" in table.stdout
    none = mloop("runs", "compare", "-l", "mloop.dev/experiment=nothing", "-n", namespace, kubeconfig=kubeconfig)
    assert none.returncode == 1 and "no TrainingRuns match" in none.stderr


def test_kubectl_finds_the_mloop_plugin(kubeconfig, namespace) -> None:
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "KUBECONFIG": kubeconfig, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    plugins = subprocess.run([f"{bindir}/kubectl", "plugin", "list"], capture_output=True, text=True, env=env)
    assert f"{bindir}/kubectl-mloop" in plugins.stdout
    status = subprocess.run([f"{bindir}/kubectl", "mloop", "status", "-n", namespace, "-o", "json"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == []
