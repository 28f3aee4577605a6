"""Serving with the kubernetes executor: a restricted Deployment and a Service named after model and stage."""

from __future__ import annotations

from kubernetes import client

from tests.helpers import apply_object, condition, get_object, wait_for
from tests.integration.test_modelpackage import IRIS_DS, packaged
from tests.integration.test_trainingrun import IRIS_RUN, succeeded


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

    # Promotion of a second version rolls the same Deployment to the new package.
    apply_object(kubectl, namespace, "ModelPackage", "iris-2", {"model": "iris", "trainingRunRef": {"name": "on-job"},
                 "stage": "Production", "serve": {"replicas": 2}})
    second = packaged(api_client, namespace, "iris-2", timeout=180)
    rolled = wait_for(lambda: (d := client.AppsV1Api(api_client).read_namespaced_deployment("iris-production", namespace))
                      .spec.template.metadata.annotations["mloop.dev/package-digest"] == second["status"]["digest"] and d,
                      timeout=60)
    assert rolled.spec.template.metadata.annotations["mloop.dev/package"] == "iris-2"
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=iris-2",
                     "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "ServerRolled" in events
