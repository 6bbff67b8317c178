"""SolverPlugin: per-worker state, one compile per spec, data sent once per worker."""

from __future__ import annotations


import numpy as np
import pytest

import cubie_dist as cd
import cubie_kernel
from cubie_dist.tasks import run_chunk, task_resources
from cubie_dist.worker import PLUGIN_NAME, SolverPlugin
from cubie_kernel.systems import exponential_decay, lorenz


@pytest.fixture(scope="module")
def spec():
    # used only in this module, so the counts below start from zero
    return cd.SolverSpec(lorenz(), method="rk4", dt=0.02, save_every=0.5)


def decay_spec(dt: float) -> cd.SolverSpec:
    return cd.SolverSpec(exponential_decay(), method="euler", dt=dt, save_every=0.5)


# --------------------------------------------------------- plugin, no processes
def test_plugin_name_and_pickled_state():
    plugin = SolverPlugin(cache_size=3)
    assert plugin.name == PLUGIN_NAME == "cubie-solver"
    assert plugin.__getstate__() == {"cache_size": 3}
    with pytest.raises(ValueError, match="cache_size"):
        SolverPlugin(cache_size=0)


def test_cache_is_lru_keyed_by_token_and_target():
    plugin = SolverPlugin(cache_size=2)
    plugin.setup()
    a, b, c = decay_spec(0.1), decay_spec(0.2), decay_spec(0.3)
    solver_a = plugin.solver(a, "cpu")
    assert plugin.solver(a, "cpu") is solver_a and plugin.compile_count == 1
    plugin.solver(b, "cpu")
    plugin.solver(a, "cpu")  # a is now the most recent
    plugin.solver(c, "cpu")  # evicts b
    assert plugin.cached_keys == [(a.token(), "cpu"), (c.token(), "cpu")]
    assert plugin.compile_count == 3
    plugin.solver(b, "cpu")
    assert plugin.compile_count == 4
    # one registry per cached solver stack, never the process default
    registries = {id(plugin.registry(key)) for key in plugin.cached_keys}
    assert len(registries) == 2 and id(cubie_kernel.buffer_registry) not in registries
    assert plugin.solver(b, "cpu").registry is plugin.registry((b.token(), "cpu"))
    plugin.teardown()
    assert plugin.cached_keys == []


def test_run_chunk_outside_a_worker_uses_global_run_indices():
    spec = decay_spec(0.1)
    sweep = cd.Sweep.zip(k=[0.5, 1.0, 1.5, 2.0])
    inputs = cd_inputs(spec, sweep, initial_values={"y": 2.0})
    ds = run_chunk(spec, sweep, 1, 3, inputs, 1.0)
    np.testing.assert_array_equal(ds["run"].values, [1, 2])
    np.testing.assert_array_equal(ds["k"].values, [1.0, 1.5])
    assert "initial_y" not in ds.coords  # fixed inputs are not coordinates
    np.testing.assert_array_equal(ds["y"].isel(time=0).values, [2.0, 2.0])


def cd_inputs(spec, sweep, **fixed):
    from cubie_dist.inputs import resolve_inputs

    return resolve_inputs(spec.system, sweep, **fixed)


# ----------------------------------------------------------- worker processes
def test_each_worker_compiles_once_per_spec(client, spec):
    sweep = cd.Sweep.grid(rho=np.linspace(0.0, 30.0, 200), sigma=[9.0, 10.0])
    before = cd.worker_compile_counts(client)
    assert set(before.values()) <= {0}
    ds = cd.run_sweep(spec, sweep, 1.0, client=client, max_chunk_runs=10, progress=False)
    assert ds.attrs["plan_n_chunks"] == 40
    assert cd.worker_compile_counts(client) == {address: 1 for address in before}
    # the same spec again: warm workers, no new compile
    cd.run_sweep(spec, sweep, 1.0, client=client, max_chunk_runs=25, progress=False)
    assert cd.worker_compile_counts(client) == {address: 1 for address in before}


def _install_counters() -> None:
    """On a worker: count unpickled specs and sweeps from now on."""
    import cubie_dist.spec as spec_module
    from cubie_dist.sweep import Sweep

    counts = {"spec": 0, "sweep": 0}
    spec_module._test_counts = counts
    restore_spec = spec_module._restore
    from_dict = Sweep.from_dict.__func__

    def counting_restore(*args):
        counts["spec"] += 1
        return restore_spec(*args)

    def counting_from_dict(cls, data):
        counts["sweep"] += 1
        return from_dict(cls, data)

    # workers pickle what they forward to peers: keep the names pickle looks up
    counting_restore.__module__, counting_restore.__qualname__ = "cubie_dist.spec", "_restore"
    counting_from_dict.__name__ = counting_from_dict.__qualname__ = "from_dict"
    spec_module._restore = counting_restore
    Sweep.from_dict = classmethod(counting_from_dict)
    spec_module._test_undo = (restore_spec, from_dict)


def _read_and_remove_counters() -> dict:
    import cubie_dist.spec as spec_module
    from cubie_dist.sweep import Sweep

    restore_spec, from_dict = spec_module._test_undo
    spec_module._restore = restore_spec
    Sweep.from_dict = classmethod(from_dict)
    return spec_module._test_counts


def test_spec_and_sweep_travel_once_per_worker_not_per_chunk(client, spec):
    sweep = cd.Sweep.zip(rho=np.linspace(0.0, 30.0, 120), sigma=np.linspace(8, 12, 120))
    client.run(_install_counters)
    try:
        ds = cd.run_sweep(spec, sweep, 1.0, client=client, max_chunk_runs=10, progress=False)
    finally:
        counts = client.run(_read_and_remove_counters)
    assert ds.attrs["plan_n_chunks"] == 12
    # scattered to every worker once (broadcast), then reused by every chunk
    assert counts == {address: {"spec": 1, "sweep": 1} for address in counts}


# ------------------------------------------------------------- task attributes
def test_gpu_resource_only_where_workers_advertise_it():
    assert task_resources([{}, {"GPU": 1}]) == {"GPU": 1}
    assert task_resources([{}, {"memory": 4}]) is None
    assert task_resources([]) is None
