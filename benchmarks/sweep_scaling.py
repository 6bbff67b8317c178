"""Sweep scaling: ``run_sweep`` on a 2-worker LocalCluster vs one direct solve.

200,000 Lorenz runs (a 1000 x 200 grid over rho and sigma), float64,
classical RK4, dt = 1e-3, duration 1.0 (1,000 steps), final state only
(``save_every=None``), cpu target. The direct solve is one
``cubie_kernel.Solver.solve`` in this process (numba's prange over all
cores); the sweep runs on a ``LocalCluster`` of 2 worker processes x 1
thread, each with ``NUMBA_NUM_THREADS=1``, so both use the same cores.
Both are compiled first, cluster start-up is excluded, and the two are
timed alternately (best of ``--repeats``) so both see the same machine load.

Prints both times, the parallel efficiency (direct time / sweep time,
target >= 0.85), the sweep's overhead per chunk ((sweep - direct) /
chunks), the sweep's wall time outside the kernel (dask, transfers, merge:
the part that is not CPU contention), the wall time per chunk of a sweep of
many tiny chunks, and checks that both give identical final states.

Usage: python benchmarks/sweep_scaling.py [--runs N] [--duration T] [--tiny-chunks K]
       [--repeats R]
"""

from __future__ import annotations

import argparse
import logging
import time

import numba
import numpy as np
from distributed import Client, LocalCluster

import cubie_dist as cd
from cubie_kernel import Solver
from cubie_kernel.systems import lorenz

DT = 1e-3
N_WORKERS = 2


def make_sweep(n_runs: int) -> cd.Sweep:
    n_sigma = 200 if n_runs % 200 == 0 else 1
    return cd.Sweep.grid(
        rho=np.linspace(0.0, 28.0, n_runs // n_sigma), sigma=np.linspace(8.0, 12.0, n_sigma)
    )


def direct_solve(solver: Solver, sweep: cd.Sweep, duration: float):
    return solver.solve(parameters=sweep.inputs(), duration=duration, grid="verbatim")


def warm_workers(client: Client, spec: cd.SolverSpec) -> None:
    """Compile the spec on every worker (tiny sweeps until each has built it)."""
    tiny = cd.Sweep.zip(rho=np.linspace(1.0, 2.0, 8 * N_WORKERS))
    for _ in range(20):
        cd.run_sweep(spec, tiny, 2 * DT, client=client, max_chunk_runs=1, progress=False)
        if all(n >= 1 for n in cd.worker_compile_counts(client).values()):
            return
    raise RuntimeError("could not warm every worker")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--tiny-chunks", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    settings = dict(method="rk4", dt=DT, save_every=None, target="cpu")
    system = lorenz()
    sweep = make_sweep(args.runs)
    spec = cd.SolverSpec(system, **settings)
    solver = Solver(system, **settings)
    direct_solve(solver, make_sweep(2), 2 * DT)  # compile

    with LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
        env={"NUMBA_NUM_THREADS": "1"},
    ) as cluster, Client(cluster, set_as_default=False) as client:
        warm_workers(client, spec)
        plan = cd.plan(spec, sweep, args.duration, client)
        t_direct = t_sweep = float("inf")
        for _ in range(args.repeats):  # interleaved: both see the same machine load
            start = time.perf_counter()
            expected = direct_solve(solver, sweep, args.duration)
            t_direct = min(t_direct, time.perf_counter() - start)
            start = time.perf_counter()
            ds = cd.run_sweep(spec, sweep, args.duration, client=client, progress=False)
            elapsed = time.perf_counter() - start
            if elapsed < t_sweep:
                t_sweep, kernel_s = elapsed, ds.attrs["kernel_seconds"]

        tiny_sweep = make_sweep(10 * args.tiny_chunks)
        start = time.perf_counter()
        tiny = cd.run_sweep(spec, tiny_sweep, 10 * DT, client=client,
                            max_chunk_runs=10, progress=False)
        t_tiny = time.perf_counter() - start
        counts = cd.worker_compile_counts(client)

    same = all(
        np.array_equal(ds[v].values.reshape(-1, ds[v].shape[-1]), expected[v].values)
        for v in ("x", "y", "z")
    )
    n_chunks = ds.attrs["plan_n_chunks"]
    n_steps = round(args.duration / DT)
    work = sweep.n_runs * n_steps
    print(f"Lorenz RK4 float64, {sweep.n_runs:,} runs x {n_steps:,} steps, final state only, "
          f"cpu target, best of {args.repeats}")
    print(f"  direct Solver.solve, {numba.get_num_threads()} numba threads: "
          f"{t_direct:8.2f} s  ({work / t_direct / 1e6:.1f} M run-steps/s)")
    print(f"  run_sweep, LocalCluster {N_WORKERS} workers x 1 thread:  "
          f"{t_sweep:8.2f} s  ({work / t_sweep / 1e6:.1f} M run-steps/s)")
    print(f"    plan: {n_chunks} chunks of <= {ds.attrs['plan_chunk_runs']:,} runs "
          f"(set by {plan.limited_by})")
    print(f"  parallel efficiency (direct / sweep):   {t_direct / t_sweep:8.3f}   (target >= 0.85)")
    print(f"  overhead per chunk ((sweep - direct) / chunks): "
          f"{(t_sweep - t_direct) / n_chunks * 1e3:8.1f} ms")
    # kernel seconds summed over chunks / workers: the sweep's time inside the
    # kernel; what is left of the wall time is dask, transfers and the merge
    print(f"  sweep wall - kernel time per worker: {t_sweep - kernel_s / N_WORKERS:8.2f} s "
          f"({(t_sweep - kernel_s / N_WORKERS) / t_sweep:.1%} of the sweep)")
    n_tiny = tiny.attrs["plan_n_chunks"]
    print(f"  tiny-chunk sweep: {n_tiny} chunks of 10 runs x 10 steps in {t_tiny:.2f} s = "
          f"{t_tiny / n_tiny * 1e3:.1f} ms wall per chunk ({N_WORKERS} workers)")
    print(f"  identical final states: {same}; compiles per worker: {sorted(counts.values())}")
    if not same:
        raise SystemExit("sweep and direct solve differ")


if __name__ == "__main__":
    main()
