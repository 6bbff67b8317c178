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
from cubie_dist.chunks import Chunk, plan_chunks
from cubie_dist.inputs import coordinate_name
from cubie_dist.layout import SweepLayout
from cubie_dist.planner import CPU_MEMORY_SHARE, CPU_RUNS_PER_THREAD
from cubie_dist.progress import TextProgress, make_progress
from cubie_dist.sinks import MemorySink
from cubie_dist.submission import ChunkFailedError
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


#: Chunks of each sweep with max_chunk_runs=13 (the 64-run cpu fill of one worker
#: thread is above the cap, so 13 binds): a run axis is cut every 13 runs; the
#: (30, 3, 2) grid's later axes hold 6 runs, so blocks take 13 // 6 = 2 rho values:
#: blocks (2, 3, 2) of 12 runs, 30 / 2 = 15 of them.
EXPECTED_CHUNKS = {  # kind: (n_chunks, chunk_runs)
    "grid": (15, 12),
    "zip": (8, 13),     # 97 = 7 x 13 + 6
    "table": (5, 13),   # 64 = 4 x 13 + 12
    "sample": (12, 13),  # 150 = 11 x 13 + 7
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
    n_chunks, chunk_runs = EXPECTED_CHUNKS[kind]
    assert ds.attrs["plan_n_chunks"] == n_chunks
    assert ds.attrs["plan_chunk_runs"] == chunk_runs
    assert ds.attrs["plan_limited_by"] == "max_chunk_runs"
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
    # small: the values are in the coordinates, from which the sweep is rebuilt
    assert json.loads(attrs["sweep"]) == {
        "kind": "zip", "names": ["rho", "x"], "n_runs": 3, "shape": [3],
    }
    assert cd.Sweep.zip(rho=ds["rho"].values, x=ds["initial_x"].values).token() == (
        attrs["sweep_token"]
    )
    assert attrs["Conventions"] == "CF-1.10"
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
    # 200 runs: balance would give 25-run chunks, below one thread's 64-run
    # fill: chunks of 64, 3 x 64 + 8
    small = cd.plan(spec, cd.Sweep.grid(rho=np.linspace(0, 50, 200)), DURATION, client)
    assert small.chunk_runs == CPU_RUNS_PER_THREAD == 64 and len(small) == 4
    assert small.limited_by == "min_chunk_runs" and small[-1] == Chunk(3, 192, 200)


def test_numerical_failure_is_a_status_not_an_error(client, spec):
    sweep = cd.Sweep.grid(rho=[10.0, 1e8, 28.0])  # rho=1e8: RK4 at dt=0.01 blows up
    ds = cd.run_sweep(spec, sweep, DURATION, client=client, progress=False)
    status = ds["status"].values
    assert status[0] == 0 and status[2] == 0
    assert status[1] & int(RunStatus.NONFINITE_STATE)
    assert np.isfinite(ds["x"].values[[0, 2]]).all()


class ExplodingLorenz(ODESystem):
    """Lorenz whose code generation raises inside a dask worker (only there)."""

    def lane_functions(self, precision=np.float64):  # what the kernels are built from
        try:
            get_worker()
        except ValueError:
            return super().lane_functions(precision)
        raise RuntimeError("boom: injected failure on the worker")


def test_failing_chunk_fails_the_sweep_with_its_run_range(client):
    definition = {**lorenz().to_dict(), "name": "exploding_lorenz"}
    spec = cd.SolverSpec(ExplodingLorenz(**definition), **SETTINGS)
    sweep = cd.Sweep.grid(rho=np.linspace(0.0, 40.0, 100))
    assert cd.ChunkFailedError is ChunkFailedError
    with pytest.raises(ChunkFailedError) as info:
        cd.run_sweep(spec, sweep, DURATION, client=client, max_chunk_runs=10, progress=False,
                     retries=1)
    error = info.value
    chunk = error.chunk
    assert f"runs [{chunk.start}, {chunk.stop})" in str(error)
    assert chunk.stop - chunk.start == 10 and chunk.start % 10 == 0
    assert "after 1 retries" in str(error)
    assert "boom: injected failure on the worker" in str(error)
    assert "lane_functions" in error.worker_traceback  # the worker's own frames
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


# ------------------------------------------------------------- memory sink, no cluster
def _fake_chunk(template: xr.Dataset, chunk: Chunk, time=None) -> xr.Dataset:
    """A chunk result shaped like the kernel's: every per-run variable of the
    template, values that encode (variable, run, time)."""
    run = np.arange(chunk.start, chunk.stop)
    time = template["time"].values if time is None else np.asarray(time)
    data_vars = {}
    for k, (name, var) in enumerate(template.data_vars.items()):
        if "run" not in var.dims:
            continue
        if var.dims == ("run", "time"):
            values = 1000.0 * k + run[:, None] * 10.0 + np.arange(time.size)
        else:
            assert var.dims == ("run",)
            values = k + run % 3
        data_vars[name] = (var.dims, values.astype(var.dtype), var.attrs)
    return xr.Dataset(
        data_vars,
        coords={"run": run, "time": time, "rho": ("run", run * 0.5)},
        attrs={"kernel_seconds": 0.5, "device_chunks": 1, "target": "cpu",
               "parameter_beta": 1.0},
    )


MEMORY_SWEEPS = {
    "zip": lambda: cd.Sweep.zip(rho=np.arange(23) * 0.5),
    "grid": lambda: cd.Sweep.grid(rho=np.arange(23) * 0.5),
    "grid2d": lambda: cd.Sweep.grid(rho=np.arange(10) * 0.5, sigma=[8.0, 10.0, 12.0]),
}


def _memory_sink(spec, sweep, max_chunk_runs):
    labels = tuple(coordinate_name(spec.system, n) for n in sweep.names)
    template = spec.empty_result(DURATION, swept=labels)
    plan = plan_chunks(sweep.n_runs, 1, [100], shape=sweep.shape, chunks_per_worker=1,
                       max_chunk_runs=max_chunk_runs)
    return MemorySink(SweepLayout(sweep, labels, plan, template)), plan, template


@pytest.mark.parametrize("kind", list(MEMORY_SWEEPS))
def test_memory_sink_accepts_chunks_in_any_order_without_concat(monkeypatch, spec, kind):
    def no_concat(*args, **kwargs):
        raise AssertionError("xr.concat must not be used")

    monkeypatch.setattr(xr, "concat", no_concat)
    sweep = MEMORY_SWEEPS[kind]()
    results = []
    for reverse in (False, True):
        sink, plan, template = _memory_sink(spec, sweep, max_chunk_runs=5)
        chunks = list(sink.todo())
        assert chunks == list(plan)
        for chunk in chunks[::-1] if reverse else chunks:
            sink.add(chunk, _fake_chunk(template, chunk))
        results.append(sink.finish({"extra": "yes"}))
    xr.testing.assert_identical(results[0], results[1])
    ds = results[0]
    # 23 runs in chunks of 5 (5, 5, 5, 5, 3); the (10, 3) grid in blocks (1, 3): 10
    assert len(plan) == (10 if kind == "grid2d" else 5)
    n_time = template.sizes["time"]
    runs = np.arange(sweep.n_runs)
    lead = ("run",) if kind == "zip" else tuple(sweep.names)
    names = list(template.data_vars)
    k_x, k_status = names.index("x"), names.index("status")
    want_x = 1000.0 * k_x + runs[:, None] * 10.0 + np.arange(n_time)
    want_status = k_status + runs % 3
    np.testing.assert_array_equal(ds["x"].values, want_x.reshape(sweep.shape + (n_time,)))
    np.testing.assert_array_equal(ds["status"].values, want_status.reshape(sweep.shape))
    assert ds["status"].dtype == template["status"].dtype
    assert ds["x"].dims == (*lead, "time") and ds["x"].attrs == template["x"].attrs
    np.testing.assert_array_equal(ds["time"].values, template["time"].values)
    if kind == "zip":
        np.testing.assert_array_equal(ds["run"].values, runs)
        np.testing.assert_array_equal(ds["rho"].values, runs * 0.5)
    else:
        for name, axis in sweep.axes.items():
            np.testing.assert_array_equal(ds[name].values, axis)
    assert ds.attrs["kernel_seconds"] == 0.5 * len(plan)
    assert ds.attrs["device_chunks"] == len(plan)
    assert ds.attrs["target"] == "cpu" and ds.attrs["extra"] == "yes"
    assert "parameter_beta" not in ds.attrs


def test_memory_sink_refuses_an_incomplete_sweep_and_foreign_chunks(spec):
    sweep = cd.Sweep.zip(rho=np.arange(10.0))
    sink, plan, template = _memory_sink(spec, sweep, max_chunk_runs=5)
    chunk = plan[0]
    assert chunk == Chunk(0, 0, 5)
    sink.add(chunk, _fake_chunk(template, chunk))
    with pytest.raises(RuntimeError, match="only 5 of 10 runs"):
        sink.finish({})
    with pytest.raises(ValueError, match="time"):  # another time axis
        sink.add(plan[1], _fake_chunk(template, plan[1], time=[0.0, 1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="returned 5 runs, expected 4"):  # wrong size
        sink.add(Chunk(1, 5, 9), _fake_chunk(template, plan[1]))


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


def test_text_progress_shows_rate_and_eta_after_compiling():
    stream = io.StringIO()
    bar = TextProgress(1000, 4, stream=stream, delay=0.0, refresh=0.0)
    assert "compile" in bar.line() and "runs/s" not in bar.line()
    bar.update(250)   # the first chunk: its time is mostly compiling
    assert "runs/s" not in bar.line()
    time.sleep(0.05)
    bar.update(250)
    line = bar.line()
    rate = float(line.split("runs/s")[0].split()[-1].replace(",", ""))
    assert 0 < rate <= 250 / 0.05 * 1.01  # runs since the first chunk over time since it
    eta = float(line.split("ETA ")[1].split()[0])
    assert eta == pytest.approx(500 / rate, abs=0.06)
    bar.update(500)
    assert "ETA" not in bar.line() and "100%" in bar.line()
    resumed = TextProgress(1000, 4, initial_runs=600, initial_chunks=3, stream=io.StringIO())
    assert resumed.line().startswith("[" + "#" * 18) and "600/1,000 runs  3/4 chunks" in resumed.line()
