"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

The kubernetes package (v36) ships only a ConfigMap lock, hence this small Lease equivalent. Every write
carries the Lease's resourceVersion, so of two candidates racing for it the API server lets exactly one win.
A standby judges a lease stale by its *own* clock, from when it last saw the record change, never by
comparing renewTime with its clock: the replicas' clocks need not agree.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mloop.config import Settings

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
FALLBACK_NAMESPACE = "mloop-system"


def micro_time(moment: datetime) -> str:
    """RFC 3339 with exactly six fractional digits: the API server's MicroTime refuses other precisions."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_namespace(cfg: Settings) -> str:
    if cfg.leader_election_namespace:
        return cfg.leader_election_namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return FALLBACK_NAMESPACE


def new_identity() -> str:
    """The pod's name (downward API) or host name, plus a random suffix: a restarted container or two
    processes on one host never mistake each other's lease for their own."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Observed:
    """What a candidate last saw in the Lease; any change in it proves the holder is alive."""

    holder: str
    spec: str
    resource_version: str


class LeaderElector:
    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, identity: str, *,
                 lease_seconds: int, renew_deadline: float, retry_period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not lease_seconds > renew_deadline > retry_period > 0:
            raise ValueError("lease seconds > renew deadline > retry period > 0")
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.lease_seconds, self.renew_deadline, self.retry_period = lease_seconds, renew_deadline, retry_period
        self.clock = clock
        self.observed: Observed | None = None
        self.observed_at = 0.0
        self.renewed_at = 0.0
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, cfg: Settings, api_client: Any) -> LeaderElector:
        return cls(client.CoordinationV1Api(api_client), lease_namespace(cfg), cfg.leader_election_name,
                   new_identity(), lease_seconds=cfg.leader_election_lease_seconds,
                   renew_deadline=cfg.leader_election_renew_deadline_seconds,
                   retry_period=cfg.leader_election_retry_seconds)

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards. Never raises for API trouble."""
        started = self.clock()
        timeout = self.renew_deadline
        try:
            try:
                lease = json.loads(self.api.read_namespaced_lease(
                    self.name, self.namespace, _preload_content=False, _request_timeout=timeout).data)
            except ApiException as err:
                if err.status != 404:
                    raise
                return self._create(started, timeout)
            return self._update(lease, started, timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            logger.warning(f"Lease {self.lease}: {getattr(err, 'reason', None) or err}")
            return False

    def _create(self, started: float, timeout: float) -> bool:
        now = micro_time(datetime.now(timezone.utc))
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}
        try:
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        self.renewed_at = started
        return True

    def _update(self, lease: dict[str, Any], started: float, timeout: float) -> bool:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        seen = Observed(holder, json.dumps(spec, sort_keys=True), lease["metadata"]["resourceVersion"])
        if seen != self.observed:
            self.observed, self.observed_at = seen, started
        if holder and holder != self.identity and started < self.observed_at + self.lease_seconds:
            return False
        now = micro_time(datetime.now(timezone.utc))
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.lease_seconds, renewTime=now)
        lease["spec"] = spec
        try:
            # metadata.resourceVersion is still the one read: a write by anyone since then is a 409.
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=timeout)
        except ApiException as err:
            if err.status == 409:
                return False
            raise
        self.renewed_at = started
        return True

    async def acquire(self) -> None:
        """Wait until this candidate holds the Lease (cancellable: a standby stops at once on SIGTERM)."""
        last_holder = None
        while not await self._attempt():
            holder = self.observed.holder if self.observed else None
            if holder != last_holder:
                logger.info(f"Standby: Lease {self.lease} is held by {holder}; waiting to lead as {self.identity}")
                last_holder = holder
            await asyncio.sleep(self.retry_period)
        logger.info(f"Leading: acquired Lease {self.lease} as {self.identity}")

    async def _attempt(self) -> bool:
        attempt = asyncio.ensure_future(asyncio.to_thread(self.try_acquire_or_renew))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            # The attempt runs on in its thread: a standby stopped mid-write must not keep a Lease it just won.
            if await attempt:
                await asyncio.to_thread(self.release)
            raise

    def keep_renewing(self, on_lost: Callable[[], None]) -> None:
        """Renew every retry period in the background. on_lost runs once, as soon as another holder shows up or
        renew_deadline passed since the start of the last successful renewal, however long API calls hang."""

        def lose(why: str) -> None:
            if not self._lost.is_set() and not self._stop.is_set():
                self._lost.set()
                logger.critical(f"Leadership lost: {why}; stopping so that only one leader acts")
                on_lost()

        def renew() -> None:
            while not self._stop.wait(self.retry_period) and not self._lost.is_set():
                if not self.try_acquire_or_renew() and self.observed and self.observed.holder != self.identity:
                    lose(f"Lease {self.lease} is now held by {self.observed.holder or 'nobody'}")

        def watchdog() -> None:
            while not self._stop.wait(min(self.retry_period, 0.5)) and not self._lost.is_set():
                if self.clock() - self.renewed_at > self.renew_deadline:
                    lose(f"Lease {self.lease} not renewed for {self.renew_deadline:g}s")

        self._threads = [threading.Thread(target=fn, name=f"lease-{fn.__name__}", daemon=True)
                         for fn in (renew, watchdog)]
        for thread in self._threads:
            thread.start()

    def release(self) -> None:
        """Stop renewing and hand the Lease back, so that a standby takes over at once instead of after the
        lease duration. Only a holder that still holds it writes."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self._lost.is_set():
            return
        try:
            lease = json.loads(self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=self.renew_deadline).data)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            now = micro_time(datetime.now(timezone.utc))
            spec.update(holderIdentity=None, leaseDurationSeconds=1, acquireTime=now, renewTime=now)
            self.api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.renew_deadline)
            logger.info(f"Released Lease {self.lease}")
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as err:
            logger.warning(f"Lease {self.lease} not released ({getattr(err, 'reason', None) or err}): "
                           f"a standby takes over after {self.lease_seconds}s")


def exit_now() -> None:
    """Like controller-runtime: a process that may no longer be leader stops at once, mid-handler or not."""
    logging.shutdown()
    os._exit(1)
