"""Dormand-Prince 5(4) (DOPRI5): scipy's ``RK45``, MATLAB's ``ode45``.

Properties
----------
- Order 5 (the fifth-order solution advances: local extrapolation),
  7 stages.
- Embedded order 4; ``b_error = b - b_hat``.
- FSAL: the seventh stage is evaluated at the new solution (``c_7 = 1`` and
  the last row of ``a`` equals ``b``), so a step costs six new evaluations.

Nodes ``c = (0, 1/5, 3/10, 4/5, 8/9, 1, 1)``; ``b`` is the last row of ``a``
followed by 0; the embedded weights are

``b_hat = (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40)``.

Dense output: Shampine's quartic continuous extension (order 4), as in
scipy's ``RK45`` and Hairer's DOPRI5: ``b_i(theta) = sum_q P[i][q]
theta**(q+1)`` with the rows of ``_DENSE``.

References
----------
L. F. Shampine, "Some practical Runge-Kutta formulas", Math. Comp. 46
(1986) 135-150 (the dense output).

J. R. Dormand, P. J. Prince, "A family of embedded Runge-Kutta formulae",
J. Comput. Appl. Math. 6(1) (1980) 19-26. doi:10.1016/0771-050X(80)90013-3
(the method RK5(4)7M of the paper).
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.tableau import ButcherTableau

_B = [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0]
_B_HAT = [
    F(5179, 57600),
    0,
    F(7571, 16695),
    F(393, 640),
    F(-92097, 339200),
    F(187, 2100),
    F(1, 40),
]

_DENSE = [
    [1, F(-8048581381, 2820520608), F(8663915743, 2820520608), F(-12715105075, 11282082432)],
    [0, 0, 0, 0],
    [0, F(131558114200, 32700410799), F(-68118460800, 10900136933),
     F(87487479700, 32700410799)],
    [0, F(-1754552775, 470086768), F(14199869525, 1410260304), F(-10690763975, 1880347072)],
    [0, F(127303824393, 49829197408), F(-318862633887, 49829197408),
     F(701980252875, 199316789632)],
    [0, F(-282668133, 205662961), F(2019193451, 616988883), F(-1453857185, 822651844)],
    [0, F(40617522, 29380423), F(-110615467, 29380423), F(69997945, 29380423)],
]

DORMAND_PRINCE_54 = ButcherTableau(
    name="dormand_prince_54",
    a=[
        [],
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        _B[:6],
    ],
    b=_B,
    c=[0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1],
    order=5,
    b_error=[x - y for x, y in zip(_B, _B_HAT)],
    error_order=4,
    dense=_DENSE,
    dense_order=4,
    description=(
        "Dormand-Prince 5(4) (DOPRI5, RK5(4)7M): 7 stages (FSAL, 6 "
        "evaluations per step), order 5 with an embedded order-4 estimate. "
        "J. R. Dormand and P. J. Prince, J. Comput. Appl. Math. 6 (1980) 19-26."
    ),
)
