"""Saving a run's state and observables at save times.

The save device function writes one row of one run's outputs from lane
``j`` of a block (lane form, see :mod:`cubie_kernel.targets`):
``save(state, parameters, t, state_row, observable_row, j)``. (Per-save step
counters are written by the loop, which owns them.) Which outputs
exist is a compile-time decision (:class:`OutputFlags`, the kernel's
``compile_flags``): a disabled output has zero columns and costs nothing.
No buffers: observables are evaluated straight into their output row.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.systems import ODESystem

#: Relative slack when deciding whether the last save interval is a full one.
SAVE_TIME_TOLERANCE = 1e-9


def save_times(duration: float, save_every: float | None) -> np.ndarray:
    """Save times relative to the start of saving (float64).

    With ``save_every``: 0, save_every, 2 save_every, ... and always
    ``duration`` last (a final partial interval is saved too). Without it
    (None): only ``duration``, the final state. The loop's device code uses
    the same rule: ``i * save_every`` for every row but the last, which is
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


@attrs.frozen
class OutputFlags:
    """Compile-time output switches (the batch kernel's ``compile_flags``)."""

    save_states: bool = True
    save_observables: bool = True
    save_initial: bool = True  # False when save_every is None (final state only)
    save_counters: bool = False  # cumulative n_steps / n_rejected at every save


@attrs.frozen
class OutputSettings:
    system: ODESystem
    flags: OutputFlags = OutputFlags()
    precision: type = np.float64
    target: str = "cpu"


class OutputFunctions(CompiledFactory):
    """Factory of the ``save`` device function; registers no buffers."""

    def __init__(self, settings: OutputSettings) -> None:
        super().__init__(settings)

    @property
    def flags(self) -> OutputFlags:
        return self.compile_settings.flags

    @property
    def n_saved_states(self) -> int:
        s = self.compile_settings
        return s.system.n_states if s.flags.save_states else 0

    @property
    def n_saved_observables(self) -> int:
        s = self.compile_settings
        return s.system.n_observables if s.flags.save_observables else 0

    def build(self):
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        observables = backend.device_jit(s.system.lane_functions(precision)["observables_lane"])
        lanes = backend.lanes(precision)
        n_states = self.n_saved_states
        with_observables = self.n_saved_observables > 0

        def save(state, parameters, t, state_row, observable_row, j):
            for k in range(n_states):
                state_row[k] = state[k * lanes + j]
            if with_observables:
                observables(state, parameters, precision(t), observable_row, j, lanes)

        return backend.device_jit(save)
