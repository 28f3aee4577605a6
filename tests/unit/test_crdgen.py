"""The CRDs are generated from the models, committed, structural, described and bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mloop.api.crdgen import crd_for, main
from mloop.api.kinds import KINDS

ROOT = Path(__file__).resolve().parents[2]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def root_schema(info) -> dict[str, Any]:
    return crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crds_match_the_models() -> None:
    assert main(["--check", "--dir", str(ROOT / "crds")]) == 0


def test_check_fails_when_a_file_is_stale(tmp_path: Path) -> None:
    assert main(["--dir", str(tmp_path)]) == 0
    target = tmp_path / "trainingruns.mloop.dev.yaml"
    target.write_text(target.read_text().replace("maxItems: 16", "maxItems: 17", 1))
    assert main(["--check", "--dir", str(tmp_path)]) == 1


@pytest.mark.parametrize("info", KINDS, ids=lambda i: i.kind)
def test_every_field_has_a_description(info) -> None:
    missing = [path for path, node in walk(root_schema(info)["properties"]["spec"], "spec") if not node.get("description")
               and not path.endswith("[]") and not path.endswith("}")]
    missing += [path for path, node in walk(root_schema(info)["properties"]["status"], "status")
                if not node.get("description") and not path.endswith("[]") and not path.endswith("}")]
    assert missing == []


@pytest.mark.parametrize("info", KINDS, ids=lambda i: i.kind)
def test_every_string_list_and_map_is_bounded(info) -> None:
    unbounded = []
    props = root_schema(info)["properties"]
    for path, node in [*walk(props["spec"], "spec"), *walk(props["status"], "status")]:
        kind = node.get("type")
        if kind == "string" and not ({"maxLength", "enum"} & node.keys() or node.get("format") == "date-time"):
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    assert unbounded == []


@pytest.mark.parametrize("info", KINDS, ids=lambda i: i.kind)
def test_names_subresources_and_columns(info) -> None:
    text = (ROOT / "crds" / f"{info.crd_name}.yaml").read_text()
    crd = yaml.safe_load(text)
    names = crd["spec"]["names"]
    assert names["shortNames"][0] == info.short
    assert names["categories"] == ["mloop"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Age" in columns and ("Phase" in columns)


def test_short_names_are_the_designed_ones() -> None:
    assert {i.kind: i.short for i in KINDS} == {
        "Requirement": "req", "Dataset": "ds", "TrainingRun": "tr", "ModelPackage": "mp"
    }
