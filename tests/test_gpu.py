"""On a real CUDA GPU: the cuda target agrees with the cpu target.

Skipped with the reason "no CUDA GPU visible" where there is none (see
conftest.py); ``CUBIE_REQUIRE_GPU=1`` (set by ``benchmarks/gpu_check.py``,
``make gpu-check``) turns that skip into a failure. Hardware contracts
a*b+c into FMAs, so agreement with the cpu target is to round-off, not bit
for bit as under the simulator; for adaptive methods a round-off difference
can flip one step's accept/reject decision, so those agree to the
integration tolerance and need not take the same number of steps.

Covered: every method x precision, buffer locations (local, shared, every
buffer shared, several blocks), device chunking (a batch split into >= 3
chunks equals the unsplit batch bit for bit: same kernel, same threads) and
a ``dask_cuda.LocalCUDACluster`` sweep with one GPU worker.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from cubie_kernel import Solver
from cubie_kernel.algorithms.tableaus import TABLEAUS
from cubie_kernel.systems import harmonic_oscillator, lorenz

pytestmark = pytest.mark.gpu

RHO = np.linspace(0.0, 28.0, 4096)
DURATION = 0.5
SOLVE = {"parameters": {"rho": RHO}, "duration": DURATION}
METHODS = sorted(TABLEAUS)
PRECISIONS = {"f64": np.float64, "f32": np.float32}
#: rtol = atol of the adaptive methods' step control, per precision.
SOLVER_TOLERANCE = {np.float64: 1e-8, np.float32: 1e-5}
#: Agreement with the cpu target (rtol = atol): fixed-step runs take the same
#: steps and differ by FMA round-off; adaptive runs differ by up to the tolerance.
FIXED_RTOL = {np.float64: 1e-9, np.float32: 2e-3}
ADAPTIVE_RTOL = {np.float64: 1e-6, np.float32: 1e-2}


def settings(method: str, precision) -> dict:
    """Solver settings of ``method`` at ``precision`` (save every 0.25)."""
    common = dict(method=method, save_every=0.25, precision=precision)
    if TABLEAUS[method].adaptive:
        tol = SOLVER_TOLERANCE[precision]
        return {**common, "rtol": tol, "atol": tol}
    return {**common, "dt": 1e-3}


def agreement_rtol(method: str, precision) -> float:
    return (ADAPTIVE_RTOL if TABLEAUS[method].adaptive else FIXED_RTOL)[precision]


@functools.cache
def cpu_reference(method: str, precision_id: str):
    """The cpu target's result for ``SOLVE`` (computed once per process)."""
    precision = PRECISIONS[precision_id]
    return Solver(lorenz(), target="cpu", **settings(method, precision)).solve(**SOLVE)


@functools.cache
def gpu_local_result(method: str, precision_id: str):
    """The cuda target's result for ``SOLVE`` with every buffer local (once per process)."""
    precision = PRECISIONS[precision_id]
    return Solver(lorenz(), target="cuda", **settings(method, precision)).solve(**SOLVE)


def assert_agrees(gpu, cpu, method: str, precision) -> None:
    rtol = agreement_rtol(method, precision)
    assert gpu.attrs["target"] == "cuda"
    np.testing.assert_array_equal(gpu.time.values, cpu.time.values)
    for name in ("x", "y", "z"):
        assert gpu[name].dtype == precision
        np.testing.assert_allclose(
            gpu[name].values, cpu[name].values, rtol=rtol, atol=rtol, err_msg=name
        )
    np.testing.assert_array_equal(gpu.status.values, 0)
    if not TABLEAUS[method].adaptive:
        np.testing.assert_array_equal(gpu.n_steps.values, cpu.n_steps.values)


@pytest.mark.parametrize("precision_id", list(PRECISIONS))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_and_precision_matches_cpu(method, precision_id):
    precision = PRECISIONS[precision_id]
    gpu = Solver(lorenz(), target="cuda", **settings(method, precision)).solve(**SOLVE)
    assert_agrees(gpu, cpu_reference(method, precision_id), method, precision)


def all_location_keys(method: str) -> list[str]:
    """Every ``<buffer>_location`` key of a Lorenz solver of ``method``."""
    solver = Solver(lorenz(), target="cpu", **settings(method, np.float64))
    kernel = solver.kernel
    return sorted(kernel.registry.location_keys(kernel.single_integrator))


LOCATIONS = {
    "state+stages": lambda method: {"state_location": "shared", "stages_location": "shared"},
    "all-shared": lambda method: {key: "shared" for key in all_location_keys(method)},
    # 32 threads per block: 128 blocks, each with its own shared slices
    "all-shared-32": lambda method: {
        "threads_per_block": 32, **{key: "shared" for key in all_location_keys(method)}
    },
}


@pytest.mark.parametrize("precision_id", list(PRECISIONS))
@pytest.mark.parametrize("locations_id", list(LOCATIONS))
@pytest.mark.parametrize("method", ["rk4", "dormand_prince_54"])
def test_buffer_locations_match_cpu_and_local(method, locations_id, precision_id):
    precision = PRECISIONS[precision_id]
    locations = LOCATIONS[locations_id](method)
    solver = Solver(lorenz(), target="cuda", **settings(method, precision), **locations)
    assert solver.kernel.shared_memory_elements > 0
    moved = solver.solve(**SOLVE)
    local = gpu_local_result(method, precision_id)
    cpu = cpu_reference(method, precision_id)
    assert_agrees(moved, cpu, method, precision)
    # Shared memory can keep NVVM from contracting a*b+c into an FMA where a
    # register would not: round-off again, not bit for bit.
    rtol = agreement_rtol(method, precision)
    for name in ("x", "y", "z"):
        np.testing.assert_allclose(
            moved[name].values, local[name].values, rtol=rtol, atol=rtol, err_msg=name
        )


@pytest.mark.parametrize(
    "method, precision, save_every",
    [("rk4", np.float32, None), ("dormand_prince_54", np.float64, 0.25)],
    ids=["rk4-f32-final", "dopri-f64-saves"],
)
def test_batch_beyond_the_memory_budget_is_split_and_equal(method, precision, save_every):
    config = {**settings(method, precision), "save_every": save_every}
    solver = Solver(lorenz(), target="cuda", **config)
    whole = solver.solve(**SOLVE)
    assert whole.attrs["device_chunks"] == 1
    per_run = solver.kernel.per_run_device_bytes(DURATION)
    # 80% of the budget (DEVICE_MEMORY_FRACTION) holds exactly 1000 runs:
    # 4096 runs go in 5 launches.
    budget = per_run * 1000 * 5 // 4 + per_run
    split = solver.solve(**SOLVE, memory_bytes=budget)
    assert split.attrs["device_chunks"] == 5
    for name in ("x", "y", "z", "status", "n_steps", "n_rejected"):
        np.testing.assert_array_equal(split[name].values, whole[name].values, err_msg=name)
    np.testing.assert_array_equal(whole.status.values, 0)


def test_gpu_device_chunks_and_observables():
    system = harmonic_oscillator()
    solver = Solver(system, target="cuda", method="rk4", dt=1e-3, save_every=0.5)
    x0 = np.linspace(-1, 1, 10_000)
    budget = int(solver.kernel.per_run_device_bytes(2.0) * 3000 / 0.8)
    ds = solver.solve(initial_values={"x": x0}, duration=2.0, memory_bytes=budget)
    assert ds.attrs["device_chunks"] == 4
    t = ds.time.values[None, :]
    np.testing.assert_allclose(ds.x.values, x0[:, None] * np.cos(t), atol=1e-10)
    # assert_allclose wants equal shapes: the energy is conserved at every save
    energy = np.broadcast_to(0.5 * x0[:, None] ** 2, ds.energy.shape)
    np.testing.assert_allclose(ds.energy.values, energy, atol=1e-10)


def test_auto_target_picks_the_gpu():
    solver = Solver(lorenz(), dt=1e-3)
    assert solver.settings.target == "cuda"


def test_local_cuda_cluster_sweep_equals_cpu_solve():
    """A real dask-cuda cluster, one GPU worker: the embedded default of a GPU
    machine (``cubie_dist.local``), several chunks, target resolved on the worker."""
    dask_cuda = pytest.importorskip("dask_cuda")
    import cubie_dist as cd
    from cubie_dist.local import start_local_cluster
    from distributed import Client

    config = dict(method="rk4", dt=1e-3, save_every=0.25, precision="float64")
    spec = cd.SolverSpec(lorenz(), **config)  # target "auto": cuda on a GPU worker
    sweep = cd.Sweep.grid(rho=np.linspace(0.0, 28.0, 64), sigma=[8.0, 10.0, 12.0])
    cluster = start_local_cluster(n_workers=1, CUDA_VISIBLE_DEVICES="0")
    try:
        assert isinstance(cluster, dask_cuda.LocalCUDACluster)
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=120)
            assert len(client.nthreads()) == 1
            ds = cd.run_sweep(
                spec, sweep, DURATION, client=client, max_chunk_runs=48, progress=False
            )
    finally:
        cluster.close()
    assert ds.attrs["target"] == "cuda"
    assert ds.attrs["plan_n_chunks"] >= 3
    assert ds["x"].dims == ("rho", "sigma", "time")
    direct = Solver(lorenz(), target="cpu", **config).solve(
        parameters=sweep.inputs(), duration=DURATION, grid="verbatim"
    )
    for name in ("x", "y", "z"):
        want = direct[name].values.reshape(sweep.shape + direct[name].shape[1:])
        np.testing.assert_allclose(ds[name].values, want, rtol=1e-9, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(ds["n_steps"].values, direct["n_steps"].values.reshape(sweep.shape))
    np.testing.assert_array_equal(ds["status"].values, 0)
