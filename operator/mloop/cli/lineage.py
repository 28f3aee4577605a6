"""`mloop lineage <kind>/<name>`: requirement, dataset versions, runs and packages, both directions.

Formats: text, Graphviz DOT, and SVG or PNG (rendered by Graphviz's `dot`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from mloop.api.kinds import kind_by_name

SHAPES = {"requirement": "note", "dataset": "cylinder", "trainingrun": "box", "modelpackage": "component"}


@dataclass
class Graph:
    labels: dict[str, str] = field(default_factory=dict)
    edges: set[tuple[str, str, str]] = field(default_factory=set)
    current: dict[str, str] = field(default_factory=dict)  # dataset/<name> -> its current version's node

    def node(self, node: str, label: str = "") -> str:
        self.labels.setdefault(node, label)
        if label:
            self.labels[node] = label
        return node

    def edge(self, src: str, dst: str, label: str) -> None:
        self.edges.add((src, dst, label))


def build_graph(objects: dict[str, list[dict[str, Any]]]) -> Graph:
    """All lineage in a namespace, from the objects' specs and statuses."""
    g = Graph()
    for req in objects["requirements"]:
        g.node(f"requirement/{req['metadata']['name']}", req["spec"].get("title", ""))
    for ds in objects["datasets"]:
        name, status = ds["metadata"]["name"], ds.get("status") or {}
        versions = [v for v in status.get("versions") or []]
        previous = None
        for v in versions:
            gone = f" (erased by erasurerequest/{v['erasedBy']})" if v.get("erasedBy") else (
                " (expired)" if v.get("expired") else "")
            node = g.node(f"dataset/{name}@{v['version']}", f"{v['rows']} rows{gone}")
            if previous:
                g.edge(previous, node, "next version")
            previous = node
        current = f"dataset/{name}@{status['version']}" if status.get("version") else g.node(f"dataset/{name}", "no version yet")
        g.current[f"dataset/{name}"] = current
        for ref in ds["spec"].get("requirementRefs") or []:
            g.edge(f"requirement/{ref['name']}", current, "data for")
        parent = status.get("sourceVersion") or ""
        if ds["spec"]["source"].get("derived"):
            # Every parent of a union or join; an older status without parents names its one parent in sourceVersion.
            made_from = [f"{p['name']}@{p['version']}" for p in status.get("parents") or []] or [
                p for p in parent.split(",") if "@" in p]
            for source in made_from:
                g.edge(f"dataset/{source}", current, "derived")
        if ds["spec"]["source"].get("collection") and parent.startswith("collected:"):
            for package in filter(None, parent.split(":", 2)[2].split(",")):
                g.edge(f"modelpackage/{package}", current, "predictions + feedback")
    for run in objects["trainingruns"]:
        name, status = run["metadata"]["name"], run.get("status") or {}
        erased = any(c.get("type") == "TrainedOnErasedData" and c.get("status") == "True"
                     for c in status.get("conditions") or [])
        node = g.node(f"trainingrun/{name}", " ".join(x for x in (status.get("phase"), status.get("primaryMetric"),
                                                                  "TrainedOnErasedData" if erased else None) if x))
        if status.get("dataset"):
            g.edge(f"dataset/{status['dataset']}", node, "trained on")
        for ref in run["spec"].get("requirementRefs") or []:
            g.edge(f"requirement/{ref['name']}", node, "judges")
    for pkg in objects["modelpackages"]:
        name, status = pkg["metadata"]["name"], pkg.get("status") or {}
        node = g.node(f"modelpackage/{name}", f"{pkg['spec']['model']} v{status.get('version', '?')} "
                                              f"{status.get('stage') or status.get('phase') or ''}".strip())
        g.edge(f"trainingrun/{pkg['spec']['trainingRunRef']['name']}", node, "packaged as")
        for req in sorted({r["requirement"] for r in status.get("requirements") or []}):
            g.edge(f"requirement/{req}", node, "gates")
    for src, dst, _ in g.edges:
        g.node(src), g.node(dst)
    return g


def walk(g: Graph, start: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]], Graph]:
    """Ancestors and descendants of start (with depth), and the subgraph they span."""
    up, down = defaultdict(list), defaultdict(list)
    for src, dst, label in g.edges:
        down[src].append(dst)
        up[dst].append(src)

    def bfs(adjacent: dict[str, list[str]]) -> list[tuple[int, str]]:
        seen, order, queue = {start}, [], deque([(start, 0)])
        while queue:
            node, depth = queue.popleft()
            for nxt in sorted(adjacent[node]):
                if nxt not in seen:
                    seen.add(nxt)
                    order.append((depth + 1, nxt))
                    queue.append((nxt, depth + 1))
        return order

    ancestors, descendants = bfs(up), bfs(down)
    keep = {start} | {n for _, n in ancestors} | {n for _, n in descendants}
    sub = Graph({n: g.labels.get(n, "") for n in keep}, {e for e in g.edges if e[0] in keep and e[1] in keep})
    return ancestors, descendants, sub


def resolve_start(g: Graph, kind: str, name: str) -> str:
    """The node to start from; a Dataset named without a version starts from its current one (status.version)."""
    node = f"{kind}/{name}"
    node = g.current.get(node, node)
    if node not in g.labels:
        raise KeyError(f"{kind}/{name} not found")
    return node


def to_text(start: str, ancestors: list[tuple[int, str]], descendants: list[tuple[int, str]], g: Graph) -> str:
    def line(depth: int, node: str, arrow: str) -> str:
        label = g.labels.get(node, "")
        return f"{'  ' * depth}{arrow} {node}" + (f"  [{label}]" if label else "")

    lines = [f"{start}" + (f"  [{g.labels[start]}]" if g.labels.get(start) else ""), "upstream:"]
    lines += [line(d, n, "<-") for d, n in ancestors] or ["  (none)"]
    lines += ["downstream:"] + ([line(d, n, "->") for d, n in descendants] or ["  (none)"])
    return "\n".join(lines) + "\n"


def to_dot(start: str, g: Graph) -> str:
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for node in sorted(g.labels):
        kind = node.split("/", 1)[0]
        label = node + (f"\n{g.labels[node]}" if g.labels[node] else "")
        style = ', style="bold,filled", fillcolor="#fff3c4"' if node == start else ""
        lines.append(f"  {quote(node)} [label={quote(label)}, shape={SHAPES.get(kind, 'ellipse')}{style}];")
    for src, dst, label in sorted(g.edges):
        lines.append(f"  {quote(src)} -> {quote(dst)} [label={quote(label)}, fontsize=8];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot: str, fmt: str) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise FileNotFoundError("Graphviz `dot` is not installed (Debian: apt-get install graphviz); "
                                "use -o dot or -o text")
    return subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True, check=True).stdout


def load_objects(namespace: str) -> dict[str, list[dict[str, Any]]]:
    from mloop.k8s.client import custom_objects

    api = custom_objects()
    return {plural: api.list_namespaced_custom_object("mloop.dev", "v1alpha1", namespace, plural)["items"]
            for plural in ("requirements", "datasets", "trainingruns", "modelpackages")}


def lineage(target: str, namespace: str, output: str, path: str | None) -> int:
    kind_text, _, name = target.partition("/")
    try:
        kind = kind_by_name(kind_text).singular
    except KeyError:
        print(f"unknown kind {kind_text!r}: use requirement, dataset, trainingrun or modelpackage", file=sys.stderr)
        return 2
    graph = build_graph(load_objects(namespace))
    try:
        start = resolve_start(graph, kind, name)
    except KeyError as err:
        print(f"{err.args[0]} in namespace {namespace}", file=sys.stderr)
        return 1
    ancestors, descendants, sub = walk(graph, start)
    if output == "text":
        data = to_text(start, ancestors, descendants, sub).encode()
    elif output == "dot":
        data = to_dot(start, sub).encode()
    else:
        try:
            data = render(to_dot(start, sub), output)
        except FileNotFoundError as err:
            print(str(err), file=sys.stderr)
            return 1
    if path:
        with open(path, "wb") as handle:
            handle.write(data)
        print(f"wrote {path}", file=sys.stderr)
    elif output in ("svg", "png") and sys.stdout.isatty():
        print("refusing to write binary output to a terminal: give --file", file=sys.stderr)
        return 2
    else:
        sys.stdout.buffer.write(data)
    return 0
