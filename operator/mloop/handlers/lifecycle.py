"""Operator start-up settings and the liveness probe."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mloop.config import get_settings
from mloop.constants import ANNOTATION_PREFIX, FINALIZER
from mloop.handlers.metrics import serve_metrics
from mloop.integrations import cloudevents_sink, lineage


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    cfg = get_settings()
    settings.persistence.finalizer = FINALIZER
    # Handler progress lives in annotations: status is fully described by the CRD and would prune it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.getLevelName(cfg.posting_level)
    # The Kubernetes client and boto3 block: handlers are sync and run in this pool.
    settings.execution.max_workers = cfg.max_workers
    if cfg.peering:
        settings.peering.name = cfg.peering
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    serve_metrics(cfg.metrics_port)


@kopf.on.probe(id="watching")
def watching(**_: Any) -> str:
    return "ok"


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, then $KUBECONFIG as it is *now*.

    kopf's default goes through the kubernetes package, which reads $KUBECONFIG once at import.
    """
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
def flush_notifications(logger: kopf.Logger, **_: Any) -> None:
    """Give queued CloudEvents and lineage events a few seconds to go out before the operator exits."""
    for dispatcher in (cloudevents_sink.dispatcher, lineage.dispatcher):
        if not dispatcher.drain(timeout=5):
            logger.warning(f"{dispatcher.sink}: {dispatcher.queue.qsize()} deliveries still queued at shutdown")
