"""The numeric environment: what it records, thread pinning, and how it enters the cache key.

Kernel choice happens when OpenBLAS loads, so core-type overrides are checked in fresh interpreters
started with an explicit environment (never this process's)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from mloop.api.trainingrun import TrainingRunSpec
from mloop.reconcile.trainingrun import cache_key
from mloop.training.numeric import THREADS, numeric_environment, pinned_threads, trainer_environment

REPORT = "import json; from mloop.training.numeric import numeric_environment; print(json.dumps(numeric_environment()))"


def environment_in_fresh_process(**variables: str) -> dict:
    out = subprocess.run([sys.executable, "-c", REPORT], env=variables, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def blas_cores(environment: dict) -> set[str]:
    return {lib["architecture"] for lib in environment["libraries"] if lib["internal_api"] == "openblas"}


def threads(environment: dict) -> list[int]:
    return [lib["num_threads"] for lib in environment["libraries"]]


def test_environment_names_the_blas_and_openmp_libraries_a_fit_uses() -> None:
    found = numeric_environment()
    apis = {lib["user_api"] for lib in found["libraries"]}
    assert {"blas", "openmp"} <= apis
    blas = [lib for lib in found["libraries"] if lib["user_api"] == "blas"]
    assert all(lib["version"] and lib["architecture"] and lib["num_threads"] >= 1 for lib in blas)
    assert found["machine"] == platform.machine()
    assert "filepath" not in json.dumps(found)  # install paths differ between a laptop and an image


def test_pinned_threads_sets_every_library_to_the_pinned_count_and_restores_it() -> None:
    before = threads(numeric_environment())
    with pinned_threads():
        assert set(threads(numeric_environment())) == {THREADS}
    assert threads(numeric_environment()) == before


def test_trainer_environment_reports_pinned_threads_without_changing_this_process() -> None:
    before = numeric_environment()
    expected = trainer_environment()
    assert set(threads(expected)) == {THREADS}
    assert numeric_environment() == before
    with pinned_threads():
        assert numeric_environment() == expected


@pytest.mark.skipif(platform.machine() != "x86_64", reason="OpenBLAS core type names are per architecture")
def test_a_forced_core_type_loads_another_kernel_and_is_recorded() -> None:
    default = environment_in_fresh_process()
    forced = environment_in_fresh_process(OPENBLAS_CORETYPE="Prescott")
    assert default["overrides"] == {} and forced["overrides"] == {"OPENBLAS_CORETYPE": "Prescott"}
    assert blas_cores(forced) and blas_cores(forced).isdisjoint(blas_cores(default))


def test_numpy_simd_targets_follow_npy_disable_cpu_features() -> None:
    default = environment_in_fresh_process()
    if not default["numpySimd"]:
        pytest.skip("this CPU runs none of numpy's dispatched SIMD targets")
    dropped = default["numpySimd"][-1]
    reduced = environment_in_fresh_process(NPY_DISABLE_CPU_FEATURES=dropped)
    assert dropped not in reduced["numpySimd"]
    assert reduced["overrides"] == {"NPY_DISABLE_CPU_FEATURES": dropped}


def test_the_cache_key_follows_the_numeric_environment() -> None:
    spec = TrainingRunSpec.model_validate({"datasetRef": {"name": "d"}, "target": "y",
                                           "estimator": {"name": "LogisticRegression"}})
    packages = {"scikit-learn": "1.9.1", "image": "mloop:1"}
    here = trainer_environment()
    forced = {**here, "overrides": {"OPENBLAS_CORETYPE": "Haswell"}}
    assert cache_key(spec, "sha256:a", packages, here) == cache_key(spec, "sha256:a", packages, trainer_environment())
    assert cache_key(spec, "sha256:a", packages, forced) != cache_key(spec, "sha256:a", packages, here)
