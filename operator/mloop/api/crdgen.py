"""Generate the CRDs in crds/ from the pydantic models.

    python -m mloop.api.crdgen           write crds/*.yaml
    python -m mloop.api.crdgen --check   exit 1 when crds/ differs from the models

The JSON schema pydantic emits is rewritten into a Kubernetes *structural* schema:
references inlined, optional values unwrapped, every node typed, and the CEL rules
and bounds carried over, so the API server refuses bad input with a field path.

The CRD's own CEL sees only typed data: a map of untyped values (estimator parameters)
or a list of untyped cells (inline rows) is invisible to it. Rules on such data, the
models' `x-mloop-admission` rules and the key rules of such maps, become a
ValidatingAdmissionPolicy written after the kind's CRD in the same file; its messages
start with the field path, as the CRD's own refusals do.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mloop.api.common import ADMISSION_RULES
from mloop.api.kinds import CATEGORY, GROUP, KINDS, VERSION, KindInfo

_COPIED = ("description", "minLength", "maxLength", "pattern", "enum", "format", "minimum", "maximum",
           "minItems", "maxItems", "minProperties", "maxProperties")
# An untyped value (a parameter value, a grid candidate, an inline cell) may be null: None is a real value there
# (max_depth: null), and a null the schema calls non-nullable makes every later CEL evaluation of the object
# fail, status writes included.
_ANY: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True, "nullable": True}
_KEYS = "x-mloop-keys"  # a map's key constraints, until _place_rules decides where they are checked


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline $ref / single allOf, keeping the outer node's own keys (its description wins)."""
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        outer = {k: v for k, v in node.items() if k != "$ref"}
        return {**_resolve(target, defs), **outer}
    if "allOf" in node and len(node["allOf"]) == 1:
        outer = {k: v for k, v in node.items() if k != "allOf"}
        return {**_resolve(node["allOf"][0], defs), **outer}
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        outer = {k: v for k, v in node.items() if k not in ("anyOf", "default", "title")}
        if len(options) == 1:
            return _structural({**_resolve(options[0], defs), **outer}, defs)
        kinds = {_resolve(o, defs).get("type") for o in options}
        if kinds == {"integer", "number"}:
            base: dict[str, Any] = {"type": "number"}
        elif kinds == {"integer", "string"}:
            base = {"x-kubernetes-int-or-string": True}
        else:
            base = dict(_ANY)
        if "description" in outer:
            base = {"description": outer["description"], **base}
        return base

    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = " ".join(str(node["description"]).split())
    if "const" in node:
        out["enum"] = [node["const"]]
    type_ = node.get("type")
    if type_ is None:
        out.update(_ANY)
    else:
        out["type"] = type_
    for key in _COPIED[1:]:
        if key in node:
            out[key] = node[key]
    # JSON Schema 2020-12 numeric exclusive bounds -> OpenAPI v3.0 booleans.
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if type_ == "object":
        props = node.get("properties") or {}
        if props:
            out["properties"] = {name: _structural(sub, defs) for name, sub in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        extra = node.get("additionalProperties")
        patterns = node.get("patternProperties") or {}
        if len(patterns) > 1:
            raise ValueError(f"a map with several key patterns cannot be structural: {sorted(patterns)}")
        if patterns:
            # Structural schemas forbid patternProperties: the value schema goes to
            # additionalProperties and the key pattern becomes a rule.
            [(pattern, extra)] = patterns.items()
            names = node.get("propertyNames") or {}
            out[_KEYS] = {"pattern": pattern, **{k: names[k] for k in ("minLength", "maxLength") if k in names}}
            out["additionalProperties"] = _structural(extra, defs) if extra else dict(_ANY)
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        elif not props:
            out.update(_ANY)
    if type_ == "array":
        out["items"] = _structural(node.get("items") or {}, defs)
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == ADMISSION_RULES:
            out[key] = value
    return out


def _cel_visible(node: dict[str, Any]) -> bool:
    """Whether the API server exposes this node to CRD rules (its SchemaDeclType is not nil)."""
    if node.get("x-kubernetes-int-or-string"):
        return True
    if node.get("type") == "array":
        return _cel_visible(node.get("items") or {})
    if node.get("type") == "object" and "additionalProperties" in node:
        return _cel_visible(node["additionalProperties"])
    return "type" in node


def _key_test(keys: dict[str, Any]) -> str:
    test = f"k.matches({_cel_string(keys['pattern'])})"
    if "maxLength" in keys:
        test += f" && size(k) <= {keys['maxLength']}"
    return test


def _key_words(keys: dict[str, Any]) -> str:
    bound = f", at most {keys['maxLength']} characters" if "maxLength" in keys else ""
    return f"a key must match {keys['pattern']}{bound}"


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _place_rules(node: dict[str, Any], path: str, admission: list[dict[str, Any]]) -> None:
    """Move key rules and admission rules out of the schema: onto the map when the CRD's CEL can see its
    keys, else into `admission` with the node's path. Status is written by the operator and left unchecked."""
    keys = node.pop(_KEYS, None)
    rules = node.pop(ADMISSION_RULES, [])
    if keys and _cel_visible(node["additionalProperties"]):
        node.setdefault("x-kubernetes-validations", []).append(
            {"rule": f"self.all(k, {_key_test(keys)})", "message": _key_words(keys)})
    elif keys:
        test = _key_test(keys)
        rules = [*rules, {"expression": f"self.all(k, {test})",
                          "messageExpression": f"'.' + self.filter(k, !({test}))[0] + {_cel_string(': ' + _key_words(keys))}"}]
    if rules and path.startswith("spec"):
        if "[" in path:
            raise ValueError(f"admission rules under a list are not supported: {path}")
        admission.extend({**rule, "path": path} for rule in rules)
    for name, sub in (node.get("properties") or {}).items():
        _place_rules(sub, f"{path}.{name}", admission)
    if isinstance(node.get("items"), dict):
        _place_rules(node["items"], f"{path}[*]", admission)
    if isinstance(node.get("additionalProperties"), dict):
        _place_rules(node["additionalProperties"], f"{path}[*]", admission)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _schemas(info: KindInfo) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Spec and status schemas, and the admission rules taken out of them."""
    spec, status, admission = schema_of(info.spec), schema_of(info.status), []
    _place_rules(spec, "spec", admission)
    _place_rules(status, "status", [])
    return spec, status, admission


def crd_for(info: KindInfo) -> dict[str, Any]:
    spec, status, _ = _schemas(info)
    root = {
        "description": info.description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"description": "API version of this object: mloop.dev/v1alpha1.", "type": "string"},
            "kind": {"description": f"Kind of this object: {info.kind}.", "type": "string"},
            "metadata": {"type": "object"},  # the API server allows nothing else here
            "spec": spec,
            "status": status,
        },
        # Names end up in Job, label and S3 key names, which allow 63 characters.
        "x-kubernetes-validations": [
            {"rule": "size(self.metadata.name) <= 63", "message": "metadata.name must be at most 63 characters"}
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/name": "mloop", "app.kubernetes.io/part-of": "mloop"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": [info.short, *info.aliases],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _guarded(rule: dict[str, Any]) -> tuple[str, str]:
    """A rule written on a node (`self`) as a policy expression on `object`, true where the node is absent."""
    target = "object." + rule["path"]
    segments = rule["path"].split(".")
    guards = [f"!has(object.{'.'.join(segments[:i + 1])})" for i in range(1, len(segments))]
    expression = re.sub(r"\bself\b", target, rule["expression"])
    message = re.sub(r"\bself\b", target, rule["messageExpression"])
    message = "'" + rule["path"] + message[1:] if message.startswith("'") else f"'{rule['path']}' + {message}"
    return " || ".join([*guards, f"({expression})"]), message


def policy_for(info: KindInfo) -> list[dict[str, Any]]:
    """The kind's ValidatingAdmissionPolicy and its binding; empty when every rule fits the CRD."""
    _, _, admission = _schemas(info)
    if not admission:
        return []
    variables: dict[str, str] = {}
    validations = []
    for rule in admission:
        for var in rule.get("variables", []):
            if variables.setdefault(var["name"], var["expression"]) != var["expression"]:
                raise ValueError(f"two admission variables named {var['name']}")
        expression, message = _guarded(rule)
        validations.append({"expression": expression, "messageExpression": message, "reason": "Invalid"})
    labels = {"app.kubernetes.io/name": "mloop", "app.kubernetes.io/part-of": "mloop"}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": info.crd_name, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": [VERSION], "operations": ["CREATE", "UPDATE"],
                "resources": [info.plural]}]},
            # No ratcheting in policies: an object admitted before a rule existed must still take the
            # operator's metadata patches (annotations, finalizers), so only a new or changed spec is judged.
            "matchConditions": [{"name": "spec-is-new-or-changed",
                                 "expression": "request.operation != 'UPDATE' || object.spec != oldObject.spec"}],
            "variables": [{"name": k, "expression": v} for k, v in variables.items()],
            "validations": validations,
        },
    }
    if not variables:
        del policy["spec"]["variables"]
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": info.crd_name, "labels": labels},
        "spec": {"policyName": info.crd_name, "validationActions": ["Deny"]},
    }
    return [policy, binding]


HEADER = "# Generated by `python -m mloop.api.crdgen` from operator/mloop/api. Do not edit.\n"


def render(info: KindInfo) -> str:
    """The kind's CRD, then the admission policy for what its CEL cannot see."""
    return HEADER + yaml.safe_dump_all([crd_for(info), *policy_for(info)], sort_keys=False, width=100)


def render_kustomization() -> str:
    """crds/ as a kustomization, so manifests/ can include it."""
    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [f"{info.crd_name}.yaml" for info in KINDS]}
    return HEADER + yaml.safe_dump(body, sort_keys=False)


def default_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "crds"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mloop.api.crdgen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the files differ from the models")
    parser.add_argument("--dir", type=Path, default=default_dir(), help="output directory (default: crds/)")
    args = parser.parse_args(argv)
    stale = []
    for info in KINDS:
        path = args.dir / f"{info.crd_name}.yaml"
        text = render(info)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    kustomization = render_kustomization()
    kpath = args.dir / "kustomization.yaml"
    if args.check:
        if not kpath.exists() or kpath.read_text() != kustomization:
            stale.append(str(kpath))
    else:
        kpath.write_text(kustomization)
    if stale:
        print("out of date, run `python -m mloop.api.crdgen`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
