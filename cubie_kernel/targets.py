"""Compile targets as plug-ins: the :class:`Target` interface and target lookup.

A target is one object that knows everything device-specific about running
a batch; nothing outside a target's module branches on a target's name. The
numerics (systems, steps, controllers, outputs, the loop) are written once,
as plain Python device functions in *lane form* (below), and each target
compiles and drives them its own way.

Lane form
---------
Every per-run buffer is laid out for a block of ``L`` runs that advance
together ("lanes"): element ``k`` of lane ``j`` lives at ``k * L + j``.
Device functions receive the block's arrays and either loop over the lanes
themselves (the step attempt, so that a CPU vectorises across runs) or take
the lane index ``j`` (controllers, saving, bookkeeping). A target chooses
``L`` (:meth:`Target.lanes`):

``cpu`` (:mod:`cubie_kernel.cpu_target`)
    Each core advances a block of runs in lockstep across its SIMD lanes
    (``L`` from the vector width and the precision); finished lanes take
    the block's next run.
``cuda`` (:mod:`cubie_kernel.cuda_target`, the only module that imports
``numba.cuda``)
    One thread per run, ``L = 1``: every lane loop is one iteration, every
    index ``k * 1 + 0``, which the compiler folds away. Without a GPU the
    same code runs in numba's CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1``
    is set before numba.cuda is imported: for tests only.

The interface
-------------
``name``, ``lanes(precision)`` and ``local_in_persistent`` (the buffer
layout policy), ``uses_host_cores``, ``available()``, ``preferred()``,
``device_jit(fn, inline)``, ``allocator(region, offset, size, precision)``
(the registry's slots, already scaled to lanes), ``build_batch_kernel(driver,
sizes)``, ``compile(kernel, sizes)``, ``launch(kernel, sizes, arrays,
scalars)``, ``free_memory_bytes()`` and, for PTX targets, ``ptx(driver,
sizes, cc)``. See :class:`Target`.

Later method families fit this interface without a new driver: an implicit
step is another step attempt over the block (its Newton iterations run per
lane inside it, masked like the controller's ``accept``, and a lane whose
iteration fails is reported through a lane array and becomes a rejected
step or a status bit), its Jacobian and LU are more registered buffers, and
event records are registered buffers plus run-state fields, all in lane form.

Plug-ins
--------
The built-in targets are listed in :data:`BUILTIN_TARGETS`; a package may add
one through the entry-point group ``cubie_kernel.targets`` (name -> a
zero-argument callable returning a :class:`Target`).
"""

from __future__ import annotations

import functools
import importlib
import os
from importlib import metadata
from typing import Any, Callable

import attrs
import numpy as np

#: Built-in targets: name -> "module:attribute" of a zero-argument factory.
BUILTIN_TARGETS = {
    "cpu": "cubie_kernel.cpu_target:CpuTarget",
    "cuda": "cubie_kernel.cuda_target:CudaTarget",
}

#: Entry-point group through which other packages add targets.
ENTRY_POINT_GROUP = "cubie_kernel.targets"

#: What users may ask for besides a concrete name.
AUTO = "auto"


@attrs.frozen
class KernelSizes:
    """What a target needs to build and launch a batch kernel.

    All sizes are per run, in elements of ``precision`` (the target scales
    them by its lanes): ``shared`` and ``persistent`` are the two regions
    the driver receives; ``clock`` and ``flags`` the per-run state words
    (float64 and int32, see :mod:`cubie_kernel.integrators.run_state`).
    """

    shared: int
    persistent: int
    clock: int
    flags: int
    precision: type
    #: Everything that changes the compiled code (a hex digest): the key of
    #: the on-disk kernel cache (:mod:`cubie_kernel.kernel_cache`).
    fingerprint: str
    #: Upper bound of a block of threads (targets without blocks ignore it).
    threads_per_block: int = 128


def slice_allocator(region: str, offset: int, size: int) -> Callable | None:
    """Plain-Python allocator ``(shared, persistent) -> slice`` of one region.

    What every target's :meth:`Target.allocator` does for the ``"shared"``
    and ``"persistent"`` regions before compiling it; None for any other
    region (the target decides).
    """
    start, stop = int(offset), int(offset) + int(size)
    if region == "shared":

        def allocate(shared, persistent):
            return shared[start:stop]

    elif region == "persistent":

        def allocate(shared, persistent):
            return persistent[start:stop]

    else:
        return None
    return allocate


def batch_argument_types(precision) -> tuple:
    """numba types of a batch kernel's arguments, as ``BatchSolverKernel`` passes them.

    ``initial_values`` and ``parameters`` (variable, run), state and
    observable outputs (sample, variable, run), counter outputs (sample,
    counter, run, int32), summaries (window, slot, run), final states
    (state, run), event times (record, event, run, float64), event states
    (record, event * state, run), event counts (event, run, int32), counters
    (counter, run) and status (run) (int32), then ``t0``, ``duration``,
    ``warmup`` (float64).
    """
    import numba

    real = numba.from_dtype(np.dtype(precision))
    i32 = numba.int32
    return (
        real[:, ::1], real[:, ::1], real[:, :, ::1], real[:, :, ::1],
        i32[:, :, ::1], real[:, :, ::1], real[:, ::1],
        numba.float64[:, :, ::1], real[:, :, ::1], i32[:, ::1],
        i32[:, ::1], i32[::1],
        numba.float64, numba.float64, numba.float64,
    )


class Target:
    """Interface of a compile target (subclass it to add one).

    Subclasses set :attr:`name` and implement every method below.
    """

    #: The name users pass as ``target=``.
    name: str = ""
    #: Layout policy: non-persistent local buffers live in the persistent
    #: region (True), or are fresh per-call local arrays (False).
    local_in_persistent: bool = True
    #: A launch runs on all of the host's cores (callers that share a host,
    #: such as a worker's threads, should launch one batch at a time).
    uses_host_cores: bool = False

    def available(self) -> bool:
        """True when this process can run kernels on this target."""
        raise NotImplementedError

    def unavailable_reason(self) -> str:
        """Why :meth:`available` is False (a sentence with what to do)."""
        return f"target {self.name!r} is not available in this process"

    def preferred(self) -> bool:
        """True when ``"auto"`` should pick this target over the cpu."""
        return False

    def lanes(self, precision) -> int:
        """Runs one driver advances together (buffer layout policy)."""
        raise NotImplementedError

    def device_jit(self, fn: Callable, inline: bool = False) -> Callable:
        """Compile a plain-Python device function for this target."""
        raise NotImplementedError

    def allocator(self, region: str, offset: int, size: int, precision) -> Callable:
        """Device function ``(shared, persistent) -> array`` for one slot.

        ``offset`` and ``size`` are in elements of the block (already
        multiplied by the lanes).
        """
        raise NotImplementedError

    def build_batch_kernel(self, driver: Callable, sizes: KernelSizes) -> Any:
        """Compile the batch kernel around the common ``driver``.

        ``driver(initial_values, parameters, state_output, observable_output,
        counter_output, summary_output, final_output, event_times,
        event_states, event_counts, counters, status, t0, duration, warmup,
        first_run, run_stride, shared, persistent, clock, flags)`` runs the runs
        ``first_run, first_run + run_stride, ...`` through one block of
        lanes (:func:`cubie_kernel.integrators.loop.IVPLoop.build`).
        """
        raise NotImplementedError

    def compile(self, kernel: Any, sizes: KernelSizes) -> None:
        """Compile ``kernel`` (or load it from the disk cache) now, not at first launch.

        Targets whose kernels compile at launch anyway may do nothing.
        """

    def launch(self, kernel: Any, sizes: KernelSizes, arrays: tuple, scalars: tuple) -> float:
        """Run ``kernel`` over host ``arrays`` (in place); returns kernel seconds."""
        raise NotImplementedError

    def free_memory_bytes(self) -> int:
        """Memory available to one batch on this target (bytes)."""
        raise NotImplementedError

    def ptx(self, driver: Callable, sizes: KernelSizes, cc: tuple[int, int]) -> str:
        """PTX of the batch kernel (only targets that compile to PTX)."""
        raise ValueError(f"target {self.name!r} does not compile to PTX; use target='cuda'")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _entry_points() -> dict[str, Any]:
    try:
        found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken installation must not break the built-ins
        return {}
    return {ep.name: ep for ep in found if ep.name not in BUILTIN_TARGETS}


def target_names() -> tuple[str, ...]:
    """Every concrete target name: the built-ins, then installed plug-ins."""
    return tuple(BUILTIN_TARGETS) + tuple(sorted(_entry_points()))


def target_choices() -> tuple[str, ...]:
    """What ``target=`` accepts: ``"auto"`` and every concrete name."""
    return (AUTO,) + target_names()


def check_target_name(name: str) -> str:
    """Return ``name`` if it is a concrete target, else raise ValueError."""
    names = target_names()
    if name not in names:
        raise ValueError(
            f"target must be one of {', '.join(repr(t) for t in names)}, got {name!r}"
        )
    return name


@functools.lru_cache(maxsize=None)
def get_target(name: str) -> Target:
    """The :class:`Target` object of a concrete target (created on first use)."""
    check_target_name(name)
    if name in BUILTIN_TARGETS:
        module, attribute = BUILTIN_TARGETS[name].split(":")
        factory = getattr(importlib.import_module(module), attribute)
    else:
        factory = _entry_points()[name].load()
    target = factory()
    if not isinstance(target, Target) or target.name != name:
        raise TypeError(f"the factory of target {name!r} must return a Target named {name!r}")
    return target


def cuda_simulator_enabled() -> bool:
    """True when numba's CUDA simulator is switched on for this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def gpu_available() -> bool:
    """True when a real GPU target is preferred here (never under the simulator)."""
    return any(get_target(name).preferred() for name in target_names() if name != "cpu")


def resolve_target(name: str) -> str:
    """Turn a user's target choice into a concrete target name.

    ``"auto"`` picks the first target that prefers itself here (a visible
    GPU), else ``"cpu"``. An explicit name must be available.
    """
    choices = target_choices()
    if name not in choices:
        raise ValueError(
            f"target must be one of {', '.join(repr(t) for t in choices)}, got {name!r}"
        )
    if name == AUTO:
        for candidate in target_names():
            if candidate != "cpu" and get_target(candidate).preferred():
                return candidate
        return "cpu"
    target = get_target(name)
    if not target.available():
        raise ValueError(target.unavailable_reason())
    return name


def __getattr__(attribute: str):
    # TARGET_NAMES / TARGET_CHOICES read the plug-ins when asked, never at import
    if attribute == "TARGET_NAMES":
        return target_names()
    if attribute == "TARGET_CHOICES":
        return target_choices()
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
