"""Kvaerno 3(2): a stiffly accurate, L-stable ESDIRK pair of orders 3 and 2.

Properties
----------
- Order 3, 4 stages, the first explicit (ESDIRK), diagonal ``gamma =
  0.4358665215``; L-stable and stiffly accurate (``b`` is the last row of
  ``A``, ``c_4 = 1``).
- Embedded order 2: ``b_hat`` is the third row of ``A`` (``c_3 = 1``),
  itself stiffly accurate, so the estimate stays bounded on stiff problems.
- Dense output: the cubic Hermite interpolant of the step's ends (order 3
  >= the controlled order 2), from the explicit first stage and the last.

Coefficients: the paper's closed forms in ``gamma``, evaluated exactly on
the published ``gamma`` (``gamma`` is the root near 0.4359 of ``6 x^3 -
18 x^2 + 9 x - 1``, which makes the method L-stable; the order conditions
hold for any ``gamma``).

Reference
---------
A. Kvaerno, "Singly diagonally implicit Runge-Kutta methods with an explicit
first stage", BIT Numerical Mathematics 44 (2004) 489-502.
doi:10.1023/B:BITN.0000046811.70614.38
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.dirk_tableau import DIRKTableau

_G = F("0.4358665215")
_A31 = (-4 * _G * _G + 6 * _G - 1) / (4 * _G)
_A32 = (1 - 2 * _G) / (4 * _G)
_A41 = (6 * _G - 1) / (12 * _G)
_A42 = -1 / ((24 * _G - 12) * _G)
_A43 = (-6 * _G * _G + 6 * _G - 1) / (6 * _G - 3)
_B = [_A41, _A42, _A43, _G]
_B_HAT = [_A31, _A32, _G, 0]

KVAERNO_3 = DIRKTableau(
    name="kvaerno3",
    a=[[0], [_G, _G], [_A31, _A32, _G], _B],
    b=_B,
    c=[0, 2 * _G, 1, 1],
    order=3,
    b_error=[b - bh for b, bh in zip(_B, _B_HAT)],
    embedded_order=2,
    stiffly_accurate=True,
    description="Kvaerno (2004): L-stable, stiffly accurate ESDIRK 3(2), 4 stages",
)
