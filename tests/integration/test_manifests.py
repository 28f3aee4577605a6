"""manifests/: a kustomize base that the real API server accepts, restricted and least-privilege."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SA = "system:serviceaccount:mloop-system:mloop-operator"


@pytest.fixture(scope="module")
def installed(kubectl) -> list[dict]:
    """The namespace (with its Pod Security labels) and RBAC applied for real; returns the rendered base."""
    kubectl("apply", "-f", str(ROOT / "manifests" / "base" / "namespace.yaml"), check=True)
    rendered = kubectl("kustomize", str(ROOT / "manifests"), check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRoleBinding", "Role", "RoleBinding")
            or (d["kind"] == "ClusterRole" and d["metadata"]["name"] == "mloop-operator")]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac), check=True)
    return docs


@pytest.mark.parametrize("path", ["manifests", "manifests/overlays/dev", "manifests/overlays/prod"])
def test_base_and_overlays_pass_server_side_dry_run_without_pod_security_warnings(kubectl, installed, path) -> None:
    result = kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(ROOT / path))
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/mloop-operator serverside-applied (server dry run)" in result.stdout
    # The namespace enforces and warns on the restricted standard; a violating template would warn here.
    assert "PodSecurity" not in result.stderr


def test_base_holds_what_an_operator_install_needs(installed) -> None:
    kinds = sorted({d["kind"] for d in installed})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "CustomResourceDefinition", "Deployment",
                     "Namespace", "Role", "RoleBinding", "ServiceAccount", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding"]


def test_operator_pod_is_restricted(installed) -> None:
    deployment = next(d for d in installed if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Two replicas elect a leader; the Lease's namespace and the holder's name come from the downward API.
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e for e in container["env"]}
    assert env["MLOOP_LEADER_ELECTION"]["value"] == "true"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize(
    "verb,resource,allowed",
    [
        ("watch", "trainingruns.mloop.dev", True),
        ("patch", "datasets.mloop.dev/status", True),
        ("create", "modelpackages.mloop.dev", True),
        ("create", "jobs.batch", True),
        ("get", "pods/log", True),
        ("create", "events", True),
        ("create", "deployments.apps", True),
        ("get", "secrets", False),
        ("list", "secrets", False),
        ("delete", "trainingruns.mloop.dev", False),
        ("delete", "namespaces", False),
        ("create", "clusterroles.rbac.authorization.k8s.io", False),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", False),
    ],
)
def test_operator_rbac_grants_only_what_it_uses(kubectl, installed, verb, resource, allowed) -> None:
    result = kubectl("auth", "can-i", verb, resource, "--as", SA, "-n", "default")
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr


@pytest.mark.parametrize(
    "verb,namespace,allowed",
    [("get", "mloop-system", True), ("create", "mloop-system", True), ("update", "mloop-system", True),
     ("delete", "mloop-system", False), ("update", "default", False), ("list", "mloop-system", False)],
)
def test_operator_may_hold_a_lease_only_in_its_own_namespace(kubectl, installed, verb, namespace, allowed) -> None:
    result = kubectl("auth", "can-i", verb, "leases.coordination.k8s.io", "--as", SA, "-n", namespace)
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stderr


def test_dev_overlay_brings_an_s3_server_and_points_the_operator_at_it(kubectl) -> None:
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests/overlays/dev"), check=True).stdout) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["MLOOP_S3_ENDPOINT"] == "http://mloop-s3.mloop-system.svc.cluster.local:7070"
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} >= {("Deployment", "mloop-s3"), ("Service", "mloop-s3")}


def test_prod_overlay_takes_the_endpoint_from_the_secret(kubectl) -> None:
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests/overlays/prod"), check=True).stdout) if d]
    env = {e["name"]: e for e in next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["MLOOP_S3_ENDPOINT"]["valueFrom"]["secretKeyRef"] == {"name": "mloop-s3", "key": "S3_ENDPOINT"}
    assert "MLOOP_S3_ENDPOINT" not in next(d for d in docs if d["kind"] == "ConfigMap")["data"]
