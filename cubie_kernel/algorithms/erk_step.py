"""One explicit Runge-Kutta step for any tableau.

The step is generic: the tableau is read in Python at build time and handed
to the device function as precision-cast closure constants (homogeneous
tuples, indexable on every target), with ``n_stages`` and ``n_states`` as
compile-time loop bounds the compiler unrolls.

Each coefficient is rounded to the precision on its own. For tableaus with
large coefficients of both signs (Verner 6(5) has |b_i| ~ 170) the rounded
weights no longer satisfy the order conditions to round-off, which leaves an
error floor far above it. Where that defect
(:meth:`ButcherTableau.rounding_defect`) exceeds
:data:`ROUNDING_DEFECT_LIMIT` eps, sums are formed relative to the first
stage, ``y + h (k_0 + sum_i b_i (k_i - k_0))`` (exact, as ``sum b = 1``,
``sum_j a_ij = c_i``, ``sum e = 0``), so rounded coefficients only multiply
O(h) stage differences; elsewhere the plain sums are ~25% faster. Zero
coefficients are skipped at compile time either way.

Buffers (registered under the step, sizes in elements)
------------------------------------------------------
``stages``
    ``n_stages * n_states``: the stage derivatives ``k_i``, stage-major.
    Persistent for FSAL tableaus: the last stage of an accepted step is the
    first stage of the next one, so it must survive between calls.
``stage_state``
    ``n_states``: the state at which the next stage is evaluated.
"""

from __future__ import annotations

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.algorithms.tableau import ButcherTableau
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.systems import ODESystem


#: Rounding defect (in eps) above which stage sums are formed relative to k_0.
ROUNDING_DEFECT_LIMIT = 8.0


@attrs.frozen
class ERKStepSettings:
    """Compile-time settings of an explicit Runge-Kutta step."""

    tableau: ButcherTableau
    system: ODESystem
    precision: type = np.float64
    target: str = "cpu"


class ERKStep(CompiledFactory):
    """Factory of the explicit Runge-Kutta step device function.

    The device function is ``step(state, proposed, error, parameters, t,
    dt, shared, persistent, first_stage)``: it writes the new solution to
    ``proposed`` and, for tableaus with an embedded pair, the local error
    estimate ``dt * sum_i e_i k_i`` to ``error``; ``t`` is float64, ``dt``
    float64 (fixed steps) or the run's precision (adaptive steps);
    ``shared``/``persistent`` are the step's own regions.

    ``first_stage`` tells an FSAL tableau where ``k_0 = f(t, state)`` comes
    from (other tableaus always evaluate it):

    ==  ========================================================
    0   evaluate it (first step of a run)
    1   it is the last stage of the previous, accepted, step
    2   it is already in place (the previous step was rejected)
    ==  ========================================================

    Returns 0 (explicit steps cannot fail).
    """

    #: ``first_stage`` values (see the class docstring).
    EVALUATE, FROM_LAST_STAGE, IN_PLACE = 0, 1, 2

    def __init__(self, settings: ERKStepSettings, registry) -> None:
        super().__init__(settings)
        self._registry = registry
        self.register_buffers()

    @property
    def registry(self):
        return self._registry

    def register_buffers(self) -> None:
        s = self.compile_settings
        n = s.system.n_states
        self._registry.register(
            "stages", self, s.tableau.n_stages * n, persistent=s.tableau.fsal
        )
        self._registry.register("stage_state", self, n)

    def settings_changed(self, changed: set[str]) -> None:
        if changed & {"tableau", "system"}:
            self.register_buffers()

    @property
    def tableau(self) -> ButcherTableau:
        return self.compile_settings.tableau

    def build(self):
        s = self.compile_settings
        backend = targets.get_target(s.target)
        precision = np.dtype(s.precision).type
        dxdt_py, _ = s.system.python_functions(precision)
        dxdt = backend.device_jit(dxdt_py, inline=True)
        alloc_stages = self._registry.get_allocator("stages", self, s.target, precision)
        alloc_stage_state = self._registry.get_allocator(
            "stage_state", self, s.target, precision
        )
        cast = s.tableau.cast(precision)
        n_stages = cast.n_stages
        n_states = s.system.n_states
        a, b, c, e = cast.a, cast.b, cast.c, cast.b_error
        adaptive = cast.adaptive
        fsal = cast.fsal
        relative = s.tableau.rounding_defect(precision) > ROUNDING_DEFECT_LIMIT
        last = (n_stages - 1) * n_states
        zero = precision(0.0)
        wide = np.float64

        def erk_step(state, proposed, error, parameters, t, dt, shared, persistent, first_stage):
            stages = alloc_stages(shared, persistent)
            stage_state = alloc_stage_state(shared, persistent)
            h = precision(dt)
            reuse = fsal and first_stage != 0
            if fsal and first_stage == 1:
                for k in range(n_states):
                    stages[k] = stages[last + k]
            for i in range(n_stages):
                if i == 0 and reuse:
                    continue
                for k in range(n_states):
                    increment = zero
                    if relative and i > 0:  # stage 0 has no sum: k_0 is not yet computed
                        first = stages[k]
                        increment = c[i] * first
                        for j in range(1, i):
                            increment += a[i * n_stages + j] * (stages[j * n_states + k] - first)
                    elif not relative:
                        for j in range(i):
                            increment += a[i * n_stages + j] * stages[j * n_states + k]
                    stage_state[k] = state[k] + h * increment
                t_stage = precision(t + wide(c[i] * dt))  # time math in float64
                dxdt(
                    stage_state,
                    parameters,
                    t_stage,
                    stages[i * n_states : (i + 1) * n_states],
                )
            for k in range(n_states):
                solution = zero
                estimate = zero
                if relative:
                    first = stages[k]
                    solution = first  # sum_i b_i = 1, sum_i e_i = 0
                for i in range(1 if relative else 0, n_stages):
                    stage = stages[i * n_states + k]
                    if relative:
                        stage = stage - first
                    solution += b[i] * stage
                    if adaptive:
                        estimate += e[i] * stage
                proposed[k] = state[k] + h * solution
                if adaptive:
                    error[k] = h * estimate
            return 0

        return backend.device_jit(erk_step, inline=True)
