"""Every code block of README.md runs as written.

Python blocks are saved as scripts and run with ``python file.py`` in a
fresh folder (so an embedded cluster's worker processes import them again,
as they would for a user). Shell lines run from the repository root, except
the ones that need what this machine may not have (a GPU, SLURM) or that
would recurse (``make test``): those are listed below with the reason, and
the test fails if a README line matches none of the rules.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)

#: Shell lines not run here, by a substring they contain, and why.
NOT_RUN = {
    "make test": "runs this very suite",
    "local-cuda.yaml": "needs a CUDA GPU",
    "my-slurm": "needs a SLURM cluster and a site config",
    "make gpu-check": "needs a CUDA GPU",
    "make gpu-wheels": "downloads wheels from PyPI",
}
TIMEOUT_S = 600


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == language]


def shell_lines() -> list[str]:
    lines = []
    for body in blocks("sh"):
        for line in body.splitlines():
            command = line.split("#", 1)[0].strip()
            if command:
                lines.append(command)
    return lines


def test_the_readme_has_blocks_to_run():
    assert len(blocks("python")) >= 3 and len(shell_lines()) >= 5


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs_as_a_script(index, tmp_path):
    script = tmp_path / f"readme_{index}.py"
    script.write_text(blocks("python")[index])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=TIMEOUT_S, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, f"block {index}:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("command", shell_lines())
def test_shell_line_runs(command, tmp_path):
    skipped = [why for key, why in NOT_RUN.items() if key in command]
    if skipped:
        pytest.skip(f"{command!r}: {skipped[0]}")
    venv = ROOT / ".venv" / "bin"
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
        timeout=TIMEOUT_S, env=env,
    )
    for leftover in ("out.nc", "examples/lorenz_grid_x.png"):
        (ROOT / leftover).unlink(missing_ok=True)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_the_sweep_file_schema_block_is_a_valid_sweep_file():
    import yaml

    from cubie_dist.sweep_file import parse_sweep_file

    (schema,) = blocks("yaml")
    job = parse_sweep_file(yaml.safe_load(schema))
    assert job.sweep.shape == (1000, 3) and job.output == "lorenz_grid.zarr"
    uncommented = []  # the commented-out definition form instead of the example
    for line in schema.splitlines():
        if line.startswith(("system:", "  example:")):
            continue
        if line.startswith("# system:"):
            line = line[2:]
        elif line.startswith("#   "):
            line = line[2:]
        uncommented.append(line)
    document = yaml.safe_load("\n".join(uncommented))
    # the schema's sweep is over lorenz's inputs; sweep the decay system's own
    document.update(sweep={"kind": "grid", "axes": {"k": [0.5, 1.0]}}, initial_values={})
    job = parse_sweep_file(document)  # the definition form, uncommented
    assert job.spec.system.name == "decay" and job.spec.system.units["t"] == "s"
