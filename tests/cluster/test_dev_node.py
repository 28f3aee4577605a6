"""`mloop dev up --node` and `mloop dev down`: the node starts, and down leaves nothing of it behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mloop.localcluster.images import PAUSE_IMAGE
from mloop.localcluster.node import BRIDGE, SERVICE_CIDR, preflight, NodeUnavailable

MLOOP = [sys.executable, "-m", "mloop.cli.main"]


def _mloop(*args: str, env: dict[str, str], user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*MLOOP, *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=600, check=False)


def _leftovers(directory: Path) -> dict[str, object]:
    """Everything of a node that outlives it when clean-up is wrong."""
    procs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(directory) in cmdline:
                procs.append(cmdline[:120])
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(str(directory))]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    bridge = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, text=True, check=False)
    return {
        "processes": procs,
        "mounts": mounts,
        "kube chains": [line for line in rules.splitlines() if "KUBE-" in line][:5],
        "bridge rules": [line for line in rules.splitlines() if BRIDGE in line],
        "service route": SERVICE_CIDR in routes,
        "bridge": bridge.returncode == 0,
        "veths": "veth" in subprocess.run(["ip", "link"], capture_output=True, text=True, check=True).stdout,
    }


@pytest.fixture
def node_folder() -> Iterator[Path]:
    """A short folder for a node's stacks, where the node can run. Not pytest's tmp_path: under xdist
    (popen-gw0/) it left containerd's socket path over its 104 characters."""
    try:
        preflight()
    except NodeUnavailable as exc:
        pytest.skip(f"real-node suite: {exc}")
    folder = Path(tempfile.mkdtemp(prefix="mloop-node-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_dev_up_node_runs_a_pod_and_down_removes_everything(node_folder: Path) -> None:
    env = {"MLOOP_DEV_DIR": str(node_folder / "dev")}
    up = _mloop("dev", "up", "--node", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "with a node" in up.stderr
        state = json.loads((node_folder / "dev" / "state.json").read_text())
        kubectl = [str(Path(sys.executable).with_name("kubectl")), "--kubeconfig", state["kubeconfig"]]
        # A pod left running when the stack goes down: down must end it, its network and its mounts.
        subprocess.run([*kubectl, "run", "left-running", f"--image={PAUSE_IMAGE}", "--image-pull-policy=IfNotPresent"],
                       check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Ready", "pod/left-running", "--timeout=120s"],
                       check=True, capture_output=True)
        assert _leftovers(node_folder)["veths"]
        # Its CLI has exited, but a `dev up` stack is meant to outlive it: the next start must not reap it.
        with pytest.raises(NodeUnavailable, match="already running"):
            preflight()
    finally:
        down = _mloop("dev", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert _leftovers(node_folder) == {"processes": [], "mounts": [], "kube chains": [], "bridge rules": [],
                                       "service route": False, "bridge": False, "veths": False}


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to become another user")
def test_node_without_root_says_so_and_starts_nothing() -> None:
    home = Path(tempfile.mkdtemp(prefix="mloop-nonroot-"))  # pytest's tmp_path is closed to other users
    try:
        home.chmod(0o777)
        up = _mloop("dev", "up", "--node", env={"MLOOP_DEV_DIR": str(home / "dev"), "HOME": str(home)}, user="65534")
        assert up.returncode == 2, up.stderr
        assert "needs: root" in up.stderr
        assert "without --node still starts the rest" in up.stderr
        assert not (home / "dev" / "state.json").exists()
    finally:
        shutil.rmtree(home, ignore_errors=True)


# A test run killed with SIGKILL: its node stack (own sessions) keeps running with a pod on it, and holds the bridge
# and 127.0.0.1:10250.
KILLED_RUN = """
import os, signal, subprocess, sys
from pathlib import Path
from mloop.localcluster import LocalStack
info = LocalStack(Path(sys.argv[1]), node=True).start()
kubectl = [str(Path(sys.executable).with_name("kubectl")), "--kubeconfig", info.kubeconfig]
subprocess.run([*kubectl, "run", "left", "--image=" + sys.argv[2], "--image-pull-policy=IfNotPresent"], check=True)
subprocess.run([*kubectl, "wait", "--for=condition=Ready", "pod/left", "--timeout=120s"], check=True)
print("up", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_next_start_reaps_a_killed_runs_node_and_only_it(node_folder: Path) -> None:
    from mloop.localcluster import LocalStack

    dead = node_folder / "dead"
    dead.mkdir()
    run = subprocess.run([sys.executable, "-c", KILLED_RUN, str(dead), PAUSE_IMAGE], capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == -9 and "up" in run.stdout, run.stderr[-2000:]
    left = _leftovers(node_folder)
    assert left["bridge"] and left["veths"] and any("kubelet" in p for p in left["processes"]), left
    # Not ours though it names the dead stack's folder: a reaper must leave it running.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(dead / "kubeconfig")])
    live = LocalStack(node_folder / "next", node=True)
    try:
        live.start()  # reaps the dead node first: otherwise "127.0.0.1:10250: address already in use"
        assert not [p for p in _leftovers(dead)["processes"] if "time.sleep" not in p], _leftovers(dead)
        assert _leftovers(dead)["mounts"] == []
        assert bystander.poll() is None
        # A live stack's node is never reaped: this process holds it.
        with pytest.raises(NodeUnavailable, match="already running"):
            preflight()
    finally:
        live.stop()
        bystander.kill()
        bystander.wait()
    assert _leftovers(node_folder) == {"processes": [], "mounts": [], "kube chains": [], "bridge rules": [],
                                       "service route": False, "bridge": False, "veths": False}
