"""The cubie-dist command line: exit codes, one-line errors, --help, a real run."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from cubie_dist.cli import EXIT_BAD_INPUT, build_parser, main
from cubie_dist.sweep_file import load_sweep_file
from cubie_kernel import Solver
from cubie_kernel.systems import exponential_decay, lorenz

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

SMALL = {
    "system": {"example": "exponential_decay"},
    "solver": {"method": "rk4", "dt": 0.01, "save_every": 0.5},
    "sweep": {"kind": "grid", "axes": {"k": {"linspace": [0.5, 2.0, 4]}, "y": [1.0, 2.0]}},
    "duration": 1.0,
}


def write(tmp_path, document, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_cli(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_sweep_files_are_valid(example):
    job = load_sweep_file(example)
    assert job.sweep.n_runs > 0 and job.duration > 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sweepz": {}}, "unknown key(s) ['sweepz']"),
        ({"duration": None}, "duration: expected a number"),
        ({"system": {"example": "lorenzz"}}, "system.example: unknown example 'lorenzz'"),
        ({"sweep": {"kind": "grid", "axes": {"q": [1.0]}}}, "['q']"),
        ({"sweep": {"kind": "grid", "axes": {"k": {"linspace": [0, 1]}}}}, "sweep.axes.k.linspace"),
        ({"solver": {"method": "rk99", "dt": 0.1}}, "solver:"),
        ({"output": "result.csv"}, "must end in .zarr or .nc"),
        ({"parameters": {"k": "fast"}}, "parameters.k: expected a number"),
    ],
)
def test_bad_sweep_files_exit_2_with_one_line(tmp_path, capsys, change, message):
    document = {**SMALL, **change}
    status, out, err = run_cli(capsys, "run", write(tmp_path, document))
    assert status == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and err.startswith("cubie-dist: error: ")
    assert message in err
    assert out == ""  # nothing started, nothing planned


def test_missing_and_unparsable_files(tmp_path, capsys):
    status, _, err = run_cli(capsys, "plan", tmp_path / "nope.yaml")
    assert status == EXIT_BAD_INPUT and "no such sweep file" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("system: [unclosed\n")
    status, _, err = run_cli(capsys, "run", broken)
    assert status == EXIT_BAD_INPUT and "not valid YAML" in err
    status, _, err = run_cli(capsys, "job-script", "--cluster", tmp_path / "none.yaml")
    assert status == EXIT_BAD_INPUT and "no such cluster config" in err


def test_bad_output_option(tmp_path, capsys):
    status, _, err = run_cli(capsys, "run", write(tmp_path, SMALL), "--output", "x.txt")
    assert status == EXIT_BAD_INPUT and "--output" in err


def test_help_documents_every_option():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"run", "plan", "show", "job-script"}
    for name, sub in commands.items():
        text = sub.format_help()
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, (name, flag)
            if action.help is None and action.dest != "help":
                pytest.fail(f"{name}: {action.dest} has no help")
    done = subprocess.run(
        [sys.executable, "-m", "cubie_dist.cli", "run", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--output" in done.stdout and "--cluster" in done.stdout


def test_run_on_the_embedded_cluster_writes_the_merged_result(tmp_path, capsys):
    path = write(tmp_path, SMALL)
    output = tmp_path / "out.zarr"
    status, out, err = run_cli(capsys, "run", path, "--output", output, "--no-progress")
    assert status == 0, err
    assert "Plan:" in out and f"wrote {output}" in out
    ds = xr.open_zarr(output)
    assert dict(ds.sizes) == {"k": 4, "initial_y": 2, "time": 3}  # swept y0 is initial_y
    # the same runs solved directly, value for value
    direct = Solver(exponential_decay(), method="rk4", dt=0.01, save_every=0.5, target="cpu")
    k, y0 = np.meshgrid(np.linspace(0.5, 2.0, 4), [1.0, 2.0], indexing="ij")
    reference = direct.solve({"y": y0.ravel()}, {"k": k.ravel()}, 1.0, grid="verbatim")
    np.testing.assert_array_equal(
        ds["y"].values.reshape(8, 3), reference["y"].values
    )
    assert int(ds["status"].max()) == 0


# ------------------------------------------------------------------ stores from the CLI
SLOW = {  # 8 chunks of ~0.5 s each on the embedded 2-worker cluster
    "system": {"example": "lorenz"},
    "solver": {"method": "rk4", "dt": 0.001},
    "sweep": {"kind": "zip", "columns": {"rho": {"linspace": [0.0, 30.0, 4000]}}},
    "duration": 20.0,
}


def cli(*argv, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "cubie_dist.cli", *map(str, argv)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        **kwargs,
    )


def chunk_markers(store):
    folder = store / "cubie_chunks"
    if not folder.is_dir():
        return {}
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}


def array_files(store):
    return {
        str(p.relative_to(store)): p.read_bytes()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != "zarr.json" and "cubie_chunks" not in p.parts
    }


def test_killed_client_resumes_and_ends_with_the_same_bytes(tmp_path):
    """SIGKILL `cubie-dist run --output s.zarr` mid-sweep; the same command finishes it."""
    import os
    import signal
    import time

    sweep = write(tmp_path, SLOW)
    store = tmp_path / "s.zarr"
    first = cli("run", sweep, "--output", store, "--no-progress")
    deadline = time.monotonic() + 300
    while len(chunk_markers(store)) < 2:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "no chunk finished in 300 s"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the client and its local cluster's processes
    first.wait()
    done = chunk_markers(store)
    assert 2 <= len(done) < 8, "the sweep ended before the kill: make the chunks slower"
    second = cli("run", sweep, "--output", store, "--no-progress")
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    assert f"resuming {store}: {len(done)} of 8 chunks" in out
    after = chunk_markers(store)
    assert len(after) == 8
    assert {name for name in after if after[name] != done.get(name)} == set(after) - set(done)
    # an uninterrupted run of the same file: the same bytes in every array chunk
    clean = tmp_path / "clean.zarr"
    third = cli("run", sweep, "--output", clean, "--no-progress")
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err[-3000:]
    assert array_files(store) == array_files(clean)
    reference = Solver(lorenz(), target="cpu", method="rk4", dt=0.001).solve(
        parameters={"rho": np.linspace(0.0, 30.0, 4000)}, duration=20.0, grid="verbatim",
    )
    resumed = xr.open_zarr(store)
    for name in ("x", "y", "z", "status"):
        np.testing.assert_array_equal(resumed[name].values, reference[name].values)


def test_store_of_another_sweep_exits_2_and_overwrite_replaces_it(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    status, _, _ = run_cli(capsys, "run", write(tmp_path, SMALL), "--output", store,
                           "--no-progress")
    assert status == 0
    other = write(tmp_path, {**SMALL, "duration": 2.0}, "other.yaml")
    status, out, err = run_cli(capsys, "run", other, "--output", store, "--no-progress")
    assert status == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and "duration (1.0 stored, 2.0 asked)" in err
    assert "Traceback" not in err and out == ""
    status, out, err = run_cli(capsys, "run", other, "--output", store, "--no-progress",
                               "--overwrite")
    assert status == 0, err
    ds = xr.open_zarr(store)
    k, y = np.meshgrid(np.linspace(0.5, 2.0, 4), [1.0, 2.0], indexing="ij")
    expected = y * np.exp(-k * 2.0)  # y' = -k y, closed form; RK4's error at dt 0.01: ~5e-9
    np.testing.assert_allclose(ds["y"].isel(time=-1).values, expected, rtol=2e-8)


def test_too_large_netcdf_result_exits_2_before_any_cluster(tmp_path, capsys):
    huge = {**SMALL, "solver": {"method": "rk4", "dt": 0.001, "save_every": 0.001},
            "sweep": {"kind": "grid", "axes": {"k": {"linspace": [0.5, 2.0, 100000]},
                                               "y": {"linspace": [1.0, 2.0, 10000]}}}}
    status, out, err = run_cli(capsys, "run", write(tmp_path, huge), "--output",
                               tmp_path / "huge.nc")
    assert status == EXIT_BAD_INPUT
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "the merged result needs" in err and "--output x.zarr" in err
    assert out == "" and not (tmp_path / "huge.nc").exists()


def test_version_and_plurals(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("cubie-dist ") and out.split()[1][0].isdigit()
    from cubie_dist.chunks import plan_chunks, plural

    assert plural(1, "chunk") == "1 chunk" and plural(1250, "run") == "1,250 runs"
    assert repr(plan_chunks(20, 10, [10**9], min_chunk_runs=64)).startswith(
        "Plan: 20 runs in 1 chunk of <= 20 runs"
    )


# ------------------------------------------------------------------ show
@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("show")
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL, sort_keys=False))
    assert main(["run", str(path), "--output", str(folder / "small.zarr"), "--no-progress"]) == 0
    return folder / "small.zarr"


def test_show_summarises_a_store(small_store, capsys):
    status, out, err = run_cli(capsys, "show", small_store)
    assert status == 0, err
    assert "dims: k=4, initial_y=2, time=3" in out
    assert "y(k, initial_y, time)" in out
    assert "success" in out and "8  (100.0%)" in out
    assert "method: rk4" in out


def test_show_plot_writes_a_real_png(small_store, capsys, tmp_path):
    import matplotlib.image

    png = tmp_path / "y.png"
    status, out, err = run_cli(capsys, "show", small_store, "--plot", "y", "--sel", "time=-1",
                               "--png", png)
    assert status == 0, err
    assert f"wrote {png} (y over k, initial_y)" in out
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 600
    colours = np.unique(image.reshape(-1, image.shape[-1]), axis=0)
    assert len(colours) > 50  # a heatmap, axes and text; not a blank canvas
    # one axis: a line plot
    status, out, err = run_cli(capsys, "show", small_store, "--plot", "y", "--axes", "k",
                               "--png", tmp_path / "line.png")
    assert status == 0, err and (tmp_path / "line.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--plot", "nope"], "no variable 'nope'; variables:"),
        (["--plot", "y", "--sel", "time"], "expected DIM=VALUE"),
        (["--plot", "y", "--sel", "rho=1"], "'rho' is not a dim of 'y'"),
        (["--plot", "y", "--axes", "sigma"], "axis 'sigma' is not a dim"),
        (["--sel", "time=-1"], "need --plot VAR"),
    ],
)
def test_show_errors_are_one_line(small_store, capsys, argv, message):
    status, _, err = run_cli(capsys, "show", small_store, *argv)
    assert status == EXIT_BAD_INPUT
    assert message in err and err.count("\n") == 1


def test_show_without_matplotlib_says_how_to_get_it(small_store, capsys, monkeypatch, tmp_path):
    import sys as _sys

    monkeypatch.setitem(_sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    status, _, err = run_cli(capsys, "show", small_store, "--plot", "y", "--png",
                             tmp_path / "y.png")
    assert status == EXIT_BAD_INPUT and "pip install 'cubie-dist[plot]'" in err


def test_show_of_a_missing_result(capsys, tmp_path):
    status, _, err = run_cli(capsys, "show", tmp_path / "nothing.zarr")
    assert status == EXIT_BAD_INPUT and "no such result" in err


def test_output_errors_name_the_option_once_and_create_nothing(tmp_path, capsys):
    sweep = write(tmp_path, SMALL)
    status, _, err = run_cli(capsys, "run", sweep, "--output", tmp_path / "x.csv")
    assert status == EXIT_BAD_INPUT
    assert err.count("--output:") == 1 and "output: output" not in err and "--output: output" not in err
    status, _, err = run_cli(capsys, "run", sweep, "--output", tmp_path / "new" / "dir" / "x.zarr")
    assert status == EXIT_BAD_INPUT and "does not exist" in err
    assert not (tmp_path / "new").exists()


def test_a_tiny_sweep_plan_is_not_set_by_the_budget():
    from cubie_dist.chunks import plan_chunks

    plan = plan_chunks(20, 100, [8 * 10**9] * 2, min_chunk_runs=64)
    assert plan.limited_by == "min_chunk_runs" and len(plan) == 1
    assert "set by min_chunk_runs" in repr(plan)


def test_a_summaries_sweep_file_runs_and_shows(tmp_path, capsys):
    document = {
        **SMALL,
        "solver": {"method": "rk45", "rtol": 1e-8, "atol": 1e-10, "output": {
            "states": [], "observables": [], "save_every": 0.1,
            "summaries": ["mean", "max", "peaks[2]"], "summarise_every": 0.5, "final_state": True,
        }},
    }
    path = write(tmp_path, document)
    status, out, err = run_cli(capsys, "run", path, "--output", tmp_path / "s.zarr", "--no-progress")
    assert status == 0, err
    status, out, err = run_cli(capsys, "show", tmp_path / "s.zarr")
    assert status == 0, err
    assert "y_max(k, initial_y, window)" in out and "y_peaks(k, initial_y, window, peak)" in out
    png = tmp_path / "ymax.png"
    status, out, err = run_cli(capsys, "show", tmp_path / "s.zarr", "--plot", "y_max", "--png", png)
    assert status == 0, err
    assert png.stat().st_size > 10_000
    # exponential decay y(t) = y0 exp(-k t): the window maximum is at its start
    ds = xr.open_zarr(tmp_path / "s.zarr").load()
    k = ds.k.values[:, None, None]
    y0 = ds.initial_y.values[None, :, None]
    expected = y0 * np.exp(-k * ds.window_start.values[None, None, :])
    np.testing.assert_allclose(ds.y_max.values, expected, rtol=1e-5)
