"""The ``cuda`` target: the ONLY module that imports ``numba.cuda``.

One thread per run: each thread is a block of one lane for the common
driver (:mod:`cubie_kernel.integrators.loop`), so every lane loop is one
iteration and every lane-form index folds to the plain one. The block's
dynamic shared memory is cut into one slice per thread (``stride`` elements
apart, see :func:`cubie_kernel.launch_geometry.shared_stride`), and each
thread gets its own persistent local array of a compile-time size and its
per-run state words (``clock``, ``flags``) as local arrays. Without a GPU
the same code runs in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numba
import numpy as np
from numba import cuda

from cubie_kernel import launch_geometry as geometry
from cubie_kernel.targets import (
    KernelSizes,
    Target,
    batch_argument_types,
    cuda_simulator_enabled,
    slice_allocator,
)

#: Fallback when the device (e.g. the simulator) cannot report it.
DEFAULT_MAX_SHARED_PER_BLOCK = 48 * 1024


def real_gpu_available() -> bool:
    """True when the driver reports at least one real GPU."""
    if cuda_simulator_enabled() or cuda.is_available() is False:
        return False
    try:
        return len(cuda.gpus) > 0 and not getattr(cuda, "simulator", None)
    except Exception:
        return False


def batch_kernel_function(driver, sizes: KernelSizes):
    """The batch kernel as a plain Python function (compile with ``cuda.jit``).

    One thread per run; the thread is a block of one lane for the common
    driver. Kept separate from :meth:`CudaTarget.build_batch_kernel` so PTX
    compilation can take the undecorated function with an explicit signature.
    """
    n_shared = int(sizes.shared)
    stride = geometry.shared_stride(n_shared)
    n_persistent = max(int(sizes.persistent), 1)
    n_clock = int(sizes.clock)
    n_flags = int(sizes.flags)
    element = numba.from_dtype(np.dtype(sizes.precision))

    def batch_kernel(
        initial_values, parameters, state_output, observable_output, counter_output,
        summary_output, final_output, event_times, event_states, event_counts, counters,
        status, t0, duration, warmup,
    ):
        thread = cuda.threadIdx.x
        run = cuda.blockIdx.x * cuda.blockDim.x + thread
        n_runs = status.shape[0]
        if run >= n_runs:
            return
        dynamic_shared = cuda.shared.array(0, element)
        persistent = cuda.local.array(n_persistent, element)
        clock = cuda.local.array(n_clock, numba.float64)
        flags = cuda.local.array(n_flags, numba.int32)
        shared = dynamic_shared[thread * stride : thread * stride + n_shared]
        driver(
            initial_values, parameters, state_output, observable_output, counter_output,
            summary_output, final_output, event_times, event_states, event_counts, counters,
            status, t0, duration, warmup, run, n_runs,
            shared, persistent,
            clock, flags,
        )

    return batch_kernel


class CudaTarget(Target):
    """One GPU thread per run (``L = 1``); device functions via ``cuda.jit``.

    Kernels are compiled in memory (not cached on disk): numba-cuda's cache
    for kernels that call closure device functions has not been verified on
    hardware here.
    """

    name = "cuda"
    local_in_persistent = False

    def available(self) -> bool:
        return cuda_simulator_enabled() or real_gpu_available()

    def unavailable_reason(self) -> str:
        return (
            "target='cuda' needs a CUDA GPU and none is visible; use target='cpu' "
            "(or 'auto'), or set NUMBA_ENABLE_CUDASIM=1 before importing numba to "
            "run in the CUDA simulator"
        )

    def preferred(self) -> bool:
        return real_gpu_available()

    def lanes(self, precision) -> int:
        return 1

    def device_jit(self, fn, inline: bool = False):
        """``cuda.jit(device=True)``; NVVM inlines device functions by itself."""
        return cuda.jit(device=True)(fn)

    def allocator(self, region: str, offset: int, size: int, precision):
        """Allocator ``(shared, persistent) -> array`` for one slot, IR-inlined.

        ``"local"`` gives a fresh ``cuda.local.array`` of the buffer's size (a
        compile-time constant: a closure int); other regions give slices.
        """
        allocate = slice_allocator(region, offset, size)
        if region == "local":
            n_local = max(int(size), 1)
            element = numba.from_dtype(np.dtype(precision))

            def allocate(shared, persistent):
                return cuda.local.array(n_local, element)

        elif allocate is None:
            raise ValueError(f"unknown memory region {region!r}")
        # Inlined at the Numba IR level: a CUDA device function may return only
        # arrays it was passed, not a slice or a local array it made. Inlined,
        # the slice or declaration lives in the caller's frame, where it belongs.
        return cuda.jit(device=True, inline="always")(allocate)

    def build_batch_kernel(self, driver, sizes: KernelSizes):
        """Compile (lazily, on first launch) the batch kernel."""
        return cuda.jit(batch_kernel_function(driver, sizes))

    def launch(self, kernel, sizes: KernelSizes, arrays: tuple, scalars: tuple) -> float:
        """Copy inputs to the device, launch, copy outputs back (in place).

        Returns the kernel's own time in seconds (CUDA events), NaN if unknown.
        """
        n_runs = arrays[-1].shape[0]
        if n_runs == 0:
            return 0.0
        geo = geometry.launch_geometry(
            n_runs,
            sizes.shared,
            np.dtype(sizes.precision).itemsize,
            max_shared_memory_per_block(),
            sizes.threads_per_block,
        )
        inputs, outputs = arrays[:2], arrays[2:]
        stream = cuda.stream()
        d_in = [cuda.to_device(np.ascontiguousarray(a), stream=stream) for a in inputs]
        d_out = [cuda.device_array(a.shape, a.dtype, stream=stream) for a in outputs]
        threads = geo.threads_per_block
        blocks = (n_runs + threads - 1) // threads
        start, stop = cuda.event(), cuda.event()
        start.record(stream)
        kernel[blocks, threads, stream, geo.shared_bytes_per_block](*d_in, *d_out, *scalars)
        stop.record(stream)
        for host, device in zip(outputs, d_out):
            device.copy_to_host(host, stream=stream)
        stream.synchronize()
        try:
            return cuda.event_elapsed_time(start, stop) / 1e3
        except Exception:  # the simulator's events do not time
            return float("nan")

    def free_memory_bytes(self) -> int:
        """Free memory on the current device (bytes)."""
        try:
            return int(cuda.current_context().get_memory_info()[0])
        except Exception:  # the simulator has no memory info
            import psutil

            return int(psutil.virtual_memory().available)

    def multiprocessor_count(self) -> int:
        """Streaming multiprocessors on the current device (1 if unknown)."""
        return multiprocessor_count()

    def ptx(self, driver, sizes: KernelSizes, cc: tuple[int, int]) -> str:
        """Real PTX of the batch kernel for compute capability ``cc`` (no GPU needed)."""
        return compile_ptx(
            batch_kernel_function(driver, sizes), kernel_signature(sizes.precision), cc
        )


def max_shared_memory_per_block() -> int:
    """The current device's shared memory limit per block (bytes)."""
    try:
        return int(cuda.get_current_device().MAX_SHARED_MEMORY_PER_BLOCK)
    except Exception:
        return DEFAULT_MAX_SHARED_PER_BLOCK


def multiprocessor_count() -> int:
    """Streaming multiprocessors on the current device (1 if unknown)."""
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:
        return 1


class _FakeDevice:
    """Stands in for the current device while compiling PTX without a GPU."""

    def __init__(self, cc: tuple[int, int]):
        self.compute_capability = cc


@contextlib.contextmanager
def _assumed_device(cc: tuple[int, int]) -> Iterator[None]:
    """Answer the dispatcher's "which device?" with ``cc`` while compiling.

    Compiling a kernel that calls device functions asks the current device
    for its compute capability; without a GPU that query fails. Holding
    numba's (re-entrant) compiler lock keeps other threads from compiling
    against the stand-in.
    """
    from numba.core.compiler_lock import global_compiler_lock
    from numba.cuda import dispatcher

    with global_compiler_lock:
        original = dispatcher.get_current_device
        dispatcher.get_current_device = lambda: _FakeDevice(cc)
        try:
            yield
        finally:
            dispatcher.get_current_device = original


def compile_ptx(pyfunc, signature, cc: tuple[int, int], **options) -> str:
    """Compile a kernel's Python function to PTX for ``cc``, no GPU needed.

    ``options`` (e.g. ``fastmath``, ``lineinfo``) go to ``cuda.compile_ptx``.
    """
    with _assumed_device(tuple(cc)):
        ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=tuple(cc), **options)
    return ptx


def kernel_signature(precision):
    """The numba signature of :func:`batch_kernel_function`'s kernel."""
    return batch_argument_types(precision)
