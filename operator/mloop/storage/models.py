"""Loading models safely: the digest first, then skops against a reviewed allow-list of types.

ONNX files hold no code, but they are digest-checked the same way before onnxruntime sees them.
"""

from __future__ import annotations

from typing import Any

from mloop.storage.artifacts import DigestMismatch, sha256_hex

# Types skops does not trust by default but that the allow-listed estimators need. Reviewed: model state of
# scikit-learn's own trees, boosting predictors, neighbour indexes, optimizers, and numpy's dtype.
TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)


class UntrustedModel(Exception):
    """The file holds types outside the allow-list: it is not loaded."""


def check_digest(blob: bytes, expected_digest: str) -> bytes:
    """The blob itself when its sha256 is the recorded one; a model file is never loaded otherwise."""
    actual = sha256_hex(blob)
    if actual != expected_digest.removeprefix("sha256:"):
        raise DigestMismatch(f"model digest sha256:{actual[:12]}… does not match the recorded "
                             f"{expected_digest.removeprefix('sha256:')[:12]}…: refusing to load it")
    return blob


def load_model(blob: bytes, expected_digest: str) -> Any:
    import skops.io as sio

    check_digest(blob, expected_digest)
    untrusted = [t for t in sio.get_untrusted_types(data=blob) if t not in TRUSTED_TYPES]
    if untrusted:
        raise UntrustedModel(f"model holds types outside the allow-list: {', '.join(untrusted[:5])}")
    return sio.loads(blob, trusted=list(TRUSTED_TYPES))
