"""Step-size controllers: accept or reject a step, and choose the next one.

Gains plus a contract: every controller is a factory
(:class:`~cubie_kernel.controllers.base.StepController`) of the device
function ``control(h, clamped, state, proposed, error, accept, h_next,
shared, persistent)``, which settles a block of lanes, and of ``reset(shared,
persistent, j)``, which the loop calls once at the start of each run. Error
history is one persistent ``history`` buffer registered under the controller,
never updated by a clamped step.

========================  ==================================================
``"fixed"``               accept every step, keep ``dt`` (not adaptive)
``"i"``                   elementary controller, ``safety * r**(-1/k)`` (scipy's)
``"pi"``                  PID with ``kd = 0``; default gains PI.3.4 (the default)
``"pid"``                 PID; default gains H312PID
``"gustafsson"``          Gustafsson's predictive controller (RADAU5)
========================  ==================================================
"""

from __future__ import annotations

from cubie_kernel.controllers.base import (
    NORM_FLOOR,
    ControllerSettings,
    StepController,
    build_error_norm,
    per_state,
)
from cubie_kernel.controllers.fixed import FixedController
from cubie_kernel.controllers.gustafsson import GustafssonController
from cubie_kernel.controllers.pid import IController, PIController, PIDController

#: Name -> controller class.
CONTROLLERS: dict[str, type[StepController]] = {
    cls.name: cls
    for cls in (FixedController, IController, PIController, PIDController, GustafssonController)
}

#: Every controller name, in the order users meet them.
CONTROLLER_NAMES: tuple[str, ...] = ("fixed", "i", "pi", "pid", "gustafsson")

#: Adaptive methods get this controller unless the user picks one.
DEFAULT_ADAPTIVE_CONTROLLER = "pi"


def make_controller(name: str, settings: ControllerSettings, registry) -> StepController:
    """Build the controller called ``name`` (its buffers go into ``registry``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones), or settings
        the controller cannot use (e.g. no ``error_order`` for an adaptive
        controller, gains for a controller without them).
    """
    cls = CONTROLLERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"unknown step controller {name!r}; choose one of "
            + ", ".join(repr(n) for n in CONTROLLER_NAMES)
        )
    return cls(settings, registry)


def default_controller_for(tableau) -> str:
    """``"fixed"`` for a tableau without an embedded pair, else ``"pi"``.

    PI control (Gustafsson's PI.3.4) was designed for explicit Runge-Kutta
    pairs: it gives a smoother step-size sequence and fewer rejections than
    the elementary controller, and a global error closer to the requested
    tolerance (Kepler, e = 0.5, DP5 at rtol 1e-8: within 50 rtol, where the
    elementary rule ends ~125 rtol off). It costs one history element per
    run and, on Lorenz at rtol 1e-6, ~16% more attempted steps. Choose
    ``"i"`` for exactly scipy's ``solve_ivp(RK45)`` step sequence.
    """
    return DEFAULT_ADAPTIVE_CONTROLLER if tableau.adaptive else "fixed"


__all__ = [
    "CONTROLLERS",
    "CONTROLLER_NAMES",
    "DEFAULT_ADAPTIVE_CONTROLLER",
    "NORM_FLOOR",
    "ControllerSettings",
    "FixedController",
    "GustafssonController",
    "IController",
    "PIController",
    "PIDController",
    "StepController",
    "build_error_norm",
    "default_controller_for",
    "make_controller",
    "per_state",
]
