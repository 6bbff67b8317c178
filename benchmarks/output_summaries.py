"""Summaries instead of trajectories (issue 12): bytes and runs/s, same process.

Setup: Lorenz (sigma 10, beta 8/3, u0 = (1, 0, 0)), rho = linspace(0, 50, N),
t in [0, 100], Dormand-Prince 5(4) ("rk45"), rtol 1e-6, atol 1e-9, float64,
cpu target, default PI controller. Three outputs:

- (a) every state saved every 0.01 (10,001 rows): dense output, so the
  steps are the same as in (b) and (c);
- (b) summaries only: mean, std, max, min and peaks[4] of x, y, z per window
  of 10 (10 windows), samples every 0.01;
- (c) the final state only (``Output(states=[], observables=[],
  final_state=True)``), the baseline (b) is compared with.

(a) returns 240 kB per run: 10^6 runs would need 240 GB. Every variant runs
the same N runs (default 4,096; ``--runs``), and the bytes a sweep of 10^6
runs would bring home are computed from the result's own per-run size.

Timing: each variant is compiled and run once, warmed up once and timed
``--repeats`` times (default 3); printed are the median run time, runs/s and
the ratio (b)/(c) of runs/s (goal: summaries cost < 15% throughput, ratio
>= 0.85). Every variant's step counts must be equal (dense output: saves and
summaries do not change the steps); the script fails if not.

Run on a quiet machine; timings on the shared 2-core machine swing by up to
2x, ratios measured in one process less.
"""

from __future__ import annotations

import argparse

import numpy as np

from _timing import timed
from cubie_kernel import Output, Solver
from cubie_kernel.systems import lorenz

DURATION = 100.0
TOLERANCES = dict(rtol=1e-6, atol=1e-9)
MILLION = 10**6


def result_bytes_per_run(ds) -> int:
    """Bytes per run of the per-run variables of a result."""
    total = 0
    for var in ds.data_vars.values():
        if "run" in var.dims:
            total += var.dtype.itemsize * var.size // ds.sizes["run"]
    return total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rho = np.linspace(0.0, 50.0, args.runs)
    variants = {
        "(a) save every 0.01": Output(save_every=0.01),
        "(b) summaries only": Output(
            states=[], observables=[], save_every=0.01,
            summaries=["mean", "std", "max", "min", "peaks[4]"], summarise_every=10.0,
        ),
        "(c) final state only": Output(states=[], observables=[], final_state=True),
    }
    print(f"Lorenz, {args.runs} runs, t in [0, {DURATION:g}], rk45 rtol 1e-6, float64, cpu")
    rates, steps = {}, {}
    for label, output in variants.items():
        solver = Solver(lorenz(), method="rk45", target="cpu", output=output, **TOLERANCES)

        def solve():
            return solver.solve(parameters={"rho": rho}, duration=DURATION)

        compile_s, run_s, ds = timed(solve, args.repeats)
        per_run = result_bytes_per_run(ds)
        rates[label] = args.runs / run_s
        steps[label] = ds.n_steps.values
        print(f"{label:24s} {run_s:8.2f} s  {rates[label]:10.0f} runs/s  "
              f"{per_run:8d} B/run  10^6 runs: {per_run * MILLION / 1e9:9.3f} GB  "
              f"(compile {compile_s:.1f} s)")
    labels = list(variants)
    for label in labels[1:]:
        assert np.array_equal(steps[label], steps[labels[0]]), f"steps differ: {label}"
    ratio = rates[labels[1]] / rates[labels[2]]
    print(f"runs/s (b) / (c) = {ratio:.3f}  (goal >= 0.85: summaries cost < 15%)")
    print(f"runs/s (a) / (c) = {rates[labels[0]] / rates[labels[2]]:.3f}")
    print("steps equal in all three variants: yes")


if __name__ == "__main__":
    main()
