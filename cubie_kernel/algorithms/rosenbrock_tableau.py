"""Rosenbrock (linearly implicit) methods as exact coefficient data.

A Rosenbrock method replaces the Newton iteration of an implicit
Runge-Kutta method by one linear solve per stage with the matrix
``W = I / (h gamma) - J`` (``J`` the Jacobian at the step's start), so a
step costs one Jacobian, one LU factorisation and ``s`` triangular solves,
and is exact for linear problems whatever the step. The step engine
(:mod:`cubie_kernel.algorithms.rosenbrock_step`) reads a
:class:`RosenbrockTableau` at build time, like the explicit engine reads a
:class:`~cubie_kernel.algorithms.tableau.ButcherTableau`.

Stored form (Hairer & Wanner, Solving ODEs II, Sect. IV.7, eq. (7.25))
--------------------------------------------------------------------
The stages ``u_i`` (already multiplied by ``h``) solve::

    (I / (h gamma) - J) u_i = f(t + c_i h, y + sum_{j<i} a_ij u_j)
                              + sum_{j<i} (C_ij / h) u_j + d_i h df/dt

and the step is ``y + sum_i m_i u_i``; the error estimate is
``sum_i e_i u_i`` with ``e = m - m_hat``. This transformed form needs no
matrix-vector product with ``J`` per stage. The original form of a method
(``alpha``, ``Gamma`` with ``gamma`` on its diagonal, weights ``b``) is
related by ``a = alpha Gamma^-1``, ``C = diag(1 / gamma) - Gamma^-1``,
``m = b Gamma^-1`` and ``d_i = sum_j Gamma_ij``; :meth:`original_form`
recovers it exactly (rational arithmetic on the published digits) so the
tableau can check the order conditions, which are stated in it.

Continuous extension: ``y(t + theta h) = y + sum_i p_i(theta) u_i`` with
``p_i(theta) = sum_q dense[i][q] theta**(q+1)`` and ``p_i(1) = m_i``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import attrs

from cubie_kernel.algorithms.tableau import (
    ALGEBRA_TOLERANCE,
    _optional_row,
    _optional_rows,
    _row,
    _rows,
    _to_fraction,
    check_tableau,
    condition_problems,
    dense_shape_problems,
    dense_sum_problems,
    length_problems,
    ragged_problems,
    row_sum_problems,
)


def _matrix(rows: Sequence[Sequence[Fraction]], s: int, diagonal: Fraction | None = None):
    """Full ``s x s`` lists from ragged strictly-lower rows (optional diagonal)."""
    out = [[Fraction(0)] * s for _ in range(s)]
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            out[i][j] = v
        if diagonal is not None:
            out[i][i] = diagonal
    return out


def _lower_inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Inverse of a lower-triangular matrix, exactly (forward substitution)."""
    s = len(matrix)
    inverse = [[Fraction(0)] * s for _ in range(s)]
    for col in range(s):
        for i in range(col, s):
            total = Fraction(int(i == col))
            for k in range(col, i):
                total -= matrix[i][k] * inverse[k][col]
            inverse[i][col] = total / matrix[i][i]
    return inverse


def _row_times(vector: Sequence[Fraction], matrix: list[list[Fraction]]) -> list[Fraction]:
    s = len(vector)
    return [sum((vector[i] * matrix[i][j] for i in range(s)), Fraction(0)) for j in range(s)]


def _times(left: list[list[Fraction]], right: list[list[Fraction]]) -> list[list[Fraction]]:
    s = len(left)
    return [[sum((left[i][k] * right[k][j] for k in range(s)), Fraction(0)) for j in range(s)]
            for i in range(s)]


def order_conditions(b: Sequence[Fraction], alpha: list[list[Fraction]],
                     beta: list[list[Fraction]], gamma: Fraction, order: int
                     ) -> list[tuple[str, Fraction, Fraction]]:
    """The Rosenbrock order conditions up to ``min(order, 4)``, evaluated.

    Hairer & Wanner II, Table IV.7.1 (exact Jacobian), with ``alpha`` the
    strictly lower stage coefficients and ``beta = alpha + Gamma`` below
    the diagonal (``beta_i = sum_{j<i} beta_ij``, ``alpha_i = sum_j
    alpha_ij``). Returns ``(condition, value, required)`` triples.
    """
    s = len(b)
    a_sum = [sum(alpha[i], Fraction(0)) for i in range(s)]
    b_sum = [sum(beta[i][:i], Fraction(0)) for i in range(s)]

    def lower(matrix, vector):  # sum_{k<i} matrix_ik vector_k
        return [sum((matrix[i][k] * vector[k] for k in range(i)), Fraction(0)) for i in range(s)]

    def weighted(vector):
        return sum((b[i] * vector[i] for i in range(s)), Fraction(0))

    g = gamma
    conditions = [("sum b_i = 1", weighted([Fraction(1)] * s), Fraction(1))]
    if order >= 2:
        conditions.append(("sum b_i beta_i = 1/2 - gamma", weighted(b_sum), Fraction(1, 2) - g))
    if order >= 3:
        conditions.append(("sum b_i alpha_i^2 = 1/3", weighted([x * x for x in a_sum]),
                           Fraction(1, 3)))
        conditions.append(("sum b_i beta_ik beta_k = 1/6 - gamma + gamma^2",
                           weighted(lower(beta, b_sum)), Fraction(1, 6) - g + g * g))
    if order >= 4:
        conditions.append(("sum b_i alpha_i^3 = 1/4", weighted([x ** 3 for x in a_sum]),
                           Fraction(1, 4)))
        inner = lower(alpha, b_sum)
        conditions.append(("sum b_i alpha_i alpha_ik beta_k = 1/8 - gamma/3",
                           weighted([a_sum[i] * inner[i] for i in range(s)]),
                           Fraction(1, 8) - g / 3))
        conditions.append(("sum b_i beta_ik alpha_k^2 = 1/12 - gamma/3",
                           weighted(lower(beta, [x * x for x in a_sum])),
                           Fraction(1, 12) - g / 3))
        conditions.append(("sum b_i beta_ik beta_kl beta_l = 1/24 - gamma/2 + 3gamma^2/2 - "
                           "gamma^3", weighted(lower(beta, lower(beta, b_sum))),
                           Fraction(1, 24) - g / 2 + 3 * g * g / 2 - g ** 3))
    return conditions


@attrs.frozen
class RosenbrockTableau:
    """A Rosenbrock method in the transformed form (see the module docstring).

    Parameters
    ----------
    name
        Canonical method name, e.g. ``"rodas4"``.
    gamma
        The diagonal coefficient.
    a
        Stage-input coefficients, strictly lower ragged rows (``a[i]`` has
        ``i`` entries).
    C
        Stage-coupling coefficients, same shape as ``a``.
    c
        Stage times (fractions of the step), one per stage.
    d
        Time-derivative coefficients, one per stage (``sum_j Gamma_ij``).
    m
        Solution weights.
    m_error
        ``m - m_hat``: error weights (None: no estimate).
    order, embedded_order
        Orders of the solution ``m`` and of the embedded one ``m_hat``
        (exact Jacobian); :attr:`error_order` is the lower of the two.
    dense, dense_order
        Continuous-extension rows (see the module docstring) and their order.
    stiffly_accurate
        Claimed: the solution is the last stage's input plus its increment
        (``m_j = a_sj``, ``m_s = 1``), so ``y_n+1`` satisfies algebraic
        limits exactly. Checked.
    description
        Reference and properties, for docs.

    Every tableau checks at construction: shapes, ``c_i = sum_j alpha_ij``
    and ``d_i = sum_j Gamma_ij`` (against the recovered original form), the
    order conditions of ``m`` up to ``min(order, 4)`` and of ``m_hat`` up to
    ``min(embedded_order, 4)``, the dense rows (``p_i(1) = m_i``) and stiff
    accuracy where claimed, each to :data:`ALGEBRA_TOLERANCE` (published
    decimals are exact to their last digit only).
    """

    name: str
    gamma: Fraction = attrs.field(converter=_to_fraction)
    a: tuple = attrs.field(converter=_rows)
    C: tuple = attrs.field(converter=_rows)
    c: tuple = attrs.field(converter=_row)
    d: tuple = attrs.field(converter=_row)
    m: tuple = attrs.field(converter=_row)
    order: int
    m_error: tuple | None = attrs.field(default=None, converter=_optional_row)
    embedded_order: int | None = None
    dense: tuple | None = attrs.field(default=None, converter=_optional_rows)
    dense_order: int | None = None
    stiffly_accurate: bool = False
    description: str = ""

    def __attrs_post_init__(self):
        check_tableau(self)

    # ------------------------------------------------------------------ checks
    def _shape_problems(self) -> list[str]:
        s = len(self.m)
        problems = ragged_problems("a", self.a, s) + ragged_problems("C", self.C, s)
        problems += length_problems("m", s, c=self.c, d=self.d, m_error=self.m_error)
        if self.gamma <= 0:
            problems.append(f"gamma must be > 0, got {float(self.gamma)}")
        if (self.m_error is None) != (self.embedded_order is None):
            problems.append("m_error and embedded_order go together")
        problems += dense_shape_problems(self.dense, s)
        if self.dense is not None and self.dense_order is None:
            problems.append("dense given without dense_order")
        return problems

    def _algebra_problems(self) -> list[str]:
        s, tol = self.n_stages, ALGEBRA_TOLERANCE
        alpha, Gamma, b, b_hat = self.original_form()
        problems = row_sum_problems("alpha", alpha, "c", self.c)
        problems += row_sum_problems("Gamma", Gamma, "d", self.d)
        beta = [[alpha[i][j] + Gamma[i][j] for j in range(s)] for i in range(s)]
        checks = [("m", b, self.order)]
        if b_hat is not None:
            checks.append(("m_hat", b_hat, self.embedded_order))
        for label, weights, order in checks:
            problems += condition_problems(
                label, order_conditions(weights, alpha, beta, self.gamma, min(order, 4)))
        if self.dense is not None:
            problems += dense_sum_problems(self.dense, "m", self.m)
        if self.stiffly_accurate:
            last = self.a[s - 1]
            if abs(self.m[s - 1] - 1) > tol or any(
                    abs(last[j] - self.m[j]) > tol for j in range(s - 1)):
                problems.append("claimed stiffly accurate, but m is not the last stage's "
                                "input plus its increment (m_j = a_sj, m_s = 1)")
        return problems

    # --------------------------------------------------------------- derived
    def original_form(self):
        """``(alpha, Gamma, b, b_hat)`` as exact full matrices and rows.

        ``Gamma = (diag(1/gamma) - C)^-1``, ``alpha = a Gamma``, ``b = m
        Gamma``, ``b_hat = (m - m_error) Gamma`` (None without an estimate).
        """
        s = self.n_stages
        inverse = _matrix([[-v for v in row] for row in self.C], s, 1 / self.gamma)
        Gamma = _lower_inverse(inverse)
        alpha = _times(_matrix(self.a, s), Gamma)
        b = _row_times(list(self.m), Gamma)
        b_hat = None
        if self.m_error is not None:
            b_hat = _row_times([m - e for m, e in zip(self.m, self.m_error)], Gamma)
        return alpha, Gamma, b, b_hat

    @property
    def n_stages(self) -> int:
        return len(self.m)

    @property
    def adaptive(self) -> bool:
        return self.m_error is not None

    @property
    def error_order(self) -> int | None:
        """Order of the pair's lower-order solution (the controller's exponent)."""
        if self.embedded_order is None:
            return None
        return min(self.order, self.embedded_order)

    @property
    def fsal(self) -> bool:
        """Rosenbrock stages are never reused by the next step."""
        return False

    @property
    def non_autonomous_terms(self) -> bool:
        """Some stage needs ``df/dt`` (a nonzero ``d_i``)."""
        return any(v != 0 for v in self.d)

    @property
    def interpolation_order(self) -> int:
        """Order of the continuous extension (0 without one)."""
        return self.dense_order if self.dense is not None else 0

    @property
    def dense_output(self) -> bool:
        """Saves may come from the continuous extension (adaptive, and an
        interpolant at least as accurate as the error it controls); else the
        steps land on save times."""
        return self.adaptive and self.interpolation_order >= self.error_order


def from_original_form(name: str, gamma, alpha, Gamma, b, b_hat=None, dense=None,
                       **fields) -> RosenbrockTableau:
    """A :class:`RosenbrockTableau` from a method published in the original form.

    ``alpha`` and ``Gamma`` are strictly lower ragged rows (``Gamma``'s
    diagonal is ``gamma``); ``b`` and ``b_hat`` the weights; ``dense`` the
    interpolant's rows for the original stages ``K_j`` (``y(theta) = y +
    sum_j P_j(theta) K_j``). Coefficients as for tableaus (ints, Fractions,
    decimal strings); the transformation (``K = Gamma^-1 u``) is exact.
    ``fields`` go to the tableau (``order``, ``embedded_order``, ...).
    """
    gamma = _to_fraction(gamma)
    s = len(b)
    G = _matrix(_rows(Gamma), s, gamma)
    inverse = _lower_inverse(G)
    A = _times(_matrix(_rows(alpha), s), inverse)
    C = [[(Fraction(int(i == j)) / gamma - inverse[i][j]) for j in range(i)] for i in range(s)]
    m = _row_times(list(_row(b)), inverse)
    m_error = None
    if b_hat is not None:
        m_hat = _row_times(list(_row(b_hat)), inverse)
        m_error = [x - y for x, y in zip(m, m_hat)]
    if dense is not None:
        rows = _rows(dense)
        dense = [[sum((rows[j][q] * inverse[j][i] for j in range(s)), Fraction(0))
                  for q in range(len(rows[0]))] for i in range(s)]
    c = [sum(row, Fraction(0)) for row in _rows(alpha)]
    d = [sum(G[i], Fraction(0)) for i in range(s)]
    return RosenbrockTableau(name=name, gamma=gamma, a=[A[i][:i] for i in range(s)], C=C,
                             c=c, d=d, m=m, m_error=m_error, dense=dense, **fields)
