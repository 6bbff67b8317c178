"""The ``cpu`` target: device functions through ``numba.njit``, runs in a prange.

Each worker thread of the prange walks an interleaved set of runs
(``lane, lane + n_lanes, ...``): the cost of a run often grows along a
sweep (e.g. with a parameter), and contiguous blocks per thread would leave
cores idle while one thread finishes the expensive end.
"""

from __future__ import annotations

import time

import numba
import numpy as np

#: Options for every device function on this target. ``error_model="numpy"``
#: makes division by zero give inf/nan as on a GPU instead of raising.
JIT_OPTIONS = {"error_model": "numpy", "cache": False}

#: Interleaved lanes per thread (see module docstring).
LANES_PER_THREAD = 4


def device_jit(fn, inline: bool = False):
    """Compile a plain-Python device function for the cpu target.

    ``inline=True`` inlines it into its callers at the Numba IR level: for
    small functions on the hot path (allocators, the system's right-hand
    side), where a call through numba's calling convention costs more than
    the work; big ones stay calls, which keeps compile times down.
    """
    return numba.njit(inline="always" if inline else "never", **JIT_OPTIONS)(fn)


def allocator(region: str, offset: int, size: int, precision):
    """Allocator ``(shared, persistent) -> array``: a slice of a region.

    On the cpu target every buffer, whatever its location, is a slice of
    the run's scratch (the registry lays non-persistent local buffers out
    in the persistent region), so ``region`` is never ``"local"`` here.
    """
    start, stop = offset, offset + size
    if region == "shared":

        def allocate(shared, persistent):
            return shared[start:stop]

    elif region == "persistent":

        def allocate(shared, persistent):
            return persistent[start:stop]

    else:
        raise ValueError(f"the cpu target has no {region!r} region")
    return device_jit(allocate, inline=True)


def build_batch_kernel(loop_fn, shared_elements: int, persistent_elements: int, precision):
    """Compile the batch launcher: a parallel loop over runs.

    Parameters
    ----------
    loop_fn
        The per-run loop device function (see :mod:`cubie_kernel.integrators.loop`).
    shared_elements, persistent_elements
        Per-run sizes of the two regions, read from the registry.
    precision
        Float type of state and scratch.
    """
    n_shared = int(shared_elements)
    n_scratch = n_shared + int(persistent_elements)
    dtype = np.dtype(precision).type
    lanes_per_thread = LANES_PER_THREAD

    @numba.njit(parallel=True, **JIT_OPTIONS)
    def batch_kernel(
        initial_values, parameters, state_output, observable_output, counter_output,
        counters, status, t0, duration, warmup,
    ):
        n_runs = status.shape[0]
        n_lanes = min(n_runs, numba.get_num_threads() * lanes_per_thread)
        for lane in numba.prange(n_lanes):
            scratch = np.empty(n_scratch, dtype)
            shared = scratch[:n_shared]
            persistent = scratch[n_shared:]
            for run in range(lane, n_runs, n_lanes):
                status[run] = loop_fn(
                    initial_values[:, run],
                    parameters[:, run],
                    shared,
                    persistent,
                    state_output[:, :, run],
                    observable_output[:, :, run],
                    counter_output[:, :, run],
                    counters[:, run],
                    t0,
                    duration,
                    warmup,
                )

    return batch_kernel


def launch(kernel, n_runs: int, args) -> float:
    """Run a compiled batch kernel over host arrays (in place); returns seconds."""
    start = time.perf_counter()
    if n_runs:
        kernel(*args)
    return time.perf_counter() - start


def free_memory_bytes() -> int:
    """Host memory available for one batch (bytes)."""
    import psutil

    return int(psutil.virtual_memory().available)
