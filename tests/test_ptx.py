"""Every kernel variant compiles to real PTX (sm_80, sm_90) without a GPU.

The CUDA simulator forgives what hardware does not (returning slices or
local arrays from device functions, runtime-sized local arrays, float64
leaking into float32 code): these tests run NVVM on the real kernel and
assemble the PTX with ptxas.
"""

import functools
import re
import subprocess

import numpy as np
import pytest

from cubie_kernel import BatchSolverKernel, BufferRegistry, IntegratorSettings, SingleIntegratorRun
from cubie_kernel.algorithms.tableau import ButcherTableau
from cubie_kernel.algorithms.tableaus import TABLEAUS
from cubie_kernel.integrators.single_run import split_output_settings
from cubie_kernel.systems import ODESystem, harmonic_oscillator, lorenz
from conftest import find_ptxas

pytestmark = pytest.mark.ptx

CCS = [(8, 0), (9, 0)]


def cuda_kernel(system, **settings) -> BatchSolverKernel:
    """A cuda-target kernel built without a GPU (compile only, never launched)."""
    run = SingleIntegratorRun(
        IntegratorSettings(system=system, target="cuda", **split_output_settings(settings)),
        BufferRegistry(),
    )
    return BatchSolverKernel(run)


def assemble(ptx: str, cc) -> dict:
    """Assemble with ptxas; returns registers and spill counts."""
    arch = f"sm_{cc[0]}{cc[1]}"
    done = subprocess.run(
        [find_ptxas(), f"-arch={arch}", "-v", "-o", "/dev/null", "-"],
        input=ptx.encode(), capture_output=True, timeout=120,
    )
    report = done.stderr.decode()
    assert done.returncode == 0, report
    registers = [int(x) for x in re.findall(r"Used (\d+) registers", report)]
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill stores", report)]
    return {"registers": max(registers), "spill_stores": sum(spills)}


#: PTX float64 arithmetic instructions (moves, loads, stores, conversions and
#: comparisons are not arithmetic).
F64_ARITHMETIC = re.compile(
    r"^\s*(add|sub|mul|fma|div|sqrt|rcp|min|max|abs|neg|ex2|lg2)\.[a-z.]*f64\b", re.M
)
#: The float64 arithmetic time needs in a float32 kernel: the loop's
#: t0 + warmup, t_start + duration, t_start + i * save_every (a mul and an
#: add), t_end - t, t + h, the stall check t + h == t, the first-step
#: estimate's t + h0 and the step's stage times t + c_i h (12 instructions in
#: the adaptive kernels, 7 in fixed-step RK4), and with dense output the
#: sample arithmetic (t_new - t_prev, t_sample - t_prev, their ratio, the next
#: sample time t_start + i * save_every: 7 more in DP5/BS3/Tsit5 kernels, 25 in
#: all in Heun-Euler's, whose Hermite interpolant adds an end derivative),
#: with a little slack for the compiler. Everything else (states, stages, error norm, controller, step
#: size, first-step estimate) is float32: before that was so, an adaptive
#: float32 Lorenz kernel carried about 200 of them.
F64_TIME_BUDGET = 28


def f64_arithmetic(ptx: str) -> int:
    """Number of float64 arithmetic instructions in ``ptx``."""
    return len(F64_ARITHMETIC.findall(ptx))


def check(kernel, cc, precision, ptx=None):
    if ptx is None:
        ptx = kernel.ptx(cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    assert ".entry" in ptx
    if precision == np.float32:
        # float32 state must not be computed in float64: only time math is f64
        assert "mul.rn.f32" in ptx or "mul.f32" in ptx or "fma.rn.f32" in ptx
        assert f64_arithmetic(ptx) <= F64_TIME_BUDGET, (
            f"{f64_arithmetic(ptx)} float64 arithmetic instructions in a float32 kernel "
            f"(time needs <= {F64_TIME_BUDGET})"
        )
    return assemble(ptx, cc)


# Compile budget. Typing and lowering a kernel costs ~5-12 s here; NVVM for one
# more compute capability ~1-1.5 s once the kernel object (and with it its
# compiled device functions) exists. So each configuration's kernel is built
# once per module and asked for PTX once per compute capability: every cc is
# still compiled by NVVM and assembled by ptxas on its own.
@functools.lru_cache(maxsize=None)
def method_kernel(method: str, precision) -> BatchSolverKernel:
    """Lorenz with ``method``, saving every 0.1: the kernel of test_every_method_compiles."""
    if TABLEAUS[method].adaptive:
        step = {"rtol": 1e-6, "atol": 1e-8}  # default controller, first step estimated
    else:
        step = {"dt": 1e-3}
    return cuda_kernel(lorenz(), method=method, save_every=0.1, precision=precision, **step)


@functools.lru_cache(maxsize=None)
def method_ptx(method: str, precision, cc) -> str:
    """PTX of :func:`method_kernel` for ``cc`` (compiled once per module)."""
    return method_kernel(method, precision).ptx(cc)


#: Every method for every compute capability; the implicit ones (Jacobian, LU, one
#: kernel each ~3x the size of an explicit one) for the newest only: the code is
#: the same for both, and assembling it twice doubles their share of CI.
METHOD_CCS = [(m, cc) for m in sorted(TABLEAUS) for cc in CCS
              if isinstance(TABLEAUS[m], ButcherTableau) or cc == CCS[-1]]


@pytest.mark.parametrize("precision", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method,cc", METHOD_CCS,
                         ids=[f"{m}-sm{cc[0]}{cc[1]}" for m, cc in METHOD_CCS])
def test_every_method_compiles(method, precision, cc):
    check(method_kernel(method, precision), cc, precision, method_ptx(method, precision, cc))


@pytest.mark.parametrize(
    "step",
    [
        {"controller": "fixed", "dt": 1e-3},
        {"controller": "i", "dt0": 1e-3, "max_steps": 1000},
        {"controller": "pid", "atol": [1e-8, 1e-9, 1e-10], "dt_max": 0.01},
        {"controller": "gustafsson", "dt_min": 1e-9},
    ],
    ids=["fixed", "i_dt0", "pid_per_state_atol", "gustafsson"],
)
def test_step_control_variants_compile(step):
    kernel = cuda_kernel(lorenz(), method="dormand_prince_54", save_every=0.1, **step)
    check(kernel, (8, 0), np.float64)


@pytest.mark.parametrize(
    "step",
    [
        {"controller": "fixed", "dt": 1e-3},
        {"controller": "i"},
        {"controller": "pi", "dt0": 1e-3},
        {"controller": "pid", "atol": [1e-6, 1e-7, 1e-8], "dt_max": 0.01},
        {"controller": "gustafsson", "dt_min": 1e-9},
    ],
    ids=["fixed", "i", "pi_dt0", "pid_per_state_atol", "gustafsson"],
)
def test_float32_kernels_do_float64_arithmetic_on_time_only(step):
    """Every float32 controller variant (error norm, first-step estimate, factors)."""
    kernel = cuda_kernel(
        lorenz(), method="tsit5", save_every=0.1, precision=np.float32,
        rtol=1e-6, **{"atol": 1e-8, **step},
    )
    check(kernel, (9, 0), np.float32)


def test_the_float64_count_sees_float64_arithmetic():
    """The counter itself: a float64 kernel is full of it, a float32 one is not."""
    # DP5 on Lorenz, save_every 0.1, rtol 1e-6, atol 1e-8: test_every_method_compiles' kernels
    f64 = f64_arithmetic(method_ptx("dormand_prince_54", np.float64, (9, 0)))
    f32 = f64_arithmetic(method_ptx("dormand_prince_54", np.float32, (9, 0)))
    assert f64 > 10 * F64_TIME_BUDGET
    assert f32 <= F64_TIME_BUDGET


# (locations, shared elements for Lorenz RK4: 3 states, 4 stages, no error buffer)
LOCATIONS = {
    "all_local": {},
    "state_shared": {"state_location": "shared", "proposed_state_location": "shared"},
    "all_shared": {
        "state_location": "shared",
        "proposed_state_location": "shared",
        "stages_location": "shared",
        "error_location": "shared",
        "parameters_location": "shared",
    },
}


# all_shared: state, proposal, no stages (RK4 keeps them in registers), no
# error buffer (RK4), the lane's parameters
SHARED_ELEMENTS = {"all_local": 0, "state_shared": 3 + 3, "all_shared": 3 + 3 + 0 + 0 + 3}


@functools.lru_cache(maxsize=None)
def location_kernel(layout: str) -> BatchSolverKernel:
    """RK4 Lorenz with the buffer locations of ``layout`` (one kernel per layout, both ccs)."""
    kernel = cuda_kernel(lorenz(), method="rk4", dt=1e-3, save_every=0.1)
    kernel.update(LOCATIONS[layout])
    return kernel


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm{cc[0]}{cc[1]}")
@pytest.mark.parametrize("layout", sorted(LOCATIONS))
def test_buffer_locations_compile(layout, cc):
    kernel = location_kernel(layout)
    assert kernel.shared_memory_elements == SHARED_ELEMENTS[layout]
    check(kernel, cc, np.float64)


@pytest.mark.parametrize(
    "variant",
    ["final_state_only", "observables", "no_parameters", "no_saved_states", "save_counters"],
)
def test_output_variants_compile(variant):
    if variant == "final_state_only":
        kernel = cuda_kernel(lorenz(), dt=1e-3, save_every=None)
    elif variant == "observables":
        kernel = cuda_kernel(harmonic_oscillator(), dt=1e-3, save_every=0.1, precision=np.float32)
    elif variant == "no_parameters":
        system = ODESystem(equations=["dy = -y + sin(t)"], states={"y": 1.0}, name="forced")
        kernel = cuda_kernel(system, dt=1e-3, save_every=0.1)
    elif variant == "no_saved_states":
        kernel = cuda_kernel(harmonic_oscillator(), dt=1e-3, save_states=False)
    else:
        kernel = cuda_kernel(lorenz(), method="tsit5", save_every=0.1, save_counters=True)
    check(kernel, (8, 0), kernel.single_integrator.precision)


def test_rk4_lorenz_kernel_does_not_spill():
    # RK4 (the default method), dt 1e-3, save_every 0.1: test_every_method_compiles' kernel
    report = check(method_kernel("rk4", np.float64), (8, 0), np.float64,
                   method_ptx("rk4", np.float64, (8, 0)))
    assert report["spill_stores"] == 0
    assert report["registers"] <= 255


#: Every built-in metric, on states and an observable.
ALL_METRICS = [
    "mean", "std", "rms", "max", "min", "max_magnitude", "time_of_max", "time_of_min",
    "peaks[3]", "negative_peaks[2]", "crossings", "dxdt_max", "dxdt_min",
]


@pytest.mark.parametrize("precision", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "method", ["dormand_prince_54", "tsit5", "bogacki_shampine_32", "heun_euler", "rk4"]
)
def test_summary_metrics_and_dense_output_compile(method, precision):
    """Every metric (windows, final state, counters) with dense output (DP5, Tsit5,
    BS3 and a Hermite interpolant with an end derivative) and with landing steps (RK4)."""
    from cubie_kernel import Output

    step = {"dt": 1e-3} if method == "rk4" else {"rtol": 1e-5, "atol": 1e-7}
    output = Output(states=["x"], save_every=0.1, summaries=ALL_METRICS, summarise_every=1.0,
                    final_state=True, counters=True)
    kernel = cuda_kernel(harmonic_oscillator(), method=method, precision=precision,
                         output=output, **step)
    ptx = kernel.ptx((8, 0))
    assemble(ptx, (8, 0))
    if precision == np.float32:
        # time, window and sample arithmetic only; the metrics stay float32
        assert f64_arithmetic(ptx) <= 2 * F64_TIME_BUDGET, f64_arithmetic(ptx)


#: Events of every kind: recorded only, with a reset, terminal.
EVENTS = [
    {"name": "section", "condition": "z - 27", "direction": 1, "max_records": 8},
    {"name": "kick", "condition": "x - 30", "direction": 1, "reset": ["x = 0", "y = -y"]},
    {"name": "stop", "condition": "z - 60", "terminal": True},
]


@pytest.mark.parametrize("precision", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("method", ["dormand_prince_54", "rk4", "rodas4"])
def test_event_kernels_compile(method, precision):
    """Events on the step's interpolant with dense saving (DP5; Rodas4's, with a
    Jacobian), and on the Hermite interpolant with landing fixed steps (RK4)."""
    step = {"dt": 1e-3} if method == "rk4" else {"rtol": 1e-6, "atol": 1e-8}
    kernel = cuda_kernel(lorenz(), method=method, precision=precision,
                         events=EVENTS, output={"save_every": 0.1, "final_state": True},
                         **step)
    ptx = kernel.ptx((9, 0))
    assemble(ptx, (9, 0))
    if precision == np.float32:
        # the root finder works in float32; event times (t_old + theta * span) are float64
        assert f64_arithmetic(ptx) <= 2 * F64_TIME_BUDGET, f64_arithmetic(ptx)
