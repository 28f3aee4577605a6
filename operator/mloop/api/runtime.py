"""Which runtime serves a package: the one rule the model server and the operator's status both use.

onnxruntime serves only a package whose ONNX model passed the package task's parity check exactly (every
held-out label equal; regression within float64 rounding); anything else runs the scikit-learn model.
"""

from __future__ import annotations

RUNTIMES = ("auto", "onnx", "sklearn")
PARITIES = ("exact", "approximate", "failed", "unavailable")


class RuntimeUnavailable(Exception):
    """`onnx` was asked for and the package has no ONNX model with exact parity: the server does not start."""


def choose(requested: str, has_onnx: bool, parity: str | None, note: str = "") -> tuple[str, str]:
    """(runtime, why) from spec.serve.runtime, whether the package holds model.onnx, and its parity verdict."""
    if requested not in RUNTIMES:
        raise ValueError(f"runtime {requested!r}: choose one of {', '.join(RUNTIMES)}")
    detail = f" ({note})" if note else ""
    if requested == "sklearn":
        return "sklearn", "scikit-learn asked for"
    if has_onnx and parity == "exact":
        return "onnx", f"ONNX parity exact{detail}"
    if parity in ("approximate", "failed"):
        why = f"ONNX parity {parity}{detail}"
    elif has_onnx:
        why = "ONNX parity not recorded by this package"
    else:
        why = "the package has no ONNX model"
    if requested == "onnx":
        raise RuntimeUnavailable(f"runtime onnx asked for, but {why}; use runtime auto or sklearn")
    return "sklearn", why
