"""Events through cubie_dist: a leaky integrate-and-fire neuron over a grid of
input currents and time constants, its spikes recorded with resets, on a
LocalCluster into a Zarr store (and from a sweep file)."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
import yaml

import cubie_dist as cd
from cubie_dist.sweep_file import parse_sweep_file
from cubie_kernel import Output, Solver
from cubie_kernel.systems import ODESystem
from cubie_kernel.systems.events import Event

LIF = dict(
    equations=["dv = (el - v + r*i)/tau"], states={"v": -70.0},
    parameters={"i": 2.0, "tau": 10.0},
    constants={"el": -70.0, "r": 10.0, "v_th": -55.0, "v_reset": -75.0}, name="lif",
)
EVENT = {"name": "spike", "condition": "v - v_th", "direction": 1, "reset": ["v = v_reset"],
         "max_records": 40}
SETTINGS = dict(method="tsit5", rtol=1e-9, atol=1e-9, events=[EVENT],
                output=Output(states=[], observables=[], final_state=True))
DURATION = 200.0


def spike_period(i: float, tau: float) -> float:
    """Closed form: the interval between spikes of a neuron reset to -75 mV."""
    v_inf = -70.0 + 10.0 * i
    return tau * math.log((v_inf + 75.0) / (v_inf + 55.0))


def test_spike_sweep_on_a_local_cluster_equals_a_direct_solve(client, tmp_path):
    system = ODESystem(**LIF)
    spec = cd.SolverSpec(system, **SETTINGS)
    sweep = cd.Sweep.grid(i=np.linspace(1.6, 4.0, 7), tau=np.array([5.0, 10.0, 20.0]))
    path = tmp_path / "lif.zarr"
    cd.run_sweep(spec, sweep, DURATION, client=client, store=path, progress=False)
    rows = sweep.inputs()
    direct = Solver(system, target="cpu", **SETTINGS).solve(
        {"v": -70.0}, {"i": rows["i"], "tau": rows["tau"]}, duration=DURATION,
        grid="verbatim")
    loaded = xr.open_zarr(path).load()
    assert loaded["spike_time"].dims == ("i", "tau", "record")
    assert loaded["spike_count"].dims == ("i", "tau")
    for name in ("spike_time", "spike_v", "spike_count", "v_final", "status", "n_steps"):
        flat = loaded[name].values.reshape((sweep.n_runs,) + loaded[name].shape[2:])
        np.testing.assert_array_equal(flat, direct[name].values, err_msg=name)
    # the intervals between recorded spikes are the closed-form period
    for i in loaded["i"].values:
        for tau in loaded["tau"].values:
            times = loaded["spike_time"].sel(i=i, tau=tau).values
            times = times[~np.isnan(times)]
            assert len(times) >= 3
            np.testing.assert_allclose(np.diff(times), spike_period(i, tau), rtol=1e-7)


def test_a_sweep_file_takes_events():
    document = {
        "system": LIF,
        "solver": {"method": "rk45", "rtol": 1e-9, "atol": 1e-9, "events": [EVENT],
                   "max_resets": 500,
                   "output": {"final_state": True, "states": [], "observables": []}},
        "sweep": {"kind": "grid", "axes": {"i": [2.0, 3.0]}},
        "duration": 50.0,
    }
    job = parse_sweep_file(yaml.safe_load(yaml.safe_dump(document)))
    assert job.spec.settings["events"] == (Event(**EVENT),)
    assert Event.from_dict(job.spec.canonical_settings()["events"][0]) == Event(**EVENT)
    # an Event and its mapping make one spec
    same = cd.SolverSpec(job.spec.system, **{**job.spec.settings, "events": [Event(**EVENT)]})
    assert same.token() == job.spec.token()
    settings = job.spec.settings
    solved = Solver(job.spec.system, target="cpu", **settings).solve(
        {"v": -70.0}, {"i": [2.0, 3.0]}, duration=50.0)
    for run, i in enumerate((2.0, 3.0)):
        times = solved["spike_time"][run].values
        times = times[~np.isnan(times)]
        np.testing.assert_allclose(np.diff(times), spike_period(i, 10.0), rtol=1e-7)
