"""ROS3P: Lang & Verwer's third-order Rosenbrock method for parabolic problems.

Properties
----------
- Order 3, 3 stages, A-stable but not L-stable (``R(inf) = 1 - sqrt 3 =
  -0.73``); designed not to lose order on stiff parabolic problems (no order
  reduction to 2).
- The embedded method has the same ``R(inf)``, so the error estimate does
  not see errors in very stiff components, which are not damped either:
  on OREGO (eigenvalues down to ~-1e5) the end point is off by ~3e3 times
  the tolerance at rtol 1e-4 (Rodas4: 0.8). Prefer ``rodas4``/``rodas5p``
  for very stiff systems.
- Embedded order 2 (the published ``m_hat``).
- Two function evaluations per step: stages 2 and 3 share their input.
- No continuous extension: saves land on the steps.

Coefficients in the transformed form, as functions of ``gamma = 1/2 +
sqrt(3)/6`` (to 40 digits), with the embedded weights ``m_hat`` (the third is ``1/(3 gamma)``) and
the time coefficients ``d`` as published to 16 digits (the order conditions
hold to that precision; the tableau checks them).

Reference
---------
J. Lang, J. G. Verwer, "ROS3P - an accurate third-order Rosenbrock solver
designed for parabolic problems", BIT 41(4) (2001) 731-738.
doi:10.1023/A:1021900219772
"""

from decimal import Decimal, localcontext
from fractions import Fraction as F

from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau

with localcontext() as _context:
    _context.prec = 40
    _SQRT3 = F(str(Decimal(3).sqrt()))
_GAMMA = F(1, 2) + _SQRT3 / 6
_INV = 1 / _GAMMA
_C32 = -_INV * (2 - _INV / 2)
_M2 = _INV * (F(2, 3) - _INV / 6)
_M = [_INV * (1 + _M2), _M2, _INV / 3]
# published: 2.113248654051871, 1.000000000000000, 0.4226497308103742 (= 1 / (3 gamma))
_M_HAT = [F("2.113248654051871"), F("1.000000000000000"), _INV / 3]

ROS3P = RosenbrockTableau(
    name="ros3p",
    gamma=_GAMMA,
    a=[[], [_INV], [_INV, 0]],
    C=[[], [-_INV * _INV], [-_INV * (1 - _C32), _C32]],
    c=[0, 1, 1],
    d=["0.7886751345948129", "-0.2113248654051871", "-1.077350269189626"],
    m=_M,
    m_error=[m - mh for m, mh in zip(_M, _M_HAT)],
    order=3,
    embedded_order=2,
    description="Lang & Verwer (2001): A-stable order-3 Rosenbrock method without "
    "order reduction on parabolic problems",
)
