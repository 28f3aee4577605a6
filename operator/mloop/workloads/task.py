"""What every task shares: its spec and result in S3, its log, and exit codes the executors understand."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import traceback
from typing import Any, Callable

from mloop.api.common import iso, utcnow
from mloop.api.tasks import EXIT_CRASH, EXIT_OK, EXIT_STORAGE, TASK_SPEC_ENV
from mloop.storage.artifacts import AlreadyExists, Store, StorageUnavailable


def now_iso() -> str:
    return iso(utcnow())


def run_task(name: str, prefix: str, body: Callable[[dict[str, Any], Store, logging.Logger], dict[str, Any]],
             result_key: str = "result.json", log_key: str = "log.txt") -> int:
    """Read spec.json under prefix, run body, write the result then the log. Returns the exit code.

    A spec carried in the environment (TASK_SPEC_ENV) is written to spec.json first, once (write-once: racing
    indexes of one Job, or a retry, find it there), so the tasks and readers after this one find it in S3."""
    buffer = io.StringIO()
    log = logging.getLogger(f"mloop.{name}")
    log.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.StreamHandler(buffer)):
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    store = Store.from_settings(retries=3)
    try:
        spec = _carried_spec(store, prefix)
        if spec is None:
            spec = store.get_json(prefix + "spec.json")
        log.info("%s task started for %s/%s", name, spec.get("namespace"), spec.get("name"))
        result = body(spec, store, log)
        code = EXIT_OK
    except StorageUnavailable as err:
        log.error("storage unavailable: %s", err)
        return EXIT_STORAGE
    except Exception as err:  # a crash still leaves a result that says why
        log.error("task crashed: %s\n%s", err, traceback.format_exc())
        result = {"status": "Failed", "reason": "TaskCrashed", "message": f"{type(err).__name__}: {str(err)[:500]}"}
        code = EXIT_CRASH
    result["finishedAt"] = now_iso()
    try:
        store.put_json(prefix + result_key, result, overwrite=True)
        store.put(prefix + log_key, buffer.getvalue().encode(), overwrite=True, content_type="text/plain")
    except StorageUnavailable as err:
        log.error("storage unavailable while writing the result: %s", err)
        return EXIT_STORAGE
    log.info("%s task finished: %s %s", name, result.get("status"), result.get("reason", ""))
    return code


def _carried_spec(store: Store, prefix: str) -> dict[str, Any] | None:
    carried = os.environ.get(TASK_SPEC_ENV)
    if not carried:
        return None
    spec = json.loads(carried)
    try:
        store.put_json(prefix + "spec.json", spec)
    except AlreadyExists:
        pass  # the same spec, written by another index of this Job or by the task this one retries
    return spec


def main_for(name: str, body: Callable[[dict[str, Any], Store, logging.Logger], dict[str, Any]],
             argv: list[str] | None = None) -> int:
    """`python -m mloop.workloads.<name> <task prefix>` for a workload that is one task."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print(f"usage: python -m mloop.workloads.{name} <task prefix>", file=sys.stderr)
        return 2
    return run_task(name, args[0], body)
