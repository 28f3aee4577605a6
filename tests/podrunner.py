"""The kubelet's part, for a control plane without nodes: run each pod's own container command locally.

The real Job controller creates the pods; this runner resolves each pod's environment
(values, Secret and ConfigMap keys, field references) the way the kubelet would, runs the
first container's command with it, and records the outcome in the pod's status. The
controller then finishes the Job by its own rules (backoff, deadlines, indexes).

With an `engine` (e.g. ["podman"]) the command runs in the pod's own image instead, with the
pod's security context (user, read-only root, dropped capabilities, no privilege escalation)
and its emptyDir mounts as tmpfs, on the host network.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

FIELD = re.compile(r"^metadata\.(annotations|labels)\['(.+)'\]$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodRunner:
    def __init__(self, api_client: Any, namespace: str, timeout: float = 600, engine: list[str] | None = None,
                 run_flags: list[str] | None = None):
        self.engine, self.run_flags = engine, run_flags or []
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.timeout = timeout
        self.seen: set[str] = set()
        self.outputs: dict[str, str] = {}
        self.commands: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> PodRunner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for worker in self._workers:
            worker.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.core.list_namespaced_pod(self.namespace).items
            except ApiException:
                pods = []
            for pod in pods:
                if pod.metadata.uid in self.seen or pod.status.phase not in (None, "Pending"):
                    continue
                if pod.metadata.deletion_timestamp is not None:
                    continue
                self.seen.add(pod.metadata.uid)
                worker = threading.Thread(target=self._run, args=(pod,), daemon=True)
                self._workers.append(worker)
                worker.start()
            time.sleep(0.2)

    def _value(self, pod: Any, var: Any) -> str | None:
        if var.value is not None:
            return var.value
        source = var.value_from
        if source is None:
            return None
        if source.secret_key_ref is not None:
            ref = source.secret_key_ref
            secret = self.core.read_namespaced_secret(ref.name, self.namespace)
            return base64.b64decode(secret.data[ref.key]).decode()
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            return self.core.read_namespaced_config_map(ref.name, self.namespace).data[ref.key]
        if source.field_ref is not None:
            path = source.field_ref.field_path
            if path == "metadata.name":
                return pod.metadata.name
            if path == "metadata.namespace":
                return pod.metadata.namespace
            match = FIELD.match(path)
            if match:
                values = getattr(pod.metadata, match.group(1)) or {}
                return values.get(match.group(2))
        return None

    def _run(self, pod: Any) -> None:
        container = pod.spec.containers[0]
        env = {} if self.engine else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for var in container.env or []:
            value = self._value(pod, var)
            if value is not None:
                env[var.name] = value
        started = _now()
        with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:  # secrets stay off the command line
            if self.engine:
                env_file.write("".join(f"{k}={v}\n" for k, v in env.items()))
                env_file.flush()
                command = self._in_image(pod, container, env_file.name)
            else:
                # The image's `python` is the interpreter running the tests.
                command = [sys.executable if part == "python" else part
                           for part in [*(container.command or []), *(container.args or [])]]
            self.commands[pod.metadata.name] = command
            try:
                proc = subprocess.run(command, env=None if self.engine else env, capture_output=True, text=True,
                                      timeout=self.timeout)
                code, output = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as err:
                code, output = 137, f"timed out: {err}"
        self.outputs[pod.metadata.name] = output
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "startTime": started,
            "containerStatuses": [{
                "name": container.name, "image": container.image, "imageID": "", "ready": False, "restartCount": 0,
                "started": False,
                "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                         "startedAt": started, "finishedAt": _now()}},
            }],
        }
        try:
            self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": status})
        except ApiException as err:
            self.outputs[pod.metadata.name] += f"\npatching status failed: {err.status} {err.reason}"

    def _in_image(self, pod: Any, container: Any, env_file: str) -> list[str]:
        assert self.engine is not None
        pod_sc, sc = pod.spec.security_context, container.security_context
        user = (sc and sc.run_as_user) or (pod_sc and pod_sc.run_as_user)
        group = (sc and sc.run_as_group) or (pod_sc and pod_sc.run_as_group) or user
        argv = [*self.engine, "run", "--rm", "--network", "host", "--env-file", env_file, *self.run_flags]
        if user is not None:
            argv += ["--user", f"{user}:{group}"]
        if sc and sc.read_only_root_filesystem:
            argv.append("--read-only")
        if sc and sc.capabilities and "ALL" in (sc.capabilities.drop or []):
            argv += ["--cap-drop", "ALL"]
        if sc and sc.allow_privilege_escalation is False:
            argv += ["--security-opt", "no-new-privileges"]
        scratch = {v.name for v in pod.spec.volumes or [] if v.empty_dir is not None}
        for mount in container.volume_mounts or []:
            if mount.name in scratch:
                argv += ["--tmpfs", f"{mount.mount_path}:rw,mode=1777"]
        return [*argv, container.image, *(container.command or []), *(container.args or [])]
