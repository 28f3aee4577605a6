"""boto3 clients configured for S3-compatible servers."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def make_client(endpoint: str | None, access_key: str | None, secret_key: str | None, region: str = "us-east-1",
                timeout: float = 10.0, retries: int = 2) -> Any:
    """Path-style addressing and checksums only when required: what S3-compatible servers accept."""
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": retries, "mode": "standard"},
        max_pool_connections=48,  # one per handler thread and some to spare (boto3 keeps 10)
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )
