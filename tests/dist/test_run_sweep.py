"""run_sweep on a real LocalCluster (2 worker processes) against direct solves.

The cluster and the direct solver use the same code and the same cpu
target, so the merged result must equal a direct ``cubie_kernel`` solve of
the same runs value for value, whatever the chunking and completion order.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import xarray as xr
from distributed import get_worker

import cubie_dist as cd
from cubie_dist.merge import ChunkFailedError, SweepAssembler
from cubie_dist.plan import plan_chunks
from cubie_dist.planner import CPU_MEMORY_SHARE, CPU_RUNS_PER_THREAD
from cubie_dist.progress import TextProgress, make_progress
from cubie_kernel import ODESystem, RunStatus, Solver
from cubie_kernel.status import FAILURE_MASK
from cubie_kernel.systems import lorenz

SETTINGS = dict(method="rk4", dt=0.01, save_every=0.25)
DURATION = 1.0
OUTPUTS = ("x", "y", "z", "status", "n_steps", "n_rejected")


@pytest.fixture(scope="module")
def spec():
    return cd.SolverSpec(lorenz(), **SETTINGS)


@pytest.fixture(scope="module")
def direct_solver():
    return Solver(lorenz(), target="cpu", **SETTINGS)


def direct_solve(solver, sweep, initial_values=None, parameters=None) -> xr.Dataset:
    """The same runs in one plain cubie_kernel solve (verbatim rows)."""
    system = solver.system
    rows = sweep.inputs()
    init = {**(initial_values or {}), **{k: v for k, v in rows.items() if k in system.state_names}}
    params = {**(parameters or {}), **{k: v for k, v in rows.items() if k not in init}}
    return solver.solve(init, params, duration=DURATION, grid="verbatim")


SWEEPS = {
    "grid": lambda: cd.Sweep.grid(
        rho=np.linspace(0.0, 40.0, 30), x=[1.0, -2.0, 3.5], sigma=[8.0, 10.0]
    ),
    "zip": lambda: cd.Sweep.zip(rho=np.linspace(5.0, 35.0, 97), y=np.linspace(-1.0, 1.0, 97)),
    "table": lambda: cd.Sweep.table(
        {"sigma": np.linspace(6.0, 14.0, 64), "z": np.linspace(0.0, 5.0, 64)}
    ),
    "sample": lambda: cd.Sweep.sample(
        150, {"rho": (0.0, 40.0), "x": (-5.0, 5.0)}, method="latin_hypercube", seed=7
    ),
}


@pytest.mark.parametrize("kind", list(SWEEPS))
def test_merged_result_equals_direct_solve(client, spec, direct_solver, kind):
    sweep = SWEEPS[kind]()
    fixed_init, fixed_params = {"x": 0.5, "z": 1.0}, {"beta": 2.5}
    fixed_init = {k: v for k, v in fixed_init.items() if k not in sweep.names}
    ds = cd.run_sweep(
        spec, sweep, DURATION, fixed_init, fixed_params,
        client=client, max_chunk_runs=13, progress=False,
    )
    expected = direct_solve(direct_solver, sweep, fixed_init, fixed_params)
    assert ds.attrs["plan_n_chunks"] == -(-sweep.n_runs // 13)
    np.testing.assert_array_equal(ds["time"].values, expected["time"].values)
    labels = ["initial_" + n if n in "xyz" else n for n in sweep.names]
    if kind == "grid":
        assert ds["x"].dims == (*labels, "time")
        assert ds["status"].dims == tuple(labels)
        for label, axis in zip(labels, sweep.axes.values()):
            np.testing.assert_array_equal(ds[label].values, axis)
        for name in OUTPUTS:
            want = expected[name].values.reshape(sweep.shape + expected[name].shape[1:])
            np.testing.assert_array_equal(ds[name].values, want, err_msg=name)
    else:
        assert ds["x"].dims == ("run", "time")
        np.testing.assert_array_equal(ds["run"].values, np.arange(sweep.n_runs))
        for label, values in zip(labels, sweep.inputs().values()):
            np.testing.assert_array_equal(ds[label].values, values)
        for name in OUTPUTS:
            np.testing.assert_array_equal(ds[name].values, expected[name].values, err_msg=name)
    assert not (ds["status"].values & FAILURE_MASK).any()


def test_attrs_record_spec_sweep_and_plan(client, spec, tmp_path):
    sweep = cd.Sweep.zip(rho=[10.0, 20.0, 28.0], x=[1.0, 2.0, 3.0])
    ds = cd.run_sweep(spec, sweep, DURATION, parameters={"sigma": 9.0}, client=client,
                      progress=False)
    attrs = ds.attrs
    assert ODESystem(**json.loads(attrs["system_definition"])) == spec.system
    assert attrs["system"] == "lorenz"
    assert json.loads(attrs["solver_settings"]) == SETTINGS
    assert cd.Sweep.from_dict(json.loads(attrs["sweep"])) == sweep
    assert attrs["spec_token"] == spec.token() and attrs["sweep_token"] == sweep.token()
    assert attrs["plan_n_chunks"] == 1 and attrs["plan_chunk_runs"] == 3
    assert attrs["plan_per_run_bytes"] == spec.per_run_bytes(DURATION)
    assert attrs["parameter_sigma"] == 9.0 and attrs["parameter_beta"] == 8.0 / 3.0
    assert attrs["initial_y"] == 0.0 and "initial_x" not in attrs
    assert attrs["target"] == "cpu"
    for key, value in attrs.items():  # netCDF attribute types only
        ok = isinstance(value, (str, int, float, np.number)) or (
            isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iuf"
        )
        assert ok and not isinstance(value, bool), (key, value)
    # netCDF3 (scipy) for the attrs, a zarr round trip for the whole Dataset
    xr.Dataset(attrs=attrs).to_netcdf(tmp_path / "attrs.nc", engine="scipy")
    ds.to_zarr(tmp_path / "sweep.zarr", consolidated=False)
    back = xr.open_zarr(tmp_path / "sweep.zarr", consolidated=False).load()
    np.testing.assert_array_equal(back["x"].values, ds["x"].values)
    assert back.attrs["sweep"] == attrs["sweep"]


def test_plan_asks_the_workers(client, spec):
    limits = client.run(lambda dask_worker: dask_worker.memory_manager.memory_limit)
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 1000))
    plan = cd.plan(spec, sweep, DURATION, client)
    assert plan.n_workers == 2
    assert plan.budget_bytes == int(0.8 * int(CPU_MEMORY_SHARE * min(limits.values())))
    assert len(plan) == 8 and plan.limited_by == "balance"  # 125 runs >= 64 fill
    small = cd.plan(spec, cd.Sweep.grid(rho=np.linspace(0, 50, 200)), DURATION, client)
    assert small.chunk_runs >= CPU_RUNS_PER_THREAD and len(small) == 3


def test_numerical_failure_is_a_status_not_an_error(client, spec):
    sweep = cd.Sweep.grid(rho=[10.0, 1e8, 28.0])  # rho=1e8: RK4 at dt=0.01 blows up
    ds = cd.run_sweep(spec, sweep, DURATION, client=client, progress=False)
    status = ds["status"].values
    assert status[0] == 0 and status[2] == 0
    assert status[1] & int(RunStatus.NONFINITE_STATE)
    assert np.isfinite(ds["x"].values[[0, 2]]).all()


class ExplodingLorenz(ODESystem):
    """Lorenz whose code generation raises inside a dask worker (only there)."""

    def python_functions(self, precision=np.float64):
        try:
            get_worker()
        except ValueError:
            return super().python_functions(precision)
        raise RuntimeError("boom: injected failure on the worker")


def test_failing_chunk_fails_the_sweep_with_its_run_range(client):
    definition = {**lorenz().to_dict(), "name": "exploding_lorenz"}
    spec = cd.SolverSpec(ExplodingLorenz(**definition), **SETTINGS)
    sweep = cd.Sweep.grid(rho=np.linspace(0.0, 40.0, 100))
    with pytest.raises(ChunkFailedError) as info:
        cd.run_sweep(spec, sweep, DURATION, client=client, max_chunk_runs=10, progress=False,
                     retries=1)
    error = info.value
    chunk = error.chunk
    assert f"runs [{chunk.start}, {chunk.stop})" in str(error)
    assert chunk.stop - chunk.start == 10 and chunk.start % 10 == 0
    assert "after 1 retries" in str(error)
    assert "boom: injected failure on the worker" in str(error)
    assert "python_functions" in error.worker_traceback  # the worker's own frames
    assert isinstance(error.__cause__, RuntimeError)

    def chunk_tasks(dask_scheduler):
        return [k for k in dask_scheduler.tasks if "cubie-chunk" in str(k)]

    deadline = time.monotonic() + 10
    while client.run_on_scheduler(chunk_tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(chunk_tasks) == []  # outstanding chunks cancelled


def test_embedded_default_cluster(spec, direct_solver):
    sweep = cd.Sweep.grid(rho=np.linspace(0.0, 40.0, 100), sigma=np.linspace(8.0, 12.0, 10))
    ds = cd.run_sweep(spec, sweep, DURATION, progress=False)  # client=None
    expected = direct_solve(direct_solver, sweep)
    for name in OUTPUTS:
        want = expected[name].values.reshape(sweep.shape + expected[name].shape[1:])
        np.testing.assert_array_equal(ds[name].values, want, err_msg=name)
    assert ds.attrs["n_workers"] >= 1
    with pytest.raises(ValueError):  # nothing left behind as the default client
        from distributed import default_client

        default_client()


# ------------------------------------------------------------- merge, no cluster
def _fake_chunk(start: int, stop: int) -> xr.Dataset:
    run = np.arange(start, stop)
    return xr.Dataset(
        {
            "x": (("run", "time"), run[:, None] * 10.0 + np.arange(3.0), {"long_name": "x"}),
            "status": (("run",), (run % 3).astype(np.int32)),
        },
        coords={"run": run, "time": [0.0, 0.5, 1.0], "rho": ("run", run * 0.5)},
        attrs={"kernel_seconds": 0.5, "target": "cpu", "parameter_beta": 1.0},
    )


@pytest.mark.parametrize("kind", ["zip", "grid"])
def test_assembler_accepts_chunks_in_any_order_without_concat(monkeypatch, kind):
    def no_concat(*args, **kwargs):
        raise AssertionError("xr.concat must not be used")

    monkeypatch.setattr(xr, "concat", no_concat)
    sweep = (cd.Sweep.zip(rho=np.arange(23) * 0.5) if kind == "zip"
             else cd.Sweep.grid(a=np.arange(23.0)))
    plan = plan_chunks(23, 1, [100], max_chunk_runs=5)
    results = []
    for order in (list(plan), list(plan)[::-1]):
        assembler = SweepAssembler(sweep, sweep.names)
        for chunk in order:
            ds = _fake_chunk(chunk.start, chunk.stop)
            assembler.add(chunk, ds if kind == "zip" else ds.drop_vars("rho"))
        results.append(assembler.dataset({"extra": "yes"}))
    xr.testing.assert_identical(results[0], results[1])
    ds = results[0]
    lead = "run" if kind == "zip" else "a"
    np.testing.assert_array_equal(ds["x"].values, np.arange(23)[:, None] * 10.0 + np.arange(3.0))
    assert ds["x"].dims == (lead, "time") and ds["x"].attrs == {"long_name": "x"}
    assert ds.attrs["kernel_seconds"] == 0.5 * len(plan) and ds.attrs["extra"] == "yes"
    assert "parameter_beta" not in ds.attrs


def test_assembler_refuses_an_incomplete_sweep():
    sweep = cd.Sweep.zip(rho=np.arange(10.0))
    assembler = SweepAssembler(sweep, ["rho"])
    chunk = plan_chunks(10, 1, [100], max_chunk_runs=5)[0]
    assembler.add(chunk, _fake_chunk(chunk.start, chunk.stop))
    with pytest.raises(RuntimeError, match=f"only {chunk.n_runs} of 10 runs"):
        assembler.dataset({})


def test_text_progress_bar():
    stream = io.StringIO()
    bar = TextProgress(100, 4, stream=stream, delay=0.0, refresh=0.0)
    for _ in range(4):
        bar.update(25)
    bar.close()
    text = stream.getvalue()
    assert "100/100 runs" in text and "4/4 chunks" in text and "100%" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    hidden = TextProgress(100, 4, stream=quiet, delay=60.0)
    hidden.update(100)
    hidden.close()
    assert quiet.getvalue() == ""  # short sweeps print nothing
    silent = make_progress(False, 100, 4)
    silent.update(100)
    silent.close()
