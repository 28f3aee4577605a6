"""The transitions users care about, as CloudEvents (structured JSON mode) POSTed to a configured sink."""

from __future__ import annotations

import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent

from mloop.api.kinds import GROUP, VERSION, kind_by_name
from mloop.config import get_settings
from mloop.integrations.dispatch import Dispatcher
from mloop.reconcile.outcome import Event

TYPE_PREFIX = ".".join(reversed(GROUP.split(".")))  # dev.mloop

# (kind, Kubernetes event reason) -> CloudEvent type. A run's end is keyed on its phase instead (any reason).
TYPES = {
    ("Dataset", "VersionCut"): "dataset.version.cut",
    ("ModelPackage", "PromotionGranted"): "modelpackage.promotion.granted",
    ("ModelPackage", "PromotionRefused"): "modelpackage.promotion.refused",
    ("Requirement", "RetrainTriggered"): "requirement.retrain.triggered",
}
RUN_FINISHED = "trainingrun.finished"

# Status fields worth carrying in the event's data, per kind.
FIELDS = {
    "Dataset": ("version", "digest", "rows", "sourceVersion"),
    "TrainingRun": ("phase", "dataset", "datasetDigest", "primaryMetric", "metrics", "modelUri", "modelDigest",
                    "failure", "cacheSource"),
    "ModelPackage": ("version", "stage", "digest", "uri", "endpoint", "trainingRun"),
    "Requirement": ("phase",),
}

dispatcher = Dispatcher("cloudevents")


def transitions(kind: str, old: dict[str, Any], patch: dict[str, Any], events: list[Event]) -> list[tuple[str, Event]]:
    """The (type suffix, event) pairs one reconcile pass produced."""
    found = [(TYPES[(kind, e.reason)], e) for e in events if (kind, e.reason) in TYPES]
    if kind == "TrainingRun" and patch.get("phase") in ("Succeeded", "Failed") and old.get("phase") != patch["phase"]:
        event = next((e for e in events), Event("Normal", patch["phase"], patch.get("failure") or ""))
        found.append((RUN_FINISHED, event))
    return found


def build(kind: str, meta: dict[str, Any], status: dict[str, Any], suffix: str, event: Event,
          event_id: str | None = None) -> CloudEvent:
    namespace, name = meta["namespace"], meta["name"]
    data: dict[str, Any] = {"kind": kind, "namespace": namespace, "name": name, "uid": meta.get("uid"),
                            "reason": event.reason, "message": event.message}
    data.update({key: status[key] for key in FIELDS.get(kind, ()) if status.get(key) is not None})
    return CloudEvent({
        "id": event_id or str(uuid.uuid4()),
        "source": f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{kind_by_name(kind).plural}/{name}",
        "type": f"{TYPE_PREFIX}.{suffix}",
        "subject": name,
        "time": datetime.now(timezone.utc),
        "datacontenttype": "application/json",
    }, data)


def post(url: str, event: CloudEvent, timeout: float) -> None:
    message = to_structured_event(event)
    request = urllib.request.Request(url, data=message.body, headers=message.headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # raises on 4xx/5xx: retried
        response.read()


def outbox_entries(kind: str, old: dict[str, Any], patch: dict[str, Any], events: list[Event]) -> list[dict[str, Any]]:
    """The CloudEvents a transition owes, as outbox entries (written with the transition, sent after it)."""
    if not get_settings().cloudevents_sink:
        return []
    return [{"cloudEvent": suffix, "reason": event.reason, "message": event.message[:1024]}
            for suffix, event in transitions(kind, old, patch, events)]


def send(kind: str, meta: dict[str, Any], status: dict[str, Any], entry: dict[str, Any]) -> None:
    """Queue one owed CloudEvent; its id is the outbox entry's, so a resend after a crash is recognisable."""
    settings = get_settings()
    if not settings.cloudevents_sink:
        return
    event = Event("Normal", entry.get("reason", ""), entry.get("message", ""))
    cloud_event = build(kind, meta, status, entry["cloudEvent"], event, event_id=entry["id"])
    url, timeout = settings.cloudevents_sink, settings.cloudevents_timeout
    label = f"{cloud_event.get_type()} for {meta['namespace']}/{meta['name']}"
    dispatcher.submit(label, lambda: post(url, cloud_event, timeout), settings.cloudevents_retries + 1)
