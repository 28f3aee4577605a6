"""The numeric environment of a fit: what decides the last bits of its floating-point results.

The same code and data give bit-identical metrics only with the same BLAS/OpenMP builds, the same
kernels (OpenBLAS picks one per CPU, or as OPENBLAS_CORETYPE says), the same thread counts and
numpy's same SIMD code paths. The trainer pins the threads and records the rest.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from threadpoolctl import threadpool_info, threadpool_limits

# One thread for BLAS and OpenMP: the count must not follow the node's cores, and a run's parallelism
# comes from its search trials (an Indexed Job), not from BLAS on tables of scikit-learn's size.
THREADS = 1

# Variables that choose kernels or code paths when a library loads; threads are pinned, so not here.
OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NPY_DISABLE_CPU_FEATURES", "NPY_ENABLE_CPU_FEATURES",
             "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")

# Metrics of the same run in two numeric environments agree within these (see docs/kinds/trainingrun.md).
METRIC_RTOL = 1e-9
METRIC_ATOL = 1e-12

LIBRARY_FIELDS = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads")


def _load_libraries() -> None:
    """threadpoolctl sees only loaded libraries: load every one a fit uses, so any process reports the same set."""
    import scipy.linalg  # noqa: F401  scipy's own OpenBLAS
    import sklearn  # noqa: F401  numpy's OpenBLAS and scikit-learn's OpenMP runtime


def _numpy_simd() -> list[str]:
    """numpy's dispatched SIMD targets this CPU runs (after NPY_DISABLE_CPU_FEATURES), as np.show_runtime() lists."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def numeric_environment() -> dict[str, Any]:
    """This process's BLAS/OpenMP libraries (threadpoolctl's fields, without file paths), numpy's SIMD
    targets, the machine, and the overriding variables that are set."""
    _load_libraries()
    libraries = [{field: info.get(field) for field in LIBRARY_FIELDS} for info in threadpool_info()]
    libraries.sort(key=lambda lib: [str(lib[field]) for field in LIBRARY_FIELDS])
    return {
        "machine": platform.machine(),
        "libraries": libraries,
        "numpySimd": _numpy_simd(),
        "overrides": {name: os.environ[name] for name in OVERRIDES if name in os.environ},
    }


def trainer_environment() -> dict[str, Any]:
    """What a trainer started here (same image, host and environment) would record, threads pinned.

    For the operator, which must not change its own thread pools: other handlers run meanwhile."""
    found = numeric_environment()
    found["libraries"] = [{**lib, "num_threads": THREADS} for lib in found["libraries"]]
    return found


@contextmanager
def pinned_threads() -> Iterator[None]:
    """BLAS and OpenMP at THREADS threads in this thread, whatever the machine or OMP_NUM_THREADS say."""
    _load_libraries()
    with threadpool_limits(limits=THREADS):
        yield
