"""Declared outputs, dense-output saving and summary metrics (cpu target).

References are independent: numpy over the densely saved trajectory of the
same run (the metrics read exactly those samples), the right-hand side
written out here in numpy (derivative metrics), scipy's DOP853 at rtol 1e-12
(saved values), and the exact solution of a scalar ODE (interpolants).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp as scipy_solve_ivp

from cubie_kernel import Metric, ODESystem, Output, RunStatus, Solver
from cubie_kernel.algorithms.tableaus import get_tableau
from cubie_kernel.outputs.metrics import BUILTIN_METRICS, MetricResult
from cubie_kernel.systems import harmonic_oscillator, lorenz

ALL_METRICS = [
    "mean", "std", "rms", "max", "min", "max_magnitude", "time_of_max", "time_of_min",
    "peaks[3]", "negative_peaks[2]", "crossings", "dxdt_max", "dxdt_min",
]


def brusselator() -> ODESystem:
    """Hairer, Norsett & Wanner I, (16.12): the Brusselator with A = 1, B = 3.

    ``speed`` scales time: y' = speed * f(y) is the textbook problem at time
    speed * t (default 1: the problem itself, exactly).
    """
    return ODESystem(
        equations=["dy1 = speed*(1 + y1**2*y2 - (b + 1)*y1)", "dy2 = speed*(b*y1 - y1**2*y2)"],
        states={"y1": 1.5, "y2": 3.0},
        parameters={"b": 3.0, "speed": 1.0},
        observables=["product = y1*y2"],
        name="brusselator",
    )


def rigid_body() -> ODESystem:
    """DETEST B5 (Euler's equations of a rigid body without external forces).

    ``speed`` scales time as in :func:`brusselator`.
    """
    return ODESystem(
        equations=["dy1 = speed*y2*y3", "dy2 = -speed*y1*y3", "dy3 = -speed*c*y1*y2"],
        states={"y1": 0.0, "y2": 1.0, "y3": 1.0},
        parameters={"c": 0.51, "speed": 1.0},
        name="rigid_body",
    )


def brusselator_rhs(t, y, b=3.0):
    y1, y2 = y
    return [1 + y1**2 * y2 - (b + 1) * y1, b * y1 - y1**2 * y2]


def rigid_body_rhs(t, y, c=0.51):
    return [y[1] * y[2], -y[0] * y[2], -c * y[0] * y[1]]


def lorenz_rhs(y, sigma, rho, beta):
    x, yy, z = y
    return np.array([sigma * (yy - x), x * (rho - z) - yy, x * yy - beta * z])


# ------------------------------------------------------------ numpy references
def reference_metric(name, option, samples, times, derivative):
    """One window's results from its samples, as the metrics define them."""
    if name == "mean":
        return [samples.mean()]
    if name == "std":
        return [samples.std()]
    if name == "rms":
        return [math.sqrt(np.mean(samples**2))]
    if name == "max":
        return [samples.max()]
    if name == "min":
        return [samples.min()]
    if name == "max_magnitude":
        return [np.abs(samples).max()]
    if name == "time_of_max":
        return [times[np.argmax(samples)]]
    if name == "time_of_min":
        return [times[np.argmin(samples)]]
    if name in ("peaks", "negative_peaks"):
        sign = 1.0 if name == "peaks" else -1.0
        x = sign * samples
        found = [i for i in range(1, len(x) - 1) if x[i - 1] < x[i] >= x[i + 1]][:option]
        values = [samples[i] for i in found] + [np.nan] * (option - len(found))
        when = [times[i] for i in found] + [np.nan] * (option - len(found))
        return values + when
    if name == "crossings":
        return [float(np.sum((samples[:-1] < 0) & (samples[1:] >= 0)))]
    if name == "dxdt_max":
        return [derivative.max()]
    if name == "dxdt_min":
        return [derivative.min()]
    raise AssertionError(name)


def result_values(ds, variable, metric, option):
    """A metric's results for ``variable`` as (run, window, value) in finalise order."""
    spec = next(m for m in BUILTIN_METRICS if m.name == metric)
    parts = []
    for result in spec.results:
        values = ds[f"{variable}_{result.suffix}"].values
        parts.append(values if values.ndim == 3 else values[..., None])
    return np.concatenate(parts, axis=-1)


def check_against_numpy(ds, system, derivative_of, precision, per_window):
    """Every metric of every variable against numpy over the saved samples."""
    times = ds.time.values
    n = times.size
    m = per_window or n - 1
    n_windows = ds.sizes["window"]
    rtol = 2e-5 if precision == np.float32 else 1e-11
    for variable in list(system.state_names) + list(system.observable_names):
        series = ds[variable].values.astype(np.float64)
        is_state = variable in system.state_names
        for entry in ALL_METRICS:
            name, option = (entry.split("[")[0], int(entry[entry.index("[") + 1:-1])) if "[" in entry else (entry, 0)
            if name.startswith("dxdt") and not is_state:
                assert f"{variable}_{name}" not in ds
                continue
            got = result_values(ds, variable, name, option)
            for r in range(series.shape[0]):
                derivative = derivative_of(r, variable) if is_state else None
                for w in range(n_windows):
                    window = slice(w * m, min((w + 1) * m, n - 1) + 1)
                    expected = reference_metric(
                        name, option, series[r, window], times[window],
                        None if derivative is None else derivative[window],
                    )
                    scale = max(np.abs(series[r]).max(), 1.0)
                    if name in ("time_of_max", "time_of_min") or name.endswith("peaks"):
                        # the same sample must be found: compare exactly in times
                        np.testing.assert_allclose(
                            got[r, w], expected, rtol=rtol, atol=rtol * scale,
                            err_msg=f"{variable}_{entry} run {r} window {w}",
                        )
                    else:
                        np.testing.assert_allclose(
                            got[r, w], expected, rtol=rtol * 10, atol=rtol * scale * 10,
                            err_msg=f"{variable}_{entry} run {r} window {w}",
                        )


@pytest.mark.parametrize("precision", [np.float64, np.float32])
@pytest.mark.parametrize("per_window", [0, 25])
def test_every_metric_equals_numpy_over_the_saved_samples(precision, per_window):
    system = lorenz()
    save_every = 0.02
    output = Output(
        save_every=save_every, summaries=ALL_METRICS,
        summarise_every=None if per_window == 0 else per_window * save_every,
    )
    rho = np.array([14.0, 24.0, 28.0, 35.0])
    rtol = 1e-5 if precision == np.float32 else 1e-7
    solver = Solver(system, method="rk45", rtol=rtol, atol=rtol * 1e-2, target="cpu",
                    precision=precision, output=output)
    ds = solver.solve(parameters={"rho": rho}, duration=4.9, warmup=0.3)
    assert (ds.status.values == 0).all()
    assert ds.sizes["window"] == (1 if per_window == 0 else math.ceil(4.9 / 0.5))
    states = np.stack([ds[n].values for n in system.state_names], axis=1).astype(np.float64)

    def derivative_of(run, variable):
        k = system.state_names.index(variable)
        values = np.array([lorenz_rhs(y, 10.0, rho[run], 8.0 / 3.0) for y in states[run].T])
        return values[:, k].astype(precision).astype(np.float64)

    check_against_numpy(ds, system, derivative_of, precision, per_window)
    # windows: closed intervals of the saved time axis
    start, end = ds.window_start.values, ds.window_end.values
    assert start[0] == ds.time.values[0] and end[-1] == ds.time.values[-1]
    np.testing.assert_array_equal(start[1:], end[:-1])


@pytest.fixture(scope="module")
def harmonic_summaries():
    """(dataset, output) of the harmonic oscillator with built-in metrics and a user's
    one, in windows of 1.0: one kernel for the next two tests."""
    output = Output(save_every=0.05, summaries=["mean", "max", "time_of_max", "peaks[2]",
                                                "dxdt_max", SUM_OF_CUBES],
                    summarise_every=1.0)
    ds = Solver(harmonic_oscillator(), method="tsit5", rtol=1e-9, atol=1e-11, target="cpu",
                output=output).solve(parameters={"omega": [1.0, 2.0, 3.0]}, duration=3.0)
    return ds, output


def test_observable_metrics_and_attributes(harmonic_summaries):
    system = harmonic_oscillator()
    ds, output = harmonic_summaries
    check_against_numpy_subset(ds, system, output)
    assert "energy_dxdt_max" not in ds  # derivative metrics: states only
    assert ds.x_max.attrs["cell_methods"] == "time: maximum"
    assert ds.x_peaks.dims == ("run", "window", "peak")
    assert ds.x_peak_times.dims == ("run", "window", "peak")
    assert ds.energy_mean.attrs["long_name"].startswith("mean of")
    # the energy is conserved: its window mean is 0.5 omega^2 within the tolerance
    expected = np.repeat(0.5 * np.array([1.0, 4.0, 9.0])[:, None], ds.sizes["window"], axis=1)
    np.testing.assert_allclose(ds.energy_mean.values, expected, rtol=1e-7)


def check_against_numpy_subset(ds, system, output):
    times = ds.time.values
    m = output.samples_per_window
    for variable in ("x", "energy"):
        series = ds[variable].values
        for r in range(series.shape[0]):
            for w in range(ds.sizes["window"]):
                sl = slice(w * m, (w + 1) * m + 1)
                np.testing.assert_allclose(ds[f"{variable}_mean"].values[r, w], series[r, sl].mean(),
                                           rtol=1e-12, atol=1e-14)
                np.testing.assert_equal(ds[f"{variable}_time_of_max"].values[r, w],
                                        times[sl][np.argmax(series[r, sl])])


def test_a_user_metric_joins_the_built_in_ones(harmonic_summaries):
    """The sum of cubes, next to five built-in metrics, on a state and an observable,
    per window (closed intervals of the saved samples, as the built-in ones)."""
    ds, output = harmonic_summaries
    m = output.samples_per_window
    for variable in ("x", "energy"):
        series = ds[variable].values.astype(np.float64)
        for w in range(ds.sizes["window"]):
            cubes = series[:, w * m:(w + 1) * m + 1] ** 3
            # x**3 sums nearly cancel: the tolerance is relative to the terms
            np.testing.assert_allclose(ds[f"{variable}_cubes"].values[:, w], cubes.sum(axis=1),
                                       rtol=1e-12, atol=1e-12 * np.abs(cubes).sum(axis=1).max(),
                                       err_msg=f"{variable} window {w}")
    assert ds.sizes["window"] == 3
    assert ds.x_cubes.attrs["units"] == "1" and ds.x_cubes.attrs["cell_methods"] == "time: sum"
    assert ds.x_cubes.dims == ds.energy_cubes.dims == ("run", "window")


def cubes_init(acc, base, option, j, L):
    acc[base * L + j] = 0.0


def cubes_update(acc, base, option, j, L, value, derivative, t):
    acc[base * L + j] += value * value * value


def cubes_finalise(acc, base, option, j, L, out, window, slot, run):
    out[window, slot, run] = acc[base * L + j]


SUM_OF_CUBES = Metric(
    "sum_of_cubes", (MetricResult("cubes", "sum of cubes", "1", "time: sum"),), 1,
    cubes_init, cubes_update, cubes_finalise,
)


# ------------------------------------------------------------ dense output
PROBLEMS = {
    "brusselator": (brusselator, brusselator_rhs, [1.5, 3.0], 20.0),
    "rigid_body": (rigid_body, rigid_body_rhs, [0.0, 1.0, 1.0], 20.0),
}

#: Largest save error, in units of atol + rtol max|y| (measured: rk45 <= 6.4,
#: tsit5 <= 6.0, rk23 <= 41 on these problems at rtol 1e-6 and 1e-8; rk23's
#: global error is of that size at its step ends too).
SAVE_ERROR_LIMIT = {"rk45": 10, "tsit5": 10, "rk23": 60}


def save_error(ds, problem, rtol, atol, speed=1.0):
    """Largest save error of run 0, in units of atol + rtol max|y|; ``speed``: the
    run's time scale (its save at t is the problem's state at speed * t)."""
    factory, rhs, y0, duration = PROBLEMS[problem]
    names = factory().state_names
    t_eval = speed * ds.time.values
    reference = scipy_solve_ivp(rhs, (0, max(duration, t_eval[-1])), y0, method="DOP853",
                                rtol=1e-12, atol=1e-14, t_eval=t_eval)
    got = np.stack([ds[n].values[0] for n in names])
    scale = atol + rtol * np.abs(reference.y).max(axis=1, keepdims=True)
    return (np.abs(got - reference.y) / scale).max()


@pytest.mark.parametrize("method", ["rk45", "tsit5", "rk23"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_steps_do_not_depend_on_save_every(method, problem):
    """Saves every 0.05 and every 0.1 of the problem's time change no step, and
    the saves are accurate.

    Compile budget: save_every is compiled in, so there are two kernels (no
    saves, saves every 0.05), and the problem's saves every 0.1 come from the
    same problem sped up twice (speed = 2 over half the duration): y' = 2 f(y)
    at time t is the problem at 2 t, so a save every 0.05 is a save every 0.1
    of the problem's time, and its steps are the problem's steps (the RK
    stages map one to one, h on the fast run is 2 h on the problem). Each run's
    steps are compared with the same run's steps without saves."""
    factory, _, _, duration = PROBLEMS[problem]
    rtol, atol = 1e-8, 1e-10
    steps = {}
    for save_every in (None, 0.05):
        solver = Solver(factory(), method=method, rtol=rtol, atol=atol, save_every=save_every,
                        target="cpu")
        for speed in (1.0, 2.0):
            ds = solver.solve(parameters={"speed": speed}, duration=duration / speed)
            assert ds.status.item() == 0
            steps[save_every, speed] = (ds.n_steps.item(), ds.n_rejected.item())
            if save_every is not None:
                assert ds.attrs["saving"] == "dense output"
                error = save_error(ds, problem, rtol, atol, speed)
                assert error < SAVE_ERROR_LIMIT[method], (method, problem, speed * save_every, error)
    assert steps[None, 1.0] == steps[0.05, 1.0], steps  # saves every 0.05
    assert steps[None, 2.0] == steps[0.05, 2.0], steps  # saves every 0.1 (problem's time)


@pytest.mark.parametrize("method", ["cash_karp", "vern6"])
def test_methods_without_an_accurate_interpolant_land_on_saves(method):
    """Cash-Karp and Verner 6(5) have only the cubic Hermite interpolant here,
    below their embedded order: they keep landing on save times, and their
    saves stay as accurate as their steps."""
    rtol, atol = 1e-8, 1e-10
    ds = Solver(rigid_body(), method=method, rtol=rtol, atol=atol, save_every=0.05,
                target="cpu").solve(duration=20.0)
    assert ds.attrs["saving"] == "steps land on save times"
    assert ds.n_steps.item() >= 400  # at least one step per save interval
    assert save_error(ds, "rigid_body", rtol, atol) < 10


def test_hermite_interpolant_with_an_end_derivative():
    """heun_euler is not FSAL: its Hermite interpolant evaluates f at the step's
    end; saves stay within its tolerance and its steps do not depend on saves."""
    rtol, atol = 1e-5, 1e-7
    runs = [Solver(brusselator(), method="heun_euler", rtol=rtol, atol=atol,
                   save_every=save_every, target="cpu").solve(duration=20.0)
            for save_every in (None, 0.05)]
    assert runs[0].n_steps.item() == runs[1].n_steps.item()
    assert save_error(runs[1], "brusselator", rtol, atol) < 30


@pytest.mark.parametrize("method", ["rk45", "tsit5", "rk23", "vern6", "cash_karp", "heun_euler"])
def test_interpolant_order(method):
    """One step of y' = y cos(t) (exact: exp(sin t)) from t = 0.3: the interpolant's
    error at theta in (0, 1) falls like h**(q + 1), q its order."""
    tableau = get_tableau(method)
    rows, end_derivative = tableau.interpolant()
    a = tableau.a_matrix()
    c = np.array([float(v) for v in tableau.c])
    dense = np.array([[float(v) for v in row] for row in rows])

    def f(t, y):
        return y * math.cos(t)

    def error(h):
        t0, y0 = 0.3, math.exp(math.sin(0.3))
        k = []
        for i in range(tableau.n_stages):
            k.append(f(t0 + c[i] * h, y0 + h * sum(a[i, q] * k[q] for q in range(i))))
        b = np.array([float(v) for v in tableau.b])
        y1 = y0 + h * float(np.dot(b, k))
        if end_derivative:
            k.append(f(t0 + h, y1))
        worst = 0.0
        for theta in np.linspace(0.1, 0.9, 9):
            weights = dense @ theta ** np.arange(1, dense.shape[1] + 1)
            y = y0 + h * float(np.dot(weights, k))
            worst = max(worst, abs(y - math.exp(math.sin(t0 + theta * h))))
        return worst

    q = tableau.interpolation_order
    ratio = error(0.02) / error(0.01)
    assert ratio > 2 ** (q + 1) * 0.7, (method, q, ratio)


def test_fixed_steps_still_land_on_save_times():
    system = harmonic_oscillator()
    ds = Solver(system, method="rk4", dt=0.01, save_every=0.1, target="cpu").solve(duration=1.0)
    assert ds.n_steps.item() == 100
    np.testing.assert_allclose(ds.x.values[0], np.cos(ds.time.values), atol=1e-9)


# ------------------------------------------------------------ final state, failures
def test_final_state_equals_the_last_saved_row():
    system = lorenz()
    out = Output(save_every=0.1, final_state=True)
    ds = Solver(system, method="rk45", target="cpu", output=out).solve(
        parameters={"rho": [10.0, 28.0]}, duration=3.0)
    for name in system.state_names:
        np.testing.assert_array_equal(ds[f"{name}_final"].values, ds[name].values[:, -1])
    only_final = Solver(system, method="rk45", target="cpu",
                        output=Output(states=[], observables=[], final_state=True)).solve(
        parameters={"rho": [10.0, 28.0]}, duration=3.0)
    assert "x" not in only_final
    np.testing.assert_array_equal(only_final.x_final.values, ds.x_final.values)


def test_failed_runs_have_nan_summaries_and_final_state():
    system = lorenz()
    parameters = {"rho": [0.5, 28.0]}
    # What each run needs, read from an uncapped solve with the settings of
    # test_final_state_equals_the_last_saved_row (its kernel, loaded from the
    # session's disk cache instead of compiled again): the output does not
    # change the steps, and max_steps only stops a run.
    free = Solver(system, method="rk45", target="cpu",
                  output=Output(save_every=0.1, final_state=True)).solve(
        parameters=parameters, duration=5.0)
    np.testing.assert_array_equal(free.status.values, 0)
    easy, hard = free.n_steps.values + free.n_rejected.values
    assert 2 * easy < hard, (easy, hard)
    # A cap between the two: rho = 0.5 finishes, rho = 28 fails part-way.
    max_steps = int((easy + hard) // 2)
    out = Output(states=["x"], observables=[], save_every=0.1, summaries=["max"],
                 summarise_every=1.0, final_state=True)
    ds = Solver(system, method="rk45", target="cpu", output=out,
                max_steps=max_steps).solve(parameters=parameters, duration=5.0)
    ok, failed = ds.status.values
    assert ok == 0 and failed == int(RunStatus.MAX_STEPS_EXCEEDED), failed
    attempted = ds.n_steps.values + ds.n_rejected.values
    assert attempted[0] == easy and attempted[1] == max_steps, (attempted, easy, max_steps)
    # the finished run is the uncapped one; the failed one is, up to its failure
    np.testing.assert_array_equal(ds.x_final.values[0], free.x_final.values[0])
    saved = ~np.isnan(ds.x.values[1])
    assert 0 < saved.sum() < saved.size
    np.testing.assert_array_equal(ds.x.values[:, saved], free.x.values[:, saved])
    assert np.isfinite(ds.x_max.values[0]).all() and np.isfinite(ds.x_final.values[0])
    assert np.isnan(ds.x_final.values[1])
    bad = np.isnan(ds.x_max.values[1])
    assert bad[-1] and bad.sum() >= 1
    # windows finished before the failure keep their values, and match the rows
    for w in np.flatnonzero(~bad):
        np.testing.assert_allclose(ds.x_max.values[1, w], ds.x.values[1, 10 * w:10 * w + 11].max())


def test_subsets_of_states_and_observables():
    system = harmonic_oscillator()
    ds = Solver(system, method="rk45", target="cpu",
                output=Output(states=["v"], observables=[], save_every=0.5)).solve(duration=2.0)
    assert "v" in ds and "x" not in ds and "energy" not in ds
    np.testing.assert_allclose(ds.v.values[0], -np.sin(ds.time.values), atol=1e-4)


# ------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, match", [
    (dict(states=[], observables=[]), "requests nothing"),
    (dict(summaries=["max"]), "need save_every"),
    (dict(save_every=0.1, summaries=["max"], summarise_every=0.25), "multiple of save_every"),
    (dict(save_every=0.1, summaries=["maxx"]), "unknown metric 'maxx'; allowed: mean"),
    (dict(save_every=0.1, summaries=["max[2]"]), "takes no option"),
    (dict(save_every=0.1, summaries=["peaks[0]"]), "option >= 1"),
    (dict(save_every=0.1, summaries=["max", "max"]), "more than once"),
    (dict(save_every=-1.0), "save_every must be"),
    (dict(save_every=0.1, summarise_every=1.0), "no summaries"),
    (dict(final_state="yes"), "final_state must be"),
])
def test_bad_outputs_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Output(**kwargs)


def test_names_are_checked_against_the_system():
    with pytest.raises(ValueError, match="states: 'q' is not one of the system's states"):
        Solver(lorenz(), method="rk45", target="cpu", output=Output(states=["q"]))
    with pytest.raises(ValueError, match="summarise: 'q' is not a state or observable"):
        Solver(lorenz(), method="rk45", target="cpu",
               output=Output(save_every=0.1, summaries=["max"], summarise=["q"]))
    with pytest.raises(ValueError, match="not both"):
        Solver(lorenz(), method="rk45", target="cpu", save_every=0.1, output=Output())
    with pytest.raises(ValueError, match="unknown field"):
        Solver(lorenz(), method="rk45", target="cpu", output={"save_evry": 0.1})


def test_output_round_trips_and_accumulators_are_registry_buffers():
    out = Output(states=["x"], save_every=0.1, summaries=["mean", "peaks[4]"], summarise_every=1.0)
    assert Output.from_dict(out.to_dict()) == out
    plain = Solver(lorenz(), method="rk45", target="cpu", save_every=0.1)
    summarised = Solver(lorenz(), method="rk45", target="cpu",
                        output=Output(save_every=0.1, summaries=["mean", "peaks[4]"]))
    kernel = summarised.kernel
    owner = kernel.single_integrator.output
    # mean: 2, peaks[4]: 6 + 8 accumulator elements per variable, 3 variables
    assert kernel.registry.buffers(owner)["accumulators"].size == 3 * (2 + 14)
    assert "accumulators_location" in kernel.registry.location_keys(kernel.single_integrator)
    # dense stages (y_n and 6 stages of DP5) and the sample buffer are registered too
    step = kernel.single_integrator.step
    assert kernel.registry.buffers(step)["dense_stages"].size == 3 * 7
    extra = kernel.per_run_device_bytes(10.0) - plain.kernel.per_run_device_bytes(10.0)
    # accumulators + results (1 window x 3 variables x (1 + 8)), in float64
    assert extra == 8 * (3 * 16 + 3 * 9)
