"""Model servers as local processes, for the local executor: one per (namespace, model, stage).

Each keeps its loopback port across versions, so the endpoint stays the same when a newer package
takes the stage. State files let a restarted operator adopt servers it started before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mloop.config import Settings, get_settings
from mloop.executors.local import task_env
from mloop.procs import alive, free_port, wait_gone


class LocalServers:
    def __init__(self, settings: Settings | None = None, local_dir: Path | None = None):
        """Servers recorded under `local_dir` (default: the settings' local folder, one per dev stack)."""
        self.settings = settings or get_settings()
        self.dir = (local_dir or self.settings.local_path) / "servers"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _state_path(self, namespace: str, model: str, stage: str) -> Path:
        return self.dir / f"{namespace}.{model}.{stage.lower()}.json"

    def state(self, namespace: str, model: str, stage: str) -> dict | None:
        path = self._state_path(namespace, model, stage)
        return json.loads(path.read_text()) if path.exists() else None

    def ensure(self, namespace: str, model: str, stage: str, uri: str, digest: str, sampling: float,
               runtime: str = "auto", shadows: list[dict] | None = None, version: int = 0) -> tuple[str, str]:
        """(endpoint, what happened): started, restarted, rolled, retargeted (new shadow targets), running, or
        superseded (a newer version of the model serves this stage: never rolled back to an older one, as
        promotion never gives an older version the stage a newer one holds).

        `shadows`: candidates this server also sends sampled requests to. They live in a file the server re-reads
        on SIGHUP, so a new target costs no restart."""
        path = self._state_path(namespace, model, stage)
        state = self.state(namespace, model, stage)
        shadows = shadows or []
        # Checked again here, under the caller's lock: decide() read the state file before this pass acted on it.
        if state and version and state.get("version", 0) > version and alive(state["pid"]):
            return f"http://127.0.0.1:{state['port']}", "superseded"
        shadow_file = path.with_name(path.name.removesuffix(".json") + ".shadows")  # not *.json: that is a state file
        if state and alive(state["pid"]) and state["digest"] == digest and state.get("runtime", "auto") == runtime:
            if state.get("shadows", []) == shadows:
                return f"http://127.0.0.1:{state['port']}", "running"
            if state.get("shadowFile"):
                self._write(shadow_file, shadows)
                self._write(path, {**state, "shadows": shadows})
                os.killpg(state["pid"], signal.SIGHUP)
                return f"http://127.0.0.1:{state['port']}", "retargeted"
        what = "started"
        if state and alive(state["pid"]):
            self._terminate(state["pid"])
            what = "rolled"
        elif state:
            what = "restarted"
        port = state["port"] if state else None
        for pid, stray_port in self._strays(shadow_file):  # a pass killed between starting a server and its state
            self._terminate(pid)
            port, what = port or stray_port, "restarted"
        port = port or free_port()
        log = open(self.dir / f"{namespace}.{model}.{stage.lower()}.log", "ab")  # noqa: SIM115 - handed to the child
        argv = [sys.executable, "-m", "mloop.serving.server", "--package", uri, "--digest", digest, "--port", str(port),
                "--stage", stage, "--sampling-rate", str(sampling), "--flush-seconds", "2", "--runtime", runtime,
                "--shadow-file", str(shadow_file)]
        self._write(shadow_file, shadows)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=task_env(self.settings), start_new_session=True)
        log.close()
        self._write(path, {"pid": proc.pid, "port": port, "digest": digest, "runtime": runtime, "started": time.time(),
                           "shadows": shadows, "shadowFile": str(shadow_file), "version": version})
        return f"http://127.0.0.1:{port}", what

    @staticmethod
    def _strays(shadow_file: Path) -> list[tuple[int, int]]:
        """(pid, port) of live servers for this slot, found by their command line (its --shadow-file is the slot's):
        a supervisor leads its own session, and its forked workers end with it."""
        marker = b"\0--shadow-file\0" + os.fsencode(shadow_file) + b"\0"
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes()
                pid = int(entry.name)
                if marker in b"\0" + argv and os.getsid(pid) == pid and alive(pid):
                    args = argv.split(b"\0")
                    found.append((pid, int(args[args.index(b"--port") + 1])))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours
        return found

    @staticmethod
    def _write(path: Path, value: object) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)

    def stop(self, namespace: str, model: str, stage: str, digest: str | None = None) -> bool:
        """Stop the server for the stage, only if it serves `digest` (when given). True when one was stopped."""
        path = self._state_path(namespace, model, stage)
        state = self.state(namespace, model, stage)
        if state is None or (digest is not None and state["digest"] != digest):
            return False
        if alive(state["pid"]):
            self._terminate(state["pid"])
        path.unlink(missing_ok=True)
        if state.get("shadowFile"):
            Path(state["shadowFile"]).unlink(missing_ok=True)
        return True

    @staticmethod
    def _terminate(pid: int, timeout: float = 25.0) -> None:
        """SIGTERM lets the server flush its collection buffer before it exits."""
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not wait_gone(pid, timeout, poll=0.1):
            os.killpg(pid, signal.SIGKILL)


def served_runtime(endpoint: str, model: str) -> tuple[str, str] | None:
    """(runtime, why) as the server's model metadata reports it; None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{endpoint}/v2/models/{model}", timeout=1) as resp:  # noqa: S310 - loopback
            parameters = json.loads(resp.read()).get("parameters") or {}
    except (OSError, ValueError):
        return None
    return (parameters["runtime"], parameters.get("runtime_reason", "")) if parameters.get("runtime") else None


def ready(endpoint: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/v2/health/ready", timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status == 200
    except OSError:
        return False
