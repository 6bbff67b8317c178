"""The lane-blocked cpu target: runs in lockstep never mix, lanes refill, runs end alone.

The reference for every run of a batch is the same run solved on its own
(a batch of one: one lane busy, the others empty), so any leak between
lanes, any wrong refill and any run that keeps stepping after its end shows
up as a difference. Accuracy itself is checked against scipy elsewhere
(test_adaptive.py, test_fixed_step_accuracy.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from cubie_kernel import RunStatus, Solver, targets
from cubie_kernel.systems import lorenz, van_der_pol

LANES = targets.get_target("cpu").lanes(np.float64)


def solve_alone(solver, parameters, duration, **solve_args):
    """Each run of ``parameters`` (name -> values) solved as a batch of one."""
    names = list(parameters)
    n = len(parameters[names[0]])
    return [
        solver.solve(parameters={k: [parameters[k][i]] for k in names}, duration=duration,
                     **solve_args)
        for i in range(n)
    ]


#: The adaptive solver's settings, shared by two tests (one kernel).
ADAPTIVE = dict(method="dormand_prince_54", rtol=1e-7, atol=1e-9, save_every=0.25)


@pytest.mark.parametrize("method", ["rk4", "dormand_prince_54"])
def test_batch_equals_runs_solved_alone(method):
    """More runs than lanes x threads (so lanes take new runs), of very different
    cost (rho from 0 to 60: the chaotic runs take many more steps)."""
    if method == "rk4":
        solver = Solver(lorenz(), method=method, dt=1e-3, save_every=0.25)
    else:
        solver = Solver(lorenz(), **ADAPTIVE)
    rho = np.linspace(0.0, 60.0, 3 * LANES + 7)
    batch = solver.solve(parameters={"rho": rho}, duration=2.0)
    assert batch.sizes["run"] > 2 * LANES
    steps = batch.n_steps.values
    if method != "rk4":
        assert steps.max() > 2 * steps.min()  # the runs really differ in cost
    picks = [0, 1, LANES - 1, LANES, 2 * LANES + 3, len(rho) - 1]
    alone = solve_alone(solver, {"rho": rho[picks]}, 2.0)
    for pick, single in zip(picks, alone):
        for name in ("x", "y", "z"):
            np.testing.assert_array_equal(batch[name].values[pick], single[name].values[0])
        assert batch.n_steps.values[pick] == single.n_steps.values[0]
        assert batch.n_rejected.values[pick] == single.n_rejected.values[0]
        assert batch.status.values[pick] == 0


def test_failing_runs_end_alone_and_free_their_lane():
    """Runs that hit max_steps end with their flag and NaN rows; their
    neighbours in the same block finish normally, bit for bit as alone."""
    solver = Solver(van_der_pol(), method="dormand_prince_54", rtol=1e-8, atol=1e-10,
                    save_every=1.0, max_steps=400)
    mu = np.tile([0.5, 200.0, 1.0, 1000.0], LANES // 2 + 3)  # stiff ones fail
    batch = solver.solve(parameters={"mu": mu}, duration=5.0)
    failed = batch.status.values != 0
    assert failed.any() and (~failed).any()
    np.testing.assert_array_equal(
        batch.status.values[failed], int(RunStatus.MAX_STEPS_EXCEEDED)
    )
    assert np.all(batch.n_steps.values[failed] + batch.n_rejected.values[failed] == 400)
    picks = [0, 1, 2, 3, len(mu) - 4, len(mu) - 1]
    alone = solve_alone(solver, {"mu": mu[picks]}, 5.0)
    for pick, single in zip(picks, alone):
        assert batch.status.values[pick] == single.status.values[0]
        for name in batch.data_vars:
            if "time" in batch[name].dims:
                np.testing.assert_array_equal(batch[name].values[pick], single[name].values[0])


def test_fewer_runs_than_lanes_and_warmup():
    """A block that is mostly empty, with a warm-up interval before saving.

    The adaptive solver of test_batch_equals_runs_solved_alone (the same kernel)."""
    solver = Solver(lorenz(), **ADAPTIVE)
    rho = np.array([10.0, 28.0, 99.0])
    batch = solver.solve(parameters={"rho": rho}, duration=1.0, warmup=0.75)
    alone = solve_alone(solver, {"rho": rho}, 1.0, warmup=0.75)
    for i, single in enumerate(alone):
        np.testing.assert_array_equal(batch.x.values[i], single.x.values[0])
    # the warm-up really ran: the saves start 0.75 in
    np.testing.assert_allclose(batch.time.values, 0.75 + 0.25 * np.arange(5))


def test_lane_count_follows_the_precision():
    cpu = targets.get_target("cpu")
    assert cpu.lanes(np.float32) == 2 * cpu.lanes(np.float64)
    assert cpu.lanes(np.float64) >= 16
    assert targets.get_target("cuda").lanes(np.float64) == 1
    with pytest.raises(ValueError, match="lanes must be a power of two"):
        type(cpu)(lanes=48)


def test_lanes_from_the_environment(monkeypatch):
    from cubie_kernel.cpu_target import LANES_ENV, CpuTarget

    monkeypatch.setenv(LANES_ENV, "16")
    assert CpuTarget().lanes(np.float64) == CpuTarget().lanes(np.float32) == 16
    monkeypatch.setenv(LANES_ENV, "sixteen")
    with pytest.raises(ValueError, match=f"{LANES_ENV} must be a power of two"):
        CpuTarget()
    monkeypatch.setenv(LANES_ENV, "12")
    with pytest.raises(ValueError, match=f"{LANES_ENV} must be a power of two"):
        CpuTarget()
