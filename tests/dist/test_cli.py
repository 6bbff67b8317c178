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
from cubie_kernel.systems import exponential_decay

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
    assert set(commands) == {"run", "plan", "job-script"}
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
