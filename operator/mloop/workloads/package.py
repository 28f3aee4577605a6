"""The package task: a succeeded run's model, checked and packaged as one immutable model version.

    python -m mloop.workloads.package <task prefix>

Writes packages/<ns>/<model>/<version>/{model.skops, model.onnx, signature.json, modelcard.md,
lineage.json, requirements.json} and manifest.json last.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Any

import numpy as np

from mloop.api.tasks import PackageResult, PackageTaskSpec
from mloop.storage.artifacts import AlreadyExists, DigestMismatch, Store, sha256_hex
from mloop.storage.models import UntrustedModel, load_model
from mloop.workloads.task import main_for, now_iso
from mloop.workloads.train import load_xy, split

NUMERIC = ("integer", "float", "boolean")
PROBA_TOLERANCE = 0.05  # float32 inputs can move a tree split: labels must agree, probabilities nearly
REGRESSION_TOLERANCE = 1e-3


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


def to_onnx(task: PackageTaskSpec, model: Any, store: Store, log: logging.Logger) -> tuple[bytes | None, str]:
    """The ONNX file and a note, or None and why not. Parity is checked on the run's held-out rows."""
    try:
        import onnxruntime as ort
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as err:
        return None, f"ONNX tools are not installed: {err}"
    run = task.run
    features, types = run.features, run.types
    initial = [(f, FloatTensorType([None, 1]) if types.get(f) in NUMERIC else StringTensorType([None, 1]))
               for f in features]
    estimator = model[-1]
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = convert_sklearn(model, initial_types=initial, options=options, target_opset=18)
            session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as err:  # skl2onnx raises many types for what it cannot convert
        return None, f"no ONNX converter for this pipeline: {type(err).__name__}: {str(err)[:300]}"
    x, y = load_xy(run, store)
    _, x_test, _, _ = split(run, run.spec, x, y)
    feeds = {}
    for f in features:
        column = x_test[f].to_numpy().reshape(-1, 1)
        feeds[f] = column.astype(np.float32) if types.get(f) in NUMERIC else column.astype(str).astype(object)
    outputs = session.run(None, feeds)
    expected = model.predict(x_test)
    if run.task == "classification":
        agreement = float(np.mean(np.asarray(outputs[0]).ravel().astype(str) == expected.astype(str)))
        gap = float(np.abs(outputs[1] - model.predict_proba(x_test)).max()) if options and len(outputs) > 1 else 0.0
        ok = agreement == 1.0 and gap <= PROBA_TOLERANCE
        note = f"labels agree on {agreement:.0%} of {len(x_test)} held-out rows, max probability gap {gap:.2g}"
    else:
        gap = float(np.abs(np.asarray(outputs[0]).ravel() - expected).max())
        ok = gap <= REGRESSION_TOLERANCE * (1 + float(np.abs(expected).max()))
        note = f"max prediction gap {gap:.2g} on {len(x_test)} held-out rows"
    log.info("ONNX parity: %s", note)
    if not ok:
        return None, f"ONNX parity check failed: {note}"
    return onx.SerializeToString(), f"ONNX parity: {note}"


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
    onnx_note = "ONNX not requested"
    if "onnx" in task.formats:
        onnx, onnx_note = to_onnx(task, model, store, log)
        if onnx is not None:
            files["model.onnx"] = onnx
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
                "modelDigest": run.model_digest, "createdAt": now_iso()}
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    try:
        store.put(prefix + "manifest.json", body)
    except AlreadyExists:
        body = store.get(prefix + "manifest.json")
    formats = ["skops"] + (["onnx"] if "model.onnx" in recorded else [])
    return PackageResult(status="Succeeded", reason="Packaged", message=f"{task.model} v{task.version}: "
                         f"{', '.join(formats)}", digest=f"sha256:{sha256_hex(body)}", uri=store.uri(prefix),
                         formats=formats, onnx=onnx_note, signature=sig).to_wire()


def main(argv: list[str] | None = None) -> int:
    return main_for("package", package, argv)


if __name__ == "__main__":
    sys.exit(main())
