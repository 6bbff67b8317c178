"""Kernel throughput (case F): cubie_kernel's cpu target vs hand-written numba and JAX, same process.

Setup: Lorenz (sigma 10, beta 8/3, u0 = (1, 0, 0)), rho = linspace(0, 21, N),
N = 16,384 runs, classical RK4, dt = 1e-3, 1,000 steps (t in [0, 1]), final
state only (save_every=None), cpu target, float64 and then float32.

Peers, all written in this file and run in this process:

- numba per-run: one run per ``prange`` iteration, state and stages in
  scalars (the thread pool splits the runs into contiguous chunks; every run
  costs the same here, so nothing is gained by interleaving them).
- numba lockstep: ``prange`` over blocks of 64 runs; each block keeps its
  state in three length-64 arrays and writes the whole RK4 step of one lane
  out in the innermost ``for j in range(64)`` loop, so LLVM vectorises across
  runs (SIMD lanes = runs). A partial last block repeats the last run in its
  spare lanes and does not store them.
- JAX, only where ``jax`` is importable: ``lax.fori_loop`` over one jitted
  RK4 step of the whole (3, N) state.

Both numba kernels are ``njit(parallel=True, fastmath=False,
error_model="numpy")`` and keep arrays and constants in the run's precision
(float32 code stays float32; numba would otherwise promote float32 * 0.5 to
float64).

Timing: each variant's first call, at full size, compiles and runs; it is then
called once more as a warm-up and timed ``--repeats`` times (default 5). Printed
are the median of those (run time, and runs/s = N / run time) and the compile
time = first call minus that median. cubie_kernel's solve() includes building
the result Dataset; the JAX time includes ``block_until_ready``.

On the shared 2-core machine another busy process floors every parallel call
at about a scheduler time slice (~8 ms seen: both numba kernels then time the
same). At the default size the lockstep call takes ~14 ms, not far above that:
run it on an otherwise idle machine; small test sizes only test the code.

Checks: every variant's final states are compared with the lockstep kernel's;
the max |difference| is printed, and the script fails (AssertionError) when
max |u - u_lockstep| / max(|u_lockstep|, 1) exceeds 1e-9 (float64) or 1e-3
(float32). cubie_kernel must also report exactly the requested step count.

Goals: cubie / lockstep >= 0.5 and cubie / JAX >= 4 (runs/s ratios). Without
JAX the published figure is printed instead. Published on this kind of machine
(2-core Zen 4, project notes cpu-peers.md and simd-lanes.md, 16,384 runs x
1,000 steps): lockstep without fastmath 1.20M runs/s float64 (2.40M float32),
numba per-run scalar 123k (same in float32), JAX 143k (float64).

On a real GPU it also times float32, 2^23 runs x 1,000 steps on the cuda
target (kernel time and whole solve()).

Usage: python benchmarks/kernel_throughput.py [--runs N] [--steps M] [--repeats R]
       [--precision float64|float32|both]
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from _timing import timed  # benchmarks/ is on sys.path when a script runs
from cubie_kernel import Solver, targets
from cubie_kernel.systems import lorenz

DT = 1e-3
SIGMA, BETA = 10.0, 8.0 / 3.0
RHO_MAX = 21.0
LANES = 64
TOLERANCE = {"float64": 1e-9, "float32": 1e-3}
#: runs/s on a 2-core Zen 4 at the default size (project notes cpu-peers.md).
PUBLISHED = {
    "float64": {"per-run": "123k", "lockstep": "1.20M", "jax": "143k"},
    "float32": {"per-run": "123k", "lockstep": "2.40M", "jax": "-"},
}
JAX_PUBLISHED_F64 = 143e3


def make_numba_baselines(dtype):
    """The per-run and lockstep RK4 kernels, with every constant in ``dtype``.

    Both take ``(rho, dt, n_steps, out)`` with ``rho`` and ``dt`` in ``dtype``
    and write final states into ``out`` of shape (3, runs).
    """
    f = np.dtype(dtype).type
    sigma, beta = f(SIGMA), f(BETA)
    x0, y0, z0 = f(1.0), f(0.0), f(0.0)
    half, sixth, two = f(0.5), f(1.0 / 6.0), f(2.0)

    @numba.njit(inline="always", fastmath=False, error_model="numpy")
    def lorenz_rhs(x, y, z, r):
        return sigma * (y - x), x * (r - z) - y, x * y - beta * z

    @numba.njit(inline="always", fastmath=False, error_model="numpy")
    def rk4_step(x, y, z, r, dt, half_dt, sixth_dt):
        """One classical RK4 step of Lorenz for one run, written out in scalars
        (inlined into both kernels: in the lockstep one it is the lane loop's body)."""
        k1x, k1y, k1z = lorenz_rhs(x, y, z, r)
        k2x, k2y, k2z = lorenz_rhs(x + half_dt * k1x, y + half_dt * k1y, z + half_dt * k1z, r)
        k3x, k3y, k3z = lorenz_rhs(x + half_dt * k2x, y + half_dt * k2y, z + half_dt * k2z, r)
        k4x, k4y, k4z = lorenz_rhs(x + dt * k3x, y + dt * k3y, z + dt * k3z, r)
        return (
            x + sixth_dt * (k1x + two * k2x + two * k3x + k4x),
            y + sixth_dt * (k1y + two * k2y + two * k3y + k4y),
            z + sixth_dt * (k1z + two * k2z + two * k3z + k4z),
        )

    @numba.njit(parallel=True, fastmath=False, error_model="numpy")
    def per_run(rho, dt, n_steps, out):
        """One run per prange iteration, state and stages in scalars."""
        half_dt = half * dt
        sixth_dt = sixth * dt
        for run in numba.prange(rho.shape[0]):
            r = rho[run]
            x, y, z = x0, y0, z0
            for _ in range(n_steps):
                x, y, z = rk4_step(x, y, z, r, dt, half_dt, sixth_dt)
            out[0, run] = x
            out[1, run] = y
            out[2, run] = z

    @numba.njit(parallel=True, fastmath=False, error_model="numpy")
    def lockstep(rho, dt, n_steps, out):
        """prange over blocks of LANES runs advanced together, one lane per j."""
        n_runs = rho.shape[0]
        n_blocks = (n_runs + LANES - 1) // LANES
        half_dt = half * dt
        sixth_dt = sixth * dt
        for block in numba.prange(n_blocks):
            start = block * LANES
            xs = np.empty(LANES, f)
            ys = np.empty(LANES, f)
            zs = np.empty(LANES, f)
            rs = np.empty(LANES, f)
            for j in range(LANES):
                rs[j] = rho[min(start + j, n_runs - 1)]
                xs[j] = x0
                ys[j] = y0
                zs[j] = z0
            for _ in range(n_steps):
                for j in range(LANES):
                    xs[j], ys[j], zs[j] = rk4_step(
                        xs[j], ys[j], zs[j], rs[j], dt, half_dt, sixth_dt
                    )
            for j in range(min(LANES, n_runs - start)):
                out[0, start + j] = xs[j]
                out[1, start + j] = ys[j]
                out[2, start + j] = zs[j]

    return per_run, lockstep


def import_jax():
    """``(jax, jax.numpy, jax.lax)`` with float64 enabled, or None if not installed."""
    try:
        import jax
        import jax.numpy as jnp
        from jax import lax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)  # float32 arrays stay float32
    return jax, jnp, lax


def make_jax_rk4(jax_modules, rho, dt: float, n_steps: int):
    """A jitted RK4 of the whole (3, N) state; returns a call giving final states (3, N)."""
    jax, jnp, lax = jax_modules
    dtype = rho.dtype
    u0 = jnp.asarray(np.stack([np.ones_like(rho), np.zeros_like(rho), np.zeros_like(rho)]))
    r = jnp.asarray(rho)
    sigma, beta = dtype.type(SIGMA), dtype.type(BETA)
    h, half_h, sixth_h = dtype.type(dt), dtype.type(0.5 * dt), dtype.type(dt / 6.0)

    def rhs(u):
        x, y, z = u[0], u[1], u[2]
        return jnp.stack([sigma * (y - x), x * (r - z) - y, x * y - beta * z])

    def step(_, u):
        k1 = rhs(u)
        k2 = rhs(u + half_h * k1)
        k3 = rhs(u + half_h * k2)
        k4 = rhs(u + h * k3)
        return u + sixth_h * (k1 + 2 * k2 + 2 * k3 + k4)

    solve = jax.jit(lambda u: lax.fori_loop(0, n_steps, step, u))
    return lambda: solve(u0).block_until_ready()


def check_agreement(name: str, final: np.ndarray, ref: np.ndarray, precision: str) -> float:
    """Max |final - ref|; raises AssertionError above the precision's relative tolerance."""
    diff = np.abs(final.astype(np.float64) - ref.astype(np.float64))
    relative = float(np.max(diff / np.maximum(np.abs(ref.astype(np.float64)), 1.0)))
    assert np.all(np.isfinite(final)), f"{name}: non-finite final states"
    assert relative <= TOLERANCE[precision], (
        f"{name} disagrees with the lockstep kernel: max relative difference "
        f"{relative:.2e} > {TOLERANCE[precision]:g} ({precision})"
    )
    return float(np.max(diff))


def cpu_comparison(n_runs: int, n_steps: int, repeats: int, precision: str, jax_modules) -> None:
    dtype = np.dtype(precision)
    rho = np.linspace(0.0, RHO_MAX, n_runs).astype(dtype)
    dt = dtype.type(DT)
    duration = n_steps * DT
    rows = []  # (label, compile s, run s, published key)

    solver = Solver(lorenz(), method="rk4", dt=DT, save_every=None, target="cpu",
                    precision=dtype.type)
    compile_c, t_cubie, ds = timed(
        lambda: solver.solve(parameters={"rho": rho}, duration=duration), repeats
    )
    rows.append(("cubie_kernel cpu target", compile_c, t_cubie, None))
    steps_done = np.unique(ds["n_steps"].values)
    assert steps_done.tolist() == [n_steps], (
        f"cubie_kernel took {steps_done.tolist()} steps, not {n_steps}: not the baselines' work"
    )
    finals = {"cubie_kernel": np.stack([ds[v].values[:, -1] for v in ("x", "y", "z")])}

    per_run, lockstep = make_numba_baselines(dtype)
    out_per_run = np.empty((3, n_runs), dtype)
    out_lockstep = np.empty((3, n_runs), dtype)
    compile_p, t_per_run, _ = timed(lambda: per_run(rho, dt, n_steps, out_per_run), repeats)
    rows.append(("numba per-run, scalar state", compile_p, t_per_run, "per-run"))
    compile_l, t_lockstep, _ = timed(lambda: lockstep(rho, dt, n_steps, out_lockstep), repeats)
    rows.append((f"numba lockstep, {LANES} lanes", compile_l, t_lockstep, "lockstep"))
    finals["numba per-run"] = out_per_run

    t_jax = None
    if jax_modules is not None:
        compile_j, t_jax, final_jax = timed(make_jax_rk4(jax_modules, rho, DT, n_steps), repeats)
        rows.append(("JAX lax.fori_loop, (3, N)", compile_j, t_jax, "jax"))
        finals["JAX"] = np.asarray(final_jax)

    print(
        f"cpu target, Lorenz RK4 {precision}, {n_runs} runs x {n_steps} steps (dt {DT:g}), "
        f"{numba.get_num_threads()} threads, median of {repeats}"
    )
    print(f"  {'':30s} {'runs/s':>10s} {'M run-steps/s':>14s} {'run s':>9s} {'compile s':>10s}"
          f"  published runs/s (16,384 x 1,000)")
    for label, compile_s, run_s, key in rows:
        published = PUBLISHED[precision].get(key, "") if key else ""
        print(f"  {label:30s} {n_runs / run_s:10.0f} {n_runs * n_steps / run_s / 1e6:14.1f} "
              f"{run_s:9.4f} {compile_s:10.2f}  {published}")
    print(f"  ratio cubie / lockstep:  {t_lockstep / t_cubie:6.3f}   (goal >= 0.5)")
    print(f"  ratio cubie / per-run:   {t_per_run / t_cubie:6.3f}")
    if t_jax is not None:
        print(f"  ratio cubie / JAX:       {t_jax / t_cubie:6.3f}   (goal >= 4)")
    else:
        print(
            "  JAX is not installed; published (cpu-peers.md, 16,384 runs x 1,000 steps): "
            f"{JAX_PUBLISHED_F64 / 1e3:.0f}k runs/s float64, so cubie / JAX >= 4 needs "
            f">= {4 * JAX_PUBLISHED_F64 / 1e3:.0f}k runs/s at that size"
        )
    diffs = ", ".join(
        f"{name} {check_agreement(name, final, out_lockstep, precision):.2e}"
        for name, final in finals.items()
    )
    print(f"  max |final state - lockstep| over runs and states: {diffs} "
          f"(relative tolerance {TOLERANCE[precision]:g}: passed)")


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
    parser.add_argument("--runs", type=int, default=16_384)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", choices=("float64", "float32", "both"), default="both")
    args = parser.parse_args()
    if args.runs < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--runs, --steps and --repeats must be >= 1")
    precisions = ("float64", "float32") if args.precision == "both" else (args.precision,)
    jax_modules = import_jax()
    for precision in precisions:
        cpu_comparison(args.runs, args.steps, args.repeats, precision, jax_modules)
    if targets.gpu_available():
        gpu_timing()
    else:
        print("no CUDA GPU visible: skipping the float32 2^23-run GPU timing")


if __name__ == "__main__":
    main()
