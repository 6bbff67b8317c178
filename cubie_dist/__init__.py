"""cubie_dist: run sweeps of millions of ODE runs on dask workers, get one Dataset.

>>> import cubie_dist as cd
>>> sweep = cd.Sweep.grid(rho=np.linspace(0, 50, 1000), sigma=[8, 10, 12])
>>> spec = cd.SolverSpec(system, method="rk4", dt=1e-3, save_every=0.1)
>>> ds = cd.run_sweep(spec, sweep, duration=10.0)   # embedded local cluster

Note that ``cubie_dist.plan`` is the planning FUNCTION; the chunk
arithmetic lives in the module ``cubie_dist.plan`` (import its names with
``from cubie_dist.plan import plan_chunks``).
"""

from cubie_dist.plan import Chunk, Plan, plan_chunks
from cubie_dist.sweep import Sweep
from cubie_dist.merge import ChunkFailedError
from cubie_dist.planner import plan
from cubie_dist.run import run_sweep
from cubie_dist.spec import SolverSpec
from cubie_dist.worker import SolverPlugin, worker_compile_counts

__all__ = [
    "Chunk",
    "ChunkFailedError",
    "Plan",
    "SolverPlugin",
    "SolverSpec",
    "Sweep",
    "plan",
    "plan_chunks",
    "run_sweep",
    "worker_compile_counts",
]
