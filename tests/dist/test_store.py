"""Sweeps into Zarr stores: equal to the in-memory result, resumable, refusing mismatches.

Every comparison is against an independent reference: a direct
``cubie_kernel`` solve of the same runs, or a second, uninterrupted run
whose store must hold the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import cubie_dist as cd
from cubie_dist.chunks import plan_chunks
from cubie_dist.layout import SweepLayout
from cubie_dist.run import prepare_sweep
from cubie_dist.sinks import StoreSink
from cubie_dist.tasks import run_chunk
from cubie_dist.zarr_store import MARKERS, ZarrStore
from cubie_kernel import Solver
from cubie_kernel.systems import lorenz

SETTINGS = dict(method="rk4", dt=0.01, save_every=0.25)
DURATION = 1.0
DATA = ("x", "y", "z", "status", "n_steps", "n_rejected")

SWEEPS = {
    "grid": lambda: cd.Sweep.grid(rho=np.linspace(0.0, 40.0, 30), x=[1.0, -2.0, 3.5], sigma=[8.0, 10.0]),
    "zip": lambda: cd.Sweep.zip(rho=np.linspace(5.0, 35.0, 97), y=np.linspace(-1.0, 1.0, 97)),
    "table": lambda: cd.Sweep.table({"sigma": np.linspace(6.0, 14.0, 64), "z": np.linspace(0.0, 5.0, 64)}),
    "sample": lambda: cd.Sweep.sample(150, {"rho": (0.0, 40.0), "x": (-5.0, 5.0)}, seed=7),
}


@pytest.fixture(scope="module")
def spec():
    return cd.SolverSpec(lorenz(), **SETTINGS)


def direct(sweep, duration=DURATION, parameters=None):
    """The same runs in one plain cubie_kernel solve, in run order."""
    system = lorenz()
    rows = sweep.inputs()
    init = {k: v for k, v in rows.items() if k in system.state_names}
    params = {**(parameters or {}), **{k: v for k, v in rows.items() if k not in init}}
    return Solver(system, target="cpu", **SETTINGS).solve(
        init, params, duration=duration, grid="verbatim"
    )


def flat(ds, name, sweep):
    """A variable of a sweep-shaped result as (run, ...) in run order."""
    values = np.asarray(ds[name].values)
    return values.reshape((sweep.n_runs,) + values.shape[len(sweep.shape):])


def markers(path):
    folder = os.path.join(path, MARKERS)
    return {
        int(name.split(".")[0]): os.stat(os.path.join(folder, name)).st_mtime_ns
        for name in os.listdir(folder) if name.endswith(".json")
    }


def store_files(path):
    """Every chunk file of the store's arrays, as bytes (markers and metadata excluded)."""
    out = {}
    for root, _, files in os.walk(path):
        if MARKERS in root.split(os.sep):
            continue
        for name in files:
            if name != "zarr.json":
                full = os.path.join(root, name)
                out[os.path.relpath(full, path)] = open(full, "rb").read()
    return out


# ------------------------------------------------------------------ equality
@pytest.mark.parametrize("kind", list(SWEEPS))
def test_store_equals_in_memory_result_and_direct_solve(client, spec, tmp_path, kind):
    sweep = SWEEPS[kind]()
    path = tmp_path / "out.zarr"
    memory = cd.run_sweep(spec, sweep, DURATION, client=client, max_chunk_runs=13, progress=False)
    stored = cd.run_sweep(
        spec, sweep, DURATION, client=client, max_chunk_runs=13, progress=False, store=path
    )
    reference = direct(sweep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user's plain open_zarr: lazy, and no warnings
        opened = xr.open_zarr(path)
    assert all(isinstance(opened[n].data, da.Array) for n in DATA)
    loaded = opened.load()
    for ds in (memory, stored.load(), loaded):
        assert set(DATA) <= set(ds.data_vars)
        for name in DATA:
            np.testing.assert_array_equal(flat(ds, name, sweep), reference[name].values)
    # same layout and values as the in-memory result, coordinates included
    xr.testing.assert_identical(memory.drop_attrs(), loaded.drop_attrs())
    if kind == "grid":
        assert loaded["x"].dims == ("rho", "initial_x", "sigma", "time")
    else:
        assert loaded["x"].dims == ("run", "time")
        np.testing.assert_array_equal(loaded["run"].values, np.arange(sweep.n_runs))
    for key in ("spec_token", "sweep_token", "solver_settings", "system_definition", "plan_n_chunks"):
        assert loaded.attrs[key] == memory.attrs[key]
    counts = json.loads(loaded.attrs["status_counts"])
    assert counts == {"0": sweep.n_runs}
    assert loaded.attrs["complete"] == 1


def test_store_zarr_chunks_are_the_task_blocks(client, spec, tmp_path):
    sweep = SWEEPS["grid"]()
    path = tmp_path / "out.zarr"
    cd.run_sweep(spec, sweep, DURATION, client=client, max_chunk_runs=13, progress=False, store=path)
    group = zarr.open_group(str(path), mode="r")
    # 13 runs at most; the later axes (3 x 2 = 6 runs) fit twice: blocks of (2, 3, 2, time)
    assert group["x"].chunks == (2, 3, 2, 5)
    assert group["status"].chunks == (2, 3, 2)
    assert len(markers(path)) == 15  # 30 / 2 blocks along rho


def test_client_side_writing_gives_the_same_bytes(client, spec, tmp_path):
    sweep = SWEEPS["zip"]()
    kwargs = dict(client=client, max_chunk_runs=13, progress=False)
    cd.run_sweep(spec, sweep, DURATION, store=tmp_path / "w.zarr", **kwargs)
    cd.run_sweep(spec, sweep, DURATION, store=tmp_path / "c.zarr", write_on="client", **kwargs)
    assert store_files(tmp_path / "w.zarr") == store_files(tmp_path / "c.zarr")


# ------------------------------------------------------------------ resume
def test_resume_rewrites_only_chunks_without_a_marker(client, spec, tmp_path):
    sweep = SWEEPS["zip"]()
    kwargs = dict(client=client, max_chunk_runs=13, progress=False)
    path = tmp_path / "out.zarr"
    cd.run_sweep(spec, sweep, DURATION, store=path, **kwargs)
    reference = store_files(path)
    before = markers(path)
    assert len(before) == 8
    # chunks 1 and 6 "were interrupted": no marker, garbage in their regions
    for j in (1, 6):
        os.remove(path / MARKERS / f"{j}.json")
    group = zarr.open_group(str(path), mode="r+")
    group["x"][13:26] = np.nan
    group["x"][78:91] = -1.0
    assert store_files(path) != reference
    messages = []
    cd.run_sweep(spec, sweep, DURATION, store=path, report=messages.append, **kwargs)
    assert any("6 of 8 chunks" in m for m in messages), messages
    after = markers(path)
    assert sorted(j for j in after if after[j] != before.get(j)) == [1, 6]
    assert store_files(path) == reference


def test_resuming_a_finished_store_submits_nothing(client, spec, tmp_path):
    sweep = SWEEPS["table"]()
    path = tmp_path / "out.zarr"
    cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=path)
    count = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    ds = cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=path)
    after = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    # only the scatter of spec and layout (to two workers) and their release
    assert after - count < 20
    np.testing.assert_array_equal(ds["x"].values, direct(sweep)["x"].values)


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(duration=2.0), "duration (1.0 stored, 2.0 asked)"),
        (dict(parameters={"beta": 2.0}), "parameters ({} stored, {'beta': 2.0} asked)"),
        (dict(spec=dict(method="rk4", dt=0.02, save_every=0.25)), "spec (token"),
        (dict(sweep="zip2"), "sweep (token"),
    ],
)
def test_a_different_call_on_a_store_is_refused_naming_the_difference(
    client, spec, tmp_path, change, named
):
    sweep = SWEEPS["zip"]()
    path = tmp_path / "out.zarr"
    cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=path)
    files, marks = store_files(path), markers(path)
    other_spec = cd.SolverSpec(lorenz(), **change["spec"]) if "spec" in change else spec
    other_sweep = cd.Sweep.zip(rho=np.linspace(5.0, 35.0, 97), y=np.linspace(-1.0, 2.0, 97)) \
        if "sweep" in change else sweep
    args = (other_spec, other_sweep, change.get("duration", DURATION))
    before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    with pytest.raises(cd.StoreMismatchError) as info:
        cd.run_sweep(*args, parameters=change.get("parameters"), client=client, store=path)
    assert named in str(info.value) and "overwrite" in str(info.value)
    after = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert after == before                      # nothing reached the scheduler
    assert store_files(path) == files and markers(path) == marks   # nothing changed
    # overwrite=True replaces it with the new sweep
    ds = cd.run_sweep(
        *args, parameters=change.get("parameters"), client=client, store=path,
        overwrite=True, progress=False,
    )
    reference = direct(other_sweep, args[2], change.get("parameters")) if "spec" not in change \
        else Solver(lorenz(), target="cpu", **change["spec"]).solve(
            {"y": other_sweep.inputs()["y"]}, {"rho": other_sweep.inputs()["rho"]},
            duration=args[2], grid="verbatim",
        )
    np.testing.assert_array_equal(ds["x"].values, reference["x"].values)


def test_a_path_that_is_not_a_store_is_never_replaced(client, spec, tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(cd.StoreMismatchError, match="not a Zarr store"):
            cd.run_sweep(spec, SWEEPS["zip"](), DURATION, client=client, store=folder,
                         overwrite=overwrite)
    assert (folder / "thesis.tex").read_text() == "keep me"


def test_open_sweep_refuses_an_unfinished_store(client, spec, tmp_path):
    sweep = SWEEPS["zip"]()
    call = prepare_sweep(spec, sweep, DURATION, store=tmp_path / "s.zarr")
    plan = plan_chunks(  # 97 runs in blocks of 40: 40 + 40 + 17
        sweep.n_runs, spec.per_run_bytes(DURATION), [10**9], chunks_per_worker=1,
        max_chunk_runs=40,
    )
    layout = SweepLayout(sweep, call.labels, plan, call.template)
    call.store.create(layout, call.identity, {})
    chunk = plan.chunks[1]
    ds = run_chunk(spec, sweep, chunk.start, chunk.stop, call.inputs, DURATION)
    call.store.write_chunk(layout, chunk, ds)
    with pytest.raises(cd.IncompleteStoreError, match="1 of 3 chunks"):
        cd.open_sweep(tmp_path / "s.zarr")
    partial = cd.open_sweep(tmp_path / "s.zarr", allow_incomplete=True)
    assert partial.attrs["chunks_done"] == 1
    x = partial["x"].values
    np.testing.assert_array_equal(x[chunk.slice], direct(sweep)["x"].values[chunk.slice])
    assert np.isnan(x[: chunk.start]).all() and np.isnan(x[chunk.stop:]).all()


# ------------------------------------------------------------------ memory bounds
def test_too_large_in_memory_result_is_refused_before_submitting(client, spec):
    before = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    with pytest.raises(cd.ResultTooLargeError, match=r"needs .* but the client may use .*store"):
        cd.run_sweep(spec, SWEEPS["grid"](), DURATION, client=client,
                     result_memory_fraction=1e-12)
    after = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)
    assert after == before


@pytest.mark.parametrize("sweep", [
    cd.Sweep.grid(rho=np.linspace(0.0, 50.0, 100_000), sigma=np.linspace(5.0, 15.0, 10_000)),
    cd.Sweep.sample(10**9, {"rho": (0.0, 50.0), "sigma": (5.0, 15.0)}, seed=1),
], ids=["grid", "sample"])
def test_a_billion_run_store_costs_the_client_o_chunks(spec, tmp_path, sweep):
    """Template, markers and the chunk iterator of 10**9 runs: no per-run array anywhere."""
    tracemalloc.start()
    try:
        call = prepare_sweep(spec, sweep, DURATION, store=tmp_path / "big.zarr")
        plan = plan_chunks(
            sweep.n_runs, spec.per_run_bytes(DURATION), [10**8] * 4, shape=sweep.shape
        )
        layout = SweepLayout(sweep, call.labels, plan, call.template)
        call.store.create(layout, call.identity, {})
        sink = StoreSink(layout, call.store, call.store.done())
        todo = sink.todo()
        first, second = next(todo), next(todo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert (first.index, second.index) == (0, 1) and second.start == first.stop
    assert plan.n_chunks > 1000
    opened = xr.open_zarr(tmp_path / "big.zarr", consolidated=True)
    assert opened["x"].size == 10**9 * opened.sizes["time"]
    assert opened["x"].dims[:-1] == ((("rho", "sigma")) if sweep.kind == "grid" else ("run",))


# ------------------------------------------------------------------ a worker dies
def test_killed_worker_mid_sweep_loses_nothing(spec, tmp_path):
    """SIGKILL a worker process while chunks are written: they re-run, the store is whole."""
    import logging
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    sweep = cd.Sweep.zip(rho=np.linspace(0.0, 30.0, 600), sigma=np.full(600, 10.0))
    slow = cd.SolverSpec(lorenz(), method="rk4", dt=1e-3, save_every=None)
    duration = 100.0  # 100,000 steps per run: ~0.1 s per 25-run chunk
    path = tmp_path / "out.zarr"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.CRITICAL, env={"NUMBA_NUM_THREADS": "1"},
    ) as cluster, Client(cluster) as client:
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("ds", cd.run_sweep(
            slow, sweep, duration, client=client, progress=False, store=path, max_chunk_runs=25,
        )))
        thread.start()
        deadline = time.monotonic() + 300
        while not (path / MARKERS).is_dir() or len(markers(path)) < 2:
            assert time.monotonic() < deadline and thread.is_alive(), "no chunk finished"
            time.sleep(0.05)
        pids = client.run(os.getpid)
        victim = sorted(pids)[0]
        os.kill(pids[victim], signal.SIGKILL)
        done_at_kill = len(markers(path))
        thread.join(timeout=600)
        assert not thread.is_alive()
    assert done_at_kill < 24, "the sweep ended before the kill: make the chunks slower"
    ds = result["ds"]
    reference = Solver(lorenz(), target="cpu", method="rk4", dt=1e-3).solve(
        parameters={"rho": sweep.inputs()["rho"], "sigma": 10.0}, duration=duration,
        grid="verbatim",
    )
    for name in DATA:
        np.testing.assert_array_equal(ds[name].values, reference[name].values)
    assert len(markers(path)) == 24


def test_store_is_removed_by_overwrite_only_when_asked(client, spec, tmp_path):
    """overwrite=True on the same sweep recomputes everything (fresh markers)."""
    sweep = SWEEPS["zip"]()
    path = tmp_path / "out.zarr"
    cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=path)
    before = markers(path)
    cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=path)
    assert markers(path) == before
    cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=path, overwrite=True)
    assert all(markers(path)[j] != before[j] for j in before)
    shutil.rmtree(path)


def test_store_paths_checked_before_anything_runs(spec, tmp_path):
    sweep = SWEEPS["zip"]()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_sweep(spec, sweep, DURATION, store=tmp_path / "missing" / "s.zarr")
    (tmp_path / "empty.zarr").mkdir()  # an empty folder made for the store is used
    call = prepare_sweep(spec, sweep, DURATION, store=tmp_path / "empty.zarr")
    assert call.resume is False
    with pytest.raises(ValueError, match="write_on must be one of"):
        prepare_sweep(spec, sweep, DURATION, store=tmp_path / "s.zarr", write_on="nodes")
    with pytest.raises(TypeError, match="store must be a path"):
        prepare_sweep(spec, sweep, DURATION, store=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.zarr"]
