"""Operator start-up settings, leader election and the liveness probe."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf

from mloop.config import get_settings
from mloop.constants import ANNOTATION_PREFIX, FINALIZER
from mloop.handlers.metrics import serve_metrics
from mloop.integrations import cloudevents_sink, lineage
from mloop.k8s.client import api_client
from mloop.k8s.leader import LeaderElector, exit_now


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base without the copy it throws away: on every watch event of every kind, kopf deep-copied the
    whole body (status, managedFields) and then deleted metadata and status from the copy. That was a fifth of the
    operator's CPU in a fan-out (py-spy, issue 12). The essence is the same: only what it keeps is copied."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        meta = body.get("metadata") or {}
        lean = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        lean["metadata"] = {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}
        if any(kopf_field_root(field) == "status" for field in extra_fields or ()):
            lean["status"] = body.get("status")
        return super().build(body=kopf.Body(lean), extra_fields=extra_fields)


def kopf_field_root(field: Any) -> str | None:
    parts = field.split(".") if isinstance(field, str) else list(field or ())
    return parts[0] if parts else None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    cfg = get_settings()
    settings.persistence.finalizer = FINALIZER
    # Handler progress lives in annotations: status is fully described by the CRD and would prune it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
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
    serve_metrics(cfg.metrics_port, cfg.liveness_host)


@kopf.on.startup(id="leader-election")
async def lead(memo: kopf.Memo, **_: Any) -> None:
    """With leader election on, wait here until this replica holds the Lease: kopf starts no resource
    handler before the startup handlers finish. From then on, losing the Lease ends the process."""
    cfg = get_settings()
    if not cfg.leader_election:
        return
    elector = LeaderElector.from_settings(cfg, api_client())
    async with standby_liveness(cfg.liveness_host, cfg.liveness_port):
        await elector.acquire()
    elector.keep_renewing(on_lost=exit_now)
    memo.leader = elector


class StandbyHealth(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/healthz"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"standby\n" if ok else b"")

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line."""


class StandbyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), StandbyHealth)


@asynccontextmanager
async def standby_liveness(host: str, port: int) -> AsyncIterator[None]:
    """kopf serves /healthz only after the startup handlers: answer it while waiting, or the kubelet would
    keep restarting a healthy standby. Closed before kopf binds the same port."""
    if not port:
        yield
        return
    server = StandbyServer(host, port)
    threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True).start()
    try:
        yield
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()


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


@kopf.on.cleanup()
def release_lease(memo: kopf.Memo, **_: Any) -> None:
    """After the last handler finished: hand the Lease to a standby now rather than after its duration."""
    if elector := memo.get("leader"):
        elector.release()
