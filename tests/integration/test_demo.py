"""The demo's scripted loop, headless, on a stack of its own: the summary's facts hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path


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
        assert len(versions) >= 2 and {d["name"] for d in summary["datasets"]} == {"iris", "iris-feedback"}
        retrains = summary["requirements"][0]["retrains"]
        assert retrains and retrains[0]["run"] in {r["name"] for r in summary["runs"]}
        assert {r["name"]: r["phase"] for r in summary["runs"]}[retrains[0]["run"]] == "Succeeded"
        assert [p["stage"] for p in summary["packages"]].count("Production") == 1
        with urllib.request.urlopen(f"{summary['endpoint']}/v2/health/ready", timeout=5) as resp:
            assert resp.status == 200
        assert lineage.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
        assert "✓ Retrain policy fired" in result.stderr
    finally:
        subprocess.run([*mloop, "dev", "down"], env=env, capture_output=True, timeout=120)
