"""The Job a task becomes: restricted, owned, deterministic, credentials by reference only."""

from __future__ import annotations

from mloop.builders.job import build_job
from mloop.config import Settings
from mloop.executors.base import Task

SETTINGS = Settings(s3_endpoint="http://s3:9000", s3_access_key="AKIA-SECRET", s3_secret_key="very-secret",
                    image="mloop:1.2.3")
TASK = Task(name="train-iris-1234abcd", namespace="ml", kind="train", command=["python", "-m", "x"], prefix="p/",
            owner={"apiVersion": "mloop.dev/v1alpha1", "kind": "TrainingRun", "name": "iris", "uid": "u-1"},
            deadline_seconds=600, backoff_limit=2, resources={"limits": {"memory": "1Gi"}})


def test_job_shape() -> None:
    job = build_job(TASK, SETTINGS)
    assert job["metadata"]["name"] == "train-iris-1234abcd"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["metadata"]["labels"]["mloop.dev/trainingrun"] == "iris"
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 600
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mloop:1.2.3" and container["resources"] == {"limits": {"memory": "1Gi"}}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_secrets_are_referenced_never_copied() -> None:
    text = repr(build_job(TASK, SETTINGS))
    assert "very-secret" not in text and "AKIA-SECRET" not in text
    assert "secretKeyRef" in text


def test_indexed_job_for_fan_out() -> None:
    from dataclasses import replace

    job = build_job(replace(TASK, completions=6, parallelism=2), SETTINGS)
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["backoffLimitPerIndex"]) == (6, 2, 2)


def test_a_carried_spec_travels_in_the_env_and_a_task_without_one_reads_s3() -> None:
    from dataclasses import replace

    from mloop.api.tasks import TASK_SPEC_ENV

    def env(task: Task) -> dict:
        return {e["name"]: e.get("value") for e in build_job(task, SETTINGS)["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert env(replace(TASK, spec='{"uid":"u-1"}'))[TASK_SPEC_ENV] == '{"uid":"u-1"}'
    assert TASK_SPEC_ENV not in env(TASK)
