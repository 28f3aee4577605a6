"""`mloop status`: every mloop object in a namespace, with its phase and key fields."""

from __future__ import annotations

import json
from typing import Any

import yaml
from rich.table import Table

from mloop.cli.output import table_console

PLURALS = ("requirements", "datasets", "trainingruns", "modelpackages")


def summarize(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    wanted = "Satisfied" if plural == "requirements" else "Ready"
    ready = next((c for c in status.get("conditions", []) if c["type"] == wanted), {})
    key = {
        "requirements": lambda: f"candidate {(status.get('candidate') or {}).get('subject', '-')}, "
                                f"production {(status.get('production') or {}).get('subject', '-')}",
        "datasets": lambda: f"version {status.get('version', '-')}, {status.get('rows', '-')} rows, "
                            f"{len(status.get('versions') or [])} version(s)",
        "trainingruns": lambda: f"{status.get('dataset', '-')} {status.get('primaryMetric', '')}".strip(),
        "modelpackages": lambda: f"{obj['spec']['model']} v{status.get('version', '-')} stage {status.get('stage', '-')}"
                                 + (f" at {status['endpoint']}" if status.get("endpoint") else ""),
    }[plural]()
    return {"kind": obj["kind"], "name": obj["metadata"]["name"], "phase": status.get("phase", ""),
            "ready": ready.get("status", ""), "reason": ready.get("reason", ""), "details": key}


def collect(namespace: str) -> list[dict[str, Any]]:
    from mloop.k8s.client import custom_objects

    api = custom_objects()
    rows = []
    for plural in PLURALS:
        for obj in api.list_namespaced_custom_object("mloop.dev", "v1alpha1", namespace, plural)["items"]:
            rows.append(summarize(plural, obj))
    return rows


def status(namespace: str, output: str) -> int:
    rows = collect(namespace)
    if output == "json":
        print(json.dumps(rows, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(rows, sort_keys=False))
    else:
        table = Table(title=f"mloop objects in {namespace}")
        for column in ("kind", "name", "phase", "ready", "reason", "details"):
            table.add_column(column)
        for row in rows:
            table.add_row(*[str(row[c]) for c in ("kind", "name", "phase", "ready", "reason", "details")])
        table_console().print(table)
    failed = [r for r in rows if r["ready"] == "False"]
    return 1 if failed else 0
