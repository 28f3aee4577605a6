"""Generate the CRDs in crds/ from the pydantic models.

    python -m mloop.api.crdgen           write crds/*.yaml
    python -m mloop.api.crdgen --check   exit 1 when crds/ differs from the models

The JSON schema pydantic emits is rewritten into a Kubernetes *structural* schema:
references inlined, optional values unwrapped, every node typed, and the CEL rules
and bounds carried over, so the API server refuses bad input with a field path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from mloop.api.kinds import CATEGORY, GROUP, KINDS, VERSION, KindInfo

_COPIED = ("description", "minLength", "maxLength", "pattern", "enum", "format", "minimum", "maximum",
           "minItems", "maxItems", "minProperties", "maxProperties")
_ANY: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


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
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        elif not props:
            out.update(_ANY)
    if type_ == "array":
        out["items"] = _structural(node.get("items") or {}, defs)
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def crd_for(info: KindInfo) -> dict[str, Any]:
    spec = schema_of(info.spec)
    status = schema_of(info.status)
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


HEADER = "# Generated by `python -m mloop.api.crdgen` from operator/mloop/api. Do not edit.\n"


def render(info: KindInfo) -> str:
    return HEADER + yaml.safe_dump(crd_for(info), sort_keys=False, width=100)


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
