"""`mloop runs compare`: parameters and metrics of matching runs, best first."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from typing import Any

import yaml
from rich.table import Table

from mloop.api.metrics import LOWER_IS_BETTER
from mloop.cli.output import table_console


def list_runs(selector: str | None, namespace: str | None) -> list[dict[str, Any]]:
    from mloop.k8s.client import custom_objects

    api = custom_objects()
    kwargs = {"label_selector": selector} if selector else {}
    if namespace is None:
        items = api.list_cluster_custom_object("mloop.dev", "v1alpha1", "trainingruns", **kwargs)["items"]
    else:
        items = api.list_namespaced_custom_object("mloop.dev", "v1alpha1", namespace, "trainingruns", **kwargs)["items"]
    return items


def rows_of(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """One flat row per run (params and metrics as columns), sorted by the runs' common primary metric."""
    primaries = Counter(str(r.get("status", {}).get("primaryMetric", "")).split("=")[0] for r in runs)
    primaries.pop("", None)
    primary = primaries.most_common(1)[0][0] if primaries else None
    rows = []
    for run in runs:
        spec, status = run["spec"], run.get("status", {})
        params = {**(spec.get("estimator", {}).get("params") or {}), **((status.get("bestTrial") or {}).get("params") or {})}
        rows.append({
            "namespace": run["metadata"]["namespace"], "name": run["metadata"]["name"], "phase": status.get("phase", ""),
            "dataset": status.get("dataset", ""), "estimator": spec["estimator"]["name"],
            **{f"param.{k}": v for k, v in sorted(params.items())},
            **{f"metric.{k}": v for k, v in sorted((status.get("metrics") or {}).items())},
        })
    if primary:
        key = f"metric.{primary}"
        worst = float("inf") if primary in LOWER_IS_BETTER else float("-inf")
        rows.sort(key=lambda r: r.get(key, worst), reverse=primary not in LOWER_IS_BETTER)
    return rows, primary


def compare(selector: str | None, namespace: str | None, output: str, csv_path: str | None) -> int:
    runs = list_runs(selector, namespace)
    rows, primary = rows_of(runs)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if csv_path:
        with open(csv_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    if output == "json":
        print(json.dumps({"primaryMetric": primary, "runs": rows}, indent=2, default=str))
    elif output == "yaml":
        print(yaml.safe_dump({"primaryMetric": primary, "runs": rows}, sort_keys=False))
    else:
        shown = [c for c in columns if c not in ("namespace",) and not (c.startswith("metric.") and c.endswith("_std"))]
        if primary and f"metric.{primary}" in shown:
            shown.remove(f"metric.{primary}")
            shown.insert(4, f"metric.{primary}")
        table = Table(title=f"{len(rows)} runs" + (f", best {primary} first" if primary else ""))
        for column in shown:
            table.add_column(column.removeprefix("metric.").removeprefix("param."),
                             justify="right" if column.startswith("metric.") else "left")
        for row in rows:
            table.add_row(*[_fmt(row.get(c)) for c in shown])
        table_console().print(table)
    if not rows:
        print("no TrainingRuns match", file=sys.stderr)
        return 1
    return 0


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
