"""Roles per team against the real API server: RBAC and the Production admission policy, by impersonation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
USERS = {"rita": "mloop-requirement-editor", "dana": "mloop-data-editor", "mo": "mloop-ml-editor",
         "amy": "mloop-approver", "vic": "mloop-viewer", "eve": "edit"}


def doc(kind: str, name: str, spec: dict) -> str:
    return yaml.safe_dump({"apiVersion": "mloop.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})


REQ = doc("Requirement", "r", {"title": "t"})
DS = doc("Dataset", "d", {"source": {"builtin": {"name": "iris"}}})
TR = doc("TrainingRun", "t", {"datasetRef": {"name": "d"}, "target": "species", "estimator": {"name": "GaussianNB"}})


def pkg(stage: str, name: str = "p") -> str:
    return doc("ModelPackage", name, {"model": "m", "trainingRunRef": {"name": "t"}, "stage": stage})


@pytest.fixture
def team(kubectl, namespace):
    kubectl("apply", "-f", str(ROOT / "manifests/base/roles.yaml"), "-f", str(ROOT / "manifests/base/admission.yaml"),
            check=True)
    for user, role in USERS.items():
        kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}", "-n", namespace,
                check=True)
    # The policy is enforced once the API server has compiled it: wait until it refuses.
    wait_for(lambda: "only an approver" in kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                                                   "--as=mo", input=pkg("Production")).stderr, timeout=60)
    return lambda user, *args, input=None: kubectl(*args, "-n", namespace, f"--as={user}", input=input)


@pytest.mark.parametrize(
    "user,manifest,allowed",
    [
        ("rita", REQ, True), ("rita", DS, False),
        ("dana", DS, True), ("dana", TR, False),
        ("mo", TR, True), ("mo", pkg("Staging"), True), ("mo", REQ, False), ("mo", DS, False),
        ("vic", DS, False),
        ("amy", pkg("Production"), False),  # approvers promote; they do not create packages
        ("eve", DS, True), ("eve", pkg("Staging"), True),  # edit aggregates the editors
    ],
)
def test_who_may_create_what(team, user, manifest, allowed) -> None:
    result = team(user, "create", "-f", "-", input=manifest)
    assert (result.returncode == 0) is allowed, result.stderr
    if not allowed:
        assert "forbidden" in result.stderr.lower()


def test_production_needs_an_approver(team) -> None:
    refused = team("mo", "create", "-f", "-", input=pkg("Production"))
    assert refused.returncode != 0
    assert "only an approver (ClusterRole mloop-approver) may set spec.stage: Production" in refused.stderr
    assert team("mo", "create", "-f", "-", input=pkg("Staging")).returncode == 0
    escalate = team("mo", "patch", "modelpackage", "p", "--type=merge", "-p", '{"spec":{"stage":"Production"}}')
    assert escalate.returncode != 0 and "only an approver" in escalate.stderr
    eve = team("eve", "patch", "modelpackage", "p", "--type=merge", "-p", '{"spec":{"stage":"Production"}}')
    assert eve.returncode != 0 and "only an approver" in eve.stderr  # edit is not an approver
    approved = team("amy", "patch", "modelpackage", "p", "--type=merge", "-p", '{"spec":{"stage":"Production"}}')
    assert approved.returncode == 0, approved.stderr
    # Once in Production, editors may change other fields; archiving needs no approval.
    assert team("mo", "patch", "modelpackage", "p", "--type=merge", "-p", '{"spec":{"stage":"Archived"}}').returncode == 0


def test_everyone_on_the_team_can_read(team) -> None:
    for user in USERS:
        assert team(user, "get", "datasets,trainingruns,modelpackages,requirements").returncode == 0, user


def test_built_in_view_role_aggregates_mloop_read_access(kubectl) -> None:
    kubectl("apply", "-f", str(ROOT / "manifests/base/roles.yaml"), check=True)
    rules = wait_for(lambda: (out := kubectl("get", "clusterrole", "view", "-o", "yaml").stdout) and
                     "modelpackages" in out and out, timeout=60)
    assert "mloop.dev" in rules
    admin = wait_for(lambda: (out := kubectl("get", "clusterrole", "admin", "-o", "yaml").stdout) and
                     "approve" in out and out, timeout=60)
    assert "approve" in admin
