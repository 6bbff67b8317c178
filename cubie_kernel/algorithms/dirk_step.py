"""One diagonally implicit Runge-Kutta step attempt for any DIRK tableau.

Like the explicit and Rosenbrock engines, the step is generated per tableau
as Python source with every nonzero coefficient a named constant of the
run's precision (:mod:`cubie_kernel.algorithms.dirk_tableau` for the
method). Per lane:

1. the Jacobian ``J`` at the step's start, generated analytically from the
   system's equations (:meth:`ODESystem.lane_functions`); after a rejected
   attempt the run is at the same point and it is kept;
2. ``M = I - h gamma J``, factored once (LU with partial pivoting,
   :mod:`cubie_kernel.algorithms.linear_algebra`) and used by every stage's
   Newton iteration;
3. an explicit first stage (ESDIRK) ``K_0 = h f(t, y)``: evaluated on a
   run's first attempt, kept after a rejected one, and, for stiffly
   accurate methods, taken from the last stage of the accepted step before
   (its end point is the new step's start);
4. each implicit stage ``i`` solves ``Z_i = psi_i + h gamma f(t + c_i h, y +
   Z_i)`` for the stage increment ``Z_i = z_i - y``, with ``psi_i = sum_{k<i}
   a_ik K_k`` and ``K_k = h f_k``, by simplified Newton (below); then ``K_i
   = (Z_i - psi_i) / gamma`` (no evaluation at the converged value, which
   would amplify the iteration error by the stiffness);
5. the solution ``y + Z_s`` for stiffly accurate methods (else ``y + sum
   b_i K_i``) and the error estimate ``sum e_i K_i``, the plain embedded
   difference (not filtered by ``M^-1``).

Simplified Newton
-----------------
Predictor ``Z_i^0 = psi_i + gamma K_{i-1}`` (the previous stage's
derivative; for the first implicit stage of an ESDIRK ``c_1 K_0``), or 0 for
an SDIRK's first stage. Each iteration evaluates ``f`` once and solves ``M
dZ = psi_i + h gamma f(y + Z) - Z`` with the factors of ``M``. With the
scaled RMS norm ``||x|| = sqrt(mean_m (x_m / (atol_m + rtol_m |y_m|))^2)``
(the controller's tolerances, ``y`` the step's start) and the convergence
rate ``theta = ||dZ_k|| / ||dZ_k-1||`` (Hairer & Wanner, Solving ODEs II,
Sect. IV.8), the iteration stops when ``eta ||dZ_k|| <= kappa`` with ``eta
= theta / (1 - theta)`` and ``kappa`` = :data:`NEWTON_KAPPA`. Before a
second iteration has measured a rate, ``eta`` is the last one of the run
(per lane, carried over stages and steps as ``max(eta, eps)**0.8`` at each
attempt, 1 at a run's start), so a good predictor converges in one
iteration. The attempt fails (``step_status`` NONLINEAR_SOLVER_FAILED,
error NaN, proposed = state: the controller rejects it and shrinks the
step) when the iteration diverges (``theta >= 1``), when it would not meet
the test within :data:`NEWTON_MAX_ITERATIONS` iterations at the current rate
(``eta theta^(kmax - 1 - k) ||dZ_k|| > kappa``), or when a norm is not
finite. A singular or non-finite ``M`` fails it as LINEAR_SOLVER_FAILED.

Tolerances
----------
The norm needs ``atol`` and ``rtol`` at build time: the settings field
``tolerances`` is ``(atol, rtol)`` (scalars or one per state), normally the
controller's. Without it (None) the step uses the tight
:data:`FALLBACK_TOLERANCES`, so that the iteration error stays below any
tolerance a run commonly asks for (at the cost of more iterations). ``rtol``
is floored at :data:`RTOL_FLOOR_EPS` machine epsilons (float32: 1.2e-5), as
RADAU5 floors its Newton tolerance, so round-off alone never fails the
iteration.

Dense output
------------
For tableaus with :attr:`DIRKTableau.hermite_ready` (explicit first stage,
stiffly accurate), the persistent ``dense_stages`` buffer holds ``y_n``,
``y_n+1 - y_n``, ``K_0 = h f(t_n, y_n)`` and ``K_s = h f(t_n+1, y_n+1)``, and
``interpolate(dense, h, theta, out, j)`` evaluates the cubic Hermite
interpolant; ``end_derivative`` is a no-op.

Buffers (registered under the step, sizes in elements per run)
---------------------------------------------------------------
``jacobian``
    ``n^2``, persistent: ``J`` at the step's start (row-major).
``lu``, ``pivots``
    ``n^2`` and ``n``: the factors of ``M``.
``stages``
    ``s n``: the stage values ``K_i`` (``Z_i`` while stage ``i`` iterates).
``newton``
    ``2 n``: ``psi_i`` and the Newton correction.
``derivatives``
    Persistent, ESDIRK only: ``f(t_n, y_n)`` (kept after a rejection), and
    for stiffly accurate tableaus the last stage's ``f`` (the next step's
    first stage): ``2 n``, ``n`` or 0.
``newton_rate``
    1, persistent: the lane's last ``eta``.
``dense_stages``
    ``4 n`` with dense output, else 0; persistent.

Lanes are independent (pivoting and iteration counts differ per run), so
the CPU target runs this step lane by lane, as it runs Rosenbrock steps.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.algorithms.dirk_tableau import DIRKTableau
from cubie_kernel.algorithms.linear_algebra import build_lu
from cubie_kernel.algorithms.step_factory import StepFactory
from cubie_kernel.controllers.base import per_state
from cubie_kernel.status import RunStatus
from cubie_kernel.systems import ODESystem

#: The Newton iteration stops when ``eta ||dZ|| <= NEWTON_KAPPA`` (norm
#: scaled by the tolerances; Hairer & Wanner suggest 0.01 .. 0.1).
NEWTON_KAPPA = 0.05

#: Iterations per stage before the attempt fails.
NEWTON_MAX_ITERATIONS = 10

#: Exponent of the carried-over rate: ``eta = max(eta, eps)**0.8`` at each
#: attempt (Hairer's RADAU5), so it creeps back up after easy steps.
RATE_DECAY = 0.8

#: ``(atol, rtol)`` of the Newton norm when the settings give none.
FALLBACK_TOLERANCES = (1e-10, 1e-8)

#: The Newton norm's ``rtol`` is at least this many machine epsilons of the
#: run's precision: below it, round-off in ``dZ`` alone fails the test.
RTOL_FLOOR_EPS = 100.0


def _tolerance_pair(value):
    """``None`` or ``(atol, rtol)``, each a float or a tuple of floats."""
    if value is None:
        return None
    try:
        atol, rtol = value
    except (TypeError, ValueError):
        raise ValueError(f"tolerances must be (atol, rtol), got {value!r}") from None

    def one(v):
        if isinstance(v, np.ndarray):
            return tuple(float(x) for x in v.ravel())
        if isinstance(v, (tuple, list)):
            return tuple(float(x) for x in v)
        return float(v)

    return one(atol), one(rtol)


@attrs.frozen
class DIRKStepSettings:
    """Compile-time settings of a DIRK step.

    ``tolerances`` is ``(atol, rtol)`` for the Newton iteration's norm
    (scalars or one per state; normally the controller's), None for
    :data:`FALLBACK_TOLERANCES`.
    """

    tableau: DIRKTableau
    system: ODESystem
    precision: type = np.float64
    target: str = "cpu"
    dense: bool = False
    tolerances: tuple | None = attrs.field(default=None, converter=_tolerance_pair)


def newton_tolerances(settings: DIRKStepSettings) -> tuple[tuple, tuple]:
    """``(atol, rtol)``, one float per state, of the Newton norm (``rtol``
    floored at :data:`RTOL_FLOOR_EPS` eps of the precision)."""
    n = settings.system.n_states
    atol, rtol = settings.tolerances or FALLBACK_TOLERANCES
    floor = RTOL_FLOOR_EPS * float(np.finfo(settings.precision).eps)
    rtol = tuple(max(r, floor) for r in per_state(rtol, n, "rtol"))
    return per_state(atol, n, "atol"), rtol


def derivative_slots(tableau: DIRKTableau) -> int:
    """Vectors in the ``derivatives`` buffer (see the module docstring)."""
    if not tableau.explicit_first_stage:
        return 0
    return 2 if tableau.hermite_ready else 1


def _sum(terms: list[tuple[str, str]]) -> str | None:
    if not terms:
        return None
    return " + ".join(f"{c} * {x}" for c, x in terms)


def step_source(tableau: DIRKTableau, system: ODESystem, lanes: int, precision,
                tolerances: tuple[tuple, tuple], dense: bool = False) -> str:
    """Python source of the lane-form DIRK step attempt for ``tableau``.

    It expects ``alloc_*`` allocators, ``jacobian_lane``, ``dxdt_values``,
    ``factor``, ``solve``, ``JIT`` (the target's device compiler), ``PREC``,
    ``WIDE``, ``NAN``, ``sqrt`` and the status bits in its namespace.
    """
    dtype = np.dtype(precision)
    s, n, L = tableau.n_stages, system.n_states, lanes
    explicit = tableau.explicit_first_stage
    reuse = derivative_slots(tableau) == 2
    if dense and not tableau.hermite_ready:
        raise ValueError(f"tableau {tableau.name!r} has no continuous extension (it needs an "
                         "explicit first stage and stiff accuracy)")
    constants: list[str] = []

    def constant(name: str, value) -> str | None:
        value = float(value)
        if value == 0.0:
            return None
        constants.append(f"{name} = PREC({value!r})")
        return name

    def k(i: int, m: int) -> str:
        return f"k[{(i * n + m) * L} + j]"

    def psi(m: int) -> str:
        return f"newton[{m * L} + j]"

    state = [f"state[{m * L} + j]" for m in range(n)]
    parameters = [f"parameters[{p * L} + j]" for p in range(system.n_parameters)]
    atol, rtol = tolerances
    constant("GAMMA", tableau.gamma)
    constant("INV_GAMMA", 1 / tableau.gamma)
    constants += [
        f"KAPPA = PREC({NEWTON_KAPPA!r})",
        f"MAX_ITERATIONS = {NEWTON_MAX_ITERATIONS}",
        f"RATE_DECAY = PREC({RATE_DECAY!r})",
        f"EPS = PREC({float(np.finfo(dtype).eps)!r})",
        f"INV_N = PREC({1.0 / n!r})",
        "ONE = PREC(1.0)",
        "ZERO = PREC(0.0)",
        "INF = PREC(np.inf)",
    ]
    constants += [f"ATOL{m} = PREC({float(atol[m])!r})" for m in range(n)]
    constants += [f"RTOL{m} = PREC({float(rtol[m])!r})" for m in range(n)]

    # ---- one stage's simplified Newton iteration (shared by every stage)
    newton = [
        "def newton_stage_python(k, slot, newton, state, parameters, when, hg, lu, piv, rate, j):",
        "    # Z (stage slot) += M^-1 (psi + h gamma f(y + Z) - Z) until converged;",
        "    # 0: converged, 1: diverged, too slow or not finite",
        "    eta = rate[j]",
        "    previous = ZERO",
        "    for iteration in range(MAX_ITERATIONS):",
    ]
    values = [f"{state[m]} + k[(slot + {m}) * {L} + j]" for m in range(n)]
    newton.append(f"        d = dxdt_values(when, {', '.join(values + parameters)})")
    for m in range(n):
        newton.append(f"        newton[{(n + m) * L} + j] = {psi(m)} + hg * d[{m}] "
                      f"- k[(slot + {m}) * {L} + j]")
    newton += [f"        solve(lu, piv, newton, {n}, j)", "        total = ZERO"]
    for m in range(n):
        newton += [
            f"        dz = newton[{(n + m) * L} + j]",
            f"        k[(slot + {m}) * {L} + j] += dz",
            f"        r = dz / (ATOL{m} + RTOL{m} * abs({state[m]}))",
            "        total += r * r",
        ]
    newton += [
        "        norm = sqrt(total * INV_N)",
        "        if not norm < INF:",
        "            rate[j] = eta",
        "            return 1",
        "        if iteration > 0:",
        "            theta = norm / previous",
        "            if not theta < ONE:",
        "                rate[j] = eta",
        "                return 1",
        "            eta = theta / (ONE - theta)",
        "            if eta * norm * theta ** PREC(MAX_ITERATIONS - 1 - iteration) > KAPPA:",
        "                rate[j] = eta",
        "                return 1",
        "        if eta * norm <= KAPPA:",
        "            rate[j] = eta",
        "            return 0",
        "        previous = norm",
        "    rate[j] = eta",
        "    return 1",
        "",
        "",
        "newton_stage = JIT(newton_stage_python)",
    ]

    # ---- the step attempt
    def fail(flag: str, indent: str) -> list[str]:
        return [
            f"{indent}step_status[j] = {flag}",
            f"{indent}for m in range({n}):",
            f"{indent}    proposed[m * {L} + j] = state[m * {L} + j]",
            f"{indent}    error[m * {L} + j] = NAN",
            f"{indent}continue",
        ]

    lines = [
        "def dirk_step(state, proposed, error, parameters, t, h, first_stage, step_status, "
        "shared, persistent):",
        f"    # {tableau.name}: {s} stages ({'ESDIRK' if explicit else 'SDIRK'}), {n} states, "
        f"{L} lanes",
        "    jac = alloc_jacobian(shared, persistent)",
        "    lu = alloc_lu(shared, persistent)",
        "    piv = alloc_pivots(shared, persistent)",
        "    k = alloc_stages(shared, persistent)",
        "    newton = alloc_newton(shared, persistent)",
        "    rate = alloc_rate(shared, persistent)",
        "    ends = alloc_derivatives(shared, persistent)",
    ]
    if dense:
        lines.append("    dense = alloc_dense(shared, persistent)")
    lines += [
        f"    for j in range({L}):",
        "        hp = PREC(h[j])",
        "        step_status[j] = 0",
        "        if hp == ZERO:  # an idle lane",
        f"            for m in range({n}):",
        f"                proposed[m * {L} + j] = state[m * {L} + j]",
        f"                error[m * {L} + j] = ZERO",
        "            continue",
        "        fs = first_stage[j]",
        "        if fs != 2:  # a new point (kept after a rejected attempt)",
        f"            jacobian_lane(state, parameters, PREC(t[j]), jac, j, {L})",
        "        if fs == 0:",
        "            rate[j] = ONE",
        "        else:",
        "            rate[j] = max(rate[j], EPS) ** RATE_DECAY",
        "        hg = hp * GAMMA",
        f"        for q in range({n * n}):",
        f"            lu[q * {L} + j] = -hg * jac[q * {L} + j]",
        f"        for m in range({n}):",
        f"            lu[(m * {n + 1}) * {L} + j] += ONE",
        "        if factor(lu, piv, j) != 0:",
        *fail("LINEAR_SOLVER_FAILED", "            "),
    ]
    if explicit:
        evaluate = [f"            d = dxdt_values(PREC(t[j]), {', '.join(state + parameters)})"]
        evaluate += [f"            ends[{m * L} + j] = d[{m}]" for m in range(n)]
        if reuse:  # f at the last step's end is this step's first stage
            lines += ["        if fs == 0:", *evaluate, "        elif fs == 1:"]
            lines += [f"            ends[{m * L} + j] = ends[{(n + m) * L} + j]"
                      for m in range(n)]
        else:
            lines += ["        if fs != 2:", *evaluate]
        lines += [f"        {k(0, m)} = hp * ends[{m * L} + j]" for m in range(n)]
    for i in range(1 if explicit else 0, s):
        lines.append(f"        # stage {i}")
        for m in range(n):
            terms = [(constant(f"A{i}_{q}", tableau.a[i][q]), k(q, m)) for q in range(i)]
            total = _sum([(c, x) for c, x in terms if c])
            lines.append(f"        {psi(m)} = {total or 'ZERO'}")
        for m in range(n):
            guess = f"{psi(m)} + GAMMA * {k(i - 1, m)}" if i > 0 else "ZERO"
            lines.append(f"        {k(i, m)} = {guess}")
        c_i = constant(f"C{i}", tableau.c[i])
        when = "PREC(t[j])" if c_i is None else f"PREC(t[j] + WIDE({c_i} * hp))"
        lines += [
            f"        if newton_stage(k, {i * n}, newton, state, parameters, {when}, hg, lu, "
            "piv, rate, j) != 0:",
            *fail("NONLINEAR_SOLVER_FAILED", "            "),
        ]
        if i == s - 1 and tableau.stiffly_accurate:  # the solution is the last stage value
            lines += [f"        proposed[{m * L} + j] = {state[m]} + {k(i, m)}"
                      for m in range(n)]
            if dense:
                lines += [f"        dense[{(n + m) * L} + j] = {k(i, m)}" for m in range(n)]
        lines += [f"        {k(i, m)} = ({k(i, m)} - {psi(m)}) * INV_GAMMA" for m in range(n)]
    for m in range(n):
        if not tableau.stiffly_accurate:
            weights = _sum([(w, k(i, m)) for i in range(s)
                            if (w := constant(f"B{i}", tableau.b[i]))])
            lines.append(f"        proposed[{m * L} + j] = {state[m]} + ({weights or 'ZERO'})")
        if tableau.adaptive:
            estimate = _sum([(e, k(i, m)) for i in range(s)
                             if (e := constant(f"E{i}", tableau.b_error[i]))])
            lines.append(f"        error[{m * L} + j] = {estimate or 'ZERO'}")
    if reuse:
        lines.append("        inv_h = ONE / hp")
        lines += [f"        ends[{(n + m) * L} + j] = {k(s - 1, m)} * inv_h" for m in range(n)]
    if dense:
        lines += [f"        dense[{m * L} + j] = {state[m]}" for m in range(n)]
        lines += [f"        dense[{(2 * n + m) * L} + j] = {k(0, m)}" for m in range(n)]
        lines += [f"        dense[{(3 * n + m) * L} + j] = {k(s - 1, m)}" for m in range(n)]
    lines.append("    return 0")
    if dense:
        lines += ["", ""] + _dense_source(n, L)
    unique = list(dict.fromkeys(constants))
    header = [f"# Generated by cubie_kernel.algorithms.dirk_step ({dtype.name})",
              "import numpy as np", "", *unique, "", ""]
    return "\n".join(header + newton + ["", ""] + lines) + "\n"


def _dense_source(n: int, L: int) -> list[str]:
    """``interpolate(dense, h, theta, out, j)`` (cubic Hermite) and a no-op
    ``end_derivative``."""
    lines = ["def interpolate(dense, h, theta, out, j):",
             "    # y_n + theta K0 + theta^2 (3 D - 2 K0 - K1) + theta^3 (K0 + K1 - 2 D)"]
    for m in range(n):
        y0, delta = f"dense[{m * L} + j]", f"dense[{(n + m) * L} + j]"
        k0, k1 = f"dense[{(2 * n + m) * L} + j]", f"dense[{(3 * n + m) * L} + j]"
        lines += [
            f"    d = {delta}",
            f"    a = {k0}",
            f"    b = {k1}",
            f"    out[{m * L} + j] = {y0} + theta * (a + theta * (PREC(3.0) * d - PREC(2.0) * a"
            " - b + theta * (a + b - PREC(2.0) * d)))",
        ]
    lines += ["", "", "def end_derivative(state, parameters, t, dense, j):", "    return 0"]
    return lines


class DIRKStep(StepFactory):
    """Factory of the DIRK step attempt (lane form).

    The device function has the other steps' signature, ``step(state,
    proposed, error, parameters, t, h, first_stage, step_status, shared,
    persistent)`` (see :class:`~cubie_kernel.algorithms.erk_step.ERKStep`):
    ``first_stage`` 0 starts a run, 1 follows an accepted attempt, 2 a
    rejected one (the Jacobian and ``f(t, y)`` at its point are still in
    place); ``step_status`` receives NONLINEAR_SOLVER_FAILED or
    LINEAR_SOLVER_FAILED per lane when the attempt failed (0 otherwise), with
    a NaN error estimate. Idle lanes (``h == 0``) are skipped. With dense
    output, ``end_derivative_function`` is a no-op (the last stage is the
    derivative at the step's end).
    """

    kind = "dirk"
    step_name = "dirk_step"

    def register_buffers(self) -> None:
        s = self.compile_settings
        n, stages = s.system.n_states, s.tableau.n_stages
        register = self._registry.register
        register("jacobian", self, n * n, persistent=True)
        register("lu", self, n * n)
        register("pivots", self, n)
        register("stages", self, stages * n)
        register("newton", self, 2 * n)
        register("derivatives", self, derivative_slots(s.tableau) * n, persistent=True)
        register("newton_rate", self, 1, persistent=True)
        register("dense_stages", self, 4 * n if s.dense else 0, persistent=True)

    def source(self) -> str:
        """The generated source of the step (for reading)."""
        s = self.compile_settings
        backend = targets.get_target(s.target)
        return step_source(s.tableau, s.system, backend.lanes(s.precision), s.precision,
                           newton_tolerances(s), s.dense)

    def source_namespace(self, backend, precision) -> dict:
        s = self.compile_settings
        functions = s.system.lane_functions(precision)
        factor, solve = build_lu(s.system.n_states, backend.lanes(precision), precision)
        jit = backend.device_jit
        namespace = {
            "NAN": precision(np.nan),
            "JIT": jit,
            "sqrt": math.sqrt,
            "LINEAR_SOLVER_FAILED": int(RunStatus.LINEAR_SOLVER_FAILED),
            "NONLINEAR_SOLVER_FAILED": int(RunStatus.NONLINEAR_SOLVER_FAILED),
            "factor": jit(factor),
            "solve": jit(solve),
            "jacobian_lane": jit(functions["jacobian_lane"]),
        }
        for name in ("jacobian", "lu", "pivots", "stages", "newton", "derivatives"):
            namespace[f"alloc_{name}"] = self.allocator(name, precision)
        namespace["alloc_rate"] = self.allocator("newton_rate", precision)
        return namespace
