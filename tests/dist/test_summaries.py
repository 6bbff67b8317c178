"""Summaries-only sweeps through cubie_dist: LocalCluster, Zarr store, sweep files."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import yaml

import cubie_dist as cd
from cubie_dist.sweep_file import SweepFileError, parse_sweep_file
from cubie_kernel import Output, Solver
from cubie_kernel.systems import harmonic_oscillator

OUTPUT = Output(
    states=[], observables=[], save_every=0.1,
    summaries=["mean", "std", "max", "min", "peaks[2]", "dxdt_max"],
    summarise_every=1.0, final_state=True,
)
SETTINGS = dict(method="rk45", rtol=1e-6, atol=1e-8, output=OUTPUT)
DURATION = 3.0
SUMMARIES = ("x_mean", "x_std", "x_max", "x_min", "x_peaks", "x_peak_times", "x_dxdt_max",
             "v_mean", "energy_max", "x_final", "v_final", "status", "n_steps")


def test_summaries_only_sweep_of_100k_runs_into_a_store_equals_a_direct_solve(client, tmp_path):
    spec = cd.SolverSpec(harmonic_oscillator(), **SETTINGS)
    sweep = cd.Sweep.grid(omega=np.linspace(0.5, 4.0, 1000), x=np.linspace(-1.0, 1.0, 100))
    assert sweep.n_runs == 100_000
    path = tmp_path / "summaries.zarr"
    stored = cd.run_sweep(spec, sweep, DURATION, client=client, store=path, progress=False)
    rows = sweep.inputs()
    direct = Solver(harmonic_oscillator(), target="cpu", **SETTINGS).solve(
        {"x": rows["x"]}, {"omega": rows["omega"]}, duration=DURATION, grid="verbatim"
    )
    loaded = xr.open_zarr(path).load()
    assert "x" not in loaded and "time" in loaded.coords
    assert loaded["x_max"].dims == ("omega", "initial_x", "window")
    assert loaded["x_peaks"].dims == ("omega", "initial_x", "window", "peak")
    assert loaded["x_max"].attrs["cell_methods"] == "time: maximum"
    np.testing.assert_array_equal(loaded["window_start"].values, [0.0, 1.0, 2.0])
    for name in SUMMARIES:
        values = loaded[name].values
        flat = values.reshape((sweep.n_runs,) + values.shape[2:])
        np.testing.assert_array_equal(flat, direct[name].values, err_msg=name)
    # the whole result is small: summaries only, no trajectories
    assert stored.attrs["complete"] == 1


def test_sweep_files_take_a_declared_output():
    document = {
        "system": {"example": "harmonic_oscillator"},
        "solver": {"method": "rk45", "output": {"states": [], "observables": [], "save_every": 0.1,
                                                "summaries": ["max", "peaks[3]"],
                                                "summarise_every": 1.0}},
        "sweep": {"kind": "grid", "axes": {"omega": {"linspace": [1, 2, 3]}}},
        "duration": 2.0,
    }
    job = parse_sweep_file(yaml.safe_load(yaml.safe_dump(document)))
    same = cd.SolverSpec(harmonic_oscillator(), method="rk45", output=Output(
        states=[], observables=[], save_every=0.1, summaries=["max", "peaks[3]"],
        summarise_every=1.0))
    assert job.spec.token() == same.token()
    document["solver"]["output"]["summaries"] = ["maximum"]
    with pytest.raises(SweepFileError, match="solver: .*unknown metric 'maximum'"):
        parse_sweep_file(document)


def test_planner_sees_summary_bytes():
    trajectories = cd.SolverSpec(harmonic_oscillator(), method="rk45",
                                 output=Output(save_every=0.01))
    summaries = cd.SolverSpec(harmonic_oscillator(), method="rk45", output=Output(
        states=[], observables=[], save_every=0.01, summaries=["mean", "max"]))
    # 1001 rows x 3 variables vs 1 window x 3 variables x 2 results (+ accumulators)
    assert summaries.per_run_bytes(10.0) < trajectories.per_run_bytes(10.0) / 10
