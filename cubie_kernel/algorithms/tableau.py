"""Butcher tableaus for explicit Runge-Kutta methods, stored as exact data.

A method is data, not code: the explicit Runge-Kutta step engine
(:mod:`cubie_kernel.algorithms.erk_step`) reads a :class:`ButcherTableau`
at build time and turns it into precision-cast closure constants. Adding a
method means adding a tableau module under ``tableaus/``.

Layout of a tableau with ``s`` stages::

    c_0 |
    c_1 | a_10
    c_2 | a_20  a_21
    ... | ...
    ----+----------------------
        | b_0   b_1  ...  b_s-1      (solution weights, order ``order``)
        | e_0   e_1  ...  e_s-1      (error weights b - b_hat, sum to 0)

``a`` holds the strictly lower triangle as ragged rows (row ``i`` has ``i``
entries), ``b_error`` holds ``b - b_hat`` directly, so the local error
estimate is the single weighted sum ``dt * sum_i b_error[i] * k_i``.

Continuous extension (dense output)
-----------------------------------
Between the ends of a step, ``y(t_n + theta h) = y_n + h sum_i b_i(theta)
k_i`` with weight polynomials ``b_i(theta) = sum_q dense[i][q] theta**(q+1)``
(``b_i(1) = b_i``). A tableau may carry its published ``dense`` rows
(Dormand-Prince, Tsitouras); every other one gets the cubic Hermite
interpolant of the step's ends (:meth:`ButcherTableau.interpolant`), which
needs ``f(t_n+1, y_n+1)``: the last stage of an FSAL tableau, one more
evaluation otherwise.

Every tableau family (this one, :mod:`~cubie_kernel.algorithms.rosenbrock_tableau`,
:mod:`~cubie_kernel.algorithms.dirk_tableau`) stores its coefficients with the
converters here and checks itself at construction with the shared checks
below (:func:`check_tableau`): shapes first, then the algebra, and a
ValueError that names every problem and the field it is about.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import attrs
import numpy as np

#: Absolute tolerance for the algebraic checks of tableaus whose
#: coefficients are published as decimals rather than exact rationals.
ALGEBRA_TOLERANCE = Fraction(1, 10**12)


def _to_fraction(value) -> Fraction:
    """Convert an int, Fraction, or decimal string to an exact Fraction.

    Floats are rejected: a float literal has already lost the published
    digits, so tableaus spell decimals as strings (``"0.161"``).
    """
    if isinstance(value, bool):
        raise TypeError(f"tableau coefficient must be a number, got {value!r}")
    if isinstance(value, (int, Fraction)):
        return Fraction(value)
    if isinstance(value, str):
        return Fraction(value)
    raise TypeError(
        f"tableau coefficient {value!r} must be an int, a Fraction or a "
        "decimal string (floats lose the published digits)"
    )


def _row(values: Sequence) -> tuple[Fraction, ...]:
    return tuple(_to_fraction(v) for v in values)


def _rows(rows: Sequence[Sequence]) -> tuple[tuple[Fraction, ...], ...]:
    return tuple(_row(r) for r in rows)


def _optional_row(values):
    return None if values is None else _row(values)


def _optional_rows(values):
    return None if values is None else _rows(values)


# ------------------------------------------ checks shared by every tableau family
# Each returns a list of problems, each naming the field it is about; a
# tableau collects them in ``_shape_problems`` (checked first) and
# ``_algebra_problems`` (checked once the shapes are right), and its
# ``__attrs_post_init__`` is :func:`check_tableau`.


def check_tableau(tableau) -> None:
    """Raise ValueError naming every problem of ``tableau``: its shapes, then
    (when the shapes are right) its algebra."""
    problems = tableau._shape_problems()
    if not problems:
        problems = tableau._algebra_problems()
    if problems:
        raise ValueError(f"tableau {tableau.name!r}: " + "; ".join(problems))


def ragged_problems(label: str, rows, s: int, diagonal: bool = False) -> list[str]:
    """``rows`` must be ``s`` rows of a lower triangle: row ``i`` has ``i``
    entries (strictly lower), or ``i + 1`` with the diagonal."""
    problems = []
    if len(rows) != s:
        problems.append(f"{label} has {len(rows)} rows but the method has {s} stages")
    for i, row in enumerate(rows):
        expected = i + 1 if diagonal else i
        if len(row) != expected:
            problems.append(f"{label}[{i}] has {len(row)} entries, expected {expected}"
                            + (" (the lower triangle with the diagonal)" if diagonal else ""))
    return problems


def length_problems(weights: str, s: int, **rows) -> list[str]:
    """Each of ``rows`` (None: absent) must have ``s`` entries, one per stage,
    like the weights named ``weights``."""
    return [f"len({label})={len(row)} but len({weights})={s}"
            for label, row in rows.items() if row is not None and len(row) != s]


def row_sum_problems(label: str, rows, target: str, values) -> list[str]:
    """Row ``i`` of ``rows`` must sum to ``values[i]`` (``c_i = sum_j a_ij``)."""
    return [f"row {i} of {label} sums to {float(sum(row))}, {target}[{i}] = {float(values[i])}"
            for i, row in enumerate(rows)
            if abs(sum(row, Fraction(0)) - values[i]) > ALGEBRA_TOLERANCE]


def dense_shape_problems(dense, s: int) -> list[str]:
    """Continuous-extension rows (None: absent) must be ``s`` rows of one length."""
    if dense is None or (len(dense) == s and len({len(row) for row in dense}) == 1):
        return []
    return [f"dense needs {s} rows of equal length (one per stage)"]


def dense_sum_problems(dense, label: str, weights) -> list[str]:
    """Dense row ``i`` must sum to the weight ``weights[i]`` (the interpolant
    ends at the solution)."""
    return [f"dense row {i} sums to {float(sum(row))} but {label}[{i}] = {float(weights[i])} "
            "(the interpolant must end at the solution)"
            for i, row in enumerate(dense)
            if abs(sum(row, Fraction(0)) - weights[i]) > ALGEBRA_TOLERANCE]


def condition_problems(label: str, conditions) -> list[str]:
    """The failed ones of ``(condition, value, required)`` triples for the weights ``label``."""
    return [f"order condition of {label} fails: {text} "
            f"(got {float(value)!r}, need {float(required)!r})"
            for text, value, required in conditions if abs(value - required) > ALGEBRA_TOLERANCE]


@attrs.frozen
class CastTableau:
    """A tableau's coefficients as plain floats of one precision.

    The fields are homogeneous tuples so numba can index them with a loop
    variable on every target. ``a`` is the full ``s x s`` matrix flattened
    row-major (zeros above and on the diagonal).
    """

    n_stages: int
    a: tuple
    b: tuple
    c: tuple
    b_error: tuple
    fsal: bool
    adaptive: bool


@attrs.frozen
class ButcherTableau:
    """An explicit Runge-Kutta method as exact coefficients.

    Parameters
    ----------
    name
        Canonical method name, e.g. ``"dormand_prince_54"``.
    a
        Strictly lower triangle as ragged rows: ``a[i]`` has ``i`` entries.
    b
        Solution weights, one per stage.
    c
        Stage nodes, one per stage; ``c[0]`` is 0 for explicit methods.
    order
        Order of the solution advanced by ``b``.
    b_error
        Error weights ``b - b_hat`` (sum to zero), or None for a method
        without an embedded estimate.
    error_order
        Order of the embedded solution ``b_hat`` (None without one).
    description
        Free text for docs: reference, properties.

    Derived, never typed: ``n_stages``, ``fsal`` (first same as last: the
    last stage is evaluated at the new solution, so it can be reused as the
    next step's first stage), ``adaptive``.
    """

    name: str
    a: tuple = attrs.field(converter=_rows)
    b: tuple = attrs.field(converter=_row)
    c: tuple = attrs.field(converter=_row)
    order: int
    b_error: tuple | None = attrs.field(default=None, converter=_optional_row)
    error_order: int | None = None
    description: str = ""
    dense: tuple | None = attrs.field(default=None, converter=_optional_rows)
    dense_order: int | None = None

    def __attrs_post_init__(self):
        check_tableau(self)

    # ------------------------------------------------------------------ checks
    def _shape_problems(self) -> list[str]:
        s = len(self.b)
        return length_problems("b", s, c=self.c) + ragged_problems("a", self.a, s)

    def _algebra_problems(self) -> list[str]:
        s = len(self.b)
        problems = []
        if self.c[0] != 0:
            problems.append(f"c[0] = {self.c[0]} but an explicit method needs 0")
        problems += row_sum_problems("a", self.a, "c", self.c)
        if abs(sum(self.b, Fraction(0)) - 1) > ALGEBRA_TOLERANCE:
            problems.append(f"b sums to {float(sum(self.b))}, expected 1")
        if self.b_error is not None:
            lengths = length_problems("b", s, b_error=self.b_error)
            problems += lengths
            if not lengths and abs(sum(self.b_error, Fraction(0))) > ALGEBRA_TOLERANCE:
                problems.append(f"b_error sums to {float(sum(self.b_error))}, expected 0")
            if self.error_order is None:
                problems.append("b_error given without error_order")
        elif self.error_order is not None:
            problems.append("error_order given without b_error")
        if self.dense is not None:
            problems += (dense_shape_problems(self.dense, s)
                         or dense_sum_problems(self.dense, "b", self.b))
            if self.dense_order is None:
                problems.append("dense given without dense_order")
        return problems

    def interpolant(self) -> tuple[tuple[tuple[Fraction, ...], ...], bool]:
        """Weight polynomials of the step's continuous extension.

        Returns ``(rows, end_derivative)``: ``rows[i][q]`` is the coefficient
        of ``theta**(q+1)`` in ``b_i(theta)`` for every stage ``i``; when
        ``end_derivative`` is True there is one more row, for ``f(t_n+1,
        y_n+1)`` (evaluated after the step). The published rows when the
        tableau has them, else the cubic Hermite interpolant of ``(y_n,
        f_n)`` and ``(y_n+1, f_n+1)``::

            b_i(theta) = d_i0 theta + (3 b_i - 2 d_i0 - d_iL) theta**2
                         + (d_i0 + d_iL - 2 b_i) theta**3

        with ``L`` the last stage of an FSAL tableau (else the extra row).
        """
        if self.dense is not None:
            return self.dense, False
        s = self.n_stages
        last = s - 1 if self.fsal else s
        rows = []
        for i in range(s + (0 if self.fsal else 1)):
            b = self.b[i] if i < s else Fraction(0)
            first, end = Fraction(int(i == 0)), Fraction(int(i == last))
            rows.append((first, 3 * b - 2 * first - end, first + end - 2 * b))
        return tuple(rows), not self.fsal

    @property
    def interpolation_order(self) -> int:
        """Order of the continuous extension (3 for the Hermite fallback)."""
        return self.dense_order if self.dense is not None else min(3, self.order)

    @property
    def dense_output(self) -> bool:
        """Saves may come from the continuous extension: an adaptive method whose
        interpolant is at least as accurate as the error it controls (order >=
        the embedded order). Others (Cash-Karp and Verner 6(5) with the Hermite
        fallback) land their steps on save times instead."""
        return self.adaptive and self.interpolation_order >= self.error_order

    @property
    def n_stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def fsal(self) -> bool:
        """True when the last stage is evaluated at the step's solution."""
        s = self.n_stages
        if s < 2 or self.c[-1] != 1:
            return False
        return all(
            abs(self.a[s - 1][j] - self.b[j]) <= ALGEBRA_TOLERANCE for j in range(s - 1)
        ) and self.b[-1] == 0

    def a_matrix(self) -> np.ndarray:
        """The full ``s x s`` coefficient matrix as float64."""
        s = self.n_stages
        out = np.zeros((s, s))
        for i, row in enumerate(self.a):
            out[i, : len(row)] = [float(v) for v in row]
        return out

    def rounding_defect(self, precision) -> float:
        """How far the coefficients rounded to ``precision`` break the algebra, in eps.

        The largest change, from exact to rounded coefficients, of the row
        sums ``sum_j a_ij``, of ``sum b``, ``sum b_i c_i`` and ``sum e``
        (computed exactly on the rounded values), divided by the
        precision's machine epsilon. Below 4 for most tableaus; ~90 for
        Verner 6(5), whose large coefficients of both signs cancel.
        """
        dtype = np.dtype(precision).type
        eps = Fraction(float(np.finfo(dtype).eps))

        def rounded(values):
            return [Fraction(float(dtype(float(v)))) for v in values]

        def weighted(weights, nodes):
            return sum((w * x for w, x in zip(weights, nodes)), Fraction(0))

        b, c = list(self.b), list(self.c)
        rb, rc = rounded(b), rounded(c)
        defects = [abs(sum(rounded(row), Fraction(0)) - sum(row, Fraction(0))) for row in self.a]
        defects.append(abs(sum(rb, Fraction(0)) - sum(b, Fraction(0))))
        defects.append(abs(weighted(rb, rc) - weighted(b, c)))
        if self.b_error is not None:
            defects.append(abs(sum(rounded(self.b_error), Fraction(0)) - sum(self.b_error)))
        return float(max(defects) / eps)

    def cast(self, precision) -> CastTableau:
        """Coefficients rounded once to ``precision`` (numpy float type)."""
        dtype = np.dtype(precision).type
        s = self.n_stages
        flat_a = tuple(dtype(v) for v in self.a_matrix().ravel())
        b_error = self.b_error if self.b_error is not None else (0,) * s
        return CastTableau(
            n_stages=s,
            a=flat_a,
            b=tuple(dtype(float(v)) for v in self.b),
            c=tuple(dtype(float(v)) for v in self.c),
            b_error=tuple(dtype(float(v)) for v in b_error),
            fsal=self.fsal,
            adaptive=self.adaptive,
        )


def polynomial(scale, *factors: Sequence) -> tuple[Fraction, ...]:
    """Coefficients of ``theta**1, theta**2, ...`` of ``scale * prod(factors)``.

    Each factor is a polynomial in ``theta`` as its coefficients from the
    constant term up (``[-1, 1]`` is ``theta - 1``); values as for tableau
    coefficients (ints, Fractions, decimal strings). For interpolants
    published in factored form; the constant term of the product must be 0
    (every weight polynomial vanishes at ``theta = 0``).
    """
    product = [_to_fraction(scale)]
    for factor in factors:
        factor = _row(factor)
        out = [Fraction(0)] * (len(product) + len(factor) - 1)
        for i, p in enumerate(product):
            for k, f in enumerate(factor):
                out[i + k] += p * f
        product = out
    if product[0] != 0:
        raise ValueError("a weight polynomial must vanish at theta = 0")
    return tuple(product[1:])
