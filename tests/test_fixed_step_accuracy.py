"""Fixed-step accuracy of the cpu target against independent references.

References are closed forms (decay, harmonic oscillator, y' = cos t, and
y' = y**2, which also measures Euler's order), the exact stability
polynomial of classical RK4 applied to linear systems, and scipy's DOP853 at
rtol = atol = 1e-12 (Lorenz). Nothing here compares against numbers the
library printed.

Every distinct solver configuration costs one numba compile (~2-4 s), so
solvers are built once per module through ``_solver`` (cached) and reused.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp as scipy_solve_ivp

import cubie_kernel
from cubie_kernel import ODESystem, RunFailedError, RunStatus, Solver
from cubie_kernel.batch_kernel import DEVICE_MEMORY_FRACTION
from cubie_kernel.systems import exponential_decay, harmonic_oscillator, lorenz

TARGET = "cpu"

K_VALUES = np.array([0.1, 0.35, 0.7, 1.0, 1.6, 2.5, 3.3, 5.0])  # 8 decay rates
RK4_ORDER_DTS = (0.1, 0.05, 0.025)
EULER_ORDER_DTS = (0.02, 0.01, 0.005)


# --------------------------------------------------------------------------- systems
def cosine_forcing() -> ODESystem:
    """y' = cos(t): y(t) = y(t0) + sin(t) - sin(t0), time-dependent."""
    return ODESystem(["dy = cos(t)"], states={"y": 0.0}, name="cosine_forcing")


def riccati_blowup() -> ODESystem:
    """y' = y**2: y(t) = y0 / (1 - y0 t), singular at t = 1/y0 for y0 > 0."""
    return ODESystem(["dy = y**2"], states={"y": 1.0}, name="riccati_blowup")


_SYSTEMS = {
    "decay": exponential_decay,
    "harmonic": harmonic_oscillator,
    "lorenz": lorenz,
    "cosine": cosine_forcing,
    "riccati": riccati_blowup,
}


@functools.lru_cache(maxsize=None)
def _solver(system: str, method: str, dt: float, save_every, precision: str = "float64") -> Solver:
    """One Solver per configuration for the whole module (compiled on first solve)."""
    return Solver(
        _SYSTEMS[system](),
        method=method,
        dt=dt,
        save_every=save_every,
        target=TARGET,
        precision=precision,
    )


# ------------------------------------------------------------------------ references
def rk4_amplification(z):
    """Stability polynomial of classical RK4, R(z) = sum_{j<=4} z^j / j!."""
    return 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24


def rk4_matrix(a: np.ndarray) -> np.ndarray:
    """RK4's one-step propagator for y' = A y with step already folded in (a = h A)."""
    eye = np.eye(a.shape[0])
    a2 = a @ a
    a3 = a2 @ a
    a4 = a3 @ a
    return eye + a + a2 / 2 + a3 / 6 + a4 / 24


def oscillator_exact(x0, v0, omega, t):
    x = x0 * np.cos(omega * t) + v0 / omega * np.sin(omega * t)
    v = -x0 * omega * np.sin(omega * t) + v0 * np.cos(omega * t)
    return x, v


def lorenz_reference(rho: np.ndarray, t_end: float, sigma=10.0, beta=8.0 / 3.0):
    """All runs as one vectorised DOP853 solve at rtol = atol = 1e-12."""
    n = rho.size

    def rhs(_t, u):
        x, y, z = u[:n], u[n : 2 * n], u[2 * n :]
        return np.concatenate([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])

    u0 = np.concatenate([np.ones(n), np.zeros(n), np.zeros(n)])
    sol = scipy_solve_ivp(rhs, (0.0, t_end), u0, method="DOP853", rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return sol.y[:, -1].reshape(3, n)


# ------------------------------------------------------------ exponential decay sweep
def test_decay_sweep_matches_closed_form_at_every_save_time():
    solver = _solver("decay", "rk4", 0.01, 0.1)
    y0 = np.array([1.0, 2.5])
    ds = solver.solve({"y": y0}, {"k": K_VALUES}, duration=2.0)
    assert ds.sizes == {"run": 16, "time": 21}
    np.testing.assert_allclose(ds.time.values, np.linspace(0.0, 2.0, 21), rtol=0, atol=1e-12)
    t = ds.time.values[None, :]
    y0_run = ds["initial_y"].values[:, None]
    k_run = ds["k"].values[:, None]
    # coordinates are what we asked for (y0 outer, k inner)
    np.testing.assert_array_equal(ds["initial_y"].values, np.repeat(y0, K_VALUES.size))
    np.testing.assert_array_equal(ds["k"].values, np.tile(K_VALUES, y0.size))
    exact = y0_run * np.exp(-k_run * t)
    # RK4 global error for k*dt <= 0.05 over 2 time units is ~1e-7 relative
    np.testing.assert_allclose(ds["y"].values, exact, rtol=2e-6, atol=0)
    # and exactly RK4: y_n = y0 * R(-k dt)^n with n = t/dt steps
    n_steps = np.rint(t / 0.01)
    rk4 = y0_run * rk4_amplification(-k_run * 0.01) ** n_steps
    np.testing.assert_allclose(ds["y"].values, rk4, rtol=1e-11, atol=0)
    assert np.all(ds["status"].values == 0)


# ----------------------------------------------------------------- harmonic oscillator
def test_harmonic_oscillator_matches_closed_form():
    solver = _solver("harmonic", "rk4", 0.025, 0.5)
    omegas = np.array([0.5, 1.0, 2.0, 3.0])
    x0s = np.array([1.0, -0.5])
    v0s = np.array([0.0, 0.7])
    ds = solver.solve({"x": x0s, "v": v0s}, {"omega": omegas}, duration=2.0)
    t = ds.time.values[None, :]
    x0 = ds["initial_x"].values[:, None]
    v0 = ds["initial_v"].values[:, None]
    om = ds["omega"].values[:, None]
    x_exact, v_exact = oscillator_exact(x0, v0, om, t)
    np.testing.assert_allclose(ds["x"].values, x_exact, rtol=0, atol=2e-6)
    np.testing.assert_allclose(ds["v"].values, v_exact, rtol=0, atol=5e-6)
    # tight check: the saved states are exactly the RK4 propagator's powers
    for run in range(ds.sizes["run"]):
        step = rk4_matrix(0.025 * np.array([[0.0, 1.0], [-om[run, 0] ** 2, 0.0]]))
        u = np.array([x0[run, 0], v0[run, 0]])
        per_save = np.linalg.matrix_power(step, 20)  # 0.5 / 0.025 steps per save
        for i in range(ds.sizes["time"]):
            np.testing.assert_allclose(
                [ds["x"].values[run, i], ds["v"].values[run, i]], u, rtol=0, atol=1e-12
            )
            u = per_save @ u


def _fitted_order(dts, errors) -> float:
    slope, _ = np.polyfit(np.log(dts), np.log(errors), 1)
    return float(slope)


# Compile budget: dt is compiled in, so the order tests below take their step
# sizes from a symmetry of the problem instead of one kernel per step size
# (as test_adaptive.py does). Each kernel steps at the finest step; a run whose
# problem is sped up by a power of two k integrates the original problem at k
# times that step, stage for stage.
def _time_scales(dts) -> np.ndarray:
    """k = dt / dts[-1] for each step size (powers of two here)."""
    scales = np.array([4.0, 2.0, 1.0])
    np.testing.assert_allclose(scales * dts[-1], dts, rtol=1e-12)
    return scales


def _unit_oscillator_errors() -> list[float]:
    """RK4's error on the unit oscillator (x0 = 1, v0 = 0) at t = 2 for RK4_ORDER_DTS.

    omega = k at step dt is the unit oscillator in tau = k t at step k dt, in the
    variables (x, v / k): the runs omega = 4, 2, 1 read at t = 2 / omega.
    """
    scales = _time_scales(RK4_ORDER_DTS)
    ds = _solver("harmonic", "rk4", RK4_ORDER_DTS[-1], 0.5).solve(
        {"x": 1.0, "v": 0.0}, {"omega": scales}, duration=2.0)
    x_exact, v_exact = oscillator_exact(1.0, 0.0, 1.0, 2.0)
    errors = []
    for run, k in enumerate(scales):
        i = int(np.argmin(np.abs(ds.time.values - 2.0 / k)))
        assert ds.time.values[i] == pytest.approx(2.0 / k, abs=1e-12)
        x, u = ds["x"].values[run, i], ds["v"].values[run, i] / k
        errors.append(float(np.hypot(x - x_exact, u - v_exact)))
    return errors


def test_rk4_converges_with_order_four():
    errors = _unit_oscillator_errors()
    assert all(e > 1e-13 for e in errors), errors  # well above round-off
    for coarse, fine in zip(errors, errors[1:]):
        assert 16 * 0.85 <= coarse / fine <= 16 * 1.15, errors
    assert _fitted_order(RK4_ORDER_DTS, errors) == pytest.approx(4.0, abs=0.15)


def test_euler_converges_with_order_one():
    """Euler on y' = y**2 from y0 = -1: y(T) = -1 / (1 + T), at T = 2, steps EULER_ORDER_DTS.

    z(t) = k y(k t) solves the same equation from z0 = -k, and Euler at step dt on
    z is exactly (k a power of two) k times Euler at step k dt on y: the runs
    z0 = -4, -2, -1 read at t = 2 / k, divided by k.
    """
    scales = _time_scales(EULER_ORDER_DTS)
    ds = _solver("riccati", "euler", EULER_ORDER_DTS[-1], 0.5).solve({"y": -scales},
                                                                      duration=2.0)
    errors = []
    for run, k in enumerate(scales):
        i = int(np.argmin(np.abs(ds.time.values - 2.0 / k)))
        assert ds.time.values[i] == pytest.approx(2.0 / k, abs=1e-12)
        errors.append(abs(float(ds["y"].values[run, i]) / k - (-1.0 / 3.0)))
    for coarse, fine in zip(errors, errors[1:]):
        assert 2 * 0.9 <= coarse / fine <= 2 * 1.1, errors
    assert _fitted_order(EULER_ORDER_DTS, errors) == pytest.approx(1.0, abs=0.1)


# ------------------------------------------------------------------------------ Lorenz
def test_lorenz_64_runs_match_dop853():
    solver = _solver("lorenz", "rk4", 1e-4, None)
    rho = np.linspace(0.0, 30.0, 64)
    ds = solver.solve(
        {"x": 1.0, "y": 0.0, "z": 0.0},
        {"sigma": 10.0, "rho": rho, "beta": 8.0 / 3.0},
        duration=1.0,
    )
    assert ds.sizes == {"run": 64, "time": 1}
    assert ds.time.values[-1] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(ds["rho"].values, rho)
    ref = lorenz_reference(rho, 1.0)
    got = np.stack([ds[name].values[:, -1] for name in ("x", "y", "z")])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    # relative to the size of each run's state vector as well
    rel = np.linalg.norm(got - ref, axis=0) / np.linalg.norm(ref, axis=0)
    assert rel.max() < 1e-9
    assert np.all(ds["status"].values == 0)


# ---------------------------------------------------------------------- save semantics
def test_save_every_times_start_after_warmup_and_values_match():
    solver = _solver("decay", "rk4", 0.01, 0.1)
    t0, warmup = 0.2, 0.3
    ds = solver.solve({"y": 1.0}, {"k": [0.5, 2.0]}, duration=1.0, t0=t0, warmup=warmup)
    expected = t0 + warmup + 0.1 * np.arange(11)
    assert ds.sizes["time"] == 11
    np.testing.assert_allclose(ds.time.values, expected, rtol=0, atol=1e-12)
    k = ds["k"].values[:, None]
    exact = np.exp(-k * (ds.time.values[None, :] - t0))
    np.testing.assert_allclose(ds["y"].values, exact, rtol=1e-6)


def test_partial_final_interval_is_saved():
    solver = _solver("decay", "rk4", 0.01, 0.1)
    ds = solver.solve({"y": 1.0}, {"k": K_VALUES}, duration=1.05)
    expected = np.append(0.1 * np.arange(11), 1.05)
    assert ds.sizes["time"] == 12
    np.testing.assert_allclose(ds.time.values, expected, rtol=0, atol=1e-12)
    k = ds["k"].values
    np.testing.assert_allclose(ds["y"].values[:, -1], np.exp(-k * 1.05), rtol=2e-6)
    # the last interval is 5 steps of dt, not a full save interval
    np.testing.assert_allclose(
        ds["y"].values[:, -1], rk4_amplification(-k * 0.01) ** 105, rtol=1e-11
    )
    np.testing.assert_array_equal(ds["n_steps"].values, 105)


def test_duration_shorter_than_save_every():
    solver = _solver("decay", "rk4", 0.01, 0.1)
    ds = solver.solve({"y": 1.0}, {"k": 1.0}, duration=0.05)
    np.testing.assert_allclose(ds.time.values, [0.0, 0.05], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds["y"].values[0], [1.0, math.exp(-0.05)], rtol=1e-10)


def test_save_every_none_saves_only_the_final_state():
    """Lorenz with rho = 0 from y = z = 0 is pure decay: x = x0 exp(-sigma t)."""
    solver = _solver("lorenz", "rk4", 1e-4, None)
    sigma = np.array([0.5, 2.0, 10.0])
    ds = solver.solve(
        {"x": [1.0, -3.0], "y": 0.0, "z": 0.0}, {"sigma": sigma, "rho": 0.0},
        duration=0.3, t0=0.4, warmup=0.2,
    )
    assert ds.sizes == {"run": 6, "time": 1}
    assert ds.time.values[0] == pytest.approx(0.4 + 0.2 + 0.3, abs=1e-12)
    x0 = ds["initial_x"].values
    exact = x0 * np.exp(-ds["sigma"].values * (0.2 + 0.3))
    np.testing.assert_allclose(ds["x"].values[:, 0], exact, rtol=1e-11)
    np.testing.assert_array_equal(ds["y"].values, 0.0)
    np.testing.assert_array_equal(ds["z"].values, 0.0)
    np.testing.assert_array_equal(ds["n_steps"].values, 5000)


@pytest.mark.parametrize("t0", [2.0, -1.3])
def test_nonzero_t0_with_time_dependent_system(t0):
    solver = _solver("cosine", "rk4", 0.01, 0.1)
    y0 = np.array([0.0, 1.5])
    ds = solver.solve({"y": y0}, duration=3.0, t0=t0)
    t = ds.time.values
    np.testing.assert_allclose(t, t0 + 0.1 * np.arange(31), rtol=0, atol=1e-12)
    exact = y0[:, None] + np.sin(t)[None, :] - math.sin(t0)
    # RK4 on a pure quadrature is Simpson's rule: error ~ dt^4 / 2880
    np.testing.assert_allclose(ds["y"].values, exact, rtol=0, atol=1e-10)


def test_warmup_equals_solve_started_after_warmup_decay():
    solver = _solver("decay", "rk4", 0.01, 0.1)
    w = 0.35
    k = np.array([0.5, 1.0, 3.0])
    warm = solver.solve({"y": 1.0}, {"k": k}, duration=1.0, t0=0.0, warmup=w)
    np.testing.assert_allclose(warm.time.values, w + 0.1 * np.arange(11), rtol=0, atol=1e-12)
    first = warm["y"].values[:, 0]
    # the first save is the state at t0 + w, not the initial value
    np.testing.assert_allclose(first, np.exp(-k * w), rtol=1e-8)
    assert np.all(np.abs(first - 1.0) > 0.1)
    # the same as starting at t0 + w from the closed-form state there
    cold = solver.solve({"y": np.exp(-k * w)}, {"k": k}, grid="verbatim", duration=1.0, t0=w)
    np.testing.assert_allclose(cold.time.values, warm.time.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(warm["y"].values, cold["y"].values, rtol=1e-7)
    # ... and, started from the RK4 state reached after the 35 warm-up steps,
    # identical to round-off
    reached = rk4_amplification(-k * 0.01) ** 35
    cold_rk4 = solver.solve({"y": reached}, {"k": k}, grid="verbatim", duration=1.0, t0=w)
    np.testing.assert_allclose(warm["y"].values, cold_rk4["y"].values, rtol=1e-12)
    np.testing.assert_array_equal(warm["n_steps"].values, 135)


def test_warmup_with_t0_time_dependent_system():
    solver = _solver("cosine", "rk4", 0.01, 0.1)
    t0, w = 2.0, 0.5
    y0 = np.array([0.0, 1.5])
    warm = solver.solve({"y": y0}, duration=1.0, t0=t0, warmup=w)
    t = warm.time.values
    np.testing.assert_allclose(t, t0 + w + 0.1 * np.arange(11), rtol=0, atol=1e-12)
    exact = y0[:, None] + np.sin(t)[None, :] - math.sin(t0)
    np.testing.assert_allclose(warm["y"].values, exact, rtol=0, atol=1e-10)
    first = warm["y"].values[:, 0]
    assert np.all(np.abs(first - y0) > 0.1)  # sin(2.5) - sin(2.0) = -0.31
    cold = solver.solve({"y": y0 + math.sin(t0 + w) - math.sin(t0)}, duration=1.0, t0=t0 + w)
    np.testing.assert_allclose(warm["y"].values, cold["y"].values, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ combinatorial grid
def test_combinatorial_grid_order_and_per_run_equality():
    solver = _solver("lorenz", "rk4", 1e-4, None)
    # deliberately not the system's state order: order given is z, x
    z0 = [0.0, 1.0]
    x0 = [1.0, 2.0]
    rho = [10.0, 28.0]
    beta = [2.0, 8.0 / 3.0, 3.0]
    ds = solver.solve({"z": z0, "x": x0}, {"rho": rho, "beta": beta}, duration=0.05)
    rows = list(itertools.product(z0, x0, rho, beta))  # last name fastest
    assert ds.sizes["run"] == len(rows) == 24
    for name, column in zip(("initial_z", "initial_x", "rho", "beta"), zip(*rows)):
        assert ds[name].dims == ("run",)
        np.testing.assert_array_equal(ds[name].values, column)
    assert "initial_y" not in ds.coords and "sigma" not in ds.coords
    for run, (z, x, r, b) in enumerate(rows):
        single = solver.solve({"x": x, "z": z}, {"rho": r, "beta": b}, duration=0.05)
        assert single.sizes["run"] == 1
        for var in ("x", "y", "z"):
            np.testing.assert_array_equal(ds[var].values[run], single[var].values[0])
    # and one spot check against an independent integrator
    ref = lorenz_reference(np.array([28.0]), 0.05, beta=8.0 / 3.0)
    run = rows.index((0.0, 1.0, 28.0, 8.0 / 3.0))
    got = [ds[v].values[run, -1] for v in ("x", "y", "z")]
    np.testing.assert_allclose(got, ref[:, 0], rtol=1e-9, atol=1e-12)


def test_verbatim_grid_pairs_columns():
    solver = _solver("lorenz", "rk4", 1e-4, None)
    x0 = [1.0, 2.0, 3.0]
    rho = [10.0, 20.0, 28.0]
    ds = solver.solve(
        {"x": x0, "z": [0.5]}, {"rho": rho, "beta": 2.5}, grid="verbatim", duration=0.05
    )
    assert ds.sizes["run"] == 3
    np.testing.assert_array_equal(ds["initial_x"].values, x0)
    np.testing.assert_array_equal(ds["rho"].values, rho)
    np.testing.assert_array_equal(ds["initial_z"].values, [0.5] * 3)
    np.testing.assert_array_equal(ds["beta"].values, [2.5] * 3)
    for run in range(3):
        single = solver.solve(
            {"x": x0[run], "z": 0.5}, {"rho": rho[run], "beta": 2.5}, duration=0.05
        )
        for var in ("x", "y", "z"):
            np.testing.assert_array_equal(ds[var].values[run], single[var].values[0])


# --------------------------------------------------------------------------- chunking
def test_memory_budget_chunks_give_identical_numbers():
    solver = _solver("harmonic", "rk4", 0.025, 0.5)
    inputs = ({"x": np.linspace(-1, 1, 37)}, {"omega": np.linspace(0.5, 3.0, 37)})
    duration = 2.0
    whole = solver.solve(*inputs, grid="verbatim", duration=duration)
    assert whole.attrs["device_chunks"] == 1
    per_run = solver.kernel.per_run_device_bytes(duration)
    memory = math.ceil(5.5 * per_run / DEVICE_MEMORY_FRACTION)  # room for 5 runs
    chunked = solver.solve(*inputs, grid="verbatim", duration=duration, memory_bytes=memory)
    assert chunked.attrs["device_chunks"] > 1
    assert chunked.attrs["device_chunks"] == math.ceil(37 / 5)
    for var in ("x", "v", "energy", "status", "n_steps", "n_rejected"):
        np.testing.assert_array_equal(chunked[var].values, whole[var].values, err_msg=var)
    # and the numbers are right, not just consistent
    x_exact, _ = oscillator_exact(
        chunked["initial_x"].values[:, None], 0.0, chunked["omega"].values[:, None],
        chunked.time.values[None, :],
    )
    np.testing.assert_allclose(chunked["x"].values, x_exact, rtol=0, atol=2e-6)


def test_memory_budget_below_one_run_raises_memory_error():
    solver = _solver("harmonic", "rk4", 0.025, 0.5)
    with pytest.raises(MemoryError):
        solver.solve({"x": [1.0, 2.0]}, duration=2.0, memory_bytes=8)


# ---------------------------------------------------------------------------- float32
def test_float32_decay_on_cpu():
    s32 = _solver("decay", "rk4", 0.01, 0.1, "float32")
    s64 = _solver("decay", "rk4", 0.01, 0.1, "float64")
    inputs = ({"y": [1.0, 2.5]}, {"k": K_VALUES})
    d32 = s32.solve(*inputs, duration=2.0)
    d64 = s64.solve(*inputs, duration=2.0)
    assert d32["y"].dtype == np.float32
    assert d32["y"].values.dtype == np.float32
    assert d32.attrs["precision"] == "float32"
    assert d32["status"].dtype == np.int32
    np.testing.assert_allclose(d32["y"].values, d64["y"].values, rtol=1e-4)
    exact = d32["initial_y"].values[:, None] * np.exp(
        -d32["k"].values[:, None] * d32.time.values[None, :]
    )
    np.testing.assert_allclose(d32["y"].values, exact, rtol=1e-4)
    # really computed in float32: not just the float64 result rounded
    assert not np.array_equal(d32["y"].values, d64["y"].values.astype(np.float32))


# --------------------------------------------------------------------- failing runs
def test_blow_up_is_flagged_and_other_runs_are_correct():
    """y' = y**2 from y0 = 1 is singular at t = 1; y0 = -1 and 0.1 are not.

    Euler at dt = 0.005 (the order test's solver, no extra compile): its
    discrete solution overflows a little after t = 1.
    """
    dt = EULER_ORDER_DTS[-1]
    solver = _solver("riccati", "euler", dt, 0.5)
    y0 = np.array([-1.0, 1.0, 0.1])
    ds = solver.solve({"y": y0}, duration=2.0)
    status = ds["status"].values
    assert status[1] == int(RunStatus.NONFINITE_STATE)
    assert status[0] == 0 and status[2] == 0
    t = ds.time.values
    np.testing.assert_allclose(t, 0.5 * np.arange(5), rtol=0, atol=1e-12)
    for run in (0, 2):
        exact = y0[run] / (1.0 - y0[run] * t)
        np.testing.assert_allclose(ds["y"].values[run], exact, rtol=2e-3)  # Euler: O(dt)
    blown = ds["y"].values[1]
    nan = np.isnan(blown)
    first_nan = int(np.argmax(nan))
    assert nan.any()
    # finite up to the failure, NaN from the first save after it to the end
    assert np.all(np.isfinite(blown[:first_nan]))
    assert np.all(nan[first_nan:])
    assert 1.0 - 1e-9 <= t[first_nan] <= 1.5 + 1e-9
    # before the singularity the run followed the solution (Euler lags a little)
    early = t <= 0.5 + 1e-12
    np.testing.assert_allclose(blown[early], 1.0 / (1.0 - t[early]), rtol=2e-2)
    # the failed run stopped stepping
    assert ds["n_steps"].values[1] < ds["n_steps"].values[0] == round(2.0 / dt)

    with pytest.raises(RunFailedError, match=r"\b1 of 3 runs failed") as info:
        cubie_kernel.raise_on_failure(ds)
    assert "nonfinite_state" in str(info.value)

    clean = solver.solve({"y": [-1.0, 0.1]}, duration=2.0)
    assert np.all(clean["status"].values == 0)
    cubie_kernel.raise_on_failure(clean)  # does not raise


def test_blow_up_during_warmup_gives_nan_outputs():
    """Regression: a run whose state becomes non-finite during warm-up is
    flagged NONFINITE_STATE, and its first saved row (at t0 + warmup) must be
    NaN like every later one, not the non-finite state itself (ivp_loop once
    saved that row unconditionally, giving +inf here). Euler keeps an
    overflowed state at +inf; RK4 would produce NaN through 0 * inf in its
    stage sums and hide the problem.
    """
    solver = _solver("riccati", "euler", EULER_ORDER_DTS[-1], 0.5)
    ds = solver.solve({"y": [1.0, 0.1]}, duration=1.0, warmup=1.5)
    assert ds["status"].values[0] == int(RunStatus.NONFINITE_STATE)
    assert ds["status"].values[1] == 0
    t = ds.time.values
    np.testing.assert_allclose(t, [1.5, 2.0, 2.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds["y"].values[1], 0.1 / (1.0 - 0.1 * t), rtol=1e-3)
    # every save of the failed run comes after its failure: all NaN
    assert np.all(np.isnan(ds["y"].values[0])), ds["y"].values[0]
