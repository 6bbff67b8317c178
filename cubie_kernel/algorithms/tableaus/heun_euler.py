"""Heun-Euler 2(1): the smallest embedded explicit Runge-Kutta pair.

Properties
----------
- Order 2 (Heun's method advances the solution), 2 stages.
- Embedded order 1: forward Euler, ``b_hat = (1, 0)``; ``b_error = b - b_hat``.
- Not FSAL: the second stage is evaluated at the Euler predictor, not at the
  new solution, so every step costs two evaluations.

Tableau::

    0 |
    1 | 1
    --+----------
      | 1/2  1/2    (b, order 2)
      | 1    0      (b_hat, order 1)

References
----------
K. Heun, "Neue Methode zur approximativen Integration der
Differentialgleichungen einer unabhängigen Veränderlichen",
Z. Math. Phys. 45 (1900) 23-38.

E. Hairer, S. P. Nørsett, G. Wanner, *Solving Ordinary Differential
Equations I: Nonstiff Problems*, 2nd ed., Springer (1993), Chapter II
(Heun's method; embedded pairs and error estimation).
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.tableau import ButcherTableau

_B = [F(1, 2), F(1, 2)]
_B_HAT = [1, 0]

HEUN_EULER_21 = ButcherTableau(
    name="heun_euler",
    a=[
        [],
        [1],
    ],
    b=_B,
    c=[0, 1],
    order=2,
    b_error=[x - y for x, y in zip(_B, _B_HAT)],
    error_order=1,
    description=(
        "Heun-Euler 2(1): 2 stages, order 2 with an embedded forward Euler "
        "estimate of order 1, not FSAL. K. Heun, Z. Math. Phys. 45 (1900) 23-38."
    ),
)
