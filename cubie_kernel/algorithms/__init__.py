"""Step methods: one engine per method family, each driven by tableau data.

==========================  ======================================  =========================
tableau                     engine (step factory)                   methods
==========================  ======================================  =========================
``ButcherTableau``          :class:`~.erk_step.ERKStep`             explicit Runge-Kutta
``RosenbrockTableau``       :class:`~.rosenbrock_step.RosenbrockStep`  Rosenbrock (stiff)
``DIRKTableau``             :class:`~.dirk_step.DIRKStep`           SDIRK/ESDIRK (stiff)
==========================  ======================================  =========================

Every engine builds the same lane-form step function and exposes the same
``tableau`` protocol to the loop (``adaptive``, ``fsal``, ``error_order``,
``dense_output``); :func:`make_step` picks the engine for a tableau. The
frame the engines share (registry, build, dense-output functions) is
:class:`~.step_factory.StepFactory`; the checks the tableaus share are in
:mod:`~.tableau`.
"""

from __future__ import annotations

import attrs

from cubie_kernel.algorithms.dirk_step import DIRKStep, DIRKStepSettings
from cubie_kernel.algorithms.dirk_tableau import DIRKTableau
from cubie_kernel.algorithms.erk_step import ERKStep, ERKStepSettings
from cubie_kernel.algorithms.rosenbrock_step import RosenbrockStep, RosenbrockStepSettings
from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau
from cubie_kernel.algorithms.tableau import ButcherTableau

#: Tableau type -> (step factory, its settings class).
ENGINES = {
    ButcherTableau: (ERKStep, ERKStepSettings),
    RosenbrockTableau: (RosenbrockStep, RosenbrockStepSettings),
    DIRKTableau: (DIRKStep, DIRKStepSettings),
}


def engine_for(tableau) -> tuple[type, type]:
    """The step factory and settings class that run ``tableau``."""
    try:
        return ENGINES[type(tableau)]
    except KeyError:
        raise TypeError(f"no step engine runs a {type(tableau).__name__}") from None


def step_settings(tableau, system, precision, target: str = "cpu", dense: bool = False,
                  tolerances: tuple | None = None) -> dict:
    """The compile settings of ``tableau``'s engine, as keyword arguments.

    ``tolerances`` is the run's ``(atol, rtol)``; only engines whose settings
    declare a ``tolerances`` field (implicit stages solved to a tolerance)
    receive it, so the other steps do not recompile when tolerances change.
    """
    _, settings = engine_for(tableau)
    values = dict(tableau=tableau, system=system, precision=precision, target=target,
                  dense=dense)
    if "tolerances" in attrs.fields_dict(settings):
        values["tolerances"] = tolerances
    return values


def make_step(tableau, system, registry, precision, target: str = "cpu", dense: bool = False,
              tolerances: tuple | None = None):
    """A step factory for ``tableau`` (its engine), registered in ``registry``."""
    factory, settings = engine_for(tableau)
    return factory(settings(**step_settings(tableau, system, precision, target, dense,
                                            tolerances)), registry)
