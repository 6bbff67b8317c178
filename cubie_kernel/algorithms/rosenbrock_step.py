"""One Rosenbrock step attempt for any Rosenbrock tableau, on a block of lanes.

Like the explicit engine (:mod:`cubie_kernel.algorithms.erk_step`), the
step is generated per tableau as Python source with every nonzero
coefficient a named constant of the run's precision. Per lane (see
:mod:`cubie_kernel.algorithms.rosenbrock_tableau` for the formulas):

1. the Jacobian ``J`` and, for non-autonomous systems, ``df/dt`` at the
   step's start, generated analytically from the system's equations
   (:meth:`ODESystem.lane_functions`); after a rejected attempt the run is
   at the same point and both are kept;
2. ``W = I / (h gamma) - J``, factored once (LU with partial pivoting,
   :mod:`cubie_kernel.algorithms.linear_algebra`) and used by every stage;
3. per stage one right-hand side evaluation (the stage input in scalars,
   as the explicit engine does) and one pair of triangular solves;
4. the solution ``y + sum m_i u_i`` and the estimate ``sum e_i u_i``.

Steps 1-2 (the Jacobian and the factorisation) run lane by lane: the
pivoting differs per run. The stages run every lane at once, like the
explicit engine: one loop over the lanes per stage computes its right-hand
side, and the two triangular sweeps of the solve loop over the lanes
innermost (:func:`~cubie_kernel.algorithms.linear_algebra.build_block_solve`);
on the cpu target these loops vectorise (measured on HIRES, Rodas5P: 0.58 us
per run and step, against 2.4 us with every phase lane by lane).

A singular or non-finite ``W`` fails the attempt: the lane's
``step_status`` becomes ``LINEAR_SOLVER_FAILED`` and its error estimate NaN,
so the controller rejects the step and shrinks it (the loop reports the
flag if the run then stops).

Buffers (registered under the step, sizes in elements per run)
---------------------------------------------------------------
``jacobian``
    ``n^2``, persistent: ``J`` at the step's start (row-major).
``time_derivative``
    ``n`` for non-autonomous systems with a method that uses it, else 0;
    persistent.
``lu``
    ``n^2``: the factors of ``W``.
``pivots``
    ``n``: the row swaps of the factorisation.
``stages``
    ``s n``: the stage increments ``u_i``.
``dense_stages``
    With dense output, ``y_n`` and each ``u_i`` the continuous extension
    uses; persistent (the loop interpolates after the step).

System size
-----------
The Jacobian and the LU cost ``2 n^2 + (s + 3) n`` elements per run and
``n^3 / 3`` multiply-adds per step. On a GPU, one thread per run keeps this
in local memory (or shared memory, through the ``*_location`` settings); up
to ``n ~ 20-30`` (1-2 kB per run in float64 at ``n = 10``, 16 kB at
``n = 30``) this stays fast; larger systems want a block per run and a
sparse or iterative solver, which this engine does not do.
"""

from __future__ import annotations

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.algorithms.linear_algebra import build_block_solve, build_lu
from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau
from cubie_kernel.algorithms.step_factory import StepFactory
from cubie_kernel.status import RunStatus
from cubie_kernel.systems import ODESystem


@attrs.frozen
class RosenbrockStepSettings:
    """Compile-time settings of a Rosenbrock step."""

    tableau: RosenbrockTableau
    system: ODESystem
    precision: type = np.float64
    target: str = "cpu"
    dense: bool = False


def dense_slots(tableau: RosenbrockTableau) -> list[int]:
    """Stages the continuous extension uses (slot order after ``y_n``)."""
    if tableau.dense is None:
        return []
    return [i for i, row in enumerate(tableau.dense) if any(v != 0 for v in row)]


def uses_time_derivative(tableau: RosenbrockTableau, system: ODESystem) -> bool:
    """The step needs ``df/dt``: a non-autonomous system and a nonzero ``d_i``."""
    return tableau.non_autonomous_terms and not system.is_autonomous


def _sum(terms: list[tuple[str, str]]) -> str | None:
    if not terms:
        return None
    return " + ".join(f"{c} * {x}" for c, x in terms)


def step_source(tableau: RosenbrockTableau, system: ODESystem, lanes: int, precision,
                dense: bool = False) -> str:
    """Python source of the lane-form Rosenbrock step attempt for ``tableau``.

    It expects ``alloc_*`` allocators, ``jacobian_lane``,
    ``time_derivative_lane``, ``dxdt_values``, ``factor``, ``solve_block``,
    ``PREC``, ``WIDE``, ``NAN`` and ``LINEAR_SOLVER_FAILED`` in its namespace.
    """
    dtype = np.dtype(precision)
    s, n, L = tableau.n_stages, system.n_states, lanes
    n_parameters = system.n_parameters
    with_ft = uses_time_derivative(tableau, system)
    constants: list[str] = []

    def constant(name: str, value) -> str | None:
        value = float(value)
        if value == 0.0:
            return None
        constants.append(f"{name} = PREC({value!r})")
        return name

    def u(i: int, m: int) -> str:
        return f"u[{(i * n + m) * L} + j]"

    state = [f"state[{m * L} + j]" for m in range(n)]
    parameters = [f"parameters[{p * L} + j]" for p in range(n_parameters)]
    gamma = constant("GAMMA", tableau.gamma)
    lines = [
        "def rosenbrock_step(state, proposed, error, parameters, t, h, first_stage, "
        "step_status, shared, persistent):",
        f"    # {tableau.name}: {s} stages, {n} states, {L} lanes"
        + (", df/dt terms" if with_ft else ""),
        "    jac = alloc_jacobian(shared, persistent)",
        "    lu = alloc_lu(shared, persistent)",
        "    piv = alloc_pivots(shared, persistent)",
        "    u = alloc_stages(shared, persistent)",
    ]
    if with_ft:
        lines.append("    ft = alloc_time_derivative(shared, persistent)")
    if dense:
        lines.append("    dense = alloc_dense(shared, persistent)")
    identity = [
        f"            for q in range({n * n}):",
        f"                lu[q * {L} + j] = PREC(0.0)",
        f"            for m in range({n}):",
        f"                lu[(m * {n + 1}) * {L} + j] = PREC(1.0)",
        f"                piv[m * {L} + j] = PREC(m)",
    ]
    # 1. per lane (pivoting differs between runs): J, W = I / (h gamma) - J, its LU.
    # Lanes with nothing to factor get the identity, so the block solves stay in bounds.
    lines += [
        f"    for j in range({L}):",
        "        hp = PREC(h[j])",
        "        step_status[j] = 0",
        "        if hp == PREC(0.0):  # an idle lane",
        *identity,
        "            continue",
        "        if first_stage[j] != 2:  # a new point (kept after a rejected attempt)",
        f"            jacobian_lane(state, parameters, PREC(t[j]), jac, j, {L})",
    ]
    if with_ft:
        lines.append(f"            time_derivative_lane(state, parameters, PREC(t[j]), ft, j, {L})")
    lines += [
        f"        diagonal = PREC(1.0) / (hp * {gamma})",
        f"        for q in range({n * n}):",
        f"            lu[q * {L} + j] = -jac[q * {L} + j]",
        f"        for m in range({n}):",
        f"            lu[(m * {n + 1}) * {L} + j] += diagonal",
        "        if factor(lu, piv, j) != 0:",
        "            step_status[j] = LINEAR_SOLVER_FAILED",
        *identity,
    ]
    # 2. per stage, every lane at once (the loop vectorises on the cpu target): the
    # stage's right-hand side, then the block's triangular solves
    for i in range(s):
        lines += [f"    for j in range({L}):", "        hp = PREC(h[j])"]
        if i > 0:
            lines.append("        inv_h = PREC(1.0) / hp")
        names = []
        for m in range(n):
            terms = [(constant(f"A{i}_{k}", tableau.a[i][k]), u(k, m)) for k in range(i)]
            total = _sum([(c, x) for c, x in terms if c])
            if total is None:
                names.append(state[m])
            else:
                lines.append(f"        s{m} = {state[m]} + {total}")
                names.append(f"s{m}")
        c_i = constant(f"C{i}", tableau.c[i])
        when = "PREC(t[j])" if c_i is None else f"PREC(t[j] + WIDE({c_i} * hp))"
        lines.append(f"        d = dxdt_values({when}, {', '.join(names + parameters)})")
        d_i = constant(f"D{i}", tableau.d[i]) if with_ft else None
        for m in range(n):
            coupling = [(constant(f"CC{i}_{k}", tableau.C[i][k]), u(k, m)) for k in range(i)]
            coupling = _sum([(c, x) for c, x in coupling if c])
            value = f"d[{m}]"
            if coupling is not None:
                value += f" + inv_h * ({coupling})"
            if d_i is not None:
                value += f" + {d_i} * hp * ft[{m * L} + j]"
            lines.append(f"        {u(i, m)} = {value}")
        lines.append(f"    solve_block(lu, piv, u, {i * n})")
    # 3. the solution, the estimate and the dense-output stages, every lane at once
    lines.append(f"    for j in range({L}):")
    for m in range(n):
        weights = _sum([(w, u(i, m)) for i in range(s)
                        if (w := constant(f"M{i}", tableau.m[i]))])
        lines.append(f"        proposed[{m * L} + j] = {state[m]} + {weights or 'PREC(0.0)'}")
        if tableau.adaptive:
            estimate = _sum([(e, u(i, m)) for i in range(s)
                             if (e := constant(f"E{i}", tableau.m_error[i]))])
            lines.append(f"        error[{m * L} + j] = {estimate or 'PREC(0.0)'}")
    if dense:
        lines += [f"        dense[{m * L} + j] = {state[m]}" for m in range(n)]
        for slot, i in enumerate(dense_slots(tableau), start=1):
            lines += [f"        dense[{(slot * n + m) * L} + j] = {u(i, m)}" for m in range(n)]
    # 4. idle lanes stay put; failed ones are rejected (a NaN estimate)
    lines += [
        f"    for j in range({L}):",
        "        if PREC(h[j]) == PREC(0.0):",
        f"            for m in range({n}):",
        f"                proposed[m * {L} + j] = state[m * {L} + j]",
        f"                error[m * {L} + j] = PREC(0.0)",
        "        elif step_status[j] != 0:",
        f"            for m in range({n}):",
        f"                proposed[m * {L} + j] = state[m * {L} + j]",
        f"                error[m * {L} + j] = NAN",
    ]
    lines.append("    return 0")
    if dense:
        lines += ["", ""] + _dense_source(tableau, n, L, constant)
    unique = list(dict.fromkeys(constants))
    header = [f"# Generated by cubie_kernel.algorithms.rosenbrock_step ({dtype.name})", *unique,
              "", ""]
    return "\n".join(header + lines) + "\n"


def _dense_source(tableau, n, L, constant) -> list[str]:
    """``interpolate(dense, h, theta, out, j)`` and a no-op ``end_derivative``."""
    slots = list(enumerate(dense_slots(tableau), start=1))
    lines = ["def interpolate(dense, h, theta, out, j):"]
    for slot, i in slots:  # p_i(theta) by Horner's rule (the stages include h)
        coefficients = [constant(f"P{i}_{q}", float(v)) or "PREC(0.0)"
                        for q, v in enumerate(tableau.dense[i])]
        horner = coefficients[-1]
        for c in reversed(coefficients[:-1]):
            horner = f"({c} + theta * {horner})"
        lines.append(f"    w{slot} = theta * {horner}")
    for m in range(n):
        terms = " + ".join(f"w{slot} * dense[{(slot * n + m) * L} + j]" for slot, _ in slots)
        lines.append(f"    out[{m * L} + j] = dense[{m * L} + j] + ({terms})")
    lines += ["", "", "def end_derivative(state, parameters, t, dense, j):", "    return 0"]
    return lines


class RosenbrockStep(StepFactory):
    """Factory of the Rosenbrock step attempt (lane form).

    The device function has the explicit step's signature, ``step(state,
    proposed, error, parameters, t, h, first_stage, step_status, shared,
    persistent)`` (see :class:`~cubie_kernel.algorithms.erk_step.ERKStep`):
    ``first_stage`` 2 means the lane's last attempt was rejected, so the
    Jacobian at its point is still in place; ``step_status`` receives a
    :class:`~cubie_kernel.status.RunStatus` bit per lane when the attempt
    failed (0 otherwise). Idle lanes (``h == 0``) are skipped. With dense
    output, ``end_derivative_function`` is a no-op (the interpolant needs no
    derivative at the step's end).
    """

    kind = "rosenbrock"
    step_name = "rosenbrock_step"

    def register_buffers(self) -> None:
        s = self.compile_settings
        n, stages = s.system.n_states, s.tableau.n_stages
        register = self._registry.register
        register("jacobian", self, n * n, persistent=True)
        ft = n if uses_time_derivative(s.tableau, s.system) else 0
        register("time_derivative", self, ft, persistent=True)
        register("lu", self, n * n)
        register("pivots", self, n)
        register("stages", self, stages * n)
        dense = (1 + len(dense_slots(s.tableau))) * n if s.dense else 0
        register("dense_stages", self, dense, persistent=True)

    def source(self) -> str:
        """The generated source of the step (for reading)."""
        s = self.compile_settings
        backend = targets.get_target(s.target)
        return step_source(s.tableau, s.system, backend.lanes(s.precision), s.precision,
                           s.dense)

    def source_namespace(self, backend, precision) -> dict:
        s = self.compile_settings
        lanes = backend.lanes(precision)
        functions = s.system.lane_functions(precision)
        factor, _ = build_lu(s.system.n_states, lanes, precision)
        solve_block = build_block_solve(s.system.n_states, lanes, precision)
        jit = backend.device_jit
        namespace = {
            "NAN": precision(np.nan),
            "LINEAR_SOLVER_FAILED": int(RunStatus.LINEAR_SOLVER_FAILED),
            "factor": jit(factor),
            "solve_block": jit(solve_block, inline=True),
            "jacobian_lane": jit(functions["jacobian_lane"]),
            "time_derivative_lane": jit(functions["time_derivative_lane"]),
        }
        for name in ("jacobian", "time_derivative", "lu", "pivots", "stages"):
            namespace[f"alloc_{name}"] = self.allocator(name, precision)
        return namespace
