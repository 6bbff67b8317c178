"""The ``cpu`` target: blocks of runs advanced in lockstep across SIMD lanes.

A core's vector units only help when several runs advance together, as the
threads of a GPU warp do: one run per loop iteration is bound by the latency
of dependent arithmetic. So each task (one per thread) drives a block of ``L``
runs (the *lanes*, :meth:`CpuTarget.lanes`): every buffer holds element
``k`` of lane ``j`` at ``k * L + j``, and the step attempt loops over the
lanes innermost, which LLVM vectorises. Lanes keep their own step sizes,
accept/reject decisions, save rows and status; when a lane's run ends it
takes the task's next run, so the block keeps every lane busy until the
task runs out of runs.

Tasks take interleaved runs (``task, task + n_tasks, ...``): the cost of a
run often grows along a sweep (with a parameter), and contiguous ranges per
thread would leave a core idle while the other finishes the expensive end.

The task kernel is written to a module file in the kernel cache
(:mod:`cubie_kernel.kernel_cache`) and compiled with ``cache=True``, so a
second process solving the same spec loads it instead of compiling. Tasks
run in Python threads over a ``nogil`` kernel rather than in a numba
``prange``: the same parallelism, without the seconds a parallel region
adds to every compile.
"""

from __future__ import annotations

import concurrent.futures
import os
import time

import numba
import numpy as np

from cubie_kernel import kernel_cache
from cubie_kernel.targets import KernelSizes, Target, batch_argument_types, slice_allocator

#: Options for every device function on this target. ``error_model="numpy"``
#: makes division by zero give inf/nan as on a GPU instead of raising.
JIT_OPTIONS = {"error_model": "numpy"}

#: Lanes per block, in vector registers: L = LANE_VECTORS * (vector width /
#: element size). 8 vectors (64 float64 lanes on AVX-512) measured as good as
#: 16 for Lorenz RK4 and DP5, within noise, with half the scratch per block;
#: 16 lanes and fewer did not vectorise well (simd-lanes note).
LANE_VECTORS = 8

#: Environment variable that overrides the lane count (a power of two).
LANES_ENV = "CUBIE_CPU_LANES"

_KERNEL_TEMPLATE = '''\
"""cubie_kernel cpu batch kernel {fingerprint} (generated; safe to delete)."""
import numba
import numpy as np

# ``drive`` (the common loop driver) is put into this module's namespace by
# cubie_kernel.kernel_cache before this code runs.

LANES = {lanes}
N_SHARED = {n_shared}
N_SCRATCH = {n_scratch}
N_CLOCK = {n_clock}
N_FLAGS = {n_flags}


@numba.njit(nogil=True, error_model="numpy", cache=True)
def batch_task(initial_values, parameters, state_output, observable_output,
               counter_output, summary_output, final_output, event_times, event_states,
               event_counts, counters, status, t0, duration, warmup, task, n_tasks):
    scratch = np.empty(N_SCRATCH, np.{precision})
    clock = np.zeros(N_CLOCK, np.float64)
    flags = np.zeros(N_FLAGS, np.int32)
    drive(initial_values, parameters, state_output, observable_output,
          counter_output, summary_output, final_output, event_times, event_states,
          event_counts, counters, status, t0, duration, warmup, task, n_tasks,
          scratch[:N_SHARED], scratch[N_SHARED:], clock, flags)
'''


def host_threads() -> int:
    """Threads a batch may use: numba's setting, without starting numba's own pool.

    ``numba.get_num_threads()`` (which honours ``numba.set_num_threads``)
    once numba's threading layer runs; before that ``NUMBA_NUM_THREADS``
    as numba reads it. Asking numba before would start its pool with the
    value of that moment, and a later change of the variable (a dask
    worker's environment is applied after numba is imported) then makes
    every compile fail.
    """
    from numba.np.ufunc import parallel

    if parallel._is_initialized:
        return numba.get_num_threads()
    numba.config.reload_config()
    return int(numba.config.NUMBA_NUM_THREADS)


def vector_bytes() -> int:
    """Width of the host's widest float vector registers, in bytes."""
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features()
        if features.get("avx512f"):
            return 64
        if features.get("avx") or features.get("avx2"):
            return 32
    except Exception:  # no feature query on this platform: assume 128-bit vectors
        pass
    return 16


class CpuTarget(Target):
    """Device functions through ``numba.njit``; blocks of lanes in a ``prange``.

    Parameters
    ----------
    lanes
        Runs per block; None picks them from the vector width and the
        precision (or the ``CUBIE_CPU_LANES`` environment variable).
    """

    name = "cpu"
    local_in_persistent = True
    uses_host_cores = True

    def __init__(self, lanes: int | None = None) -> None:
        what = "lanes"
        if lanes is None and os.environ.get(LANES_ENV):
            what, lanes = LANES_ENV, os.environ[LANES_ENV]
            try:
                lanes = int(lanes)
            except ValueError:
                raise ValueError(
                    f"{LANES_ENV} must be a power of two >= 1, got {lanes!r}"
                ) from None
        if lanes is not None and (
            isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1
            or lanes & (lanes - 1)
        ):
            raise ValueError(f"{what} must be a power of two >= 1, got {lanes!r}")
        self._lanes = lanes

    def available(self) -> bool:
        return True

    def lanes(self, precision) -> int:
        if self._lanes is not None:
            return self._lanes
        return LANE_VECTORS * vector_bytes() // np.dtype(precision).itemsize

    def device_jit(self, fn, inline: bool = False):
        """Compile a plain-Python device function with ``numba.njit``.

        ``inline=True`` inlines it into its callers at the Numba IR level:
        for small functions on the hot path (allocators, the system's
        right-hand side), where a call costs more than the work and where
        the caller's lane loop must see the arithmetic to vectorise it.
        """
        return numba.njit(inline="always" if inline else "never", **JIT_OPTIONS)(fn)

    def allocator(self, region: str, offset: int, size: int, precision):
        """A slice of the block's ``shared`` or ``persistent`` scratch."""
        allocate = slice_allocator(region, offset, size)
        if allocate is None:
            raise ValueError(f"the cpu target has no {region!r} region")
        return self.device_jit(allocate, inline=True)

    def build_batch_kernel(self, driver, sizes: KernelSizes):
        """The task kernel (one block of lanes), loaded from the kernel cache or compiled into it."""
        lanes = self.lanes(sizes.precision)
        source = _KERNEL_TEMPLATE.format(
            fingerprint=sizes.fingerprint,
            lanes=lanes,
            n_shared=sizes.shared * lanes,
            n_scratch=(sizes.shared + sizes.persistent) * lanes,
            n_clock=sizes.clock * lanes,
            n_flags=sizes.flags * lanes,
            precision=np.dtype(sizes.precision).name,
        )
        module = kernel_cache.import_source(
            "cpu_kernel", source, {"drive": driver}, identity=sizes.fingerprint
        )
        return module.batch_task

    def compile(self, kernel, sizes: KernelSizes) -> None:
        """Compile the task kernel for the batch's argument types (or load it)."""
        if kernel.signatures:
            return
        task = (numba.int64, numba.int64)  # this block's first run, the run stride
        kernel.compile(batch_argument_types(sizes.precision) + task)

    def launch(self, kernel, sizes: KernelSizes, arrays: tuple, scalars: tuple) -> float:
        """Run the batch: one task per thread, each a block of lanes over interleaved runs.

        Tasks run in Python threads; the kernel releases the GIL
        (``nogil=True``), so they run in parallel. Threads: see
        :func:`host_threads`; fewer when there are not enough runs to fill
        their lanes.
        """
        n_runs = arrays[-1].shape[0]
        start = time.perf_counter()
        if n_runs == 0:
            return 0.0
        lanes = self.lanes(sizes.precision)
        self.compile(kernel, sizes)  # here, not in a pool thread
        n_tasks = max(1, min(host_threads(), -(-n_runs // lanes)))
        if n_tasks == 1:
            kernel(*arrays, *scalars, 0, 1)
        else:
            with concurrent.futures.ThreadPoolExecutor(n_tasks) as pool:
                done = [pool.submit(kernel, *arrays, *scalars, task, n_tasks)
                        for task in range(n_tasks)]
                for future in done:
                    future.result()
        return time.perf_counter() - start

    def free_memory_bytes(self) -> int:
        import psutil

        return int(psutil.virtual_memory().available)
