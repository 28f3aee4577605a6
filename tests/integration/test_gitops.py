"""GitOps health: apply a whole example server-side, change it, re-apply; every object converges to Ready."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PLURALS = {"Requirement": "requirements", "Dataset": "datasets", "TrainingRun": "trainingruns",
           "ModelPackage": "modelpackages"}


def converged(kubectl, namespace: str, docs: list[dict]) -> bool:
    for d in docs:
        out = kubectl("get", PLURALS[d["kind"]], d["metadata"]["name"], "-n", namespace, "-o", "yaml").stdout
        obj = yaml.safe_load(out) if out else None
        if not obj:
            return False
        ready = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})
        if ready.get("status") != "True" or obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
            return False
    return True


def test_apply_change_reapply_converges(kubectl, namespace, operator) -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples/diabetes/diabetes.yaml").read_text()) if d]
    apply = lambda: kubectl("apply", "--server-side", "--field-manager=gitops", "-n", namespace, "-f", "-",  # noqa: E731
                            input=yaml.safe_dump_all(docs))
    assert apply().returncode == 0
    wait_for(lambda: converged(kubectl, namespace, docs), timeout=180)
    for kind in PLURALS:
        name = next(d["metadata"]["name"] for d in docs if d["kind"] == kind)
        waited = kubectl("wait", f"--for=condition=Ready", f"{PLURALS[kind]}/{name}", "-n", namespace, "--timeout=5s")
        assert waited.returncode == 0, waited.stderr
    for d in docs:  # a change to every mutable object (a TrainingRun's spec is immutable by design)
        if d["kind"] == "Requirement":
            d["spec"]["title"] = "Predict disease progression, reviewed"
        elif d["kind"] == "Dataset":
            d["spec"]["governance"]["owner"] = "clinic-data"
        elif d["kind"] == "ModelPackage":
            d["spec"]["stage"] = "None"
    assert apply().returncode == 0
    wait_for(lambda: converged(kubectl, namespace, docs), timeout=120)
    generations = yaml.safe_load(kubectl("get", "requirements,datasets,modelpackages", "-n", namespace, "-o", "yaml").stdout)
    assert all(item["metadata"]["generation"] == 2 == item["status"]["observedGeneration"] for item in generations["items"])
