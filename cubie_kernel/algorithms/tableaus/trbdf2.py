"""TR-BDF2: the trapezoidal rule and BDF2 as one L-stable ESDIRK, orders 2(3).

Properties
----------
- Order 2, 3 stages, the first explicit (ESDIRK): a trapezoidal stage to
  ``t + gamma h`` and a BDF2 stage to ``t + h``, with ``gamma = 2 -
  sqrt(2)`` so both share the diagonal ``d = gamma / 2``. L-stable and
  stiffly accurate (``b`` is the last row of ``A``).
- Embedded order 3 (Hosea & Shampine's third-order companion); the error
  estimate is that of the second-order solution, which the step advances.
- Dense output: the cubic Hermite interpolant of the step's ends (order 2
  here, as accurate as the solution, >= the controlled order 2).

ESDIRK form (Hosea & Shampine 1996, eq. (3)): with ``d = 1 - sqrt(2)/2``
and ``w = sqrt(2)/4``::

    0     | 0
    gamma | d    d
    1     | w    w    d
    ------+------------------------------
          | w    w    d
          | (1-w)/3   (3w+1)/3   d/3      (b_hat)

``sqrt(2)`` to 50 digits (the order conditions hold to that precision).

Reference
---------
M. E. Hosea, L. F. Shampine, "Analysis and implementation of TR-BDF2",
Applied Numerical Mathematics 20 (1996) 21-37 (MATLAB's ``ode23tb``).
doi:10.1016/0168-9274(95)00115-8
"""

from decimal import Decimal, localcontext
from fractions import Fraction as F

from cubie_kernel.algorithms.dirk_tableau import DIRKTableau

with localcontext() as _context:
    _context.prec = 50
    _SQRT2 = F(str(Decimal(2).sqrt()))
_GAMMA = 2 - _SQRT2
_D = _GAMMA / 2
_W = _SQRT2 / 4
_B = [_W, _W, _D]
_B_HAT = [(1 - _W) / 3, (3 * _W + 1) / 3, _D / 3]

TR_BDF2 = DIRKTableau(
    name="trbdf2",
    a=[[0], [_D, _D], _B],
    b=_B,
    c=[0, _GAMMA, 1],
    order=2,
    b_error=[b - bh for b, bh in zip(_B, _B_HAT)],
    embedded_order=3,
    stiffly_accurate=True,
    description="Hosea & Shampine (1996): TR-BDF2, L-stable, stiffly accurate ESDIRK "
    "2(3), 3 stages",
)
