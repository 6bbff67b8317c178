"""GPU benchmark (issue 9): cubie_kernel on the cuda target, and peers on the same GPU.

Problem (every case): Lorenz, sigma 10, beta 8/3, u0 = (1, 0, 0), rho =
linspace(0, 21, N), final state only (``save_every=None``).

F   float32, classical RK4, dt 1e-3, 1,000 steps, N = 2^23, and 2^20 and 2^24
    for scaling: the kernel's own time (CUDA events: the Dataset attribute
    ``kernel_seconds``) and the end-to-end time of ``Solver.solve`` (input
    building, host-device transfers, kernel, Dataset). Printed beside it: the
    published anchor "DiffEqGPU.jl EnsembleGPUKernel, case F: 145 ms on a
    V100" and the goal: kernel time <= 20 ms on an H100/H200.
A   the same ensemble with Dormand-Prince 5(4) and Tsitouras 5(4), rtol =
    atol = 1e-8, t in [0, 1], float32 and float64 (per-run step control).
Peers, where importable, on the same GPU and the same problem:
    diffrax ``jax.jit(jax.vmap(diffeqsolve))`` with Tsit5, fixed (dt 1e-3,
    float32) and adaptive (PIDController rtol = atol = 1e-8, float64); and
    torchdiffeq ``odeint`` on the whole ensemble as one (N, 3) state, "rk4"
    (fixed, step_size 1e-3, float32; torchdiffeq's rk4 is the 3/8 rule) and
    "dopri5" (rtol = atol = 1e-8, float64; ONE step size for the whole
    ensemble, its error norm taken over all runs). Adaptive peers run in
    float64 because 1e-8 is below float32's resolution (eps 1.2e-7). A peer
    runs at the largest N <= the requested one (halving) that fits the GPU's
    memory and ``--peer-max-seconds`` per solve, estimated from a short
    probe; cubie_kernel is then timed again at that same N, and the ratio
    printed is peer time / our kernel time at equal N (goal for diffrax vmap
    Tsit5 fixed vs our RK4: >= 20x).

Timing: every solver is compiled (and JAX traced) first, then run once at
full size untimed, then timed ``--repeats`` times (median printed);
peers are synchronised (``block_until_ready``, ``torch.cuda.synchronize``).
Peer times are device-resident (inputs already on the GPU, outputs left
there), comparable to our kernel time, not to our end-to-end time.

Without a GPU it prints one line and exits 0 (``make bench``), unless
``--simulate``: then everything runs under numba's CUDA simulator at tiny
sizes (2^8 runs, 20 steps), peers on whatever device they have, to test
this script, not to measure anything. Every figure is also returned as a
dict (``run_benchmark``) and, with ``--json PATH``, written there after
each case (``benchmarks/gpu_check.py`` reads it).

Usage: python benchmarks/gpu_benchmark.py [--simulate] [--runs N] [--scaling-runs N ...]
       [--steps M] [--repeats R] [--peer-runs N] [--peer-max-seconds S] [--no-peers]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

# JAX would otherwise take 75% of the GPU's memory when first used: leave it
# to numba-cuda and torch too. Must be set before jax is imported.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("cubie_kernel") is None:  # run from a bare checkout
    sys.path.insert(0, str(REPO))

ANCHOR = "DiffEqGPU.jl EnsembleGPUKernel, case F: 145 ms on a V100 (published)"
GOAL_KERNEL_MS = 20.0
GOAL_PEER_RATIO = 20.0
GOALS = (
    f"goals on an H100/H200: case F kernel time <= {GOAL_KERNEL_MS:g} ms (arithmetic limit "
    f"about 8 ms), and >= {GOAL_PEER_RATIO:g}x faster than diffrax jit(vmap(diffeqsolve)) "
    "on the same GPU"
)
SIGMA, BETA = 10.0, 8.0 / 3.0
RHO_MAX = 21.0
ADAPTIVE_METHODS = ("dormand_prince_54", "tsit5")
ADAPTIVE_MAX_STEPS = 100_000
#: Runs compared with the cpu target (float64) in case F.
CHECK_RUNS = 1024

#: Sizes of a real GPU run, and of a --simulate run (CUDA simulator, ~30k
#: thread-steps/s: figures there only prove that the script works).
PROFILES = {
    "gpu": dict(runs=2**23, scaling_runs=[2**20, 2**24], steps=1000, adaptive_runs=2**23,
                adaptive_duration=1.0, adaptive_max_steps=ADAPTIVE_MAX_STEPS, peer_runs=2**23,
                peer_min_runs=2**12),
    # max_steps 2,000: a run whose step size collapses ends flagged, in seconds, not hours
    "simulate": dict(runs=2**8, scaling_runs=[2**7, 2**9], steps=20, adaptive_runs=2**8,
                     adaptive_duration=0.02, adaptive_max_steps=2000, peer_runs=2**8,
                     peer_min_runs=2**4),
}


def pow2(n: int) -> str:
    """``2^k`` for a power of two, else the number."""
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


def ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    return f"{seconds * 1e3:.2f} ms"


def clean(obj):
    """A JSON-able copy: keys starting with "_" (arrays kept for comparisons)
    dropped, numpy scalars and small arrays as Python values, NaN and inf as
    None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return clean(obj.tolist()) if getattr(obj, "size", 1) <= 64 else f"array{obj.shape}"
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else float("nan")


class Report:
    """Printed lines and figures; written as JSON after every case."""

    def __init__(self, json_path: str | None, deadline: float | None):
        self.json_path = json_path
        self.deadline = deadline
        self.data: dict[str, Any] = {"lines": [], "F": {}, "A": {}, "peers": {}, "ours_at": {}}

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        self.data["lines"].append(text)

    def save(self) -> None:
        if not self.json_path:
            return
        tmp = f"{self.json_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(clean(self.data), f, indent=1)
        os.replace(tmp, self.json_path)

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()


# ----------------------------------------------------------------- ours
class Ours:
    """cubie_kernel solvers on the cuda target, compiled once each."""

    def __init__(self, report: Report, dt: float, repeats: int, max_steps: int):
        from cubie_kernel import Solver
        from cubie_kernel.systems import lorenz

        self.Solver, self.lorenz = Solver, lorenz
        self.report, self.dt, self.repeats, self.max_steps = report, dt, repeats, max_steps
        self.solvers: dict[tuple, Any] = {}
        self.compile_seconds: dict[tuple, float] = {}
        #: Final states (runs, 3) of timed solves, by ``key()``: compared with peers.
        self.finals: dict[str, Any] = {}

    @staticmethod
    def key(method: str, precision: str, fixed: bool, n_runs: int) -> str:
        return f"{method}/{precision}/{'fixed' if fixed else 'adaptive'}/{n_runs}"

    def solver(self, method: str, precision: str, fixed: bool, rtol: float | None = None):
        import numpy as np

        key = (method, precision, fixed, rtol)
        if key not in self.solvers:
            settings: dict[str, Any] = dict(
                method=method, save_every=None, precision=np.dtype(precision).type, target="cuda"
            )
            if fixed:
                settings["dt"] = self.dt
                if method not in ("rk4", "euler"):
                    settings["controller"] = "fixed"
            else:
                settings.update(rtol=rtol, atol=rtol, max_steps=self.max_steps)
            solver = self.Solver(self.lorenz(), **settings)
            start = time.perf_counter()
            solver.solve(parameters={"rho": np.linspace(0.0, RHO_MAX, 64)}, duration=2 * self.dt)
            self.compile_seconds[key] = time.perf_counter() - start
            self.solvers[key] = solver
        return self.solvers[key]

    def time(self, method: str, precision: str, fixed: bool, n_runs: int, duration: float,
             rtol: float | None = None, keep: bool = False) -> dict:
        """Warm-up run, then ``repeats`` timed solves of ``n_runs`` runs.

        The figures are also kept in the report's ``ours_at`` (by :meth:`key`),
        the final states in :attr:`finals` when ``keep``.
        """
        import numpy as np

        solver = self.solver(method, precision, fixed, rtol)
        rho = np.linspace(0.0, RHO_MAX, n_runs)
        solve = lambda: solver.solve(parameters={"rho": rho}, duration=duration)  # noqa: E731
        solve()  # warm-up at full size: device memory, clocks
        kernel, total = [], []
        ds = None
        for _ in range(self.repeats):
            del ds
            start = time.perf_counter()
            ds = solve()
            total.append(time.perf_counter() - start)
            kernel.append(float(ds.attrs["kernel_seconds"]))
        steps = ds.n_steps.values
        kernel_s, total_s = median(kernel), median(total)
        result = {
            "method": ds.attrs["method"], "precision": precision,
            "controller": ds.attrs["controller"], "runs": n_runs, "duration": duration,
            "kernel_ms": kernel_s * 1e3, "kernel_ms_all": [k * 1e3 for k in kernel],
            "end_to_end_ms": total_s * 1e3, "end_to_end_ms_all": [t * 1e3 for t in total],
            "compile_s": self.compile_seconds[(method, precision, fixed, rtol)],
            "steps_mean": float(steps.mean()), "steps_max": int(steps.max()),
            "steps_min": int(steps.min()),
            "rejected_mean": float(ds.n_rejected.values.mean()),
            "failed_runs": int((ds.status.values != 0).sum()),
            "device_chunks": int(ds.attrs["device_chunks"]),
            "run_steps_per_s_kernel": float(steps.sum()) / kernel_s if kernel_s > 0 else None,
            "ns_per_run_step_kernel": kernel_s / float(steps.sum()) * 1e9 if steps.sum() else None,
        }
        key = self.key(method, precision, fixed, n_runs)
        self.report.data["ours_at"][key] = result
        if keep:
            self.finals[key] = np.stack([ds[v].values[:, -1] for v in ("x", "y", "z")], axis=1)
        return result


def describe(r: dict) -> str:
    return (
        f"kernel {ms(r['kernel_ms'] / 1e3)}, end-to-end {ms(r['end_to_end_ms'] / 1e3)} "
        f"(median of {len(r['kernel_ms_all'])}); steps mean {r['steps_mean']:.1f} "
        f"max {r['steps_max']}; failed runs {r['failed_runs']}; device chunks "
        f"{r['device_chunks']}; compile {r['compile_s']:.1f} s"
    )


def sampled(n: int, count: int = CHECK_RUNS):
    import numpy as np

    return np.unique(np.linspace(0, n - 1, min(n, count)).astype(np.int64))


def case_f(report: Report, ours: Ours, cfg: dict) -> None:
    import numpy as np

    from cubie_kernel import Solver
    from cubie_kernel.systems import lorenz

    steps, dt = cfg["steps"], cfg["dt"]
    duration = steps * dt
    sizes = sorted({cfg["runs"], *cfg["scaling_runs"]})
    report.line(f"== F: Lorenz float32 RK4, dt {dt:g}, {steps} steps, rho = linspace(0, "
                f"{RHO_MAX:g}, N), final state only")
    report.line(f"   anchor: {ANCHOR}")
    report.line(f"   goal: kernel time <= {GOAL_KERNEL_MS:g} ms at N = 2^23 on an H100/H200")
    f = report.data["F"]
    f.update(steps=steps, dt=dt, main_runs=cfg["runs"], anchor=ANCHOR,
             goal_kernel_ms=GOAL_KERNEL_MS, runs={})
    for n in sizes:
        if report.seconds_left() < 30 and n != cfg["runs"]:
            report.line(f"   N = {pow2(n)}: skipped, out of time budget")
            continue
        r = ours.time("rk4", "float32", True, n, duration, keep=n == cfg["runs"])
        f["runs"][str(n)] = r
        rate = r["run_steps_per_s_kernel"]
        report.line(f"   N = {pow2(n):>5} ({n} runs): {describe(r)}; "
                    + (f"{rate / 1e9:.2f} G run-steps/s (kernel)" if rate else "rate n/a"))
        final = ours.finals.get(ours.key("rk4", "float32", True, n))
        if final is not None:
            idx = sampled(n)
            cpu = Solver(lorenz(), target="cpu", method="rk4", dt=dt, save_every=None)
            ref = cpu.solve(parameters={"rho": np.linspace(0.0, RHO_MAX, n)[idx]},
                            duration=duration)
            ref = np.stack([ref[v].values[:, -1] for v in ("x", "y", "z")], axis=1)
            diff = float(np.max(np.abs(final[idx] - ref) / (1.0 + np.abs(ref))))
            f["max_rel_diff_vs_cpu_float64"] = diff
            report.line(f"   check: max |gpu f32 - cpu f64| / (1 + |cpu|) over {idx.size} "
                        f"sampled runs: {diff:.2e}")
        report.save()
    main = f["runs"].get(str(cfg["runs"]))
    if main:
        kernel_ms = main["kernel_ms"]
        if math.isfinite(kernel_ms):
            met = kernel_ms <= GOAL_KERNEL_MS
            f["meets_goal"] = met
            f["anchor_over_ours"] = 145.0 / kernel_ms
            report.line(f"   F at N = {pow2(cfg['runs'])}: kernel {ms(kernel_ms / 1e3)} -> goal "
                        f"<= {GOAL_KERNEL_MS:g} ms {'MET' if met else 'NOT met'}; the anchor's "
                        f"145 ms (V100) / ours = {145.0 / kernel_ms:.1f}x")
        else:
            f["meets_goal"] = None
            report.line(f"   F at N = {pow2(cfg['runs'])}: kernel time n/a (simulator)")
    report.save()


def case_a(report: Report, ours: Ours, cfg: dict) -> None:
    n, duration, rtol = cfg["adaptive_runs"], cfg["adaptive_duration"], cfg["rtol"]
    report.line(f"== A: the same ensemble, N = {pow2(n)}, t in [0, {duration:g}], "
                f"rtol = atol = {rtol:g}, per-run step control")
    for method in ADAPTIVE_METHODS:
        for precision in ("float32", "float64"):
            key = f"{method}/{precision}"
            if report.seconds_left() < 45:
                report.line(f"   {key}: skipped, out of time budget")
                report.data["A"][key] = {"skipped": "out of time budget"}
                continue
            try:
                r = ours.time(method, precision, False, n, duration, rtol=rtol)
            except Exception as exc:  # report and go on: later cases still count
                report.data["A"][key] = {"error": f"{type(exc).__name__}: {exc}"}
                report.line(f"   {key}: FAILED {type(exc).__name__}: {exc}")
                continue
            report.data["A"][key] = r
            report.line(f"   {key:>26}: {describe(r)}")
            report.save()


# ----------------------------------------------------------------- peers
def out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "out of memory" in text or "resource_exhausted" in text or "outofmemory" in text


def sized_timing(report: Report, name: str, make_runner: Callable[[int], Callable[[float], Any]],
                 cfg: dict, duration: float) -> dict:
    """Time ``make_runner(n)(duration)`` at the largest N that fits.

    ``make_runner(n)`` returns ``run(t1)`` that integrates n runs over
    [0, t1], synchronised, returning (final states (n, 3) numpy, steps).
    A probe at t1 = duration / 20 (the full N; halved on out-of-memory)
    estimates the full solve's time, and N is halved until that fits
    ``peer_max_seconds``.
    """
    n = cfg["peer_runs"]
    floor = min(cfg["peer_min_runs"], n)
    probe_t1 = duration / 20
    while True:
        try:
            runner = make_runner(n)
            start = time.perf_counter()
            runner(probe_t1)  # traces/compiles
            first = time.perf_counter() - start
            start = time.perf_counter()
            runner(probe_t1)
            probe = time.perf_counter() - start
            break
        except Exception as exc:
            if out_of_memory(exc) and n // 2 >= floor:
                report.line(f"   {name}: out of memory at N = {pow2(n)}, halving")
                n //= 2
                continue
            raise
    predicted_full = predicted = probe * duration / probe_t1
    requested = n
    while predicted > cfg["peer_max_seconds"] and n // 2 >= floor:
        n //= 2
        predicted /= 2
    if n != requested:
        report.line(f"   {name}: predicted {predicted_full:.3g} s per solve at N = "
                    f"{pow2(requested)} (> {cfg['peer_max_seconds']:g} s); using N = {pow2(n)}")
        runner = make_runner(n)
        start = time.perf_counter()
        runner(probe_t1)
        first = time.perf_counter() - start
    start = time.perf_counter()
    runner(duration)  # warm-up at full length
    warm = time.perf_counter() - start
    repeats = cfg["repeats"] if warm * cfg["repeats"] < 3 * cfg["peer_max_seconds"] else 1
    times, result = [], None
    for _ in range(repeats):
        if report.seconds_left() < warm + 20 and times:
            break
        start = time.perf_counter()
        result = runner(duration)
        times.append(time.perf_counter() - start)
    if result is None:
        result = runner(duration)
        times.append(float("nan"))
    final, steps = result
    return {"runs": n, "requested_runs": cfg["peer_runs"], "seconds": median(times),
            "seconds_all": times, "first_call_s": first, "warmup_s": warm,
            "steps": steps, "_final": final}


def compare_to_ours(report: Report, ours: Ours, peer: dict, ours_spec: tuple,
                    duration: float, label: str) -> None:
    """Time ours at the peer's N, print the ratio and the agreement of final states."""
    import numpy as np

    method, precision, fixed, rtol = ours_spec
    n = peer["runs"]
    key = ours.key(method, precision, fixed, n)
    r = report.data["ours_at"].get(key)
    if r is None or key not in ours.finals:
        r = ours.time(method, precision, fixed, n, duration, rtol=rtol, keep=True)
    final = ours.finals.get(key)
    peer_final = peer.get("_final")
    kernel_s = r["kernel_ms"] / 1e3
    total_s = r["end_to_end_ms"] / 1e3
    ratio_kernel = peer["seconds"] / kernel_s if math.isfinite(kernel_s) and kernel_s > 0 else None
    ratio_total = peer["seconds"] / total_s if total_s > 0 else None
    comparison = {"ours": key, "ours_kernel_ms": r["kernel_ms"],
                  "ours_end_to_end_ms": r["end_to_end_ms"],
                  "ratio_peer_over_our_kernel": ratio_kernel,
                  "ratio_peer_over_our_end_to_end": ratio_total,
                  "peer_ns_per_run": peer["seconds"] / n * 1e9,
                  "our_kernel_ns_per_run": kernel_s / n * 1e9 if ratio_kernel else None}
    if final is not None and peer_final is not None:
        idx = sampled(n)
        a = np.asarray(peer_final, dtype=np.float64)[idx]
        b = np.asarray(final, dtype=np.float64)[idx]
        comparison["max_rel_diff_final_states"] = float(np.max(np.abs(a - b) / (1.0 + np.abs(b))))
    peer.setdefault("compared_with", {})[label] = comparison
    text = (f"      vs ours {label} at N = {pow2(n)}: kernel {ms(kernel_s)}, end-to-end "
            f"{ms(total_s)} -> peer / our kernel = "
            + (f"{ratio_kernel:.1f}x" if ratio_kernel else "n/a"))
    if ratio_total:
        text += f", peer / our end-to-end = {ratio_total:.2f}x"
    if "max_rel_diff_final_states" in comparison:
        text += f"; final states differ by <= {comparison['max_rel_diff_final_states']:.1e} (rel)"
    report.line(text)


def diffrax_peers(report: Report, ours: Ours, cfg: dict) -> None:
    import numpy as np

    try:
        import diffrax
        import jax
        import jax.numpy as jnp
    except ImportError as exc:
        for name in ("diffrax_tsit5_fixed", "diffrax_tsit5_adaptive"):
            report.data["peers"][name] = {"skipped": f"not importable ({exc})"}
        report.line(f"   diffrax: skipped, not importable ({exc})")
        return
    backend = jax.default_backend()
    if backend not in ("gpu", "cuda") and not cfg["simulate"]:
        for name in ("diffrax_tsit5_fixed", "diffrax_tsit5_adaptive"):
            report.data["peers"][name] = {"skipped": f"jax backend is {backend}, not gpu"}
        report.line(f"   diffrax: skipped, jax's backend is {backend!r}, not 'gpu'")
        return
    versions = {"jax": jax.__version__, "diffrax": getattr(diffrax, "__version__", "?"),
                "backend": backend, "devices": [str(d) for d in jax.devices()]}
    dt, steps = cfg["dt"], cfg["steps"]

    def vector_field(t, y, rho):
        x, v, z = y[0], y[1], y[2]
        return jnp.stack([SIGMA * (v - x), x * (rho - z) - v, x * v - BETA * z])

    def build(adaptive: bool, dtype):
        term = diffrax.ODETerm(vector_field)
        y0 = jnp.asarray([1.0, 0.0, 0.0], dtype=dtype)
        if adaptive:
            controller = diffrax.PIDController(rtol=cfg["rtol"], atol=cfg["rtol"])
            dt0, max_steps = None, cfg["adaptive_max_steps"]
        else:
            controller = diffrax.ConstantStepSize()
            dt0, max_steps = jnp.asarray(dt, dtype), steps + steps // 10 + 16

        def one(rho, t1):
            sol = diffrax.diffeqsolve(
                term, diffrax.Tsit5(), t0=jnp.asarray(0.0, dtype), t1=t1, dt0=dt0, y0=y0,
                args=rho, saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller,
                max_steps=max_steps, throw=False,
            )
            return sol.ys[0], sol.stats["num_steps"]

        solve = jax.jit(jax.vmap(one, in_axes=(0, None)))

        def make_runner(n: int):
            rho = jax.device_put(jnp.linspace(0.0, RHO_MAX, n, dtype=dtype))
            jax.block_until_ready(rho)

            def run(t1: float):
                ys, nsteps = solve(rho, jnp.asarray(t1, dtype))
                jax.block_until_ready(ys)
                return ys, nsteps

            return run

        return make_runner

    def finish(name: str, result: dict, dtype_name: str, adaptive: bool) -> dict:
        ys, nsteps = result["_final"], result["steps"]
        ys = np.asarray(ys)
        nsteps = np.asarray(nsteps)
        result.update(_final=ys, steps={"mean": float(nsteps.mean()), "max": int(nsteps.max())},
                      precision=dtype_name, adaptive=adaptive, nonfinite_runs=int(
                          (~np.isfinite(ys).all(axis=1)).sum()), **versions)
        return result

    cases = [("diffrax_tsit5_fixed", False, "float32"), ("diffrax_tsit5_adaptive", True, "float64")]
    for name, adaptive, dtype_name in cases:
        if report.seconds_left() < 60:
            report.data["peers"][name] = {"skipped": "out of time budget"}
            report.line(f"   {name}: skipped, out of time budget")
            continue
        if dtype_name == "float64":
            jax.config.update("jax_enable_x64", True)
        duration = steps * dt if not adaptive else cfg["adaptive_duration"]
        try:
            make_runner = build(adaptive, getattr(jnp, dtype_name))
            result = sized_timing(report, name, make_runner, cfg, duration)
        except Exception as exc:
            report.data["peers"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            report.line(f"   {name}: FAILED {type(exc).__name__}: {str(exc)[:500]}")
            continue
        result = finish(name, result, dtype_name, adaptive)
        report.data["peers"][name] = result
        what = (f"Tsit5 adaptive (PID rtol = atol = {cfg['rtol']:g}) {dtype_name}" if adaptive
                else f"Tsit5 fixed dt {dt:g} {dtype_name}")
        report.line(f"   {name}: jit(vmap(diffeqsolve)) {what}, N = {pow2(result['runs'])}: "
                    f"{ms(result['seconds'])} (median of {len(result['seconds_all'])}; first call "
                    f"incl. tracing {result['first_call_s']:.1f} s); steps mean "
                    f"{result['steps']['mean']:.1f} max {result['steps']['max']}; non-finite runs "
                    f"{result['nonfinite_runs']}")
        if adaptive:
            compare_to_ours(report, ours, result, ("tsit5", "float64", False, cfg["rtol"]),
                            duration, "tsit5 adaptive f64")
        else:
            compare_to_ours(report, ours, result, ("rk4", "float32", True, None),
                            duration, "rk4 f32 (case F)")
            compare_to_ours(report, ours, result, ("tsit5", "float32", True, None),
                            duration, "tsit5 fixed f32")
        result.pop("_final", None)
        report.save()


def torchdiffeq_peers(report: Report, ours: Ours, cfg: dict) -> None:
    try:
        import torch
        import torchdiffeq
    except ImportError as exc:
        for name in ("torchdiffeq_rk4", "torchdiffeq_dopri5"):
            report.data["peers"][name] = {"skipped": f"not importable ({exc})"}
        report.line(f"   torchdiffeq: skipped, not importable ({exc})")
        return
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif cfg["simulate"]:
        device = torch.device("cpu")
    else:
        for name in ("torchdiffeq_rk4", "torchdiffeq_dopri5"):
            report.data["peers"][name] = {"skipped": "torch sees no CUDA device"}
        report.line("   torchdiffeq: skipped, torch.cuda.is_available() is False")
        return
    versions = {"torch": torch.__version__,
                "torchdiffeq": getattr(torchdiffeq, "__version__", "?"), "device": str(device)}
    dt, steps = cfg["dt"], cfg["steps"]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    class Lorenz(torch.nn.Module):
        def __init__(self, rho):
            super().__init__()
            self.rho = rho
            self.evaluations = 0

        def forward(self, t, y):
            self.evaluations += 1
            x, v, z = y[:, 0], y[:, 1], y[:, 2]
            return torch.stack((SIGMA * (v - x), x * (self.rho - z) - v, x * v - BETA * z), dim=1)

    def build(method: str, dtype):
        def make_runner(n: int):
            rho = torch.linspace(0.0, RHO_MAX, n, dtype=dtype, device=device)
            y0 = torch.tensor([1.0, 0.0, 0.0], dtype=dtype, device=device).repeat(n, 1)
            sync()

            def run(t1: float):
                field = Lorenz(rho)
                t = torch.tensor([0.0, t1], dtype=dtype, device=device)
                with torch.no_grad():
                    if method == "rk4":
                        out = torchdiffeq.odeint(field, y0, t, method="rk4",
                                                 options={"step_size": dt})
                    else:
                        out = torchdiffeq.odeint(field, y0, t, method="dopri5",
                                                 rtol=cfg["rtol"], atol=cfg["rtol"])
                sync()
                return out[-1], field.evaluations

            return run

        return make_runner

    cases = [("torchdiffeq_rk4", "rk4", "float32"), ("torchdiffeq_dopri5", "dopri5", "float64")]
    for name, method, dtype_name in cases:
        if report.seconds_left() < 45:
            report.data["peers"][name] = {"skipped": "out of time budget"}
            report.line(f"   {name}: skipped, out of time budget")
            continue
        adaptive = method == "dopri5"
        duration = cfg["adaptive_duration"] if adaptive else steps * dt
        try:
            result = sized_timing(report, name, build(method, getattr(torch, dtype_name)), cfg,
                                  duration)
        except Exception as exc:
            report.data["peers"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            report.line(f"   {name}: FAILED {type(exc).__name__}: {str(exc)[:500]}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        final, evaluations = result["_final"], result["steps"]
        result.update(_final=final.cpu().numpy(), steps=None, evaluations=evaluations,
                      precision=dtype_name, adaptive=adaptive, **versions,
                      nonfinite_runs=int((~torch.isfinite(final).all(dim=1)).sum()))
        report.data["peers"][name] = result
        what = (f"dopri5 rtol = atol = {cfg['rtol']:g} {dtype_name}, one step size for the "
                "whole ensemble" if adaptive else f"rk4 (3/8 rule) step_size {dt:g} {dtype_name}")
        report.line(f"   {name}: odeint {what}, N = {pow2(result['runs'])}: "
                    f"{ms(result['seconds'])} (median of {len(result['seconds_all'])}); "
                    f"{evaluations} vector-field evaluations; non-finite runs "
                    f"{result['nonfinite_runs']}")
        ours_spec = (("dormand_prince_54", "float64", False, cfg["rtol"]) if adaptive
                     else ("rk4", "float32", True, None))
        compare_to_ours(report, ours, result, ours_spec, duration,
                        "dopri5 adaptive f64" if adaptive else "rk4 f32 (case F)")
        result.pop("_final", None)
        del final
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report.save()


def summary(report: Report, cfg: dict) -> None:
    d = report.data
    report.line("== Summary")
    main = d["F"].get("runs", {}).get(str(cfg["runs"]))
    if main:
        report.line(f"   F at N = {pow2(cfg['runs'])}: kernel {ms(main['kernel_ms'] / 1e3)}, "
                    f"end-to-end {ms(main['end_to_end_ms'] / 1e3)}; goal <= {GOAL_KERNEL_MS:g} ms: "
                    + {True: "MET", False: "NOT met", None: "n/a"}[d["F"].get("meets_goal")])
        report.line(f"   {ANCHOR}")
        scaling = ", ".join(f"{pow2(int(n))}: {ms(r['kernel_ms'] / 1e3)}"
                            for n, r in sorted(d["F"]["runs"].items(), key=lambda kv: int(kv[0])))
        report.line(f"   F scaling (kernel): {scaling}")
    for key, r in d["A"].items():
        if "kernel_ms" in r:
            report.line(f"   A {key}: kernel {ms(r['kernel_ms'] / 1e3)}, end-to-end "
                        f"{ms(r['end_to_end_ms'] / 1e3)}, steps mean {r['steps_mean']:.1f}, "
                        f"failed runs {r['failed_runs']}")
        else:
            report.line(f"   A {key}: " + (f"skipped ({r['skipped']})" if "skipped" in r
                                         else f"FAILED ({r.get('error')})"))
    goal = None
    for name, p in d["peers"].items():
        if "seconds" not in p:
            report.line(f"   peer {name}: {p.get('skipped') or p.get('error')}")
            continue
        for label, c in p.get("compared_with", {}).items():
            ratio = c["ratio_peer_over_our_kernel"]
            report.line(f"   peer {name} (N = {pow2(p['runs'])}) {ms(p['seconds'])} vs ours "
                        f"{label} kernel {ms(c['ours_kernel_ms'] / 1e3)}: "
                        + (f"{ratio:.1f}x" if ratio else "n/a"))
            if name == "diffrax_tsit5_fixed" and label.startswith("rk4") and ratio:
                goal = ratio
    d["diffrax_vmap_ratio"] = goal
    d["meets_diffrax_goal"] = None if goal is None else goal >= GOAL_PEER_RATIO
    report.line(f"   goal >= {GOAL_PEER_RATIO:g}x diffrax vmap (Tsit5 fixed vs our F kernel): "
                + ("n/a" if goal is None else f"{goal:.1f}x, {'MET' if goal >= GOAL_PEER_RATIO else 'NOT met'}"))
    report.line(f"   {GOALS}")
    report.save()


# ----------------------------------------------------------------- entry
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's size and timing options (None: the profile's default)."""
    parser.add_argument("--simulate", action="store_true",
                        help="run under numba's CUDA simulator at tiny sizes (no GPU needed)")
    parser.add_argument("--runs", type=int, help="case F's main N (2^23; simulate 2^8)")
    parser.add_argument("--scaling-runs", type=int, nargs="*",
                        help="case F's other N (2^20 2^24; simulate 2^7 2^9)")
    parser.add_argument("--steps", type=int, help="fixed steps of dt (1000; simulate 20)")
    parser.add_argument("--dt", type=float, default=1e-3)
    parser.add_argument("--adaptive-runs", type=int, help="case A's N (2^23; simulate 2^8)")
    parser.add_argument("--adaptive-duration", type=float, help="case A's t1 (1.0; simulate 0.02)")
    parser.add_argument("--rtol", type=float, default=1e-8, help="rtol = atol of case A and peers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-runs", type=int, help="peers' requested N (2^23; simulate 2^8)")
    parser.add_argument("--peer-min-runs", type=int, help="peers' smallest N")
    parser.add_argument("--peer-max-seconds", type=float, default=5.0,
                        help="largest estimated time of one peer solve; N is halved to fit")
    parser.add_argument("--no-peers", action="store_true", help="skip diffrax and torchdiffeq")


def config_from(args: argparse.Namespace) -> dict:
    profile = PROFILES["simulate" if args.simulate else "gpu"]
    cfg = {k: getattr(args, k) if getattr(args, k, None) is not None else v
           for k, v in profile.items()}
    cfg.update(simulate=args.simulate, dt=args.dt, rtol=args.rtol, repeats=args.repeats,
               peer_max_seconds=args.peer_max_seconds, peers=not args.no_peers)
    return cfg


def run_benchmark(cfg: dict, json_path: str | None = None, deadline: float | None = None) -> dict:
    """Run every case; return the figures (also written to ``json_path``)."""
    report = Report(json_path, deadline)
    report.data["config"] = dict(cfg)
    report.data.update(anchor=ANCHOR, goals=GOALS, mode="simulate" if cfg["simulate"] else "gpu")
    if cfg["simulate"]:
        report.line("SIMULATE: numba's CUDA simulator at tiny sizes; no figure below measures "
                    "a GPU (kernel times are n/a: the simulator's events do not time)")
    ours = Ours(report, cfg["dt"], cfg["repeats"], cfg["adaptive_max_steps"])
    started = time.perf_counter()
    for name, case in (("F", case_f), ("A", case_a)):
        try:
            case(report, ours, cfg)
        except Exception as exc:
            report.data[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            report.line(f"   case {name} FAILED: {type(exc).__name__}: {exc}")
            report.save()
    report.line("== Peers on the same GPU (device-resident timings, synchronised)")
    if cfg["peers"]:
        for peers in (torchdiffeq_peers, diffrax_peers):  # torch first: JAX keeps its memory
            try:
                peers(report, ours, cfg)
            except Exception as exc:
                report.line(f"   {peers.__name__} FAILED: {type(exc).__name__}: {exc}")
    else:
        report.line("   skipped (--no-peers)")
    summary(report, cfg)
    report.data["wall_seconds"] = time.perf_counter() - started
    report.save()
    return clean(report.data)


def enable_simulator() -> None:
    """Switch numba's CUDA simulator on; re-exec if numba is already imported."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules:  # too late for this process
        os.execv(sys.executable, [sys.executable, *sys.argv])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--json", help="write the figures there (after every case)")
    parser.add_argument("--deadline", type=float,
                        help="wall-clock time (epoch seconds) after which later parts are skipped")
    parser.add_argument("--require-gpu", action="store_true",
                        help="without a GPU (and without --simulate), fail instead of skipping")
    args = parser.parse_args(argv)
    if args.simulate:
        enable_simulator()
    else:
        from cubie_kernel import targets

        if not targets.gpu_available():
            print("gpu_benchmark: no CUDA GPU visible: skipped (--simulate runs it under the "
                  "CUDA simulator)")
            return 1 if args.require_gpu else 0
    cfg = config_from(args)
    run_benchmark(cfg, args.json, args.deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
