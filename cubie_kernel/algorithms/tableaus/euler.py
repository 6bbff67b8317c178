"""Explicit (forward) Euler: one stage, order 1, no error estimate."""

from cubie_kernel.algorithms.tableau import ButcherTableau

EULER = ButcherTableau(
    name="euler",
    a=[[]],
    b=[1],
    c=[0],
    order=1,
    description="Forward Euler, y_{n+1} = y_n + h f(t_n, y_n). Order 1, 1 stage.",
)
