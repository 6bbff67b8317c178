"""Rosenbrock methods: tableau data, the generated step, its failures.

The step is called directly on the cpu target (lane form: each lane takes
the same problem with its own step size), against the closed-form solution
of a non-autonomous nonlinear system, so orders are measured, not assumed.
Whole solves against published reference solutions are in
tests/test_stiff_problems_solved.py.
"""

from fractions import Fraction as F

import numpy as np
import pytest

from cubie_kernel import BufferRegistry, Solver, targets
from cubie_kernel.algorithms import make_step
from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau, from_original_form
from cubie_kernel.algorithms.tableaus import TABLEAUS, get_tableau
from cubie_kernel.status import RunStatus
from cubie_kernel.systems import ODESystem

ROSENBROCK = sorted(n for n, t in TABLEAUS.items() if isinstance(t, RosenbrockTableau))

#: What each method is, stated independently of its module:
#: (stages, order, embedded order, dense order or None, stiffly accurate).
EXPECTED = {
    "rosenbrock23": (3, 2, 3, 2, False),
    "ros3p": (3, 3, 2, None, False),
    "rodas4": (6, 4, 3, 3, True),
    "rodas5p": (8, 5, 4, 4, True),
}


def test_the_registry_has_the_rosenbrock_methods():
    assert ROSENBROCK == sorted(EXPECTED)
    assert get_tableau("ode23s") is TABLEAUS["rosenbrock23"]
    assert get_tableau("RODAS5P") is TABLEAUS["rodas5p"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tableau_properties(name):
    t = TABLEAUS[name]
    stages, order, embedded, dense, stiff = EXPECTED[name]
    assert (t.n_stages, t.order, t.embedded_order) == (stages, order, embedded)
    assert t.error_order == min(order, embedded)
    assert t.interpolation_order == (dense or 0)
    assert t.dense_output == (dense is not None and dense >= min(order, embedded))
    assert t.stiffly_accurate == stiff
    assert t.adaptive and not t.fsal


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_perturbed_tableau_fails_its_order_conditions(name):
    t = TABLEAUS[name]
    fields = {f: getattr(t, f) for f in ("name", "gamma", "a", "C", "c", "d", "m", "order",
                                         "m_error", "embedded_order")}
    # move weight between two stages: sum m_i unchanged, a higher condition breaks
    m = list(fields["m"])
    m[0] += F(1, 1000)
    m[1] -= F(1, 1000)
    with pytest.raises(ValueError, match="order condition of m fails"):
        RosenbrockTableau(**{**fields, "m": m})
    with pytest.raises(ValueError, match="c\\[1\\]"):
        c = list(fields["c"])
        c[1] += F(1, 100)
        RosenbrockTableau(**{**fields, "c": c})


def test_a_false_stiff_accuracy_claim_is_refused():
    t = TABLEAUS["ros3p"]
    fields = {f: getattr(t, f) for f in ("name", "gamma", "a", "C", "c", "d", "m", "order",
                                         "m_error", "embedded_order")}
    with pytest.raises(ValueError, match="stiffly accurate"):
        RosenbrockTableau(**fields, stiffly_accurate=True)


def test_the_original_form_round_trips():
    """ode23s as published (Shampine & Reichelt): the transformation is exact both ways."""
    t = TABLEAUS["rosenbrock23"]
    alpha, Gamma, b, b_hat = t.original_form()
    d = t.gamma
    assert abs(d * (2 + F("1.4142135623730950488016887242096980785697"))) - 1 < F(1, 10**38)
    assert Gamma[1][0] == -d and b == [0, 1, 0]
    assert [float(x) for x in b_hat] == pytest.approx([1 / 6, 2 / 3, 1 / 6], abs=1e-15)
    again = from_original_form(
        "again", d, [row[:i] for i, row in enumerate(alpha)],
        [row[:i] for i, row in enumerate(Gamma)], b, b_hat, order=2, embedded_order=3)
    assert again.a == t.a and again.C == t.C and again.m == t.m and again.d == t.d


# ------------------------------------------------------------------ the step


#: u' = -2 t u^2, v' = u v: u = 1 / (1 + t^2), v = exp(atan t) (non-autonomous:
#: exercises the df/dt terms; nonlinear and coupled: exercises J)
CLOSED_FORM = ODESystem(["du = -2*t*u**2", "dv = u*v"], states={"u": 1.0, "v": 1.0},
                        name="closed_form")


def exact(t):
    return np.array([1.0 / (1.0 + t * t), np.exp(np.arctan(t))])


def one_step(method, t0, steps, dense=False, precision=np.float64):
    """One step from the exact solution at t0 per lane, each lane its own size."""
    registry = BufferRegistry()
    step = make_step(get_tableau(method), CLOSED_FORM, registry, precision, dense=dense)
    function = step.device_function
    L = targets.get_target("cpu").lanes(precision)
    steps = np.asarray(steps, float)
    k = len(steps)
    assert k <= L
    shared = np.zeros(registry.shared_buffer_size(step) * L, precision)
    persistent = np.zeros(registry.persistent_region_size(step, "cpu") * L, precision)
    state = np.repeat(exact(t0), L).astype(precision)
    proposed = np.zeros(2 * L, precision)
    error = np.zeros(2 * L, precision)
    h = np.zeros(L)
    h[:k] = steps
    status = np.full(L, -1, np.int32)
    function(state, proposed, error, np.zeros(0, precision), np.full(L, t0), h,
             np.zeros(L, np.int32), status, shared, persistent)
    out = dict(proposed=proposed.reshape(2, L)[:, :k], error=error.reshape(2, L)[:, :k],
               status=status, step=step, persistent=persistent, shared=shared, L=L)
    return out


def slopes(steps, errors):
    return np.diff(np.log(errors)) / np.diff(np.log(steps))


STEPS = np.array([0.2, 0.1, 0.05, 0.025, 0.0125])


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_local_error_orders(method):
    """Local error of the solution ~ h^(p+1); of the estimate ~ h^(q+1), q the
    pair's lower order."""
    t = get_tableau(method)
    t0 = 0.3
    result = one_step(method, t0, STEPS)
    np.testing.assert_array_equal(result["status"][: len(STEPS)], 0)
    truth = np.stack([exact(t0 + h) for h in STEPS], axis=1)
    solution = np.abs(result["proposed"] - truth).max(axis=0)
    estimate = np.abs(result["error"]).max(axis=0)
    # the last slope, between h = 0.025 and 0.0125 (Rodas5P's approach 6 from
    # below: 4.6, 5.5, 5.7, 5.9)
    assert t.order + 1 - 0.4 < slopes(STEPS, solution)[-1] < t.order + 1 + 0.6, solution
    q = t.error_order
    assert abs(slopes(STEPS, estimate)[-1] - (q + 1)) < 0.4, estimate


@pytest.mark.parametrize("method", [m for m in sorted(EXPECTED) if EXPECTED[m][3]])
def test_continuous_extension_order(method):
    """y(t0 + h/2) from the interpolant: error ~ h^(dense order + 1)."""
    t = get_tableau(method)
    t0 = 0.3
    result = one_step(method, t0, STEPS, dense=True)
    step, L = result["step"], result["L"]
    interpolate = step.interpolate_function
    registry = step.registry
    layout = registry.layout(step, "cpu")
    slot = layout["dense_stages"]
    region = result["persistent"] if slot.region == "persistent" else result["shared"]
    dense = region[slot.offset * L: (slot.offset + slot.size) * L]
    errors = []
    for j, h in enumerate(STEPS):
        out = np.zeros(2 * L)
        interpolate(dense, h, 0.5, out, j)
        errors.append(np.abs(out.reshape(2, L)[:, j] - exact(t0 + h / 2)).max())
    assert slopes(STEPS, np.array(errors))[-1] > t.interpolation_order + 1 - 0.4, errors
    # and the interpolant ends at the step's solution
    end = np.zeros(2 * L)
    interpolate(dense, STEPS[0], 1.0, end, 0)
    np.testing.assert_allclose(end.reshape(2, L)[:, 0], result["proposed"][:, 0], rtol=1e-13)


def test_float32_steps_stay_accurate_to_float32():
    result = one_step("rodas4", 0.3, [0.05], precision=np.float32)
    assert result["proposed"].dtype == np.float32
    np.testing.assert_allclose(result["proposed"][:, 0], exact(0.35), rtol=2e-6)


def test_a_singular_matrix_fails_the_attempt():
    """dx = k x with h = 1 / (gamma k): W = I / (h gamma) - J is exactly zero."""
    system = ODESystem(["dx = 4.0*x"], states={"x": 1.0}, name="singular")
    tableau = get_tableau("rodas4")  # gamma = 1/4: h = 1 makes W zero
    registry = BufferRegistry()
    step = make_step(tableau, system, registry, np.float64)
    L = targets.get_target("cpu").lanes(np.float64)
    state, proposed, error = np.ones(L), np.zeros(L), np.zeros(L)
    h = np.full(L, 0.5)
    h[0] = 1.0
    status = np.full(L, -1, np.int32)
    step.device_function(
        state, proposed, error, np.zeros(0), np.zeros(L), h, np.zeros(L, np.int32), status,
        np.zeros(registry.shared_buffer_size(step) * L),
        np.zeros(registry.persistent_region_size(step, "cpu") * L))
    assert status[0] == int(RunStatus.LINEAR_SOLVER_FAILED)
    assert np.isnan(error[0]) and proposed[0] == 1.0
    np.testing.assert_array_equal(status[1:], 0)
    assert np.all(np.isfinite(error[1:]))


def test_a_run_stopped_by_failed_solves_says_why():
    """dx = sqrt(x) from x = 0: the Jacobian 1 / (2 sqrt x) is infinite, every
    attempt fails, the step shrinks to dt_min; the status names both causes."""
    system = ODESystem(["dx = sqrt(x) - 1.0"], states={"x": 0.0}, name="infinite_jacobian")
    solver = Solver(system, method="rodas4", rtol=1e-6, atol=1e-8, dt0=1e-3,
                    output={"final_state": True, "states": [], "observables": []})
    result = solver.solve(duration=1.0)
    status = int(result.status.values[0])
    assert status == int(RunStatus.STEP_SIZE_TOO_SMALL | RunStatus.LINEAR_SOLVER_FAILED)
    assert int(result.n_steps.values[0]) == 0
    assert np.isnan(result.x_final.values[0])


def test_registry_sees_the_n_squared_buffers():
    """jacobian and lu are n^2 each, and movable with location keys."""
    system = ODESystem(["dx = -x + y", "dy = x - 2*y", "dz = z*x"],
                       states={"x": 1.0, "y": 0.0, "z": 1.0}, name="three")
    registry = BufferRegistry()
    step = make_step(get_tableau("rodas5p"), system, registry, np.float64)
    buffers = registry.buffers(step)
    assert buffers["jacobian"].size == 9 and buffers["lu"].size == 9
    assert buffers["pivots"].size == 3 and buffers["stages"].size == 8 * 3
    assert buffers["time_derivative"].size == 0  # autonomous: no df/dt
    assert {"jacobian_location", "lu_location", "stages_location"} <= registry.location_keys(step)
    non_autonomous = make_step(get_tableau("rodas5p"), CLOSED_FORM, BufferRegistry(), np.float64)
    assert non_autonomous.registry.buffers(non_autonomous)["time_derivative"].size == 2
