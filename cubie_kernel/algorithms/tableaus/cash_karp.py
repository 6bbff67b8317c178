"""Cash-Karp 5(4): the embedded pair of *Numerical Recipes*' ``rkck``.

Properties
----------
- Order 5 (the fifth-order solution advances: local extrapolation),
  6 stages.
- Embedded order 4; ``b_error = b - b_hat``.
- Not FSAL (``c_6 = 7/8``): every step costs six evaluations.

Nodes ``c = (0, 1/5, 3/10, 3/5, 1, 7/8)``; weights

``b     = (37/378, 0, 250/621, 125/594, 0, 512/1771)``,
``b_hat = (2825/27648, 0, 18575/48384, 13525/55296, 277/14336, 1/4)``.

Reference
---------
J. R. Cash, A. H. Karp, "A variable order Runge-Kutta method for initial
value problems with rapidly varying right-hand sides", ACM Trans. Math.
Softw. 16(3) (1990) 201-222. doi:10.1145/79505.79507
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.tableau import ButcherTableau

_B = [F(37, 378), 0, F(250, 621), F(125, 594), 0, F(512, 1771)]
_B_HAT = [
    F(2825, 27648),
    0,
    F(18575, 48384),
    F(13525, 55296),
    F(277, 14336),
    F(1, 4),
]

CASH_KARP_54 = ButcherTableau(
    name="cash_karp",
    a=[
        [],
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(3, 10), F(-9, 10), F(6, 5)],
        [F(-11, 54), F(5, 2), F(-70, 27), F(35, 27)],
        [F(1631, 55296), F(175, 512), F(575, 13824), F(44275, 110592), F(253, 4096)],
    ],
    b=_B,
    c=[0, F(1, 5), F(3, 10), F(3, 5), 1, F(7, 8)],
    order=5,
    b_error=[x - y for x, y in zip(_B, _B_HAT)],
    error_order=4,
    description=(
        "Cash-Karp 5(4): 6 stages, not FSAL, order 5 with an embedded order-4 "
        "estimate. J. R. Cash and A. H. Karp, ACM TOMS 16 (1990) 201-222."
    ),
)
