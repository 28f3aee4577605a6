"""ONNX conversion and the parity check that decides whether onnxruntime may serve a package.

float64 inputs are tried first (no rounding of the request); where a converter or onnxruntime has no
float64 kernel (scikit-learn's imputer, boosting), float32. Parity is measured on the run's held-out rows
without nulls, since the server sends any request with a null to scikit-learn:
- exact: every label equal (classification), or every value within float64 rounding (regression);
- approximate: labels equal but probabilities off by more than rounding, or regression within 1e-3;
  the file is kept for export, and the server runs scikit-learn;
- otherwise no ONNX file at all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

NUMERIC = ("integer", "float", "boolean")
PROBA_TOLERANCE = 0.05  # float32 inputs can move a tree split: labels must agree, probabilities nearly
REGRESSION_TOLERANCE = 1e-3
EXACT_RELATIVE, EXACT_ABSOLUTE = 1e-9, 1e-12  # float64 rounding, as in the project's reproducibility bound


@dataclass
class Conversion:
    blob: bytes | None
    parity: str  # exact, approximate, failed, unavailable
    input_type: str | None  # float64 or float32: what the ONNX model's numeric inputs are
    note: str

    def manifest_entry(self) -> dict[str, Any]:
        return {"parity": self.parity, "inputType": self.input_type, "note": self.note}

    def card_note(self) -> str:
        if self.input_type is None:
            return self.note
        text = f"ONNX ({self.parity} parity, {self.input_type} inputs): {self.note}."
        if self.input_type == "float32":
            text += (" The converter needs float32 for this pipeline: requests are rounded to float32 before "
                     "the ONNX model sees them.")
        return text + {"exact": " onnxruntime serves it under runtime auto.",
                       "approximate": " The server runs the scikit-learn model, whose answers float32 would move.",
                       "failed": " No ONNX file is written; the server runs the scikit-learn model."}[self.parity]


def _convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    """SimpleImputer in standard operators: Where(IsNaN(x), fill, x) runs in float64 too (onnxruntime's Imputer
    kernel is float32 only). A string tensor cannot hold a null, so on strings the imputer is the identity."""
    import math

    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer

    imputer = operator.raw_operator
    missing = imputer.missing_values
    if not (missing is None or (isinstance(missing, float) and math.isnan(missing))):
        convert_sklearn_imputer(scope, operator, container)
        return
    names = [v.full_name for v in operator.inputs]
    x = names[0]
    if len(names) > 1:
        x = scope.get_unique_variable_name("imputer_input")
        container.add_node("Concat", names, x, axis=1, name=scope.get_unique_operator_name("Concat"))
    out = operator.outputs[0].full_name
    if isinstance(operator.inputs[0].type, StringTensorType):
        container.add_node("Identity", x, out, name=scope.get_unique_operator_name("Identity"))
        return
    double = isinstance(operator.inputs[0].type, DoubleTensorType)
    fill = scope.get_unique_variable_name("imputer_fill")
    values = np.asarray(imputer.statistics_, dtype=np.float64 if double else np.float32)
    container.add_initializer(fill, TensorProto.DOUBLE if double else TensorProto.FLOAT, [1, len(values)],
                              values.tolist())
    isnan = scope.get_unique_variable_name("imputer_isnan")
    container.add_node("IsNaN", x, isnan, name=scope.get_unique_operator_name("IsNaN"))
    container.add_node("Where", [isnan, fill, x], out, name=scope.get_unique_operator_name("Where"))


def _feeds(session: Any, x: Any, features: list[str], types: dict[str, str], dtype: Any) -> dict[str, np.ndarray]:
    """Inputs by position: skl2onnx renames columns it finds unsafe (spaces, slashes)."""
    feeds = {}
    for f, spec in zip(features, session.get_inputs()):
        column = x[f].to_numpy().reshape(-1, 1)
        feeds[spec.name] = column.astype(dtype) if types.get(f) in NUMERIC else column.astype(str).astype(object)
    return feeds


def convert(model: Any, features: list[str], types: dict[str, str], task: str, x_test: Any) -> Conversion:
    """The ONNX file of a fitted pipeline and its parity on `x_test` (a DataFrame of held-out rows)."""
    try:
        import onnxruntime as ort
        from skl2onnx import convert_sklearn, update_registered_converter
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType
        from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes
        from sklearn.impute import SimpleImputer
    except ImportError as err:
        return Conversion(None, "unavailable", None, f"ONNX tools are not installed: {err}")
    update_registered_converter(SimpleImputer, "SklearnSimpleImputer", calculate_sklearn_imputer_output_shapes,
                                _convert_imputer, overwrite=True)
    rows = x_test[~x_test[features].isna().any(axis=1)]
    if rows.empty:
        return Conversion(None, "failed", None, "no held-out row without nulls to check ONNX parity on")
    expected = model.predict(rows)
    estimator = model[-1]
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    errors = []
    for input_type, tensor, dtype in (("float64", DoubleTensorType, np.float64), ("float32", FloatTensorType,
                                                                                   np.float32)):
        initial = [(f, tensor([None, 1]) if types.get(f) in NUMERIC else StringTensorType([None, 1]))
                   for f in features]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                blob = convert_sklearn(model, initial_types=initial, options=options,
                                       target_opset=18).SerializeToString()
                session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
                outputs = session.run(None, _feeds(session, rows, features, types, dtype))
        except Exception as err:  # skl2onnx and onnxruntime raise many types for what they cannot do
            errors.append(f"{input_type}: {type(err).__name__}: {str(err)[:200]}")
            continue
        if task == "classification":
            agreement = float(np.mean(np.asarray(outputs[0]).ravel().astype(str) == expected.astype(str)))
            gap = (float(np.abs(outputs[1] - model.predict_proba(rows)).max()) if options and len(outputs) > 1
                   else 0.0)
            note = f"labels agree on {agreement:.0%} of {len(rows)} held-out rows, max probability gap {gap:.2g}"
            if agreement < 1.0 or gap > PROBA_TOLERANCE:
                return Conversion(None, "failed", input_type, note)
            return Conversion(blob, "exact", input_type, note)
        got = np.asarray(outputs[0], dtype=np.float64).ravel()
        gap = float(np.abs(got - expected).max())
        note = f"max prediction gap {gap:.2g} on {len(rows)} held-out rows"
        if np.all(np.abs(got - expected) <= EXACT_ABSOLUTE + EXACT_RELATIVE * np.abs(expected)):
            return Conversion(blob, "exact", input_type, note)
        if gap <= REGRESSION_TOLERANCE * (1 + float(np.abs(expected).max())):
            return Conversion(blob, "approximate", input_type, note)
        return Conversion(None, "failed", input_type, note)
    return Conversion(None, "failed", None, "no ONNX converter for this pipeline: " + "; ".join(errors))
