"""`mloop demo`: the whole loop on the local stack, headless, ending with a summary and a lineage graph.

Starts (or reuses) the dev stack and a local-executor operator, applies examples/iris/, waits
with progress, sends real predictions and the true labels, lets the retrain policy fire (it trains
on iris-all: the original rows plus the fed-back ones), lets the retrained package shadow Production
on more live traffic until the Requirement's live comparison promotes or refuses it, and prints
what happened. `mloop dev down` stops everything afterwards.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from mloop.cli.output import table_console

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "iris"
console = Console(stderr=True)


class DemoFailed(Exception):
    pass


def _get(plural: str, namespace: str, name: str) -> dict[str, Any]:
    from mloop.k8s.client import get_object

    return get_object(plural, namespace, name) or {}


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def _wait(label: str, check: Callable[[], Any], deadline: float, detail: Callable[[], str] = lambda: "") -> Any:
    with console.status(f"{label}…") as spinner:
        while time.monotonic() < deadline:
            value = check()
            if value:
                console.print(f"[green]✓[/] {label}")
                return value
            spinner.update(f"{label}… {detail()}")
            time.sleep(1)
    raise DemoFailed(f"timed out: {label} ({detail()})")


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - the local endpoint
        return json.loads(resp.read())


def run_loop(namespace: str, deadline: float) -> str:
    """Apply the example, wait for each stage, send traffic and labels; returns the endpoint."""
    from sklearn.datasets import load_iris

    from mloop.k8s.kubectl import kubectl

    kubectl("create", "namespace", namespace)
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES), check=True)
    console.print(f"Applied {EXAMPLES.relative_to(EXAMPLES.parents[1])}/ in namespace {namespace}")
    phase = lambda plural, name: lambda: (_get(plural, namespace, name).get("status") or {}).get("phase", "Pending")  # noqa: E731
    _wait("Dataset iris ingested", lambda: phase("datasets", "iris")() == "Ready", deadline, phase("datasets", "iris"))
    _wait("TrainingRun iris-rf: grid search, then the refit", lambda: phase("trainingruns", "iris-rf")() in
          ("Succeeded", "Failed"), deadline, phase("trainingruns", "iris-rf"))
    if phase("trainingruns", "iris-rf")() != "Succeeded":
        raise DemoFailed(f"TrainingRun iris-rf failed: {_cond(_get('trainingruns', namespace, 'iris-rf'), 'Succeeded')}")
    pkg = _wait("ModelPackage iris-rf-1 packaged, promoted and serving",
                lambda: _cond(p := _get("modelpackages", namespace, "iris-rf-1"), "Serving").get("status") == "True" and p,
                deadline, lambda: _cond(_get("modelpackages", namespace, "iris-rf-1"), "Promoted").get("message", ""))
    endpoint = pkg["status"]["endpoint"]
    iris = load_iris(as_frame=True)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = iris.frame
    with console.status("Sending 150 predictions and their true labels…"):
        for start in range(0, len(frame), 10):
            chunk = frame.iloc[start:start + 10]
            rows = [dict(zip(names, map(float, r))) for r in chunk.iloc[:, :4].itertuples(index=False)]
            answer = _post(f"{endpoint}/predict", {"instances": rows})
            labels = [str(iris.target_names[t]) for t in chunk["target"]]
            _post(f"{endpoint}/feedback", {"feedback": [{"id": i, "label": y} for i, y in zip(answer["ids"], labels)]})
    console.print(f"[green]✓[/] 150 predictions served by {endpoint}, 150 labels fed back")
    _wait("Collection Dataset iris-feedback cut a version", lambda: (_get("datasets", namespace, "iris-feedback")
          .get("status") or {}).get("version"), deadline,
          lambda: _cond(_get("datasets", namespace, "iris-feedback"), "Ready").get("message", ""))
    feedback = lambda: (_get("datasets", namespace, "iris-feedback").get("status") or {}).get("digest")  # noqa: E731
    _wait("Dataset iris-all: the original rows plus the fed-back ones", lambda: feedback() in {
          p["digest"] for p in (_get("datasets", namespace, "iris-all").get("status") or {}).get("parents") or []},
          deadline, lambda: _cond(_get("datasets", namespace, "iris-all"), "Ready").get("message", ""))
    retrain = _wait("Retrain policy fired", lambda: ((_get("requirements", namespace, "iris-species").get("status") or {})
                    .get("retrains") or [None])[0], deadline)
    live = (_get("requirements", namespace, "iris-species").get("spec") or {}).get("live")
    if live:
        _wait(f"Retrained {retrain['run']} packaged", lambda: phase("modelpackages", retrain["package"])() == "Packaged",
              deadline, phase("trainingruns", retrain["run"]))
        shadow_phase(namespace, endpoint, retrain["package"], live, deadline)
    _wait(f"Retrained {retrain['run']} packaged and judged against production",
          lambda: ((_get("requirements", namespace, "iris-species").get("status") or {}).get("retrains") or [{}])[0]
          .get("outcome", "pending") != "pending", deadline, phase("trainingruns", retrain["run"]))
    # A promoted retraining restarts the local server on the new version: wait until it answers again.
    _wait(f"Endpoint {endpoint} ready", lambda: _ready(endpoint), deadline)
    return endpoint


def shadow_phase(namespace: str, endpoint: str, candidate: str, live: dict[str, Any], deadline: float) -> None:
    """The retrained package shadows Production: more live traffic and its labels, until both models are scored on
    the rows the Requirement asks for and the gate has judged the live comparison."""
    import numpy as np
    from sklearn.datasets import load_iris

    min_rows = int(live.get("minRows", 100))
    shadow = lambda: (_get("modelpackages", namespace, candidate).get("status") or {}).get("shadow") or {}  # noqa: E731
    production = lambda: (_get("modelpackages", namespace, "iris-rf-1").get("status") or {})  # noqa: E731
    _wait(f"{candidate} shadows iris-rf-1: the Production server copies each request to it",
          lambda: shadow().get("state") == "Shadowing" and candidate in {
              t["package"] for t in production().get("shadowTargets") or []}, deadline,
          lambda: shadow().get("state", "Starting"))
    iris = load_iris(as_frame=True)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    order = np.random.default_rng(17).permutation(len(iris.frame))[:min_rows + 10]
    with console.status(f"Sending {len(order)} more predictions and their labels…"):
        for start in range(0, len(order), 10):
            chunk = iris.frame.iloc[order[start:start + 10]]
            rows = [dict(zip(names, map(float, r))) for r in chunk.iloc[:, :4].itertuples(index=False)]
            answer = _post(f"{endpoint}/predict", {"instances": rows})
            labels = [str(iris.target_names[t]) for t in chunk["target"]]
            _post(f"{endpoint}/feedback", {"feedback": [{"id": i, "label": y} for i, y in zip(answer["ids"], labels)]})
    console.print(f"[green]✓[/] {len(order)} more predictions served by iris-rf-1 and shadowed by {candidate}, "
                  f"{len(order)} labels fed back")
    _wait(f"{candidate} and iris-rf-1 scored on the same {min_rows}+ labelled live rows",
          lambda: shadow().get("rows", 0) >= min_rows, deadline, lambda: f"{shadow().get('rows', 0)} rows so far")

    def judged() -> str | None:
        status = _get("modelpackages", namespace, candidate).get("status") or {}
        if status.get("stage") == "Production":  # its criterion now reads "holds Production": the status keeps the score
            sh = status.get("shadow") or {}
            return (f"promoted to Production: {sh.get('metric')} {sh.get('candidateValue'):.4g} vs "
                    f"{sh.get('productionValue'):.4g} of iris-rf-1 on {sh.get('rows')} live rows")
        result = next((r for r in status.get("requirements") or [] if r["criterion"].startswith("live:")), {})
        message = result.get("message", "")
        return f"refused Production: {message}" if "live rows:" in message and result.get("passed") is False else None

    verdict = _wait("Promotion gate judged the live comparison", judged, deadline)
    console.print(f"  {candidate}: {verdict}")


def _ready(endpoint: str) -> bool:
    from mloop.serving.local import ready

    return ready(endpoint, timeout=5)


def facts(namespace: str, endpoint: str, lineage_file: str) -> dict[str, Any]:
    from mloop.cli.lineage import build_graph, load_objects, render, resolve_start, to_dot, walk

    objects = load_objects(namespace)
    summary: dict[str, Any] = {"namespace": namespace, "endpoint": endpoint}
    summary["datasets"] = [{"name": d["metadata"]["name"], "versions": [
        {"version": v["version"], "rows": v["rows"]} for v in (d.get("status") or {}).get("versions") or []],
        "parents": [f"{p['name']}@{p['version']}" for p in (d.get("status") or {}).get("parents") or []]}
        for d in objects["datasets"]]
    summary["runs"] = [{"name": r["metadata"]["name"], "phase": (r.get("status") or {}).get("phase"),
                        "dataset": (r.get("status") or {}).get("dataset"),
                        "metric": (r.get("status") or {}).get("primaryMetric")} for r in objects["trainingruns"]]
    summary["packages"] = [{"name": p["metadata"]["name"], "model": p["spec"]["model"],
                            "version": (p.get("status") or {}).get("version"), "stage": (p.get("status") or {}).get("stage"),
                            "promoted": _cond(p, "Promoted").get("message", ""),
                            "shadow": (p.get("status") or {}).get("shadow"),
                            "live": next((r for r in (p.get("status") or {}).get("requirements") or []
                                          if r["criterion"].startswith("live:")), None)}
                           for p in objects["modelpackages"]]
    summary["requirements"] = [{"name": q["metadata"]["name"], "phase": (q.get("status") or {}).get("phase"),
                                "satisfied": _cond(q, "Satisfied").get("message", ""),
                                "retrains": (q.get("status") or {}).get("retrains") or []} for q in objects["requirements"]]
    summary["endpointReady"] = _ready(endpoint)
    graph = build_graph(objects)
    production = next((p["name"] for p in summary["packages"] if p["stage"] == "Production"), "iris-rf-1")
    start = resolve_start(graph, "modelpackage", production)
    _, _, sub = walk(graph, start)  # from the production package both ways: the whole loop
    try:
        Path(lineage_file).write_bytes(render(to_dot(start, sub), Path(lineage_file).suffix.lstrip(".") or "svg"))
        summary["lineageFile"] = str(Path(lineage_file).resolve())
    except (FileNotFoundError, OSError) as err:
        Path(lineage_file).with_suffix(".dot").write_text(to_dot(start, sub))
        summary["lineageFile"] = str(Path(lineage_file).with_suffix(".dot").resolve())
        summary["lineageNote"] = str(err)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    out = table_console()
    table = Table(title="Dataset versions")
    for c in ("dataset", "version", "rows", "made from"):
        table.add_column(c)
    for d in summary["datasets"]:
        for i, v in enumerate(d["versions"]):
            current = i == len(d["versions"]) - 1
            table.add_row(d["name"], v["version"], str(v["rows"]), ", ".join(d["parents"]) if current else "")
    out.print(table)
    table = Table(title="Training runs")
    for c in ("run", "phase", "dataset", "primary metric"):
        table.add_column(c)
    for r in summary["runs"]:
        table.add_row(r["name"], str(r["phase"]), str(r["dataset"]), str(r["metric"]))
    out.print(table)
    table = Table(title="Model packages")
    for c in ("package", "model", "version", "stage", "gate"):
        table.add_column(c)
    for p in summary["packages"]:
        table.add_row(p["name"], p["model"], str(p["version"]), str(p["stage"]), p["promoted"])
    out.print(table)
    for p in summary["packages"]:
        if p["shadow"]:
            sh = p["shadow"]
            out.print(f"Shadow [bold]{p['name']}[/] against {sh.get('production')}: {sh.get('rows', 0)} labelled live "
                      f"rows, {sh.get('metric')} {sh.get('candidateValue')} vs {sh.get('productionValue')} "
                      f"({sh.get('state')}); gate: {(p['live'] or {}).get('message', '')}")
    for q in summary["requirements"]:
        out.print(f"Requirement [bold]{q['name']}[/]: {q['phase']} — {q['satisfied']}")
        for r in q["retrains"]:
            data = r.get("trainedOn") or r["datasetVersion"]
            out.print(f"  retrain {r['run']} on {data} ({r['reason']}): {r.get('outcome')}")
    out.print(f"Endpoint: {summary['endpoint']} (ready: {summary['endpointReady']})")
    out.print(f"Lineage graph: {summary['lineageFile']}")
    out.print("Stop everything with `mloop dev down`.")


def demo(namespace: str, output: str, lineage_file: str, timeout: float) -> int:
    from mloop.cli import dev
    from mloop.config import get_settings

    if not EXAMPLES.is_dir():
        console.print(f"[red]examples not found at {EXAMPLES}[/]: run the demo from a checkout of the project")
        return 2
    deadline = time.monotonic() + timeout
    info = dev.ensure_stack(with_operator=True)
    os.environ.update(info.env())
    get_settings.cache_clear()
    try:
        endpoint = run_loop(namespace, deadline)
    except DemoFailed as err:
        console.print(f"[red]demo failed:[/] {err}; see {dev.state_dir() / 'logs' / 'operator.log'}")
        return 1
    summary = facts(namespace, endpoint, lineage_file)
    if output == "json":
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0
