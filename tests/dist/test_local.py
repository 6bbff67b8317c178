"""The embedded cluster and scripts: an unguarded script fails at once, a guarded one runs."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import time

import pytest

from cubie_dist.local import _is_main_guard

SWEEP = """
import numpy as np
import cubie_dist as cd
from cubie_kernel.systems import exponential_decay

spec = cd.SolverSpec(exponential_decay(), method="rk4", dt=0.01)
sweep = cd.Sweep.grid(k=np.linspace(0.5, 2.0, 4))
"""


@pytest.mark.parametrize(
    "source, guard",
    [
        ('if __name__ == "__main__":\n    pass', True),
        ("if '__main__' == __name__:\n    pass", True),
        ('if __name__ != "__main__":\n    pass', False),
        ('if __name__ == "__main__" and x:\n    pass', False),
        ("if True:\n    pass", False),
        ("main()", False),
    ],
)
def test_main_guard_is_recognised(source, guard):
    assert _is_main_guard(ast.parse(source).body[0]) is guard


def run_script(tmp_path, body, timeout=120):
    script = tmp_path / "script.py"
    script.write_text(SWEEP + textwrap.dedent(body))
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=timeout,
        cwd=tmp_path,
    )
    return done, time.monotonic() - start


def test_unguarded_script_fails_at_once_naming_the_fix(tmp_path):
    done, _ = run_script(tmp_path, """
        ds = cd.run_sweep(spec, sweep, duration=1.0)
        print(ds)
    """, timeout=60)  # it used to hang forever
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "MainGuardError" in last and 'if __name__ == "__main__":' in last
    assert "script.py, line 9" in last
    assert "bootstrapping phase" not in done.stderr  # no worker ever started


def test_unguarded_call_inside_a_function_is_caught_too(tmp_path):
    done, _ = run_script(tmp_path, """
        def main():
            return cd.run_sweep(spec, sweep, duration=1.0)

        main()
    """, timeout=60)
    assert done.returncode != 0 and "line 12" in done.stderr.strip().splitlines()[-1]


def test_guarded_script_runs(tmp_path):
    done, _ = run_script(tmp_path, """
        if __name__ == "__main__":
            ds = cd.run_sweep(spec, sweep, duration=1.0, progress=False)
            print("y(1) =", ds["y"].isel(time=-1).values.round(6).tolist())
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    # y' = -k y, y(0) = 1 (the system's default): y(1) = exp(-k)
    import numpy as np

    expected = np.exp(-np.linspace(0.5, 2.0, 4)).round(6).tolist()
    assert f"y(1) = {expected}" in done.stdout
