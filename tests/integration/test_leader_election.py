"""High availability: replicas elect a leader on a coordination.k8s.io Lease; only the leader reconciles, and a
standby takes over when the leader dies or steps down."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from mloop.k8s.leader import LeaderElector
from mloop.localcluster.stack import free_port
from tests.helpers import apply_object, condition, get_object, wait_for

LEASE = "mloop-operator"
IRIS = {"source": {"builtin": {"name": "iris"}}}


class Clock:
    """A monotonic clock the test moves, so "after the lease duration" needs no sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def elector(api: Any, namespace: str, identity: str, clock: Any = None, name: str = LEASE) -> LeaderElector:
    extra = {"clock": clock} if clock else {}
    return LeaderElector(client.CoordinationV1Api(api), namespace, name, identity,
                         lease_seconds=4, renew_deadline=3, retry_period=0.2, **extra)


def read_lease(api: Any, namespace: str, name: str = LEASE) -> client.V1LeaseSpec:
    return client.CoordinationV1Api(api).read_namespaced_lease(name, namespace).spec


def test_one_candidate_holds_the_lease_and_a_stale_lease_is_taken_over_after_its_duration(api_client,
                                                                                         namespace) -> None:
    clock = Clock()
    a, b = elector(api_client, namespace, "a", clock), elector(api_client, namespace, "b", clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    first = read_lease(api_client, namespace)
    assert (first.holder_identity, first.lease_duration_seconds, first.lease_transitions) == ("a", 4, 0)

    # A renewal is news to the standby: its wait starts over, so a live leader is never taken over.
    clock.now = 3.0
    assert a.try_acquire_or_renew()
    renewed = read_lease(api_client, namespace)
    assert renewed.renew_time > first.renew_time and renewed.acquire_time == first.acquire_time
    assert not b.try_acquire_or_renew()
    clock.now = 6.5
    assert not b.try_acquire_or_renew()
    assert read_lease(api_client, namespace).holder_identity == "a"

    # The leader stops renewing (killed): one lease duration after the last change it saw, the standby takes over.
    clock.now = 7.1
    assert b.try_acquire_or_renew()
    taken = read_lease(api_client, namespace)
    assert (taken.holder_identity, taken.lease_transitions) == ("b", 1)
    assert taken.acquire_time > first.acquire_time
    assert not a.try_acquire_or_renew()
    assert read_lease(api_client, namespace).holder_identity == "b"


def test_a_leader_gives_up_when_its_lease_is_taken_or_cannot_be_renewed(api_client, namespace) -> None:
    leases = client.CoordinationV1Api(api_client)
    taken = elector(api_client, namespace, "a")
    assert taken.try_acquire_or_renew()
    lost = threading.Event()
    taken.keep_renewing(on_lost=lost.set)
    lease = leases.read_namespaced_lease(LEASE, namespace)
    lease.spec.holder_identity = "intruder"
    leases.replace_namespaced_lease(LEASE, namespace, lease)
    assert lost.wait(timeout=30)
    taken.release()
    assert read_lease(api_client, namespace).holder_identity == "intruder"

    # The API server becomes unreachable: the renewals fail, and the renew deadline ends leadership.
    cut_off = elector(api_client, namespace, "c", name="cut-off")
    assert cut_off.try_acquire_or_renew()
    nowhere = client.Configuration(host=f"https://127.0.0.1:{free_port()}")
    cut_off.api = client.CoordinationV1Api(client.ApiClient(nowhere))
    lost = threading.Event()
    cut_off.keep_renewing(on_lost=lost.set)
    assert lost.wait(timeout=30)
    assert read_lease(api_client, namespace, "cut-off").holder_identity == "c"


def test_a_released_lease_is_taken_at_once_by_the_next_candidate(api_client, namespace) -> None:
    clock = Clock()
    leader, successor = elector(api_client, namespace, "a", clock), elector(api_client, namespace, "b", clock)
    assert leader.try_acquire_or_renew()
    lost = threading.Event()
    leader.keep_renewing(on_lost=lost.set)
    assert not successor.try_acquire_or_renew()
    leader.release()
    assert read_lease(api_client, namespace).holder_identity is None
    assert successor.try_acquire_or_renew()
    assert (read_lease(api_client, namespace).holder_identity, lost.is_set()) == ("b", False)


def test_a_candidate_stopped_while_acquiring_leaves_no_lease_behind(api_client, namespace) -> None:
    candidate = elector(api_client, namespace, "a")

    async def stop_mid_attempt() -> None:
        acquiring = asyncio.create_task(candidate.acquire())
        await asyncio.sleep(0)  # the attempt is in its thread now, and the Lease is free: it will win
        acquiring.cancel()
        with pytest.raises(asyncio.CancelledError):
            await acquiring

    asyncio.run(stop_mid_attempt())
    assert read_lease(api_client, namespace).holder_identity is None


def start_operator(stack: Any, namespace: str, pod: str, log: Path, port: int) -> subprocess.Popen[bytes]:
    """`python -m mloop` as a replica would run it, with short lease timings and nothing inherited that counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOOP_", "POD_", "KUBERNETES_"))}
    env.update(stack.info.env(), MLOOP_LOCAL_DIR=str(stack.dir / "local-tasks"), MLOOP_EXECUTOR="local",
               MLOOP_POLL_INTERVAL="0.5", MLOOP_NAMESPACES=namespace, MLOOP_LIVENESS_PORT=str(port),
               MLOOP_LEADER_ELECTION="true", MLOOP_LEADER_ELECTION_NAMESPACE=namespace,
               MLOOP_LEADER_ELECTION_LEASE_SECONDS="4", MLOOP_LEADER_ELECTION_RENEW_DEADLINE_SECONDS="3",
               MLOOP_LEADER_ELECTION_RETRY_SECONDS="1", POD_NAME=pod)
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "mloop"], env=env, stdout=out, stderr=subprocess.STDOUT)


def healthz(port: int) -> str:
    """The /healthz body; empty while nothing listens (the standby's server hands the port to kopf's)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.read().decode()
    except OSError:
        return ""


def ready(api: Any, namespace: str, name: str) -> dict:
    return wait_for(lambda: (o := get_object(api, namespace, "datasets", name)) and (c := condition(o, "Ready"))
                    and c["status"] == "True" and o, timeout=120)


def test_two_replicas_one_leads_and_the_standby_takes_over(stack, api_client, kubectl, namespace, tmp_path) -> None:
    pods = ("op-a", "op-b", "op-c", "op-d")
    logs = {pod: tmp_path / f"{pod}.log" for pod in pods}
    ports = {pod: free_port() for pod in pods}
    procs = {pod: start_operator(stack, namespace, pod, logs[pod], ports[pod]) for pod in pods[:2]}
    try:
        holder = wait_for(lambda: any("Leading: acquired" in logs[pod].read_text() for pod in pods[:2])
                          and read_lease(api_client, namespace).holder_identity, timeout=120)
        leader = holder.rsplit("_", 1)[0]
        standby = next(pod for pod in pods[:2] if pod != leader)
        assert f"Leading: acquired Lease {namespace}/{LEASE} as {holder}" in logs[leader].read_text()
        wait_for(lambda: f"Lease {namespace}/{LEASE} is held by {holder}" in logs[standby].read_text(), timeout=60)
        assert "Leading" not in logs[standby].read_text()
        # The kubelet's liveness probe gets an answer from the standby too.
        assert healthz(ports[standby]) == "standby\n"
        transitions = read_lease(api_client, namespace).lease_transitions

        apply_object(kubectl, namespace, "Dataset", "first", IRIS)
        assert ready(api_client, namespace, "first")["status"]["phase"] == "Ready"
        assert f"[{namespace}/first]" in logs[leader].read_text()
        assert f"[{namespace}/first]" not in logs[standby].read_text()

        # SIGKILL: nothing is released; the standby takes over once the lease has run out.
        procs[leader].kill()
        procs[leader].wait(timeout=30)
        new = wait_for(lambda: (h := read_lease(api_client, namespace).holder_identity) != holder and h, timeout=60)
        assert new.startswith(f"{standby}_")
        assert read_lease(api_client, namespace).lease_transitions == transitions + 1
        apply_object(kubectl, namespace, "Dataset", "second", IRIS)
        ready(api_client, namespace, "second")
        assert f"[{namespace}/second]" in logs[standby].read_text()
        assert "watching" in wait_for(lambda: (body := healthz(ports[standby])) != "standby\n" and body)

        # A standby told to stop stops at once, leaving the lease alone.
        procs["op-c"] = start_operator(stack, namespace, "op-c", logs["op-c"], ports["op-c"])
        wait_for(lambda: f"is held by {new}" in logs["op-c"].read_text(), timeout=60)
        procs["op-c"].send_signal(signal.SIGTERM)
        assert procs["op-c"].wait(timeout=30) == 0, logs["op-c"].read_text()[-3000:]
        assert read_lease(api_client, namespace).holder_identity == new

        # A clean shutdown hands the lease back, so a successor need not wait out its duration.
        procs[standby].send_signal(signal.SIGTERM)
        assert procs[standby].wait(timeout=60) == 0, logs[standby].read_text()[-3000:]
        assert read_lease(api_client, namespace).holder_identity is None
        assert f"Released Lease {namespace}/{LEASE}" in logs[standby].read_text()

        # A leader that finds the lease in other hands exits at once rather than act as a second leader.
        procs["op-d"] = start_operator(stack, namespace, "op-d", logs["op-d"], ports["op-d"])
        wait_for(lambda: (h := read_lease(api_client, namespace).holder_identity) and h.startswith("op-d_"),
                 timeout=60)
        leases = client.CoordinationV1Api(api_client)
        lease = leases.read_namespaced_lease(LEASE, namespace)
        lease.spec.holder_identity = "intruder"
        leases.replace_namespaced_lease(LEASE, namespace, lease)
        assert procs["op-d"].wait(timeout=60) == 1
        assert f"Leadership lost: Lease {namespace}/{LEASE} is now held by intruder" in logs["op-d"].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
