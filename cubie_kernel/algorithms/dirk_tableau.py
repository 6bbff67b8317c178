"""Diagonally implicit Runge-Kutta methods (SDIRK, ESDIRK) as exact data.

A diagonally implicit method has a lower-triangular coefficient matrix
``A`` whose diagonal is one value ``gamma`` (singly diagonally implicit),
except that an ESDIRK method's first stage is explicit (``a_00 = 0``)::

    c_0 | a_00
    c_1 | a_10  gamma
    c_2 | a_20  a_21  gamma
    ... | ...
    ----+--------------------------
        | b_0   b_1   ...  b_s-1      (solution weights, order ``order``)
        | e_0   e_1   ...  e_s-1      (error weights b - b_hat)

Every implicit stage solves ``z_i = y + h sum_{k<i} a_ik f_k + h gamma
f(t + c_i h, z_i)``, so a step needs one matrix ``I - h gamma J`` for all
its stages. The step engine (:mod:`cubie_kernel.algorithms.dirk_step`)
reads a :class:`DIRKTableau` at build time, like the explicit engine reads
a :class:`~cubie_kernel.algorithms.tableau.ButcherTableau`.

``a`` holds the lower triangle INCLUDING the diagonal as ragged rows (row
``i`` has ``i + 1`` entries). A method is stiffly accurate when ``b`` is
the last row of ``A`` (the solution is the last stage value, so it damps
stiff components like the stage equations do and satisfies algebraic
limits exactly).

Order conditions
----------------
For a full coefficient matrix ``A`` (diagonal included) and weights ``w``
the order conditions are the rooted-tree conditions ``Phi(t) = 1 /
gamma(t)`` (Butcher, *Numerical Methods for ODEs*, Sect. 3; Hairer,
Norsett & Wanner I, Sect. II.2), with ``c = A 1`` and products and powers
of vectors taken elementwise. :func:`order_conditions` spells the 17
conditions up to order 5 out one by one, so a failing one is named.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import attrs

from cubie_kernel.algorithms.tableau import (
    ALGEBRA_TOLERANCE,
    _optional_row,
    _row,
    _rows,
    check_tableau,
    condition_problems,
    length_problems,
    ragged_problems,
    row_sum_problems,
)

#: The highest order whose conditions :func:`order_conditions` knows.
MAX_CHECKED_ORDER = 5

#: Order of the cubic Hermite interpolant of a step's ends.
HERMITE_ORDER = 3


def _dot(weights: Sequence[Fraction], vector: Sequence[Fraction]) -> Fraction:
    return sum((w * v for w, v in zip(weights, vector)), Fraction(0))


def _times(u: Sequence[Fraction], v: Sequence[Fraction]) -> list[Fraction]:
    return [x * y for x, y in zip(u, v)]


def _power(u: Sequence[Fraction], k: int) -> list[Fraction]:
    return [x ** k for x in u]


def order_conditions(weights: Sequence[Fraction], a: Sequence[Sequence[Fraction]],
                     order: int) -> list[tuple[str, Fraction, Fraction]]:
    """The Runge-Kutta order conditions up to ``order`` (at most 5), evaluated.

    Parameters
    ----------
    weights
        The weights ``w`` (``b`` or ``b_hat``).
    a
        Lower-triangular rows of ``A`` including the diagonal (row ``i``
        has ``i + 1`` entries); entries beyond a row are zero.
    order
        Conditions of every order ``<= order`` are returned.

    Returns
    -------
    list of (str, Fraction, Fraction)
        ``(condition, value, required)`` for each condition: the tree's
        elementary weight ``w . g(t)`` and ``1 / gamma(t)``.
    """
    if order > MAX_CHECKED_ORDER:
        raise ValueError(f"order conditions are known here up to order {MAX_CHECKED_ORDER}, "
                         f"not {order}")
    s = len(weights)

    def times_a(vector):  # (A v)_i = sum_{k<=i} a_ik v_k
        return [sum((a[i][k] * vector[k] for k in range(len(a[i]))), Fraction(0))
                for i in range(s)]

    ones = [Fraction(1)] * s
    c = times_a(ones)
    ac = times_a(c)
    conditions = [("sum w_i = 1", _dot(weights, ones), Fraction(1))]
    if order >= 2:
        conditions.append(("sum w_i c_i = 1/2", _dot(weights, c), Fraction(1, 2)))
    if order >= 3:
        conditions += [
            ("sum w_i c_i^2 = 1/3", _dot(weights, _power(c, 2)), Fraction(1, 3)),
            ("sum w_i (A c)_i = 1/6", _dot(weights, ac), Fraction(1, 6)),
        ]
    if order >= 4:
        ac2 = times_a(_power(c, 2))
        aac = times_a(ac)
        conditions += [
            ("sum w_i c_i^3 = 1/4", _dot(weights, _power(c, 3)), Fraction(1, 4)),
            ("sum w_i c_i (A c)_i = 1/8", _dot(weights, _times(c, ac)), Fraction(1, 8)),
            ("sum w_i (A c^2)_i = 1/12", _dot(weights, ac2), Fraction(1, 12)),
            ("sum w_i (A A c)_i = 1/24", _dot(weights, aac), Fraction(1, 24)),
        ]
    if order >= 5:
        conditions += [
            ("sum w_i c_i^4 = 1/5", _dot(weights, _power(c, 4)), Fraction(1, 5)),
            ("sum w_i c_i^2 (A c)_i = 1/10", _dot(weights, _times(_power(c, 2), ac)),
             Fraction(1, 10)),
            ("sum w_i c_i (A c^2)_i = 1/15", _dot(weights, _times(c, ac2)), Fraction(1, 15)),
            ("sum w_i c_i (A A c)_i = 1/30", _dot(weights, _times(c, aac)), Fraction(1, 30)),
            ("sum w_i (A c)_i^2 = 1/20", _dot(weights, _power(ac, 2)), Fraction(1, 20)),
            ("sum w_i (A c^3)_i = 1/20", _dot(weights, times_a(_power(c, 3))),
             Fraction(1, 20)),
            ("sum w_i (A (c A c))_i = 1/40", _dot(weights, times_a(_times(c, ac))),
             Fraction(1, 40)),
            ("sum w_i (A A c^2)_i = 1/60", _dot(weights, times_a(ac2)), Fraction(1, 60)),
            ("sum w_i (A A A c)_i = 1/120", _dot(weights, times_a(aac)), Fraction(1, 120)),
        ]
    return conditions


@attrs.frozen
class DIRKTableau:
    """A diagonally implicit Runge-Kutta method as exact coefficients.

    Parameters
    ----------
    name
        Canonical method name, e.g. ``"kvaerno5"``.
    a
        Lower triangle of ``A`` INCLUDING the diagonal, as ragged rows
        (``a[i]`` has ``i + 1`` entries). The diagonal is ``gamma`` in
        every row but the first, which is ``gamma`` (SDIRK) or 0 (ESDIRK:
        an explicit first stage).
    b
        Solution weights, one per stage.
    c
        Stage nodes, one per stage (row sums of ``A``).
    order
        Order of the solution advanced by ``b`` (at most 5).
    b_error
        Error weights ``b - b_hat`` (None: no embedded estimate).
    embedded_order
        Order of ``b_hat`` (at most 5); given with ``b_error``.
    stiffly_accurate
        Claimed: ``b`` is the last row of ``A``. Checked.
    description
        Reference and properties, for docs.

    Every tableau checks at construction: shapes and the diagonal, ``c_i =
    sum_j a_ij``, the order conditions of ``b`` up to ``order`` and of
    ``b_hat`` up to ``embedded_order`` (:func:`order_conditions`) and stiff
    accuracy where claimed, each to :data:`ALGEBRA_TOLERANCE` (published
    decimals are exact to their last digit only). A failing check raises
    ValueError naming it.
    """

    name: str
    a: tuple = attrs.field(converter=_rows)
    b: tuple = attrs.field(converter=_row)
    c: tuple = attrs.field(converter=_row)
    order: int
    b_error: tuple | None = attrs.field(default=None, converter=_optional_row)
    embedded_order: int | None = None
    stiffly_accurate: bool = False
    description: str = ""

    def __attrs_post_init__(self):
        check_tableau(self)

    # ------------------------------------------------------------------ checks
    def _shape_problems(self) -> list[str]:
        s = len(self.b)
        problems = []
        if s < 1:
            problems.append("a method needs at least one stage")
        problems += ragged_problems("a", self.a, s, diagonal=True)
        problems += length_problems("b", s, c=self.c, b_error=self.b_error)
        if (self.b_error is None) != (self.embedded_order is None):
            problems.append("b_error and embedded_order go together")
        for label, order in (("order", self.order), ("embedded_order", self.embedded_order)):
            if order is not None and not 1 <= order <= MAX_CHECKED_ORDER:
                problems.append(f"{label} must be 1..{MAX_CHECKED_ORDER} (the orders whose "
                                f"conditions are checked), got {order}")
        if problems:
            return problems
        gamma = self.a[-1][-1]
        if gamma <= 0:
            problems.append(f"the diagonal gamma must be > 0, got {float(gamma)}")
        for i in range(1, s):
            if self.a[i][i] != gamma:
                problems.append(f"a[{i}][{i}] = {float(self.a[i][i])} but the diagonal is "
                                f"gamma = {float(gamma)} (singly diagonally implicit)")
        if self.a[0][0] not in (0, gamma):
            problems.append(f"a[0][0] = {float(self.a[0][0])} must be 0 (explicit first "
                            f"stage) or gamma = {float(gamma)}")
        return problems

    def _algebra_problems(self) -> list[str]:
        problems = row_sum_problems("a", self.a, "c", self.c)
        checks = [("b", self.b, self.order)]
        if self.b_error is not None:
            checks.append(("b_hat", self.b_hat, self.embedded_order))
        for label, weights, order in checks:
            problems += condition_problems(label, order_conditions(weights, self.a, order))
        if self.stiffly_accurate:
            last = self.a[-1]
            if any(abs(last[j] - self.b[j]) > ALGEBRA_TOLERANCE for j in range(self.n_stages)):
                problems.append("claimed stiffly accurate, but b is not the last row of a")
        return problems

    # --------------------------------------------------------------- derived
    @property
    def n_stages(self) -> int:
        return len(self.b)

    @property
    def gamma(self) -> Fraction:
        """The diagonal coefficient of the implicit stages."""
        return self.a[-1][-1]

    @property
    def explicit_first_stage(self) -> bool:
        """ESDIRK: the first stage is ``f(t, y)`` (``a_00 = 0``)."""
        return self.a[0][0] == 0

    @property
    def b_hat(self) -> tuple | None:
        """The embedded weights ``b - b_error`` (None without an estimate)."""
        if self.b_error is None:
            return None
        return tuple(b - e for b, e in zip(self.b, self.b_error))

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def error_order(self) -> int | None:
        """Order of the pair's lower-order solution (the controller's exponent)."""
        if self.embedded_order is None:
            return None
        return min(self.order, self.embedded_order)

    @property
    def fsal(self) -> bool:
        """Always False: no stage is reused the way an explicit FSAL pair's is
        (the step keeps what it reuses in its own persistent buffer)."""
        return False

    @property
    def hermite_ready(self) -> bool:
        """The step's ends carry ``f(t_n, y_n)`` and ``f(t_n+1, y_n+1)`` as
        stages (explicit first stage, stiffly accurate, ``c_s = 1``), so the
        cubic Hermite interpolant costs no extra evaluation."""
        return self.explicit_first_stage and self.stiffly_accurate and self.c[-1] == 1

    @property
    def interpolation_order(self) -> int:
        """Order of the continuous extension (the cubic Hermite interpolant of
        the step's ends, as accurate as the solution at most); 0 without one."""
        return min(HERMITE_ORDER, self.order) if self.hermite_ready else 0

    @property
    def dense_output(self) -> bool:
        """Saves may come from the continuous extension: adaptive, and the
        interpolant at least as accurate as the error it controls (Kvaerno
        3(2), TR-BDF2); others (Kvaerno 5(4)) land their steps on save times."""
        return self.adaptive and self.interpolation_order >= self.error_order
