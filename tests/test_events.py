"""Events: crossings located on the step's interpolant, terminal events, resets.

References are independent of the code under test: scipy's ``solve_ivp``
events at tight tolerance (Lorenz Poincare sections, Van der Pol first
passages), and closed forms (a bouncing ball's bounce times, a leaky
integrate-and-fire neuron's spike times). Every configuration compiles a
kernel (~10-30 s), so each test sweeps several runs through one kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from cubie_kernel import Solver
from cubie_kernel.status import FAILURE_MASK, RunStatus, decode_status, raise_on_failure
from cubie_kernel.systems import ODESystem, lorenz, van_der_pol
from cubie_kernel.systems.events import Event, EventDefinitionError

G = 9.81


def bouncing_ball() -> ODESystem:
    return ODESystem(["dy = v", "dv = -g"], states={"y": 1.0, "v": 0.0},
                     parameters={"e": 0.8}, constants={"g": G}, name="ball")


def bounce_times(y0: float, e: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed form: the first ``n`` bounce times and impact velocities of a ball
    dropped from rest at height ``y0`` (restitution ``e``)."""
    t = math.sqrt(2 * y0 / G)
    speed = math.sqrt(2 * G * y0)
    times, speeds = [t], [speed]
    for _ in range(n - 1):
        t += 2 * e * speed / G
        speed *= e
        times.append(t)
        speeds.append(speed)
    return np.array(times), np.array(speeds)


def lif() -> ODESystem:
    """Leaky integrate-and-fire: tau dv/dt = -(v - el) + r i."""
    return ODESystem(["dv = (el - v + r*i)/tau"], states={"v": -70.0},
                     parameters={"i": 2.0, "tau": 10.0},
                     constants={"el": -70.0, "r": 10.0, "v_th": -55.0, "v_reset": -75.0},
                     name="lif")


def lif_spikes(i: float, tau: float, v0: float, duration: float) -> np.ndarray:
    """Closed form spike times: v(t) = v_inf + (v0 - v_inf) exp(-t / tau)."""
    v_inf = -70.0 + 10.0 * i
    if v_inf <= -55.0:
        return np.array([])
    first = tau * math.log((v_inf - v0) / (v_inf + 55.0))
    period = tau * math.log((v_inf + 75.0) / (v_inf + 55.0))
    return first + period * np.arange(int((duration - first) // period) + 1)


# ------------------------------------------------------------------ declarations


def test_event_fields_are_validated_with_their_names():
    with pytest.raises(EventDefinitionError, match="direction must be one of -1, 0, 1"):
        Event("a", "x", direction=2)
    with pytest.raises(EventDefinitionError, match="max_records"):
        Event("a", "x", max_records=-1)
    with pytest.raises(EventDefinitionError, match="terminal event ends the run"):
        Event("a", "x", terminal=True, reset=["x = 0"])
    with pytest.raises(EventDefinitionError, match="event name"):
        Event("2a", "x")
    with pytest.raises(EventDefinitionError, match="unknown field"):
        Event.from_dict({"name": "a", "condition": "x", "sign": 1})
    assert Event.from_dict(Event("a", "x").canonical()) == Event("a", "x")
    assert Event("a", "x", reset="x = 1; y = 2").reset == ("x = 1", "y = 2")


@pytest.mark.parametrize("event, message", [
    (Event("hit", "w - 1"), "unknown name 'w'"),
    (Event("hit", "x +"), "syntax error"),
    (Event("hit", "x", reset=["rho = 1"]), "not a state"),
    (Event("hit", "x", reset=["x = 1", "x = 2"]), "assigns 'x' twice"),
    (Event("rho", "x"), "also a name of system"),
])
def test_events_are_checked_against_the_system_before_any_work(event, message):
    with pytest.raises(EventDefinitionError, match=message):
        Solver(lorenz(), method="rk45", target="cpu", events=[event])


def test_two_events_of_one_name_are_refused():
    with pytest.raises(EventDefinitionError, match="two events are named 'a'"):
        Solver(lorenz(), method="rk45", target="cpu", events=[Event("a", "x"), Event("a", "y")])


def test_max_resets_is_checked():
    with pytest.raises(ValueError, match="max_resets must be an int >= 0"):
        Solver(lorenz(), method="rk45", target="cpu", max_resets=-1)


def test_status_bits_terminated_is_not_a_failure():
    bit = int(RunStatus.TERMINATED_BY_EVENT)
    assert bit & FAILURE_MASK == 0
    assert decode_status(bit) == ["success", "terminated_by_event"]
    assert decode_status(int(RunStatus.TOO_MANY_RESETS)) == ["too_many_resets"]


# ------------------------------------------------------------ against scipy events


def scipy_section(rho: float, duration: float, z0: float = 27.0):
    def rhs(t, u):
        x, y, z = u
        return [10.0 * (y - x), x * (rho - z) - y, x * y - 8.0 / 3.0 * z]

    def section(t, u):
        return u[2] - z0

    section.direction = 1
    sol = solve_ivp(rhs, (0.0, duration), [1.0, 1.0, 1.0], method="DOP853", rtol=1e-13,
                    atol=1e-13, events=section)
    return sol.t_events[0], sol.y_events[0]


@pytest.mark.parametrize("method, settings", [
    ("rk45", {"rtol": 1e-10, "atol": 1e-10}),  # the step's own interpolant
    ("cash_karp", {"rtol": 1e-10, "atol": 1e-10}),  # adaptive, Hermite interpolant
    ("rk4", {"dt": 2e-4}),  # fixed steps, Hermite interpolant
])
def test_lorenz_poincare_section_matches_scipy(method, settings):
    """Every upward crossing of z = 27 (times and states) for three rho."""
    rhos = np.array([24.0, 28.0, 45.0])
    duration = 6.0
    solver = Solver(lorenz(), method=method, target="cpu",
                    events=[Event("section", "z - 27", direction=1, max_records=32)],
                    **settings)
    ds = solver.solve({"x": 1.0, "y": 1.0, "z": 1.0}, {"rho": rhos}, duration)
    raise_on_failure(ds)
    for run, rho in enumerate(rhos):
        times, states = scipy_section(rho, duration)
        assert len(times) >= 4
        count = int(ds.section_count[run])
        assert count == len(times)
        np.testing.assert_allclose(ds.section_time[run, :count], times, rtol=0, atol=2e-7)
        assert np.isnan(ds.section_time[run, count:]).all()
        # |dx/dt| reaches ~400 on the section: a 2e-7 time error moves x by 8e-5
        for k, state in enumerate("xyz"):
            np.testing.assert_allclose(ds[f"section_{state}"][run, :count], states[:, k],
                                       rtol=0, atol=2e-5)
        np.testing.assert_allclose(ds.section_z[run, :count], 27.0, atol=1e-7)


def test_terminal_first_passage_over_a_sweep_matches_scipy():
    """Van der Pol from (2, 0): the first time x falls through 0, for several mu;
    the run ends there (status bit, final state), saves after it are NaN."""
    mus = np.array([0.5, 1.0, 2.0, 4.0])
    solver = Solver(van_der_pol(), method="tsit5", target="cpu", rtol=1e-10, atol=1e-10,
                    output={"save_every": 0.25, "final_state": True},
                    events=[Event("passage", "x", direction=-1, terminal=True)])
    duration = 10.0
    ds = solver.solve({"x": 2.0, "v": 0.0}, {"mu": mus}, duration)
    raise_on_failure(ds)  # terminated runs succeeded
    for run, mu in enumerate(mus):
        def rhs(t, u, mu=mu):
            return [u[1], mu * (1 - u[0] ** 2) * u[1] - u[0]]

        def passage(t, u):
            return u[0]

        passage.terminal = True
        passage.direction = -1
        ref = solve_ivp(rhs, (0, duration), [2.0, 0.0], method="DOP853", rtol=1e-13,
                        atol=1e-13, events=passage, dense_output=True)
        t_hit = ref.t_events[0][0]
        assert int(ds.status[run]) == int(RunStatus.TERMINATED_BY_EVENT)
        assert int(ds.passage_count[run]) == 1
        np.testing.assert_allclose(float(ds.passage_time[run, 0]), t_hit, rtol=0, atol=1e-8)
        np.testing.assert_allclose(float(ds.x_final[run]), 0.0, atol=1e-8)
        np.testing.assert_allclose(float(ds.v_final[run]), ref.y_events[0][0][1], atol=1e-8)
        times = ds.time.values
        before = times <= t_hit
        np.testing.assert_allclose(ds.x[run, before], ref.sol(times[before])[0], atol=1e-8)
        assert np.isnan(ds.x[run, ~before]).all()


# ----------------------------------------------------------------- closed forms


def test_bouncing_ball_bounce_times_match_the_closed_form():
    """Up to eleven bounces per run, restitution and drop height swept; the
    state at each bounce is the one before the reset (impact speed). Every
    flight before the end is longer than 2 dt_max (a step spanning a whole
    flight would not see the crossing)."""
    heights = np.array([1.0, 2.5])
    restitutions = np.array([0.9, 0.8])
    n = 8
    solver = Solver(bouncing_ball(), method="rk45", target="cpu", rtol=1e-11, atol=1e-12,
                    dt_max=0.05, save_every=0.05,
                    events=[Event("bounce", "y", direction=-1, reset=["v = -e*v"],
                                  max_records=n)])
    duration = 3.0
    ds = solver.solve({"y": heights, "v": 0.0}, {"e": restitutions}, duration)
    raise_on_failure(ds)
    for run in range(ds.sizes["run"]):
        y0 = float(ds.initial_y[run])
        e = float(ds.e[run])
        times, speeds = bounce_times(y0, e, 40)
        expected = int(np.count_nonzero(times <= duration))
        assert np.diff(times[: expected + 1]).min() > 2 * 0.05
        assert int(ds.bounce_count[run]) == expected
        recorded = min(expected, n)
        np.testing.assert_allclose(ds.bounce_time[run, :recorded], times[:recorded],
                                   rtol=1e-9)
        np.testing.assert_allclose(ds.bounce_v[run, :recorded], -speeds[:recorded],
                                   rtol=1e-8)
        np.testing.assert_allclose(ds.bounce_y[run, :recorded], 0.0, atol=1e-9)
        assert (ds.y[run].values >= -1e-9).all()  # the ball never goes through the floor


def test_leaky_integrate_and_fire_spikes_match_the_closed_form():
    """Spike times with reset v = v_reset, over input currents below and above
    rheobase (i = 1.5 never fires)."""
    currents = np.array([1.5, 1.6, 2.0, 3.0])
    duration = 100.0
    solver = Solver(lif(), method="rk45", target="cpu", rtol=1e-10, atol=1e-10,
                    events=[Event("spike", "v - v_th", direction=1, reset=["v = v_reset"],
                                  max_records=64)])
    ds = solver.solve({"v": -65.0}, {"i": currents, "tau": 10.0}, duration)
    raise_on_failure(ds)
    for run, current in enumerate(currents):
        spikes = lif_spikes(current, 10.0, -65.0, duration)
        count = int(ds.spike_count[run])
        assert count == len(spikes)
        np.testing.assert_allclose(ds.spike_time[run, :count], spikes, rtol=1e-8)
        np.testing.assert_allclose(ds.spike_v[run, :count], -55.0, atol=1e-7)
        assert np.isnan(ds.spike_time[run, count:]).all()


def test_zeno_ball_stops_at_the_reset_cap_with_its_bounces_recorded():
    """A ball with restitution 0.5 bounces infinitely often before t = 3 t1; the
    run stops after max_resets resets with too_many_resets set (dt_max is below
    the ninth flight, 3.5e-3)."""
    cap = 8
    solver = Solver(bouncing_ball(), method="rk45", target="cpu", rtol=1e-11, atol=1e-13,
                    dt_max=1e-3, max_resets=cap, output={"final_state": True},
                    events=[Event("bounce", "y", direction=-1, reset=["v = -e*v"],
                                  max_records=cap + 1)])
    ds = solver.solve({"y": 1.0, "v": 0.0}, {"e": 0.5}, duration=1.5)
    status = int(ds.status[0])
    assert status & int(RunStatus.TOO_MANY_RESETS)
    times, _ = bounce_times(1.0, 0.5, cap + 1)
    np.testing.assert_allclose(ds.bounce_time[0, : cap + 1], times, rtol=1e-7)
    assert int(ds.bounce_count[0]) == cap + 1
    assert np.isnan(float(ds.y_final[0]))


def test_events_in_the_warmup_reset_but_are_not_recorded():
    duration, warmup = 50.0, 30.0
    solver = Solver(lif(), method="rk45", target="cpu", rtol=1e-10, atol=1e-10,
                    events=[Event("spike", "v - v_th", direction=1, reset=["v = v_reset"])])
    ds = solver.solve({"v": -65.0}, {"i": 2.0, "tau": 10.0}, duration, warmup=warmup)
    spikes = lif_spikes(2.0, 10.0, -65.0, warmup + duration)
    spikes = spikes[spikes >= warmup]
    count = int(ds.spike_count[0])
    assert count == len(spikes) > 0
    np.testing.assert_allclose(ds.spike_time[0, :count], spikes, rtol=1e-8)


# ------------------------------------------------------- no events, no change


@pytest.mark.parametrize("output", [{"save_every": 0.1}, {"final_state": True}])
def test_an_event_that_never_fires_changes_nothing(output):
    """Same steps, same numbers, bit for bit (dense saving, and final state
    only, where the event makes the step keep its interpolant)."""
    rhos = np.array([20.0, 28.0])
    common = dict(method="rk45", target="cpu", rtol=1e-8, atol=1e-8, output=output)
    plain = Solver(lorenz(), **common).solve({"x": 1.0}, {"rho": rhos}, 5.0)
    watched = Solver(lorenz(), **common, events=[Event("never", "z - 1000", direction=1)])
    ds = watched.solve({"x": 1.0}, {"rho": rhos}, 5.0)
    assert (ds.never_count.values == 0).all()
    for name in ("n_steps", "n_rejected", "status"):
        np.testing.assert_array_equal(ds[name].values, plain[name].values)
    for name in plain.data_vars:
        np.testing.assert_array_equal(ds[name].values, plain[name].values)


def test_event_results_may_not_collide():
    system = ODESystem(["dx = -x", "dhit_x = 0"], states={"x": 1.0, "hit_x": 0.0})
    with pytest.raises(EventDefinitionError, match="result 'hit_x' is also"):
        Solver(system, method="rk45", target="cpu", events=[Event("hit", "x - 0.5")])
    with pytest.raises(EventDefinitionError, match="result 'a_b_x' is also a result of event"):
        Solver(ODESystem(["dx = -x", "db_x = 0"], states={"x": 1.0, "b_x": 0.0}),
               method="rk45", target="cpu", events=[Event("a_b", "x"), Event("a", "x")])


def test_per_run_bytes_count_the_records_and_the_event_buffers():
    """Outputs: 8 records x (a float64 time + 3 float64 states) per event, an
    int32 count; scratch: 4 values per event and one interpolated state."""
    common = dict(method="rk45", target="cpu", save_every=0.1)
    plain = Solver(lorenz(), **common).kernel.per_run_device_bytes(1.0)
    events = [Event("a", "x", max_records=8), Event("b", "z - 27", max_records=5)]
    watched = Solver(lorenz(), **common, events=events).kernel.per_run_device_bytes(1.0)
    records = 8 * 2 * (8 + 3 * 8) + 2 * 4
    scratch = (4 * 2 + 3) * 8
    assert watched - plain == records + scratch


def test_interior_points_find_a_crossing_and_its_return_within_one_step():
    """x = t - t^2 (RK4 and its Hermite interpolant are exact for it) with one
    step of dt = 1: x - 0.2 rises through zero at (1 - sqrt(0.2)) / 2 and falls
    back at (1 + sqrt(0.2)) / 2, while both step ends sit below. Seen with
    interior points, in time order, up to a terminal event between them (run 0:
    x falls through c = 0.21 at t = 0.7); not seen without."""
    system = ODESystem(["dx = 1 - 2*t"], states={"x": 0.0}, parameters={"c": 0.0})
    events = [Event("both", "x - 0.2", interior_points=3),
              Event("blind", "x - 0.2"),
              Event("stop", "x - c", direction=-1, terminal=True, interior_points=3)]
    solver = Solver(system, method="rk4", dt=1.0, target="cpu", events=events,
                    output={"final_state": True})
    ds = solver.solve({"x": 0.0}, {"c": [0.21, -1.0]}, 1.0)
    rise, fall = (1 - math.sqrt(0.2)) / 2, (1 + math.sqrt(0.2)) / 2
    assert ds.blind_count.values.tolist() == [0, 0]
    assert ds.both_count.values.tolist() == [1, 2]
    np.testing.assert_allclose(ds.both_time[0, :1], [rise], rtol=1e-12)
    np.testing.assert_allclose(ds.both_time[1, :2], [rise, fall], rtol=1e-12)
    np.testing.assert_allclose(ds.both_x[1, :2], [0.2, 0.2], rtol=1e-12)
    assert int(ds.status[0]) == int(RunStatus.TERMINATED_BY_EVENT)
    np.testing.assert_allclose(float(ds.stop_time[0, 0]), 0.7, rtol=1e-12)
    np.testing.assert_allclose(float(ds.x_final[0]), 0.21, rtol=1e-12)
    assert int(ds.status[1]) == 0 and int(ds.stop_count[1]) == 0
    np.testing.assert_allclose(float(ds.x_final[1]), 0.0, atol=1e-15)


def test_float32_runs_locate_spikes_to_float32_accuracy():
    """The root finder and the records work in float32 (times stay float64)."""
    currents = np.array([2.0, 3.0])
    solver = Solver(lif(), method="tsit5", target="cpu", precision=np.float32, rtol=1e-5,
                    atol=1e-5, events=[Event("spike", "v - v_th", direction=1,
                                             reset=["v = v_reset"], max_records=20)])
    ds = solver.solve({"v": -65.0}, {"i": currents, "tau": 10.0}, 100.0)
    assert ds.spike_time.dtype == np.float64 and ds.spike_v.dtype == np.float32
    for run, current in enumerate(currents):
        spikes = lif_spikes(current, 10.0, -65.0, 100.0)
        count = int(ds.spike_count[run])
        assert count == len(spikes)
        np.testing.assert_allclose(ds.spike_time[run, :count], spikes, rtol=2e-4)
        np.testing.assert_allclose(ds.spike_v[run, :count], -55.0, rtol=1e-5)


def test_recomputed_stages_give_the_stored_stages_crossings():
    """Without dense saving an explicit step stores nothing and a crossing step's
    stages are recomputed; with it they are stored. Same crossings either way."""
    common = dict(method="rk45", target="cpu", rtol=1e-9, atol=1e-9,
                  events=[Event("section", "z - 27", direction=1, max_records=32)])
    rhos = {"rho": np.array([28.0, 35.0])}
    recomputed = Solver(lorenz(), output={"final_state": True}, **common)
    stored = Solver(lorenz(), output={"save_every": 0.5, "final_state": True}, **common)
    assert recomputed.settings.event_interpolant == "recomputed"
    assert stored.settings.event_interpolant == "step"
    a = recomputed.solve({"x": 1.0}, rhos, 8.0)
    b = stored.solve({"x": 1.0}, rhos, 8.0)
    np.testing.assert_array_equal(a.section_count.values, b.section_count.values)
    np.testing.assert_array_equal(a.n_steps.values, b.n_steps.values)
    np.testing.assert_allclose(a.section_time.values, b.section_time.values, rtol=1e-12)
    np.testing.assert_allclose(a.section_x.values, b.section_x.values, rtol=1e-10)
