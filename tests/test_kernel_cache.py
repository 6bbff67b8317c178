"""Compiled kernels cached on disk: a second process loads instead of compiling.

Each check runs fresh Python processes (a process's own in-memory kernels
would hide the disk cache) with ``CUBIE_CACHE_DIR`` pointing at a folder of
the test's own.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from cubie_kernel import Solver, kernel_cache, targets
from cubie_kernel.systems import lorenz

CHILD = r"""
import json, sys, time
import numpy as np
from cubie_kernel import Solver
from cubie_kernel.systems import lorenz

dt = float(sys.argv[1])
solver = Solver(lorenz(), method="rk4", dt=dt, save_every=0.5)
start = time.perf_counter()
result = solver.solve(parameters={"rho": [5.0, 28.0]}, duration=1.0)
first = time.perf_counter() - start
start = time.perf_counter()
solver.solve(parameters={"rho": [5.0, 28.0]}, duration=1.0)
second = time.perf_counter() - start
stats = solver.kernel.device_function.stats
print(json.dumps({
    "hits": sum(stats.cache_hits.values()),
    "misses": sum(stats.cache_misses.values()),
    "compile": first - second,
    "x": result.x.values.tolist(),
}))
"""


def run_child(cache: str, dt: float = 1e-3) -> dict:
    env = {**os.environ, kernel_cache.CACHE_DIR_ENV: cache}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, repr(dt)], env=env, capture_output=True, text=True,
        timeout=600, check=True, cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_kernel(tmp_path):
    cache = str(tmp_path / "kernels")
    cold = run_child(cache)
    assert (cold["hits"], cold["misses"]) == (0, 1)
    warm = run_child(cache)
    assert (warm["hits"], warm["misses"]) == (1, 0)
    assert warm["x"] == cold["x"]  # the same numbers, bit for bit
    assert warm["compile"] < cold["compile"] / 3
    # a setting that changes the code is another kernel
    other = run_child(cache, dt=2e-3)
    assert (other["hits"], other["misses"]) == (0, 1)
    assert other["x"] != cold["x"]


def test_processes_filling_one_folder_at_once(tmp_path):
    cache = str(tmp_path / "kernels")
    env = {**os.environ, kernel_cache.CACHE_DIR_ENV: cache}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, "1e-3"], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert all(o["x"] == outputs[0]["x"] for o in outputs)
    assert not list(pathlib.Path(cache).glob(".tmp-*"))  # no half-written files left
    assert run_child(cache)["hits"] == 1  # and what they left loads


def test_cache_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))  # the default folder
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, "off")
    assert kernel_cache.cache_dir() is None
    module = kernel_cache.import_source("test", "VALUE = 4\n", identity=f"off {tmp_path}")
    assert module.VALUE == 4
    assert not (tmp_path / "home").exists()  # compiled in memory, nothing on disk
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, str(tmp_path / "k"))
    assert kernel_cache.cache_dir() == tmp_path / "k"
    kernel_cache.import_source("test", "VALUE = 5\n", identity=f"on {tmp_path}")
    assert len(list((tmp_path / "k").glob(f"{kernel_cache.MODULE_PREFIX}test_*.py"))) == 1


def test_default_folder_is_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(kernel_cache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kernel_cache.cache_dir() == tmp_path / "cubie-dist" / "kernels"


def test_dask_config_names_the_folder(monkeypatch, tmp_path):
    import dask

    monkeypatch.delenv(kernel_cache.CACHE_DIR_ENV, raising=False)
    with dask.config.set({kernel_cache.DASK_CONFIG_KEY: str(tmp_path / "from-dask")}):
        assert kernel_cache.cache_dir() == tmp_path / "from-dask"


def test_fingerprint_follows_what_changes_the_code():
    def fingerprint(**settings):
        base = dict(method="dormand_prince_54", rtol=1e-6, atol=1e-9)
        return Solver(lorenz(), **{**base, **settings}).kernel.fingerprint()

    same = fingerprint()
    assert fingerprint() == same
    for change in (dict(rtol=1e-7), dict(method="tsit5"), dict(controller="i"),
                   dict(precision=np.float32), dict(save_every=0.1), dict(stages_location="shared")):
        assert fingerprint(**change) != same, change


def test_unwritable_folder_warns_and_still_solves(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(kernel_cache.CACHE_DIR_ENV, str(blocked / "kernels"))
    with pytest.warns(RuntimeWarning, match="not writable"):
        module = kernel_cache.import_source("test", "VALUE = 3\n", identity=str(tmp_path))
    assert module.VALUE == 3


def test_targets_are_plug_ins(monkeypatch):
    class Fake(targets.Target):
        name = "fake"

    class EntryPoint:
        name = "fake"

        @staticmethod
        def load():
            return Fake

    monkeypatch.setattr(targets, "_entry_points", lambda: {"fake": EntryPoint})
    targets.get_target.cache_clear()
    try:
        assert "fake" in targets.target_names()
        assert isinstance(targets.get_target("fake"), Fake)
        with pytest.raises(ValueError, match="'cpu', 'cuda', 'fake'"):
            targets.check_target_name("tpu")
    finally:
        targets.get_target.cache_clear()


DECAY = r"""
from cubie_kernel import Solver
from cubie_kernel.systems import exponential_decay
result = Solver(exponential_decay(), method="rk4", dt=0.01, save_every=0.5).solve(
    {"y": [1.0]}, {"k": [1.0]}, 1.0)
print(repr(float(result.y.values[0, -1])))
"""
LORENZ = r"""
from cubie_kernel import Solver
from cubie_kernel.systems import lorenz
result = Solver(lorenz(), method="rk4", dt=0.001).solve(parameters={"rho": [28.0]}, duration=2.0)
print(repr(float(result.x.values[0, -1])), int(result.n_steps.values[0]))
"""


def test_kernels_compiled_by_different_processes_load_side_by_side(tmp_path):
    """Two kernels, each compiled in a process of its own, loaded into a third.

    Their drivers are closures of one definition: with numba's per-process
    function numbering both were named alike, and the second kernel ran the
    first one's driver (a Lorenz solve that took no step)."""

    def python(code, cache):
        env = {**os.environ, kernel_cache.CACHE_DIR_ENV: cache}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=600, check=True)
        return done.stdout.split()

    cache = str(tmp_path / "kernels")
    python(DECAY, cache)
    python(LORENZ, cache)
    both = python(DECAY + LORENZ, cache)  # both loaded from the cache, one process
    reference = python(DECAY + LORENZ, "off")
    assert both == reference
    assert float(both[0]) == pytest.approx(np.exp(-1.0), rel=1e-6)
    assert both[2] == "2000"
