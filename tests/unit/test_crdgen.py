"""The CRDs are generated from the models, committed, structural, described and bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mloop.api.crdgen import crd_for, main, policy_for
from mloop.api.kinds import KINDS
from mloop.api.params import ESTIMATOR_PARAMS, MANAGED

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
    crd = next(yaml.safe_load_all(text))
    names = crd["spec"]["names"]
    assert names["shortNames"][0] == info.short
    assert names["categories"] == ["mloop"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Age" in columns and ("Phase" in columns)


def test_short_names_are_the_designed_ones() -> None:
    assert {i.kind: i.short for i in KINDS} == {
        "Requirement": "req", "Dataset": "ds", "TrainingRun": "tr", "ModelPackage": "mp", "ErasureRequest": "erasure"
    }


def kind(name: str):
    return next(i for i in KINDS if i.kind == name)


def test_parameter_allow_list_matches_scikit_learn() -> None:
    """The plain-data allow-list the CRDs are built from is each estimator's signature, less what mloop sets."""
    import inspect

    from mloop.training.estimators import FORBIDDEN, MODULES, estimator_class

    from mloop.api.trainingrun import CLASSIFIERS, REGRESSORS

    assert set(MANAGED) == FORBIDDEN
    assert set(ESTIMATOR_PARAMS) == set(CLASSIFIERS + REGRESSORS)
    assert {name: set(params) for name, params in ESTIMATOR_PARAMS.items()} == {
        name: set(inspect.signature(estimator_class(name)).parameters) - FORBIDDEN for name in MODULES}


def test_generating_the_crds_needs_no_scikit_learn() -> None:
    code = ("import sys; from mloop.api.crdgen import render; from mloop.api.kinds import KINDS; "
            "[render(i) for i in KINDS]; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "operator")})
    assert result.stdout.strip() == "[]"


def test_maps_carry_value_schema_and_minimum_sizes() -> None:
    spec = root_schema(kind("TrainingRun"))["properties"]["spec"]["properties"]
    parameters = spec["search"]["properties"]["parameters"]
    assert parameters["minProperties"] == 1 and parameters["maxProperties"] == 16
    assert parameters["additionalProperties"]["type"] == "array"
    assert (parameters["additionalProperties"]["minItems"], parameters["additionalProperties"]["maxItems"]) == (1, 64)
    untyped = {"x-kubernetes-preserve-unknown-fields": True, "nullable": True}  # None is a value: max_depth: null
    assert spec["estimator"]["properties"]["params"]["additionalProperties"] == untyped
    assert parameters["additionalProperties"]["items"] == untyped
    requirement = root_schema(kind("Requirement"))["properties"]["spec"]["properties"]
    assert requirement["metrics"]["minItems"] == 1


def test_no_pattern_properties_reach_a_crd_and_typed_maps_check_keys_in_cel() -> None:
    for info in KINDS:
        assert "patternProperties" not in yaml.safe_dump(crd_for(info))
        assert "x-mloop" not in yaml.safe_dump(crd_for(info))
    metrics = root_schema(kind("TrainingRun"))["properties"]["status"]["properties"]["metrics"]
    assert metrics["x-kubernetes-validations"] == [
        {"rule": "self.all(k, k.matches('^[a-z][a-z0-9_]*$') && size(k) <= 64)",
         "message": "a key must match ^[a-z][a-z0-9_]*$, at most 64 characters"}]


def test_rules_the_crd_cannot_see_go_to_a_policy_on_spec_only() -> None:
    assert [i.kind for i in KINDS if policy_for(i)] == ["Dataset", "TrainingRun"]
    policy, binding = policy_for(kind("TrainingRun"))
    assert binding["spec"] == {"policyName": "trainingruns.mloop.dev", "validationActions": ["Deny"]}
    rules = policy["spec"]["validations"]
    messages = [r["messageExpression"] for r in rules]
    assert all(m.startswith("'spec.") for m in messages)
    assert any(m.startswith("'spec.search.parameters.' + ") for m in messages)
    assert any(m.startswith("'spec.estimator.params.' + ") for m in messages)
    assert not any("status" in r["expression"] for r in rules)


def test_the_allow_list_in_the_policy_is_the_plain_data() -> None:
    policy, _ = policy_for(kind("TrainingRun"))
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert "'LogisticRegression': ['C', 'class_weight'," in variables["estimatorParams"]
    assert variables["estimatorParams"].count("': [") == len(ESTIMATOR_PARAMS)
    assert variables["managedParams"] == "['n_jobs', 'verbose', 'warm_start']"
