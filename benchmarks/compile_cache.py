"""Compile cache: cubie_kernel's compile time in a fresh process, with an empty and with a filled on-disk cache.

Setup: Lorenz (sigma 10, beta 8/3, rho 28, u0 = (1, 0, 0)), method
"dormand_prince_54" (Dormand-Prince 5(4)), default controller, cpu target,
final state only, 1 run, t in [0, 10]; float64 with rtol 1e-6, atol 1e-9,
then float32 with rtol 1e-4, atol 1e-6.

Each measurement is a new Python process (``subprocess.run([sys.executable,
"-c", code])``, from the repository root) that imports numpy and
cubie_kernel, builds the Solver, compiles it (``Solver.compile()``: compile,
or load from the disk cache), solves the 1 run twice and prints its timings
as JSON. Its compile time is what ``Solver.compile()`` took; what the first
solve costs beyond that (xarray's first Dataset imports dask, for one) is
kept apart from it.
Per precision, in this order, with a new empty temporary folder:

- off: ``CUBIE_CACHE_DIR=off`` (compiled in memory only: the reference);
- cold: ``CUBIE_CACHE_DIR`` = the empty folder (compiles, fills the cache);
- warm: ``--repeats`` (default 3) more processes with the SAME folder; the
  median of each timing is printed.

Printed per row: process start-up (the wall time of the whole child process
seen from here, less the time its own code ran: interpreter start-up and
shutdown), import time (numpy + cubie_kernel), Solver() construction, compile
time and the steady solve; then the files the cold process left in the
folder, the warm/cold compile ratio and the warm compile time against its goal
(< 0.5 s). numba's own cache setting (``NUMBA_CACHE_DIR``) is inherited
as it is. The temporary folders are removed at the end.

Usage: python benchmarks/compile_cache.py [--repeats R] [--precision float64|float32|both]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
METHOD = "dormand_prince_54"
TOLERANCES = {"float64": (1e-6, 1e-9), "float32": (1e-4, 1e-6)}  # (rtol, atol)
T_END = 10.0
GOAL_WARM_COMPILE_S = 0.5
FIELDS = ("startup_s", "import_s", "build_s", "compile_s", "solve_s")

# Run as ``python -c CHILD precision rtol atol``; prints one JSON line.
CHILD = f"""
import time
start = time.perf_counter()
import json, sys
import numpy as np
from cubie_kernel import Solver
from cubie_kernel.systems import lorenz
imported = time.perf_counter()
precision, rtol, atol = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
solver = Solver(lorenz(), method={METHOD!r}, rtol=rtol, atol=atol, save_every=None,
                target="cpu", precision=np.dtype(precision).type)
built = time.perf_counter()
compiled = solver.compile()  # compile, or load from the disk cache
ds = solver.solve(parameters={{"rho": [28.0]}}, duration={T_END!r})
first = time.perf_counter()
ds = solver.solve(parameters={{"rho": [28.0]}}, duration={T_END!r})
second = time.perf_counter()
assert int(ds["status"].values[0]) == 0, "the run failed"
assert np.all(np.isfinite([ds[v].values[0, -1] for v in ("x", "y", "z")]))
print(json.dumps({{
    "import_s": imported - start,
    "build_s": built - imported,
    "compile_s": compiled,
    "first_solve_extra_s": (first - built - compiled) - (second - first),
    "solve_s": second - first,
    "ran_s": time.perf_counter() - start,
}}))
"""


def child_timings(precision: str, cache_dir: str, timeout: float) -> dict[str, float]:
    """One fresh process with ``CUBIE_CACHE_DIR=cache_dir``: its timings (seconds)."""
    rtol, atol = TOLERANCES[precision]
    env = {**os.environ, "CUBIE_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, precision, repr(rtol), repr(atol)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"child process failed (exit {proc.returncode}, CUBIE_CACHE_DIR={cache_dir}):\n"
            f"{proc.stderr[-4000:]}"
        )
    timings = json.loads(proc.stdout.strip().splitlines()[-1])
    timings["startup_s"] = wall - timings.pop("ran_s")
    return timings


def folder_size(path: pathlib.Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure(precision: str, repeats: int, timeout: float) -> None:
    rtol, atol = TOLERANCES[precision]
    with tempfile.TemporaryDirectory(prefix="cubie-cache-bench-") as folder:
        off = child_timings(precision, "off", timeout)
        cold = child_timings(precision, folder, timeout)
        n_files, n_bytes = folder_size(pathlib.Path(folder))
        warm_runs = [child_timings(precision, folder, timeout) for _ in range(repeats)]
    warm = {k: statistics.median(run[k] for run in warm_runs) for k in FIELDS}

    print(
        f"Lorenz, {METHOD}, rtol {rtol:g} atol {atol:g}, {precision}, cpu target, "
        f"1 run, t in [0, {T_END:g}], a fresh process each"
    )
    print(f"  {'CUBIE_CACHE_DIR':28s} {'start-up s':>10s} {'import s':>9s} {'Solver() s':>10s} "
          f"{'compile s':>10s} {'solve s':>8s}")
    for label, row in (
        ("off (memory only)", off),
        ("cold (new empty folder)", cold),
        (f"warm (same folder, median {repeats})", warm),
    ):
        print(f"  {label:28s} {row['startup_s']:10.2f} {row['import_s']:9.2f} "
              f"{row['build_s']:10.2f} {row['compile_s']:10.2f} {row['solve_s']:8.4f}")
    each = ", ".join(f"{run['compile_s']:.2f}" for run in warm_runs)
    print(f"  warm compile, process by process: {each} s")
    print(f"  the cold process left {n_files} files ({n_bytes / 1024:.0f} KiB) in the cache folder")
    ratio = warm["compile_s"] / cold["compile_s"] if cold["compile_s"] > 0 else float("nan")
    verdict = "met" if warm["compile_s"] < GOAL_WARM_COMPILE_S else "NOT met"
    print(f"  warm / cold compile: {ratio:.2f}; warm compile {warm['compile_s']:.2f} s "
          f"(goal < {GOAL_WARM_COMPILE_S:g} s: {verdict})")
    print(f"  first call in a warm process (Solver() + compile): "
          f"{warm['build_s'] + warm['compile_s']:.2f} s, cold {cold['build_s'] + cold['compile_s']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm processes (median)")
    parser.add_argument("--precision", choices=("float64", "float32", "both"), default="both")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    precisions = ("float64", "float32") if args.precision == "both" else (args.precision,)
    for precision in precisions:
        measure(precision, args.repeats, args.timeout)


if __name__ == "__main__":
    main()
