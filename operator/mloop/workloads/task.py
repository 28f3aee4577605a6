"""What every task shares: its spec and result in S3, its log, and exit codes the executors understand."""

from __future__ import annotations

import io
import logging
import sys
import traceback
from typing import Any, Callable

from mloop.api.common import iso, utcnow
from mloop.api.tasks import EXIT_CRASH, EXIT_OK, EXIT_STORAGE
from mloop.storage.artifacts import Store, StorageUnavailable


def now_iso() -> str:
    return iso(utcnow())


def run_task(name: str, prefix: str, body: Callable[[dict[str, Any], Store, logging.Logger], dict[str, Any]],
             result_key: str = "result.json", log_key: str = "log.txt") -> int:
    """Read spec.json under prefix, run body, write the result then the log. Returns the exit code."""
    buffer = io.StringIO()
    log = logging.getLogger(f"mloop.{name}")
    log.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.StreamHandler(buffer)):
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    store = Store.from_settings(retries=3)
    try:
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


def main_for(name: str, body: Callable[[dict[str, Any], Store, logging.Logger], dict[str, Any]],
             argv: list[str] | None = None) -> int:
    """`python -m mloop.workloads.<name> <task prefix>` for a workload that is one task."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print(f"usage: python -m mloop.workloads.{name} <task prefix>", file=sys.stderr)
        return 2
    return run_task(name, args[0], body)
