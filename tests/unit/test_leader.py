"""Leader election settings: lease times as the API server accepts them, where the Lease lives, sane timings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from mloop.config import Settings
from mloop.k8s import leader


def test_micro_time_always_has_six_fractional_digits_and_a_z() -> None:
    # isoformat() drops a zero fraction and writes +00:00; the API server's MicroTime wants neither.
    assert leader.micro_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.000000Z"
    cet = timezone(timedelta(hours=1))
    assert leader.micro_time(datetime(2026, 1, 2, 4, 4, 5, 7, tzinfo=cet)) == "2026-01-02T03:04:05.000007Z"


@pytest.mark.parametrize("explicit,pod_namespace,service_account,expected", [
    ("team-ops", "mloop-system", "sa-ns", "team-ops"),
    ("", "from-downward-api", "sa-ns", "from-downward-api"),
    ("", "", "sa-ns", "sa-ns"),
    ("", "", None, "mloop-system"),
])
def test_lease_namespace_prefers_the_setting_then_the_pods_namespace(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, explicit: str, pod_namespace: str,
        service_account: str | None, expected: str) -> None:
    monkeypatch.setenv("POD_NAMESPACE", pod_namespace)
    sa_file = tmp_path / "namespace"
    if service_account:
        sa_file.write_text(service_account + "\n")
    monkeypatch.setattr(leader, "SERVICE_ACCOUNT_NAMESPACE", sa_file)
    assert leader.lease_namespace(Settings(leader_election_namespace=explicit)) == expected


def test_identity_is_the_pod_name_and_unique_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "mloop-operator-7d9f-abcde")
    first, second = leader.new_identity(), leader.new_identity()
    assert first.startswith("mloop-operator-7d9f-abcde_") and second.startswith("mloop-operator-7d9f-abcde_")
    assert first != second


@pytest.mark.parametrize("lease,deadline,retry", [(10, 10, 2), (15, 10, 10), (5, 10, 2)])
def test_settings_refuse_a_leader_that_could_outlive_its_lease(lease: int, deadline: float, retry: float) -> None:
    with pytest.raises(ValidationError, match="lease seconds > renew deadline seconds > retry seconds"):
        Settings(leader_election_lease_seconds=lease, leader_election_renew_deadline_seconds=deadline,
                 leader_election_retry_seconds=retry)
