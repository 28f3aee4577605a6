"""Which runtime serves a package, and the two runtimes.

onnxruntime serves only a package whose ONNX model passed the package task's parity check exactly (every
held-out label equal; regression within float64 rounding), recorded in the manifest's `onnx` entry. Anything
else, and any request with a null (the parity check never saw one), goes to the scikit-learn model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RUNTIMES = ("auto", "onnx", "sklearn")


class RuntimeUnavailable(Exception):
    """`onnx` was asked for and the package has no ONNX model with exact parity: the server does not start."""


def choose(requested: str, manifest: dict[str, Any]) -> tuple[str, str]:
    """(runtime, why) for a package manifest. Pure: the operator can call it to report status."""
    if requested not in RUNTIMES:
        raise ValueError(f"runtime {requested!r}: choose one of {', '.join(RUNTIMES)}")
    onnx = manifest.get("onnx") or {}
    exact = "model.onnx" in manifest.get("files", {}) and onnx.get("parity") == "exact"
    if requested == "sklearn":
        return "sklearn", "scikit-learn asked for"
    if exact:
        return "onnx", f"ONNX parity exact ({onnx.get('note', '')})"
    if onnx.get("parity"):
        why = f"ONNX parity {onnx['parity']} ({onnx.get('note', '')})"
    elif "model.onnx" in manifest.get("files", {}):
        why = "ONNX parity not recorded by this package"
    else:
        why = "the package has no ONNX model"
    if requested == "onnx":
        raise RuntimeUnavailable(f"runtime onnx asked for, but {why}; use runtime auto or sklearn")
    return "sklearn", why


class SklearnRuntime:
    name = "sklearn"

    def __init__(self, model: Any, task: str, names: list[str]):
        self.model, self.task, self.names = model, task, names
        self.has_proba = task == "classification" and hasattr(model, "predict_proba")

    def predict(self, arrays: dict[str, np.ndarray], with_proba: bool) -> tuple[list[Any], np.ndarray | None]:
        import pandas as pd  # the pipeline's column transformer selects by name

        frame = pd.DataFrame({n: arrays[n] for n in self.names})
        labels = self.model.predict(frame)
        proba = None
        if with_proba and self.has_proba:
            try:
                proba = self.model.predict_proba(frame)
            except (AttributeError, ValueError):
                proba = None
        return _labels(labels, self.task), proba


class OnnxRuntime:
    name = "onnx"

    def __init__(self, blob: bytes, task: str, names: list[str], fallback: SklearnRuntime):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one row is microseconds; workers scale
        self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self.task, self.fallback = task, fallback
        inputs = self.session.get_inputs()
        if len(inputs) != len(names):
            raise ValueError(f"the ONNX model takes {len(inputs)} inputs, the signature has {len(names)}")
        # skl2onnx renames inputs it finds unsafe; the order is the signature's
        dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(string)": object}
        self.feeds = [(n, i.name, dtypes[i.type]) for n, i in zip(names, inputs)]
        outputs = [o.name for o in self.session.get_outputs()]
        self.label_output = outputs[:1]
        self.all_outputs = outputs[:2] if task == "classification" and len(outputs) > 1 else outputs[:1]

    def predict(self, arrays: dict[str, np.ndarray], with_proba: bool) -> tuple[list[Any], np.ndarray | None]:
        feeds = {onnx_name: arrays[n].astype(dtype, copy=False).reshape(-1, 1) for n, onnx_name, dtype in self.feeds}
        wanted = self.all_outputs if with_proba else self.label_output
        result = self.session.run(wanted, feeds)
        proba = result[1] if len(result) > 1 else None
        return _labels(result[0].ravel(), self.task), proba


def _labels(values: np.ndarray, task: str) -> list[Any]:
    return [str(v) for v in values.tolist()] if task == "classification" else [float(v) for v in values.tolist()]
