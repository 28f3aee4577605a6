"""The artifact store: one bucket, the layout of DESIGN §3, never-overwrite writes, digest-checked reads."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from mloop.config import Settings, get_settings
from mloop.storage.s3 import make_client


class StorageUnavailable(Exception):
    """The S3 server cannot be reached or answers with a server error: retry later."""


class AlreadyExists(Exception):
    """A never-overwrite write found the key taken."""


class DigestMismatch(Exception):
    """An artifact's bytes do not match the digest recorded for it."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_outage(err: Exception) -> bool:
    if isinstance(err, (EndpointConnectionError, BotoCoreError)) and not isinstance(err, ClientError):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500
    return False


@dataclass
class Store:
    client: Any
    bucket: str

    @classmethod
    def from_settings(cls, settings: Settings | None = None, timeout: float = 10.0, retries: int = 2) -> Store:
        s = settings or get_settings()
        client = make_client(
            s.s3_endpoint,
            s.s3_access_key.get_secret_value() if s.s3_access_key else None,
            s.s3_secret_key.get_secret_value() if s.s3_secret_key else None,
            s.s3_region,
            timeout=timeout,
            retries=retries,
        )
        return cls(client, s.bucket)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as err:
            if _is_outage(err):
                raise StorageUnavailable(f"S3 at {self.client.meta.endpoint_url} is unavailable: {err}") from err
            raise

    def put(self, key: str, data: bytes, overwrite: bool = False, content_type: str = "application/octet-stream") -> str:
        """Write bytes; without overwrite an existing key raises AlreadyExists. Returns the sha256 hex."""
        kwargs: dict[str, Any] = {"Key": key, "Body": data, "ContentType": content_type}
        if not overwrite:
            kwargs["IfNoneMatch"] = "*"
        try:
            self._call(self.client.put_object, **kwargs)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                raise AlreadyExists(key) from err
            raise
        return sha256_hex(data)

    def put_json(self, key: str, value: Any, overwrite: bool = False) -> str:
        data = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
        return self.put(key, data, overwrite=overwrite, content_type="application/json")

    def get(self, key: str, expected_sha256: str | None = None) -> bytes:
        data = self._call(self.client.get_object, Key=key)["Body"].read()
        if expected_sha256 is not None and sha256_hex(data) != expected_sha256.removeprefix("sha256:"):
            raise DigestMismatch(f"{self.uri(key)}: sha256 {sha256_hex(data)[:12]}… does not match "
                                 f"the recorded {expected_sha256.removeprefix('sha256:')[:12]}…")
        return data

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def get_json_or_none(self, key: str) -> Any | None:
        try:
            return self.get_json(key)
        except ClientError as err:
            if missing(err):
                return None
            raise

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.head_object, Key=key)
            return True
        except ClientError as err:
            if missing(err):
                return False
            raise

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(self.client.list_objects_v2, **kwargs)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page.get("NextContinuationToken")

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under prefix, manifest first so a half-deleted version is never read."""
        keys = sorted(self.list_keys(prefix), key=lambda k: not k.endswith("manifest.json"))
        for key in keys:
            self._call(self.client.delete_object, Key=key)
        return len(keys)

    def ping(self) -> None:
        self._call(self.client.head_bucket)


_operator_store: tuple[int, Store] | None = None


def operator_store() -> Store:
    """The operator's one Store: a boto3 client is costly to build and safe to share across handler threads.

    Rebuilt when the settings are (get_settings() is cached, so a new object means new settings).
    """
    global _operator_store
    settings = get_settings()
    if _operator_store is None or _operator_store[0] != id(settings):
        _operator_store = (id(settings), Store.from_settings(settings, timeout=5, retries=1))
    return _operator_store[1]


def missing(err: ClientError) -> bool:
    """The object is not there (GET says NoSuchKey, HEAD a bare 404)."""
    return err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")
