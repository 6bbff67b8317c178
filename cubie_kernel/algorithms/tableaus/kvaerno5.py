"""Kvaerno 5(4): a stiffly accurate, L-stable ESDIRK pair of orders 5 and 4.

Properties
----------
- Order 5, 7 stages, the first explicit (ESDIRK), diagonal ``gamma =
  0.26``; L-stable and stiffly accurate (``b`` is the last row of ``A``,
  ``c_7 = 1``).
- Embedded order 4: ``b_hat`` is the sixth row of ``A`` (``c_6 = 1``).
- No dense output: the cubic Hermite interpolant (order 3) is less accurate
  than the controlled order 4, so saves land on the steps.

Coefficients as published, to 17 digits (``gamma`` and ``a_31`` exact); the
tableau checks the order conditions to 1e-12.

Reference
---------
A. Kvaerno, "Singly diagonally implicit Runge-Kutta methods with an explicit
first stage", BIT Numerical Mathematics 44 (2004) 489-502.
doi:10.1023/B:BITN.0000046811.70614.38
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.dirk_tableau import DIRKTableau

_G = "0.26"
_ROW6 = ["0.13855640231268224", "0", "-0.04245337201752043", "0.02446657898003141",
         "0.61943039072480676", _G]
_ROW7 = ["0.13659751177640291", "0", "-0.05496908796538376", "-0.04118626728321046",
         "0.62993304899016403", "0.06962479448202728", _G]
_B_ERROR = [F(x) - F(y) for x, y in zip(_ROW7, _ROW6 + ["0"])]

KVAERNO_5 = DIRKTableau(
    name="kvaerno5",
    a=[
        [0],
        [_G, _G],
        ["0.13", "0.84033320996790809", _G],
        ["0.22371961478320505", "0.47675532319799699", "-0.06470895363112615", _G],
        ["0.16648564323248321", "0.10450018841591720", "0.03631482272098715",
         "-0.13090704451073998", _G],
        _ROW6,
        _ROW7,
    ],
    b=_ROW7,
    c=["0", "0.52", "1.230333209967908", "0.8957659843500759", "0.43639360985864756",
       "1", "1"],
    order=5,
    b_error=_B_ERROR,
    embedded_order=4,
    stiffly_accurate=True,
    description="Kvaerno (2004): L-stable, stiffly accurate ESDIRK 5(4), 7 stages",
)
