"""Adaptive throughput (case A): cubie_kernel Dormand-Prince 5(4) vs hand-written numba DP5 and scipy, same process.

Setup: Lorenz (sigma 10, beta 8/3, u0 = (1, 0, 0)), rho = linspace(0, 50, N),
N = 4,096 runs, t in [0, 10], method "dormand_prince_54" (Dormand-Prince
5(4), FSAL; alias "rk45"), cpu target, final state only (save_every=None).
float64 with rtol 1e-6, atol 1e-9; then float32 with rtol 1e-4, atol 1e-6
(1e-6 is below what float32 arithmetic can hold to over 10 time units).
cubie_kernel runs with its default PI controller (Gustafsson's PI.3.4) and,
separately, with the elementary "i" controller (scipy's rules).

Peers:

- numba DP5, hand-written in this file, one run at a time with the state in
  scalars, an I controller with scipy's rules: accept when the error norm
  < 1; the norm is the RMS over states of err / (atol + rtol * max(|y|,
  |y_new|)), err = h * (the 7 FSAL stages weighted by scipy's RK45 error
  coefficients); the next step is h * clamp(0.9 * norm^(-1/5), 0.2, 10),
  capped at 1 right after a rejection; the last step is cut to end at t = 10.
  The FIRST STEP is estimated per run exactly like scipy's
  ``select_initial_step`` (order 4), not fixed. Arithmetic and constants are
  in the run's precision. Two ways of spreading runs over threads:
  "interleaved": ``prange`` over n_lanes = 4 * numba.get_num_threads() lanes,
  lane k solving runs k, k + n_lanes, k + 2 n_lanes, ... (cost grows with
  rho, so contiguous blocks would leave a thread finishing last alone);
  "plain prange": one run per ``prange`` iteration.
  Both ``njit(parallel=True, fastmath=False, error_model="numpy")``.
- scipy's ``solve_ivp(method="RK45")`` (float64 only), the same tolerances,
  one run at a time, on a sample of 40 evenly spaced runs of the sweep (~10 ms
  per run: the whole sweep would take a minute); its runs/s is extrapolated
  from the sample, which spans the same range of rho and so the same mix of
  cheap and expensive runs.

Timing: each variant's first call, at full size, compiles and runs; it is then
called once more as a warm-up and timed ``--repeats`` times (default 5).
Printed are the median of those (run time, and runs/s = N / run time) and the
compile time = first call minus that median. solve() includes building the
result Dataset.

Accuracy: the final states of the sample are compared with scipy's DOP853 at
rtol = atol = 1e-12 (one vectorised float64 solve of the sample). Printed is
max over runs of ||u - u_ref|| / max(||u_ref||, 1), separately for rho < 24
and for all runs. For rho < 24.74 (sigma 10, beta 8/3) the non-trivial
equilibria are stable and every run settles onto an equilibrium (the origin
for rho < 1), so every integrator must agree with the reference to roughly
its tolerance (transient chaos for 13.9 < rho < 24.06 amplifies errors
somewhat); the script fails (AssertionError) if any float64 variant is off by
1e-3 or more there (float32: 5e-2). Above it the flow is chaotic: local errors
of ~1e-6..1e-5 grow like exp(0.9 t) ~ 8e3 over t = 10, so a 1e-6 solver's
final state is off by ~1e-2..1e-1 of its size from the reference (itself good
to ~1e-8 there), and so is scipy's RK45: no integrator at this tolerance
resolves those final states, and the "all runs" figure is only expected to be
that size. In float64 the step counts of cubie (i), the numba baseline and
scipy RK45 are compared too (same rules, so mostly equal).

Timings on the shared 2-core machine swing by up to 2x with other users'
load; the ratios, measured in the same process, swing less.

Goals: cubie / numba interleaved >= 1.5 (runs/s); >= 500x faster per run
than scipy RK45. Published on this kind of machine (2-core Zen 4, float64,
4,096 runs; project notes cpu-peers.md): hand-written numba DP5 interleaved
57-58k runs/s (with PI control), plain prange 42.6k, scipy RK45 83.

Usage: python benchmarks/adaptive_throughput.py [--runs N] [--sample S] [--repeats R]
       [--precision float64|float32|both]
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
from scipy.integrate import solve_ivp as scipy_solve_ivp

from _timing import timed  # benchmarks/ is on sys.path when a script runs
from cubie_kernel import Solver
from cubie_kernel.systems import lorenz

METHOD = "dormand_prince_54"
SIGMA, BETA = 10.0, 8.0 / 3.0
RHO_MAX = 50.0
TOLERANCES = {"float64": (1e-6, 1e-9), "float32": (1e-4, 1e-6)}  # (rtol, atol)
T_END = 10.0
STABLE_RHO = 24.0
#: Worst ||u - u_DOP853|| / max(||u_DOP853||, 1) allowed over sampled runs with rho < 24.
MAX_STABLE_ERROR = {"float64": 1e-3, "float32": 5e-2}
MAX_ATTEMPTS = 100_000
#: Published runs/s, float64, 2-core Zen 4 (project notes cpu-peers.md).
PUBLISHED = {"interleaved": "58k", "plain": "42.6k", "scipy": "83"}


# ------------------------------------------------------------------ numba DP5
def make_numba_dp5(dtype):
    """The interleaved and plain-prange DP5 kernels, arithmetic in ``dtype``.

    Both take ``(rho, rtol, atol, t_end, max_attempts, n_lanes, out, counts)``
    (``rho`` and the scalars in ``dtype``) and write final states into
    ``out`` (3, runs) and accepted steps, rejected steps and status (0 done,
    1 ran out of attempts) into ``counts`` (3, runs).
    """
    f = np.dtype(dtype).type
    sigma, beta = f(SIGMA), f(BETA)
    zero, one, three = f(0.0), f(1.0), f(3.0)
    safety, min_factor, max_factor, exponent = f(0.9), f(0.2), f(10.0), f(-0.2)
    # Dormand & Prince (1980) tableau; row 7 (the FSAL stage) equals the weights b.
    a21 = f(1 / 5)
    a31, a32 = f(3 / 40), f(9 / 40)
    a41, a42, a43 = f(44 / 45), f(-56 / 15), f(32 / 9)
    a51, a52, a53, a54 = f(19372 / 6561), f(-25360 / 2187), f(64448 / 6561), f(-212 / 729)
    a61, a62, a63, a64, a65 = (
        f(9017 / 3168), f(-355 / 33), f(46732 / 5247), f(49 / 176), f(-5103 / 18656)
    )
    b1, b3, b4, b5, b6 = f(35 / 384), f(500 / 1113), f(125 / 192), f(-2187 / 6784), f(11 / 84)
    # Error weights b - b_hat, as in scipy's RK45.E.
    e1, e3, e4, e5, e6, e7 = (
        f(-71 / 57600), f(71 / 16695), f(-71 / 1920), f(17253 / 339200), f(-22 / 525), f(1 / 40)
    )
    h_tiny, d_small, d_zero = f(1e-6), f(1e-5), f(1e-15)
    hundredth, hundred, thousandth = f(0.01), f(100.0), f(1e-3)

    @numba.njit(inline="always")
    def rhs(x, y, z, r):
        return sigma * (y - x), x * (r - z) - y, x * y - beta * z

    @numba.njit(inline="always")
    def rms3(a, b, c):
        return np.sqrt((a * a + b * b + c * c) / three)

    @numba.njit(error_model="numpy")
    def solve_one(r, rtol, atol, t_end, max_attempts):
        """One run from t = 0 to t_end: (x, y, z, accepted, rejected, status)."""
        x, y, z = one, zero, zero
        fx, fy, fz = rhs(x, y, z, r)

        # First step: scipy's select_initial_step with error estimator order 4.
        sx = atol + abs(x) * rtol
        sy = atol + abs(y) * rtol
        sz = atol + abs(z) * rtol
        d0 = rms3(x / sx, y / sy, z / sz)
        d1 = rms3(fx / sx, fy / sy, fz / sz)
        if d0 < d_small or d1 < d_small:
            h0 = h_tiny
        else:
            h0 = hundredth * d0 / d1
        h0 = min(h0, t_end)
        gx, gy, gz = rhs(x + h0 * fx, y + h0 * fy, z + h0 * fz, r)
        d2 = rms3((gx - fx) / sx, (gy - fy) / sy, (gz - fz) / sz) / h0
        if d1 <= d_zero and d2 <= d_zero:
            h1 = max(h_tiny, h0 * thousandth)
        else:
            h1 = (hundredth / max(d1, d2)) ** (-exponent)
        h = min(hundred * h0, h1, t_end)

        t = zero
        accepted = 0
        rejected = 0
        just_rejected = False
        while t < t_end:
            if accepted + rejected >= max_attempts:
                return x, y, z, accepted, rejected, 1
            t_new = t + h
            if t_new > t_end:
                t_new = t_end
            h = t_new - t
            k2x, k2y, k2z = rhs(
                x + h * (a21 * fx), y + h * (a21 * fy), z + h * (a21 * fz), r
            )
            k3x, k3y, k3z = rhs(
                x + h * (a31 * fx + a32 * k2x),
                y + h * (a31 * fy + a32 * k2y),
                z + h * (a31 * fz + a32 * k2z),
                r,
            )
            k4x, k4y, k4z = rhs(
                x + h * (a41 * fx + a42 * k2x + a43 * k3x),
                y + h * (a41 * fy + a42 * k2y + a43 * k3y),
                z + h * (a41 * fz + a42 * k2z + a43 * k3z),
                r,
            )
            k5x, k5y, k5z = rhs(
                x + h * (a51 * fx + a52 * k2x + a53 * k3x + a54 * k4x),
                y + h * (a51 * fy + a52 * k2y + a53 * k3y + a54 * k4y),
                z + h * (a51 * fz + a52 * k2z + a53 * k3z + a54 * k4z),
                r,
            )
            k6x, k6y, k6z = rhs(
                x + h * (a61 * fx + a62 * k2x + a63 * k3x + a64 * k4x + a65 * k5x),
                y + h * (a61 * fy + a62 * k2y + a63 * k3y + a64 * k4y + a65 * k5y),
                z + h * (a61 * fz + a62 * k2z + a63 * k3z + a64 * k4z + a65 * k5z),
                r,
            )
            nx = x + h * (b1 * fx + b3 * k3x + b4 * k4x + b5 * k5x + b6 * k6x)
            ny = y + h * (b1 * fy + b3 * k3y + b4 * k4y + b5 * k5y + b6 * k6y)
            nz = z + h * (b1 * fz + b3 * k3z + b4 * k4z + b5 * k5z + b6 * k6z)
            k7x, k7y, k7z = rhs(nx, ny, nz, r)
            ex = h * (e1 * fx + e3 * k3x + e4 * k4x + e5 * k5x + e6 * k6x + e7 * k7x)
            ey = h * (e1 * fy + e3 * k3y + e4 * k4y + e5 * k5y + e6 * k6y + e7 * k7y)
            ez = h * (e1 * fz + e3 * k3z + e4 * k4z + e5 * k5z + e6 * k6z + e7 * k7z)
            norm = rms3(
                ex / (atol + max(abs(x), abs(nx)) * rtol),
                ey / (atol + max(abs(y), abs(ny)) * rtol),
                ez / (atol + max(abs(z), abs(nz)) * rtol),
            )
            if norm < one:
                if norm == zero:
                    factor = max_factor
                else:
                    factor = min(max_factor, safety * norm**exponent)
                if just_rejected:
                    factor = min(one, factor)
                t = t_new
                x, y, z = nx, ny, nz
                fx, fy, fz = k7x, k7y, k7z
                accepted += 1
                just_rejected = False
            else:
                factor = max(min_factor, safety * norm**exponent)
                rejected += 1
                just_rejected = True
            h = h * factor
        return x, y, z, accepted, rejected, 0

    @numba.njit(parallel=True, fastmath=False, error_model="numpy")
    def interleaved(rho, rtol, atol, t_end, max_attempts, n_lanes, out, counts):
        """Lane k of n_lanes solves runs k, k + n_lanes, ...; prange over lanes."""
        n_runs = rho.shape[0]
        for lane in numba.prange(n_lanes):
            for run in range(lane, n_runs, n_lanes):
                x, y, z, acc, rej, status = solve_one(rho[run], rtol, atol, t_end, max_attempts)
                out[0, run] = x
                out[1, run] = y
                out[2, run] = z
                counts[0, run] = acc
                counts[1, run] = rej
                counts[2, run] = status

    def plain(rho, rtol, atol, t_end, max_attempts, n_lanes, out, counts):
        """One run per prange iteration: interleaved with one lane per run (n_lanes unused)."""
        interleaved(rho, rtol, atol, t_end, max_attempts, rho.shape[0], out, counts)

    return interleaved, plain


# ---------------------------------------------------------------------- scipy
def lorenz_rhs(rho):
    def rhs(_t, u):
        x, y, z = u
        return [SIGMA * (y - x), x * (rho - z) - y, x * y - BETA * z]

    return rhs


def dop853_reference(rho: np.ndarray) -> np.ndarray:
    """Final states (runs, 3) of all sample runs: one vectorised DOP853 solve."""
    rho = rho.astype(np.float64)
    n = rho.size

    def rhs(_t, u):
        x, y, z = u[:n], u[n : 2 * n], u[2 * n :]
        return np.concatenate([SIGMA * (y - x), x * (rho - z) - y, x * y - BETA * z])

    u0 = np.concatenate([np.ones(n), np.zeros(n), np.zeros(n)])
    sol = scipy_solve_ivp(rhs, (0.0, T_END), u0, method="DOP853", rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return sol.y[:, -1].reshape(3, n).T


def scipy_sample(rho: np.ndarray, rtol: float, atol: float) -> tuple[np.ndarray, np.ndarray]:
    """scipy RK45 run by run: final states (runs, 3) and attempted steps."""
    finals, attempts = [], []
    for r in rho:
        sol = scipy_solve_ivp(
            lorenz_rhs(r), (0.0, T_END), [1.0, 0.0, 0.0], method="RK45", rtol=rtol, atol=atol
        )
        assert sol.success, sol.message
        finals.append(sol.y[:, -1])
        attempts.append((sol.nfev - 2) // 6)
    return np.array(finals), np.array(attempts)


# -------------------------------------------------------------------- helpers
def relative_difference(u: np.ndarray, ref: np.ndarray) -> np.ndarray:
    u = u.astype(np.float64)
    return np.linalg.norm(u - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1.0)


def cubie_timing(controller: str, rho: np.ndarray, precision: str, repeats: int):
    rtol, atol = TOLERANCES[precision]
    solver = Solver(
        lorenz(), method=METHOD, controller=controller, rtol=rtol, atol=atol,
        save_every=None, target="cpu", precision=np.dtype(precision).type,
    )
    return timed(lambda: solver.solve(parameters={"rho": rho}, duration=T_END), repeats)


def numba_timing(kernel, rho: np.ndarray, precision: str, repeats: int):
    """(compile s, run s, final states (runs, 3), attempts, failed runs)."""
    dtype = np.dtype(precision)
    f = dtype.type
    rtol, atol = TOLERANCES[precision]
    n_lanes = 4 * numba.get_num_threads()
    out = np.empty((3, rho.size), dtype)
    counts = np.empty((3, rho.size), np.int64)
    compile_s, run_s, _ = timed(
        lambda: kernel(rho, f(rtol), f(atol), f(T_END), MAX_ATTEMPTS, n_lanes, out, counts),
        repeats,
    )
    return compile_s, run_s, out.T.copy(), counts[0] + counts[1], int(np.count_nonzero(counts[2]))


# ----------------------------------------------------------------------- main
def compare(precision: str, n_runs: int, sample: np.ndarray, repeats: int, scipy_result) -> None:
    rtol, atol = TOLERANCES[precision]
    rho = np.linspace(0.0, RHO_MAX, n_runs).astype(precision)
    stable = rho[sample] < STABLE_RHO
    ref = dop853_reference(rho[sample])  # of the rho values as rounded to the precision

    compile_pi, t_pi, ds_pi = cubie_timing("pi", rho, precision, repeats)
    compile_i, t_i, ds_i = cubie_timing("i", rho, precision, repeats)
    interleaved, plain = make_numba_dp5(precision)
    compile_n, t_n, final_n, attempts_n, failed_n = numba_timing(interleaved, rho, precision, repeats)
    compile_p, t_p, final_p, attempts_p, failed_p = numba_timing(plain, rho, precision, repeats)
    assert np.array_equal(final_n, final_p), "interleaved and plain numba kernels differ"

    def cubie_final(ds):
        return np.stack([ds[v].values[:, -1] for v in ("x", "y", "z")], axis=1)

    def cubie_attempts(ds):
        return ds["n_steps"].values + ds["n_rejected"].values

    failed_cubie = int(np.count_nonzero(ds_pi["status"].values)) + int(
        np.count_nonzero(ds_i["status"].values)
    )
    published = PUBLISHED if precision == "float64" else {k: "" for k in PUBLISHED}
    rows = [
        ("cubie_kernel, pi controller", compile_pi, t_pi, n_runs, ""),
        ("cubie_kernel, i controller", compile_i, t_i, n_runs, ""),
        ("numba DP5 (I), interleaved", compile_n, t_n, n_runs, published["interleaved"]),
        ("numba DP5 (I), plain prange", compile_p, t_p, n_runs, published["plain"]),
    ]
    if scipy_result is not None:
        t_scipy = scipy_result[0]
        rows.append((f"scipy RK45, {sample.size} sampled", 0.0, t_scipy, sample.size,
                     PUBLISHED["scipy"]))

    print(
        f"Lorenz, DP5 ({METHOD}) rtol {rtol:g} atol {atol:g}, t in [0, {T_END:g}], {precision}, "
        f"rho = linspace(0, {RHO_MAX:g}, {n_runs}), cpu target, {numba.get_num_threads()} threads, "
        f"median of {repeats}"
    )
    print(f"  {'':34s} {'runs/s':>10s} {'run s':>8s} {'compile s':>10s}  published runs/s (float64, 4,096 runs)")
    for label, compile_s, run_s, runs, published in rows:
        compile_text = f"{compile_s:10.2f}" if compile_s else f"{'-':>10s}"
        print(f"  {label:34s} {runs / run_s:10.0f} {run_s:8.3f} {compile_text}  {published}")
    print(f"  ratio cubie (pi) / numba interleaved: {t_n / t_pi:6.2f}   (goal >= 1.5)")
    print(f"  ratio cubie (i)  / numba interleaved: {t_n / t_i:6.2f}")
    print(f"  ratio numba interleaved / plain prange: {t_p / t_n:6.2f}")
    if scipy_result is not None:
        rate_scipy = sample.size / scipy_result[0]
        print(f"  ratio cubie (pi) / scipy per run: {n_runs / t_pi / rate_scipy:8.0f} x   (goal >= 500)")
        print(f"  ratio cubie (i)  / scipy per run: {n_runs / t_i / rate_scipy:8.0f} x")
    print(
        f"  mean attempted steps per run (all {n_runs}): cubie pi {cubie_attempts(ds_pi).mean():.0f}, "
        f"cubie i {cubie_attempts(ds_i).mean():.0f}, numba {attempts_n.mean():.0f}"
    )
    print(f"  failed runs (status != 0): cubie {failed_cubie}, numba {failed_n + failed_p}")

    finals = [
        ("cubie_kernel pi", cubie_final(ds_pi)[sample]),
        ("cubie_kernel i", cubie_final(ds_i)[sample]),
        ("numba DP5 (I)", final_n[sample]),
    ]
    if scipy_result is not None:
        finals.append(("scipy RK45", scipy_result[1]))
    print(
        "  max ||u - u_DOP853|| / max(||u_DOP853||, 1) on the sample "
        f"({int(stable.sum())} runs with rho < {STABLE_RHO:g} | all {sample.size}):"
    )
    worst = []
    for name, final in finals:
        diff = relative_difference(final, ref)
        print(f"    {name:16s} {diff[stable].max():.2e} | {diff.max():.2e}")
        worst.append((name, float(diff[stable].max())))
    if scipy_result is not None:
        scipy_attempts = scipy_result[2]
        same_i = np.max(np.abs(cubie_final(ds_i)[sample] - scipy_result[1]))
        same_n = np.max(np.abs(final_n[sample] - scipy_result[1]))
        print(
            f"  vs scipy RK45 (same step rules): cubie (i) max |difference| {same_i:.2e}, "
            f"attempts equal on {int(np.sum(cubie_attempts(ds_i)[sample] == scipy_attempts))}"
            f"/{sample.size}; numba {same_n:.2e}, attempts equal on "
            f"{int(np.sum(attempts_n[sample] == scipy_attempts))}/{sample.size} sampled runs"
        )
    bad = [(name, err) for name, err in worst if not err < MAX_STABLE_ERROR[precision]]
    assert not bad, (
        f"{precision}: final states off the DOP853 reference on stable runs (rho < "
        f"{STABLE_RHO:g}) by >= {MAX_STABLE_ERROR[precision]:g}: {bad}"
    )
    assert failed_cubie == 0 and failed_n + failed_p == 0, "some runs failed (status != 0)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4_096)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=("float64", "float32", "both"), default="both")
    args = parser.parse_args()
    if args.runs < 2 or args.sample < 2 or args.repeats < 1:
        parser.error("--runs and --sample must be >= 2, --repeats >= 1")
    n_runs, repeats = args.runs, args.repeats
    sample = np.unique(np.linspace(0, n_runs - 1, args.sample).round().astype(int))
    rho_sample = np.linspace(0.0, RHO_MAX, n_runs)[sample]

    precisions = ("float64", "float32") if args.precision == "both" else (args.precision,)
    for precision in precisions:
        scipy_result = None
        if precision == "float64":
            rtol, atol = TOLERANCES[precision]
            _, t_scipy, (scipy_final, scipy_attempts) = timed(
                lambda: scipy_sample(rho_sample, rtol, atol), repeats
            )
            scipy_result = (t_scipy, scipy_final, scipy_attempts)
        compare(precision, n_runs, sample, repeats, scipy_result)


if __name__ == "__main__":
    main()
