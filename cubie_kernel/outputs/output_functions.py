"""Taking a run's samples: time series rows and summary metrics.

The device function ``sample(i, source, parameters, t, j, run,
state_output, observable_output, summary_output, shared, persistent)``
takes sample ``i`` of lane ``j``'s run (lane form, see
:mod:`cubie_kernel.targets`) from the lane-form state ``source`` at time
``t``: it writes row ``i`` of the requested states and observables, and
updates the summary metrics, finalising a window at its last sample
(:mod:`cubie_kernel.outputs.metrics`). ``fail(i, run, summary_output,
n_samples)`` fills the windows a failed run has not finished with NaN.
(Per-sample step counters and the final state are written by the loop,
which owns them.) The source is generated per :class:`Output` (one line per
saved variable and per metric and variable, literal offsets) and imported
through :mod:`cubie_kernel.kernel_cache`.

Buffers (registered under the output functions, elements per run)
-----------------------------------------------------------------
``sample_observables``
    ``n_observables`` when any observable is saved or summarised, else 0.
``sample_derivative``
    ``n_states`` when a metric uses dx/dt, else 0.
``accumulators``
    Persistent: the summary metrics' accumulators of the current window.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from cubie_kernel import kernel_cache, targets
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.outputs.output import Output, ResolvedOutput, n_windows
from cubie_kernel.systems import ODESystem

#: Relative slack when deciding whether the last save interval is a full one.
SAVE_TIME_TOLERANCE = 1e-9


def save_times(duration: float, save_every: float | None) -> np.ndarray:
    """Sample times relative to the start of saving (float64).

    With ``save_every``: 0, save_every, 2 save_every, ... and always
    ``duration`` last (a final partial interval is sampled too). Without it
    (None): only ``duration``, the final state. The loop's device code uses
    the same rule: ``i * save_every`` for every sample but the last, which is
    ``duration``.
    """
    duration = float(duration)
    if save_every is None:
        return np.array([duration])
    n_full = math.floor(duration / save_every + SAVE_TIME_TOLERANCE)
    times = [k * save_every for k in range(n_full + 1)]
    if duration - times[-1] > SAVE_TIME_TOLERANCE * save_every:
        times.append(duration)
    else:
        times[-1] = duration
    return np.array(times, dtype=np.float64)


def window_bounds(duration: float, output: Output) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times (relative to the start of saving) of every summary window."""
    times = save_times(duration, output.save_every)
    m = output.samples_per_window
    count = n_windows(times.size, m)
    if m == 0:
        return times[:1], times[-1:]
    starts = np.array([times[w * m] for w in range(count)])
    ends = np.array([times[min((w + 1) * m, times.size - 1)] for w in range(count)])
    return starts, ends


@attrs.frozen
class OutputSettings:
    system: ODESystem
    output: Output = Output()
    precision: type = np.float64
    target: str = "cpu"


class OutputFunctions(CompiledFactory):
    """Factory of the ``sample`` device function; registers the buffers above."""

    def __init__(self, settings: OutputSettings, registry) -> None:
        super().__init__(settings)
        self._registry = registry
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    @property
    def output(self) -> Output:
        return self.compile_settings.output

    @property
    def resolved(self) -> ResolvedOutput:
        s = self.compile_settings
        return s.output.resolve(s.system)

    @property
    def n_saved_states(self) -> int:
        return len(self.resolved.states)

    @property
    def n_saved_observables(self) -> int:
        return len(self.resolved.observables)

    @property
    def n_summary_slots(self) -> int:
        return self.resolved.n_summary_slots

    def accumulator_bases(self) -> list[int]:
        """Accumulator offset of every summary slot group, and the total last."""
        bases, total = [], 0
        for group in self.resolved.summary_slots:
            bases.append(total)
            total += group.request.metric.accumulator_size(group.request.option)
        return bases + [total]

    def register_buffers(self) -> None:
        s = self.compile_settings
        resolved = self.resolved
        observables = s.system.n_observables if (
            resolved.observables or resolved.summarises_observables
        ) else 0
        self._registry.register("sample_observables", self, observables)
        self._registry.register(
            "sample_derivative", self, s.system.n_states if resolved.uses_derivative else 0
        )
        self._registry.register(
            "accumulators", self, self.accumulator_bases()[-1], persistent=True
        )

    def settings_changed(self, changed: set[str]) -> None:
        self.register_buffers()

    def source(self) -> str:
        """The generated source of ``sample`` and ``fail`` (for reading)."""
        s = self.compile_settings
        lanes = targets.get_target(s.target).lanes(s.precision)
        return sample_source(self.resolved, s.system, lanes, self.accumulator_bases())

    def build(self):
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        functions = s.system.lane_functions(precision)
        namespace = {
            "PREC": precision,
            "NAN": precision(np.nan),
            "observables_lane": backend.device_jit(functions["observables_lane"]),
            "dxdt_lane": backend.device_jit(functions["dxdt_lane"]),
        }
        for name in ("sample_observables", "sample_derivative", "accumulators"):
            namespace[f"alloc_{name}"] = self._registry.get_allocator(
                name, self, s.target, precision
            )
        for k, group in enumerate(self.resolved.summary_slots):
            metric = group.request.metric
            for part in ("init", "update", "finalise"):
                namespace[f"{part}_{k}"] = backend.device_jit(getattr(metric, part), inline=True)
        identity = kernel_cache.describe((s, self._registry.layout(self, s.target)))
        module = kernel_cache.import_source("sample", self.source(), namespace, identity)
        self._fail = backend.device_jit(module.fail)
        return backend.device_jit(module.sample)

    @property
    def fail_function(self):
        """``fail(i, run, summary_output, n_samples)`` of the built outputs."""
        self.device_function
        return self._fail


def sample_source(resolved: ResolvedOutput, system: ODESystem, lanes: int, bases) -> str:
    """Python source of ``sample`` and ``fail`` for one resolved output."""
    L = lanes
    n_obs = system.n_observables
    per_window = resolved.output.samples_per_window
    lines = [
        "# Generated by cubie_kernel.outputs.output_functions",
        "",
        "def sample(i, source, parameters, t, j, run, state_output, observable_output,",
        "           summary_output, shared, persistent):",
        "    tp = PREC(t)",
    ]
    need_observables = bool(resolved.observables) or resolved.summarises_observables
    if need_observables and n_obs:
        lines.append(f"    obs = alloc_sample_observables(shared, persistent)[j * {n_obs}:(j + 1) * {n_obs}]")
        lines.append(f"    observables_lane(source, parameters, tp, obs, j, {L})")
    if resolved.uses_derivative:
        lines.append("    der = alloc_sample_derivative(shared, persistent)")
        lines.append(f"    dxdt_lane(source, parameters, tp, der, j, {L})")
    for column, index in enumerate(resolved.states):
        lines.append(f"    state_output[i, {column}, run] = source[{index * L} + j]")
    for column, index in enumerate(resolved.observables):
        lines.append(f"    observable_output[i, {column}, run] = obs[{index}]")
    groups = resolved.summary_slots
    if groups:
        def value(group):
            if group.kind == "state":
                return f"source[{group.index * L} + j]"
            return f"obs[{group.index}]"

        def derivative(group):
            if group.request.metric.uses_derivative:
                return f"der[{group.index * L} + j]"
            return "PREC(0.0)"

        def init(indent):
            return [f"{indent}init_{k}(acc, {bases[k]}, {g.request.option}, j, {L})"
                    for k, g in enumerate(groups)]

        def update(indent):
            return [
                f"{indent}update_{k}(acc, {bases[k]}, {g.request.option}, j, {L}, "
                f"{value(g)}, {derivative(g)}, t)"
                for k, g in enumerate(groups)
            ]

        lines.append("    acc = alloc_accumulators(shared, persistent)")
        lines.append("    n = state_output.shape[0]")
        lines.append(f"    m = {per_window} if {per_window} > 0 else max(n - 1, 1)")
        lines.append("    if i == 0:")
        lines += init("        ")
        lines += update("    ")
        lines.append("    if i > 0 and (i == n - 1 or i % m == 0):")
        lines.append("        w = (i - 1) // m")
        lines += [
            f"        finalise_{k}(acc, {bases[k]}, {g.request.option}, j, {L}, summary_output, "
            f"w, {g.first_slot}, run)"
            for k, g in enumerate(groups)
        ]
        lines.append("        if i < n - 1:")
        lines += init("            ")
        lines += update("            ")
    lines.append("    return 0")
    lines += [
        "",
        "",
        "def fail(i, run, summary_output, n_samples):",
        "    # windows not finished when sample i could not be taken: NaN",
    ]
    if groups:
        lines.append(f"    m = {per_window} if {per_window} > 0 else max(n_samples - 1, 1)")
        lines.append("    first = 0 if i <= 0 else (i - 1) // m")
        lines.append("    for w in range(first, summary_output.shape[0]):")
        lines.append("        for k in range(summary_output.shape[1]):")
        lines.append("            summary_output[w, k, run] = NAN")
    lines.append("    return 0")
    return "\n".join(lines) + "\n"
