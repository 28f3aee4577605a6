"""`mloop lineage` over a real chain: requirement -> dataset version -> run -> package, both ways, four formats."""

from __future__ import annotations

import re

from tests.helpers import apply_object
from tests.integration.test_cli_runs import mloop
from tests.integration.test_modelpackage import IRIS_DS, REQUIREMENT, packaged
from tests.integration.test_trainingrun import IRIS_RUN, succeeded


def test_lineage_in_every_format(kubectl, api_client, namespace, operator, kubeconfig, tmp_path) -> None:
    apply_object(kubectl, namespace, "Requirement", "iris-req", REQUIREMENT)
    apply_object(kubectl, namespace, "Dataset", "iris", {**IRIS_DS, "requirementRefs": [{"name": "iris-req"}]})
    apply_object(kubectl, namespace, "Dataset", "setosa", {"source": {"derived": {"datasetRef": {"name": "iris"},
                                                                                  "transform": {"filter": "species == 'setosa'"}}}})
    apply_object(kubectl, namespace, "TrainingRun", "iris-lr", {**IRIS_RUN, "requirementRefs": [{"name": "iris-req"}]})
    run = succeeded(api_client, namespace, "iris-lr")
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "iris-lr"},
                                                                  "stage": "Production"})
    packaged(api_client, namespace, "iris-1")
    version = run["status"]["datasetVersion"]

    text = mloop("lineage", "tr/iris-lr", "-n", namespace, kubeconfig=kubeconfig)
    assert text.returncode == 0, text.stderr
    up, down = text.stdout.split("downstream:")
    assert f"<- dataset/iris@{version}" in up and "<- requirement/iris-req" in up
    assert "-> modelpackage/iris-1  [iris v1 Production]" in down
    from_package = mloop("lineage", "modelpackage/iris-1", "-n", namespace, kubeconfig=kubeconfig).stdout
    assert re.search(r"<- trainingrun/iris-lr .*\n\s+<- dataset/iris@" + version, from_package)
    from_data = mloop("lineage", "dataset/iris", "-n", namespace, kubeconfig=kubeconfig).stdout
    downstream = from_data.split("downstream:")[1]
    assert "-> trainingrun/iris-lr" in downstream and "-> modelpackage/iris-1" in downstream
    assert "-> dataset/setosa@" in downstream  # the derived dataset is downstream of its parent version

    dot = mloop("lineage", "tr/iris-lr", "-n", namespace, "-o", "dot", kubeconfig=kubeconfig).stdout
    assert dot.startswith("digraph lineage {")
    assert f'"dataset/iris@{version}" -> "trainingrun/iris-lr" [label="trained on"' in dot
    for fmt, magic in (("svg", b"<svg"), ("png", b"\x89PNG")):
        out = tmp_path / f"lineage.{fmt}"
        result = mloop("lineage", "tr/iris-lr", "-n", namespace, "-o", fmt, "--file", str(out), kubeconfig=kubeconfig)
        assert result.returncode == 0, result.stderr
        assert magic in out.read_bytes()[:400]
    missing = mloop("lineage", "tr/nope", "-n", namespace, kubeconfig=kubeconfig)
    assert missing.returncode == 1 and "trainingrun/nope not found" in missing.stderr
