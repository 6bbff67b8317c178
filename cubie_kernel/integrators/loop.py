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
``derivative``
    ``n_states`` when the first step is estimated automatically (scratch of
    the estimate, see :func:`initial_step` below), else 0.

The step and the step-size controller are registered children, so their
shared and persistent needs roll up into the loop's.

Step control
------------
With a fixed controller every step is ``dt`` except the last of each
interval, clamped to land on the save time. With an adaptive one the step
is attempted, the controller accepts or rejects it and proposes the next
size; a step that would pass the save time is clamped to it, and after an
accepted clamped step the unclamped proposal is kept. The step accepted
right after a rejection does not grow the next one (Hairer, Norsett &
Wanner I, Sect. II.4; scipy does the same). A run stops with a
status flag when the step falls below ``dt_min`` (or no longer advances
``t``), or after ``max_steps`` attempted steps; it never stops its batch.
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

#: Default cap on attempted steps per run (accepted + rejected).
DEFAULT_MAX_STEPS = 100_000


@attrs.frozen
class LoopSettings:
    """Compile-time settings of the per-run loop.

    ``dt`` is the fixed step (fixed controller); ``dt0`` the first step of
    an adaptive run (None: estimated per run as scipy does); ``dt_min`` and
    ``max_steps`` end adaptive runs that stall.
    """

    system: ODESystem
    dt: float | None = None
    save_every: float | None = None
    dt0: float | None = None
    dt_min: float = 1e-12
    max_steps: int = DEFAULT_MAX_STEPS
    precision: type = np.float64
    target: str = "cpu"


class IVPLoop(CompiledFactory):
    """Factory of the per-run loop device function.

    The device function is ``loop(initial_values, parameters, shared,
    persistent, state_output, observable_output, counter_output, counters,
    t0, duration, warmup) -> status``: per-run 1-D inputs, the run's 2-D
    output views (save, variable), its counters view (n_steps, n_rejected),
    float64 times.
    """

    def __init__(self, settings: LoopSettings, step, controller, output, registry) -> None:
        super().__init__(settings)
        self.step = step
        self.controller = controller
        self.output = output
        self._registry = registry
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    def dependencies(self):
        return (self.step, self.controller, self.output)

    @property
    def adaptive(self) -> bool:
        return self.controller.is_adaptive

    @property
    def estimates_first_step(self) -> bool:
        return self.adaptive and self.compile_settings.dt0 is None

    def register_buffers(self) -> None:
        n = self.compile_settings.system.n_states
        self._registry.register("state", self, n)
        self._registry.register("proposed_state", self, n)
        self._registry.register("error", self, n if self.step.tableau.adaptive else 0)
        self._registry.register("derivative", self, n if self.estimates_first_step else 0)
        children = self._registry.children(self)
        if "step" not in children:
            self._registry.register_child(self, self.step, "step")
        if "controller" not in children:
            self._registry.register_child(self, self.controller, "controller")

    def settings_changed(self, changed: set[str]) -> None:
        self.register_buffers()

    def build(self):
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        registry = self._registry
        alloc_state = registry.get_allocator("state", self, s.target, precision)
        alloc_proposed = registry.get_allocator("proposed_state", self, s.target, precision)
        alloc_error = registry.get_allocator("error", self, s.target, precision)
        alloc_derivative = registry.get_allocator("derivative", self, s.target, precision)
        step_shared, step_persistent = registry.get_child_allocators(
            self, self.step, "step", s.target
        )
        control_shared, control_persistent = registry.get_child_allocators(
            self, self.controller, "controller", s.target
        )
        step = self.step.device_function
        control = self.controller.device_function
        reset_controller = self.controller.reset_function
        save = self.output.device_function
        first_step = self._build_first_step(backend, precision)
        n_states = s.system.n_states
        adaptive = self.adaptive
        estimate_first_step = self.estimates_first_step
        fsal = self.step.tableau.fsal
        # Adaptive steps live in the run's precision (so do the controller and
        # the first-step estimate): float32 runs do float64 arithmetic only on
        # time. A fixed step stays float64, so that time advances by exactly dt.
        step_type = precision if adaptive else np.float64
        wide = np.float64  # time is float64: widen a step before adding it to a time
        if adaptive:
            dt = step_type(0.0 if s.dt0 is None else s.dt0)
        else:
            dt = step_type(s.dt)
        last_step_limit = float(dt) * (1.0 + LAST_STEP_SLACK)
        dt_min = step_type(s.dt_min)
        max_steps = int(s.max_steps)
        save_initial = s.save_every is not None
        save_every = float(s.save_every) if save_initial else 0.0
        nonfinite = int(RunStatus.NONFINITE_STATE)
        too_small = int(RunStatus.STEP_SIZE_TOO_SMALL)
        too_many = int(RunStatus.MAX_STEPS_EXCEEDED)
        nan = precision(np.nan)

        def advance(
            state, proposed, error, parameters, t, t_end, h, counters,
            step_s, step_p, control_s, control_p, first_stage,
        ):
            """Step from t to t_end (landing on it); returns (t, h, status, first_stage)."""
            status = 0
            after_reject = False
            accepted = counters[0]  # counted in registers, stored on return
            rejected = counters[1]
            while True:
                remaining = t_end - t
                if adaptive:
                    last = h >= remaining
                else:
                    last = remaining <= last_step_limit
                h_try = step_type(remaining) if last else h
                step(state, proposed, error, parameters, t, h_try, step_s, step_p, first_stage)
                if adaptive:
                    accept, h_next = control(h_try, state, proposed, error, control_s, control_p)
                else:
                    accept = True
                    h_next = h
                if accept:
                    if after_reject and h_next > h_try:
                        h_next = h_try  # no growth right after a rejection
                    after_reject = False
                    for k in range(n_states):
                        state[k] = proposed[k]
                    accepted += 1
                    if fsal:
                        first_stage = 1
                    if last:
                        counters[0] = accepted
                        counters[1] = rejected
                        return t_end, max(h, h_next), status, first_stage
                    t = t + wide(h_try)  # widened first: NumPy 2 would add in float32
                else:
                    after_reject = True
                    rejected += 1
                    if fsal:
                        first_stage = 2
                h = h_next
                if adaptive:
                    if h < dt_min or t + wide(h) == t:
                        status |= too_small
                    elif accepted + rejected >= max_steps:
                        status |= too_many
                    if status != 0:
                        counters[0] = accepted
                        counters[1] = rejected
                        return t, h, status, first_stage

        advance = backend.device_jit(advance)

        def all_finite(state):
            for k in range(n_states):
                if not math.isfinite(state[k]):
                    return False
            return True

        all_finite = backend.device_jit(all_finite)

        def ivp_loop(
            initial_values, parameters, shared, persistent, state_output,
            observable_output, counter_output, counters, t0, duration, warmup,
        ):
            state = alloc_state(shared, persistent)
            proposed = alloc_proposed(shared, persistent)
            error = alloc_error(shared, persistent)
            derivative = alloc_derivative(shared, persistent)
            step_s = step_shared(shared, persistent)
            step_p = step_persistent(shared, persistent)
            control_s = control_shared(shared, persistent)
            control_p = control_persistent(shared, persistent)
            for k in range(n_states):
                state[k] = initial_values[k]
            counters[0] = 0
            counters[1] = 0
            n_saves = state_output.shape[0]
            status = 0
            first_stage = 0
            t = t0
            t_start = t0 + warmup
            h = dt
            if adaptive:
                reset_controller(control_s, control_p)
                if estimate_first_step:
                    h = first_step(
                        state, parameters, t, error, proposed, derivative, warmup + duration
                    )
            if warmup > 0.0:
                t, h, status, first_stage = advance(
                    state, proposed, error, parameters, t, t_start, h, counters,
                    step_s, step_p, control_s, control_p, first_stage,
                )
                if status == 0 and not all_finite(state):
                    status |= nonfinite
            for i in range(n_saves):
                if i > 0 or not save_initial:
                    t_save = t_start + duration
                    if save_initial and i < n_saves - 1:
                        t_save = t_start + i * save_every
                    if status == 0:
                        t, h, status, first_stage = advance(
                            state, proposed, error, parameters, t, t_save, h, counters,
                            step_s, step_p, control_s, control_p, first_stage,
                        )
                        if status == 0 and not all_finite(state):
                            status |= nonfinite
                if counter_output.shape[1] > 0:
                    counter_output[i, 0] = counters[0]
                    counter_output[i, 1] = counters[1]
                if status == 0:
                    save(state, parameters, t, state_output[i], observable_output[i])
                else:
                    for k in range(state_output.shape[1]):
                        state_output[i, k] = nan
                    for k in range(observable_output.shape[1]):
                        observable_output[i, k] = nan
            return status

        return backend.device_jit(ivp_loop)

    def _build_first_step(self, backend, precision):
        """Device function estimating a run's first step (scipy's rule).

        Hairer, Norsett & Wanner, Solving ODEs I, Sect. II.4 (as in scipy's
        ``select_initial_step``): with ``scale = atol + rtol |y0|``,
        ``d0 = ||y0||``, ``d1 = ||f0||``, ``h0 = 0.01 d0 / d1`` (1e-6 when
        either is tiny); one Euler step gives ``d2 = ||f1 - f0|| / h0``, and
        ``h1 = (0.01 / max(d1, d2)) ** (1 / (q + 1))`` with ``q`` the
        embedded order; the estimate is ``min(100 h0, h1, span)``.
        """
        s = self.compile_settings
        dxdt_py, _ = s.system.python_functions(precision)
        dxdt = backend.device_jit(dxdt_py)
        controls = self.controller.compile_settings
        atol = tuple(precision(a) for a in controls.atol)
        rtol = tuple(precision(r) for r in controls.rtol)
        order = self.step.tableau.error_order or 1
        exponent = precision(1.0 / (order + 1))
        n_states = s.system.n_states
        inv_n = precision(1.0 / n_states)
        zero, tiny, flat = precision(0.0), precision(1e-5), precision(1e-15)
        fallback, shrink = precision(1e-6), precision(1e-3)
        one_percent, hundred = precision(0.01), precision(100.0)
        wide = np.float64

        def first_step(state, parameters, t, f0, y1, f1, span):
            dxdt(state, parameters, precision(t), f0)
            d0 = zero
            d1 = zero
            for i in range(n_states):
                scale = atol[i] + rtol[i] * abs(state[i])
                x = state[i] / scale
                f = f0[i] / scale
                d0 += x * x
                d1 += f * f
            d0 = precision(math.sqrt(d0 * inv_n))
            d1 = precision(math.sqrt(d1 * inv_n))
            if d0 < tiny or d1 < tiny:
                h0 = fallback
            else:
                h0 = one_percent * d0 / d1
            h0 = min(h0, precision(span))
            for i in range(n_states):
                y1[i] = state[i] + h0 * f0[i]
            dxdt(y1, parameters, precision(t + wide(h0)), f1)
            d2 = zero
            for i in range(n_states):
                scale = atol[i] + rtol[i] * abs(state[i])
                g = (f1[i] - f0[i]) / scale
                d2 += g * g
            d2 = precision(math.sqrt(d2 * inv_n)) / h0
            if d1 <= flat and d2 <= flat:
                h1 = max(fallback, h0 * shrink)
            else:
                h1 = (one_percent / max(d1, d2)) ** exponent
            return min(hundred * h0, h1, precision(span))

        return backend.device_jit(first_step)
