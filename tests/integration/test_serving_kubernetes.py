"""Serving with the kubernetes executor: a restricted Deployment and a Service named after model and stage,
applied server-side, owned by the package, put back when edited by hand, deleted when the package leaves."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_trainingrun import IRIS_RUN, succeeded


def deployment_or_none(api_client, namespace: str, name: str):
    try:
        return client.AppsV1Api(api_client).read_namespaced_deployment(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def service_or_none(api_client, namespace: str, name: str):
    try:
        return client.CoreV1Api(api_client).read_namespaced_service(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def owners(obj) -> list[tuple[str, str, str]]:
    return [(o.kind, o.name, o.uid) for o in obj.metadata.owner_references or []]


def test_deployment_and_service_for_the_production_stage(kubectl, api_client, namespace, operator, pod_runner,
                                                         s3_secret, s3) -> None:
    apply_object(kubectl, namespace, "Dataset", "iris", IRIS_DS)
    apply_object(kubectl, namespace, "TrainingRun", "on-job", {**IRIS_RUN, "executor": "kubernetes"})
    succeeded(api_client, namespace, "on-job", 180)
    apply_object(kubectl, namespace, "ModelPackage", "iris-1", {"model": "iris", "trainingRunRef": {"name": "on-job"},
                 "stage": "Production", "serve": {"replicas": 2, "samplingRate": 0.5,
                                                  "resources": {"limits": {"memory": "512Mi"}}}})
    obj = packaged(api_client, namespace, "iris-1", timeout=180)
    obj = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-1"))["status"].get("endpoint")
                   and o, timeout=60)
    assert obj["status"]["endpoint"] == f"http://iris-production.{namespace}.svc.cluster.local"
    # The rule the server applies to its manifest, from the parity verdict in status: no ONNX file here.
    assert obj["status"]["serving"] == {"runtime": "sklearn", "reason": "the package has no ONNX model"}
    # No kubelet runs server pods here, so the Deployment has no available replica and says so.
    assert condition(obj, "Serving")["reason"] == "Rolling"
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("iris-production", namespace)
    assert deployment.spec.replicas == 2
    template = deployment.spec.template
    assert template.metadata.annotations["mloop.dev/package-digest"] == obj["status"]["digest"]
    assert template.metadata.annotations["prometheus.io/port"] == "8000"
    pod = template.spec
    assert pod.security_context.run_as_non_root and pod.security_context.seccomp_profile.type == "RuntimeDefault"
    container = pod.containers[0]
    assert container.security_context.read_only_root_filesystem and container.security_context.capabilities.drop == ["ALL"]
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    assert container.resources.limits == {"memory": "512Mi"}
    env = {e.name: e for e in container.env}
    assert env["MLOOP_PACKAGE_URI"].value == obj["status"]["uri"] and env["MLOOP_SAMPLING_RATE"].value == "0.5"
    assert env["MLOOP_S3_SECRET_KEY"].value_from.secret_key_ref.name == "mloop-s3"
    service = client.CoreV1Api(api_client).read_namespaced_service("iris-production", namespace)
    assert service.spec.selector == {"app.kubernetes.io/instance": "iris-production",
                                     "app.kubernetes.io/component": "model-server"}
    first_uid = obj["metadata"]["uid"]
    assert owners(deployment) == owners(service) == [("ModelPackage", "iris-1", first_uid)]
    assert {(f.manager, f.operation) for f in deployment.metadata.managed_fields if f.subresource != "status"} == {
        ("mloop-operator", "Apply")}

    # Promotion of a second version rolls the same Deployment to the new package.
    apply_object(kubectl, namespace, "ModelPackage", "iris-2", {"model": "iris", "trainingRunRef": {"name": "on-job"},
                 "stage": "Production", "serve": {"replicas": 2}, "formats": ["skops", "onnx"]})
    second = packaged(api_client, namespace, "iris-2", timeout=180)
    rolled = wait_for(lambda: (d := client.AppsV1Api(api_client).read_namespaced_deployment("iris-production", namespace))
                      .spec.template.metadata.annotations["mloop.dev/package-digest"] == second["status"]["digest"] and d,
                      timeout=60)
    assert rolled.spec.template.metadata.annotations["mloop.dev/package"] == "iris-2"
    runtime = wait_for(lambda: get_object(api_client, namespace, "modelpackages", "iris-2")["status"].get("serving"),
                       timeout=60)
    assert second["status"]["onnxParity"] == "exact" and runtime["runtime"] == "onnx"
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=iris-2",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "ServerRolled" in events
    second_uid = second["metadata"]["uid"]
    assert owners(rolled) == [("ModelPackage", "iris-2", second_uid)]
    assert owners(service_or_none(api_client, namespace, "iris-production")) == [("ModelPackage", "iris-2", second_uid)]

    # Someone scales the Deployment by hand: the operator puts the package's replicas back.
    edited = client.AppsV1Api(api_client).patch_namespaced_deployment(
        "iris-production", namespace, {"spec": {"replicas": 5}}, field_manager="kubectl-edit")
    assert edited.spec.replicas == 5
    wait_for(lambda: deployment_or_none(api_client, namespace, "iris-production").spec.replicas == 2, timeout=60)

    # iris-2 moves to Staging: it gets a Staging server, and iris-1 (which it had superseded) takes Production back.
    apply_object(kubectl, namespace, "ModelPackage", "iris-2", {"model": "iris", "trainingRunRef": {"name": "on-job"},
                 "stage": "Staging", "serve": {"replicas": 2}, "formats": ["skops", "onnx"]})
    staging = wait_for(lambda: deployment_or_none(api_client, namespace, "iris-staging"), timeout=60)
    assert owners(staging) == [("ModelPackage", "iris-2", second_uid)]
    back = wait_for(lambda: (d := deployment_or_none(api_client, namespace, "iris-production"))
                    and owners(d) == [("ModelPackage", "iris-1", first_uid)] and d, timeout=60)
    assert back.spec.template.metadata.annotations["mloop.dev/package-digest"] == obj["status"]["digest"]
    assert get_object(api_client, namespace, "modelpackages", "iris-1")["status"]["stage"] == "Production"

    # Deleting a package deletes its server with it (owner reference, garbage collector).
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object("mloop.dev", "v1alpha1", namespace,
                                                                        "modelpackages", "iris-1")
    wait_for(lambda: deployment_or_none(api_client, namespace, "iris-production") is None, timeout=60)
    wait_for(lambda: service_or_none(api_client, namespace, "iris-production") is None, timeout=60)

    # Leaving the serving stages deletes the package's Deployment and Service, and the package says so.
    apply_object(kubectl, namespace, "ModelPackage", "iris-2", {"model": "iris", "trainingRunRef": {"name": "on-job"},
                 "stage": "None", "serve": {"replicas": 2}, "formats": ["skops", "onnx"]})
    wait_for(lambda: deployment_or_none(api_client, namespace, "iris-staging") is None, timeout=60)
    wait_for(lambda: service_or_none(api_client, namespace, "iris-staging") is None, timeout=60)
    left = wait_for(lambda: (o := get_object(api_client, namespace, "modelpackages", "iris-2"))
                    and condition(o, "Serving")["reason"] == "NotServing" and o, timeout=60)
    assert "endpoint" not in left["status"] and left["status"]["stage"] == "None"
