"""Rodas4: Hairer & Wanner's stiffly accurate Rosenbrock method of order 4(3).

Properties
----------
- Order 4, 6 stages (6 function evaluations, one Jacobian and one LU per
  step); L-stable and stiffly accurate: the solution is the last stage's
  input plus its increment, and the error estimate is that increment.
- Embedded order 3.
- Continuous extension of order 3:
  ``y(theta) = (1 - theta) y0 + theta (y1 + (1 - theta) (H1 + theta H2))``
  with ``H1``, ``H2`` combinations of the stages (rows ``h2``, ``h3``).

Coefficients in the transformed form, as printed in Hairer & Wanner's
RODAS code (``METH = 1``), to 16 digits; the tableau checks the order
conditions to that precision.

Reference
---------
E. Hairer, G. Wanner, Solving Ordinary Differential Equations II, 2nd ed.,
Springer (1996), Sect. VI.4 (Rodas), and the RODAS code (rodas.f).
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau

_A5 = ["1.221224509226641", "6.019134481288629", "12.53708332932087", "-0.6878860361058950"]
_H2 = ["10.12623508344586", "-7.487995877610167", "-34.80091861555747", "-7.992771707568823",
       "1.025137723295662", "0"]
_H3 = ["-0.6762803392801253", "6.087714651680015", "16.43084320892478", "24.76722511418386",
       "-6.594389125716872", "0"]
_M = [*_A5, 1, 1]


def _dense_row(m, h2, h3):
    """``m theta + h2 (theta - theta^2) + h3 (theta^2 - theta^3)``."""
    m, h2, h3 = F(m), F(h2), F(h3)
    return [m + h2, h3 - h2, -h3]


RODAS4 = RosenbrockTableau(
    name="rodas4",
    gamma="0.25",
    a=[
        [],
        ["1.544000000000000"],
        ["0.9466785280815826", "0.2557011698983284"],
        ["3.314825187068521", "2.896124015972201", "0.9986419139977817"],
        _A5,
        [*_A5, 1],
    ],
    C=[
        [],
        ["-5.668800000000000"],
        ["-2.430093356833875", "-0.2063599157091915"],
        ["-0.1073529058151375", "-9.594562251023355", "-20.47028614809616"],
        ["7.496443313967647", "-10.24680431464352", "-33.99990352819905", "11.70890893206160"],
        ["8.083246795921522", "-7.981132988064893", "-31.52159432874371", "16.31930543123136",
         "-6.058818238834054"],
    ],
    c=[0, "0.386", "0.21", "0.63", 1, 1],
    d=["0.25", "-0.1043", "0.1035", "-0.03620000000000023", 0, 0],
    m=_M,
    m_error=[0, 0, 0, 0, 0, 1],
    order=4,
    embedded_order=3,
    dense=[_dense_row(m, h2, h3) for m, h2, h3 in zip(_M, _H2, _H3)],
    dense_order=3,
    stiffly_accurate=True,
    description="Hairer & Wanner (1996): L-stable, stiffly accurate Rosenbrock 4(3) "
    "with a third-order continuous extension",
)
