"""Validation of Solver settings and solve() inputs: one test per rule.

Each test checks the error type AND that the message names the offending
field, so a user can tell what to fix. Invalid inputs must be rejected
before anything is compiled (checked through the numba dispatcher's
signatures).
The last tests check that the accepted input forms (lists, arrays,
scalars, precision names) really run.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from cubie_kernel import Solver, solve_ivp
from cubie_kernel.algorithms.tableaus import get_tableau, method_names
from cubie_kernel.systems import exponential_decay, harmonic_oscillator, lorenz

TARGET = "cpu"


@pytest.fixture(scope="module")
def decay_solver():
    """Compiled once, on first successful solve."""
    return Solver(exponential_decay(), method="rk4", dt=0.01, save_every=0.1, target=TARGET)


@pytest.fixture
def lazy_solver():
    """A fresh, never-compiled solver: invalid solves must leave it uncompiled."""
    solver = Solver(lorenz(), method="rk4", dt=0.01, save_every=0.1, target=TARGET)
    yield solver
    # numba compiles lazily, on the first call: no signature means no compile
    assert solver.kernel.device_function.signatures == [], "an invalid solve compiled"


def _solve_error(solver, exc_type, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        solver.solve(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------- initial values
def test_unknown_state_name(lazy_solver):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0, "w": [1.0, 2.0]}, duration=1.0)
    assert "initial_values" in msg
    assert "'w'" in msg
    # it lists the valid names
    assert all(name in msg for name in ("x", "y", "z"))


def test_unknown_parameter_name(lazy_solver):
    msg = _solve_error(lazy_solver, ValueError, None, {"rho": 28.0, "gamma": 2.0}, duration=1.0)
    assert "parameters" in msg
    assert "'gamma'" in msg
    assert all(name in msg for name in ("sigma", "rho", "beta"))


def test_state_name_given_as_parameter_is_unknown(lazy_solver):
    msg = _solve_error(lazy_solver, ValueError, None, {"x": 1.0}, duration=1.0)
    assert "parameters" in msg and "'x'" in msg


@pytest.mark.parametrize("where", ["initial_values", "parameters"])
def test_non_1d_array(lazy_solver, where):
    value = np.ones((2, 3))
    args = ({"x": value}, None) if where == "initial_values" else (None, {"rho": value})
    msg = _solve_error(lazy_solver, ValueError, *args, duration=1.0)
    assert where in msg
    assert ("'x'" if where == "initial_values" else "'rho'") in msg
    assert "(2, 3)" in msg


def test_ragged_verbatim_arrays_name_lengths(lazy_solver):
    msg = _solve_error(
        lazy_solver, ValueError,
        {"x": [1.0, 2.0, 3.0]}, {"rho": [10.0, 20.0]},
        grid="verbatim", duration=1.0,
    )
    assert "'x'" in msg and "'rho'" in msg
    assert re.search(r"'x'\D*3\b", msg), msg
    assert re.search(r"'rho'\D*2\b", msg), msg


def test_ragged_arrays_are_fine_for_combinatorial(decay_solver):
    ds = decay_solver.solve({"y": [1.0, 2.0, 3.0]}, {"k": [1.0, 2.0]}, duration=0.2)
    assert ds.sizes["run"] == 6


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", ["scalar", "array"])
def test_non_finite_values(lazy_solver, bad, shape):
    value = bad if shape == "scalar" else [1.0, bad, 2.0]
    msg = _solve_error(lazy_solver, ValueError, {"y": value}, duration=1.0)
    assert "initial_values" in msg and "'y'" in msg
    assert "finite" in msg
    msg = _solve_error(lazy_solver, ValueError, None, {"beta": value}, duration=1.0)
    assert "parameters" in msg and "'beta'" in msg


@pytest.mark.parametrize("empty", [[], np.array([])])
def test_empty_array(lazy_solver, empty):
    msg = _solve_error(lazy_solver, ValueError, {"z": empty}, duration=1.0)
    assert "initial_values" in msg and "'z'" in msg and "empty" in msg
    msg = _solve_error(lazy_solver, ValueError, None, {"sigma": empty}, duration=1.0)
    assert "parameters" in msg and "'sigma'" in msg and "empty" in msg


def test_non_numeric_values(lazy_solver):
    msg = _solve_error(lazy_solver, ValueError, {"x": ["a", "b"]}, duration=1.0)
    assert "initial_values" in msg and "'x'" in msg


def test_inputs_not_a_mapping(lazy_solver):
    msg = _solve_error(lazy_solver, TypeError, [1.0, 0.0, 0.0], duration=1.0)
    assert "initial_values" in msg
    msg = _solve_error(lazy_solver, TypeError, None, [10.0, 28.0, 2.0], duration=1.0)
    assert "parameters" in msg


# -------------------------------------------------------------------- times
@pytest.mark.parametrize("duration", [0.0, -1.0])
def test_duration_not_positive(lazy_solver, duration):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0}, duration=duration)
    assert "duration" in msg


@pytest.mark.parametrize("duration", [np.nan, np.inf, -np.inf])
def test_duration_not_finite(lazy_solver, duration):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0}, duration=duration)
    assert "duration" in msg


@pytest.mark.parametrize("duration", ["1.0", [1.0], True])
def test_duration_not_a_number(lazy_solver, duration):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0}, duration=duration)
    assert "duration" in msg


def test_duration_missing(lazy_solver):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0})
    assert "duration" in msg
    with pytest.raises(ValueError, match="duration"):
        solve_ivp(exponential_decay(), {"y": 1.0}, method="rk4", dt=0.1, target=TARGET)


@pytest.mark.parametrize("warmup", [-1e-9, -1.0])
def test_warmup_negative(lazy_solver, warmup):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0}, duration=1.0, warmup=warmup)
    assert "warmup" in msg


@pytest.mark.parametrize("warmup", [np.nan, np.inf])
def test_warmup_not_finite(lazy_solver, warmup):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0}, duration=1.0, warmup=warmup)
    assert "warmup" in msg


@pytest.mark.parametrize("t0", [np.nan, np.inf, "0"])
def test_t0_not_finite(lazy_solver, t0):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0}, duration=1.0, t0=t0)
    assert "t0" in msg


# ------------------------------------------------------------------ solver settings
def _solver_error(exc_type, **kwargs) -> str:
    settings = {"method": "rk4", "dt": 0.01, "save_every": 0.1, "target": TARGET}
    settings.update(kwargs)
    with pytest.raises(exc_type) as info:
        Solver(exponential_decay(), **settings)
    return str(info.value)


@pytest.mark.parametrize("dt", [0.0, -0.01])
def test_dt_not_positive(dt):
    assert "dt" in _solver_error(ValueError, dt=dt)


@pytest.mark.parametrize("dt", [np.nan, np.inf])
def test_dt_not_finite(dt):
    assert "dt" in _solver_error(ValueError, dt=dt)


def test_dt_missing():
    assert "dt" in _solver_error(ValueError, dt=None)


def test_dt_larger_than_save_every():
    msg = _solver_error(ValueError, dt=0.2, save_every=0.1)
    assert "dt" in msg and "save_every" in msg
    # equal is fine
    Solver(exponential_decay(), dt=0.1, save_every=0.1, target=TARGET)


@pytest.mark.parametrize("save_every", [0.0, -0.5])
def test_save_every_not_positive(save_every):
    assert "save_every" in _solver_error(ValueError, save_every=save_every)


@pytest.mark.parametrize("save_every", [np.nan, np.inf])
def test_save_every_not_finite(save_every):
    assert "save_every" in _solver_error(ValueError, save_every=save_every)


@pytest.mark.parametrize("method", ["rk5", "runge_kutta", ""])
def test_unknown_method_lists_accepted_names(method):
    msg = _solver_error(ValueError, method=method)
    assert repr(method) in msg
    for name in ("euler", "rk4", "dormand_prince_54", "rk45", "tsit5"):
        assert name in msg
    accepted = method_names()
    assert all(name in msg for name in accepted)
    for name in accepted:  # the listed names really are accepted
        get_tableau(name)


def test_method_names_are_case_insensitive():
    solver = Solver(exponential_decay(), method="RK4", dt=0.1, target=TARGET)
    assert get_tableau(solver.settings.method).name == "rk4"


@pytest.mark.parametrize("target", ["gpu", "CPU", "", "opencl"])
def test_unknown_target(target):
    msg = _solver_error(ValueError, target=target)
    assert "target" in msg
    assert "'cpu'" in msg and "'cuda'" in msg


@pytest.mark.parametrize(
    "precision", [np.float16, "float16", "int32", np.int32, int, np.complex128, "f2", "bogus"]
)
def test_precision_not_float32_or_float64(precision):
    msg = _solver_error(ValueError, precision=precision)
    assert "precision" in msg


def test_precision_none_is_rejected():
    """Regression: ``np.dtype(None)`` is float64, so check_precision once
    accepted ``precision=None`` silently as float64."""
    assert "precision" in _solver_error(ValueError, precision=None)


@pytest.mark.parametrize("grid", ["zip", "product", "Combinatorial", ""])
def test_unknown_grid(lazy_solver, grid):
    msg = _solve_error(lazy_solver, ValueError, {"x": 1.0}, duration=1.0, grid=grid)
    assert "grid" in msg
    assert "combinatorial" in msg and "verbatim" in msg


def test_unknown_keyword_setting():
    msg = _solver_error(ValueError, tolerance=1e-6)
    assert "tolerance" in msg
    with pytest.raises(ValueError, match="bogus_option"):
        solve_ivp(
            exponential_decay(), {"y": 1.0}, duration=1.0, method="rk4", dt=0.1, target=TARGET,
            bogus_option=1,
        )


def test_system_must_be_an_ode_system():
    with pytest.raises(TypeError, match="ODESystem"):
        Solver("lorenz", dt=0.1, target=TARGET)


# --------------------------------------------------------------- accepted forms
def test_lists_arrays_and_scalars_all_work(decay_solver):
    reference = None
    for y, k in [
        ([1.0, 2.0], [0.5, 3.0]),
        (np.array([1.0, 2.0]), np.array([0.5, 3.0])),
        ((1, 2), (0.5, 3)),  # ints in a tuple
        (np.array([1.0, 2.0], dtype=np.float32), np.array([0.5, 3.0], dtype=np.float32)),
    ]:
        ds = decay_solver.solve({"y": y}, {"k": k}, duration=1.0)
        assert ds.sizes["run"] == 4
        np.testing.assert_array_equal(ds["initial_y"].values, [1.0, 1.0, 2.0, 2.0])
        np.testing.assert_array_equal(ds["k"].values, [0.5, 3.0, 0.5, 3.0])
        exact = ds["initial_y"].values * np.exp(-ds["k"].values * 1.0)
        np.testing.assert_allclose(ds["y"].values[:, -1], exact, rtol=1e-6)
        if reference is None:
            reference = ds["y"].values
        np.testing.assert_array_equal(ds["y"].values, reference)

    # scalars of every kind: one run
    for y, k in [(2.0, 0.5), (2, 1), (np.float64(2.0), np.float32(0.5)), (np.array(2.0), [0.5])]:
        ds = decay_solver.solve({"y": y}, {"k": k}, duration=1.0)
        assert ds.sizes["run"] == 1
        expected = 2.0 * np.exp(-float(np.asarray(k).ravel()[0]))
        np.testing.assert_allclose(ds["y"].values[0, -1], expected, rtol=1e-6)

    # nothing given: the system's defaults (y0 = 1, k = 1), one run
    ds = decay_solver.solve(duration=1.0)
    assert ds.sizes["run"] == 1
    np.testing.assert_allclose(ds["y"].values[0, -1], np.exp(-1.0), rtol=1e-6)
    assert ds.attrs["parameter_k"] == 1.0


def test_numpy_scalar_settings_are_accepted():
    solver = Solver(
        harmonic_oscillator(), dt=np.float32(0.25), save_every=np.float64(0.5), target=TARGET
    )
    assert solver.settings.dt == 0.25 and solver.settings.save_every == 0.5


def test_solve_ivp_with_lists_and_precision_name():
    ds = solve_ivp(
        exponential_decay(), {"y": [1.0, 2.0]}, {"k": [0.5]}, 1.0, "rk4",
        dt=0.01, save_every=0.5, precision="float32", target=TARGET,
    )
    assert ds["y"].dtype == np.float32
    assert ds.attrs["precision"] == "float32"
    np.testing.assert_allclose(
        ds["y"].values[:, -1], [np.exp(-0.5), 2.0 * np.exp(-0.5)], rtol=1e-5
    )


@pytest.mark.parametrize("precision", ["float32", np.float32, np.dtype("float32"), "float64"])
def test_precision_names_and_types_normalise(precision):
    solver = Solver(exponential_decay(), dt=0.1, precision=precision, target=TARGET)
    assert solver.settings.precision is np.dtype(precision).type


def test_solve_ivp_defaults_to_dormand_prince_like_scipy():
    ds = solve_ivp(exponential_decay(), {"y": 1.0}, {"k": 2.0}, 1.0, rtol=1e-9, atol=1e-12,
                   target=TARGET)
    assert ds.attrs["method"] == "dormand_prince_54"
    np.testing.assert_allclose(ds["y"].values[0, -1], np.exp(-2.0), rtol=1e-7)
    with pytest.raises(ValueError, match="dt is the fixed step size.*dt0"):
        solve_ivp(exponential_decay(), {"y": 1.0}, duration=1.0, dt=0.1, target=TARGET)


def test_an_rtol_below_what_float32_resolves_warns_and_float64_does_not():
    import warnings

    from cubie_kernel import PrecisionWarning
    from cubie_kernel.systems import lorenz

    with pytest.warns(PrecisionWarning, match=r"rtol=1e-10 is below what float32 resolves"):
        Solver(lorenz(), method="rk45", rtol=1e-10, atol=1e-12, precision="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Solver(lorenz(), method="rk45", rtol=1e-10, atol=1e-12, precision="float64")
        Solver(lorenz(), method="rk45", rtol=1e-6, precision="float32")  # 8 eps = 9.5e-7
        Solver(lorenz(), method="rk4", dt=0.01, precision="float32")  # fixed: no rtol
    with pytest.warns(PrecisionWarning, match="float64 resolves"):
        Solver(lorenz(), method="rk45", rtol=1e-15, precision="float64")


def test_solve_ivp_takes_y0_as_a_sequence_like_scipy():
    from cubie_kernel.systems import harmonic_oscillator

    system = harmonic_oscillator()
    names = system.state_names
    by_name = solve_ivp(system, dict(zip(names, [0.5, -0.25])), duration=1.0, rtol=1e-8)
    by_order = solve_ivp(system, [0.5, -0.25], duration=1.0, rtol=1e-8)
    for name in names:
        np.testing.assert_array_equal(by_order[name].values, by_name[name].values)
    with pytest.raises(ValueError, match=r"y0 must be .* sequence of 2 values"):
        solve_ivp(system, [1.0, 2.0, 3.0], duration=1.0)


def test_a_stray_derivative_name_is_named():
    from cubie_kernel import ODESystem

    with pytest.raises(ValueError, match=r"'dq = -k\*y' assigns 'dq', but 'q' is not a state"):
        ODESystem(equations=["dq = -k*y"], states={"y": 1.0}, parameters={"k": 1.0})
