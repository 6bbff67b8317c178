"""The prepared GPU check (issue 9): environment, pytest -m gpu, GPU benchmark, one file.

On a GPU machine (``make gpu-check`` installs the missing wheels first, then
runs this) it, in under 8 minutes (``--budget-s``) and without network:

1. records the environment: GPU, driver, CUDA driver and runtime versions,
   numba and numba-cuda (asked of ``numba.cuda`` in a subprocess, so this
   process never holds a CUDA context), ``nvidia-smi``, package versions;
2. runs ``python -m pytest -m gpu -q -rfEs tests/`` in a subprocess with
   ``CUBIE_REQUIRE_GPU=1`` (a missing GPU fails instead of skipping; see
   tests/conftest.py), with ``-n 4`` when pytest-xdist is installed (the
   tests are compile-bound), and keeps its summary lines;
3. runs ``benchmarks/gpu_benchmark.py`` in a subprocess (its figures come
   back as JSON, written after every case, so a crash or a timeout still
   leaves what was measured);
4. writes ALL of it (environment, pytest summary, every figure, the
   benchmark's report) into ONE text file and a JSON twin: under ``$OUT``
   (``gpu-check.txt``, ``gpu-check.json``) when that variable is set, else
   under ``gpu-check-results/`` in the repository (ignored by git) with a
   timestamp; the path is printed first and last. The file is rewritten
   after every step.

``--simulate`` runs the same logic end to end without a GPU: numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``, set here for every subprocess; this
script never imports numba itself), the pytest step replaced by a small
``pytest -m cudasim`` selection (plus a collect-only run of the gpu tests),
the benchmark at tiny sizes, peers only where installed. ``make test`` runs
it (tests/test_gpu_check.py) so the check cannot rot.

Usage: python benchmarks/gpu_check.py [--simulate] [--budget-s S] [--pytest-timeout S]
       [--pytest-workers N] [--no-pytest] [benchmark options: gpu_benchmark.py --help]

Exit status 0 when pytest passed and the benchmark finished, else 1 (the
results file is written either way).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import gpu_benchmark  # noqa: E402  (light: imports neither numba nor cubie_kernel)

REQUIRE_GPU_ENV = "CUBIE_REQUIRE_GPU"
RESULTS_DIR = REPO / "gpu-check-results"
#: The small simulator selection that stands in for ``pytest -m gpu``.
SIMULATE_TESTS = ["tests/test_cudasim.py", "-k",
                  "shared_memory_and_several_blocks or observables_and_device_chunks"]
PACKAGES = (
    "numpy", "numba", "numba-cuda", "cuda-bindings", "cuda-core", "cuda-python", "llvmlite",
    "xarray", "scipy", "dask", "distributed", "dask-cuda", "dask-jobqueue", "zarr",
    "nvidia-ml-py", "jax", "jaxlib", "diffrax", "equinox", "torch", "torchdiffeq",
    "pytest", "pytest-xdist",
)
SUMMARY_COUNT = re.compile(
    r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)"
)


# ----------------------------------------------------------------- environment
def probe_env() -> dict:
    """What numba.cuda says about the GPU (run in a subprocess: --probe-env)."""
    info: dict = {}

    def attempt(key, fn):
        try:
            info[key] = fn()
        except Exception as exc:  # every probe is optional
            info[key] = f"unavailable ({type(exc).__name__}: {exc})"

    import contextlib
    import io

    import numba

    info["numba"] = numba.__version__
    attempt("numba_cuda", lambda: metadata.version("numba-cuda"))
    info["simulator"] = bool(numba.config.ENABLE_CUDASIM)
    from numba import cuda

    attempt("cuda_is_available", lambda: bool(cuda.is_available()))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        attempt("detect_ok", lambda: bool(cuda.detect()))
    info["detect"] = buffer.getvalue().strip()

    def device():
        d = cuda.get_current_device()
        name = d.name.decode() if isinstance(d.name, bytes) else str(d.name)
        out = {"name": name, "compute_capability": list(d.compute_capability)}
        for attr in ("MULTIPROCESSOR_COUNT", "MAX_SHARED_MEMORY_PER_BLOCK", "CLOCK_RATE"):
            with contextlib.suppress(Exception):
                out[attr.lower()] = int(getattr(d, attr))
        return out

    attempt("device", device)
    attempt("cuda_driver_version", lambda: list(cuda.cudadrv.driver.driver.get_version()))
    attempt("cuda_runtime_version", lambda: list(cuda.runtime.get_version()))
    attempt("nvvm_version", lambda: list(cuda.cudadrv.nvvm.NVVM().get_version()))
    attempt("memory_free_total_bytes",
            lambda: [int(x) for x in cuda.current_context().get_memory_info()])
    attempt("nvidia_binding", lambda: bool(numba.cuda.config.CUDA_USE_NVIDIA_BINDING))
    return info


def run_quiet(cmd: list[str], timeout: float = 60) -> tuple[int, str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, f"{type(exc).__name__}: {exc}"
    return done.returncode, (done.stdout + done.stderr).strip()


def environment(env: dict[str, str]) -> dict:
    info: dict = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
    }
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info["packages"] = versions
    rc, commit = run_quiet(["git", "rev-parse", "--short", "HEAD"], 10)
    info["commit"] = commit if rc == 0 else "unknown (no git repository)"
    if rc == 0:
        rc, status = run_quiet(["git", "status", "--porcelain", "--untracked-files=no"], 10)
        info["modified_files"] = len(status.splitlines()) if rc == 0 else None
    if shutil.which("nvidia-smi"):
        rc, query = run_quiet(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                               "compute_cap", "--format=csv,noheader"])
        if rc != 0:
            rc, query = run_quiet(["nvidia-smi", "--query-gpu=name,driver_version",
                                   "--format=csv,noheader"])
        info["nvidia_smi_query"] = query
        rc, full = run_quiet(["nvidia-smi"])
        info["nvidia_smi"] = full
        match = re.search(r"CUDA Version:\s*([\d.]+)", full)
        info["nvidia_smi_cuda_version"] = match.group(1) if match else None
    else:
        info["nvidia_smi_query"] = "nvidia-smi not found"
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe-env"],
                              capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
        lines = done.stdout.strip().splitlines()
        info["numba_cuda_probe"] = json.loads(lines[-1]) if lines else {
            "error": done.stderr.strip()[-2000:]}
    except Exception as exc:
        info["numba_cuda_probe"] = {"error": f"{type(exc).__name__}: {exc}"}
    return info


# ----------------------------------------------------------------- subprocesses
def stream(cmd: list[str], env: dict[str, str], timeout: float, prefix: str) -> dict:
    """Run ``cmd``, echo its output live, keep it; kill its process group at ``timeout``."""
    print(f"{prefix}$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env, cwd=REPO, start_new_session=True)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
            try:
                os.killpg(proc.pid, sig)  # the group this call started, only
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    timer = threading.Timer(max(timeout, 1.0), kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            print(f"{prefix}{line}", end="", flush=True)
            lines.append(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        timer.cancel()
    return {"command": cmd, "returncode": rc, "timed_out": timed_out.is_set(),
            "wall_s": time.perf_counter() - start, "output": lines}


def pytest_summary(lines: list[str]) -> dict:
    """The short test summary lines and the final counts of a pytest run."""
    final = next((ln for ln in reversed(lines)
                  if re.search(r"\b(passed|failed|error|errors|skipped|no tests ran)\b", ln)
                  and " in " in ln), "")
    counts = {}
    for number, word in SUMMARY_COUNT.findall(final):
        word = {"error": "errors", "warning": "warnings"}.get(word, word)
        counts[word] = int(number)
    summary = []
    for i, line in enumerate(lines):
        if "short test summary info" in line:
            summary = [ln for ln in lines[i + 1:] if ln.strip()]
            break
    if final and final not in summary:
        summary.append(final)
    return {"final_line": final.strip("= ").strip(), "counts": counts, "summary_lines": summary}


def run_pytest(args, env: dict[str, str]) -> dict:
    base = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider"]
    if args.simulate:
        note = ("SIMULATE: pytest -m gpu replaced by a small CUDA-simulator selection "
                f"(pytest -m cudasim {shlex.join(SIMULATE_TESTS)}); the gpu tests are only "
                "collected")
        print(note, flush=True)
        collect = stream(base[:3] + ["--collect-only", "-q", "-m", "gpu",
                                     "-p", "no:cacheprovider", "tests/test_gpu.py"],
                         env, args.pytest_timeout, "[collect] ")
        collected = next((ln for ln in reversed(collect["output"]) if "collected" in ln
                          or "tests" in ln), "")
        result = stream(base + ["-m", "cudasim", *SIMULATE_TESTS], env, args.pytest_timeout,
                        "[pytest] ")
        result["note"] = note
        result["gpu_tests_collected"] = collected.strip()
        result["gpu_collect_returncode"] = collect["returncode"]
    else:
        cmd = base + ["-m", "gpu", "--continue-on-collection-errors"]
        workers = args.pytest_workers
        if workers > 0 and importlib.util.find_spec("xdist") is not None:
            cmd += ["-n", str(workers)]
        elif workers > 0:
            print("pytest-xdist not installed: the gpu tests run in one process", flush=True)
        result = stream(cmd + ["tests/"], {**env, REQUIRE_GPU_ENV: "1"}, args.pytest_timeout,
                        "[pytest] ")
    result.update(pytest_summary(result["output"]))
    result["ok"] = result["returncode"] == 0 and not result["timed_out"]
    return result


def run_benchmark(args, bench_args: list[str], env: dict[str, str], deadline: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="cubie-gpu-check-") as tmp:
        json_path = os.path.join(tmp, "figures.json")
        cmd = [sys.executable, str(HERE / "gpu_benchmark.py"), "--json", json_path,
               "--deadline", f"{deadline:.0f}", "--require-gpu"]
        if args.simulate:
            cmd.append("--simulate")
        timeout = max(120.0, deadline - time.time() + 60.0)
        result = stream(cmd + bench_args, env, timeout, "[bench] ")
        try:
            with open(json_path) as f:
                result["figures"] = json.load(f)
        except (OSError, ValueError) as exc:
            result["figures"] = None
            result["figures_error"] = f"{type(exc).__name__}: {exc}"
    result["ok"] = result["returncode"] == 0 and not result["timed_out"]
    return result


# ----------------------------------------------------------------- the file
def flatten(obj, path: str = "") -> list[str]:
    """``path = value`` for every leaf (lists of plain values inline)."""
    if isinstance(obj, dict) and obj:
        items = obj.items()
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = enumerate(obj)
    else:
        return [f"{path} = {json.dumps(obj)}"]
    out = []
    for key, value in items:
        out += flatten(value, f"{path}.{key}" if path else str(key))
    return out


def fmt_version(v) -> str:
    return ".".join(map(str, v)) if isinstance(v, list) else str(v)


def render(report: dict) -> str:
    out = []
    add = out.append
    mode = report["mode"]
    add("cubie-dist GPU check (issue 9)")
    if mode == "simulate":
        add("MODE: simulate -- numba's CUDA simulator at tiny sizes: this proves the check runs, "
            "it measures no GPU")
    else:
        add("MODE: gpu")
    add(f"written: {report['written']}   total wall time: {report.get('wall_s', 0):.1f} s")
    add(f"command: {shlex.join(report['argv'])}")
    add(f"status: {report.get('status', 'running')}")
    add("")
    env = report.get("environment")
    add("== Environment")
    if env:
        probe = env.get("numba_cuda_probe", {})
        device = probe.get("device")
        if isinstance(device, dict):
            mem = probe.get("memory_free_total_bytes")
            total = f", {mem[1] / 2**30:.1f} GiB" if isinstance(mem, list) else ""
            add(f"gpu: {device.get('name')} (compute capability "
                f"{fmt_version(device.get('compute_capability'))}, "
                f"{device.get('multiprocessor_count', '?')} SMs{total})")
        else:
            add(f"gpu: {device}")
        add(f"nvidia-smi: {env.get('nvidia_smi_query')}"
            + (f"  (driver supports CUDA {env['nvidia_smi_cuda_version']})"
               if env.get("nvidia_smi_cuda_version") else ""))
        add(f"CUDA driver API version: {fmt_version(probe.get('cuda_driver_version'))}; "
            f"CUDA runtime version: {fmt_version(probe.get('cuda_runtime_version'))}; "
            f"NVVM: {fmt_version(probe.get('nvvm_version'))}")
        add(f"numba {probe.get('numba')}, numba-cuda {probe.get('numba_cuda')}, simulator "
            f"{probe.get('simulator')}, NVIDIA binding {probe.get('nvidia_binding')}")
        if "error" in probe:
            add(f"numba.cuda probe failed: {probe['error']}")
        add(f"python {env['python']} ({env['executable']}), {env['platform']}, host "
            f"{env['host']}, {env['cpu_count']} CPUs, commit {env.get('commit')}"
            + (f" ({env['modified_files']} modified files)" if env.get("modified_files") else ""))
        add("packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v))
        missing = [k for k, v in env["packages"].items() if not v]
        add("not installed: " + (", ".join(missing) or "-"))
        if probe.get("detect"):
            add("numba.cuda.detect():")
            out.extend(f"  {ln}" for ln in probe["detect"].splitlines())
        if env.get("nvidia_smi"):
            add("nvidia-smi:")
            out.extend(f"  {ln}" for ln in env["nvidia_smi"].splitlines())
    add("")
    add("== pytest")
    pt = report.get("pytest")
    if pt is None:
        add("not run yet" if report.get("status") == "running" else "skipped (--no-pytest)")
    else:
        if pt.get("note"):
            add(pt["note"])
            add(f"gpu tests collected (collect-only, exit {pt.get('gpu_collect_returncode')}): "
                f"{pt.get('gpu_tests_collected')}")
        add(f"command: {shlex.join(pt['command'])}")
        add(f"exit code {pt['returncode']}{' (TIMED OUT)' if pt['timed_out'] else ''}, "
            f"wall {pt['wall_s']:.1f} s: {'OK' if pt['ok'] else 'FAILED'}")
        add(f"summary: {pt['final_line'] or '(no summary line)'}")
        out.extend(f"  {ln}" for ln in pt["summary_lines"])
    add("")
    add("== GPU benchmark")
    bench = report.get("benchmark")
    if bench is None:
        add("not run yet" if report.get("status") == "running" else "not run")
    else:
        add(f"command: {shlex.join(bench['command'])}")
        add(f"exit code {bench['returncode']}{' (TIMED OUT)' if bench['timed_out'] else ''}, "
            f"wall {bench['wall_s']:.1f} s: {'OK' if bench['ok'] else 'FAILED'}")
        out.extend(bench["output"])
        figures = bench.get("figures")
        add("")
        add("== All figures (from the benchmark's JSON)")
        if figures:
            out.extend(flatten({k: v for k, v in figures.items() if k != "lines"}))
        else:
            add(f"none: {bench.get('figures_error')}")
    if pt is not None and not pt["ok"]:
        add("")
        add("== pytest output (last 400 lines)")
        out.extend(pt["output"][-400:])
    return "\n".join(out) + "\n"


def write(report: dict, paths: tuple[Path, Path]) -> None:
    report["written"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    text_path, json_path = paths
    for path, content in ((text_path, render(report)),
                          (json_path, json.dumps(report, indent=1, default=str))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, path)


def output_paths(simulate: bool) -> tuple[Path, Path]:
    stem = "gpu-check-simulate" if simulate else "gpu-check"
    out = os.environ.get("OUT")
    if out:
        folder = Path(out)
    else:
        folder = RESULTS_DIR
        stem += dt.datetime.now().strftime("-%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}.txt", folder / f"{stem}.json"


# ----------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--probe-env"]:
        print(json.dumps(probe_env(), default=str))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other options go to benchmarks/gpu_benchmark.py (sizes, repeats, peers).")
    parser.add_argument("--simulate", action="store_true",
                        help="no GPU: CUDA simulator, tiny sizes, a small cudasim pytest selection")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="wall-clock budget of the whole check (the benchmark skips what "
                             "would overrun it)")
    parser.add_argument("--pytest-timeout", type=float, default=240.0,
                        help="the pytest step is killed after this many seconds")
    parser.add_argument("--pytest-workers", type=int, default=4,
                        help="pytest-xdist workers for the gpu tests when installed (0: one process)")
    parser.add_argument("--no-pytest", action="store_true", help="skip the pytest step")
    args, bench_args = parser.parse_known_args(argv)
    # validate the benchmark's options now, not after pytest
    gpu_benchmark.build_parser().parse_args(bench_args + (["--simulate"] if args.simulate else []))

    start = time.time()
    deadline = start + args.budget_s
    # COLUMNS: pytest's summary lines are cut to the terminal's width (80 in a pipe)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    pythonpath = env.get("PYTHONPATH", "")
    if str(REPO) not in pythonpath.split(os.pathsep):  # the checkout, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), pythonpath) if p)
    if args.simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"  # every subprocess imports numba afresh
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)

    paths = output_paths(args.simulate)
    print(f"gpu_check: results go to {paths[0]} (and {paths[1].name})", flush=True)
    report: dict = {"mode": "simulate" if args.simulate else "gpu", "status": "running",
                    "argv": [Path(sys.executable).name, "benchmarks/gpu_check.py", *argv],
                    "budget_s": args.budget_s, "paths": [str(p) for p in paths]}
    write(report, paths)

    print("== environment", flush=True)
    report["environment"] = environment(env)
    probe = report["environment"].get("numba_cuda_probe", {})
    print(f"   gpu: {probe.get('device')}; numba {probe.get('numba')}, numba-cuda "
          f"{probe.get('numba_cuda')}", flush=True)
    write(report, paths)

    if args.no_pytest:
        print("== pytest: skipped (--no-pytest)", flush=True)
    else:
        print("== pytest", flush=True)
        report["pytest"] = run_pytest(args, env)
        write(report, paths)

    print("== GPU benchmark", flush=True)
    report["benchmark"] = run_benchmark(args, bench_args, env, deadline - 10)
    report["wall_s"] = time.time() - start
    ok = report["benchmark"]["ok"] and (args.no_pytest or report["pytest"]["ok"])
    report["status"] = "OK" if ok else "FAILED (see the pytest and benchmark sections)"
    write(report, paths)
    print(f"gpu_check: {report['status']}; wall {report['wall_s']:.0f} s; results in {paths[0]} "
          f"(and {paths[1].name})", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
