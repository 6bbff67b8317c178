"""One explicit Runge-Kutta step attempt for any tableau, on a block of lanes.

The step is generated per tableau, as Python source: the tableau is read at
build time and every nonzero coefficient becomes a named constant of the
run's precision, and every zero coefficient drops out of the sums. The
first stage is one loop over the block's lanes (element ``k`` of lane ``j``
at ``k * L + j``, see :mod:`cubie_kernel.targets`); every later stage, the
solution and the error estimate are ONE more loop, with each stage's values
in scalars and the system's right-hand side evaluated on them
(``dxdt_values``, inlined). A CPU vectorises that loop across runs; on CUDA
``L = 1`` and the loop is one iteration. Loops over tableau arrays with
runtime trip counts and multiplications by zero coefficients do not
vectorise (measured: 0.18x of the generated form).

Each coefficient is rounded to the precision on its own. For tableaus with
large coefficients of both signs (Verner 6(5) has |b_i| ~ 170) the rounded
weights no longer satisfy the order conditions to round-off, which leaves an
error floor far above it. Where that defect
(:meth:`ButcherTableau.rounding_defect`) exceeds
:data:`ROUNDING_DEFECT_LIMIT` eps, sums are formed relative to the first
stage, ``y + h (k_0 + sum_i b_i (k_i - k_0))`` (exact, as ``sum b = 1``,
``sum_j a_ij = c_i``, ``sum e = 0``), so rounded coefficients only multiply
O(h) stage differences; elsewhere the plain sums are ~25% faster.

Buffers (registered under the step, sizes in elements per run)
---------------------------------------------------------------
``stages``
    ``2 n_states`` for FSAL tableaus, else 0: the first stage ``k_0`` and
    the last stage of the previous step, which is the first stage of the
    next one (so the buffer is persistent). Every other stage lives in
    registers; a smaller buffer keeps a CPU block's scratch in the L1 cache.
``dense_stages``
    With dense output on (``ERKStepSettings.dense``), else 0: what the
    step's continuous extension needs (:meth:`ButcherTableau.interpolant`),
    written by every step attempt: ``y_n``, then each stage with a nonzero
    weight polynomial, then (tableaus that are not FSAL) room for ``f(t_n+1,
    y_n+1)``. Persistent: the loop interpolates after the step returns.

Dense output
------------
The step's module also defines ``interpolate(dense, h, theta, out, j)``,
which writes ``y(t_n + theta h)`` of lane ``j`` to the lane-form ``out``,
and ``end_derivative(state, parameters, t, dense, j)``, which completes the
Hermite interpolant of a tableau that is not FSAL (a no-op otherwise).
"""

from __future__ import annotations

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.algorithms.step_factory import StepFactory
from cubie_kernel.algorithms.tableau import ButcherTableau
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
    dense: bool = False


def dense_slots(tableau: ButcherTableau) -> tuple[list[int], bool]:
    """Stages the continuous extension uses (in slot order after ``y_n``) and
    whether one more slot holds the end derivative."""
    rows, end_derivative = tableau.interpolant()
    used = [i for i in range(tableau.n_stages) if any(v != 0 for v in rows[i])]
    return used, end_derivative


def dense_size(tableau: ButcherTableau, n_states: int) -> int:
    """Elements per run of the ``dense_stages`` buffer."""
    used, end_derivative = dense_slots(tableau)
    return (1 + len(used) + int(end_derivative)) * n_states


def _sum(terms: list[tuple[str, str]]) -> str | None:
    """``c0 * x0 + c1 * x1 + ...`` (left to right), None for no terms."""
    if not terms:
        return None
    return " + ".join(f"{c} * {x}" for c, x in terms)


def step_source(tableau: ButcherTableau, n_states: int, n_parameters: int, lanes: int,
                precision, dense: bool = False) -> str:
    """Python source of the lane-form step attempt for ``tableau``.

    The source defines the coefficient constants and ``erk_step``; it expects
    ``alloc_stages``, ``dxdt_values``, ``PREC`` (the precision's type) and
    ``WIDE`` (``np.float64``) in its namespace.
    """
    # PREC is put into the namespace for the function; the constants are
    # spelled with numpy so that the module also reads on its own
    dtype = np.dtype(precision)
    cast = tableau.cast(dtype.type)
    s, n, L = cast.n_stages, n_states, lanes
    relative = tableau.rounding_defect(dtype.type) > ROUNDING_DEFECT_LIMIT
    constants: list[str] = []

    def constant(name: str, value) -> str | None:
        value = float(value)
        if value == 0.0:
            return None
        constants.append(f"{name} = PREC({value!r})")
        return name

    def k(i: int, m: int) -> str:  # stage i (0, or the last one: slot 1), state m, lane j
        slot = 0 if i == 0 else 1
        return f"stages[{(slot * n + m) * L} + j]"

    parameters = [f"parameters[{p * L} + j]" for p in range(n_parameters)]
    lines = [
        "def erk_step(state, proposed, error, parameters, t, h, first_stage, step_status, shared, "
        "persistent):",
        f"    # {tableau.name}: {s} stages, {n} states, {L} lanes"
        + (", sums relative to k_0" if relative else ""),
    ]
    if cast.fsal:  # only FSAL steps keep stages between calls
        lines.append("    stages = alloc_stages(shared, persistent)")
    used, end_derivative = dense_slots(tableau) if dense else ([], False)
    if dense:
        lines.append("    dense = alloc_dense(shared, persistent)")

    def evaluate(i: int, arguments: list[str], indent: str) -> list[str]:
        c_i = constant(f"C{i}", cast.c[i])
        when = "PREC(t[j])" if c_i is None else f"PREC(t[j] + WIDE({c_i} * hp))"
        out = [f"{indent}d = dxdt_values({when}, {', '.join(arguments + parameters)})"]
        out += [f"{indent}{k(i, m)} = d[{m}]" for m in range(n)]
        return out

    # FSAL: stage 0 is evaluated, taken from the last stage, or kept in
    # place, per lane: a loop of its own (branches would keep the main loop
    # from vectorising)
    state_values = [f"state[{m * L} + j]" for m in range(n)]
    if cast.fsal:
        lines.append(f"    for j in range({L}):")
        lines.append("        fs = first_stage[j]")
        lines.append("        if fs == 1:")
        lines += [f"            {k(0, m)} = {k(s - 1, m)}" for m in range(n)]
        lines.append("        elif fs == 0:")
        lines.append("            hp = PREC(h[j])")
        lines += evaluate(0, state_values, "            ")

    # every other stage and the combination: ONE loop over the lanes, every
    # stage value in a scalar (k{i}_{m}); only an FSAL k_0 comes from, and
    # the last stage goes to, the stages buffer
    def kv(i: int, m: int) -> str:
        return f"k{i}_{m}"

    lines.append(f"    for j in range({L}):")
    lines.append("        hp = PREC(h[j])")
    if cast.fsal:
        lines += [f"        {kv(0, m)} = {k(0, m)}" for m in range(n)]
    else:
        lines.append(
            f"        d = dxdt_values(PREC(t[j]), {', '.join(state_values + parameters)})"
        )
        lines += [f"        {kv(0, m)} = d[{m}]" for m in range(n)]
    stage_start = len(lines)
    for i in range(1, s):
        names = []
        for m in range(n):
            if relative:
                first = kv(0, m)
                c_i = constant(f"C{i}", cast.c[i])
                terms = [(c_i, first)] if c_i else []
                for q in range(1, i):
                    a = constant(f"A{i}_{q}", cast.a[i * s + q])
                    if a:
                        terms.append((a, f"({kv(q, m)} - {first})"))
            else:
                terms = []
                for q in range(i):
                    a = constant(f"A{i}_{q}", cast.a[i * s + q])
                    if a:
                        terms.append((a, kv(q, m)))
            total = _sum(terms)
            value = state_values[m] if total is None else f"{state_values[m]} + hp * ({total})"
            lines.append(f"        s{m} = {value}")
            names.append(f"s{m}")
        c_i = constant(f"C{i}", cast.c[i])
        when = "PREC(t[j])" if c_i is None else f"PREC(t[j] + WIDE({c_i} * hp))"
        lines.append(f"        d = dxdt_values({when}, {', '.join(names + parameters)})")
        lines += [f"        {kv(i, m)} = d[{m}]" for m in range(n)]
    stage_lines = lines[stage_start:]
    if cast.fsal:
        lines += [f"        {k(s - 1, m)} = {kv(s - 1, m)}" for m in range(n)]
    if dense:  # y_n and the stages the interpolant uses
        lines += [f"        dense[{m * L} + j] = {state_values[m]}" for m in range(n)]
        for slot, i in enumerate(used, start=1):
            lines += [f"        dense[{(slot * n + m) * L} + j] = {kv(i, m)}" for m in range(n)]

    # the solution and the error estimate
    for m in range(n):
        first = kv(0, m)
        solution, estimate = [], []
        for i in range(1 if relative else 0, s):
            stage = f"({kv(i, m)} - {first})" if relative else kv(i, m)
            b = constant(f"B{i}", cast.b[i])
            if b:
                solution.append((b, stage))
            if cast.adaptive:
                e = constant(f"E{i}", cast.b_error[i])
                if e:
                    estimate.append((e, stage))
        total = _sum(solution)
        if relative:
            total = first if total is None else f"{first} + {total}"
        total = total or "PREC(0.0)"
        lines.append(f"        proposed[{m * L} + j] = {state_values[m]} + hp * ({total})")
        if cast.adaptive:
            lines.append(f"        error[{m * L} + j] = hp * ({_sum(estimate) or 'PREC(0.0)'})")
    lines.append("    return 0")
    if tableau.dense_output:
        # the interpolant, and its stages recomputed for one lane (events locate
        # crossings on it without a dense step: see dense_stages_lane)
        used, end_derivative = dense_slots(tableau)
        lines += [""] + _dense_source(tableau, n, parameters, L, dtype, used, end_derivative,
                                     constant)
        lines += ["", "", "def dense_stages_lane(state, parameters, t, h, dense, j):",
                  "    # the step from (t, state) of size h, again, for lane j: y_n and the",
                  "    # stages the interpolant uses into dense (as a dense step stores them)",
                  "    hp = PREC(h)",
                  f"    d = dxdt_values(PREC(t), {', '.join(state_values + parameters)})"]
        lines += [f"    {kv(0, m)} = d[{m}]" for m in range(n)]
        lines += [line[4:].replace("t[j]", "t") for line in stage_lines]
        lines += [f"    dense[{m * L} + j] = {state_values[m]}" for m in range(n)]
        for slot, i in enumerate(used, start=1):
            lines += [f"    dense[{(slot * n + m) * L} + j] = {kv(i, m)}" for m in range(n)]
        lines.append("    return 0")
    unique = list(dict.fromkeys(constants))
    header = [f"# Generated by cubie_kernel.algorithms.erk_step ({dtype.name})", *unique, "", ""]
    return "\n".join(header + lines) + "\n"


def _dense_source(tableau, n, parameters, L, dtype, used, end_derivative, constant):
    """Source of ``interpolate`` and ``end_derivative`` (see the module docstring)."""
    rows, _ = tableau.interpolant()
    slots = [(slot, i) for slot, i in enumerate(used, start=1)]
    if end_derivative:
        slots.append((len(used) + 1, tableau.n_stages))
    lines = ["def interpolate(dense, h, theta, out, j):"]
    for slot, i in slots:  # w_i = h b_i(theta), by Horner's rule
        coefficients = [constant(f"P{i}_{q}", float(v)) or "PREC(0.0)"
                        for q, v in enumerate(rows[i])]
        horner = coefficients[-1]
        for c in reversed(coefficients[:-1]):
            horner = f"({c} + theta * {horner})"
        lines.append(f"    w{slot} = h * theta * {horner}")
    for m in range(n):
        terms = " + ".join(f"w{slot} * dense[{(slot * n + m) * L} + j]" for slot, _ in slots)
        lines.append(f"    out[{m * L} + j] = dense[{m * L} + j] + ({terms})")
    lines += ["", "", "def end_derivative(state, parameters, t, dense, j):"]
    if end_derivative:
        values = [f"state[{m * L} + j]" for m in range(n)]
        lines.append(f"    d = dxdt_values(PREC(t), {', '.join(values + parameters)})")
        last = len(used) + 1
        lines += [f"    dense[{(last * n + m) * L} + j] = d[{m}]" for m in range(n)]
    lines.append("    return 0")
    return lines


class ERKStep(StepFactory):
    """Factory of the explicit Runge-Kutta step attempt (lane form).

    The device function is ``step(state, proposed, error, parameters, t, h,
    first_stage, step_status, shared, persistent)`` over a block of lanes: ``state``,
    ``proposed``, ``error`` and ``parameters`` are lane-form arrays, ``t``
    and ``h`` (float64) and ``first_stage`` (int32) hold one value per
    lane. It writes the new solution to ``proposed`` and, for tableaus with
    an embedded pair, the local error estimate ``h * sum_i e_i k_i`` to
    ``error``. Arithmetic is in the run's precision (``h`` is rounded to
    it), stage times in float64.

    ``first_stage`` tells an FSAL tableau where a lane's ``k_0 = f(t,
    state)`` comes from (other tableaus always evaluate it):

    ==  ========================================================
    0   evaluate it (first step of a run)
    1   it is the last stage of the previous, accepted, step
    2   it is already in place (the previous step was rejected)
    ==  ========================================================

    ``step_status`` (int32, one per lane) is where implicit steps report a
    failed attempt (:mod:`cubie_kernel.algorithms.rosenbrock_step`); an
    explicit step cannot fail and leaves it alone. Returns 0.
    """

    #: ``first_stage`` values (see the class docstring).
    EVALUATE, FROM_LAST_STAGE, IN_PLACE = 0, 1, 2

    kind = "step"
    step_name = "erk_step"
    recomputes_dense = True

    def dense_elements(self) -> int:
        """Elements of one run's interpolant data (``dense_stages``' size with dense
        output), for tableaus with a continuous extension (else 0)."""
        s = self.compile_settings
        return dense_size(s.tableau, s.system.n_states) if s.tableau.dense_output else 0

    def register_buffers(self) -> None:
        s = self.compile_settings
        n = s.system.n_states
        slots = 2 if s.tableau.fsal else 0
        self._registry.register("stages", self, slots * n, persistent=s.tableau.fsal)
        dense = dense_size(s.tableau, n) if s.dense else 0
        self._registry.register("dense_stages", self, dense, persistent=True)

    def source(self) -> str:
        """The generated source of the step (for reading)."""
        s = self.compile_settings
        backend = targets.get_target(s.target)
        return step_source(
            s.tableau, s.system.n_states, s.system.n_parameters,
            backend.lanes(s.precision), s.precision, s.dense,
        )

    def source_namespace(self, backend, precision) -> dict:
        return {"alloc_stages": self.allocator("stages", precision)}

    def layout_key(self, layout: dict) -> tuple:
        # this engine's own order (not sorted), which names its cached modules
        return (layout["stages"], layout["dense_stages"])
