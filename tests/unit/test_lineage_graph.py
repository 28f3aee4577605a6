"""`mloop lineage` graph: where a walk starts and what it reaches, from objects as the API server returns them."""

from __future__ import annotations

from mloop.cli.lineage import build_graph, resolve_start, walk


def objects() -> dict:
    # Version ids are digest prefixes: the current one ("1f...") sorts before the older one ("e4...").
    return {
        "requirements": [{"metadata": {"name": "req"}, "spec": {"title": "Good enough"}}],
        "datasets": [{"metadata": {"name": "iris"}, "spec": {"source": {"builtin": "iris"}, "requirementRefs": [{"name": "req"}]},
                      "status": {"version": "1f0000000000", "versions": [{"version": "e40000000000", "rows": 150},
                                                                      {"version": "1f0000000000", "rows": 149}]}}],
        "trainingruns": [{"metadata": {"name": "run"}, "spec": {},
                          "status": {"phase": "Succeeded", "dataset": "iris@1f0000000000"}}],
        "modelpackages": [],
    }


def test_a_dataset_named_without_a_version_starts_from_its_current_version_not_the_largest_id() -> None:
    g = build_graph(objects())
    assert resolve_start(g, "dataset", "iris") == "dataset/iris@1f0000000000"
    _, descendants, _ = walk(g, resolve_start(g, "dataset", "iris"))
    assert (1, "trainingrun/run") in descendants


def test_a_named_version_and_an_unknown_object() -> None:
    g = build_graph(objects())
    assert resolve_start(g, "dataset", "iris@e40000000000") == "dataset/iris@e40000000000"
    try:
        resolve_start(g, "dataset", "nope")
    except KeyError as e:
        assert "dataset/nope not found" in str(e)
    else:
        raise AssertionError("an unknown Dataset resolved")
