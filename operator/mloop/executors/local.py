"""The local executor: each task a subprocess on the operator's host, for a laptop with no kubelet.

A small supervisor (`python -m mloop.executors.localrun`) claims the task by recording its own pid, runs the
command and writes its exit code to a file, so an operator restarted mid-task still learns how the task ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mloop.config import Settings, get_settings
from mloop.api.tasks import TASK_SPEC_ENV
from mloop.executors.base import Task, TaskState
from mloop.procs import alive, wait_gone

CLAIM_TIMEOUT = 60.0  # a supervisor is a fresh Python process; on a loaded laptop it may take seconds to start


def task_env(settings: Settings) -> dict[str, str]:
    """The environment of local tasks and local model servers: the operator's, with its storage settings."""
    s = settings
    env = {**os.environ, "MLOOP_BUCKET": s.bucket, "MLOOP_S3_REGION": s.s3_region, "MLOOP_EXECUTOR": "local"}
    if s.s3_endpoint:
        env["MLOOP_S3_ENDPOINT"] = s.s3_endpoint
    if s.s3_access_key and s.s3_secret_key:
        env["MLOOP_S3_ACCESS_KEY"] = s.s3_access_key.get_secret_value()
        env["MLOOP_S3_SECRET_KEY"] = s.s3_secret_key.get_secret_value()
    return env


class LocalExecutor:
    name = "local"

    def __init__(self, settings: Settings | None = None, directory: Path | None = None):
        self.settings = settings or get_settings()
        self.dir = directory or self.settings.local_path
        self.dir.mkdir(parents=True, exist_ok=True)

    def _paths(self, task: Task) -> tuple[Path, Path, Path]:
        return self._files(task.namespace, task.name)

    def _files(self, namespace: str, name: str) -> tuple[Path, Path, Path]:
        stem = f"{namespace}.{name}"
        return self.dir / f"{stem}.json", self.dir / f"{stem}.exit", self.dir / f"{stem}.log"

    def command(self, task: Task) -> list[str]:
        # The image's `python` is this interpreter on a laptop.
        return [sys.executable if part == "python" else part for part in task.command]

    def submit(self, task: Task) -> None:
        """Start a supervisor and wait until a supervisor has claimed the task.

        The supervisor writes the record itself, atomically and only if none exists, so no moment leaves a
        claimed task without a pid: an operator killed anywhere in here leaves either nothing (the task is
        `Missing` and submitted again) or a recorded, running task. Racing submits start one run.
        """
        record, exit_file, log_file = self._paths(task)
        if record.exists() or exit_file.exists():
            return
        proc = self._spawn(task)
        deadline = time.monotonic() + CLAIM_TIMEOUT
        while not record.exists():
            code = proc.poll()
            if code is not None and not record.exists():
                raise RuntimeError(f"the supervisor of local task {task.name} exited with code {code} before "
                                   f"claiming it: {_tail(log_file)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the supervisor of local task {task.name} did not claim it in {CLAIM_TIMEOUT:.0f}s")
            time.sleep(0.01)
        if json.loads(record.read_text())["pid"] != proc.pid:
            proc.wait()  # another submit won; this supervisor exits without running anything

    def _spawn(self, task: Task) -> subprocess.Popen[bytes]:
        record, exit_file, log_file = self._paths(task)
        env = task_env(self.settings)
        if task.spec:
            env[TASK_SPEC_ENV] = task.spec
        argv = [sys.executable, "-m", "mloop.executors.localrun", str(record), str(exit_file),
                str(task.deadline_seconds), str(task.completions or 1), str(task.parallelism),
                "--", *self.command(task)]
        with open(log_file, "ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)

    def state(self, task: Task, seen: TaskState | None = None) -> TaskState:
        """From the task's files; seen is unused (nothing watches a process)."""
        record, exit_file, log_file = self._paths(task)
        if exit_file.exists():
            text = exit_file.read_text().strip()
            code = int(text) if text.lstrip("-").isdigit() else -1
            if code == 0:
                return TaskState("Succeeded", "Completed", exit_code=0)
            if code == -int(signal.SIGKILL) and "DeadlineExceeded" in _tail(log_file):
                return TaskState("Failed", "DeadlineExceeded", "the task ran past its deadline", code)
            return TaskState("Failed", "Error", f"the task exited with code {code}: {_tail(log_file)}", code)
        if not record.exists():
            return TaskState("Missing")
        info = json.loads(record.read_text())
        pid = info["pid"]
        if alive(pid):
            if time.time() - info["started"] > info["deadline"]:
                with open(log_file, "a") as log:
                    log.write("DeadlineExceeded: stopping the task\n")
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                exit_file.write_text(str(-int(signal.SIGKILL)))
                return TaskState("Failed", "DeadlineExceeded", "the task ran past its deadline")
            return TaskState("Running")
        # Reap our own child if it was ours; its supervisor writes the exit file just before exiting.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if exit_file.exists():
            return self.state(task)
        return TaskState("Failed", "ProcessLost", "the task's process ended without recording an exit code")

    def log(self, task: Task) -> str:
        return _tail(self._paths(task)[2], lines=2000)

    def stop(self, namespace: str, name: str) -> bool:
        """End one task that still runs (its owner was deleted, as the garbage collector ends an owned Job's pods);
        its exit file then records the kill. True when it was running."""
        record, exit_file, _ = self._files(namespace, name)
        pid = _kill(record)
        if pid is None:
            return False
        wait_gone(pid, 5, poll=0.01)  # SIGKILL is delivered, not yet done, when killpg returns
        if not exit_file.exists():
            exit_file.write_text(str(-int(signal.SIGKILL)))
        return True

    def stop_all(self) -> int:
        """End every task of this folder that still runs (its whole process group); returns how many."""
        return sum(_kill(record) is not None for record in self.dir.glob("*.json"))


def _kill(record: Path) -> int | None:
    """SIGKILL the process group of the supervisor a task record names, if it runs: its pid, else None."""
    try:
        pid = int(json.loads(record.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not alive(pid):
        return None
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pid


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
