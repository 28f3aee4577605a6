"""The package task: a succeeded run's model, checked and packaged as one immutable model version.

    python -m mloop.workloads.package <task prefix>

Writes packages/<ns>/<model>/<version>/{model.skops, model.onnx, signature.json, modelcard.md,
lineage.json, requirements.json} and manifest.json last.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from mloop.api.tasks import PackageResult, PackageTaskSpec
from mloop.serving.parity import Conversion, convert
from mloop.storage.artifacts import AlreadyExists, DigestMismatch, Store, sha256_hex
from mloop.storage.models import UntrustedModel, load_model
from mloop.workloads.task import main_for, now_iso
from mloop.workloads.train import load_xy, split


def signature(task: PackageTaskSpec, model: Any) -> dict[str, Any]:
    declared = {c["name"]: c for c in task.columns}
    inputs = []
    for name in task.run.features:
        column = {"name": name, "type": task.run.types.get(name, "string")}
        spec = declared.get(name, {})
        for key in ("allowedValues", "min", "max", "nullable"):
            if key in spec:
                column[key] = spec[key]
        inputs.append(column)
    output: dict[str, Any] = {"name": task.run.target, "task": task.run.task}
    if task.run.task == "classification":
        output["classes"] = [str(c) for c in model.classes_]
    return {"model": task.model, "version": task.version, "inputs": inputs, "output": output}


def to_onnx(task: PackageTaskSpec, model: Any, store: Store, log: logging.Logger) -> Conversion:
    """The ONNX file and its parity on the run's held-out rows (see mloop.serving.parity)."""
    run = task.run
    x, y = load_xy(run, store)
    _, x_test, _, _ = split(run, run.spec, x, y)
    conversion = convert(model, run.features, run.types, run.task, x_test)
    log.info("ONNX: %s parity (%s): %s", conversion.parity, conversion.input_type, conversion.note)
    return conversion


def model_card(task: PackageTaskSpec, onnx_note: str) -> str:
    run, ds = task.run, task.run.dataset
    lines = [f"# Model card: {task.model} version {task.version}", ""]
    for req in task.requirements:
        lines += [f"## Intended use ({req.name})", "", req.spec.get("title", ""), "",
                  req.spec.get("description", "") or "", ""]
    lines += ["## Data", "", f"- Dataset `{ds.name}` version `{ds.version}` (sha256 {ds.digest[:16]}…)",
              f"- Target `{run.target}`; features: {', '.join(f'`{f}`' for f in run.features)}", ""]
    tags = task.governance
    lines += ["## Governance", ""] + [f"- {k}: {v}" for k, v in tags.items()] + (["- none declared"] if not tags else [])
    lines += ["", "## Metrics (held-out unless prefixed cv_)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(run.metrics.items())]
    lines += ["", "## Requirements", ""]
    for req in task.requirements:
        for r in req.results:
            mark = {True: "pass", False: "FAIL", None: "not measured"}[r.get("passed")]
            lines.append(f"- {req.name} {r['criterion']}: {mark} ({r.get('message', '')})")
    lines += ["", "## Limitations", "",
              f"- Trained on {ds.name}@{ds.version} only; inputs outside the signature's ranges and categories "
              "are refused by the server.", f"- {onnx_note}", ""]
    return "\n".join(lines)


def package(raw: dict[str, Any], store: Store, log: logging.Logger) -> dict[str, Any]:
    task = PackageTaskSpec.model_validate(raw)
    run, prefix = task.run, task.prefix
    try:
        blob = store.get(run.model_key)
        model = load_model(blob, run.model_digest)
    except (DigestMismatch, UntrustedModel) as err:
        log.error("refused: %s", err)
        return PackageResult(status="Failed", reason="DigestMismatch" if isinstance(err, DigestMismatch)
                             else "UntrustedModel", message=str(err)).to_wire()
    files: dict[str, bytes] = {"model.skops": blob}
    sig = signature(task, model)
    conversion = Conversion(None, "unavailable", None, "ONNX not requested")
    if "onnx" in task.formats:
        conversion = to_onnx(task, model, store, log)
        if conversion.blob is not None:
            files["model.onnx"] = conversion.blob
    onnx_note = conversion.card_note()
    files["signature.json"] = json.dumps(sig, indent=2).encode()
    files["modelcard.md"] = model_card(task, onnx_note).encode()
    files["lineage.json"] = json.dumps(task.lineage, indent=2, sort_keys=True).encode()
    files["requirements.json"] = json.dumps([r.to_wire() for r in task.requirements], indent=2, sort_keys=True).encode()
    recorded = {}
    for name, body in files.items():
        try:
            recorded[name] = {"sha256": store.put(prefix + name, body), "size": len(body)}
        except AlreadyExists:  # an earlier attempt of this same version: keep what it wrote
            recorded[name] = {"sha256": sha256_hex(store.get(prefix + name)), "size": len(body)}
    manifest = {"kind": "ModelPackage", "namespace": task.namespace, "model": task.model,
                "version": task.version, "package": task.name, "files": recorded,
                "modelDigest": run.model_digest, "createdAt": now_iso(), "onnx": conversion.manifest_entry()}
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    try:
        store.put(prefix + "manifest.json", body)
    except AlreadyExists:
        body = store.get(prefix + "manifest.json")
    formats = ["skops"] + (["onnx"] if "model.onnx" in recorded else [])
    return PackageResult(status="Succeeded", reason="Packaged", message=f"{task.model} v{task.version}: "
                         f"{', '.join(formats)}", digest=f"sha256:{sha256_hex(body)}", uri=store.uri(prefix),
                         formats=formats, onnx=onnx_note, onnx_parity=conversion.parity, signature=sig).to_wire()


def main(argv: list[str] | None = None) -> int:
    return main_for("package", package, argv)


if __name__ == "__main__":
    sys.exit(main())
