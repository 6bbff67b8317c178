"""Kernel throughput: cubie_kernel vs a hand-written numba loop, same process.

Lorenz (sigma 10, beta 8/3, rho = linspace(0, 21, N)), float64, classical
RK4, dt = 1e-3, 10,000 runs x 10,000 steps, final state only, cpu target.
The baseline is what a numba user would write by hand: one run per
``prange`` iteration, the state in small per-run arrays, the four stages
unrolled. Prints run-steps/s of both, their ratio (target >= 0.8) and
cubie_kernel's cold compile time. On a real GPU it also times float32,
2^23 runs x 1,000 steps on the cuda target.

Usage: python benchmarks/kernel_throughput.py [--runs N] [--steps M] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from cubie_kernel import Solver, targets
from cubie_kernel.systems import lorenz


@numba.njit(parallel=True, fastmath=False, error_model="numpy")
def handwritten_rk4(rho, sigma, beta, y0, dt, n_steps, out):
    """Classical RK4 on Lorenz, one run per prange iteration."""
    n_runs = rho.shape[0]
    for run in numba.prange(n_runs):
        y = y0.copy()
        k1 = np.empty(3)
        k2 = np.empty(3)
        k3 = np.empty(3)
        k4 = np.empty(3)
        tmp = np.empty(3)
        r = rho[run]
        for _ in range(n_steps):
            k1[0] = sigma * (y[1] - y[0])
            k1[1] = y[0] * (r - y[2]) - y[1]
            k1[2] = y[0] * y[1] - beta * y[2]
            for i in range(3):
                tmp[i] = y[i] + 0.5 * dt * k1[i]
            k2[0] = sigma * (tmp[1] - tmp[0])
            k2[1] = tmp[0] * (r - tmp[2]) - tmp[1]
            k2[2] = tmp[0] * tmp[1] - beta * tmp[2]
            for i in range(3):
                tmp[i] = y[i] + 0.5 * dt * k2[i]
            k3[0] = sigma * (tmp[1] - tmp[0])
            k3[1] = tmp[0] * (r - tmp[2]) - tmp[1]
            k3[2] = tmp[0] * tmp[1] - beta * tmp[2]
            for i in range(3):
                tmp[i] = y[i] + dt * k3[i]
            k4[0] = sigma * (tmp[1] - tmp[0])
            k4[1] = tmp[0] * (r - tmp[2]) - tmp[1]
            k4[2] = tmp[0] * tmp[1] - beta * tmp[2]
            for i in range(3):
                y[i] = y[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        for i in range(3):
            out[i, run] = y[i]


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def cpu_comparison(n_runs: int, n_steps: int, repeats: int) -> None:
    dt = 1e-3
    duration = n_steps * dt
    rho = np.linspace(0.0, 21.0, n_runs)
    system = lorenz()
    solver = Solver(system, method="rk4", dt=dt, save_every=None, target="cpu")

    start = time.perf_counter()
    solver.solve(parameters={"rho": rho[:2]}, duration=dt * 2)  # compiles
    compile_s = time.perf_counter() - start

    t_cubie, ds = best_of(lambda: solver.solve(parameters={"rho": rho}, duration=duration), repeats)

    out = np.empty((3, n_runs))
    y0 = np.array([1.0, 0.0, 0.0])
    handwritten_rk4(rho[:2], 10.0, 8 / 3, y0, dt, 2, out[:, :2])  # compiles
    t_hand, _ = best_of(
        lambda: handwritten_rk4(rho, 10.0, 8 / 3, y0, dt, n_steps, out), repeats
    )
    final = np.stack([ds[v].values[:, -1] for v in ("x", "y", "z")])
    assert int(ds.n_steps.values[0]) == n_steps, "step count differs from the baseline"
    agreement = float(np.max(np.abs(final - out) / (1.0 + np.abs(out))))

    work = n_runs * n_steps
    print(f"cpu target, Lorenz RK4 float64, {n_runs} runs x {n_steps} steps, "
          f"{numba.get_num_threads()} threads, best of {repeats}")
    print(f"  cubie_kernel cold compile:  {compile_s:8.2f} s")
    print(f"  cubie_kernel:               {work / t_cubie / 1e6:8.1f} M run-steps/s ({t_cubie:.4f} s)")
    print(f"  hand-written njit prange:   {work / t_hand / 1e6:8.1f} M run-steps/s ({t_hand:.4f} s)")
    print(f"  ratio cubie / hand-written: {t_hand / t_cubie:8.2f}   (target >= 0.8)")
    print(f"  max relative difference of final states: {agreement:.2e}")


def gpu_timing(n_runs: int = 2**23, n_steps: int = 1000) -> None:
    dt = 1e-3
    rho = np.linspace(0.0, 21.0, n_runs)
    solver = Solver(lorenz(), method="rk4", dt=dt, save_every=None, target="cuda",
                    precision=np.float32)
    solver.solve(parameters={"rho": rho[:256]}, duration=dt * 2)  # compiles
    start = time.perf_counter()
    ds = solver.solve(parameters={"rho": rho}, duration=n_steps * dt)
    total = time.perf_counter() - start
    kernel_ms = ds.attrs["kernel_seconds"] * 1e3
    print(f"cuda target, Lorenz RK4 float32, {n_runs} runs x {n_steps} steps")
    print(f"  kernel time: {kernel_ms:.1f} ms; solve() incl. transfers and Dataset: {total * 1e3:.1f} ms")
    print(f"  {n_runs * n_steps / (kernel_ms / 1e3) / 1e9:.2f} G run-steps/s (kernel)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpu_comparison(args.runs, args.steps, args.repeats)
    if targets.gpu_available():
        gpu_timing()
    else:
        print("no CUDA GPU visible: skipping the float32 2^23-run GPU timing")


if __name__ == "__main__":
    main()
