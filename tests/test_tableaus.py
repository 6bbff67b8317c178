"""The tableau registry: algebra, order conditions, flags, names, convergence.

Everything here is independent of the step engine: order conditions are
checked on the exact coefficients with generated Butcher trees
(``helpers_rk``), and convergence with a small reference stepper in this
module.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction as F
from math import factorial

import numpy as np
import pytest

from cubie_kernel.algorithms.tableau import ButcherTableau
from cubie_kernel.algorithms.tableaus import (
    ALIASES,
    DEFAULT_ADAPTIVE_METHOD,
    TABLEAUS,
    get_tableau,
    method_names,
)
from helpers_rk import (
    TREE_COUNTS,
    OrderConditions,
    density,
    rooted_trees,
    symmetry,
    tree_order,
)

#: The explicit Runge-Kutta tableaus (Rosenbrock tableaus: tests/test_rosenbrock.py).
ALL_NAMES = sorted(n for n, t in TABLEAUS.items() if isinstance(t, ButcherTableau))
ADAPTIVE_NAMES = [n for n in ALL_NAMES if TABLEAUS[n].adaptive]

#: Tableaus published as decimals: their order conditions hold to this
#: tolerance only (exact Fraction arithmetic on the published digits).
DECIMAL_TABLEAUS = {"tsit5": F(1, 10**12)}

#: A failure at order + 1 must be clearly beyond any tolerance.
FAILURE_MARGIN = F(1, 10**9)

#: What each registered method is, stated independently of its module.
EXPECTED = {
    # name: (n_stages, order, error_order, fsal)
    "euler": (1, 1, None, False),
    "rk4": (4, 4, None, False),
    "heun_euler": (2, 2, 1, False),
    "bogacki_shampine_32": (4, 3, 2, True),
    "dormand_prince_54": (7, 5, 4, True),
    "tsit5": (7, 5, 4, True),
    "cash_karp": (6, 5, 4, False),
    "vern6": (9, 6, 5, True),
}

#: Aliases users know from scipy, Julia and the literature.
REQUIRED_ALIASES = {
    "explicit_euler": "euler",
    "classical_rk4": "rk4",
    "rk23": "bogacki_shampine_32",
    "bs3": "bogacki_shampine_32",
    "rk45": "dormand_prince_54",
    "dopri5": "dormand_prince_54",
    "dp5": "dormand_prince_54",
    "dormand_prince": "dormand_prince_54",
    "tsitouras": "tsit5",
    "cashkarp": "cash_karp",
    "cash_karp_54": "cash_karp",
    "verner6": "vern6",
    "vern6": "vern6",
}


def _b_hat(tab: ButcherTableau) -> list:
    return [b - e for b, e in zip(tab.b, tab.b_error)]


def _tolerance(name: str) -> F:
    return DECIMAL_TABLEAUS.get(name, F(0))


# --------------------------------------------------------------------------
# The tree machinery itself
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, len(TREE_COUNTS) - 1))
def test_rooted_tree_counts_match_oeis(n):
    trees = rooted_trees(n)
    assert len(trees) == TREE_COUNTS[n - 1]
    assert len(set(trees)) == len(trees)
    assert all(tree_order(t) == n for t in trees)


@pytest.mark.parametrize("n", range(1, 8))
def test_densities_and_symmetries_count_labelled_trees(n):
    # alpha(t) = n! / (gamma(t) sigma(t)) counts the monotone labellings of t,
    # and every recursive tree on n nodes is one of them: sum = (n - 1)!.
    total = sum(F(factorial(n), density(t) * symmetry(t)) for t in rooted_trees(n))
    assert total == factorial(n - 1)


def test_small_trees_have_textbook_densities():
    leaf = ()
    assert density(leaf) == 1
    assert density((leaf,)) == 2
    assert sorted(density(t) for t in rooted_trees(3)) == [3, 6]
    assert sorted(density(t) for t in rooted_trees(4)) == [4, 8, 12, 24]


# --------------------------------------------------------------------------
# Order conditions of every registered tableau
# --------------------------------------------------------------------------


def test_expectations_cover_the_registry():
    assert set(EXPECTED) == set(ALL_NAMES)
    assert set(DECIMAL_TABLEAUS) <= set(TABLEAUS)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_solution_weights_satisfy_order_conditions(name):
    tab = TABLEAUS[name]
    oc = OrderConditions(tab.a)
    for p in range(1, tab.order + 1):
        worst = oc.max_residual(tab.b, p)
        assert worst <= _tolerance(name), (
            f"{name}: b violates an order-{p} condition by {float(worst):.3e}"
        )


@pytest.mark.parametrize("name", ALL_NAMES)
def test_solution_weights_fail_above_claimed_order(name):
    tab = TABLEAUS[name]
    worst = OrderConditions(tab.a).max_residual(tab.b, tab.order + 1)
    assert worst > FAILURE_MARGIN, (
        f"{name}: b also satisfies order {tab.order + 1}; the claimed order is too low"
    )


@pytest.mark.parametrize("name", ADAPTIVE_NAMES)
def test_embedded_weights_satisfy_order_conditions(name):
    tab = TABLEAUS[name]
    oc = OrderConditions(tab.a)
    b_hat = _b_hat(tab)
    for p in range(1, tab.error_order + 1):
        worst = oc.max_residual(b_hat, p)
        assert worst <= _tolerance(name), (
            f"{name}: b - b_error violates an order-{p} condition by {float(worst):.3e}"
        )
    assert oc.max_residual(b_hat, tab.error_order + 1) > FAILURE_MARGIN


@pytest.mark.parametrize("name", ALL_NAMES)
def test_registered_properties(name):
    tab = TABLEAUS[name]
    n_stages, order, error_order, fsal = EXPECTED[name]
    assert tab.name == name
    assert tab.n_stages == n_stages
    assert tab.order == order
    assert tab.error_order == error_order
    assert tab.fsal is fsal
    assert tab.adaptive is (name not in ("euler", "rk4"))
    assert tab.description


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("precision", [np.float32, np.float64])
def test_cast_keeps_shape_and_flags(name, precision):
    tab = TABLEAUS[name]
    cast = tab.cast(precision)
    s = tab.n_stages
    assert (len(cast.a), len(cast.b), len(cast.c), len(cast.b_error)) == (s * s, s, s, s)
    assert all(type(v) is precision for v in cast.b + cast.b_error)
    assert cast.fsal is tab.fsal and cast.adaptive is tab.adaptive
    np.testing.assert_allclose(cast.b, [float(v) for v in tab.b], rtol=1e-6)


# --------------------------------------------------------------------------
# A corrupted tableau names its problem
# --------------------------------------------------------------------------


def _heun_euler_kwargs(**changes):
    kwargs = dict(
        name="broken",
        a=[[], [1]],
        b=[F(1, 2), F(1, 2)],
        c=[0, 1],
        order=2,
        b_error=[F(-1, 2), F(1, 2)],
        error_order=1,
    )
    kwargs.update(changes)
    return kwargs


def test_valid_kwargs_build():
    assert ButcherTableau(**_heun_euler_kwargs()).adaptive


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(a=[[], [F(1, 2)]]), r"row 1 of a sums to 0\.5, c\[1\] = 1"),
        (dict(a=[[], [1 + F(1, 10**11)]]), r"row 1 of a sums to"),
        (dict(b=[F(1, 2), F(1, 4)]), r"b sums to 0\.75, expected 1"),
        (dict(b_error=[F(-1, 2), F(1, 4)]), r"b_error sums to -0\.25, expected 0"),
        (
            dict(a=[[], [1], [1]], b=[F(1, 2), F(1, 2), 0], c=[0, 1, 1], b_error=None,
                 error_order=None),
            r"a\[2\] has 1 entries, expected 2",
        ),
        (dict(b_error=[F(-1, 2), F(1, 2), 0]), r"len\(b_error\)=3 but len\(b\)=2"),
        (dict(c=[F(1, 10), 1], a=[[], [1]]), r"c\[0\] = 1/10"),
        (dict(error_order=None), r"b_error given without error_order"),
    ],
)
def test_corrupted_tableau_raises_value_error(changes, message):
    with pytest.raises(ValueError, match=message) as info:
        ButcherTableau(**_heun_euler_kwargs(**changes))
    assert "'broken'" in str(info.value)


def test_decimal_row_within_tolerance_is_accepted():
    tab = ButcherTableau(**_heun_euler_kwargs(a=[[], [1 + F(1, 10**13)]]))
    assert tab.a[1][0] == 1 + F(1, 10**13)


@pytest.mark.parametrize("where", ["a", "b", "c", "b_error"])
def test_float_coefficient_is_rejected(where):
    bad = {
        "a": [[], [1.0]],
        "b": [0.5, F(1, 2)],
        "c": [0, 1.0],
        "b_error": [-0.5, F(1, 2)],
    }[where]
    with pytest.raises(TypeError, match="floats lose the published digits"):
        ButcherTableau(**_heun_euler_kwargs(**{where: bad}))


def test_decimal_strings_convert_exactly():
    tab = ButcherTableau(**_heun_euler_kwargs(b=["0.5", "0.5"], b_error=["-0.5", "0.5"]))
    assert tab.b == (F(1, 2), F(1, 2))


# --------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------


def test_required_aliases_are_registered():
    for alias, canonical in REQUIRED_ALIASES.items():
        assert get_tableau(alias) is TABLEAUS[canonical], alias


def test_alias_table_is_consistent():
    for alias, canonical in ALIASES.items():
        assert alias == alias.lower(), f"alias {alias!r} must be lower case"
        assert canonical in TABLEAUS, f"alias {alias!r} points at unknown {canonical!r}"
        assert alias not in TABLEAUS, f"alias {alias!r} shadows a canonical name"
    assert all(name == name.lower() for name in TABLEAUS)


@pytest.mark.parametrize("name", method_names())
def test_every_name_resolves_case_insensitively(name):
    expected = TABLEAUS[ALIASES.get(name, name)]
    for spelling in (name, name.upper(), name.title(), name.swapcase()):
        assert get_tableau(spelling) is expected


def test_unknown_name_lists_accepted_names():
    with pytest.raises(ValueError, match="'rk99' is unknown") as info:
        get_tableau("rk99")
    message = str(info.value)
    for name in method_names():
        assert name in message
    assert set(method_names()) == set(TABLEAUS) | set(ALIASES)


def test_non_string_name_is_a_type_error():
    with pytest.raises(TypeError):
        get_tableau(45)


def test_default_adaptive_method():
    assert DEFAULT_ADAPTIVE_METHOD == "dormand_prince_54"
    assert get_tableau(DEFAULT_ADAPTIVE_METHOD).adaptive


# --------------------------------------------------------------------------
# Empirical convergence with a reference stepper, independent of the engine
# --------------------------------------------------------------------------
#
# The stepper runs in 40-digit decimal arithmetic (numpy object arrays of
# Decimal). In float64 the highest-order pair cannot show its order on these
# problems: Vern6's order-7 residuals are tiny (max ~1e-6), so its errors meet
# float64 round-off (~1e-13 with coefficients of size ~170) while still
# pre-asymptotic (apparent order ~7). With 40 digits round-off is ~1e-38.

WORKING_DIGITS = 40
T_END = 1

#: Steps over [0, T_END]: fine enough to be asymptotic, coarse enough that
#: Tsit5's published decimals (consistency defect ~1e-15) do not dominate.
STEPS_B = {"default": (16, 32, 64), "vern6": (128, 256, 512)}
STEPS_B_HAT = {"default": (64, 128, 256), "vern6": (128, 256, 512)}
ORDER_TOLERANCE = 0.3


def _dec(x: F) -> Decimal:
    return Decimal(x.numerator) / Decimal(x.denominator)


def _sin_cos(x: Decimal) -> tuple[Decimal, Decimal]:
    """Taylor series of (sin x, cos x) to the context precision (|x| small)."""
    sin, cos, term, k = Decimal(0), Decimal(0), Decimal(1), 0
    small = Decimal(10) ** (-WORKING_DIGITS - 5)
    while abs(term) >= small or k < 2:
        if k % 4 == 0:
            cos += term
        elif k % 4 == 1:
            sin += term
        elif k % 4 == 2:
            cos -= term
        else:
            sin -= term
        k += 1
        term = term * x / k
    return sin, cos


PROBLEMS = {
    # name: (f(t, y), exact y(T_END) with y(0) = 1)
    "decay": (lambda t, y: -y, lambda: Decimal(-T_END).exp()),
    "cos": (lambda t, y: _sin_cos(t)[1] * y, lambda: _sin_cos(Decimal(T_END))[0].exp()),
}


def rk_solve(a, weights, c, f, y0, t_end, n_steps) -> Decimal:
    """Fixed-step explicit Runge-Kutta, scalar ``y``, in the context precision.

    ``a`` (ragged rows), ``weights`` and ``c`` are exact Fractions; the
    stages are ``k_i = f(t + c_i h, y + h sum_j a_ij k_j)`` and the update is
    ``y + h sum_i w_i k_i``.
    """
    s = len(weights)
    a_mat = np.full((s, s), Decimal(0), dtype=object)
    for i, row in enumerate(a):
        for j, v in enumerate(row):
            a_mat[i, j] = _dec(v)
    w = np.array([_dec(v) for v in weights], dtype=object)
    nodes = [_dec(v) for v in c]
    h = Decimal(t_end) / n_steps
    y = Decimal(y0)
    k = np.full(s, Decimal(0), dtype=object)
    for step in range(n_steps):
        t = step * h
        for i in range(s):
            k[i] = f(t + nodes[i] * h, y + h * (a_mat[i, :i] @ k[:i]))
        y = y + h * (w @ k)
    return y


def _consistency_defect(tab: ButcherTableau, weights) -> float:
    rows = max(abs(sum(row, F(0)) - ci) for row, ci in zip(tab.a, tab.c))
    return float(abs(sum(weights, F(0)) - 1) + rows)


def _empirical_order(tab: ButcherTableau, weights, problem: str, steps) -> tuple:
    f, exact = PROBLEMS[problem]
    with localcontext(prec=WORKING_DIGITS):
        y_end = exact()
        errors = [abs(rk_solve(tab.a, weights, tab.c, f, 1, T_END, n) - y_end) for n in steps]
    h = np.array([T_END / n for n in steps])
    errors = np.array([float(e) for e in errors])
    slope = np.polyfit(np.log(h), np.log(errors), 1)[0]
    return slope, errors


CONVERGENCE_CASES = [
    (name, which, problem)
    for name in ALL_NAMES
    for which in (("b", "b_hat") if TABLEAUS[name].adaptive else ("b",))
    for problem in PROBLEMS
]


@pytest.mark.parametrize("name, which, problem", CONVERGENCE_CASES)
def test_empirical_convergence_order(name, which, problem):
    tab = TABLEAUS[name]
    if which == "b":
        weights, order, grid = tab.b, tab.order, STEPS_B
    else:
        weights, order, grid = _b_hat(tab), tab.error_order, STEPS_B_HAT
    steps = grid.get(name, grid["default"])
    slope, errors = _empirical_order(tab, weights, problem, steps)
    # The errors measure truncation, not round-off or rounded coefficients.
    assert errors.min() > 10.0 ** (-WORKING_DIGITS + 10)
    assert errors.min() > 10 * _consistency_defect(tab, weights)
    assert abs(slope - order) <= ORDER_TOLERANCE, (
        f"{name} ({which}) on {problem}: empirical order {slope:.2f}, "
        f"expected {order}; errors {errors}"
    )


def test_convergence_check_can_fail():
    # Dormand-Prince's b_hat advances at order 4, not 5: the same check, run
    # on the wrong weights, must reject the claim.
    tab = TABLEAUS["dormand_prince_54"]
    slope, _ = _empirical_order(tab, _b_hat(tab), "decay", STEPS_B_HAT["default"])
    assert abs(slope - tab.error_order) <= ORDER_TOLERANCE
    assert abs(slope - tab.order) > ORDER_TOLERANCE
