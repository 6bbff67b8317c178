"""Rosenbrock 2(3): Shampine & Reichelt's ``ode23s`` (MATLAB), Julia's ``Rosenbrock23``.

Properties
----------
- Order 2 (the second-order solution advances), 3 stages; an L-stable
  W-method: order 2 holds with any approximation of the Jacobian.
- The third stage is evaluated at the new solution and gives a third-order
  companion (with the exact Jacobian) whose difference is the error
  estimate ``(K1 - 2 K2 + K3) / 6``.
- Continuous extension of order 2 (Shampine & Reichelt's interpolant).

Original form (stages ``K_i = h k_i``), with ``d = 1 / (2 + sqrt 2)`` and
``e32 = 6 + sqrt 2``: ``W = I - h d J``::

    W K1 = h f(y) + h^2 d f_t
    W K2 = h f(y + K1 / 2) - h d J K1
    W K3 = h f(y + K2) + h J (d (e32 - 2) K1 - e32 d K2) - h^2 d f_t
    y1 = y + K2

The third line is ode23s's ``W k3 = F2 - e32 (k2 - F1) - 2 (k1 - F0) + h d
T`` with ``F0``, ``F1`` eliminated through the first two; the tableau below
transforms it exactly (to 40 digits of sqrt 2) and checks the order
conditions of the pair.

Reference
---------
L. F. Shampine, M. W. Reichelt, "The MATLAB ODE Suite", SIAM J. Sci.
Comput. 18(1) (1997) 1-22, Sect. 3. doi:10.1137/S1064827594276424
"""

from decimal import Decimal, localcontext
from fractions import Fraction as F

from cubie_kernel.algorithms.rosenbrock_tableau import from_original_form

with localcontext() as _context:
    _context.prec = 40
    _SQRT2 = F(str(Decimal(2).sqrt()))
_D = 1 / (2 + _SQRT2)
_E32 = 6 + _SQRT2
_SCALE = 1 / (1 - 2 * _D)

ROSENBROCK_23 = from_original_form(
    "rosenbrock23",
    gamma=_D,
    alpha=[[], [F(1, 2)], [0, 1]],
    Gamma=[[], [-_D], [_D * (_E32 - 2), -_E32 * _D]],
    b=[0, 1, 0],
    b_hat=[F(1, 6), F(2, 3), F(1, 6)],
    dense=[[_SCALE, -_SCALE], [-2 * _D * _SCALE, _SCALE], [0, 0]],
    order=2,
    embedded_order=3,
    dense_order=2,
    description="Shampine & Reichelt (1997), MATLAB ode23s: L-stable order-2 W-method "
    "with a third-order error estimate",
)
