"""ODESystem: generated dxdt/observables against hand-written references,
float32 discipline, validation messages, and value semantics.

Every generated function is checked twice: called as plain Python, and
compiled with ``numba.njit`` inside a small per-run loop kernel (the way the
cpu target uses it).
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import pathlib
import pickle
import re
import subprocess
import sys
import traceback

import numba
import numpy as np
import pytest

from cubie_kernel.systems import (
    ALLOWED_FUNCTIONS,
    ODESystem,
    SystemDefinitionError,
    exponential_decay,
    harmonic_oscillator,
    kepler,
    lorenz,
    van_der_pol,
)

N_RUNS = 16
MODES = ["python", "njit"]


# ----------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def _kernels(system: ODESystem, precision: str):
    """njit loop kernels over runs for the system's dxdt and observables."""
    dxdt, observables = system.python_functions(precision)
    jit_dxdt, jit_obs = numba.njit(dxdt), numba.njit(observables)

    @numba.njit
    def dxdt_kernel(states, params, times, outs):
        for i in range(states.shape[0]):
            jit_dxdt(states[i], params[i], times[i], outs[i])

    @numba.njit
    def obs_kernel(states, params, times, outs):
        for i in range(states.shape[0]):
            jit_obs(states[i], params[i], times[i], outs[i])

    return dxdt_kernel, obs_kernel, jit_dxdt, jit_obs


def evaluate(system, states, params, times, mode, precision="float64"):
    """(dxdt, observables) for each run, shape (runs, n) each."""
    dtype = np.dtype(precision)
    states = np.ascontiguousarray(states, dtype)
    params = np.ascontiguousarray(params, dtype).reshape(len(states), system.n_parameters)
    times = np.ascontiguousarray(times, dtype)
    dx = np.full((len(states), system.n_states), np.nan, dtype)
    obs = np.full((len(states), system.n_observables), np.nan, dtype)
    if mode == "python":
        f, g = system.python_functions(precision)
        for i in range(len(states)):
            f(states[i], params[i], times[i], dx[i])
            g(states[i], params[i], times[i], obs[i])
    else:
        dxdt_kernel, obs_kernel, _, _ = _kernels(system, dtype.name)
        dxdt_kernel(states, params, times, dx)
        obs_kernel(states, params, times, obs)
    return dx, obs


def random_inputs(rng, system, low=-2.0, high=2.0, plow=0.5, phigh=3.0):
    states = rng.uniform(low, high, (N_RUNS, system.n_states))
    params = rng.uniform(plow, phigh, (N_RUNS, system.n_parameters))
    times = rng.uniform(0.0, 10.0, N_RUNS)
    return states, params, times


def columns(a):
    return [a[:, i] for i in range(a.shape[1])]


# --------------------------------------------------------- values against references


@pytest.mark.parametrize("mode", MODES)
def test_lorenz_matches_reference(rng, mode):
    system = lorenz()
    s, p, t = random_inputs(rng, system)
    dx, obs = evaluate(system, s, p, t, mode)
    x, y, z = columns(s)
    sigma, rho, beta = columns(p)
    expected = np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=1)
    np.testing.assert_allclose(dx, expected, rtol=1e-14, atol=1e-14)
    assert obs.shape == (N_RUNS, 0)


@pytest.mark.parametrize("mode", MODES)
def test_van_der_pol_matches_reference(rng, mode):
    system = van_der_pol()
    s, p, t = random_inputs(rng, system)
    dx, _ = evaluate(system, s, p, t, mode)
    x, v = columns(s)
    (mu,) = columns(p)
    expected = np.stack([v, mu * (1 - x**2) * v - x], axis=1)
    np.testing.assert_allclose(dx, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_kepler_matches_reference(rng, mode):
    system = kepler()
    s, p, t = random_inputs(rng, system, low=0.3, high=1.5)
    dx, obs = evaluate(system, s, p, t, mode)
    qx, qy, px, py = columns(s)
    (mu,) = columns(p)
    r = np.hypot(qx, qy)
    expected = np.stack([px, py, -mu * qx / r**3, -mu * qy / r**3], axis=1)
    np.testing.assert_allclose(dx, expected, rtol=1e-13)
    energy = 0.5 * (px**2 + py**2) - mu / r
    np.testing.assert_allclose(obs[:, 0], energy, rtol=1e-13)


@pytest.mark.parametrize("mode", MODES)
def test_harmonic_oscillator_and_energy(rng, mode):
    system = harmonic_oscillator()
    s, p, t = random_inputs(rng, system)
    dx, obs = evaluate(system, s, p, t, mode)
    x, v = columns(s)
    (omega,) = columns(p)
    np.testing.assert_allclose(dx, np.stack([v, -omega**2 * x], axis=1), rtol=1e-14)
    np.testing.assert_allclose(obs[:, 0], 0.5 * (v**2 + omega**2 * x**2), rtol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_exponential_decay(rng, mode):
    system = exponential_decay()
    s, p, t = random_inputs(rng, system)
    dx, _ = evaluate(system, s, p, t, mode)
    np.testing.assert_allclose(dx[:, 0], -p[:, 0] * s[:, 0], rtol=1e-15)


AUX_SYSTEM = ODESystem(
    equations=[
        "r2 = x**2 + y**2",
        "u = r2/(1 + r2)",
        "dz = -c*z + u",                      # derivatives out of state order
        "dx = -y + a*x*u - 2*t",
        "unused = log(-1 - r2)",              # never needed: pruned, must not break
        "dy = x + a*y*u + g",
    ],
    states={"x": 1.0, "y": 0.0, "z": 0.5},
    parameters={"a": 0.1, "c": 2.0},
    constants={"g": 9.81},
    observables=["speed = sqrt((-y + a*x*u)**2 + (x + a*y*u)**2)", "twice = 2*speed + r2"],
    name="aux",
)


@pytest.mark.parametrize("mode", MODES)
def test_auxiliaries_constants_and_derivative_order(rng, mode):
    s, p, t = random_inputs(rng, AUX_SYSTEM)
    dx, obs = evaluate(AUX_SYSTEM, s, p, t, mode)
    x, y, z = columns(s)
    a, c = columns(p)
    r2 = x**2 + y**2
    u = r2 / (1 + r2)
    expected = np.stack([-y + a * x * u - 2 * t, x + a * y * u + 9.81, -c * z + u], axis=1)
    np.testing.assert_allclose(dx, expected, rtol=1e-14, atol=1e-14)
    speed = np.sqrt((-y + a * x * u) ** 2 + (x + a * y * u) ** 2)
    np.testing.assert_allclose(obs, np.stack([speed, 2 * speed + r2], axis=1), rtol=1e-14)


PIECEWISE = ODESystem(
    equations=[
        "dx = (-x if x > 0 else 2*x) + (1 if 0 < y <= 1 else 0)",
        "dy = y if (x < -1 or x > 1) and not y == 0.5 else -y",
    ],
    states={"x": 0.0, "y": 0.0},
    observables=["sign = 1 if x >= 0 else -1"],
    name="piecewise",
)


@pytest.mark.parametrize("mode", MODES)
def test_piecewise(rng, mode):
    s, _, t = random_inputs(rng, PIECEWISE)
    s[0] = [0.0, 0.5]   # boundary values take the documented branch
    s[1] = [1.5, 1.0]
    dx, obs = evaluate(PIECEWISE, s, np.zeros((N_RUNS, 0)), t, mode)
    x, y = columns(s)
    expected_x = np.where(x > 0, -x, 2 * x) + np.where((0 < y) & (y <= 1), 1.0, 0.0)
    expected_y = np.where(((x < -1) | (x > 1)) & (y != 0.5), y, -y)
    np.testing.assert_array_equal(dx, np.stack([expected_x, expected_y], axis=1))
    np.testing.assert_array_equal(obs[:, 0], np.where(x >= 0, 1.0, -1.0))


# every allowed function, each as one observable, with a numpy reference
FUNCTION_CASES = {
    "sin": ("sin(x)", lambda x, y: np.sin(x)),
    "cos": ("cos(x)", lambda x, y: np.cos(x)),
    "tan": ("tan(x)", lambda x, y: np.tan(x)),
    "asin": ("asin(x)", lambda x, y: np.arcsin(x)),
    "acos": ("acos(x)", lambda x, y: np.arccos(x)),
    "atan": ("atan(y)", lambda x, y: np.arctan(y)),
    "atan2": ("atan2(x, -y)", lambda x, y: np.arctan2(x, -y)),
    "sinh": ("sinh(y)", lambda x, y: np.sinh(y)),
    "cosh": ("cosh(y)", lambda x, y: np.cosh(y)),
    "tanh": ("tanh(y)", lambda x, y: np.tanh(y)),
    "asinh": ("asinh(y)", lambda x, y: np.arcsinh(y)),
    "acosh": ("acosh(1 + y)", lambda x, y: np.arccosh(1 + y)),
    "atanh": ("atanh(x)", lambda x, y: np.arctanh(x)),
    "exp": ("exp(y)", lambda x, y: np.exp(y)),
    "expm1": ("expm1(x)", lambda x, y: np.expm1(x)),
    "log": ("log(y)", lambda x, y: np.log(y)),
    "log1p": ("log1p(x)", lambda x, y: np.log1p(x)),
    "log2": ("log2(y)", lambda x, y: np.log2(y)),
    "log10": ("log10(y)", lambda x, y: np.log10(y)),
    "sqrt": ("sqrt(y)", lambda x, y: np.sqrt(y)),
    "abs": ("abs(-x)", lambda x, y: np.abs(x)),
    "min": ("min(x, y, 0.5)", lambda x, y: np.minimum(np.minimum(x, y), 0.5)),
    "max": ("max(x, y)", lambda x, y: np.maximum(x, y)),
    # used in arithmetic: numba's CPU floor/ceil return int64, which would widen
    "floor": ("floor(3*y)*y", lambda x, y: np.floor(3 * y) * y),
    "ceil": ("ceil(3*y) - y", lambda x, y: np.ceil(3 * y) - y),
    "hypot": ("hypot(x, y)", lambda x, y: np.hypot(x, y)),
    "erf": ("erf(x)", lambda x, y: np.array([math.erf(v) for v in x])),
    "erfc": ("erfc(x)", lambda x, y: np.array([math.erfc(v) for v in x])),
    "pow": ("pow(y, x)", lambda x, y: np.power(y, x)),
    "fabs": ("fabs(x)", lambda x, y: np.fabs(x)),
    "copysign": ("copysign(y, x)", lambda x, y: np.copysign(y, x)),
}

FUNCTIONS_SYSTEM = ODESystem(
    equations=["dx = -x", "dy = -y"],
    states={"x": 0.1, "y": 1.0},
    observables=[f"o_{name} = {expr}" for name, (expr, _) in FUNCTION_CASES.items()],
    name="functions",
)


def test_function_cases_cover_the_allowlist():
    assert set(FUNCTION_CASES) == set(ALLOWED_FUNCTIONS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_all_allowed_functions(rng, mode, precision):
    s = np.stack([rng.uniform(-0.9, 0.9, N_RUNS), rng.uniform(0.1, 3.0, N_RUNS)], axis=1)
    _, obs = evaluate(FUNCTIONS_SYSTEM, s, np.zeros((N_RUNS, 0)), np.zeros(N_RUNS),
                      mode, precision)
    x, y = columns(s.astype(precision).astype(np.float64))
    rtol = 1e-14 if precision == "float64" else 2e-6
    for j, (name, (_, reference)) in enumerate(FUNCTION_CASES.items()):
        np.testing.assert_allclose(obs[:, j], reference(x, y), rtol=rtol, atol=rtol,
                                   err_msg=name)


def test_pi_and_time_are_available(rng):
    system = ODESystem(["dx = sin(2*pi*t) - x"], {"x": 0.0})
    f, _ = system.python_functions()
    out = np.zeros(1)
    f(np.array([0.25]), np.zeros(0), 0.125, out)
    assert out[0] == pytest.approx(math.sin(math.pi / 4) - 0.25, rel=1e-15)


# --------------------------------------------------------------- float32 discipline


def _float64_in_typemap(jitted) -> list[str]:
    found = []
    for sig in jitted.signatures:
        typemap = jitted.overloads[sig].fndesc.typemap
        found += [f"{name}: {ty}" for name, ty in typemap.items() if "float64" in str(ty)]
    return found


@pytest.mark.parametrize("system", [lorenz(), kepler(), AUX_SYSTEM, PIECEWISE,
                                    FUNCTIONS_SYSTEM], ids=lambda s: s.name)
def test_float32_njit_never_widens(rng, system):
    s, p, t = random_inputs(rng, system, low=0.1, high=0.9)
    dx, obs = evaluate(system, s, p, t, "njit", "float32")
    assert dx.dtype == np.float32 and obs.dtype == np.float32
    _, _, jit_dxdt, jit_obs = _kernels(system, "float32")
    assert _float64_in_typemap(jit_dxdt) == []
    assert _float64_in_typemap(jit_obs) == []


def _f32_inputs(rng, system):
    s, p, t = random_inputs(rng, system)
    return s.astype(np.float32), p.astype(np.float32), t.astype(np.float32)


@pytest.mark.parametrize("mode", MODES)
def test_float32_lorenz_is_bitwise_numpy_float32(rng, mode):
    system = lorenz()
    s, p, t = _f32_inputs(rng, system)
    dx, _ = evaluate(system, s, p, t, mode, "float32")
    x, y, z = columns(s)
    sigma, rho, beta = columns(p)
    expected = np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=1)
    assert expected.dtype == np.float32
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("mode", MODES)
def test_float32_literals_and_powers_are_bitwise_numpy_float32(rng, mode):
    system = van_der_pol()
    s, p, t = _f32_inputs(rng, system)
    dx, _ = evaluate(system, s, p, t, mode, "float32")
    x, v = columns(s)
    (mu,) = columns(p)
    one = np.float32(1)
    np.testing.assert_array_equal(dx[:, 1], mu * (one - x * x) * v - x)

    system = kepler()
    s, p, t = _f32_inputs(rng, system)
    s[:, :2] = np.abs(s[:, :2]) + np.float32(0.25)
    dx, obs = evaluate(system, s, p, t, mode, "float32")
    qx, qy, px, py = columns(s)
    (mu,) = columns(p)
    r = np.sqrt(qx * qx + qy * qy)
    np.testing.assert_array_equal(dx[:, 2], -mu * qx / (r * r * r))
    np.testing.assert_array_equal(obs[:, 0], np.float32(0.5) * (px * px + py * py) - mu / r)


def test_float32_literal_is_rounded_once_to_float32():
    """``0.1*x`` must be float32(0.1)*x, not float64(0.1)*x rounded: njit
    promotes ``float32 * python float`` to float64, which is what the
    precision constants prevent. The inputs are chosen so the two differ."""
    system = ODESystem(["dx = 0.1*x"], {"x": 1.0})
    x = np.linspace(1, 2, 4001, dtype=np.float32)
    f32 = np.float32(0.1) * x
    widened = (0.1 * x.astype(np.float64)).astype(np.float32)
    assert np.any(f32 != widened)  # the check below can fail
    for mode in MODES:
        dx, _ = evaluate(system, x[:, None], np.zeros((x.size, 0)), np.zeros(x.size),
                         mode, "float32")
        np.testing.assert_array_equal(dx[:, 0], f32)


def _code_lines(source: str, function: str = "dxdt") -> str:
    """The statements of one generated function, without comments."""
    body = source.split(f"def {function}(", 1)[1].split("\ndef ", 1)[0]
    return "\n".join(line.split("#")[0] for line in body.splitlines()[1:])


def test_power_expansion_in_source():
    system = ODESystem(
        ["a = (x + 1)**3", "dx = x**2 + x**-1 + x**-2 + x**0 + x**1", "dy = x**5 + y**2.5 + a"],
        {"x": 1.0, "y": 1.0})
    code = _code_lines(system.source("float32"))
    assert "_t0 = x + _k" in code and "a = _t0 * _t0 * _t0" in code  # base evaluated once
    assert "x * x + _k0 / x + _k0 / (x * x) + _k0 + x" in code
    assert code.count("**") == 2 and "x ** _k" in code and "y ** _k" in code
    f, _ = system.python_functions()
    out = np.zeros(2)
    f(np.array([1.5, 2.0]), np.zeros(0), 0.0, out)
    x, y = 1.5, 2.0
    assert out[0] == pytest.approx(x**2 + 1 / x + x**-2 + 1 + x, rel=1e-15)
    assert out[1] == pytest.approx(x**5 + y**2.5 + (x + 1) ** 3, rel=1e-15)


def test_power_base_in_a_branch_is_not_hoisted():
    system = ODESystem(["dx = (x - 1)**2 if x > 0 else 0"], {"x": 1.0})
    code = _code_lines(system.source())
    assert "_t" not in code
    assert re.search(r"\(x - (_k\d)\) \* \(x - \1\) if x > _k\d else _k\d", code)


def test_every_number_in_source_is_a_precision_constant():
    system = ODESystem(["dx = -2.5*x + 3 + g + pi + x**7"], {"x": 1.0}, constants={"g": 9.5},
                       observables=["o = 1e-3*x"])
    source = system.source(np.float32)
    assert "g = np.float32(9.5)" in source
    assert "pi = np.float32(3.141592653589793)" in source
    for function in ("dxdt", "observables"):
        code = _code_lines(source, function)
        # digits only inside names (_k0, float32) and array indices
        assert re.findall(r"(?<![\w\[])\.?\d", code) == [], code


# ------------------------------------------------------------- zero-sized and misc


@pytest.mark.parametrize("mode", MODES)
def test_no_parameters_constants_or_observables(mode):
    system = ODESystem(["dy = -y"], {"y": 1.0})
    assert system.n_parameters == 0 and system.n_observables == 0
    assert system.parameter_names == () and system.constant_names == ()
    assert system.default_parameters == {} and system.constants == {}
    dx, obs = evaluate(system, np.array([[2.0]]), np.zeros((1, 0)), np.zeros(1), mode)
    assert dx[0, 0] == -2.0 and obs.shape == (1, 0)
    _, g = system.python_functions()
    assert g(np.array([1.0]), np.zeros(0), 0.0, np.zeros(0)) is None


def test_functions_cached_per_precision():
    system = lorenz()
    assert system.python_functions(np.float32) is not None
    assert system.python_functions(np.float32) == system.python_functions("float32")
    f32 = system.python_functions(np.float32)
    assert f32[0] is system.python_functions(np.dtype("float32"))[0]
    assert f32[0] is not system.python_functions(np.float64)[0]
    assert system.python_functions()[0] is system.python_functions("float64")[0]


@pytest.mark.parametrize("precision", [np.float16, "int32", "complex128", "nonsense"])
def test_bad_precision(precision):
    with pytest.raises(ValueError, match="float32 or float64"):
        lorenz().python_functions(precision)


def test_out_may_alias_state():
    system = AUX_SYSTEM
    f, _ = system.python_functions()
    state = np.array([0.3, -0.7, 1.1])
    params = np.array([0.1, 2.0])
    separate = np.zeros(3)
    f(state, params, 0.5, separate)
    f(state, params, 0.5, state)
    np.testing.assert_array_equal(state, separate)


def test_source_is_readable_and_registered_for_tracebacks():
    system = ODESystem(["a = sqrt(x)", "dx = a"], {"x": 1.0}, name="tb")
    source = system.source()
    assert "def dxdt(state, parameters, t, out):" in source
    assert "def observables(state, parameters, t, out):" in source
    assert "# a = sqrt(x)" in source
    f, _ = system.python_functions()
    assert inspect.getsource(f) in source
    with pytest.raises(ValueError) as info:
        f(np.array([-1.0]), np.zeros(0), 0.0, np.zeros(1))  # math domain error
    text = "".join(traceback.format_exception(info.value))
    # the generated module is a file in the kernel cache folder: tracebacks show its lines
    assert "a = math.sqrt(x)" in text and "cubie_kernel_cache_system_" in text


# ---------------------------------------------------------------- validation rules


def make(**overrides):
    definition = {"equations": ["dx = -k*x"], "states": {"x": 1.0},
                  "parameters": {"k": 1.0}}
    definition.update(overrides)
    return ODESystem(**definition)


def test_error_is_a_value_error():
    assert issubclass(SystemDefinitionError, ValueError)


def test_syntax_error_names_equation():
    with pytest.raises(ValueError, match=r"equation 'dx = -k\*\(x': syntax error: '\(' was "
                                         r"never closed"):
        make(equations=["dx = -k*(x"])


def test_unknown_name_names_it():
    with pytest.raises(ValueError, match=r"equation 'dx = -k\*w'.*unknown name 'w'"):
        make(equations=["dx = -k*w"])


def test_unknown_name_in_observable():
    with pytest.raises(ValueError, match=r"observable 'o = q \+ x'.*unknown name 'q'"):
        make(observables=["o = q + x"])


def test_auxiliary_used_before_definition():
    with pytest.raises(ValueError, match=r"equation 'dx = -a'.*'a' is used before it is"):
        make(equations=["dx = -a", "a = k*x"])


def test_derivative_cannot_be_referenced():
    with pytest.raises(ValueError, match=r"equation 'dy = dx'.*unknown name 'dx'.*derivatives"):
        make(equations=["dx = -x", "dy = dx"], states={"x": 1.0, "y": 0.0})


def test_state_without_derivative():
    with pytest.raises(ValueError, match=r"state\(s\) 'y' have no derivative.*'dy = \.\.\.'"):
        make(states={"x": 1.0, "y": 2.0})


def test_same_lhs_twice():
    with pytest.raises(ValueError, match=r"equation 'dx = 2\*x'.*'dx' is already defined by "
                                         r"'dx = -k\*x'"):
        make(equations=["dx = -k*x", "dx = 2*x"])


def test_auxiliary_defined_twice():
    with pytest.raises(ValueError, match=r"equation 'a = 2'.*'a' is already defined"):
        make(equations=["a = 1", "a = 2", "dx = a"])


def test_observable_duplicates_auxiliary():
    with pytest.raises(ValueError, match=r"observable 'a = x'.*'a' is already defined"):
        make(equations=["a = 1", "dx = a"], observables=["a = x"])


def test_derivative_of_non_state_is_an_auxiliary():
    system = make(equations=["dq = 2*x", "dx = -dq"])
    f, _ = system.python_functions()
    out = np.zeros(1)
    f(np.array([3.0]), np.array([1.0]), 0.0, out)
    assert out[0] == -6.0


def test_state_named_like_a_derivative():
    system = ODESystem(["dx = dx", "ddx = -x"], {"x": 1.0, "dx": 0.0})
    f, _ = system.python_functions()
    out = np.zeros(2)
    f(np.array([2.0, 3.0]), np.zeros(0), 0.0, out)
    np.testing.assert_array_equal(out, [3.0, -2.0])


def test_name_declared_twice():
    with pytest.raises(ValueError, match=r"'x' is declared twice \(as a state and as a parameter"):
        make(parameters={"x": 1.0})
    with pytest.raises(ValueError, match=r"'k' is declared twice \(as a parameter and as a "
                                         r"constant"):
        make(constants={"k": 1.0})


def test_assigning_to_a_state_or_parameter():
    with pytest.raises(ValueError, match=r"equation 'x = 1'.*cannot assign to state 'x'.*'dx"):
        make(equations=["x = 1", "dx = -x"])
    with pytest.raises(ValueError, match=r"equation 'k = 1'.*cannot assign to parameter 'k'"):
        make(equations=["k = 1", "dx = -x"])


def test_observable_cannot_take_a_derivative_name():
    with pytest.raises(ValueError, match=r"observable 'dx = x'.*derivative of state 'x'"):
        make(observables=["dx = x"])


def test_function_not_allowed_lists_allowed_ones():
    with pytest.raises(ValueError, match=r"equation 'dx = gamma\(x\)'.*function 'gamma' is "
                                         r"not allowed; allowed functions: abs, acos"):
        make(equations=["dx = gamma(x)"])


def test_wrong_argument_count():
    with pytest.raises(ValueError, match=r"equation 'dx = atan2\(x\)'.*atan2\(\) takes 2 "
                                         r"arguments, got 1"):
        make(equations=["dx = atan2(x)"])
    with pytest.raises(ValueError, match=r"min\(\) takes at least 2 arguments, got 1"):
        make(equations=["dx = min(x)"])


@pytest.mark.parametrize("expression, message", [
    ("math.sin(x)", "cannot call 'math.sin'"),
    ("x.real", "attribute access not allowed"),
    ("state[0]", "subscripts not allowed"),
    ("(lambda: x)()", "cannot call"),
    ("lambda: x", "lambdas not allowed"),
    ("max(x, y=1)", "keyword arguments are not allowed"),
    ("'x'", "strings are not allowed"),
    ("x % 2", "operator Mod is not allowed"),
    ("x // 2", "operator FloorDiv is not allowed"),
    ("x if x is 0 else 1", "comparison Is is not allowed"),
    ("[x]", "lists not allowed"),
    ("True", "True are not allowed"),
    ("1j", "are not allowed; only real numbers"),
    ("1e999", "not finite"),
    ("x > 0", "is a condition, not a number"),
    ("x if x else 1", "is a number, not a condition"),
    ("max(*x)", "star arguments"),
])
def test_disallowed_syntax(expression, message):
    equation = f"dx = {expression}"
    with pytest.raises(ValueError, match=re.escape(f"equation {equation!r}: ")) as info:
        make(equations=[equation])
    assert message in str(info.value)


@pytest.mark.parametrize("equation, message", [
    ("dx = -x; dy = 1", "exactly one assignment"),
    ("dx += 1", "exactly one assignment"),
    ("dx, dy = 1, 2", "single name"),
    ("a = b = x", "single name"),
    ("-x", "exactly one assignment"),
])
def test_not_a_single_assignment(equation, message):
    with pytest.raises(ValueError, match=message):
        make(equations=[equation, "dx = -x"])


@pytest.mark.parametrize("name", ["sin", "t", "pi", "abs", "state", "math"])
def test_names_shadowing_functions_or_t_are_reserved(name):
    with pytest.raises(ValueError, match=rf"equation '{name} = x'.*{name!r} is reserved"):
        make(equations=[f"{name} = x", "dx = -x"])
    with pytest.raises(ValueError, match=rf"state name {name!r} is reserved"):
        ODESystem([f"d{name} = 1"], {name: 1.0})
    with pytest.raises(ValueError, match=rf"parameter name {name!r} is reserved"):
        make(parameters={name: 1.0})


@pytest.mark.parametrize("name", ["_x", "x-y", "1x", "é", "", "lambda"])
def test_invalid_identifiers(name):
    with pytest.raises(ValueError, match="constant name"):
        make(constants={name: 1.0})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1.0", None, True, 1j, [1.0]])
@pytest.mark.parametrize("field", ["states", "parameters", "constants"])
def test_values_must_be_finite_reals(field, value):
    names = {"states": "x", "parameters": "k", "constants": "c"}
    with pytest.raises(ValueError, match=rf"{field}\['{names[field]}'\] must be a finite real"):
        make(**{field: {names[field]: value}})


def test_numpy_and_int_values_are_accepted():
    system = make(states={"x": np.float32(0.5)}, parameters={"k": 2})
    assert system.initial_values == {"x": 0.5} and system.default_parameters == {"k": 2.0}
    assert type(system.default_parameters["k"]) is float


def test_needs_a_state_and_string_equations():
    with pytest.raises(ValueError, match="at least one state"):
        ODESystem(["a = 1"], {})
    with pytest.raises(ValueError, match="is not a string"):
        make(equations=["dx = -x", 3])
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        make(name="")


def test_constant_overflowing_float32():
    system = make(equations=["dx = -c*x"], constants={"c": 1e300})
    system.python_functions("float64")
    with pytest.raises(ValueError, match=r"constant 'c' = 1e\+300 overflows float32"):
        system.python_functions("float32")
    system = make(equations=["dx = -1e39*x"])
    with pytest.raises(ValueError, match=r"number -1e\+39 overflows float32"):
        system.python_functions("float32")


# ---------------------------------------------------------------- value semantics


def test_names_and_defaults():
    system = ODESystem(
        equations=["dx = sigma*(y - x)", "dy = x*(rho - z) - y", "dz = x*y - beta*z"],
        states={"x": 1.0, "y": 0.0, "z": 0.0},
        parameters={"sigma": 10.0, "rho": 28.0, "beta": 8 / 3},
        constants={"g": 9.81},
        observables=["r = sqrt(x**2 + y**2)"],
        name="lorenz",
    )
    assert system.name == "lorenz"
    assert system.state_names == ("x", "y", "z")
    assert system.parameter_names == ("sigma", "rho", "beta")
    assert system.constant_names == ("g",)
    assert system.observable_names == ("r",)
    assert (system.n_states, system.n_parameters, system.n_observables) == (3, 3, 1)
    values = system.initial_values
    values["x"] = 99.0
    assert system.initial_values["x"] == 1.0
    assert system.default_parameters["beta"] == 8 / 3
    assert system.constants == {"g": 9.81}


def test_immutable():
    system = lorenz()
    with pytest.raises(AttributeError):
        system.name = "other"
    with pytest.raises(AttributeError):
        system._states = {}


def test_equality_and_hash():
    assert lorenz() == lorenz() and hash(lorenz()) == hash(lorenz())
    assert lorenz() != lorenz(rho=20.0)
    assert lorenz() != van_der_pol()
    reordered = ODESystem(["dy = -x", "dx = y"], {"y": 0.0, "x": 1.0})
    assert reordered != ODESystem(["dy = -x", "dx = y"], {"x": 1.0, "y": 0.0})
    assert len({lorenz(), lorenz(), kepler()}) == 2
    assert lorenz() != "lorenz"


def test_to_dict_round_trip_and_json():
    for system in (lorenz(), kepler(0.3), AUX_SYSTEM, PIECEWISE, FUNCTIONS_SYSTEM):
        definition = system.to_dict()
        assert set(definition) == {"equations", "states", "parameters", "constants",
                                   "observables", "name"}
        assert ODESystem(**definition) == system
        assert ODESystem(**json.loads(json.dumps(definition))) == system


def test_pickle_round_trip_shares_functions_in_process():
    system = AUX_SYSTEM
    f, _ = system.python_functions()  # built, but never part of the pickle
    payload = pickle.dumps(system)
    assert b"math" not in payload and b"_k0" not in payload
    restored = pickle.loads(payload)
    assert restored is not system
    assert restored == system and hash(restored) == hash(system)
    assert restored.python_functions()[0] is f  # equal definitions share code


def test_pickle_rebuilds_functions_in_a_fresh_process(tmp_path):
    """What a dask worker does: unpickle, then generate code on first use."""
    system = AUX_SYSTEM
    system.python_functions()
    (tmp_path / "system.pkl").write_bytes(pickle.dumps(system))
    script = (
        "import json, pickle, sys, numpy as np\n"
        "s = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "f, g = s.python_functions('float64')\n"
        "out = np.zeros(3); obs = np.zeros(2)\n"
        "f(np.array([0.3, -0.7, 1.1]), np.array([0.1, 2.0]), 0.5, out)\n"
        "g(np.array([0.3, -0.7, 1.1]), np.array([0.1, 2.0]), 0.5, obs)\n"
        "print(json.dumps([*out.tolist(), *obs.tolist()]))\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "system.pkl")],
                            capture_output=True, text=True, cwd=root, check=True,
                            env={**os.environ, "PYTHONPATH": str(root)})
    out, obs = np.zeros(3), np.zeros(2)
    f, g = system.python_functions()
    f(np.array([0.3, -0.7, 1.1]), np.array([0.1, 2.0]), 0.5, out)
    g(np.array([0.3, -0.7, 1.1]), np.array([0.1, 2.0]), 0.5, obs)
    assert json.loads(result.stdout) == [*out.tolist(), *obs.tolist()]


def test_digest_is_definition_based():
    assert lorenz().digest == lorenz().digest
    assert lorenz().digest != lorenz(rho=20.0).digest
    assert pickle.loads(pickle.dumps(lorenz())).digest == lorenz().digest


# ----------------------------------------------------------------------- examples


def test_example_defaults_and_overrides():
    assert lorenz().default_parameters == {"sigma": 10.0, "rho": 28.0, "beta": 8 / 3}
    assert lorenz(rho=99.0).default_parameters["rho"] == 99.0
    assert lorenz().initial_values == {"x": 1.0, "y": 0.0, "z": 0.0}
    assert van_der_pol(mu=5.0).default_parameters == {"mu": 5.0}
    assert van_der_pol().initial_values == {"x": 2.0, "v": 0.0}
    assert exponential_decay(k=0.5).default_parameters == {"k": 0.5}
    assert exponential_decay().initial_values == {"y": 1.0}
    assert harmonic_oscillator(omega=2.0).default_parameters == {"omega": 2.0}
    assert harmonic_oscillator().observable_names == ("energy",)
    for factory in (lorenz, van_der_pol, exponential_decay, harmonic_oscillator, kepler):
        assert factory.__doc__ and " = " in factory.__doc__


@pytest.mark.parametrize("e", [0.0, 0.5, 0.9])
def test_kepler_initial_condition(e):
    system = kepler(eccentricity=e)
    q = system.initial_values
    assert (q["qx"], q["qy"], q["px"]) == (1 - e, 0.0, 0.0)
    assert q["py"] == pytest.approx(math.sqrt((1 + e) / (1 - e)), rel=1e-15)
    _, g = system.python_functions()
    energy = np.zeros(1)
    g(np.array(list(q.values())), np.array([1.0]), 0.0, energy)
    assert energy[0] == pytest.approx(-0.5, rel=1e-14)  # semi-major axis 1


def test_kepler_rejects_unbound_orbits():
    with pytest.raises(ValueError, match="eccentricity"):
        kepler(eccentricity=1.0)


# ----------------------------------------------------------------------- real PTX


@pytest.mark.ptx
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_compiles_to_ptx(precision):
    from numba import cuda, types

    real = getattr(types, precision)
    signature = types.void(real[::1], real[::1], real, real[::1])
    for system in (lorenz(), kepler(), PIECEWISE, FUNCTIONS_SYSTEM):
        for function in system.python_functions(precision):
            ptx, _ = cuda.compile_ptx(function, signature, device=True, cc=(8, 0))
            assert ".func" in ptx


@pytest.mark.parametrize("precision", [np.float64, np.float32])
def test_lane_functions_agree_with_the_plain_ones(precision):
    """The lane-form functions the kernels use give, lane by lane, what dxdt and
    observables give on one run's arrays (plain Python calls, no compiling)."""
    from cubie_kernel.systems import examples

    rng = np.random.default_rng(7)
    systems = [examples.lorenz(), examples.van_der_pol(), examples.kepler(),
               examples.exponential_decay(), examples.harmonic_oscillator(),
               ODESystem(["e = x * k", "dx = -e + sin(t)"], {"x": 1.0}, {"k": 2.0},
                         observables=["energy = e * e", "twice = 2 * x"])]
    lanes = 5
    for system in systems:
        dxdt, observables = system.python_functions(precision)
        lane = system.lane_functions(precision)
        n, p, m = system.n_states, system.n_parameters, system.n_observables
        states = rng.uniform(0.5, 2.0, (n, lanes)).astype(precision)
        params = rng.uniform(0.5, 2.0, (p, lanes)).astype(precision)
        t = precision(0.3)
        out = np.zeros(n * lanes, precision)
        for j in range(lanes):
            lane["dxdt_lane"](states.ravel(), params.ravel(), t, out, j, lanes)
        for j in range(lanes):
            want = np.zeros(n, precision)
            dxdt(states[:, j].copy(), params[:, j].copy(), t, want)
            np.testing.assert_array_equal(out.reshape(n, lanes)[:, j], want)
            values = lane["dxdt_values"](t, *states[:, j], *params[:, j])
            np.testing.assert_array_equal(np.array(values, precision), want)
            got, expected = np.zeros(m, precision), np.zeros(m, precision)
            lane["observables_lane"](states.ravel(), params.ravel(), t, got, j, lanes)
            observables(states[:, j].copy(), params[:, j].copy(), t, expected)
            np.testing.assert_array_equal(got, expected)
