"""``cd.plan``: kernel-measured per-run bytes, worker reports, budgets, scale.

No cluster here: budgets are passed explicitly (``worker_budgets=``) or as
worker reports (``workers=``); the report-gathering path runs against real
workers in test_run_sweep.py.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

import cubie_dist as cd
from cubie_dist.planner import (
    CPU_MEMORY_SHARE,
    CPU_RUNS_PER_THREAD,
    GPU_THREADS_PER_SM,
    GPU_WAVES,
    WorkerInfo,
)
from cubie_kernel.systems import lorenz

DURATION = 10.0


@pytest.fixture(scope="module")
def spec():
    return cd.SolverSpec(lorenz(), method="rk4", dt=0.01, save_every=0.1)


@pytest.fixture(scope="module")
def dense_spec():
    """Ten times the saved points of ``spec``: more bytes per run."""
    return cd.SolverSpec(lorenz(), method="rk4", dt=0.01, save_every=0.01)


def test_per_run_bytes_come_from_the_kernel(spec):
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 1000))
    plan = cd.plan(spec, sweep, DURATION, worker_budgets=[10**9])
    assert plan.per_run_bytes == spec.per_run_bytes(DURATION)
    # 101 saves x 3 states x 8 bytes dominate one Lorenz run
    assert plan.per_run_bytes > 101 * 3 * 8


@pytest.mark.parametrize("budget", [10**5, 3 * 10**5, 10**6, 10**7, 10**9])
@pytest.mark.parametrize("safety", [0.5, 0.8, 1.0])
def test_chunk_bytes_never_exceed_the_budget(spec, budget, safety):
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 1000), sigma=[8.0, 10.0, 12.0])
    plan = cd.plan(spec, sweep, DURATION, worker_budgets=[budget, 2 * budget], safety=safety)
    assert plan.budget_bytes == int(safety * budget)
    for chunk in plan:
        assert chunk.n_runs * plan.per_run_bytes <= plan.budget_bytes
    assert sum(chunk.n_runs for chunk in plan) == sweep.n_runs


def test_chunks_respond_to_budget(spec):
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 10_000))
    counts = [
        len(cd.plan(spec, sweep, DURATION, worker_budgets=[b], min_chunk_runs=1))
        for b in (10**6, 10**5, 10**4)
    ]
    assert counts[0] < counts[1] < counts[2]


def test_chunks_respond_to_worker_count(spec):
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 10_000))
    plans = [
        cd.plan(spec, sweep, DURATION, worker_budgets=[10**9] * n, min_chunk_runs=1)
        for n in (1, 2, 8)
    ]
    assert [len(p) for p in plans] == [4, 8, 32]  # 4 chunks per worker
    assert plans[0].chunk_runs > plans[1].chunk_runs > plans[2].chunk_runs


def test_chunks_respond_to_per_run_bytes(spec, dense_spec):
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 10_000))
    light = cd.plan(spec, sweep, DURATION, worker_budgets=[10**6])
    heavy = cd.plan(dense_spec, sweep, DURATION, worker_budgets=[10**6])
    assert heavy.per_run_bytes > 5 * light.per_run_bytes
    assert len(heavy) > len(light) and heavy.chunk_runs < light.chunk_runs
    assert heavy.limited_by == light.limited_by == "budget"


def test_min_chunk_runs_fills_the_device(spec):
    # 10_000 runs, 2 workers: balance wants 8 chunks of 1_250; a 4_096-run
    # device fill makes chunks of 4_096: 2 x 4_096 + 1_808
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 10_000))
    plan = cd.plan(spec, sweep, DURATION, worker_budgets=[10**10] * 2, min_chunk_runs=4096)
    assert len(plan) == 3 and plan.limited_by == "min_chunk_runs"
    assert [chunk.n_runs for chunk in plan] == [4096, 4096, 1808]


def test_grid_sweeps_get_aligned_blocks(spec):
    # (100, 10) grid, at most 25 runs per chunk: every block holds whole sigma
    # rows of 10 runs, 25 // 10 = 2 rho values -> blocks (2, 10), 100 / 2 = 50 chunks
    axes = dict(rho=np.linspace(0, 50, 100), sigma=np.linspace(8, 12, 10))
    grid = cd.Sweep.grid(**axes)
    plan = cd.plan(spec, grid, DURATION, worker_budgets=[10**9], max_chunk_runs=25)
    assert plan.shape == (100, 10)
    assert plan.split_axis == 0 and plan.block_shape == (2, 10) and plan.chunk_runs == 20
    assert len(plan) == 50 and plan[1] == cd.Chunk(1, 20, 40)
    assert plan.chunks.block(plan[1]) == (slice(2, 4), slice(0, 10))
    # the same 1_000 runs as a zip sweep are one axis: chunks of 25, 40 of them
    rho, sigma = (a.ravel() for a in np.meshgrid(*axes.values(), indexing="ij"))
    zipped = cd.Sweep.zip(rho=rho, sigma=sigma)
    plan = cd.plan(spec, zipped, DURATION, worker_budgets=[10**9], max_chunk_runs=25)
    assert plan.shape == (1000,) and plan.block_shape == (25,) and len(plan) == 40


def test_worker_reports_set_budget_and_fill(spec):
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 100_000))
    cpu = [WorkerInfo("tcp://a:1", nthreads=2, host_bytes=8 * 10**9, gpu=False),
           WorkerInfo("tcp://b:1", nthreads=4, host_bytes=4 * 10**9, gpu=False)]
    plan = cd.plan(spec, sweep, DURATION, workers=cpu)
    assert plan.n_workers == 2
    assert plan.budget_bytes == int(0.8 * CPU_MEMORY_SHARE * 4 * 10**9)  # smallest binds
    assert plan.chunk_runs >= 4 * CPU_RUNS_PER_THREAD  # largest device fills

    gpu = WorkerInfo("tcp://g:1", nthreads=1, host_bytes=64 * 10**9, gpu=True,
                     gpu_free_bytes=10**9, sm_count=100, resources={"GPU": 1})
    assert gpu.target("auto") == "cuda" and gpu.target("cpu") == "cpu"
    assert gpu.budget_bytes("cuda") == 10**9  # device memory, below the host share
    assert gpu.budget_bytes("cpu") == int(CPU_MEMORY_SHARE * 64 * 10**9)
    assert gpu.fill_runs("cuda") == 100 * GPU_THREADS_PER_SM * GPU_WAVES
    plan = cd.plan(spec, sweep, DURATION, workers=[gpu])
    assert plan.budget_bytes == int(0.8 * 10**9)
    assert plan.chunk_runs >= min(sweep.n_runs, 100 * GPU_THREADS_PER_SM * GPU_WAVES)


def test_a_billion_run_grid_plans_fast_in_bounded_memory(spec):
    sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 1000), sigma=np.linspace(5, 15, 1000),
                          beta=np.linspace(1, 3, 1000))
    assert sweep.n_runs == 10**9
    tracemalloc.start()
    start = time.perf_counter()
    plan = cd.plan(spec, sweep, DURATION, worker_budgets=[16 * 10**9] * 4)
    chunks = [plan[0], plan[len(plan) // 2], plan[-1]]
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 10 * 2**20  # nothing per run or per chunk
    assert plan.n_runs == 10**9 and chunks[-1].stop == 10**9
    assert plan.chunk_bytes <= plan.budget_bytes
    # the budget binds (balance would ask 62.5e6 runs): as many whole
    # (sigma, beta) planes of 10**6 runs as fit
    fit = plan.budget_bytes // plan.per_run_bytes
    assert 10**6 <= fit < 62_500_000 and plan.limited_by == "budget"
    assert plan.block_shape == (fit // 10**6, 1000, 1000)
    assert len(plan) == -(-1000 // (fit // 10**6))
    assert "chunk" in repr(plan) and "1,000,000,000 runs" in repr(plan)


def test_a_run_larger_than_the_budget_is_refused(spec):
    with pytest.raises(ValueError, match="per_run_bytes"):
        cd.plan(spec, cd.Sweep.grid(rho=[1.0]), DURATION, worker_budgets=[100])


def test_plan_checks_its_arguments(spec):
    sweep = cd.Sweep.grid(rho=[1.0])
    with pytest.raises(ValueError, match="duration"):
        cd.plan(spec, sweep, -1.0, worker_budgets=[10**9])
    with pytest.raises(TypeError, match="SolverSpec"):
        cd.plan("spec", sweep, 1.0, worker_budgets=[10**9])
    with pytest.raises(TypeError, match="Sweep"):
        cd.plan(spec, [1.0], 1.0, worker_budgets=[10**9])
