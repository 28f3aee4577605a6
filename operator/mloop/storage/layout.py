"""Where everything lives in the bucket: the one place that builds object keys (DESIGN §3).

Version folders (datasets/, runs/, packages/) are write-once; manifest.json is written last.
"""

from __future__ import annotations


def dataset_prefix(namespace: str, name: str, digest_hex: str) -> str:
    return f"datasets/{namespace}/{name}/{digest_hex.removeprefix('sha256:')}/"


def run_prefix(namespace: str, name: str, uid: str) -> str:
    return f"runs/{namespace}/{name}/{uid}/"


def package_prefix(namespace: str, model: str, version: int) -> str:
    return f"packages/{namespace}/{model}/{version}/"


def package_claim(namespace: str, model: str, version: int) -> str:
    """The write-once object that gives one package a model's version number."""
    return package_prefix(namespace, model, version) + "claim.json"


def task_prefix(namespace: str, task: str) -> str:
    return f"tasks/{namespace}/{task}/"


def cache_entry(namespace: str, key: str) -> str:
    """A succeeded run recorded under its cache key, for later runs with cachePolicy: reuse."""
    return f"cache/{namespace}/{key}.json"


def collected_prefix(namespace: str, model: str, version: int | None = None) -> str:
    """Predictions a model server logged: all versions of a model, or one."""
    return f"collected/{namespace}/{model}/" + (f"{version}/" if version is not None else "")


def feedback_prefix(namespace: str, model: str) -> str:
    return f"feedback/{namespace}/{model}/"


def live_score(namespace: str, model: str, candidate_version: int, production_version: int) -> str:
    """A shadowing candidate scored against Production on the same labelled live rows; rewritten as rows come in."""
    return f"shadow/{namespace}/{model}/{candidate_version}-vs-{production_version}.json"


def live_rows(namespace: str, model: str, candidate_version: int, production_version: int) -> str:
    """The rows live scoring has joined so far and the objects they came from: each pass reads only new objects."""
    return f"shadow/{namespace}/{model}/{candidate_version}-vs-{production_version}.rows.parquet"


def drift_entry(namespace: str, before_hex: str, after_hex: str) -> str:
    """Drift between two dataset versions, computed once per pair (versions are immutable)."""
    return f"drift/{namespace}/{before_hex[:24]}-{after_hex[:24]}.json"


def key_of(uri: str) -> str:
    """The object key of an s3://bucket/key URI."""
    return uri.split("/", 3)[3]


def tombstone(prefix: str) -> str:
    """Left in a version or task folder whose data was deleted: what was there, and who removed it."""
    return prefix + "tombstone.json"


def erasure_salt(namespace: str) -> str:
    """The namespace's salt for subject hashes, written once; standing filters of every request share it."""
    return f"erasure/{namespace}/salt.json"


def erasure_filters(namespace: str, dataset: str) -> str:
    """Standing filters of a Dataset: one write-once object per request, read by every later ingestion."""
    return f"erasure/{namespace}/filters/{dataset}/"


def erasure_audit(namespace: str, name: str, uid: str) -> str:
    return f"erasure/{namespace}/requests/{name}/{uid}/audit.json"


def retention_audit(namespace: str, dataset: str, digest_hex: str) -> str:
    """The audit record of a version deleted by retention (write-once), beside erasure's."""
    return f"erasure/{namespace}/retention/{dataset}/{digest_hex.removeprefix('sha256:')}.json"
