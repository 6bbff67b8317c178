"""Diagonally implicit Runge-Kutta methods: tableaus, the step, full stiff solves.

The step is called directly on the cpu target in lane form (a block of
runs per call, one step size per lane), as tests/test_erk_step.py does;
the full solves go through :class:`cubie_kernel.Solver` against the
published references of tests/stiff_problems.py.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal, localcontext
from fractions import Fraction as F

import attrs
import numpy as np
import pytest

import cubie_kernel
from cubie_kernel import BufferRegistry, targets
from cubie_kernel.algorithms import engine_for
from cubie_kernel.algorithms.dirk_step import DIRKStep, DIRKStepSettings
from cubie_kernel.algorithms.dirk_tableau import DIRKTableau, order_conditions
from cubie_kernel.algorithms.tableaus import TABLEAUS, get_tableau
from cubie_kernel.status import RunStatus
from cubie_kernel.systems import ODESystem, van_der_pol
from helpers_rk import TREE_COUNTS, OrderConditions
from stiff_problems import PROBLEMS

DIRK_NAMES = sorted(n for n, t in TABLEAUS.items() if isinstance(t, DIRKTableau))

#: What each method is, stated independently of its module:
#: (stages, order, embedded order, dense output).
EXPECTED = {
    "kvaerno3": (4, 3, 2, True),
    "kvaerno5": (7, 5, 4, False),
    "trbdf2": (3, 2, 3, True),
}

LANES = targets.get_target("cpu").lanes(np.float64)

#: Newton tolerances of the order tests: far below the local errors measured.
TIGHT = (1e-13, 1e-13)

NONLINEAR = int(RunStatus.NONLINEAR_SOLVER_FAILED)
LINEAR = int(RunStatus.LINEAR_SOLVER_FAILED)


# ------------------------------------------------------------------- tableaus
def test_registry_holds_the_family():
    assert set(DIRK_NAMES) == set(EXPECTED)
    assert get_tableau("kvaerno_3") is TABLEAUS["kvaerno3"]
    assert get_tableau("Kvaerno_5") is TABLEAUS["kvaerno5"]
    assert get_tableau("tr_bdf2") is TABLEAUS["trbdf2"]
    assert engine_for(TABLEAUS["kvaerno5"])[0] is DIRKStep


def _random_lower(s: int, rng: random.Random) -> list[list[F]]:
    return [[F(rng.randint(-9, 9), rng.randint(1, 9)) for _ in range(i + 1)] for i in range(s)]


@pytest.mark.parametrize("seed", range(3))
def test_order_conditions_are_the_rooted_tree_conditions(seed):
    """The 17 conditions spelled out in dirk_tableau are exactly the tree
    conditions Phi(t) = 1/gamma(t) of every tree up to 5 nodes (generated
    independently in helpers_rk), for an arbitrary full lower-triangular A."""
    rng = random.Random(seed)
    a = _random_lower(5, rng)
    w = [F(rng.randint(-9, 9), rng.randint(1, 9)) for _ in range(5)]
    trees = OrderConditions(a)
    conditions = order_conditions(w, a, 5)
    assert len(conditions) == sum(TREE_COUNTS[:5])
    start = 0
    for order in range(1, 6):
        count = TREE_COUNTS[order - 1]
        mine = sorted(value - required for _, value, required in conditions[start:start + count])
        assert mine == sorted(trees.residuals(w, order)), order
        start += count


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_properties(name):
    tab = TABLEAUS[name]
    stages, order, embedded, dense = EXPECTED[name]
    assert (tab.n_stages, tab.order, tab.embedded_order) == (stages, order, embedded)
    assert tab.error_order == min(order, embedded)
    assert tab.adaptive and not tab.fsal
    assert tab.explicit_first_stage and tab.a[0][0] == 0
    assert tab.dense_output is dense
    assert all(tab.a[i][i] == tab.gamma for i in range(1, stages))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_orders_are_exact(name):
    """b has its order and no more; so has b_hat (where order + 1 <= 5)."""
    tab = TABLEAUS[name]
    for weights, order in ((tab.b, tab.order), (tab.b_hat, tab.embedded_order)):
        assert all(abs(v - r) <= F(1, 10**12) for _, v, r in order_conditions(weights, tab.a,
                                                                             order))
        if order < 5:
            above = order_conditions(weights, tab.a, order + 1)
            assert max(abs(v - r) for _, v, r in above) > F(1, 10**6)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stiffly_accurate(name):
    """b is the last row of A and c_s = 1: the solution is the last stage value."""
    tab = TABLEAUS[name]
    assert tab.stiffly_accurate
    assert tab.c[-1] == 1
    assert all(abs(x - y) <= F(1, 10**15) for x, y in zip(tab.b, tab.a[-1]))
    assert tab.hermite_ready


def _fields(tab: DIRKTableau) -> dict:
    return {f.name: getattr(tab, f.name) for f in attrs.fields(DIRKTableau)}


def _bumped(rows, i, j, by=F(1, 10**9)):
    rows = [list(r) for r in rows]
    rows[i][j] += by
    return rows


@pytest.mark.parametrize("change, message", [
    (lambda t: {"b": _bumped([t.b], 0, 2)[0], "stiffly_accurate": False},
     "order condition of b fails: sum w_i = 1"),
    (lambda t: {"b_error": _bumped([t.b_error], 0, 3)[0]},
     "order condition of b_hat fails: sum w_i = 1"),
    (lambda t: {"c": _bumped([t.c], 0, 3)[0]}, "row 3 of a sums to"),
    (lambda t: {"a": _bumped(t.a, 2, 2)}, "a[2][2]"),
    (lambda t: {"b": _bumped([t.b], 0, 2)[0]}, "claimed stiffly accurate"),
    # b_hat is order 4 only: claiming 5 fails the fifth-order trees, named
    (lambda t: {"embedded_order": 5}, "order condition of b_hat fails: sum w_i c_i^4 = 1/5"),
    (lambda t: {"b": [x - e for x, e in zip(t.b, t.b_error)], "stiffly_accurate": False},
     "sum w_i c_i^4 = 1/5"),
    (lambda t: {"a": [[F(1, 2)]] + [list(r) for r in t.a[1:]]}, "a[0][0]"),
    (lambda t: {"a": [list(r) for r in t.a[:-1]] + [list(t.a[-1])[:-1]]}, "a[6] has 6 entries"),
])
def test_corrupted_tableau_is_rejected(change, message):
    base = TABLEAUS["kvaerno5"]
    with pytest.raises(ValueError, match=re.escape(message)):
        DIRKTableau(**{**_fields(base), **change(base)})


def test_claimed_stiff_accuracy_is_checked():
    midpoint = dict(name="midpoint", a=[[F(1, 2)]], b=[1], c=[F(1, 2)], order=2)
    assert not DIRKTableau(**midpoint).explicit_first_stage
    with pytest.raises(ValueError, match="claimed stiffly accurate"):
        DIRKTableau(**midpoint, stiffly_accurate=True)


# ------------------------------------------------------------ the step itself
#: Hopf normal form: r' = r (1 - r^2), phi' = 1, smooth and non-stiff.
HOPF = ODESystem(["dx = -y + x*(1 - x**2 - y**2)", "dy = x + y*(1 - x**2 - y**2)"],
                 states={"x": 0.5, "y": 0.0}, name="hopf")


def hopf_exact(t, r0=0.5):
    r = 1.0 / np.sqrt(1.0 + (1.0 / r0 ** 2 - 1.0) * np.exp(-2.0 * np.asarray(t)))
    return np.array([r * np.cos(t), r * np.sin(t)])


class LaneStep:
    """A compiled DIRK step with its own lane-form scratch, called per block."""

    def __init__(self, method, system, tolerances=TIGHT, dense=False, precision=np.float64):
        self.registry = BufferRegistry()
        self.step = DIRKStep(DIRKStepSettings(TABLEAUS[method], system, precision, "cpu", dense,
                                              tolerances), self.registry)
        self.function = self.step.device_function
        self.precision = precision
        self.lanes = targets.get_target("cpu").lanes(precision)
        self.n = system.n_states
        self.persistent = np.full(
            self.registry.persistent_region_size(self.step, "cpu") * self.lanes, np.nan,
            dtype=precision)
        self.shared = np.empty(self.registry.shared_buffer_size(self.step) * self.lanes,
                               dtype=precision)

    def buffer(self, name):
        slot = self.registry.layout(self.step, "cpu")[name]
        return self.persistent[slot.offset * self.lanes:(slot.offset + slot.size) * self.lanes]

    def __call__(self, states, parameters, h, first_stage=0, t=0.0):
        """Lane j starts at states[:, j] (or one state for all) with step h[j]."""
        L, n = self.lanes, self.n
        state = np.empty((n, L), self.precision)
        state[:] = np.asarray(states, self.precision).reshape(n, -1)[:, :L]
        params = np.empty((len(parameters), L), self.precision)
        if len(parameters):
            params[:] = np.asarray(parameters, self.precision).reshape(len(parameters), -1)
        h = np.resize(np.asarray(h, np.float64), L)
        status = np.full(L, -1, np.int32)
        proposed, error = np.empty(n * L, self.precision), np.empty(n * L, self.precision)
        self.function(state.ravel(), proposed, error, params.ravel(), np.full(L, float(t)), h,
                      np.full(L, first_stage, np.int32), status, self.shared, self.persistent)
        return status, proposed.reshape(n, L), error.reshape(n, L)


@pytest.fixture(scope="module")
def hopf_steps():
    """One compiled step per method on HOPF (dense on: the interpolant is tested too)."""
    return {name: LaneStep(name, HOPF, dense=True) for name in DIRK_NAMES}


#: Step sizes of the order tests, one per lane (0.2 .. 0.025).
ORDER_STEPS = 0.2 / 2.0 ** np.arange(4)


def _slope(h, errors):
    return np.polyfit(np.log2(h), np.log2(errors), 1)[0]


@pytest.mark.parametrize("name", DIRK_NAMES)
def test_local_error_orders(name, hopf_steps):
    """One step from the same point with h, h/2, h/4, h/8: the solution's local
    error goes like h^(p+1), the estimate like h^(q+1), q the error order
    (TR-BDF2: its order-3 companion estimates the order-2 solution's error)."""
    tab = TABLEAUS[name]
    h = np.resize(ORDER_STEPS, LANES)
    status, proposed, error = hopf_steps[name]([0.5, 0.0], [], h)
    k = len(ORDER_STEPS)
    assert np.all(status == 0)
    local = np.linalg.norm(proposed[:, :k] - hopf_exact(ORDER_STEPS), axis=0)
    estimate = np.linalg.norm(error[:, :k], axis=0)
    assert _slope(ORDER_STEPS, local) == pytest.approx(tab.order + 1, abs=0.3)
    assert _slope(ORDER_STEPS, estimate) == pytest.approx(tab.error_order + 1, abs=0.3)
    if tab.embedded_order > tab.order:  # the estimate is the solution's own error
        np.testing.assert_allclose(estimate, local, rtol=0.05)


@pytest.mark.parametrize("name", [n for n in DIRK_NAMES if TABLEAUS[n].dense_output])
def test_hermite_interpolant_order(name, hopf_steps):
    """y(t + h/2) from the step's continuous extension: error ~ h^(k+1), k =
    the interpolation order (3 for Kvaerno 3(2), 2 for TR-BDF2)."""
    tab = TABLEAUS[name]
    step = hopf_steps[name]
    h = np.resize(ORDER_STEPS, LANES)
    status, _, _ = step([0.5, 0.0], [], h)
    assert np.all(status == 0)
    dense = step.buffer("dense_stages")
    out = np.empty(2 * LANES)
    interpolate = step.step.interpolate_function
    for j in range(len(ORDER_STEPS)):
        interpolate(dense, h[j], 0.5, out, j)
    middle = out.reshape(2, LANES)[:, :len(ORDER_STEPS)]
    errors = np.linalg.norm(middle - hopf_exact(ORDER_STEPS / 2), axis=0)
    assert _slope(ORDER_STEPS, errors) == pytest.approx(tab.interpolation_order + 1, abs=0.35)
    # the ends: theta 0 gives y_n, theta 1 the proposed solution
    _, proposed, _ = step([0.5, 0.0], [], h)  # (the same step again)
    for theta, expected in ((0.0, np.array([0.5, 0.0])), (1.0, proposed[:, 0])):
        ends = np.empty(2 * LANES)
        interpolate(dense, h[0], theta, ends, 0)
        np.testing.assert_allclose(ends.reshape(2, LANES)[:, 0], expected, rtol=0,
                                   atol=1e-15)


def _crouzeix_sdirk3() -> DIRKTableau:
    """Crouzeix's 2-stage SDIRK of order 3 (Hairer & Wanner II, Sect. IV.6):
    implicit first stage, not stiffly accurate, no estimate."""
    with localcontext() as context:
        context.prec = 40
        sqrt3 = F(str(Decimal(3).sqrt()))
    gamma = F(1, 2) + sqrt3 / 6
    return DIRKTableau(name="crouzeix3", a=[[gamma], [1 - 2 * gamma, gamma]],
                       b=[F(1, 2), F(1, 2)], c=[gamma, 1 - gamma], order=3)


def test_sdirk_with_an_implicit_first_stage():
    """The engine also runs SDIRK tableaus (every stage implicit, solution
    from the weights): local error order 4 for Crouzeix's order-3 method."""
    tab = _crouzeix_sdirk3()
    assert not tab.explicit_first_stage and not tab.adaptive and not tab.dense_output
    registry = BufferRegistry()
    step = DIRKStep(DIRKStepSettings(tab, HOPF, tolerances=TIGHT), registry)
    assert registry.buffers(step)["derivatives"].size == 0
    persistent = np.empty(registry.persistent_region_size(step, "cpu") * LANES)
    h = np.resize(ORDER_STEPS, LANES)
    state = np.repeat([0.5, 0.0], LANES)
    proposed, status = np.empty(2 * LANES), np.full(LANES, -1, np.int32)
    step.device_function(state, proposed, np.empty(2 * LANES), np.empty(0), np.zeros(LANES), h,
                         np.zeros(LANES, np.int32), status, np.empty(0), persistent)
    assert np.all(status == 0)
    k = len(ORDER_STEPS)
    local = np.linalg.norm(proposed.reshape(2, LANES)[:, :k] - hopf_exact(ORDER_STEPS), axis=0)
    assert _slope(ORDER_STEPS, local) == pytest.approx(4, abs=0.3)


def test_first_stage_reuse_after_an_accepted_step(hopf_steps):
    """first_stage 1 takes f(t, y) from the last stage of the step before
    (stiffly accurate): the same step as evaluating it afresh."""
    step = hopf_steps["kvaerno5"]
    h = np.full(LANES, 0.1)
    _, first, _ = step([0.5, 0.0], [], h, first_stage=0)
    status, reused, reused_error = step(first, [], h, first_stage=1, t=0.1)
    assert np.all(status == 0)
    _, fresh, fresh_error = step(first, [], h, first_stage=0, t=0.1)
    np.testing.assert_allclose(reused, fresh, rtol=0, atol=1e-12)
    np.testing.assert_allclose(reused_error, fresh_error, rtol=0, atol=1e-12)
    np.testing.assert_allclose(reused[:, 0], hopf_exact(0.2), atol=1e-8)


def test_rejected_attempt_keeps_the_jacobian(hopf_steps):
    """first_stage 2 reuses the Jacobian in place (a NaN there fails the
    factorisation); 0 and 1 evaluate it again."""
    step = hopf_steps["trbdf2"]
    h = np.full(LANES, 0.1)
    assert np.all(step([0.5, 0.0], [], h)[0] == 0)
    for first_stage, expected in ((2, LINEAR), (1, 0), (0, 0)):
        step.buffer("jacobian")[:] = np.nan
        status, proposed, error = step([0.5, 0.0], [], h, first_stage=first_stage)
        assert np.all(status == expected), first_stage
    # after the rejection the retry with half the step is the fresh step's
    _, retry, _ = step([0.5, 0.0], [], h / 2, first_stage=2)
    _, fresh, _ = step([0.5, 0.0], [], h / 2, first_stage=0)
    np.testing.assert_allclose(retry, fresh, rtol=0, atol=1e-12)


#: y' = k y - y^3: strongly nonlinear at y = 1 (k = 0), Jacobian exactly k at y = 0.
CUBIC = ODESystem(["dy = k*y - y**3"], states={"y": 1.0}, parameters={"k": 0.0},
                  name="cubic")


@pytest.fixture(scope="module")
def cubic_step():
    return LaneStep("kvaerno3", CUBIC)


def test_newton_failure_is_reported(cubic_step):
    """A huge step on y' = -y^3: the simplified Newton iteration with the
    Jacobian at y0 diverges. The lane reports NONLINEAR_SOLVER_FAILED, a NaN
    error and proposed = state; a lane with a small step is unaffected."""
    h = np.where(np.arange(LANES) % 2 == 0, 1e4, 1e-2)
    status, proposed, error = cubic_step([1.0], [0.0], h)
    failed = h > 1
    assert np.all(status[failed] == NONLINEAR)
    assert np.all(np.isnan(error[:, failed]))
    np.testing.assert_array_equal(proposed[:, failed], 1.0)
    assert np.all(status[~failed] == 0)
    exact = 1.0 / np.sqrt(1.0 + 2.0 * 1e-2)
    np.testing.assert_allclose(proposed[0, ~failed], exact, rtol=1e-6)


def test_nonfinite_jacobian_is_a_linear_solver_failure(cubic_step):
    status, proposed, error = cubic_step([1.0], [np.inf], np.full(LANES, 1e-2))
    assert np.all(status == LINEAR)
    assert np.all(np.isnan(error))
    np.testing.assert_array_equal(proposed, 1.0)


def test_singular_matrix_is_a_linear_solver_failure(cubic_step):
    """At y = 0 the Jacobian is k; with h gamma k = 1 exactly, M = 1 - h gamma k = 0."""
    hg = np.float64(1.0) * np.float64(float(TABLEAUS["kvaerno3"].gamma))
    k = 1.0 / hg
    while -hg * k + 1.0 != 0.0:  # the step forms -(h gamma) J, then adds 1
        k = np.nextafter(k, np.inf if -hg * k + 1.0 > 0 else -np.inf)
    status, proposed, error = cubic_step([0.0], [k], np.full(LANES, 1.0))
    assert np.all(status == LINEAR)
    assert np.all(np.isnan(error))
    np.testing.assert_array_equal(proposed, 0.0)
    status, _, _ = cubic_step([0.0], [k], np.full(LANES, 0.5))
    assert np.all(status == 0)


def test_float32_step():
    """The generated step runs in float32 too (constants and arithmetic in the
    run's precision) and agrees with the float64 step to float32 accuracy."""
    step = LaneStep("kvaerno3", HOPF, tolerances=(1e-5, 1e-5), precision=np.float32)
    h = np.full(step.lanes, 0.1)
    status, proposed, error = step([0.5, 0.0], [], h)
    assert np.all(status == 0) and proposed.dtype == np.float32
    np.testing.assert_allclose(proposed[:, 0], hopf_exact(0.1), atol=2e-5)


# ------------------------------------------------------------ full solves
def _final_state(result, system):
    return np.array([float(np.ravel(result[name].values)[-1]) for name in system.state_names])


@pytest.mark.parametrize("problem, rtol, atol_scale, max_steps", [
    ("vdpolm", 1e-6, 1e-3, 2000),  # van der Pol mu = 1000 on [0, 2000]
    ("rober", 1e-6, 1e-6, 1000),   # Robertson on [0, 1e5]
])
def test_kvaerno5_reaches_the_published_reference(problem, rtol, atol_scale, max_steps):
    """A full adaptive solve through the Solver matches the reference at the
    requested tolerance (relative error of every component within 5 rtol)."""
    p = PROBLEMS[problem]
    system = van_der_pol(1000.0) if problem == "vdpolm" else p.system
    solver = cubie_kernel.Solver(system, method="kvaerno5", rtol=rtol, atol=rtol * atol_scale,
                                 target="cpu")
    result = solver.solve(duration=p.t_end)
    assert int(result["status"].values[0]) == 0
    final = _final_state(result, system)
    np.testing.assert_allclose(final, p.reference, rtol=5 * rtol, atol=0)
    steps = int(np.ravel(result["n_steps"].values)[-1])
    assert 0 < steps < max_steps


@pytest.mark.ptx
def test_cuda_kernel_compiles_to_ptx_in_float32():
    """The DIRK step is valid numba-cuda device code (NVVM and ptxas, no GPU
    needed): a float32 Kvaerno 3(2) kernel with dense output assembles
    without spills, and only the loop's time arithmetic is float64."""
    from test_ptx import F64_TIME_BUDGET, assemble, cuda_kernel, f64_arithmetic

    kernel = cuda_kernel(van_der_pol(), method="kvaerno3", precision=np.float32, save_every=1.0)
    assert kernel.single_integrator.settings.dense_output
    ptx = kernel.ptx((8, 0))
    assert assemble(ptx, (8, 0))["spill_stores"] == 0
    assert f64_arithmetic(ptx) <= F64_TIME_BUDGET


def test_dense_output_through_the_loop():
    """Kvaerno 3(2) saves from its Hermite interpolant (the steps are not
    shortened for the samples): every sample of van der Pol (mu = 1000) on
    [0, 2000] matches a tight scipy Radau solution at the requested tolerance."""
    from scipy.integrate import solve_ivp

    p = PROBLEMS["vdpolm"]
    rtol = 1e-6
    solver = cubie_kernel.Solver(van_der_pol(1000.0), method="kvaerno3", rtol=rtol,
                                 atol=1e-3 * rtol, save_every=100.0, target="cpu")
    assert solver.settings.dense_output
    result = solver.solve(duration=p.t_end)
    assert int(result["status"].values[0]) == 0
    times = result["time"].values
    reference = solve_ivp(p.scipy_rhs, (p.t0, p.t_end), p.y0, method="Radau", jac=p.scipy_jac,
                          rtol=1e-10, atol=1e-12, t_eval=times).y
    x = np.ravel(result["x"].values)
    np.testing.assert_allclose(x, reference[0], rtol=10 * rtol, atol=0)
    np.testing.assert_allclose(_final_state(result, solver.system), p.reference, rtol=5 * rtol)
