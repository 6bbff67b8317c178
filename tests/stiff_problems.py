"""Standard stiff test problems with published reference solutions.

A plain helper module (not a test file) for testing implicit and Rosenbrock
steppers: each :class:`StiffProblem` holds the problem as a cubie
:class:`~cubie_kernel.systems.ODESystem`, the same right-hand side and its
analytic Jacobian as plain numpy callables for :func:`scipy.integrate.solve_ivp`,
and the published reference solution at ``t_end`` with its source.

Problems (``PROBLEMS`` keys)
----------------------------
``rober``, ``rober_1e11``
    Robertson's chemical kinetics (3 states), parameters ``k1=0.04, k2=3e7,
    k3=1e4``, ``y0 = (1, 0, 0)``::

        y1' = -k1*y1 + k3*y2*y3
        y2' =  k1*y1 - k3*y2*y3 - k2*y2**2
        y3' =  k2*y2**2

    ``rober`` ends at ``t = 1e5`` and ``rober_1e11`` at ``t = 1e11`` (the Bari
    test set's interval).
``hires``
    "High Irradiance RESponse" plant physiology model (8 states) on
    ``[0, 321.8122]``, coefficients as in the Bari test set's ``hires.f``.
``orego``
    The Oregonator (3 states) on ``[0, 360]``, ``y0 = (1, 2, 3)``, parameters
    ``s=77.27, q=8.375e-6, w=0.161``::

        y1' = s*(y2 + y1*(1 - q*y1 - y2))
        y2' = (y3 - (1 + y1)*y2)/s
        y3' = w*(y1 - y3)

``vdpol``
    Van der Pol in Hairer's scaled (singular-perturbation) form, ``eps=1e-6``
    on ``[0, 2]``, ``y0 = (2, 0)`` (the Bari test set's VDPOL)::

        y1' = y2
        y2' = ((1 - y1**2)*y2 - y1)/eps

    Hairer's own drivers (``dr_radau5.f``, ``dr_rodas.f``) start from ``y2(0) =
    -0.66``, on the slow manifold, but publish no reference solution for it;
    the Bari test set's published reference is for ``y2(0) = 0``, so that is
    the initial value used here.
``vdpolm``
    Van der Pol unscaled, ``mu=1e3`` on ``[0, 2000]``, ``y0 = (2, 0)`` (the Bari
    test set's "VDPOL modified", ``vdpolm.f``)::

        y1' = y2
        y2' = mu*(1 - y1**2)*y2 - y1

    It is ``vdpol`` with time stretched by ``mu``: ``vdpolm(mu*t) = (y1,
    y2/mu)`` of ``vdpol(t)`` with ``eps = 1/mu**2``, so its ``y2(2000)`` is
    ``vdpol``'s ``y2(2)`` divided by 1000 (both references agree on that to
    ~1e-13).

Reference values
----------------
Every reference is copied digit for digit from its source (see each record's
``reference_source``). The Bari "Test Set for IVP Solvers" (F. Mazzia, C.
Magherini et al., Universita di Bari, https://archimede.uniba.it/~testset/,
formerly http://www.dm.uniba.it/~testset/) computed them with RADAU5 in
extended precision (``uround = 1.01e-19``, ``rtol = atol = h0 = 1.1e-18``); the
Fortran problem files carry them in their ``solut`` subroutines.

The ``scipy_rhs`` callables evaluate exactly the same floating-point
operations, in the same order, as the code cubie generates from the equation
strings (``y**2`` is written ``y*y`` as the generator expands it), so the two
agree to the last bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.integrate import solve_ivp

from cubie_kernel.systems.ode_system import ODESystem

__all__ = ["StiffProblem", "PROBLEMS", "scipy_accepted_steps", "parameter_vector"]

_BARI = ("F. Mazzia, C. Magherini et al., Test Set for IVP Solvers, "
         "Universita di Bari, https://archimede.uniba.it/~testset/ "
         "(formerly http://www.dm.uniba.it/~testset/)")


@dataclass(frozen=True, eq=False)
class StiffProblem:
    """One stiff test problem with its published reference solution.

    Attributes
    ----------
    name : str
        Key in :data:`PROBLEMS`.
    system : ODESystem
        The problem as equation strings; its default initial values are
        ``y0`` and its default parameters the published ones.
    t0, t_end : float
        Integration interval.
    y0 : numpy.ndarray
        Initial state (read-only).
    reference : numpy.ndarray
        Published solution at ``t_end`` (read-only).
    reference_source : str
        Where the reference digits come from.
    scipy_rhs : callable
        ``f(t, y) -> ndarray``, the right-hand side with the default
        parameters, for :func:`scipy.integrate.solve_ivp`.
    scipy_jac : callable
        ``J(t, y) -> ndarray`` (n x n), the analytic Jacobian ``df/dy``.
    atol : numpy.ndarray
        Per-component absolute tolerance for reference-quality solves: tiny
        against each component's size over the run, so that with ``rtol`` of
        1e-10 to 1e-12 the error control is effectively relative.
    """

    name: str
    system: ODESystem
    t0: float
    t_end: float
    y0: np.ndarray
    reference: np.ndarray
    reference_source: str
    scipy_rhs: Callable[[float, np.ndarray], np.ndarray]
    scipy_jac: Callable[[float, np.ndarray], np.ndarray]
    atol: np.ndarray

    def __post_init__(self) -> None:
        n = self.system.n_states
        for field in ("y0", "reference", "atol"):
            value = np.array(getattr(self, field), dtype=np.float64)
            if value.ndim == 0:
                value = np.full(n, float(value))
            if value.shape != (n,):
                raise ValueError(f"{self.name}: {field} has shape {value.shape}, "
                                 f"expected ({n},)")
            value.setflags(write=False)
            object.__setattr__(self, field, value)
        defaults = np.array(list(self.system.initial_values.values()))
        if not np.array_equal(defaults, self.y0):
            raise ValueError(f"{self.name}: system initial values {defaults} != y0 {self.y0}")

    @property
    def parameters(self) -> np.ndarray:
        """The system's default parameters, in its parameter order."""
        return parameter_vector(self.system)


def parameter_vector(system: ODESystem) -> np.ndarray:
    """Default parameter values of ``system`` as a float64 array, in order."""
    defaults = system.default_parameters
    return np.array([defaults[n] for n in system.parameter_names], dtype=np.float64)


def scipy_accepted_steps(problem: StiffProblem, method: str = "Radau",
                         rtol: float = 1e-6, atol: float | np.ndarray | None = None
                         ) -> int:
    """Number of steps scipy's ``solve_ivp`` accepts on ``problem``.

    With ``t_eval=None`` and ``dense_output=False``, ``solve_ivp`` records one
    output per accepted step, so ``len(sol.t) - 1`` is the accepted-step count
    (rejected steps and Newton failures are not counted). The analytic
    Jacobian is passed to the implicit methods (Radau, BDF, LSODA).
    ``atol=None`` uses ``problem.atol``.

    Raises
    ------
    RuntimeError
        if the integration does not reach ``t_end``.
    """
    options = {}
    if method in ("Radau", "BDF", "LSODA"):
        options["jac"] = problem.scipy_jac
    sol = solve_ivp(problem.scipy_rhs, (problem.t0, problem.t_end), problem.y0,
                    method=method, rtol=rtol,
                    atol=problem.atol if atol is None else atol, **options)
    if sol.status != 0:
        raise RuntimeError(f"{problem.name}: solve_ivp({method}) failed: {sol.message}")
    return len(sol.t) - 1


# ---------------------------------------------------------------------- ROBER

_ROBER_EQUATIONS = [
    "dy1 = -k1*y1 + k3*y2*y3",
    "dy2 = k1*y1 - k3*y2*y3 - k2*y2**2",
    "dy3 = k2*y2**2",
]
_ROBER_PARAMETERS = {"k1": 0.04, "k2": 3.0e7, "k3": 1.0e4}


def _rober_functions(k1: float, k2: float, k3: float):
    def rhs(t, y):
        y1, y2, y3 = y[0], y[1], y[2]
        return np.array([
            -k1 * y1 + k3 * y2 * y3,
            k1 * y1 - k3 * y2 * y3 - k2 * (y2 * y2),
            k2 * (y2 * y2),
        ])

    def jac(t, y):
        y1, y2, y3 = y[0], y[1], y[2]
        return np.array([
            [-k1, k3 * y3, k3 * y2],
            [k1, -k3 * y3 - 2.0 * k2 * y2, -k3 * y2],
            [0.0, 2.0 * k2 * y2, 0.0],
        ])

    return rhs, jac


def _rober(name: str, t_end: float, reference, source: str) -> StiffProblem:
    system = ODESystem(_ROBER_EQUATIONS, states={"y1": 1.0, "y2": 0.0, "y3": 0.0},
                       parameters=_ROBER_PARAMETERS, name=name)
    rhs, jac = _rober_functions(**_ROBER_PARAMETERS)
    return StiffProblem(name=name, system=system, t0=0.0, t_end=t_end,
                        y0=[1.0, 0.0, 0.0], reference=reference,
                        reference_source=source, scipy_rhs=rhs, scipy_jac=jac,
                        # y2 peaks at 3.6e-5 and ends at 8e-14 (t = 1e11)
                        atol=[1e-20, 1e-24, 1e-16])


ROBER = _rober(
    "rober", 1.0e5,
    # t = 1e5: entry 6 (XOUT = 1, 10, ..., 1e11) of the table of "true" Robertson
    # solutions at t = 10**k of J. R. Cash's MEBDF Robertson driver
    [0.1786592114209946E-01, 0.7274751468436319E-07, 0.9821340061103859E+00],
    "Table of reference solutions at t = 10**k, k = 0..11, of the Robertson "
    "driver of J. R. Cash's MEBDF/MEBDFDAE codes (function SOLN, case 6 = "
    "t = 1e5), as reproduced in GitHub NCAR/micm, "
    "test/integration/analytical_policy.hpp (commit 87765c09308592a4ce354da2"
    "01373b9e9c7eb637, 'analytical_concentrations' of the Robertson test) and "
    "in a MATLAB port of the MEBDF ROBER driver. The same table's t = 1e11 "
    "entry agrees with the Bari test set's ROBER reference to 5e-15 relative.")

ROBER_1E11 = _rober(
    "rober_1e11", 1.0e11,
    [0.2083340149701255e-7, 0.8333360770334713e-13, 0.9999999791665050],
    f"{_BARI}: problem ROBER, rober.f (rev. 'rober.F,v 1.2 2006/10/02'), "
    "subroutine solut (RADAU, uround = 1.01d-19, rtol = atol = h0 = 1.1d-18), "
    "t_end = 1e11. Copy read from GitHub liuqx315/Multiscale-pattern, "
    "sundials_extensions/regression/rober.f; the same digits are in "
    "rforge/bvpsolve pkg/deTestSet (R reference('rober')).")


# ---------------------------------------------------------------------- HIRES

_HIRES_EQUATIONS = [
    "dy1 = -1.71*y1 + 0.43*y2 + 8.32*y3 + 0.0007",
    "dy2 = 1.71*y1 - 8.75*y2",
    "dy3 = -10.03*y3 + 0.43*y4 + 0.035*y5",
    "dy4 = 8.32*y2 + 1.71*y3 - 1.12*y4",
    "dy5 = -1.745*y5 + 0.43*(y6 + y7)",
    "dy6 = -280*y6*y8 + 0.69*y4 + 1.71*y5 - 0.43*y6 + 0.69*y7",
    "dy7 = 280*y6*y8 - 1.81*y7",
    "dy8 = -(280*y6*y8 - 1.81*y7)",
]
_HIRES_Y0 = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057]


def _hires_rhs(t, y):
    y1, y2, y3, y4, y5, y6, y7, y8 = (y[i] for i in range(8))
    return np.array([
        -1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007,
        1.71 * y1 - 8.75 * y2,
        -10.03 * y3 + 0.43 * y4 + 0.035 * y5,
        8.32 * y2 + 1.71 * y3 - 1.12 * y4,
        -1.745 * y5 + 0.43 * (y6 + y7),
        -280.0 * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
        280.0 * y6 * y8 - 1.81 * y7,
        -(280.0 * y6 * y8 - 1.81 * y7),
    ])


def _hires_jac(t, y):
    y6, y8 = y[5], y[7]
    J = np.zeros((8, 8))
    J[0, 0], J[0, 1], J[0, 2] = -1.71, 0.43, 8.32
    J[1, 0], J[1, 1] = 1.71, -8.75
    J[2, 2], J[2, 3], J[2, 4] = -10.03, 0.43, 0.035
    J[3, 1], J[3, 2], J[3, 3] = 8.32, 1.71, -1.12
    J[4, 4], J[4, 5], J[4, 6] = -1.745, 0.43, 0.43
    J[5, 3], J[5, 4], J[5, 5], J[5, 6], J[5, 7] = 0.69, 1.71, -280.0 * y8 - 0.43, 0.69, -280.0 * y6
    J[6, 5], J[6, 6], J[6, 7] = 280.0 * y8, -1.81, 280.0 * y6
    J[7, 5], J[7, 6], J[7, 7] = -280.0 * y8, 1.81, -280.0 * y6
    return J


HIRES = StiffProblem(
    name="hires",
    system=ODESystem(_HIRES_EQUATIONS,
                     states={f"y{i + 1}": v for i, v in enumerate(_HIRES_Y0)},
                     name="hires"),
    t0=0.0, t_end=321.8122, y0=_HIRES_Y0,
    reference=[0.7371312573325668e-3, 0.1442485726316185e-3,
               0.5888729740967575e-4, 0.1175651343283149e-2,
               0.2386356198831331e-2, 0.6238968252742796e-2,
               0.2849998395185769e-2, 0.2850001604814231e-2],
    reference_source=(
        f"{_BARI}: problem HIRES, hires.f (rev. 'hires.F,v 1.2 2006/10/02'), "
        "subroutine solut ('computed using true double precision RADAU5 on Cray "
        "C90, uround = 1.01d-19, rtol = atol = h0 = 1.1d-18'). Copy read from "
        "GitHub volpatto/pside, problems/HIRES/hires.f (commit f00d1057cd22a2"
        "fcdfa324f47f996257cb6e7e86)."),
    scipy_rhs=_hires_rhs, scipy_jac=_hires_jac,
    # components are 6e-5 .. 6e-3 at t_end (y2..y7 start at 0)
    atol=1e-18,
)


# ---------------------------------------------------------------------- OREGO

_OREGO_PARAMETERS = {"s": 77.27, "q": 8.375e-6, "w": 0.161}


def _orego_functions(s: float, q: float, w: float):
    def rhs(t, y):
        y1, y2, y3 = y[0], y[1], y[2]
        return np.array([
            s * (y2 + y1 * (1.0 - q * y1 - y2)),
            (y3 - (1.0 + y1) * y2) / s,
            w * (y1 - y3),
        ])

    def jac(t, y):
        y1, y2 = y[0], y[1]
        return np.array([
            [s * (1.0 - 2.0 * q * y1 - y2), s * (1.0 - y1), 0.0],
            [-y2 / s, -(1.0 + y1) / s, 1.0 / s],
            [w, 0.0, -w],
        ])

    return rhs, jac


_orego_rhs, _orego_jac = _orego_functions(**_OREGO_PARAMETERS)

OREGO = StiffProblem(
    name="orego",
    system=ODESystem(["dy1 = s*(y2 + y1*(1 - q*y1 - y2))",
                      "dy2 = (y3 - (1 + y1)*y2)/s",
                      "dy3 = w*(y1 - y3)"],
                     states={"y1": 1.0, "y2": 2.0, "y3": 3.0},
                     parameters=_OREGO_PARAMETERS, name="orego"),
    t0=0.0, t_end=360.0, y0=[1.0, 2.0, 3.0],
    reference=[0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3],
    reference_source=(
        f"{_BARI}: problem OREGO, orego.f (rev. 'orego.F,v 1.4 2006/10/06'), "
        "subroutine solut (RADAU on an Alphaserver DS20E, uround = 1.01d-19, "
        "rtol = h0 = 1.1d-18, atol = 1.1d-40). Copy read from GitHub "
        "liuqx315/Multiscale-pattern, sundials_extensions/regression/orego.f "
        "(commit 802bb02d46ebc139fb122521afa255df3b72a9c2); the same digits are "
        "in rforge/bvpsolve pkg/deTestSet (R reference('orego'))."),
    scipy_rhs=_orego_rhs, scipy_jac=_orego_jac,
    # y1 >= ~1, y2 and y3 >= ~1 over the run; spikes to 1e5
    atol=1e-16,
)


# ---------------------------------------------------------------- VAN DER POL

def _vdpol_functions(eps: float):
    def rhs(t, y):
        y1, y2 = y[0], y[1]
        return np.array([y2, ((1.0 - y1 * y1) * y2 - y1) / eps])

    def jac(t, y):
        y1, y2 = y[0], y[1]
        return np.array([[0.0, 1.0],
                         [(-2.0 * y1 * y2 - 1.0) / eps, (1.0 - y1 * y1) / eps]])

    return rhs, jac


def _vdpolm_functions(mu: float):
    def rhs(t, y):
        y1, y2 = y[0], y[1]
        return np.array([y2, mu * (1.0 - y1 * y1) * y2 - y1])

    def jac(t, y):
        y1, y2 = y[0], y[1]
        return np.array([[0.0, 1.0],
                         [-2.0 * mu * y1 * y2 - 1.0, mu * (1.0 - y1 * y1)]])

    return rhs, jac


_vdpol_rhs, _vdpol_jac = _vdpol_functions(1.0e-6)

VDPOL = StiffProblem(
    name="vdpol",
    system=ODESystem(["dy1 = y2", "dy2 = ((1 - y1**2)*y2 - y1)/eps"],
                     states={"y1": 2.0, "y2": 0.0}, parameters={"eps": 1.0e-6},
                     name="vdpol"),
    t0=0.0, t_end=2.0, y0=[2.0, 0.0],
    reference=[0.1706167732170483e1, -0.8928097010247975e0],
    reference_source=(
        f"{_BARI}: problem VDPOL (eps = 1e-6 on [0, 2], y0 = (2, 0)), vdpol.f "
        "(rev. 'vdpol.F,v 1.2 2006/10/02'), subroutine solut (RADAU on an "
        "Alphaserver DS20E, uround = 1.01d-19, rtol = atol = h0 = 1.1d-18). Copy "
        "read from GitHub volpatto/pside, problems/VdPol/vdpol.f (commit "
        "f00d1057cd22a2fcdfa324f47f996257cb6e7e86)."),
    scipy_rhs=_vdpol_rhs, scipy_jac=_vdpol_jac,
    atol=1e-16,
)

_vdpolm_rhs, _vdpolm_jac = _vdpolm_functions(1.0e3)

VDPOLM = StiffProblem(
    name="vdpolm",
    system=ODESystem(["dy1 = y2", "dy2 = mu*(1 - y1**2)*y2 - y1"],
                     states={"y1": 2.0, "y2": 0.0}, parameters={"mu": 1.0e3},
                     name="vdpolm"),
    t0=0.0, t_end=2000.0, y0=[2.0, 0.0],
    reference=[0.1706167732170469e1, -0.8928097010248125e-3],
    reference_source=(
        f"{_BARI}: problem 'VAN DER POL modified' (mu = 1e3 on [0, 2000], "
        "y0 = (2, 0)), vdpolm.f (rev. 'vdpolm.F,v 1.2 2006/10/02'), subroutine "
        "solut (RADAU on an Alphaserver DS20E, uround = 1.01d-19, rtol = atol = "
        "h0 = 1.1d-18). Copy read from GitHub volpatto/pside, "
        "problems/VdPol/vdpolm.f (commit f00d1057cd22a2fcdfa324f47f996257cb6e7e86); "
        "the same digits are in rforge/bvpsolve pkg/deTestSet "
        "(R reference('vdpol'))."),
    scipy_rhs=_vdpolm_rhs, scipy_jac=_vdpolm_jac,
    atol=1e-16,
)


#: Every problem by name.
PROBLEMS: dict[str, StiffProblem] = {
    p.name: p for p in (ROBER, ROBER_1E11, HIRES, OREGO, VDPOL, VDPOLM)
}
