"""The cuda target under numba's CUDA simulator agrees with the cpu target.

Run by ``make test`` in its own process with NUMBA_ENABLE_CUDASIM=1 (the
variable must be set before numba.cuda is imported). Batches are tiny: the
simulator runs one Python thread per CUDA thread, ~30k thread-steps/s.
"""

import numpy as np
import pytest

from cubie_kernel import Solver
from cubie_kernel.systems import harmonic_oscillator, lorenz

pytestmark = pytest.mark.cudasim

RHO = np.array([0.0, 5.0, 13.0, 21.0, 28.0])


def both_targets(system, solve_kwargs, **settings):
    results = {}
    for target in ("cpu", "cuda"):
        solver = Solver(system, target=target, **settings)
        results[target] = solver.solve(**solve_kwargs)
    return results


@pytest.mark.parametrize("precision", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_simulator_matches_cpu_bit_for_bit(method, precision):
    results = both_targets(
        lorenz(),
        {"parameters": {"rho": RHO}, "duration": 0.3},
        method=method, dt=0.01, save_every=0.1, precision=precision,
    )
    for name in ("x", "y", "z"):
        cpu, cuda = results["cpu"][name].values, results["cuda"][name].values
        assert cpu.dtype == cuda.dtype == precision
        np.testing.assert_array_equal(cpu, cuda)
    np.testing.assert_array_equal(results["cpu"].n_steps, results["cuda"].n_steps)
    np.testing.assert_array_equal(results["cuda"].status, 0)


def test_shared_memory_and_several_blocks():
    """Padded per-thread shared slices across blocks give the same numbers."""
    settings = dict(method="rk4", dt=0.01, save_every=0.1)
    solve = {"parameters": {"rho": np.linspace(0, 28, 11)}, "duration": 0.2}
    reference = Solver(lorenz(), target="cpu", **settings).solve(**solve)
    solver = Solver(
        lorenz(), target="cuda", threads_per_block=4,
        state_location="shared", stages_location="shared", **settings,
    )
    assert solver.kernel.shared_memory_elements == 3  # state (RK4 keeps its stages in registers)
    assert not solver.kernel.shared_memory_needs_padding  # 3 is odd
    solver.update(proposed_state_location="shared")
    assert solver.kernel.shared_memory_needs_padding  # 6 is even: stride 7
    result = solver.solve(**solve)  # 11 runs over 3 blocks of 4
    np.testing.assert_array_equal(result.x.values, reference.x.values)
    np.testing.assert_array_equal(result.z.values, reference.z.values)


def test_observables_and_device_chunks():
    system = harmonic_oscillator()
    settings = dict(method="rk4", dt=0.05, save_every=0.25)
    solve = {"initial_values": {"x": [1.0, 0.5, -2.0]}, "duration": 0.5}
    reference = Solver(system, target="cpu", **settings).solve(**solve)
    solver = Solver(system, target="cuda", **settings)
    budget = int(solver.kernel.per_run_device_bytes(0.5) * 2 / 0.8) + 1  # 2 runs per chunk
    result = solver.solve(**solve, memory_bytes=budget)
    assert result.attrs["device_chunks"] == 2
    for name in ("x", "v", "energy"):
        np.testing.assert_array_equal(result[name].values, reference[name].values)


@pytest.mark.parametrize("precision", [np.float64, np.float32], ids=["f64", "f32"])
def test_dense_output_and_summaries_match_cpu(precision):
    """Dense-output saves, every metric family, windows and the final state."""
    from cubie_kernel import Output

    output = Output(save_every=0.1, summaries=["mean", "std", "max", "time_of_min", "peaks[2]",
                                               "crossings", "dxdt_max"],
                    summarise_every=0.5, final_state=True)
    results = both_targets(
        lorenz(),
        {"parameters": {"rho": RHO[:3]}, "duration": 1.0},
        method="dormand_prince_54", rtol=1e-5, atol=1e-7, output=output, precision=precision,
    )
    cpu, cuda = results["cpu"], results["cuda"]
    assert cpu.attrs["saving"] == "dense output"
    for name in cpu.data_vars:
        np.testing.assert_array_equal(cpu[name].values, cuda[name].values, err_msg=name)


@pytest.mark.parametrize("precision", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", ["rodas4", "ros3p"])
def test_rosenbrock_methods_match_cpu(method, precision):
    """Stiff kinetics (Robertson) with the generated Jacobian and per-thread LU; rodas4
    with dense-output saves, ros3p landing on them. The Jacobian and LU in shared memory."""
    from cubie_kernel.systems import robertson

    settings = dict(method=method, rtol=1e-5, atol=1e-10, save_every=0.5, precision=precision)
    solve = {"parameters": {"k1": [0.04, 0.4, 4.0]}, "duration": 2.0}
    reference = Solver(robertson(), target="cpu", **settings).solve(**solve)
    solver = Solver(robertson(), target="cuda", jacobian_location="shared",
                    lu_location="shared", **settings)
    result = solver.solve(**solve)
    assert reference.attrs["saving"] == ("dense output" if method == "rodas4"
                                         else "steps land on save times")
    for name in reference.data_vars:
        np.testing.assert_array_equal(result[name].values, reference[name].values,
                                      err_msg=name)
    np.testing.assert_array_equal(result.status, 0)


def test_esdirk_with_dense_output_matches_cpu():
    """Kvaerno 3(2): Newton iterations per thread, Hermite dense-output saves."""
    from cubie_kernel.systems import robertson

    settings = dict(method="kvaerno3", rtol=1e-5, atol=1e-10, save_every=0.5)
    solve = {"parameters": {"k1": [0.04, 0.4]}, "duration": 1.5}
    reference = Solver(robertson(), target="cpu", **settings).solve(**solve)
    result = Solver(robertson(), target="cuda", **settings).solve(**solve)
    assert reference.attrs["saving"] == "dense output"
    for name in reference.data_vars:
        np.testing.assert_array_equal(result[name].values, reference[name].values,
                                      err_msg=name)
    np.testing.assert_array_equal(result.status, 0)


@pytest.mark.parametrize("method, step", [("rk45", {"rtol": 1e-8, "atol": 1e-10}),
                                          ("rk4", {"dt": 0.01})])
def test_events_match_cpu(method, step):
    """Bounces (a reset, the step's interpolant or Hermite's) and a terminal
    event on the simulator, bit for bit with the cpu target."""
    from cubie_kernel.status import RunStatus
    from cubie_kernel.systems import ODESystem
    from cubie_kernel.systems.events import Event

    ball = ODESystem(["dy = v", "dv = -9.81"], states={"y": 1.0, "v": 0.0},
                     parameters={"e": 0.8}, name="ball")
    events = [Event("bounce", "y", direction=-1, reset=["v = -e*v"], max_records=4),
              Event("apex", "v", direction=-1, max_records=4),
              Event("stop", "t - 0.1 * e - 1.3", terminal=True)]
    if method == "rk45":
        step = {**step, "dt_max": 0.02}  # every flight spans several steps
    results = both_targets(
        ball, {"initial_values": {"y": [1.0, 1.5]}, "parameters": {"e": [0.8, 0.7]},
               "duration": 2.0},
        method=method, events=events, output={"save_every": 0.25, "final_state": True},
        **step,
    )
    cpu, cuda = results["cpu"], results["cuda"]
    assert (cpu.bounce_count.values >= 1).all() and (cpu.apex_count.values >= 1).all()
    assert (cpu.status.values == int(RunStatus.TERMINATED_BY_EVENT)).all()
    for name in cpu.data_vars:
        np.testing.assert_array_equal(cpu[name].values, cuda[name].values, err_msg=name)
