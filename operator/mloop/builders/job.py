"""A task as a batch/v1 Job: deterministic name, owner reference, restricted pod, S3 keys from a Secret."""

from __future__ import annotations

from typing import Any

from mloop.builders.security import container_security_context, pod_security_context
from mloop.config import Settings
from mloop.constants import LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, MANAGER
from mloop.api.tasks import TASK_SPEC_ENV, Task


def task_labels(task: Task) -> dict[str, str]:
    owner_kind = str(task.owner["kind"]).lower()
    return {
        LABEL_NAME: "mloop",
        LABEL_INSTANCE: task.name,
        LABEL_COMPONENT: task.kind,
        LABEL_PART_OF: "mloop",
        LABEL_MANAGED_BY: MANAGER,
        f"mloop.dev/{owner_kind}": str(task.owner["name"]),
        "mloop.dev/task": task.name,
        **task.labels,
    }


def task_env(settings: Settings) -> list[dict[str, Any]]:
    """Plain settings as values; credentials only as references to the Secret, never as values."""
    env: list[dict[str, Any]] = [
        {"name": "MLOOP_BUCKET", "value": settings.bucket},
        {"name": "MLOOP_S3_REGION", "value": settings.s3_region},
        {"name": "HOME", "value": "/tmp"},
    ]
    if settings.s3_endpoint:
        env.append({"name": "MLOOP_S3_ENDPOINT", "value": settings.s3_endpoint})
    for var, key in (("MLOOP_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"), ("MLOOP_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")):
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": settings.s3_secret_name, "key": key}}})
    return env


def build_job(task: Task, settings: Settings) -> dict[str, Any]:
    labels = task_labels(task)
    container: dict[str, Any] = {
        "name": task.kind,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(task.command),
        # The task sizes its batches from its own memory limit (data/pipeline.py), not from the data.
        "env": [*task_env(settings), {"name": "MLOOP_MEMORY_LIMIT",
                                      "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                *([{"name": TASK_SPEC_ENV, "value": task.spec}] if task.spec else [])],
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if task.resources:
        container["resources"] = task.resources
    spec: dict[str, Any] = {
        "backoffLimit": task.backoff_limit,
        "activeDeadlineSeconds": task.deadline_seconds,
        "ttlSecondsAfterFinished": settings.task_ttl_seconds,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security_context(),
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    }
    if task.completions:
        spec.update(completionMode="Indexed", completions=task.completions, parallelism=task.parallelism,
                    backoffLimitPerIndex=task.backoff_limit)
        spec.pop("backoffLimit")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": task.name,
            "namespace": task.namespace,
            "labels": labels,
            "ownerReferences": [{**task.owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": spec,
    }
