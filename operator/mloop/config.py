"""Operator and workload settings, from MLOOP_* environment variables (the ConfigMap in a cluster)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOOP_", extra="ignore")

    executor: Literal["kubernetes", "local"] = Field(default="kubernetes", description="Default task executor.")
    s3_endpoint: str | None = Field(default=None, description="S3 endpoint URL; empty means AWS.")
    s3_region: str = Field(default="us-east-1")
    bucket: str = Field(default="mloop")
    s3_access_key: SecretStr | None = Field(default=None)
    s3_secret_key: SecretStr | None = Field(default=None)
    s3_secret_name: str = Field(
        default="mloop-s3", description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY that task pods use."
    )
    image: str = Field(default="mloop:dev", description="Image of task and server pods.")
    namespaces: str = Field(default="", description="Comma-separated namespaces to watch; empty watches all.")
    posting_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest log level kopf posts as a Kubernetes event."
    )
    peering: str = Field(default="", description="kopf peering name; empty runs standalone (one replica).")
    liveness_host: str = Field(
        default="127.0.0.1", description="Address /healthz and /metrics listen on; in a pod, the pod IP.")
    liveness_port: int = Field(default=8080, description="Port of the /healthz endpoint; 0 turns it off.")
    metrics_port: int = Field(default=0, description="Port of the Prometheus /metrics endpoint; 0 turns it off.")
    max_workers: int = Field(default=20, description="Threads for the synchronous handlers.")
    poll_interval: float = Field(default=2.0, description="Seconds between checks of running tasks and schedules.")
    local_dir: str = Field(
        default="", description="Where the local executor keeps task records and logs and local model servers their "
                                "state; empty: `local` in the dev stack's folder.")
    task_ttl_seconds: int = Field(default=86400, description="Finished Jobs are removed after this long.")
    mlflow_tracking_uri: str = Field(
        default="", description="MLflow tracking server succeeded TrainingRuns are exported to; empty: none.")
    mlflow_experiment: str = Field(default="", description="Experiment of runs that name none; empty: the namespace.")
    mlflow_allowed_uris: str = Field(
        default="", description="Comma-separated URL prefixes a run's own spec.mlflow.trackingUri may start with; "
                                "empty: runs may use only the operator's tracking server.")
    mlflow_retry_max_seconds: float = Field(default=300.0, gt=0, description="Longest wait between export retries.")
    openlineage_transport: Literal["", "console", "file", "http"] = Field(
        default="", description="Where OpenLineage run events go; empty sends none.")
    openlineage_url: str = Field(default="", description="Base URL of the OpenLineage HTTP endpoint (e.g. Marquez).")
    openlineage_api_key: SecretStr | None = Field(default=None, description="Bearer API key for the HTTP endpoint.")
    openlineage_file: str = Field(default="", description="File the file transport appends events to, one per line.")
    openlineage_namespace: str = Field(default="mloop", description="OpenLineage namespace of mloop's jobs.")
    cloudevents_sink: str = Field(default="", description="URL CloudEvents of transitions are POSTed to; empty: none.")
    cloudevents_retries: int = Field(default=5, ge=0, le=20, description="Retries of a failed delivery, with backoff.")
    cloudevents_timeout: float = Field(default=5.0, gt=0, description="Seconds one delivery may take.")
    leader_election: bool = Field(
        default=False, description="Reconcile only while holding a coordination.k8s.io Lease (several replicas).")
    leader_election_name: str = Field(default="mloop-operator", description="Name of the Lease.")
    leader_election_namespace: str = Field(
        default="", description="Namespace of the Lease; empty: the pod's (POD_NAMESPACE, then the service "
                                "account's), else mloop-system.")
    leader_election_lease_seconds: int = Field(
        default=15, ge=1, description="How long a standby waits after the leader's last renewal before taking over.")
    leader_election_renew_deadline_seconds: float = Field(
        default=10.0, gt=0, description="The leader exits when it could not renew for this long.")
    leader_election_retry_seconds: float = Field(
        default=2.0, gt=0, description="Seconds between attempts to acquire or renew the Lease.")

    @model_validator(mode="after")
    def _lease_timing(self) -> Settings:
        # A leader must give up before a standby may take over, and retry more than once before it gives up.
        if not (self.leader_election_lease_seconds > self.leader_election_renew_deadline_seconds
                > self.leader_election_retry_seconds):
            raise ValueError("leader election needs lease seconds > renew deadline seconds > retry seconds")
        return self

    @property
    def watched_namespaces(self) -> list[str]:
        return [ns.strip() for ns in self.namespaces.split(",") if ns.strip()]

    @property
    def local_path(self) -> Path:
        return Path(self.local_dir) if self.local_dir else stack_local_dir(dev_dir())


def dev_dir() -> Path:
    """The folder of the dev stack (`mloop dev`): $MLOOP_DEV_DIR, else under the user's state directory."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(os.environ.get("MLOOP_DEV_DIR") or Path(base) / "mloop" / "dev")


def stack_local_dir(stack_dir: Path) -> Path:
    """Local tasks and model servers of one dev stack: one stack's `mloop dev down` must not stop another's."""
    return stack_dir / "local"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
