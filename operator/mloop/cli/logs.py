"""`mloop logs <run>`: a TrainingRun's task log, from S3 (finished) or the local executor (running)."""

from __future__ import annotations

import sys


def logs(name: str, namespace: str) -> int:
    from mloop.config import get_settings
    from mloop.executors.local import LocalExecutor
    from mloop.k8s.client import get_object
    from mloop.storage.artifacts import Store
    from mloop.storage.layout import run_prefix

    run = get_object("trainingruns", namespace, name)
    if run is None:
        print(f"no TrainingRun {name} in {namespace}", file=sys.stderr)
        return 1
    prefix = run_prefix(namespace, name, run["metadata"]["uid"])
    store = Store.from_settings()
    text = None
    if store.exists(prefix + "log.txt"):
        text = store.get(prefix + "log.txt").decode(errors="replace")
    else:
        task = (run.get("status") or {}).get("task")
        if task and (run["spec"].get("executor") or get_settings().executor) == "local":
            from mloop.executors.base import Task

            text = LocalExecutor().log(Task(name=task, namespace=namespace, kind="train", command=[], prefix=prefix,
                                            owner={}))
        elif task:
            from kubernetes import client

            from mloop.k8s.client import api_client

            core = client.CoreV1Api(api_client())
            pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={task}").items
            text = "".join(core.read_namespaced_pod_log(p.metadata.name, namespace) for p in pods) if pods else None
    if not text:
        print(f"TrainingRun {name} has no log yet", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0
