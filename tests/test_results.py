"""The result Dataset: structure, CF status flags, counters, coordinates,
attrs, netCDF round trip and observables.

Numbers are checked against closed forms and against the saved states
themselves (observables), never against values the library printed.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math

import numpy as np
import pytest
import xarray as xr

from cubie_kernel import ODESystem, RunStatus, Solver
from cubie_kernel.status import KNOWN_MASK, decode_status
from cubie_kernel.systems import exponential_decay, harmonic_oscillator

TARGET = "cpu"
DT = 0.01
SAVE_EVERY = 0.1


def cosine_with_time_observables() -> ODESystem:
    """y' = cos(t); observables sin(t) and the invariant y - sin(t)."""
    return ODESystem(
        ["dy = cos(t)"],
        states={"y": 0.0},
        observables=["s = sin(t)", "c = y - sin(t)"],
        name="cosine_observed",
    )


_SYSTEMS = {
    "harmonic": harmonic_oscillator,
    "decay": exponential_decay,
    "cosine": cosine_with_time_observables,
}


@functools.lru_cache(maxsize=None)
def _solver(system: str, dt: float = DT, save_every=SAVE_EVERY, **flags) -> Solver:
    return Solver(
        _SYSTEMS[system](), method="rk4", dt=dt, save_every=save_every, target=TARGET, **flags
    )


T0, WARMUP, DURATION = 0.5, 0.2, 1.0
X0 = np.array([1.0, 0.5])
OMEGA = np.array([1.0, 2.0, 3.0])


@pytest.fixture(scope="module")
def oscillator_ds() -> xr.Dataset:
    solver = _solver("harmonic")
    return solver.solve(
        {"x": X0}, {"omega": OMEGA}, duration=DURATION, t0=T0, warmup=WARMUP
    )


# --------------------------------------------------------------------- structure
def test_dims_and_variables(oscillator_ds):
    ds = oscillator_ds
    assert set(ds.dims) == {"run", "time"}
    assert ds.sizes == {"run": 6, "time": 11}
    assert set(ds.data_vars) == {"x", "v", "energy", "status", "n_steps", "n_rejected"}
    for name in ("x", "v", "energy"):
        assert ds[name].dims == ("run", "time"), name
        assert ds[name].dtype == np.float64
    for name in ("status", "n_steps", "n_rejected"):
        assert ds[name].dims == ("run",), name
    np.testing.assert_array_equal(ds["run"].values, np.arange(6))
    assert ds["time"].dtype == np.float64
    np.testing.assert_allclose(
        ds["time"].values, T0 + WARMUP + SAVE_EVERY * np.arange(11), rtol=0, atol=1e-12
    )


def test_state_values_follow_closed_form(oscillator_ds):
    ds = oscillator_ds
    tau = ds["time"].values[None, :] - T0  # both runs start at t0 with v = 0
    x0 = ds["initial_x"].values[:, None]
    om = ds["omega"].values[:, None]
    np.testing.assert_allclose(ds["x"].values, x0 * np.cos(om * tau), rtol=0, atol=1e-7)
    np.testing.assert_allclose(ds["v"].values, -x0 * om * np.sin(om * tau), rtol=0, atol=1e-7)


def test_swept_inputs_are_run_coordinates(oscillator_ds):
    ds = oscillator_ds
    rows = list(itertools.product(X0, OMEGA))
    assert "initial_x" in ds.coords and "omega" in ds.coords
    for name, column in zip(("initial_x", "omega"), zip(*rows)):
        assert ds[name].dims == ("run",)
        np.testing.assert_array_equal(ds[name].values, column)
    # unswept inputs are not coordinates; the state name is the data variable
    assert "initial_v" not in ds.coords
    assert "x" not in ds.coords
    # coordinates select runs
    sel = ds.where(ds["omega"] == 2.0, drop=True)
    np.testing.assert_array_equal(sel["initial_x"].values, X0)


def test_attrs_hold_solver_settings(oscillator_ds):
    attrs = oscillator_ds.attrs
    assert attrs["method"] == "rk4"
    assert attrs["dt"] == DT
    assert attrs["save_every"] == SAVE_EVERY
    assert attrs["precision"] == "float64"
    assert attrs["target"] == "cpu"
    assert attrs["duration"] == DURATION
    assert attrs["t0"] == T0
    assert attrs["warmup"] == WARMUP
    assert attrs["system"] == "harmonic_oscillator"
    assert attrs["device_chunks"] == 1
    # omega is swept: a coordinate, not an attr
    assert "parameter_omega" not in attrs


def test_unswept_parameters_are_attrs():
    ds = _solver("harmonic").solve({"x": [1.0, 2.0]}, duration=0.2)
    assert ds.attrs["parameter_omega"] == 1.0
    assert "omega" not in ds.coords


def test_method_alias_is_reported_by_canonical_name():
    solver = Solver(exponential_decay(), method="Classical_RK4", dt=0.05, target=TARGET)
    ds = solver.solve({"y": 1.0}, duration=0.5)
    assert ds.attrs["method"] == "rk4"
    assert ds.attrs["save_every"] == "final state only"
    assert ds.attrs["parameter_k"] == 1.0
    # it really is RK4: y = R(-0.05)^10
    z = -0.05
    rk4 = (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** 10
    assert ds["y"].values[0, -1] == pytest.approx(rk4, rel=1e-13)


# ------------------------------------------------------------------------ status
def _cf_decode(attrs: dict, value: int) -> list[str]:
    """CF conventions 3.5, combined flag_masks + flag_values form."""
    meanings = attrs["flag_meanings"].split()
    masks = np.asarray(attrs["flag_masks"])
    values = np.asarray(attrs["flag_values"])
    assert len(meanings) == masks.size == values.size
    return [m for m, mask, val in zip(meanings, masks, values) if (value & int(mask)) == int(val)]


def test_status_is_int32_cf_flag_variable(oscillator_ds):
    status = oscillator_ds["status"]
    assert status.dtype == np.int32
    np.testing.assert_array_equal(status.values, 0)
    attrs = status.attrs
    for key in ("flag_masks", "flag_values", "flag_meanings", "long_name"):
        assert key in attrs
    assert np.asarray(attrs["flag_masks"]).dtype == np.int32
    assert np.asarray(attrs["flag_values"]).dtype == np.int32
    meanings = attrs["flag_meanings"].split()
    assert meanings[0] == "success"
    assert set(meanings[1:]) == {m.name.lower() for m in RunStatus}
    assert len(set(meanings)) == len(meanings)
    # no spaces inside one meaning (CF: blank-separated list)
    assert len(meanings) == len(RunStatus) + 1


def _meanings(members) -> list[str]:
    """Independent of decode_status: 'success' unless a failure bit is among
    ``members`` (every bit but terminated_by_event), then the members' names."""
    failed = any(m is not RunStatus.TERMINATED_BY_EVENT for m in members)
    return ([] if failed else ["success"]) + [m.name.lower() for m in members]


def test_decode_status_every_member(oscillator_ds):
    attrs = oscillator_ds["status"].attrs
    for member in RunStatus:
        assert decode_status(int(member)) == _meanings([member])
        assert _cf_decode(attrs, int(member)) == _meanings([member])
    assert decode_status(0) == ["success"]
    assert _cf_decode(attrs, 0) == ["success"]


def test_cf_attrs_round_trip_through_decode_status_for_all_combinations(oscillator_ds):
    attrs = oscillator_ds["status"].attrs
    members = list(RunStatus)
    n_combinations = 0
    for r in range(len(members) + 1):
        for combo in itertools.combinations(members, r):
            value = int(sum(int(m) for m in combo))
            expected = _meanings(combo)
            assert decode_status(value) == expected
            assert decode_status(np.int32(value)) == expected
            assert _cf_decode(attrs, value) == expected
            n_combinations += 1
    assert n_combinations == 2 ** len(members) == KNOWN_MASK + 1


@pytest.mark.parametrize("value", [KNOWN_MASK + 1, 128, -1])
def test_decode_status_rejects_unknown_bits(value):
    with pytest.raises(ValueError):
        decode_status(value)


# ---------------------------------------------------------------------- counters
def test_n_steps_counts_fixed_steps(oscillator_ds):
    expected = round((WARMUP + DURATION) / DT)  # warm-up steps count too
    np.testing.assert_array_equal(oscillator_ds["n_steps"].values, expected)
    np.testing.assert_array_equal(oscillator_ds["n_rejected"].values, 0)
    assert oscillator_ds["n_steps"].dtype.kind == "i"


def test_n_steps_without_warmup_equals_duration_over_dt():
    ds = _solver("harmonic").solve({"x": 1.0}, duration=2.5)
    assert ds["n_steps"].values[0] == 250


def test_n_steps_when_dt_does_not_divide_save_every():
    """Each 0.1 interval is 3 steps of 0.03 and one clamped step of 0.01,
    landing exactly on every save time."""
    solver = _solver("decay", dt=0.03)
    ds = solver.solve({"y": 1.0}, {"k": [0.5, 4.0]}, duration=0.5)
    np.testing.assert_array_equal(ds["n_steps"].values, 4 * 5)
    np.testing.assert_allclose(ds["time"].values, 0.1 * np.arange(6), rtol=0, atol=1e-12)

    def rk4(z):
        return 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24

    k = ds["k"].values[:, None]
    per_interval = rk4(-k * 0.03) ** 3 * rk4(-k * 0.01)
    np.testing.assert_allclose(ds["y"].values, per_interval ** np.arange(6), rtol=1e-11)


# -------------------------------------------------------------------- observables
def test_energy_observable_from_saved_states(oscillator_ds):
    ds = oscillator_ds
    x, v = ds["x"].values, ds["v"].values
    om = ds["omega"].values[:, None]
    np.testing.assert_allclose(ds["energy"].values, 0.5 * (v**2 + om**2 * x**2), rtol=1e-12)
    # and it is (nearly) conserved at its initial value
    e0 = 0.5 * om**2 * ds["initial_x"].values[:, None] ** 2
    np.testing.assert_allclose(ds["energy"].values, np.broadcast_to(e0, x.shape), rtol=1e-6)


def test_time_dependent_observables_see_the_save_time():
    solver = _solver("cosine")
    t0, warmup = 1.0, 0.3
    y0 = np.array([0.0, 2.0])
    ds = solver.solve({"y": y0}, duration=0.5, t0=t0, warmup=warmup)
    t = ds["time"].values
    np.testing.assert_allclose(t, t0 + warmup + 0.1 * np.arange(6), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds["s"].values, np.broadcast_to(np.sin(t), (2, 6)), atol=1e-12)
    # y - sin(t) is invariant: y0 - sin(t0)
    invariant = (y0 - math.sin(t0))[:, None]
    np.testing.assert_allclose(ds["c"].values, np.broadcast_to(invariant, (2, 6)), atol=1e-10)


def test_save_observables_false_drops_observables():
    solver = _solver("harmonic", save_every=None, save_observables=False)
    ds = solver.solve({"x": 1.0}, {"omega": [1.0, 2.0]}, duration=1.0)
    assert "energy" not in ds.data_vars
    assert {"x", "v"} <= set(ds.data_vars)
    assert ds.sizes["time"] == 1
    assert ds.attrs["save_every"] == "final state only"
    np.testing.assert_allclose(ds["x"].values[:, 0], np.cos(ds["omega"].values), atol=1e-8)


def test_save_states_false_keeps_observables():
    solver = _solver("harmonic", save_states=False)
    ds = solver.solve({"x": 2.0}, {"omega": [1.0, 3.0]}, duration=1.0)
    assert "x" not in ds.data_vars and "v" not in ds.data_vars
    assert ds["energy"].dims == ("run", "time")
    e0 = 0.5 * ds["omega"].values[:, None] ** 2 * 4.0
    np.testing.assert_allclose(ds["energy"].values, np.broadcast_to(e0, (2, 11)), rtol=1e-6)


# -------------------------------------------------------------------- netCDF
_ENGINES = {"scipy": "scipy", "h5netcdf": "h5netcdf", "netcdf4": "netCDF4"}


@pytest.mark.parametrize("engine", sorted(_ENGINES))
def test_netcdf_round_trip(oscillator_ds, tmp_path, engine):
    if importlib.util.find_spec(_ENGINES[engine]) is None:
        pytest.skip(f"netCDF engine {engine!r} needs the {_ENGINES[engine]} package")
    final_only = _solver("harmonic", save_every=None, save_observables=False).solve(
        {"x": 1.0}, {"omega": [1.0, 2.0]}, duration=1.0
    )
    for i, ds in enumerate((oscillator_ds, final_only)):
        path = tmp_path / f"result{i}.nc"
        ds.to_netcdf(path, engine=engine)
        with xr.open_dataset(path, engine=engine) as back:
            back = back.load()
        xr.testing.assert_identical(back, ds)
        assert set(back.attrs) == set(ds.attrs)
        for key, value in ds.attrs.items():
            assert back.attrs[key] == value, key
        # the CF status description survives and still decodes
        for member in RunStatus:
            assert _cf_decode(back["status"].attrs, int(member)) == _meanings([member])
        assert back["status"].dtype == np.int32


# ------------------------------------------------------------- name collisions
_CLASHES = {
    "state status": dict(equations=["dstatus = -status"], states={"status": 1.0}),
    "observable n_steps": dict(
        equations=["dy = -y"], states={"y": 1.0}, observables=["n_steps = 2*y"]
    ),
    "state n_rejected": dict(equations=["dn_rejected = 0"], states={"n_rejected": 1.0}),
    "parameter time": dict(equations=["dy = -time*y"], states={"y": 1.0}, parameters={"time": 1.0}),
    "state run": dict(equations=["drun = 1"], states={"run": 0.0}),
    "parameter initial_y": dict(
        equations=["dy = -initial_y*y"], states={"y": 1.0}, parameters={"initial_y": 1.0}
    ),
}


@pytest.mark.parametrize("case", sorted(_CLASHES))
def test_names_clashing_with_result_variables_are_refused_up_front(case):
    """Regression: batch_dataset once wrote a state called ``status`` (or an
    observable ``n_steps``) into ``data_vars`` and then overwrote it with the
    status/counter variable, silently dropping the trajectory; ``time`` and
    ``run`` failed only after the whole integration, inside xarray. A clash
    must be refused with a ValueError naming it, before anything compiles.
    """
    system = ODESystem(name="clash", **_CLASHES[case])
    clashing = case.split()[1]
    with pytest.raises(ValueError, match=clashing):
        Solver(system, dt=DT, save_every=SAVE_EVERY, target=TARGET)


def test_declared_units_and_long_names_reach_every_variable_and_coordinate():
    from cubie_kernel import ODESystem, Solver

    system = ODESystem(
        ["dx = v", "dv = -k*x"], states={"x": 1.0, "v": 0.0}, parameters={"k": 1.0},
        observables=["e = 0.5*v**2 + 0.5*k*x**2"],
        units={"x": "m", "v": "m s-1", "k": "s-2", "e": "J kg-1", "t": "s"},
        long_names={"x": "position", "t": "time since release"},
    )
    ds = Solver(system, method="rk4", dt=0.01, save_every=0.5).solve(
        {"x": [1.0, 2.0]}, {"k": [1.0, 4.0]}, duration=1.0
    )
    assert ds.attrs["Conventions"] == "CF-1.10"
    assert ds["x"].attrs == {"long_name": "position", "units": "m"}
    assert ds["v"].attrs == {"long_name": "state v", "units": "m s-1"}
    assert ds["e"].attrs["units"] == "J kg-1"
    assert ds["time"].attrs["units"] == "s" and ds["time"].attrs["long_name"] == "time since release"
    assert ds["k"].attrs["units"] == "s-2"
    assert ds["initial_x"].attrs == {"long_name": "initial value of position", "units": "m"}
    with pytest.raises(ValueError, match="units: unknown name 'y'"):
        ODESystem(["dx = -x"], states={"x": 1.0}, units={"y": "m"})
    # a system without units keeps the digest it had
    plain = ODESystem(["dx = -x"], states={"x": 1.0})
    assert "units" not in plain.to_dict()
