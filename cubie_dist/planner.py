"""``plan``: size a sweep's chunks from the kernel and from the workers.

:func:`plan` gathers the inputs of :func:`cubie_dist.chunks.plan_chunks`
and leaves the arithmetic to it:

Per-run bytes
    ``Solver(...).kernel.per_run_device_bytes(duration)`` of the exact spec
    (:meth:`SolverSpec.per_run_bytes`): inputs + saved outputs + registry
    scratch.
Worker budgets
    Asked of the workers with ``client.run`` (:func:`probe_worker`). A GPU
    worker (spec target ``"auto"`` or ``"cuda"`` on a worker that sees a
    GPU) offers the device's free memory, queried through numba.cuda on
    the worker, capped by its host share below (results come back through
    host memory). A cpu worker offers :data:`CPU_MEMORY_SHARE` of dask's
    memory limit (psutil's available memory when the worker has no limit):
    a finished chunk's arrays and their serialised copy on the way to the
    client live side by side.
Device fill (``min_chunk_runs``)
    GPU: SMs x :data:`GPU_THREADS_PER_SM` x :data:`GPU_WAVES` (4 waves of
    128-thread blocks per SM, enough to hide latency). cpu: worker threads
    x :data:`CPU_RUNS_PER_THREAD` (64 runs per thread keep a ``prange`` busy
    and amortise the ~10 ms dask round trip). The largest device binds.

The plan has about ``chunks_per_worker`` chunks per worker (at most that
many) where the sweep is long enough, and every chunk fits ``safety`` x the smallest
budget: see :mod:`cubie_dist.chunks` for the rules and their order. Chunks
are regular blocks of the sweep (a grid's axes), which a store's Zarr
chunks follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from distributed import Client

from cubie_kernel import targets
from cubie_kernel.inputs import check_finite_number

from cubie_dist.chunks import Plan, plan_chunks
from cubie_dist.spec import SolverSpec
from cubie_dist.sweep import Sweep

#: Threads per SM in one wave of the fill rule.
GPU_THREADS_PER_SM = 128
#: Waves per SM in the fill rule.
GPU_WAVES = 4
#: Runs per worker thread that fill a cpu worker.
CPU_RUNS_PER_THREAD = 64
#: Share of a worker's host memory limit one chunk may use.
CPU_MEMORY_SHARE = 0.5


@attrs.frozen
class WorkerInfo:
    """What one worker reported about itself (see :func:`probe_worker`).

    Attributes
    ----------
    address
        The worker's address.
    nthreads
        Dask threads of the worker.
    host_bytes
        Dask's memory limit, or available host memory if it has none.
    gpu
        Whether the worker sees a real CUDA GPU.
    gpu_free_bytes, sm_count
        Free device memory and multiprocessor count (0 without a GPU).
    resources
        The worker's advertised resources, e.g. ``{"GPU": 1}``.
    """

    address: str
    nthreads: int
    host_bytes: int
    gpu: bool
    gpu_free_bytes: int = 0
    sm_count: int = 0
    resources: dict = attrs.field(factory=dict)

    def target(self, requested: str) -> str:
        """The concrete target a spec asking for ``requested`` gets here."""
        if requested == "auto":
            return "cuda" if self.gpu else "cpu"
        return requested

    def budget_bytes(self, target: str) -> int:
        """Bytes one chunk may use on this worker for ``target``."""
        host = int(self.host_bytes * CPU_MEMORY_SHARE)
        if self.gpu and not targets.get_target(target).uses_host_cores:
            return min(self.gpu_free_bytes, host)
        return host

    def fill_runs(self, target: str) -> int:
        """Runs that fill this worker's device for ``target``."""
        if self.gpu and not targets.get_target(target).uses_host_cores:
            return max(1, self.sm_count) * GPU_THREADS_PER_SM * GPU_WAVES
        return max(1, self.nthreads) * CPU_RUNS_PER_THREAD


def probe_worker(dask_worker) -> dict[str, Any]:
    """Run on a worker (``client.run``): its threads, memory and GPU.

    GPU figures come from the device through :mod:`cubie_kernel.cuda_target`
    (the one module that imports numba.cuda), so the query runs in the
    worker's own CUDA context and sees its ``CUDA_VISIBLE_DEVICES``.
    """
    host = dask_worker.memory_manager.memory_limit
    if not host:
        host = targets.get_target("cpu").free_memory_bytes()
    info = {
        "address": dask_worker.address,
        "nthreads": int(dask_worker.state.nthreads),
        "host_bytes": int(host),
        "gpu": targets.gpu_available(),
        "resources": dict(dask_worker.state.total_resources),
    }
    if info["gpu"]:
        cuda = targets.get_target("cuda")
        info["gpu_free_bytes"] = int(cuda.free_memory_bytes())
        info["sm_count"] = int(cuda.multiprocessor_count())
    return info


def worker_infos(client: Client) -> list[WorkerInfo]:
    """Probe every worker of ``client``'s cluster, in address order.

    Raises
    ------
    RuntimeError
        If the cluster has no workers.
    """
    reports = client.run(probe_worker)
    if not reports:
        raise RuntimeError(
            "the cluster has no workers to plan for; start workers, or pass "
            "worker_budgets= to plan without a cluster"
        )
    return [WorkerInfo(**reports[address]) for address in sorted(reports)]


def check_duration(duration: Any) -> float:
    """``duration`` as a float > 0, else ValueError naming it."""
    duration = check_finite_number(duration, "duration")
    if duration <= 0:
        raise ValueError(f"duration must be > 0, got {duration}")
    return duration


def plan(
    spec: SolverSpec,
    sweep: Sweep,
    duration: float,
    client: Client | None = None,
    *,
    worker_budgets: Sequence[int] | None = None,
    min_chunk_runs: int | None = None,
    chunks_per_worker: int = 4,
    safety: float = 0.8,
    max_chunk_runs: int | None = None,
    workers: Sequence[WorkerInfo] | None = None,
) -> Plan:
    """Cut ``sweep`` into chunks that fit the workers that will run them.

    Parameters
    ----------
    spec, sweep, duration
        What is run: per-run bytes come from ``spec``'s kernel for ``duration``.
    client
        The cluster to plan for; its workers report memory, threads and
        GPUs. None (and no ``worker_budgets``): the embedded default cluster
        is started to be asked, then closed.
    worker_budgets
        Bytes per worker, overriding what workers report; with it no
        cluster is needed (``min_chunk_runs`` then defaults to one cpu
        thread's fill, :data:`CPU_RUNS_PER_THREAD`).
    min_chunk_runs
        Runs that fill a device; by default from the workers (module docstring).
    chunks_per_worker, safety, max_chunk_runs
        As in :func:`cubie_dist.chunks.plan_chunks`.
    workers
        Worker reports already gathered (:func:`worker_infos`), to skip probing.

    Returns
    -------
    Plan
        Inspectable: ``len(plan)``, ``plan.chunk_runs``, ``plan.chunks``;
        its repr is a short table.
    """
    if not isinstance(spec, SolverSpec):
        raise TypeError(f"spec must be a SolverSpec, got {type(spec).__name__}")
    if not isinstance(sweep, Sweep):
        raise TypeError(f"sweep must be a cubie_dist.Sweep, got {type(sweep).__name__}")
    per_run = spec.per_run_bytes(check_duration(duration))
    if worker_budgets is None and workers is None:
        if client is None:
            from cubie_dist.local import local_client

            with local_client() as local:
                workers = worker_infos(local)
        else:
            workers = worker_infos(client)
    if workers is not None:
        chosen = [w.target(spec.target) for w in workers]
        if worker_budgets is None:
            worker_budgets = [w.budget_bytes(t) for w, t in zip(workers, chosen)]
        if min_chunk_runs is None:
            min_chunk_runs = max(w.fill_runs(t) for w, t in zip(workers, chosen))
    if min_chunk_runs is None:
        min_chunk_runs = CPU_RUNS_PER_THREAD
    return plan_chunks(
        sweep.n_runs,
        per_run,
        worker_budgets,
        shape=sweep.shape,
        min_chunk_runs=min_chunk_runs,
        chunks_per_worker=chunks_per_worker,
        safety=safety,
        max_chunk_runs=max_chunk_runs,
    )
