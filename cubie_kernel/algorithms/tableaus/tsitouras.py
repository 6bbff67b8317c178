"""Tsitouras 5(4) (Tsit5): Julia's default non-stiff method.

Properties
----------
- Order 5 (the fifth-order solution advances: local extrapolation),
  7 stages.
- Embedded order 4; ``b_error = b - b_hat``.
- FSAL: the seventh stage is evaluated at the new solution (``c_7 = 1`` and
  the last row of ``a`` equals ``b``), so a step costs six new evaluations.

Coefficients are the decimals published in the paper, spelled as strings so
they convert exactly to ``Fraction``. Three deliberate choices:

- The paper tabulates ``a_ij`` for ``j >= 2`` only; the first column follows
  from the row-sum condition, ``a_i1 = c_i - sum_{j>=2} a_ij``, and is
  derived here in exact arithmetic (so every row sums to ``c_i`` exactly).
- The last row of ``a`` is ``b`` (FSAL), as in the paper. The published
  ``b`` sums to 1 within 2e-16.
- The paper's last weight column (headed ``b_hat``) holds the differences
  ``b_i - b_hat_i`` for ``i <= 6``, but its seventh entry is ``b_hat_7 = 1/66``
  itself (``b_7 = 0``), so ``b_7 - b_hat_7 = -1/66``; only that sign makes
  the column sum to zero, and it is used here. Note the order conditions
  cannot tell ``b - b_hat`` from ``b_hat - b`` (both ``b -/+ b_error`` are of
  order 4, the conditions being affine in the weights); the sign convention
  follows the paper's positive ``b_hat_7``.

Dense output: the paper's order-4 continuous extension, published in
factored form (the decimals of the paper's interpolant, expanded exactly
into powers of theta by :func:`~cubie_kernel.algorithms.tableau.polynomial`).

Reference
---------
Ch. Tsitouras, "Runge-Kutta pairs of order 5(4) satisfying only the first
column simplifying assumption", Comput. Math. Appl. 62(2) (2011) 770-775.
doi:10.1016/j.camwa.2011.06.002
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.tableau import ButcherTableau, polynomial

_C = [
    "0",
    "0.161",
    "0.327",
    "0.9",
    "0.9800255409045097",
    "1",
    "1",
]

# Published a_ij for j >= 2 (row i lists a_i2 ... a_i,i-1).
_A_TAIL = [
    [],
    [],
    ["0.3354806554923570"],
    ["-6.359448489975075", "4.362295432869581"],
    ["-11.74888356406283", "7.495539342889836", "-0.09249506636175525"],
    [
        "-12.92096931784711",
        "8.159367898576159",
        "-0.07158497328140100",
        "-0.02826905039406838",
    ],
]

_B = [
    "0.09646076681806523",
    "0.01",
    "0.4798896504144996",
    "1.379008574103742",
    "-3.290069515436081",
    "2.324710524099774",
    "0",
]

# b - b_hat as tabulated (seventh entry with the sign that makes it sum to 0).
_B_ERROR = [
    "0.001780011052226",
    "0.000816434459657",
    "-0.007880878010262",
    "0.144711007173263",
    "-0.582357165452555",
    "0.458082105929187",
    F(-1, 66),
]


# b_i(theta) for the seven stages, each a scale times factors in theta.
_DENSE = [
    polynomial("-1.0530884977290216", [0, 1], ["-1.3299890189751412", 1],
               ["0.7139816917074209", "-1.4364028541716351", 1]),
    polynomial("0.1017", [0, 0, "1.2949852507374631", "-2.1966568338249754", 1]),
    polynomial("2.490627285651252793", [0, 0, "1.57803468208092486", "-2.38535645472061657", 1]),
    polynomial("-16.54810288924490272", ["-1.21712927295533244", 1],
               ["-0.61620406037800089", 1], [0, 0, 1]),
    polynomial("47.37952196281928122", ["-1.203071208372362603", 1],
               ["-0.658047292653547382", 1], [0, 0, 1]),
    polynomial("-34.87065786149660974", ["-1.2", 1], ["-0.666666666666666667", 1], [0, 0, 1]),
    polynomial("2.5", [-1, 1], ["-0.6", 1], [0, 0, 1]),
]


def _with_first_column(c, tail):
    """Row ``[c - sum(tail)] + tail`` in exact arithmetic (empty for c=0's row)."""
    tail = [F(v) for v in tail]
    return [F(c) - sum(tail, F(0))] + tail


TSITOURAS_54 = ButcherTableau(
    name="tsit5",
    a=[[]]
    + [_with_first_column(_C[i], _A_TAIL[i]) for i in range(1, 6)]
    + [_B[:6]],
    b=_B,
    c=_C,
    order=5,
    b_error=_B_ERROR,
    error_order=4,
    dense=_DENSE,
    dense_order=4,
    description=(
        "Tsitouras 5(4): 7 stages (FSAL, 6 evaluations per step), order 5 with "
        "an embedded order-4 estimate; decimal coefficients, first column of a "
        "derived from c. Ch. Tsitouras, Comput. Math. Appl. 62 (2011) 770-775."
    ),
)
