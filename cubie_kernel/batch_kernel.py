"""``BatchSolverKernel``: many independent runs on one device.

The kernel owns nothing but compile-time settings (:class:`BatchSolverConfig`:
``loop_fn``, ``compile_flags``, ``precision``). Every memory size is read
from the buffer registry when it is needed, so moving a buffer between
shared and local memory changes the next build and the next launch.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import attrs
import numpy as np

from cubie_kernel import kernel_cache, targets
from cubie_kernel import launch_geometry as geometry
from cubie_kernel.integrators import run_state
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.integrators.loop import COUNTER_NAMES
from cubie_kernel.integrators.single_run import SETTINGS as RUN_SETTINGS
from cubie_kernel.integrators.single_run import SingleIntegratorRun
from cubie_kernel.outputs import Output, save_times, window_bounds
from cubie_kernel.outputs.output import n_windows

#: Fraction of free device memory one batch chunk may use.
DEVICE_MEMORY_FRACTION = 0.8


@attrs.frozen
class BatchSolverConfig:
    """Compile-time settings of the batch kernel: no memory sizes here."""

    loop_fn: Any
    compile_flags: Output
    precision: type


@attrs.frozen
class BatchOutput:
    """Host arrays of one batch, in the device's coalesced order.

    ``state`` is (time, variable, run), ``observables`` likewise,
    ``save_counters`` (time, counter, run) holds cumulative step counts at
    each save (zero counters unless requested), ``summaries`` (window, slot,
    run) the summary metrics' results (slots as
    :meth:`Output.resolve <cubie_kernel.outputs.Output.resolve>` lays them
    out), ``final_state`` (state, run) each run's last state (zero states
    unless requested), ``event_times`` (record, event, run, float64; NaN
    beyond each run's recorded crossings), ``event_states`` (record, event *
    state, run) the states at those crossings, ``event_counts`` (event,
    run) the crossings per run, ``counters`` is (counter, run), ``status`` is (run,),
    ``time`` holds the save times and ``window_start``/``window_end`` the
    windows' bounds (absolute, float64); ``kernel_seconds`` sums the
    kernel's own time over device chunks (CUDA events on a GPU, wall time
    on the cpu).
    """

    time: np.ndarray
    state: np.ndarray
    observables: np.ndarray
    save_counters: np.ndarray
    summaries: np.ndarray
    final_state: np.ndarray
    event_times: np.ndarray
    event_states: np.ndarray
    event_counts: np.ndarray
    counters: np.ndarray
    status: np.ndarray
    n_chunks: int
    kernel_seconds: float
    window_start: np.ndarray
    window_end: np.ndarray


class BatchSolverKernel(CompiledFactory):
    """Launch many runs of one :class:`SingleIntegratorRun`.

    Parameters
    ----------
    single_integrator
        The assembled run; its registry answers every memory question.
    threads_per_block
        Upper bound of the cuda block size (shrunk for shared memory).
    """

    def __init__(self, single_integrator: SingleIntegratorRun, threads_per_block: int = 128):
        self.single_integrator = single_integrator
        self.threads_per_block = int(threads_per_block)
        super().__init__(self._current_config())

    def _current_config(self) -> BatchSolverConfig:
        run = self.single_integrator
        return BatchSolverConfig(
            loop_fn=run.device_function, compile_flags=run.compile_flags, precision=run.precision
        )

    def refresh(self) -> None:
        """Pull ``loop_fn``/``compile_flags``/``precision`` from the run (rebuilds if stale)."""
        config = self._current_config()
        self.update_compile_settings(attrs.asdict(config, recurse=False))

    @property
    def config(self) -> BatchSolverConfig:
        return self.compile_settings

    @property
    def registry(self):
        return self.single_integrator.registry

    @property
    def registry_owner(self):
        return self.single_integrator

    @property
    def target(self) -> str:
        return self.single_integrator.target

    # ------------------------------------------------------------------ update
    def update(self, updates: Mapping[str, Any] | None = None, **kwargs) -> set[str]:
        """Route settings: run settings to the run, ``*_location`` keys to the registry.

        Everything is checked before anything changes: an unknown key or an
        invalid value raises ValueError (naming it) and leaves the kernel as
        it was. Returns the recognised keys.
        """
        updates = {**(updates or {}), **kwargs}
        run = self.single_integrator
        location_keys = self.registry.location_keys(run)
        unknown = [k for k in updates if k not in location_keys and k not in RUN_SETTINGS]
        if unknown:
            raise ValueError(
                f"unknown setting(s) {sorted(unknown)}; valid settings: "
                f"{', '.join(sorted(RUN_SETTINGS))} and buffer locations "
                f"{', '.join(sorted(location_keys))}"
            )
        settings = {k: v for k, v in updates.items() if k in RUN_SETTINGS}
        locations = {k: v for k, v in updates.items() if k in location_keys}
        if settings:
            run.evolved(settings)  # validates, changes nothing
        for owner in self._owners():
            self.registry.check_update(owner, locations)
        recognised = run.update(settings)
        if locations:
            recognised |= self._update_locations(locations)
        self.refresh()
        return recognised

    def _owners(self) -> list:
        """The run and every registered descendant (buffer owners)."""
        owners, stack = [], [self.single_integrator]
        while stack:
            owner = stack.pop()
            owners.append(owner)
            stack.extend(self.registry.children(owner).values())
        return owners

    def _update_locations(self, locations: Mapping[str, str]) -> set[str]:
        recognised = set()
        for owner in self._owners():
            recognised |= self.registry.update(owner, locations)
        return recognised

    # ------------------------------------------------------------------ memory
    @property
    def shared_memory_elements(self) -> int:
        return self.registry.shared_buffer_size(self.single_integrator)

    @property
    def local_memory_elements(self) -> int:
        return self.registry.persistent_local_buffer_size(self.single_integrator)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.single_integrator.precision).itemsize

    @property
    def shared_memory_bytes(self) -> int:
        """Dynamic shared bytes of one run, padding included."""
        return geometry.shared_stride(self.shared_memory_elements) * self.itemsize

    @property
    def shared_memory_needs_padding(self) -> bool:
        return geometry.needs_padding(self.shared_memory_elements)

    def n_saves(self, duration: float) -> int:
        return len(save_times(duration, self.single_integrator.settings.save_every))

    def n_windows(self, duration: float) -> int:
        """Summary windows of a run of ``duration`` (1 without summaries)."""
        output = self.single_integrator.settings.output
        return n_windows(self.n_saves(duration), output.samples_per_window)

    def per_run_device_bytes(self, duration: float) -> int:
        """Device bytes one run needs: inputs + outputs + registry scratch.

        The figure the distributed planner sizes chunks with.
        """
        run = self.single_integrator
        system = run.system
        inputs = (system.n_states + system.n_parameters) * self.itemsize
        outputs = self.n_saves(duration) * (run.n_saved_states + run.n_saved_observables)
        outputs += self.n_windows(duration) * run.n_summary_slots
        outputs += system.n_states if run.compile_flags.final_state else 0
        n_records, n_events = self._event_shape()
        outputs += n_records * n_events * system.n_states
        outputs *= self.itemsize
        outputs += n_records * n_events * 8 + n_events * 4  # float64 times, int32 counts
        bookkeeping = (len(COUNTER_NAMES) + 1) * 4 + run_state.bytes_per_run()
        if run.compile_flags.counters:
            bookkeeping += self.n_saves(duration) * len(COUNTER_NAMES) * 4
        scratch = self.registry.scratch_elements(run) * self.itemsize
        return inputs + outputs + bookkeeping + scratch

    # ------------------------------------------------------------------- build
    def build(self):
        return self.build_kernel()

    @property
    def backend(self) -> targets.Target:
        """The :class:`~cubie_kernel.targets.Target` this kernel compiles for."""
        return targets.get_target(self.target)

    def kernel_sizes(self) -> targets.KernelSizes:
        """Sizes and the code fingerprint the target builds and launches with."""
        run = self.single_integrator
        return targets.KernelSizes(
            shared=self.shared_memory_elements,
            persistent=self.registry.persistent_region_size(run, run.target),
            clock=len(run_state.CLOCK_FIELDS),
            flags=len(run_state.FLAG_FIELDS),
            precision=self.config.precision,
            fingerprint=self.fingerprint(),
            threads_per_block=self.threads_per_block,
        )

    def fingerprint(self) -> str:
        """Digest of everything that changes this kernel's compiled code.

        The run's settings (system definition, method, controller and its
        tuning, outputs, precision, target), the target's lanes, the buffer
        layout of every owner in the run's tree, and (inside
        :func:`~cubie_kernel.kernel_cache.fingerprint`) the library versions
        and cubie_kernel's source. The key of the on-disk kernel cache.
        """
        run = self.single_integrator
        layouts = [
            (type(owner).__qualname__, self.registry.layout(owner, run.target))
            for owner in self._owners()
        ]
        return kernel_cache.fingerprint(
            run.settings, self.backend.lanes(run.precision), self.config.compile_flags, layouts
        )

    def build_kernel(self):
        """Compile the batch kernel with sizes read from the registry now."""
        return self.backend.build_batch_kernel(self.config.loop_fn, self.kernel_sizes())

    @property
    def device_function(self):
        self.refresh()
        return super().device_function

    def compile(self) -> float:
        """Compile the kernel now (or load it from the disk cache); returns seconds.

        Otherwise that happens at the first launch. Targets that compile at
        launch anyway (cuda) only build the kernel object here.
        """
        start = time.perf_counter()
        self.backend.compile(self.device_function, self.kernel_sizes())
        return time.perf_counter() - start

    def ptx(self, cc: tuple[int, int] = (8, 0)) -> str:
        """Real PTX of this kernel for compute capability ``cc`` (no GPU needed).

        Raises ValueError on a target that does not compile to PTX.
        """
        self.refresh()
        return self.backend.ptx(self.config.loop_fn, self.kernel_sizes(), tuple(cc))

    # --------------------------------------------------------------------- run
    def max_chunk_runs(self, duration: float, memory_bytes: int | None = None) -> int:
        """Runs per device chunk that fit the memory budget."""
        if memory_bytes is None:
            memory_bytes = self.backend.free_memory_bytes()
        budget = int(memory_bytes * DEVICE_MEMORY_FRACTION)
        per_run = self.per_run_device_bytes(duration)
        if per_run > budget:
            raise MemoryError(
                f"one run needs {per_run} bytes but only {budget} are available on the device"
            )
        return budget // per_run

    def run(
        self,
        initial_values: np.ndarray,
        parameters: np.ndarray,
        duration: float,
        t0: float = 0.0,
        warmup: float = 0.0,
        memory_bytes: int | None = None,
        max_launch_runs: int | None = None,
    ) -> BatchOutput:
        """Integrate a batch; inputs are (variable, run) arrays of the precision.

        Splits the batch into device chunks when inputs + outputs +
        scratch exceed the memory budget (free device memory, or
        ``memory_bytes`` when given). ``max_launch_runs``, when given,
        is the chunk size instead, and no memory is queried: a caller that
        planned the batch's memory already (``cubie_dist``) passes it.
        """
        run = self.single_integrator
        precision = run.precision
        initial_values = np.ascontiguousarray(initial_values, dtype=precision)
        parameters = np.ascontiguousarray(parameters, dtype=precision)
        n_runs = initial_values.shape[1]
        times = self.output_times(duration, t0, warmup)
        shapes = self._output_shapes(duration)
        outputs = [np.zeros(shape + (n_runs,), dtype) for shape, dtype in shapes]
        kernel = self.device_function
        if max_launch_runs is None:
            max_launch_runs = self.max_chunk_runs(duration, memory_bytes)
        chunk = max(1, min(n_runs, max_launch_runs))
        starts = range(0, n_runs, chunk)
        kernel_seconds = 0.0
        for start in starts:
            stop = min(n_runs, start + chunk)
            if stop - start == n_runs:
                arrays = (initial_values, parameters, *outputs)
            else:
                arrays = (
                    np.ascontiguousarray(initial_values[:, start:stop]),
                    np.ascontiguousarray(parameters[:, start:stop]),
                    *(np.zeros(shape + (stop - start,), dtype) for shape, dtype in shapes),
                )
            kernel_seconds += self._launch(kernel, arrays, duration, t0, warmup)
            if stop - start != n_runs:
                for whole, part in zip(outputs, arrays[2:]):
                    whole[..., start:stop] = part
        return BatchOutput(times, *outputs, n_chunks=len(starts), kernel_seconds=kernel_seconds,
                           **self._window_times(duration, t0, warmup))

    def output_times(self, duration: float, t0: float = 0.0, warmup: float = 0.0) -> np.ndarray:
        """Absolute save times (float64) of a run of ``duration`` after ``warmup``."""
        return float(t0) + float(warmup) + save_times(duration, self.single_integrator.settings.save_every)

    def _output_shapes(self, duration: float) -> tuple[tuple[tuple[int, ...], type], ...]:
        """(shape without the run axis, dtype) of every output, in BatchOutput order."""
        run = self.single_integrator
        flags = run.compile_flags
        n_saves = self.n_saves(duration)
        n_counters = len(COUNTER_NAMES)
        n_records, n_events = self._event_shape()
        return (
            ((n_saves, run.n_saved_states), run.precision),
            ((n_saves, run.n_saved_observables), run.precision),
            ((n_saves, n_counters if flags.counters else 0), np.int32),
            ((self.n_windows(duration), run.n_summary_slots), run.precision),
            ((run.system.n_states if flags.final_state else 0,), run.precision),
            ((n_records, n_events), np.float64),
            ((n_records, n_events * run.system.n_states), run.precision),
            ((n_events,), np.int32),
            ((n_counters,), np.int32),
            ((), np.int32),
        )

    def _event_shape(self) -> tuple[int, int]:
        """(records, events) of the event outputs: the largest ``max_records``."""
        events = self.single_integrator.settings.events
        return (max((e.max_records for e in events), default=0), len(events))

    def _window_times(self, duration, t0, warmup) -> dict[str, np.ndarray]:
        start, end = window_bounds(duration, self.single_integrator.settings.output)
        offset = float(t0) + float(warmup)
        return {"window_start": offset + start, "window_end": offset + end}

    def empty_output(self, duration: float, t0: float = 0.0, warmup: float = 0.0) -> BatchOutput:
        """The output of a batch of zero runs: every array at its shape, nothing compiled."""
        times = self.output_times(duration, t0, warmup)
        arrays = [np.zeros(shape + (0,), dtype) for shape, dtype in self._output_shapes(duration)]
        return BatchOutput(times, *arrays, n_chunks=0, kernel_seconds=0.0,
                           **self._window_times(duration, t0, warmup))

    def _launch(self, kernel, arrays, duration, t0, warmup) -> float:
        scalars = (float(t0), float(duration), float(warmup))
        return self.backend.launch(kernel, self.kernel_sizes(), tuple(arrays), scalars)
