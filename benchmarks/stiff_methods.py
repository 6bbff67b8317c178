"""Stiff throughput: cubie's Rosenbrock and ESDIRK methods vs scipy and numbalsoda, same process.

Problems (final state only, float64, cpu target):

- ROBER (``cubie_kernel.systems.robertson``) to t = 1e5 over N = 1,000 sets of
  rate constants: a 40 x 25 grid of k1 in logspace(-3, 0) and k3 in
  logspace(3, 5), k2 = 3e7; rtol 1e-6, atol 1e-10.
- HIRES (8 states, the Bari test set's coefficients) to t = 321.8122 over
  N = 1,000 initial values: y1(0) in linspace(0.5, 1.5), y8(0) in
  linspace(0.004, 0.008) (a 40 x 25 grid); rtol 1e-6, atol 1e-10.

Peers, each run solved on its own:

- scipy ``solve_ivp`` with Radau, BDF and LSODA (analytic Jacobian given),
  on a sample of ``--sample`` runs spread over the sweep; runs/s is
  extrapolated from the sample. The fastest of the three is the baseline.
- numbalsoda's ``lsoda`` (LSODA from ODEPACK, compiled), called per run in
  ``numba.prange`` with a cfunc right-hand side, if numbalsoda imports
  (it builds from source and needs a Fortran compiler).

Timing: every variant is compiled/warmed first, then timed ``--repeats``
times; printed are medians. Accuracy: the sample's final states from each
cubie method are compared with scipy's Radau at rtol 1e-12 (max relative
error over components above 1e-8 of the largest).

Goals (issue 13): best cubie method / fastest scipy >= 300x (runs/s), and
>= 1x numbalsoda's lsoda in prange.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.integrate import solve_ivp

from cubie_kernel import ODESystem, Solver
from cubie_kernel.systems import robertson

try:
    from _timing import timed
except ImportError:  # run from elsewhere
    from benchmarks._timing import timed

HIRES_EQUATIONS = [
    "dy1 = -1.71*y1 + 0.43*y2 + 8.32*y3 + 0.0007",
    "dy2 = 1.71*y1 - 8.75*y2",
    "dy3 = -10.03*y3 + 0.43*y4 + 0.035*y5",
    "dy4 = 8.32*y2 + 1.71*y3 - 1.12*y4",
    "dy5 = -1.745*y5 + 0.43*y6 + 0.43*y7",
    "dy6 = -280.0*y6*y8 + 0.69*y4 + 1.71*y5 - 0.43*y6 + 0.69*y7",
    "dy7 = 280.0*y6*y8 - 1.81*y7",
    "dy8 = -280.0*y6*y8 + 1.81*y7",
]


def hires() -> ODESystem:
    states = {f"y{i}": 0.0 for i in range(1, 9)}
    states["y1"], states["y8"] = 1.0, 0.0057
    return ODESystem(HIRES_EQUATIONS, states=states, name="hires")


def hires_rhs(t, y):
    return np.array([
        -1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007,
        1.71 * y[0] - 8.75 * y[1],
        -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4],
        8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3],
        -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6],
        -280.0 * y[5] * y[7] + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6],
        280.0 * y[5] * y[7] - 1.81 * y[6],
        -280.0 * y[5] * y[7] + 1.81 * y[6],
    ])


def hires_jac(t, y):
    J = np.zeros((8, 8))
    J[0, :3] = [-1.71, 0.43, 8.32]
    J[1, :2] = [1.71, -8.75]
    J[2, 2:5] = [-10.03, 0.43, 0.035]
    J[3, 1:4] = [8.32, 1.71, -1.12]
    J[4, 4:7] = [-1.745, 0.43, 0.43]
    J[5, 3:8] = [0.69, 1.71, -0.43 - 280.0 * y[7], 0.69, -280.0 * y[5]]
    J[6, 5:8] = [280.0 * y[7], -1.81, 280.0 * y[5]]
    J[7, 5:8] = [-280.0 * y[7], 1.81, -280.0 * y[5]]
    return J


def rober_functions(k1, k2, k3):
    def rhs(t, y):
        return np.array([-k1 * y[0] + k3 * y[1] * y[2],
                         k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
                         k2 * y[1] ** 2])

    def jac(t, y):
        return np.array([[-k1, k3 * y[2], k3 * y[1]],
                         [k1, -k3 * y[2] - 2 * k2 * y[1], -k3 * y[1]],
                         [0.0, 2 * k2 * y[1], 0.0]])

    return rhs, jac


def problems(n_runs: int):
    side = (40, n_runs // 40)
    k1, k3 = np.meshgrid(np.logspace(-3, 0, side[0]), np.logspace(3, 5, side[1]),
                         indexing="ij")
    y1, y8 = np.meshgrid(np.linspace(0.5, 1.5, side[0]), np.linspace(0.004, 0.008, side[1]),
                         indexing="ij")
    rober = dict(
        name="ROBER", system=robertson(), duration=1e5,
        inputs=dict(parameters={"k1": k1.ravel(), "k3": k3.ravel()}),
        scipy=lambda i: (*rober_functions(k1.ravel()[i], 3e7, k3.ravel()[i]),
                         np.array([1.0, 0.0, 0.0])),
    )

    def hires_start(i):
        y0 = np.array([1.0, 0, 0, 0, 0, 0, 0, 0.0057])
        y0[0], y0[7] = y1.ravel()[i], y8.ravel()[i]
        return hires_rhs, hires_jac, y0

    hires_problem = dict(
        name="HIRES", system=hires(), duration=321.8122,
        inputs=dict(initial_values={"y1": y1.ravel(), "y8": y8.ravel()}),
        scipy=hires_start,
    )
    return [rober, hires_problem]


def scipy_rate(problem, method, sample, rtol, atol):
    times = []
    finals = []
    for i in sample:
        rhs, jac, y0 = problem["scipy"](i)
        start = time.perf_counter()
        kwargs = {"jac": jac} if method in ("Radau", "BDF", "LSODA") else {}
        solution = solve_ivp(rhs, (0.0, problem["duration"]), y0, method=method, rtol=rtol,
                             atol=atol, **kwargs)
        times.append(time.perf_counter() - start)
        finals.append(solution.y[:, -1])
    return len(sample) / sum(times), np.array(finals)


def numbalsoda_rate(problem, n_runs, rtol, atol, repeats):
    """runs/s of numbalsoda's lsoda per run in prange (None if it is not installed)."""
    try:
        import numba as nb
        from numbalsoda import lsoda, lsoda_sig
    except ImportError:
        return None
    if problem["name"] == "ROBER":
        @nb.cfunc(lsoda_sig)
        def rhs(t, u, du, p):
            k1, k2, k3 = p[0], p[1], p[2]
            du[0] = -k1 * u[0] + k3 * u[1] * u[2]
            du[1] = k1 * u[0] - k3 * u[1] * u[2] - k2 * u[1] * u[1]
            du[2] = k2 * u[1] * u[1]

        data = np.stack([problem["inputs"]["parameters"]["k1"], np.full(n_runs, 3e7),
                         problem["inputs"]["parameters"]["k3"]], axis=1)
        u0 = np.tile([1.0, 0.0, 0.0], (n_runs, 1))
    else:
        @nb.cfunc(lsoda_sig)
        def rhs(t, y, du, p):
            du[0] = -1.71 * y[0] + 0.43 * y[1] + 8.32 * y[2] + 0.0007
            du[1] = 1.71 * y[0] - 8.75 * y[1]
            du[2] = -10.03 * y[2] + 0.43 * y[3] + 0.035 * y[4]
            du[3] = 8.32 * y[1] + 1.71 * y[2] - 1.12 * y[3]
            du[4] = -1.745 * y[4] + 0.43 * y[5] + 0.43 * y[6]
            du[5] = -280.0 * y[5] * y[7] + 0.69 * y[3] + 1.71 * y[4] - 0.43 * y[5] + 0.69 * y[6]
            du[6] = 280.0 * y[5] * y[7] - 1.81 * y[6]
            du[7] = -280.0 * y[5] * y[7] + 1.81 * y[6]

        data = np.zeros((n_runs, 1))
        u0 = np.tile([1.0, 0, 0, 0, 0, 0, 0, 0.0057], (n_runs, 1))
        u0[:, 0] = problem["inputs"]["initial_values"]["y1"]
        u0[:, 7] = problem["inputs"]["initial_values"]["y8"]
    address = rhs.address
    t_eval = np.array([0.0, problem["duration"]])

    @nb.njit(parallel=True)
    def sweep(u0, data):
        out = np.empty_like(u0)
        for i in nb.prange(u0.shape[0]):
            usol, success = lsoda(address, u0[i].copy(), t_eval, data=data[i].copy(),
                                  rtol=rtol, atol=atol)
            out[i] = usol[-1]
        return out

    _, run, _ = timed(lambda: sweep(u0, data), repeats)
    return n_runs / run


def relative_error(values, reference):
    scale = np.abs(reference).max(axis=1, keepdims=True)
    mask = np.abs(reference) > 1e-8 * scale
    return float((np.abs(values - reference) / np.where(mask, np.abs(reference), 1.0))[mask].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="rodas5p,rodas4,kvaerno5,rosenbrock23")
    args = parser.parse_args()
    rtol, atol = 1e-6, 1e-10
    methods = args.methods.split(",")
    print(f"stiff throughput: {args.runs} runs per problem, rtol {rtol:g}, atol {atol:g}, "
          f"float64, cpu target; medians of {args.repeats}")
    for problem in problems(args.runs):
        sample = np.linspace(0, args.runs - 1, args.sample).astype(int)
        reference = scipy_rate(problem, "Radau", sample, 1e-12, 1e-14)[1]
        print(f"\n{problem['name']} (to t = {problem['duration']:g})")
        print(f"  {'solver':28s} {'runs/s':>12s} {'compile s':>10s} {'max rel err':>12s} "
              f"{'steps (median)':>14s}")
        best = 0.0
        for method in methods:
            solver = Solver(problem["system"], method=method, rtol=rtol, atol=atol,
                            target="cpu", max_steps=1_000_000,
                            output={"final_state": True, "states": [], "observables": []})

            def solve():
                return solver.solve(**problem["inputs"], duration=problem["duration"],
                                    grid="verbatim")

            compile_s, run, result = timed(solve, args.repeats)
            finals = np.stack([result[f"{s}_final"].values for s in
                               problem["system"].state_names], axis=1)[sample]
            failed = int(np.count_nonzero(result.status.values))
            rate = args.runs / run
            best = max(best, rate)
            note = f" ({failed} failed)" if failed else ""
            print(f"  cubie {method:22s} {rate:12.1f} {compile_s:10.1f} "
                  f"{relative_error(finals, reference):12.2e} "
                  f"{statistics.median(result.n_steps.values):14.0f}{note}")
        fastest = 0.0
        for method in ("Radau", "BDF", "LSODA"):
            rate, finals = scipy_rate(problem, method, sample, rtol, atol)
            fastest = max(fastest, rate)
            print(f"  scipy {method:22s} {rate:12.1f} {'':>10s} "
                  f"{relative_error(finals, reference):12.2e}")
        lsoda = numbalsoda_rate(problem, args.runs, rtol, atol, args.repeats)
        if lsoda is None:
            print("  numbalsoda lsoda (prange)    not installed (builds from source; needs "
                  "a Fortran compiler)")
        else:
            print(f"  numbalsoda lsoda (prange) {lsoda:14.1f}")
        print(f"  best cubie / fastest scipy: {best / fastest:.0f}x (goal >= 300x)")
        if lsoda is not None:
            print(f"  best cubie / numbalsoda lsoda: {best / lsoda:.2f}x (goal >= 1x)")


if __name__ == "__main__":
    main()
