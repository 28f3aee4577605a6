"""A served package as a Deployment and a Service, named after model and stage so the endpoint is stable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from mloop.builders.job import task_env
from mloop.builders.security import container_security_context, pod_security_context
from mloop.config import Settings
from mloop.constants import LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, MANAGER

PORT = 8000
APPLIED = "mloop.dev/applied"  # annotation: fingerprint of the manifest the operator last applied


def server_name(model: str, stage: str) -> str:
    return f"{model}-{stage.lower()}"[:63]


def server_labels(model: str, stage: str) -> dict[str, str]:
    return {LABEL_NAME: "mloop", LABEL_INSTANCE: server_name(model, stage), LABEL_COMPONENT: "model-server",
            LABEL_PART_OF: "mloop", LABEL_MANAGED_BY: MANAGER, "mloop.dev/model": model, "mloop.dev/stage": stage.lower()}


def owner_reference(owner: Mapping[str, str]) -> dict[str, Any]:
    """The package owns its server: deleting the package deletes the Deployment and Service (garbage collector)."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["name"], "uid": owner["uid"],
            "controller": True}


def fingerprinted(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with a fingerprint of itself in an annotation: a live object with another one is out of date."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    meta = manifest["metadata"]
    return {**manifest, "metadata": {**meta, "annotations": {**meta.get("annotations", {}), APPLIED: digest}}}


def build_deployment(namespace: str, model: str, stage: str, package: str, uri: str, digest: str, replicas: int,
                     sampling: float, resources: Mapping[str, Any] | None, settings: Settings,
                     owner: Mapping[str, str], runtime: str = "auto",
                     shadows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """`shadows`: candidates the server also sends sampled requests to; a new list rolls the pods."""
    labels = server_labels(model, stage)
    selector = {k: labels[k] for k in (LABEL_INSTANCE, LABEL_COMPONENT)}
    env = [*task_env(settings),
           {"name": "MLOOP_PACKAGE_URI", "value": uri}, {"name": "MLOOP_PACKAGE_DIGEST", "value": digest},
           {"name": "MLOOP_STAGE", "value": stage}, {"name": "MLOOP_SAMPLING_RATE", "value": str(sampling)},
           {"name": "MLOOP_SERVE_HOST", "value": "0.0.0.0"}, {"name": "MLOOP_SERVE_PORT", "value": str(PORT)},
           {"name": "MLOOP_SERVE_RUNTIME", "value": runtime},
           *([{"name": "MLOOP_SHADOWS", "value": json.dumps(shadows, sort_keys=True)}] if shadows else [])]
    container: dict[str, Any] = {
        "name": "server", "image": settings.image, "imagePullPolicy": "IfNotPresent",
        "command": ["mloop", "serve"], "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "initialDelaySeconds": 10,
                          "periodSeconds": 10},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        # A pod being replaced stays in the Service's rules a moment after it is told to stop: it keeps answering
        # until kube-proxy has dropped it (without this, a rollout on a real node failed 3 of 208 requests).
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    }
    if resources:
        container["resources"] = dict(resources)
    return fingerprinted({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": server_name(model, stage), "namespace": namespace, "labels": labels,
                     "annotations": {"mloop.dev/package": package}, "ownerReferences": [owner_reference(owner)]},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "mloop.dev/package": package, "mloop.dev/package-digest": digest,
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}},
                "spec": {"automountServiceAccountToken": False, "enableServiceLinks": False,
                         "terminationGracePeriodSeconds": 30, "securityContext": pod_security_context(),
                         "containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}]},
            },
        },
    })


def build_service(namespace: str, model: str, stage: str, owner: Mapping[str, str]) -> dict[str, Any]:
    labels = server_labels(model, stage)
    return fingerprinted({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": server_name(model, stage), "namespace": namespace, "labels": labels,
                     "ownerReferences": [owner_reference(owner)]},
        "spec": {"selector": {k: labels[k] for k in (LABEL_INSTANCE, LABEL_COMPONENT)},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    })


def cluster_url(namespace: str, model: str, stage: str) -> str:
    return f"http://{server_name(model, stage)}.{namespace}.svc.cluster.local"
