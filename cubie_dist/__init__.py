"""cubie_dist: run sweeps of millions of ODE runs on dask workers, get one Dataset.

>>> import cubie_dist as cd
>>> sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 1000), sigma=[8, 10, 12])
>>> spec = cd.SolverSpec(system, method="rk4", dt=1e-3, save_every=0.1)
>>> ds = cd.run_sweep(spec, sweep, duration=10.0)                    # in memory
>>> ds = cd.run_sweep(spec, sweep, duration=10.0, store="out.zarr")  # streamed, resumable

Modules: :mod:`~cubie_dist.sweep` (what to run), :mod:`~cubie_dist.chunks`
(chunk arithmetic), :mod:`~cubie_dist.planner` (chunk sizes from the
workers), :mod:`~cubie_dist.tasks` and :mod:`~cubie_dist.worker` (what runs
on a worker), :mod:`~cubie_dist.submission` (the submission loop),
:mod:`~cubie_dist.layout`, :mod:`~cubie_dist.sinks` and
:mod:`~cubie_dist.zarr_store` (where results go), :mod:`~cubie_dist.run`
(``run_sweep``).
"""

from cubie_dist.chunks import Chunk, Plan, plan_chunks
from cubie_dist.planner import plan
from cubie_dist.run import ResultTooLargeError, StoreUnreachableError, run_sweep
from cubie_dist.spec import SolverSpec
from cubie_dist.submission import ChunkFailedError
from cubie_dist.sweep import Sweep
from cubie_dist.worker import SolverPlugin, worker_compile_counts
from cubie_dist.zarr_store import IncompleteStoreError, StoreMismatchError, open_sweep

__all__ = [
    "Chunk",
    "ChunkFailedError",
    "IncompleteStoreError",
    "Plan",
    "ResultTooLargeError",
    "SolverPlugin",
    "SolverSpec",
    "StoreMismatchError",
    "StoreUnreachableError",
    "Sweep",
    "open_sweep",
    "plan",
    "plan_chunks",
    "run_sweep",
    "worker_compile_counts",
]
