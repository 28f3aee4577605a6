"""`mloop dev up|down|env`: the local control plane and S3 server for a person at a terminal."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from mloop.config import dev_dir as state_dir, stack_local_dir
from mloop.localcluster.stack import LocalStack, StackInfo, stop_processes
from mloop.procs import alive

console = Console(stderr=True)


def running_stack() -> StackInfo | None:
    path = state_dir() / "state.json"
    if not path.exists():
        return None
    info = StackInfo.load(path)
    return info if all(alive(pid) for name, pid in info.pids.items() if name != "operator") else None


def stack_env(info: StackInfo) -> dict[str, str]:
    """The stack's settings, with a local-task and model-server folder of its own inside the stack's folder."""
    return {**info.env(), "MLOOP_LOCAL_DIR": str(stack_local_dir(Path(info.directory)))}


def up(with_operator: bool = False, node: bool = False) -> int:
    from mloop.localcluster.node import NodeUnavailable

    try:
        info = ensure_stack(with_operator, node)
    except NodeUnavailable as exc:
        console.print(f"[red]No node:[/] {exc}\n`mloop dev up` without --node still starts the rest of the test bed.")
        return 2
    print_env(info)
    return 0


def ensure_stack(with_operator: bool = False, node: bool = False) -> StackInfo:
    """The running dev stack, started (with the CRDs installed) if there is none."""
    info = running_stack()
    if info is not None and node and not info.node:
        from mloop.localcluster.node import NodeUnavailable

        raise NodeUnavailable("the running local stack has no node; `mloop dev down`, then `mloop dev up --node`")
    if info is None:
        directory = state_dir()
        if directory.exists():
            down(quiet=True)
        from mloop.localcluster.binaries import find_binaries
        from mloop.k8s.crds import install_crds

        if node:  # what is missing, before anything is built or started
            from mloop.localcluster.node import preflight

            preflight(directory)

        with console.status("Building or finding the control-plane binaries…"):
            binaries = find_binaries()
        started = time.monotonic()
        what = " and a node (containerd, kubelet, kube-proxy, scheduler)" if node else ""
        with console.status(f"Starting etcd, kube-apiserver, kube-controller-manager and the S3 server{what}…"):
            stack = LocalStack(directory, binaries, node=node, detached=True)
            info = stack.start()
            install_crds(info.kubeconfig)
        console.print(f"[green]Local stack up[/]{' with a node' if node else ''} in "
                      f"{time.monotonic() - started:.1f}s; CRDs installed.")
    else:
        console.print("Local stack already running.")
    if with_operator and not alive(info.pids.get("operator", 0) or 0):
        info.pids["operator"] = start_operator(info)
        info.save(state_dir() / "state.json")
        console.print(f"Operator started (pid {info.pids['operator']}), log: {state_dir() / 'logs' / 'operator.log'}")
    return info


def start_operator(info: StackInfo) -> int:
    log = open(state_dir() / "logs" / "operator.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, **stack_env(info), "MLOOP_EXECUTOR": "local",
           "MLOOP_LIVENESS_PORT": os.environ.get("MLOOP_LIVENESS_PORT", "0"),
           "MLOOP_POLL_INTERVAL": os.environ.get("MLOOP_POLL_INTERVAL", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "mloop"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    log.close()
    return proc.pid


def down(quiet: bool = False) -> int:
    directory = state_dir()
    path = directory / "state.json"
    was_running = path.exists()
    if was_running:
        info = StackInfo.load(path)
        if info.node:  # the node's pods first, while the API server and kubelet still run
            from mloop.localcluster import node as localnode

            localnode.drain(Path(info.kubeconfig))
        stop_processes(info.pids)
        stop_model_servers(stack_local_dir(directory))
        stop_local_tasks(stack_local_dir(directory))
        if info.node:
            localnode.teardown(directory, Path(info.node))
    shutil.rmtree(directory, ignore_errors=True)
    if not quiet:
        console.print("Local stack stopped." if was_running else "No local stack was running.")
    return 0


def stop_local_tasks(directory: Path) -> None:
    """Tasks the local executor started run in sessions of their own, like pods: `dev down` ends this stack's."""
    from mloop.executors.local import LocalExecutor

    if directory.is_dir():
        LocalExecutor(directory=directory).stop_all()


def stop_model_servers(directory: Path) -> None:
    """Model servers the local executor started outlive the operator by design; `dev down` ends this stack's."""
    from mloop.serving.local import LocalServers

    servers = LocalServers(local_dir=directory)
    for state in servers.dir.glob("*.json"):
        namespace, model, stage = state.name.removesuffix(".json").split(".", 2)
        servers.stop(namespace, model, stage)


def print_env(info: StackInfo | None = None) -> int:
    info = info or running_stack()
    if info is None:
        console.print("[red]No local stack is running[/]: start one with `mloop dev up`.")
        return 1
    for key, value in stack_env(info).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0
