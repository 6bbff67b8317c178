"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end without a GPU.

``gpu_check.py --simulate`` sets NUMBA_ENABLE_CUDASIM=1 for its own
subprocesses, so this is a plain test of the main suite: it runs the whole
check under the CUDA simulator at tiny sizes into a temporary ``$OUT`` and
reads the results file back. GPUs are hidden from every subprocess here
(``CUDA_VISIBLE_DEVICES=""``), so the tests behave the same on a GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def no_gpu_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_ENABLE_CUDASIM", "OUT", "CUBIE_REQUIRE_GPU")}
    return {**env, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def simulated_check(tmp_path_factory):
    """One ``gpu_check.py --simulate --repeats 1`` run: (process, text, figures)."""
    out = tmp_path_factory.mktemp("out")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--simulate", "--repeats", "1"],
        cwd=REPO, env=no_gpu_env(OUT=str(out)), capture_output=True, text=True, timeout=300,
    )
    text_path, json_path = out / "gpu-check-simulate.txt", out / "gpu-check-simulate.json"
    assert text_path.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    assert json_path.exists()
    return done, text_path.read_text(), json.loads(json_path.read_text())


def test_simulated_check_succeeds_and_prints_its_path(simulated_check):
    done, _, report = simulated_check
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert report["status"] == "OK"
    assert report["mode"] == "simulate"
    assert "gpu-check-simulate.txt" in done.stdout.splitlines()[0]
    assert "gpu-check-simulate.txt" in done.stdout.splitlines()[-1]


def test_results_file_holds_environment_pytest_and_figures(simulated_check):
    _, text, report = simulated_check
    assert text.startswith("cubie-dist GPU check")
    assert "MODE: simulate" in text
    # the environment section
    assert "== Environment" in text
    assert "numba-cuda 0." in text and "simulator True" in text
    probe = report["environment"]["numba_cuda_probe"]
    assert probe["simulator"] is True and probe["numba_cuda"]
    # the pytest step, replaced by a small cudasim selection, with its summary
    assert "== pytest" in text
    assert "SIMULATE: pytest -m gpu replaced by" in text
    assert "gpu tests collected" in text
    assert report["pytest"]["ok"] and report["pytest"]["counts"]["passed"] >= 1
    assert "passed" in report["pytest"]["final_line"]
    # the benchmark: F (with the anchor), A, peers (run or skipped), all figures
    assert "== GPU benchmark" in text
    assert "== F: Lorenz float32 RK4" in text
    assert "DiffEqGPU.jl EnsembleGPUKernel, case F: 145 ms on a V100 (published)" in text
    assert "== A:" in text and "== Peers" in text and "== Summary" in text
    assert "== All figures" in text
    figures = report["benchmark"]["figures"]
    for n in ("128", "256", "512"):
        run = figures["F"]["runs"][n]
        assert run["end_to_end_ms"] > 0 and run["steps_max"] == 20 and run["failed_runs"] == 0
        assert f"F.runs.{n}.end_to_end_ms = " in text
    assert figures["F"]["max_rel_diff_vs_cpu_float64"] < 1e-5
    assert sorted(figures["A"]) == [
        "dormand_prince_54/float32", "dormand_prince_54/float64", "tsit5/float32", "tsit5/float64"
    ]
    for case in figures["A"].values():  # ran; whether float32 meets 1e-8 is not asked here
        assert case["steps_max"] >= 1 and case["end_to_end_ms"] > 0
    assert set(figures["peers"]) == {
        "diffrax_tsit5_fixed", "diffrax_tsit5_adaptive", "torchdiffeq_rk4", "torchdiffeq_dopri5"
    }
    for name, peer in figures["peers"].items():
        assert "seconds" in peer or "skipped" in peer, (name, peer)
        assert name in text


def test_benchmark_without_a_gpu_prints_one_line_and_exits_0():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_benchmark.py")], cwd=REPO,
                          env=no_gpu_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and "no CUDA GPU visible: skipped" in lines[0]


def test_require_gpu_turns_the_gpu_skip_into_a_failure():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
           "tests/test_gpu.py", "-k", "auto_target_picks_the_gpu"]
    skipped = subprocess.run(cmd, cwd=REPO, env=no_gpu_env(), capture_output=True, text=True,
                             timeout=120)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    failed = subprocess.run(cmd, cwd=REPO, env=no_gpu_env(CUBIE_REQUIRE_GPU="1"),
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1, failed.stdout
    assert "no CUDA GPU visible (CUBIE_REQUIRE_GPU is set)" in failed.stdout
