"""Chunk tasks and the plugin on an in-process scheduler (distributed's gen_cluster).

Kept apart from modules with a module-scoped LocalCluster: gen_cluster's
leak checks and loop cleanup interfere with a cluster alive in the same
process, whose close then hangs.
"""

from __future__ import annotations

import asyncio

import numpy as np
from distributed import Worker
from distributed.utils_test import gen_cluster

import cubie_dist as cd
from cubie_dist.chunks import plan_chunks
from cubie_dist.inputs import coordinate_name, resolve_inputs
from cubie_dist.layout import SweepLayout
from cubie_dist.tasks import call_token, key_name, submit_chunk
from cubie_dist.worker import PLUGIN_NAME, SolverPlugin
from cubie_kernel.systems import exponential_decay

#: the processes check would count other modules' leftovers as leaks
NO_PROCESS_CHECK = {"processes": False}


def decay_spec(dt: float) -> cd.SolverSpec:
    return cd.SolverSpec(exponential_decay(), method="euler", dt=dt, save_every=0.5)


def cd_inputs(spec, sweep, **fixed):
    return resolve_inputs(spec.system, sweep, **fixed)


@gen_cluster(client=True, nthreads=[], clean_kwargs=NO_PROCESS_CHECK)
async def test_plugin_setup_and_teardown_on_a_worker(c, s):
    await c.register_plugin(SolverPlugin(cache_size=2))
    async with Worker(s.address, nthreads=1) as worker:
        plugin = worker.plugins[PLUGIN_NAME]
        assert isinstance(plugin, SolverPlugin)
        assert plugin.cache_size == 2 and plugin.compile_count == 0
        assert plugin.cached_keys == []
        plugin.solver(decay_spec(0.1), "cpu")
        assert await cd.worker_compile_counts(c) == {worker.address: 1}
        # registering again (every run_sweep does) keeps the warm cache
        await c.register_plugin(SolverPlugin())
        assert worker.plugins[PLUGIN_NAME] is plugin and plugin.compile_count == 1
    assert plugin.cached_keys == []  # teardown on close



@gen_cluster(client=True, nthreads=[("127.0.0.1", 1)], clean_kwargs=NO_PROCESS_CHECK)
async def test_chunk_tasks_carry_key_retries_resources_and_futures(c, s, a):
    spec = decay_spec(0.1)
    sweep = cd.Sweep.zip(k=np.linspace(0.5, 2.0, 20))
    inputs = cd_inputs(spec, sweep)
    plan = plan_chunks(20, 1, [100], max_chunk_runs=5)
    chunk = plan[2]
    labels = (coordinate_name(spec.system, "k"),)
    layout = SweepLayout(sweep, labels, plan, spec.empty_result(1.0, swept=labels))
    futures = await c.scatter({"spec-key": spec, "layout-key": layout})
    name = key_name(spec.token(), sweep.token(),
                    call_token(spec, sweep, inputs, 1.0, 0, 0, plan.block_shape))
    future = submit_chunk(c, chunk, futures["spec-key"], futures["layout-key"], name,
                          (inputs, 1.0, 0.0, 0.0), retries=2, resources={"GPU": 1})
    while future.key not in s.tasks:
        await asyncio.sleep(0.01)
    task = s.tasks[future.key]
    assert future.key == (name, chunk.index)
    assert name.startswith(f"cubie-chunk-{spec.token()[:16]}-{sweep.token()[:16]}-")
    assert task.retries == 2 and task.resource_restrictions == {"GPU": 1}
    assert task.state == "no-worker"  # the only worker advertises no GPU
    # the spec and layout are dependencies (scattered data), not task arguments
    assert {dep.key for dep in task.dependencies} == {"spec-key", "layout-key"}
    # same work, same key; other times or other blocks, another key
    again = key_name(spec.token(), sweep.token(),
                     call_token(spec, sweep, inputs, 1.0, 0, 0, plan.block_shape))
    assert again == name
    assert plan.block_shape == (5,)
    assert key_name(spec.token(), sweep.token(),
                    call_token(spec, sweep, inputs, 2.0, 0, 0, (5,))) != name
    assert key_name(spec.token(), sweep.token(),
                    call_token(spec, sweep, inputs, 1.0, 0, 0, (4,))) != name
    await c.cancel([future])
