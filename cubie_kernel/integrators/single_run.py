"""``SingleIntegratorRun``: one run's device function, assembled.

Builds and owns the layers of one run (system -> step -> controller ->
output -> loop),
routes setting changes to the layer that owns each setting, and answers
memory questions through the buffer registry: it registers no buffers of
its own, only the loop as its child.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np

from cubie_kernel import targets
from cubie_kernel.algorithms import engine_for, make_step, step_settings
from cubie_kernel.algorithms.tableaus import get_tableau
from cubie_kernel.controllers import (
    CONTROLLER_NAMES,
    ControllerSettings,
    default_controller_for,
    make_controller,
)
from cubie_kernel.integrators.events import (
    DEFAULT_MAX_RESETS,
    EventFunctions,
    EventSettings,
    theta_tolerance,
)
from cubie_kernel.integrators.loop import DEFAULT_MAX_STEPS, IVPLoop, LoopSettings
from cubie_kernel.outputs import Output, OutputFunctions, OutputSettings
from cubie_kernel.precision import check_precision
from cubie_kernel.systems import ODESystem
from cubie_kernel.systems.events import Event, as_events, parse_events

#: ControllerSettings fields a run takes from elsewhere (its system, method, precision, target).
_CONTROLLER_CONTEXT = ("n_states", "error_order", "precision", "target")

#: Settings that belong to the step-size controller: declared once, with
#: their defaults and documentation, in ControllerSettings.
CONTROLLER_SETTINGS = tuple(
    f.name for f in attrs.fields(ControllerSettings) if f.name not in _CONTROLLER_CONTEXT
)

#: Shorthands for fields of the run's :class:`~cubie_kernel.outputs.Output`
#: (setting name -> Output field), accepted next to ``output``.
OUTPUT_SHORTHANDS = {
    "save_every": "save_every",
    "save_states": "states",
    "save_observables": "observables",
    "save_counters": "counters",
}

#: Settings a SingleIntegratorRun accepts through ``update``.
SETTINGS = (
    "method", "controller", "dt", "dt0", "output", "max_steps", "events", "max_resets",
    "precision", "target",
    *OUTPUT_SHORTHANDS,
) + CONTROLLER_SETTINGS


def with_output_shorthands(output: Output | None, shorthands) -> Output:
    """``output`` (default ``Output()``) with the shorthand settings applied.

    ``save_states``/``save_observables`` are booleans (True: all of them,
    False: none); ``save_every`` and ``save_counters`` set ``save_every``
    and ``counters``.
    """
    output = Output() if output is None else Output.from_dict(output)
    changes = {}
    for key, value in shorthands.items():
        field = OUTPUT_SHORTHANDS[key]
        if key in ("save_states", "save_observables"):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{key} must be True or False, got {value!r}")
            value = "all" if value else ()
        changes[field] = value
    return attrs.evolve(output, **changes) if changes else output


def split_output_settings(settings: Mapping[str, Any], current: Output | None = None) -> dict:
    """``settings`` with ``output`` and its shorthands merged into one ``output``.

    Raises ValueError when both ``output`` and a shorthand are given.
    """
    shorthands = {k: settings[k] for k in OUTPUT_SHORTHANDS if k in settings}
    rest = {k: v for k, v in settings.items() if k not in OUTPUT_SHORTHANDS}
    if "output" in rest and shorthands:
        raise ValueError(
            f"give the outputs either as output=Output(...) or as {sorted(shorthands)}, not both"
        )
    if shorthands:
        rest["output"] = with_output_shorthands(current, shorthands)
    elif "output" in rest:
        rest["output"] = Output.from_dict(rest["output"])
    return rest


def _optional_positive(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number > 0 or None, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")


@attrs.frozen
class _RunSettings:
    """Everything that decides one run's compiled code (see :class:`IntegratorSettings`).

    ``controller`` None picks the method's default (``"fixed"`` for
    tableaus without an error estimate, else ``"pi"``). Fixed stepping
    needs ``dt``; adaptive stepping starts from ``dt0`` (None: estimated
    per run). Tolerances and controller tuning are documented in
    :class:`cubie_kernel.controllers.ControllerSettings`.
    """

    system: ODESystem
    method: str = "rk4"
    controller: str | None = None
    dt: float | None = None
    dt0: float | None = None
    output: Output = attrs.field(default=Output(), converter=Output.from_dict)
    max_steps: int = DEFAULT_MAX_STEPS
    events: tuple[Event, ...] = attrs.field(default=(), converter=as_events)
    max_resets: int = DEFAULT_MAX_RESETS
    precision: type = np.float64
    target: str = "cpu"

    @property
    def save_every(self) -> float | None:
        """The output's sample interval."""
        return self.output.save_every

    @property
    def dense_output(self) -> bool:
        """Samples come from the step's continuous extension: adaptive stepping,
        samples to take, and a method whose interpolant is accurate enough
        (:attr:`ButcherTableau.dense_output`); else steps land on sample times."""
        return (
            self.controller_name != "fixed"
            and self.save_every is not None
            and get_tableau(self.method).dense_output
        )

    @property
    def step_dense(self) -> bool:
        """Every step stores its continuous extension's data: for dense output,
        and for locating events with an engine that cannot recompute a
        crossing step's (implicit methods)."""
        return self.dense_output or (bool(self.events) and self.event_interpolant == "step")

    @property
    def event_interpolant(self) -> str:
        """What events are located on (:data:`~cubie_kernel.integrators.events.INTERPOLANTS`):
        the method's continuous extension where it has an accurate one (from the
        stages every step stores, or recomputed for a crossing step by engines
        that can), else cubic Hermite."""
        tableau = get_tableau(self.method)
        if not tableau.dense_output:
            return "hermite"
        if self.dense_output or not engine_for(tableau)[0].recomputes_dense:
            return "step"
        return "recomputed"

    def event_settings(self, step) -> EventSettings:
        """Settings of event location, with ``step`` (the run's step object)."""
        adaptive = self.controller_name != "fixed"
        rtol = self.controller_settings().rtol if adaptive else None
        interpolant = self.event_interpolant
        return EventSettings(
            system=self.system,
            events=self.events,
            interpolant=interpolant,
            dense_elements=step.dense_elements() if interpolant == "recomputed" else 0,
            theta_tolerance=theta_tolerance(self.precision, rtol),
            precision=self.precision,
            target=self.target,
        )

    def __attrs_post_init__(self):
        tableau = get_tableau(self.method)
        targets.check_target_name(self.target)
        object.__setattr__(self, "precision", check_precision(self.precision))
        name = self.controller_name
        if name not in CONTROLLER_NAMES:
            raise ValueError(
                f"controller must be one of {', '.join(map(repr, CONTROLLER_NAMES))}, "
                f"got {self.controller!r}"
            )
        if name != "fixed" and not tableau.adaptive:
            raise ValueError(
                f"controller {name!r} needs an error estimate, and method {self.method!r} "
                "has none; use controller='fixed' or an adaptive method such as 'rk45'"
            )
        for field in ("dt", "dt0"):
            _optional_positive(field, getattr(self, field))
        self.output.resolve(self.system)  # names the system lacks
        if name == "fixed":
            if self.dt is None:
                raise ValueError(f"dt is required for fixed steps (method {self.method!r})")
            if self.save_every is not None and self.dt > self.save_every:
                raise ValueError(f"dt ({self.dt}) must not exceed save_every ({self.save_every})")
        elif self.dt is not None:
            raise ValueError(
                f"dt is the fixed step size, but method {self.method!r} steps adaptively "
                f"(controller {name!r}); set dt0 for its first step, or controller='fixed'"
            )
        steps = self.max_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"max_steps must be an int >= 1, got {steps!r}")
        resets = self.max_resets
        if isinstance(resets, bool) or not isinstance(resets, (int, np.integer)) or not (
            0 <= resets < 2**31
        ):
            raise ValueError(f"max_resets must be an int >= 0, got {resets!r}")
        parse_events(self.events, self.system)  # names and expressions the system lacks
        self.controller_settings()  # validates tolerances and tuning

    @property
    def controller_name(self) -> str:
        if self.controller is not None:
            return self.controller
        return default_controller_for(get_tableau(self.method))

    @property
    def tolerances(self) -> tuple | None:
        """``(atol, rtol)`` per state for steps that solve to a tolerance (None
        for fixed steps, which have none)."""
        if self.controller_name == "fixed":
            return None
        settings = self.controller_settings()
        return (settings.atol, settings.rtol)

    def controller_settings(self) -> ControllerSettings:
        tableau = get_tableau(self.method)
        return ControllerSettings(
            n_states=self.system.n_states,
            error_order=tableau.error_order,
            precision=self.precision,
            target=self.target,
            **{key: getattr(self, key) for key in CONTROLLER_SETTINGS},
        )

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(
            system=self.system,
            dt=None if self.dt is None else float(self.dt),
            save_every=None if self.save_every is None else float(self.save_every),
            dense=self.dense_output,
            final_state=self.output.final_state,
            dt0=None if self.dt0 is None else float(self.dt0),
            dt_min=float(self.dt_min),
            max_steps=int(self.max_steps),
            events=self.events,
            max_resets=int(self.max_resets),
            precision=self.precision,
            target=self.target,
        )


IntegratorSettings = attrs.make_class(
    "IntegratorSettings",
    {
        f.name: attrs.field(default=f.default)
        for f in attrs.fields(ControllerSettings)
        if f.name in CONTROLLER_SETTINGS
    },
    bases=(_RunSettings,),
    frozen=True,
    slots=True,
)
IntegratorSettings.__module__ = __name__
IntegratorSettings.__doc__ = """Everything that decides one run's compiled code.

    ``controller`` None picks the method's default (``"fixed"`` for
    tableaus without an error estimate, else ``"pi"``). Fixed stepping
    needs ``dt``; adaptive stepping starts from ``dt0`` (None: estimated
    per run). The tolerances and the controller's tuning (``atol``,
    ``rtol``, ``dt_min``, ``dt_max``, ``safety``, ``min_factor``,
    ``max_factor``, ``kp``, ``ki``, ``kd``) are the fields of
    :class:`cubie_kernel.controllers.ControllerSettings`, with its defaults
    and documentation: they are derived from it here, not declared again.
    """


class SingleIntegratorRun:
    """Assembles system, step, controller, output functions and loop for one run.

    Parameters
    ----------
    settings
        The run's :class:`IntegratorSettings`.
    registry
        The :class:`~cubie_kernel.buffers.BufferRegistry` every layer
        registers its buffers in; the process default when omitted.
    """

    def __init__(self, settings: IntegratorSettings, registry=None) -> None:
        if registry is None:
            import cubie_kernel

            registry = cubie_kernel.buffer_registry
        self.settings = settings
        self.registry = registry
        self.step = make_step(
            get_tableau(settings.method), settings.system, registry, settings.precision,
            settings.target, settings.step_dense, settings.tolerances,
        )
        self.events = EventFunctions(settings.event_settings(self.step), self.step, registry)
        self.controller = make_controller(
            settings.controller_name, settings.controller_settings(), registry
        )
        self.output = OutputFunctions(
            OutputSettings(
                system=settings.system,
                output=settings.output,
                precision=settings.precision,
                target=settings.target,
            ),
            registry,
        )
        self.loop = IVPLoop(
            settings.loop_settings(), self.step, self.controller, self.output, self.events,
            registry,
        )
        registry.register_child(self, self.loop, "loop")

    # ----------------------------------------------------------------- update
    def update(self, updates: Mapping[str, Any], silent: bool = False) -> set[str]:
        """Change run settings; returns the recognised keys.

        Raises KeyError for keys that are not settings (unless ``silent``)
        and ValueError for invalid values, before anything changes.
        """
        recognised = {k for k in updates if k in SETTINGS}
        unknown = set(updates) - recognised
        if unknown and not silent:
            raise KeyError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(SETTINGS)}")
        if not recognised:
            return recognised
        new = self.evolved({k: updates[k] for k in recognised})  # validates
        old, self.settings = self.settings, new
        tableau = get_tableau(new.method)
        if engine_for(tableau)[0] is not type(self.step):
            self._replace_step(new)
        else:
            self.step.update_compile_settings(step_settings(
                tableau, new.system, new.precision, new.target, new.step_dense,
                new.tolerances,
            ))
        self.events.step = self.step
        self.events.update_compile_settings(
            attrs.asdict(new.event_settings(self.step), recurse=False)
        )
        if new.controller_name != old.controller_name:
            self._replace_controller(new)
        else:
            self.controller.update_compile_settings(
                attrs.asdict(new.controller_settings(), recurse=False)
            )
        self.output.update_compile_settings(
            output=new.output, precision=new.precision, target=new.target
        )
        self.loop.update_compile_settings(attrs.asdict(new.loop_settings(), recurse=False))
        self.loop.register_buffers()
        return recognised

    def evolved(self, updates: Mapping[str, Any]) -> IntegratorSettings:
        """The settings with ``updates`` applied (output shorthands merged); validates."""
        return attrs.evolve(self.settings, **split_output_settings(updates, self.settings.output))

    def _replace_step(self, settings: IntegratorSettings) -> None:
        """A method of another family: a new step of its engine."""
        self.registry.clear(self.step)
        self.step = make_step(
            get_tableau(settings.method), settings.system, self.registry, settings.precision,
            settings.target, settings.step_dense, settings.tolerances,
        )
        self.loop.step = self.step
        self.registry.replace_child(self.loop, "step", self.step)

    def _replace_controller(self, settings: IntegratorSettings) -> None:
        self.registry.clear(self.controller)
        self.controller = make_controller(
            settings.controller_name, settings.controller_settings(), self.registry
        )
        self.loop.controller = self.controller
        self.registry.replace_child(self.loop, "controller", self.controller)

    # ---------------------------------------------------------------- queries
    @property
    def device_function(self):
        """The per-run loop device function (built lazily)."""
        return self.loop.device_function

    @property
    def compile_flags(self) -> Output:
        """The declared outputs (what the kernel writes is decided at compile time)."""
        return self.settings.output

    @property
    def precision(self) -> type:
        return self.settings.precision

    @property
    def target(self) -> str:
        return self.settings.target

    @property
    def system(self) -> ODESystem:
        return self.settings.system

    @property
    def shared_memory_elements(self) -> int:
        return self.registry.shared_buffer_size(self)

    @property
    def local_memory_elements(self) -> int:
        return self.registry.persistent_local_buffer_size(self)

    @property
    def shared_memory_bytes(self) -> int:
        """Shared bytes of one run's buffers, WITHOUT padding (the batch kernel's
        ``shared_memory_bytes`` is the padded per-run stride it launches with)."""
        return self.shared_memory_elements * np.dtype(self.precision).itemsize

    @property
    def n_saved_states(self) -> int:
        return self.output.n_saved_states

    @property
    def n_saved_observables(self) -> int:
        return self.output.n_saved_observables

    @property
    def n_summary_slots(self) -> int:
        return self.output.n_summary_slots
