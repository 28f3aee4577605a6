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

An object in flight (its timer comes back) keeps its posted Kubernetes events in the outbox until its next
transition's write drops them: a PATCH of its own per transition would double the writes of a fan-out. Which
entries this process saw posted is kept in memory only to skip the re-post; without it (a restart, another replica)
the re-post is refused by name.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import kopf
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
POSTED_LIMIT = 100_000  # ids remembered (~10 MB at most)

_posted: OrderedDict[str, None] = OrderedDict()
_posted_lock = threading.Lock()


def _remember_posted(entry_id: str) -> None:
    with _posted_lock:
        _posted[entry_id] = None
        _posted.move_to_end(entry_id)
        while len(_posted) > POSTED_LIMIT:
            _posted.popitem(last=False)


_superseded: OrderedDict[str, frozenset[str]] = OrderedDict()  # uid -> resourceVersions this process last wrote over


def known_stale(body: Mapping[str, Any]) -> bool:
    """This process already wrote over this very resourceVersion: the body is behind (the watch lags under load),
    and a pass on it would only repeat steps to lose the race at its write. Memory only saves that work; without
    it the write's precondition refuses the pass all the same."""
    meta = body.get("metadata") or {}
    with _posted_lock:
        return bool(meta.get("uid")) and str(meta.get("resourceVersion")) in _superseded.get(meta["uid"], ())


def _remember_superseded(meta: Mapping[str, Any], *resource_versions: str) -> None:
    with _posted_lock:
        _superseded[str(meta["uid"])] = frozenset(resource_versions)
        _superseded.move_to_end(str(meta["uid"]))
        while len(_superseded) > POSTED_LIMIT:
            _superseded.popitem(last=False)


def _known_posted(entry: Mapping[str, Any]) -> bool:
    """A Kubernetes event only, which this process saw created: the entry owes nothing more."""
    if entry.get("cloudEvent") or entry.get("lineage") or not entry.get("type"):
        return False
    with _posted_lock:
        return entry["id"] in _posted


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


def commit(body: Mapping[str, Any], outcome: Outcome,
           comes_back: Callable[[Mapping[str, Any]], bool] | None = None) -> dict[str, Any] | None:
    """Write the pass's status with its events in the outbox, then send them. Returns the object as written,
    the body itself when there was nothing to write, or None when someone else moved the object first.

    comes_back(status): whether a later pass is sure to come (a timer while in flight). Then posted Kubernetes
    events stay in the outbox for that pass's write to drop, instead of a write of their own."""
    kind, meta = body["kind"], body["metadata"]
    plural = kind_by_name(kind).plural
    old = dict(body.get("status") or {})
    carried = list(old.get("outbox") or [])
    new_entries = owed(kind, meta, old, outcome)
    status = dict(outcome.status)
    if new_entries:
        status["outbox"] = [*carried, *new_entries][-OUTBOX_LIMIT:]
    lazy = comes_back is not None and comes_back({**old, **status})
    if not changes(old, status):
        if carried:
            drain(dict(body), take=not lazy)
        return dict(body)
    kept = [e for e in carried if not _known_posted(e)]
    if len(kept) < len(carried):  # this write takes them out; no write of their own
        status["outbox"] = [*kept, *new_entries][-OUTBOX_LIMIT:] or None
    decided_on = meta.get("resourceVersion")
    written = patch_status(plural, meta["namespace"], meta["name"], status, decided_on)
    if written is None and (fresh := _moved_only_by_kopf(plural, body)) is not None:
        decided_on = fresh
        written = patch_status(plural, meta["namespace"], meta["name"], status, fresh)
    if written is None:
        log.debug("%s %s/%s moved on before this pass wrote; its step is left to the pass that sees it",
                  kind, meta["namespace"], meta["name"])
        return None
    if decided_on and str(written.get("metadata", {}).get("resourceVersion")) != str(decided_on):
        # Not after a no-op write: that resourceVersion stays current.
        _remember_superseded(meta, str(meta.get("resourceVersion")), str(decided_on))
    if written.get("status", {}).get("outbox"):
        drain(written, take=not lazy)
    return written


def _moved_only_by_kopf(plural: str, body: Mapping[str, Any]) -> str | None:
    """After a 409: the fresh resourceVersion if only kopf's metadata moved (its finalizer or annotations, e.g.
    the finalizer it adds when a timer starts, just as the first pass writes). What the pass decided on (spec,
    status, labels) is then unchanged and its write still stands; without this the step would be redone."""
    meta = body["metadata"]
    try:
        fresh = custom_objects().get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], plural, meta["name"])
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    now = fresh["metadata"]
    same = (fresh.get("spec") == body.get("spec") and (fresh.get("status") or {}) == (body.get("status") or {})
            and now.get("uid") == meta.get("uid") and now.get("generation") == meta.get("generation")
            and (now.get("labels") or {}) == (meta.get("labels") or {})
            and now.get("deletionTimestamp") == meta.get("deletionTimestamp"))
    return str(now["resourceVersion"]) if same else None


def drain(obj: dict[str, Any], take: bool = True) -> None:
    """Send what the object's outbox owes.

    Kubernetes events go first: their names make a second post a 409. Then the entries are taken out of the outbox
    by a write on condition, and only the pass whose write takes an entry queues its CloudEvent or lineage event,
    so two passes draining the same body send it once. take=False: entries that are Kubernetes events only are
    left for the object's next write (see commit).
    """
    kind, meta = obj["kind"], obj["metadata"]
    status = dict(obj.get("status") or {})
    entries = list(status.get("outbox") or [])
    for entry in entries:
        if entry.get("type") and not _known_posted(entry):
            try:
                post_event(obj, entry)
            except Exception:
                log.exception("could not post %s for %s %s/%s; it stays owed", entry.get("reason"), kind,
                              meta["namespace"], meta["name"])
                return
            _remember_posted(entry["id"])
    wanted = {e["id"] for e in entries if take or e.get("cloudEvent") or e.get("lineage")}
    if not wanted:
        return
    taken = _take(kind_by_name(kind).plural, meta, status, wanted)
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
        answer = client.CoreV1Api(api_client()).create_namespaced_event(meta["namespace"], event,
                                                                         _preload_content=False)
        answer.drain_conn()  # undecoded (a CoreV1Event costs more than the request), and the connection kept
        answer.release_conn()
    except ApiException as err:
        if err.status != 409:
            raise


def pinned(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler on a copy of its body taken once, as the object was when the pass began.

    Once an object has a timer, kopf hands all its handlers one live body that each watch event swaps in place
    (kopf's processing.py, live_fresh_body). A pass that decided on one resourceVersion then read a newer one for
    its conditional write, won it, and repeated its step (seen: ErasureStarted posted twice)."""

    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        live = kwargs.get("body")
        if live is not None:
            body = kopf.Body(copy.deepcopy(dict(getattr(live, "_src", live))))  # the view's dict, read once
            kwargs["body"] = body
            for part in ("spec", "meta", "status"):
                if part in kwargs:
                    kwargs[part] = getattr(body, part)
        return fn(*args, **kwargs)

    return handler
