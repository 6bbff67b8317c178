"""Shared fixtures and marker-driven skips for the whole suite.

The markers themselves (``cudasim``, ``gpu``, ``ptx``, ``slurm``) are
registered in ``pyproject.toml``; this file only decides, per test, whether
the machine can run it. Each check runs at most once per session, and only
when a test carrying its marker is actually about to run, so a plain
``pytest -m "not gpu"`` never touches the CUDA driver.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

# Compiled kernels go to a fresh folder per test session (shared by the
# session's subprocesses, dask workers and pytest-xdist workers, which inherit
# it from the process that started them), never to the user's cache. Only the
# process that starts the session makes the folder, and only that process
# (named by CACHE_OWNER_ENV) removes it when the session ends (about 40 MB for
# the whole suite). A CUBIE_CACHE_DIR set by the user is kept.
CACHE_OWNER_ENV = "CUBIE_TEST_CACHE_OWNER"
if "CUBIE_CACHE_DIR" not in os.environ:
    os.environ["CUBIE_CACHE_DIR"] = tempfile.mkdtemp(prefix="cubie-test-kernels-")
    os.environ[CACHE_OWNER_ENV] = str(os.getpid())


def pytest_unconfigure(config):
    """Remove the session's kernel folder in the process that made it (after
    every xdist worker has ended)."""
    if os.environ.get(CACHE_OWNER_ENV) == str(os.getpid()):
        shutil.rmtree(os.environ["CUBIE_CACHE_DIR"], ignore_errors=True)

GPU_SKIP_REASON = "no CUDA GPU visible"
CUDASIM_SKIP_REASON = "set NUMBA_ENABLE_CUDASIM=1 (make test does)"
# Set by `make test-slurm`: there a missing SLURM is a failure, not a skip.
REQUIRE_SLURM_ENV = "CUBIE_REQUIRE_SLURM"
# Set by benchmarks/gpu_check.py (`make gpu-check`): there a missing GPU is a
# failure, not a skip.
REQUIRE_GPU_ENV = "CUBIE_REQUIRE_GPU"


def simulator_enabled() -> bool:
    """Whether numba.cuda is the CUDA simulator in this process.

    Read from numba's config (parsed from the environment when numba is
    first imported), which is what decides what ``numba.cuda`` becomes.
    """
    from numba import config

    return bool(config.ENABLE_CUDASIM)


@functools.cache
def real_cuda_gpu_present() -> bool:
    """True only for a real, usable CUDA GPU.

    Under the simulator ``numba.cuda.is_available()`` is True, so that case
    is ruled out first. Otherwise ``is_available()`` only runs ``cuInit``
    (no context is created) and returns False instead of raising when there
    is no driver library or no visible device.
    """
    if simulator_enabled():
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available()) and len(cuda.gpus) > 0
    except Exception:  # CudaSupportError and friends: no usable driver
        return False


def find_ptxas() -> str | None:
    """The ptxas that matches the NVVM in use: the numba-cuda[cu12] wheel's
    first, then one on PATH."""
    try:
        import nvidia.cuda_nvcc as cuda_nvcc
    except ImportError:
        pass
    else:
        for root in cuda_nvcc.__path__:
            path = os.path.join(root, "bin", "ptxas")
            if os.access(path, os.X_OK):
                return path
    return shutil.which("ptxas")


@functools.cache
def ptx_skip_reason() -> str | None:
    """None when NVVM and ptxas are both usable, else why not."""
    if simulator_enabled():
        return (
            "PTX needs the real numba.cuda; NUMBA_ENABLE_CUDASIM=1 replaces it "
            "with the simulator"
        )
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm_ok = nvvm.is_available()
    except Exception as exc:  # import or library-loading failure
        return f"NVVM not importable ({type(exc).__name__}: {exc})"
    if not nvvm_ok:
        return "NVVM not found: pip install 'numba-cuda[cu12]'"
    if find_ptxas() is None:
        return "ptxas not found: pip install 'numba-cuda[cu12]'"
    return None


@functools.cache
def slurm_skip_reason() -> str | None:
    """None when a local SLURM (.ci/slurm/start.sh) answers, else why not."""
    if os.geteuid() != 0:
        return "not root: the local SLURM of .ci/slurm/start.sh runs jobs as root"
    if shutil.which("sbatch") is None:
        return "sbatch not found: run .ci/slurm/start.sh (make test-slurm does)"
    try:
        subprocess.run(["sinfo", "-h"], capture_output=True, text=True, timeout=15, check=True)
    except subprocess.CalledProcessError as exc:
        why = (exc.stderr or exc.stdout).strip().splitlines()[-1:] or [f"exit {exc.returncode}"]
        return f"SLURM not running (sinfo: {why[0]}): run .ci/slurm/start.sh"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"SLURM not running (sinfo: {exc}): run .ci/slurm/start.sh"
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not real_cuda_gpu_present():
        if os.environ.get(REQUIRE_GPU_ENV):
            pytest.fail(f"{GPU_SKIP_REASON} ({REQUIRE_GPU_ENV} is set)", pytrace=False)
        pytest.skip(GPU_SKIP_REASON)
    if item.get_closest_marker("cudasim") is not None and not simulator_enabled():
        pytest.skip(CUDASIM_SKIP_REASON)
    if item.get_closest_marker("ptx") is not None:
        reason = ptx_skip_reason()
        if reason is not None:
            pytest.skip(reason)
    if item.get_closest_marker("slurm") is not None:
        reason = slurm_skip_reason()
        if reason is not None:
            if os.environ.get(REQUIRE_SLURM_ENV):
                pytest.fail(f"{reason} ({REQUIRE_SLURM_ENV} is set)", pytrace=False)
            pytest.skip(reason)


@pytest.fixture
def rng():
    """A fresh, fixed-seed generator per test."""
    return np.random.default_rng(12345)
