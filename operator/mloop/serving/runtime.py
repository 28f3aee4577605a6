"""The two runtimes a model server runs, and the runtime rule applied to a package manifest.

The ONNX runtime needs no scikit-learn, scipy or pandas: a server running it imports them only when a row
with a null arrives (the parity check never saw one; scikit-learn answers it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mloop.api.runtime import RuntimeUnavailable, choose

__all__ = ["OnnxRuntime", "RuntimeUnavailable", "SklearnRuntime", "choose_for_manifest"]


def choose_for_manifest(requested: str, manifest: dict[str, Any]) -> tuple[str, str]:
    """(runtime, why) for a package manifest: its `onnx` entry holds the parity verdict of the package task."""
    onnx = manifest.get("onnx") or {}
    return choose(requested, "model.onnx" in manifest.get("files", {}), onnx.get("parity"), onnx.get("note", ""))


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

    def __init__(self, blob: bytes, task: str, names: list[str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # one row is microseconds; workers scale
        self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self.task = task
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
