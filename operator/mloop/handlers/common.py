"""How every handler writes what it decided, so that each side effect happens once per transition with nothing
held in process memory:

- status is written as a merge patch carrying the body's resourceVersion, so a pass that decided on a stale
  body, or lost a race to another pass or replica, gets a 409 and changes nothing (it is not repeated: the
  winner did the step);
- events and notifications are not sent during the pass: they go into `status.outbox` in that same write, and
  are sent after it. A crash before the write sends nothing; a crash after it leaves the outbox for the next pass
  (every object gets one on start-up). A Kubernetes event is named after its entry (uid, resourceVersion,
  index), so a second post is a 409; a CloudEvent or lineage event is queued only by the pass whose conditional
  write took its entry out of the outbox, so it is sent once (a crash after that loses it, as it would lose
  anything still in the sender's queue).
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mloop.api.common import iso, utcnow
from mloop.api.kinds import API_VERSION, GROUP, VERSION, kind_by_name
from mloop.integrations import cloudevents_sink, lineage
from mloop.k8s.client import api_client, custom_objects
from mloop.reconcile.outcome import Outcome

log = logging.getLogger("mloop.handlers")

OUTBOX_LIMIT = 64
REPORTER = "mloop-operator"


def entry_id(uid: str, resource_version: str, index: int) -> str:
    return hashlib.sha256(f"{uid}/{resource_version}/{index}".encode()).hexdigest()[:20]


def changes(current: Any, patch: Mapping[str, Any]) -> bool:
    """Would this merge patch change the object? An unchanged status is not written at all."""
    for key, value in patch.items():
        old = current.get(key) if hasattr(current, "get") else None
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if changes(old, value):
                return True
        elif value is None:
            if old is not None:
                return True
        elif old != value:
            return True
    return False


def owed(kind: str, meta: Mapping[str, Any], old: dict[str, Any], outcome: Outcome) -> list[dict[str, Any]]:
    """The outbox entries a transition owes: its Kubernetes events, then its CloudEvents and lineage events."""
    entries: list[dict[str, Any]] = [
        {"type": e.type, "reason": e.reason[:128], "message": e.message[:1024]} for e in outcome.events]
    entries += cloudevents_sink.outbox_entries(kind, old, outcome.status, outcome.events)
    entries += lineage.outbox_entries(kind, old, outcome.status)
    version = str(meta.get("resourceVersion", ""))
    return [{"id": entry_id(str(meta["uid"]), version, i), **entry} for i, entry in enumerate(entries)]


def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any],
                 resource_version: str | None) -> dict[str, Any] | None:
    """Merge-patch status, on condition that the object is still at resource_version. None: it moved on or is gone."""
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        return custom_objects().patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, body)
    except ApiException as err:
        if err.status in (404, 409):
            return None
        raise


def commit(body: Mapping[str, Any], outcome: Outcome) -> dict[str, Any] | None:
    """Write the pass's status with its events in the outbox, then send them. Returns the object as written,
    the body itself when there was nothing to write, or None when someone else moved the object first."""
    kind, meta = body["kind"], body["metadata"]
    plural = kind_by_name(kind).plural
    old = dict(body.get("status") or {})
    new_entries = owed(kind, meta, old, outcome)
    status = dict(outcome.status)
    if new_entries:
        status["outbox"] = [*(old.get("outbox") or []), *new_entries][-OUTBOX_LIMIT:]
    if not changes(old, status):
        if old.get("outbox"):
            drain(dict(body))
        return dict(body)
    written = patch_status(plural, meta["namespace"], meta["name"], status, meta.get("resourceVersion"))
    if written is None:
        log.debug("%s %s/%s moved on before this pass wrote; its step is left to the pass that sees it",
                  kind, meta["namespace"], meta["name"])
        return None
    if written.get("status", {}).get("outbox"):
        drain(written)
    return written


def drain(obj: dict[str, Any]) -> None:
    """Send what the object's outbox owes.

    Kubernetes events go first: their names make a second post a 409. Then the entries are taken out of the outbox
    by a write on condition, and only the pass whose write takes an entry queues its CloudEvent or lineage event,
    so two passes draining the same body send it once.
    """
    kind, meta = obj["kind"], obj["metadata"]
    status = dict(obj.get("status") or {})
    entries = list(status.get("outbox") or [])
    for entry in entries:
        if entry.get("type"):
            try:
                post_event(obj, entry)
            except Exception:
                log.exception("could not post %s for %s %s/%s; it stays owed", entry.get("reason"), kind,
                              meta["namespace"], meta["name"])
                return
    taken = _take(kind_by_name(kind).plural, meta, status, {e["id"] for e in entries})
    for entry in entries:
        if entry["id"] not in taken:
            continue  # another pass took it, and sends it
        try:
            if entry.get("cloudEvent"):
                cloudevents_sink.send(kind, dict(meta), status, entry)
            if entry.get("lineage"):
                lineage.send(kind, dict(meta), dict(obj.get("spec") or {}), status, entry)
        except Exception:  # a sink's trouble is logged, never raised into reconciliation
            log.exception("could not queue %s for %s %s/%s", entry.get("cloudEvent") or entry.get("lineage"), kind,
                          meta["namespace"], meta["name"])


def _take(plural: str, meta: Mapping[str, Any], status: Mapping[str, Any], wanted: set[str]) -> set[str]:
    """Remove these entries from the outbox on condition; returns the ids this write removed."""
    for _ in range(3):
        present = {e["id"] for e in status.get("outbox") or []}
        mine = wanted & present
        if not mine:
            return set()
        left = [e for e in status.get("outbox") or [] if e["id"] not in mine]
        if patch_status(plural, meta["namespace"], meta["name"], {"outbox": left or None},
                        meta.get("resourceVersion")) is not None:
            return mine
        try:  # a newer write came first (perhaps with entries of its own, or taking these): look again
            fresh = custom_objects().get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], plural, meta["name"])
        except ApiException as err:
            if err.status == 404:
                return set()
            raise
        meta, status = fresh["metadata"], dict(fresh.get("status") or {})
    return set()


def post_event(obj: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
    """A Kubernetes event named after the outbox entry: a second attempt is a 409, not a second event."""
    meta = obj["metadata"]
    now = iso(utcnow())
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{entry['id']}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj.get("apiVersion", API_VERSION), "kind": obj["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "reason": entry["reason"], "message": entry.get("message", ""), "type": entry["type"],
        "source": {"component": REPORTER}, "reportingComponent": REPORTER, "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    try:
        client.CoreV1Api(api_client()).create_namespaced_event(meta["namespace"], event)
    except ApiException as err:
        if err.status != 409:
            raise
