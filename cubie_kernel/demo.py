"""Demo: a Lorenz batch of 10,000 runs on the default target.

``python -m cubie_kernel.demo`` sweeps rho over [0, 50] (10,000 runs, RK4,
dt = 2e-3, a warm-up of 40, then 5 time units saved every 0.1) and prints what the batch
shows: below rho = 1 trajectories fall to the origin, between 1 and ~24.74
onto one of the two fixed points C+- = (+-sqrt(beta (rho - 1)), ..., rho - 1),
above that (mostly) onto the chaotic attractor.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cubie_kernel import Solver, raise_on_failure
from cubie_kernel.systems import lorenz

BETA = 8.0 / 3.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--target", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)

    rho = np.linspace(0.0, 50.0, args.runs)
    solver = Solver(lorenz(), method="rk4", dt=2e-3, save_every=0.1, target=args.target)
    start = time.perf_counter()
    solver.solve(parameters={"rho": rho[:2]}, duration=0.01)
    compiled = time.perf_counter() - start
    start = time.perf_counter()
    ds = solver.solve(parameters={"rho": rho}, duration=5.0, warmup=40.0)
    elapsed = time.perf_counter() - start
    raise_on_failure(ds)

    n_steps = int(ds.n_steps.sum())
    print(f"Lorenz sweep: {ds.sizes['run']} runs x {ds.sizes['time']} saves, "
          f"target={ds.attrs['target']}, {ds.attrs['precision']}, method={ds.attrs['method']}")
    print(f"  compile {compiled:.2f} s, solve {elapsed:.2f} s "
          f"({n_steps / elapsed / 1e6:.1f} M run-steps/s), all {ds.sizes['run']} runs succeeded")

    z = ds.z.values
    z_spread = z.max(axis=1) - z.min(axis=1)  # over the saved window t in [40, 45]
    z_final = z[:, -1]
    expected_fixed = np.where(rho > 1.0, rho - 1.0, 0.0)
    settled = z_spread < 1e-2
    print("\n  rho range      runs  settled  max |z_end - z_fixed| (settled runs)")
    for low, high in [(0, 1), (1, 13.926), (13.926, 24.74), (24.74, 50.01)]:
        band = (rho >= low) & (rho < high)
        done = band & settled
        error = np.abs(z_final[done] - expected_fixed[done]).max() if done.any() else np.nan
        print(f"  [{low:6.2f}, {min(high, 50):6.2f})  {band.sum():5d}  {done.sum():7d}  {error:.2e}")
    chaotic = (rho > 24.74) & ~settled
    print(f"\n  {chaotic.sum()} runs above rho = 24.74 are still moving at t = 45 "
          f"(mean z over the window {z[chaotic].mean():.1f}, range {z[chaotic].min():.1f} "
          f"to {z[chaotic].max():.1f})")


if __name__ == "__main__":
    main()
