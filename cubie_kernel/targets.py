"""Compile targets: names, ``"auto"`` resolution and backend lookup.

Two targets share ONE source of device code:

``cpu``
    Device functions compiled with ``numba.njit``; the batch is a ``prange``
    over runs (:mod:`cubie_kernel.cpu_target`).
``cuda``
    Device functions compiled with ``numba.cuda.jit(device=True)``; one GPU
    thread per run (:mod:`cubie_kernel.cuda_target`, the only module that
    imports ``numba.cuda``). Without a GPU the same code runs in numba's CUDA
    simulator when ``NUMBA_ENABLE_CUDASIM=1`` is set before numba.cuda is
    imported: for tests only, it does ~30k thread-steps/s.

A backend module provides ``device_jit(fn)``, ``allocator(region, offset,
size, precision)``, ``build_batch_kernel(...)``, ``launch(...)`` and
``free_memory_bytes()``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

TARGET_NAMES = ("cpu", "cuda")
TARGET_CHOICES = ("auto",) + TARGET_NAMES


def check_target_name(name: str) -> str:
    """Return ``name`` if it is a concrete target, else raise ValueError."""
    if name not in TARGET_NAMES:
        raise ValueError(
            f"target must be one of {', '.join(repr(t) for t in TARGET_NAMES)}, got {name!r}"
        )
    return name


def cuda_simulator_enabled() -> bool:
    """True when numba's CUDA simulator is switched on for this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def gpu_available() -> bool:
    """True when a real CUDA GPU is visible (never under the simulator)."""
    if cuda_simulator_enabled():
        return False
    return get_target("cuda").real_gpu_available()


def resolve_target(name: str) -> str:
    """Turn a user's target choice into a concrete target name.

    ``"auto"`` picks ``"cuda"`` when a real GPU is visible, else ``"cpu"``.
    An explicit ``"cuda"`` needs a real GPU or the CUDA simulator.
    """
    if name not in TARGET_CHOICES:
        raise ValueError(
            f"target must be one of {', '.join(repr(t) for t in TARGET_CHOICES)}, got {name!r}"
        )
    if name == "auto":
        return "cuda" if gpu_available() else "cpu"
    if name == "cuda" and not (cuda_simulator_enabled() or gpu_available()):
        raise ValueError(
            "target='cuda' needs a CUDA GPU and none is visible; use target='cpu' "
            "(or 'auto'), or set NUMBA_ENABLE_CUDASIM=1 before importing numba to "
            "run in the CUDA simulator"
        )
    return name


def get_target(name: str) -> ModuleType:
    """The backend module of a concrete target (imported on first use)."""
    check_target_name(name)
    return importlib.import_module(f"cubie_kernel.{name}_target")
