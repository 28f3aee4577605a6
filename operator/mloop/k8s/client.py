"""One Kubernetes API client for the operator: in-cluster, else the one for $KUBECONFIG as it is now."""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

from kubernetes import client, config

_building = threading.Lock()


def api_client() -> Any:
    """The one shared client, built under a lock: the kubernetes package registers a certificate's temporary
    file before writing it, so a second thread building at the same moment could load it empty (PEM lib)."""
    with _building:
        return _shared_client(os.environ.get("KUBECONFIG") or None)


# Connections kept open: one per handler thread (20 by default) and some to spare. The kubernetes package keeps
# 5 per core; past that every request of a fan-out opened, and TLS-handshook, a connection of its own.
POOL_SIZE = 48


@lru_cache(maxsize=1)  # keyed by the kubeconfig: a process that moves to another cluster (a test's stack) follows
def _shared_client(kubeconfig: str | None) -> Any:
    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(cfg)


def custom_objects() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client())


def get_object(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom_objects().get_namespaced_custom_object("mloop.dev", "v1alpha1", namespace, plural, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
