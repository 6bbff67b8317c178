"""Bogacki-Shampine 3(2): scipy's ``RK23`` and Julia's ``BS3``.

Properties
----------
- Order 3 (the third-order solution advances: local extrapolation), 4 stages.
- Embedded order 2; ``b_error = b - b_hat``.
- FSAL: the fourth stage is evaluated at the new solution (``c_4 = 1`` and
  the last row of ``a`` equals ``b``), so a step costs three new evaluations.

Tableau::

    0   |
    1/2 | 1/2
    3/4 | 0     3/4
    1   | 2/9   1/3   4/9
    ----+-----------------------
        | 2/9   1/3   4/9   0      (b, order 3)
        | 7/24  1/4   1/3   1/8    (b_hat, order 2)

Reference
---------
P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas",
Appl. Math. Lett. 2(4) (1989) 321-325. doi:10.1016/0893-9659(89)90079-7
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.tableau import ButcherTableau

_B = [F(2, 9), F(1, 3), F(4, 9), 0]
_B_HAT = [F(7, 24), F(1, 4), F(1, 3), F(1, 8)]

BOGACKI_SHAMPINE_32 = ButcherTableau(
    name="bogacki_shampine_32",
    a=[
        [],
        [F(1, 2)],
        [0, F(3, 4)],
        [F(2, 9), F(1, 3), F(4, 9)],
    ],
    b=_B,
    c=[0, F(1, 2), F(3, 4), 1],
    order=3,
    b_error=[x - y for x, y in zip(_B, _B_HAT)],
    error_order=2,
    description=(
        "Bogacki-Shampine 3(2): 4 stages (FSAL, 3 evaluations per step), "
        "order 3 with an embedded order-2 estimate. P. Bogacki and "
        "L. F. Shampine, Appl. Math. Lett. 2 (1989) 321-325."
    ),
)
