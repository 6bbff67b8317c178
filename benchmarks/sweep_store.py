"""Sweeps into a Zarr store: wall time, runs/s and the client's peak RSS by sweep size.

Lorenz, RK4 (dt 0.01, 100 steps), final state only, a rho x sigma grid of
10^5, 10^6 and 10^7 runs, on a 2-worker LocalCluster (one process per
size, so each peak RSS is that size's own). Printed per size: wall time of
``run_sweep(..., store=...)``, runs/s, the client process's peak RSS (it
holds the scheduler too) and the store's size. At 10^6 runs the same sweep
also runs in memory in the same process, alternating with the store runs
after one run of each: the baseline of the store's throughput ratio.
Peak RSS is read after the first store run, before any in-memory result
exists. Resuming the finished store is timed last.

Goals (issue 8): client peak RSS flat in n_runs and under 400 MB at 10^7,
store throughput >= 0.9x the in-memory path at 10^6, resume under 2 s.

    python benchmarks/sweep_store.py            # all sizes
    python benchmarks/sweep_store.py --sizes 5  # 10^5 only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = dict(method="rk4", dt=0.01, save_every=None, precision="float64")
DURATION = 1.0
REPEATS = 5


def sweep_of(exponent: int):
    import numpy as np

    import cubie_dist as cd

    n_sigma = 10 ** (exponent - 3) if exponent > 4 else 10
    n_rho = 10**exponent // n_sigma
    return cd.Sweep.grid(rho=np.linspace(0.0, 50.0, n_rho), sigma=np.linspace(5.0, 15.0, n_sigma))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def folder_mb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 1e6


def measure(exponent: int, baseline: bool) -> dict:
    """In this process: store run(s), optionally the in-memory baseline, a resume."""
    from distributed import Client, LocalCluster

    import cubie_dist as cd
    from cubie_kernel.systems import lorenz

    spec = cd.SolverSpec(lorenz(), **SETTINGS)
    sweep = sweep_of(exponent)
    out = {"n_runs": sweep.n_runs}
    folder = tempfile.mkdtemp(prefix="cubie-bench-")
    store = os.path.join(folder, "sweep.zarr")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.ERROR, env={"NUMBA_NUM_THREADS": "1"},
    ) as cluster, Client(cluster) as client:
        # compile on both workers first: only the sweep is timed
        cd.run_sweep(spec, sweep_of(4), DURATION, client=client, progress=False)

        def store_run():
            start = time.perf_counter()
            cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=store,
                         overwrite=True)
            return time.perf_counter() - start

        def memory_run():
            start = time.perf_counter()
            cd.run_sweep(spec, sweep, DURATION, client=client, progress=False)
            return time.perf_counter() - start

        first = store_run()
        out["peak_rss_mb"] = peak_rss_mb()  # before any in-memory result exists
        if exponent >= 7:
            out["store_s"] = first
        elif baseline:  # after one run of each, alternate: neither gets the warm-up
            memory_run()
            pairs = [(store_run(), memory_run()) for _ in range(REPEATS)]
            out["store_s"] = statistics.median(p[0] for p in pairs)
            out["memory_s"] = statistics.median(p[1] for p in pairs)
        else:
            out["store_s"] = statistics.median(store_run() for _ in range(REPEATS))
        out["store_mb"] = folder_mb(store)
        out["n_chunks"] = len(os.listdir(os.path.join(store, "cubie_chunks")))
        start = time.perf_counter()
        cd.run_sweep(spec, sweep, DURATION, client=client, progress=False, store=store)
        out["resume_s"] = time.perf_counter() - start
    shutil.rmtree(folder)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 6, 7],
                        help="exponents of the run counts (default 5 6 7)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.baseline)))
        return
    print(f"Lorenz RK4 dt {SETTINGS['dt']}, {DURATION / SETTINGS['dt']:.0f} steps, final state "
          f"only, 2-worker LocalCluster; median of {REPEATS} after one warm-up (one run at 10^7)")
    print(f"{'runs':>12} {'chunks':>7} {'store s':>9} {'runs/s':>12} {'peak RSS MB':>12} "
          f"{'store MB':>9} {'resume s':>9}")
    rows = []
    for exponent in args.sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(exponent)]
            + (["--baseline"] if exponent == 6 else []),
            capture_output=True, text=True, check=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['n_runs']:>12,} {row['n_chunks']:>7} {row['store_s']:>9.2f} "
              f"{row['n_runs'] / row['store_s']:>12,.0f} {row['peak_rss_mb']:>12.0f} "
              f"{row['store_mb']:>9.1f} {row['resume_s']:>9.2f}", flush=True)
    for row in rows:
        if "memory_s" in row:
            ratio = row["memory_s"] / row["store_s"]
            print(f"store / in-memory throughput at {row['n_runs']:,} runs: {ratio:.2f}x "
                  f"(in memory {row['memory_s']:.2f} s; goal >= 0.9x)")
    rss = [row["peak_rss_mb"] for row in rows]
    print(f"client peak RSS: {min(rss):.0f}-{max(rss):.0f} MB over "
          f"{rows[0]['n_runs']:,}-{rows[-1]['n_runs']:,} runs (goal: flat, < 400 MB)")
    print(f"resume of a finished store: max {max(r['resume_s'] for r in rows):.2f} s (goal < 2 s)")


if __name__ == "__main__":
    main()
