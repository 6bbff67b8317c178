"""Event cost: a Lorenz Poincare section with and without events, and scipy, same process.

Problem: Lorenz (sigma 10, beta 8/3) from (1, 1, 1) over ``--runs`` values of
rho in linspace(28, 30) (default 10^5), for ``--duration`` (35 time units:
about 45 upward crossings of z = 27 per run, so every run has its first 32;
the minimum is printed), Dormand-Prince 5(4) at rtol = atol = 1e-8, final
state only, float64, cpu target.

Variants, each compiled and warmed first, then timed ``--repeats`` times
(printed: medians):

- ``no events``: the baseline;
- ``events``: the same runs recording the first 32 upward crossings of
  z = 27 (``Event("section", "z - 27", direction=1, max_records=32)``):
  times and states, located on the step's continuous extension;
- scipy ``solve_ivp`` (RK45, same tolerances, the same event with
  ``direction = 1``), one run after another on ``--sample`` runs spread
  over the sweep; runs/s is extrapolated from the sample.

Checks: the crossing times of the sampled runs agree with scipy's (their
differences are printed; the Lorenz system is chaotic, so late crossings of
two 1e-8 solutions drift apart), and every run has >= 32 crossings.

Goals (issue 14): events cost < 20% (events / no events >= 0.8 in
runs/s), and the ratio to scipy is reported.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.integrate import solve_ivp

from cubie_kernel import Output, Solver
from cubie_kernel.systems import lorenz
from cubie_kernel.systems.events import Event

try:
    from _timing import timed
except ImportError:  # run from elsewhere
    from benchmarks._timing import timed

SECTION = Event("section", "z - 27", direction=1, max_records=32)
TOLERANCE = 1e-8


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=35.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sample", type=int, default=20)
    args = parser.parse_args(argv)

    rhos = np.linspace(28.0, 30.0, args.runs)
    start = {"x": 1.0, "y": 1.0, "z": 1.0}
    common = dict(method="dormand_prince_54", target="cpu", rtol=TOLERANCE, atol=TOLERANCE,
                  output=Output(states=[], observables=[], final_state=True))
    rates = {}
    results = {}
    for label, events in (("no events", ()), ("events", (SECTION,))):
        solver = Solver(lorenz(), events=events, **common)
        compile_s, run_s, ds = timed(
            lambda: solver.solve(start, {"rho": rhos}, args.duration), args.repeats)
        rates[label] = args.runs / run_s
        results[label] = ds
        print(f"{label:>10}: {rates[label]:12,.0f} runs/s  (median of {args.repeats}: "
              f"{run_s:.2f} s, compile {compile_s:.1f} s, "
              f"{int(ds.n_steps.sum()) / run_s / 1e6:.1f} M steps/s)")

    ds = results["events"]
    counts = ds.section_count.values
    print(f"crossings per run: min {counts.min()}, median {int(np.median(counts))}, "
          f"max {counts.max()}; failed runs: {int(np.count_nonzero(ds.status.values))}")
    np.testing.assert_array_equal(ds.n_steps.values, results["no events"].n_steps.values)

    def rhs(t, u, rho):
        x, y, z = u
        return [10.0 * (y - x), x * (rho - z) - y, x * y - 8.0 / 3.0 * z]

    def section(t, u, rho):
        return u[2] - 27.0

    section.direction = 1
    picks = np.linspace(0, args.runs - 1, min(args.sample, args.runs)).astype(int)
    begin = time.perf_counter()
    worst_first, worst_all = 0.0, 0.0
    for run in picks:
        sol = solve_ivp(rhs, (0.0, args.duration), [1.0, 1.0, 1.0], method="RK45",
                        rtol=TOLERANCE, atol=TOLERANCE, events=section, args=(rhos[run],))
        times = sol.t_events[0][: SECTION.max_records]
        mine = ds.section_time.values[run, : len(times)]
        worst_first = max(worst_first, float(np.abs(mine[:4] - times[:4]).max()))
        worst_all = max(worst_all, float(np.abs(mine - times).max()))
    scipy_rate = len(picks) / (time.perf_counter() - begin)
    print(f"{'scipy':>10}: {scipy_rate:12,.1f} runs/s  (RK45 with the event, "
          f"{len(picks)} runs)")
    print(f"crossing times vs scipy on the sample: first 4 within {worst_first:.1e}, "
          f"all 32 within {worst_all:.1e} (chaos amplifies both solutions' 1e-8 errors)")
    ratio = rates["events"] / rates["no events"]
    print(f"events / no events: {ratio:.3f} (cost {100 * (1 - ratio):.1f}%; goal: cost < 20%)")
    print(f"events / scipy: {rates['events'] / scipy_rate:,.0f}x")


if __name__ == "__main__":
    main()
