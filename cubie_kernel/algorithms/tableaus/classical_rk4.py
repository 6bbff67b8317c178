"""The classical fourth-order Runge-Kutta method (Kutta, 1901)."""

from fractions import Fraction as F

from cubie_kernel.algorithms.tableau import ButcherTableau

CLASSICAL_RK4 = ButcherTableau(
    name="rk4",
    a=[
        [],
        [F(1, 2)],
        [0, F(1, 2)],
        [0, 0, 1],
    ],
    b=[F(1, 6), F(1, 3), F(1, 3), F(1, 6)],
    c=[0, F(1, 2), F(1, 2), 1],
    order=4,
    description=(
        "Classical Runge-Kutta: 4 stages, order 4, fixed step only (no "
        "embedded estimate). W. Kutta, Z. Math. Phys. 46 (1901) 435-453."
    ),
)
