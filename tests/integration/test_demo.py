"""The demo's scripted loop, headless, on a stack of its own: the summary's facts hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from mloop.k8s.kubectl import kubectl


def test_demo_runs_the_whole_loop(tmp_path: Path, stack) -> None:
    env = {**os.environ, "MLOOP_DEV_DIR": str(tmp_path / "dev"), "MLOOP_LOCAL_DIR": str(tmp_path / "tasks")}
    mloop = [sys.executable, "-m", "mloop.cli.main"]
    lineage = tmp_path / "lineage.svg"
    try:
        result = subprocess.run([*mloop, "demo", "-o", "json", "--lineage-file", str(lineage), "--timeout", "600"],
                                env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout)
        versions = [v for d in summary["datasets"] for v in d["versions"]]
        assert len(versions) >= 3 and {d["name"] for d in summary["datasets"]} == {"iris", "iris-feedback", "iris-all"}
        retrains = summary["requirements"][0]["retrains"]
        assert retrains and retrains[0]["run"] in {r["name"] for r in summary["runs"]}
        assert {r["name"]: r["phase"] for r in summary["runs"]}[retrains[0]["run"]] == "Succeeded"
        # The retrain run trained on original + fed-back rows: the iris-all version made from both parents.
        datasets = {d["name"]: d for d in summary["datasets"]}
        rows = {(d["name"], v["version"]): v["rows"] for d in summary["datasets"] for v in d["versions"]}
        trained_on = {r["name"]: r["dataset"] for r in summary["runs"]}[retrains[0]["run"]]
        assert trained_on == retrains[0]["trainedOn"] and trained_on.startswith("iris-all@")
        fed_back = rows[("iris-feedback", retrains[0]["datasetVersion"])]
        original = datasets["iris"]["versions"][-1]
        assert fed_back >= 50 and rows[tuple(trained_on.split("@"))] == original["rows"] + fed_back == 150 + fed_back
        if datasets["iris-all"]["versions"][-1]["version"] == trained_on.split("@")[1]:
            assert set(datasets["iris-all"]["parents"]) == {f"iris@{original['version']}",
                                                            f"iris-feedback@{retrains[0]['datasetVersion']}"}
        assert [p["stage"] for p in summary["packages"]].count("Production") == 1
        # The retrained package shadowed Production on more live traffic; the gate judged it on those rows.
        retrained = next(p for p in summary["packages"] if p["name"] == retrains[0]["package"])
        shadow, live = retrained["shadow"], retrained["live"]
        assert shadow["production"] == "iris-rf-1" and shadow["rows"] >= 30, shadow
        gain = shadow["candidateValue"] - shadow["productionValue"]
        assert live["passed"] is (gain >= 0.02 and gain > 0), (live, shadow)  # margin 0.02 in examples/iris
        if live["passed"] is False:  # refused, and the refusal names the live comparison
            assert retrained["stage"] != "Production" and "live:accuracy" in retrained["promoted"]
            assert f"on {shadow['rows']} live rows" in live["message"]
        else:  # promoted: the package it replaced says who holds Production now, not that it lost a comparison
            replaced = next(p for p in summary["packages"] if p["name"] == "iris-rf-1")
            assert replaced["stage"] == "Archived", replaced
            assert retrained["name"] in replaced["promoted"] and "refused" not in replaced["promoted"], replaced
            # Each transition of the replaced package is announced once, though its successor archives it too and
            # its server takes seconds to flush and exit.
            events = kubectl("get", "events", "-n", summary["namespace"], "--field-selector",
                             "involvedObject.name=iris-rf-1", "-o", "jsonpath={.items[*].reason}",
                             kubeconfig=str(tmp_path / "dev" / "kubeconfig"), check=True).stdout.split()
            assert events.count("Archived") == 1 and events.count("PromotionRefused") == 0, events
            assert events.count("ServerStopped") <= 1, events
        assert "✓ Promotion gate judged the live comparison" in result.stderr
        with urllib.request.urlopen(f"{summary['endpoint']}/v2/health/ready", timeout=5) as resp:
            assert resp.status == 200
        assert lineage.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
        assert "✓ Dataset iris-all: the original rows plus the fed-back ones" in result.stderr
        assert "✓ Retrain policy fired" in result.stderr
    finally:
        subprocess.run([*mloop, "dev", "down"], env=env, capture_output=True, timeout=120)
