"""Analytic Jacobians generated from a system's equations.

The generated ``jacobian_lane`` and ``time_derivative_lane`` are checked
against central finite differences of the generated ``dxdt`` (float64, step
1e-6 relative) at random states, parameters and times: for every example
system, for every allowed function, and for piecewise expressions, chains of
auxiliaries, parameter and state exponents, constants and explicit time.
Structural zeros must be exact zeros that are never computed; user-supplied
Jacobians replace the generated one and are part of the system's identity.

Most tests call the generated plain-Python functions on 1-D arrays
(``_lanes=1, _j=0``); one compiles them with ``numba.njit``, one runs them in
the CUDA simulator, one compiles them to PTX.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import pickle

import numba
import numpy as np
import pytest
from numba import cuda  # a module global: the CUDA simulator swaps it in kernels

from cubie_kernel.systems import ALLOWED_FUNCTIONS, ODESystem, SystemDefinitionError, examples

N_POINTS = 6
FD_STEP = 1e-6


# ----------------------------------------------------------------------- helpers


def jacobian(system, state, params, t, precision="float64"):
    """The generated Jacobian, (n, n), from plain-Python calls on 1-D arrays."""
    n = system.n_states
    out = np.full(n * n, np.nan, precision)  # every entry must be written
    system.lane_functions(precision)["jacobian_lane"](
        np.asarray(state, precision), np.asarray(params, precision),
        np.dtype(precision).type(t), out, 0, 1)
    return out.reshape(n, n)


def time_derivative(system, state, params, t, precision="float64"):
    out = np.full(system.n_states, np.nan, precision)
    system.lane_functions(precision)["time_derivative_lane"](
        np.asarray(state, precision), np.asarray(params, precision),
        np.dtype(precision).type(t), out, 0, 1)
    return out


def rhs(system, state, params, t):
    out = np.full(system.n_states, np.nan)
    system.python_functions("float64")[0](np.asarray(state, float), np.asarray(params, float),
                                          float(t), out)
    return out


def finite_differences(system, state, params, t):
    """Central differences of dxdt by each state (columns) and by t."""
    state = np.asarray(state, float)
    n = system.n_states
    jac = np.zeros((n, n))
    for k in range(n):
        h = FD_STEP * max(1.0, abs(state[k]))
        up, down = state.copy(), state.copy()
        up[k] += h
        down[k] -= h
        jac[:, k] = (rhs(system, up, params, t) - rhs(system, down, params, t)) / (2 * h)
    h = FD_STEP * max(1.0, abs(t))
    dt = (rhs(system, state, params, t + h) - rhs(system, state, params, t - h)) / (2 * h)
    return jac, dt


def check_against_finite_differences(system, state, params, t):
    jac_fd, dt_fd = finite_differences(system, state, params, t)
    # FD round-off is ~1e-10 of |f|: an absolute floor relative to the rhs scale
    atol = 1e-7 * (1.0 + np.max(np.abs(rhs(system, state, params, t))))
    where = f"{system.name} at state={list(state)}, params={list(params)}, t={t}"
    np.testing.assert_allclose(jacobian(system, state, params, t), jac_fd, rtol=1e-6,
                               atol=atol, err_msg=f"jacobian of {where}")
    np.testing.assert_allclose(time_derivative(system, state, params, t), dt_fd, rtol=1e-6,
                               atol=atol, err_msg=f"time derivative of {where}")


def random_points(rng, system, ranges=None, low=0.3, high=2.0):
    """(state, params, t) triples; states have magnitudes in [low, high] and
    random signs unless ``ranges`` gives a (low, high) per state name."""
    points = []
    for _ in range(N_POINTS):
        if ranges is None:
            state = rng.uniform(low, high, system.n_states) * rng.choice([-1, 1],
                                                                        system.n_states)
        else:
            state = np.array([rng.uniform(*ranges[s]) for s in system.state_names])
        params = rng.uniform(0.5, 3.0, system.n_parameters)
        points.append((state, params, float(rng.uniform(0.0, 5.0))))
    return points


def function_source(system, function, precision="float64"):
    """The source of one generated function."""
    source = system.source(precision)
    return f"def {function}(" + source.split(f"def {function}(", 1)[1].split("\ndef ", 1)[0]


def literal_values(system, precision="float64"):
    """Generated literal name -> value (``_k3 = np.float64(1.0)``)."""
    values = {}
    for node in ast.parse(system.source(precision)).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and node.targets[0].id.startswith("_k")):
            values[node.targets[0].id] = float(ast.literal_eval(node.value.args[0]))
    return values


def stored_values(system, function="jacobian_lane"):
    """Store index -> the AST assigned to ``out[index * _lanes + _j]``."""
    tree = ast.parse(function_source(system, function))
    stores = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript)
                and node.targets[0].value.id == "out"):
            index = node.targets[0].slice.left.left
            if isinstance(index, ast.Constant):
                stores[index.value] = node.value
    return stores


def assert_no_unfolded_zero_or_one(system):
    """No '0*x', 'x*0', 'x + 0', 'x - 0', 'x*1', '1*x' or 'x/1' in the Jacobian code."""
    values = literal_values(system)
    for function in ("jacobian_lane", "time_derivative_lane"):
        tree = ast.parse(function_source(system, function))
        for node in ast.walk(tree):
            if not isinstance(node, ast.BinOp):
                continue
            operands = [values.get(getattr(o, "id", None)) for o in (node.left, node.right)]
            text = f"{system.name} {function}: {ast.unparse(node)}"
            assert 0.0 not in operands, text
            if isinstance(node.op, ast.Mult):
                assert 1.0 not in operands and -1.0 not in operands, text
            if isinstance(node.op, ast.Div):
                assert operands[1] not in (1.0, -1.0), text


# ------------------------------------------------------------------- the systems

EXAMPLES = [factory() for name, factory in inspect.getmembers(examples, inspect.isfunction)
            if factory.__module__ == examples.__name__]

# Each allowed function, with arguments depending on states: used in an
# auxiliary (chain rule through a temporary) and directly in a derivative.
# Domains: x in (-0.8, 0.8), y in (0.2, 2), z in (-1.5, 1.5).
FUNCTION_RANGES = {"x": (-0.8, 0.8), "y": (0.2, 2.0), "z": (-1.5, 1.5)}
FUNCTION_CASES = {
    "sin": "sin(x*z)",
    "cos": "cos(x + y*z)",
    "tan": "tan(x*y/2)",
    "asin": "asin(x*y/2)",
    "acos": "acos(x)",
    "atan": "atan(y*z)",
    "sinh": "sinh(z*y)",
    "cosh": "cosh(x*z)",
    "tanh": "tanh(y*z)",
    "asinh": "asinh(z*y)",
    "acosh": "acosh(1 + y*y)",
    "atanh": "atanh(x)",
    "exp": "exp(z*x)",
    "expm1": "expm1(y*x)",
    "log": "log(y*y)",
    "log1p": "log1p(x*y/2)",
    "log2": "log2(y + x*x)",
    "log10": "log10(y*(1 + x*x))",
    "sqrt": "sqrt(y + z*z)",
    "erf": "erf(x*z)",
    "erfc": "erfc(y - z)",
    "fabs": "fabs(z*x)",
    "floor": "floor(3*y)*z",
    "ceil": "ceil(2*z)*x + ceil(x)",
    "atan2": "atan2(z*x, y)",
    "hypot": "hypot(x, z*y)",
    "pow": "pow(y, z)",
    "copysign": "copysign(x*y, z)",
    "abs": "abs(x - z)",
    "min": "min(x, y*z, 0.5)",
    "max": "max(x, z, y - 1)",
}


def function_system(fname):
    expr = FUNCTION_CASES[fname]
    return ODESystem([f"a = {expr}", "dx = a*z", f"dy = {expr} - y", "dz = -z*y"],
                     {"x": 0.1, "y": 1.0, "z": 0.5}, name=f"function_{fname}")


PIECEWISE = ODESystem(
    equations=[
        "dx = (-x*y if x > 0 else 2*x) + (z if 0 < y <= 1 else -z*z)",
        "dy = y**2 if (x < -0.5 or x > 0.5) and not z == 0.25 else -y*z",
        "dz = abs(x)*z + min(x, z) - max(y, z*x, x) + fabs(y - z)",
    ],
    states={"x": 0.0, "y": 0.0, "z": 0.0},
    name="piecewise",
)

MIXED = ODESystem(
    equations=[
        "u = x*y + g",                       # a constant
        "ax = x",                            # an alias: folded, no temporary
        "kk = 2*k",                          # no state dependence: no temporary
        "v = u**2 + 1 + 0.5*sin(t)*z",       # time through an auxiliary
        "w = v**p*u",                        # parameter exponent
        "s = y**z",                          # state exponent
        "e = exp(v/4)",                      # reuses its own value
        "unused = log(-1 - x*x)",            # pruned: would be NaN
        "dx = w - kk*ax + t**2",             # explicit time
        "dy = s*u - y**3 + (1 + x*x)**-2 + 2**z + e",
        "dz = +v/(1 + s) - pi*z**0 + x**1 + y**2.5 + z**7 - (x*y)**p",
    ],
    states={"x": 0.5, "y": 1.0, "z": 0.2},
    parameters={"k": 1.5, "p": 1.3},
    constants={"g": 0.75},
    observables=["energy = u*t"],
    name="mixed",
)
MIXED_RANGES = {"x": (0.2, 1.2), "y": (0.5, 1.5), "z": (-1.0, 1.0)}


def chain_system(length):
    """x -> a1 -> a2 -> ...: each auxiliary uses the previous one twice, so an
    expanded derivative would double in size per link."""
    equations = ["a0 = x*y"]
    equations += [f"a{i} = sin(a{i - 1})*a{i - 1} + y" for i in range(1, length)]
    equations += [f"dx = a{length - 1}", "dy = -y"]
    return ODESystem(equations, {"x": 0.3, "y": 0.7}, name=f"chain{length}")


def ring_system(n):
    """n states, each coupled to its neighbours: n*n > 64 takes the zeroing loop."""
    equations = [f"dq{i} = q{(i - 1) % n}*q{(i + 1) % n} - c*q{i}**2 + sin(t)"
                 for i in range(n)]
    return ODESystem(equations, {f"q{i}": 0.1 for i in range(n)}, {"c": 0.5}, name="ring")


# ------------------------------------------------------------- against references


@pytest.mark.parametrize("system", EXAMPLES, ids=lambda s: s.name)
def test_examples_match_finite_differences(rng, system):
    assert len(EXAMPLES) >= 5
    for state, params, t in random_points(rng, system):
        check_against_finite_differences(system, state, params, t)


def test_function_cases_cover_the_allowlist():
    assert set(FUNCTION_CASES) == set(ALLOWED_FUNCTIONS)


@pytest.mark.parametrize("fname", sorted(FUNCTION_CASES))
def test_every_allowed_function_matches_finite_differences(rng, fname):
    system = function_system(fname)
    for state, params, t in random_points(rng, system, FUNCTION_RANGES):
        check_against_finite_differences(system, state, params, t)


def test_piecewise_matches_finite_differences_on_both_sides(rng):
    ranges = {"x": (-1.5, 1.5), "y": (0.1, 2.0), "z": (-1.5, 1.5)}
    # more points than elsewhere, so both branches of each condition get visited
    points = [point for _ in range(4) for point in random_points(rng, PIECEWISE, ranges)]
    for state, params, t in points:
        check_against_finite_differences(PIECEWISE, state, params, t)
    visited = {(s[0] > 0, 0 < s[1] <= 1, s[0] < s[2]) for s, _, _ in points}
    assert len(visited) >= 6


def test_min_max_ties_select_the_first_argument():
    """Python's min/max keep the earlier of equal arguments; so does the Jacobian."""
    system = ODESystem(["dx = min(x, y)", "dy = max(y, x, 2*x)"], {"x": 1.0, "y": 1.0})
    cases = {  # (x, y): rows d(min)/d(x, y), d(max)/d(x, y)
        (1.0, 1.0): [[1.0, 0.0], [2.0, 0.0]],     # min tie -> x; max is 2*x
        (-1.0, -1.0): [[1.0, 0.0], [0.0, 1.0]],   # max tie of y and x -> y
        (1.0, 2.0): [[1.0, 0.0], [0.0, 1.0]],     # max tie of y and 2*x -> y
        (3.0, 2.0): [[0.0, 1.0], [2.0, 0.0]],
    }
    for (x, y), expected in cases.items():
        np.testing.assert_array_equal(jacobian(system, [x, y], [], 0.0), expected,
                                      err_msg=f"x={x}, y={y}")


def test_mixed_system_matches_finite_differences(rng):
    assert not MIXED.is_autonomous
    for state, params, t in random_points(rng, MIXED, MIXED_RANGES):
        check_against_finite_differences(MIXED, state, params, t)


def test_mixed_system_matches_hand_derivatives():
    """An independent closed form for a few entries of MIXED."""
    x, y, z = 0.7, 1.2, -0.4
    k, p = 1.5, 1.3
    t = 0.9
    u = x * y + 0.75
    v = u**2 + 1 + 0.5 * math.sin(t) * z
    w = v**p * u
    dv_dx = 2 * u * y
    dw_dx = p * v ** (p - 1) * dv_dx * u + v**p * y
    dx_dt = p * v ** (p - 1) * 0.5 * math.cos(t) * z * u + 2 * t
    s = y**z
    jac = jacobian(MIXED, [x, y, z], [k, p], t)
    assert jac[0, 0] == pytest.approx(dw_dx - 2 * k, rel=1e-13)
    assert jac[0, 2] == pytest.approx(p * v ** (p - 1) * 0.5 * math.sin(t) * u, rel=1e-13)
    assert jac[1, 2] == pytest.approx(math.log(y) * s * u + math.log(2) * 2**z
                                      + math.exp(v / 4) * 0.5 * math.sin(t) / 4, rel=1e-13)
    assert time_derivative(MIXED, [x, y, z], [k, p], t)[0] == pytest.approx(dx_dt, rel=1e-13)


def test_long_auxiliary_chain_stays_linear_in_size(rng):
    """Forward mode: one temporary per auxiliary and variable, no expression swell."""
    short, long = chain_system(4), chain_system(40)
    for system in (short, long):
        for state, params, t in random_points(rng, system, {"x": (-1, 1), "y": (-1, 1)}):
            check_against_finite_differences(system, state, params, t)
    code = function_source(long, "jacobian_lane")
    assert "_D0_a39 = " in code and "_D1_a39 = " in code
    assert "out[0 * _lanes + _j] = _D0_a39" in code
    per_link = (len(code) - len(function_source(short, "jacobian_lane"))) / 36
    assert per_link < 300, per_link  # ~210; an expanded derivative doubles per link


def test_many_states_zero_the_rest_in_a_loop(rng):
    system = ring_system(9)
    code = function_source(system, "jacobian_lane")
    assert "for _m in range(81):" in code
    assert code.count("out[") == 1 + 27  # the loop, then 3 non-zeros per row
    for state, params, t in random_points(rng, system):
        check_against_finite_differences(system, state, params, t)
        jac = jacobian(system, state, params, t)
        pattern = np.zeros((9, 9), bool)
        for i in range(9):
            pattern[i, [(i - 1) % 9, i, (i + 1) % 9]] = True
        assert np.all(jac[~pattern] == 0.0)


# ------------------------------------------------------------- structure and zeros


def test_lorenz_structure_and_exact_values(rng):
    system = examples.lorenz()
    for state, params, t in random_points(rng, system):
        x, y, z = state
        sigma, rho, beta = params
        expected = [[-sigma, sigma, 0.0], [rho - z, -1.0, -x], [y, x, -beta]]
        np.testing.assert_array_equal(jacobian(system, state, params, t), expected)
        np.testing.assert_array_equal(time_derivative(system, state, params, t), 0.0)
    zero = {name for name, value in literal_values(system).items() if value == 0.0}
    stores = stored_values(system)
    assert sorted(stores) == list(range(9))  # every entry written
    assert stores[2].id in zero and stores[1].id == "sigma"


def test_structural_zeros_are_exact_and_not_computed(rng):
    """Entries that do not depend on a state are stored as a zero literal,
    also when the derivative reads that state only through a condition,
    floor or ceil."""
    system = ODESystem(
        ["a = y*y", "b = floor(z)*x", "dx = a + b", "dy = x if z > 0 else -x", "dz = -z"],
        {"x": 1.0, "y": 1.0, "z": 1.0})
    zero = {name for name, value in literal_values(system).items() if value == 0.0}
    stores = stored_values(system)
    structural = {2, 4, 5, 6, 7}   # d(dx)/dz, d(dy)/dy, d(dy)/dz, d(dz)/dx, d(dz)/dy
    for index, node in stores.items():
        is_zero = isinstance(node, ast.Name) and node.id in zero
        assert is_zero == (index in structural), (index, ast.unparse(node))
    for state, params, t in random_points(rng, system):
        jac = jacobian(system, state, params, t)
        assert all(jac.flat[i] == 0.0 for i in structural)
        check_against_finite_differences(system, state, params, t)


@pytest.mark.parametrize("system", EXAMPLES + [MIXED, PIECEWISE, chain_system(3)]
                         + [function_system(f) for f in sorted(FUNCTION_CASES)],
                         ids=lambda s: s.name)
def test_no_multiplication_by_one_or_addition_of_zero(system):
    assert_no_unfolded_zero_or_one(system)


def test_temporaries_only_for_real_dependencies():
    code = function_source(MIXED, "jacobian_lane")
    assert "_D0_u" not in code and "_D1_u" not in code  # d u/dx = y: folded, no temporary
    assert "_D0_v = " in code and "_D2_v = " in code and "_D2_w = " in code
    assert "_D0_ax" not in code and "_D" + "0_kk" not in code and "kk = " in code
    assert "_D0_s" not in code and "_D1_s = " in code and "_D2_s = " in code
    assert "unused" not in code and "log(-" not in code
    time_code = function_source(MIXED, "time_derivative_lane")
    assert "_Dt_v = " in time_code and "_Dt_u" not in time_code
    assert "_Dt_" not in function_source(examples.kepler(), "time_derivative_lane")


def test_is_autonomous():
    assert all(system.is_autonomous for system in EXAMPLES)
    assert not MIXED.is_autonomous
    through_aux = ODESystem(["a = sin(t)", "b = a*x", "dx = -b"], {"x": 1.0})
    assert not through_aux.is_autonomous
    assert not ODESystem(["dx = -x", "dy = t"], {"x": 1.0, "y": 0.0}).is_autonomous
    # t in an auxiliary no derivative needs, or in an observable, does not count;
    # a piecewise-constant function of t does (df/dt is 0 almost everywhere)
    assert ODESystem(["a = t", "dx = -x"], {"x": 1.0}, observables=["o = t*x"]).is_autonomous
    assert not ODESystem(["dx = floor(t)"], {"x": 1.0}).is_autonomous
    np.testing.assert_array_equal(time_derivative(through_aux, [2.0], [], 0.3),
                                  [-math.cos(0.3) * 2.0])


# -------------------------------------------------------------- lanes and precision


def test_lane_form_reads_and_writes_its_own_lane(rng):
    system = MIXED
    lanes, n = 4, system.n_states
    states = np.stack([rng.uniform(*MIXED_RANGES[s], lanes) for s in system.state_names])
    params = rng.uniform(0.5, 2.0, (system.n_parameters, lanes))
    functions = system.lane_functions("float64")
    jac = np.full(n * n * lanes, np.nan)
    dt = np.full(n * lanes, np.nan)
    for j in range(lanes):
        functions["jacobian_lane"](states.ravel(), params.ravel(), 0.4, jac, j, lanes)
        functions["time_derivative_lane"](states.ravel(), params.ravel(), 0.4, dt, j, lanes)
    for j in range(lanes):
        np.testing.assert_array_equal(jac.reshape(n * n, lanes)[:, j].reshape(n, n),
                                      jacobian(system, states[:, j], params[:, j], 0.4))
        np.testing.assert_array_equal(dt.reshape(n, lanes)[:, j],
                                      time_derivative(system, states[:, j], params[:, j], 0.4))


@pytest.mark.parametrize("system", [examples.kepler(), MIXED, function_system("erf"),
                                    function_system("abs"), PIECEWISE], ids=lambda s: s.name)
def test_float32_code_stays_float32(rng, system):
    ranges = MIXED_RANGES if system is MIXED else FUNCTION_RANGES
    if system.name == "kepler":
        ranges = {s: (0.4, 1.2) for s in system.state_names}
    for state, params, t in random_points(rng, system, ranges):
        state32, params32 = state.astype(np.float32), params.astype(np.float32)
        t32 = np.float32(t)
        n = system.n_states
        functions = system.lane_functions("float32")
        # an object array keeps each stored scalar's own type
        jac = np.empty(n * n, object)
        dt = np.empty(n, object)
        functions["jacobian_lane"](state32, params32, t32, jac, 0, 1)
        functions["time_derivative_lane"](state32, params32, t32, dt, 0, 1)
        for value in [*jac, *dt]:
            assert type(value) is np.float32, type(value)
        reference = jacobian(system, state32.astype(float), params32.astype(float),
                             float(t32))
        scale = 1.0 + np.max(np.abs(reference))
        np.testing.assert_allclose(jac.reshape(n, n).astype(float), reference,
                                   rtol=1e-4, atol=1e-5 * scale)
        reference = time_derivative(system, state32.astype(float), params32.astype(float),
                                    float(t32))
        np.testing.assert_allclose(dt.astype(float), reference, rtol=1e-4,
                                   atol=1e-5 * (1.0 + np.max(np.abs(reference))))


ALL_FUNCTIONS = ODESystem(
    [f"o_{f} = {expr}" for f, expr in FUNCTION_CASES.items()]
    + ["dx = " + " + ".join(f"o_{f}" for f in list(FUNCTION_CASES)[::2]),
       "dy = " + " + ".join(f"o_{f}" for f in list(FUNCTION_CASES)[1::2]),
       "dz = (-z if x > 0 else z*t) + max(x, y)**2"],
    {"x": 0.1, "y": 1.0, "z": 0.5}, name="all_functions")


def _float64_in_typemap(jitted) -> list[str]:
    found = []
    for sig in jitted.signatures:
        typemap = jitted.overloads[sig].fndesc.typemap
        found += [f"{name}: {ty}" for name, ty in typemap.items() if "float64" in str(ty)]
    return found


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_njit_compiles_and_agrees_with_python(rng, precision):
    system = ALL_FUNCTIONS
    functions = system.lane_functions(precision)
    jit_jac = numba.njit(functions["jacobian_lane"])
    jit_dt = numba.njit(functions["time_derivative_lane"])
    real = np.dtype(precision).type
    n = system.n_states
    for state, params, t in random_points(rng, system, FUNCTION_RANGES)[:3]:
        state = state.astype(precision)
        jac, dt = np.full(n * n, np.nan, precision), np.full(n, np.nan, precision)
        jit_jac(state, params.astype(precision), real(t), jac, 0, 1)
        jit_dt(state, params.astype(precision), real(t), dt, 0, 1)
        expected = jacobian(system, state, params, t, precision)
        rtol = 1e-12 if precision == "float64" else 1e-5
        np.testing.assert_allclose(jac.reshape(n, n), expected, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(dt, time_derivative(system, state, params, t, precision),
                                   rtol=rtol, atol=rtol)
        if precision == "float64":
            check_against_finite_differences(system, state, params, t)
    if precision == "float32":
        assert _float64_in_typemap(jit_jac) == []
        assert _float64_in_typemap(jit_dt) == []


@pytest.mark.cudasim
def test_cuda_simulator_runs_the_device_functions():
    system = examples.kepler()
    functions = system.lane_functions("float32")
    jac_device = cuda.jit(device=True)(functions["jacobian_lane"])
    dt_device = cuda.jit(device=True)(functions["time_derivative_lane"])

    @cuda.jit
    def kernel(states, params, jac, dt, lanes):
        j = cuda.grid(1)
        if j < lanes:
            jac_device(states, params, np.float32(0.5), jac, j, lanes)
            dt_device(states, params, np.float32(0.5), dt, j, lanes)

    lanes, n = 2, system.n_states
    states = np.array([[0.5, 0.8], [0.3, -0.6], [0.1, 0.2], [1.1, -0.4]], np.float32)
    params = np.array([[1.0, 2.0]], np.float32)
    jac = np.full(n * n * lanes, np.nan, np.float32)
    dt = np.full(n * lanes, np.nan, np.float32)
    kernel[1, 2](states.ravel(), params.ravel(), jac, dt, lanes)
    for j in range(lanes):
        np.testing.assert_array_equal(
            jac.reshape(n * n, lanes)[:, j].reshape(n, n),
            jacobian(system, states[:, j], params[:, j], 0.5, "float32"))
    np.testing.assert_array_equal(dt, 0.0)


@pytest.mark.ptx
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_compiles_to_ptx(precision):
    from numba import types

    real = getattr(types, precision)
    signature = types.void(real[::1], real[::1], real, real[::1], types.int64, types.int64)
    for system in (ALL_FUNCTIONS, ring_system(9)):
        functions = system.lane_functions(precision)
        for name in ("jacobian_lane", "time_derivative_lane"):
            ptx, _ = cuda.compile_ptx(functions[name], signature, device=True, cc=(8, 0))
            assert ".func" in ptx


# ------------------------------------------------------------ user-supplied Jacobian

USER_JACOBIAN = {
    # deliberately not the true Jacobian, so it is visible which one is used
    "z": {"z": "-beta*2", "t": "sin(t) + r2"},
    "x": {"y": "sigma", "x": "-sigma"},
    "y": {"x": "rho - z", "y": "-1"},
}


def user_lorenz(jacobian=USER_JACOBIAN):
    return ODESystem(
        equations=["r2 = x*x + y*y", "dx = sigma*(y - x)", "dy = x*(rho - z) - y",
                   "dz = x*y - beta*z + 0*r2"],
        states={"x": 1.0, "y": 0.0, "z": 0.0},
        parameters={"sigma": 10.0, "rho": 28.0, "beta": 8 / 3},
        name="user_lorenz", jacobian=jacobian)


def test_user_jacobian_replaces_the_generated_one(rng):
    system = user_lorenz()
    assert system.jacobian == {"x": {"x": "-sigma", "y": "sigma"},
                               "y": {"x": "rho - z", "y": "-1"},
                               "z": {"z": "-beta*2", "t": "sin(t) + r2"}}
    assert system.is_autonomous  # a property of the equations, not of the Jacobian
    for state, params, t in random_points(rng, system):
        x, y, z = state
        sigma, rho, beta = params
        expected = [[-sigma, sigma, 0.0], [rho - z, -1.0, 0.0], [0.0, 0.0, -2 * beta]]
        np.testing.assert_array_equal(jacobian(system, state, params, t), expected)
        np.testing.assert_allclose(time_derivative(system, state, params, t),
                                   [0.0, 0.0, math.sin(t) + x * x + y * y], rtol=1e-15)
    generated = user_lorenz(jacobian=None)
    assert generated.jacobian is None
    state, params, t = random_points(rng, generated)[0]
    assert jacobian(generated, state, params, t)[2, 0] == state[1]


def test_empty_user_jacobian_is_all_zeros():
    system = user_lorenz(jacobian={})
    assert system.jacobian == {}
    np.testing.assert_array_equal(jacobian(system, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.0),
                                  np.zeros((3, 3)))
    assert "jacobian" in system.to_dict() and system != user_lorenz(jacobian=None)


def test_user_jacobian_is_part_of_the_identity():
    system = user_lorenz()
    reordered = user_lorenz({row: dict(reversed(list(cols.items())))
                             for row, cols in reversed(list(USER_JACOBIAN.items()))})
    assert reordered == system and hash(reordered) == hash(system)
    assert reordered.digest == system.digest and reordered.definition_key == system.definition_key
    other = user_lorenz({**USER_JACOBIAN, "x": {"x": "-sigma"}})
    plain = user_lorenz(jacobian=None)
    for different in (other, plain):
        assert different != system
        assert different.digest != system.digest
        assert different.definition_key != system.definition_key
    assert "jacobian" not in plain.to_dict()
    assert plain.definition_key == (
        plain.name, plain.equations, plain.state_names, plain.parameter_names, (), ())

    definition = system.to_dict()
    assert definition["jacobian"] == system.jacobian
    assert ODESystem(**json.loads(json.dumps(definition))) == system

    restored = pickle.loads(pickle.dumps(system))
    assert restored == system and restored.jacobian == system.jacobian
    state, params = np.array([0.5, -1.0, 2.0]), np.array([10.0, 28.0, 3.0])
    np.testing.assert_array_equal(jacobian(restored, state, params, 1.0),
                                  jacobian(system, state, params, 1.0))
    assert jacobian(restored, state, params, 1.0)[2, 2] == -6.0


@pytest.mark.parametrize("bad, message", [
    (["x"], r"jacobian must be a mapping of state -> \{column: expression string\}, got list"),
    ({"q": {"x": "1"}}, r"jacobian: unknown row 'q'; rows are states: 'x', 'y', 'z'"),
    ({"dx": {"x": "1"}}, r"jacobian: unknown row 'dx'"),
    ({"x": "sigma"}, r"jacobian\['x'\] must be a mapping of column -> expression string, "
                     r"got str"),
    ({"x": {"sigma": "1"}}, r"jacobian\['x'\]: unknown column 'sigma'; allowed: 'x', 'y', "
                            r"'z', 't' \('t' is the time derivative\)"),
    ({"x": {"x": 1.0}}, r"jacobian\['x'\]\['x'\] must be a non-empty expression string, "
                        r"got 1\.0"),
    ({"x": {"x": "  "}}, r"jacobian\['x'\]\['x'\] must be a non-empty expression string"),
    ({"y": {"t": "q*x"}}, r"jacobian\['y'\]\['t'\] 'q\*x': unknown name 'q'"),
    ({"x": {"y": "sigma*("}}, r"jacobian\['x'\]\['y'\] 'sigma\*\(': syntax error"),
    ({"x": {"y": "a = 1"}}, r"jacobian\['x'\]\['y'\] 'a = 1': syntax error"),
    ({"x": {"x": "dx + 1"}}, r"unknown name 'dx' \(derivatives cannot be used"),
    ({"x": {"x": "speed"}}, r"unknown name 'speed' \('speed' is an observable"),
    ({"x": {"x": "gamma(x)"}}, r"function 'gamma' is not allowed"),
    ({"x": {"x": "x > 0"}}, r"is a condition, not a number"),
])
def test_user_jacobian_errors(bad, message):
    with pytest.raises(SystemDefinitionError, match=message):
        ODESystem(["r2 = x*x + y*y", "dx = -x", "dy = -y", "dz = -z"],
                  {"x": 1.0, "y": 0.0, "z": 0.0}, {"sigma": 1.0},
                  observables=["speed = sqrt(r2)"], jacobian=bad)


def test_user_jacobian_may_use_auxiliaries_constants_pi_and_t():
    system = ODESystem(["r2 = x*x", "dx = -c*r2"], {"x": 1.0}, constants={"c": 2.0},
                       jacobian={"x": {"x": "-2*c*x + 0*r2*pi", "t": "t*pi"}})
    assert jacobian(system, [3.0], [], 0.5)[0, 0] == -12.0
    assert time_derivative(system, [3.0], [], 0.5)[0] == pytest.approx(0.5 * math.pi)
    assert "r2 = " in function_source(system, "jacobian_lane")
    assert "r2 =" not in function_source(system, "time_derivative_lane")


def test_generated_names_are_reserved():
    for name in ("jacobian_lane", "time_derivative_lane"):
        with pytest.raises(SystemDefinitionError, match=f"constant name {name!r} is reserved"):
            ODESystem(["dx = -x"], {"x": 1.0}, constants={name: 1.0})


def test_lane_functions_include_the_jacobian():
    functions = examples.lorenz().lane_functions("float32")
    assert {"jacobian_lane", "time_derivative_lane"} <= set(functions)
    assert functions["jacobian_lane"] is examples.lorenz().lane_functions(
        np.float32)["jacobian_lane"]  # cached with the rest
    assert len(examples.lorenz().python_functions()) == 2


@pytest.mark.parametrize("name", ["dxdt_lane", "observables_lane", "dxdt_values",
                                  "jacobian_lane", "time_derivative_lane"])
def test_generated_function_names_are_reserved(name):
    """A constant named like a generated function would be overwritten by its definition."""
    with pytest.raises(SystemDefinitionError, match="reserved"):
        ODESystem(["dx = -c*x"], states={"x": 1.0}, constants={name: 2.0})
