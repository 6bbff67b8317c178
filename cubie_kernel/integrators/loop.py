"""The per-run integration loop (``IVPLoop``).

One run: copy the initial values, integrate an optional warm-up (settling)
interval without saving, then save at the start and every ``save_every``,
with the last step of each interval clamped to land exactly on the save
time; the final state is always saved. Time accumulates in float64
whatever the state precision.

Time line of one run::

    t0 ---- warm-up ---- t_start = t0 + warmup ---- save every ... ---- t_start + duration

Buffers (registered under the loop, sizes in elements)
------------------------------------------------------
``state``, ``proposed_state``
    ``n_states`` each: the current state and the step's proposal.
``error``
    ``n_states`` for adaptive methods (the step's error estimate), else 0.

The step is a registered child, so its shared and persistent needs roll up
into the loop's.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.status import RunStatus
from cubie_kernel.systems import ODESystem

#: A fixed step within this relative slack of the remaining time is the
#: interval's last step (absorbs float64 round-off of accumulated time).
LAST_STEP_SLACK = 1e-6

#: Rows of the per-run counters output.
COUNTER_NAMES = ("n_steps", "n_rejected")


@attrs.frozen
class LoopSettings:
    """Compile-time settings of the per-run loop."""

    system: ODESystem
    dt: float
    save_every: float | None = None
    precision: type = np.float64
    target: str = "cpu"


class IVPLoop(CompiledFactory):
    """Factory of the per-run loop device function.

    The device function is ``loop(initial_values, parameters, shared,
    persistent, state_output, observable_output, counters, t0, duration,
    warmup) -> status``: per-run 1-D inputs, the run's 2-D output views
    (save, variable), its counters view, float64 times.
    """

    def __init__(self, settings: LoopSettings, step, output, registry) -> None:
        super().__init__(settings)
        self.step = step
        self.output = output
        self._registry = registry
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    def dependencies(self):
        return (self.step, self.output)

    def register_buffers(self) -> None:
        n = self.compile_settings.system.n_states
        adaptive = self.step.tableau.adaptive
        self._registry.register("state", self, n)
        self._registry.register("proposed_state", self, n)
        self._registry.register("error", self, n if adaptive else 0)
        if "step" not in self._registry.children(self):
            self._registry.register_child(self, self.step, "step")

    def settings_changed(self, changed: set[str]) -> None:
        if "system" in changed:
            self.register_buffers()

    def build(self):
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        registry = self._registry
        alloc_state = registry.get_allocator("state", self, s.target, precision)
        alloc_proposed = registry.get_allocator("proposed_state", self, s.target, precision)
        alloc_error = registry.get_allocator("error", self, s.target, precision)
        step_shared, step_persistent = registry.get_child_allocators(
            self, self.step, "step", s.target
        )
        step = self.step.device_function
        save = self.output.device_function
        n_states = s.system.n_states
        dt = float(s.dt)
        last_step_limit = dt * (1.0 + LAST_STEP_SLACK)
        save_initial = s.save_every is not None
        save_every = float(s.save_every) if save_initial else 0.0
        nonfinite = int(RunStatus.NONFINITE_STATE)
        nan = precision(np.nan)

        def advance(state, proposed, error, parameters, t, t_end, shared_s, persistent_s, n_steps):
            """Fixed steps from t to t_end; the last one lands on t_end."""
            while True:
                remaining = t_end - t
                last = remaining <= last_step_limit
                h = remaining if last else dt
                step(state, proposed, error, parameters, t, h, shared_s, persistent_s)
                for k in range(n_states):
                    state[k] = proposed[k]
                n_steps += 1
                if last:
                    return t_end, n_steps
                t = t + h

        advance = backend.device_jit(advance)

        def all_finite(state):
            for k in range(n_states):
                if not math.isfinite(state[k]):
                    return False
            return True

        all_finite = backend.device_jit(all_finite)

        def ivp_loop(
            initial_values, parameters, shared, persistent, state_output,
            observable_output, counters, t0, duration, warmup,
        ):
            state = alloc_state(shared, persistent)
            proposed = alloc_proposed(shared, persistent)
            error = alloc_error(shared, persistent)
            shared_s = step_shared(shared, persistent)
            persistent_s = step_persistent(shared, persistent)
            for k in range(n_states):
                state[k] = initial_values[k]
            n_saves = state_output.shape[0]
            status = 0
            n_steps = 0
            t = t0
            t_start = t0 + warmup
            if warmup > 0.0:
                t, n_steps = advance(
                    state, proposed, error, parameters, t, t_start, shared_s, persistent_s, n_steps
                )
                if not all_finite(state):
                    status |= nonfinite
            for i in range(n_saves):
                if i > 0 or not save_initial:
                    t_save = t_start + duration
                    if save_initial and i < n_saves - 1:
                        t_save = t_start + i * save_every
                    if status == 0:
                        t, n_steps = advance(
                            state, proposed, error, parameters, t, t_save,
                            shared_s, persistent_s, n_steps,
                        )
                        if not all_finite(state):
                            status |= nonfinite
                if status == 0:
                    save(state, parameters, t, state_output[i], observable_output[i])
                else:
                    for k in range(state_output.shape[1]):
                        state_output[i, k] = nan
                    for k in range(observable_output.shape[1]):
                        observable_output[i, k] = nan
            counters[0] = n_steps
            counters[1] = 0
            return status

        return backend.device_jit(ivp_loop)
