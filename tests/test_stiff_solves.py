"""Stiff methods (Rosenbrock, ESDIRK) on the standard stiff problems, against published
references.

ROBER, HIRES, OREGO and VDPOL (the Bari test set, tests/stiff_problems.py)
are solved to their end times; the end-point error is measured in units of
the requested tolerance, ``|y - y_ref| / (rtol |y_ref| + atol)``, and the
accepted steps are compared with scipy's Radau on the same problem and
tolerances (an implicit 5th-order method: the reference for efficiency).
Every configuration compiles a kernel, so CASES is what CI can afford: each
method on two to four problems, each problem at two or three tolerances.
The full table (every Rosenbrock method x problem x rtol 1e-4, 1e-7, 1e-10)
was measured with the same criterion for issue 13's closing note.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from cubie_kernel import Solver
from cubie_kernel.status import RunStatus
from cubie_kernel.systems import van_der_pol
from stiff_problems import PROBLEMS

BARI = ("rober", "hires", "orego", "vdpol")

#: (method, problem, rtol): every method on several problems, every problem at
#: several tolerances (each configuration compiles a kernel: ~10 s).
CASES = (
    [("rosenbrock23", p, 1e-4) for p in BARI]
    + [("ros3p", p, 1e-4) for p in ("rober", "hires", "vdpol")]
    + [("rodas4", "rober", 1e-4), ("rodas4", "orego", 1e-4), ("rodas4", "hires", 1e-7),
       ("rodas4", "vdpol", 1e-7)]
    + [("rodas5p", "hires", 1e-4), ("rodas5p", "vdpol", 1e-4), ("rodas5p", "rober", 1e-7),
       ("rodas5p", "orego", 1e-7), ("rodas5p", "hires", 1e-10), ("rodas5p", "rober", 1e-10)]
    + [("kvaerno5", "rober", 1e-4), ("kvaerno5", "hires", 1e-7), ("kvaerno3", "vdpol", 1e-4),
       ("trbdf2", "vdpol", 1e-4)]
)

#: End-point error allowed, in units of the tolerance. The second-order methods'
#: global errors on OREGO's fast transitions reach ~80x (Rosenbrock 2(3)) and
#: ~190x (TR-BDF2) the local tolerance at 1e-4 (scipy's BDF: ~6x); the higher-
#: order methods stay below ~7x everywhere (measured for issue 13's note).
ERROR_LIMIT = {"rosenbrock23": 200.0, "ros3p": 10.0, "rodas4": 10.0, "rodas5p": 10.0,
               "kvaerno3": 10.0, "kvaerno5": 10.0, "trbdf2": 200.0}

#: Accepted steps allowed, as a multiple of scipy Radau's at the same tolerances.
STEP_RATIO = {"rosenbrock23": 30.0, "ros3p": 30.0, "rodas4": 10.0, "rodas5p": 10.0,
              "kvaerno3": 30.0, "kvaerno5": 10.0, "trbdf2": 30.0}


def tolerances(problem, rtol):
    """atol well below the smallest component that matters (ROBER's y2 ~ 1e-8)."""
    return rtol, rtol * (1e-6 if problem.name.startswith("rober") else 1e-4)


def radau_steps(problem, rtol, atol):
    solution = solve_ivp(problem.scipy_rhs, (problem.t0, problem.t_end), problem.y0,
                         method="Radau", rtol=rtol, atol=atol, jac=problem.scipy_jac)
    assert solution.status == 0
    return len(solution.t) - 1


@pytest.mark.parametrize("method,name,rtol", CASES,
                         ids=[f"{m}-{p}-{r:g}" for m, p, r in CASES])
def test_end_point_error_and_steps(method, name, rtol):
    problem = PROBLEMS[name]
    rtol, atol = tolerances(problem, rtol)
    solver = Solver(problem.system, method=method, rtol=rtol, atol=atol, max_steps=500_000,
                    output={"final_state": True, "states": [], "observables": []})
    result = solver.solve(duration=problem.t_end - problem.t0, t0=problem.t0)
    assert int(result.status.values[0]) == 0
    final = np.array([result[f"{s}_final"].values[0] for s in problem.system.state_names])
    error = np.abs(final - problem.reference) / (rtol * np.abs(problem.reference) + atol)
    assert error.max() <= ERROR_LIMIT[method], (error, final)
    steps = int(result.n_steps.values[0])
    radau = radau_steps(problem, rtol, atol)
    assert radau / 10 <= steps <= STEP_RATIO[method] * radau, (steps, radau)


def test_explicit_methods_fail_where_rosenbrock_methods_do_not():
    """Van der Pol, mu = 1000 (the motivation): rk45 exhausts max_steps, rodas5p
    finishes in ~600 steps (scipy's Radau at the same tolerance: ~1200)."""
    system = van_der_pol(1000.0)
    settings = dict(rtol=1e-6, atol=1e-6, max_steps=100_000,
                    output={"final_state": True, "states": [], "observables": []})
    explicit = Solver(system, method="rk45", **settings).solve(
        {"x": 2.0, "v": 0.0}, duration=3000.0)
    assert int(explicit.status.values[0]) & int(RunStatus.MAX_STEPS_EXCEEDED)
    stiff = Solver(system, method="rodas5p", **settings).solve({"x": 2.0, "v": 0.0},
                                                                duration=3000.0)
    assert int(stiff.status.values[0]) == 0
    reference = solve_ivp(lambda t, y: [y[1], 1000.0 * (1 - y[0] ** 2) * y[1] - y[0]],
                          (0, 3000.0), [2.0, 0.0], method="Radau", rtol=1e-11, atol=1e-11,
                          jac=lambda t, y: [[0, 1], [-2000.0 * y[0] * y[1] - 1,
                                                     1000.0 * (1 - y[0] ** 2)]])
    np.testing.assert_allclose(stiff.x_final.values[0], reference.y[0, -1], rtol=1e-4)
    assert int(stiff.n_steps.values[0]) < 2000
